"""The viewer's listings: an actor's changes by day, a transaction, a request across
services, a table's timeline -- each one page of the store's answer with a link to the next
(the store's own page token).

========================  =====================================================================
``/actor``                an actor's changes by day (``day`` or ``since``/``until``)
``/transaction``          every change of one commit (one read: the store returns it whole)
``/request``              every change of one request id, across services
``/table``                a table's timeline in a window
========================  =====================================================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from consumer.query import AuditQuery, parse_transaction_id
from consumer.records import AuditRecord
from consumer.sinks.base import InvalidQuery, Page
from consumer.ui import params as qs
from consumer.ui.rendering import Renderer
from consumer.ui.views import change_view, group_by_day, stamp

#: The window of the actor and table views without ``since``.
DEFAULT_WINDOW: Final = "7d"


class ListingPages:
    """The actor, transaction, request and table views."""

    def __init__(self, query: AuditQuery, renderer: Renderer) -> None:
        self.query = query
        self.renderer = renderer

    def _listing(
        self,
        request: Request,
        *,
        heading: str,
        page: Page[AuditRecord],
        view: str,
        params: Mapping[str, object],
        nothing: str,
        by_day: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> Response:
        records, next_page = page.items, page.next_page
        views = [change_view(r) for r in records]
        groups = group_by_day(views) if by_day else [("", views)]
        return self.renderer.render(
            request,
            "listing.html",
            {
                "heading": heading,
                "groups": groups if views else [],
                "nothing": nothing,
                "view": view,
                "params": dict(params),
                "next_page": next_page,
                "first_page": qs.text(request, "page") is not None,
                **(extra or {}),
            },
        )

    def actor(self, request: Request) -> Response:
        actor = qs.required(request, "actor")
        service = qs.text(request, "service")
        day_text = qs.text(request, "day")
        size = qs.text(request, "size")
        days: dict[str, str] = {}
        if day_text is not None:
            day = qs.day(day_text)
            since = dt.datetime.combine(day, dt.time(), dt.UTC)
            until: dt.datetime | None = since + dt.timedelta(days=1, microseconds=-1)
            window = f"on {day.isoformat()} (UTC)"
            days = {
                "previous_day": (day - dt.timedelta(days=1)).isoformat(),
                "next_day": (day + dt.timedelta(days=1)).isoformat(),
            }
            params: dict[str, object] = {"actor": actor, "service": service, "day": day_text}
        else:
            start = qs.instant(request, "since", DEFAULT_WINDOW)
            assert start is not None
            since = start
            until = qs.instant(request, "until")
            window = f"since {stamp(since).text}" + (f" until {stamp(until).text}" if until else "")
            params = {
                "actor": actor,
                "service": service,
                "since": qs.text(request, "since"),
                "until": qs.text(request, "until"),
            }
        params["size"] = size
        page = self.query.by_actor(
            actor,
            since=since,
            until=until,
            service=service,
            limit=qs.size(request),
            page=qs.text(request, "page"),
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
        """The store returns a transaction whole; it is shown ``size`` changes at a time (the
        page token is the position of the next change)."""
        transaction_id = parse_transaction_id(qs.required(request, "id"))
        start = qs.offset(request, "page")
        size = qs.size(request)
        records = self.query.by_transaction(transaction_id)
        more = str(start + size) if start + size < len(records) else None
        return self._listing(
            request,
            heading=f"Transaction {transaction_id}",
            page=Page(items=records[start : start + size], next_page=more),
            view="transaction",
            params={"id": str(transaction_id), "size": qs.text(request, "size")},
            nothing=f"No change recorded for transaction {transaction_id}.",
        )

    def request_view(self, request: Request) -> Response:
        request_id = qs.required(request, "id")
        page = self.query.by_request(
            request_id, limit=qs.size(request), page=qs.text(request, "page")
        )
        return self._listing(
            request,
            heading=f"Request {request_id}",
            page=page,
            view="request",
            params={"id": request_id, "size": qs.text(request, "size")},
            nothing=f"No change recorded for request {request_id}.",
        )

    def table(self, request: Request) -> Response:
        service = qs.required(request, "service")
        table = qs.required(request, "table")
        since = qs.instant(request, "since", DEFAULT_WINDOW)
        assert since is not None
        until = qs.instant(request, "until")
        order = qs.text(request, "order") or "newest"
        if order not in ("newest", "oldest"):
            raise InvalidQuery(f"order must be newest or oldest, got {order!r}")
        page = self.query.by_table(
            service,
            table,
            since=since,
            until=until,
            newest_first=order == "newest",
            limit=qs.size(request),
            page=qs.text(request, "page"),
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
                "since": qs.text(request, "since"),
                "until": qs.text(request, "until"),
                "order": qs.text(request, "order"),
                "size": qs.text(request, "size"),
            },
            nothing=f"No change recorded in {table} of {service} {window}.",
            by_day=True,
        )


__all__ = ["DEFAULT_WINDOW", "ListingPages"]
