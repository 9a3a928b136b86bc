"""The consumer's signature policy: require / verify / off, at decode time."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from consumer.decoding import Decoder
from consumer.settings import load_signature_config
from consumer.sinks.memory import MemoryStore
from consumer.sources.memory import MemorySource
from consumer.testing import make_event
from consumer.verification import POLICIES, EventVerifier, SignatureError
from consumer.worker import Worker
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import ChangeEvent
from sqla_audit.signing import EventSigner, Keyring

KEY_OLD = b"o" * 32
KEY_NEW = b"n" * 32
RING = Keyring(signing_key_id="new", keys={"new": KEY_NEW, "old": KEY_OLD})


def _signed(key_id: str = "new", count: int = 1, **kwargs: Any) -> ChangeEvent:
    ring = Keyring(signing_key_id=key_id, keys={"new": KEY_NEW, "old": KEY_OLD})
    event = dataclasses.replace(make_event(**kwargs), transaction_event_count=count)
    return EventSigner(ring).sign([event])[0]


def _tampered() -> str:
    data = json.loads(_signed().to_json())
    data["actor"]["id"] = "mallory"
    return json.dumps(data)


def _decoder(policy: str, ring: Keyring | None = RING) -> Decoder:
    return Decoder(verifier=EventVerifier(policy, ring))  # type: ignore[arg-type]


def test_policies_are_the_documented_three() -> None:
    """The policies are require, verify and off."""
    assert POLICIES == ("require", "verify", "off")


def test_require_accepts_a_valid_signature_and_refuses_the_rest() -> None:
    """Under ``require``: a valid signature passes; unsigned, tampered, unknown-key and
    unknown-algorithm events are refused with a reason naming the problem."""
    decoder = _decoder("require")
    assert decoder.decode(_signed().to_json())[0].signature is not None
    cases = {
        make_event().to_json(): "unsigned",
        _tampered(): "does not match",
        _signed().to_json().replace('"kid":"new"', '"kid":"gone"'): "unknown signing key",
        _signed().to_json().replace('"alg":"HMAC-SHA256"', '"alg":"HMAC-MD5"'): "algorithm",
    }
    for body, reason in cases.items():
        with pytest.raises(SignatureError, match=reason):
            decoder.decode(body)


def test_verify_checks_signatures_when_present() -> None:
    """Under ``verify``: unsigned events pass, a present signature must be valid."""
    decoder = _decoder("verify")
    assert decoder.decode(make_event().to_json())
    assert decoder.decode(_signed().to_json())
    with pytest.raises(SignatureError, match="does not match"):
        decoder.decode(_tampered())


def test_off_checks_nothing() -> None:
    """Under ``off`` nothing is checked, and no keys are needed."""
    decoder = _decoder("off", None)
    assert decoder.decode(_tampered())
    assert decoder.decode(make_event().to_json())


def test_rotation_old_key_valid_until_retired() -> None:
    """Old and new keys both verify during the overlap; once the old key is removed from
    the consumer's keyring, events it signed are refused under ``require``."""
    overlap = _decoder("require")
    assert overlap.decode(_signed("old").to_json())
    assert overlap.decode(_signed("new").to_json())
    retired = _decoder("require", Keyring(signing_key_id=None, keys={"new": KEY_NEW}))
    assert retired.decode(_signed("new").to_json())
    with pytest.raises(SignatureError, match="unknown signing key 'old'"):
        retired.decode(_signed("old").to_json())


def test_a_bundle_with_one_bad_event_is_refused_whole() -> None:
    """A bundled message is one unit: one event failing the policy refuses the message."""
    body = json.dumps([json.loads(_signed().to_json()), json.loads(make_event().to_json())])
    with pytest.raises(SignatureError, match="unsigned"):
        _decoder("require").decode(body)


def test_require_and_verify_need_keys() -> None:
    """``require`` and ``verify`` without a keyring are a configuration error; an unknown
    policy too."""
    with pytest.raises(ConfigurationError, match="keys"):
        EventVerifier("require", None)
    with pytest.raises(ConfigurationError, match="policy"):
        EventVerifier("maybe", RING)  # type: ignore[arg-type]


def test_worker_parks_forged_messages_and_stores_signed_ones() -> None:
    """Under ``require`` the worker rejects unsigned and forged messages with kind
    ``signature`` (counted) while the signed messages of the same batch are stored."""
    good = [_signed(record_id=str(i)) for i in range(3)]
    source = MemorySource(dlq=True)
    for event in good:
        source.send(event.to_json())
    source.send(make_event(record_id="unsigned").to_json())
    source.send(_tampered())
    store = MemoryStore()
    worker = Worker(source, store, decoder=_decoder("require"), batch_size=10, concurrency=1)
    worker.run(until_empty=True)
    stored = {record.record_id for record in store.records}
    assert stored == {"0", "1", "2"}
    reasons = [reason for _body, reason in source.dead_letters]
    assert len(reasons) == 2
    assert all(reason.startswith("signature:") for reason in reasons), reasons
    value = worker.metrics.failures.labels("signature")._value.get()
    assert value == 2


def _args(**values: Any) -> argparse.Namespace:
    base = {"signatures": None, "signing_keys_file": None}
    base.update(values)
    return argparse.Namespace(**base)


def test_settings_default_to_off_without_keys() -> None:
    """No flag and no variable: policy ``off``, no keys needed."""
    config = load_signature_config(_args(), {})
    assert config.policy == "off"
    assert config.keyring is None


def test_settings_read_keys_from_a_file_or_the_environment(tmp_path: Path) -> None:
    """Keys come from ``--signing-keys-file`` (commas or lines) or SQLA_AUDIT_SIGNING_KEYS;
    every key only verifies on the consumer."""
    encoded = base64.b64encode(KEY_NEW).decode()
    keys = tmp_path / "keys"
    keys.write_text(f"new={encoded}\n\nold={base64.b64encode(KEY_OLD).decode()}\n")
    config = load_signature_config(_args(signatures="require", signing_keys_file=str(keys)), {})
    assert config.policy == "require"
    assert config.keyring is not None
    assert config.keyring.key_ids == ("new", "old")
    assert config.keyring.signing_key_id is None
    env = {"SQLA_AUDIT_SIGNATURES": "verify", "SQLA_AUDIT_SIGNING_KEYS": f"new={encoded}"}
    from_env = load_signature_config(_args(), env)
    assert from_env.policy == "verify"
    assert from_env.keyring is not None
    assert from_env.keyring.key("new") == KEY_NEW
    assert encoded not in repr(from_env)


def test_settings_refuse_a_policy_without_keys_or_an_unknown_policy() -> None:
    """``require`` without keys, or a policy that does not exist, is a configuration error."""
    with pytest.raises(ConfigurationError, match="SQLA_AUDIT_SIGNING_KEYS"):
        load_signature_config(_args(signatures="require"), {})
    with pytest.raises(ConfigurationError, match="require or verify or off"):
        load_signature_config(_args(signatures="sometimes"), {})
