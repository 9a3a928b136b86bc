"""The value codec: every supported type round-trips exactly, through JSON text and the ORM."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import itertools
import json
import math
import uuid
import zoneinfo
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Base, Color, Everything, sqlite_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from sqla_audit.config import SUPPORTED_PYTHON_TYPES, _type_supported
from sqla_audit.errors import SerializationError
from sqla_audit.serialization import (
    MASKED,
    MASKED_VALUE,
    TaggedEnum,
    Unserializable,
    decode_row,
    decode_value,
    encode_row,
    encode_value,
    import_enum,
    is_nested,
    registry_resolver,
)
from sqla_audit.testing import assert_valid_event, capture_events


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Shape(enum.Enum):
    POINT = (0, 0)
    UNIT = (1, 1)


RESOLVER = registry_resolver(Color, Level, Shape)
ZONES = [*sorted(zoneinfo.available_timezones())[:40], "Europe/Paris", "America/New_York"]


def _wire(value: Any) -> Any:
    """Encode, go through JSON text (as on the wire), decode."""
    text = json.dumps(encode_value(value), allow_nan=False)
    return decode_value(json.loads(text), enum_resolver=RESOLVER)


def _same(a: Any, b: Any) -> bool:
    """Exact equality: type, value, and what equality alone would hide."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, dt.datetime | dt.time):
        return (
            a == b
            and a.utcoffset() == b.utcoffset()
            and a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and getattr(a.tzinfo, "key", None) == getattr(b.tzinfo, "key", None)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, set):
        return a == b
    return bool(a == b)


fixed_offsets = st.builds(
    dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
).filter(lambda tz: tz.utcoffset(None).total_seconds() % 60 == 0)
zones = st.sampled_from(ZONES).map(zoneinfo.ZoneInfo)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.just("$type"), children, max_size=4)
    ),
    max_leaves=12,
)

supported_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(),
    st.floats(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(places=4, allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.datetimes(timezones=fixed_offsets),
    st.datetimes(timezones=zones),
    st.dates(),
    st.times(),
    st.times(timezones=fixed_offsets),
    st.times(timezones=zones),
    st.timedeltas(),
    st.uuids(),
    st.binary(),
    st.sampled_from(list(Color) + list(Level) + list(Shape)),
    json_documents,
    st.lists(st.integers(), max_size=5),
    st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=3),
    st.frozensets(st.integers(), max_size=5).map(set),
)


@given(supported_values)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_every_supported_value_round_trips_exactly(value: Any) -> None:
    """Any supported value, encoded, sent as JSON text and decoded, equals the original."""
    assert _same(_wire(value), value), (value, encode_value(value))


@given(json_documents)
def test_json_documents_round_trip_and_are_plain_json(doc: Any) -> None:
    """JSON column values stay plain JSON unless they contain a ``$type`` key."""
    encoded = encode_value(doc)
    assert _same(decode_value(encoded), doc)


def test_tagged_forms_are_documented_shapes() -> None:
    """A few exact encodings (the wire format is a contract)."""
    assert encode_value(decimal.Decimal("1.50")) == {"$type": "decimal", "v": "1.50"}
    assert encode_value(dt.date(2026, 1, 31)) == {"$type": "date", "v": "2026-01-31"}
    assert encode_value(dt.timedelta(days=1, seconds=2, microseconds=3)) == {
        "$type": "timedelta",
        "v": [1, 2, 3],
    }
    assert encode_value(b"\x00\xff") == {"$type": "bytes", "v": "AP8="}
    assert encode_value(Color.RED) == {
        "$type": "enum",
        "v": "red",
        "name": "RED",
        "cls": "capture_support:Color",
    }
    assert encode_value(float("-inf")) == {"$type": "float", "v": "-inf"}
    assert encode_value({"$type": "x"}) == {"$type": "object", "v": {"$type": "x"}}
    paris = dt.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert encode_value(paris) == {
        "$type": "datetime",
        "v": "2026-07-01T12:00:00+02:00",
        "tz": "Europe/Paris",
    }


class _Text(str):
    pass


class _Number(int):
    pass


class _Real(float):
    pass


class _Moment(dt.datetime):
    pass


class _Amount(decimal.Decimal):
    pass


