"""The command line as a user runs it: a real subprocess, documented exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    r = run("demo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"Report: {out / 'report.md'}" in r.stdout
    return out


@pytest.mark.parametrize(("command", "says"), [("plan", "flow-to-policy matrix"), ("compile", "enforcement target"),
                                               ("validate", "blast radius"), ("demo", "bundled example")])
def test_help_explains_each_command(command: str, says: str) -> None:
    r = run(command, "--help")
    assert r.returncode == 0 and f"Usage: microseg {command}" in r.stdout
    assert says in " ".join(r.stdout.split())


def test_flow_format_help_names_every_reader_and_inventory_help_every_source() -> None:
    """The help texts are constants in cli.py (it imports no reader to start): they must not fall behind."""
    from microseg.cli import FLOW_FORMAT_HELP, INVENTORY_HELP
    from microseg.sources.flows import FORMATS

    named = FLOW_FORMAT_HELP.split("(", 1)[1].split(")", 1)[0].split(", ")
    assert named == sorted(FORMATS)
    for source in ("Kubernetes", "microseg inventory", "describe-instances", "describe-network-interfaces", "CMDB"):
        assert source in INVENTORY_HELP
    for command in ("plan", "validate", "drift"):
        r = run(command, "--help")
        assert "csv, envoy" in " ".join(r.stdout.split()), command


def test_validate_passes_on_the_plan(demo: Path) -> None:
    r = run("validate", "--policy", str(demo / "policy"))
    assert r.returncode == 0 and "PASS" in r.stdout


def test_validate_exits_4_on_a_rule_that_breaks_a_guardrail(demo: Path, tmp_path: Path) -> None:
    import shutil

    pol = tmp_path / "policy"
    shutil.copytree(demo / "policy", pol)
    rules = (pol / "rules.yaml").read_text()
    rules += ("- id: AR-sneaky\n  sources: [shop/frontend]\n  destinations: [shop/postgres]\n  protocol: TCP\n"
              "  ports: ['5432']\n  justification: {kind: observed, text: looks fine}\n")
    (pol / "rules.yaml").write_text(rules)
    r = run("validate", "--policy", str(pol))
    assert r.returncode == 4
    assert "VIOLATION MS201 shop/frontend -> shop/postgres" in r.stdout


def test_bad_input_exits_2_with_file_and_line(demo: Path, tmp_path: Path) -> None:
    import shutil

    pol = tmp_path / "policy"
    shutil.copytree(demo / "policy", pol)
    (pol / "guardrails.yaml").write_text("guardrails:\n- id: x\n  description: [unclosed\n")
    r = run("validate", "--policy", str(pol))
    assert r.returncode == 2
    assert f"{pol}/guardrails.yaml:" in r.stderr and "Traceback" not in r.stderr


def test_unknown_target_exits_1(demo: Path, tmp_path: Path) -> None:
    r = run("compile", "--policy", str(demo / "policy"), "--target", "nosuch", "--out", str(tmp_path))
    assert r.returncode == 1 and "unknown target 'nosuch'; known targets: " in r.stderr and "kubernetes" in r.stderr


def test_compile_observe_mode(demo: Path, tmp_path: Path) -> None:
    r = run("compile", "--policy", str(demo / "policy"), "--target", "kubernetes", "--mode", "observe",
            "--out", str(tmp_path / "k8s"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "k8s" / "shop.yaml").read_text()
    enforce = (demo / "enforce" / "kubernetes" / "shop.yaml").read_text()
    assert text != enforce and "microseg-baseline" in text


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--since", "2026-11-03T08:00", "[--since]"), ("--until", "soon", "[--until]"),
    ("--flow-timezone", "Mars/Olympus", "[--flow-timezone]")])
def test_bad_window_or_zone_exits_2_naming_the_option(tmp_path: Path, option: str, value: str, says: str) -> None:
    from microseg.examples import example_dir

    ex = example_dir()
    r = run("plan", "-i", str(ex / "inventory"), "-f", str(ex / "flows"), "-o", str(tmp_path / "out"), option, value)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "report.md").exists()


def test_progress_goes_to_stderr_only_and_quiet_silences_it(tmp_path: Path) -> None:
    from microseg.examples import example_dir

    ex = example_dir()
    args = ["plan", "-i", str(ex / "k8s"), "-i", str(ex / "snapshots"), "-i", str(ex / "inventory"),
            "-f", str(ex / "flows")]
    forced = run(*args, "-o", str(tmp_path / "a"), "--progress")
    assert forced.returncode == 0, forced.stderr
    assert [ln.split(" ")[0] for ln in forced.stdout.splitlines()] == ["Planned", "Report:"]
    # 8 example files (7 VPC days and one Hubble file); the final render shows them all done
    assert "8/8 files" in forced.stderr and "MB/s" in forced.stderr
    quiet = run(*args, "-o", str(tmp_path / "b"), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == forced.stdout.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    plain = run(*args, "-o", str(tmp_path / "c"))  # stderr is a pipe here, not a terminal: no bar
    assert "files" not in plain.stderr and "… ingesting flow logs" in plain.stderr
    report = (tmp_path / "a" / "report.md").read_text()
    assert "━" not in report and report == (tmp_path / "b" / "report.md").read_text().replace(
        str(tmp_path / "b"), str(tmp_path / "a"))


def test_plan_says_when_an_inventory_document_was_read_as_nothing(tmp_path: Path) -> None:
    from microseg.examples import example_dir

    ex = example_dir()
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "values.yaml").write_text("replicaCount: 3\n")
    result = run("plan", "-i", str(ex / "k8s"), "-i", str(ex / "inventory"), "-i", str(extra),
                 "-f", str(ex / "flows"), "-o", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [ln.split(" ")[0] for ln in lines] == ["Planned", "Inventory:", "Report:"]
    assert lines[1].startswith("Inventory: 1 document(s) not recognised and read as nothing (first: ")
    assert "values.yaml:1" in lines[1]
