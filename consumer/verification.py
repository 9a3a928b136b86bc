"""The consumer's signature policy: which events it accepts, checked as they are decoded.

One policy per deployment (``--signatures`` / ``SQLA_AUDIT_SIGNATURES``):

* ``require`` -- every event must carry a valid signature (:mod:`sqla_audit.signing`) under a
  key the consumer knows; anything else -- unsigned, a MAC that does not match, an unknown
  key id, an algorithm other than HMAC-SHA256 -- is refused;
* ``verify`` -- unsigned events are accepted; a signature that is present must be valid;
* ``off`` -- nothing is checked (the default; signatures are still stored).

A refused event raises :class:`SignatureError`, a :class:`~sqla_audit.errors.DecodeError`: the
worker rejects its message with failure kind ``signature`` (counted in
``sqla_audit_consumer_failures_total{kind="signature"}``) and the source dead-letters it (SQS)
or parks its row (the outbox), with a reason starting ``signature:``. A bundled message is one
unit: one refused event refuses the message.

The check is :func:`check_signature`: rebuild the signed content from the decoded event
(:func:`sqla_audit.signing.event_content`) and compare the HMAC in constant time.
``sqla-audit verify`` (:mod:`consumer.verify`) uses the same function on stored records.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

from consumer.config import SIGNATURE_POLICIES, SignatureConfig, SignaturePolicy
from sqla_audit.errors import ConfigurationError, DecodeError
from sqla_audit.events import ChangeEvent
from sqla_audit.signing import (
    ALGORITHM,
    EventSignature,
    Keyring,
    KeyringCache,
    KeySource,
    compute_mac,
    event_content,
)

Policy: TypeAlias = SignaturePolicy

#: The policies, strictest first.
POLICIES: Final[tuple[str, ...]] = SIGNATURE_POLICIES

#: Outcomes of :func:`check_signature`.
Outcome: TypeAlias = Literal["valid", "unsigned", "invalid", "unknown_key", "bad_algorithm"]


class SignatureError(DecodeError):
    """An event the signature policy refuses (permanent: the message is dead-lettered)."""


def check_signature(
    signature: EventSignature | None, content: bytes, keyring: Keyring
) -> tuple[Outcome, str]:
    """Whether ``signature`` signs ``content`` under a key of ``keyring``: the outcome and
    a one-line explanation (never holding key material)."""
    if signature is None:
        return "unsigned", "the event is unsigned"
    if signature.algorithm != ALGORITHM:
        return "bad_algorithm", (
            f"algorithm {signature.algorithm!r} is not supported (only {ALGORITHM})"
        )
    key = keyring.key(signature.key_id)
    if key is None:
        known = ", ".join(keyring.key_ids)
        return "unknown_key", f"unknown signing key {signature.key_id!r} (known: {known})"
    if not hmac.compare_digest(compute_mac(key, content), signature.mac):
        return "invalid", (
            f"the signature (key {signature.key_id!r}) does not match the event's content"
        )
    return "valid", f"valid signature (key {signature.key_id!r})"


class EventVerifier:
    """Applies one :data:`Policy` to decoded events (the decoder calls :meth:`check`)."""

    def __init__(self, policy: Policy, keys: KeySource | KeyringCache | None) -> None:
        if policy not in POLICIES:
            raise ConfigurationError(
                f"signature policy must be one of {', '.join(POLICIES)}, not {policy!r}"
            )
        if policy != "off" and keys is None:
            raise ConfigurationError(
                f"signature policy {policy!r} needs the verifying keys "
                "(--signing-keys / SQLA_AUDIT_SIGNING_KEYS or SQLA_AUDIT_SIGNING_KEYS_FILE)"
            )
        self.policy: Policy = policy
        self._keys = keys if keys is None or isinstance(keys, KeyringCache) else KeyringCache(keys)

    def __repr__(self) -> str:
        return f"EventVerifier(policy={self.policy!r})"

    def check(self, events: Sequence[ChangeEvent]) -> None:
        """Raise :class:`SignatureError` if the policy refuses one of ``events``."""
        if self.policy == "off" or self._keys is None:
            return
        keyring = self._keys.keyring()
        for event in events:
            if event.signature is None and self.policy == "verify":
                continue
            outcome, reason = check_signature(event.signature, event_content(event), keyring)
            if outcome != "valid":
                raise SignatureError(
                    f"event {event.event_id} ({event.table} {event.record_id}): {reason}"
                )


def verifier_for(config: SignatureConfig) -> EventVerifier | None:
    """The verifier of a consumer's :class:`~consumer.config.SignatureConfig` (``None``
    for policy ``off``: nothing to check)."""
    if config.policy == "off":
        return None
    return EventVerifier(config.policy, config.keyring)


__all__ = [
    "POLICIES",
    "EventVerifier",
    "Outcome",
    "Policy",
    "SignatureError",
    "check_signature",
    "verifier_for",
]
