"""Format auto-detection and the reader registry."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from microseg.errors import InputError
from microseg.sources.flows import FORMATS, detect, get_format


def test_registry_names_are_module_names() -> None:
    assert set(FORMATS) == {"aws-vpc", "hubble", "zeek", "gcp", "calico", "nfdump", "envoy", "azure", "csv"}
    for name, reader in FORMATS.items():
        assert reader.NAME == name
        assert callable(reader.sniff) and callable(reader.stage)


@pytest.mark.parametrize(("folder", "pattern", "fmt"), [
    ("aws-vpc", "*.log", "aws-vpc"),
    ("hubble", "*.jsonl", "hubble"),
])
def test_every_sample_is_detected(shared: Path, folder: str, pattern: str, fmt: str) -> None:
    files = sorted((shared / "samples" / "flows" / folder).glob(pattern))
    assert len(files) == 7
    assert {f.name: detect(f) for f in files} == {f.name: fmt for f in files}


def test_gzip_is_detected(shared: Path, tmp_path: Path) -> None:
    packed = tmp_path / "x.gz"
    with (shared / "samples/flows/hubble/k3d-policy-denied.jsonl").open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert detect(packed) == "hubble"


def test_other_formats_are_not_claimed(shared: Path) -> None:
    """Zeek, Calico, Envoy, GCP, Azure, nfdump samples: no reader may mistake them for its own."""
    others = [p for p in sorted((shared / "samples" / "flows").rglob("*"))
              if p.is_file() and p.parent.name not in ("aws-vpc", "hubble") and p.name != "README.txt"]
    assert len(others) >= 10
    for path in others:
        try:
            fmt = detect(path)
        except InputError:
            continue
        assert fmt not in ("aws-vpc", "hubble"), path


def test_unknown_file_names_the_known_formats(shared: Path) -> None:
    readme = shared / "samples/flows/aws-vpc/README.txt"
    with pytest.raises(InputError) as err:
        detect(readme)
    assert err.value.file == str(readme) and err.value.line == 1
    assert "aws-vpc" in str(err.value) and "hubble" in str(err.value)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        detect(empty)


def test_explicit_format_is_honoured_and_checked(shared: Path) -> None:
    readme = shared / "samples/flows/aws-vpc/README.txt"
    assert detect(readme, "hubble") == "hubble"  # the caller's word; the reader then reports bad lines
    with pytest.raises(InputError, match="known formats: aws-vpc, .*hubble"):
        detect(readme, "netflow")
    with pytest.raises(InputError):
        get_format("no-such-format")
