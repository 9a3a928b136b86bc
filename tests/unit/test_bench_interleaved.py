"""The benchmarks' shared round-robin runner: contenders side by side, order rotating."""

from __future__ import annotations

from bench.common import interleaved


def test_every_contender_runs_once_per_round_and_the_first_place_rotates() -> None:
    """Round k starts with the k-th contender; each contender's results come in round order."""
    calls: list[tuple[str, int]] = []

    def run(name: str, turn: int) -> str:
        calls.append((name, turn))
        return f"{name}{turn}"

    samples = interleaved(["a", "b", "c"], 4, run)
    assert calls == [
        ("a", 0), ("b", 0), ("c", 0),
        ("b", 1), ("c", 1), ("a", 1),
        ("c", 2), ("a", 2), ("b", 2),
        ("a", 3), ("b", 3), ("c", 3),
    ]  # fmt: skip
    assert samples == {
        "a": ["a0", "a1", "a2", "a3"],
        "b": ["b0", "b1", "b2", "b3"],
        "c": ["c0", "c1", "c2", "c3"],
    }


def test_failed_runs_are_left_out_and_after_round_follows_each_round() -> None:
    """A None result gives no sample; after_round(turn) runs once after every round."""
    log: list[str] = []

    def run(name: str, turn: int) -> int | None:
        log.append(f"{name}{turn}")
        return None if name == "b" and turn == 1 else turn

    samples = interleaved({"a": 0, "b": 0}, 2, run, lambda turn: log.append(f"reset{turn}"))
    assert samples == {"a": [0, 1], "b": [0]}
    assert log == ["a0", "b0", "reset0", "b1", "a1", "reset1"]
