"""flush_publishers and install_signal_flush: deliver what publishers hold when asked to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

import sqla_audit
from sqla_audit import shutdown
from sqla_audit.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[3]


class FakePublisher:
    """Records flush/close calls; ``flush`` reports ``delivers``."""

    def __init__(self, *, delivers: bool = True) -> None:
        self.calls: list[str] = []
        self.delivers = delivers

    def flush(self, timeout: float | None = None) -> bool:
        self.calls.append("flush")
        return self.delivers

    def close(self, timeout: float | None = None) -> None:
        self.calls.append("close")


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    shutdown.uninstall_signal_flush()
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


def test_flush_publishers_flushes_tracked_publishers_and_keeps_them_open() -> None:
    """flush_publishers() flushes every tracked publisher, closes none, reports if all delivered."""
    good, slow = FakePublisher(), FakePublisher(delivers=False)
    shutdown.track(good)
    shutdown.track(slow)
    try:
        assert sqla_audit.flush_publishers(1.0) is False
        assert good.calls == ["flush"]
        assert slow.calls == ["flush"]
        assert shutdown.flush_publishers(1.0, [good]) is True
    finally:
        shutdown.untrack(good)
        shutdown.untrack(slow)
    assert good not in shutdown.tracked_publishers()


def test_a_publisher_that_closes_at_exit_is_tracked_until_closed(fake_sns: object) -> None:
    """An SNSPublisher with register_atexit is tracked; closing it untracks it."""
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

    tracked = SNSPublisher("arn:aws:sns:us-east-1:1:t", client=fake_sns)
    untracked = SNSPublisher("arn:aws:sns:us-east-1:1:t", client=fake_sns, register_atexit=False)
    try:
        assert tracked in shutdown.tracked_publishers()
        assert untracked not in shutdown.tracked_publishers()
    finally:
        tracked.close()
        untracked.close()
    assert tracked not in shutdown.tracked_publishers()


def test_handler_flushes_then_chains_to_the_previous_python_handler() -> None:
    """A previous Python handler still runs, after the flush; the publishers stay open."""
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, previous)
    publisher = FakePublisher()
    sqla_audit.install_signal_flush(publisher, timeout=1.0)
    signal.raise_signal(signal.SIGTERM)
    assert publisher.calls == ["flush"]
    assert seen == [signal.SIGTERM]


def test_install_is_idempotent_and_uninstall_restores_the_previous_handler() -> None:
    """Installing twice does not stack handlers; uninstall puts the previous one back."""
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, previous)
    publisher = FakePublisher()
    sqla_audit.install_signal_flush(publisher)
    sqla_audit.install_signal_flush(publisher)
    signal.raise_signal(signal.SIGTERM)
    assert publisher.calls == ["flush"]
    assert seen == [signal.SIGTERM]
    sqla_audit.uninstall_signal_flush()
    sqla_audit.uninstall_signal_flush()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_ignored_signal_stays_ignored() -> None:
    """When SIGTERM was ignored, the handler flushes and the process goes on."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    publisher = FakePublisher()
    sqla_audit.install_signal_flush(publisher)
    signal.raise_signal(signal.SIGTERM)
    assert publisher.calls == ["flush"]


def test_sigint_keeps_raising_keyboard_interrupt() -> None:
    """With sigint=True, SIGINT flushes and then raises KeyboardInterrupt as before."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    publisher = FakePublisher()
    sqla_audit.install_signal_flush(publisher, sigint=True)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert publisher.calls == ["flush"]


def test_only_the_main_thread_may_install() -> None:
    """install_signal_flush from another thread is a ConfigurationError, not a silent no-op."""
    errors: list[BaseException] = []

    def install() -> None:
        try:
            sqla_audit.install_signal_flush()
        except ConfigurationError as exc:
            errors.append(exc)

    worker = threading.Thread(target=install)
    worker.start()
    worker.join()
    assert len(errors) == 1
    assert "main thread" in str(errors[0])


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import sqla_audit
    from sqla_audit import shutdown

    class Publisher:
        def flush(self, timeout=None):
            print("flush", flush=True)
            return True
        def close(self, timeout=None):
            print("close", flush=True)

    publisher = Publisher()
    if sys.argv[1] == "hook":
        sqla_audit.install_signal_flush(publisher)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still alive", flush=True)
    """
)


@pytest.mark.parametrize(("mode", "output"), [("hook", "flush\nclose\n"), ("none", "")])
def test_default_disposition_closes_publishers_then_dies_by_the_signal(
    mode: str, output: str, tmp_path: Path
) -> None:
    """With the default disposition the handler closes the publishers and the process
    still ends by SIGTERM (status 128 + 15 in a shell), as without it."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout == output
