"""``sqla-audit verify``: re-check stored records against their signatures.

``verify record TABLE RECORD_ID``, ``verify actor ACTOR_ID --since T``, ``verify
transaction ID`` and ``verify table SERVICE TABLE --since T`` read the records of the question
from the store (read-only) and check each with :class:`consumer.verify.StoreVerifier`:
signature, stored changes, and the completeness of every transaction seen. The verifying
keys come from ``--signing-keys-file`` / ``SQLA_AUDIT_SIGNING_KEYS_FILE`` or
``SQLA_AUDIT_SIGNING_KEYS`` (include retired keys: records they signed are still stored).

Exit status: 0 every record verified, 1 nothing found, 2 usage or configuration, 3 the store
is unavailable, 5 something did not verify (each finding is printed, one line each, or as
JSON with ``--json``). ``--allow-unsigned`` reports unsigned records without failing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from consumer.arguments import add_signature_arguments
from consumer.commands.query import open_store, parse_uuid, store_options
from consumer.failures import EXIT_NOTHING, EXIT_OK, EXIT_VERIFY_FAILED
from consumer.settings import load_signature_config
from consumer.times import parse_time
from consumer.verify import StoreVerifier, VerifyReport
from sqla_audit.errors import ConfigurationError, DecodeError, StoreError


def _service_of(store: Any, args: argparse.Namespace) -> str | None:
    """``--service``, else the one service that wrote the record (``None``: none did)."""
    if args.service:
        return str(args.service)
    services = store.services_of(args.table, args.record_id)
    if len(services) > 1:
        raise ConfigurationError(
            f"record {args.table} {args.record_id} was written by several services "
            f"({', '.join(services)}): pass --service"
        )
    return services[0] if services else None


def _verify(args: argparse.Namespace, verifier: StoreVerifier, store: Any) -> VerifyReport:
    what = args.verify_what
    if what == "record":
        service = _service_of(store, args)
        if service is None:
            return VerifyReport()
        return verifier.record(
            service, args.table, args.record_id, since=args.since, until=args.until
        )
    if what == "actor":
        return verifier.actor(
            args.actor_id, since=args.since, until=args.until, service=args.service
        )
    if what == "transaction":
        return verifier.transaction(args.transaction_id)
    return verifier.table(args.service, args.table, since=args.since, until=args.until)


def _print(report: VerifyReport, args: argparse.Namespace) -> None:
    if args.json:
        json.dump(report.to_dict(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    for finding in report.findings:
        where = " ".join(
            part
            for part in (
                finding.service,
                finding.table,
                finding.record_id,
                None if finding.event_id is None else f"event {finding.event_id}",
                None if finding.transaction_id is None else f"transaction {finding.transaction_id}",
            )
            if part
        )
        print(f"{finding.kind}: {where}: {finding.detail}")
    for note in report.notes:
        print(f"note: {note}")
    print(
        f"{report.checked} record(s) checked: {report.valid} verified, "
        f"{len(report.findings)} finding(s), {report.derived} derived (key changes), "
        f"{report.transactions} transaction(s) checked for missing events"
    )


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    store = open_store(args, env)
    try:
        signatures = load_signature_config(args, env, keys_required=True)
        assert signatures.keyring is not None  # keys_required
        report = _verify(args, StoreVerifier(store, signatures.keyring), store)
    except DecodeError as exc:  # a stored record this version cannot read at all
        raise StoreError(f"cannot read the audit store: {exc}") from exc
    finally:
        store.close()
    _print(report, args)
    if report.checked == 0:
        if not args.json:
            print("nothing to verify: no records found", file=sys.stderr)
        return EXIT_NOTHING
    return EXIT_VERIFY_FAILED if report.kinds(allow_unsigned=args.allow_unsigned) else EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``verify`` and its four questions."""
    epilog = (
        "Times: an ISO 8601 time with a timezone, a duration back from now (90m, 12h, 7d) or "
        "now. The store is only read.\n"
        "Exit status: 0 verified, 1 nothing found, 2 bad arguments or settings, 3 store "
        "unavailable, 5 modified, unsigned or unknown-key records or missing events found."
    )
    parser = subparsers.add_parser(
        "verify",
        help="re-check stored records against their producers' signatures",
        description=(
            "Re-check stored records against their signatures: modified records, unknown "
            "signing keys, unsigned records, transactions with missing events."
        ),
        epilog=epilog,
    )
    questions = parser.add_subparsers(dest="verify_what", metavar="WHAT", required=True)
    common = store_options()
    options = argparse.ArgumentParser(add_help=False)
    add_signature_arguments(options, policy=False)
    output = options.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the report as one JSON object")
    output.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="report unsigned records without failing (a trail signed only from some date)",
    )
    parents = [common, options]

    record = questions.add_parser(
        "record", parents=parents, help="one record's history", epilog=epilog
    )
    record.add_argument("table", help="audited table")
    record.add_argument("record_id", help="record id")
    record.add_argument("--service", help="the service (needed when several wrote the record)")
    record.add_argument("--since", type=parse_time, help="oldest change (a time)")
    record.add_argument("--until", type=parse_time, help="newest change (a time)")

    actor = questions.add_parser(
        "actor", parents=parents, help="what one actor changed in a window", epilog=epilog
    )
    actor.add_argument("actor_id", help="actor id")
    actor.add_argument("--since", type=parse_time, required=True, help="start of the window")
    actor.add_argument("--until", type=parse_time, help="end of the window (default: now)")
    actor.add_argument("--service", help="only this service")

    transaction = questions.add_parser(
        "transaction", parents=parents, help="one transaction", epilog=epilog
    )
    transaction.add_argument("transaction_id", type=parse_uuid, help="transaction id (a UUID)")

    table = questions.add_parser(
        "table", parents=parents, help="one table of one service in a window", epilog=epilog
    )
    table.add_argument("service", help="service")
    table.add_argument("table", help="audited table")
    table.add_argument("--since", type=parse_time, required=True, help="start of the window")
    table.add_argument("--until", type=parse_time, help="end of the window (default: now)")

    for sub in (record, actor, transaction, table):
        sub.set_defaults(func=run)


__all__ = ["register", "run"]
