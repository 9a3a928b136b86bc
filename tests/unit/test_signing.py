"""Event signatures on the producer: keys, the signer, signed envelopes on the wire."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.config import AuditConfig
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.errors import ConfigurationError, DecodeError
from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.signing import (
    ALGORITHM,
    EventSigner,
    Keyring,
    keyring_from_env,
    parse_keyring,
    signed_content,
)
from sqla_audit.testing import assert_valid_event

KEY_A = b"a" * 32
KEY_B = b"b" * 32
DOCS = Path(__file__).resolve().parents[2] / "docs" / "event-schema.md"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "signed_item"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    price: Mapped[float] = mapped_column(default=1.5)


def _capture(
    signer: EventSigner | None, *, outbox: bool = False
) -> tuple[list[ChangeEvent], list[str]]:
    """Commit one transaction of three changes; the events and their wire texts."""
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    publisher = InMemoryPublisher()
    writer = InMemoryTransactionalWriter()
    kwargs: dict[str, Any] = {"outbox": writer} if outbox else {"publisher": publisher}
    factory = sessionmaker(engine)
    install_audit(factory, service="shop", signing=signer, **kwargs)
    try:
        with factory() as session:
            session.add_all([Item(id=1, name="a"), Item(id=2, name="b\u00e9")])
            session.flush()
            session.get(Item, 1).name = "a2"  # type: ignore[union-attr]
            session.add(Item(id=3, name="c", price=2.25))
            session.commit()
    finally:
        uninstall_audit(factory)
    events = writer.events if outbox else publisher.events
    return events, [event.to_json() for event in events]


def test_keyring_parses_ids_and_base64_keys_first_one_signs() -> None:
    """``kid=base64,...``: every key verifies, the first signs unless another is named."""
    ring = parse_keyring(f"new={_b64(KEY_B)}, old={_b64(KEY_A)}")
    assert ring.signing_key_id == "new"
    assert ring.key("old") == KEY_A
    assert ring.key("new") == KEY_B
    assert ring.key("gone") is None
    assert (
        parse_keyring(f"new={_b64(KEY_B)},old={_b64(KEY_A)}", signing_key_id="old").signing_key_id
        == "old"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nokey",
        "k=",
        "=abc",
        f"k={_b64(b'short')}",
        "k=!!notbase64!!",
        f"k={_b64(KEY_A)},k={_b64(KEY_B)}",
    ],
)
def test_keyring_refuses_malformed_text_without_echoing_it(text: str) -> None:
    """A malformed key list is a configuration error whose message holds no key material."""
    with pytest.raises(ConfigurationError) as caught:
        parse_keyring(text)
    assert _b64(KEY_A) not in str(caught.value)
    assert _b64(KEY_B) not in str(caught.value)


def test_keyring_repr_holds_no_key_material() -> None:
    """Neither the repr of a keyring nor of a signer shows a key."""
    ring = Keyring(signing_key_id="k", keys={"k": KEY_A})
    assert "aaaa" not in repr(ring)
    assert "aaaa" not in repr(EventSigner(ring))


def test_keyring_from_env_reads_the_variable() -> None:
    """``SQLA_AUDIT_SIGNING_KEYS`` supplies the keys; its absence is a configuration error."""
    ring = keyring_from_env({"SQLA_AUDIT_SIGNING_KEYS": f"k1={_b64(KEY_A)}"})
    assert ring.signing_key_id == "k1"
    with pytest.raises(ConfigurationError, match="SQLA_AUDIT_SIGNING_KEYS"):
        keyring_from_env({})


def test_unsigned_events_carry_no_new_fields() -> None:
    """Without a signer the wire text has exactly the fields it had before."""
    _events, texts = _capture(None)
    for text in texts:
        data = json.loads(text)
        assert "signature" not in data
        assert "transaction_event_count" not in data


def test_signed_events_carry_count_and_a_verifiable_mac() -> None:
    """Each event carries its transaction's event count and an HMAC over its canonical form."""
    events, texts = _capture(EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A})))
    assert len(events) == 3
    for text in texts:
        data = json.loads(text)
        assert data["transaction_event_count"] == 3
        assert data["signature"]["alg"] == ALGORITHM == "HMAC-SHA256"
        assert data["signature"]["kid"] == "k1"
        expected = hmac.new(KEY_A, signed_content(data), hashlib.sha256).hexdigest()
        assert data["signature"]["mac"] == expected
        assert_valid_event(data)


def test_outbox_events_are_signed_too() -> None:
    """Outbox mode hands the writer signed events (the row stores the signed event JSON)."""
    events, texts = _capture(
        EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A})), outbox=True
    )
    assert events
    assert all(json.loads(text)["signature"]["kid"] == "k1" for text in texts)


def test_signature_survives_the_wire_round_trip() -> None:
    """A decoded signed event re-encodes to the same text and the same signed content."""
    _events, texts = _capture(EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A})))
    for text in texts:
        decoded = ChangeEvent.from_json(text)
        assert decoded.signature is not None
        assert decoded.transaction_event_count == 3
        assert decoded.to_json() == text
        assert signed_content(decoded.to_dict()) == signed_content(json.loads(text))


