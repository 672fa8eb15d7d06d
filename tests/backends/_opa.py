"""OPA test support: the real OPA engine, and microseg's evaluator lifted to identities as the reference.

Shared by test_opa.py and test_contract.py. The engine is OPA itself (v1.20.2, embedded in the PyPI
package opa-golib-python-bindings), run from its own venv ``.opa-venv`` (scripts/setup-opa.sh) as a
subprocess; without it the tests fail, they are never skipped.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from microseg.backends.opa import BACKEND
from microseg.ir.model import AllowRule, Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Evaluator

REPO = Path(__file__).resolve().parents[2]
OPA_PYTHON = REPO / ".opa-venv" / "bin" / "python"
SETUP_HINT = ("the OPA engine is a required test component: run scripts/setup-opa.sh to create .opa-venv with "
              "opa-golib-python-bindings (OPA v1.20.2)")
# Runs inside .opa-venv: loads the bundle's policies and data into OPA, answers every query in one
# evaluation, and prints [[decision, allow], ...].
DRIVER = r"""
import json, sys
from opa_bindings import OpaEngine

req = json.load(sys.stdin)
with OpaEngine() as engine:
    for path, text in sorted(req["policies"].items()):
        engine.add_policy(path, text)
    engine.add_data(req["data"])
    rows = engine.eval_query(
        "out := [d | some q in input.queries; "
        "d := [data.microseg.authz.decision, data.microseg.authz.allow] with input as q]",
        {"queries": req["queries"]})
json.dump(rows[0]["out"], sys.stdout)
"""


def opa(files: dict[str, str], queries: Sequence[Any]) -> list[tuple[dict[str, Any], bool]]:
    """OPA's ``decision`` and ``allow`` for each input, from the compiled bundle (policies and data.json)."""
    if not OPA_PYTHON.is_file():
        pytest.fail(f"{OPA_PYTHON} is missing. {SETUP_HINT}", pytrace=False)
    request = {"policies": {p: t for p, t in files.items() if p.startswith("opa/") and p.endswith(".rego")},
               "data": json.loads(files["opa/data.json"]), "queries": list(queries)}
    proc = subprocess.run([str(OPA_PYTHON), "-c", DRIVER], input=json.dumps(request), capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"OPA failed ({proc.returncode}):\n{proc.stderr}")
    return [(d, a) for d, a in json.loads(proc.stdout)]


# -- the reference: microseg's evaluator, lifted to identities -------------------------------------------------------


def identities(w: Workload) -> set[str]:
    """What a workload may present (the contract of the module docstring, restated independently)."""
    out = {w.name}
    if w.identity:
        out.add(w.identity)
    if w.kind == WorkloadKind.KUBERNETES and not (w.identity or "").startswith("spiffe://"):
        ns = w.namespace or w.name.split("/", 1)[0]
        out.add(f"spiffe://cluster.local/ns/{ns}/sa/{w.service_account or 'default'}")
    return out


class Reference:
    def __init__(self, policy: Policy) -> None:
        self.ev = Evaluator(policy)
        self.denotes: dict[str, set[str]] = {}
        for w in policy.workloads:
            for i in identities(w):
                self.denotes.setdefault(i, set()).add(w.name)

    def decide(self, source: str, destination: str, protocol: Protocol, port: int) -> tuple[bool, list[str]]:
        """An identity shared by workloads is allowed only what all of them are allowed."""
        srcs, dsts = self.denotes.get(source, set()), self.denotes.get(destination, set())
        decisions = [self.ev.decide(s, d, protocol, port) for s in sorted(srcs) for d in sorted(dsts)]
        allowed = bool(decisions) and all(d.allowed for d in decisions)
        return allowed, sorted({r for d in decisions for r in d.rule_ids})


def boundary_ports(rules: Iterable[AllowRule]) -> list[int]:
    ports = {0, 1, 80, 65535}
    for r in rules:
        for p in r.ports:
            ports |= {max(p.start - 1, 0), p.start, p.end, min(p.end + 1, 65535)}
    return sorted(ports)


def exhaustive_queries(policy: Policy, ids: Sequence[str]) -> list[tuple[str, str, Protocol, int]]:
    ports = boundary_ports(policy.all_rules())
    return [(s, d, proto, port) for s in ids for d in ids for proto in Protocol for port in ports]


def check_against_evaluator(policy: Policy, mode: str, queries: Sequence[tuple[str, str, Protocol, int]]) -> None:
    files = BACKEND.compile(policy, mode="observe" if mode == "observe" else "enforce")
    ref = Reference(policy)
    inputs = [{"source": s, "destination": d, "protocol": p.value, "port": port} for s, d, p, port in queries]
    problems = []
    for (s, d, p, port), (decision, allow) in zip(queries, opa(files, inputs), strict=True):
        would, rule_ids = ref.decide(s, d, p, port)
        want = {"allowed": would if mode == "enforce" else True, "would_allow": would, "mode": mode,
                "rule_ids": rule_ids}
        if decision != want or allow != want["allowed"]:
            problems.append(f"{s!r} -> {d!r} {p.value}/{port}: OPA {decision} (allow={allow}), expected {want}")
    assert not problems, f"{len(problems)} of {len(queries)} decisions differ:\n  " + "\n  ".join(problems[:20])
