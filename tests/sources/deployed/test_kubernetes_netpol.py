"""The NetworkPolicy reader (microseg.sources.deployed.kubernetes): parsing, semantics, read-back.

The small cases are hand-checked against the Kubernetes "Network Policies" concept page
(https://kubernetes.io/docs/concepts/services-networking/network-policies/): the expected
connections were written from the documented rule, never taken from the code. The read-back of the
kubernetes back end's output is compared with the IR on the golden policies and the bundled demo,
and the reader is compared with an independent analyser on a few cases of the conformance corpus.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from microseg.backends.kubernetes import BACKEND
from microseg.errors import InputError
from microseg.examples import example_dir
from microseg.ir.model import ListenPort, Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections, connectivity
from microseg.pipeline import plan
from microseg.sources.deployed import kubernetes as kr
from microseg.sources.inventory import load_inventory

GOLDEN = Path(__file__).parents[2] / "backends" / "golden" / "kubernetes"
CORPUS = Path("/work/shared/conformance/netpol")
Pairs = dict[tuple[str, str], Connections]


def pod(name: str, ports: Sequence[ListenPort] = (), ns_labels: dict[str, str] | None = None,
        **labels: str) -> Workload:
    ns, short = name.split("/", 1)
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, labels=labels or {"app": short},
                    namespace_labels=ns_labels or {}, ports=tuple(ports))


def host(name: str, *addresses: str, excepts: Sequence[str] = ()) -> Workload:
    return Workload(name=name, kind=WorkloadKind.HOST, addresses=addresses, except_addresses=tuple(excepts))


def tcp(*ranges: str, proto: Protocol = Protocol.TCP) -> Connections:
    return Connections.of((proto, PortRange.parse(r)) for r in ranges)


ALL = Connections(everything=True)


def evaluate(manifest: str, workloads: Sequence[Workload]) -> Pairs:
    return kr.connectivity(kr.parse({"np.yaml": manifest}), workloads)


def policy_doc(name: str, ns: str, spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n"
            f"  namespace: {ns}\nspec:\n{body}\n")


# -- isolation, policyTypes, union, both sides -----------------------------------------------------------------

A, B, C = pod("n/a"), pod("n/b"), pod("n/c")


def test_no_policy_allows_everything_and_an_ingress_policy_isolates_ingress_only() -> None:
    assert evaluate("", [A, B]) == {("n/a", "n/b"): ALL, ("n/b", "n/a"): ALL}
    # Only an ingress section and no policyTypes: policyTypes defaults to [Ingress], so b's egress stays open.
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]
"""), [A, B, C])
    assert got == {("n/a", "n/b"): tcp("80"), ("n/a", "n/c"): ALL, ("n/b", "n/a"): ALL, ("n/b", "n/c"): ALL,
                   ("n/c", "n/a"): ALL}


def test_policy_types_default_adds_egress_when_there_is_an_egress_section() -> None:
    # egress present, no policyTypes: [Ingress, Egress]; with no ingress rules, b's ingress is closed too.
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: b}}
egress: [{to: [{podSelector: {matchLabels: {app: c}}}], ports: [{protocol: UDP, port: 53}]}]
"""), [A, B, C])
    assert got == {("n/a", "n/c"): ALL, ("n/b", "n/c"): tcp("53", proto=Protocol.UDP), ("n/c", "n/a"): ALL}


def test_explicit_policy_types_ignore_the_other_section() -> None:
    # policyTypes [Egress] only: the ingress section isolates nothing (and allows nothing extra).
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: b}}
policyTypes: [Egress]
ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]
egress: []
"""), [A, B])
    assert got == {("n/a", "n/b"): ALL}


