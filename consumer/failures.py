"""The command line's error policy: every failure becomes one line and one exit status.

:func:`classify` turns an exception that escaped a sub-command into a :class:`Failure`: the
exit status and a single line saying what failed and what to do about it. The statuses
(also in docs/operations.md):

====  =====================================================================================
0     done
1     nothing found (a query matched nothing, the DLQ held nothing to move)
2     usage or configuration: a bad argument or setting, a missing extra, a port in use,
      permission denied, a missing file or table -- change something, then run it again
3     a dependency could not be reached: the store, the queue or the database is down, or
      its host name does not resolve -- the same command may work later
4     partial failure: the command did part of its work (outbox rows parked, DLQ messages
      not moved) and said which part it did not do
5     verification failed: ``sqla-audit verify`` found modified, unsigned or unknown-key
      records, or transactions with missing events (each printed)
70    an unexpected error (a bug): run again with ``--debug`` for the traceback
130   interrupted (SIGINT, Ctrl-C)
====  =====================================================================================

Third-party exceptions are recognised by class name, so this module imports none of the
optional dependencies (boto3, cassandra-driver) it knows about.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from dataclasses import dataclass
from typing import Final

from sqla_audit.errors import ConfigurationError, PermanentError, RetryableError

EXIT_OK: Final = 0
EXIT_NOTHING: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_PARTIAL: Final = 4
EXIT_VERIFY_FAILED: Final = 5
EXIT_INTERNAL: Final = 70
EXIT_INTERRUPTED: Final = 130

#: Top-level modules of the optional dependencies, and the extra that installs each.
EXTRA_OF_MODULE: Final = {
    "boto3": "consumer",
    "botocore": "consumer",
    "s3transfer": "consumer",
    "cassandra": "consumer",
    "deepdiff": "consumer",
    "prometheus_client": "consumer",
    "psycopg": "drivers",
    "psycopg2": "drivers",
    "pymysql": "drivers",
    "MySQLdb": "drivers",
}

#: Longest message printed (a driver's error text can be a page long).
MAX_MESSAGE_CHARS: Final = 600

_RETRY_HINT = "check that it is running and reachable, then run the command again"
_DEBUG_HINT = "run again with --debug for the traceback, and please report it"


@dataclass(frozen=True, slots=True)
class Failure:
    """What the command line prints (after ``sqla-audit: error: ``) and returns."""

    code: int
    message: str


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (runs of whitespace and newlines collapsed), at most ``limit``."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _missing_module(exc: ImportError) -> Failure | None:
    name = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return Failure(
        EXIT_USAGE,
        f"this command needs {name}, which is not installed; "
        f"install the extra: pip install 'sqla-audit[{extra}]'",
    )


def _database(exc: Exception, names: set[str]) -> Failure:
    """SQLAlchemy errors: a connection that failed is unreachable, anything else is usage."""
    orig = getattr(exc, "orig", None)
    detail = _first_line(orig) if orig is not None else _first_line(exc)
    if "OperationalError" in names or "InterfaceError" in names:
        if "unable to open database file" in detail or "readonly" in detail:
            return Failure(
                EXIT_USAGE,
                f"cannot open the SQLite database: {detail}; check the path and its permissions",
            )
        if "translate host name" in detail or "Name or service not known" in detail:
            return Failure(
                EXIT_UNAVAILABLE,
                f"the database host does not resolve: {detail}; check the host in --db / "
                "SQLA_AUDIT_DB_URL",
            )
        return Failure(
            EXIT_UNAVAILABLE,
            f"cannot reach the database: {detail}; {_RETRY_HINT} (--db / SQLA_AUDIT_DB_URL)",
        )
    return Failure(EXIT_USAGE, f"database error: {detail}")


def _aws(exc: Exception, names: set[str]) -> Failure:
    if names & {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}:
        return Failure(
            EXIT_USAGE,
            f"{_first_line(exc)}; set AWS_REGION and credentials (AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
        )
    if "ClientError" in names:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code.startswith(("5", "Throttl", "ServiceUnavailable", "InternalError")):
            return Failure(EXIT_UNAVAILABLE, f"AWS: {_first_line(exc)}; {_RETRY_HINT}")
        return Failure(EXIT_USAGE, f"AWS refused the request: {_first_line(exc)}")
    return Failure(EXIT_UNAVAILABLE, f"cannot reach AWS: {_first_line(exc)}; {_RETRY_HINT}")


def _os_error(exc: OSError) -> Failure:
    if isinstance(exc, socket.gaierror):
        return Failure(
            EXIT_UNAVAILABLE, f"a host name does not resolve ({exc}); check the host settings"
        )
    if isinstance(exc, PermissionError):
        where = f" on {exc.filename}" if exc.filename else ""
        return Failure(
            EXIT_USAGE,
            f"permission denied{where}; check the path's permissions or run as a user "
            "allowed to use it",
        )
    if exc.errno == errno.EADDRINUSE:
        return Failure(EXIT_USAGE, f"address in use: {exc}; choose another port")
    if isinstance(exc, ConnectionError | TimeoutError):
        return Failure(EXIT_UNAVAILABLE, f"connection failed: {exc}; {_RETRY_HINT}")
    if isinstance(exc, FileNotFoundError):
        return Failure(EXIT_USAGE, f"no such file or directory: {exc.filename or exc}")
    return Failure(EXIT_USAGE, one_line(f"{type(exc).__name__}: {exc}"))


def classify(exc: BaseException) -> Failure:
    """The exit status and the one line to print for ``exc``."""
    failure = _classify(exc)
    return Failure(failure.code, one_line(failure.message))


def _classify(exc: BaseException) -> Failure:
    if isinstance(exc, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "interrupted")
    if isinstance(exc, ImportError):
        missing = _missing_module(exc)
        if missing is not None:
            return missing
    if isinstance(exc, ConfigurationError | PermanentError):
        return Failure(EXIT_USAGE, str(exc))
    if "CassandraAccessDenied" in _names(exc):  # a permission to grant, not an outage
        return Failure(EXIT_USAGE, str(exc))
    if isinstance(exc, RetryableError):
        return Failure(EXIT_UNAVAILABLE, f"{exc}; {_RETRY_HINT}")
    names = _names(exc)
    if "UnresolvableContactPoints" in names:
        return Failure(
            EXIT_UNAVAILABLE,
            "no Cassandra contact point resolves to an address; check --cassandra-hosts / "
            "SQLA_AUDIT_CASSANDRA_HOSTS",
        )
    if "NoHostAvailable" in names or "OperationTimedOut" in names:
        return Failure(EXIT_UNAVAILABLE, f"cannot reach Cassandra: {exc}; {_RETRY_HINT}")
    if not isinstance(exc, Exception):
        return Failure(EXIT_INTERNAL, f"unexpected {type(exc).__name__}: {exc}; {_DEBUG_HINT}")
    if "SQLAlchemyError" in names:
        return _database(exc, names)
    if names & {"BotoCoreError", "ClientError"}:
        return _aws(exc, names)
    if isinstance(exc, sqlite3.Error):
        return Failure(EXIT_USAGE, f"SQLite: {exc}; check the file path and its permissions")
    if isinstance(exc, OSError):
        return _os_error(exc)
    return Failure(EXIT_INTERNAL, f"unexpected {type(exc).__name__}: {exc}; {_DEBUG_HINT}")


__all__ = [
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_VERIFY_FAILED",
    "EXTRA_OF_MODULE",
    "Failure",
    "classify",
    "one_line",
]
