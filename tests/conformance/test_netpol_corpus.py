"""The NetworkPolicy conformance corpus (../shared/conformance/netpol): microseg against np-guard's analyser.

Expected outputs are the corpus's own (an independent implementation); nothing here is regenerated from
microseg. ``known_gaps.tsv`` lists every case microseg does not match, with the reason; a listed case that
starts to match fails the test too, so the list stays exact.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from microseg.analyses import multinet
from microseg.analyses.conndiff import render_diff
from microseg.analyses.connlist import PolicyInput, connectivity_diff
from microseg.errors import MicrosegError
from microseg.pipeline import connectivity
from microseg.sources.deployed.admin_netpol import read_policies
from microseg.sources.inventory import discover
from microseg.sources.inventory.kubernetes import KubernetesReader
from microseg.sources.yamlpos import load_documents

CORPUS = Path(__file__).parents[2].parent / "shared" / "conformance" / "netpol"
GAPS_FILE = Path(__file__).with_name("known_gaps.tsv")
# `<case>_<protocol>-<port>`: the corpus's port-focused runs of <case> ("Permitted connections on UDP 52:").
_FOCUSED = re.compile(r"^(?P<base>.+)_(?P<proto>tcp|udp|sctp)-(?P<port>\d+)$")
# Diff lines whose source is `{ingress-controller}` come from Ingress/Route objects (tier `other`): microseg does
# not model ingress controllers, so these lines are left out of the comparison, and counted here.
INGRESS_CONTROLLER_LINES = 7

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is missing")


def _tiers() -> dict[str, str]:
    if not CORPUS.is_dir():
        return {}
    rows = [line.split("\t") for line in (CORPUS / "cases.tsv").read_text().splitlines()[1:] if line.strip()]
    return {row[0]: row[1] for row in rows}


def _gaps() -> dict[str, str]:
    rows = [line.split("\t", 1) for line in GAPS_FILE.read_text().splitlines()[1:] if line.strip()]
    return {case: reason for case, reason in rows}


TIERS = _tiers()
GAPS = _gaps()


@cache
def _run(case: str) -> str | None:
    """microseg's output for a case, or None when the corpus has no inputs for it."""
    base, port = case, None
    if not (CORPUS / "cases" / case).is_dir() and (m := _FOCUSED.match(case)):
        base, port = m["base"], f"{m['proto']}/{m['port']}"
    directory = CORPUS / "cases" / base
    if not directory.is_dir():
        return None
    return connectivity([directory], [directory], port=port).text


def _expected(case: str) -> str:
    return (CORPUS / "expected" / "connlist" / f"{case}.txt").read_text()


def _matches(case: str) -> bool:
    try:
        got = _run(case)
    except MicrosegError:
        return False
    return got is not None and got.strip() == _expected(case).strip()


def test_known_gaps_name_real_cases_with_reasons() -> None:
    diffs = {f"diff:{p.stem}" for p in (CORPUS / "expected" / "diff").glob("*.txt")}
    for case, reason in GAPS.items():
        assert case in TIERS or case in diffs, f"known_gaps.tsv names an unknown case {case}"
        assert len(reason) > 20, f"{case}: give a reason"


@pytest.mark.parametrize("case", sorted(c for c, t in TIERS.items() if t == "core"))
def test_core_case(case: str) -> None:
    if case in GAPS:
        assert not _matches(case), f"{case} now matches: remove it from known_gaps.tsv"
        return
    got = _run(case)
    assert got is not None, f"{case}: no inputs"
    assert got == _expected(case).rstrip("\n") + "\n"


@pytest.mark.parametrize("case", sorted(c for c, t in TIERS.items() if t == "admin"))
def test_admin_case(case: str) -> None:
    if case in GAPS:
        assert not _matches(case), f"{case} now matches: remove it from known_gaps.tsv"
        return
    assert _run(case) == _expected(case).rstrip("\n") + "\n"


def test_admin_tier_matches_at_least_90_percent() -> None:
    admin = [c for c, t in TIERS.items() if t == "admin"]
    assert len(admin) == 54
    passing = [c for c in admin if _matches(c)]
    assert len(passing) / len(admin) >= 0.9
    assert set(admin) - set(passing) == {c for c in admin if c in GAPS}


def _input(case: str) -> PolicyInput:
    directory = CORPUS / "cases" / case
    reader = KubernetesReader(lenient=True)
    docs = [doc for path, display in discover([directory]) for doc in load_documents(path, display)]
    for doc in docs:
        if isinstance(doc.data, dict):
            reader.add(doc)
    found = reader.build()
    policies = read_policies(docs)
    variants = {name: [dict(v) for v in sets] for name, sets in found.label_variants.items()}
    # Primary user-defined networks isolate their workloads: a diff compares pairs within one network.
    objects = multinet.read_objects(docs)
    namespaces = {name: dict(labels) for name, labels in found.namespaces}
    networks = (multinet.primary_networks(objects, found.workloads, namespaces, found.secondary_networks)
                if multinet.applies(objects, found.workloads, namespaces) else None)
    return PolicyInput(found.workloads, policies.netpols, policies.admin, variants, networks)


DIFFS = sorted(p.stem for p in (CORPUS / "expected" / "diff").glob("*.txt")) if CORPUS.is_dir() else []


def _diff_lines(name: str) -> tuple[list[str], list[str]]:
    new, old = name.split("__vs__")
    got = render_diff(connectivity_diff(_input(old), _input(new))).splitlines()[1:]
    expected = [line for line in (CORPUS / "expected" / "diff" / f"{name}.txt").read_text().splitlines()
                if line.startswith("diff-type:") and "{ingress-controller}" not in line]
    return got, expected


def test_there_are_46_diff_pairs() -> None:
    assert len(DIFFS) == 46


@pytest.mark.parametrize("name", DIFFS)
def test_diff_pair(name: str) -> None:
    got, expected = _diff_lines(name)
    if f"diff:{name}" in GAPS:
        assert got != expected, f"diff {name} now matches: remove it from known_gaps.tsv"
        return
    assert got == expected


def test_ingress_controller_lines_left_out_are_counted() -> None:
    count = sum(line.count("{ingress-controller}") for p in (CORPUS / "expected" / "diff").glob("*.txt")
                for line in p.read_text().splitlines())
    assert count == INGRESS_CONTROLLER_LINES


def test_other_tier_runs_without_internal_errors() -> None:
    # Optional tier. Ingress/Route exposure is not modelled, nor ipBlock peers of a MultiNetworkPolicy (refused);
    # user-defined networks, KubeVirt VMs and NAD/MultiNetworkPolicy secondary networks are (analyses/multinet.py).
    # Each case must still end in output or a clear MicrosegError; the ones that match are pinned so the figure
    # in the README stays true.
    other = sorted(c for c, t in TIERS.items() if t == "other")
    assert len(other) == 39
    passing = {c for c in other if _matches(c)}
    assert passing == {
        "acs_security_frontend_demos", "virtual_machines_example",
        *(f"cudn_test_{i}" for i in range(1, 7)),
        *(f"nad_test_{i}" for i in (1, 2, 3, 4, 5, 6, 8, 12, 13, 14, 15)),
        *(f"udn_and_vms_test_{i}" for i in range(1, 5)),
        *(f"udn_test_{i}" for i in range(1, 5)),
    }