def test_egress_isolation_and_both_sides_are_needed() -> None:
    got = evaluate(policy_doc("out", "n", """
podSelector: {matchLabels: {app: a}}
policyTypes: [Egress]
egress: [{to: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 8000, endPort: 8100}]}]
""") + policy_doc("in", "n", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{podSelector: {}}], ports: [{port: 8080}, {port: 9000}]}]
"""), [A, B])
    # a's egress allows 8000-8100, b's ingress 8080 and 9000: the connection needs both. b's egress and
    # a's ingress are not isolated.
    assert got == {("n/a", "n/b"): tcp("8080"), ("n/b", "n/a"): ALL}


def test_rules_of_all_selecting_policies_are_unioned() -> None:
    got = evaluate(policy_doc("one", "n", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]
""") + policy_doc("two", "n", """
podSelector: {}
ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 443}, {protocol: UDP, port: 53}]}]
"""), [A, B])
    assert got == {("n/a", "n/b"): Connections.of([(Protocol.TCP, PortRange.parse("80")),
                                                   (Protocol.TCP, PortRange.parse("443")),
                                                   (Protocol.UDP, PortRange.parse("53"))])}
    # "two" selects every pod of n, a included, and admits only a: nothing from b to a.


def test_empty_peer_list_and_empty_rule_allow_everything() -> None:
    # from: [] = every source; {} = every source, port and protocol.
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [], ports: [{port: 22}]}]
""") + policy_doc("q", "n", """
podSelector: {matchLabels: {app: c}}
policyTypes: [Ingress, Egress]
ingress: [{}]
"""), [A, B, C, host("h", "192.0.2.1/32")])
    assert got[("n/a", "n/b")] == tcp("22") and got[("h", "n/b")] == tcp("22")
    assert got[("n/a", "n/c")] == ALL and got[("h", "n/c")] == ALL
    assert ("n/c", "n/a") not in got and ("n/c", "h") not in got  # c's egress: isolated, no rule


# -- peers ------------------------------------------------------------------------------------------------------


def test_namespace_and_pod_selector_in_one_element_is_and_in_two_is_or() -> None:
    web = pod("front/web", ns_labels={"team": "front"})
    other = pod("front/job", ns_labels={"team": "front"})
    web2 = pod("misc/web")
    db = pod("back/db")
    universe = [web, other, web2, db]
    and_peers = evaluate(policy_doc("p", "back", """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{namespaceSelector: {matchLabels: {team: front}}, podSelector: {matchLabels: {app: web}}}]
  ports: [{port: 5432}]
"""), universe)
    assert {k for k in and_peers if k[1] == "back/db"} == {("front/web", "back/db")}
    or_peers = evaluate(policy_doc("p", "back", """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{namespaceSelector: {matchLabels: {team: front}}}, {podSelector: {matchLabels: {app: web}}}]
  ports: [{port: 5432}]
"""), universe)
    # OR: every pod of "front", or app=web in the policy's own namespace "back" (there is none); misc/web is
    # matched by neither.
    assert {k for k in or_peers if k[1] == "back/db"} == {("front/web", "back/db"), ("front/job", "back/db")}


def test_namespace_selector_empty_means_every_namespace_and_pod_selector_alone_its_own() -> None:
    universe = [pod("x/a"), pod("y/a"), pod("y/b")]
    every_ns = evaluate(policy_doc("p", "y", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}]}]
"""), universe)
    assert {k for k in every_ns if k[1] == "y/b"} == {("x/a", "y/b"), ("y/a", "y/b")}
    own_ns = evaluate(policy_doc("p", "y", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]
"""), universe)
    assert {k for k in own_ns if k[1] == "y/b"} == {("y/a", "y/b")}
    by_name = evaluate(policy_doc("p", "y", """
podSelector: {matchLabels: {app: b}}
ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]}]
"""), universe)
    assert {k for k in by_name if k[1] == "y/b"} == {("x/a", "y/b")}


@pytest.mark.parametrize(("expression", "allowed"), [
    ("{key: tier, operator: In, values: [web, api]}", {"web", "api"}),
    ("{key: tier, operator: NotIn, values: [web]}", {"api", "none"}),  # NotIn matches a pod without the key
    ("{key: tier, operator: Exists}", {"web", "api"}),
    ("{key: tier, operator: DoesNotExist}", {"none"}),
])
def test_match_expressions(expression: str, allowed: set[str]) -> None:
    pods = [pod("n/web", app="web", tier="web"), pod("n/api", app="api", tier="api"), pod("n/none", app="none"),
            pod("n/db", app="db")]
    got = evaluate(policy_doc("p", "n", f"""
