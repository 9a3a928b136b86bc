"""The CLI's one error policy, over every sub-command and every failure class that applies.

Every failure here is a real one, made on this machine without mocks: a loopback port
nothing listens on (unreachable), a name under ``.invalid`` (never resolves, RFC 2606), a
port another socket holds, a file whose permission bits forbid it (root without the
capabilities that override them), a missing
optional dependency (a ``sitecustomize`` that makes it unimportable, as after ``pip install
sqla-audit`` without extras) and SIGINT. Each must give one ``sqla-audit:`` line that
is the last line on stderr, no traceback, no third-party log line, and the documented exit
status (docs/operations.md).

The sub-commands are read from the parser: a new one fails :func:`test_every_command_is_covered`
until its cases are added to :data:`CASES`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from consumer.cli import build_parser, iter_commands
from sqla_audit.outbox import OutboxWriter, create_outbox_table
from tests.net_support import free_port

TOPIC = "arn:aws:sns:us-east-1:123456789012:audit"
BAD_HOST = "audit-store.invalid"
#: Modules the extras install; blocked to simulate ``pip install sqla-audit``.
EXTRA_MODULES = (
    "boto3",
    "botocore",
    "s3transfer",
    "cassandra",
    "prometheus_client",
    "deepdiff",
    "starlette",
    "jinja2",
    "uvicorn",
)
THIRD_PARTY_LOG_MARKS = (" cassandra.", " botocore.", " urllib3.", " boto3.", "Traceback")

BAD_ARGUMENT = "bad argument"
MISSING_EXTRA = "missing extra"
UNREACHABLE = "unreachable"
UNRESOLVABLE = "unresolvable"
PORT_IN_USE = "port in use"
PERMISSION = "permission denied"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Case:
    """One command line and what the policy promises for it."""

    argv: tuple[str, ...]
    code: int
    #: a part of the error line (case-insensitive)
    says: str


def _outbox_run(db: str) -> tuple[str, ...]:
    return ("--source", "outbox", "--db", db, "--until-empty", "--metrics-port", "0")


#: command -> failure class -> cases (``None``: the class does not apply, with the reason).
#: Placeholders: {dead} a port nothing listens on, {busy} a port a socket holds, {tmp} a
#: directory with app.db (an outbox table), {ro} a directory no one may write, with
#: secret.db no one may read (permission bits enforced).
CASES: dict[tuple[str, ...], dict[str, list[Case] | str]] = {
    ("consume",): {
        UNREACHABLE: [
            Case(
                (
                    *_outbox_run("sqlite:///{tmp}/app.db"),
                    "--cassandra-hosts",
                    "127.0.0.1",
                    "--cassandra-port",
                    "{dead}",
                ),
                3,
                "cassandra",
            ),
            Case(
                (
                    *_outbox_run("postgresql+psycopg://u:p@127.0.0.1:{dead}/app"),
                    "--store",
                    "sqlite",
                    "--store-url",
                    "{tmp}/audit.db",
                ),
                3,
                "outbox database",
            ),
            Case(
                (
                    "--queue-url",
                    "http://127.0.0.1:{dead}/123456789012/audit",
                    "--endpoint-url",
                    "http://127.0.0.1:{dead}",
                    "--wait-seconds",
                    "0",
                    "--store",
                    "sqlite",
                    "--store-url",
                    "{tmp}/audit.db",
                    "--until-empty",
                    "--metrics-port",
                    "0",
                ),
                3,
                "cannot receive",
            ),
        ],
        UNRESOLVABLE: [
            Case(
                (*_outbox_run("sqlite:///{tmp}/app.db"), "--cassandra-hosts", BAD_HOST),
                3,
                "resolve",
            ),
        ],
        MISSING_EXTRA: [
            Case(
                ("--queue-url", "http://127.0.0.1:{dead}/1/q", "--until-empty"),
                2,
                "sqla-audit[consumer]",
            ),
            Case(_outbox_run("sqlite:///{tmp}/app.db"), 2, "sqla-audit[consumer]"),
        ],
        PORT_IN_USE: [
            Case(
                (
                    "--source",
                    "outbox",
                    "--db",
                    "sqlite:///{tmp}/app.db",
                    "--store",
                    "sqlite",
                    "--store-url",
                    "{tmp}/audit.db",
                    "--until-empty",
                    "--metrics-port",
                    "{busy}",
                ),
                2,
                "port {busy} is in use; pass --metrics-port 0",
            )
        ],
        PERMISSION: [
            Case(
                (
                    *_outbox_run("sqlite:///{tmp}/app.db"),
                    "--store",
                    "sqlite",
                    "--store-url",
                    "{ro}/audit.db",
                ),
                2,
                "permission denied",
            ),
            Case(
                (
                    *_outbox_run("sqlite:///{ro}/secret.db"),
                    "--store",
                    "sqlite",
                    "--store-url",
                    "{tmp}/audit.db",
                ),
                2,
                "permission denied",
            ),
        ],
    },
    ("schema", "cql"): {
        UNREACHABLE: "prints the schema; connects to nothing",
        UNRESOLVABLE: "prints the schema; connects to nothing",
        MISSING_EXTRA: "needs no extra (checked by test_schema_cql_needs_no_extra)",
        PORT_IN_USE: "serves nothing",
        PERMISSION: "reads and writes no file",
    },
    **{
        ("schema", action): {
            UNREACHABLE: [Case(("--cassandra-port", "{dead}"), 3, "cassandra")],
            UNRESOLVABLE: [Case(("--cassandra-hosts", BAD_HOST), 3, "resolve")],
            MISSING_EXTRA: [Case(("--cassandra-port", "{dead}"), 2, "sqla-audit[consumer]")],
            PORT_IN_USE: "serves nothing",
            PERMISSION: "reads and writes no file",
        }
        for action in ("apply", "migrate")
    },
    **{
        (query,): {
            UNREACHABLE: [Case((*args, "--cassandra-port", "{dead}"), 3, "cassandra")],
            UNRESOLVABLE: [Case((*args, "--cassandra-hosts", BAD_HOST), 3, "resolve")],
            MISSING_EXTRA: [Case((*args, "--cassandra-port", "{dead}"), 2, "sqla-audit[consumer]")],
            PORT_IN_USE: "serves nothing",
            PERMISSION: "the SQLite audit store opened read-only is covered with the store",
        }
        for query, args in (
            ("history", ("users", "1")),
            ("as-of", ("users", "1", "--at", "2026-01-01T00:00:00Z")),
            ("actor", ("alice",)),
            ("transaction", ("0192e4a1-7b2c-7d3e-8f40-123456789abc",)),
            ("changes", ("billing", "orders", "--since", "1h")),
            ("request", ("req-1",)),
        )
    },
    **{
        ("verify", what): {
            UNREACHABLE: [Case((*args, "--cassandra-port", "{dead}"), 3, "cassandra")],
            UNRESOLVABLE: [Case((*args, "--cassandra-hosts", BAD_HOST), 3, "resolve")],
            MISSING_EXTRA: [Case((*args, "--cassandra-port", "{dead}"), 2, "sqla-audit[consumer]")],
            PORT_IN_USE: "serves nothing",
            PERMISSION: "the SQLite audit store opened read-only is covered with the store",
        }
        for what, args in (
            ("record", ("users", "1")),
            ("actor", ("alice", "--since", "1h")),
            ("transaction", ("0192e4a1-7b2c-7d3e-8f40-123456789abc",)),
            ("table", ("billing", "orders", "--since", "1h")),
        )
    },
    ("relay",): {
        UNREACHABLE: [
            Case(
                (
                    "--db",
                    "postgresql+psycopg://u:p@127.0.0.1:{dead}/app",
                    "--topic-arn",
                    TOPIC,
                    "--once",
                ),
                3,
                "database",
            ),
            Case(
                (
                    "--db",
                    "sqlite:///{tmp}/pending.db",
                    "--topic-arn",
                    TOPIC,
                    "--endpoint-url",
                    "http://127.0.0.1:{dead}",
                    "--once",
                ),
                3,
                "SNS did not take 1 row(s)",
            ),
        ],
        UNRESOLVABLE: [
            Case(
                (
                    "--db",
                    f"postgresql+psycopg://u:p@{BAD_HOST}/app",
                    "--topic-arn",
                    TOPIC,
                    "--once",
                ),
                3,
                "resolve",
            )
        ],
        MISSING_EXTRA: [
            Case(
                ("--db", "sqlite:///{tmp}/app.db", "--topic-arn", TOPIC), 2, "sqla-audit[consumer]"
            )
        ],
        PORT_IN_USE: [
            Case(
                (
                    "--db",
                    "sqlite:///{tmp}/app.db",
                    "--topic-arn",
                    TOPIC,
                    "--metrics-port",
                    "{busy}",
                ),
                2,
                "port {busy} is in use; pass --metrics-port 0",
            )
        ],
        PERMISSION: [
            Case(
                ("--db", "sqlite:///{ro}/secret.db", "--topic-arn", TOPIC, "--once"),
                2,
                "permission denied",
            )
        ],
    },
    **{
        ("outbox", action): {
            UNREACHABLE: [
                Case(("--db", "postgresql+psycopg://u:p@127.0.0.1:{dead}/app"), 3, "database")
            ],
            UNRESOLVABLE: [
                Case(("--db", f"postgresql+psycopg://u:p@{BAD_HOST}/app"), 3, "resolve")
            ],
            MISSING_EXTRA: "needs SQLAlchemy only (checked by test_outbox_needs_no_extra)",
            PORT_IN_USE: "serves nothing",
            PERMISSION: [
                Case(
                    (
                        "--db",
                        "sqlite:///{ro}/" + ("new.db" if action == "create-table" else "secret.db"),
                    ),
                    2,
                    "sqlite" if action == "create-table" else "permission denied",
                )
            ],
        }
        for action in ("create-table", "status", "requeue")
    },
    ("loadgen",): {
        UNREACHABLE: [
            Case(("--topic-arn", TOPIC, "--cassandra-port", "{dead}"), 3, "cassandra"),
            Case(
                (
                    "--topic-arn",
                    TOPIC,
                    "--no-probes",
                    "--queue-url",
                    "http://127.0.0.1:{dead}/123456789012/q",
                    "--endpoint-url",
                    "http://127.0.0.1:{dead}",
                ),
                3,
                "connect",
            ),
        ],
        UNRESOLVABLE: [Case(("--topic-arn", TOPIC, "--cassandra-hosts", BAD_HOST), 3, "resolve")],
        MISSING_EXTRA: [
            Case(("--topic-arn", TOPIC, "--cassandra-port", "{dead}"), 2, "sqla-audit[consumer]")
        ],
        PORT_IN_USE: "serves nothing",
        PERMISSION: "the SQLite audit store opened read-only is covered with the store",
    },
    **{
        ("dlq", action): {
            UNREACHABLE: [
                Case(
                    (
                        "--dlq-url",
                        "http://127.0.0.1:{dead}/123456789012/dlq",
                        "--endpoint-url",
                        "http://127.0.0.1:{dead}",
                        *extra,
                    ),
                    3,
                    "connect",
                )
            ],
            UNRESOLVABLE: [
                Case(
                    (
                        "--dlq-url",
                        f"http://{BAD_HOST}/123456789012/dlq",
                        "--endpoint-url",
                        f"http://{BAD_HOST}",
                        *extra,
                    ),
                    3,
                    BAD_HOST,
                )
            ],
            MISSING_EXTRA: [
                Case(
                    ("--dlq-url", "http://127.0.0.1:{dead}/1/dlq", *extra),
                    2,
                    "sqla-audit[consumer]",
                )
            ],
            PORT_IN_USE: "serves nothing",
            PERMISSION: "reads and writes no file",
        }
        for action, extra in (
            ("list", ()),
            ("redrive", ("--queue-url", "http://127.0.0.1:{dead}/123456789012/q")),
        )
    },
    ("demo",): {
        UNREACHABLE: [
            Case(("--cassandra-hosts", "127.0.0.1", "--cassandra-port", "{dead}"), 3, "")
        ],
        UNRESOLVABLE: [Case(("--cassandra-hosts", BAD_HOST), 3, "")],
        MISSING_EXTRA: [
            Case(("--cassandra-hosts", "127.0.0.1"), 2, "sqla-audit[consumer]"),
            Case(("--serve", "--port", "0"), 2, "sqla-audit[ui]"),
        ],
        PORT_IN_USE: [Case(("--serve", "--port", "{busy}"), 2, "cannot listen on 127.0.0.1")],
        PERMISSION: [Case(("--workdir", "{ro}/demo"), 2, "permission denied")],
    },
    ("ui",): {
        UNREACHABLE: [Case(("--port", "0", "--cassandra-port", "{dead}"), 3, "cassandra")],
        UNRESOLVABLE: [Case(("--port", "0", "--cassandra-hosts", BAD_HOST), 3, "resolve")],
        MISSING_EXTRA: [Case(("--port", "0"), 2, "sqla-audit[ui]")],
        PORT_IN_USE: [Case(("--port", "{busy}"), 2, "cannot listen on 127.0.0.1")],
        PERMISSION: "the SQLite audit store opened read-only is covered with the store",
    },
}


# --------------------------------------------------------------------------- fixtures


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("sqla-audit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "consumer.cli"]


def _environment(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SQLA_AUDIT_", "AWS_", "PYTHON"))
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        HOME=str(home),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@dataclass
class Places:
    tmp: Path
    ro: Path
    dead: int
    busy: int
    blocker: Path

    def fill(self, text: str) -> str:
        return text.format(tmp=self.tmp, ro=self.ro, dead=self.dead, busy=self.busy)


def _outbox_db(path: Path, *, pending: int = 0) -> None:
    from consumer.testing import make_event  # noqa: PLC0415

    engine = sa.create_engine(f"sqlite:///{path}")
    create_outbox_table(engine)
    if pending:
        with engine.begin() as connection:
            OutboxWriter().write(connection, [make_event() for _ in range(pending)])
    engine.dispose()


@pytest.fixture(scope="module")
def places() -> Iterator[Places]:
    """Files, ports and a module blocker shared by the module's cases."""
    root = Path(tempfile.mkdtemp(prefix="sqla-audit-policy-"))
    tmp, ro, blocker = root / "work", root / "ro", root / "blocker"
    for directory in (tmp, ro, blocker):
        directory.mkdir()
    _outbox_db(tmp / "app.db")
    _outbox_db(tmp / "pending.db", pending=1)
    _outbox_db(ro / "secret.db")
    (ro / "secret.db").chmod(0o000)  # no one may read it (without the override)
    ro.chmod(0o555)  # no one may create files here
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import sys

            BLOCKED = {EXTRA_MODULES!r}

            class _NotInstalled:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in BLOCKED:
                        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                    return None

            sys.meta_path.insert(0, _NotInstalled())
            """
        )
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield Places(tmp, ro, free_port(), holder.getsockname()[1], blocker)
    ro.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


#: Runs a command as root without the capabilities that bypass file permissions, so the
#: permission bits of root's own files apply (the test suite runs as root in containers).
WITHOUT_DAC = (
    "capsh",
    "--drop=cap_dac_override,cap_dac_read_search",
    "--",
    "-c",
    'exec "$0" "$@"',
)


def _run(
    places: Places, argv: list[str], *, blocked: bool = False, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    env = _environment(places.tmp)
    if blocked:
        env["PYTHONPATH"] = str(places.blocker)
    prefix = WITHOUT_DAC if unprivileged else ()
    return subprocess.run(
        [*prefix, *_cli(), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=places.tmp,
        timeout=120,
        check=False,
    )


def _assert_one_error_line(done: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    err = done.stderr
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("sqla-audit: ")]
    assert done.returncode == code, err
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    assert says.lower() in errors[0].lower(), err
    for mark in THIRD_PARTY_LOG_MARKS:
        assert mark not in err, err


def _cases(kind: str) -> list[tuple[str, Case]]:
    out = []
    for command, classes in CASES.items():
        cases = classes.get(kind)
        if isinstance(cases, list):
            out.extend((" ".join(command), case) for case in cases)
    return out


def _ids(cases: list[tuple[str, Case]]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for name, _case in cases:
        seen[name] = seen.get(name, 0) + 1
        ids.append(f"{name}-{seen[name]}")
    return ids


# --------------------------------------------------------------------------- coverage


def test_every_command_is_covered() -> None:
    """Every sub-command of the parser has an entry for every failure class."""
    commands = {path for path, _parser in iter_commands(build_parser())}
    assert commands == set(CASES)
    for command, classes in CASES.items():
        assert set(classes) == {
            UNREACHABLE,
            UNRESOLVABLE,
            MISSING_EXTRA,
            PORT_IN_USE,
            PERMISSION,
        }, command


@pytest.mark.parametrize("command", [" ".join(p) for p, _ in iter_commands(build_parser())])
def test_bad_argument_is_one_line_and_exit_2(places: Places, command: str) -> None:
    """An unknown option (or a missing argument): one line naming the command and the
    --help to read, exit 2."""
    done = _run(places, [*command.split(), "--no-such-option"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"sqla-audit {command}: error: "), done.stderr
    assert f"{command} --help" in done.stderr


# --------------------------------------------------------------------------- failure classes


@pytest.mark.parametrize(("command", "case"), _cases(UNREACHABLE), ids=_ids(_cases(UNREACHABLE)))
def test_unreachable_dependency_exits_3(places: Places, command: str, case: Case) -> None:
    """A store, queue or database on a port nothing listens on: one line, exit 3."""
    done = _run(places, [*command.split(), *(places.fill(a) for a in case.argv)])
    _assert_one_error_line(done, case.code, places.fill(case.says))


@pytest.mark.parametrize(("command", "case"), _cases(UNRESOLVABLE), ids=_ids(_cases(UNRESOLVABLE)))
def test_unresolvable_host_exits_3(places: Places, command: str, case: Case) -> None:
    """A host name under .invalid (never resolves): one line, exit 3."""
    done = _run(places, [*command.split(), *(places.fill(a) for a in case.argv)])
    _assert_one_error_line(done, case.code, places.fill(case.says))


@pytest.mark.parametrize(
    ("command", "case"), _cases(MISSING_EXTRA), ids=_ids(_cases(MISSING_EXTRA))
)
def test_missing_extra_names_the_extra(places: Places, command: str, case: Case) -> None:
    """Without the optional dependencies: one line naming the extra to install, exit 2."""
    done = _run(places, [*command.split(), *(places.fill(a) for a in case.argv)], blocked=True)
    _assert_one_error_line(done, case.code, places.fill(case.says))


@pytest.mark.parametrize(("command", "case"), _cases(PORT_IN_USE), ids=_ids(_cases(PORT_IN_USE)))
def test_metrics_port_in_use_exits_2(places: Places, command: str, case: Case) -> None:
    """A metrics port another socket holds: one line saying how to choose, exit 2."""
    done = _run(places, [*command.split(), *(places.fill(a) for a in case.argv)])
    _assert_one_error_line(done, case.code, places.fill(case.says))


@pytest.mark.parametrize(("command", "case"), _cases(PERMISSION), ids=_ids(_cases(PERMISSION)))
def test_permission_denied_exits_2(places: Places, command: str, case: Case) -> None:
    """A file or directory the user may not use (permission bits enforced): one line, exit 2."""
    if os.geteuid() != 0 or shutil.which("capsh") is None:
        pytest.skip("needs root and capsh to drop the file-permission override")
    argv = [*command.split(), *(places.fill(a) for a in case.argv)]
    done = _run(places, argv, unprivileged=True)
    _assert_one_error_line(done, case.code, places.fill(case.says))


def test_schema_cql_needs_no_extra(places: Places) -> None:
    """`schema cql` prints the schema without the consumer extra."""
    done = _run(places, ["schema", "cql"], blocked=True)
    assert done.returncode == 0, done.stderr
    assert "CREATE KEYSPACE" in done.stdout


def test_outbox_needs_no_extra(places: Places) -> None:
    """The outbox commands work with SQLAlchemy alone."""
    done = _run(
        places, ["outbox", "status", "--db", f"sqlite:///{places.tmp}/app.db"], blocked=True
    )
    assert done.returncode == 0, done.stderr
    assert "pending 0" in done.stdout


def test_debug_shows_the_traceback(places: Places) -> None:
    """--debug (before or after the command) adds the traceback; the status is the same."""
    for argv in (
        ["--debug", "schema", "apply", "--cassandra-port", str(places.dead)],
        ["schema", "apply", "--cassandra-port", str(places.dead), "--debug"],
    ):
        done = _run(places, argv)
        assert done.returncode == 3, done.stderr
        assert "Traceback" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("sqla-audit: error:")


# --------------------------------------------------------------------------- interrupted


@contextlib.contextmanager
def _silent_port() -> Iterator[tuple[int, threading.Event]]:
    """A port that accepts connections and never answers; the event is set on connect."""
    connected = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                held.append(conn)
                connected.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], connected
    finally:
        listener.close()
        for conn in held:
            conn.close()


def _interrupt(places: Places, argv: list[str], ready: threading.Event | str) -> str:
    """Start the command, send SIGINT once ``ready`` (an event, or a text on stderr), and
    return its stderr after checking the interrupted status."""
    seen: list[str] = []
    with subprocess.Popen(
        [*_cli(), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(places.tmp),
        cwd=places.tmp,
    ) as process:
        assert process.stderr is not None
        try:
            if isinstance(ready, str):
                for line in process.stderr:
                    seen.append(line)
                    if ready in line:
                        break
            else:
                assert ready.wait(60), "the command never connected"
            time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            rest = process.stderr.read()
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    err = "".join(seen) + rest
    assert code == 130, err
    assert "Traceback" not in err, err
    return err


def test_interrupted_consume_exits_130_with_a_summary(places: Places) -> None:
    """SIGINT stops `consume` cleanly: final summary logged, exit 130."""
    argv = [
        "consume",
        "--source",
        "outbox",
        "--db",
        f"sqlite:///{places.tmp}/app.db",
        "--store",
        "sqlite",
        "--store-url",
        f"{places.tmp}/interrupted.db",
        "--metrics-port",
        "0",
    ]
    err = _interrupt(places, argv, "worker started")
    assert "stopped: received 0 message(s)" in err


def test_interrupted_relay_exits_130(places: Places) -> None:
    """SIGINT stops `relay` after its pass: a readable last line, exit 130."""
    argv = ["relay", "--db", f"sqlite:///{places.tmp}/app.db", "--topic-arn", TOPIC]
    argv += ["--metrics-port", "0", "--endpoint-url", f"http://127.0.0.1:{places.dead}"]
    err = _interrupt(places, argv, "relaying")
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("relay stopped: published 0, parked 0 (see sqla-audit outbox status)")
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "status", "--db", "postgresql+psycopg://u:p@127.0.0.1:{port}/app"],
        ["history", "users", "1", "--cassandra-port", "{port}"],
        ["dlq", "list", "--dlq-url", "http://127.0.0.1:{port}/1/dlq"],
    ],
    ids=["outbox-status", "history", "dlq-list"],
)
def test_interrupted_while_waiting_exits_130(places: Places, argv: list[str]) -> None:
    """SIGINT while a command waits for a server that never answers: one line, exit 130."""
    with _silent_port() as (port, connected):
        filled = [a.format(port=port) for a in argv]
        if argv[0] == "dlq":
            filled += ["--endpoint-url", f"http://127.0.0.1:{port}"]
        err = _interrupt(places, filled, connected)
    assert err.strip().splitlines()[-1] == "sqla-audit: error: interrupted", err
