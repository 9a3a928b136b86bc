"""The viewer's search and record pages, each reading :class:`~consumer.query.AuditQuery`.

Every view is a ``GET`` whose whole state is in its query string, so its URL is a permalink:

========================  =====================================================================
``/``                     search form (service, table, record id, actor, request, transaction)
``/search``               answers a search with a redirect (303) to the view's own URL
``/record``               a record's timeline, newest first (``table``, ``id``, ``service``)
``/record/as-of``         the whole record at ``at`` (an instant, ``2h``, ``now``)
``/record/restore``       the "restore this version" preview of change ``event``
``/actor``, ...           the listings: :mod:`consumer.ui.listings`
========================  =====================================================================

Paged views take ``size`` (1-100) and ``page`` (the store's own token, as the CLI prints it).
Handlers are plain functions: Starlette runs them in its thread pool, since the stores block.
"""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from consumer.query import AuditQuery, parse_transaction_id
from consumer.ui import params as qs
from consumer.ui.catalog import known_tables
from consumer.ui.preview import find_event, plan_preview
from consumer.ui.rendering import NotFound, Renderer, url
from consumer.ui.views import change_view, stamp, state_view


class RecordPages:
    """Search, a record's timeline, its state as of an instant, the restore preview."""

    def __init__(self, query: AuditQuery, renderer: Renderer) -> None:
        self.query = query
        self.renderer = renderer

    def home(self, request: Request, message: str | None = None, status: int = 200) -> Response:
        tables = known_tables(self.query.store)
        return self.renderer.render(
            request,
            "home.html",
            {
                "tables": sorted({table for _, table in tables}),
                "services": sorted({service for service, _ in tables}),
                "message": message,
                "values": dict(request.query_params),
            },
            status,
        )

    def index(self, request: Request) -> Response:
        return self.home(request)

    def search(self, request: Request) -> Response:
        """A redirect to the view the filled-in fields ask for."""
        service = qs.text(request, "service")
        table = qs.text(request, "table")
        record_id = qs.text(request, "record_id")
        actor = qs.text(request, "actor")
        request_id = qs.text(request, "request_id")
        transaction_id = qs.text(request, "transaction_id")
        target: str | None = None
        if transaction_id is not None:
            target = url(request, "transaction", id=str(parse_transaction_id(transaction_id)))
        elif request_id is not None:
            target = url(request, "request", id=request_id)
        elif table is not None and record_id is not None:
            target = url(request, "record", service=service, table=table, id=record_id)
        elif actor is not None:
            target = url(request, "actor", actor=actor, service=service)
        elif service is not None and table is not None:
            target = url(request, "table", service=service, table=table)
        if target is None:
            return self.home(
                request,
                "Fill in a table and record id, an actor, a request id, a transaction id, "
                "or a service and table for its timeline.",
                400,
            )
        return RedirectResponse(target, status_code=303)

    # -- a record --------------------------------------------------------------------------

    def _record_key(self, request: Request) -> tuple[str, str, str]:
        table = qs.required(request, "table")
        record_id = qs.required(request, "id")
        service = self.query.resolve_service(table, record_id, qs.text(request, "service"))
        if service is None:
            raise NotFound(f"No change recorded for {table} {record_id}.")
        return service, table, record_id

    def record(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        token = qs.text(request, "page")
        page = self.query.history(
            table, record_id, service=service, limit=qs.size(request), page=token
        )
        if not page.items and token is None:
            raise NotFound(f"No change recorded for {table} {record_id} in service {service}.")
        return self.renderer.render(
            request,
            "record.html",
            {
                "service": service,
                "table": table,
                "record_id": record_id,
                "changes": [change_view(r) for r in page.items],
                "next_page": page.next_page,
                "first_page": token is not None,
                "size": qs.text(request, "size"),
                "now": stamp(dt.datetime.now(dt.UTC)),
            },
        )

    def as_of(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        at = qs.instant(request, "at", "now")
        assert at is not None
        state = self.query.as_of(table, record_id, at, service=service)
        view = state_view(state)
        status = 200 if state.known else 404
        return self.renderer.render(
            request,
            "state.html",
            {"service": service, "table": table, "record_id": record_id, "view": view},
            status,
        )

    def restore(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        event_id = qs.required(request, "event")
        event, later = find_event(self.query, service, table, record_id, event_id)
        if event is None:
            raise NotFound(f"{table} {record_id} in service {service} has no change {event_id}.")
        preview = plan_preview(self.query, service, table, record_id, event=event, later=later)
        return self.renderer.render(
            request,
            "restore.html",
            {
                "service": service,
                "table": table,
                "record_id": record_id,
                "preview": preview,
                "event": change_view(event),
                "latest": state_view(preview.latest),
            },
        )


__all__ = ["RecordPages"]
