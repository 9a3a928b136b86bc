"""The demo's script: what three users do to the shop and, through it, to the billing
service, and what the audit log must then show.

Two services write to one audit trail: ``shop`` and ``billing``, each with its own database
and its own ``install_audit``. Placing an order is one user action that changes rows in
both: the shop calls the billing service, passing its request id in the ``X-Request-ID``
header (:func:`~sqla_audit.context.outgoing_headers`), and the billing service adopts it the
way its middleware would (:func:`~sqla_audit.middleware.accept_request_id`), so the request
view collects the changes of both services under one id.

Each step is one request of one user. It runs the way a web request runs under
:class:`~sqla_audit.middleware.AuditASGIMiddleware`: inside ``audit_context(actor=...,
request_id=...)`` and one transaction (``sessionmaker.begin()``). The application code in
the steps is ordinary SQLAlchemy; the audit trail comes from ``install_audit`` alone.

The steps cover what an audit log has to get right: inserts, updates of a few columns, a
bulk ``UPDATE`` statement changing many rows, a delete, and a request that fails after its
changes were flushed -- it is rolled back, so the log must show nothing of it.

The expected history is written down by hand next to each step, not derived from the
events, so the runner can check what reached the store against it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from sqlalchemy import func, update
from sqlalchemy.orm import Session, sessionmaker

from consumer.demo.models import Customer, Invoice, Order, Product
from sqla_audit.context import (
    REQUEST_ID_HEADER,
    audit_context,
    current_actor,
    current_request_id,
    outgoing_headers,
)
from sqla_audit.events import Actor, Operation
from sqla_audit.middleware import accept_request_id

#: The users of the demo, as an authentication layer would describe them.
USERS: Final = {
    "alice": Actor("alice", {"role": "account manager"}),
    "bob": Actor("bob", {"role": "sales"}),
    "carol": Actor("carol", {"role": "warehouse"}),
}

#: The ``service`` name of the shop's events.
SHOP: Final = "shop"
#: The ``service`` name of the billing service's events.
BILLING: Final = "billing"
#: Both services, in the order the demo installs them.
SERVICES: Final = (SHOP, BILLING)

#: ``(service, table, record_id)`` -- how the audit log addresses a record.
RecordKey = tuple[str, str, str]


class PaymentDeclined(Exception):
    """Raised by the step whose changes must be rolled back."""


@dataclass(frozen=True, slots=True)
class Step:
    """One request of the scenario and how it ended."""

    number: int
    user: str
    summary: str
    committed: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class ExpectedChange:
    """One change a record's history must show: operation, actor, changed columns.

    ``columns`` is ``None`` for inserts and deletes (every column is listed).
    """

    operation: Operation
    actor: str
    columns: frozenset[str] | None = None


@dataclass(slots=True)
class ScenarioResult:
    """What ran, and the history each record must have (oldest change first)."""

    steps: list[Step] = field(default_factory=list)
    expected: dict[RecordKey, list[ExpectedChange]] = field(default_factory=dict)
    #: Records that only a rolled-back request touched: their history must be empty.
    rolled_back: list[RecordKey] = field(default_factory=list)
    #: The request that changed rows in both services, and the records it changed there.
    shared_request: str = ""
    shared_records: list[RecordKey] = field(default_factory=list)

    def expect(
        self,
        table: str,
        record_id: str,
        operation: Operation,
        actor: str,
        columns: tuple[str, ...] | None = None,
        *,
        service: str = SHOP,
    ) -> None:
        self.expected.setdefault((service, table, record_id), []).append(
            ExpectedChange(operation, actor, None if columns is None else frozenset(columns))
        )

    @property
    def records(self) -> list[RecordKey]:
        """Every record the scenario talks about, in order of first appearance."""
        return [*self.expected, *self.rolled_back]


class ShopScenario:
    """Runs the requests against the audited shop and billing ``sessionmaker``s and records
    expectations."""

    def __init__(self, maker: sessionmaker[Session], billing: sessionmaker[Session]) -> None:
        self.maker = maker
        self.billing = billing
        self.result = ScenarioResult()
        self._numbers = itertools.count(1)

    @contextmanager
    def request(self, user: str, summary: str) -> Iterator[Session]:
        """One user's request: audit context, one transaction, commit or roll back."""
        number = next(self._numbers)
        try:
            with (
                audit_context(actor=USERS[user], request_id=f"demo-req-{number:03d}"),
                self.maker.begin() as session,
            ):
                yield session
        except PaymentDeclined as exc:
            self.result.steps.append(Step(number, user, summary, False, f"rolled back: {exc}"))
            return
        self.result.steps.append(Step(number, user, summary, True, "committed"))

    def run(self) -> ScenarioResult:
        """Every step, in order."""
        self.register_customers()
        self.stock_products()
        self.place_order()
        self.upgrade_customer()
        self.raise_prices()
        self.declined_order()
        self.ship_order()
        self.close_account()
        return self.result

    # -- the steps ---------------------------------------------------------------------------

    def register_customers(self) -> None:
        with self.request("alice", "registers customers 1 Ada Lovelace and 2 Grace Hopper") as s:
            s.add_all(
                [
                    Customer(id=1, name="Ada Lovelace", email="ada@example.com"),
                    Customer(id=2, name="Grace Hopper", email="grace@example.com"),
                ]
            )
        self.result.expect("customers", "1", Operation.INSERT, "alice")
        self.result.expect("customers", "2", Operation.INSERT, "alice")

    def stock_products(self) -> None:
        with self.request("carol", "adds products KB-01, MS-02 and MN-03 to the catalogue") as s:
            s.add_all(
                [
                    Product(sku="KB-01", name="Keyboard", price=Decimal("49.00"), stock=12),
                    Product(sku="MS-02", name="Mouse", price=Decimal("19.90"), stock=40),
                    Product(sku="MN-03", name="Monitor", price=Decimal("189.00"), stock=5),
                ]
            )
        for sku in ("KB-01", "MS-02", "MN-03"):
            self.result.expect("products", sku, Operation.INSERT, "carol")

    def place_order(self) -> None:
        summary = "places order 1: two monitors for Grace (stock 5 -> 3); billing invoices it"
        with self.request("bob", summary) as s:
            monitor = s.get_one(Product, "MN-03")
            order = Order(
                id=1,
                customer_id=2,
                sku="MN-03",
                quantity=2,
                total=monitor.price * 2,
                status="placed",
            )
            s.add(order)
            monitor.stock -= 2
            # the shop calls the billing service, passing its request id on
            self.invoice_order(outgoing_headers(), order)
            self.result.shared_request = current_request_id() or ""
        self.result.expect("orders", "1", Operation.INSERT, "bob")
        self.result.expect("products", "MN-03", Operation.UPDATE, "bob", ("stock",))
        self.result.expect("invoices", "1", Operation.INSERT, "bob", service=BILLING)
        self.result.shared_records = [
            (BILLING, "invoices", "1"),
            (SHOP, "orders", "1"),
            (SHOP, "products", "MN-03"),
        ]

    def invoice_order(self, headers: dict[str, str], order: Order) -> None:
        """The billing service's endpoint: it adopts the caller's request id, as its
        middleware does with the ``X-Request-ID`` header, and writes to its own database."""
        request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
        with (
            audit_context(actor=current_actor(), request_id=request_id),
            self.billing.begin() as s,
        ):
            s.add(
                Invoice(
                    id=order.id,
                    order_id=order.id,
                    customer_id=order.customer_id,
                    amount=order.total,
                    status="open",
                )
            )

    def upgrade_customer(self) -> None:
        with self.request("bob", "moves Ada to the gold tier with her new e-mail address") as s:
            ada = s.get_one(Customer, 1)
            ada.email = "ada@analytical-engines.example"
            ada.tier = "gold"
        self.result.expect("customers", "1", Operation.UPDATE, "bob", ("email", "tier"))

    def raise_prices(self) -> None:
        with self.request("carol", "raises every price by 5% (one UPDATE statement)") as s:
            # A bulk ORM statement: no object is loaded, yet each row it changes is audited
            # with its old and new price, all sharing one transaction id.
            s.execute(update(Product).values(price=func.round(Product.price * 1.05, 2)))
        for sku in ("KB-01", "MN-03", "MS-02"):
            self.result.expect("products", sku, Operation.UPDATE, "carol", ("price",))

    def declined_order(self) -> None:
        summary = "registers customer 3 and places order 2 for her -- the card is declined"
        # Nothing of this request may reach the audit log: these records stay without history
        # (and MN-03 keeps the history expected from the other steps).
        self.result.rolled_back += [(SHOP, "customers", "3"), (SHOP, "orders", "2")]
        with self.request("bob", summary) as s:
            s.add(Customer(id=3, name="Mallory Mallet", email="mallory@example.com"))
            monitor = s.get_one(Product, "MN-03")
            s.add(Order(id=2, customer_id=3, sku="MN-03", quantity=3, total=monitor.price * 3))
            monitor.stock -= 3
            s.flush()  # the rows reach the database and the audit buffer...
            raise PaymentDeclined("card declined")  # ...and the transaction is rolled back

    def ship_order(self) -> None:
        with self.request("carol", "ships order 1") as s:
            order = s.get_one(Order, 1)
            order.status = "shipped"
            order.shipped_on = dt.date.today()
        self.result.expect("orders", "1", Operation.UPDATE, "carol", ("status", "shipped_on"))

    def close_account(self) -> None:
        with self.request("alice", "closes Ada's account (deletes customer 1)") as s:
            s.delete(s.get_one(Customer, 1))
        self.result.expect("customers", "1", Operation.DELETE, "alice")


def run_scenario(maker: sessionmaker[Session], billing: sessionmaker[Session]) -> ScenarioResult:
    """Run the scripted requests against the audited shop and billing ``sessionmaker``s."""
    return ShopScenario(maker, billing).run()


__all__ = [
    "BILLING",
    "SERVICES",
    "SHOP",
    "USERS",
    "ExpectedChange",
    "PaymentDeclined",
    "RecordKey",
    "ScenarioResult",
    "ShopScenario",
    "Step",
    "run_scenario",
]
