"""Cilium back end: structure, determinism, hostile text, unsupported features, observe mode.

No CRD schema of Cilium is vendored yet (see tests/schemas/README.md) and no independent evaluator of
Cilium policies exists here, so the peers of every rule are checked structurally against the IR.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.backends import CAPABILITIES, TARGETS, Mode, get_backend
from microseg.backends.cilium import BACKEND
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.model import AllowRule, Justification, JustificationKind, Policy, Protocol, Workload, WorkloadKind

GOLDEN = Path(__file__).parent / "golden"
WHY = Justification(kind=JustificationKind.DECLARED, text="test")


def load(path: Path) -> Policy:
    return Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def small() -> Policy:
    return load(GOLDEN / "calico" / "small" / "policy.yaml").model_copy(update={"rules": tuple(
        r for r in load(GOLDEN / "calico" / "small" / "policy.yaml").rules if r.protocol != Protocol.ICMP)})


def shop() -> Policy:
    return load(GOLDEN / "kubernetes" / "shop" / "policy.yaml")


def pod(name: str, **labels: str) -> Workload:
    ns, short = name.split("/", 1)
    sel = labels or {"app": short}
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector=sel, labels=sel)


def allow(rid: str, src: list[str], dst: list[str], proto: Protocol = Protocol.TCP, *ports: str) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=ports or ("80",),
                     justification=WHY)


def documents(files: dict[str, str]) -> list[dict[str, Any]]:
    return [d for path, text in sorted(files.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d is not None]


def test_small_policy_by_hand() -> None:
    """The expected objects of the small case, written from the Cilium semantics."""
    docs = {d["metadata"]["name"]: d for d in documents(BACKEND.compile(small()))}
    assert sorted(docs) == ["microseg-db", "microseg-default-deny", "microseg-web"]
    db = docs["microseg-db"]["spec"]
    assert db["endpointSelector"] == {"matchLabels": {"app": "db", "k8s:io.cilium.k8s.policy.serviceaccount": "db"}}
    assert db["ingress"] == [
        {"fromCIDRSet": [{"cidr": "10.20.0.7/32"}], "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]},
        {"fromEndpoints": [{"matchLabels": {"app": "web", "k8s:io.kubernetes.pod.namespace": "shop"}}],
         "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"},
                                {"port": "8000", "endPort": 8100, "protocol": "TCP"}]}]},
    ]
    assert db["egress"] == [{"toEndpoints": [{"matchLabels": {"k8s-app": "kube-dns",
                                                              "k8s:io.kubernetes.pod.namespace": "kube-system"}}],
                             "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}]
    web = docs["microseg-web"]["spec"]
    assert "ingress" not in web and web["endpointSelector"] == {"matchLabels": {"app": "web"}}
    assert web["egress"][1] == {"toEndpoints": [{"matchLabels": {"app": "db", "k8s:io.cilium.k8s.policy.serviceaccount":
                                                                 "db", "k8s:io.kubernetes.pod.namespace": "shop"}}],
                                "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"},
                                                       {"port": "8000", "endPort": 8100, "protocol": "TCP"}]}]}
    assert web["egress"][2]["toCIDRSet"] == [{"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}]
    deny = docs["microseg-default-deny"]
    assert deny["kind"] == "CiliumClusterwideNetworkPolicy" and "namespace" not in deny["metadata"]
    assert deny["spec"]["endpointSelector"] == {"matchExpressions": [
        {"key": "k8s:io.kubernetes.pod.namespace", "operator": "In", "values": ["shop"]}]}
    assert deny["spec"]["ingress"] == [{}] and deny["spec"]["egress"] == [{}]
    assert deny["spec"]["enableDefaultDeny"] == {"ingress": True, "egress": True}


def test_every_rule_has_exactly_its_peers() -> None:
    policy = shop()
    docs = documents(BACKEND.compile(policy))
    wl = policy.workload_map()
    for d in docs:
        if d["kind"] != "CiliumNetworkPolicy":
            continue
        w = wl[d["metadata"]["annotations"]["microseg.io/workload"]]
        for entry in d["spec"].get("ingress", []) + d["spec"].get("egress", []):
            assert entry["toPorts"][0]["ports"], entry  # never an empty toPorts (which would mean all ports)
            assert set(entry) - {"toPorts"} <= {"fromEndpoints", "fromCIDRSet", "toEndpoints", "toCIDRSet"}
            for sel in entry.get("fromEndpoints", []) + entry.get("toEndpoints", []):
                assert "k8s:io.kubernetes.pod.namespace" in sel["matchLabels"]
        assert d["metadata"]["namespace"] == w.namespace


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_deterministic_under_permutation(mode: Mode) -> None:
    policy = shop()
    first = BACKEND.compile(policy, mode=mode)
    for seed in range(8):
        rng = random.Random(seed)
        rules = list(policy.rules)
        workloads = list(policy.workloads)
        rng.shuffle(rules)
        rng.shuffle(workloads)
        permuted = policy.model_copy(update={"rules": tuple(r.model_copy(update={
            "sources": tuple(reversed(r.sources)), "ports": tuple(reversed(r.ports))}) for r in rules),
            "workloads": tuple(workloads)})
        assert BACKEND.compile(permuted, mode=mode) == first


def test_observe_mode_blocks_nothing_on_its_own() -> None:
    policy = shop()
    enforce, observe = documents(BACKEND.compile(policy)), documents(BACKEND.compile(policy, mode="observe"))
    assert all(d["kind"] == "CiliumNetworkPolicy" for d in observe)
    assert all(d["spec"]["enableDefaultDeny"] == {"ingress": False, "egress": False} for d in observe)
    strip = [{**d["spec"]} for d in observe]
    for s in strip:
        s.pop("enableDefaultDeny")
    assert strip == [d["spec"] for d in enforce if d["kind"] == "CiliumNetworkPolicy"]
    readme = BACKEND.compile(policy, mode="observe")["README.md"]
    assert "Policy Audit Mode" in readme and "cannot be limited" in readme


@pytest.mark.parametrize(("rule", "match"), [
    (allow("AR-ping", ["shop/web"], ["shop/db"], Protocol.ICMP, "0"), "ICMP"),
])
def test_unsupported_protocols(rule: AllowRule, match: str) -> None:
    with pytest.raises(UnsupportedFeature, match=match) as err:
        BACKEND.compile(Policy(workloads=(pod("shop/web"), pod("shop/db")), rules=(rule,)))
    assert err.value.target == "cilium" and err.value.rule_id == rule.id


@pytest.mark.parametrize("selector", [{}, {"reserved:world": ""}, {"app": "x\ny"}])
def test_unsafe_selectors_are_unsupported(selector: dict[str, str]) -> None:
    w = Workload(name="shop/db", kind=WorkloadKind.KUBERNETES, namespace="shop", selector=selector)
    with pytest.raises(UnsupportedFeature):
        BACKEND.compile(Policy(workloads=(pod("shop/web"), w), rules=(allow("AR-1", ["shop/web"], ["shop/db"]),)))


def test_unknown_mode_and_workload_fail_closed() -> None:
    with pytest.raises(MicrosegError, match="unknown mode"):
        BACKEND.compile(Policy(), mode="audit")  # type: ignore[arg-type]
    with pytest.raises(MicrosegError, match="unknown workload"):
        BACKEND.compile(Policy(workloads=(pod("shop/web"),), rules=(allow("AR-1", ["shop/web"], ["shop/x"]),)))


_FRAGMENTS = ['"', "'", "\n", ";", "{", "}", "#", "$", "\\", ": ", "- ", "---", "reserved:world", "\x00"]
hostile = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=5)), min_size=1, max_size=4).map(
    "".join).filter(bool)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile, min_size=2, max_size=2, unique=True), rid=hostile, why=hostile, key=hostile,
       value=hostile)
def test_hostile_text_cannot_change_the_meaning(names: list[str], rid: str, why: str, key: str, value: str) -> None:
    a = Workload(name=f"shop/{names[0]}", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "a"})
    b = Workload(name=f"shop/{names[1]}", kind=WorkloadKind.KUBERNETES, namespace="shop",
                 selector={"app": "b", key: value})
    policy = Policy(workloads=(a, b), rules=(AllowRule(
        id=rid, sources=(a.name,), destinations=(b.name,), protocol=Protocol.TCP, ports=("80",),
        justification=Justification(kind=JustificationKind.DECLARED, text=why)),))
    try:
        out = BACKEND.compile(policy)
    except UnsupportedFeature as err:
        assert "label" in err.feature or "also matches" in err.feature
        return
    docs = {d["metadata"]["annotations"].get("microseg.io/workload"): d for d in documents(out)}
    assert set(docs) == {a.name, b.name, None}
    assert docs[b.name]["spec"]["ingress"] == [{"fromEndpoints": [{"matchLabels": {
        "app": "a", "k8s:io.kubernetes.pod.namespace": "shop"}}], "toPorts": [{"ports": [{"port": "80",
                                                                                         "protocol": "TCP"}]}]}]
    assert docs[b.name]["spec"]["endpointSelector"] == {"matchLabels": dict(sorted({"app": "b", key: value}.items()))}
    assert docs[a.name]["metadata"]["annotations"]["microseg.io/justification"] == f"{rid} [declared] {why}"


def test_registry() -> None:
    assert "cilium" in TARGETS
    backend = get_backend("cilium")
    assert backend is BACKEND and backend.capabilities <= set(CAPABILITIES)
    assert "icmp" not in backend.capabilities and "l7" not in backend.capabilities