podSelector: {{matchLabels: {{app: db}}}}
ingress: [{{from: [{{podSelector: {{matchExpressions: [{expression}]}}}}]}}]
"""), pods)
    assert {s.split("/")[1] for s, d in got if d == "n/db"} == allowed


def test_match_labels_and_expressions_are_anded() -> None:
    pods = [pod("n/web", app="web", tier="front"), pod("n/web2", app="web", tier="back"), pod("n/db", app="db")]
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: db}}
ingress: [{from: [{podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In,
                                                                             values: [front]}]}}]}]
"""), pods)
    assert {s for s, d in got if d == "n/db"} == {"n/web"}


def test_ip_block_with_except_matches_addresses_and_never_pods() -> None:
    inside = host("inside", "10.1.2.3/32")
    excepted = host("excepted", "10.1.9.0/24")
    straddling = host("straddling", "10.1.8.0/23")  # half in the except
    outside = host("outside", "192.0.2.1/32")
    nowhere = Workload(name="external:names", kind=WorkloadKind.EXTERNAL, fqdns=("api.example.com",))
    web = pod("n/web")
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: db}}
ingress: [{from: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.9.0/24]}}], ports: [{port: 5432}]}]
"""), [inside, excepted, straddling, outside, nowhere, web, pod("n/db")])
    assert {s for s, d in got if d == "n/db"} == {"inside"}  # not the pod: ipBlock matches addresses only
    # A host gets what is allowed to all of its addresses; other rules can complete the straddler.
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.9.0/24]}}]
  ports: [{port: 5432}]
- from: [{ipBlock: {cidr: 10.1.9.0/24}}]
  ports: [{port: 5432}, {port: 22}]
"""), [straddling, excepted, pod("n/db")])
    assert got[("straddling", "n/db")] == tcp("5432") and got[("excepted", "n/db")] == tcp("22", "5432")


def test_egress_to_addresses() -> None:
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: a}}
policyTypes: [Egress]
egress: [{to: [{ipBlock: {cidr: "2001:db8::/32"}}], ports: [{protocol: SCTP, port: 3868}]}]
"""), [A, host("v6", "2001:db8:1::/48"), host("v4", "10.0.0.1/32")])
    assert got == {("n/a", "v6"): tcp("3868", proto=Protocol.SCTP), ("v6", "n/a"): ALL, ("v4", "n/a"): ALL}


# -- ports ------------------------------------------------------------------------------------------------------


def test_named_ports_resolve_at_the_destination() -> None:
    web = pod("n/web", ports=[ListenPort(port=8080, name="http"), ListenPort(port=53, protocol=Protocol.UDP,
                                                                                 name="dns")])
    api = pod("n/api", ports=[ListenPort(port=9090, name="http")])
    client = pod("n/client")
    h = host("h", "10.0.0.1/32")
    # Ingress of web: "http" is web's own 8080; a UDP rule for "http" matches nothing (the port is TCP).
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: web}}
ingress: [{ports: [{port: http}, {port: http, protocol: UDP}, {port: dns, protocol: UDP}]}]
"""), [web, client])
    assert got[("n/client", "n/web")] == Connections.of([(Protocol.TCP, PortRange.parse("8080")),
                                                         (Protocol.UDP, PortRange.parse("53"))])
    # Egress of client: "http" is whatever the destination calls http; a host has no named ports.
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: client}}
policyTypes: [Egress]
egress: [{ports: [{port: http}]}]
"""), [web, api, client, h])
    assert got[("n/client", "n/web")] == tcp("8080") and got[("n/client", "n/api")] == tcp("9090")
    assert ("n/client", "h") not in got


def test_end_port_and_port_without_number() -> None:
    got = evaluate(policy_doc("p", "n", """
