"""A small Flask notes service whose every database change is audited with its user.

``install_audit`` on the session factory captures the changes; ``AuditWSGIMiddleware``
wraps ``app.wsgi_app`` and puts each request's actor (from the ``X-User`` header, checked
against a list of known users -- a real service would verify a session or token there) and
request id into the audit context. Writes without a known user are refused with 401 by a
``before_request`` hook using the same function.

By default the events go to the outbox table of the application's own database::

    flask --app examples.flask_app.app:create_app run
    curl -X POST localhost:5000/notes -H 'X-User: alice' \\
         -H 'Content-Type: application/json' -d '{"title": "buy milk"}'
    sqla-audit consume --source outbox --db sqlite:///notes.db \\
         --store sqlite --store-url audit.db --metrics-port 0 --until-empty
    sqla-audit history notes 1 --store sqlite --store-url audit.db

Pass ``publisher=`` to publish after each commit instead (an ``SNSPublisher`` in
production, an ``InMemoryPublisher`` in tests).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import Actor, AuditWSGIMiddleware, install_audit
from sqla_audit.outbox import OutboxWriter, outbox_table
from sqla_audit.publishers.base import Publisher

#: Stand-in for a user directory: who may write, with attributes kept in the audit log.
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

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "body": self.body, "done": self.done}


def authenticate(user_header: str | None) -> Actor | None:
    """The caller, or ``None`` when the request is anonymous or the user unknown."""
    if not user_header:
        return None
    return USERS.get(user_header.strip())


def actor_from_environ(environ: dict[str, Any]) -> Actor | None:
    """The middleware's actor getter: the same authentication, from the WSGI environ."""
    return authenticate(environ.get("HTTP_X_USER"))


def create_app(
    database_url: str = "sqlite:///notes.db", *, publisher: Publisher | None = None
) -> Flask:
    """The audited application on ``database_url`` (outbox mode unless ``publisher``)."""
    engine = create_engine(database_url)
    outbox = outbox_table(Base.metadata)
    Base.metadata.create_all(engine)
    make_session = sessionmaker(engine, expire_on_commit=False)
    if publisher is None:
        install_audit(make_session, outbox=OutboxWriter(outbox), service="notes-web")
    else:
        install_audit(make_session, publisher=publisher, service="notes-web")

    app = Flask(__name__)
    # The documented Flask idiom for WSGI middleware (mypy objects to assigning a method).
    app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, actor_getter=actor_from_environ
    )
    # Kept where a shutdown hook (or a test) can find it for uninstall_audit().
    app.extensions["notes_session_factory"] = make_session

    @app.before_request
    def require_user_for_writes() -> None:
        if request.method != "GET" and authenticate(request.headers.get("X-User")) is None:
            abort(401, description="send X-User with a known user name")

    def find(db: Session, note_id: int) -> Note:
        note = db.get(Note, note_id)
        if note is None:
            abort(404, description=f"no note {note_id}")
        return note

    @app.get("/notes/<int:note_id>")
    def read_note(note_id: int) -> dict[str, Any]:
        with make_session() as db:
            return find(db, note_id).to_json()

    def payload() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            abort(400, description="send a JSON object")
        return data

    @app.post("/notes")
    def create_note() -> tuple[dict[str, Any], int]:
        data = payload()
        if not isinstance(data.get("title"), str):
            abort(400, description="title (a string) is required")
        with make_session.begin() as db:
            note = Note(title=data["title"], body=str(data.get("body", "")))
            db.add(note)
        return note.to_json(), 201

    @app.patch("/notes/<int:note_id>")
    def update_note(note_id: int) -> dict[str, Any]:
        data = payload()
        with make_session.begin() as db:
            note = find(db, note_id)
            for name in ("title", "body", "done"):
                if name in data:
                    setattr(note, name, data[name])
        return note.to_json()

    @app.delete("/notes/<int:note_id>")
    def delete_note(note_id: int) -> tuple[str, int]:
        with make_session.begin() as db:
            db.delete(find(db, note_id))
        return "", 204

    return app
