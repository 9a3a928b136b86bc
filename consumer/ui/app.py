"""The viewer as an ASGI application: :func:`audit_app`.

Serve it alone (``sqla-audit ui``) or mount it in an existing Starlette/FastAPI application,
behind that application's own authentication::

    from consumer.query import AuditQuery
    from consumer.ui import audit_app

    app.mount("/audit", audit_app(AuditQuery(store)))

Every link it renders is built from the request's root path, so the pages work under any
prefix. It only reads: every route is ``GET`` (``HEAD``); templates escape every value
(Jinja2 autoescape); the stylesheet and the small script ship in the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from consumer.query import AuditQuery
from consumer.ui.auth import Credentials, RequireCredentials
from consumer.ui.listings import ListingPages
from consumer.ui.pages import RecordPages
from consumer.ui.rendering import Renderer

HERE: Final = Path(__file__).resolve().parent
DEFAULT_TITLE: Final = "sqla-audit"


def templates() -> Jinja2Templates:
    """The page templates, every value escaped, an undefined name an error."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=environment)


def routes(query: AuditQuery, renderer: Renderer) -> list[BaseRoute]:
    """Every view (GET and HEAD only) and the static files."""
    guard = renderer.guarded
    pages = RecordPages(query, renderer)
    listings = ListingPages(query, renderer)
    return [
        Route("/", guard(pages.index), name="home"),
        Route("/search", guard(pages.search), name="search"),
        Route("/record", guard(pages.record), name="record"),
        Route("/record/as-of", guard(pages.as_of), name="as_of"),
        Route("/record/restore", guard(pages.restore), name="restore"),
        Route("/actor", guard(listings.actor), name="actor"),
        Route("/transaction", guard(listings.transaction), name="transaction"),
        Route("/request", guard(listings.request_view), name="request"),
        Route("/table", guard(listings.table), name="table"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def audit_app(
    query: AuditQuery, *, credentials: Credentials | None = None, title: str = DEFAULT_TITLE
) -> ASGIApp:
    """The read-only viewer over ``query``; with ``credentials`` every request needs them."""
    renderer = Renderer(templates(), title)
    middleware = []
    if credentials is not None and credentials.configured:
        middleware.append(Middleware(RequireCredentials, credentials=credentials))
    return Starlette(routes=routes(query, renderer), middleware=middleware)


__all__ = ["DEFAULT_TITLE", "audit_app", "routes", "templates"]
