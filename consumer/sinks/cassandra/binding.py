"""Binding a record's statements with its shared values serialized once.

Every table that holds a whole record binds the same values (the record's columns, then a
key or two of its own: the actor's day, the trace id, the timeline's bucket and shard). The
driver's ``PreparedStatement.bind`` serializes every value again for every statement --
about a hundred serializations per record with every view, the largest part of the
consumer's own CPU per record after decoding. :class:`Binder` serializes the shared values
once per record with the column types the driver reports for the prepared statements, and
gives each statement a ``BoundStatement`` holding those bytes plus its own extra values:
the bytes sent are exactly the ones ``bind`` would produce (the column types of the shared
columns are checked to be the same in every statement when the statements are prepared;
a statement that differs is bound alone).

A statement that is not a driver ``PreparedStatement`` (a test double) is bound with its
own ``bind``. Errors are the driver's: a value its type cannot serialize raises
``TypeError`` (naming the column, as ``bind`` does), an unset value in a partition key
``ValueError``, and the routing key is computed at once, so a key over 64 KiB fails here
(``struct.error``); the caller turns any of them into a refusal of that one record.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import is_
from typing import Any


class _Plan:
    """How to bind one prepared statement: its serializers and partition key positions."""

    __slots__ = ("columns", "key_positions", "prepared", "protocol", "serializers", "shared")

    def __init__(self, prepared: Any, shared: int) -> None:
        self.prepared = prepared
        self.protocol = prepared.protocol_version
        self.columns = tuple(prepared.column_metadata)
        self.serializers = tuple(column.type.serialize for column in self.columns)
        self.key_positions = frozenset(prepared.routing_key_indexes or ())
        #: how many leading columns take the record's shared values (0: bound alone)
        self.shared = shared


def _is_driver_statement(statement: Any) -> bool:
    from cassandra.query import PreparedStatement  # noqa: PLC0415 - heavy, optional dependency

    return (
        isinstance(statement, PreparedStatement)
        and bool(statement.column_metadata)
        and statement.column_encryption_policy is None
    )


def _type_names(statement: Any, count: int) -> tuple[str, ...]:
    return tuple(
        column.type.cql_parameterized_type() for column in statement.column_metadata[:count]
    )


class Binder:
    """Binds the statements of one record, serializing the shared values once.

    ``shared_statements`` take the record's ``shared_names`` values as their leading
    columns; ``statements`` are every statement the store binds (the shared ones included).
    """

    def __init__(
        self,
        shared_names: Sequence[str],
        shared_statements: Sequence[Any],
        statements: Sequence[Any],
        unset: Any,
    ) -> None:
        from cassandra.query import BoundStatement  # noqa: PLC0415

        self._bound_type = BoundStatement
        self._unset = unset
        count = len(shared_names)
        driver = [s for s in statements if s is not None and _is_driver_statement(s)]
        reference = next((s for s in shared_statements if s in driver), None)
        names = _type_names(reference, count) if reference is not None else ()
        self._plans: dict[int, _Plan] = {}
        for statement in driver:
            columns = [column.name for column in statement.column_metadata[:count]]
            same = (
                statement in shared_statements
                and columns == list(shared_names)
                and _type_names(statement, count) == names
            )
            self._plans[id(statement)] = _Plan(statement, count if same else 0)

    def bind(self, statement: Any, values: Sequence[Any], memo: list[Any]) -> Any:
        """A bound statement of ``statement`` with ``values`` (all its values).

        ``memo`` is a list the caller keeps for a run of statements (empty at first): it
        holds the last shared values serialized, and a statement whose leading values are
        those very objects (the same record) reuses their bytes.
        """
        plan = self._plans.get(id(statement))
        if plan is None:
            return statement.bind(values)
        columns = len(plan.columns)
        if len(values) != columns:
            raise ValueError(f"{len(values)} values for {columns} columns")
        count = plan.shared
        if count:
            prefix = values[:count]
            if not (memo and all(map(is_, prefix, memo[0]))):
                memo[:] = (prefix, self._serialize(plan, prefix, 0))
            serialized = memo[1]
            if count < columns:
                serialized = [*serialized, *self._serialize(plan, values[count:], count)]
        else:
            serialized = self._serialize(plan, values, 0)
        bound = self._bound_type(plan.prepared)
        bound.raw_values = values
        bound.values = serialized
        _ = bound.routing_key  # computed now: a key component over 64 KiB fails here
        return bound

    def _serialize(self, plan: _Plan, values: Sequence[Any], start: int) -> list[Any]:
        """``values`` serialized for the columns from ``start`` on (``bind``'s rules: None
        stays None, unset stays unset, but never in the partition key)."""
        unset = self._unset
        protocol = plan.protocol
        try:
            out = [
                value if value is None or value is unset else serialize(value, protocol)
                for serialize, value in zip(plan.serializers[start:], values, strict=False)
            ]
        except (TypeError, struct.error):
            self._explain(plan, values, start)
            raise
        if unset in out:
            for position, value in enumerate(out, start):
                if value is unset and position in plan.key_positions:
                    raise ValueError(
                        "Cannot bind UNSET_VALUE as a part of the routing key "
                        f"'{plan.columns[position].name}'"
                    )
        return out

    def _explain(self, plan: _Plan, values: Sequence[Any], start: int) -> None:
        """Raise the driver's ``TypeError`` naming the column whose value failed."""
        for position, value in enumerate(values, start):
            if value is None or value is self._unset:
                continue
            try:
                plan.serializers[position](value, plan.protocol)
            except (TypeError, struct.error) as exc:
                column = plan.columns[position]
                raise TypeError(
                    f'Received an argument of invalid type for column "{column.name}". '
                    f"Expected: {column.type}, Got: {type(value)}; ({exc})"
                ) from exc


__all__ = ["Binder"]
