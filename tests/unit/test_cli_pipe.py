"""The CLI behaves when its reader closes the pipe early."""

from __future__ import annotations

import os
import subprocess
import sys


def test_closed_pipe_is_not_an_error() -> None:
    """Output to a pipe whose reader is gone (`... | head`) exits 0 without a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has already gone: every write fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "schema", "cql"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert b"BrokenPipeError" not in proc.stderr
    assert proc.returncode == 0
