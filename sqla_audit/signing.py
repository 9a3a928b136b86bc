"""Event signatures: HMAC-SHA256 over a canonical byte form of the envelope.

A producer configured with an :class:`EventSigner` (``install_audit(..., signing=...)``)
adds two fields to every event it builds (docs/event-schema.md, *Signatures*):

* ``transaction_event_count`` -- how many events its transaction has, so a reader can tell
  that one is missing;
* ``signature`` -- ``{"alg": "HMAC-SHA256", "kid": KEY_ID, "mac": HEX}``: the HMAC-SHA256,
  under the key ``KEY_ID``, of :func:`signed_content` of the envelope.

The signed content is the envelope object without its ``signature`` member, written in the
canonical form of :func:`canonical_json`: RFC 8785 (JSON Canonicalization Scheme) --
members sorted by the UTF-16 code units of their names, no insignificant whitespace, UTF-8,
strings escaped only where JSON requires it, floats in ECMAScript's shortest form -- with one
difference: integers keep every digit (RFC 8785 limits numbers to IEEE doubles, which would
round a 64-bit key). Any language with an HMAC and a JSON parser that keeps integers exact
can reproduce it.

Keys. A :class:`Keyring` maps key ids to secret keys and names the one that signs; the
others still verify, which is how keys rotate (add the new key everywhere, switch the signing
key, retire the old one once nothing signed with it is in flight). Keys come from
configuration: :func:`keyring_from_env` reads ``SQLA_AUDIT_SIGNING_KEYS``
(``kid=BASE64,kid=BASE64``, the first signs), or a callable returning a :class:`Keyring`
lets a KMS or secrets manager supply them; the signer asks it again every
``refresh_seconds``. No key material is ever logged or shown in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, Final, Protocol, TypeAlias, TypeVar

from sqla_audit.errors import ConfigurationError, DecodeError
from sqla_audit.wire_checks import invalid, preview
from sqla_audit.wire_limits import MAX_KEY_ID_CHARS, MAX_MAC_CHARS


class Signable(Protocol):
    """What the signer needs of an event (:class:`~sqla_audit.events.ChangeEvent`): its
    wire form. (Typed structurally: the events module imports this one.)"""

    def to_dict(self) -> dict[str, Any]: ...


_Event = TypeVar("_Event", bound=Signable)

logger = logging.getLogger(__name__)

#: The one algorithm this version signs and verifies with.
ALGORITHM: Final = "HMAC-SHA256"

#: Name of the envelope member that holds the signature (left out of the signed content).
SIGNATURE_FIELD: Final = "signature"

#: Name of the envelope member that holds the transaction's event count (signed).
EVENT_COUNT_FIELD: Final = "transaction_event_count"

#: Environment variable :func:`keyring_from_env` reads.
KEYS_ENV: Final = "SQLA_AUDIT_SIGNING_KEYS"

#: Shortest accepted key, in bytes (128 bits; 32 random bytes are recommended).
MIN_KEY_BYTES: Final = 16

#: Default seconds between two calls of a callable key source.
DEFAULT_REFRESH_SECONDS: Final = 300.0

_SIGNATURE_KEYS: Final = frozenset({"alg", "kid", "mac"})


# --------------------------------------------------------------------------- canonical form


def _float_text(value: float) -> str:
    """ECMAScript's Number::toString of a finite float (RFC 8785, section 3.2.2.3)."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        raise DecodeError(f"the number {value!r} has no canonical form (not JSON)")
    sign = "-" if value < 0 else ""
    # repr is the shortest text that reads back as the same float, as ECMAScript requires
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = (whole + fraction).lstrip("0")
    # n: the position of the decimal point relative to the digits (value = 0.d1d2... x 10^n)
    point = int(exponent_text) if exponent_text else 0
    if whole == "0":  # 0.000ddd: the zeros after the point move it left
        point -= len(fraction) - len(fraction.lstrip("0"))
    else:
        point += len(whole)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        exponent = point - 1
        sign_e = "+" if exponent >= 0 else "-"
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{head}e{sign_e}{abs(exponent)}"
    return sign + text


