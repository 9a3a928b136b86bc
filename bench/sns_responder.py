"""A minimal loopback SNS endpoint that answers ``PublishBatch`` as SNS does, for P5.

It parses the query-protocol request, checks the batch limits (1 to 10 entries, distinct
ids) and answers every entry as ``Successful`` with a fresh message id -- no topic, no
storage, no delivery -- so a publisher measured against it is bound by its own work and the
network delay, not by an emulator. It counts the entries it accepted (``GET /count``).

Run as its own process (``python -m bench.sns_responder PORT``, or :class:`Responder`) so
its CPU does not share the measured process's GIL.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

from bench.common import REPO_ROOT, BenchError
from bench.loopback import free_port

#: An entry's id field in the form body (ids are short and never need escaping here).
_ENTRY_ID = re.compile(rb"(?:^|&)PublishBatchRequestEntries\.member\.\d+\.Id=([^&]*)")
#: The action field.
_ACTION = re.compile(rb"(?:^|&)Action=([^&]*)")
_accepted = 0
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def log_message(self, format: str, *args: object) -> None:
        return

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        with _lock:
            count = _accepted
        self._answer(200, str(count))

    def do_POST(self) -> None:
        global _accepted  # noqa: PLW0603 -- one counter per process
        length = int(self.headers.get("Content-Length", "0"))
        # Only the action and the entry ids are read, by two scans of the raw body: decoding
        # the whole form (``parse_qs`` unescapes every message) cost this process more CPU
        # per event than the publisher it measures, on a machine with two cores.
        body = self.rfile.read(length)
        found = _ACTION.search(body)
        action = unquote_plus(found.group(1).decode()) if found else ""
        if action != "PublishBatch":
            self._answer(400, _error("InvalidAction", f"unsupported action {action!r}"))
            return
        ids = [unquote_plus(raw.decode()) for raw in _ENTRY_ID.findall(body)]
        if not 1 <= len(ids) <= 10 or len(set(ids)) != len(ids):
            self._answer(400, _error("InvalidParameter", "bad batch"))
            return
        members = "".join(
            f"<member><Id>{entry_id}</Id><MessageId>{uuid.uuid4()}</MessageId></member>"
            for entry_id in ids
        )
        with _lock:
            _accepted += len(ids)
        self._answer(
            200,
            '<PublishBatchResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
            f"<PublishBatchResult><Successful>{members}</Successful><Failed/>"
            "</PublishBatchResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</PublishBatchResponse>",
        )


def _error(code: str, message: str) -> str:
    return (
        '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


class Responder:
    """``bench.sns_responder`` in its own process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Responder:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sns_responder", str(self.port)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise BenchError("the SNS responder did not start")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


if __name__ == "__main__":
    serve(int(sys.argv[1]))
