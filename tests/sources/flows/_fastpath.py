"""One way to run a reader's DuckDB fast path and its Python reader alone on the same files.

``attr`` names the module function that builds the fast path; replaced by one returning None, the
reader falls back to Python for everything. Both runs go through a fresh flow store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from microseg.engine.store import FlowStore

Outcome = tuple[tuple[Any, ...], Any]  # ((lines, records, bad, skipped, bad samples), rows)


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: ModuleType, attr: str,
               paths: Sequence[Path], rows: Callable[[FlowStore], Any], *, fmt: str | None = None
               ) -> tuple[Outcome, Outcome]:
    """(report, rows) through the fast path, then through the Python path alone."""
    out = []
    real = getattr(module, attr)
    used: list[Any] = []

    def spy(*a: Any, **k: Any) -> Any:
        used.append(real(*a, **k))
        return used[-1]

    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            m.setattr(module, attr, (lambda *_a, **_k: None) if python_only else spy)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest(list(paths), fmt=fmt, bad_threshold=1.0)
                got = rows(s)
            if not python_only:
                assert used and used[0] is not None, "the fast path was not taken"
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(b.file, b.line, b.field, b.message, b.text) for b in report.bad_samples]), got))
    return out[0], out[1]
