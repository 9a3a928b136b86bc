"""A small audit trail for the web viewer's tests, and the browser that reads it.

Two services (``shop``, ``billing``) audited with ``install_audit`` into an
``InMemoryPublisher``; the published messages go through the real consumer (``Worker``) into
whatever store a test gives :func:`fill_store` (SQLite in the unit suite, Cassandra in the
integration suite). The script covers what the viewer has to show: values with markup, quotes
and non-ASCII text, nested JSON changes, a masked column, a request spanning both services, a
primary-key change, a delete, a bulk-statement marker and a record id two services share.

:func:`chrome` starts Debian's ``chromium`` through its ``chromium-driver`` (headless, the
driver path given explicitly so Selenium Manager never downloads anything); when they are
missing the test is skipped, or fails under ``CI=true``. :func:`serve` runs the viewer on a
free loopback port in a thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from query_support import consume
from service_policy import is_ci
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.sinks.base import AuditStore
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher

#: A note that must come back escaped: markup, both quotes, an ampersand, non-ASCII text.
HOSTILE = "<script>alert('x')</script> \"quoted\" & ünïcødé ✓ <img src=x onerror=alert(1)>"
#: A JSON key with markup (nested paths are shown too).
HOSTILE_KEY = "<b>key</b>"
#: The masked column's values: never in the store, so never in a page.
SECRET = "tok-secret"

ORDERS = "ui_orders"
INVOICES = "ui_invoices"
CHROMIUM = Path(os.environ.get("SQLA_AUDIT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SQLA_AUDIT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: The zone the test browser runs in (its local times differ from the UTC ones).
BROWSER_ZONE = "Europe/Oslo"


class ShopBase(DeclarativeBase):
    pass


class BillingBase(DeclarativeBase):
    pass


class Order(ShopBase):
    __tablename__ = ORDERS
    __audit__ = {"mask": ["card_token"]}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(sa.String(40))
    note: Mapped[str | None] = mapped_column(sa.String(400))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    card_token: Mapped[str | None] = mapped_column(sa.String(40))


class Invoice(BillingBase):
    __tablename__ = INVOICES

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    order_id: Mapped[int]
    total: Mapped[str] = mapped_column(sa.String(20))


class SharedOrder(BillingBase):
    """billing's own ``ui_orders`` table: record 99 exists in both services."""

    __tablename__ = ORDERS

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(sa.String(40))


@dataclass(frozen=True)
class Trail:
    """What the script did: its events (in commit order) and a few of them by name."""

    events: list[ChangeEvent]
    messages: list[str]

    def first(self, **match: Any) -> ChangeEvent:
        """The first event whose attributes equal ``match``."""
        for event in self.events:
            if all(getattr(event, name) == value for name, value in match.items()):
                return event
        raise LookupError(match)

    @property
    def day(self) -> dt.date:
        return self.events[0].committed_at.astimezone(dt.UTC).date()


def run_trail(shop_engine: sa.Engine, billing_engine: sa.Engine) -> Trail:
    """Run the scripted changes on the two databases with auditing installed."""
    ShopBase.metadata.drop_all(shop_engine)
    ShopBase.metadata.create_all(shop_engine)
    BillingBase.metadata.drop_all(billing_engine)
    BillingBase.metadata.create_all(billing_engine)
    publisher = InMemoryPublisher()
    shop = sessionmaker(shop_engine)
    billing = sessionmaker(billing_engine)
    install_audit(shop, publisher=publisher, service="shop", max_bulk_rows=1)
    install_audit(billing, publisher=publisher, service="billing")
    try:
        with audit_context(actor="alice", request_id="req-1"):
            with shop.begin() as session:
                session.add(
                    Order(
                        id=1,
                        status="new",
                        note=HOSTILE,
                        details={
                            "items": [{"sku": "A-1", "qty": 1}],
                            "address": {"city": "Oslo"},
                            HOSTILE_KEY: "v",
                        },
                        card_token=f"{SECRET}-1",
                    )
                )
            with billing.begin() as session:
                session.add(Invoice(id=7, order_id=1, total="12.50"))
                session.add(SharedOrder(id=99, status="billing copy"))
        with audit_context(actor="bob", request_id="req-2"), shop.begin() as session:
            order = session.get(Order, 1)
            assert order is not None
            order.status = "paid"
            order.details = {
                "items": [{"sku": "A-1", "qty": 2}],
                "address": {"city": "Bergen"},
                HOSTILE_KEY: "v",
            }
            order.card_token = f"{SECRET}-2"
            session.add(Order(id=99, status="shop copy", note=None, details={}, card_token=None))
        with audit_context(actor="carol", request_id="req-3"), shop.begin() as session:
            session.add(Order(id=2, status="new", note="second", details={}, card_token=None))
        with audit_context(actor="<i>mallory</i>"), shop.begin() as session:
            order = session.get(Order, 1)
            assert order is not None
            order.note = "ünïcødé only"
        with audit_context(actor="alice"), shop.begin() as session:
            second = session.get(Order, 2)
            assert second is not None
            second.id = 3  # a key change: order 2 moves to 3
        with audit_context(actor="bob"), shop.begin() as session:
            session.execute(sa.update(Order).where(Order.id >= 3).values(status="bulk"))
        with audit_context(actor="bob", request_id="req-5"), shop.begin() as session:
            order = session.get(Order, 1)
            assert order is not None
            session.delete(order)
        with audit_context(actor="carol"), shop.begin() as session:
            third = session.get(Order, 3)
            assert third is not None
            third.status = "shipped"
    finally:
        uninstall_audit(shop)
        uninstall_audit(billing)
    return Trail(publisher.events, publisher.raw_messages)


