"""Model-based capture test: random ORM and bulk work, then replay the events and compare.

A hypothesis ``RuleBasedStateMachine`` drives one audited session through random sequences of
ORM inserts, updates, deletes and primary-key changes, one-to-many and many-to-many changes,
bulk ``update()``/``delete()``/``insert()`` (every ``synchronize_session``), nested savepoints
released or rolled back, and transactions committed or rolled back, each step under one of
several actors; loaded objects stay referenced (stale after unsynchronized bulk statements),
and in the kept-session mode they outlive commits (``expire_on_commit=False``). The
invariants, checked after every commit and rollback:

* replaying every published event from an empty database (insert/update/delete of each
  event's images by record id, following ``previous_record_id``) gives exactly the committed
  contents of every table, every column, masked columns as masked;
* each event's ``before`` image is the replayed row it changes (so no stale value is ever
  reported as the state of the row);
* no marker is published (no statement the machine runs is documented to produce one);
* each event's actor is the actor of the last step that changed its row.

The machine is database-agnostic: :func:`model_test` binds it to an engine. The example budget
is :func:`example_budget` (``SQLA_AUDIT_MODEL_EXAMPLES``).
"""

from __future__ import annotations

import collections
import decimal
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    SessionTransaction,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.orm import exc as orm_exc

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent, make_record_id
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.serialization import MASKED, decode_value

#: Environment variable: number of examples per database (a larger run than CI's).
EXAMPLES_ENV = "SQLA_AUDIT_MODEL_EXAMPLES"

#: CI budget (examples per session mode), chosen to keep SQLite under 30 s and each
#: server database under 60 s on a small 2-CPU machine.
CI_EXAMPLES = {"sqlite": 80, "postgresql": 90, "mysql": 90}
STEPS = 25

#: What the runs did (commits, rollbacks, events by table and operation, expected failures).
STATS: collections.Counter[str] = collections.Counter()

ACTORS = ("alice", "bob", None)
SYNCHRONIZE = ("auto", "evaluate", "fetch", False)


class ModelBase(DeclarativeBase):
    pass


owner_tags = sa.Table(
    "model_owner_tags",
    ModelBase.metadata,
    sa.Column("owner_id", sa.ForeignKey("model_owners.id"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("model_tags.id"), primary_key=True),
)


class Owner(ModelBase):
    """One-to-many to items, many-to-many to tags."""

    __tablename__ = "model_owners"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(20))
    items: Mapped[list[Item]] = relationship(back_populates="owner")
    tags: Mapped[list[Tag]] = relationship(secondary=owner_tags, back_populates="owners")


class Tag(ModelBase):
    __tablename__ = "model_tags"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    label: Mapped[str] = mapped_column(sa.String(20))
    owners: Mapped[list[Owner]] = relationship(secondary=owner_tags, back_populates="tags")


class Item(ModelBase):
    """A changeable primary key, a masked column, a Numeric and a foreign key."""

    __tablename__ = "model_items"
    __audit__ = {"mask": ["secret"]}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(20))
    price: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(10, 2))
    secret: Mapped[str | None] = mapped_column(sa.String(20))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_owners.id"))
    owner: Mapped[Owner | None] = relationship(back_populates="items")


TABLES: tuple[sa.Table, ...] = tuple(ModelBase.metadata.sorted_tables)
MASKED_COLUMNS = {"model_items": frozenset({"secret"})}

Row = dict[str, Any]
Contents = dict[str, dict[str, Row]]

ids = st.integers(min_value=0, max_value=12)
names = st.sampled_from(["a", "b", "c", "d"])
prices = st.integers(min_value=0, max_value=50).map(lambda n: decimal.Decimal(n) / 2)
actors = st.sampled_from(ACTORS)
synchronize = st.sampled_from(SYNCHRONIZE)


def example_budget(dialect: str) -> int:
    """Examples per run: ``SQLA_AUDIT_MODEL_EXAMPLES`` when set, else the CI budget."""
    value = os.environ.get(EXAMPLES_ENV)
    return int(value) if value else CI_EXAMPLES.get(dialect, 25)


