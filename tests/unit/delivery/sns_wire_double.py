"""The SNS double behind the lean HTTP client: the same scriptable service, reached over "HTTP".

:class:`WirePool` is an HTTP connection pool double for
:class:`~sqla_audit.publishers.sns_http.SNSHttpClient`: it decodes the signed form body back
into ``PublishBatch`` entries, hands them to a :class:`FakeSNS`, and renders its answer as the
XML SNS sends (or its error as an ``ErrorResponse`` with the HTTP status, or its outage as a
refused connection). :class:`LeanFakeSNS` is a ``FakeSNS`` whose ``publish_batch`` goes
through the lean client and that double, so every test written against the ``FakeSNS`` client
runs through the lean path too (:func:`sns_double`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError
from botocore.parsers import ResponseParserError
from urllib3.exceptions import MaxRetryError, NewConnectionError

from sqla_audit.publishers.sns_http import SNSHttpClient
from tests.unit.delivery.conftest import FakeSNS

ENDPOINT = "https://sns.us-east-1.amazonaws.com"
NS = "http://sns.amazonaws.com/doc/2010-03-31/"


@dataclass
class Answer:
    """What ``urlopen`` returns: a status and the whole body."""

    status: int
    data: bytes


@dataclass
class Sent:
    """One request as the double received it."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str]


def decode_form(body: bytes) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The top-level fields and the entries of a ``PublishBatch`` form body, in wire order."""
    top: dict[str, str] = {}
    entries: dict[int, dict[str, Any]] = {}
    for key, value in parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True):
        if not key.startswith("PublishBatchRequestEntries.member."):
            top[key] = value
            continue
        number, _, member = key.removeprefix("PublishBatchRequestEntries.member.").partition(".")
        entry = entries.setdefault(int(number), {})
        if not member.startswith("MessageAttributes.entry."):
            entry[member] = value
            continue
        position, _, part = member.removeprefix("MessageAttributes.entry.").partition(".")
        attributes = entry.setdefault("MessageAttributes", {})
        slot = attributes.setdefault(f"#{position}", {})
        if part == "Name":
            slot["#name"] = value
        else:
            slot[part.removeprefix("Value.")] = value
    decoded = []
    for number in sorted(entries):
        entry = entries[number]
        if "MessageAttributes" in entry:
            entry["MessageAttributes"] = {
                slot.pop("#name"): slot for slot in entry["MessageAttributes"].values()
            }
        decoded.append(entry)
    return top, decoded


def success_xml(successful: Sequence[dict[str, Any]], failed: Sequence[dict[str, Any]]) -> bytes:
    """A ``PublishBatchResponse`` as SNS writes it."""
    ok = "".join(
        f"<member><Id>{escape(s['Id'])}</Id><MessageId>{s['MessageId']}</MessageId></member>"
        for s in successful
    )
    bad = "".join(
        f"<member><Id>{escape(f['Id'])}</Id><Code>{escape(f['Code'])}</Code>"
        f"<Message>{escape(f.get('Message', ''))}</Message>"
        f"<SenderFault>{'true' if f['SenderFault'] else 'false'}</SenderFault></member>"
        for f in failed
    )
    return (
        f'<PublishBatchResponse xmlns="{NS}"><PublishBatchResult>'
        f"<Successful>{ok}</Successful><Failed>{bad}</Failed></PublishBatchResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</PublishBatchResponse>"
    ).encode()


def error_xml(code: str, message: str) -> bytes:
    """An ``ErrorResponse`` as SNS writes it."""
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()


@dataclass
class WirePool:
    """An HTTP pool double that serves ``PublishBatch`` from a :class:`FakeSNS`."""

    service: FakeSNS
    sent: list[Sent] = field(default_factory=list)

    def urlopen(self, method: str, url: str, **kwargs: Any) -> Answer:
        body: bytes = kwargs["body"]
        self.sent.append(Sent(method, url, body, dict(kwargs["headers"])))
        top, entries = decode_form(body)
        assert (top["Action"], top["Version"]) == ("PublishBatch", "2010-03-31")
        try:
            answer = FakeSNS.publish_batch(
                self.service, TopicArn=top["TopicArn"], PublishBatchRequestEntries=entries
            )
        except EndpointConnectionError as exc:
            refused = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
            raise MaxRetryError(None, url, refused) from exc  # type: ignore[arg-type]
        except ClientError as exc:
            error = exc.response["Error"]
            status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            return Answer(status, error_xml(str(error["Code"]), str(error["Message"])))
        except ParamValidationError as exc:
            return Answer(400, error_xml("InvalidParameter", str(exc)))
        except ResponseParserError:
            return Answer(200, b"<PublishBatchResponse><PublishBatchResu")  # cut off
        return Answer(200, success_xml(answer["Successful"], answer["Failed"]))


def lean_client(pool: WirePool, credentials: Any = None) -> SNSHttpClient:
    """A lean client that talks to ``pool``."""
    return SNSHttpClient(
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        credentials=credentials or Credentials("AKIDEXAMPLE", "secret"),
        pool=pool,
    )


class LeanFakeSNS(FakeSNS):
    """A :class:`FakeSNS` reached through the lean client and :class:`WirePool`."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = WirePool(self)
        self.lean = lean_client(self.pool)

    def publish_batch(
        self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self.lean.publish_batch(
            TopicArn=TopicArn, PublishBatchRequestEntries=PublishBatchRequestEntries
        )


def sns_double(path: str) -> FakeSNS:
    """The scriptable SNS double: ``"client"`` called directly, ``"lean"`` through the lean
    HTTP client and :class:`WirePool`."""
    return LeanFakeSNS() if path == "lean" else FakeSNS()
