"""``sqla-audit ui``: the read-only web viewer over an audit store.

Opens the store like the query commands (``--store cassandra``, the default, or ``--store
sqlite --store-url FILE``; a SQLite file is opened read-only) and serves the viewer
(:mod:`consumer.ui`) on ``--host``/``--port`` -- 127.0.0.1 by default, so only this machine
can reach it. Any other address needs authentication: a bearer token (``--token`` /
``SQLA_AUDIT_UI_TOKEN``) or basic auth (``--basic-auth USER:PASSWORD`` /
``SQLA_AUDIT_UI_BASIC_AUTH``); prefer the environment variables, which ``ps`` does not show.
Without them the command refuses to start on a non-loopback address (exit 2).

Exit status: 0 stopped, 2 bad arguments or configuration, 3 store unreachable.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, Final

from consumer.commands.query import open_store, store_options
from consumer.query import AuditQuery
from consumer.sinks.base import AuditStore
from sqla_audit.errors import ConfigurationError

TOKEN_ENV: Final = "SQLA_AUDIT_UI_TOKEN"  # noqa: S105 - the variable name
BASIC_ENV: Final = "SQLA_AUDIT_UI_BASIC_AUTH"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080


def parse_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return value


def credentials_from(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """The viewer's credentials from the flags, else the environment (``None``: none set)."""
    from consumer.ui.auth import Credentials  # noqa: PLC0415

    token = args.token if args.token is not None else env.get(TOKEN_ENV) or None
    basic = args.basic_auth if args.basic_auth is not None else env.get(BASIC_ENV) or None
    if token is None and basic is None:
        return None
    if basic is not None:
        return Credentials.parse_basic(basic, token=token)
    return Credentials(token=token)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        from consumer.ui.app import audit_app  # noqa: PLC0415
        from consumer.ui.auth import check_bind  # noqa: PLC0415
        from consumer.ui.server import bind, serve  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            f"the viewer needs the ui extra: pip install 'sqla-audit[ui]' ({exc})"
        ) from exc
    credentials = credentials_from(args, env)
    check_bind(args.host, credentials)
    sock = bind(args.host, args.port)  # a port in use fails before the store is opened
    try:
        store = open_store(args, env)
        try:
            serve(audit_app(AuditQuery(store), credentials=credentials), sock, sys.stdout)
        finally:
            store.close()
    finally:
        sock.close()
    return 0


def serve_store(store: AuditStore, sock: socket.socket, *, what: str = "the audit trail") -> None:
    """Serve the viewer over ``store`` on the bound ``sock`` until interrupted (no
    authentication: for a loopback socket); close the store after."""
    from consumer.ui.app import audit_app  # noqa: PLC0415
    from consumer.ui.server import serve  # noqa: PLC0415

    try:
        serve(audit_app(AuditQuery(store)), sock, sys.stdout, what=what)
    finally:
        store.close()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ui",
        parents=[store_options()],
        help="serve a read-only web viewer of the audit trail (127.0.0.1 by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    web = parser.add_argument_group("web server")
    web.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; any other needs --token or "
        "--basic-auth)",
    )
    web.add_argument(
        "--port",
        type=parse_port,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0: any free port, printed)",
    )
    web.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN'; prefer [{TOKEN_ENV}]")
    web.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        help=f"require HTTP basic auth with this user; prefer [{BASIC_ENV}]",
    )
    parser.set_defaults(func=run)


__all__ = [
    "BASIC_ENV",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "register",
    "run",
    "serve_store",
]