podSelector: {matchLabels: {app: b}}
ingress: [{ports: [{port: 32000, endPort: 32768}, {protocol: UDP}]}]
"""), [A, B])
    assert got[("n/a", "n/b")] == Connections.of([(Protocol.TCP, PortRange.parse("32000-32768")),
                                                  (Protocol.UDP, PortRange.parse("1-65535"))])


def test_rules_without_peers_and_with_peers_add_up_per_peer_and_named_ports_per_destination() -> None:
    # web's ingress: port 80 from everyone (a rule without peers) plus its own "http" (8080) from client.
    # client's egress: every destination's "http" (a rule without peers: 8080 at web, 9090 at api, nothing at
    # other, which names no port) plus 80 and 9000 to web. client -> web needs both sides:
    # {80, 8080, 9000} & {80, 8080} = {80, 8080}, where 80 comes from web's rule without peers.
    web = pod("n/web", ports=[ListenPort(port=8080, name="http")])
    api = pod("n/api", ports=[ListenPort(port=9090, name="http")])
    client, other = pod("n/client"), pod("n/other")
    got = evaluate(policy_doc("in", "n", """
podSelector: {matchLabels: {app: web}}
ingress:
- ports: [{port: 80}]
- from: [{podSelector: {matchLabels: {app: client}}}]
  ports: [{port: http}]
""") + policy_doc("out", "n", """
podSelector: {matchLabels: {app: client}}
policyTypes: [Egress]
egress:
- ports: [{port: http}]
- to: [{podSelector: {matchLabels: {app: web}}}]
  ports: [{port: 9000}, {port: 80}]
"""), [web, api, client, other])
    assert got == {("n/client", "n/web"): tcp("80", "8080"), ("n/client", "n/api"): tcp("9090"),
                   ("n/api", "n/web"): tcp("80"), ("n/other", "n/web"): tcp("80"),
                   ("n/web", "n/client"): ALL, ("n/web", "n/api"): ALL, ("n/web", "n/other"): ALL,
                   ("n/api", "n/client"): ALL, ("n/api", "n/other"): ALL,
                   ("n/other", "n/client"): ALL, ("n/other", "n/api"): ALL}


def _pair_by_pair(netpols: Sequence[kr.NetPol], workloads: Sequence[Workload]) -> Pairs:
    """The reference: every pair evaluated rule by rule (an Evaluator given no pods builds no tables)."""
    subs, ns_labels = kr.subjects(workloads, kr.cut_points(netpols))
    ev = kr.Evaluator(netpols, ns_labels)
    out: Pairs = {}
    for s, src in subs.items():
        for d, dst in subs.items():
            if s == d or (src.namespace is None and dst.namespace is None):
                continue
            sides = ([ev.side(src, dst, "Egress", dst)] if src.namespace is not None else []) + (
                [ev.side(dst, src, "Ingress", dst)] if dst.namespace is not None else [])
            c = (sides[0] & sides[1] if len(sides) == 2 else sides[0]).connections()
            if not c.empty:
                out[(s, d)] = c
    return out


@pytest.mark.parametrize("seed", [1, 4, 9])
def test_per_pod_tables_equal_the_rule_by_rule_evaluation(tmp_path: Path, seed: int) -> None:
    """connectivity() looks pod pairs up in per-pod tables; on the benchmark generator's estate (named ports,
    rules without peers, matchExpressions, ipBlock, endPort) plus two hosts, it equals the pair-by-pair path."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("gen_netpol", Path(__file__).parents[3] / "benchmarks" /
                                                  "gen_netpol.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_netpol", gen)
    spec.loader.exec_module(gen)
    files = gen.generate(pods=120, namespaces=4, policies=30, seed=seed)
    gen.write(tmp_path, files)
    inventory = load_inventory([tmp_path / "namespaces.yaml", tmp_path / "workloads.yaml"])
    workloads = [*inventory.workloads, host("db", "10.0.0.0/16"), host("net", "0.0.0.0/0", excepts=["10.0.0.0/8"])]
    netpols = kr.parse({"n.yaml": files["netpols.yaml"]})
    got = kr.connectivity(netpols, workloads)
    assert got == _pair_by_pair(netpols, workloads)
    # Not vacuous: some pairs are open, some narrowed to ports, some closed.
    pods = [w for w in workloads if w.kind == WorkloadKind.KUBERNETES]
    assert any(c.everything for c in got.values()) and any(not c.everything for c in got.values())
    assert len(got) < len(pods) * (len(pods) - 1)