class _Mood(enum.StrEnum):
    GOOD = "good"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        (_Text("sub"), "sub"),
        (7, 7),
        (_Number(7), 7),
        (True, True),
        (None, None),
        (1.5, 1.5),
        (_Real(1.5), 1.5),
        (float("nan"), {"$type": "float", "v": "nan"}),
        (_Real("inf"), {"$type": "float", "v": "inf"}),
        (Level.HIGH, {"$type": "enum", "v": 2, "name": "HIGH", "cls": f"{__name__}:Level"}),
        (
            _Mood.GOOD,
            {"$type": "enum", "v": "good", "name": "GOOD", "cls": f"{__name__}:_Mood"},
        ),
        (decimal.Decimal("1.50"), {"$type": "decimal", "v": "1.50"}),
        (_Amount("1.50"), {"$type": "decimal", "v": "1.50"}),
        (
            dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
            {"$type": "datetime", "v": "2026-01-02T03:04:00+00:00"},
        ),
        (
            dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            {"$type": "datetime", "v": "2026-01-02T03:04:00-05:00"},
        ),
        (_Moment(2026, 1, 2), {"$type": "datetime", "v": "2026-01-02T00:00:00"}),
        (dt.time(1, 2, tzinfo=dt.UTC), {"$type": "time", "v": "01:02:00+00:00"}),
        (uuid.UUID(int=1), {"$type": "uuid", "v": "00000000-0000-0000-0000-000000000001"}),
    ],
)
def test_exact_types_and_their_subclasses_encode_alike(value: Any, expected: Any) -> None:
    """The exact-type fast paths give what the isinstance chain gives subclasses; Enums win."""
    encoded = encode_value(value)
    assert encoded == expected
    assert json.dumps(encoded) == json.dumps(expected)  # a subclass passes through as itself


def test_enum_without_resolver_is_tagged_enum() -> None:
    """Without a resolver that knows the class, an Enum decodes to a TaggedEnum."""
    decoded = decode_value(encode_value(Color.GREEN))
    assert decoded == TaggedEnum(cls="capture_support:Color", name="GREEN", value="green")
    assert decode_value(encode_value(Color.GREEN), enum_resolver=import_enum) is Color.GREEN


def test_unknown_type_fallback_policy() -> None:
    """Unknown types: ``repr`` fallback is readable but not restorable; ``error`` raises."""

    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    encoded = encode_value(Point())
    assert encoded == {
        "$type": "repr",
        "v": "Point(1, 2)",
        "type": "test_serialization:test_unknown_type_fallback_policy.<locals>.Point",
    }
    decoded = decode_value(encoded)
    assert isinstance(decoded, Unserializable)
    assert decoded.text == "Point(1, 2)"
    with pytest.raises(SerializationError, match="cannot serialize"):
        encode_value(Point(), fallback="error")
    with pytest.raises(SerializationError, match="not a string"):
        encode_value({1: "a"}, fallback="error")
    assert encode_value({1: "a"}) == {"1": "a"}


def test_masked_value_decodes_to_masked_marker() -> None:
    """The masked placeholder carries no value and decodes to MASKED."""
    assert MASKED_VALUE == {"$type": "masked", "v": None}
    assert decode_value(MASKED_VALUE) is MASKED


@pytest.mark.parametrize(
    "bad",
    [
        {"$type": "nope", "v": 1},
        {"$type": "decimal", "v": "not a number"},
        {"$type": "timedelta", "v": "x"},
        {"$type": "bytes", "v": "***"},
    ],
)
def test_malformed_tagged_values_raise(bad: dict[str, Any]) -> None:
    """A malformed or unknown tag is a SerializationError, not a crash."""
    with pytest.raises(SerializationError):
        decode_value(bad)


def test_rows_and_nesting_helpers() -> None:
    """encode_row/decode_row map whole rows; is_nested spots structural values."""
    row = {"a": decimal.Decimal("2"), "b": [1], "c": {"k": 1}, "d": uuid.UUID(int=1)}
    assert decode_row(encode_row(row)) == row
    encoded = encode_row(row)
    assert [is_nested(encoded[k]) for k in "abcd"] == [False, True, True, False]


# --------------------------------------------------------------------------- through the ORM

column_values = st.fixed_dictionaries(
    {
        "amount": st.none() | st.decimals(places=4, min_value=-(10**7), max_value=10**7),
        "ratio": st.none() | st.floats(allow_nan=False, allow_infinity=False, width=32),
        "flag": st.none() | st.booleans(),
        "naive": st.none() | st.datetimes(min_value=dt.datetime(1900, 1, 1)),
        "day": st.none() | st.dates(),
        "clock": st.none() | st.times(),
        "span": st.none()
        | st.timedeltas(min_value=dt.timedelta(days=-9999), max_value=dt.timedelta(days=9999)),
        "token": st.none() | st.uuids(),
        "blob": st.none() | st.binary(max_size=32),
        "color": st.none() | st.sampled_from(Color),
        "doc": st.none() | json_documents.filter(lambda d: d is not None),
        "text": st.none() | st.text(max_size=40).filter(lambda t: "\x00" not in t),
    }
)


