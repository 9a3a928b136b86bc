"""``sqla-audit loadgen``: drive a steady event rate through the real pipeline, report lag.

Publishes synthetic change events (service ``loadgen``, table ``loadgen_items``: they never
touch a real service's records) to the SNS topic at --rate events per second for
--duration seconds, with the same ``SNSPublisher`` applications use, and follows every
--probe-every-th transaction to the audit store the consumer writes (the same store flags
as the query commands): the time until the store holds all of a probe's events is the
end-to-end lag through SNS, SQS, the consumer and the store. With --queue-url it also
reports the queue's depth. A progress line every --report-every seconds; at the end a
summary (``--json``: one JSON object).

Run it against a deployment whose consumers are running, and compare the rate it
sustains with the capacity model in docs/capacity.md.

Exit status: 0 every probe landed within --drain-timeout after the last event (the
pipeline kept up), 4 some did not, 2 bad arguments, 3 the topic, queue or store is
unavailable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from consumer.commands.query import open_store, store_options
from consumer.config import TOPIC_ENV
from consumer.failures import EXIT_PARTIAL
from consumer.settings import setting
from sqla_audit.errors import ConfigurationError

QUEUE_ENV = "SQLA_AUDIT_QUEUE_URL"


def _positive(what: str, kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, got {text!r}")
        return value

    return parse


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "loadgen",
        parents=[store_options()],
        help="drive a steady event rate through SNS/SQS/consumer/store and report lag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--rate", type=_positive("--rate", float), default=100.0, help="events per second"
    )
    load.add_argument(
        "--duration", type=_positive("--duration", float), default=60.0, help="seconds of load"
    )
    load.add_argument(
        "--transaction-size",
        type=_positive("--transaction-size", int),
        default=5,
        help="events per transaction",
    )
    load.add_argument(
        "--probe-every",
        type=_positive("--probe-every", int),
        default=10,
        help="follow every N-th transaction to the store",
    )
    load.add_argument(
        "--no-probes", action="store_true", help="do not read the store (no lag figures)"
    )
    load.add_argument(
        "--drain-timeout",
        type=_positive("--drain-timeout", float),
        default=120.0,
        help="seconds to wait after the last event for every probe to land",
    )
    load.add_argument(
        "--report-every",
        type=_positive("--report-every", float),
        default=5.0,
        help="seconds between progress lines",
    )
    load.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    aws = parser.add_argument_group("SNS and SQS")
    aws.add_argument("--topic-arn", help=f"SNS topic ARN [{TOPIC_ENV}]")
    aws.add_argument("--queue-url", help=f"the consumer's SQS queue, for its depth [{QUEUE_ENV}]")
    aws.add_argument("--region", help="AWS region (default: the AWS configuration)")
    aws.add_argument("--endpoint-url", help="SNS/SQS endpoint (default: the AWS configuration)")
    parser.set_defaults(func=run_loadgen)


def _queue_depth(args: argparse.Namespace, queue_url: str) -> Callable[[], int]:
    import boto3  # noqa: PLC0415 -- only this command needs it

    client = boto3.client("sqs", region_name=args.region, endpoint_url=args.endpoint_url)

    def depth() -> int:
        answer = client.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(answer.get("ApproximateNumberOfMessages", 0)) + int(
            answer.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

    depth()  # fail now, with one clear line, when the queue cannot be read
    return depth


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def run_loadgen(args: argparse.Namespace) -> int:
    from consumer.loadgen import (  # noqa: PLC0415
        LoadGenerator,
        LoadPlan,
        format_interval,
        format_summary,
    )
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415 -- needs boto3

    env = os.environ
    topic_arn = setting(args.topic_arn, env, TOPIC_ENV)
    if topic_arn is None:
        raise ConfigurationError(f"an SNS topic is needed: --topic-arn or {TOPIC_ENV}")
    try:
        plan = LoadPlan(
            rate=args.rate,
            duration=args.duration,
            transaction_size=int(args.transaction_size),
            probe_every=int(args.probe_every),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    queue_url = setting(args.queue_url, env, QUEUE_ENV)
    depth = None if queue_url is None else _queue_depth(args, queue_url)
    store = None if args.no_probes else open_store(args, env)

    def probe(transaction_id: uuid.UUID) -> int:
        assert store is not None
        return len(store.by_transaction(transaction_id))

    # The library logs each failed delivery with its traceback (right for an application);
    # here one line each is enough, and the summary counts what the publisher lost.
    logging.getLogger("sqla_audit.delivery").addFilter(_without_traceback)
    publisher = SNSPublisher(
        topic_arn,
        region_name=args.region,
        endpoint_url=args.endpoint_url,
        register_atexit=False,
    )
    generator = LoadGenerator(
        plan,
        publisher,
        probe=None if store is None else probe,
        queue_depth=depth,
        report_every=args.report_every,
        on_interval=lambda interval: print(format_interval(interval), file=sys.stderr),
        drain_timeout=args.drain_timeout,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        generator.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = generator.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        publisher.close(timeout=args.drain_timeout)
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        for line in format_summary(summary):
            print(line)
    return 0 if summary.kept_up else EXIT_PARTIAL


__all__ = ["register", "run_loadgen"]
