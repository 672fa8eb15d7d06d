"""Broken deployed-policy inputs: `microseg connectivity` names file, line and field, exits 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from microseg.cli import main

BAD = Path(__file__).parents[1] / "fixtures" / "netpol_bad"
WORKLOADS = BAD / "workloads.yaml"


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["microseg", *args])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


# (fixture, line, field, message start): lines and fields read off the fixture files by hand.
CASES = [
    ("bad_selector_operator.yaml", 10, "spec.podSelector.matchExpressions[0].operator", "selector operator 'Equals'"),
    ("bad_cidr.yaml", 12, "spec.ingress[0].from[0].ipBlock.cidr", "not a CIDR: '10.0.0.300/8'"),
    ("bad_port_range.yaml", 12, "spec.ingress[0].ports[0].port", "port 70000"),
    ("bad_unknown_field.yaml", 10, "spec.ingress[0].form", "unknown field 'form'"),
    ("bad_anp_action.yaml", 11, "spec.ingress[0].action", "action 'Reject'"),
    ("bad_anp_no_priority.yaml", 5, "spec.priority", "priority is required"),
]


@pytest.mark.parametrize(("name", "line", "field", "message"), CASES)
def test_broken_policy_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         name: str, line: int, field: str, message: str) -> None:
    code, out, err = _cli(monkeypatch, capsys, "connectivity", "-i", str(WORKLOADS), "-p", str(BAD / name))
    assert code == 2
    assert out == ""
    assert err == f"microseg: error: {BAD / name}:{line} [{field}]: {message}" + err.split(message, 1)[1]
    assert err.count("\n") == 1 and "Traceback" not in err


def test_malformed_yaml_names_file_line_and_column(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(monkeypatch, capsys, "connectivity", "-i", str(WORKLOADS), "-p",
                          str(BAD / "bad_malformed.yaml"))
    assert code == 2 and out == ""
    assert err.startswith(f"microseg: error: {BAD / 'bad_malformed.yaml'}:8:3: malformed YAML")
    assert err.count("\n") == 1


def test_a_good_policy_next_to_them_works(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    # The same workload, isolated for ingress but for TCP 8080 (the named port `http`) from its namespace.
    policy = tmp_path / "ok.yaml"
    policy.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ok, namespace: shop}\n"
                      "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
                      "  ingress:\n  - from: [{podSelector: {}}]\n    ports: [{port: http}]\n")
    code, out, _ = _cli(monkeypatch, capsys, "connectivity", "-i", str(WORKLOADS), "-p", str(policy))
    assert code == 0
    assert out == "shop/web[Deployment] => 0.0.0.0-255.255.255.255[External] : All Connections\n"


def test_real_process_has_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "microseg.cli", "connectivity", "-i", str(WORKLOADS), "-p",
                           str(BAD / "bad_cidr.yaml")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith(f"microseg: error: {BAD / 'bad_cidr.yaml'}:12 [spec.ingress[0].from[0].ipBlock.cidr]")
    assert "Traceback" not in done.stderr
