"""Shared test fixtures. ``SHARED`` is the project's ../shared folder (samples, conformance corpus)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():  # CI always has it beside the clone; a bare checkout may not
        pytest.fail(f"{SHARED} is missing: clone the project with ../shared beside it")
    return SHARED


@pytest.fixture(scope="session")
def demo_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`microseg demo`'s output directory (OUT/policy and the rest), made once by the CLI; read it, never write."""
    out = tmp_path_factory.mktemp("demo-plan") / "demo"
    r = subprocess.run([sys.executable, "-m", "microseg.cli", "demo", "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out
