"""The back-end contract: every target, every policy case, what the output allows equals what the IR allows.

Parametrised over :data:`microseg.backends.TARGETS`, so a new back end is part of this test the moment its
module exists, and it fails here until :data:`CHECKERS` says how its output is checked. For each
(target, case of :data:`tests.backends.contract_cases.CASES`), in ``enforce`` and ``observe`` mode:

* it compiles, or it raises :class:`~microseg.errors.UnsupportedFeature` naming this target and a rule
  of the policy (any other exception fails), the same way in both modes;
* the output is byte-identical when compiled again and when the policy's orders are permuted;
* on the cases its checker lists, which must compile, the output's meaning is compared with the IR:
  read back into per-pair connectivity where a reader exists and compared with ``connectivity(policy)``
  on the pairs the target governs (each target's own governed-pairs logic, shared with its test file);
  evaluated by an independent engine where one exists (network-config-analyzer for NetworkPolicy,
  Calico and Istio; the real OPA for the Rego bundle); parsed strictly and evaluated by a test-only
  evaluator otherwise. Observe mode is checked for what it means on that target.

And per target, one construct it cannot express raises ``UnsupportedFeature`` naming that rule; a target
without the ``l7`` capability refuses an HTTP rule it governs, and one with ``fqdn`` compiles a peer known
by DNS names only.

How strong each check is differs by target, and :data:`CHECKERS` says so plainly: a read-back or an
oracle compares meaning; a test-only evaluator written here from the vendor documentation (Cilium, the
admin network policy layer) only evaluates the subset of objects microseg emits, between pods.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from microseg.backends import MODES, TARGETS, Mode, get_backend
from microseg.backends.base import check_relative_path
from microseg.errors import UnsupportedFeature
from microseg.ir.model import AllowRule, Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import ALL_PORTS, Connections, connectivity, is_enforced
from microseg.sources.deployed import aws_sg as aws_sg_reader
from microseg.sources.deployed import istio as istio_reader
from microseg.sources.deployed import nftables as nft_reader
from microseg.twin import netns
from tests.backends import _calico, _fortigate, _panos, contract_cases
from tests.backends._addressed import FwRule, fw_connectivity
from tests.backends._addressed import governed_pairs as address_governed_pairs
from tests.backends._aws_sg import check_terraform, terraform
from tests.backends._istio import ALL_TCP, at_mesh, expected_at_mesh
from tests.backends._nftables import expected_connectivity, hosts_of, nft_files
from tests.backends._opa import boundary_ports, check_against_evaluator, identities
from tests.backends.test_kubernetes import K8S_VERSION
from tests.oracle import crd, nca
from tests.oracle.nca import ConnSet
from tests.sources.deployed.test_kubernetes_netpol import with_read_back as with_netpol_read_back

Files = dict[str, str]
Check = Callable[[Policy, Files, Files, pytest.FixtureRequest], None]
Oracle = Callable[[Policy, Files, Files, Path], None]
CASES = contract_cases.CASES


@dataclass(frozen=True)
class Checker:
    """How one target's output is checked against the IR."""

    how: str  # said plainly, including what is *not* checked
    check: Check  # (policy, enforce output, observe output, request): cheap enough for every listed case
    cases: tuple[str, ...]  # the cases `check` runs on; the target must compile them
    oracle: Oracle | None = None  # an independent evaluator: slow, so few cases
    oracle_cases: tuple[str, ...] = ()
    # A policy with a construct the target cannot express, and the id of the rule that carries it. None
    # only for a target that documents that nothing in the IR is beyond it (then it must compile the
    # other targets' unsupported cases).
    unsupported: Callable[[], tuple[Policy, str]] | None = None


# -- small helpers -------------------------------------------------------------------------------------------


def documents(files: Mapping[str, str]) -> list[dict[str, Any]]:
    return [d for path, text in sorted(files.items()) if path.endswith((".yaml", ".yml"))
            for d in yaml.safe_load_all(text) if d is not None]


def k8s_names(policy: Policy) -> list[str]:
    return sorted(w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES)


def expected_pod_pairs(policy: Policy) -> dict[tuple[str, str], ConnSet]:
    """``connectivity(policy)`` between pods, as NCA's normalised connection sets (ports 1-65535)."""
    return {k: ConnSet.from_connections(c) for k, c in connectivity(policy, k8s_names(policy)).items()}


