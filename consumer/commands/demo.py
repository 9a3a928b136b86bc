"""``sqla-audit demo``: two services, three users, each record's history, one request's view.

A shop and a billing service write to one audit trail; placing an order changes rows in
both under one request id, and the demo shows that request's changes across the services.
With no options everything runs on this machine with nothing but the package: a SQLite
database per service audited in outbox mode, the consumer reading those outboxes, and a SQLite
audit store with the same query semantics as the Cassandra store. Files go to a temporary
directory removed at the end, or to --workdir (kept, so the query commands can be tried on
them afterwards).

The same scenario runs against the real services when they are configured:

* SNS/SQS: --topic-arn and --queue-url (a queue subscribed to the topic), or
  SQLA_AUDIT_TOPIC_ARN and SQLA_AUDIT_QUEUE_URL; AWS region, endpoint and credentials come
  from --region/--endpoint-url or boto3's usual configuration (AWS_* variables, profiles).
* Cassandra: --cassandra-hosts or SQLA_AUDIT_CASSANDRA_HOSTS (and the other Cassandra
  settings of ``sqla-audit consume``); the schema is applied first (idempotent).

With --serve the demo's store is then served by the web viewer (``sqla-audit ui``) on
127.0.0.1 until Ctrl+C, so the trail can be read in a browser; the temporary directory is
removed after that.

Exit status: 0 when every record's history matches the scenario, 1 when it does not,
2 for bad configuration, 3 for an unreachable service (see docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.arguments import add_cassandra_arguments
from consumer.config import TOPIC_ENV
from consumer.settings import load_cassandra_config, setting
from sqla_audit.errors import ConfigurationError

if TYPE_CHECKING:
    from consumer.demo.runner import DemoConfig

QUEUE_ENV = "SQLA_AUDIT_QUEUE_URL"
HOSTS_ENV = "SQLA_AUDIT_CASSANDRA_HOSTS"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a scripted demo: two audited services, three users, histories, a request view",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help=(
            "directory for app.db, billing.db and audit.db, kept after the run "
            "(default: a temporary one, removed after; its paths are not printed)"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for SNS and SQS (default 60)",
    )
    aws = parser.add_argument_group("SNS/SQS (optional)")
    aws.add_argument("--topic-arn", help=f"publish to this SNS topic [{TOPIC_ENV}]")
    aws.add_argument("--queue-url", help=f"consume this SQS queue, subscribed to it [{QUEUE_ENV}]")
    aws.add_argument("--region", help="AWS region [AWS_REGION, else boto3's configuration]")
    aws.add_argument("--endpoint-url", help="AWS endpoint [else boto3's configuration]")
    add_cassandra_arguments(parser)
    viewer = parser.add_argument_group("web viewer (optional)")
    viewer.add_argument(
        "--serve",
        action="store_true",
        help="then serve the demo's audit trail in the web viewer on 127.0.0.1 (needs the ui "
        "extra; Ctrl+C stops it)",
    )
    viewer.add_argument(
        "--port", type=int, default=8080, help="--serve: the viewer's port (default 8080)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Build the demo configuration from flags and environment, then run it."""
    env = os.environ if env is None else env
    try:
        from consumer.demo.runner import DemoConfig, run_demo  # noqa: PLC0415
    except ImportError as exc:
        print(f"sqla-audit demo: a package it needs is missing: {exc}", file=sys.stderr)
        return 2
    if args.workdir is not None and args.workdir.exists() and not args.workdir.is_dir():
        raise ConfigurationError(f"--workdir {args.workdir} exists and is not a directory")
    cassandra = None
    if setting(args.cassandra_hosts, env, HOSTS_ENV) is not None:
        cassandra = load_cassandra_config(args, env)
    workdir, temporary, sock = args.workdir, None, None
    if args.serve:
        from consumer.commands.ui import DEFAULT_HOST  # noqa: PLC0415

        try:
            from consumer.ui.server import bind  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                f"--serve needs the ui extra: pip install 'sqla-audit[ui]' ({exc})"
            ) from exc
        sock = bind(DEFAULT_HOST, args.port)  # a port in use fails before the demo runs
    if sock is not None and workdir is None:  # the store must outlive the demo until served
        temporary = tempfile.TemporaryDirectory(prefix="sqla-audit-demo-")
        workdir = Path(temporary.name)
    config = DemoConfig(
        workdir=workdir,
        topic_arn=setting(args.topic_arn, env, TOPIC_ENV),
        queue_url=setting(args.queue_url, env, QUEUE_ENV),
        region=setting(args.region, env, "AWS_REGION"),
        endpoint_url=args.endpoint_url or None,
        cassandra=cassandra,
        timeout=args.timeout,
    )
    try:
        code = run_demo(config, sys.stdout)
        if sock is not None:
            _serve(config, sock)
        return code
    finally:
        if sock is not None:
            sock.close()
        if temporary is not None:
            temporary.cleanup()


def _serve(config: DemoConfig, sock: socket.socket) -> None:
    """Serve the demo's store (its SQLite file, or its Cassandra keyspace) in the viewer."""
    from consumer.commands.ui import serve_store  # noqa: PLC0415
    from consumer.sinks.base import AuditStore  # noqa: PLC0415

    store: AuditStore
    if config.cassandra is not None:
        from consumer.sinks.cassandra import CassandraStore  # noqa: PLC0415

        store = CassandraStore.connect(config.cassandra)
    else:
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        assert config.workdir is not None  # --serve always runs in a directory it keeps
        store = SQLiteStore.open_read_only(config.workdir / "audit.db")
    sys.stdout.flush()
    serve_store(store, sock, what="the demo's audit trail")


__all__ = ["register", "run"]
