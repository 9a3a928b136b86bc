"""OpenTelemetry trace correlation, when the application uses OpenTelemetry.

When a change is captured inside an OpenTelemetry span, its event's ``metadata`` gets the
span's ids as lowercase hex, the form W3C ``traceparent`` headers and tracing back ends
show:

* ``otel.trace_id`` -- 32 hex digits, shared by every service the traced request reached;
* ``otel.span_id`` -- 16 hex digits, the span in force when the change was captured.

So the changes one user action made in several services can be found by trace id even when
the services did not pass a request id along. sqla-audit never imports OpenTelemetry
itself (no dependency, no import cost): it looks for ``opentelemetry.trace`` among the
modules already imported, which is the case in every application that traces. Metadata the
application sets itself under the same keys wins.
"""

from __future__ import annotations

import sys
from typing import Final

#: ``metadata`` key of the trace id (32 lowercase hex digits).
TRACE_ID_KEY: Final = "otel.trace_id"
#: ``metadata`` key of the span id (16 lowercase hex digits).
SPAN_ID_KEY: Final = "otel.span_id"


def trace_metadata() -> dict[str, str] | None:
    """The current span's ids as event metadata, or ``None`` outside a valid span."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return {
            TRACE_ID_KEY: format(context.trace_id, "032x"),
            SPAN_ID_KEY: format(context.span_id, "016x"),
        }
    except Exception:  # noqa: BLE001 - tracing must never break a flush
        return None


__all__ = ["SPAN_ID_KEY", "TRACE_ID_KEY", "trace_metadata"]
