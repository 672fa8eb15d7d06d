"""OPA/Rego back end: the generated policy evaluated by a real OPA engine.

The engine is OPA itself (github.com/open-policy-agent/opa/v1/rego, v1.20.2), embedded in the PyPI
package opa-golib-python-bindings as a Go shared library. It lives in its own venv (``.opa-venv``,
made by scripts/setup-opa.sh) and runs as a subprocess; without it these tests fail, they are never
skipped. Every decision is compared with microseg's own evaluator: allow iff
``Evaluator.decide`` allows, with the same rule ids, over all pairs of identities, all protocols and
every port where some rule's range starts or ends (the verdict is constant between those points).

Golden files under golden/opa/<case>/ were written by hand (the bundle revision with sha256sum over
the hand-written files) and are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.backends import CAPABILITIES, TARGETS, Backend, get_backend
from microseg.backends.opa import BACKEND, REGO
from microseg.errors import MicrosegError
from microseg.examples import example_dir
from microseg.ir.model import (
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    PolicyException,
    PortRange,
    Protocol,
    Workload,
    WorkloadKind,
)
from microseg.pipeline import plan, read_policy_dir
from tests.backends._opa import (
    boundary_ports,
    check_against_evaluator,
    exhaustive_queries,
    identities,
    opa,
)

GOLDEN = Path(__file__).parent / "golden" / "opa"
CASES = sorted((case.name, expected.name.removeprefix("expected-"))
               for case in GOLDEN.iterdir() for expected in case.glob("expected-*"))
WHY = Justification(kind=JustificationKind.DECLARED, text="test")


def load_case(case: str) -> Policy:
    return Policy.model_validate(yaml.safe_load((GOLDEN / case / "policy.yaml").read_text(encoding="utf-8")))


# -- golden cases ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_golden(case: str, mode: str) -> None:
    out = BACKEND.compile(load_case(case), mode="observe" if mode == "observe" else "enforce")
    expected_dir = GOLDEN / case / f"expected-{mode}"
    expected = sorted(p.relative_to(expected_dir).as_posix() for p in expected_dir.rglob("*") if p.is_file())
    assert sorted(out) == expected
    for name, text in out.items():
        assert text == (expected_dir / name).read_text(encoding="utf-8"), f"{case}/{mode}/{name} differs"


def test_golden_cases_exist() -> None:
    assert {("pdp", "enforce"), ("pdp", "observe")} <= set(CASES)


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_bundle_manifest_and_revision(case: str, mode: str) -> None:
    out = BACKEND.compile(load_case(case), mode="observe" if mode == "observe" else "enforce")
    manifest = json.loads(out["opa/.manifest"])
    assert manifest["roots"] == ["microseg"]
    assert manifest["revision"] == hashlib.sha256((out["opa/microseg.rego"] + "\0" + out["opa/data.json"])
                                                  .encode("utf-8")).hexdigest()
    assert f"`{manifest['revision']}`" in out["README.md"]
    assert json.loads(out["opa/data.json"])["microseg"]["mode"] == mode


# -- OPA's decisions against the evaluator --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_opa_decides_like_the_evaluator_on_every_identity_protocol_and_port(mode: str) -> None:
    policy = load_case("pdp")
    ids = sorted({i for w in policy.workloads for i in identities(w)} | {"nobody", "spiffe://cluster.local/ns/x/sa/y"})
    check_against_evaluator(policy, mode, exhaustive_queries(policy, ids))


def test_shared_identity_gets_only_what_every_workload_gets() -> None:
    # worker and report share the service account "jobs"; only the worker may call web on 8080.
    files = BACKEND.compile(load_case("pdp"))
    jobs = "spiffe://cluster.local/ns/shop/sa/jobs"
    got = opa(files, [{"source": jobs, "destination": "shop/web", "protocol": "TCP", "port": 8080},
                      {"source": "shop/worker", "destination": "shop/web", "protocol": "TCP", "port": 8080},
                      {"source": jobs, "destination": "shop/db", "protocol": "TCP", "port": 5433}])
    assert [d["allowed"] for d, _ in got] == [False, True, True]


def test_envoy_check_request_decides_like_the_direct_input() -> None:
    policy = load_case("pdp")
    files = BACKEND.compile(policy)
    spiffe = sorted({i for w in policy.workloads for i in identities(w) if i.startswith("spiffe://")})
    ports = boundary_ports(policy.all_rules())
    direct = [{"source": s, "destination": d, "protocol": "TCP", "port": p} for s in spiffe for d in spiffe
              for p in ports]
    envoy = [{"attributes": {"source": {"principal": q["source"]}, "destination": {
        "principal": q["destination"], "address": {"socketAddress": {"address": "10.0.0.9", "portValue": q["port"]}}},
        "request": {"http": {"method": "GET", "path": "/"}}}} for q in direct]
    assert opa(files, envoy) == opa(files, direct)
    assert any(d["allowed"] for d, _ in opa(files, envoy))


def test_examples_evaluate_to_allowed() -> None:
    files = BACKEND.compile(load_case("pdp"))
    got = opa(files, [json.loads(files["examples/input-direct.json"]), json.loads(files["examples/input-envoy.json"])])
    assert [(d["allowed"], d["rule_ids"]) for d, _ in got] == [(True, ["AR-jobs-db"]), (True, ["AR-jobs-db"])]


@pytest.mark.parametrize("bad", [
    {}, {"source": "shop/web", "destination": "shop/db", "protocol": "TCP"},
    {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": "5432"},
    {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": 5432.5},
    {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": -1},
    {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": 65536},
    {"source": "shop/web", "destination": "shop/db", "port": 5432},
    {"source": ["shop/web"], "destination": "shop/db", "protocol": "TCP", "port": 5432},
    {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": 5432, "attributes": "x"},
    {"attributes": {"destination": {"principal": "spiffe://cluster.local/ns/shop/sa/db",
                                    "address": {"socketAddress": {"portValue": 5432}}}}},
    {"attributes": {"source": {"principal": "spiffe://cluster.local/ns/shop/sa/web"},
                    "destination": {"principal": "spiffe://cluster.local/ns/shop/sa/db"}}},
    {"source": "external:internet", "destination": "shop/web", "protocol": "TCP", "port": 80},
    {"source": "shop/web", "destination": "shop/db", "protocol": "UDP", "port": 5432},
])
def test_malformed_or_unknown_input_is_denied(bad: dict[str, Any]) -> None:
    files = BACKEND.compile(load_case("pdp"))
    [(decision, allow)] = opa(files, [bad])
    assert allow is False and decision["allowed"] is False and decision["would_allow"] is False


def test_opa_decides_like_the_evaluator_on_the_example(tmp_path_factory: pytest.TempPathFactory) -> None:
    ex = example_dir()
    outcome = plan([ex / "k8s", ex / "snapshots", ex / "inventory"], [str(ex / "flows")],
                   tmp_path_factory.mktemp("plan") / "out")
    policy = read_policy_dir(outcome.out_dir / "policy")
    by_pair: dict[tuple[str, str], list[AllowRule]] = {}
    for r in policy.all_rules():
        for s in r.sources:
            for d in r.destinations:
                by_pair.setdefault((s, d), []).append(r)
    names = sorted(w.name for w in policy.workloads)
    queries: list[tuple[str, str, Protocol, int]] = []
    for s in names:
        for d in names:
            rules = by_pair.get((s, d))
            if rules:
                queries += [(s, d, proto, port) for proto in Protocol for port in boundary_ports(rules)]
            else:
                queries += [(s, d, Protocol.TCP, 443), (s, d, Protocol.UDP, 53)]
    check_against_evaluator(policy, "enforce", queries)
    # and by SPIFFE ID, one port per rule
    ids = sorted({i for w in policy.workloads for i in identities(w) if i.startswith("spiffe://")})
    ports = sorted({max(p.start, 1) for r in policy.all_rules() for p in r.ports})
    check_against_evaluator(policy, "enforce", [(s, d, Protocol.TCP, p) for s in ids for d in ids for p in ports])


@st.composite
def small_policies(draw: st.DrawFn) -> Policy:
    accounts = ["a", "b", "a"] if draw(st.booleans()) else ["a", "b", "c"]  # sometimes a shared account
    workloads = [Workload(name=f"{draw(st.sampled_from(['ns1', 'kube-system']))}/w{i}", kind=WorkloadKind.KUBERNETES,
                          selector={"app": f"w{i}"}, service_account=accounts[i]) for i in range(3)]
    workloads = [w.model_copy(update={"namespace": w.name.split("/")[0]}) for w in workloads]
    workloads += [Workload(name="h", kind=WorkloadKind.HOST, addresses=("10.0.0.1",), identity="CN=h"),
                  Workload(name="external:x", kind=WorkloadKind.EXTERNAL, addresses=("192.0.2.0/24",))]
    names = [w.name for w in workloads]
    rules = []
    for i in range(draw(st.integers(min_value=0, max_value=5))):
        start = draw(st.integers(min_value=0, max_value=20))
        rules.append(AllowRule(id=f"AR-{i}", sources=tuple(draw(st.lists(st.sampled_from(names), min_size=1,
                                                                            max_size=2, unique=True))),
                               destinations=tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2,
                                                                unique=True))),
                               protocol=draw(st.sampled_from(list(Protocol))),
                               ports=(f"{start}-{start + draw(st.integers(min_value=0, max_value=3))}",),
                               justification=WHY))
    return Policy(workloads=tuple(workloads), rules=tuple(rules))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=small_policies())
def test_random_policies_decide_like_the_evaluator(policy: Policy) -> None:
    ids = sorted({i for w in policy.workloads for i in identities(w)})
    check_against_evaluator(policy, "enforce", exhaustive_queries(policy, ids))


# -- hostile names, determinism, the rest -------------------------------------------------------------------------

_FRAGMENTS = ['"', "'", "\n", "\\", "\\u0000", "\x00", "}", "{", "]", "[", "#", "$", "`", "import data", "package x",
              "\" || true", "\u2028", "é", "default allow := true", ":", "/"]
hostile = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=5)), min_size=1, max_size=5).map(
    "".join).filter(bool)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile, min_size=3, max_size=3, unique=True), ident=hostile, rid=hostile)
def test_hostile_names_reach_only_the_data_and_keep_their_meaning(names: list[str], ident: str, rid: str) -> None:
    a = Workload(name=f"ns/{names[0]}", kind=WorkloadKind.KUBERNETES, namespace="ns", selector={"app": "a"},
                 identity=ident)
    b = Workload(name=f"ns/{names[1]}", kind=WorkloadKind.KUBERNETES, namespace="ns", selector={"app": "b"},
                 service_account="b")
    c = Workload(name=names[2], kind=WorkloadKind.HOST, addresses=("10.0.0.1",))
    policy = Policy(workloads=(a, b, c), rules=(AllowRule(id=rid, sources=(a.name, c.name), destinations=(b.name,),
                                                          protocol=Protocol.TCP, ports=("443",), justification=WHY),))
    files = BACKEND.compile(policy)
    assert files["opa/microseg.rego"] == REGO  # nothing from the inventory is ever written into Rego
    data = json.loads(files["opa/data.json"])["microseg"]
    assert set(data["workloads"]) == {a.name, b.name, c.name} and list(data["rules"]) == [rid]
    assert data["rules"][rid]["sources"] == sorted([a.name, c.name])
    assert all(ord(ch) < 128 for ch in files["opa/data.json"])
    ids = sorted({i for w in policy.workloads for i in identities(w)})
    check_against_evaluator(policy, "enforce", [(s, d, Protocol.TCP, p) for s in ids for d in ids for p in (442, 443)])


def test_rego_is_the_same_for_every_policy() -> None:
    assert BACKEND.compile(load_case("pdp"))["opa/microseg.rego"] == BACKEND.compile(Policy())["opa/microseg.rego"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_deterministic_under_permutation(mode: str) -> None:
    policy = load_case("pdp")
    m = "observe" if mode == "observe" else "enforce"
    first = BACKEND.compile(policy, mode=m)
    for seed in range(10):
        rng = random.Random(seed)

        def shuffled(items: tuple[Any, ...], rng: random.Random = rng) -> tuple[Any, ...]:
            out = list(items)
            rng.shuffle(out)
            return tuple(out)

        rules = tuple(r.model_copy(update={"sources": shuffled(r.sources), "destinations": shuffled(r.destinations),
                                           "ports": shuffled(r.ports)}) for r in policy.rules)
        permuted = policy.model_copy(update={"workloads": shuffled(policy.workloads), "rules": shuffled(rules),
                                             "exceptions": shuffled(policy.exceptions)})
        assert BACKEND.compile(permuted, mode=m) == first, seed


def test_unknown_workload_and_conflicting_ids_fail_closed() -> None:
    w = Workload(name="ns/a", kind=WorkloadKind.KUBERNETES, namespace="ns", selector={"app": "a"})
    ghost = AllowRule(id="AR-1", sources=("ns/ghost",), destinations=("ns/a",), protocol=Protocol.TCP, ports=("1",),
                      justification=WHY)
    with pytest.raises(MicrosegError, match="unknown workload 'ns/ghost'"):
        BACKEND.compile(Policy(workloads=(w,), rules=(ghost,)))
    r1 = ghost.model_copy(update={"sources": ("ns/a",)})
    r2 = r1.model_copy(update={"ports": (PortRange(start=1, end=2),)})
    exc = PolicyException(rule=r2, guardrail="G", approver="x", reason="y", expires="2030-01-01T00:00:00Z")
    with pytest.raises(MicrosegError, match="two different rules have the id 'AR-1'"):
        BACKEND.compile(Policy(workloads=(w,), rules=(r1,), exceptions=(exc,)))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(MicrosegError, match="unknown mode"):
        BACKEND.compile(load_case("pdp"), mode="audit")  # type: ignore[arg-type]


def test_registry() -> None:
    assert "opa" in TARGETS
    backend = get_backend("opa")
    assert backend is BACKEND and isinstance(backend, Backend) and backend.name == "opa"
    assert backend.capabilities <= set(CAPABILITIES)
    assert "ipblock" not in backend.capabilities  # identities only


def test_hostile_text_is_escaped_in_the_readme() -> None:
    infra = Justification(kind=JustificationKind.INFRASTRUCTURE, text="x | y\n## injected <script>")
    w = Workload(name="ns/a", kind=WorkloadKind.KUBERNETES, namespace="ns", selector={"app": "a"})
    policy = Policy(workloads=(w,), rules=(AllowRule(id="AR-|x", sources=("ns/a",), destinations=("ns/a",),
                                                     protocol=Protocol.UDP, ports=("53",), justification=infra),))
    readme = BACKEND.compile(policy)["README.md"]
    row = next(line for line in readme.splitlines() if "AR-" in line)
    assert row.count(" | ") == 5
    assert "<script>" not in readme and "\n## injected" not in readme
