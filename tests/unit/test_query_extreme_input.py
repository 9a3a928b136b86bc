"""The Python query API refuses out-of-range times and malformed page tokens with InvalidQuery."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator

import pytest

from consumer.query import AuditQuery
from consumer.sinks.base import AuditStore, InvalidQuery
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record
from sqla_audit.errors import PermanentError

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
EVENT = "0192e4a1-7b2c-7d3e-8f40-123456789abd"
#: 9999-12-31T23:00:00-05:00 and 0001-01-01T00:00:00+01:00: aware, but not representable in UTC.
LATE = dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
EARLY = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


BAD_TOKENS = {
    "huge millis": _token(json.dumps([10**30, EVENT])),
    "millis past int64": _token(json.dumps([2**63, EVENT])),
    "deep nesting": _token("[" * 100_000 + "]" * 100_000),
}


@pytest.fixture(params=["memory", "sqlite"])
def query(request: pytest.FixtureRequest) -> Iterator[AuditQuery]:
    store: AuditStore = MemoryStore() if request.param == "memory" else SQLiteStore(":memory:")
    store.write(
        [
            make_record(
                table="users", record_id="42", after={"id": "42"}, committed_at=T0, actor="bob"
            )
        ]
    )
    yield AuditQuery(store)
    store.close()


CALLS: dict[str, Callable[[AuditQuery, str | None], object]] = {
    "history": lambda q, page: q.history("users", "42", page=page),
    "iter_history": lambda q, page: list(q.iter_history("users", "42", page=page)),
    "column_history": lambda q, page: list(q.column_history("users", "42", "id", page=page)),
    "by_actor": lambda q, page: q.by_actor("bob", since=T0, page=page),
    "iter_by_actor": lambda q, page: list(q.iter_by_actor("bob", since=T0, page=page)),
}


@pytest.mark.parametrize("page", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_malformed_page_token_is_invalid_query(
    query: AuditQuery, call: Callable[[AuditQuery, str | None], object], page: str
) -> None:
    """A page token with a huge number or deep nesting raises InvalidQuery (a ValueError)."""
    with pytest.raises(InvalidQuery, match="invalid page token") as info:
        call(query, page)
    assert isinstance(info.value, PermanentError)
    assert isinstance(info.value, ValueError)


TIMES: dict[str, Callable[[AuditQuery], object]] = {
    "as_of late": lambda q: q.as_of("users", "42", LATE),
    "as_of early": lambda q: q.as_of("users", "42", EARLY),
    "history since": lambda q: q.history("users", "42", since=EARLY),
    "history until": lambda q: q.history("users", "42", until=LATE),
    "iter_history": lambda q: list(q.iter_history("users", "42", since=EARLY)),
    "column_history": lambda q: list(q.column_history("users", "42", "id", until=LATE)),
    "by_actor since": lambda q: q.by_actor("bob", since=EARLY),
    "by_actor until": lambda q: q.by_actor("bob", since=T0, until=LATE),
    "iter_by_actor": lambda q: list(q.iter_by_actor("bob", since=EARLY)),
}


@pytest.mark.parametrize("call", TIMES.values(), ids=TIMES.keys())
def test_time_not_representable_in_utc_is_invalid_query(
    query: AuditQuery, call: Callable[[AuditQuery], object]
) -> None:
    """An aware time outside years 1-9999 once in UTC raises InvalidQuery naming the argument."""
    with pytest.raises(InvalidQuery, match="outside the supported range"):
        call(query)


def test_the_edges_of_the_range_are_valid(query: AuditQuery) -> None:
    """The first and last UTC instants are accepted and answered."""
    first = dt.datetime.min.replace(tzinfo=dt.UTC)
    last = dt.datetime.max.replace(tzinfo=dt.UTC)
    assert query.as_of("users", "42", last).exists
    assert not query.as_of("users", "42", first).known
    assert len(query.history("users", "42", since=first, until=last)) == 1
    assert len(query.by_actor("bob", since=first, until=last)) == 1