def make_trail(directory: Path) -> Trail:
    shop_engine = sa.create_engine(f"sqlite+pysqlite:///{directory / 'shop.db'}")
    billing_engine = sa.create_engine(f"sqlite+pysqlite:///{directory / 'billing.db'}")
    try:
        return run_trail(shop_engine, billing_engine)
    finally:
        shop_engine.dispose()
        billing_engine.dispose()


def fill_store(store: AuditStore, trail: Trail) -> None:
    """Consume the trail's messages with the real worker into ``store``."""
    consume(store, trail.messages)


# --------------------------------------------------------------------------- serving


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback port in a thread; yields its base URL."""
    import uvicorn  # noqa: PLC0415

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the viewer did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# --------------------------------------------------------------------------- the browser


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    try:
        import selenium  # noqa: F401, PLC0415
    except ImportError:
        return "selenium is not installed (pip install 'sqla-audit[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return (
                f"{path} is missing: apt-get install -y {package} "
                "(scripts/services up browser installs it)"
            )
    return None


@contextlib.contextmanager
def chrome() -> Iterator[Any]:
    """A headless Chromium driven by the system chromedriver; skip (fail under CI) if absent."""
    missing = browser_missing()
    if missing is not None:
        if is_ci():
            pytest.fail(f"CI=true and {missing}", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    # the browser's zone differs from UTC, so the pages show both times
    service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TZ": BROWSER_ZONE})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """Where screenshots go: ``$SQLA_AUDIT_TEST_ARTIFACTS/name``, else a pytest temp dir."""
    root = os.environ.get("SQLA_AUDIT_TEST_ARTIFACTS", "").strip()
    if root:
        path = Path(root) / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path
    return tmp_path_factory.mktemp(name)


def screenshot(driver: Any, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 0
    return path


__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "HOSTILE",
    "HOSTILE_KEY",
    "INVOICES",
    "ORDERS",
    "SECRET",
    "Trail",
    "artifacts_dir",
    "browser_missing",
    "chrome",
    "fill_store",
    "free_port",
    "make_trail",
    "run_trail",
    "screenshot",
    "serve",
    "walk_the_viewer",
]


def walk_the_viewer(driver: Any, base_url: str, trail: Trail, shots: Path) -> list[Path]:
    """search → timeline → as-of → actor → transaction in the browser, checking the text
    each page renders; a screenshot of each page goes to ``shots``. Returns the files."""
    from selenium.common.exceptions import NoAlertPresentException  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions  # noqa: PLC0415
    from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

    taken: list[Path] = []

    def follow(element: Any) -> None:
        """Click a link or button and wait until the next page replaced this one (reading
        right after the click may find the old page's elements, stale a moment later)."""
        page = driver.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))

    def body() -> str:
        return str(driver.find_element(By.TAG_NAME, "body").text)

    def no_alert() -> None:
        try:
            driver.switch_to.alert  # noqa: B018 - raises when no script opened an alert
        except NoAlertPresentException:
            return
        pytest.fail("a stored value ran as script")

    # 1. search
    driver.get(base_url + "/")
    assert "Search the audit trail" in body()
    form = driver.find_element(By.CSS_SELECTOR, "form.search")
    form.find_element(By.NAME, "service").send_keys("shop")
    form.find_element(By.NAME, "table").send_keys(ORDERS)
    form.find_element(By.NAME, "record_id").send_keys("1")
    taken.append(screenshot(driver, shots, "1-search"))
    follow(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    # 2. the record's timeline
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert heading.startswith(f"{ORDERS} 1"), heading
    text = body()
    assert 'status "new" → "paid"' in text
    assert "details.items[0].qty 1 → 2" in text
    assert "card_token *** → ***" in text
    assert HOSTILE.split(" ", 1)[0] in text  # the markup is shown as text
    local = driver.find_elements(By.CSS_SELECTOR, "span.local")
    assert local, "the times in the browser's zone"
    assert "Europe/Oslo" in driver.find_element(By.CSS_SELECTOR, "[data-zone]").text
    no_alert()
    taken.append(screenshot(driver, shots, "2-timeline"))
    items = driver.find_elements(By.CSS_SELECTOR, "li.change")
    insert = trail.first(service="shop", record_id="1", operation=Operation.INSERT)
    assert items[-1].get_attribute("id") == f"e-{insert.event_id}"
    follow(items[-1].find_element(By.LINK_TEXT, "state as of this change"))

    # 3. the record as of its first change
    text = body()
    assert "as of" in driver.find_element(By.TAG_NAME, "h1").text
    assert 'status "new"' in text
    assert "card_token ***" in text
    no_alert()
    taken.append(screenshot(driver, shots, "3-as-of"))
    follow(driver.find_element(By.CSS_SELECTOR, "li.change .who a"))

    # 4. the actor's day
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert heading.startswith("Changes by alice"), heading
    assert trail.day.isoformat() in heading
    text = body()
    assert f"{INVOICES} 7" in text
    assert "billing" in text
    taken.append(screenshot(driver, shots, "4-actor"))
    invoice = trail.first(service="billing", record_id="7")
    follow(driver.find_element(By.CSS_SELECTOR, f"#e-{invoice.event_id} .tx a"))

    # 5. the transaction
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert heading == f"Transaction {invoice.transaction_id}", heading
    listed = [i.get_attribute("id") for i in driver.find_elements(By.CSS_SELECTOR, "li.change")]
    expected = [
        f"e-{e.event_id}" for e in trail.events if e.transaction_id == invoice.transaction_id
    ]
    assert listed == expected
    assert f"{ORDERS} 99" in body()
    taken.append(screenshot(driver, shots, "5-transaction"))
    return taken
