"""A nightly job, run in a worker thread, whose changes are audited as "nightly-job".

Outside a web request nobody sets the actor for you: a job names itself with
``audit_context``, where it runs. A new thread starts with an empty context, so the
``with audit_context(...)`` block is inside the function the worker thread executes
(``@audit_context(actor="nightly-job")`` on that function works the same way). The changes
made before, by the import that created the invoices, carry that import's actor instead.

Run it (each run recreates the invoices and outbox tables in ``jobs.db``)::

    python examples/background_job.py --db sqlite:///jobs.db
    sqla-audit consume --source outbox --db sqlite:///jobs.db \\
         --store sqlite --store-url audit.db --metrics-port 0 --until-empty
    sqla-audit actor nightly-job --since 1h --store sqlite --store-url audit.db
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from sqlalchemy import Numeric, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.outbox import OutboxWriter, outbox_counts, outbox_table
from sqla_audit.publishers.base import Publisher

JOB_ACTOR = "nightly-job"


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    due_on: Mapped[dt.date]
    status: Mapped[str] = mapped_column(String(20), default="open")


def import_invoices(make_session: sessionmaker[Session], today: dt.date) -> None:
    """Sample data, as a billing import would write it (audited as "billing-import")."""
    with audit_context(actor="billing-import"), make_session.begin() as session:
        session.add_all(
            [
                Invoice(id=1, customer="Ada", amount=Decimal("120.00"), due_on=today),
                Invoice(
                    id=2,
                    customer="Grace",
                    amount=Decimal("75.50"),
                    due_on=today - dt.timedelta(days=3),
                ),
                Invoice(
                    id=3,
                    customer="Alan",
                    amount=Decimal("10.00"),
                    due_on=today - dt.timedelta(days=40),
                ),
            ]
        )


def mark_overdue_invoices(make_session: sessionmaker[Session], today: dt.date) -> int:
    """The job: open invoices past their due date become "overdue". Runs in a worker thread."""
    with (
        audit_context(actor=JOB_ACTOR, request_id=f"{JOB_ACTOR}-{today.isoformat()}"),
        make_session.begin() as session,
    ):
        overdue = session.scalars(
            select(Invoice).where(Invoice.status == "open", Invoice.due_on < today)
        ).all()
        for invoice in overdue:
            invoice.status = "overdue"
        return len(overdue)


def main(argv: Sequence[str] | None = None, *, publisher: Publisher | None = None) -> int:
    """Create the database, import invoices, run the job in a worker thread, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", default="sqlite:///jobs.db", help="SQLAlchemy database URL")
    args = parser.parse_args(argv)

    engine = create_engine(args.db)
    outbox = outbox_table(Base.metadata)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    make_session = sessionmaker(engine)
    if publisher is None:
        install_audit(make_session, outbox=OutboxWriter(outbox), service="billing-jobs")
    else:
        install_audit(make_session, publisher=publisher, service="billing-jobs")
    try:
        today = dt.date.today()
        import_invoices(make_session, today)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs") as pool:
            changed = pool.submit(mark_overdue_invoices, make_session, today).result()
        with make_session() as session:
            total = session.scalar(select(func.count()).select_from(Invoice))
        print(f"{JOB_ACTOR}: {changed} of {total} invoices marked overdue")
        if publisher is None:
            pending, _parked = outbox_counts(engine, outbox)
            print(f"{pending} change events wait in the outbox table {outbox.name}")
    finally:
        uninstall_audit(make_session)
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
