"""`microseg drift --flows` reads flows with the options of `plan` and `validate`: --flow-timezone, --since/--until,
--progress/--quiet and --engine. Run as a CI job runs it (real subprocesses, exit codes, JSON on stdout).

The case: three hosts and two rules, planned from two collectors. An nfdump collector in New York logs local times
without a zone (app -> db at 09:00 EST = 14:00Z on 1 March); the VPC flow log carries epoch times (web -> app at
12:00Z on 2 March, the end of the flow data). With --orphan-days 1 the app -> db rule is hit 22 hours before the end
when nfdump's times are read in New York, but 27 hours before it when they are read as UTC: orphaned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from tests.sources.flows.test_nfdump import LEGACY, legacy

ZONE = "America/New_York"
INVENTORY = """\
apiVersion: microseg/v1
kind: Inventory
hosts:
- name: web
  addresses: [10.0.0.3]
- name: app
  addresses: [10.0.0.1]
  ports: [{port: 8080, protocol: TCP}]
- name: db
  addresses: [10.0.0.2]
  ports: [{port: 5432, protocol: TCP}]
"""
VPC_HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
              "log-status")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *args], capture_output=True, text=True, timeout=300)


class Case:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory = root / "inventory.yaml"
        self.nfdump = root / "nfdump.csv"
        self.vpc = root / "vpc.log"
        self.policy = root / "plan" / "policy"
        self.inventory.write_text(INVENTORY, encoding="utf-8")
        self.nfdump.write_text("\n".join([LEGACY, legacy("2026-03-01 09:00:00", "2026-03-01 09:00:30", "10.0.0.1",
                                                         "10.0.0.2", "40001", "5432", "TCP")]) + "\n")
        t = int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp())
        self.vpc.write_text(f"{VPC_HEADER}\n2 123456789010 eni-1 10.0.0.3 10.0.0.1 40002 8080 6 1 100 {t} {t + 30} "
                            "ACCEPT OK\n")

    def flows(self) -> list[str]:
        return ["--flows", str(self.nfdump), "--flows", str(self.vpc)]

    def drift(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run("drift", "--policy", str(self.policy), "--inventory", str(self.inventory), "--orphan-days", "1",
                   "--format", "json", "--fail-on", "never", *extra)

    def findings(self, *extra: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        r = self.drift(*extra)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        return doc, [(f["id"], f["rule"], f["message"]) for f in doc["findings"]]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    c = Case(tmp_path_factory.mktemp("drift-flow-options"))
    r = run("plan", "-i", str(c.inventory), *c.flows(), "-o", str(c.root / "plan"), "--min-flows", "1",
            "--min-days", "1", "--flow-timezone", ZONE, "--quiet")
    assert r.returncode == 0, r.stderr
    return c


def rule_between(case: Case, source: str, destination: str) -> str:
    """The id of the planned rule from ``source`` to ``destination`` (ids are hashes: looked up, not spelled)."""
    import yaml

    rules = yaml.safe_load((case.policy / "rules.yaml").read_text(encoding="utf-8"))["rules"]
    (rule,) = [r["id"] for r in rules if r["sources"] == [source] and r["destinations"] == [destination]]
    return str(rule)


def test_nfdump_times_are_read_in_the_collectors_zone_as_plan_read_them(case: Case) -> None:
    app_db = rule_between(case, "app", "db")
    doc, found = case.findings(*case.flows(), "--flow-timezone", ZONE)
    assert doc["edges_checked"] == 2 and found == []  # what plan saw, drift sees: nothing orphaned
    # Read as UTC (the old behaviour) the same flow is 27 hours old at the end of the data: orphaned.
    _, found = case.findings(*case.flows())
    assert found == [("MS404", app_db, f"rule {app_db} had no flow hit in the last 1 day(s) of flow data (last hit "
                                       "2026-03-01T09:00:30+00:00)")]


def test_since_leaves_out_the_only_flow_that_hits_a_rule(case: Case) -> None:
    app_db, web_app = rule_between(case, "app", "db"), rule_between(case, "web", "app")
    doc, found = case.findings(*case.flows(), "--flow-timezone", ZONE, "--since", "2026-03-02")
    assert doc["edges_checked"] == 1
    assert found == [("MS404", app_db, f"rule {app_db} had no flow hit in the last 1 day(s) of flow data (never hit "
                                       "by an observed flow)")]
    # --until: the last N days count back from the end of the flow data inside the window (14:00:30Z on
    # 1 March, nfdump's flow read in New York), not from the window's end nor from the data left outside it.
    doc, _ = case.findings(*case.flows(), "--flow-timezone", ZONE, "--until", "2026-03-02T00:00:00Z")
    assert [(f["id"], f["rule"], f["evidence"]) for f in doc["findings"]] == [
        ("MS404", web_app, "flow data ends 2026-03-01T14:00:30+00:00")]


def test_a_table_on_the_engine_gives_the_same_findings_as_the_flows(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    with FlowStore(path) as store:  # the normalised flows, already on an engine (here a DuckDB file)
        store.ingest([str(case.nfdump), str(case.vpc)], timezone=ZONE)
    # No --flows: the flows are on the engine, normalised (the zone was applied when they were ingested).
    via_engine = case.drift("--engine", f"duckdb:///{path}?table=flows")
    assert via_engine.returncode == 0, via_engine.stderr
    via_flows = case.drift(*case.flows(), "--flow-timezone", ZONE)
    assert without_flows(via_engine.stdout) == without_flows(via_flows.stdout)
    assert json.loads(via_engine.stdout)["edges_checked"] == 2
    # The report's "flows" says where they came from: the engine's table (nothing ingested), or the files.
    on_engine, read = json.loads(via_engine.stdout)["flows"], json.loads(via_flows.stdout)["flows"]
    assert on_engine["engine"].endswith("?table=flows") and on_engine["files"] == 0 and read["files"] == 2
    assert on_engine["mapped_records"] == read["mapped_records"] == read["records"]
    # Ingested as UTC, the nfdump flow lands 5 hours earlier in the table: the findings follow the table.
    utc = tmp_path / "utc.duckdb"
    with FlowStore(utc) as store:
        store.ingest([str(case.nfdump), str(case.vpc)])
    via_utc = case.drift("--engine", f"duckdb:///{utc}?table=flows")
    assert without_flows(via_utc.stdout) == without_flows(case.drift(*case.flows()).stdout)
    assert [f["id"] for f in json.loads(via_utc.stdout)["findings"]] == ["MS404"]


def without_flows(stdout: str) -> dict[str, object]:
    """The drift JSON but its "flows" object (what was read, which differs between an engine and files)."""
    doc = json.loads(stdout)
    doc.pop("flows")
    return doc


@pytest.mark.parametrize(("extra", "says"), [
    (["--flow-timezone", "Mars/Olympus"], "[--flow-timezone]"),
    (["--since", "yesterday"], "[--since]"),
    (["--until", "2026-03-02T08:00"], "[--until]"),  # no zone: refused, never guessed
    (["--engine", "sparkle"], "[--engine]"),
])
def test_a_bad_flow_option_exits_2_before_anything_is_read(extra: list[str], says: str, tmp_path: Path) -> None:
    # The policy does not exist: the bad option is still what is named, because it is checked first.
    r = run("drift", "--policy", str(tmp_path / "no-policy"), "--flows", str(tmp_path / "no-flows.csv"),
            "--inventory", str(tmp_path / "no-inventory.yaml"), *extra)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["drift", "validate"])
@pytest.mark.parametrize(("extra", "says"), [
    (["--since", "2026-03-02"], "[--since]"),
    (["--until", "2026-03-02T00:00:00Z"], "[--since]"),  # one message for the window, named by its first option
    (["--engine", "spark"], "[--engine]"),
])
def test_a_flow_option_without_flows_is_refused_not_ignored(case: Case, command: str, extra: list[str],
                                                           says: str) -> None:
    # Without --flows (or a table on the engine) nothing is read: a window or an engine given then would select
    # or map nothing, and the output would look like a check of that window or engine. Exit 2 instead.
    r = run(command, "--policy", str(case.policy), "--inventory", str(case.inventory), *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert says in r.stderr and "no flows are given" in r.stderr and "Traceback" not in r.stderr


def test_an_engine_table_keeps_the_errors_of_validate(case: Case, tmp_path: Path) -> None:
    engine = f"duckdb:///{tmp_path / 'lake.duckdb'}?table=flows"
    # A table on the engine still needs the inventory to resolve its addresses.
    r = run("drift", "--policy", str(case.policy), "--engine", engine)
    assert r.returncode == 2 and "[--inventory]" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # Flows and a table exclude each other; a window cannot filter flows microseg does not read.
    r = case.drift(*case.flows(), "--engine", engine)
    assert r.returncode == 2 and "[--flows]" in r.stderr and "exclude each other" in r.stderr, r.stderr
    r = case.drift("--engine", engine, "--since", "2026-03-02")
    assert r.returncode == 2 and "[--since]" in r.stderr and "narrow the table" in r.stderr, r.stderr


def test_progress_goes_to_stderr_only_and_quiet_silences_it(case: Case) -> None:
    forced = case.drift(*case.flows(), "--flow-timezone", ZONE, "--progress")
    assert forced.returncode == 0, forced.stderr
    assert "2/2 files" in forced.stderr
    quiet = case.drift(*case.flows(), "--flow-timezone", ZONE, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout) == json.loads(forced.stdout)  # stdout stays the report