# -- parsing ----------------------------------------------------------------------------------------------------


def test_json_and_lists_are_read() -> None:
    item = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"ports": [{"port": 80}]}]}}
    for kind, api in (("List", "v1"), ("NetworkPolicyList", "networking.k8s.io/v1")):
        files = {"dump.json": json.dumps({"apiVersion": api, "kind": kind, "items": [item]}), "README.md": "# x"}
        (np,) = kr.parse(files)
        assert (np.name, np.namespace, np.file, np.policy_types) == ("p", "n", "dump.json", frozenset({"Ingress"}))
        assert kr.connectivity((np,), [A, B])[("n/a", "n/b")] == tcp("80")


@pytest.mark.parametrize(("spec", "line", "field"), [
    ("podSelector: {}\nngress: []", 9, "spec.ngress"),
    ("podSelector: {}\ningress:\n- from:\n  - podSelector: {matchExpressions: [{key: a, operator: Has}]}", 11,
     "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator"),
    ("podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}", 11,
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: nope}", 11, "spec.ingress[0].from[0].ipBlock.cidr"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: 80, endPort: 79}", 11, "spec.ingress[0].ports[0].endPort"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: http, endPort: 90}", 11, "spec.ingress[0].ports[0].endPort"),
    ("podSelector: {}\ningress:\n- ports:\n  - {protocol: ICMP}", 11, "spec.ingress[0].ports[0].protocol"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: 0}", 11, "spec.ingress[0].ports[0].port"),
    ("podSelector: {}\ningress:\n- from:\n  - {}", 11, "spec.ingress[0].from[0]"),
    ("podSelector: {}\ningress:\n- from:\n  - {ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}", 11,
     "spec.ingress[0].from[0]"),
    ("podSelector: {matchLabels: {version: 1}}", 8, "spec.podSelector.matchLabels.version"),
    ("podSelector: {}\npolicyTypes: [Ingres]", 9, "spec.policyTypes[0]"),
    ("podSelector: {}\negress: []", 9, "spec.egress"),  # policyTypes defaulting would be ambiguous
    ("podSelector: {}\ningress:\n- ports:\n  - {port: '80'}", 11, "spec.ingress[0].ports[0].port"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: Http}", 11, "spec.ingress[0].ports[0].port"),
    ("policyTypes: [Ingress]", 7, "spec.podSelector")  # missing: the line of spec,
])
def test_malformed_input_names_file_line_and_field(spec: str, line: int, field: str) -> None:
    text = policy_doc("p", "n", spec)
    with pytest.raises(InputError) as err:
        kr.parse({"dir/np.yaml": text})
    assert (err.value.file, err.value.field) == ("dir/np.yaml", field), err.value
    assert err.value.line == line, (err.value, text)


