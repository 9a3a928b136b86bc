"""The demo's applications: a shop (customers, products, orders) and a billing service
(invoices), each with its own database.

Plain SQLAlchemy 2.0 declarative models, as applications would write them -- nothing in
them knows about auditing. The types are chosen to show how values travel: ``Decimal``
prices, a ``date``, strings and integers, and primary keys of two kinds (integer ids and
text SKUs).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ShopBase(DeclarativeBase):
    """The demo application's declarative base (its own metadata)."""


class Customer(ShopBase):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(20), default="standard")


class Product(ShopBase):
    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int]


class Order(ShopBase):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    quantity: Mapped[int]
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    status: Mapped[str] = mapped_column(String(20), default="placed")
    shipped_on: Mapped[dt.date | None] = mapped_column(default=None)


class BillingBase(DeclarativeBase):
    """The billing service's declarative base: another application, another database."""


class Invoice(BillingBase):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int]
    customer_id: Mapped[int]
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    status: Mapped[str] = mapped_column(String(20), default="open")


__all__ = ["BillingBase", "Customer", "Invoice", "Order", "Product", "ShopBase"]
