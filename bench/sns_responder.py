"""A minimal loopback SNS endpoint that answers ``PublishBatch`` as SNS does, for P5.

It parses the query-protocol request, checks the batch limits (1 to 10 entries, distinct
ids) and answers every entry as ``Successful`` with a fresh message id -- no topic, no
storage, no delivery -- so a publisher measured against it is bound by its own work and the
network delay, not by an emulator. It counts the entries it accepted (``GET /count``).

Run as its own process (``python -m bench.sns_responder PORT``) so its CPU does not share
the measured process's GIL.
"""

from __future__ import annotations

import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

_ENTRY_ID = re.compile(r"PublishBatchRequestEntries\.member\.(\d+)\.Id")
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
        form = parse_qs(self.rfile.read(length).decode())
        action = form.get("Action", [""])[0]
        if action != "PublishBatch":
            self._answer(400, _error("InvalidAction", f"unsupported action {action!r}"))
            return
        ids = [values[0] for key, values in form.items() if _ENTRY_ID.fullmatch(key)]
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


if __name__ == "__main__":
    serve(int(sys.argv[1]))
