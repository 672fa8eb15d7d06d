"""Cilium back end: structure, determinism, hostile text, unsupported features, observe mode, L7 and DNS names.

Every object compiled here is validated against Cilium's own CRD schemas (CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy ``v2``, tests/schemas/crds/cilium/, see tests/schemas/README.md) with
tests/oracle/crd.py, which also refuses unknown fields. No independent evaluator of Cilium policies
exists here, so the peers of every rule are checked structurally against the IR.
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
from microseg.ir.model import (
    AllowRule,
    HttpMatch,
    Justification,
    JustificationKind,
    Policy,
    Protocol,
    Workload,
    WorkloadKind,
)
from tests.oracle import crd

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
    """The compiled objects, each validated against its Cilium CRD schema."""
    docs = [d for path, text in sorted(files.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d is not None]
    for d in docs:
        crd.validate(d)
    return docs


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
    assert "icmp" not in backend.capabilities and {"l7", "fqdn"} <= backend.capabilities


# -- one L3 selector kind per entry -------------------------------------------------------------------------


def test_a_rule_with_pods_and_addresses_becomes_one_entry_per_selector_kind() -> None:
    """Cilium refuses toEndpoints together with toCIDRSet in one rule ("Combining ... is not supported yet")."""
    vm = Workload(name="vm1", kind=WorkloadKind.HOST, addresses=("10.20.0.7/32",))
    policy = Policy(workloads=(pod("shop/web"), pod("shop/db"), vm),
                    rules=(allow("AR-1", ["shop/web", "vm1"], ["shop/db"], Protocol.TCP, "5432"),))
    docs = {d["metadata"]["name"]: d for d in documents(BACKEND.compile(policy))}
    to_ports = [{"ports": [{"port": "5432", "protocol": "TCP"}]}]
    assert docs["microseg-db"]["spec"]["ingress"] == [
        {"fromCIDRSet": [{"cidr": "10.20.0.7/32"}], "toPorts": to_ports},
        {"fromEndpoints": [{"matchLabels": {"app": "web", "k8s:io.kubernetes.pod.namespace": "shop"}}],
         "toPorts": to_ports},
    ]


# -- layer 7 (HTTP) -----------------------------------------------------------------------------------------

API = (HttpMatch(method="GET", path="/api/.*"), HttpMatch(method="POST", path="/api/orders(\\?.*)?"),
       HttpMatch(path="/healthz"))


def l7_policy() -> Policy:
    vm = Workload(name="vm1", kind=WorkloadKind.HOST, addresses=("10.20.0.7/32",))
    return Policy(workloads=(pod("shop/web"), pod("shop/orders"), vm), rules=(
        AllowRule(id="AR-l7", sources=("shop/web", "vm1"), destinations=("shop/orders",), protocol=Protocol.TCP,
                  ports=("8080",), justification=WHY, http=API),
        allow("AR-l4", ["shop/web"], ["shop/orders"], Protocol.TCP, "9090")))


def test_l7_rule_by_hand() -> None:
    """toPorts[].rules.http on both sides (Cilium enforces HTTP rules on ingress and on egress)."""
    files = BACKEND.compile(l7_policy())
    docs = {d["metadata"]["name"]: d for d in documents(files)}
    l7_ports = [{"ports": [{"port": "8080", "protocol": "TCP"}],
                 "rules": {"http": [{"path": "/healthz"}, {"method": "GET", "path": "/api/.*"},
                                    {"method": "POST", "path": "/api/orders(\\?.*)?"}]}}]
    web_sel = {"matchLabels": {"app": "web", "k8s:io.kubernetes.pod.namespace": "shop"}}
    l4_ports = [{"ports": [{"port": "9090", "protocol": "TCP"}]}]
    assert docs["microseg-orders"]["spec"]["ingress"] == [  # by rule id, then by entry
        {"fromEndpoints": [web_sel], "toPorts": l4_ports},
        {"fromCIDRSet": [{"cidr": "10.20.0.7/32"}], "toPorts": l7_ports},
        {"fromEndpoints": [web_sel], "toPorts": l7_ports},
    ]
    orders_sel = {"matchLabels": {"app": "orders", "k8s:io.kubernetes.pod.namespace": "shop"}}
    assert docs["microseg-web"]["spec"]["egress"] == [{"toEndpoints": [orders_sel], "toPorts": l4_ports},
                                                      {"toEndpoints": [orders_sel], "toPorts": l7_ports}]
    assert "| AR-l7 | GET | /api/.\\* |" in files["README.md"]


def test_observe_mode_leaves_out_the_http_rules() -> None:
    """The proxy answers requests matching no HTTP rule with 403: observe output must block nothing."""
    observe = BACKEND.compile(l7_policy(), mode="observe")
    enforce = documents(BACKEND.compile(l7_policy()))
    for d in enforce:
        for entry in d["spec"].get("ingress", []) + d["spec"].get("egress", []):
            for pr in entry.get("toPorts", []):
                pr.pop("rules", None)
    specs = [{k: v for k, v in d["spec"].items() if k != "enableDefaultDeny"} for d in documents(observe)]
    assert specs == [d["spec"] for d in enforce if d["kind"] == "CiliumNetworkPolicy"]
    assert "Left out in observe mode" in observe["README.md"]


# -- DNS names (toFQDNs) ------------------------------------------------------------------------------------

COREDNS = Workload(name="kube-system/coredns", kind=WorkloadKind.KUBERNETES, namespace="kube-system",
                   selector={"k8s-app": "kube-dns"}, labels={"k8s-app": "kube-dns"})
PAYMENTS = Workload(name="external:payments", kind=WorkloadKind.EXTERNAL, addresses=("203.0.113.0/24",),
                    fqdns=("api.payments.example", "*.cdn.payments.example"))
DNS_RULES = (allow("AR-dns", ["shop/web"], ["kube-system/coredns"], Protocol.UDP, "53"),
             allow("AR-dns-tcp", ["shop/web"], ["kube-system/coredns"], Protocol.TCP, "53"))


def fqdn_policy(*rules: AllowRule, peer: Workload = PAYMENTS) -> Policy:
    return Policy(workloads=(pod("shop/web"), pod("shop/db"), COREDNS, peer), dns_resolvers=("kube-system/coredns",),
                  rules=rules or (*DNS_RULES, allow("AR-pay", ["shop/web"], ["external:payments"], Protocol.TCP,
                                                    "443")))


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_fqdn_peer_by_hand(mode: Mode) -> None:
    """toCIDRSet for the addresses and toFQDNs for the names (the union), and the DNS proxy on the DNS rule."""
    files = BACKEND.compile(fqdn_policy(), mode=mode)
    web = next(d for d in documents(files) if d["metadata"]["name"] == "microseg-web")["spec"]
    dns_proxy = {"dns": [{"matchPattern": "*"}]}
    kube_dns = [{"matchLabels": {"k8s-app": "kube-dns", "k8s:io.kubernetes.pod.namespace": "kube-system"}}]
    https = [{"ports": [{"port": "443", "protocol": "TCP"}]}]
    assert web["egress"] == [
        {"toEndpoints": kube_dns, "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": dns_proxy}]},
        {"toEndpoints": kube_dns, "toPorts": [{"ports": [{"port": "53", "protocol": "TCP"}], "rules": dns_proxy}]},
        {"toCIDRSet": [{"cidr": "203.0.113.0/24"}], "toPorts": https},
        {"toFQDNs": [{"matchPattern": "*.cdn.payments.example"}, {"matchName": "api.payments.example"}],
         "toPorts": https},
    ]
    assert "| shop/web | AR-pay | \\*.cdn.payments.example, api.payments.example |" in files["README.md"]


def test_only_workloads_with_dns_names_get_the_dns_proxy() -> None:
    policy = fqdn_policy(*DNS_RULES, allow("AR-pay", ["shop/web"], ["external:payments"], Protocol.TCP, "443"),
                         allow("AR-db-dns", ["shop/db"], ["kube-system/coredns"], Protocol.UDP, "53"))
    db = next(d for d in documents(BACKEND.compile(policy)) if d["metadata"]["name"] == "microseg-db")["spec"]
    assert all("rules" not in pr for e in db["egress"] for pr in e["toPorts"])


def test_names_without_a_dns_allowance_are_refused() -> None:
    """Cilium learns a name's addresses from the DNS answers its proxy sees: no DNS rule, no addresses."""
    policy = fqdn_policy(allow("AR-pay", ["shop/web"], ["external:payments"], Protocol.TCP, "443"))
    with pytest.raises(UnsupportedFeature, match="DNS allowance") as err:
        BACKEND.compile(policy)
    assert err.value.rule_id == "AR-pay"
    # A DNS rule that also reaches another workload is not the resolver's own allowance.
    mixed = fqdn_policy(allow("AR-dns", ["shop/web"], ["kube-system/coredns", "shop/db"], Protocol.UDP, "53"),
                        allow("AR-pay", ["shop/web"], ["external:payments"], Protocol.TCP, "443"))
    with pytest.raises(UnsupportedFeature, match="DNS allowance"):
        BACKEND.compile(mixed)