def test_other_kinds_and_api_versions_are_refused() -> None:
    with pytest.raises(InputError, match="not a NetworkPolicy"):
        kr.parse({"x.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"})
    with pytest.raises(InputError, match="apiVersion"):
        kr.parse({"x.yaml": "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\n"
                            "spec: {podSelector: {}}\n"})
    with pytest.raises(InputError, match="duplicate"):
        kr.parse({"x.yaml": policy_doc("p", "n", "podSelector: {}\npodSelector: {}")})


# -- read-back of the kubernetes back end's output -------------------------------------------------------------


def _space(w: Workload) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for a in w.addresses:
        n = ipaddress.ip_network(a, strict=False)
        lo, hi = int(n.network_address), int(n.broadcast_address)
        cuts = sorted((int(e.network_address), int(e.broadcast_address)) for e in
                      (ipaddress.ip_network(x, strict=False) for x in w.except_addresses) if e.version == n.version)
        for elo, ehi in cuts:
            if ehi < lo or elo > hi:
                continue
            if lo < elo:
                out.append((n.version, lo, elo - 1))
            lo = max(lo, ehi + 1)
        if lo <= hi:
            out.append((n.version, lo, hi))
    return out


def _intersect(a: Connections, b: Connections) -> Connections:
    theirs = dict(b.ports)
    return Connections.of((p, PortRange(start=max(x.start, y.start), end=min(x.end, y.end)))
                          for p, xs in a.ports for x in xs for y in theirs.get(p, ())
                          if max(x.start, y.start) <= min(x.end, y.end))


def expected_governed(policy: Policy) -> Pairs:
    """What a NetworkPolicy enforcement of ``policy`` allows on :func:`kr.governed_pairs` (ports 1-65535).

    ``connectivity(policy)``, except where external peers overlap: NetworkPolicy matches addresses, so
    a peer inside another peer's CIDRs gets that peer's allowances too (the documented caveat of every
    address-based target). Per (pod, non-pod X): the intersection over the pieces of X's addresses of
    the union of the IR's allowances for every non-pod containing that piece.
    """
    ir = connectivity(policy)
    pods = {w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES}
    spaces = {w.name: _space(w) for w in policy.workloads if w.name not in pods}
    points = {(v, x) for sp in spaces.values() for v, lo, hi in sp for x in (lo, hi + 1)}
    out: Pairs = {}
    for s, d in kr.governed_pairs(policy):
        c = ir.get((s, d), Connections())
        other = s if s not in pods else d if d not in pods else None
        if other is not None and spaces[other]:
            acc: Connections | None = None
            for v, lo, hi in spaces[other]:
                for cut in sorted([lo] + [x for pv, x in points if pv == v and lo < x <= hi]):
                    owners = [n for n, sp in spaces.items()
                              if any(sv == v and slo <= cut <= shi for sv, slo, shi in sp)]
                    piece = Connections.of((p, r) for n in owners
                                           for p, rs in ir.get((n, d) if other == s else (s, n), Connections()).ports
                                           for r in rs)
                    acc = piece if acc is None else _intersect(acc, piece)
            c = acc or Connections()
        c = kr.ranges_of(c)
        if not c.empty:
            out[(s, d)] = c
    return out


def observe_expected(policy: Policy) -> Pairs:
    """Observe mode: the baseline's allow-all in every namespace in scope, so every governed pair is open."""
    return {p: ALL for p in kr.governed_pairs(policy)}


def assert_read_back(policy: Policy, enforce: Mapping[str, str], observe: Mapping[str, str]) -> None:
    """The read-back of the kubernetes back end's output equals the IR (shared with test_contract.py)."""
    expected = expected_governed(policy)
    assert expected, "nothing to compare"
    assert kr.read_back(enforce, policy) == expected
    assert kr.read_back(observe, policy) == observe_expected(policy)


ContractCheck = Callable[[Policy, dict[str, str], dict[str, str], pytest.FixtureRequest], None]