def _key_text(name: Any) -> str:
    """An object name as the JSON encoder writes it (``1`` -> ``"1"``, ``True`` -> ``"true"``)."""
    if isinstance(name, str):
        return name
    if name is None or isinstance(name, bool | int | float):
        text = json.dumps(name, allow_nan=False)
        return text.strip('"')
    raise DecodeError(f"an object key {preview(name)} is not a string (not JSON)")


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be")


def _write(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))
    elif kind is dict:
        names = list(value)
        if not all(isinstance(name, str) for name in names):  # as the JSON encoder writes them
            value = {_key_text(name): item for name, item in value.items()}
            names = list(value)
        # code-point order equals UTF-16 order unless a name holds U+E000 or above
        names.sort(key=_utf16_key if any(n and max(n) >= "\ue000" for n in names) else None)
        out.append("{")
        first = True
        for name in names:
            if not first:
                out.append(",")
            first = False
            out.append(encode_basestring(str.__str__(name)))
            out.append(":")
            _write(value[name], out)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float:
        out.append(_float_text(value))
    elif isinstance(value, str):  # a subclass (SQLAlchemy's quoted_name, a str Enum)
        out.append(encode_basestring(str.__str__(value)))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float_text(float(value)))
    else:
        raise DecodeError(f"a {kind.__name__} is not a JSON value and has no canonical form")


#: Sorted, compact, UTF-8 JSON in C: the canonical form itself unless a float or a name at
#: or above U+E000 occurs (see :func:`canonical_json`).
_SORTED: Final = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
)

#: Outside string literals, a float token whose Python text is not ECMAScript's: an integral
#: float (``2.0``) or one with an exponent (``1e-07``, ``1e+16``). Every other float
#: (``10.5``, ``0.0001``) is written alike by both; integers and literals have neither form.
_FLOAT: Final = re.compile(r"\d(?:\.0(?!\d)|[eE])")


def _has_float(text: str) -> bool:
    """Whether compact JSON ``text`` holds a float token outside its string literals.

    Escaped backslashes, then escaped quotes, are dropped (string methods, in C); what is
    left splits on ``"`` into outside and inside pieces, alternately.
    """
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(text.split('"')[::2])
    return _FLOAT.search(outside) is not None


#: Such a token whole (``2.0``, ``-0.0``, ``1e-07``, ``1.5e+16``).
_FLOAT_TOKEN: Final = re.compile(r"-?\d+(?:\.0(?!\d)|(?:\.\d+)?[eE][-+]?\d+)")


def _es_float(match: re.Match[str]) -> str:
    return _float_text(float(match.group()))


def _rewrite_floats(text: str) -> str | None:
    """``text`` with its float tokens in ECMAScript's form, or ``None`` when a string
    literal holds an escaped quote (then splitting on ``"`` would not find the literals)."""
    if '\\"' in text:
        return None
    parts = text.split('"')  # outside, inside, outside...: floats are only outside
    # one substitution over every outside piece, joined by NUL (escaped in JSON text)
    outside = _FLOAT_TOKEN.sub(_es_float, "\0".join(parts[::2]))
    parts[::2] = outside.split("\0")
    return '"'.join(parts)


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of a JSON value (see the module docstring).

    The C JSON encoder writes it with sorted keys (its string escapes are those of RFC 8785);
    floats in its output are then rewritten in ECMAScript's form. Only a value with an object
    name at or above U+E000 (where UTF-16 order may differ from code-point order) is
    written by a walk that applies every rule. Object names that are not strings are
    written as the JSON encoder writes them (``1`` -> ``"1"``), as they travel on the wire.

    Raises :class:`DecodeError` for what has no canonical form: a non-finite number, a
    value that is not JSON data, text that is not valid Unicode (a lone surrogate).
    """
    try:
        text: str | None = _SORTED.encode(value)
    except (TypeError, ValueError):
        text = None  # the walk says what is wrong
    if text is not None and _has_float(text):  # Python's float text -> ECMAScript's
        text = _rewrite_floats(text)
    if text is None or (not text.isascii() and max(text) >= "\ue000"):
        out: list[str] = []
        _write(value, out)
        text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError("text holding a lone surrogate has no canonical form") from exc


def signed_content(envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the envelope without ``signature``, canonical."""
    return canonical_json({k: v for k, v in envelope.items() if k != SIGNATURE_FIELD})


