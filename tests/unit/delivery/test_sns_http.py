"""The lean PublishBatch client: the body botocore would send, SigV4, the answer parsed, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from sqla_audit.offload_pointer import PAYLOAD_SIZE_ATTRIBUTE
from sqla_audit.publishers.sns import OutgoingMessage, SNSSender, fifo_id, message_attributes
from sqla_audit.publishers.sns_http import (
    SNSHttpClient,
    build_publish_client,
    error_response,
    parse_publish_batch,
)
from sqla_audit.retry import RetryPolicy
from tests.unit.delivery.conftest import FIFO_TOPIC, TOPIC, EventFactory, FakeSNS, make_event
from tests.unit.delivery.sns_wire_double import (
    ENDPOINT,
    Answer,
    LeanFakeSNS,
    WirePool,
    error_xml,
    lean_client,
    success_xml,
)


class _Raw:
    """The raw stream of a canned botocore response."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def botocore_bodies(entries_per_call: list[list[dict[str, Any]]], topic: str) -> list[bytes]:
    """The request bodies a plain boto3 client sends for these calls (answered locally)."""
    client = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret"
    ).client("sns", region_name="us-east-1", endpoint_url=ENDPOINT)
    bodies: list[bytes] = []

    def capture(request: AWSRequest, **_: Any) -> AWSResponse:
        body = request.body
        bodies.append(body.encode() if isinstance(body, str) else bytes(body))
        return AWSResponse(request.url, 200, {}, _Raw(success_xml([], [])))

    client.meta.events.register("before-send.sns.PublishBatch", capture)
    for entries in entries_per_call:
        client.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    return bodies


@pytest.mark.parametrize("topic", [TOPIC, FIFO_TOPIC], ids=["standard", "fifo"])
def test_the_lean_body_is_byte_for_byte_what_botocore_sends(
    event_factory: EventFactory, topic: str
) -> None:
    """Entries (body, attributes, group and dedup ids) go on the wire as botocore puts them."""
    events = [
        event_factory(record_id="1"),
        event_factory(table="public.ünïcode & co", record_id="a b+c/=?%"),
        event_factory(record_id="x" * 200, padding=3000),
    ]
    recording = FakeSNS()
    SNSSender(topic, client=recording).send([OutgoingMessage.from_event(e) for e in events])
    (entries,) = recording.calls
    offloaded = dict(entries[0])
    offloaded["MessageAttributes"] = dict(offloaded["MessageAttributes"])
    offloaded["MessageAttributes"][PAYLOAD_SIZE_ATTRIBUTE] = {
        "DataType": "Number",
        "StringValue": "123456",
    }
    calls = [entries, [offloaded]]
    pool = WirePool(FakeSNS())
    client = lean_client(pool)
    for call in calls:
        client.publish_batch(TopicArn=topic, PublishBatchRequestEntries=call)
    assert [sent.body for sent in pool.sent] == botocore_bodies(calls, topic)


def test_requests_are_signed_with_botocore_sigv4(event_factory: EventFactory) -> None:
    """The Authorization header is the SigV4 signature of the sent body, host and date."""
    credentials = Credentials("AKIDEXAMPLE", "secret", "token")
    pool = WirePool(FakeSNS())
    entry = {"Id": "0", "Message": event_factory().to_json(), "MessageAttributes": {}}
    lean_client(pool, credentials).publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=[entry])
    (sent,) = pool.sent
    assert sent.headers["X-Amz-Security-Token"] == "token"
    assert sent.headers["Host"] == "sns.us-east-1.amazonaws.com"
    again = AWSRequest(
        method="POST",
        url=ENDPOINT + "/",
        data=sent.body,
        headers={
            name: sent.headers[name]
            for name in ("Host", "Content-Type", "X-Amz-Date", "X-Amz-Security-Token")
        },
    )
    again.context["timestamp"] = sent.headers["X-Amz-Date"]
    signer = SigV4Auth(credentials.get_frozen_credentials(), "sns", "us-east-1")
    string_to_sign = signer.string_to_sign(again, signer.canonical_request(again))
    signature = signer.signature(string_to_sign, again)
    assert sent.headers["Authorization"].endswith(f"Signature={signature}")
    assert "Credential=AKIDEXAMPLE/" in sent.headers["Authorization"]


def test_credentials_are_frozen_per_call(event_factory: EventFactory) -> None:
    """Each call asks the credentials object again, so refreshed credentials are used."""

    class Rotating:
        def __init__(self) -> None:
            self.calls = 0

        def get_frozen_credentials(self) -> Any:
            self.calls += 1
            return Credentials(f"KEY{self.calls}", "secret").get_frozen_credentials()

    rotating = Rotating()
    pool = WirePool(FakeSNS())
    client = lean_client(pool, rotating)
    entry = {"Id": "0", "Message": event_factory().to_json(), "MessageAttributes": {}}
    for _ in range(2):
        client.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=[entry])
    assert [s.headers["Authorization"].split("Credential=")[1][:4] for s in pool.sent] == [
        "KEY1",
        "KEY2",
    ]


