"""A small FastAPI notes service whose every database change is audited with its user.

Two pieces make it work, and neither touches the endpoints' database code:

* ``install_audit(Session, ...)`` on the session factory captures every ORM change;
* ``AuditASGIMiddleware`` puts each request's actor and request id into the audit context.
  Its ``actor_getter`` uses the same authentication function as the ``current_user``
  dependency, which rejects anonymous writes with 401. Here "authentication" is an
  ``X-User`` header checked against a list of known users; a real service would verify a
  token in that one function.

By default the events go to the outbox table of the application's own database, so the
whole loop runs on one machine::

    uvicorn --factory examples.fastapi_app.app:create_app
    curl -X POST localhost:8000/notes -H 'X-User: alice' \\
         -H 'Content-Type: application/json' -d '{"title": "buy milk"}'
    sqla-audit consume --source outbox --db sqlite:///notes.db \\
         --store sqlite --store-url audit.db --metrics-port 0 --until-empty
    sqla-audit history notes 1 --store sqlite --store-url audit.db

Pass ``publisher=`` (an ``SNSPublisher`` in production, an ``InMemoryPublisher`` in tests)
to publish after each commit instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import (
    Actor,
    AuditASGIMiddleware,
    flush_publishers,
    install_audit,
    uninstall_audit,
)
from sqla_audit.outbox import OutboxWriter, outbox_table
from sqla_audit.publishers.base import Publisher

#: Stand-in for a user directory: who may call the API, with attributes kept in the audit log.
USERS = {
    "alice": Actor("alice", {"team": "support"}),
    "bob": Actor("bob", {"team": "sales"}),
}


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(default="")
    done: Mapped[bool] = mapped_column(default=False)


class NoteIn(BaseModel):
    title: str
    body: str = ""


class NotePatch(BaseModel):
    title: str | None = None
    body: str | None = None
    done: bool | None = None


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body: str
    done: bool


# --------------------------------------------------------------------------- authentication


def authenticate(user_header: str | None) -> Actor | None:
    """The caller, or ``None`` when the request is anonymous or the user unknown."""
    if not user_header:
        return None
    return USERS.get(user_header.strip())


def current_user(x_user: Annotated[str | None, Header()] = None) -> Actor:
    """FastAPI dependency: the authenticated user, or 401."""
    user = authenticate(x_user)
    if user is None:
        raise HTTPException(status_code=401, detail="send X-User with a known user name")
    return user


def actor_from_scope(scope: MutableMapping[str, Any]) -> Actor | None:
    """The middleware's actor getter: the same authentication, from the raw ASGI scope."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-user":
            return authenticate(value.decode("latin-1"))
    return None


def database_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session of the application's (audited) session factory."""
    make_session: sessionmaker[Session] = request.app.state.make_session
    with make_session() as db:
        yield db


Db = Annotated[Session, Depends(database_session)]
User = Annotated[Actor, Depends(current_user)]


# --------------------------------------------------------------------------- the application


def create_app(
    database_url: str = "sqlite:///notes.db", *, publisher: Publisher | None = None
) -> FastAPI:
    """The audited application on ``database_url`` (outbox mode unless ``publisher``)."""
    engine = create_engine(database_url)
    outbox = outbox_table(Base.metadata)
    Base.metadata.create_all(engine)
    make_session = sessionmaker(engine, expire_on_commit=False)
    if publisher is None:
        install_audit(make_session, outbox=OutboxWriter(outbox), service="notes-api")
    else:
        install_audit(make_session, publisher=publisher, service="notes-api")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if publisher is not None:
            # uvicorn ends the process by re-raising SIGTERM after this shutdown, so atexit
            # never runs: deliver what the publisher still holds now (docs/delivery.md).
            flush_publishers(timeout=10.0, publishers=[publisher])
        uninstall_audit(make_session)
        engine.dispose()

    app = FastAPI(title="notes", lifespan=lifespan)
    app.state.make_session = make_session
    app.add_middleware(AuditASGIMiddleware, actor_getter=actor_from_scope)

    def find(db: Session, note_id: int) -> Note:
        note = db.get(Note, note_id)
        if note is None:
            raise HTTPException(status_code=404, detail=f"no note {note_id}")
        return note

    @app.get("/notes/{note_id}")
    def read_note(note_id: int, db: Db) -> NoteOut:
        return NoteOut.model_validate(find(db, note_id))

    @app.post("/notes", status_code=201)
    def create_note(data: NoteIn, db: Db, _user: User) -> NoteOut:
        with db.begin():
            note = Note(title=data.title, body=data.body)
            db.add(note)
        return NoteOut.model_validate(note)

    @app.patch("/notes/{note_id}")
    def update_note(note_id: int, data: NotePatch, db: Db, _user: User) -> NoteOut:
        with db.begin():
            note = find(db, note_id)
            for name, value in data.model_dump(exclude_unset=True).items():
                setattr(note, name, value)
        return NoteOut.model_validate(note)

    @app.delete("/notes/{note_id}", status_code=204)
    def delete_note(note_id: int, db: Db, _user: User) -> None:
        with db.begin():
            db.delete(find(db, note_id))

    return app
