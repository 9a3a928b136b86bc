"""The ``sqla-audit`` command line.

Each sub-command lives in its own module under :mod:`consumer.commands` and exposes
``register(subparsers)``; the module is imported when the CLI starts, but heavy
dependencies (boto3, cassandra-driver) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from sqla_audit.errors import AuditError

#: Modules that contribute sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "consumer.commands.consume",
    "consumer.commands.schema",
    "consumer.commands.query",
    "consumer.commands.relay",
    "consumer.commands.outbox",
    "consumer.commands.dlq",
    "consumer.commands.demo",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2).

    Sub-command parsers are made of the same class, so every command reports bad input
    the same way: the command, what is wrong, and where to read the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sqla-audit",
        description="Audit log for SQLAlchemy applications: consume, store and query changes.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # surface a closed pipe here, not at interpreter exit
    except AuditError as exc:
        print(f"sqla-audit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``sqla-audit history ... | head``): not an error
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
