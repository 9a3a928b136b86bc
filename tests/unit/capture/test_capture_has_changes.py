"""``has_changes`` answers exactly what ``Session.is_modified(include_collections=False)`` does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from capture_support import Child, Everything, Parent, Post, Tag, User
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified, instance_state

from sqla_audit.capture import has_changes


def _seed(maker: sessionmaker[Session]) -> None:
    with maker.begin() as session:
        session.add_all(
            [
                User(id=1, display_name="Ann", email="a@x", bio="bio"),
                Parent(id=1, children=[Child(id=1, name="c1")]),
                Parent(id=2),
                Post(id=1, title="p", tags=[Tag(id=1, label="t")]),
                Everything(id=1, doc={"a": [1]}, text="t"),
            ]
        )


def _same_value(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    user.email = "a@x"


def _new_value(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    user.email = "b@x"


def _set_and_back(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    user.email = "b@x"
    user.email = "a@x"


def _deferred_while_unloaded(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    user.bio = "bio"


def _expired_then_assigned(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    session.expire(user, ["email"])
    user.email = "a@x"


def _deleted_attribute(session: Session) -> None:
    user = session.get(User, 1)
    assert user is not None
    del user.email


def _many_to_one(session: Session) -> None:
    child = session.get(Child, 1)
    assert child is not None
    child.parent = session.get(Parent, 2)


def _many_to_one_same(session: Session) -> None:
    child = session.get(Child, 1)
    assert child is not None
    child.parent = session.get(Parent, 1)


def _collection_only(session: Session) -> None:
    post = session.get(Post, 1)
    assert post is not None
    post.tags.append(Tag(id=2, label="u"))


def _flagged(session: Session) -> None:
    thing = session.get(Everything, 1)
    assert thing is not None
    flag_modified(thing, "doc")


def _mutated_json_same(session: Session) -> None:
    thing = session.get(Everything, 1)
    assert thing is not None
    thing.doc = {"a": [1]}


@pytest.mark.parametrize(
    "change",
    [
        _same_value,
        _new_value,
        _set_and_back,
        _deferred_while_unloaded,
        _expired_then_assigned,
        _deleted_attribute,
        _many_to_one,
        _many_to_one_same,
        _collection_only,
        _flagged,
        _mutated_json_same,
    ],
)
def test_has_changes_agrees_with_is_modified(
    maker: sessionmaker[Session], change: Callable[[Session], None]
) -> None:
    """For every object the session holds, has_changes equals is_modified without collections."""
    _seed(maker)
    with maker() as session:
        change(session)
        objects = list(session.identity_map.values())
        assert objects
        for obj in objects:
            expected = session.is_modified(obj, include_collections=False)
            assert has_changes(instance_state(obj)) is expected, obj
        session.rollback()
