"""Shared test fixtures. ``SHARED`` is the project's ../shared folder (samples, conformance corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():  # CI always has it beside the clone; a bare checkout may not
        pytest.fail(f"{SHARED} is missing: clone the project with ../shared beside it")
    return SHARED
