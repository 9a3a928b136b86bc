"""Direct mode and SIGTERM: what a script loses with the default handler, and what
``install_signal_flush()`` delivers.

A child process installs capture with an ``SNSPublisher`` (direct mode), commits 3,000
single-row transactions against SQLite and sends itself ``SIGTERM`` right after the last
commit returned. With Python's default disposition the process dies at once, without
:mod:`atexit`, so every event still in the publisher's memory is lost. With
``install_signal_flush()`` the handler delivers them first and the process still ends by
``SIGTERM``. When SNS cannot be reached within the handler's timeout, the rest goes to the
publisher's spool and a publisher started later on the same spool delivers it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from net_support import SwitchableProxy

from sqla_audit.publishers.sns import SNSPublisher
from sqla_audit.publishers.spool import EventSpool

pytestmark = [pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]
EVENTS = 3000
#: The runs with the hook deliver every event through moto into a subscribed queue, and moto
#: slows down as that queue fills (about 80 events/s for the first few hundred, 10 events/s
#: past 2,000 on a busy 2-core machine): they commit fewer events, enough to fill the
#: publisher's queue past one batch and to exercise the spool.
EVENTS_WITH_HOOK = 600
#: Events one PublishBatch round of the publisher's sender may hold (``max_batch_events``).
MAX_BATCH = 100

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import boto3
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
    import sqla_audit
    from sqla_audit.publishers.sns import SNSPublisher

    db, endpoint, topic_arn, spool, hook, count = sys.argv[1:7]

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)

    engine = sa.create_engine(db)
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    client = boto3.client(
        "sns", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    publisher = SNSPublisher(topic_arn, client=client, spool=spool, max_batch_events=%(batch)d)
    sqla_audit.install_audit(maker, publisher=publisher, service="sigterm")
    if hook == "hook":
        sqla_audit.install_signal_flush(timeout=float(os.environ.get("FLUSH_TIMEOUT", "60")))
    for i in range(int(count)):
        with maker.begin() as session:
            session.add(Item(id=i))
    stats = publisher.stats()
    print(json.dumps({"queued": stats.queued, "delivered": stats.delivered}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still alive", flush=True)
    """
) % {"batch": MAX_BATCH}


def run_child(
    tmp_path: Path, endpoint: str, topic_arn: str, hook: str, count: int = EVENTS, **env: str
) -> Any:
    """Run the script; its exit status and the publisher's stats just before SIGTERM."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            f"sqlite:///{tmp_path / 'app.db'}",
            endpoint,
            topic_arn,
            str(tmp_path / "spool"),
            hook,
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        check=False,
    )
    assert "still alive" not in result.stdout, result.stdout
    assert result.returncode == -signal.SIGTERM, result.stderr
    print(result.stderr[-2000:])
    stats: dict[str, int] = json.loads(result.stdout.splitlines()[0])
    return stats


def test_default_sigterm_loses_what_the_publisher_still_holds(
    private_aws: Any, tmp_path: Path
) -> None:
    """Without the hook, SIGTERM kills the script with events queued: those never arrive."""
    topic_arn, queue_url = private_aws.topic_with_queue(raw=True)
    reader = private_aws.reader(queue_url)
    stats = run_child(tmp_path, private_aws.endpoint, topic_arn, "no-hook")
    received = reader.wait(expected=EVENTS, timeout=10, settle=3)
    arrived = len(set(received.event_ids()))
    print(f"without the hook: {arrived} of {EVENTS} arrived; {stats['queued']} were queued")
    # Events queued beyond the one batch that may have been on the wire were never sent.
    assert arrived <= EVENTS - max(stats["queued"] - MAX_BATCH, 0)


def spooled(path: Path) -> int:
    """How many events wait in the spool at ``path``."""
    spool = EventSpool(path)
    try:
        return len(spool.peek(10 * EVENTS, max_bytes=1 << 30))
    finally:
        spool.close()


def resend_spool(private_aws: Any, sns_client_for: Any, topic_arn: str, path: Path) -> None:
    """What the application's next start does: a publisher on the same spool sends it."""
    restarted = SNSPublisher(
        topic_arn, client=sns_client_for(private_aws.endpoint), spool=path, register_atexit=False
    )
    try:
        assert restarted.flush(300)
    finally:
        restarted.close()


def test_signal_flush_delivers_every_committed_event(
    private_aws: Any, sns_client_for: Any, tmp_path: Path
) -> None:
    """With install_signal_flush(), every committed event is on the queue or in the spool
    when SIGTERM ends the script, and the spool's share arrives at the next start."""
    topic_arn, queue_url = private_aws.topic_with_queue(raw=True)
    reader = private_aws.reader(queue_url)
    stats = run_child(
        tmp_path,
        private_aws.endpoint,
        topic_arn,
        "hook",
        EVENTS_WITH_HOOK,
        FLUSH_TIMEOUT="30",
    )
    in_spool = spooled(tmp_path / "spool")
    print(f"with the hook (30 s): {stats['queued']} queued at SIGTERM, {in_spool} spooled")
    resend_spool(private_aws, sns_client_for, topic_arn, tmp_path / "spool")
    received = reader.wait(expected=EVENTS_WITH_HOOK, timeout=300)
    ids = sorted(int(e["after"]["id"]) for e in received.events())
    assert ids == list(range(EVENTS_WITH_HOOK))


def test_signal_flush_spools_what_sns_cannot_take_in_time(
    private_aws: Any, sns_proxy: SwitchableProxy, sns_client_for: Any, tmp_path: Path
) -> None:
    """With SNS unreachable, the hook spools every event; the next start sends them."""
    topic_arn, queue_url = private_aws.topic_with_queue(raw=True)
    sns_proxy.stop()
    run_child(tmp_path, sns_proxy.url, topic_arn, "hook", EVENTS_WITH_HOOK, FLUSH_TIMEOUT="2")
    assert spooled(tmp_path / "spool") == EVENTS_WITH_HOOK
    reader = private_aws.reader(queue_url)
    resend_spool(private_aws, sns_client_for, topic_arn, tmp_path / "spool")
    received = reader.wait(expected=EVENTS_WITH_HOOK, timeout=300)
    ids = sorted(int(e["after"]["id"]) for e in received.events())
    assert ids == list(range(EVENTS_WITH_HOOK))
