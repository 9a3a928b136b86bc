"""CPU time of processes and of the machine, read from ``/proc`` (Linux; zeros elsewhere).

The P2 figures compare the client's CPU with the CPU of the Cassandra server it writes to,
when both run on this machine: :func:`listening_pid` finds the process that listens on a
loopback TCP port (the Cassandra node of ``.services.env``), :func:`process_cpu` reads the
user + system CPU seconds of a process (every thread), :func:`machine_ticks` the busy and
total CPU ticks of the whole machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import cassandra_contact

_TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listening_pid(port: int) -> int | None:
    """The id of the process listening on TCP ``port`` here, if it can be seen."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds used so far by process ``pid`` (0.0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def cassandra_pid() -> int | None:
    """The Cassandra server process, when it runs on this machine (its CPU is measured)."""
    host, port = cassandra_contact()
    return listening_pid(port) if host in {"127.0.0.1", "localhost", "::1"} else None


class Meter:
    """Wall time, this process's CPU time (every thread), the Cassandra server's CPU time
    (when it runs here) and the machine's CPU use."""

    def __init__(self, server: int | None = None) -> None:
        self.server = server
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.server_cpu = process_cpu(server)
        self.busy, self.total = machine_ticks()

    def stop(self, events: int) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        server = process_cpu(self.server) - self.server_cpu
        busy, total = machine_ticks()
        machine = (busy - self.busy) / (total - self.total) if total > self.total else 0.0
        return {
            "rate": events / wall,
            "cpu_per_event": cpu / events,
            "server_cpu_per_event": server / events,
            "machine_busy": machine,
        }


__all__ = ["Meter", "cassandra_pid", "listening_pid", "machine_ticks", "process_cpu"]
