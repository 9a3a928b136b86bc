"""Which audit layout a keyspace holds, and creating (``schema apply``) the current one.

A layout-2 keyspace records itself in ``schema_info`` (layout version, views, time bucket,
timeline bucket and shards); a keyspace with the layout-1 history table
``changes_by_record`` and no ``schema_info`` row is layout 1; anything else holds no audit
tables (layout 0). :func:`layout_problem` is the one-line message naming the command to
run when this version cannot use a keyspace: ``schema apply`` (none), ``schema migrate``
(layout 1) or an upgrade (newer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.config import CassandraConfig
from consumer.sinks.cassandra.connection import connect, store_error
from consumer.sinks.cassandra.schema import LAYOUT_VERSION, SCHEMA_INFO_NAME, CassandraSchema
from consumer.sinks.views import parse_views
from sqla_audit.errors import ConfigurationError, StoreError


@dataclass(frozen=True, slots=True)
class KeyspaceLayout:
    """What a keyspace holds: its layout version (0: no audit tables) and, from layout 2
    on, the settings ``schema_info`` records."""

    version: int
    views: frozenset[str] = frozenset()
    time_bucket: str = "none"
    timeline_bucket: str = "hour"
    timeline_shards: int = 1
    actor_bucket: str = "day"
    actor_shards: int = 1


def read_layout(session: Any, keyspace: str, timeout: float = 30.0) -> KeyspaceLayout:
    """The layout of ``keyspace``: ``schema_info`` if it has a row, else 1 if the layout-1
    history table ``changes_by_record`` exists, else 0."""
    try:
        rows = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (keyspace,),
            timeout=timeout,
        )
        tables = {_column(row, "table_name") for row in rows}
        if "schema_info" in tables:
            row = session.execute(  # every column: actor_* are missing on older keyspaces
                f"SELECT * FROM {keyspace}.schema_info WHERE name = %s",
                (SCHEMA_INFO_NAME,),
                timeout=timeout,
            ).one()
            if row is not None and _column(row, "layout") is not None:
                return KeyspaceLayout(
                    version=int(_column(row, "layout")),
                    views=parse_views(_column(row, "views") or ""),
                    time_bucket=_column(row, "time_bucket") or "none",
                    timeline_bucket=_column(row, "timeline_bucket") or "hour",
                    timeline_shards=int(_column(row, "timeline_shards") or 1),
                    actor_bucket=_column(row, "actor_bucket", None) or "day",
                    actor_shards=int(_column(row, "actor_shards", None) or 1),
                )
    except Exception as exc:
        raise store_error(f"cannot read the layout of keyspace {keyspace!r}", exc) from exc
    return KeyspaceLayout(1 if "changes_by_record" in tables else 0)


def _column(row: Any, name: str, *default: Any) -> Any:
    """A column of a driver row, whichever row factory the session uses (``default``, when
    given, for a column the row does not have)."""
    if isinstance(row, dict):
        return row.get(name, *default) if default else row[name]
    return getattr(row, name, *default)


def ensure_info_columns(session: Any, keyspace: str, timeout: float = 60.0) -> None:
    """Add the actor bucketing columns to a ``schema_info`` made before they existed."""
    rows = session.execute(
        "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
        "AND table_name = 'schema_info'",
        (keyspace,),
        timeout=timeout,
    )
    present = {_column(row, "column_name") for row in rows}
    for name, cql_type in (("actor_bucket", "text"), ("actor_shards", "int")):
        if name not in present:
            session.execute(
                f"ALTER TABLE {keyspace}.schema_info ADD {name} {cql_type}", timeout=timeout
            )


def layout_problem(layout: KeyspaceLayout, keyspace: str) -> str | None:
    """Why this version cannot use a keyspace of ``layout`` (one line), or ``None``."""
    if layout.version == LAYOUT_VERSION:
        return None
    if layout.version == 0:
        return (
            f"keyspace {keyspace!r} has no audit tables: run "
            f"`sqla-audit schema apply --keyspace {keyspace}`"
        )
    if layout.version < LAYOUT_VERSION:
        return (
            f"the keyspace {keyspace!r} holds audit layout {layout.version}; run "
            f"`sqla-audit schema migrate --keyspace {keyspace}` (docs/cql.md, Migrating)"
        )
    return (
        f"the keyspace {keyspace!r} holds audit layout {layout.version}, newer than this "
        f"sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
    )


def apply_schema(config: CassandraConfig) -> list[str]:
    """Create the keyspace and tables if they do not exist and record the layout, views and
    buckets in ``schema_info``; returns the statements run.

    A keyspace of another layout is refused (:class:`ConfigurationError` naming what to
    run): a layout-1 keyspace needs ``schema migrate``, which copies its rows.
    """
    schema = CassandraSchema(config.schema)
    statements = schema.statements()
    cluster = connect(config)
    try:
        session = cluster.connect()
        layout = read_layout(session, config.schema.keyspace)
        if layout.version not in {0, LAYOUT_VERSION}:
            raise ConfigurationError(layout_problem(layout, config.schema.keyspace))
        if layout.version == LAYOUT_VERSION:
            recorded_actor = (layout.actor_bucket, layout.actor_shards)
            wanted_actor = (config.schema.actor_bucket, config.schema.actor_shards)
            if recorded_actor != wanted_actor:
                raise ConfigurationError(
                    f"keyspace {config.schema.keyspace!r} keeps the by-actor view in "
                    f"{recorded_actor[0]} buckets x {recorded_actor[1]} shard(s): pass the same "
                    "--actor-bucket/--actor-shards, or rebuild the view into a new table with "
                    f"`sqla-audit schema migrate --keyspace {config.schema.keyspace} "
                    f"--actor-bucket {wanted_actor[0]} --actor-shards {wanted_actor[1]}` "
                    "(docs/cql.md, Partition sizes)"
                )
            recorded = (layout.time_bucket, layout.timeline_bucket, layout.timeline_shards)
            wanted = (
                config.schema.time_bucket,
                config.schema.timeline_bucket,
                config.schema.timeline_shards,
            )
            if recorded != wanted:
                raise ConfigurationError(
                    f"keyspace {config.schema.keyspace!r} was created with time bucket "
                    f"{recorded[0]}, timeline bucket {recorded[1]} and {recorded[2]} timeline "
                    "shard(s); they cannot be changed on an existing keyspace (pass the same "
                    "--time-bucket/--timeline-bucket/--timeline-shards)"
                )
        for statement in statements:
            if statement is statements[-1] and not schema.actor.legacy:
                ensure_info_columns(session, config.schema.keyspace)  # an older schema_info
            session.execute(statement, timeout=max(config.request_timeout, 60.0))
        if not cluster.control_connection.wait_for_schema_agreement():
            raise StoreError("Cassandra nodes did not agree on the schema in time")
    except (StoreError, ConfigurationError):
        raise
    except Exception as exc:
        raise store_error("applying the schema failed", exc) from exc
    finally:
        cluster.shutdown()
    return statements


__all__ = [
    "KeyspaceLayout",
    "apply_schema",
    "ensure_info_columns",
    "layout_problem",
    "read_layout",
]
