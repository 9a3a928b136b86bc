"""The Cassandra audit store: the production :class:`~consumer.sinks.base.AuditStore`.

Layout (``schema cql`` prints it; ``schema apply`` creates it, idempotently):

``changes_by_record``
    the primary table, partitioned by ``(table_name, record_id)`` and clustered newest
    first by ``(event_time DESC, event_id DESC)``: a record's history, and its state as of
    any time, is one partition read.
``changes_by_actor``
    partitioned by ``(actor_id, day)``: "what did this actor change on this day" is one
    partition read; a window of days is one read per day.
``changes_by_transaction``
    partitioned by ``transaction_id``, clustered by ``sequence``: "what did this commit
    change" in the order it happened.
``record_buckets`` (only with a time bucket)
    which buckets a record's history spans, so history can walk them newest first.

Every table holds the whole record (denormalized): each question is answered from one
table without a second lookup, at the cost of writing each record three times. A departure
record (the row's key changed; see :mod:`consumer.records`) goes to ``changes_by_record``
only: by actor and by transaction, a move is the one real event under the new id.

``event_id`` is a version 7 UUID stored as ``uuid`` (``timeuuid`` only accepts version 1).
Cassandra orders ``uuid`` values by version, then bytes, which for version 7 is creation
order. ``event_time`` is a ``timestamp`` (milliseconds); the exact microseconds are kept in
``event_time_us`` and ``occurred_at_us``.

Time bucket. A record that changes constantly (a counter row, a hot configuration row)
grows one partition without bound; past a few hundred MB a partition slows compaction and
reads. With ``time_bucket`` set to ``year``/``month``/``day``, the bucket (``2026``,
``202601``, ``20260131``) joins the partition key: partitions stay bounded, but a history
read touches one partition per bucket (found through ``record_buckets``), and a plain
``WHERE table_name=? AND record_id=?`` no longer works in ad-hoc CQL. Choose it only for
tables whose rows change thousands of times a day; it cannot be changed on an existing
keyspace.

``event_digests``
    one row per stored ``event_id`` with the SHA-256 of its content
    (:func:`~consumer.sinks.base.content_digest`): what tells a redelivery from a conflict.

Writes use prepared, idempotent ``INSERT`` statements, sent asynchronously with at most
``max_in_flight`` requests outstanding across all threads. A write first reads the digests
of its event ids (one single-partition read each, concurrently); a record whose digest is
stored and equal is a redelivery and is skipped, one whose digest differs is a conflict
(:class:`~consumer.sinks.base.RecordConflict`, the stored record kept); the others are
written, and their digests only after all their rows are, so a stored digest means a
complete record and an interrupted write is simply written again. Two *concurrent*
deliveries of one event id with different content can both pass the read (a window of one
round trip); docs/cql.md describes it.

Absent values (``before`` of an insert, ``after`` of a delete, ``previous_record_id``,
``request_id``, the actor) are bound as ``UNSET_VALUE``, never ``None``: a ``None`` bound in
an ``INSERT`` writes a tombstone. This needs native protocol 4 or later.

Errors: a value the driver cannot bind (an ``int`` out of range, text that is not valid
Unicode) and Cassandra's ``InvalidRequest`` concern one record and raise
:class:`~consumer.sinks.base.RecordRejected`; everything else (no host, timeouts,
unavailable, overloaded) is a retryable :class:`~sqla_audit.errors.StoreError`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Final

from consumer.config import CassandraConfig, CassandraSchemaConfig
from consumer.records import AuditRecord, record_from_row, record_to_row
from consumer.sinks.base import (
    Page,
    RecordConflict,
    RecordRejected,
    Window,
    conflict,
    content_digest,
    paginate,
)
from sqla_audit.errors import ConfigurationError, StoreError

log = logging.getLogger(__name__)

_MIN_UUID: Final = uuid.UUID(int=0)
_MAX_UUID: Final = uuid.UUID(int=(1 << 128) - 1)
#: Lower bound used when a read has no ``since`` (Cassandra timestamps are signed ms).
_MIN_MS: Final = -(2**62)
_MAX_MS: Final = 2**62

_RECORD_COLUMNS: Final = (
    ("table_name", "text"),
    ("record_id", "text"),
    ("event_time", "timestamp"),
    ("event_id", "uuid"),
    ("event_time_us", "bigint"),
    ("occurred_at", "timestamp"),
    ("occurred_at_us", "bigint"),
    ("operation", "text"),
    ("service", "text"),
    ("transaction_id", "uuid"),
    ("sequence", "int"),
    ("actor_id", "text"),
    ("actor_attributes", "text"),
    ("request_id", "text"),
    ("previous_record_id", "text"),
    ("masked_columns", "text"),
    ("changes", "text"),
    ("before", "text"),
    ("after", "text"),
    ("metadata", "text"),
)
_NAMES: Final = tuple(name for name, _ in _RECORD_COLUMNS)


def bucket_of(event_time: dt.datetime, granularity: str) -> int:
    """The time bucket (``2026``, ``202601`` or ``20260131``) of an event time, in UTC."""
    day = event_time.astimezone(dt.UTC)
    if granularity == "year":
        return day.year
    if granularity == "month":
        return day.year * 100 + day.month
    if granularity == "day":
        return day.year * 10_000 + day.month * 100 + day.day
    raise ValueError(f"no time bucket {granularity!r}")


class CassandraSchema:
    """The CQL that creates the store for one :class:`CassandraSchemaConfig`."""

    def __init__(self, config: CassandraSchemaConfig) -> None:
        self.config = config

    @property
    def bucketed(self) -> bool:
        return self.config.time_bucket != "none"

    def _replication(self) -> str:
        cfg = self.config
        if cfg.replication_class == "NetworkTopologyStrategy":
            pairs = ", ".join(f"'{dc}': {count}" for dc, count in sorted(cfg.datacenters.items()))
            return f"{{'class': 'NetworkTopologyStrategy', {pairs}}}"
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {cfg.replication_factor}}}"

    def _table(self, name: str, extra: Iterable[tuple[str, str]], key: str, order: str) -> str:
        columns = [*extra, *_RECORD_COLUMNS]
        seen: set[str] = set()
        lines = []
        for column, cql_type in columns:
            if column not in seen:
                seen.add(column)
                lines.append(f"    {column} {cql_type},")
        options = [f"CLUSTERING ORDER BY ({order})"]
        if self.config.ttl_seconds:
            options.append(f"default_time_to_live = {self.config.ttl_seconds}")
        return (
            f"CREATE TABLE IF NOT EXISTS {self.config.keyspace}.{name} (\n"
            + "\n".join(lines)
            + f"\n    PRIMARY KEY ({key})\n) WITH "
            + "\n  AND ".join(options)
        )

    def statements(self) -> list[str]:
        """``CREATE ... IF NOT EXISTS`` statements, in the order to run them."""
        ks = self.config.keyspace
        record_key = (
            "(table_name, record_id, bucket)" if self.bucketed else "(table_name, record_id)"
        )
        record_extra = [("bucket", "int")] if self.bucketed else []
        out = [
            f"CREATE KEYSPACE IF NOT EXISTS {ks}\n"
            f"  WITH replication = {self._replication()}\n  AND durable_writes = true",
            self._table(
                "changes_by_record",
                record_extra,
                f"{record_key}, event_time, event_id",
                "event_time DESC, event_id DESC",
            ),
            self._table(
                "changes_by_actor",
                [("actor_id", "text"), ("day", "date")],
                "(actor_id, day), event_time, event_id",
                "event_time DESC, event_id DESC",
            ),
            self._table(
                "changes_by_transaction",
                [("transaction_id", "uuid")],
                "(transaction_id), sequence, event_id",
                "sequence ASC, event_id ASC",
            ),
        ]
        ttl = (
            f"\n  AND default_time_to_live = {self.config.ttl_seconds}"
            if self.config.ttl_seconds
            else ""
        )
        digest_ttl = (
            f" WITH default_time_to_live = {self.config.ttl_seconds}"
            if self.config.ttl_seconds
            else ""
        )
        out.append(
            f"CREATE TABLE IF NOT EXISTS {ks}.event_digests (\n"
            f"    event_id uuid PRIMARY KEY,\n    digest blob\n){digest_ttl}"
        )
        if self.bucketed:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {ks}.record_buckets (\n"
                "    table_name text,\n    record_id text,\n    bucket int,\n"
                "    PRIMARY KEY ((table_name, record_id), bucket)\n"
                f") WITH CLUSTERING ORDER BY (bucket DESC){ttl}"
            )
        return out

    def cql(self) -> str:
        """The whole schema as a CQL script."""
        return "".join(f"{statement};\n\n" for statement in self.statements()).rstrip() + "\n"


# --------------------------------------------------------------------------- connecting


#: Longest pause between the driver's attempts to reconnect to a node it lost. A worker
#: holding batches through an outage writes as soon as the driver has a connection again,
#: so this bounds how long after the node returns the worker resumes (the driver's default
#: is 600 s). A reconnection attempt is one TCP connect: cheap even every 2 s.
RECONNECT_MAX_DELAY: Final = 2.0


def connect(config: CassandraConfig) -> Any:
    """A connected driver ``Cluster`` (call ``.shutdown()``), configured from ``config``.

    Explicit protocol version and ``DCAwareRoundRobinPolicy(local_dc)`` (token aware) keep
    the driver from guessing (and warning); reconnection is quick (0.5 s doubling to
    :data:`RECONNECT_MAX_DELAY`) so a worker resumes soon after Cassandra comes back.
    """
    from cassandra import ConsistencyLevel  # noqa: PLC0415 - heavy, optional dependency
    from cassandra.auth import PlainTextAuthProvider  # noqa: PLC0415
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # noqa: PLC0415
    from cassandra.policies import (  # noqa: PLC0415
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        TokenAwarePolicy,
    )
    from cassandra.query import dict_factory  # noqa: PLC0415

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[config.consistency],
        request_timeout=config.request_timeout,
        row_factory=dict_factory,
    )
    auth = (
        PlainTextAuthProvider(username=config.username, password=config.password)
        if config.username is not None
        else None
    )
    cluster = Cluster(
        contact_points=list(config.hosts),
        port=config.port,
        protocol_version=config.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        connect_timeout=config.connect_timeout,
        reconnection_policy=ExponentialReconnectionPolicy(
            base_delay=0.5, max_delay=RECONNECT_MAX_DELAY
        ),
        idle_heartbeat_interval=5,
    )
    try:
        cluster.connect()
    except Exception as exc:
        cluster.shutdown()
        raise _store_error("cannot connect to Cassandra", exc) from exc
    return cluster


def apply_schema(config: CassandraConfig) -> list[str]:
    """Create the keyspace and tables if they do not exist; returns the statements run."""
    statements = CassandraSchema(config.schema).statements()
    cluster = connect(config)
    try:
        session = cluster.connect()
        for statement in statements:
            session.execute(statement, timeout=max(config.request_timeout, 60.0))
        if not cluster.control_connection.wait_for_schema_agreement():
            raise StoreError("Cassandra nodes did not agree on the schema in time")
    except StoreError:
        raise
    except Exception as exc:
        raise _store_error("applying the schema failed", exc) from exc
    finally:
        cluster.shutdown()
    return statements


def _store_error(what: str, exc: BaseException) -> StoreError:
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


def _classify(exc: BaseException) -> Exception:
    """Driver errors -> the sqla-audit tree: invalid requests are permanent, rest retryable."""
    from cassandra import InvalidRequest  # noqa: PLC0415

    if isinstance(exc, RecordRejected):
        return exc
    if isinstance(exc, InvalidRequest):
        return RecordRejected(f"Cassandra rejected a record: {exc}")
    return _store_error("Cassandra write failed", exc)


def _absent_unset(values: tuple[Any, ...], unset: Any) -> tuple[Any, ...]:
    """``values`` with every ``None`` replaced by the driver's ``UNSET_VALUE``."""
    return tuple(unset if value is None else value for value in values)


