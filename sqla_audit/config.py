"""What to audit and how: one frozen, validated configuration, and the per-model plans.

:class:`AuditConfig` is built once when auditing is installed; every mistake in it (an
empty service name, a table both included and excluded, an unknown policy) is reported
right there as a :class:`~sqla_audit.errors.ConfigurationError`, not on the first flush.

Per-model options live on the mapped class, as ``__audit__``::

    class User(Base):
        __audit__ = {"exclude": ["last_seen"], "mask": ["password_hash"]}

    class Session(Base):
        __audit__ = {"enabled": False}

Names in ``exclude`` and ``mask`` may be attribute names or column names. They are checked
against the mapper's columns when the model is first planned (at install time for the
models passed as ``models=``, else on the first flush that touches the model) and unknown
names raise :class:`ConfigurationError`.

Inheritance. Options are merged along the MRO: ``exclude`` and ``mask`` accumulate (a
subclass's ``__audit__`` adds to its ancestors' lists and can never drop a name from them),
and ``enabled`` is taken from the nearest class that sets it. A mask or exclusion holds for
the *table column*: every mapper that writes the column -- the root and its single-table and
joined subclasses -- masks or excludes it, whichever class declared it. A column masked by one
class and excluded by another of the same hierarchy is refused with
:class:`ConfigurationError`. Under concrete-table inheritance each class writes its own table
(and events name it); the names inherited along the MRO apply to its own columns.

A :class:`ModelPlan` is the compiled form of one mapper: which table its events name, which
columns are audited under which *column* names (events use column names, not attribute
names), which are masked, which form the primary key. Plans are computed once per mapper
and cached by the installation.

Column naming. An event's keys are the database column names (``Column.name``). For
joined-table inheritance the columns of every table of the class are merged; a column that
merely repeats the key of a parent table (``manager.id`` -> ``employee.id``) is folded into
the parent's column, and in the rare case where two different attributes map to columns of
the same name in different tables, the one outside the base table is qualified as
``table.column``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, get_args

import sqlalchemy as sa
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty
from sqlalchemy.types import TypeDecorator

from sqla_audit.errors import ConfigurationError
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.signing import EventSigner

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sqla_audit.changes import RowChange

UnknownTypes: TypeAlias = Literal["repr", "error"]

#: ``metadata_hook(session, change) -> extra metadata`` -- called for every captured change.
MetadataHook: TypeAlias = "Callable[[Session, RowChange], Mapping[str, Any] | None]"

#: Name of the per-model options attribute.
AUDIT_ATTRIBUTE: Final = "__audit__"

_AUDIT_KEYS: Final = frozenset({"enabled", "exclude", "mask"})
_MAX_SERVICE_LENGTH: Final = 200

#: Default of :attr:`AuditConfig.max_bulk_rows`: rows described one by one per bulk statement.
DEFAULT_MAX_BULK_ROWS: Final = 10_000

#: Python types the value codec restores exactly (see :mod:`sqla_audit.serialization`).
SUPPORTED_PYTHON_TYPES: Final[tuple[type, ...]] = (
    str,
    int,
    float,
    bool,
    decimal.Decimal,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    bytes,
    enum.Enum,
    list,
    tuple,
    dict,
    set,
    frozenset,
)


def _table_names(value: Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigurationError(f"{what} must be a collection of table names, not a string")
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"{what} must hold non-empty table names, got {name!r}")
    return names


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Everything that decides what is captured and how, fixed at install time.

    * ``service`` -- names the producing service in every event (required).
    * ``include_tables`` -- when given, only these tables are audited;
      ``exclude_tables`` -- never audited. Names are matched against both the plain and
      the schema-qualified table name.
    * ``unknown_types`` -- policy for column types the codec cannot restore exactly:
      ``"repr"`` (default) sends their ``repr()`` tagged ``repr`` (readable, not
      restorable); ``"error"`` rejects such columns when their model is planned, and a
      value that still cannot be encoded at run time is a capture error.
    * ``metadata_hook`` -- ``(session, change) -> mapping`` merged into each event's
      ``metadata`` (after the context metadata).
    * ``on_error`` -- called with the error and the events concerned when capture or
      delivery fails after the application's commit (it is also logged).
    * ``max_bulk_rows`` -- most rows one bulk statement (``session.execute(update(...))``)
      is itemized for; a statement affecting more is logged as an error and reported by one
      marker event instead (see :mod:`sqla_audit.bulk`). ``None`` removes the cap.
    * ``signing`` -- an :class:`~sqla_audit.signing.EventSigner`: every event is signed
      (see :mod:`sqla_audit.signing`); ``None`` (default) sends unsigned events.
    """

    service: str
    include_tables: frozenset[str] | None = None
    exclude_tables: frozenset[str] = field(default_factory=frozenset)
    unknown_types: UnknownTypes = "repr"
    metadata_hook: MetadataHook | None = None
    on_error: ErrorHook | None = None
    max_bulk_rows: int | None = DEFAULT_MAX_BULK_ROWS
    signing: EventSigner | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.service, str) or not self.service.strip():
            raise ConfigurationError("service must be a non-empty string naming this service")
        if len(self.service) > _MAX_SERVICE_LENGTH or not self.service.isprintable():
            raise ConfigurationError(
                f"service must be at most {_MAX_SERVICE_LENGTH} printable characters"
            )
        include = _table_names(self.include_tables, "include_tables")
        exclude = _table_names(self.exclude_tables, "exclude_tables") or frozenset()
        if include is not None and include & exclude:
            both = ", ".join(sorted(include & exclude))
            raise ConfigurationError(f"tables both included and excluded: {both}")
        object.__setattr__(self, "include_tables", include)
        object.__setattr__(self, "exclude_tables", exclude)
        if self.unknown_types not in get_args(UnknownTypes):
            raise ConfigurationError(
                f"unknown_types must be 'repr' or 'error', not {self.unknown_types!r}"
            )
        for name in ("metadata_hook", "on_error"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name} must be callable, got {hook!r}")
        cap = self.max_bulk_rows
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ConfigurationError(
                f"max_bulk_rows must be a positive integer or None (no cap), not {cap!r}"
            )
        if self.signing is not None and not isinstance(self.signing, EventSigner):
            raise ConfigurationError(
                f"signing must be an EventSigner or None, got {type(self.signing).__name__}"
            )

    def table_enabled(self, table: sa.Table) -> bool:
        """True when the include/exclude lists let this table be audited."""
        names = {table.name, table.fullname}
        if names & self.exclude_tables:
            return False
        return self.include_tables is None or bool(names & self.include_tables)


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One audited column of a model: its attribute key and its name in events."""

    key: str
    name: str
    column: sa.Column[Any]
    masked: bool = False

    @property
    def server_updates(self) -> bool:
        """True when the database or an ``onupdate`` may change it during an UPDATE."""
        return self.column.onupdate is not None or self.column.server_onupdate is not None


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """The compiled audit plan of one mapper (``enabled=False``: not audited)."""

    mapper: Mapper[Any]
    enabled: bool
    table: str = ""
    columns: tuple[ColumnSpec, ...] = ()
    primary_key: tuple[ColumnSpec, ...] = ()
    version_key: str | None = None
    # Derived once from ``columns`` and ``primary_key`` for the per-row code of capture:
    #: ``(attribute key, column name, masked, spec)`` per audited column, in plan order.
    column_rows: tuple[tuple[str, str, bool, ColumnSpec], ...] = field(
        init=False, compare=False, repr=False
    )
    column_keys: frozenset[str] = field(init=False, compare=False, repr=False)
    pk_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)
    pk_names: tuple[str, ...] = field(init=False, compare=False, repr=False)
    masked_names: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        derived = {
            "column_rows": tuple((c.key, c.name, c.masked, c) for c in self.columns),
            "column_keys": frozenset(c.key for c in self.columns),
            "pk_keys": tuple(c.key for c in self.primary_key),
            "pk_names": tuple(c.name for c in self.primary_key),
            "masked_names": tuple(c.name for c in self.columns if c.masked),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class AssociationPlan:
    """How rows of a many-to-many ``secondary`` table are built from the two sides."""

    table: str
    columns: tuple[sa.Column[Any], ...]
    key_columns: tuple[sa.Column[Any], ...]
    #: (column of the parent mapper, column of the secondary table)
    parent_pairs: tuple[tuple[sa.ColumnElement[Any], sa.Column[Any]], ...]
    #: (column of the child mapper, column of the secondary table)
    child_pairs: tuple[tuple[sa.ColumnElement[Any], sa.Column[Any]], ...]


def _validated_options(klass: type, options: Any) -> Mapping[str, Any]:
    """``klass``'s own ``__audit__`` after checking its shape."""
    where = f"{klass.__qualname__}.{AUDIT_ATTRIBUTE}"
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{where} must be a dict, got {type(options).__name__}")
    unknown = set(options) - _AUDIT_KEYS
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown option(s) {sorted(unknown)}; allowed: {sorted(_AUDIT_KEYS)}"
        )
    if "enabled" in options and not isinstance(options["enabled"], bool):
        raise ConfigurationError(f"{where}['enabled'] must be True or False")
    for key in ("exclude", "mask"):
        names = options.get(key, ())
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise ConfigurationError(f"{where}[{key!r}] must be a list of column names")
        if not all(isinstance(name, str) for name in names):
            raise ConfigurationError(f"{where}[{key!r}] must hold strings")
    return options


