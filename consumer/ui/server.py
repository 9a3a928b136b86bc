"""Serving the viewer: bind the address first, say where it listens, then run uvicorn.

The socket is bound before uvicorn starts, so the address printed is the one that accepts
connections (``--port 0`` prints the port the system chose) and a port in use is one clear
error. uvicorn logs through the command line's logging (``log_config=None``): request lines
carry paths and query strings -- table names, record ids, actors -- never the
``Authorization`` header.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TextIO

from starlette.types import ASGIApp

from sqla_audit.errors import ConfigurationError


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            family = socket.AF_INET6
    except ValueError:
        pass
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def address(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return f"http://{shown}:{port}/"


def serve(app: ASGIApp, sock: socket.socket, out: TextIO, *, what: str = "the audit trail") -> None:
    """Print where ``app`` listens, then serve it until interrupted (Ctrl+C)."""
    try:
        import uvicorn  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            f"the viewer needs the ui extra: pip install 'sqla-audit[ui]' ({exc})"
        ) from exc
    print(f"sqla-audit ui: serving {what} at {address(sock)} (Ctrl+C to stop)", file=out)
    out.flush()
    config = uvicorn.Config(app, log_config=None, lifespan="off", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["address", "bind", "serve"]
