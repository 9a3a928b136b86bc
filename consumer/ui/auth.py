"""Who may read the viewer: an optional bearer token or basic-auth credentials.

On a loopback address the viewer may run without authentication (only this machine can reach
it); on any other address :func:`check_bind` refuses to start without credentials. Mounted
inside an application, the viewer sits behind that application's own authentication and
needs none of this.

Credentials are compared in constant time (:func:`hmac.compare_digest`) and never logged or
shown: a failed request gets ``401`` with a ``WWW-Authenticate`` challenge and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from sqla_audit.errors import ConfigurationError

REALM = "sqla-audit"


@dataclass(frozen=True)
class Credentials:
    """A bearer token and/or one basic-auth user; a request needs to match one of them."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ConfigurationError("the viewer's token must not be empty")
        if (self.username is None) != (self.password is None):
            raise ConfigurationError("basic auth needs both a user name and a password")
        if self.username is not None and (not self.username or ":" in self.username):
            raise ConfigurationError("the basic-auth user name must be non-empty, without ':'")
        if self.password is not None and not self.password:
            raise ConfigurationError("the basic-auth password must not be empty")

    @classmethod
    def parse_basic(cls, text: str, token: str | None = None) -> Credentials:
        """``USER:PASSWORD`` (the password may contain ``:``)."""
        username, colon, password = text.partition(":")
        if not colon:
            raise ConfigurationError("basic auth must be given as USER:PASSWORD")
        return cls(token=token, username=username, password=password)

    @property
    def configured(self) -> bool:
        return self.token is not None or self.username is not None

    def allows(self, authorization: str | None) -> bool:
        """True if the ``Authorization`` header matches the token or the user."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme == "basic" and self.username is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            expected = f"{self.username}:{self.password}"
            return hmac.compare_digest(decoded.encode(), expected.encode())
        return False

    def challenge(self) -> str:
        if self.username is not None:
            return f'Basic realm="{REALM}", charset="UTF-8"'
        return f'Bearer realm="{REALM}"'


class RequireCredentials:
    """ASGI middleware: HTTP requests without matching credentials get ``401``."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        if not credentials.configured:
            raise ConfigurationError("RequireCredentials needs a token or a basic-auth user")
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if self.credentials.allows(header):
            await self.app(scope, receive, send)
            return
        body = b"authentication required\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", self.credentials.challenge().encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address, or a name that resolves only to loopback."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses
    )


def check_bind(host: str, credentials: Credentials | None) -> None:
    """Refuse a non-loopback address without credentials (:class:`ConfigurationError`)."""
    if is_loopback(host):
        return
    if credentials is None or not credentials.configured:
        raise ConfigurationError(
            f"refusing to serve the audit trail on {host} (not a loopback address) without "
            "authentication: set a token (--token / SQLA_AUDIT_UI_TOKEN) or basic auth "
            "(--basic-auth / SQLA_AUDIT_UI_BASIC_AUTH), or bind to 127.0.0.1"
        )


__all__ = ["REALM", "Credentials", "RequireCredentials", "check_bind", "is_loopback"]