def test_signer_callable_is_refreshed_and_failures_keep_the_last_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callable key source is asked again after ``refresh_seconds``; when it fails the last
    keyring keeps signing and the log names the failure without any key."""
    now = [0.0]
    rings = [Keyring(signing_key_id="k1", keys={"k1": KEY_A})]
    calls: list[int] = []

    def source() -> Keyring:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("secrets manager down")
        return rings[-1]

    signer = EventSigner(source, refresh_seconds=10, clock=lambda: now[0])
    assert signer.keyring().signing_key_id == "k1"
    rings.append(Keyring(signing_key_id="k2", keys={"k2": KEY_B, "k1": KEY_A}))
    assert signer.keyring().signing_key_id == "k1"  # cached
    now[0] = 11
    assert signer.keyring().signing_key_id == "k2"
    now[0] = 22
    with caplog.at_level(logging.WARNING):
        assert signer.keyring().signing_key_id == "k2"
    assert "secrets manager down" in caplog.text
    assert _b64(KEY_B) not in caplog.text
    assert "bbbb" not in caplog.text


def test_signer_needs_a_signing_key() -> None:
    """A keyring without a signing key (verify-only) cannot sign."""
    with pytest.raises(ConfigurationError, match="signing key"):
        EventSigner(Keyring(signing_key_id=None, keys={"k1": KEY_A}))


def test_audit_config_accepts_a_signer() -> None:
    """``AuditConfig(signing=...)`` takes a signer and refuses anything else."""
    signer = EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A}))
    assert AuditConfig(service="s", signing=signer).signing is signer
    with pytest.raises(ConfigurationError, match="signing"):
        AuditConfig(service="s", signing="k1")  # type: ignore[arg-type]


def _wire(**changes: Any) -> dict[str, Any]:
    _events, texts = _capture(EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A})))
    data: dict[str, Any] = json.loads(texts[0])
    data.update(changes)
    return {key: value for key, value in data.items() if value is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transaction_event_count": 0}, "transaction_event_count"),
        ({"transaction_event_count": "3"}, "transaction_event_count"),
        ({"transaction_event_count": True}, "transaction_event_count"),
        ({"transaction_event_count": 1, "sequence": 1}, "transaction_event_count"),
        ({"transaction_event_count": _DROP}, "transaction_event_count"),
        ({"signature": "abc"}, "signature"),
        ({"signature": {"alg": "HMAC-SHA256", "kid": "k1"}}, "signature"),
        ({"signature": {"alg": "HMAC-SHA256", "kid": "", "mac": "00"}}, "signature.kid"),
        ({"signature": {"alg": "HMAC-SHA256", "kid": "k", "mac": "x" * 200}}, "signature.mac"),
        ({"signature": {"alg": "HMAC-SHA256", "kid": "k", "mac": "00", "extra": 1}}, "signature"),
    ],
)
def test_malformed_signature_fields_are_refused_at_decode(
    changes: dict[str, Any], message: str
) -> None:
    """The new envelope fields are decoded strictly, naming the field."""
    with pytest.raises(DecodeError, match=re.escape(message)):
        ChangeEvent.from_dict(_wire(**changes))


def _documented_example() -> tuple[dict[str, Any], str, str, str]:
    """The signed example of docs/event-schema.md: envelope, canonical text, key, mac."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Signatures", 1)[1]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.DOTALL)
    envelope = json.loads(next(body for lang, body in blocks if lang == "json"))
    canonical = next(body for lang, body in blocks if lang == "text").strip("\n")
    key = re.search(r"key `([^`]+)`", section)
    mac = re.search(r"mac `([0-9a-f]{64})`", section)
    assert key is not None
    assert mac is not None
    return envelope, canonical, key.group(1), mac.group(1)


def test_documented_example_recomputes_independently() -> None:
    """The worked example's canonical bytes and HMAC are recomputed without the library
    (sorted compact JSON, hmac) and with it, and all agree with the document."""
    envelope, canonical, key_text, mac = _documented_example()
    unsigned = {k: v for k, v in envelope.items() if k != "signature"}
    independent = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert independent == canonical
    assert signed_content(envelope) == canonical.encode("utf-8")
    key = key_text.encode("utf-8")
    assert hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest() == mac
    assert envelope["signature"]["mac"] == mac
    decoded = ChangeEvent.from_dict(envelope)
    assert decoded.signature is not None
    assert decoded.signature.mac == mac
    assert signed_content(decoded.to_dict()) == canonical.encode("utf-8")


def test_signature_dataclass_is_immutable() -> None:
    """A decoded signature cannot be changed in place."""
    _events, texts = _capture(EventSigner(Keyring(signing_key_id="k1", keys={"k1": KEY_A})))
    signature = ChangeEvent.from_json(texts[0]).signature
    assert signature is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        signature.mac = "00"  # type: ignore[misc]
