"""One P1 contender in its own process: runs a transaction when told, reports its timings.

Why a process per contender: SQLAlchemy-Continuum configures mappers and session events
globally (``make_versioned``), the SNS publisher runs a background thread, and the in-memory
publisher keeps every event; none of that may leak into another contender's measurement.
The parent (:mod:`bench.p1_commit`) drives every worker with one JSON command per line on
stdin and reads one JSON answer per line on stdout, so it can interleave the contenders
round-robin while each one times only its own work.

Contenders: ``none`` (no audit), ``memory`` (sqla-audit + ``InMemoryPublisher``), ``sns``
(sqla-audit + ``SNSPublisher`` to the local SNS endpoint), ``outbox`` (sqla-audit in outbox
mode with ``OutboxWriter``), ``continuum`` (SQLAlchemy-Continuum, default configuration
with ``user_cls=None``: no user table to join).

A timed transaction is the application's whole unit of work: open a session, load the rows
it changes (updates and deletes), change them, commit, close. Preparing rows to delete and
removing inserted rows happen outside the timed region. The garbage collector is paused
inside it (as ``timeit`` does); its collections happen between transactions.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from bench.models import Models, build_models, new_object, row_values

#: Rows that exist before any update workload runs (ids 1..UPDATE_POOL).
UPDATE_POOL = 2000


@dataclass
class Target:
    """One database as seen by this contender."""

    name: str
    engine: sa.Engine
    maker: sessionmaker[Session]
    models: Models
    outbox: sa.Table | None = None
    version: int = 0
    cursor: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Contender:
    def __init__(self, kind: str, topic_arn: str | None, endpoint: str | None) -> None:
        self.kind = kind
        self.topic_arn = topic_arn
        self.endpoint = endpoint
        self.publisher: Any = None
        self.targets: dict[str, Target] = {}
        #: perf_counter() marks a transaction sets inside the timed region (bulk statements:
        #: when ``session.execute()`` returned, so the statement and its capture are told
        #: apart from the commit)
        self.marks: dict[str, float] = {}
        self.table_name = f"bench_item_{kind}"
        if kind == "continuum":
            from sqlalchemy_continuum import make_versioned  # noqa: PLC0415

            make_versioned(user_cls=None)
        self.models = build_models(self.table_name, versioned=kind == "continuum")
        if kind == "continuum":
            sa.orm.configure_mappers()
        if kind == "memory":
            from sqla_audit.publishers.memory import InMemoryPublisher  # noqa: PLC0415

            self.publisher = InMemoryPublisher()
        elif kind == "sns":
            from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

            assert topic_arn is not None
            self.publisher = SNSPublisher(topic_arn, endpoint_url=endpoint, register_atexit=False)

    # -- set-up --------------------------------------------------------------------------

    def _time_row_images(self) -> None:
        """Sum, in ``marks["row_images"]``, the time bulk capture spends building the row
        changes in Python (compare, encode, ``RowChange``): two clock reads per statement.
        A library without that step (an older revision) is left as it is."""
        try:
            from sqla_audit.bulk_images import RowImages  # noqa: PLC0415
        except ImportError:
            return
        marks = self.marks

        def timed(method: Callable[..., None]) -> Callable[..., None]:
            def wrapper(*args: Any, **kwargs: Any) -> None:
                started = time.perf_counter()
                try:
                    method(*args, **kwargs)
                finally:
                    spent = time.perf_counter() - started
                    marks["row_images"] = marks.get("row_images", 0.0) + spent

            return wrapper

        for name in ("updated_rows", "deleted_rows"):
            setattr(RowImages, name, timed(getattr(RowImages, name)))

    def add_target(self, name: str, url: str) -> dict[str, Any]:
        engine = sa.create_engine(url)
        maker = sessionmaker(engine)
        models = self.models
        outbox: sa.Table | None = None
        with engine.begin() as conn:
            models.base.metadata.drop_all(conn)
        if self.kind == "outbox":
            from sqla_audit.outbox import outbox_table  # noqa: PLC0415

            outbox = outbox_table(models.base.metadata, name=f"bench_outbox_{self.kind}")
        models.base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(models.table), [row_values(i) for i in range(1, UPDATE_POOL + 1)]
            )
        if self.kind in ("memory", "sns", "outbox") and not self.targets:
            self._time_row_images()
        if self.kind in ("memory", "sns"):
            from sqla_audit import install_audit  # noqa: PLC0415

            install_audit(maker, publisher=self.publisher, service="bench", models=[models.item])
        elif self.kind == "outbox":
            from sqla_audit import install_audit  # noqa: PLC0415
            from sqla_audit.outbox import OutboxWriter  # noqa: PLC0415

            install_audit(maker, outbox=OutboxWriter(outbox), service="bench", models=[models.item])
        self.targets[name] = Target(name, engine, maker, models, outbox)
        return {"dialect": engine.dialect.name, "server": _server_version(engine)}

    # -- workloads -----------------------------------------------------------------------

    def _window(self, target: Target, n: int) -> list[int]:
        """``n`` consecutive ids of the update pool, moving on each call."""
        start = target.cursor % UPDATE_POOL
        target.cursor += n
        return [(start + k) % UPDATE_POOL + 1 for k in range(n)]

    def _rows_to_delete(self, target: Target, n: int) -> list[int]:
        table = target.models.table
        base = 10_000_000 + target.version * 10_000
        with target.engine.begin() as conn:
            conn.execute(
                sa.insert(table),
                [{"id": base + k, **row_values(base + k)} for k in range(n)],
            )
        return [base + k for k in range(n)]

    def _cleanup_inserts(self, target: Target) -> None:
        table = target.models.table
        with target.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.id > UPDATE_POOL))
            if target.outbox is not None:
                conn.execute(sa.delete(target.outbox))

    def _body(self, target: Target, workload: str, n: int) -> Callable[[], None]:
        item = target.models.item
        target.version += 1
        version = target.version
        maker = target.maker

        def update_rows(session: Session, ids: list[int]) -> None:
            rows = session.scalars(sa.select(item).where(item.id.in_(ids))).all()
            for obj in rows:
                values = row_values(obj.id, version=version)
                obj.amount = values["amount"]
                obj.status = values["status"]
                obj.quantity = values["quantity"]

        if workload == "insert":
            first = 1_000_000 + version * 10_000

            def run() -> None:
                with maker() as session:
                    session.add_all([new_object(target.models, first + k) for k in range(n)])
                    session.commit()

            return run
        if workload == "update":
            ids = self._window(target, n)

            def run() -> None:
                with maker() as session:
                    update_rows(session, ids)
                    session.commit()

            return run
        if workload == "delete":
            doomed = self._rows_to_delete(target, n)

            def run() -> None:
                with maker() as session:
                    for obj in session.scalars(sa.select(item).where(item.id.in_(doomed))):
                        session.delete(obj)
                    session.commit()

            return run
        if workload == "bulk_update":
            # One ORM-enabled UPDATE ... WHERE over n consecutive ids of the update pool.
            low = (target.cursor % (UPDATE_POOL - n + 1)) if n < UPDATE_POOL else 0
            target.cursor += n

            def run() -> None:
                with maker() as session:
                    session.execute(
                        sa.update(item)
                        .where(item.id > low, item.id <= low + n)
                        .values(quantity=item.quantity + 1, status=f"v{version % 1000}")
                    )
                    self.marks["execute"] = time.perf_counter()
                    session.commit()

            return run
        if workload == "bulk_delete":
            doomed = self._rows_to_delete(target, n)

            def run() -> None:
                with maker() as session:
                    session.execute(
                        sa.delete(item).where(item.id >= doomed[0], item.id <= doomed[-1])
                    )
                    self.marks["execute"] = time.perf_counter()
                    session.commit()

            return run
        if workload == "mixed":
            ids = self._window(target, n)
            first = 1_000_000 + version * 10_000

            def run() -> None:
                with maker() as session:
                    session.add_all([new_object(target.models, first + k) for k in range(n)])
                    update_rows(session, ids)
                    session.commit()

            return run
        raise ValueError(f"unknown workload {workload!r}")

    def run(self, db: str, workload: str, n: int, check: bool) -> dict[str, Any]:
        target = self.targets[db]
        body = self._body(target, workload, n)
        before = self._event_count(target) if check else 0
        self.marks.clear()
        gc.disable()  # collections happen between transactions, never inside one
        try:
            start = time.perf_counter()
            body()
            committed = time.perf_counter()
            delivered: float | None = None
            if self.kind == "sns":
                if not self.publisher.flush(120):
                    raise RuntimeError("SNS publisher did not deliver within 120 s")
                delivered = time.perf_counter()
        finally:
            gc.enable()
        answer: dict[str, Any] = {"commit": committed - start}
        if "execute" in self.marks:  # bulk statements: until session.execute() returned
            answer["execute"] = self.marks["execute"] - start
            if "row_images" in self.marks:
                answer["row_images"] = self.marks["row_images"]
        if delivered is not None:
            answer["delivered"] = delivered - start
        if check:
            answer["events"] = self._event_count(target) - before
        if self.kind == "memory":
            self.publisher.clear()
        if workload in ("insert", "mixed") or self.kind == "outbox":
            self._cleanup_inserts(target)
        return answer

    def _event_count(self, target: Target) -> int:
        if self.kind == "memory":
            return len(self.publisher.events)
        if self.kind == "sns":
            stats = self.publisher.stats()
            return int(stats.accepted)
        if self.kind == "outbox":
            assert target.outbox is not None
            outbox = target.outbox
            # events, not rows: a layout-2 row holds a transaction's events (older revisions
            # of the library have no event_count column: one row per event)
            counted = (
                sa.func.coalesce(sa.func.sum(outbox.c.event_count), 0)
                if "event_count" in outbox.c
                else sa.func.count()
            )
            with target.engine.connect() as conn:
                return int(conn.execute(sa.select(counted).select_from(outbox)).scalar_one())
        if self.kind == "continuum":
            from sqlalchemy_continuum import version_class  # noqa: PLC0415

            version_table = version_class(target.models.item).__table__
            with target.engine.connect() as conn:
                return int(
                    conn.execute(sa.select(sa.func.count()).select_from(version_table)).scalar_one()
                )
        return 0

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close(5)
        for target in self.targets.values():
            with target.engine.begin() as conn:
                target.models.base.metadata.drop_all(conn)
                if self.kind == "continuum":
                    quoted = conn.dialect.identifier_preparer.quote("transaction")
                    conn.execute(sa.text(f"DROP TABLE IF EXISTS {quoted}"))
            target.engine.dispose()


def _server_version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "SQLite " + str(conn.execute(sa.text("select sqlite_version()")).scalar_one())
        return str(conn.execute(sa.text("select version()")).scalar_one()).split(" on ")[0]


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contender", required=True)
    parser.add_argument("--topic-arn")
    parser.add_argument("--endpoint")
    args = parser.parse_args(argv)
    tempfile.tempdir = tempfile.gettempdir()
    try:
        contender = Contender(args.contender, args.topic_arn, args.endpoint)
    except Exception as exc:
        _answer(
            {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        )
        return 1
    _answer({"ok": True, "ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            op = command["op"]
            if op == "target":
                info = contender.add_target(command["name"], command["url"])
                _answer({"ok": True, **info})
            elif op == "run":
                _answer(
                    {
                        "ok": True,
                        **contender.run(
                            command["db"], command["workload"], command["n"], command["check"]
                        ),
                    }
                )
            elif op == "quit":
                contender.close()
                _answer({"ok": True})
                return 0
            else:
                _answer({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:
            _answer(
                {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(),
                }
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
