"""How the viewer answers: templates rendered with links under the app's root path, and
failures turned into pages.

Links are built from the route names (:func:`url`), so they stay correct wherever the app is
mounted. :meth:`Renderer.guarded` maps what a handler raises to a page and a status: bad input
400, nothing recorded 404, a record several services wrote 409 (listing them), a stored record
this version cannot read 502, a store that cannot be read 503 -- with the details in the log,
never on the page.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from consumer.query import AmbiguousRecord
from consumer.sinks.base import InvalidQuery
from consumer.ui.views import MASKED_NOTE
from sqla_audit.errors import DecodeError, StoreError

logger = logging.getLogger(__name__)

#: Headers of every page.
HEADERS: dict[str, str] = {"cache-control": "no-store", "x-content-type-options": "nosniff"}

Handler = Callable[[Request], Response]


class NotFound(Exception):
    """Nothing recorded for what the page asks about (a 404 page with this message)."""


def url(request: Request, name: str, **params: object) -> str:
    """The path of view ``name`` (under the app's root path) with ``params`` as its query."""
    path = request.url_for(name).path
    query = {key: str(value) for key, value in params.items() if value not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


def static(request: Request, path: str) -> str:
    return request.url_for("static", path=path).path


class Renderer:
    """Renders the page templates (``title`` in every page)."""

    def __init__(self, templates: Jinja2Templates, title: str) -> None:
        self.templates = templates
        self.title = title

    def render(
        self, request: Request, template: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        base = {
            "request": request,
            "title": self.title,
            "url": lambda name, **params: url(request, name, **params),
            "static": lambda path: static(request, path),
            "masked_note": MASKED_NOTE,
        }
        return self.templates.TemplateResponse(
            request,
            template,
            {**base, **context},
            status_code=status,
            headers=HEADERS,
        )

    def error(self, request: Request, status: int, message: str, **extra: Any) -> Response:
        return self.render(request, "error.html", {"message": message, **extra}, status)

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` with failures turned into pages: 400 bad input, 404 nothing recorded,
        409 ambiguous record, 503 store unavailable (details only in the log)."""

        def run(request: Request) -> Response:
            try:
                return handler(request)
            except AmbiguousRecord as exc:
                return self.error(
                    request,
                    409,
                    f"{exc.table} {exc.record_id} was written by several services: choose one.",
                    services=[(s, exc.table, exc.record_id) for s in exc.services],
                )
            except InvalidQuery as exc:
                return self.error(request, 400, str(exc))
            except NotFound as exc:
                return self.error(request, 404, str(exc))
            except DecodeError:
                logger.exception("a stored record cannot be read")
                return self.error(request, 502, "A stored record cannot be read by this version.")
            except StoreError:
                logger.exception("the audit store could not be read")
                return self.error(request, 503, "The audit store could not be read; try again.")

        run.__name__ = handler.__name__
        return run


__all__ = ["HEADERS", "Handler", "NotFound", "Renderer", "static", "url"]
