"""``sqla-audit relay``: publish the outbox table's rows to SNS (outbox mode).

Runs until SIGTERM or SIGINT, which make it finish the current batch and exit (0, or 130
after SIGINT); rows that were not published stay in the outbox for the next relay. It logs
a progress line every --progress-interval seconds and serves the same /metrics, /healthz
and /readyz as the consumer (``sqla_audit_relay_*`` metrics). ``--once`` publishes what is
pending and exits: 0 when the outbox was emptied, 3 when SNS did not take every row (they
stay pending), 4 when rows were parked (one line each says why). Several relays may run
against one PostgreSQL or MariaDB database (rows are taken with ``FOR UPDATE SKIP
LOCKED``); run one relay per SQLite database.

Settings come from the flags or the environment variables named in ``--help``. AWS region,
credentials and endpoint come from the standard AWS configuration (``AWS_REGION``,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...) unless ``--region`` / ``--endpoint-url`` are given.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from consumer.commands.consume import progress_interval
from consumer.commands.outbox import add_outbox_arguments, outbox_from_args
from consumer.config import TOPIC_ENV
from consumer.failures import EXIT_INTERRUPTED, EXIT_PARTIAL, one_line
from consumer.progress import DEFAULT_PROGRESS_INTERVAL, PROGRESS_ENV, Progress
from consumer.settings import setting
from sqla_audit.errors import ConfigurationError, TransportError

log = logging.getLogger("consumer.relay")

BUCKET_ENV = "SQLA_AUDIT_S3_BUCKET"
PREFIX_ENV = "SQLA_AUDIT_S3_PREFIX"
METRICS_HOST_ENV = "SQLA_AUDIT_RELAY_METRICS_HOST"
METRICS_PORT_ENV = "SQLA_AUDIT_RELAY_METRICS_PORT"
#: The relay's metrics port when it runs continuously (the consumer's is 9108).
DEFAULT_METRICS_PORT = 9109
#: ``PublishBatch`` calls the relay keeps in flight (as the direct-mode publisher).
DEFAULT_MAX_CONCURRENCY = 16


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="publish outbox rows to SNS (outbox mode)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_outbox_arguments(parser)
    sns = parser.add_argument_group("SNS")
    sns.add_argument("--topic-arn", help=f"SNS topic ARN [{TOPIC_ENV}]")
    sns.add_argument("--region", help="AWS region (default: the AWS configuration)")
    sns.add_argument("--endpoint-url", help="SNS/S3 endpoint (default: the AWS configuration)")
    sns.add_argument("--s3-bucket", help=f"bucket for events above 256 KiB [{BUCKET_ENV}]")
    sns.add_argument("--s3-prefix", help=f"key prefix in that bucket [{PREFIX_ENV}]")
    loop = parser.add_argument_group("loop")
    loop.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="most rows per pass (default 500; a row holds the events of one transaction, "
        "and the relay takes fewer rows when they hold many: about 1,000 events per pass)",
    )
    sns.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help=f"PublishBatch calls in flight at once (default {DEFAULT_MAX_CONCURRENCY}; 1 sends "
        "one batch of 10 at a time)",
    )
    loop.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between passes when the outbox is empty (default 1)",
    )
    loop.add_argument(
        "--once",
        action="store_true",
        help="publish what is pending, then exit (0 all published, 3 SNS left rows pending, "
        "4 rows were parked)",
    )
    loop.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        help=f"seconds between progress lines, 0 = only the final one "
        f"(default: {DEFAULT_PROGRESS_INTERVAL:g}) [{PROGRESS_ENV}]",
    )
    observe = parser.add_argument_group("metrics and health")
    observe.add_argument(
        "--metrics-host", help=f"bind address (default: 127.0.0.1) [{METRICS_HOST_ENV}]"
    )
    observe.add_argument(
        "--metrics-port",
        help=f"port of /metrics, /healthz and /readyz, 0 = off (default: "
        f"{DEFAULT_METRICS_PORT}; off with --once) [{METRICS_PORT_ENV}]",
    )
    parser.set_defaults(func=run_relay)


def _metrics_port(args: argparse.Namespace, env: Mapping[str, str]) -> int | None:
    """The metrics port: the flag, else the environment, else 9109 (none with --once)."""
    text = setting(args.metrics_port, env, METRICS_PORT_ENV)
    if text is None:
        return None if args.once else DEFAULT_METRICS_PORT
    if text.strip().lower() in {"0", "off", "none", "disabled"}:
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigurationError(
            f"--metrics-port / {METRICS_PORT_ENV} must be a port number, or 0 to disable, "
            f"got {text!r}"
        )
    return port


def _totals_text(relay: Any) -> str:
    return (
        f"published {relay.totals['published']}, parked {relay.totals['parked']} "
        f"(see sqla-audit outbox status)"
    )


def run_relay(args: argparse.Namespace) -> int:
    from sqla_audit.outbox.relay import OutboxRelay  # noqa: PLC0415 -- needs boto3
    from sqla_audit.publishers.offload import DEFAULT_KEY_PREFIX, S3Offloader  # noqa: PLC0415
    from sqla_audit.publishers.sns import SNSSender  # noqa: PLC0415

    env = os.environ
    topic_arn = setting(args.topic_arn, env, TOPIC_ENV)
    if topic_arn is None:
        raise ConfigurationError(f"an SNS topic is needed: --topic-arn or {TOPIC_ENV}")
    if args.batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")
    if args.max_concurrency < 1:
        raise ConfigurationError("--max-concurrency must be at least 1")
    if args.poll_interval < 0:
        raise ConfigurationError("--poll-interval must not be negative")
    interval = progress_interval(args, env)
    metrics_port = _metrics_port(args, env)
    metrics_host = setting(args.metrics_host, env, METRICS_HOST_ENV) or "127.0.0.1"
    bucket = setting(args.s3_bucket, env, BUCKET_ENV)
    offloader = None
    if bucket is not None:
        offloader = S3Offloader(
            bucket,
            key_prefix=setting(args.s3_prefix, env, PREFIX_ENV) or DEFAULT_KEY_PREFIX,
            region_name=args.region,
            endpoint_url=args.endpoint_url,
        )
    try:
        sender = SNSSender(
            topic_arn,
            offloader=offloader,
            region_name=args.region,
            endpoint_url=args.endpoint_url,
            max_concurrency=args.max_concurrency,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    engine, table = outbox_from_args(args, env, must_exist=True, write=True)

    from consumer.metrics import MetricsServer, RelayMetrics  # noqa: PLC0415

    metrics = RelayMetrics()

    def on_pass(result: Any) -> None:
        metrics.observe(result.published, result.parked, result.deferred)
        metrics.failing_passes.set(relay.failing)

    relay = OutboxRelay(
        engine,
        sender,
        table=table,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        on_pass=on_pass,
    )
    received: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        received.append(signum)
        relay.stop()

    def health() -> Mapping[str, Any]:
        alive = not relay.stopping
        return {"alive": alive, "ready": alive and relay.failing == 0, **relay.totals}

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = progress = None
    try:
        if metrics_port is not None:
            server = MetricsServer(metrics_host, metrics_port, metrics, health)
            log.info("metrics and health on http://%s:%d/", server.host, server.port)
        if args.once:
            return _once(relay)
        progress = Progress(lambda: _totals_text(relay), interval, log)
        log.info("relaying %s to %s", table.fullname, topic_arn)
        progress.start()
        relay.run()
        return EXIT_INTERRUPTED if signal.SIGINT in received else 0
    finally:
        if progress is not None:
            progress.close("relay stopped")
        if server is not None:
            server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.dispose()


def _once(relay: Any) -> int:
    """``--once``: drain, print what happened; exit 3 if SNS left rows, 4 if rows were parked."""
    result = relay.drain()
    print(f"published {result.published}, parked {result.parked}, left {result.deferred}")
    for row in result.parked_rows:
        what = f"event {row.event_id} of outbox row" if row.event_id else "outbox row"
        print(
            f"sqla-audit: parked {what} {row.row_id}: {one_line(row.reason, 300)}",
            file=sys.stderr,
        )
    if result.deferred:
        raise TransportError(
            f"SNS did not take {result.deferred} row(s), they stay pending: "
            f"{result.last_error or 'no answer'}"
        )
    if result.parked:
        print(
            f"sqla-audit: {result.parked} row(s) parked; fix the cause, then "
            "`sqla-audit outbox requeue` (see `sqla-audit outbox status`)",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    return 0


__all__ = ["register", "run_relay"]