@given(column_values)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_column_type_round_trips_through_capture(values: dict[str, Any]) -> None:
    """Values written through the ORM come back from the event exactly (SQLite)."""
    engine = sqlite_engine()
    Base.metadata.create_all(engine, tables=[Everything.__table__])  # type: ignore[list-item]
    maker = sessionmaker(engine)
    try:
        with capture_events(maker) as published, maker.begin() as session:
            session.add(Everything(id=1, **values))
    finally:
        engine.dispose()
    (event,) = published.events
    assert_valid_event(event)
    after = decode_row(json.loads(event.to_json())["after"], enum_resolver=RESOLVER)
    for name, value in values.items():
        assert _same(after[name], value), (name, value, after[name])


def test_array_column_type_is_supported_in_plan() -> None:
    """ARRAY and JSON columns count as supported types under the strict policy."""
    assert list in SUPPORTED_PYTHON_TYPES
    assert _type_supported(sa.Column("a", sa.ARRAY(sa.Integer)))
    assert _type_supported(sa.Column("j", sa.JSON))
    assert not _type_supported(sa.Column("p", sa.PickleType))


@pytest.mark.parametrize(
    ("wall", "fold", "zone"),
    [
        (dt.datetime(1977, 4, 24, 2, 0), 0, "America/New_York"),  # in a DST gap
        (dt.datetime(2024, 10, 27, 2, 30), 0, "Europe/Paris"),  # overlap, first
        (dt.datetime(2024, 10, 27, 2, 30), 1, "Europe/Paris"),  # overlap, second
    ],
)
def test_zoned_datetimes_keep_wall_time_and_fold(wall: dt.datetime, fold: int, zone: str) -> None:
    """Zoned datetimes in DST gaps and overlaps come back with their wall time and fold."""
    value = wall.replace(fold=fold, tzinfo=zoneinfo.ZoneInfo(zone))
    restored = _wire(value)
    assert _same(restored, value)
    assert restored.fold == value.fold


# --------------------------------------------------------------------------- lone surrogates

#: Text that may hold surrogate code points (``st.text()`` leaves them out). A high surrogate
#: directly followed by a low one is left out: UTF-16 cannot tell that pair of code points
#: from the astral character it encodes (see ``test_an_adjacent_surrogate_pair_...``).
surrogate_text = st.text(st.characters(categories=["Cs"]) | st.characters()).filter(
    lambda text: (
        not any(
            "\ud800" <= a <= "\udbff" and "\udc00" <= b <= "\udfff"
            for a, b in itertools.pairwise(text)
        )
    )
)
surrogate_documents = st.recursive(
    st.none() | st.integers() | surrogate_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(surrogate_text | st.just("$type"), children, max_size=4)
        | st.frozensets(surrogate_text, max_size=3).map(set)
    ),
    max_leaves=12,
)


def _utf8_wire(value: Any) -> Any:
    """Encode, write as UTF-8 JSON (as an outbox row or an SNS message), read back, decode."""
    data = json.dumps(encode_value(value), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return decode_value(json.loads(data.decode("utf-8")))


@given(surrogate_documents)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_text_with_lone_surrogates_round_trips_through_utf8(value: Any) -> None:
    """Strings, nested strings and keys with lone surrogates survive UTF-8 JSON exactly."""
    assert _same(_utf8_wire(value), value), (value, encode_value(value))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\ud800", {"$type": "utf16", "v": "2AA="}),
        ("a\udfffb", {"$type": "utf16", "v": "AGHf/wBi"}),
        (["ok", "\udc80"], ["ok", {"$type": "utf16", "v": "3IA="}]),
        (
            {"k\ud800": 1, "plain": "x"},
            {"$type": "pairs", "v": [[{"$type": "utf16", "v": "AGvYAA=="}, 1], ["plain", "x"]]},
        ),
    ],
)
def test_lone_surrogates_take_the_utf16_tag(value: Any, expected: Any) -> None:
    """A str with lone surrogates is tagged utf16 (base64 of UTF-16-BE); such keys make pairs."""
    encoded = encode_value(value)
    assert encoded == expected
    assert _same(decode_value(encoded), value)


def test_valid_text_is_not_tagged() -> None:
    """ASCII, accented and astral text pass through unchanged (no utf16 tag)."""
    for text in ("plain", "déjà vu", "\U0001f600 ok", ""):
        assert encode_value(text) is text
        assert encode_value({text: [text]}) == {text: [text]}


def test_an_adjacent_surrogate_pair_decodes_as_its_character() -> None:
    """A high+low surrogate pair of code points is sent as UTF-16 and read back as one character."""
    assert decode_value(encode_value("\ud83d\ude00")) == "\U0001f600"
