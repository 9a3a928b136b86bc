"""``sqla-audit relay``: publish the outbox table's rows to SNS (outbox mode).

Runs until SIGTERM or SIGINT, which make it finish the current batch and exit; rows that
were not published stay in the outbox for the next relay. ``--once`` publishes what is
pending and exits (status 0 when the outbox was emptied, 1 when SNS did not take
everything). Several relays may run against one PostgreSQL or MariaDB database (rows are
taken with ``FOR UPDATE SKIP LOCKED``); run one relay per SQLite database.

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
from types import FrameType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from consumer.commands.outbox import add_outbox_arguments, outbox_from_args
from consumer.config import TOPIC_ENV, setting
from sqla_audit.errors import ConfigurationError

log = logging.getLogger(__name__)

BUCKET_ENV = "SQLA_AUDIT_S3_BUCKET"
PREFIX_ENV = "SQLA_AUDIT_S3_PREFIX"


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
    loop.add_argument("--batch-size", type=int, default=100, help="rows per pass (default 100)")
    loop.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between passes when the outbox is empty (default 1)",
    )
    loop.add_argument("--once", action="store_true", help="publish what is pending, then exit")
    parser.set_defaults(func=run_relay)


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
    if args.poll_interval < 0:
        raise ConfigurationError("--poll-interval must not be negative")
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
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    engine, table = outbox_from_args(args, env)
    relay = OutboxRelay(
        engine,
        sender,
        table=table,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        relay.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.once:
            try:
                result = relay.drain()
            except SQLAlchemyError as exc:
                print(f"sqla-audit: database error: {exc}", file=sys.stderr)
                return 2
            print(f"published {result.published}, parked {result.parked}, left {result.deferred}")
            return 0 if result.deferred == 0 else 1
        log.info("relaying %s to %s", table.fullname, topic_arn)
        relay.run()
        log.info("relay stopped: %s", relay.totals)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.dispose()


__all__ = ["register", "run_relay"]