@dataclass(frozen=True, slots=True)
class _Declared:
    """The ``__audit__`` options of a class merged along its MRO.

    ``enabled`` is the nearest declaration's; ``exclude`` and ``mask`` accumulate, as
    ``(name, declaring class)`` pairs, so a subclass can add to them but never drop one.
    """

    enabled: bool
    exclude: tuple[tuple[str, type], ...]
    mask: tuple[tuple[str, type], ...]


def _declared(klass: type) -> _Declared:
    enabled = True
    exclude: list[tuple[str, type]] = []
    mask: list[tuple[str, type]] = []
    for ancestor in reversed(klass.__mro__):
        options = vars(ancestor).get(AUDIT_ATTRIBUTE)
        if options is None:
            continue
        options = _validated_options(ancestor, options)
        enabled = options.get("enabled", enabled)
        exclude.extend((name, ancestor) for name in options.get("exclude", ()))
        mask.extend((name, ancestor) for name in options.get("mask", ()))
    return _Declared(enabled=enabled, exclude=tuple(exclude), mask=tuple(mask))


def _entity_table(mapper: Mapper[Any]) -> sa.Table:
    """The table an event of ``mapper`` names: the root table of its inheritance, except
    under concrete-table inheritance, where each concrete class writes its own table."""
    root = mapper
    while root.inherits is not None and not root.concrete:
        root = root.inherits
    local = root.local_table
    if isinstance(local, sa.Table):
        return local
    for table in mapper.tables:
        if isinstance(table, sa.Table):
            return table
    raise ConfigurationError(f"{mapper.class_.__qualname__} is not mapped to a table")


