"""The local spool: ordered, bounded, durable across reopen, tolerant of torn writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sqla_audit.errors import ConfigurationError, TransportError
from sqla_audit.publishers.spool import EventSpool, SpoolFullError, record_size


def records(start: int, stop: int) -> list[bytes]:
    return [f'{{"n":{i}}}'.encode() for i in range(start, stop)]


def drain(spool: EventSpool, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while True:
        got = spool.peek(batch)
        if not got:
            return out
        out.extend(got)
        spool.ack(len(got))


def test_append_peek_ack_keeps_order(tmp_path: Path) -> None:
    """Records come back in append order; peek does not remove, ack does."""
    with EventSpool(tmp_path / "s", segment_bytes=64) as spool:
        assert spool.empty
        assert spool.append(records(0, 50)) == 50
        assert spool.peek(3) == records(0, 3)
        assert spool.peek(3) == records(0, 3)
        spool.ack(2)
        assert spool.peek(2) == records(2, 4)
        assert drain(spool) == records(2, 50)
        assert spool.empty
        assert spool.size_bytes == 0


def test_segments_rotate_and_are_deleted_once_sent(tmp_path: Path) -> None:
    """Appends roll over to new segment files; fully acknowledged segments are deleted."""
    directory = tmp_path / "s"
    with EventSpool(directory, segment_bytes=100) as spool:
        spool.append(records(0, 40))
        assert len(list(directory.glob("*.seg"))) > 3
        drain(spool)
        assert list(directory.glob("*.seg")) == []


def test_reopen_resumes_after_the_acknowledged_records(tmp_path: Path) -> None:
    """A new spool on the same directory continues where the last acknowledgement left off."""
    directory = tmp_path / "s"
    with EventSpool(directory, segment_bytes=80) as spool:
        spool.append(records(0, 30))
        got = spool.peek(11)
        spool.ack(len(got))
        spool.peek(5)  # peeked but not acknowledged: must come again
    with EventSpool(directory, segment_bytes=80) as spool:
        assert drain(spool) == records(11, 30)
    with EventSpool(directory) as spool:
        assert spool.empty


def test_torn_tail_is_truncated_on_open(tmp_path: Path) -> None:
    """A record cut short by a crash is dropped and the ones before it are kept."""
    directory = tmp_path / "s"
    with EventSpool(directory) as spool:
        spool.append(records(0, 5))
    (segment,) = directory.glob("*.seg")
    with segment.open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00abc")  # header of a 256-byte record, 3 bytes of it
    corrupt: list[tuple[Path, int, str]] = []
    with EventSpool(directory, on_corrupt=lambda p, o, r: corrupt.append((p, o, r))) as spool:
        assert len(corrupt) == 1
        spool.append(records(5, 6))
        assert drain(spool) == records(0, 6)


def test_crc_mismatch_discards_the_rest_of_the_segment(tmp_path: Path) -> None:
    """A flipped byte is detected by the CRC, reported, and the records before it survive."""
    directory = tmp_path / "s"
    with EventSpool(directory) as spool:
        spool.append(records(0, 4))
    (segment,) = directory.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = record_size(records(0, 1)[0])
    data[second + 9] ^= 0xFF  # inside the payload of the second record
    segment.write_bytes(bytes(data))
    reasons: list[str] = []
    with EventSpool(directory, on_corrupt=lambda p, o, r: reasons.append(r)) as spool:
        assert drain(spool) == records(0, 1)
        assert reasons
        assert "CRC" in reasons[0]
        assert spool.corrupt_bytes > 0


def test_full_spool_keeps_what_fits_and_says_how_much(tmp_path: Path) -> None:
    """Above max_bytes the records that fit are written; SpoolFullError tells how many."""
    size = record_size(records(0, 1)[0])
    with EventSpool(tmp_path / "s", max_bytes=size * 3) as spool:
        with pytest.raises(SpoolFullError) as info:
            spool.append(records(0, 5))
        assert info.value.written == 3
        assert isinstance(info.value, TransportError)
        with pytest.raises(SpoolFullError):
            spool.append(records(5, 6))
        assert drain(spool) == records(0, 3)
        assert spool.append(records(6, 7)) == 1


def test_push_front_puts_records_before_everything(tmp_path: Path) -> None:
    """push_front makes older records come out first, even before a partly sent segment."""
    directory = tmp_path / "s"
    with EventSpool(directory, segment_bytes=10_000) as spool:
        spool.append(records(10, 20))
        spool.push_front(records(5, 10))
        got = spool.peek(3)
        spool.ack(len(got))
        assert got == records(5, 8)
        spool.push_front(records(0, 5))  # the head segment is partly sent now
        spool.append(records(20, 22))
    with EventSpool(directory) as spool:
        assert drain(spool) == [*records(0, 5), *records(8, 22)]


def test_push_front_into_an_empty_spool(tmp_path: Path) -> None:
    """push_front on an empty spool behaves like append."""
    with EventSpool(tmp_path / "s") as spool:
        assert spool.push_front([]) == 0
        assert spool.push_front(records(0, 2)) == 2
        assert drain(spool) == records(0, 2)


def test_peek_is_bounded_in_bytes_but_always_returns_one(tmp_path: Path) -> None:
    """peek stops at max_bytes of payload, yet returns a single oversized record alone."""
    big = [b"x" * 1000, b"y" * 1000, b"z" * 10]
    with EventSpool(tmp_path / "s") as spool:
        spool.append(big)
        assert spool.peek(10, max_bytes=1500) == big[:1]
        assert spool.peek(10, max_bytes=10) == big[:1]
        spool.ack(1)
        assert spool.peek(10, max_bytes=2000) == big[1:]


def test_directory_is_exclusive_to_one_spool(tmp_path: Path) -> None:
    """A second spool on a directory in use fails with a clear configuration error."""
    directory = tmp_path / "s"
    with EventSpool(directory), pytest.raises(ConfigurationError, match="in use"):
        EventSpool(directory)
    EventSpool(directory).close()


def test_files_are_private(tmp_path: Path) -> None:
    """The spool directory and its segments are readable by the owner only (audit data)."""
    directory = tmp_path / "s"
    with EventSpool(directory) as spool:
        spool.append(records(0, 1))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (segment,) = directory.glob("*.seg")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    """Using a closed spool raises a transport error; close is idempotent."""
    spool = EventSpool(tmp_path / "s")
    spool.close()
    spool.close()
    with pytest.raises(TransportError, match="closed"):
        spool.append(records(0, 1))


def test_invalid_configuration_is_rejected(tmp_path: Path) -> None:
    """Non-positive limits and an unusable directory are configuration errors."""
    with pytest.raises(ConfigurationError):
        EventSpool(tmp_path / "s", max_bytes=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError):
        EventSpool(blocker / "s")


def test_ack_more_than_peeked_is_an_error(tmp_path: Path) -> None:
    """Acknowledging records that were not peeked is refused."""
    with EventSpool(tmp_path / "s") as spool:
        spool.append(records(0, 3))
        spool.peek(1)
        with pytest.raises(ValueError, match="only 1 peeked"):
            spool.ack(2)
        spool.ack(0)
        assert spool.peek(5) == records(0, 3)


def test_stale_cursor_is_ignored(tmp_path: Path) -> None:
    """A cursor that is not on a record boundary resends the segment (duplicates, no loss)."""
    directory = tmp_path / "s"
    with EventSpool(directory) as spool:
        spool.append(records(0, 3))
    (segment,) = directory.glob("*.seg")
    (directory / "cursor").write_text(f"{int(segment.stem)} 3")
    with EventSpool(directory) as spool:
        assert drain(spool) == records(0, 3)


def test_fsync_off_still_round_trips(tmp_path: Path) -> None:
    """With fsync disabled the spool works the same (durability is the only difference)."""
    directory = tmp_path / "s"
    with EventSpool(directory, fsync=False) as spool:
        spool.append(records(0, 3))
    assert os.listdir(directory)
    with EventSpool(directory, fsync=False) as spool:
        assert drain(spool) == records(0, 3)


def test_appending_between_peek_and_ack_keeps_the_window(tmp_path: Path) -> None:
    """Records appended by another thread after a peek do not disturb its acknowledgement."""
    with EventSpool(tmp_path / "s", segment_bytes=40) as spool:
        spool.append(records(0, 5))
        window = spool.peek(3)
        spool.append(records(5, 8))
        spool.ack(len(window))
        assert drain(spool) == records(3, 8)
