"""`microseg drift` and `microseg diff` as a CI job runs them: real subprocesses, exit codes, SARIF validity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from microseg.examples import example_dir

SARIF_SCHEMA = Path(__file__).parent / "schemas" / "sarif" / "sarif-schema-2.1.0.json"

ALLOW_ALL_IN_SHOP = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: debug-allow-all
  namespace: shop
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-drift") / "demo"
    r = run("demo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture()
def tampered(demo: Path, tmp_path: Path) -> Path:
    """The compiled NetworkPolicies plus someone's "temporary" allow-all in namespace shop."""
    deployed = tmp_path / "deployed"
    shutil.copytree(demo / "enforce" / "kubernetes", deployed)
    (deployed / "zz-debug.yaml").write_text(ALLOW_ALL_IN_SHOP, encoding="utf-8")
    return deployed


def inventory_args() -> list[str]:
    ex = example_dir()
    return ["--inventory", str(ex / "k8s"), "--inventory", str(ex / "snapshots"), "--inventory", str(ex / "inventory")]


@pytest.mark.parametrize(("command", "says"), [("drift", "orphaned rules"), ("diff", "two git revisions")])
def test_help(command: str, says: str) -> None:
    r = run(command, "--help")
    assert r.returncode == 0 and f"Usage: microseg {command}" in r.stdout
    assert says in " ".join(r.stdout.split())


def test_what_was_compiled_is_what_was_reviewed(demo: Path) -> None:
    r = run("drift", "--policy", str(demo / "policy"), "--deployed", str(demo / "enforce" / "kubernetes"),
            "--now", "2026-11-09")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Drift against deployed kubernetes (") and r.stdout.endswith(": no findings.\n")


def test_an_allow_all_left_behind_is_high_drift_and_fails_the_gate(demo: Path, tampered: Path) -> None:
    args = ["drift", "--policy", str(demo / "policy"), "--deployed", str(tampered), "--now", "2026-11-09"]
    r = run(*args)
    assert r.returncode == 4, r.stderr
    lines = r.stdout.splitlines()
    # Nothing in the review lets the shop's front end open the database; the allow-all does.
    assert ("HIGH MS401 shop/frontend -> shop/postgres: deployed allows All Connections; the reviewed policy allows "
            "nothing") in lines
    assert "drift finding(s) at or above high" in r.stderr
    # The gate's threshold is the user's: nothing critical here.
    assert run(*args, "--fail-on", "critical").returncode == 0
    assert run(*args, "--fail-on", "never").returncode == 0


def test_sarif_is_valid_deterministic_and_points_into_the_policy(demo: Path, tampered: Path, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.sarif", "b.sarif"):
        r = run("drift", "--policy", str(demo / "policy"), "--deployed", str(tampered), *inventory_args(),
                "--flows", str(example_dir() / "flows"), "--orphan-days", "3", "--now", "2026-11-09",
                "--format", "sarif", "--output", str(tmp_path / name), "--fail-on", "never")
        assert r.returncode == 0, r.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    jsonschema.Draft7Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))).validate(doc)
    assert len(doc["runs"]) == 1
    run_ = doc["runs"][0]
    assert [r["id"] for r in run_["tool"]["driver"]["rules"]] == [f"MS40{i}" for i in range(1, 10)]
    results = run_["results"]
    assert {r["ruleId"] for r in results} >= {"MS401", "MS404", "MS406"}
    assert {r["level"] for r in results if r["ruleId"] == "MS401"} == {"error"}
    rules_yaml = (demo / "policy" / "rules.yaml").read_text(encoding="utf-8").splitlines()
    orphaned = [r for r in results if r["ruleId"] == "MS404"]
    assert orphaned
    for r in orphaned:
        phys = r["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"] == str(demo / "policy" / "rules.yaml")
        rule = r["locations"][0]["logicalLocations"][0]["name"]
        assert rules_yaml[phys["region"]["startLine"] - 1] == f"- id: {rule}"


def test_json_report(demo: Path, tampered: Path) -> None:
    r = run("drift", "--policy", str(demo / "policy"), "--deployed", str(tampered), "--now", "2026-11-09",
            "--format", "json")
    assert r.returncode == 4
    doc = json.loads(r.stdout)
    assert doc["target"] == "kubernetes" and doc["edges_checked"] == 0
    keys = [(f["id"], f.get("source", ""), f.get("destination", "")) for f in doc["findings"]]
    assert keys == sorted(keys) and doc["summary"]["high"] == sum(1 for f in doc["findings"] if f["severity"] == "high")


@pytest.mark.parametrize(("extra", "says"), [
    (["--deployed", "/nonexistent/dir"], "[--deployed]"),
    (["--target", "cilium", "--deployed", "."], "[--target]"),
    (["--fail-on", "severe"], "[--fail-on]"),
    (["--format", "xml"], "[--format]"),
    (["--now", "yesterday"], "[--now]"),
    (["--flows", "x.log"], "[--inventory]"),
    (["--output", "/nonexistent/dir/report.txt"], "[--output]"),
])
def test_bad_input_exits_2(demo: Path, extra: list[str], says: str) -> None:
    r = run("drift", "--policy", str(demo / "policy"), *extra)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr


def test_a_broken_deployed_manifest_names_its_file(demo: Path, tampered: Path) -> None:
    (tampered / "zz-debug.yaml").write_text("kind: NetworkPolicy\nspec: [unclosed\n", encoding="utf-8")
    r = run("drift", "--policy", str(demo / "policy"), "--deployed", str(tampered))
    assert r.returncode == 2 and "zz-debug.yaml" in r.stderr and "Traceback" not in r.stderr


# -- diff ---------------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                    *args], cwd=repo, capture_output=True, text=True, check=True)


@pytest.fixture()
def repo(demo: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(demo / "policy", repo / "policy")
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "v1")
    return repo


def test_diff_exit_codes_for_a_pull_request_check(repo: Path) -> None:
    rules = repo / "policy" / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8") + (
        "- id: AR-zz-new\n  sources: [shop/frontend]\n  destinations: [shop/postgres]\n  protocol: TCP\n"
        "  ports: ['5432']\n  justification: {kind: declared, text: PR 42}\n"), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "v2")
    r = run("diff", "HEAD~1", "HEAD", "--format", "markdown", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "## microseg policy diff `HEAD~1` → `HEAD`\n\n"
        "**This change widens reachability.** 1 pair(s) changed: 1 with connections added, 0 with connections "
        "removed.\n\n"
        "| change | source | destination | before | after | added by | removed (was allowed by) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| added | shop/frontend | shop/postgres | No Connections | TCP 5432 | + TCP 5432: AR-zz-new |  |\n")
    r = run("diff", "HEAD~1", "HEAD", "--repo", str(repo), "--fail-on-widen")
    assert r.returncode == 4 and "1 pair(s) gain connections" in r.stderr
    # The reverse direction only removes: the gate passes.
    r = run("diff", "HEAD", "HEAD~1", "--repo", str(repo), "--fail-on-widen", "--format", "json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["widens"] is False


def test_diff_bad_revision_exits_2(repo: Path) -> None:
    r = run("diff", "HEAD", "nope", "--repo", str(repo))
    assert r.returncode == 2 and "[REV]" in r.stderr and "Traceback" not in r.stderr