def _type_supported(column: sa.Column[Any]) -> bool:
    col_type = column.type
    inner = col_type.impl_instance if isinstance(col_type, TypeDecorator) else col_type
    if isinstance(col_type, sa.JSON) or (
        isinstance(inner, sa.JSON) and not isinstance(col_type, sa.PickleType)
    ):
        return True
    try:
        python_type = col_type.python_type
    except NotImplementedError:
        return False
    return python_type is not object and issubclass(python_type, SUPPORTED_PYTHON_TYPES)


def _column_specs(mapper: Mapper[Any]) -> list[tuple[ColumnProperty[Any], sa.Column[Any]]]:
    """Each stored column attribute with the column that names it, base table first.

    A property may map several columns (joined inheritance repeats the key in each table);
    the one in the base-most table names it.
    """
    table_order = {table: index for index, table in enumerate(mapper.tables)}
    out: list[tuple[ColumnProperty[Any], sa.Column[Any]]] = []
    for prop in mapper.column_attrs:
        columns = [
            col for col in prop.columns if isinstance(col, sa.Column) and col.table in table_order
        ]
        if not columns:
            continue  # a read-only SQL expression, not a stored column
        columns.sort(key=lambda col: table_order[col.table])
        out.append((prop, columns[0]))
    out.sort(key=lambda pair: table_order[pair[1].table])
    return out


