"""Wiring of ``sqla-audit demo``: applications, transport, consumer, store, history, check.

Two services write to one audit trail: the shop (``app.db``) and the billing service
(``billing.db``), each a SQLAlchemy application with its own database and its own
``install_audit(service=...)``. Embedded defaults (nothing but the package is needed): the
application databases are SQLite files, ``install_audit`` runs in outbox mode so the events
are rows of each service's own database, the consumer reads both outboxes with
:class:`~consumer.sources.outbox.OutboxSource`, and the records go to
:class:`~consumer.sinks.sqlite.SQLiteStore`, which answers the same queries with the
same semantics as the Cassandra store. Configuration moves each piece to AWS and Cassandra
without touching the scenario:

* a topic (and the queue subscribed to it) -- both services publish directly to SNS
  with :class:`~sqla_audit.publishers.sns.SNSPublisher`, and the consumer reads the queue
  with :class:`~consumer.sources.sqs.SqsSource`;
* Cassandra contact points -- the schema is applied (idempotent) and the records go to
  :class:`~consumer.sinks.cassandra.CassandraStore`.

The consumer step processes messages the way the worker does -- decode, diff, write every
record of a batch, then acknowledge; undecodable messages are rejected -- but in the
calling thread and only until the scenario's events are in, so the demo ends by itself.
``sqla-audit consume`` runs the same source and store under the long-running worker.

The history shown is read back through :class:`~consumer.query.AuditQuery` from the store,
limited to changes made since this run started (a reused Cassandra keyspace or work
directory may hold earlier runs), and compared with the scenario's expectations: the exit
code is 0 only when every record shows exactly the expected changes by the expected actors,
nothing of the rolled-back request, and the request view of the order request holds exactly
its changes in both services.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from consumer.decoding import Decoder
from consumer.demo.models import BillingBase, ShopBase
from consumer.demo.scenario import BILLING, SHOP, ExpectedChange, ScenarioResult, run_scenario
from consumer.differ import records_for_event
from consumer.query import AuditQuery, change_order
from consumer.records import AuditRecord
from consumer.render import format_changes, format_time, render_records, render_table
from consumer.sinks.base import AuditStore
from consumer.sources.base import Message, MessageSource
from sqla_audit.errors import ConfigurationError, DecodeError, RetryableError, TransportError
from sqla_audit.events import ChangeEvent, utcnow
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.base import Publisher

if TYPE_CHECKING:
    import datetime as dt

    from consumer.config import CassandraConfig
    from sqla_audit.outbox import OutboxWriter

log = logging.getLogger(__name__)

#: Messages per receive in the consumer step (the SQS maximum).
BATCH_SIZE: Final = 10
#: Consecutive store failures the consumer step tolerates before giving up.
MAX_STORE_FAILURES: Final = 5


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Where the demo runs; the defaults are the embedded ones.

    * ``workdir`` -- where ``app.db``, ``billing.db`` (and ``audit.db`` with the SQLite
      store) go; ``None``:
      a temporary directory, removed at the end.
    * ``topic_arn`` and ``queue_url`` -- together: publish to SNS, consume from SQS.
    * ``region``, ``endpoint_url`` -- for the AWS clients (else boto3's own configuration).
    * ``cassandra`` -- write to Cassandra instead of the SQLite store.
    * ``timeout`` -- seconds to wait for SNS to accept and SQS to deliver the events.
    """

    workdir: Path | None = None
    topic_arn: str | None = None
    queue_url: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    cassandra: CassandraConfig | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if (self.topic_arn is None) != (self.queue_url is None):
            raise ConfigurationError(
                "SNS/SQS needs both a topic and the queue subscribed to it: "
                "--topic-arn / SQLA_AUDIT_TOPIC_ARN and --queue-url / SQLA_AUDIT_QUEUE_URL"
            )
        if self.topic_arn is not None and not self.topic_arn.startswith("arn:"):
            raise ConfigurationError(
                f"--topic-arn must be an SNS topic ARN, got {self.topic_arn!r}"
            )
        for name, url in (("--queue-url", self.queue_url), ("--endpoint-url", self.endpoint_url)):
            if url is not None and (
                urlparse(url).scheme not in ("http", "https") or "//" not in url
            ):
                raise ConfigurationError(f"{name} must be an http(s) URL, got {url!r}")
        if not 0 < self.timeout <= 3600:
            raise ConfigurationError(f"--timeout must be 1 to 3600 seconds, got {self.timeout}")

    @property
    def uses_sns(self) -> bool:
        return self.topic_arn is not None


# --------------------------------------------------------------------------- the consumer step