def test_a_names_only_peer_is_matched_by_name_on_egress_and_refused_as_a_source() -> None:
    names_only = PAYMENTS.model_copy(update={"addresses": ()})
    web = next(d for d in documents(BACKEND.compile(fqdn_policy(peer=names_only)))
               if d["metadata"]["name"] == "microseg-web")["spec"]
    assert [set(e) - {"toPorts"} for e in web["egress"]] == [{"toEndpoints"}, {"toEndpoints"}, {"toFQDNs"}]
    inbound = fqdn_policy(allow("AR-in", ["external:payments"], ["shop/web"], Protocol.TCP, "8443"), peer=names_only)
    with pytest.raises(UnsupportedFeature, match="egress only") as err:
        BACKEND.compile(inbound)
    assert err.value.rule_id == "AR-in"
    # With addresses, as a source it is matched by those (narrower than the IR: no fromFQDNs exists).
    addressed = fqdn_policy(allow("AR-in", ["external:payments"], ["shop/web"], Protocol.TCP, "8443"))
    web = next(d for d in documents(BACKEND.compile(addressed)) if d["metadata"]["name"] == "microseg-web")["spec"]
    assert web["ingress"] == [{"fromCIDRSet": [{"cidr": "203.0.113.0/24"}],
                               "toPorts": [{"ports": [{"port": "8443", "protocol": "TCP"}]}]}]