def _naming(
    mapper: Mapper[Any],
) -> tuple[list[tuple[ColumnProperty[Any], sa.Column[Any]]], dict[str, str], dict[str, str]]:
    """The mapper's stored columns, the event name of each attribute, and every name
    ``__audit__`` may use for an attribute (attribute key, event name, column names)."""
    pairs = _column_specs(mapper)
    naming: dict[str, str] = {}
    used: set[str] = set()
    for prop, column in pairs:
        name = column.name
        if name in used:
            name = f"{column.table.name}.{column.name}"
        used.add(name)
        naming[prop.key] = name
    by_any_name: dict[str, str] = {}
    for prop, _column in pairs:
        by_any_name[prop.key] = prop.key
        by_any_name.setdefault(naming[prop.key], prop.key)
        for col in prop.columns:
            if isinstance(col, sa.Column):
                by_any_name.setdefault(col.name, prop.key)
    return pairs, naming, by_any_name


def protected_columns(
    mapper: Mapper[Any],
) -> tuple[dict[sa.Column[Any], type], dict[sa.Column[Any], type]]:
    """Every table column masked, and every one excluded, anywhere in ``mapper``'s hierarchy.

    Each maps to the class whose ``__audit__`` declared it. Options accumulate along each
    class's MRO, and a declaration holds for the *table column*: every mapper of the
    inheritance hierarchy that writes that column (the root, single-table and joined
    subclasses) masks or excludes it too. A column both masked and excluded somewhere in
    the hierarchy is refused, and so is a name that matches no column of the mapper whose
    options carry it (a name inherited from a mapped ancestor that a concrete subclass
    lacks is the ancestor's, already checked there).
    """
    members = list(mapper.base_mapper.self_and_descendants)
    mapped = {member.class_ for member in members}
    masked: dict[sa.Column[Any], type] = {}
    excluded: dict[sa.Column[Any], type] = {}
    for member in members:
        declared = _declared(member.class_)
        if not declared.exclude and not declared.mask:
            continue
        _pairs, naming, by_any_name = _naming(member)
        for option, names, found in (
            ("exclude", declared.exclude, excluded),
            ("mask", declared.mask, masked),
        ):
            for name, declarer in names:
                key = by_any_name.get(name)
                if key is None:
                    if declarer is member.class_ or declarer not in mapped:
                        of = (
                            "" if declarer is member.class_ else f" of {member.class_.__qualname__}"
                        )
                        known = ", ".join(sorted(naming.values()))
                        raise ConfigurationError(
                            f"{declarer.__qualname__}.{AUDIT_ATTRIBUTE}[{option!r}] names "
                            f"unknown column {name!r}{of}; columns: {known}"
                        )
                    continue
                for col in member.get_property(key).columns:
                    if isinstance(col, sa.Column):
                        found.setdefault(col, declarer)
    for col in masked.keys() & excluded.keys():
        mask_by, exclude_by = masked[col].__qualname__, excluded[col].__qualname__
        if mask_by == exclude_by:
            raise ConfigurationError(
                f"{mask_by}.{AUDIT_ATTRIBUTE}: [{col.name!r}] both excluded and masked"
            )
        raise ConfigurationError(
            f"column {col.table.name}.{col.name} is masked by {mask_by}.{AUDIT_ATTRIBUTE} and "
            f"excluded by {exclude_by}.{AUDIT_ATTRIBUTE}; both classes write that column, and "
            "a column is either masked or excluded for every class that writes it: declare "
            "one of them (a subclass cannot relax or change its ancestors' choice)"
        )
    return masked, excluded


