"""``python -m consumer``: the same as ``sqla-audit consume``."""

from __future__ import annotations

import sys

from consumer.cli import main

if __name__ == "__main__":
    sys.exit(main(["consume", *sys.argv[1:]]))
