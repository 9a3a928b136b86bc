"""The boto3 client path of SNS publishing: the client, and its body encoded once, in C.

:func:`build_sns_client` builds a boto3 SNS client from the standard AWS configuration with
botocore's own retries kept low (the sender retries per entry). :func:`form_encode` gives the
``application/x-www-form-urlencoded`` body ``urlencode`` would, computed with ``str.translate``;
:func:`install_fast_body` makes a boto3 client use it for ``PublishBatch`` (botocore
URL-encoded the body twice per call in pure Python, half of its CPU per call). The lean path
(:mod:`sqla_audit.publishers.sns_http`) uses the same encoder.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any, Final

from botocore.exceptions import BotoCoreError

from sqla_audit.errors import ConfigurationError


def build_sns_client(
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    max_attempts: int = 2,
    connect_timeout: float = 3.0,
    read_timeout: float = 10.0,
    max_pool_connections: int = 10,
    session: Any = None,
) -> Any:
    """An SNS client from the standard AWS configuration, with botocore's retries kept low.

    Region, credentials and endpoint come from the usual chain (arguments, then
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, the credential chain, ``AWS_ENDPOINT_URL``...).
    botocore retries whole calls only; :class:`SNSSender` retries per entry, so the
    client's own budget is small to keep the total bounded. ``max_pool_connections`` is the
    number of HTTP connections kept open, one per ``PublishBatch`` call in flight.
    """
    from botocore.config import Config  # noqa: PLC0415

    if session is None:
        import boto3  # noqa: PLC0415 -- optional dependency, loaded when SNS is used

        session = boto3.session.Session()

    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    try:
        return session.client(
            "sns", region_name=region_name, endpoint_url=endpoint_url, config=config
        )
    except (BotoCoreError, ValueError) as exc:  # no region, malformed endpoint...
        raise ConfigurationError(f"cannot build the SNS client: {exc}") from exc


#: ``application/x-www-form-urlencoded`` of each byte value: unreserved characters stay,
#: space becomes ``+``, everything else ``%XX`` -- what ``urlencode`` does.
_FORM_ESCAPES: Final = tuple(
    chr(byte)
    if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "_.-~")
    else "+"
    if byte == 0x20
    else f"%{byte:02X}"
    for byte in range(256)
)

#: Text that needs no escaping at all (most field names and short values).
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]*")


def form_encode(fields: dict[str, Any]) -> bytes:
    """The body ``urlencode(fields)`` would give, computed in C.

    botocore encodes a query-protocol body with ``urllib.parse.urlencode`` -- a Python loop
    over every character, twice per call (once more for the signature) -- which was half of
    the CPU a ``PublishBatch`` of ten 1 KiB events cost. Here each byte is looked up in a
    table by ``operator.itemgetter`` and the pieces joined, without a Python-level loop.
    """
    return "&".join(
        f"{form_value(str(key))}={form_value(str(value))}" for key, value in fields.items()
    ).encode("ascii")


def form_value(text: str) -> str:
    """One name or value of a form body, escaped as ``urllib.parse.quote_plus`` does."""
    if _UNRESERVED.fullmatch(text):
        return text
    data = text.encode("utf-8")
    if len(data) == 1:
        return _FORM_ESCAPES[data[0]]
    pieces: tuple[str, ...] = itemgetter(*data)(_FORM_ESCAPES)
    return "".join(pieces)


def _encode_body_once(params: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` hook: hand the request body over already encoded."""
    body = params.get("body")
    if isinstance(body, dict):
        params["body"] = form_encode(body)


def install_fast_body(client: Any) -> None:
    """Register :func:`_encode_body_once` on a boto3 SNS client (no-op for test doubles)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        events.register("before-call.sns.PublishBatch", _encode_body_once)


__all__ = ["build_sns_client", "form_encode", "form_value", "install_fast_body"]
