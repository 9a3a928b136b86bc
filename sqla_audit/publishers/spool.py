"""A bounded, durable, ordered local spool for change events that could not be published.

Why: in direct mode the events of a committed transaction live only in the process until
SNS accepts them. Memory cannot hold an outage of unknown length, so when SNS is
unreachable past the retry budget (or the in-memory queue is full) the publisher writes
events here and re-sends them, oldest first, once SNS answers again. The spool survives a
restart of the process: a publisher opened on the same directory sends what is left.

Layout of the directory (created with mode 0700, files 0600 -- events are audit data):

* ``<number>.seg`` -- append-only *segment* files, read in ascending number order. A
  segment is closed for appending once it reaches ``segment_bytes``.
* ``cursor`` -- ``"<segment number> <byte offset>"``: how much of the first segment was
  already sent. Replaced atomically (write + rename) on each acknowledgement.
* ``.lock`` -- an advisory ``flock`` so two processes never share one spool (POSIX only).

Record format: a 4-byte big-endian length, the 4-byte CRC-32 of the payload, then the payload
(the event's JSON, UTF-8). On open, a torn record at the end of a segment (a crash during a
write) is truncated away. A record whose CRC does not match when read is reported through
``on_corrupt`` and the rest of its segment is discarded: after the length prefix is wrong
there is no reliable way to find the next record.

Durability (``fsync``): with ``fsync=True`` (the default) every append is ``fsync``-ed
before it returns, and so is the directory when a segment is created, so a spooled event
survives an operating-system crash or a power loss. With ``fsync=False`` it survives the
process dying but not the machine. The cursor is never fsync-ed: losing its last update only
makes already-sent events go out again, which the consumer absorbs (writes are idempotent by
event id).

Bounds: ``max_bytes`` caps the total size on disk (records and headers). When an append does
not fit, the records that fit are written and the count is returned; the caller reports the
rest (the publisher calls ``on_error`` with :class:`SpoolFullError` and counts them as
dropped). Older events are never evicted to make room for newer ones.

Thread-safe; one :class:`EventSpool` per directory and per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

from sqla_audit.errors import (
    ConfigurationError,
    SpoolFullError,
    TransportError,
)

log = logging.getLogger(__name__)

#: Default cap of a spool directory.
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024

#: Default size at which a segment stops growing.
DEFAULT_SEGMENT_BYTES: Final = 8 * 1024 * 1024

#: A record larger than this is treated as corruption (a bad length prefix).
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024

_HEADER: Final = struct.Struct(">II")
_SUFFIX: Final = ".seg"
#: Segment numbers start high so that records can be put in front of the first segment.
_FIRST_SEGMENT: Final = 10**15

#: Called with the segment path, the byte offset and a reason when data is discarded.
CorruptionHook = Callable[[Path, int, str], None]


def record_size(payload: bytes) -> int:
    """Bytes a payload takes in a segment, header included."""
    return _HEADER.size + len(payload)


class EventSpool:
    """Append-only segment files with a persisted read cursor."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        on_corrupt: CorruptionHook | None = None,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ConfigurationError("spool max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._on_corrupt = on_corrupt
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create spool directory {self.directory}: {exc}"
            ) from exc
        if not os.access(self.directory, os.W_OK):
            raise ConfigurationError(f"spool directory {self.directory} is not writable")
        self._lock_file = self._acquire_directory_lock()
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._head_offset = 0
        self._tail: IO[bytes] | None = None
        self._peeked: list[tuple[int, int]] = []
        self._next_number = _FIRST_SEGMENT
        self.corrupt_bytes = 0
        self._load()

    # -- public ---------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes not yet acknowledged."""
        with self._lock:
            return sum(self._sizes.values()) - self._head_offset

    @property
    def empty(self) -> bool:
        return self.size_bytes == 0

    def append(self, records: Sequence[bytes]) -> int:
        """Write ``records`` at the end, in order, and return their number.

        When they do not all fit, the first ones that do are written and
        :class:`SpoolFullError` (with ``written``) is raised.
        """
        with self._lock:
            self._check_open()
            room = self.max_bytes - self.size_bytes
            fitting = _prefix_that_fits(records, room)
            chunk: list[bytes] = []
            chunk_bytes = 0
            for payload in records[:fitting]:
                tail = self._tail_segment()
                if chunk and self._sizes[tail] + chunk_bytes >= self.segment_bytes:
                    self._write_tail(chunk)
                    chunk, chunk_bytes = [], 0
                    tail = self._tail_segment()
                chunk.append(_frame(payload))
                chunk_bytes += record_size(payload)
            if chunk:
                self._write_tail(chunk)
            # Records peeked earlier keep their positions: appending only adds at the end.
            if fitting < len(records):
                raise SpoolFullError(
                    f"spool {self.directory} is full ({self.max_bytes} bytes): "
                    f"{len(records) - fitting} record(s) not kept",
                    fitting,
                )
            return fitting

    def push_front(self, records: Sequence[bytes]) -> int:
        """Write ``records`` *before* everything else (they are older); like :meth:`append`."""
        with self._lock:
            self._check_open()
            if not records:
                return 0
            if not self._segments:
                return self.append(records)
            room = self.max_bytes - self.size_bytes
            fitting = _prefix_that_fits(records, room)
            head = self._segments[0]
            data = b"".join(_frame(p) for p in records[:fitting])
            replaced_head = self._head_offset > 0
            if replaced_head:
                # The first segment is partly sent: carry its unsent rest into the new one.
                with open(self._path(head), "rb") as handle:
                    handle.seek(self._head_offset)
                    data += handle.read()
            number = head - 1
            self._write_whole_segment(number, data)
            self._segments.insert(0, number)
            self._sizes[number] = len(data)
            if replaced_head:
                if self._segments[-1] == head:
                    self._close_tail()
                self._remove_segment(head)
                self._head_offset = 0
                self._save_cursor()
            self._peeked.clear()
            if fitting < len(records):
                raise SpoolFullError(
                    f"spool {self.directory} is full ({self.max_bytes} bytes): "
                    f"{len(records) - fitting} record(s) not kept",
                    fitting,
                )
            return fitting

    def peek(self, max_records: int, max_bytes: int = 4 * 1024 * 1024) -> list[bytes]:
        """Records from the front, not removed until :meth:`ack`.

        At most ``max_records`` records, and no more than ``max_bytes`` of payload unless the
        first record alone is larger (it is then returned by itself), so reading the spool
        back never needs more memory than one batch.
        """
        with self._lock:
            self._check_open()
            self._peeked.clear()
            out: list[bytes] = []
            budget = [max_bytes]
            position = 0
            while len(out) < max_records and position < len(self._segments) and budget[0] > 0:
                number = self._segments[position]
                start = self._head_offset if position == 0 else 0
                read = self._read_records(number, start, max_records - len(out), budget, not out)
                for payload, end in read:
                    out.append(payload)
                    self._peeked.append((number, end))
                position += 1
            return out

    def ack(self, count: int) -> None:
        """Forget the first ``count`` records of the last :meth:`peek`."""
        with self._lock:
            self._check_open()
            if count <= 0:
                return
            if count > len(self._peeked):
                raise ValueError(f"cannot ack {count} record(s): only {len(self._peeked)} peeked")
            number, end = self._peeked[count - 1]
            self._peeked.clear()
            while self._segments and self._segments[0] < number:
                self._drop_head()
            self._head_offset = end
            if self._segments and end >= self._sizes[self._segments[0]]:
                self._drop_head()
            self._save_cursor()

    def close(self) -> None:
        """Release files and the directory lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_tail()
            with contextlib.suppress(OSError):
                self._lock_file.close()

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening --------------------------------------------------------------------------

    def _acquire_directory_lock(self) -> IO[bytes]:
        handle = open(self.directory / ".lock", "ab")  # noqa: SIM115 -- held until close()
        try:
            import fcntl  # noqa: PLC0415 -- POSIX only

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no cross-process guard
            pass
        except OSError as exc:
            handle.close()
            raise ConfigurationError(
                f"spool directory {self.directory} is in use by another process"
            ) from exc
        return handle

    def _load(self) -> None:
        numbers = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            stem = path.name[: -len(_SUFFIX)]
            if stem.isdigit():
                numbers.append(int(stem))
        self._segments = sorted(numbers)
        if self._segments:
            self._next_number = self._segments[-1] + 1
        for number in self._segments:
            self._sizes[number] = self._valid_length(number)
        cursor_segment, cursor_offset = self._read_cursor()
        while self._segments and self._segments[0] < cursor_segment:
            self._remove_segment(self._segments[0])  # acknowledged before a crash
        if self._segments and self._segments[0] == cursor_segment:
            if self._is_boundary(cursor_segment, cursor_offset):
                self._head_offset = cursor_offset
            else:
                log.warning(
                    "spool cursor %s:%s is not a record boundary; resending the segment",
                    cursor_segment,
                    cursor_offset,
                )
        if self._segments and self._head_offset >= self._sizes[self._segments[0]]:
            self._drop_head()
        self._save_cursor()
        if self.size_bytes:
            log.info(
                "spool %s holds %d byte(s) from a previous run", self.directory, self.size_bytes
            )

    def _valid_length(self, number: int) -> int:
        """Scan the record headers; truncate a torn or impossible tail."""
        path = self._path(number)
        size = path.stat().st_size
        offset = 0
        with open(path, "rb") as handle:
            while offset + _HEADER.size <= size:
                handle.seek(offset)
                length, _crc = _HEADER.unpack(handle.read(_HEADER.size))
                end = offset + _HEADER.size + length
                if length > MAX_RECORD_BYTES or end > size:
                    break
                offset = end
        if offset < size:
            self._discard(path, offset, f"{size - offset} byte(s) of a torn or invalid record")
            os.truncate(path, offset)
        return offset

    def _is_boundary(self, number: int, target: int) -> bool:
        offset = 0
        with open(self._path(number), "rb") as handle:
            while offset < target:
                handle.seek(offset)
                length, _crc = _HEADER.unpack(handle.read(_HEADER.size))
                offset += _HEADER.size + length
        return offset == target

    def _read_cursor(self) -> tuple[int, int]:
        try:
            text = (self.directory / "cursor").read_text(encoding="ascii")
            segment, offset = (int(part) for part in text.split())
        except (OSError, ValueError):
            return 0, 0
        return segment, max(offset, 0)

    # -- writing --------------------------------------------------------------------------

    def _tail_segment(self) -> int:
        if self._segments and self._sizes[self._segments[-1]] < self.segment_bytes:
            if self._tail is None:
                self._tail = self._open_segment(self._segments[-1])
            return self._segments[-1]
        self._close_tail()
        number = self._segments[-1] + 1 if self._segments else self._next_number
        self._next_number = number + 1
        self._tail = self._open_segment(number)
        self._segments.append(number)
        self._sizes[number] = 0
        if self.fsync:
            self._fsync_directory()
        return number

    def _open_segment(self, number: int) -> IO[bytes]:
        fd = os.open(self._path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "ab")

    def _write_tail(self, frames: list[bytes]) -> None:
        assert self._tail is not None
        data = b"".join(frames)
        self._tail.write(data)
        self._tail.flush()
        if self.fsync:
            os.fsync(self._tail.fileno())
        self._sizes[self._segments[-1]] += len(data)

    def _write_whole_segment(self, number: int, data: bytes) -> None:
        final = self._path(number)
        temporary = final.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        os.replace(temporary, final)
        if self.fsync:
            self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _save_cursor(self) -> None:
        head = self._segments[0] if self._segments else 0
        temporary = self.directory / "cursor.tmp"
        temporary.write_text(f"{head} {self._head_offset}", encoding="ascii")
        os.replace(temporary, self.directory / "cursor")

    # -- reading and dropping ---------------------------------------------------------------

    def _read_records(
        self, number: int, start: int, limit: int, budget: list[int], first: bool
    ) -> list[tuple[bytes, int]]:
        size = self._sizes[number]
        out: list[tuple[bytes, int]] = []
        offset = start
        path = self._path(number)
        with open(path, "rb") as handle:
            handle.seek(offset)
            while len(out) < limit and offset < size:
                length, crc = _HEADER.unpack(handle.read(_HEADER.size))
                if length > budget[0] and not (first and not out):
                    budget[0] = 0
                    break
                budget[0] -= length
                payload = handle.read(length)
                if len(payload) != length or zlib.crc32(payload) != crc:
                    self._discard(path, offset, f"CRC mismatch; {size - offset} byte(s) dropped")
                    os.truncate(path, offset)
                    self._sizes[number] = offset
                    break
                offset += _HEADER.size + length
                out.append((payload, offset))
        return out

    def _discard(self, path: Path, offset: int, reason: str) -> None:
        self.corrupt_bytes += max(path.stat().st_size - offset, 0)
        log.error("spool segment %s at byte %d: %s", path, offset, reason)
        if self._on_corrupt is not None:
            try:
                self._on_corrupt(path, offset, reason)
            except Exception:
                log.exception("spool on_corrupt hook raised")

    def _drop_head(self) -> None:
        number = self._segments[0]
        if number == self._segments[-1]:
            self._close_tail()
        self._remove_segment(number)
        self._head_offset = 0

    def _remove_segment(self, number: int) -> None:
        self._segments.remove(number)
        self._sizes.pop(number, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(number).unlink()

    def _close_tail(self) -> None:
        if self._tail is not None:
            with contextlib.suppress(OSError):
                self._tail.close()
            self._tail = None

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{_SUFFIX}"

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"spool {self.directory} is closed")


def _frame(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"a spool record is limited to {MAX_RECORD_BYTES} bytes")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _prefix_that_fits(records: Sequence[bytes], room: int) -> int:
    used = 0
    for count, payload in enumerate(records):
        used += record_size(payload)
        if used > room:
            return count
    return len(records)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "MAX_RECORD_BYTES",
    "CorruptionHook",
    "EventSpool",
    "SpoolFullError",
    "record_size",
]
