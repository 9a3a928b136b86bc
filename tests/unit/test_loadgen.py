"""The load generator: what it sends, how it follows probes, and its verdict."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import pytest

from consumer.cli import main
from consumer.differ import records_for_event
from consumer.loadgen import Interval, LoadGenerator, LoadPlan, format_summary
from consumer.sinks.memory import MemoryStore
from sqla_audit.events import ChangeEvent


class PipelineDouble:
    """A publisher whose events reach a memory store through the consumer's own record
    building, on a background thread (as SNS/SQS/consumer would, later than the publish)."""

    def __init__(self, *, drop_transactions: frozenset[int] = frozenset()) -> None:
        self.store = MemoryStore()
        self.drop = drop_transactions
        self.published: list[ChangeEvent] = []
        self._pending: list[Sequence[ChangeEvent]] = []
        self._cond = threading.Condition()
        self._count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        with self._cond:
            index = self._count
            self._count += 1
            self.published.extend(events)
            if index not in self.drop:
                self._pending.append(events)
                self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                batch, self._pending = self._pending, []
            for events in batch:
                for event in events:
                    # the wire round trip the real consumer does: strict decode
                    decoded = ChangeEvent.from_json(event.to_json())
                    self.store.write(records_for_event(decoded))


def test_sends_the_planned_events_and_every_probe_lands() -> None:
    """At 2,000 events/s for 0.2 s: 400 valid wire events, 8 probes, all landed, drained."""
    pipeline = PipelineDouble()
    intervals: list[Interval] = []
    plan = LoadPlan(rate=2000, duration=0.2, transaction_size=5, probe_every=10)
    try:
        summary = LoadGenerator(
            plan,
            pipeline,
            probe=lambda tid: len(pipeline.store.by_transaction(tid)),
            report_every=0.05,
            on_interval=intervals.append,
            poll_interval=0.01,
            drain_timeout=10,
        ).run()
    finally:
        pipeline.close()
    assert summary.sent == len(pipeline.published) == 400
    assert len({e.event_id for e in pipeline.published}) == 400
    assert len({e.transaction_id for e in pipeline.published}) == 80
    assert summary.probes == 8
    assert summary.landed == 8
    assert summary.kept_up
    assert summary.drain_seconds is not None
    assert all(lag >= 0 for lag in summary.lags)
    assert intervals
    assert intervals[-1].landed == 8
    assert intervals[-1].probes_in_flight == 0
    assert {e.service for e in pipeline.published} == {"loadgen"}
    assert summary.to_dict()["kept_up"] is True


def test_a_lost_transaction_is_reported_as_not_kept_up() -> None:
    """A probe transaction the pipeline loses never lands: verdict NO, no drain time."""
    pipeline = PipelineDouble(drop_transactions=frozenset({10}))
    plan = LoadPlan(rate=5000, duration=0.1, transaction_size=5, probe_every=10)
    try:
        summary = LoadGenerator(
            plan,
            pipeline,
            probe=lambda tid: len(pipeline.store.by_transaction(tid)),
            poll_interval=0.01,
            drain_timeout=0.5,
        ).run()
    finally:
        pipeline.close()
    assert summary.probes == 10
    assert summary.landed == 9
    assert not summary.kept_up
    assert summary.drain_seconds is None
    lines = format_summary(summary)
    assert "kept up: NO" in lines
    assert any("1 probe(s) missing" in line for line in lines)


def test_store_read_failures_are_counted_and_retried() -> None:
    """A store that fails its first reads delays the probes; they still land."""
    pipeline = PipelineDouble()
    failures = [3]

    def flaky(tid: uuid.UUID) -> int:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("store down")
        return len(pipeline.store.by_transaction(tid))

    try:
        summary = LoadGenerator(
            LoadPlan(rate=1000, duration=0.05, transaction_size=5, probe_every=1),
            pipeline,
            probe=flaky,
            poll_interval=0.01,
            drain_timeout=10,
        ).run()
    finally:
        pipeline.close()
    assert summary.kept_up
    assert summary.probe_errors == 3
    assert summary.last_probe_error == "ConnectionError: store down"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0, "duration": 1}, "rate must be a positive"),
        ({"rate": float("nan"), "duration": 1}, "rate must be a positive"),
        ({"rate": 1, "duration": -1}, "duration must be a positive"),
        ({"rate": 1, "duration": 1, "transaction_size": 0}, "transaction_size"),
        ({"rate": 1, "duration": 1, "probe_every": 0}, "probe_every"),
    ],
)
def test_plan_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    """A plan that cannot run says which setting is wrong."""
    with pytest.raises(ValueError, match=message):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


def test_cli_refuses_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    """`sqla-audit loadgen --rate 0` is a usage error (exit 2) with one clear line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["loadgen", "--rate", "0", "--topic-arn", "arn:aws:sns:us-east-1:1:t"])
    assert exit_info.value.code == 2
    assert "--rate must be a positive number" in capsys.readouterr().err


