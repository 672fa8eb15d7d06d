"""Semantic diff between git revisions of the policy-as-code, in real git repositories.

The policy is the bundled demo's (a realistic plan); the second commit edits its rules the way a pull
request would. Expected diffs are written by hand from the edits: which pairs gain or lose which
ports, and which rule does it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from microseg.analyses.revdiff import diff_revisions, policy_at
from microseg.errors import InputError
from microseg.examples import example_dir
from microseg.pipeline import plan
from microseg.reports.revdiff import render_json, render_markdown, render_text

POLICY_DIR = "deploy/policy"


def git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                        *args], cwd=repo, capture_output=True, text=True, check=True)
    return r.stdout


@pytest.fixture(scope="module")
def demo_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ex = example_dir()
    out = tmp_path_factory.mktemp("revdiff") / "demo"
    plan([ex / "k8s", ex / "snapshots", ex / "inventory"], [str(ex / "flows")], out)
    return out / "policy"


def rules_of(policy: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load((policy / "rules.yaml").read_text(encoding="utf-8"))
    rules: list[dict[str, Any]] = doc["rules"]
    return rules


def rule_id(policy: Path, source: str, destination: str) -> str:
    ids = [r["id"] for r in rules_of(policy) if r["sources"] == [source] and r["destinations"] == [destination]]
    assert len(ids) == 1, (source, destination, ids)
    return str(ids[0])


def write_rules(policy: Path, rules: list[dict[str, Any]]) -> None:
    (policy / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}, sort_keys=False), encoding="utf-8")


@pytest.fixture()
def repo(tmp_path: Path, demo_policy: Path) -> Path:
    """A repository with the demo policy committed (tag v1) under deploy/policy."""
    repo = tmp_path / "repo"
    shutil.copytree(demo_policy, repo / POLICY_DIR)
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "plan")
    git(repo, "tag", "v1")
    return repo


def commit(repo: Path, tag: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", tag)
    git(repo, "tag", tag)


def test_a_pull_request_that_edits_rules(repo: Path) -> None:
    pol = repo / POLICY_DIR
    widened = rule_id(pol, "ai/embedding-reindex", "shop/catalogue")  # TCP 80 -> 80 and 8080
    moved = rule_id(pol, "shop/frontend", "shop/user")  # TCP 80 -> 8080
    dropped = rule_id(pol, "external:corp-vpn", "bastion-1")  # TCP 22, deleted
    rules = []
    for r in rules_of(pol):
        if r["id"] == widened:
            r["ports"] = ["80", "8080"]
        elif r["id"] == moved:
            r["ports"] = ["8080"]
        elif r["id"] == dropped:
            continue
        rules.append(r)
    rules.append({"id": "AR-zz-new", "sources": ["shop/frontend"], "destinations": ["shop/postgres"],
                  "protocol": "TCP", "ports": ["5432"], "justification": {"kind": "declared", "text": "PR 42"}})
    write_rules(pol, rules)
    (pol / "exceptions.yaml").write_text(
        "exceptions:\n- id: EX-psp\n  guardrail: GR-x\n  sources: [legacy-erp]\n"
        "  destinations: ['external:payments-psp']\n  protocol: TCP\n  ports: ['443']\n  approver: ciso\n"
        "  reason: card refunds\n  expires: 2027-01-31\n", encoding="utf-8")
    commit(repo, "v2")

    d = diff_revisions(repo, "v1", "v2", POLICY_DIR)
    assert render_text(d) == (
        "Connectivity diff v1 -> v2:\n"
        "changed: ai/embedding-reindex -> shop/catalogue: TCP 80 => TCP 80,8080\n"
        f"    + TCP 8080 by {widened}\n"
        "changed: shop/frontend -> shop/user: TCP 80 => TCP 8080\n"
        f"    + TCP 8080 by {moved}\n"
        f"    - TCP 80 was {moved}\n"
        "added: legacy-erp -> external:payments-psp: No Connections => TCP 443\n"
        "    + TCP 443 by EX-psp (exception)\n"
        "added: shop/frontend -> shop/postgres: No Connections => TCP 5432\n"
        "    + TCP 5432 by AR-zz-new\n"
        "removed: external:corp-vpn -> bastion-1: TCP 22 => No Connections\n"
        f"    - TCP 22 was {dropped}\n"
        "5 pair(s) changed: 4 with connections added, 2 with connections removed.\n")
    assert d.widens
    assert d.commit1 == git(repo, "rev-parse", "v1").strip() and d.commit2 == git(repo, "rev-parse", "v2").strip()

    doc = json.loads(render_json(d))
    assert doc["widens"] is True and doc["from"] == {"rev": "v1", "commit": d.commit1}
    assert doc["changes"][4] == {"kind": "removed", "source": "external:corp-vpn", "destination": "bastion-1",
                                 "before": "TCP 22", "after": "No Connections", "added": "No Connections",
                                 "removed": "TCP 22", "added_by": [], "removed_by": [dropped], "note": ""}

    md = render_markdown(d)
    assert md.startswith("## microseg policy diff `v1` → `v2`\n\n**This change widens reachability.** 5 pair(s)")
    assert ("| added | shop/frontend | shop/postgres | No Connections | TCP 5432 | + TCP 5432: AR-zz-new |  |"
            in md.splitlines())
    # Same revisions, same bytes.
    assert render_markdown(diff_revisions(repo, "v1", "v2", POLICY_DIR)) == md


def test_only_narrowing_does_not_widen(repo: Path) -> None:
    pol = repo / POLICY_DIR
    dropped = rule_id(pol, "external:corp-vpn", "bastion-1")
    write_rules(pol, [r for r in rules_of(pol) if r["id"] != dropped])
    commit(repo, "v2")
    d = diff_revisions(repo, "v1", "v2", POLICY_DIR)
    assert [(c.change.kind, c.change.source, c.change.destination) for c in d.changes] == [
        ("removed", "external:corp-vpn", "bastion-1")]
    assert not d.widens
    assert "This change adds no connection." in render_markdown(d)


def test_a_settings_change_is_explained_without_a_rule(repo: Path) -> None:
    pol = repo / POLICY_DIR
    header = yaml.safe_load((pol / "policy.yaml").read_text(encoding="utf-8"))
    header["settings"]["excluded_namespaces"].append("shop-dev")
    (pol / "policy.yaml").write_text(yaml.safe_dump(header, sort_keys=False), encoding="utf-8")
    commit(repo, "v2")
    d = diff_revisions(repo, "v1", "v2", POLICY_DIR)
    by_pair = {(c.change.source, c.change.destination): c for c in d.changes}
    c = by_pair[("shop-dev/frontend", "shop-dev/catalogue")]
    # Before: TCP 80 by the observed rule; after: both sides outside default deny, so everything.
    assert (c.change.kind, str(c.change.before), str(c.change.after)) == ("changed", "TCP 80", "All Connections")
    assert c.added_by == () and c.note == "at v2 neither side is under default deny"
    assert not c.added.allows(c.change.before.ports[0][0], 80) and c.added.allows(c.change.before.ports[0][0], 81)
    assert d.widens


def test_no_change_and_the_working_tree_is_not_read(repo: Path) -> None:
    (repo / POLICY_DIR / "rules.yaml").write_text("rules: [unclosed\n", encoding="utf-8")  # uncommitted
    d = diff_revisions(repo, "v1", "HEAD", POLICY_DIR)
    assert d.changes == () and not d.widens
    assert render_text(d) == "Connectivity diff v1 -> HEAD:\nNo change in connectivity.\n"


def test_bad_revisions_and_paths_are_input_errors(repo: Path) -> None:
    with pytest.raises(InputError) as e:
        diff_revisions(repo, "v1", "no-such-rev", POLICY_DIR)
    assert e.value.field == "REV" and "no-such-rev" in str(e.value)
    with pytest.raises(InputError):
        policy_at(repo, "--output=/tmp/x", POLICY_DIR)
    with pytest.raises(InputError) as e:
        policy_at(repo, "v1", "policy")
    assert e.value.field == "--policy-dir"
    with pytest.raises(InputError):
        policy_at(repo.parent / "not-a-repo", "v1", POLICY_DIR)


def test_a_broken_file_at_a_revision_names_revision_file_and_line(repo: Path) -> None:
    pol = repo / POLICY_DIR
    (pol / "rules.yaml").write_text("rules:\n- id: AR-x\n  sources: [shop/frontend]\n  bogus: 1\n", encoding="utf-8")
    commit(repo, "v2")
    with pytest.raises(InputError) as e:
        diff_revisions(repo, "v1", "v2", POLICY_DIR)
    assert e.value.file == f"v2:{POLICY_DIR}/rules.yaml" and e.value.line is not None and e.value.line >= 2


def test_a_policy_at_the_repository_root(tmp_path: Path, demo_policy: Path) -> None:
    repo = tmp_path / "root-repo"
    shutil.copytree(demo_policy, repo)
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "plan")
    dropped = rule_id(repo, "external:corp-vpn", "bastion-1")
    write_rules(repo, [r for r in rules_of(repo) if r["id"] != dropped])
    git(repo, "commit", "-q", "-am", "drop vpn ssh")
    d = diff_revisions(repo, "HEAD~1", "HEAD", ".")
    assert [(c.change.kind, c.change.source, c.change.destination, c.removed_by) for c in d.changes] == [
        ("removed", "external:corp-vpn", "bastion-1", (dropped,))]
    with pytest.raises(InputError) as e:
        policy_at(repo, "HEAD", str(repo))
    assert e.value.field == "--policy-dir"
