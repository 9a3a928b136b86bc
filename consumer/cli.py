"""The ``sqla-audit`` command line.

Each sub-command lives in its own module under ``consumer.commands`` and exposes
``register(subparsers)``; the module is imported when the CLI starts, but heavy
dependencies (boto3, cassandra-driver) are imported only when a command runs.

The error policy is applied here, once for every command (see ``consumer.failures`` and
docs/operations.md): whatever escapes a command becomes one line on stderr -- what failed
and what to do -- and a documented exit status; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any, Final, NoReturn

from consumer.failures import EXIT_USAGE, classify
from consumer.logs import configure_logging
from sqla_audit.errors import ConfigurationError

#: Modules that contribute sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "consumer.commands.consume",
    "consumer.commands.schema",
    "consumer.commands.query",
    "consumer.commands.relay",
    "consumer.commands.outbox",
    "consumer.commands.dlq",
    "consumer.commands.demo",
    "consumer.commands.ui",
    "consumer.commands.loadgen",
    "consumer.commands.verify",
)

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("text", "json")
LOG_LEVEL_ENV: Final = "SQLA_AUDIT_LOG_LEVEL"
LOG_FORMAT_ENV: Final = "SQLA_AUDIT_LOG_FORMAT"
DEFAULT_LOG_LEVEL: Final = "INFO"
DEFAULT_LOG_FORMAT: Final = "text"

# reST roles and literals in docstrings, shown plainly in --help
_ROLE: Final = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL: Final = re.compile(r"``([^`]+)``")
_EMPHASIS: Final = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def plain_text(text: str) -> str:
    """``text`` without reST markup: ````x```` -> x, :class:`~a.B` -> B, *x* -> x."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        short = match.group(0).startswith(":") and "`~" in match.group(0)
        return target.rsplit(".", 1)[-1] if short else target

    return _EMPHASIS.sub(r"\1", _LITERAL.sub(r"\1", _ROLE.sub(role, text)))


class TerminalHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help for a terminal: plain text (no reST markup), descriptions as written, and the
    default of each option that has a meaningful one."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, True, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(default, list | tuple)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2).

    Sub-command parsers are made of the same class, so every command reports bad input
    the same way: the command, what is wrong, and where to read the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        return metadata.version("sqla-audit")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def add_common_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--log-level``, ``--log-format`` and ``--debug``, accepted before and after the
    sub-command. Sub-command copies leave the value unset when absent (SUPPRESS), so a
    value given before the sub-command is not overwritten by a default."""
    existing = parser._option_string_actions
    group = parser.add_argument_group("logging and errors")
    if "--log-level" not in existing:
        group.add_argument(
            "--log-level",
            type=str.upper,
            choices=LOG_LEVELS,
            default=argparse.SUPPRESS,
            help=f"log level (default: {DEFAULT_LOG_LEVEL}) [{LOG_LEVEL_ENV}]",
        )
    if "--log-format" in existing:
        existing["--log-format"].default = argparse.SUPPRESS
    else:
        group.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=argparse.SUPPRESS,
            help=f"text or JSON lines (default: {DEFAULT_LOG_FORMAT}) [{LOG_FORMAT_ENV}]",
        )
    if "--debug" not in existing:
        group.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and third-party library logs (implies --log-level DEBUG)",
        )
    if top:
        parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")


def _subparser_actions(
    parser: argparse.ArgumentParser,
) -> Iterator[argparse._SubParsersAction[Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def iter_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of the tree below ``parser``: ``(("outbox", "status"), parser)``;
    leaves only (commands that run), in registration order."""
    children = [
        (name, child)
        for action in _subparser_actions(parser)
        for name, child in action.choices.items()
    ]
    if not children and path:
        yield path, parser
    seen: set[int] = set()
    for name, child in children:
        if id(child) in seen:  # an alias
            continue
        seen.add(id(child))
        yield from iter_commands(child, (*path, name))


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in _subparser_actions(parser):
        for child in {id(c): c for c in action.choices.values()}.values():
            yield from _every_parser(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sqla-audit",
        description=(
            "Audit log for SQLAlchemy applications: consume, store and query changes.\n\n"
            "Exit status: 0 done, 1 nothing found, 2 usage or configuration, "
            "3 a dependency unreachable, 4 partial failure, 5 verification failed, "
            "130 interrupted "
            "(see docs/operations.md)."
        ),
        formatter_class=TerminalHelpFormatter,
    )
    add_common_options(parser, top=True)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for sub in _every_parser(parser):
        sub.formatter_class = TerminalHelpFormatter
        if sub is not parser:
            add_common_options(sub)
            sub.set_defaults(command_parser=sub)
    return parser


def _log_settings(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str, bool]:
    """``(level, format, debug)`` from the flags, else the environment, else the defaults."""
    debug = bool(getattr(args, "debug", False))
    level = (getattr(args, "log_level", None) or env.get(LOG_LEVEL_ENV, "").strip()).upper()
    level = level or DEFAULT_LOG_LEVEL
    if level not in LOG_LEVELS:
        raise ConfigurationError(
            f"{LOG_LEVEL_ENV} must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    log_format = getattr(args, "log_format", None) or env.get(LOG_FORMAT_ENV, "").strip()
    log_format = (log_format or DEFAULT_LOG_FORMAT).lower()
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"--log-format / {LOG_FORMAT_ENV} must be text or json, got {log_format!r}"
        )
    return ("DEBUG" if debug else level), log_format, debug


def _report(exc: BaseException, debug: bool) -> int:
    failure = classify(exc)
    if debug:
        traceback.print_exception(exc)
    print(f"sqla-audit: error: {failure.message}", file=sys.stderr)
    return failure.code


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments  # a failure while building the parser obeys it too
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(arguments)
        if unknown:  # reported by the command's own parser, which names the command
            command_parser = getattr(args, "command_parser", parser)
            command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        level, log_format, debug = _log_settings(args, os.environ)
        args.log_level, args.log_format, args.debug = level, log_format, debug
        configure_logging(log_format, level, debug=debug)
        code: int = args.func(args)
        sys.stdout.flush()  # surface a closed pipe here, not at interpreter exit
    except BrokenPipeError:
        # the reader went away (``sqla-audit history ... | head``): not an error
        _silence_stdout()
        return 0
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one error policy
        return _report(exc, debug)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


__all__ = [
    "COMMAND_MODULES",
    "EXIT_USAGE",
    "TerminalHelpFormatter",
    "add_common_options",
    "build_parser",
    "iter_commands",
    "main",
    "plain_text",
]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
