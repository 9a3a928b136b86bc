"""Structured logs for the worker: plain text for people, JSON lines for log pipelines.

The worker logs with ``extra={...}`` fields (``message_id``, ``reason``, ``backoff_seconds``
...). The text format shows the message only; the JSON format emits one object per line
with the timestamp, level, logger, message, every extra field and the exception text, so a
log pipeline can filter on ``message_id`` without parsing prose.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final

# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts level logger message`` plus the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the *current* ``sys.stderr`` (which a test runner or an embedding
    application may have replaced since the handler was installed)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """The stream is always the current ``sys.stderr``."""


#: Loggers of third-party libraries: quiet (CRITICAL only) unless ``--debug``. The
#: product's own one-line messages say what failed; the driver's retry chatter and
#: tracebacks only help someone debugging.
THIRD_PARTY_LOGGERS: Final = (
    "cassandra",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "sqlalchemy",
    "asyncio",
)

_HANDLER_MARK: Final = "_sqla_audit_handler"


def configure_logging(
    log_format: str, level: int | str = logging.INFO, *, debug: bool = False
) -> None:
    """Install one stderr handler on the root logger with the chosen format.

    Replaces a handler an earlier call installed (not handlers installed by others, such
    as a test runner's). Third-party loggers (:data:`THIRD_PARTY_LOGGERS`) keep quiet but
    for critical messages unless ``debug``.
    """
    handler = _StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.CRITICAL)


__all__ = ["THIRD_PARTY_LOGGERS", "JsonFormatter", "configure_logging"]
