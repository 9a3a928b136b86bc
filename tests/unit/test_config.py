"""AuditConfig validation and per-model plans (``__audit__``, column naming)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Account, Employee, Manager, Scratch, User
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_audit.config import AuditConfig, plan_model
from sqla_audit.errors import ConfigurationError

CONFIG = AuditConfig(service="svc")


class _Base(DeclarativeBase):
    pass


class _Schemaed(_Base):
    __tablename__ = "things"
    __table_args__ = {"schema": "inventory"}
    id: Mapped[int] = mapped_column(primary_key=True)


class _Parent(_Base):
    __tablename__ = "parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    kind: Mapped[str]
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "parent"}


class _Child(_Parent):
    """A subclass table with its own ``name`` column under another attribute name."""

    __tablename__ = "child"
    id: Mapped[int] = mapped_column(sa.ForeignKey("parent.id"), primary_key=True)
    child_name: Mapped[str] = mapped_column("name")
    __mapper_args__ = {"polymorphic_identity": "child"}


def _model(audit: Any) -> Any:
    class _Model(DeclarativeBase):
        pass

    class Thing(_Model):
        __tablename__ = "thing"
        __audit__ = audit
        id: Mapped[int] = mapped_column(primary_key=True)
        secret: Mapped[str] = mapped_column("secret_col")

    return Thing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service": ""}, "service"),
        ({"service": "   "}, "service"),
        ({"service": "x" * 201}, "service"),
        ({"service": "a\nb"}, "service"),
        ({"service": "s", "include_tables": "users"}, "not a string"),
        ({"service": "s", "exclude_tables": [""]}, "non-empty"),
        ({"service": "s", "include_tables": ["a"], "exclude_tables": ["a"]}, "both"),
        ({"service": "s", "unknown_types": "ignore"}, "unknown_types"),
        ({"service": "s", "metadata_hook": 3}, "callable"),
        ({"service": "s", "on_error": "log"}, "callable"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, Any], message: str) -> None:
    """Every invalid setting raises ConfigurationError when the config is built."""
    with pytest.raises(ConfigurationError, match=message):
        AuditConfig(**kwargs)


def test_config_is_frozen_and_normalised() -> None:
    """The config is immutable; table lists become frozensets."""
    config = AuditConfig(service="s", include_tables=["a", "b"], exclude_tables=("c",))
    assert config.include_tables == frozenset({"a", "b"})
    assert config.exclude_tables == frozenset({"c"})
    with pytest.raises(AttributeError):
        config.service = "other"  # type: ignore[misc]


def test_table_filters_match_plain_and_qualified_names() -> None:
    """include/exclude match a table by plain or schema-qualified name."""
    table = _Schemaed.__table__
    assert AuditConfig(service="s", include_tables=["inventory.things"]).table_enabled(table)  # type: ignore[arg-type]
    assert AuditConfig(service="s", include_tables=["things"]).table_enabled(table)  # type: ignore[arg-type]
    assert not AuditConfig(service="s", exclude_tables=["things"]).table_enabled(table)  # type: ignore[arg-type]
    assert not AuditConfig(service="s", include_tables=["other"]).table_enabled(table)  # type: ignore[arg-type]
    plan = plan_model(sa.inspect(_Schemaed), CONFIG)
    assert plan.table == "inventory.things"


def test_plan_uses_column_names_and_base_table() -> None:
    """Plans name columns by column name; joined subclasses use the base table."""
    user = plan_model(sa.inspect(User), CONFIG)
    assert [spec.name for spec in user.columns] == ["id", "name", "email", "login_count", "bio"]
    assert [spec.key for spec in user.columns][1] == "display_name"
    manager = plan_model(sa.inspect(Manager), CONFIG)
    assert manager.table == "employees"
    assert [spec.name for spec in manager.columns] == ["id", "name", "kind", "language", "budget"]
    assert plan_model(sa.inspect(Employee), CONFIG).table == "employees"


def test_same_column_name_in_two_tables_is_qualified() -> None:
    """Two attributes whose columns share a name in different tables stay distinct."""
    plan = plan_model(sa.inspect(_Child), CONFIG)
    assert [spec.name for spec in plan.columns] == ["id", "name", "kind", "child.name"]


def test_masks_and_exclusions_are_resolved_by_attribute_or_column_name() -> None:
    """__audit__ names may be attribute or column names."""
    plan = plan_model(sa.inspect(Account), CONFIG)
    assert plan.masked_names == ("password_hash",)
    assert "last_seen" not in [spec.name for spec in plan.columns]
    by_column = plan_model(sa.inspect(_model({"mask": ["secret_col"]})), CONFIG)
    by_attribute = plan_model(sa.inspect(_model({"mask": ["secret"]})), CONFIG)
    assert by_column.masked_names == by_attribute.masked_names == ("secret_col",)


def test_disabled_models_and_excluded_tables_have_disabled_plans() -> None:
    """__audit__ enabled False and excluded tables give a disabled plan."""
    assert not plan_model(sa.inspect(Scratch), CONFIG).enabled
    config = AuditConfig(service="s", exclude_tables=["users"])
    assert not plan_model(sa.inspect(User), config).enabled


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        (["mask"], "must be a dict"),
        ({"hide": ["secret"]}, "unknown option"),
        ({"enabled": "no"}, "True or False"),
        ({"mask": "secret"}, "list of column names"),
        ({"mask": [1]}, "strings"),
        ({"mask": ["nope"]}, "unknown column 'nope'"),
        ({"exclude": ["id"]}, "cannot be excluded"),
        ({"mask": ["id"]}, "cannot be masked"),
        ({"mask": ["secret"], "exclude": ["secret"]}, "both excluded and masked"),
    ],
)
def test_invalid_audit_options_are_refused(audit: Any, message: str) -> None:
    """Each invalid ``__audit__`` raises ConfigurationError naming the problem."""
    with pytest.raises(ConfigurationError, match=message):
        plan_model(sa.inspect(_model(audit)), CONFIG)
