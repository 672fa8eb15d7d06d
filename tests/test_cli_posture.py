"""`microseg posture` as a user runs it: a real subprocess, documented outputs and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.analyses.test_posture import POLICIES, WORKLOADS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def estate(tmp_path: Path) -> Path:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "workloads.yaml").write_text(WORKLOADS)
    (tmp_path / "manifests" / "policies.yaml").write_text(POLICIES)
    return tmp_path / "manifests"


def test_help() -> None:
    r = run("posture", "--help")
    assert r.returncode == 0 and "Usage: microseg posture" in r.stdout
    assert "--policies" in r.stdout and "--broad-prefix" in r.stdout


def test_text_report_on_a_directory_given_to_both_options(estate: Path) -> None:
    r = run("posture", "--inventory", str(estate), "--policies", str(estate))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Posture of 7 NetworkPolicies over 4 workloads\n")
    assert "Reachable pairs: 4/12 (33.3%)" in r.stdout
    assert "Findings: 15\n" in r.stdout
    assert "  MS508 high   peer shop/api egress[1].to[0]: ipBlock 0.0.0.0/0 contains every private range" in r.stdout


def test_json_to_a_file_is_byte_identical_across_runs(estate: Path, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.json", "b.json"):
        r = run("posture", "-i", str(estate), "-p", str(estate / "policies.yaml"), "--format", "json",
                "--output", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert f"to {tmp_path / name}" in r.stdout
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert doc["reach"] == {"pairs": 12, "reachable": 4, "reachable_share": 0.3333, "unrestricted": 0,
                            "unrestricted_share": 0.0}
    assert doc["counts"] == {"MS501": 1, "MS502": 1, "MS503": 1, "MS504": 1, "MS505": 1, "MS506": 1, "MS507": 3,
                             "MS508": 2, "MS509": 1, "MS510": 2, "MS511": 1}
    shadow = [f for f in doc["findings"] if f["id"] == "MS507" and f["object"]["name"] == "api"]
    assert shadow == [{"id": "MS507", "severity": "low", "ref": "rule shop/api ingress[1]",
                       "message": "shadowed by shop/api ingress[0]: it allows everything this rule allows to every "
                                  "workload this policy selects",
                       "file": str(estate / "policies.yaml"), "related": "shop/api ingress[0]",
                       "object": {"kind": "rule", "namespace": "shop", "name": "api", "direction": "ingress",
                                  "rule": 1, "peer": None}}]


def test_bad_policy_exits_2_with_file_line_and_field(estate: Path) -> None:
    (estate / "policies.yaml").write_text(POLICIES.replace("cidr: 172.16.0.0/12", "cidr: 172.16.0.0/33"))
    r = run("posture", "-i", str(estate), "-p", str(estate))
    assert r.returncode == 2
    line = POLICIES.splitlines().index("  - to: [{ipBlock: {cidr: 172.16.0.0/12}}]") + 1
    assert f"{estate / 'policies.yaml'}:{line}" in r.stderr and "ipBlock.cidr" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_unknown_format_exits_2(estate: Path) -> None:
    r = run("posture", "-i", str(estate), "-p", str(estate), "--format", "sarif")
    assert r.returncode == 2 and "--format" in r.stderr and "Traceback" not in r.stderr


def test_admin_network_policy_exits_3(estate: Path) -> None:
    (estate / "anp.yaml").write_text(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\n"
        "spec:\n  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n  - action: Deny\n"
        "    from: [{namespaces: {}}]\n")
    r = run("posture", "-i", str(estate), "-p", str(estate))
    assert r.returncode == 3, r.stderr
    assert "AdminNetworkPolicy" in r.stderr and "Traceback" not in r.stderr


def test_missing_policies_path_exits_2(estate: Path) -> None:
    r = run("posture", "-i", str(estate), "-p", str(estate / "nope"))
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_what_the_lenient_reader_left_out_is_reported_on_stderr() -> None:
    """A port entry the cluster would drop is left out of the evaluation; posture must say so, not hide it."""
    case = Path(__file__).resolve().parents[1].parent / "shared/conformance/netpol/cases/netpol_named_port_test_2"
    r = run("posture", "-i", str(case), "-p", str(case))
    assert r.returncode == 0, r.stderr
    assert "pods.yaml:32 [spec.template.spec.containers[0].ports[1].containerport]" in r.stderr
    assert "port entry ignored" in r.stderr
    assert "containerport" not in r.stdout  # the report itself stays machine-clean


def test_multi_network_input_is_refused_not_evaluated_as_one_flat_network() -> None:
    """Pods in different user-defined networks cannot reach each other; posture does not model that, so
    counting them as reachable would mislead: it refuses (exit 3) and points to `connectivity`."""
    case = Path(__file__).resolve().parents[1].parent / "shared/conformance/netpol/cases/udn_test_2"
    r = run("posture", "-i", str(case), "-p", str(case))
    assert r.returncode == 3, r.stdout
    assert "user-defined or secondary networks" in r.stderr and "microseg connectivity" in r.stderr
    assert r.stdout == ""