def compute_mac(key: bytes, content: bytes) -> str:
    """HMAC-SHA256 of ``content`` under ``key``, as lowercase hex."""
    return hmac.digest(key, content, "sha256").hex()


# --------------------------------------------------------------------------- wire field


@dataclass(frozen=True, slots=True)
class EventSignature:
    """The ``signature`` member of an envelope: algorithm, key id and MAC (lowercase hex)."""

    algorithm: str
    key_id: str
    mac: str

    def to_dict(self) -> dict[str, str]:
        return {"alg": self.algorithm, "kid": self.key_id, "mac": self.mac}

    @classmethod
    def from_dict(cls, data: Any) -> EventSignature:
        """Validate the wire member; :class:`DecodeError` names what is wrong."""
        if type(data) is not dict or set(data) != _SIGNATURE_KEYS:
            raise invalid(
                SIGNATURE_FIELD,
                f"must be an object with exactly alg, kid and mac, got {preview(data)}",
            )
        for name, limit in (("alg", 32), ("kid", MAX_KEY_ID_CHARS), ("mac", MAX_MAC_CHARS)):
            text = data[name]
            if type(text) is not str or not text or len(text) > limit or not text.isprintable():
                raise invalid(
                    f"signature.{name}",
                    f"must be printable text of 1 to {limit} characters, got {preview(text)}",
                )
        return cls(algorithm=data["alg"], key_id=data["kid"], mac=data["mac"])


# --------------------------------------------------------------------------- keys


def _check_key_id(key_id: str) -> None:
    if (
        not isinstance(key_id, str)
        or not key_id
        or len(key_id) > MAX_KEY_ID_CHARS
        or not key_id.isprintable()
        or any(c in key_id for c in ",= ")
    ):
        raise ConfigurationError(
            f"a signing key id must be 1 to {MAX_KEY_ID_CHARS} printable characters without "
            f"',', '=' or spaces, got {preview(key_id)}"
        )


@dataclass(frozen=True, slots=True)
class Keyring:
    """Signing keys by key id: ``signing_key_id`` signs (``None``: verify only), all verify."""

    signing_key_id: str | None
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.keys, Mapping) or not self.keys:
            raise ConfigurationError("a keyring needs at least one key")
        for key_id, key in self.keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"signing key {key_id!r} must be at least {MIN_KEY_BYTES} bytes"
                )
        if self.signing_key_id is not None and self.signing_key_id not in self.keys:
            raise ConfigurationError(
                f"the signing key id {self.signing_key_id!r} is not among the keys "
                f"({', '.join(sorted(self.keys))})"
            )
        object.__setattr__(self, "keys", dict(self.keys))

    def key(self, key_id: str) -> bytes | None:
        """The key of ``key_id``, or ``None`` when this keyring does not know it."""
        return self.keys.get(key_id)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))


def _decode_key(key_id: str, text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"signing key {key_id!r} is not base64") from None


def parse_keyring(text: str, *, signing_key_id: str | None = None) -> Keyring:
    """A keyring from ``kid=BASE64[,kid=BASE64...]``; the first key signs unless
    ``signing_key_id`` names another. Error messages never repeat key material."""
    keys: dict[str, bytes] = {}
    first: str | None = None
    for index, part in enumerate(text.split(",")):
        entry = part.strip()
        key_id, sep, encoded = entry.partition("=")
        key_id = key_id.strip()
        encoded = encoded.strip()
        if not sep or not key_id or not encoded:
            raise ConfigurationError(
                f"signing keys: entry {index + 1} is not kid=BASE64 "
                "(the list is kid=BASE64,kid=BASE64...)"
            )
        _check_key_id(key_id)
        if key_id in keys:
            raise ConfigurationError(f"signing keys: key id {key_id!r} is listed twice")
        keys[key_id] = _decode_key(key_id, encoded)
        first = first or key_id
    return Keyring(signing_key_id=signing_key_id or first, keys=keys)


