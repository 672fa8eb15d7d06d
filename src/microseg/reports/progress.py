"""The ingest progress bar: files done/total, lines, MB/s and elapsed time, drawn on stderr.

The store and the readers only call a :data:`~microseg.sources.flows.ProgressCallback`; this module
is the one place that knows about Rich, so a run without a terminal never pays for it.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from microseg.sources.flows import IngestProgress


class IngestProgressBar:
    """A context manager whose instances are progress callbacks for ``FlowStore.ingest``.

    The bar tracks bytes (the only unit known up front); the text shows files, lines and the average
    rate since the ingest began, in decimal megabytes (10^6 bytes) per second of on-disk (compressed)
    size: the average rather than Rich's recent-window speed, which has no value between the rare
    updates of one long DuckDB scan.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("ingest"), BarColumn(),
            TextColumn("{task.fields[files_done]}/{task.fields[files_total]} files"),
            TextColumn("{task.fields[lines]:,} lines"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=console, transient=False, refresh_per_second=4)
        self.task: TaskID | None = None
        self.last = IngestProgress()
        self.started = time.monotonic()

    def __enter__(self) -> IngestProgressBar:
        self.progress.start()
        self.started = time.monotonic()
        self.task = self.progress.add_task("ingest", total=None, files_done=0, files_total=0, lines=0, rate="- MB/s")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def __call__(self, p: IngestProgress) -> None:
        if self.task is None:
            return
        self.last = p
        # A total of 0 bytes (every file already in the store) would leave the bar empty: show it full.
        total = p.bytes_total or 1
        done = p.bytes_total if p.final else min(p.bytes_done, p.bytes_total)
        elapsed = time.monotonic() - self.started
        rate = f"{p.bytes_done / elapsed / 1e6:.1f} MB/s" if elapsed > 0 else "- MB/s"
        self.progress.update(self.task, total=total, completed=done if p.bytes_total else (1 if p.final else 0),
                             files_done=p.files_done, files_total=p.files_total, lines=p.lines, rate=rate)
        if p.final:
            self.progress.refresh()
