"""``sqla-audit dlq``: see what is in the dead-letter queue and why, and move it back.

  list      one line per message: id, receive count, age, reason, and the table / record /
            event id of each change it holds when it can be decoded (``--json`` for tools)
  redrive   move messages back to the consumer's queue: each is sent there first and
            deleted from the DLQ only then, so stopping midway loses nothing

Both take ``--reason TEXT`` (a case-insensitive part of the reject reason) and
``--older-than DURATION`` (``90m``, ``12h``, ``7d``) to choose messages, and ``--limit N``.
Exit status: 0 done, 1 nothing matched, 3 the queue endpoint could not be reached,
4 some messages could not be moved (they stay in the DLQ).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping
from typing import Any

from consumer.config import SqsConfig
from consumer.dlq import DeadLetter, DeadLetterQueue, Selection, render_json
from consumer.settings import setting
from consumer.times import parse_time
from sqla_audit.errors import ConfigurationError, TransportError

DLQ_ENV = "SQLA_AUDIT_DLQ_URL"
QUEUE_ENV = "SQLA_AUDIT_QUEUE_URL"
ENDPOINT_ENVS = ("SQLA_AUDIT_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")

EXIT_NOTHING = 1
EXIT_UNREACHABLE = 3
EXIT_PARTIAL = 4


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dlq-url", help=f"the dead-letter queue's URL [{DLQ_ENV}]")
    parser.add_argument("--endpoint-url", help="AWS endpoint override [AWS_ENDPOINT_URL]")
    parser.add_argument("--region", help="AWS region [AWS_REGION, AWS_DEFAULT_REGION]")
    parser.add_argument("--reason", help="only messages whose reason contains this text")
    parser.add_argument(
        "--older-than",
        type=parse_time,
        metavar="TIME",
        help="only messages first sent before this time: 90m, 12h, 7d back, or an ISO 8601 "
        "time with a zone",
    )
    parser.add_argument("--limit", type=_limit, help="act on at most this many messages")


def _queue(args: argparse.Namespace, env: Mapping[str, str]) -> DeadLetterQueue:
    from consumer.sources.sqs import make_sqs_client  # noqa: PLC0415 - needs boto3

    url = setting(args.dlq_url, env, DLQ_ENV)
    if url is None:
        raise ConfigurationError(f"the dead-letter queue is needed: --dlq-url or {DLQ_ENV}")
    config = SqsConfig(
        queue_url=url,
        region=setting(args.region, env, *REGION_ENVS),
        endpoint_url=setting(args.endpoint_url, env, *ENDPOINT_ENVS),
    )
    return DeadLetterQueue(make_sqs_client(config), url)


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(reason=args.reason, sent_before=args.older_than)


def _age(letter: DeadLetter, now: dt.datetime) -> str:
    if letter.sent_at is None:
        return "?"
    seconds = int((now - letter.sent_at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _line(letter: DeadLetter, now: dt.datetime) -> str:
    what = (
        ", ".join(
            f"{e['service']}/{e['table']}/{e['record_id']} event {e['event_id']}"
            for e in letter.events
        )
        or "(not a decodable change event)"
    )
    return (
        f"{letter.message_id}  received {letter.receive_count}x  age {_age(letter, now)}\n"
        f"    reason: {letter.reason}\n    holds:  {what}"
    )


def _list(args: argparse.Namespace) -> int:
    queue = _queue(args, os.environ)
    letters = queue.browse(_selection(args), limit=args.limit)
    if args.json:
        print(render_json(letters))
    else:
        now = dt.datetime.now(dt.UTC)
        for letter in letters:
            print(_line(letter, now))
        print(f"{len(letters)} message(s) in {queue.url}", file=sys.stderr)
    return 0 if letters else EXIT_NOTHING


def _redrive(args: argparse.Namespace) -> int:
    target = setting(args.queue_url, os.environ, QUEUE_ENV)
    if target is None:
        raise ConfigurationError(
            f"the queue to move messages to is needed: --queue-url or {QUEUE_ENV}"
        )
    queue = _queue(args, os.environ)
    result = queue.redrive(target, _selection(args), limit=args.limit)
    print(f"moved {result.moved} message(s) to {target}; {result.skipped} left in the DLQ")
    for message_id, error in result.failed:
        print(f"sqla-audit: error: could not move {message_id}: {error}", file=sys.stderr)
    if result.failed:
        return EXIT_PARTIAL
    return 0 if result.moved else EXIT_NOTHING


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = command(args)
        except TransportError as exc:
            print(f"sqla-audit: error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        return code

    return run


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list and redrive the dead-letter queue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list the messages and why they are there")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=_guarded(_list))

    redrive = actions.add_parser("redrive", help="move messages back to the consumer's queue")
    _common(redrive)
    redrive.add_argument("--queue-url", help=f"the queue to move them to [{QUEUE_ENV}]")
    redrive.set_defaults(func=_guarded(_redrive))