# --------------------------------------------------------------------------- the store


class CassandraStore:
    """An :class:`~consumer.sinks.base.AuditStore` over an existing keyspace.

    Build it with :meth:`connect` (owns the cluster) or from a session you manage. The
    tables must exist (``sqla-audit schema apply``); otherwise preparing the statements
    fails with a :class:`ConfigurationError` that says so.
    """

    def __init__(
        self,
        session: Any,
        schema: CassandraSchemaConfig,
        *,
        max_in_flight: int = 64,
        request_timeout: float = 10.0,
        cluster: Any = None,
    ) -> None:
        self._session = session
        self._cluster = cluster
        self._schema = CassandraSchema(schema)
        self._bucket = schema.time_bucket
        self._timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._closed = False
        protocol = getattr(getattr(session, "cluster", None), "protocol_version", None)
        if isinstance(protocol, int) and protocol < 4:
            raise ConfigurationError(
                f"the Cassandra store needs native protocol 4 or later (got {protocol}): "
                "absent values are left unset, which protocol 3 cannot express"
            )
        from cassandra.query import UNSET_VALUE  # noqa: PLC0415 - heavy, optional dependency

        self._unset = UNSET_VALUE
        self._prepare()

    @classmethod
    def connect(cls, config: CassandraConfig) -> CassandraStore:
        cluster = connect(config)
        try:
            return cls(
                cluster.connect(),
                config.schema,
                max_in_flight=config.max_in_flight,
                request_timeout=config.request_timeout,
                cluster=cluster,
            )
        except BaseException:
            cluster.shutdown()
            raise

    def _prepare(self) -> None:
        from cassandra import InvalidRequest  # noqa: PLC0415

        ks = self._schema.config.keyspace
        record_names = (*_NAMES, "bucket") if self._schema.bucketed else _NAMES

        def insert(table: str, names: tuple[str, ...]) -> str:
            marks = ", ".join("?" for _ in names)
            return f"INSERT INTO {ks}.{table} ({', '.join(names)}) VALUES ({marks})"

        partition = "table_name = ? AND record_id = ?" + (
            " AND bucket = ?" if self._schema.bucketed else ""
        )
        lower = "(event_time, event_id) >= (?, ?)"
        try:
            prepare = self._session.prepare
            self._insert_record = prepare(insert("changes_by_record", record_names))
            self._insert_actor = prepare(insert("changes_by_actor", (*_NAMES, "day")))
            self._insert_txn = prepare(insert("changes_by_transaction", _NAMES))
            self._insert_bucket = (
                prepare(insert("record_buckets", ("table_name", "record_id", "bucket")))
                if self._schema.bucketed
                else None
            )
            self._insert_digest = prepare(insert("event_digests", ("event_id", "digest")))
            self._digest = prepare(f"SELECT digest FROM {ks}.event_digests WHERE event_id = ?")
            for statement in (
                self._insert_record,
                self._insert_actor,
                self._insert_txn,
                self._insert_bucket,
                self._insert_digest,
                self._digest,
            ):
                if statement is not None:
                    statement.is_idempotent = True
            self._history = {
                inclusive: prepare(
                    f"SELECT * FROM {ks}.changes_by_record WHERE {partition} AND {lower} "
                    f"AND (event_time, event_id) {'<=' if inclusive else '<'} (?, ?)"
                )
                for inclusive in (True, False)
            }
            self._actor = {
                inclusive: prepare(
                    f"SELECT * FROM {ks}.changes_by_actor WHERE actor_id = ? AND day = ? "
                    f"AND {lower} AND (event_time, event_id) {'<=' if inclusive else '<'} (?, ?)"
                )
                for inclusive in (True, False)
            }
            self._txn = prepare(
                f"SELECT * FROM {ks}.changes_by_transaction WHERE transaction_id = ?"
            )
            self._buckets = (
                prepare(
                    f"SELECT bucket FROM {ks}.record_buckets WHERE table_name = ? "
                    "AND record_id = ? AND bucket >= ? AND bucket <= ?"
                )
                if self._schema.bucketed
                else None
            )
        except InvalidRequest as exc:
            raise ConfigurationError(
                f"the audit tables in keyspace {ks!r} are missing or differ from this "
                f"configuration (run `sqla-audit schema apply`): {exc}"
            ) from exc
        except Exception as exc:
            raise _store_error("preparing statements failed", exc) from exc

    # -- writes ----------------------------------------------------------------------------

    def _statements_for(self, record: AuditRecord) -> Iterator[tuple[Any, tuple[Any, ...]]]:
        """The statements and bound values that store ``record``.

        The record's JSON texts are rendered once (:func:`record_to_row`) and the same
        values tuple is bound to every table's statement.
        """
        row = record_to_row(record)
        row["event_time"] = row["event_time_us"] // 1000  # == to_millis(record.event_time)
        row["occurred_at"] = row["occurred_at_us"] // 1000
        # absent values stay unset: a bound None would write a tombstone
        values = _absent_unset(tuple(map(row.__getitem__, _NAMES)), self._unset)
        if self._insert_bucket is not None:
            bucket = bucket_of(record.event_time, self._bucket)
            yield self._insert_record, (*values, bucket)
            yield self._insert_bucket, (record.table, record.record_id, bucket)
        else:
            yield self._insert_record, values
        if record.is_departure:
            return  # the companion tables keep the real event only (it names the old id)
        yield self._insert_txn, values
        if record.actor_id is not None:
            yield self._insert_actor, (*values, record.day)

    def _settle(self, future: Any, errors: list[BaseException]) -> Any:
        """Wait for one sent request, give its in-flight slot back; its result or None."""
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - any driver error; classified by the caller
            errors.append(exc)
            return None
        finally:
            self._slots.release()

    def _bind(self, record: AuditRecord, statement: Any, params: tuple[Any, ...]) -> Any:
        """The bound statement; a value the driver refuses is that record's problem."""
        try:
            bound = statement.bind(params)
            _ = bound.routing_key  # computed now: a key component over 64 KiB fails here
        except Exception as exc:  # the driver raises TypeError, ValueError, struct.error...
            raise RecordRejected(
                f"Cassandra cannot bind record {record.event_id}: {type(exc).__name__}: {exc}"
            ) from exc
        return bound

    def _run(self, requests: Iterable[tuple[AuditRecord, Any, tuple[Any, ...]]]) -> list[Any]:
        """Send every request (at most ``max_in_flight`` in flight across all threads), wait
        for all of them, then raise the worst failure: a retryable one if any (the store is
        failing), else the first refused record. Returns the results in order.

        A slot is taken before each request and given back by the sending thread when it
        collects the result -- no callback per request on the driver's event loop, whose
        thread would otherwise compete with the pollers for the GIL. A thread that finds
        the window full settles its own oldest request first, so a run larger than the
        window never waits for slots only it could free.
        """
        slots = self._slots
        pending: deque[tuple[int, Any]] = deque()
        results: list[Any] = []
        errors: list[BaseException] = []
        send_error: BaseException | None = None

        def settle_oldest() -> None:
            index, future = pending.popleft()
            results[index] = self._settle(future, errors)

        try:
            for record, statement, params in requests:
                try:
                    bound = self._bind(record, statement, params)
                except RecordRejected as exc:
                    send_error = exc
                    break
                while not slots.acquire(blocking=False):
                    if not pending:
                        slots.acquire()
                        break
                    settle_oldest()
                try:
                    future = self._session.execute_async(bound, timeout=self._timeout)
                except Exception as exc:  # noqa: BLE001 - any driver error; classified below
                    slots.release()
                    send_error = exc
                    break
                results.append(None)
                pending.append((len(results) - 1, future))
            while pending:  # wait for everything sent, even after a failure
                settle_oldest()
        except BaseException:
            for _ in pending:  # interrupted: never leak the slots of requests still out
                slots.release()
            raise
        failures = [(exc, _classify(exc)) for exc in (send_error, *errors) if exc is not None]
        if failures:
            outages = [pair for pair in failures if not isinstance(pair[1], RecordRejected)]
            original, worst = outages[0] if outages else failures[0]
            if worst is original:
                raise worst
            raise worst from original
        return results

    def _stored_digests(self, records: list[AuditRecord]) -> dict[uuid.UUID, bytes]:
        """The stored content digest of each of ``records`` that has one."""
        results = self._run((record, self._digest, (record.event_id,)) for record in records)
        found: dict[uuid.UUID, bytes] = {}
        for record, result in zip(records, results, strict=True):
            row = result.one() if result is not None else None
            if row is not None and row["digest"] is not None:
                found[record.event_id] = bytes(row["digest"])
        return found

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Write the new records, skip redeliveries, refuse conflicts (see the module
        docstring); the digests of the written records go last."""
        unique: dict[uuid.UUID, tuple[AuditRecord, bytes]] = {}
        first: RecordConflict | None = None
        for record in records:
            digest = content_digest(record)  # RecordRejected: a record no store can hold
            seen = unique.get(record.event_id)
            if seen is None:
                unique[record.event_id] = (record, digest)
            elif seen[1] != digest:
                first = first or conflict(record, log)
        if not unique:
            if first is not None:
                raise first
            return
        stored = self._stored_digests([record for record, _ in unique.values()])
        fresh: list[tuple[AuditRecord, bytes]] = []
        for event_id, (record, digest) in unique.items():
            known = stored.get(event_id)
            if known is None:
                fresh.append((record, digest))
            elif known != digest:
                first = first or conflict(record, log)
        self._run(
            (record, statement, params)
            for record, _ in fresh
            for statement, params in self._statements_for(record)
        )
        self._run(
            (record, self._insert_digest, (record.event_id, digest)) for record, digest in fresh
        )
        if first is not None:
            raise first

    # -- reads -----------------------------------------------------------------------------

    def _execute(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Any:
        bound = statement.bind(params)
        bound.fetch_size = fetch_size
        try:
            return self._session.execute(bound, timeout=self._timeout)
        except Exception as exc:
            raise _store_error("Cassandra read failed", exc) from exc

    def _rows(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Iterator[Any]:
        result = self._execute(statement, params, fetch_size)
        iterator = iter(result)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # fetching a later page failed
                raise _store_error("Cassandra read failed", exc) from exc
            yield row

    @staticmethod
    def _bounds(window: Window) -> tuple[bool, tuple[Any, ...]]:
        """(upper bound inclusive?, the four clustering bound values)."""
        low = (window.min_ms if window.min_ms is not None else _MIN_MS, _MIN_UUID)
        until_ms = window.until_us // 1000 if window.until_us is not None else _MAX_MS
        cursor = window.cursor
        if cursor is not None and cursor.millis <= until_ms:
            return False, (*low, cursor.millis, cursor.event_id)
        return True, (*low, until_ms, _MAX_UUID)

    def _fetch(self, window: Window) -> int:
        return window.limit + 1

    def _history_candidates(
        self, table: str, record_id: str, window: Window
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._history[inclusive]
        if self._buckets is None:
            for row in self._rows(statement, (table, record_id, *bounds), self._fetch(window)):
                yield record_from_row(row)
            return
        low_ms, high_ms = bounds[0], bounds[2]
        low_bucket = 0 if low_ms == _MIN_MS else bucket_of(_from_ms(low_ms), self._bucket)
        high_bucket = (
            99_999_999 if high_ms == _MAX_MS else bucket_of(_from_ms(high_ms), self._bucket)
        )
        buckets = [
            row["bucket"]
            for row in self._rows(self._buckets, (table, record_id, low_bucket, high_bucket), 1000)
        ]
        for bucket in buckets:
            params = (table, record_id, bucket, *bounds)
            for row in self._rows(statement, params, self._fetch(window)):
                yield record_from_row(row)

    def history(
        self,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        return paginate(self._history_candidates(table, record_id, window), window)

    def _actor_candidates(
        self, actor_id: str, window: Window, until: dt.datetime | None
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._actor[inclusive]
        # No ``until``: look one day ahead of now to tolerate producers' clock skew.
        last = until or (dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        if window.cursor is not None:
            last = min(last, _from_ms(window.cursor.millis))
        first = _from_ms(window.min_ms if window.min_ms is not None else 0).date()
        day = last.astimezone(dt.UTC).date()
        while day >= first:
            for row in self._rows(statement, (actor_id, day, *bounds), self._fetch(window)):
                yield record_from_row(row)
            day -= dt.timedelta(days=1)

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        return paginate(self._actor_candidates(actor_id, window, until), window)

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        return [record_from_row(row) for row in self._rows(self._txn, (transaction_id,), 1000)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._cluster is not None:
            self._cluster.shutdown()


def _from_ms(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)


def wait_for_cassandra(
    config: CassandraConfig,
    *,
    stop: threading.Event,
    max_backoff: float = 30.0,
    on_retry: Any = None,
) -> CassandraStore | None:
    """Connect, retrying with capped exponential backoff until it works or ``stop`` is set.

    Configuration problems (missing tables) are raised at once; an unreachable cluster is
    retried, so a worker may start before Cassandra does.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            return CassandraStore.connect(config)
        except StoreError as exc:
            if on_retry is not None:
                on_retry(exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, max_backoff)
    return None


__all__ = [
    "CassandraSchema",
    "CassandraStore",
    "apply_schema",
    "bucket_of",
    "connect",
    "wait_for_cassandra",
]