def keyring_from_env(
    env: Mapping[str, str] | None = None,
    name: str = KEYS_ENV,
    *,
    signing_key_id: str | None = None,
) -> Keyring:
    """The keyring in environment variable ``name`` (see :func:`parse_keyring`)."""
    values = os.environ if env is None else env
    text = values.get(name)
    if not text or not text.strip():
        raise ConfigurationError(f"no signing keys: set {name} to kid=BASE64[,kid=BASE64...]")
    return parse_keyring(text, signing_key_id=signing_key_id)


#: Where keys come from: a keyring, or a callable that returns one (a KMS, a secrets manager).
KeySource: TypeAlias = Keyring | Callable[[], Keyring]


class KeyringCache:
    """A :data:`KeySource` read through a cache: a callable is asked again after
    ``refresh_seconds``; if it then fails, the last keyring is kept and the failure logged
    (its message only, never a key). The first call must succeed."""

    def __init__(
        self,
        source: KeySource,
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(source, Keyring) and not callable(source):
            raise ConfigurationError(
                f"signing keys must be a Keyring or a callable returning one, got "
                f"{type(source).__name__}"
            )
        if refresh_seconds <= 0:
            raise ConfigurationError("refresh_seconds must be positive")
        self._source = source
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ring = self._load() if not isinstance(source, Keyring) else source
        self._loaded_at = clock()

    def _load(self) -> Keyring:
        assert not isinstance(self._source, Keyring)
        ring = self._source()
        if not isinstance(ring, Keyring):
            raise ConfigurationError(
                f"the signing key source returned {type(ring).__name__}, not a Keyring"
            )
        return ring

    def keyring(self) -> Keyring:
        """The current keyring."""
        if isinstance(self._source, Keyring) or self._clock() - self._loaded_at < self._refresh:
            return self._ring
        with self._lock:
            if self._clock() - self._loaded_at >= self._refresh:
                try:
                    self._ring = self._load()
                except Exception as exc:  # noqa: BLE001 -- keep signing with the last keys
                    logger.warning(
                        "sqla-audit: the signing key source failed (%s: %s); the previous "
                        "keys stay in use",
                        type(exc).__name__,
                        exc,
                    )
                self._loaded_at = self._clock()
        return self._ring


class EventSigner:
    """Signs the events of a transaction (``AuditConfig.signing``)."""

    def __init__(
        self,
        keys: KeySource,
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = KeyringCache(keys, refresh_seconds=refresh_seconds, clock=clock)
        if self._keys.keyring().signing_key_id is None:
            raise ConfigurationError("the keyring has no signing key (signing_key_id is None)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, name: str = KEYS_ENV) -> EventSigner:
        """A signer with the keys of environment variable ``name`` (read once, now)."""
        return cls(keyring_from_env(env, name))

    def __repr__(self) -> str:
        ring = self._keys.keyring()
        return f"EventSigner(signing_key_id={ring.signing_key_id!r})"

    def keyring(self) -> Keyring:
        return self._keys.keyring()

    def sign(self, events: Sequence[_Event]) -> list[_Event]:
        """Each event with its ``signature``; every event must carry its transaction's
        ``transaction_event_count`` already (it is part of the signed content)."""
        ring = self._keys.keyring()
        key_id = ring.signing_key_id
        if key_id is None:  # a refreshed keyring without a signing key
            raise ConfigurationError("the keyring has no signing key (signing_key_id is None)")
        key = ring.keys[key_id]
        return [
            dataclasses.replace(
                event,  # type: ignore[type-var]
                signature=EventSignature(ALGORITHM, key_id, compute_mac(key, event_content(event))),
            )
            for event in events
        ]


def event_content(event: Signable) -> bytes:
    """The signed content of a :class:`~sqla_audit.events.ChangeEvent` (its wire form)."""
    return signed_content(event.to_dict())


__all__ = [
    "ALGORITHM",
    "DEFAULT_REFRESH_SECONDS",
    "EVENT_COUNT_FIELD",
    "KEYS_ENV",
    "MIN_KEY_BYTES",
    "SIGNATURE_FIELD",
    "EventSignature",
    "EventSigner",
    "KeySource",
    "Keyring",
    "KeyringCache",
    "canonical_json",
    "compute_mac",
    "event_content",
    "keyring_from_env",
    "parse_keyring",
    "signed_content",
]
