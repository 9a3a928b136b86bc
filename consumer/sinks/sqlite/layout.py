"""The file's layout: checked, created or upgraded in place when a store opens it for
writing, only checked when it is opened for reading (module docstring of
:mod:`consumer.sinks.sqlite`)."""

from __future__ import annotations

import sqlite3

from consumer.sinks.base import DEFAULT_VIEWS, format_views, parse_views
from consumer.sinks.sqlite.schema import LAYOUT_VERSION, SCHEMA, VIEW_INDEXES
from sqla_audit.errors import ConfigurationError, StoreError


def read_layout(conn: sqlite3.Connection, path: str, name: str) -> frozenset[str]:
    """Check, without writing, that the file holds a readable audit store; its views."""
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        recorded = None
        if "audit_settings" in tables:
            recorded = conn.execute(
                "SELECT value FROM audit_settings WHERE name = 'views'"
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise ConfigurationError(
                f"{name} is not a SQLite database ({exc}); is --store-url the audit store?"
            ) from exc
        raise StoreError(f"cannot read SQLite store {path!r}: {exc}") from exc
    if version > LAYOUT_VERSION:
        raise ConfigurationError(
            f"the SQLite store {path!r} holds audit layout {version}, newer than "
            f"this sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
        )
    if "audit_records" not in tables:
        raise ConfigurationError(
            f"{name} holds no audit store (no audit_records table); is --store-url the "
            "audit store, not the application database?"
        )
    return DEFAULT_VIEWS if recorded is None else parse_views(recorded[0])


def open_layout(
    conn: sqlite3.Connection, path: str, views: frozenset[str] | None
) -> frozenset[str]:
    """Check the file's layout, create or upgrade it; the views it keeps."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > LAYOUT_VERSION:
        conn.close()
        raise ConfigurationError(
            f"the SQLite store {path!r} holds audit layout {version}, newer than "
            f"this sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        recorded = conn.execute("SELECT value FROM audit_settings WHERE name = 'views'").fetchone()
        if views is None:
            views = DEFAULT_VIEWS if recorded is None else parse_views(recorded[0])
        if recorded is None or parse_views(recorded[0]) != views:
            conn.execute(
                "INSERT OR REPLACE INTO audit_settings (name, value) VALUES ('views', ?)",
                (format_views(views),),
            )
        for view in sorted(views):
            conn.execute(VIEW_INDEXES[view])
        conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return views