def test_the_answer_is_parsed_as_botocore_parses_it() -> None:
    """Successful and Failed entries, SenderFault as a boolean, the request id."""
    body = success_xml(
        [{"Id": "0", "MessageId": "m-0"}],
        [{"Id": "1", "Code": "Throttled", "SenderFault": False, "Message": "slow <down>"}],
    )
    answer = parse_publish_batch(body)
    assert answer["Successful"] == [{"Id": "0", "MessageId": "m-0"}]
    assert answer["Failed"] == [
        {"Id": "1", "Code": "Throttled", "Message": "slow <down>", "SenderFault": False}
    ]
    assert answer["ResponseMetadata"]["RequestId"]


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, error_xml("Throttling", "Rate exceeded"), "Throttling"),
        (403, error_xml("AuthorizationError", "no"), "AuthorizationError"),
        (503, b"<html>Service Unavailable</html>", "503"),
        (502, b"Bad Gateway", "502"),
    ],
)
def test_error_answers_raise_client_errors(status: int, body: bytes, code: str) -> None:
    """An error answer raises ClientError with the code (the status when it is not SNS XML)."""

    class Canned:
        def urlopen(self, method: str, url: str, **kwargs: Any) -> Answer:
            return Answer(status, body)

    client = SNSHttpClient(
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        credentials=Credentials("a", "b"),
        pool=Canned(),
    )
    with pytest.raises(ClientError) as caught:
        client.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=[{"Id": "0"}])
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error_response(status, body)["Error"]["Code"] == code


def test_a_cut_off_answer_is_a_parser_error() -> None:
    """A 200 answer that is not complete XML raises botocore's ResponseParserError."""
    with pytest.raises(ResponseParserError):
        parse_publish_batch(b"<PublishBatchResponse><PublishBatchResu")


def test_a_refused_connection_is_a_botocore_connection_error() -> None:
    """A connection failure surfaces as a BotoCoreError (retryable for the sender)."""
    double = LeanFakeSNS()
    double.down = True
    with pytest.raises(BotoCoreError):
        double.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=[{"Id": "0"}])


def test_a_real_refused_connection_is_retryable_for_the_sender(event_factory: EventFactory) -> None:
    """Over real sockets, a closed port leaves the messages undelivered, not raised."""
    client = SNSHttpClient(
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        credentials=Credentials("a", "b"),
        connect_timeout=1,
    )
    sender = SNSSender(TOPIC, client=client, retry=RetryPolicy(max_attempts=1))
    outcome = sender.send([OutgoingMessage.from_event(event_factory())])
    assert len(outcome.undelivered) == 1
    assert "unreachable" in str(outcome.last_error)


def test_build_publish_client_resolves_like_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Region, AWS_ENDPOINT_URL and credentials come from the standard configuration."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    client = build_publish_client()
    assert isinstance(client, SNSHttpClient)
    assert client.endpoint_url == "http://127.0.0.1:4566"
    assert client.region_name == "eu-west-3"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert build_publish_client().endpoint_url == "https://sns.eu-west-3.amazonaws.com"


def test_the_boto3_client_is_kept_where_the_lean_path_cannot_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lean=False, no credentials, or a proxy for the endpoint: the boto3 client is used."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert not isinstance(build_publish_client(lean=False), SNSHttpClient)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not isinstance(build_publish_client(), SNSHttpClient)
    monkeypatch.delenv("HTTPS_PROXY")
    anonymous = boto3.session.Session()
    monkeypatch.setattr(anonymous, "get_credentials", lambda: None)
    assert not isinstance(build_publish_client(session=anonymous), SNSHttpClient)


def test_an_unknown_transport_is_refused() -> None:
    """A sender's transport is 'lean' or 'boto3'."""
    with pytest.raises(ValueError, match="transport"):
        SNSSender(TOPIC, client=FakeSNS(), transport="curl")  # type: ignore[arg-type]


def test_message_attributes_round_trip_the_wire(event_factory: EventFactory) -> None:
    """What the service decodes from the lean body equals the entry handed to the client."""
    double = LeanFakeSNS()
    message = OutgoingMessage.from_event(event_factory(table="t&=+ü"))
    SNSSender(FIFO_TOPIC, client=double).send([message])
    (entry,) = double.accepted
    assert entry["MessageAttributes"] == message_attributes(message)
    assert entry["MessageGroupId"] == fifo_id(f"t&=+ü:{message.record_id}")
    assert entry["MessageDeduplicationId"] == message.event_id


def test_inside_motos_mock_aws_the_boto3_client_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's in-process mock answers inside botocore, so a sender built there keeps boto3."""
    from moto import mock_aws  # noqa: PLC0415

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert isinstance(build_publish_client(), SNSHttpClient)
    with mock_aws():
        assert not isinstance(build_publish_client(), SNSHttpClient)
        topic = boto3.client("sns").create_topic(Name="audit")["TopicArn"]
        outcome = SNSSender(topic).send([OutgoingMessage.from_event(make_event())])
        assert len(outcome.accepted) == 1
