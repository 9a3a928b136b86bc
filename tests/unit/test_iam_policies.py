"""docs/iam/*.json: each policy parses and allows exactly the AWS actions its component's code
calls -- found in the source (boto3 client calls and hand-built API requests, checked against
botocore's service models), so a new call without a policy change fails here."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "docs" / "iam"
SERVICES = ("sns", "sqs", "s3")

#: Batch operations are authorized as their single-message action (AWS's documented rule).
BATCH_ACTIONS = {
    "PublishBatch": "sns:Publish",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "SendMessageBatch": "sqs:SendMessage",
}

#: component -> the source its process runs that may call AWS
COMPONENTS = {
    # direct mode: the publisher (and its S3 offloader) in the application's process
    "application": ["sqla_audit"],
    # the outbox relay: the same publisher, driven from the outbox table
    "relay": ["sqla_audit", "consumer/commands/relay.py"],
    # the worker (SQS source, S3 payloads, dead-lettering) and the dlq command
    "consumer": [
        "consumer/sources",
        "consumer/commands/consume.py",
        "consumer/dlq.py",
        "consumer/commands/dlq.py",
    ],
}


@cache
def _operations() -> dict[str, tuple[str, str]]:
    """snake_case and PascalCase operation name -> (service, PascalCase name), for names
    that belong to exactly one of SERVICES."""
    session = botocore.session.get_session()
    seen: dict[str, set[tuple[str, str]]] = {}
    for service in SERVICES:
        for name in session.get_service_model(service).operation_names:
            for key in (name, xform_name(name)):
                seen.setdefault(key, set()).add((service, name))
    return {key: next(iter(owners)) for key, owners in seen.items() if len(owners) == 1}


def _files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        full = ROOT / path
        out.extend(sorted(full.rglob("*.py")) if full.is_dir() else [full])
    return out


def _calls_in(tree: ast.AST) -> set[str]:
    """Operation names called on an AWS client (``<...client...>.<operation>(...)``) or put
    in a hand-built request (``{"Action": "<Operation>", ...}``)."""
    known = _operations()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value).lower()
            if "client" in receiver and node.func.attr in known:
                found.add(node.func.attr)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "Action"
                    and isinstance(value, ast.Constant)
                    and value.value in known
                ):
                    found.add(str(value.value))
    return found


def called_actions(paths: Iterable[str]) -> set[str]:
    """The IAM actions the code under ``paths`` needs."""
    actions: set[str] = set()
    for file in _files(paths):
        for name in _calls_in(ast.parse(file.read_text(encoding="utf-8"))):
            service, operation = _operations()[name]
            actions.add(BATCH_ACTIONS.get(operation, f"{service}:{operation}"))
    return actions


def _statements(component: str) -> list[dict[str, Any]]:
    policy = json.loads((IAM / f"{component}.json").read_text(encoding="utf-8"))
    assert policy["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = policy["Statement"]
    return statements


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_every_policy_file_is_a_known_component() -> None:
    """docs/iam holds one policy per component, and nothing else."""
    assert sorted(p.stem for p in IAM.glob("*.json")) == sorted(COMPONENTS)


def test_the_source_scan_finds_the_known_calls() -> None:
    """The scan sees the calls it must see (it is not vacuously empty)."""
    assert {"sns:Publish", "s3:PutObject"} <= called_actions(COMPONENTS["application"])
    assert {"sqs:ReceiveMessage", "s3:GetObject"} <= called_actions(COMPONENTS["consumer"])


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_policy_allows_exactly_the_actions_the_code_calls(component: str) -> None:
    """The union of a policy's Allow actions equals the actions its component's code calls."""
    allowed = {
        action
        for statement in _statements(component)
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
    }
    assert allowed == called_actions(COMPONENTS[component])


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_policy_statements_are_scoped_to_their_resources(component: str) -> None:
    """No wildcard action or resource: each statement names resources of its own service."""
    for statement in _statements(component):
        actions = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        assert statement["Sid"]
        assert all("*" not in action for action in actions), statement
        services = {action.split(":")[0] for action in actions}
        assert len(services) == 1, statement
        (service,) = services
        for resource in resources:
            assert resource != "*", statement
            assert resource.startswith(f"arn:aws:{service}:"), statement
            if service == "s3":
                assert resource.endswith("/sqla-audit/payloads/*"), statement
