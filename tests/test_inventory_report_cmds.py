"""`validate --flows` and `drift --inventory` say what the inventory read as nothing, as `plan` does.

A document no inventory reader recognises is read as nothing: its hosts are missing, so their flows resolve to no
workload and "observed flows still work" checks fewer of them, and drift's "workloads the policy lacks" misses
them. That must be said (stderr, and the machine-readable output), and an inventory left with no workload at all
must not let a CI gate pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from microseg.examples import example_dir

SARIF_SCHEMA = Path(__file__).parent / "schemas" / "sarif" / "sarif-schema-2.1.0.json"

# A ConfigMap (a Kubernetes kind the readers do not read) and, after it, chart values: no inventory document.
VALUES = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-settings, namespace: shop}
data: {a: b}
---
# chart values, not an inventory
replicaCount: 3
image: {repository: shop}
"""
# An instance terminated since: skipped by the AWS reader, with a note.
TERMINATED = {"Reservations": [{"Instances": [{"InstanceId": "i-0ddd0000000000004", "State": {"Name": "terminated"},
                                               "Tags": [{"Key": "Name", "Value": "old-db"}]}]}]}


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def extra(tmp_path: Path) -> Path:
    d = tmp_path / "extra"
    d.mkdir()
    (d / "values.yaml").write_text(VALUES, encoding="utf-8")
    (d / "ec2.json").write_text(json.dumps(TERMINATED), encoding="utf-8")
    return d


def inventory_args(*more: Path) -> list[str | Path]:
    ex = example_dir()
    return [arg for p in (ex / "k8s", ex / "snapshots", ex / "inventory", *more) for arg in ("--inventory", p)]


def assert_said_on_stderr(stderr: str, extra: Path) -> None:
    lines = stderr.splitlines()
    assert f"microseg: inventory: {extra / 'values.yaml'}:7 is no inventory document; read as nothing" in lines
    assert f"microseg: inventory: {extra / 'ec2.json'}: 1 terminated instance(s) skipped" in " ".join(lines)
    assert ("microseg: inventory: skipped 1 ConfigMap object(s), a kind the inventory readers do not read"
            in lines)


def assert_carried(doc: dict[str, object], extra: Path) -> None:
    assert doc["unrecognized"] == [f"{extra / 'values.yaml'}:7"]
    assert doc["ignored_kinds"] == {"ConfigMap": 1, "HorizontalPodAutoscaler": 1, "IngressClass": 1}
    notes = doc["notes"]
    assert isinstance(notes, list) and any("terminated" in n and "ec2.json" in n for n in notes)
    files = doc["files"]
    assert isinstance(files, list) and {str(extra / "values.yaml"), str(extra / "ec2.json")} <= set(files)


def test_validate_with_flows_says_what_the_inventory_read_as_nothing(demo_plan: Path, extra: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "validate.json"
    r = run("validate", "--policy", demo_plan / "policy", *inventory_args(extra), "--flows",
            example_dir() / "flows",
            "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr  # the hosts that were read still pass; what was not is said, even --quiet
    assert r.stdout.splitlines()[-1] == "PASS" and "inventory:" not in r.stdout  # stdout stays the result
    assert_said_on_stderr(r.stderr, extra)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert_carried(doc["inventory"], extra)


def test_validate_without_flows_reads_no_inventory(demo_plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "validate.json"
    r = run("validate", "--policy", demo_plan / "policy", "--output", out)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text(encoding="utf-8"))["inventory"] is None and "inventory:" not in r.stderr


def test_drift_says_what_the_inventory_read_as_nothing(demo_plan: Path, extra: Path) -> None:
    r = run("drift", "--policy", demo_plan / "policy", *inventory_args(extra), "--now", "2026-11-09",
            "--format", "json", "--fail-on", "never")
    assert r.returncode == 0, r.stderr
    assert_said_on_stderr(r.stderr, extra)
    doc = json.loads(r.stdout)
    assert_carried(doc["inventory"], extra)


def test_drift_sarif_carries_it_in_the_run_property_bag(demo_plan: Path, extra: Path) -> None:
    r = run("drift", "--policy", demo_plan / "policy", *inventory_args(extra), "--now", "2026-11-09",
            "--format", "sarif", "--fail-on", "never")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.Draft7Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))).validate(doc)
    assert_carried(doc["runs"][0]["properties"]["inventory"], extra)


def test_drift_without_inventory_carries_none(demo_plan: Path) -> None:
    r = run("drift", "--policy", demo_plan / "policy", "--now", "2026-11-09", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inventory"] is None and r.stderr == ""


@pytest.mark.parametrize("command", ["validate", "drift", "plan"])
def test_an_inventory_read_as_nothing_is_refused_not_passed(demo_plan: Path, tmp_path: Path, command: str) -> None:
    # A mistyped inventory: every document is read as nothing, so every flow would resolve to no workload and
    # `validate` would check no observed flow, `drift --fail-on high` would find nothing high, `plan` would
    # write a plan of nothing. Exit 2 instead.
    typo = tmp_path / "hosts.yaml"
    typo.write_text("# hosts\nhosts:\n  - {name: db-1, ip: 10.0.3.10}\n", encoding="utf-8")
    flows = ["--flows", example_dir() / "flows"]
    args: dict[str, list[str | Path]] = {
        "validate": ["--policy", demo_plan / "policy", *flows],
        "drift": ["--policy", demo_plan / "policy", "--now", "2026-11-09", "--fail-on", "high"],
        "plan": [*flows, "--out", tmp_path / "plan"]}
    r = run(command, "--inventory", typo, *args[command])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{typo}:2 [--inventory]: the inventory holds no workload; 1 document(s) not recognised" in r.stderr
    assert "Traceback" not in r.stderr and "PASS" not in r.stdout
    assert not (tmp_path / "plan").exists()  # plan refused before writing anything


@pytest.mark.parametrize("command", ["posture", "connectivity"])
def test_a_cluster_inventory_with_no_workload_is_refused(tmp_path: Path, command: str) -> None:
    # Deployed policies over no workload: the empty result would read as "nothing is reachable".
    (tmp_path / "values.yaml").write_text(VALUES.split("---")[0], encoding="utf-8")  # a ConfigMap, no pod
    (tmp_path / "netpol.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n", encoding="utf-8")
    r = run(command, "--inventory", tmp_path / "values.yaml", "--policies", tmp_path / "netpol.yaml")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "[--inventory]: the inventory holds no workload" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_inventory_lines_are_capped_and_counted() -> None:
    from microseg.pipeline import inventory_lines
    from microseg.sources.inventory import InventoryReport

    report = InventoryReport(files=("a.yaml",), ignored_kinds=(("ConfigMap", 2),),
                             unrecognized=tuple(f"a.yaml:{i}" for i in range(1, 26)), notes=("n1",))
    lines = inventory_lines(report, limit=20)
    assert lines[0] == "inventory: n1"
    assert lines[1:21] == [f"inventory: a.yaml:{i} is no inventory document; read as nothing" for i in range(1, 21)]
    assert lines[21:] == ["inventory: and 5 more document(s) read as nothing",
                          "inventory: skipped 2 ConfigMap object(s), a kind the inventory readers do not read"]
    assert inventory_lines(report, kinds=False) == lines[:21] + [
        f"inventory: a.yaml:{i} is no inventory document; read as nothing" for i in range(21, 26)]