def model_settings(dialect: str) -> settings:
    """Fixed, derandomized examples in CI; random ones when a larger budget is asked for."""
    exploring = bool(os.environ.get(EXAMPLES_ENV))
    return settings(
        max_examples=example_budget(dialect),
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not exploring,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- reading and replay


def record_id_of(table: sa.Table, row: Mapping[str, Any]) -> str:
    """The record id sqla-audit gives ``row`` (key columns, or all columns without a key)."""
    columns = list(table.primary_key.columns) or list(table.columns)
    return make_record_id([row[column.name] for column in columns])


def read_contents(connection: Connection, *, mask: bool = True) -> Contents:
    """Every row of every model table, by table and record id (masked columns as masked)."""
    contents: Contents = {}
    for table in TABLES:
        rows: dict[str, Row] = {}
        masked = MASKED_COLUMNS.get(table.name, frozenset()) if mask else frozenset()
        for found in connection.execute(select(table)).mappings():
            row = {name: (MASKED if name in masked else value) for name, value in found.items()}
            rows[record_id_of(table, found)] = row
        contents[table.name] = rows
    return contents


def _decoded(image: Mapping[str, Any] | None) -> Row:
    return {name: decode_value(value) for name, value in (image or {}).items()}


def _same(a: Any, b: Any) -> bool:
    if a is MASKED or b is MASKED:
        return a is b
    return bool(a == b)


def _check_before(event: ChangeEvent, row: Row) -> None:
    before = _decoded(event.before)
    wrong = {n: (v, row.get(n)) for n, v in before.items() if not _same(v, row.get(n))}
    assert not wrong, (
        f"{event.operation.value} of {event.table} {event.record_id}: before image differs "
        f"from the replayed row (column: (before, replayed)): {wrong}"
    )


def replay(events: list[ChangeEvent]) -> Contents:
    """The table contents the events describe, starting from empty tables."""
    contents: Contents = {table.name: {} for table in TABLES}
    for event in events:
        assert not event.is_marker, f"unexpected marker: {dict(event.metadata)}"
        rows = contents[event.table]
        operation = event.operation.value
        if operation == "insert":
            assert event.record_id not in rows, (
                f"insert of existing {event.table} {event.record_id}"
            )
            rows[event.record_id] = _decoded(event.after)
            continue
        old_id = event.previous_record_id or event.record_id
        assert old_id in rows, f"{operation} of missing {event.table} {old_id}"
        _check_before(event, rows[old_id])
        if operation == "delete":
            del rows[old_id]
            continue
        row = rows.pop(old_id)
        assert event.record_id not in rows, f"move onto existing {event.table} {event.record_id}"
        row.update(_decoded(event.after))
        rows[event.record_id] = row
    return contents


def assert_replay_matches(events: list[ChangeEvent], connection: Connection) -> None:
    """Replaying ``events`` gives exactly the committed contents read through ``connection``."""
    replayed, stored = replay(events), read_contents(connection)
    for table in TABLES:
        got, want = replayed[table.name], stored[table.name]
        assert set(got) == set(want), (
            f"{table.name}: replayed record ids {sorted(got)} != stored {sorted(want)}"
        )
        for record_id, row in want.items():
            differ = {n: (got[record_id].get(n), v) for n, v in row.items()}
            differ = {n: pair for n, pair in differ.items() if not _same(*pair)}
            assert not differ, (
                f"{table.name} {record_id}: replayed != stored (column: (replayed, stored)): "
                f"{differ}"
            )


def changed_rows(before: Contents, after: Contents) -> set[tuple[str, str]]:
    """``(table, record_id)`` of every row that differs between two readings."""
    changed: set[tuple[str, str]] = set()
    for table, rows in after.items():
        old = before[table]
        for record_id in old.keys() | rows.keys():
            if old.get(record_id) != rows.get(record_id):
                changed.add((table, record_id))
    return changed


# --------------------------------------------------------------------------- the machine


class _Lineage:
    """Which actor last changed each row of the open transaction, following key changes.

    Each row the transaction touches gets a token ``(table, origin key, serial)``; ``current``
    maps a key to the token of the row there now. A key change moves the token; a deleted row's
    token is *gone* (a row inserted later at its key gets a new token). An insert or update
    event names the row's current key; a delete event names the key the row had when the
    transaction first touched it (its origin).
    """

    def __init__(self) -> None:
        self.current: dict[tuple[str, str], tuple[str, str, int]] = {}
        self.gone: list[tuple[str, str, int]] = []
        self.actor: dict[tuple[str, str, int], str | None] = {}
        self.vacated: set[tuple[str, str]] = set()

    def copy(self) -> _Lineage:
        twin = _Lineage()
        twin.current, twin.gone, twin.actor = dict(self.current), list(self.gone), dict(self.actor)
        return twin

    def move(self, table: str, old: str, new: str) -> None:
        token = self.current.pop((table, old), None) or (table, old, len(self.actor))
        self.current[(table, new)] = token
        self.vacated.add((table, old))

    def touch(self, key: tuple[str, str], actor: str | None, *, present: bool) -> None:
        token = self.current.get(key)
        if token is None:
            if key in self.vacated:
                self.vacated.discard(key)
                return  # the key a row moved away from in this step
            token = self.current[key] = (*key, len(self.actor))
        self.actor[token] = actor
        if not present:
            del self.current[key]
            self.gone.append(token)

    def actor_of(self, event: ChangeEvent) -> str | None:
        key = (event.table, event.record_id)
        if event.operation.value == "delete":
            token = next((t for t in reversed(self.gone) if t[:2] == key), None)
        else:
            token = self.current.get(key)
        assert token is not None, f"event on {key}, which no step of the transaction changed"
        return self.actor[token]


#: Failures the machine's random work may legitimately meet: the transaction is rolled back.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.IntegrityError,
    orm_exc.FlushError,
    orm_exc.StaleDataError,
    orm_exc.ObjectDeletedError,
    sa.exc.SAWarning,
)


