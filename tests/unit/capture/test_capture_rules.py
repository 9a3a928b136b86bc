"""Capture rules on SQLite: what each kind of ORM change publishes, exactly."""

from __future__ import annotations

import contextvars
import decimal

import pytest
import sqlalchemy as sa
from capture_support import (
    Account,
    Child,
    Counter,
    Country,
    Employee,
    Engineer,
    Everything,
    Group,
    Manager,
    Parent,
    Post,
    Scratch,
    Stock,
    Tag,
    User,
    brief,
    briefs,
    one_transaction,
    seed,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import capture_events

pytestmark = pytest.mark.usefixtures("alice")

USER_ROW = {"id": 1, "name": "Ann", "email": "ann@example.com", "login_count": 0, "bio": None}


def _seed_user(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    seed(maker, published, User(display_name="Ann", email="ann@example.com"))


def test_insert_reports_generated_key_server_default_and_column_names(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An insert carries the generated key, server defaults, column (not attribute) names."""
    with maker.begin() as session:
        session.add(User(display_name="Ann", email="ann@example.com"))
    (event,) = published.events
    assert brief(event) == {
        "op": "insert",
        "table": "users",
        "record_id": "1",
        "previous_record_id": None,
        "before": None,
        "after": USER_ROW,
        "changed": ["id", "name", "email", "login_count", "bio"],
        "actor": "alice",
        "sequence": 0,
    }
    assert event.primary_key == {"id": 1}
    assert event.request_id == "req-1"
    assert event.service == "shop"


def test_update_of_expired_object_reports_true_old_values(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Attributes expired by a commit and assigned without loading get their real old value."""
    _seed_user(maker, published)
    with maker() as session:
        user = session.get(User, 1)
        assert user is not None
        session.commit()  # expires everything
        assert "display_name" not in user.__dict__
        user.display_name = "Anna"
        session.commit()
    (event,) = published.events
    assert brief(event) == {
        "op": "update",
        "table": "users",
        "record_id": "1",
        "previous_record_id": None,
        "before": USER_ROW,
        "after": {**USER_ROW, "name": "Anna"},
        "changed": ["name"],
        "actor": "alice",
        "sequence": 0,
    }


def test_update_of_never_loaded_deferred_column_reports_old_value(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A deferred column set without ever being loaded still reports its old value."""
    seed(maker, published, User(display_name="Ann", bio="old bio"))
    with maker.begin() as session:
        user = session.scalars(sa.select(User)).one()
        assert "bio" not in user.__dict__
        user.bio = "new bio"
    (event,) = published.events
    assert event.before is not None
    assert event.after is not None
    assert (event.before["bio"], event.after["bio"]) == ("old bio", "new bio")
    assert event.changed_columns == ("bio",)


def test_dirty_object_without_real_change_publishes_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Assigning the current value, or changing and restoring it, publishes no event."""
    _seed_user(maker, published)
    with maker.begin() as session:
        user = session.get(User, 1)
        assert user is not None
        user.display_name = "Ann"
        assert user in session.dirty
    with maker.begin() as session:
        user = session.get(User, 1)
        assert user is not None
        user.display_name = "Other"
        session.flush()
        user.display_name = "Ann"
    assert published.events == []


def test_only_collection_change_on_owner_publishes_no_owner_update(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A parent whose only change is a collection gets no update event of its own."""
    seed(maker, published, Post(id=1, title="p"), Tag(id=1, label="t"))
    with maker.begin() as session:
        post, tag = session.get(Post, 1), session.get(Tag, 1)
        assert post is not None
        assert tag is not None
        post.tags.append(tag)
    assert [e.table for e in published.events] == ["post_tags"]


def test_delete_of_expired_object_reports_full_before(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Deleting an expired object with an unloaded deferred column reports the whole row."""
    seed(maker, published, User(display_name="Ann", email="ann@example.com", bio="b"))
    with maker() as session:
        user = session.get(User, 1)
        session.commit()
        session.delete(user)
        session.commit()
    (event,) = published.events
    assert brief(event) == {
        "op": "delete",
        "table": "users",
        "record_id": "1",
        "previous_record_id": None,
        "before": {**USER_ROW, "bio": "b"},
        "after": None,
        "changed": ["id", "name", "email", "login_count", "bio"],
        "actor": "alice",
        "sequence": 0,
    }


def test_onupdate_and_sql_expression_values_are_read_after_flush(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Values computed by the database during the UPDATE appear in ``after``."""
    seed(maker, published, Counter(id=1, value=5))
    with maker.begin() as session:
        counter = session.get(Counter, 1)
        assert counter is not None
        counter.value = Counter.value + 1
    (event,) = published.events
    assert brief(event)["before"] == {"id": 1, "value": 5, "revision": 1}
    assert brief(event)["after"] == {"id": 1, "value": 6, "revision": 2}
    assert event.changed_columns == ("value", "revision")


def test_json_mutated_in_place_reports_old_document(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A JSON value mutated in place and flagged keeps its true old value from the database."""
    seed(maker, published, Everything(id=1, doc={"a": [1, 2]}))
    with maker.begin() as session:
        row = session.get(Everything, 1)
        assert row is not None
        row.doc["a"].append(3)
        flag_modified(row, "doc")
    (event,) = published.events
    assert event.before is not None
    assert event.after is not None
    assert (event.before["doc"], event.after["doc"]) == ({"a": [1, 2]}, {"a": [1, 2, 3]})
    assert event.changed_columns == ("doc",)


def test_encoding_at_capture_snapshots_mutable_values(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Mutating a JSON value after its flush does not alter what was captured."""
    with maker.begin() as session:
        doc = {"k": 1}
        session.add(Everything(id=1, doc=doc))
        session.flush()
        doc["k"] = 2  # not flagged: the ORM does not see it, neither does the audit
    (event,) = published.events
    assert event.after is not None
    assert event.after["doc"] == {"k": 1}


def test_many_to_one_change_of_expired_child_reports_old_foreign_key(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Re-parenting an expired object reports the foreign key's real old value."""
    seed(maker, published, Parent(id=1), Parent(id=2), Child(id=1, name="c", parent_id=1))
    with maker() as session:
        child, other = session.get(Child, 1), session.get(Parent, 2)
        session.commit()
        assert child is not None
        child.parent = other
        session.commit()
    (event,) = published.events
    assert brief(event)["before"] == {"id": 1, "name": "c", "parent_id": 1}
    assert brief(event)["after"] == {"id": 1, "name": "c", "parent_id": 2}
    assert event.changed_columns == ("parent_id",)


def test_orphan_deleted_by_cascade_is_published(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An object deleted by delete-orphan cascade produces a delete event."""
    seed(maker, published, Parent(id=1, children=[Child(id=1, name="a"), Child(id=2, name="b")]))
    with maker.begin() as session:
        parent = session.get(Parent, 1)
        assert parent is not None
        parent.children.pop(0)
    (event,) = published.events
    assert brief(event)["op"] == "delete"
    assert (event.table, event.record_id) == ("children", "1")
    assert event.before == {"id": 1, "name": "a", "parent_id": 1}


# --------------------------------------------------------------------------- primary keys


def test_composite_key_record_id_and_changed_key(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Composite keys form ``a:b`` (escaped); a changed key keeps the old id recoverable."""
    with maker.begin() as session:
        session.add(Stock(warehouse="w1", sku="a:1", quantity=3))
    with maker.begin() as session:
        stock = session.get(Stock, ("w1", "a:1"))
        assert stock is not None
        stock.warehouse = "w2"
        stock.quantity = 4
    insert, update = published.events
    assert (insert.record_id, insert.primary_key) == ("w1:a%3A1", {"warehouse": "w1", "sku": "a:1"})
    assert brief(update) == {
        "op": "update",
        "table": "stock",
        "record_id": "w2:a%3A1",
        "previous_record_id": "w1:a%3A1",
        "before": {"warehouse": "w1", "sku": "a:1", "quantity": 3},
        "after": {"warehouse": "w2", "sku": "a:1", "quantity": 4},
        "changed": ["warehouse", "quantity"],
        "actor": "alice",
        "sequence": 0,
    }
    assert update.primary_key == {"warehouse": "w2", "sku": "a:1"}


def test_changed_key_of_expired_object_and_later_flush_coalesce(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A key change then another update in one transaction is one event from old to new key."""
    seed(maker, published, Country(code="UK", name="United Kingdom"))
    with maker() as session:
        country = session.get(Country, "UK")
        session.commit()
        assert country is not None
        country.code = "GB"
        session.flush()
        country.name = "Great Britain"
        session.commit()
    (event,) = published.events
    assert brief(event) == {
        "op": "update",
        "table": "countries",
        "record_id": "GB",
        "previous_record_id": "UK",
        "before": {"code": "UK", "name": "United Kingdom"},
        "after": {"code": "GB", "name": "Great Britain"},
        "changed": ["code", "name"],
        "actor": "alice",
        "sequence": 0,
    }


def test_key_changed_and_changed_back_is_no_event(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Renaming a key and renaming it back in one transaction publishes nothing."""
    seed(maker, published, Country(code="UK", name="United Kingdom"))
    with maker.begin() as session:
        country = session.get(Country, "UK")
        assert country is not None
        country.code = "GB"
        session.flush()
        country.code = "UK"
    assert published.events == []


def test_changed_key_then_delete_is_delete_of_original_row(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Key change then delete in one transaction deletes the row under its original key."""
    seed(maker, published, Country(code="UK", name="United Kingdom"))
    with maker.begin() as session:
        country = session.get(Country, "UK")
        assert country is not None
        country.code = "GB"
        session.flush()
        session.delete(country)
    (event,) = published.events
    assert (event.operation.value, event.record_id, event.previous_record_id) == (
        "delete",
        "UK",
        None,
    )
    assert event.before == {"code": "UK", "name": "United Kingdom"}
    assert event.primary_key == {"code": "UK"}


# --------------------------------------------------------------------------- inheritance


def test_joined_inheritance_is_one_event_on_the_base_table(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A joined-inheritance object is one event on the base table with every column."""
    with maker.begin() as session:
        session.add(Manager(name="M", budget=decimal.Decimal("10.50")))
    with maker() as session:
        manager = session.get(Manager, 1)
        session.commit()
        assert manager is not None
        manager.budget = decimal.Decimal("11.00")
        session.commit()
        session.delete(manager)
        session.commit()
    insert, update, delete = published.events
    row = {
        "id": 1,
        "name": "M",
        "kind": "manager",
        "language": None,
        "budget": {"$type": "decimal", "v": "10.50"},
    }
    assert brief(insert)["after"] == row
    assert (insert.table, update.table, delete.table) == ("employees",) * 3
    assert brief(update)["before"] == row
    assert brief(update)["after"] == {**row, "budget": {"$type": "decimal", "v": "11.00"}}
    assert update.changed_columns == ("budget",)
    assert brief(delete)["before"] == {**row, "budget": {"$type": "decimal", "v": "11.00"}}


def test_single_table_inheritance_uses_subclass_columns(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A single-table subclass reports its discriminator and its own columns."""
    with maker.begin() as session:
        session.add_all([Engineer(name="E", language="py"), Employee(name="P")])
    engineer, plain = published.events
    assert brief(engineer)["after"] == {"id": 1, "name": "E", "kind": "engineer", "language": "py"}
    assert brief(plain)["after"] == {"id": 2, "name": "P", "kind": "employee", "language": None}
    assert [e.sequence for e in published.events] == [0, 1]


# --------------------------------------------------------------------------- many-to-many


def test_many_to_many_rows_are_inserted_and_deleted_with_actor(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Association rows of a ``secondary`` table are insert/delete events with the actor."""
    with maker.begin() as session:
        post = Post(id=1, title="p", tags=[Tag(id=7, label="x")])
        session.add(post)
    insert_events = published.events
    assert [(e.table, e.operation.value) for e in insert_events] == [
        ("posts", "insert"),
        ("tags", "insert"),
        ("post_tags", "insert"),
    ]
    row = insert_events[2]
    assert brief(row) == {
        "op": "insert",
        "table": "post_tags",
        "record_id": "1:7",
        "previous_record_id": None,
        "before": None,
        "after": {"post_id": 1, "tag_id": 7},
        "changed": ["post_id", "tag_id"],
        "actor": "alice",
        "sequence": 2,
    }
    published.clear()
    with maker.begin() as session:
        tag = session.get(Tag, 7)
        assert tag is not None
        tag.posts.clear()  # through the backref side
    (removed,) = published.events
    assert brief(removed)["op"] == "delete"
    assert (removed.table, removed.record_id, removed.before) == (
        "post_tags",
        "1:7",
        {"post_id": 1, "tag_id": 7},
    )


def test_deleting_owner_deletes_its_association_rows(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Deleting an object also publishes the deletion of its association rows."""
    seed(maker, published, Group(id=1, members=[User(id=2, display_name="U")]))
    with maker() as session:
        group = session.get(Group, 1)
        session.commit()
        session.delete(group)
        session.commit()
    assert [(e.table, e.operation.value, e.record_id) for e in published.events] == [
        ("memberships", "delete", "1:2"),
        ("groups", "delete", "1"),
    ]
    assert published.events[0].primary_key == {"group_id": 1, "user_id": 2}


# --------------------------------------------------------------------------- coalescing


def test_insert_then_update_is_one_insert_with_final_values(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Insert then update in one transaction is one insert with the final values."""
    with maker.begin() as session:
        user = User(display_name="A")
        session.add(user)
        session.flush()
        user.display_name = "B"
        session.flush()
        user.email = "b@example.com"
    (event,) = published.events
    assert brief(event)["op"] == "insert"
    assert brief(event)["after"] == {
        "id": 1,
        "name": "B",
        "email": "b@example.com",
        "login_count": 0,
        "bio": None,
    }


def test_update_then_delete_is_delete_with_original_before(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Update then delete in one transaction is one delete with the original values."""
    _seed_user(maker, published)
    with maker.begin() as session:
        user = session.get(User, 1)
        assert user is not None
        user.display_name = "Changed"
        session.flush()
        session.delete(user)
    (event,) = published.events
    assert (brief(event)["op"], brief(event)["before"]) == ("delete", USER_ROW)


def test_insert_then_delete_is_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Insert then delete in one transaction publishes nothing for that row."""
    with maker.begin() as session:
        user = User(display_name="tmp")
        session.add_all([user, Country(code="FR", name="France")])
        session.flush()
        session.delete(user)
    assert [(e.table, e.sequence) for e in published.events] == [("countries", 0)]


def test_update_then_update_is_one_update_from_first_to_last(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Two updates of one row in one transaction are one update from the first before."""
    _seed_user(maker, published)
    with maker.begin() as session:
        user = session.get(User, 1)
        assert user is not None
        user.display_name = "B"
        session.flush()
        user.email = None
    (event,) = published.events
    assert brief(event)["before"] == USER_ROW
    assert brief(event)["after"] == {**USER_ROW, "name": "B", "email": None}
    assert event.changed_columns == ("name", "email")


def test_delete_then_insert_same_key_is_an_update(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Deleting a row and inserting one with the same key is one update."""
    seed(maker, published, Country(code="DE", name="Germany"))
    with maker.begin() as session:
        session.delete(session.get(Country, "DE"))
        session.flush()
        session.add(Country(code="DE", name="Deutschland"))
    (event,) = published.events
    assert brief(event) == {
        "op": "update",
        "table": "countries",
        "record_id": "DE",
        "previous_record_id": None,
        "before": {"code": "DE", "name": "Germany"},
        "after": {"code": "DE", "name": "Deutschland"},
        "changed": ["name"],
        "actor": "alice",
        "sequence": 0,
    }


def test_events_of_one_commit_share_transaction_and_are_sequenced(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """All events of a commit share a transaction id; sequence follows first change order."""
    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
        session.flush()
        session.add(Country(code="B", name="b"))
        session.flush()
        country_a = session.get(Country, "A")
        assert country_a is not None
        country_a.name = "a2"
    events = published.events
    one_transaction(events)
    assert [(e.record_id, e.operation.value) for e in events] == [("A", "insert"), ("B", "insert")]
    assert events[0].after == {"code": "A", "name": "a2"}


def test_inserts_follow_add_order_within_a_flush(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Inside one flush, inserts are sequenced in the order objects were added."""
    with maker.begin() as session:
        session.add_all([Country(code=code, name=code) for code in ["Z", "A", "M", "B"]])
    assert [e.record_id for e in published.events] == ["Z", "A", "M", "B"]


# --------------------------------------------------------------------------- configuration


def test_masked_column_keeps_change_but_never_value(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A masked column is listed as changed with its value withheld; excluded ones vanish."""
    with maker.begin() as session:
        session.add(Account(id=1, login="ann", password_hash="s3cret-1", last_seen=1))
    with maker.begin() as session:
        account = session.get(Account, 1)
        assert account is not None
        account.password_hash = "s3cret-2"
        account.last_seen = 2
    insert, update = published.events
    masked = {"$type": "masked", "v": None}
    assert brief(insert)["after"] == {"id": 1, "login": "ann", "password_hash": masked}
    assert insert.masked_columns == ("password_hash",)
    assert brief(update)["before"] == brief(update)["after"] == insert.after
    assert update.changed_columns == ("password_hash",)
    assert update.masked_columns == ("password_hash",)


def test_change_to_excluded_column_only_is_no_event(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Changing only an excluded column publishes nothing."""
    seed(maker, published, Account(id=1, login="ann", password_hash="x", last_seen=1))
    with maker.begin() as session:
        account = session.get(Account, 1)
        assert account is not None
        account.last_seen = 99
    assert published.events == []


def test_model_opted_out_is_not_audited(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A model with ``__audit__ = {"enabled": False}`` publishes nothing."""
    with maker.begin() as session:
        session.add(Scratch(id=1, note="n"))
    with maker.begin() as session:
        scratch = session.get(Scratch, 1)
        assert scratch is not None
        scratch.note = "m"
    assert published.events == []


def test_changes_outside_any_context_have_no_actor(maker: sessionmaker[Session]) -> None:
    """Without an audit context, events carry no actor and no request id."""
    with capture_events(maker) as published:

        def write() -> None:
            with maker.begin() as session:
                session.add(Country(code="X", name="x"))

        # a fresh context: the module-level ``alice`` fixture is not in it
        contextvars.Context().run(write)
    (event,) = published.events
    assert (event.actor, event.request_id) == (None, None)


def test_briefs_helper_lists_every_event(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """(Helper check) ``briefs`` keeps event order."""
    with maker.begin() as session:
        session.add_all([Country(code="P", name="p"), Country(code="Q", name="q")])
    assert [b["record_id"] for b in briefs(published.events)] == ["P", "Q"]