@dataclass(slots=True)
class ConsumeStats:
    """What the consumer step did."""

    messages: int = 0
    events: int = 0
    records: int = 0
    rejected: list[str] = field(default_factory=list)


def consume(
    source: MessageSource,
    store: AuditStore,
    decoder: Decoder,
    *,
    expected: set[uuid.UUID] | None,
    timeout: float,
    wait: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ConsumeStats:
    """Decode, diff, write, then acknowledge batches until the events are in.

    With ``expected`` (event ids) it stops once all of them were written; without, once
    the source has nothing more to hand out. Raises :class:`TransportError` when
    ``timeout`` passes first, or the store error after repeated store failures.
    """
    stats = ConsumeStats()
    missing = None if expected is None else set(expected)
    deadline = clock() + timeout
    failures = 0
    while missing is None or missing:
        if clock() > deadline:
            count = "some" if missing is None else str(len(missing))
            raise TransportError(f"{count} event(s) did not arrive within {timeout:.0f} s")
        messages = source.receive(BATCH_SIZE, wait)
        if not messages:
            if missing is None:
                break
            continue
        good: list[Message] = []
        records: list[AuditRecord] = []
        seen: list[uuid.UUID] = []
        for message in messages:
            try:
                events: Sequence[ChangeEvent] = decoder.decode(message.body)
            except DecodeError as exc:
                stats.rejected.append(f"{message.message_id}: {exc}")
                source.reject([message], str(exc))
                continue
            good.append(message)
            seen += [event.event_id for event in events]
            stats.events += len(events)
            for event in events:
                records += records_for_event(event)
        try:
            if records:
                store.write(records)
        except RetryableError:
            failures += 1
            source.release(good, 0)
            if failures >= MAX_STORE_FAILURES:
                raise
            sleep(0.5 * 2**failures)
            continue
        failures = 0
        source.ack(good)
        stats.messages += len(messages)
        stats.records += len(records)
        if missing is not None:
            missing.difference_update(seen)
    return stats


class CountingPublisher:
    """Hands events to a publisher and remembers their ids (to know what to wait for)."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.event_ids: set[uuid.UUID] = set()

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        self.event_ids.update(event.event_id for event in events)
        self.inner.publish(events)

    def flush(self, timeout: float | None = None) -> bool:
        return self.inner.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.inner.close(timeout)


# --------------------------------------------------------------------------- output


def _arrow(out: TextIO) -> str:
    """``→`` where the output can show it, ``->`` elsewhere."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


def history_table(records: Sequence[AuditRecord], *, arrow: str) -> str:
    """A record's changes, oldest first: time, operation, actor, changed fields."""
    rows = [
        [
            [format_time(record.event_time)],
            [record.operation.value],
            [record.actor_id or "-"],
            format_changes(record, arrow=arrow),
        ]
        for record in records
    ]
    return render_table(["EVENT TIME", "OP", "ACTOR", "CHANGES"], rows)


def _describe(changes: Sequence[ExpectedChange | AuditRecord]) -> str:
    parts = []
    for change in changes:
        if isinstance(change, AuditRecord):
            operation, actor = change.operation.value, change.actor_id or "-"
        else:
            operation, actor = change.operation.value, change.actor
        parts.append(f"{operation} by {actor}")
    return ", ".join(parts) or "nothing"


def check_history(expected: Sequence[ExpectedChange], found: Sequence[AuditRecord]) -> str | None:
    """``None`` when ``found`` (oldest first) is exactly ``expected``, else what differs."""
    problem = len(expected) != len(found)
    for want, got in zip(expected, found, strict=False):
        if want.operation is not got.operation or want.actor != got.actor_id:
            problem = True
        elif want.columns is not None and set(got.changes) != want.columns:
            return (
                f"{got.operation.value} by {got.actor_id} changed {sorted(got.changes)}, "
                f"expected {sorted(want.columns)}"
            )
    if problem:
        return f"expected {_describe(expected)}; found {_describe(found)}"
    return None


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class _Resources:
    """Everything the run opened, closed in reverse order at the end."""

    closers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception:
                log.debug("demo cleanup step failed", exc_info=True)


def _open_store(config: DemoConfig, workdir: Path, res: _Resources) -> tuple[AuditStore, str]:
    if config.cassandra is None:
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        path = workdir / "audit.db"
        sqlite_store = SQLiteStore(path)
        res.closers.append(sqlite_store.close)
        shown = path if config.workdir is not None else path.name
        return sqlite_store, f"{shown} (SQLite; the same queries as Cassandra)"
    from consumer.sinks.cassandra import CassandraStore, apply_schema  # noqa: PLC0415

    cassandra = config.cassandra
    apply_schema(cassandra)
    cassandra_store = CassandraStore.connect(cassandra)
    res.closers.append(cassandra_store.close)
    hosts = ",".join(cassandra.hosts)
    return (
        cassandra_store,
        f"Cassandra {hosts}:{cassandra.port}, keyspace {cassandra.schema.keyspace}",
    )


def _sns_publisher(config: DemoConfig) -> Publisher:
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415 -- needs boto3

    assert config.topic_arn is not None
    try:
        return SNSPublisher(
            config.topic_arn,
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            register_atexit=False,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def _sqs_source(config: DemoConfig) -> tuple[MessageSource, Decoder]:
    from consumer.config import SqsConfig  # noqa: PLC0415
    from consumer.sources.sqs import S3PayloadFetcher, SqsSource, make_s3_client  # noqa: PLC0415

    assert config.queue_url is not None
    sqs = SqsConfig(
        queue_url=config.queue_url,
        region=config.region,
        endpoint_url=config.endpoint_url,
        wait_seconds=1,
        batch_size=BATCH_SIZE,
        visibility_timeout=30,
    )
    return SqsSource(sqs), Decoder(S3PayloadFetcher(make_s3_client(sqs)))


def run_demo(config: DemoConfig, out: TextIO) -> int:
    """Run the whole demo, printing to ``out``; 0 when every history is as expected."""
    res = _Resources()
    try:
        if config.workdir is None:
            temporary = tempfile.TemporaryDirectory(prefix="sqla-audit-demo-")
            res.closers.append(temporary.cleanup)
            workdir = Path(temporary.name)
        else:
            workdir = config.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        return _run(config, workdir, out, res)
    finally:
        res.close()


@dataclass(slots=True)
class _App:
    """One audited service: its name, database, session factory and (embedded) outbox."""

    service: str
    path: Path
    engine: sa.Engine
    maker: sessionmaker[Session]
    outbox: OutboxWriter | None


def _app(
    service: str,
    path: Path,
    base: type[ShopBase] | type[BillingBase],
    *,
    outbox: bool,
    res: _Resources,
) -> _App:
    """A fresh SQLite database for one service, with its tables (and outbox table)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    res.closers.append(engine.dispose)
    metadata = sa.MetaData()
    for table in base.metadata.sorted_tables:
        table.to_metadata(metadata)
    writer = None
    if outbox:
        from sqla_audit.outbox import OutboxWriter, outbox_table  # noqa: PLC0415

        writer = OutboxWriter(outbox_table(metadata))
    metadata.drop_all(engine)
    metadata.create_all(engine)
    return _App(service, path, engine, sessionmaker(engine), writer)


def _run(config: DemoConfig, workdir: Path, out: TextIO, res: _Resources) -> int:
    def say(text: str = "") -> None:
        print(text, file=out)

    arrow = _arrow(out)
    embedded = not config.uses_sns
    shop = _app(SHOP, workdir / "app.db", ShopBase, outbox=embedded, res=res)
    billing = _app(BILLING, workdir / "billing.db", BillingBase, outbox=embedded, res=res)
    apps = (shop, billing)

    store, store_text = _open_store(config, workdir, res)
    # a temporary directory is removed at the end: its paths would only mislead
    kept = config.workdir is not None
    say("sqla-audit demo")
    say(f"  application database  {shop.path if kept else shop.path.name} (SQLite, service {SHOP})")
    say(
        f"                        {billing.path if kept else billing.path.name} "
        f"(SQLite, service {BILLING})"
    )
    if not kept:
        say(
            "  files                 in a temporary directory, removed at the end "
            "(--workdir DIR keeps them)"
        )
    if config.uses_sns:
        say(f"  transport             SNS topic {config.topic_arn}")
        say(f"                        -> SQS queue {config.queue_url}")
    else:
        say("  transport             the outbox table in each application database (embedded)")
    say(f"  audit store           {store_text}")
    say()

    counting: CountingPublisher | None = None
    if config.uses_sns:
        counting = CountingPublisher(_sns_publisher(config))
        res.closers.append(counting.close)
    for app in apps:
        if counting is not None:
            install_audit(app.maker, publisher=counting, service=app.service)
        else:
            assert app.outbox is not None
            install_audit(app.maker, outbox=app.outbox, service=app.service)
        res.closers.append(functools.partial(uninstall_audit, app.maker))

    started = utcnow()
    scenario = run_scenario(shop.maker, billing.maker)
    users = sorted({step.user for step in scenario.steps})
    say(
        f"The scenario: {len(users)} users ({', '.join(users)}), {len(scenario.steps)} requests "
        f"to the {SHOP} service, which calls the {BILLING} service for orders"
    )
    for step in scenario.steps:
        mark = "ok" if step.committed else "ROLLED BACK"
        say(f"  {step.number}. {step.user:<6} {step.summary}  [{mark}]")
    say()

    decoder = Decoder()
    if counting is not None:
        if not counting.flush(config.timeout):
            raise TransportError(f"SNS did not accept every event within {config.timeout:.0f} s")
        queue, decoder = _sqs_source(config)
        res.closers.append(queue.close)
        stats = consume(
            queue,
            store,
            decoder,
            expected=counting.event_ids,
            timeout=config.timeout,
            wait=1.0,
        )
        origin = "the SQS queue"
    else:
        from consumer.sources.outbox import OutboxSource  # noqa: PLC0415

        stats = ConsumeStats()
        for app in apps:
            assert app.outbox is not None
            source = OutboxSource(app.engine, table=app.outbox.table)
            res.closers.append(source.close)
            part = consume(source, store, decoder, expected=None, timeout=config.timeout)
            stats.messages += part.messages
            stats.events += part.events
            stats.records += part.records
            stats.rejected += part.rejected
        origin = "the two outboxes"
    say(
        f"The consumer read {stats.events} events from {origin}, computed the field "
        f"changes and wrote {stats.records} records to the audit store."
    )
    for reason in stats.rejected:
        say(f"  rejected: {reason}")
    say()
    return _show_and_check(
        scenario,
        query=AuditQuery(store),
        started=started,
        say=say,
        arrow=arrow,
        config=config,
        workdir=workdir,
    )


def _show_and_check(
    scenario: ScenarioResult,
    *,
    query: AuditQuery,
    started: dt.datetime,
    say: Callable[..., None],
    arrow: str,
    config: DemoConfig,
    workdir: Path,
) -> int:
    say("The history of each record (service, table, id), oldest change first:")
    problems: list[str] = []
    for key in scenario.records:
        service, table, record_id = key
        found = sorted(
            query.iter_history(table, record_id, service=service, since=started),
            key=change_order,
        )
        say()
        if not found:
            say(f"{service} {table} {record_id}: no changes recorded")
        else:
            count = f"{len(found)} change{'s' if len(found) != 1 else ''}"
            say(f"{service} {table} {record_id}: {count}")
            say(history_table(found, arrow=arrow))
        problem = check_history(scenario.expected.get(key, []), found)
        if problem is not None:
            problems.append(f"{service} {table} {record_id}: {problem}")
    say()
    request = scenario.shared_request
    shared = [r for r in query.iter_request(request) if r.event_time >= started]
    say(
        f"The request view of {request}: one user action, {len(shared)} changes in "
        f"{len({r.service for r in shared})} services, in commit order:"
    )
    say(
        render_records(shared, show_service=True, show_record=True, show_request=False, arrow=arrow)
    )
    found_keys = [(r.service, r.table, r.record_id) for r in shared]
    if sorted(found_keys) != sorted(scenario.shared_records):
        problems.append(
            f"request {request}: expected {sorted(scenario.shared_records)}, found {found_keys}"
        )
    say()
    rolled_back = [step for step in scenario.steps if not step.committed]
    if problems:
        say("Check FAILED -- the audit log does not match the scenario:")
        for problem in problems:
            say(f"  {problem}")
        return 1
    say(
        f"Check passed: each of the {len(scenario.records)} records shows exactly the changes "
        "of the scenario, each by the user who made it, in its own service; the request view "
        f"of {request} holds its changes in both services;"
    )
    for step in rolled_back:
        say(f"nothing of request {step.number} ({step.user}, {step.outcome}) was recorded.")
    if config.workdir is None:
        say()
        say(
            "The demo's files were removed with their temporary directory; run "
            "`sqla-audit demo --workdir DIR` to keep them and query them afterwards."
        )
    elif config.cassandra is None:
        say()
        flags = f"--store sqlite --store-url {workdir / 'audit.db'}"
        say("Explore further, for example:")
        say(f"  sqla-audit history products MN-03 {flags}")
        say(f"  sqla-audit request {request} {flags}")
        say(f"  sqla-audit changes {SHOP} products --since 1h {flags}")
        say(f"  sqla-audit actor bob --since 1h --format csv --values plain {flags}")
    return 0


__all__ = [
    "BATCH_SIZE",
    "ConsumeStats",
    "CountingPublisher",
    "DemoConfig",
    "check_history",
    "consume",
    "history_table",
    "run_demo",
]
