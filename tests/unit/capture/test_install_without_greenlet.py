"""The synchronous library works without greenlet (SQLAlchemy's asyncio extension)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_install_audit_without_greenlet() -> None:
    """With greenlet unimportable, install_audit on a sessionmaker captures as usual."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["greenlet"] = None  # as if it were not installed
        import sqlalchemy as sa
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
        from sqla_audit import install_audit
        from sqla_audit.publishers.memory import InMemoryPublisher

        class Base(DeclarativeBase):
            pass

        class Thing(Base):
            __tablename__ = "things"
            id: Mapped[int] = mapped_column(primary_key=True)

        engine = sa.create_engine("sqlite://")
        Base.metadata.create_all(engine)
        maker = sessionmaker(engine)
        publisher = InMemoryPublisher()
        install_audit(maker, publisher=publisher, service="t")
        with maker.begin() as session:
            session.add(Thing(id=1))
        assert "sqlalchemy.ext.asyncio" not in sys.modules
        print(len(publisher.events))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
