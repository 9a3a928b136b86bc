"""``sqla-audit consume`` (and ``python -m consumer``): run the worker until SIGTERM/SIGINT,
or with ``--until-empty`` until the source is drained.

Configuration comes from flags and environment (see :mod:`consumer.config` and
docs/consumer.md) and is validated before anything connects. Cassandra may come up after
the worker: connecting is retried with backoff (the health endpoint reports "not ready"
meanwhile). On SIGTERM or SIGINT the worker stops polling, finishes its batches, releases
the rest and the command exits 0 (SIGTERM) or 130 (SIGINT).

``--until-empty`` drains the source and exits 0 with a summary: each poller stops at its
first empty receive. In this mode a store or source that cannot be reached at the start
is an error (exit 3) instead of something to wait for. Every ``--progress-interval``
seconds (default 30; 0 = never) a one-line summary is logged, and a final one at exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from consumer.arguments import add_consumer_arguments
from consumer.commands.outbox import require_sqlite_file
from consumer.config import ConsumerConfig
from consumer.failures import EXIT_INTERRUPTED
from consumer.logs import configure_logging
from consumer.progress import DEFAULT_PROGRESS_INTERVAL, PROGRESS_ENV, Progress, parse_interval
from consumer.settings import load_consumer_config, setting
from consumer.verification import verifier_for
from sqla_audit.errors import ConfigurationError, StoreError, TransportError

log = logging.getLogger("consumer.consume")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="run the worker: SQS (or the outbox) -> diff -> audit store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_consumer_arguments(parser)
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--until-empty`` and ``--progress-interval``."""
    group = parser.add_argument_group("run")
    group.add_argument(
        "--until-empty",
        action="store_true",
        help="drain the source, then exit 0 with a summary (exit 3 if the store or the "
        "source cannot be reached)",
    )
    group.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        help=f"seconds between progress lines, 0 = only the final one "
        f"(default: {DEFAULT_PROGRESS_INTERVAL:g}) [{PROGRESS_ENV}]",
    )


def progress_interval(args: argparse.Namespace, env: Mapping[str, str]) -> float:
    """``--progress-interval`` or its environment variable, validated."""
    text = setting(getattr(args, "progress_interval", None), env, PROGRESS_ENV)
    if text is None:
        return DEFAULT_PROGRESS_INTERVAL
    try:
        return parse_interval(text)
    except ValueError:
        raise ConfigurationError(
            f"--progress-interval / {PROGRESS_ENV} must be seconds from 0 to 86400, got {text!r}"
        ) from None


def _open_store(config: ConsumerConfig, stop: threading.Event, *, until_empty: bool) -> Any:
    if config.store == "sqlite":
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        assert config.sqlite_path is not None  # checked by the config loader
        _require_writable(config.sqlite_path)
        return SQLiteStore(config.sqlite_path, views=config.cassandra.schema.views)
    from consumer.sinks.cassandra import wait_for_cassandra  # noqa: PLC0415

    def retrying(exc: BaseException, delay: float) -> None:
        if until_empty:  # a drain is a batch job: report the store as down, do not wait
            raise StoreError(f"Cassandra not reachable: {exc}") from exc
        log.warning("Cassandra not reachable, retrying in %.1fs: %s", delay, exc)

    return wait_for_cassandra(
        config.cassandra,
        stop=stop,
        max_backoff=config.worker.max_backoff,
        on_retry=retrying,
    )


def _require_writable(path_text: str) -> None:
    """The SQLite store file (or, when it does not exist yet, its directory) must be
    writable by this user: say so plainly instead of a driver error."""
    path = Path(path_text.removeprefix("sqlite:///"))
    target = path if path.exists() else path.parent
    if str(path) != ":memory:" and not os.access(target, os.W_OK):
        raise ConfigurationError(
            f"permission denied: this user cannot write {str(target)!r} for the SQLite store "
            "(--store-url / SQLA_AUDIT_STORE_URL); check its permissions"
        )