def with_read_back(check: ContractCheck) -> ContractCheck:
    """``check`` followed by :func:`assert_read_back`: the kubernetes entry of test_contract.py's table."""
    def both(policy: Policy, enforce: dict[str, str], observe: dict[str, str], request: pytest.FixtureRequest) -> None:
        check(policy, enforce, observe, request)
        assert_read_back(policy, enforce, observe)
    return both


def check_read_back(policy: Policy) -> None:
    assert_read_back(policy, BACKEND.compile(policy, mode="enforce"), BACKEND.compile(policy, mode="observe"))


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir() if (p / "policy.yaml").is_file()))
def test_read_back_of_the_golden_cases_equals_the_ir(case: str) -> None:
    check_read_back(Policy.model_validate(yaml.safe_load((GOLDEN / case / "policy.yaml").read_text(encoding="utf-8"))))


def test_read_back_of_the_demo_equals_the_ir(tmp_path: Path) -> None:
    ex = example_dir()
    policy = plan([ex / "k8s", ex / "snapshots", ex / "inventory"], [str(ex / "flows")], tmp_path / "out").view.policy
    check_read_back(policy)


def test_the_overlap_caveat_is_real_and_the_read_back_sees_a_wider_output() -> None:
    policy = Policy.model_validate(yaml.safe_load((GOLDEN / "shop" / "policy.yaml").read_text(encoding="utf-8")))
    enforce = BACKEND.compile(policy, mode="enforce")
    got = kr.read_back(enforce, policy)
    # shop/web may reach the internet on 443; the partner's range is inside the internet's, so it is reachable
    # too, which the IR does not say (address-based enforcement cannot tell overlapping peers apart).
    assert got[("shop/web", "external:partner")] == tcp("443")
    assert ("shop/web", "external:partner") not in connectivity(policy)
    wider = {k: v.replace("port: 5432", "port: 5433") for k, v in enforce.items()}
    assert wider != enforce and kr.read_back(wider, policy) != got


# -- the conformance corpus (np-guard's netpol-analyzer) -------------------------------------------------------

CORPUS_CASES = ["minimal_test_in_ns", "netpol-analysis-example-minimal", "new_online_boutique_synthesis",
                "test_with_named_ports", "with_end_port_example"]
_WHOLE_V4 = "0.0.0.0-255.255.255.255[External]"
_ALL_PROTOCOLS = Connections.of((p, PortRange(start=1, end=65535)) for p in (Protocol.TCP, Protocol.UDP,
                                                                               Protocol.SCTP))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="conformance corpus not present")
@pytest.mark.parametrize("case", CORPUS_CASES)
def test_conformance_corpus(case: str) -> None:
    """Exact equality with the analyser's connection list. Its pods have no addresses, and the rest of the
    world is one external range (the whole IPv4 space, as it lists it); every port of TCP, UDP and SCTP is
    what it calls All Connections."""
    root = CORPUS / "cases" / case
    files = {}
    for f in sorted(root.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]
        if docs and all(d.get("kind") == "NetworkPolicy" for d in docs):
            files[f.relative_to(root).as_posix()] = f.read_text(encoding="utf-8")
    assert files
    workloads = [w for w in load_inventory([root]).workloads if w.kind == WorkloadKind.KUBERNETES]
    world = Workload(name=_WHOLE_V4, kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",))
    got = {k: "All Connections" if v == _ALL_PROTOCOLS else str(v)
           for k, v in kr.connectivity(kr.parse(files), [*workloads, world]).items()}
    expected = {}
    for line in (CORPUS / "expected" / "connlist" / f"{case}.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            m = re.fullmatch(r"(.+) => (.+) : (.+)", line)
            assert m, line
            src, dst, conns = m.groups()
            expected[(re.sub(r"\[\w+\]$", "", src) if src != _WHOLE_V4 else src,
                      re.sub(r"\[\w+\]$", "", dst) if dst != _WHOLE_V4 else dst)] = conns
    assert got == expected
