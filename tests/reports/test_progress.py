"""The ingest progress: counters fed from the store's reading loop, and the Rich bar that shows them."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from microseg.engine.store import FlowStore
from microseg.reports.progress import IngestProgressBar
from microseg.sources.flows import IngestProgress
from tests.engine.test_store import DAY, line, vpc


def three_files(tmp_path: Path) -> list[Path]:
    # 1 + 2 + 3 records, plus a header line each: 9 lines in all (the header is no record, no line)
    return [vpc(tmp_path / f"f{i}.log", *(line("10.0.0.1", "10.0.0.2", 40000 + j, 443, DAY) for j in range(i)))
            for i in (1, 2, 3)]


def test_counters_reach_exact_totals(tmp_path: Path) -> None:
    files = three_files(tmp_path)
    events: list[IngestProgress] = []
    with FlowStore(tmp_path / "out" / "flows.duckdb") as store:
        report = store.ingest(files, progress=events.append)
        assert report.lines == 6
        last = events[-1]
        size = sum(f.stat().st_size for f in files)
        assert (last.final, last.files_done, last.files_total, last.lines) == (True, 3, 3, 6)
        assert (last.bytes_done, last.bytes_total) == (size, size)
        assert events[0].files_done == 0 and not events[0].final
        assert [e.files_done for e in events] == sorted(e.files_done for e in events)
        assert all(e.bytes_done <= e.bytes_total for e in events)

        # A second run: the files the store holds are done at once and nothing is read.
        events.clear()
        store.ingest(files, progress=events.append)
        assert (events[0].files_done, events[0].files_total, events[0].bytes_total) == (3, 3, 0)
        assert (events[-1].final, events[-1].lines) == (True, 0)


def test_bar_shows_final_counts(tmp_path: Path) -> None:
    files = three_files(tmp_path)
    console = Console(record=True, file=io.StringIO(), force_terminal=True, width=140)
    with FlowStore(tmp_path / "out" / "flows.duckdb") as store, IngestProgressBar(console) as bar:
        store.ingest(files, progress=bar)
    renders = console.export_text().split("ingest ")  # each refresh of the live display starts so
    assert re.fullmatch(r"━+ 3/3 files 6 lines [0-9]+\.[0-9] MB/s 0:00:[0-9]{2}\s*", renders[-1]), renders[-1]
    assert "0/0 files 0 lines" in renders[1]  # the first render, before any file was read
    assert bar.last.final and bar.last.files_done == 3



def test_python_reader_reports_its_reading(tmp_path: Path) -> None:
    # Azure blobs are parsed in Python: the reader reports bytes as it goes, through ReaderOptions.on_read.
    from tests.sources.flows.test_azure import vnet_blob

    blob = tmp_path / "PT1H.json"
    blob.write_text(vnet_blob(n=3000))
    events: list[IngestProgress] = []
    with FlowStore(tmp_path / "out" / "flows.duckdb") as store:
        report = store.ingest([blob], progress=events.append)
    reading = [e for e in events if e.files_done == 0 and e.bytes_done > 0]
    assert reading, "no progress while the blob was parsed"
    assert events[-1].lines == report.lines == 3000
