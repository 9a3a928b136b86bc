"""Output of the listing commands: one page of records at a time, as a terminal table or
streamed as JSON lines or CSV (:mod:`consumer.export`), with the paging notes people need to
read on.

:mod:`consumer.commands.query` parses the arguments and asks the questions; this module
writes what comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import shutil
import sys
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Final, TextIO

from consumer.export import CsvWriter, NdjsonWriter, Progress, RecordWriter, export
from consumer.records import AuditRecord
from consumer.render import (
    format_time,
    render_records,
)
from consumer.sinks.base import (
    MAX_PAGE_SIZE,
    InvalidQuery,
    Page,
)

#: Exit statuses of the query commands (docs/operations.md has the whole policy).
EXIT_FOUND: Final = 0
EXIT_NOT_FOUND: Final = 1

#: Default number of changes shown by the listing commands in ``table`` and ``json`` form.
DEFAULT_LIMIT: Final = 50
#: The output forms of the listing commands.
FORMATS: Final = ("table", "json", "ndjson", "csv")
#: The forms that export every matching record unless ``--limit`` is given.
EXPORT_FORMATS: Final = frozenset({"ndjson", "csv"})
#: Largest ``--limit`` (the commands follow the store's pages up to it).
MAX_LIMIT: Final = 10_000
#: ``actor`` without ``--since`` looks this far back from ``--until`` (or now).


def emit(text: str) -> None:
    """Print to stdout, degrading the two non-ASCII marks when the terminal cannot show them."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.replace("→", "->").replace("…", "...")
        text = text.encode(encoding, errors="replace").decode(encoding)
    print(text)


def table_width(args: argparse.Namespace) -> int | None:
    """The width a table must fit: the terminal's (``COLUMNS`` honoured) when stdout is a
    terminal, else ``None`` (no wrapping: a pipe or a file gets whole lines), and ``None``
    with ``--wide``."""
    if getattr(args, "wide", False):
        return None
    isatty = getattr(sys.stdout, "isatty", None)
    if isatty is None or not isatty():
        return None
    return shutil.get_terminal_size().columns


def note(text: str) -> None:
    print(f"sqla-audit: {text}", file=sys.stderr)


Fetch = Callable[[str | None, int], Page[AuditRecord]]


class Pages:
    """The records of a paged read, page after page, up to ``limit`` (``None``: all).

    Each page is asked for at most the records still wanted, so a cut by ``limit`` falls
    on a page end and :attr:`more` is the store's own token for the rest. With ``keep``
    (a filter) pages are full size and a cut inside a page continues after the last
    record shown (``token_after``).
    """

    def __init__(
        self,
        fetch: Fetch,
        page: str | None,
        limit: int | None,
        *,
        keep: Callable[[AuditRecord], bool] | None = None,
        token_after: Callable[[AuditRecord], str] | None = None,
    ) -> None:
        self._fetch = fetch
        self._start = page
        self._limit = limit
        self._keep = keep
        self._token_after = token_after
        self.more: str | None = None

    def __iter__(self) -> Iterator[AuditRecord]:
        token, remaining, keep = self._start, self._limit, self._keep
        while True:
            size = MAX_PAGE_SIZE
            if remaining is not None and keep is None:
                size = min(remaining, MAX_PAGE_SIZE)
            page = self._fetch(token, size)
            for index, record in enumerate(page.items):
                if keep is not None and not keep(record):
                    continue
                if remaining == 0:  # filtered: one more match exists; resume right before it
                    assert self._token_after is not None
                    self.more = token if index == 0 else self._token_after(page.items[index - 1])
                    return
                yield record
                if remaining is not None:
                    remaining -= 1
            if page.next_page is None:
                return
            token = page.next_page
            if remaining == 0 and keep is None:
                self.more = token
                return


class Narrowed:
    """The records of ``pages`` with only ``column`` among their changes."""

    def __init__(self, pages: Pages, column: str) -> None:
        self._pages = pages
        self._column = column

    @property
    def more(self) -> str | None:
        return self._pages.more

    def __iter__(self) -> Iterator[AuditRecord]:
        for record in self._pages:
            kept = {self._column: record.changes[self._column]}
            yield dataclasses.replace(record, changes=kept)


def write_listing(
    args: argparse.Namespace,
    pages: Pages | Narrowed | list[AuditRecord],
    *,
    show_service: bool = False,
    show_record: bool = False,
    show_request: bool | None = None,
    nothing: str,
) -> int:
    """Print a listing in ``args.format``; exit 1 with ``nothing`` on stderr when empty."""
    records = iter(pages)
    first = next(records, None)
    if first is None:
        note(nothing)
        return EXIT_NOT_FOUND
    everything = chain([first], records)
    if args.format == "table":
        emit(
            render_records(
                list(everything),
                show_record=show_record,
                show_service=show_service,
                show_request=show_request,
                width=table_width(args),
            )
        )
    else:
        out = export_stream()
        writer: RecordWriter = (
            CsvWriter(out, args.values) if args.format == "csv" else NdjsonWriter(out, args.values)
        )
        export(everything, writer, progress=Progress(sys.stderr), flush=out.flush)
    more = pages.more if isinstance(pages, Pages | Narrowed) else None
    if more is not None:
        note(f"more changes exist: repeat with --page {more}")
    return EXIT_FOUND


def export_stream() -> TextIO:
    """stdout for an export: UTF-8 whatever the locale, CSV line ends untouched."""
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.reconfigure(encoding="utf-8", newline="")
    return stream


def window_text(since: dt.datetime | None, until: dt.datetime | None) -> str:
    if since is not None and until is not None:
        return f" between {format_time(since)} and {format_time(until)}"
    if since is not None:
        return f" since {format_time(since)}"
    if until is not None:
        return f" until {format_time(until)}"
    return ""


def listing_limit(args: argparse.Namespace) -> int | None:
    """The most records to show: ``--limit``, else everything (``--all``, or an export
    format), else :data:`DEFAULT_LIMIT`."""
    if args.limit is not None:
        return int(args.limit)
    if args.all or args.format in EXPORT_FORMATS:
        return None
    return DEFAULT_LIMIT


def check_output(args: argparse.Namespace) -> None:
    if args.all and args.limit is not None:
        raise InvalidQuery("--all and --limit exclude each other")
    if args.all and args.format == "table":
        raise InvalidQuery(
            "--all needs --format json, ndjson or csv (a table is sized to its rows)"
        )


def record_text(args: argparse.Namespace) -> str:
    service = f" in service {args.service}" if args.service else ""
    return f"{args.table} {args.record_id}{service}"
