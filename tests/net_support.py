"""Loopback network helpers for the integration tests: a switchable TCP proxy, a free port.

Outage tests cannot stop a shared service (moto keeps its queues in memory; restarting the
shared Cassandra node would take minutes and disturb every other test). They put a
:class:`SwitchableProxy` between the code under test and the service instead: ``stop()``
closes the listening socket and drops every open connection (clients see "connection
refused", exactly as with a dead endpoint) and ``start()`` listens again on the same port,
while the service behind it keeps its state. The proxy is ``bench.loopback``'s, the one the
benchmarks put in front of an endpoint to add network latency.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bench.loopback import SwitchableProxy, free_port


def upstream_of(url: str) -> tuple[str, int]:
    """``"http://host:port"`` -> ``("host", port)`` (port 80 when absent)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"no host in upstream URL {url!r}")
    return parts.hostname, parts.port or 80


__all__ = ["SwitchableProxy", "free_port", "upstream_of"]
