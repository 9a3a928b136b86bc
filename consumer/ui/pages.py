"""The viewer's pages: one handler per view, each reading :class:`~consumer.query.AuditQuery`.

Every view is a ``GET`` whose whole state is in its query string, so its URL is a permalink:

========================  =====================================================================
``/``                     search form (service, table, record id, actor, request, transaction)
``/search``               answers a search with a redirect (303) to the view's own URL
``/record``               a record's timeline, newest first (``table``, ``id``, ``service``)
``/record/as-of``         the whole record at ``at`` (an instant, ``2h``, ``now``)
``/record/restore``       the "restore this version" preview of change ``event``
``/actor``                an actor's changes by day (``day`` or ``since``/``until``)
``/transaction``          every change of one commit
``/request``              every change of one request id, across services
``/table``                a table's timeline in a window
========================  =====================================================================

Paged views take ``size`` (1-100) and ``page`` (the store's own token, as the CLI prints it).
Handlers are plain functions: Starlette runs them in its thread pool, since the stores block.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from consumer.query import AmbiguousRecord, AuditQuery, parse_transaction_id
from consumer.records import AuditRecord
from consumer.sinks.base import InvalidQuery, Page
from consumer.times import parse_time
from consumer.ui.catalog import known_tables
from consumer.ui.preview import find_event, plan_preview
from consumer.ui.views import MASKED_NOTE, change_view, group_by_day, stamp, state_view
from sqla_audit.errors import DecodeError, StoreError

logger = logging.getLogger(__name__)

#: Changes per page unless ``size`` says otherwise; the largest ``size``.
DEFAULT_SIZE: Final = 25
MAX_SIZE: Final = 100
#: The window of the actor and table views without ``since``.
DEFAULT_WINDOW: Final = "7d"


class NotFound(Exception):
    """Nothing recorded for what the page asks about (a 404 page with this message)."""


def url(request: Request, name: str, **params: object) -> str:
    """The path of view ``name`` (under the app's root path) with ``params`` as its query."""
    path = request.url_for(name).path
    query = {key: str(value) for key, value in params.items() if value not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


def static(request: Request, path: str) -> str:
    return request.url_for("static", path=path).path


def _text(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name, "").strip()
    if not value:
        if required:
            raise InvalidQuery(f"{name} is required")
        return None
    return value


def _required(request: Request, name: str) -> str:
    value = _text(request, name, required=True)
    assert value is not None
    return value


def _size(request: Request) -> int:
    text = _text(request, "size")
    if text is None:
        return DEFAULT_SIZE
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SIZE:
        raise InvalidQuery(f"size must be an integer from 1 to {MAX_SIZE}, got {text!r}")
    return value


def _instant(request: Request, name: str, default: str | None = None) -> dt.datetime | None:
    text = _text(request, name) or default
    if text is None:
        return None
    try:
        return parse_time(text)
    except argparse.ArgumentTypeError as exc:
        raise InvalidQuery(f"{name}: {exc}") from None


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"day must be a date such as 2026-03-01, got {text!r}") from None


class Pages:
    """The handlers, bound to one query and one template set."""

    def __init__(self, query: AuditQuery, templates: Jinja2Templates, title: str) -> None:
        self.query = query
        self.templates = templates
        self.title = title

    # -- rendering -------------------------------------------------------------------------

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
            headers={"cache-control": "no-store", "x-content-type-options": "nosniff"},
        )

    def error(self, request: Request, status: int, message: str, **extra: Any) -> Response:
        return self.render(request, "error.html", {"message": message, **extra}, status)

    def guarded(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
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

    # -- search ----------------------------------------------------------------------------

    def home(self, request: Request, message: str | None = None, status: int = 200) -> Response:
        tables = known_tables(self.query.store)
        return self.render(
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
        service = _text(request, "service")
        table = _text(request, "table")
        record_id = _text(request, "record_id")
        actor = _text(request, "actor")
        request_id = _text(request, "request_id")
        transaction_id = _text(request, "transaction_id")
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
        table = _required(request, "table")
        record_id = _required(request, "id")
        service = self.query.resolve_service(table, record_id, _text(request, "service"))
        if service is None:
            raise NotFound(f"No change recorded for {table} {record_id}.")
        return service, table, record_id

    def record(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        token = _text(request, "page")
        page = self.query.history(
            table, record_id, service=service, limit=_size(request), page=token
        )
        if not page.items and token is None:
            raise NotFound(f"No change recorded for {table} {record_id} in service {service}.")
        return self.render(
            request,
            "record.html",
            {
                "service": service,
                "table": table,
                "record_id": record_id,
                "changes": [change_view(r) for r in page.items],
                "next_page": page.next_page,
                "first_page": token is not None,
                "size": _text(request, "size"),
                "now": stamp(dt.datetime.now(dt.UTC)),
            },
        )

    def as_of(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        at = _instant(request, "at", "now")
        assert at is not None
        state = self.query.as_of(table, record_id, at, service=service)
        view = state_view(state)
        status = 200 if state.known else 404
        return self.render(
            request,
            "state.html",
            {"service": service, "table": table, "record_id": record_id, "view": view},
            status,
        )

    def restore(self, request: Request) -> Response:
        service, table, record_id = self._record_key(request)
        event_id = _required(request, "event")
        event, later = find_event(self.query, service, table, record_id, event_id)
        if event is None:
            raise NotFound(f"{table} {record_id} in service {service} has no change {event_id}.")
        preview = plan_preview(self.query, service, table, record_id, event=event, later=later)
        return self.render(
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

    # -- listings --------------------------------------------------------------------------

    def _listing(
        self,
        request: Request,
        *,
        heading: str,
        page: Page[AuditRecord] | list[AuditRecord],
        view: str,
        params: Mapping[str, object],
        nothing: str,
        by_day: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> Response:
        records = page if isinstance(page, list) else page.items
        next_page = None if isinstance(page, list) else page.next_page
        views = [change_view(r) for r in records]
        groups = group_by_day(views) if by_day else [("", views)]
        return self.render(
            request,
            "listing.html",
            {
                "heading": heading,
                "groups": groups if views else [],
                "nothing": nothing,
                "view": view,
                "params": dict(params),
                "next_page": next_page,
                "first_page": _text(request, "page") is not None,
                **(extra or {}),
            },
        )

    def actor(self, request: Request) -> Response:
        actor = _required(request, "actor")
        service = _text(request, "service")
        day_text = _text(request, "day")
        size = _text(request, "size")
        days: dict[str, str] = {}
        if day_text is not None:
            day = _day(day_text)
            since = dt.datetime.combine(day, dt.time(), dt.UTC)
            until: dt.datetime | None = since + dt.timedelta(days=1, microseconds=-1)
            window = f"on {day.isoformat()} (UTC)"
            days = {
                "previous_day": (day - dt.timedelta(days=1)).isoformat(),
                "next_day": (day + dt.timedelta(days=1)).isoformat(),
            }
            params: dict[str, object] = {"actor": actor, "service": service, "day": day_text}
        else:
            start = _instant(request, "since", DEFAULT_WINDOW)
            assert start is not None
            since = start
            until = _instant(request, "until")
            window = f"since {stamp(since).text}" + (f" until {stamp(until).text}" if until else "")
            params = {
                "actor": actor,
                "service": service,
                "since": _text(request, "since"),
                "until": _text(request, "until"),
            }
        params["size"] = size
        page = self.query.by_actor(
            actor,
            since=since,
            until=until,
            service=service,
            limit=_size(request),
            page=_text(request, "page"),
        )
        where = f" in {service}" if service else ""
        return self._listing(
            request,
            heading=f"Changes by {actor}{where} {window}",
            page=page,
            view="actor",
            params=params,
            nothing=f"No change by {actor}{where} {window}.",
            by_day=True,
            extra={"actor": actor, "actor_service": service, **days},
        )

    def transaction(self, request: Request) -> Response:
        transaction_id = parse_transaction_id(_required(request, "id"))
        records = self.query.by_transaction(transaction_id)
        return self._listing(
            request,
            heading=f"Transaction {transaction_id}",
            page=records,
            view="transaction",
            params={"id": str(transaction_id)},
            nothing=f"No change recorded for transaction {transaction_id}.",
        )

    def request_view(self, request: Request) -> Response:
        request_id = _required(request, "id")
        page = self.query.by_request(request_id, limit=_size(request), page=_text(request, "page"))
        return self._listing(
            request,
            heading=f"Request {request_id}",
            page=page,
            view="request",
            params={"id": request_id, "size": _text(request, "size")},
            nothing=f"No change recorded for request {request_id}.",
        )

    def table(self, request: Request) -> Response:
        service = _required(request, "service")
        table = _required(request, "table")
        since = _instant(request, "since", DEFAULT_WINDOW)
        assert since is not None
        until = _instant(request, "until")
        order = _text(request, "order") or "newest"
        if order not in ("newest", "oldest"):
            raise InvalidQuery(f"order must be newest or oldest, got {order!r}")
        page = self.query.by_table(
            service,
            table,
            since=since,
            until=until,
            newest_first=order == "newest",
            limit=_size(request),
            page=_text(request, "page"),
        )
        window = f"since {stamp(since).text}" + (f" until {stamp(until).text}" if until else "")
        return self._listing(
            request,
            heading=f"{table} in {service}, {window}, {order} first",
            page=page,
            view="table",
            params={
                "service": service,
                "table": table,
                "since": _text(request, "since"),
                "until": _text(request, "until"),
                "order": _text(request, "order"),
                "size": _text(request, "size"),
            },
            nothing=f"No change recorded in {table} of {service} {window}.",
            by_day=True,
        )


__all__ = ["DEFAULT_SIZE", "MAX_SIZE", "NotFound", "Pages", "static", "url"]
