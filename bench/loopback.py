"""A loopback TCP proxy that can refuse connections on demand and delay every request.

Used by the benchmarks (network latency in front of an endpoint, an outage under load) and by
the integration tests (an outage of a shared service without stopping it). ``stop()`` closes
the listening socket and drops every open connection (clients see "connection refused",
exactly as with a dead endpoint) and ``start()`` listens again on the same port, while the
service behind it keeps its state.

This module uses the standard library only, so the tests can import it without the
benchmarks' dependencies; :class:`ProxyProcess` (the proxy in a process of its own) runs
``python -m bench.loopback``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SwitchableProxy:
    """A loopback TCP proxy to ``upstream``, switched on and off, adding ``delay`` seconds
    to every request.

    A request is the first bytes a client sends after the last response bytes on that
    connection (HTTP/1.1 keep-alive: one request at a time per connection), so a request
    split over several segments is delayed once. Each connection has its own threads, so
    concurrent requests on different connections are delayed in parallel, as on a real
    network. With ``delay`` 0 the bytes pass untouched, whatever the protocol.

    The port (``port``, or a free one) is chosen once, so a client built before an outage
    finds the proxy again after ``start()``. The proxy is created stopped; as a context
    manager it is started on entry and stopped on exit.
    """

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0, port: int = 0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._accepting: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again) on the proxy's port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        with self._lock:
            self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        if self._accepting is not None:
            self._accepting.join(5)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> SwitchableProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            answered = threading.Event()
            answered.set()  # the first bytes of the connection start a request
            threading.Thread(
                target=self._pump, args=(client, upstream, answered, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, answered, False), daemon=True
            ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, answered: threading.Event, request: bool
    ) -> None:
        try:
            while data := src.recv(65536):
                if request:
                    if answered.is_set() and self.delay > 0:
                        time.sleep(self.delay)
                    answered.clear()
                else:
                    answered.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)


class ProxyProcess:
    """A :class:`SwitchableProxy` in its own process, so its threads do not compete for the
    measured process's GIL. ``stop()`` / ``start()`` switch it off and on (signals)."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyProcess:
        host, port = self.upstream
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loopback",
                f"{host}:{port}",
                str(self.delay),
                str(self.port),
            ],
            cwd=_REPO_ROOT,
        )
        self._wait_listening(True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)
        self._wait_listening(False)

    def start(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR2)
        self._wait_listening(True)

    def _wait_listening(self, listening: bool) -> None:
        from bench.common import BenchError  # noqa: PLC0415

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if listening:
                    return
            except OSError:
                if not listening:
                    return
            time.sleep(0.02)
        raise BenchError("the latency proxy did not switch")


def _serve(upstream: str, delay: float, port: int) -> None:
    """Run a proxy until terminated; SIGUSR1 stops it, SIGUSR2 starts it again."""
    host, upstream_port = upstream.rsplit(":", 1)
    proxy = SwitchableProxy((host, int(upstream_port)), delay, port)
    signal.signal(signal.SIGUSR1, lambda *_: proxy.stop())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.start())
    proxy.start()
    while True:
        signal.pause()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.loopback", description=__doc__)
    parser.add_argument("upstream", metavar="HOST:PORT")
    parser.add_argument("delay", type=float, help="seconds added to every request")
    parser.add_argument("port", type=int)
    arguments = parser.parse_args()
    _serve(arguments.upstream, arguments.delay, arguments.port)


__all__ = ["ProxyProcess", "SwitchableProxy", "free_port"]