def _open_source(config: ConsumerConfig, *, until_empty: bool) -> tuple[Any, Any]:
    """The message source and its decoder (only SQS messages may point to S3 payloads)."""
    from consumer.decoding import Decoder  # noqa: PLC0415

    if config.source == "outbox":
        from consumer.sources.outbox import OutboxSource  # noqa: PLC0415

        assert config.outbox is not None  # checked by the config loader
        require_sqlite_file(config.outbox.db_url, "--db / SQLA_AUDIT_DB_URL", write=True)
        outbox = OutboxSource.from_url(
            config.outbox.db_url, table_name=config.outbox.table, schema=config.outbox.schema
        )
        try:
            outbox.check()
        except TransportError as exc:  # the database may come up after the worker
            if until_empty:
                outbox.close()
                raise
            log.warning("outbox database not reachable yet: %s", exc)
        except BaseException:
            outbox.close()
            raise
        return outbox, Decoder()
    from consumer.sources.sqs import S3PayloadFetcher, SqsSource, make_s3_client  # noqa: PLC0415

    return SqsSource(config.sqs), Decoder(S3PayloadFetcher(make_s3_client(config.sqs)))


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    config = load_consumer_config(args, env)
    interval = progress_interval(args, env)
    until_empty = bool(getattr(args, "until_empty", False))
    configure_logging(
        config.worker.log_format,
        getattr(args, "log_level", "INFO"),
        debug=bool(getattr(args, "debug", False)),
    )

    from consumer.metrics import MetricsServer, WorkerMetrics  # noqa: PLC0415
    from consumer.worker import Worker  # noqa: PLC0415

    stop = threading.Event()
    holder: dict[str, Worker] = {}
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        received.append(signum)
        stop.set()
        if "worker" in holder:
            holder["worker"].stop()

    def health() -> Mapping[str, Any]:
        if "worker" in holder:
            return holder["worker"].health()
        return {"alive": not stop.is_set(), "ready": False, "state": "connecting"}

    metrics = WorkerMetrics()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = source = store = progress = None
    try:
        if config.worker.metrics_port is not None:
            server = MetricsServer(
                config.worker.metrics_host, config.worker.metrics_port, metrics, health
            )
            log.info("metrics and health on http://%s:%d/", server.host, server.port)
        store = _open_store(config, stop, until_empty=until_empty)
        if store is None:  # stopped while waiting for the store
            return EXIT_INTERRUPTED if signal.SIGINT in received else 0
        source, decoder = _open_source(config, until_empty=until_empty)
        decoder.verifier = verifier_for(config.signatures)
        worker = Worker(
            source,
            store,
            decoder=decoder,
            concurrency=config.worker.concurrency,
            batch_size=config.sqs.batch_size,
            wait_seconds=config.sqs.wait_seconds,
            visibility_timeout=config.sqs.visibility_timeout,
            max_backoff=config.worker.max_backoff,
            shutdown_timeout=config.worker.shutdown_timeout,
            metrics=metrics,
        )
        holder["worker"] = worker
        origin = config.sqs.queue_url if config.source == "sqs" else "the outbox"
        progress = Progress(_summary(worker, source), interval, log)
        log.info(
            "consuming %s into %s%s",
            origin,
            config.store,
            " until it is empty" if until_empty else "",
            extra={"queue_url": config.sqs.queue_url, "store": config.store},
        )
        progress.start()
        worker.run(stop, until_empty=until_empty)
        if worker.drain_error is not None:
            raise TransportError(f"cannot receive from {origin}: {worker.drain_error}")
        if signal.SIGINT in received:
            return EXIT_INTERRUPTED
        if until_empty and not received:
            print(f"drained {origin}: {worker.totals.summary()}")
        return 0
    finally:
        if progress is not None:
            progress.close("stopped")
        if server is not None:
            server.close()
        if source is not None:
            source.close()
        if store is not None:
            store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary(worker: Any, source: Any) -> Any:
    """The progress line: the worker's totals, and the outbox's backlog when it has one."""
    from sqla_audit.outbox import outbox_counts  # noqa: PLC0415

    def summary() -> str:
        text: str = worker.totals.summary()
        engine, table = getattr(source, "engine", None), getattr(source, "table", None)
        if engine is not None and table is not None:
            pending, parked = outbox_counts(engine, table)
            text += f"; outbox backlog {pending} pending, {parked} parked"
        return text

    return summary


__all__ = ["register", "run"]