def test_cli_needs_a_topic(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --topic-arn or its variable, loadgen exits 2 naming both."""
    monkeypatch.delenv("SQLA_AUDIT_TOPIC_ARN", raising=False)
    assert main(["loadgen", "--no-probes"]) == 2
    assert "--topic-arn or SQLA_AUDIT_TOPIC_ARN" in capsys.readouterr().err


class SlowFlushPublisher(PipelineDouble):
    """Delivers only when flushed, a little at a time (a publisher behind a slow endpoint),
    and counts what it dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.flush_calls: list[float | None] = []
        self.dropped = 0

    def flush(self, timeout: float | None = None) -> bool:
        self.flush_calls.append(timeout)
        return len(self.flush_calls) > 3

    def stats(self) -> object:
        return type("Stats", (), {"dropped": self.dropped, "delivered": len(self.published)})()


def test_the_drain_reports_progress_while_the_publisher_flushes() -> None:
    """While the publisher is still delivering after the last event, the drain keeps
    reporting and flushes in short steps, not one wait as long as the drain timeout."""
    pipeline = SlowFlushPublisher()
    pipeline.dropped = 2
    intervals: list[Interval] = []
    try:
        summary = LoadGenerator(
            LoadPlan(rate=1000, duration=0.02, transaction_size=5, probe_every=1),
            pipeline,
            probe=lambda tid: len(pipeline.store.by_transaction(tid)),
            report_every=0.05,
            on_interval=intervals.append,
            poll_interval=0.01,
            drain_timeout=30,
        ).run()
    finally:
        pipeline.close()
    assert all(timeout is not None and timeout <= 1.0 for timeout in pipeline.flush_calls)
    assert len(pipeline.flush_calls) >= 4
    assert summary.publisher_lost == 2
    assert not summary.kept_up
    assert any("gave up on 2 event(s)" in line for line in format_summary(summary))


def test_cli_against_an_endpoint_that_is_down(tmp_path: object) -> None:
    """An SNS endpoint that refuses connections: the events are not delivered within the
    drain timeout, the verdict is NO (exit 4), and stderr holds no traceback."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from net_support import free_port  # noqa: PLC0415

    dead = free_port()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "loadgen",
            "--topic-arn",
            "arn:aws:sns:us-east-1:123456789012:audit",
            "--endpoint-url",
            f"http://127.0.0.1:{dead}",
            "--region",
            "us-east-1",
            "--no-probes",
            "--rate",
            "50",
            "--duration",
            "0.2",
            "--drain-timeout",
            "2",
            "--report-every",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert run.returncode == 4, run.stderr
    assert "Traceback" not in run.stderr
    assert "kept up: NO" in run.stdout
    assert "publisher gave up on" in run.stdout
    assert "sent 10 events in 0.2 s (50/s, asked 50/s)" in run.stdout
