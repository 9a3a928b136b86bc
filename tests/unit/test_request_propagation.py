"""One user action through two services: the documented httpx recipe shares the request id."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_audit import install_audit, outgoing_headers, uninstall_audit
from sqla_audit.middleware import AuditWSGIMiddleware
from sqla_audit.publishers.memory import InMemoryPublisher


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]


def propagate_request_id(request: httpx.Request) -> None:
    """The event hook of docs/capture.md: pass the request id on to the called service."""
    request.headers.update(outgoing_headers())


def _service(name: str, downstream: httpx.Client | None) -> tuple[Any, InMemoryPublisher]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    publisher = InMemoryPublisher()
    install_audit(maker, service=name, publisher=publisher)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with maker.begin() as session:
            session.add(Order(id=1, status=name))
        if downstream is not None:
            downstream.post("http://billing/charge").raise_for_status()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = AuditWSGIMiddleware(app, actor_getter=lambda environ: "alice")
    wrapped.maker = maker  # type: ignore[attr-defined]
    return wrapped, publisher


def test_two_services_record_one_request_id() -> None:
    """shop calls billing with the hook: both services' events carry the caller's request id."""
    billing, billing_events = _service("billing", None)
    to_billing = httpx.Client(
        transport=httpx.WSGITransport(app=billing), event_hooks={"request": [propagate_request_id]}
    )
    shop, shop_events = _service("shop", to_billing)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=shop)) as client:
            response = client.post("http://shop/checkout", headers={"X-Request-ID": "req-42"})
        assert response.status_code == 200
        (shop_event,) = shop_events.events
        (billing_event,) = billing_events.events
        assert (shop_event.service, billing_event.service) == ("shop", "billing")
        assert shop_event.request_id == billing_event.request_id == "req-42"
    finally:
        to_billing.close()
        for app in (shop, billing):
            uninstall_audit(app.maker)


def test_without_the_hook_the_called_service_makes_its_own_id() -> None:
    """The control case: a plain client does not pass the id, so billing generates another."""
    billing, billing_events = _service("billing", None)
    to_billing = httpx.Client(transport=httpx.WSGITransport(app=billing))
    shop, shop_events = _service("shop", to_billing)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=shop)) as client:
            client.post("http://shop/checkout", headers={"X-Request-ID": "req-42"})
        assert shop_events.events[0].request_id == "req-42"
        assert billing_events.events[0].request_id not in (None, "req-42")
    finally:
        to_billing.close()
        for app in (shop, billing):
            uninstall_audit(app.maker)
