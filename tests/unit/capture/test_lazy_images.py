"""LazyImage: a row image encoded on first read, equal to the eager encoding in every byte."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import uuid
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from sqla_audit.events import _plain
from sqla_audit.lazy_images import Layout, LazyImage, deferrable, value_deferrable
from sqla_audit.serialization import MASKED_VALUE, encode_value

PARIS = ZoneInfo("Europe/Paris")

#: One value of each type whose encoding may wait, with its awkward cases.
VALUES: list[Any] = [
    "ascii",
    "h\u00e9 \u2603",
    "lone \ud800 surrogate",
    1.5,
    float("nan"),
    float("-inf"),
    decimal.Decimal("1.0"),
    decimal.Decimal("1E+5"),
    decimal.Decimal("-0.00"),
    dt.datetime(2026, 3, 29, 2, 30),  # naive
    dt.datetime(2026, 3, 29, 3, 30, tzinfo=PARIS),
    dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.date(2026, 2, 28),
    dt.time(23, 59, 59, 999999),
    dt.time(8, 0, tzinfo=PARIS),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xffbytes",
    7,
    True,
    None,
]


def _layout(names: tuple[str, ...], masked: tuple[str, ...] = ()) -> Layout:
    return Layout(names, tuple(i for i, n in enumerate(names) if n not in masked), masked)


def _wire(mapping: Any) -> str:
    return json.dumps(mapping, ensure_ascii=False, allow_nan=True)


def test_materialized_image_is_the_eager_encoding_of_every_deferred_type() -> None:
    """Every deferred type encodes, on first read, to what encode_value gives now, keys in
    column order."""
    names = tuple(f"c{i}" for i in range(len(VALUES)))
    assert deferrable(VALUES)
    image = LazyImage(_layout(names), VALUES)
    eager = {name: encode_value(value) for name, value in zip(names, VALUES, strict=True)}
    assert not image.materialized
    assert _wire(_plain(image)) == _wire(eager)
    assert list(image.as_dict()) == list(names)
    assert image.materialized


def test_mapping_reads_without_encoding_until_a_value_is_read() -> None:
    """Length, keys and membership answer without encoding; a value read encodes once."""
    image = LazyImage(_layout(("a", "b")), [decimal.Decimal("2.50"), "x"])
    assert (len(image), list(image), "a" in image, "z" in image) == (2, ["a", "b"], True, False)
    assert not image.materialized
    assert image["a"] == {"$type": "decimal", "v": "2.50"}
    assert image.as_dict() is image.as_dict()
    expected = {"a": {"$type": "decimal", "v": "2.50"}, "b": "x"}
    assert image == expected
    assert expected == image  # the dict's own comparison defers to the image
    assert image != {"a": {"$type": "decimal", "v": "2.5"}, "b": "x"}
    assert image.get("z", 3) == 3
    assert dict(image) == image.as_dict()


def test_after_image_reuses_only_encodings_that_are_alike() -> None:
    """An update's after value equal to its before value takes the before encoding only when
    it encodes alike: Decimal('1.0') then Decimal('1.00') keeps both texts."""
    names = ("amount", "same", "when")
    layout = _layout(names)
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    before = LazyImage(layout, [decimal.Decimal("1.0"), decimal.Decimal("3.25"), when])
    after = LazyImage(
        layout,
        [decimal.Decimal("1.00"), decimal.Decimal("3.25"), when.astimezone(PARIS)],
        before,
    )
    assert after["amount"] == {"$type": "decimal", "v": "1.00"}
    assert before["amount"] == {"$type": "decimal", "v": "1.0"}
    assert after["same"] is before["same"]
    assert after["when"] == {
        "$type": "datetime",
        "v": "2026-01-01T13:00:00+01:00",
        "tz": "Europe/Paris",
    }
    assert before["when"] == {"$type": "datetime", "v": "2026-01-01T12:00:00+00:00"}


def test_masked_columns_read_as_a_fresh_masked_value_per_image() -> None:
    """A masked column reads as MASKED_VALUE, one object per image."""
    layout = _layout(("id", "secret"), masked=("secret",))
    one, two = LazyImage(layout, [1, None]), LazyImage(layout, [2, None])
    assert one.as_dict() == {"id": 1, "secret": MASKED_VALUE}
    assert one["secret"] is not two["secret"]
    assert one["secret"] is not MASKED_VALUE


def test_values_that_may_change_or_fail_do_not_wait() -> None:
    """JSON containers, enums, subclasses, unknown types and odd zones are encoded eagerly."""

    class Text(str):
        pass

    class Zone(dt.tzinfo):
        def utcoffset(self, _: dt.datetime | None) -> dt.timedelta:
            return dt.timedelta(0)

    for value in (
        {"k": 1},
        [1],
        Text("x"),
        bytearray(b"x"),
        object(),
        dt.datetime(2026, 1, 1, tzinfo=Zone()),
    ):
        assert not value_deferrable(value)
        assert not deferrable([1, value])
    assert all(value_deferrable(value) for value in VALUES)


def test_decimal_text_follows_the_default_context_on_any_thread() -> None:
    """A Decimal waits only under the default context (capitals=1), and encodes with it
    whatever the context of the thread that reads the image."""
    huge = decimal.Decimal("1E+5")
    with decimal.localcontext() as context:
        context.capitals = 0
        assert not deferrable([huge])
        assert not value_deferrable(huge)
    image = LazyImage(_layout(("n",)), [huge])
    texts: list[Any] = []

    def read() -> None:
        with decimal.localcontext() as context:
            context.capitals = 0
            texts.append(image["n"])

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert texts == [{"$type": "decimal", "v": "1E+5"}]


def test_reading_from_two_threads_gives_equal_images() -> None:
    """Two threads reading a new image at once both get the same encoded values."""
    values = [decimal.Decimal(i) / 7 for i in range(50)]
    names = tuple(f"c{i}" for i in range(50))
    image = LazyImage(_layout(names), values)
    seen: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: seen.append(image.as_dict())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(
        found == {n: encode_value(v) for n, v in zip(names, values, strict=True)} for found in seen
    )


def test_plain_copies_only_foreign_mappings() -> None:
    """_plain returns a dict as is, a LazyImage's own dict, and copies other mappings."""
    image = LazyImage(_layout(("a",)), [decimal.Decimal("1")])
    assert _plain(image) is image.as_dict()
    plain: dict[str, Any] = {"a": 1}
    assert _plain(plain) is plain
    proxy = MappingProxyType(plain)
    assert type(_plain(proxy)) is dict
    assert _plain(proxy) == plain
