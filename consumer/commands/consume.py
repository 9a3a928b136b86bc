"""``sqla-audit consume`` (and ``python -m consumer``): run the worker until SIGTERM/SIGINT.

Configuration comes from flags and environment (see :mod:`consumer.config` and
docs/consumer.md) and is validated before anything connects. Cassandra may come up after
the worker: connecting is retried with backoff (the health endpoint reports "not ready"
meanwhile). On SIGTERM or SIGINT the worker stops polling, finishes its batches, releases
the rest and the command exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from consumer.config import ConsumerConfig, add_consumer_arguments, load_consumer_config
from consumer.logs import configure_logging
from sqla_audit.errors import TransportError

log = logging.getLogger("consumer.consume")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="run the worker: SQS (or the outbox) -> diff -> audit store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_consumer_arguments(parser)
    parser.set_defaults(func=run)


def _open_store(config: ConsumerConfig, stop: threading.Event) -> Any:
    if config.store == "sqlite":
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        assert config.sqlite_path is not None  # checked by the config loader
        return SQLiteStore(config.sqlite_path)
    from consumer.sinks.cassandra import wait_for_cassandra  # noqa: PLC0415

    def retrying(exc: BaseException, delay: float) -> None:
        log.warning("Cassandra not reachable, retrying in %.1fs: %s", delay, exc)

    return wait_for_cassandra(
        config.cassandra,
        stop=stop,
        max_backoff=config.worker.max_backoff,
        on_retry=retrying,
    )


def _open_source(config: ConsumerConfig) -> tuple[Any, Any]:
    """The message source and its decoder (only SQS messages may point to S3 payloads)."""
    from consumer.decoding import Decoder  # noqa: PLC0415

    if config.source == "outbox":
        from consumer.sources.outbox import OutboxSource  # noqa: PLC0415

        assert config.outbox is not None  # checked by the config loader
        outbox = OutboxSource.from_url(
            config.outbox.db_url, table_name=config.outbox.table, schema=config.outbox.schema
        )
        try:
            outbox.check()
        except TransportError as exc:  # the database may come up after the worker
            log.warning("outbox database not reachable yet: %s", exc)
        except BaseException:
            outbox.close()
            raise
        return outbox, Decoder()
    from consumer.sources.sqs import S3PayloadFetcher, SqsSource, make_s3_client  # noqa: PLC0415

    return SqsSource(config.sqs), Decoder(S3PayloadFetcher(make_s3_client(config.sqs)))


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    config = load_consumer_config(args, os.environ if env is None else env)
    configure_logging(config.worker.log_format, getattr(args, "log_level", "INFO"))

    from consumer.metrics import MetricsServer, WorkerMetrics  # noqa: PLC0415
    from consumer.worker import Worker  # noqa: PLC0415

    stop = threading.Event()
    holder: dict[str, Worker] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()
        if "worker" in holder:
            holder["worker"].stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def health() -> Mapping[str, Any]:
        if "worker" in holder:
            return holder["worker"].health()
        return {"alive": not stop.is_set(), "ready": False, "state": "connecting"}

    metrics = WorkerMetrics()
    server = None
    if config.worker.metrics_port is not None:
        server = MetricsServer(
            config.worker.metrics_host, config.worker.metrics_port, metrics, health
        )
        log.info("metrics and health on http://%s:%d/", server.host, server.port)
    source = store = None
    try:
        store = _open_store(config, stop)
        if store is None:  # stopped while waiting for the store
            return 0
        source, decoder = _open_source(config)
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
        log.info(
            "consuming %s into %s",
            origin,
            config.store,
            extra={"queue_url": config.sqs.queue_url, "store": config.store},
        )
        return worker.run(stop)
    finally:
        if server is not None:
            server.close()
        if source is not None:
            source.close()
        if store is not None:
            store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["register", "run"]