def everything_between_pods(policy: Policy) -> dict[tuple[str, str], ConnSet]:
    names = k8s_names(policy)
    return {(s, d): ConnSet.everything() for s in names for d in names if s != d}


def _and(a: ConnSet, b: ConnSet) -> ConnSet:
    return a - (a - b)


def _port_conns(protocol: str, lo: int, hi: int) -> ConnSet:
    number = nca.PROTOCOL_NUMBERS[protocol]
    assert number in nca.PORT_PROTOCOLS, protocol
    return ConnSet.of({number: [(max(lo, 1), hi)]})


# -- kubernetes: schema here, meaning through NCA ------------------------------------------------------------------


def check_kubernetes(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    for files in (enforce, observe):
        for doc in documents(files):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def nca_kubernetes(policy: Policy, enforce: Files, observe: Files, tmp_path: Path) -> None:
    nca.assert_nca_agrees(policy, enforce, tmp_path / "enforce", mode="enforce")
    nca.assert_nca_agrees(policy, observe, tmp_path / "observe", mode="observe")


# -- calico: CRD schemas, the read-back, and NCA --------------------------------------------------------------------


def check_calico(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    for files in (enforce, observe):
        for doc in documents(files):
            crd.validate(doc)
    assert _calico.read_governed(enforce, policy) == _calico.expected_governed(policy)
    assert _calico.read_k8s(enforce, policy) == _calico.expected_k8s(policy)
    # Observe: staged policies enforce nothing, so every governed pair reads back as everything.
    assert _calico.read_governed(observe, policy) == {p: Connections(everything=True)
                                                      for p in _calico.governed_pairs(policy)}
    assert {d["kind"] for d in documents(observe)} <= {"Tier", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy"}


def nca_calico(policy: Policy, enforce: Files, observe: Files, tmp_path: Path) -> None:
    nca.assert_nca_agrees_calico(policy, enforce, tmp_path / "enforce", mode="enforce")
    nca.assert_nca_agrees_calico(policy, observe, tmp_path / "observe", mode="observe")


# -- istio: CRD schemas, the read-back at mesh destinations, and NCA --------------------------------------------------


def check_istio(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    # The CRD schemas (and their CEL rules) are checked in test_istio.py; the read-back below refuses any
    # kind or field it does not evaluate exactly, so nothing unread can hide in the output.
    assert at_mesh(policy, istio_reader.read_back(enforce, policy)) == expected_at_mesh(policy)
    # Observe: dry-run policies enforce nothing (every TCP connection reaches the mesh), and their shadow
    # decisions, read as enforced, are the enforce decisions.
    excluded = policy.settings.excluded_namespaces
    mesh = [w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)]
    assert at_mesh(policy, istio_reader.read_back(observe, policy)) == {
        (s.name, d): Connections.of([(Protocol.TCP, ALL_TCP)]) for d in mesh for s in policy.workloads if s.name != d}
    assert at_mesh(policy, istio_reader.read_back(observe, policy, dry_run_as_enforced=True)) == \
        expected_at_mesh(policy)


def nca_istio(policy: Policy, enforce: Files, observe: Files, tmp_path: Path) -> None:
    nca.assert_nca_agrees_istio(policy, enforce, tmp_path / "enforce")
    # NCA ignores istio.io/dry-run: on observe output it checks the shadow decisions.
    nca.assert_nca_agrees_istio(policy, observe, tmp_path / "observe")


# -- cilium: structure, and a test-only evaluator between pods ------------------------------------------------------


def _strip_source(key: str) -> str:
    # Cilium label sources: "k8s:app" is the label "app" from Kubernetes; a key without source matches
    # any source ("Label source" in the Cilium policy language docs). Every label here is Kubernetes'.
    source, sep, rest = key.partition(":")
    if not sep:
        return key
    assert source in ("k8s", "any"), f"label source {source!r} is not evaluated here: {key!r}"
    return rest


def _cilium_labels(w: Workload) -> dict[str, str]:
    """A pod's Cilium identity labels: its Kubernetes labels, namespace and service account."""
    ns = w.namespace or w.name.split("/", 1)[0]
    return {**dict(w.labels), **dict(w.selector), "io.kubernetes.pod.namespace": ns,
            "io.cilium.k8s.policy.serviceaccount": w.service_account or "default"}


def _cilium_selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(_strip_source(k)) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        assert e["operator"] == "In", e
        if labels.get(_strip_source(e["key"])) not in e["values"]:
            return False
    return True


def _cilium_to_ports(entry: Mapping[str, Any]) -> ConnSet:
    assert entry.get("toPorts"), f"an entry without toPorts allows every port: {entry}"
    out = ConnSet()
    for tp in entry["toPorts"]:
        # L7 rules (http, and the DNS proxy's dns) filter requests on a connection these ports allow; at
        # layer 4, the level of connectivity(), the connection is allowed (the IR's L7 semantics).
        assert set(tp) <= {"ports", "rules"} and tp["ports"] and set(tp.get("rules", {})) <= {"http", "dns"}, tp
        for p in tp["ports"]:
            assert set(p) <= {"port", "endPort", "protocol"}, p
            out = out | _port_conns(p["protocol"], int(p["port"]), int(p.get("endPort", p["port"])))
    return out


def cilium_pod_connectivity(policy: Policy, files: Files) -> dict[tuple[str, str], ConnSet]:
    """What the emitted Cilium policies allow between the policy's pods.

    Written here from the Cilium policy language ("Ingress/Egress Default Deny", "Namespaces", layer-4
    ``toPorts``): an endpoint is in default deny for a direction when a policy selecting it has rules
    there and does not set ``enableDefaultDeny`` false for it; then a peer is allowed the union of the
    ``toPorts`` of the entries whose endpoint selector matches it (an empty rule ``{}`` allows nothing; a
    namespaced policy's selector without a namespace label matches its own namespace only). CIDR and
    DNS-name (``toFQDNs``) entries are not evaluated (they never match pods). A connection needs the
    source's egress and the destination's ingress. This mirrors the subset microseg emits; it is not an
    implementation of Cilium.
    """
    docs = documents(files)
    pods = {w.name: w for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES}
    labels = {n: _cilium_labels(w) for n, w in pods.items()}

    def policies_of(name: str) -> Iterator[tuple[dict[str, Any], str | None]]:
        for d in docs:
            ns = d["metadata"].get("namespace")
            assert d["kind"] in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"), d["kind"]
            if (ns is None or ns == labels[name]["io.kubernetes.pod.namespace"]) and \
                    _cilium_selects(d["spec"]["endpointSelector"], labels[name]):
                yield d["spec"], ns

    def side(name: str, peer: str, direction: str) -> ConnSet:
        key = "fromEndpoints" if direction == "ingress" else "toEndpoints"
        deny, allowed = False, ConnSet()
        for spec, ns in policies_of(name):
            assert set(spec) <= {"endpointSelector", "ingress", "egress", "enableDefaultDeny", "description"}, spec
            if spec.get(direction) and spec.get("enableDefaultDeny", {}).get(direction, True):
                deny = True
            for entry in spec.get(direction) or []:
                assert set(entry) <= {key, "fromCIDRSet", "toCIDRSet", "toFQDNs", "toPorts"}, entry
                for sel in entry.get(key, []):
                    peer_ns = labels[peer]["io.kubernetes.pod.namespace"]
                    scoped = any(_strip_source(k) == "io.kubernetes.pod.namespace" for k in sel.get("matchLabels", {}))
                    if (scoped or ns is None or ns == peer_ns) and _cilium_selects(sel, labels[peer]):
                        allowed = allowed | _cilium_to_ports(entry)
        return allowed if deny else ConnSet.everything()

    out = {}
    for s in pods:
        for d in pods:
            if s != d:
                c = _and(side(s, d, "egress"), side(d, s, "ingress"))
                if c:
                    out[(s, d)] = c
    return out


def check_cilium(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    for files in (enforce, observe):
        for doc in documents(files):
            crd.validate(doc)
    excluded = policy.settings.excluded_namespaces
    in_scope = sorted({w.namespace or "" for w in policy.workloads
                       if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)})
    deny = [d for d in documents(enforce) if d["kind"] == "CiliumClusterwideNetworkPolicy"]
    if in_scope:
        (d,) = deny
        assert d["spec"]["endpointSelector"] == {"matchExpressions": [
            {"key": "k8s:io.kubernetes.pod.namespace", "operator": "In", "values": in_scope}]}
        assert d["spec"]["enableDefaultDeny"] == {"ingress": True, "egress": True}
    assert cilium_pod_connectivity(policy, enforce) == expected_pod_pairs(policy)
    # Observe: no clusterwide default deny and no policy requests it, so nothing is blocked between pods.
    assert not any(d["kind"] == "CiliumClusterwideNetworkPolicy" for d in documents(observe))
    assert all(d["spec"]["enableDefaultDeny"] == {"ingress": False, "egress": False} for d in documents(observe))
    assert cilium_pod_connectivity(policy, observe) == everything_between_pods(policy)


# -- kubernetes_admin: CRD schemas, and a test-only evaluator of what the admin layer passes between pods -----------


def _anp_selects_pod(subject: Mapping[str, Any], w: Workload, ns_labels: Mapping[str, str]) -> bool:
    (kind, sel), = subject.items()
    if kind == "namespaces":
        return _cilium_selects(sel, ns_labels) if sel else True
    assert kind == "pods" and set(sel) == {"namespaceSelector", "podSelector"}, subject
    return _cilium_selects(sel["namespaceSelector"], ns_labels) and \
        _cilium_selects(sel["podSelector"], {**dict(w.labels), **dict(w.selector)})


def _anp_ports(rule: Mapping[str, Any]) -> ConnSet:
    if "ports" not in rule:
        return ConnSet.everything()
    out = ConnSet()
    for p in rule["ports"]:
        (kind, v), = p.items()
        assert kind in ("portNumber", "portRange"), p
        lo, hi = (v["port"], v["port"]) if kind == "portNumber" else (v["start"], v["end"])
        out = out | _port_conns(v["protocol"], lo, hi)
    return out


def admin_pod_passes(policy: Policy, files: Files) -> dict[tuple[str, str], ConnSet]:
    """What the AdminNetworkPolicies hand on to the NetworkPolicy layer (Pass) or allow, between pods.

    Written here from the AdminNetworkPolicy API (priority order, lower first; rules in order, first
    match wins; ``Allow``/``Deny`` final, ``Pass`` to NetworkPolicies): per pod and direction, the
    connections to or from a peer pod that end in ``Pass`` or ``Allow`` rather than ``Deny``; a pod no ANP
    selects is not restricted at this layer. A connection needs both sides. This is the *upper bound*
    the admin layer sets (the allowances themselves come from NetworkPolicies), not what the cluster
    ends up allowing; ``networks`` peers are not evaluated (they do not name pods here).
    """
    anps = sorted((d for d in documents(files) if d["kind"] == "AdminNetworkPolicy"),
                  key=lambda d: (d["spec"]["priority"], d["metadata"]["name"]))
    pods = {w.name: w for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES}

    def ns_labels(w: Workload) -> dict[str, str]:
        ns = w.namespace or w.name.split("/", 1)[0]
        return {**dict(w.namespace_labels), "kubernetes.io/metadata.name": ns}

    def peer_matches(peer: Mapping[str, Any], w: Workload) -> bool:
        (kind, _), = peer.items()
        if kind == "networks":
            return False
        return _anp_selects_pod(peer, w, ns_labels(w))

    def side(name: str, peer: str, direction: str) -> ConnSet:
        key = "from" if direction == "ingress" else "to"
        selecting = [a for a in anps if _anp_selects_pod(a["spec"]["subject"], pods[name], ns_labels(pods[name]))]
        priorities = [a["spec"]["priority"] for a in selecting]
        assert len(priorities) == len(set(priorities)), f"two ANPs of one priority select {name}"
        undecided, through = ConnSet.everything(), ConnSet()
        for a in selecting:
            for rule in a["spec"].get(direction) or []:
                assert rule["action"] in ("Pass", "Deny", "Allow"), rule
                if any(peer_matches(p, pods[peer]) for p in rule[key]):
                    matched = _and(undecided, _anp_ports(rule))
                    if rule["action"] != "Deny":
                        through = through | matched
                    undecided = undecided - matched
        return through | undecided

    out = {}
    for s in pods:
        for d in pods:
            if s != d:
                c = _and(side(s, d, "egress"), side(d, s, "ingress"))
                if c:
                    out[(s, d)] = c
    return out


def check_kubernetes_admin(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    for files in (enforce, observe):
        for doc in documents(files):
            crd.validate(doc)
    e_docs, o_docs = documents(enforce), documents(observe)
    # Never an ANP Allow: that would bypass the NetworkPolicy layer, where the allowances live.
    assert not [r for d in e_docs + o_docs if d["kind"] == "AdminNetworkPolicy"
                for r in d["spec"].get("ingress", []) + d["spec"].get("egress", []) if r["action"] == "Allow"]
    assert admin_pod_passes(policy, enforce) == expected_pod_pairs(policy)
    banp = [d for d in e_docs if d["kind"] == "BaselineAdminNetworkPolicy"]
    assert all(r["action"] == "Deny" for d in banp for r in d["spec"].get("ingress", []) + d["spec"].get("egress", []))
    # Observe: no Deny anywhere; the baseline allows.
    assert "action: Deny" not in "".join(observe.values())
    assert admin_pod_passes(policy, observe) == everything_between_pods(policy)
    assert sorted(d["metadata"]["name"] for d in e_docs) == sorted(d["metadata"]["name"] for d in o_docs)


# -- opa: the real OPA engine against microseg's evaluator -----------------------------------------------------------


def opa_queries(policy: Policy) -> list[tuple[str, str, Protocol, int]]:
    """Every pair of identities (and one unknown), every protocol, and every port where a rule between the
    workloads they may denote starts or ends: the verdict is constant between those points, so this is
    exhaustive (test_opa.py's exhaustive_queries, with the ports taken per pair to keep it fast)."""
    denotes: dict[str, set[str]] = {"nobody": set()}
    for w in policy.workloads:
        for i in identities(w):
            denotes.setdefault(i, set()).add(w.name)
    by_pair: dict[tuple[str, str], list[AllowRule]] = {}
    for r in policy.all_rules():
        for s in r.sources:
            for d in r.destinations:
                by_pair.setdefault((s, d), []).append(r)
    out = []
    for s in sorted(denotes):
        for d in sorted(denotes):
            rules = [r for sw in denotes[s] for dw in denotes[d] for r in by_pair.get((sw, dw), [])]
            out += [(s, d, proto, port) for proto in Protocol for port in boundary_ports(rules)]
    return out


def check_opa(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    # check_against_evaluator compiles the policy itself; that it is the same output is the determinism test.
    assert json.loads(enforce["opa/data.json"])["microseg"]["mode"] == "enforce"
    assert json.loads(observe["opa/data.json"])["microseg"]["mode"] == "observe"
    queries = opa_queries(policy)
    for mode in MODES:
        check_against_evaluator(policy, mode, queries)


# -- nftables: nft -c, and the kernel's own view of the rulesets read back ---------------------------------------------


def check_nftables(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("kernel")  # a scratch network namespace for nft (see conftest.py)
    for files in (enforce, observe):
        assert json.loads(files["index.json"])
        for name, text in sorted(nft_files(files).items()):
            netns.nft_check(text, name=name)
    expected = expected_connectivity(policy, enforce)
    assert expected  # the case has something to compare
    assert nft_reader.read_back(enforce, policy) == expected
    # Observe blocks nothing on the governed pairs; read as enforce mode would behave, it is exact.
    governed = nft_reader.governed_pairs(policy, hosts_of(observe), router=True)
    observed = nft_reader.read_back(observe, policy)
    assert set(observed) == governed and all(c.everything for c in observed.values())
    assert nft_reader.read_back(observe, policy, as_enforced=True) == expected


# -- aws_sg: the documented resource shapes, and the read-back --------------------------------------------------------


def check_aws_sg(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
    expected = address_governed_pairs(policy)
    assert expected
    for mode, files in (("enforce", enforce), ("observe", observe)):
        doc = terraform(files)
        check_terraform(doc)
        assert {g["tags"]["microseg:mode"] for g in doc["resource"]["aws_security_group"].values()} == {mode}
        # Observe mode emits the same groups and rules, to be created and attached to nothing: what they
        # will enforce once attached is the policy.
        assert aws_sg_reader.read_back(files, policy) == expected


# -- panos, fortigate: strict test parsers and the zone-firewall evaluator -------------------------------------------


def _firewall_check(rules_of: Callable[[Files, Policy], list[FwRule]],
                    zones_of: Callable[[Policy], dict[str, str]]) -> Check:
    def check(policy: Policy, enforce: Files, observe: Files, request: pytest.FixtureRequest) -> None:
        expected = address_governed_pairs(policy)
        assert expected
        zones = zones_of(policy)
        assert fw_connectivity(rules_of(enforce, policy), policy, zones) == expected
        rules = rules_of(observe, policy)
        # Observe: the final rule allows (and logs) everything; the rules above it are enforce's.
        assert rules[-1].action == "allow" and rules[-1].services is None and rules[-1].src_zones is None
        everything = Connections.of([(p, ALL_PORTS) for p in Protocol])
        got = fw_connectivity(rules, policy, zones)
        assert set(got) >= set(expected) and all(c == everything for c in got.values())
        shadow = [*rules[:-1], FwRule("deny", None, None, None, None, None)]
        assert fw_connectivity(shadow, policy, zones) == expected
    return check


def _panos_rules(files: Files, policy: Policy) -> list[FwRule]:
    objs, _ = _panos.parse(files["microseg.set"])
    return _panos.fw_rules(objs)


def _fortigate_rules(files: Files, policy: Policy) -> list[FwRule]:
    return _fortigate.fw_rules(_fortigate.check(files, policy))


# -- the table -------------------------------------------------------------------------------------------------------

U = contract_cases.UNSUPPORTED_CASES

CHECKERS: dict[str, Checker] = {
    "kubernetes": Checker(
        how="kubernetes-validate (strict) on every manifest; the strict NetworkPolicy read-back "
            "(microseg.sources.deployed.kubernetes) equals connectivity on every pair with a pod under default "
            "deny (ports 1-65535; a peer inside another peer's CIDRs gets that peer's allowances, the address "
            "caveat) and observe reads back as everything there; NCA agrees on pod pairs and pod<->address "
            "space, enforce and observe.",
        check=with_netpol_read_back(check_kubernetes), cases=("estate", "estate-addressed",
                                                              "exception-shared-identity"),
        oracle=nca_kubernetes, oracle_cases=("estate",), unsupported=U["kubernetes"]),
    "calico": Checker(
        how="Calico CRD schemas; read-back equals connectivity on every pair with a pod under default deny "
            "(ports 1-65535); observe reads back as everything; NCA agrees on pod pairs and address space.",
        check=check_calico, cases=("estate", "estate-addressed", "estate-no-service-accounts", "pods-icmp-sctp",
                                   "exception-shared-identity"),
        oracle=nca_calico, oracle_cases=("estate-no-service-accounts", "pods-icmp-sctp"), unsupported=U["calico"]),
    "istio": Checker(
        how="strict read-back equals connectivity at mesh destinations (TCP, ipBlocks by address); observe "
            "allows all TCP and its dry-run shadow equals enforce; NCA agrees. (CRD schemas: test_istio.py.)",
        check=check_istio, cases=("estate", "estate-addressed", "exception-shared-identity", "fqdn"),
        oracle=nca_istio, oracle_cases=("estate",), unsupported=U["istio"]),
    "cilium": Checker(
        how="WEAKER: no independent evaluator or read-back of Cilium policies exists. Checked: the Cilium "
            "CRD schemas; the clusterwide default deny covers exactly the namespaces in scope; a test-only "
            "evaluator of the emitted subset (written here from the Cilium policy language docs, pods only, "
            "CIDR peers not evaluated) gives connectivity between pods; observe requests no default deny.",
        check=check_cilium, cases=("estate", "estate-addressed", "exception-shared-identity", "l7", "fqdn"),
        unsupported=U["cilium"]),
    "kubernetes_admin": Checker(
        how="WEAKER: network-policy-api CRD schemas; no read-back or independent evaluator of "
            "AdminNetworkPolicy exists (NCA 2.1.0 does not read it). Checked: never an ANP Allow; a "
            "test-only evaluator (written here from the API's precedence rules, pods only) finds that the "
            "admin layer passes exactly the plan between pods and the baseline denies; observe denies nothing. "
            "What the cluster finally allows depends on the NetworkPolicy layer (the kubernetes target).",
        check=check_kubernetes_admin, cases=("estate", "exception-shared-identity"),
        unsupported=U["kubernetes_admin"]),
    "opa": Checker(
        how="the real OPA engine (v1.20.2) decides every (identity, identity, protocol, boundary port) like "
            "microseg's evaluator, enforce and observe (allowed always, would_allow as enforce).",
        check=check_opa, cases=("estate", "exception-shared-identity", "fqdn"), unsupported=U["opa"]),
    "nftables": Checker(
        how="nft -c on every ruleset; the kernel's view of each ruleset (loaded in a scratch network "
            "namespace) read back equals connectivity on the governed pairs (hosts, router between zones); "
            "observe blocks nothing and, read as enforced, is exact.",
        check=check_nftables, cases=("estate-addressed", "hosts"), unsupported=U["nftables"]),
    "aws_sg": Checker(
        how="documented Terraform resource shapes; read-back equals connectivity on pairs with a host or "
            "managed service, in both modes (observe = same groups, attached to nothing).",
        check=check_aws_sg, cases=("estate-addressed",), unsupported=U["aws_sg"]),
    "panos": Checker(
        how="strict test parser of the set commands + zone-firewall evaluator equals connectivity on pairs "
            "with a host or managed service; observe's final rule allows everything and its shadow is enforce.",
        check=_firewall_check(_panos_rules, _panos.zones_of),
        cases=("estate-addressed", "hosts"), unsupported=U["panos"]),
    "fortigate": Checker(
        how="strict test parser of the FortiOS script + zone-firewall evaluator equals connectivity on pairs "
            "with a host or managed service; observe's final policy accepts everything and its shadow is enforce.",
        check=_firewall_check(_fortigate_rules, _fortigate.zones_of),
        cases=("estate-addressed", "hosts"), unsupported=U["fortigate"]),
}


def checker(target: str) -> Checker:
    if target not in CHECKERS:
        pytest.fail(f"target {target!r} has no entry in CHECKERS of {__file__}: say how its output is checked "
                    "against the IR (read-back, oracle, or the weaker structural checks it gets)", pytrace=False)
    return CHECKERS[target]


def compile_both(target: str, policy: Policy) -> tuple[Files, Files]:
    backend = get_backend(target)
    return backend.compile(policy, mode="enforce"), backend.compile(policy, mode="observe")


# -- the tests ---------------------------------------------------------------------------------------------------


def test_every_target_is_in_the_table() -> None:
    assert set(TARGETS) <= set(CHECKERS), f"no checker for {sorted(set(TARGETS) - set(CHECKERS))}"
    assert set(CHECKERS) <= set(TARGETS), f"checkers of no target: {sorted(set(CHECKERS) - set(TARGETS))}"
    for name, c in CHECKERS.items():
        assert set(c.cases) | set(c.oracle_cases) <= set(CASES), name
        assert c.cases and c.how, name


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", TARGETS)
def test_compiles_or_names_the_rule_it_cannot_express(target: str, case: str) -> None:
    c = checker(target)
    policy = CASES[case]()
    rule_ids = {r.id for r in policy.all_rules()}
    backend = get_backend(target)
    outcomes: dict[Mode, Files | UnsupportedFeature] = {}
    for mode in MODES:
        try:
            outcomes[mode] = backend.compile(policy, mode=mode)
        except UnsupportedFeature as err:  # anything else fails the test
            assert err.target == target, err
            assert err.rule_id in rule_ids, f"{err} names no rule of the policy"
            outcomes[mode] = err
    enforce, observe = outcomes["enforce"], outcomes["observe"]
    if isinstance(enforce, UnsupportedFeature) or isinstance(observe, UnsupportedFeature):
        refused = enforce if isinstance(enforce, UnsupportedFeature) else observe
        assert case not in c.cases, f"{target} must compile {case}: {refused}"
        assert isinstance(enforce, UnsupportedFeature) and isinstance(observe, UnsupportedFeature), \
            "a construct is expressible in one mode only"
        assert enforce.rule_id == observe.rule_id
        return
    assert enforce != observe, "observe mode must change something"
    for mode, files in (("enforce", enforce), ("observe", observe)):
        assert files and all(check_relative_path(p) for p in files)
        assert f"Mode: **{mode}**" in files["README.md"]
        # Deterministic: the same bytes again, and whatever order the policy lists things in.
        assert backend.compile(policy, mode=mode) == files
        for seed in range(3):
            assert backend.compile(contract_cases.permuted(policy, seed), mode=mode) == files, (mode, seed)


def _semantic_params() -> list[tuple[str, str]]:
    return [(t, case) for t in TARGETS for case in (CHECKERS[t].cases if t in CHECKERS else ("<no checker>",))]


@pytest.mark.parametrize(("target", "case"), _semantic_params())
def test_output_means_what_the_policy_means(target: str, case: str, request: pytest.FixtureRequest) -> None:
    c = checker(target)
    policy = CASES[case]()
    enforce, observe = compile_both(target, policy)
    c.check(policy, enforce, observe, request)


@pytest.mark.parametrize(("target", "case"),
                         [(t, case) for t, c in sorted(CHECKERS.items()) for case in c.oracle_cases])
def test_an_independent_oracle_agrees(target: str, case: str, tmp_path: Path) -> None:
    c = checker(target)
    assert c.oracle is not None
    policy = CASES[case]()
    enforce, observe = compile_both(target, policy)
    c.oracle(policy, enforce, observe, tmp_path)


@pytest.mark.parametrize("target", TARGETS)
def test_a_construct_it_cannot_express_is_refused_by_rule(target: str) -> None:
    c = checker(target)
    backend = get_backend(target)
    if c.unsupported is None:
        # A target that claims to express every IR construct must compile what the others refuse.
        for other, make in sorted(contract_cases.UNSUPPORTED_CASES.items()):
            policy, _ = make()
            for mode in MODES:
                assert backend.compile(policy, mode=mode), other
        return
    policy, rule_id = c.unsupported()
    for mode in MODES:
        with pytest.raises(UnsupportedFeature) as err:
            backend.compile(policy, mode=mode)
        assert err.value.target == target and err.value.rule_id == rule_id, err.value


@pytest.mark.parametrize("target", TARGETS)
def test_l7_and_dns_names_follow_the_capabilities(target: str) -> None:
    """A target without the "l7" capability refuses an HTTP rule it governs (compiled at layer 4 it would admit
    every request); one with "fqdn" compiles a peer known by DNS names only. (Every case also goes through the
    general contract above: compile, or refuse naming a rule.)"""
    checker(target)
    backend = get_backend(target)
    l7_ids = {r.id for r in contract_cases.L7_RULES}
    for mode in MODES:
        if "l7" not in backend.capabilities:
            with pytest.raises(UnsupportedFeature) as err:
                backend.compile(contract_cases.l7(), mode=mode)
            assert err.value.rule_id in l7_ids, err.value
        if "fqdn" in backend.capabilities:
            assert backend.compile(contract_cases.fqdn(), mode=mode)


# -- the checkers are not vacuous -----------------------------------------------------------------------------------


def test_the_test_only_evaluators_see_a_wider_output() -> None:
    """Widen one allowance in the Cilium and admin outputs: their evaluators must notice."""
    policy = contract_cases.estate()
    cilium, _ = compile_both("cilium", policy)
    cilium["shop.yaml"] = cilium["shop.yaml"].replace("port: '8443'", "port: '8444'", 1)
    admin, _ = compile_both("kubernetes_admin", policy)
    admin["admin.yaml"] = admin["admin.yaml"].replace("port: 8443", "port: 8444", 1)
    for got in (cilium_pod_connectivity(policy, cilium), admin_pod_passes(policy, admin)):
        assert got != expected_pod_pairs(policy)
    # Without the clusterwide default deny, a direction no policy of its own restricts is open (shop/db
    # has ingress rules only).
    policy = contract_cases.exception_and_shared_identity()
    cilium, _ = compile_both("cilium", policy)
    assert ("shop/db", "shop/web") not in cilium_pod_connectivity(policy, cilium)
    cilium["clusterwide.yaml"] = "# nothing\n"
    assert cilium_pod_connectivity(policy, cilium)[("shop/db", "shop/web")] == ConnSet.everything()