class CaptureModel(RuleBasedStateMachine):
    """Random audited work on one session; the invariants are in the module docstring."""

    maker: sessionmaker[Session]
    engine: Engine
    publisher: InMemoryPublisher
    #: one session for every transaction, ``expire_on_commit=False``: loaded objects (and
    #: their staleness after unsynchronized bulk statements) outlive commits
    reuse_session: bool = False

    def __init__(self) -> None:
        super().__init__()
        with self.engine.begin() as conn:
            for table in reversed(TABLES):
                conn.execute(table.delete())
        self.publisher.clear()
        with self.maker.begin() as session:  # audited: the replay starts from empty tables
            owners = [Owner(id=n, name=f"o{n}") for n in (1, 2, 3)]
            tags = [Tag(id=n, label=f"t{n}") for n in (1, 2, 3)]
            owners[0].tags = tags[:2]
            session.add_all([*owners, *tags])
            session.add_all(
                Item(id=n, name="i", price=decimal.Decimal(n), secret="s", owner=owners[n % 3])
                for n in range(1, 7)
            )
        self.committed = len(self.publisher.events)
        self.session: Session | None = None
        self.kept: Session | None = None
        #: objects the application keeps referenced (the identity map holds them weakly):
        #: they stay loaded, stale after a bulk statement that does not synchronize them
        self.held: list[Any] = []
        self.savepoints: list[tuple[SessionTransaction, _Lineage]] = []
        self.lineage = _Lineage()
        self.dialect = self.engine.dialect.name

    def teardown(self) -> None:
        for session in (self.session, self.kept):
            if session is not None:
                session.close()
        self.session = self.kept = None

    def _close(self, session: Session) -> None:
        """End with ``session``: close it, or keep it (and its loaded objects) for the next."""
        if self.reuse_session:
            self.kept = session
        else:
            session.close()

    # -- helpers ------------------------------------------------------------------------------

    def _open(self) -> Session:
        if self.session is None:
            self.session = self.kept or self.maker()
            self.session.begin()
            self.lineage = _Lineage()
            self.savepoints = []
            if not self.reuse_session:
                self.held = []
        return self.session

    def _ids(self, table: sa.Table) -> list[int]:
        session = self._open()
        return list(session.connection().scalars(select(table.c.id).order_by(table.c.id)))

    def _fresh(self, table: sa.Table, index: int) -> int:
        """A key not in ``table`` (now and then, index 0, an existing one: a conflict)."""
        taken = set(self._ids(table))
        free = [key for key in range(1, 25) if key not in taken]
        if index == 0 or not free:
            return 1
        return free[index % len(free)]

    def _pick(self, table: sa.Table, index: int) -> int | None:
        found = self._ids(table)
        return found[index % len(found)] if found else None

    @contextmanager
    def _step(
        self, actor: str | None, move: tuple[str, int, int] | None = None
    ) -> Iterator[Session]:
        """Run one step as ``actor``: flush inside it, note the rows it changed.

        ``move`` (table, old key, new key) names a primary-key change the step makes.
        """
        session = self._open()
        before = read_contents(session.connection(), mask=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", sa.exc.SAWarning)
                if actor is None:
                    yield session
                    session.flush()
                else:
                    with audit_context(actor=actor):
                        yield session
                        session.flush()
        except EXPECTED_ERRORS:
            self._abandon()
            return
        except sa.exc.InvalidRequestError as exc:
            if "evaluate" not in str(exc).lower():
                raise
            self._abandon()
            return
        after = read_contents(session.connection(), mask=False)
        if move is not None:
            table, old, new = move
            if (table, make_record_id([old])) in changed_rows(before, after):
                self.lineage.move(table, make_record_id([old]), make_record_id([new]))
        for key in changed_rows(before, after):
            self.lineage.touch(key, actor, present=key[1] in after[key[0]])

    def _abandon(self) -> None:
        """An expected failure: roll the whole transaction back (nothing may be published)."""
        assert self.session is not None
        STATS[f"abandoned on {type(sys.exc_info()[1]).__name__}"] += 1
        published = len(self.publisher.events)
        self.session.rollback()
        self._close(self.session)
        self.session = None
        self.savepoints = []
        assert len(self.publisher.events) == published

    # -- ORM work -----------------------------------------------------------------------------

    @rule(actor=actors, key=ids, name=names, price=prices, owner=st.integers(0, 20))
    def orm_insert_item(
        self, actor: str | None, key: int, name: str, price: decimal.Decimal, owner: int
    ) -> None:
        key = self._fresh(Item.__table__, key)
        owner_id = self._pick(Owner.__table__, owner) if owner % 3 else None
        with self._step(actor) as session:
            session.add(Item(id=key, name=name, price=price, secret=name * 2, owner_id=owner_id))

    @rule(actor=actors, key=ids, name=names)
    def orm_insert_owner(self, actor: str | None, key: int, name: str) -> None:
        key = self._fresh(Owner.__table__, key)
        with self._step(actor) as session:
            session.add(Owner(id=key, name=name))

    @rule(actor=actors, key=ids, label=names)
    def orm_insert_tag(self, actor: str | None, key: int, label: str) -> None:
        key = self._fresh(Tag.__table__, key)
        with self._step(actor) as session:
            session.add(Tag(id=key, label=label))

    @rule(
        actor=actors,
        index=st.integers(0, 20),
        name=st.none() | names,
        price=st.none() | prices,
        secret=st.none() | names,
        refresh=st.integers(0, 3),
    )
    def orm_update_item(
        self,
        actor: str | None,
        index: int,
        name: str | None,
        price: decimal.Decimal | None,
        secret: str | None,
        refresh: int,
    ) -> None:
        key = self._pick(Item.__table__, index)
        if key is None:
            return
        with self._step(actor) as session:
            item = session.get(Item, key, populate_existing=refresh == 0)  # 1 in 4 refreshes
            if item is None:
                return
            self.held.append(item)
            if name is not None:
                item.name = name
            if price is not None:
                item.price = price
            if secret is not None:
                item.secret = secret

    @rule(actor=actors, index=st.integers(0, 20), new_key=ids)
    def orm_change_item_key(self, actor: str | None, index: int, new_key: int) -> None:
        key = self._pick(Item.__table__, index)
        if key is None:
            return
        new_key = self._fresh(Item.__table__, new_key)
        with self._step(actor, move=("model_items", key, new_key)) as session:
            item = session.get(Item, key)
            if item is not None:
                self.held.append(item)
                item.id = new_key

    @rule(actor=actors, index=st.integers(0, 20), owner=st.integers(0, 20))
    def orm_set_item_owner(self, actor: str | None, index: int, owner: int) -> None:
        key = self._pick(Item.__table__, index)
        owner_key = self._pick(Owner.__table__, owner) if owner % 4 else None
        if key is None:
            return
        with self._step(actor) as session:
            item = session.get(Item, key)
            if item is not None:
                item.owner = None if owner_key is None else session.get(Owner, owner_key)

    @rule(actor=actors, owner=st.integers(0, 20), tag=st.integers(0, 20), add=st.booleans())
    def orm_tag_owner(self, actor: str | None, owner: int, tag: int, add: bool) -> None:
        owner_key, tag_key = self._pick(Owner.__table__, owner), self._pick(Tag.__table__, tag)
        if owner_key is None or tag_key is None:
            return
        with self._step(actor) as session:
            found, label = session.get(Owner, owner_key), session.get(Tag, tag_key)
            if found is None or label is None:
                return
            self.held += [found, label]
            if add and label not in found.tags:
                found.tags.append(label)
            elif not add and label in found.tags:
                found.tags.remove(label)

    @rule(
        actor=actors,
        table=st.sampled_from(["item", "owner", "tag"]),
        index=st.integers(0, 20),
    )
    def orm_delete(self, actor: str | None, table: str, index: int) -> None:
        model: Any = {"item": Item, "owner": Owner, "tag": Tag}[table]
        key = self._pick(model.__table__, index)
        if key is None:
            return
        with self._step(actor) as session:
            found = session.get(model, key)
            if found is not None:
                session.delete(found)

    # -- bulk statements ----------------------------------------------------------------------

    @rule(
        actor=actors,
        sync=synchronize,
        low=st.integers(0, 12),
        price=st.none() | prices,
        name=st.none() | names,
        relative=st.booleans(),
    )
    def bulk_update_items(
        self,
        actor: str | None,
        sync: str | bool,
        low: int,
        price: decimal.Decimal | None,
        name: str | None,
        relative: bool,
    ) -> None:
        values: dict[Any, Any] = {}
        if price is not None:
            values[Item.price] = Item.price + price if relative else price
        if name is not None:
            values[Item.name] = name
        if not values:
            values[Item.secret] = "bulk"
        statement = (
            update(Item)
            .where(Item.id >= low)
            .values(values)
            .execution_options(synchronize_session=sync)
        )
        with self._step(actor) as session:
            session.execute(statement)

    @rule(actor=actors, sync=synchronize, label=names, keys=st.lists(ids, max_size=3))
    def bulk_update_tags(
        self, actor: str | None, sync: str | bool, label: str, keys: list[int]
    ) -> None:
        statement = (
            update(Tag)
            .where(Tag.id.in_(keys))
            .values(label=label)
            .execution_options(synchronize_session=sync)
        )
        with self._step(actor) as session:
            session.execute(statement)

    @rule(actor=actors, rows=st.lists(st.tuples(ids, prices), min_size=1, max_size=3))
    def bulk_update_items_by_key(
        self, actor: str | None, rows: list[tuple[int, decimal.Decimal]]
    ) -> None:
        existing = set(self._ids(Item.__table__))
        params = [
            {"id": key, "price": price} for key, price in dict(rows).items() if key in existing
        ]
        if not params:
            return
        with self._step(actor) as session:
            session.execute(update(Item), params)

    @rule(
        actor=actors,
        sync=synchronize,
        table=st.sampled_from(["item", "owner", "tag"]),
        high=st.integers(0, 12),
    )
    def bulk_delete(self, actor: str | None, sync: str | bool, table: str, high: int) -> None:
        model: Any = {"item": Item, "owner": Owner, "tag": Tag}[table]
        statement = (
            delete(model)
            .where(model.id >= high, model.id <= high + 1)
            .execution_options(synchronize_session=sync)
        )
        with self._step(actor) as session:
            session.execute(statement)

    @rule(
        actor=actors,
        rows=st.lists(st.tuples(ids, names, prices), min_size=1, max_size=3),
        form=st.sampled_from(["executemany", "values", "single"]),
        as_text=st.booleans(),
    )
    def bulk_insert_items(
        self,
        actor: str | None,
        rows: list[tuple[int, str, decimal.Decimal]],
        form: str,
        as_text: bool,
    ) -> None:
        taken = set(self._ids(Item.__table__))
        free = [key for key in range(1, 25) if key not in taken]
        unique = {
            (free[key % len(free)] if free and key else 1): (name, price)
            for key, name, price in rows
        }
        if self.dialect == "postgresql" and form != "executemany":
            as_text = False  # PostgreSQL refuses text for an integer there (nothing to audit)
        params = [
            {"id": f"0{key}" if as_text else key, "name": name, "price": price, "secret": "s"}
            for key, (name, price) in unique.items()
        ]
        with self._step(actor) as session:
            if form == "executemany":
                session.execute(insert(Item), params)
            elif form == "values":
                session.execute(insert(Item).values(params))
            else:
                session.execute(insert(Item).values(params[0]))

    # -- transactions -------------------------------------------------------------------------

    @rule()
    def begin_savepoint(self) -> None:
        session = self._open()
        self.savepoints.append((session.begin_nested(), self.lineage.copy()))

    @precondition(lambda self: self.session is not None and bool(self.savepoints))
    @rule(release=st.booleans())
    def end_savepoint(self, release: bool) -> None:
        savepoint, saved = self.savepoints.pop()
        if release:
            try:
                savepoint.commit()
            except EXPECTED_ERRORS:
                self._abandon()
            return
        savepoint.rollback()
        self.lineage = saved

    @precondition(lambda self: self.session is not None)
    @rule(outcome=st.integers(0, 3))
    def end_transaction(self, outcome: int) -> None:
        """Commit (three times in four) or roll back the open transaction, then check."""
        commit = outcome > 0
        assert self.session is not None
        session, lineage = self.session, self.lineage
        self.session = None
        published = len(self.publisher.events)
        try:
            if commit:
                session.commit()
            else:
                session.rollback()
        except EXPECTED_ERRORS:
            session.rollback()
            commit = False
        finally:
            self._close(session)
        new = self.publisher.events[published:]
        STATS["commits" if commit else "rollbacks"] += 1
        STATS.update(f"{e.table} {e.operation.value}" for e in new)
        STATS["moves"] += sum(1 for e in new if e.previous_record_id is not None)
        if not commit:
            assert new == [], "a rolled-back transaction published events"
        for event in new:
            expected = lineage.actor_of(event)
            actor = None if event.actor is None else event.actor.id
            assert actor == expected, (
                f"{event.operation.value} of {event.table} {event.record_id}: actor {actor!r}, "
                f"expected {expected!r}"
            )
        with self.engine.connect() as conn:
            assert_replay_matches(self.publisher.events, conn)
        self.committed = len(self.publisher.events)

    @invariant()
    def nothing_published_before_commit(self) -> None:
        """Events leave the process only when a transaction commits."""
        assert len(self.publisher.events) == self.committed


def model_test(engine: Engine, *, reuse_session: bool = False) -> Callable[[], None]:
    """A test function running :class:`CaptureModel` on ``engine`` (tables created here).

    ``reuse_session``: one session with ``expire_on_commit=False`` for every transaction.
    """
    ModelBase.metadata.drop_all(engine)
    ModelBase.metadata.create_all(engine)
    maker = sessionmaker(engine, expire_on_commit=not reuse_session)
    publisher = InMemoryPublisher()
    machine = type(
        "BoundCaptureModel",
        (CaptureModel,),
        {
            "maker": maker,
            "engine": engine,
            "publisher": publisher,
            "reuse_session": reuse_session,
        },
    )
    name = engine.dialect.name

    def run() -> None:
        STATS.clear()
        install_audit(maker, publisher=publisher, service="model")
        try:
            run_state_machine_as_test(machine, settings=model_settings(name))
        finally:
            uninstall_audit(maker)
            ModelBase.metadata.drop_all(engine)
        print(f"capture model on {name}: {dict(sorted(STATS.items()))}")
        # The run exercised what it claims to: every kind of event was replayed.
        for kind in ("model_items insert", "model_items update", "model_items delete"):
            assert STATS[kind] > 0, kind
        assert STATS["model_owner_tags insert"] + STATS["model_owner_tags delete"] > 0
        assert STATS["moves"] > 0
        assert STATS["commits"] > 0
        assert STATS["rollbacks"] > 0

    return run