def plan_model(mapper: Mapper[Any], config: AuditConfig) -> ModelPlan:
    """Compile and validate the audit plan of ``mapper``.

    Raises :class:`ConfigurationError` for unknown names in ``__audit__``, an excluded or
    masked primary-key column, or (with ``unknown_types="error"``) a column whose type the
    codec cannot restore.
    """
    where = mapper.class_.__qualname__
    table = _entity_table(mapper)
    if not _declared(mapper.class_).enabled or not config.table_enabled(table):
        return ModelPlan(mapper=mapper, enabled=False)

    pairs, naming, _by_any_name = _naming(mapper)
    masked_columns, excluded_columns = protected_columns(mapper)
    excluded: set[str] = set()
    masked: set[str] = set()
    for prop, _column in pairs:
        stored = [col for col in prop.columns if isinstance(col, sa.Column)]
        if any(col in excluded_columns for col in stored):
            excluded.add(prop.key)
        elif any(col in masked_columns for col in stored):
            masked.add(prop.key)

    pk_keys = [mapper.get_property_by_column(col).key for col in mapper.primary_key]
    for key in pk_keys:
        if key in excluded:
            raise ConfigurationError(f"{where}: primary-key column {key!r} cannot be excluded")
        if key in masked:
            raise ConfigurationError(
                f"{where}: primary-key column {key!r} cannot be masked (it forms the record id)"
            )

    specs: list[ColumnSpec] = []
    for prop, column in pairs:
        if prop.key in excluded:
            continue
        if (
            config.unknown_types == "error"
            and prop.key not in masked
            and not _type_supported(column)
        ):
            raise ConfigurationError(
                f"{where}.{prop.key}: column type {column.type!r} cannot be serialized "
                "exactly; exclude or mask the column, or use unknown_types='repr'"
            )
        specs.append(
            ColumnSpec(
                key=prop.key, name=naming[prop.key], column=column, masked=prop.key in masked
            )
        )
    by_key = {spec.key: spec for spec in specs}
    version_key: str | None = None
    if mapper.version_id_col is not None:
        version_prop = mapper.get_property_by_column(mapper.version_id_col)
        version_key = version_prop.key
    return ModelPlan(
        mapper=mapper,
        enabled=True,
        table=table.fullname,
        columns=tuple(specs),
        primary_key=tuple(by_key[key] for key in pk_keys),
        version_key=version_key,
    )


def plan_association(
    prop: RelationshipProperty[Any], config: AuditConfig
) -> AssociationPlan | None:
    """The plan of a many-to-many relationship's ``secondary`` table, or ``None``."""
    secondary = prop.secondary
    if secondary is None or prop.viewonly or not isinstance(secondary, sa.Table):
        return None
    if not config.table_enabled(secondary):
        return None
    parent_pairs = tuple(
        (left, right) for left, right in prop.synchronize_pairs if isinstance(right, sa.Column)
    )
    child_pairs = tuple(
        (left, right)
        for left, right in (prop.secondary_synchronize_pairs or ())
        if isinstance(right, sa.Column)
    )
    known = {right for _left, right in parent_pairs + child_pairs}
    columns = tuple(col for col in secondary.columns if col in known)
    key_columns: Sequence[sa.Column[Any]] = [
        col for col in secondary.primary_key.columns if col in known
    ]
    if not key_columns or len(key_columns) != len(secondary.primary_key.columns):
        key_columns = columns
    return AssociationPlan(
        table=secondary.fullname,
        columns=columns,
        key_columns=tuple(key_columns),
        parent_pairs=parent_pairs,
        child_pairs=child_pairs,
    )


__all__ = [
    "AUDIT_ATTRIBUTE",
    "DEFAULT_MAX_BULK_ROWS",
    "SUPPORTED_PYTHON_TYPES",
    "AssociationPlan",
    "AuditConfig",
    "ColumnSpec",
    "MetadataHook",
    "ModelPlan",
    "UnknownTypes",
    "plan_association",
    "plan_model",
]
