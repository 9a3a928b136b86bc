"""The model and rows every commit-path contender works on.

One table shaped like a typical business row -- an integer key, a few strings, a decimal, an
integer, a timestamp and a text column -- so that the capture cost per row is representative
rather than best case (one column) or worst case (a hundred). Each contender builds its own
copy (own declarative base, own table name) so contenders never share listeners or tables;
SQLAlchemy-Continuum needs ``__versioned__`` on the class, which :func:`build_models` adds
when asked.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Models:
    base: type[DeclarativeBase]
    item: type[Any]
    table: sa.Table


def build_models(table_name: str, *, versioned: bool = False) -> Models:
    """A fresh declarative base with one ``Item`` model mapped to ``table_name``."""

    class Base(DeclarativeBase):
        pass

    namespace: dict[str, Any] = {
        "__tablename__": table_name,
        "__annotations__": {
            "id": Mapped[int],
            "sku": Mapped[str],
            "name": Mapped[str],
            "email": Mapped[str],
            "amount": Mapped[decimal.Decimal],
            "quantity": Mapped[int],
            "status": Mapped[str],
            "created_at": Mapped[dt.datetime],
            "note": Mapped[str],
        },
        "id": mapped_column(sa.Integer, primary_key=True, autoincrement=True),
        "sku": mapped_column(sa.String(40)),
        "name": mapped_column(sa.String(200)),
        "email": mapped_column(sa.String(200)),
        "amount": mapped_column(sa.Numeric(12, 2)),
        "quantity": mapped_column(sa.Integer),
        "status": mapped_column(sa.String(20)),
        "created_at": mapped_column(sa.DateTime(timezone=True)),
        "note": mapped_column(sa.Text),
    }
    if versioned:
        namespace["__versioned__"] = {}
    item: type[Any] = type("Item", (Base,), namespace)
    table: sa.Table = item.__table__
    return Models(base=Base, item=item, table=table)


def row_values(i: int, *, version: int = 0) -> dict[str, Any]:
    """Column values of row number ``i`` (``version`` changes amount and status)."""
    return {
        "sku": f"SKU-{i:08d}",
        "name": f"Item number {i} of the benchmark catalogue",
        "email": f"buyer{i % 997}@example.com",
        "amount": decimal.Decimal(f"{(i * 37 + version) % 100000}.{(i + version) % 100:02d}"),
        "quantity": (i * 7 + version) % 1000,
        "status": ("new", "paid", "shipped", "closed")[(i + version) % 4],
        "created_at": _T0 + dt.timedelta(seconds=i),
        "note": f"note for {i}: " + "lorem ipsum " * 4,
    }


def new_object(models: Models, i: int) -> Any:
    return models.item(**row_values(i))


__all__ = ["Models", "build_models", "new_object", "row_values"]