# -- the CRD schemas are not vacuous ---------------------------------------------------------------------------


@pytest.mark.parametrize("mutate", [
    lambda s: s["egress"][0].update(toServices=[{"k8sService": {"serviceName": "x"}}]),  # pruned subtree
    lambda s: s["egress"][0].update(toEntitys=["world"]),  # unknown field
    lambda s: s["egress"][0]["toPorts"][0]["ports"][0].update(protocol="ICMP"),
    lambda s: s["egress"][0]["toPorts"][0]["ports"][0].update(port="-1"),
    lambda s: s["egress"][0]["toPorts"][0]["rules"].update(http=[{"path": "/"}]),  # one L7 type per port rule
    lambda s: s["egress"][3]["toFQDNs"][0].update(matchName="x.example"),  # matchName xor matchPattern
    lambda s: s["egress"][3]["toFQDNs"][1].update(matchName="bad name"),
    lambda s: s["endpointSelector"]["matchLabels"].update(app="x" * 64),
    lambda s: s.update(nodeSelector={"matchLabels": {}}),  # endpointSelector xor nodeSelector
])
def test_crd_schema_refuses_what_cilium_refuses(mutate: Any) -> None:
    files = BACKEND.compile(fqdn_policy())
    doc = next(d for d in documents(files) if d["metadata"]["name"] == "microseg-web")
    mutate(doc["spec"])
    with pytest.raises(AssertionError):
        crd.validate(doc)


def test_every_output_matches_the_crds() -> None:
    for policy in (small(), shop(), l7_policy(), fqdn_policy()):
        for mode in ("enforce", "observe"):
            assert documents(BACKEND.compile(policy, mode=mode))  # documents() validates each object


@pytest.mark.parametrize("build", [l7_policy, fqdn_policy])
def test_l7_and_fqdn_output_is_deterministic_under_permutation(build: Any) -> None:
    policy = build()
    first = BACKEND.compile(policy)
    for seed in range(4):
        rng = random.Random(seed)
        rules, workloads = list(policy.rules), list(policy.workloads)
        rng.shuffle(rules)
        rng.shuffle(workloads)
        permuted = policy.model_copy(update={"rules": tuple(r.model_copy(update={"http": tuple(reversed(r.http))})
                                                            for r in rules), "workloads": tuple(workloads)})
        assert BACKEND.compile(permuted) == first


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=hostile, path=hostile)
def test_hostile_http_patterns_reach_the_output_unchanged(method: str, path: str) -> None:
    try:
        match = HttpMatch(method=method, path=path)
    except ValueError:
        return  # refused by the IR (fail closed); nothing to compile
    policy = Policy(workloads=(pod("shop/web"), pod("shop/db")), rules=(AllowRule(
        id="R", sources=("shop/web",), destinations=("shop/db",), protocol=Protocol.TCP, ports=("80",),
        justification=WHY, http=(match,)),))
    for d in documents(BACKEND.compile(policy)):
        for entry in d["spec"].get("ingress", []) + d["spec"].get("egress", []):
            assert entry.get("toPorts", [{}])[0].get("rules", {"http": [{"method": method, "path": path}]}) == \
                {"http": [{"method": method, "path": path}]}
