"""AdminNetworkPolicy and BaselineAdminNetworkPolicy (``policy.networking.k8s.io/v1alpha1``): parse and evaluate.

Together with the NetworkPolicies of :mod:`microseg.sources.deployed.kubernetes` they decide what a cluster
allows. Facts from the network-policy-api reference (https://network-policy-api.sigs.k8s.io/reference/spec/)
and its API overview (https://network-policy-api.sigs.k8s.io/api-overview/), and the OpenShift pages that
document the same v1alpha1 API (https://docs.okd.io/latest/networking/network_security/AdminNetworkPolicy/
ovn-k-anp.html):

* Three tiers, per direction of one connection: AdminNetworkPolicies first, then NetworkPolicies, then the
  BaselineAdminNetworkPolicy. A pod's egress *and* the peer pod's ingress must both end in "allowed".
* AdminNetworkPolicies apply in ``priority`` order, the lower number first; within one policy its rules
  apply in the order written. The first rule whose peer and port match decides: ``Allow`` (allowed, the
  lower tiers are not consulted), ``Deny`` (denied), ``Pass`` (skip the remaining ANPs and let the
  NetworkPolicy tier decide). Two ANPs with the same priority have no defined order (the API leaves it to
  the implementation): this evaluator orders them by name and :func:`same_priority` lists such pairs so
  that a report can say so.
* NetworkPolicy tier: a pod isolated for the direction (some NetworkPolicy selects it for that type) gets
  exactly what those policies allow; whatever they do not allow is denied, and the BANP is not consulted.
* The BANP (a singleton, named ``default``) applies to what neither tier decided, rules in order, first
  match wins, actions ``Allow`` and ``Deny`` only. Traffic still undecided is allowed.
* Subjects: ``namespaces`` (a namespace label selector) or ``pods`` (``namespaceSelector`` AND
  ``podSelector``). Peers: ``namespaces``, ``pods`` and, on egress, ``networks`` (CIDRs, matched like
  ``ipBlock`` against non-pods; the API applies them to pod-to-pod traffic too, and since pod addresses are
  not in the IR, ``0.0.0.0/0`` matches every pod and a narrower CIDR none) and ``nodes`` (nodes are not
  workloads of the universe here, so a ``nodes`` peer matches none of them).
* Ports: ``portNumber`` (protocol, port), ``portRange`` (protocol, start, end, inclusive) and
  ``namedPort`` (a container port of that name on the destination pod: for an ingress rule the subject,
  for an egress rule the peer; any protocol). No ``ports`` means every port and protocol.

Fail closed: unknown fields, a missing ``priority`` (0-1000), an action outside Allow/Deny/Pass (Allow/Deny
for the BANP), bad selectors, CIDRs or ports raise :class:`~microseg.errors.InputError` with file, line and
field. A ``networks`` CIDR of another IP version than the workload's addresses simply does not contain them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from microseg.errors import InputError
from microseg.ir.intervals import Span, network_text
from microseg.ir.model import PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.deployed import kubernetes as k8s
from microseg.sources.yamlpos import Document, NodePath, expect_list, expect_mapping, expect_string, format_path

API_VERSION = "policy.networking.k8s.io/v1alpha1"
ANP_KIND = "AdminNetworkPolicy"
BANP_KIND = "BaselineAdminNetworkPolicy"
_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
_OBJECT_KEYS = {"apiVersion", "kind", "metadata", "spec", "status"}
_RULE_KEYS = {"name", "action", "ports"}
_SUBJECT_KEYS = {"namespaces", "pods"}
_PODS_KEYS = {"namespaceSelector", "podSelector"}

# -- port sets with complement ---------------------------------------------------------------------------------

# The tiers subtract what a higher tier decided, so sets need a complement: the universe is every port of
# the three protocols NetworkPolicy and ANP know (ports 1-65535; port 0 is no destination port).
_UNIVERSE_PROTOCOLS = (Protocol.SCTP, Protocol.TCP, Protocol.UDP)
_MAX = 65535
Intervals = tuple[tuple[int, int], ...]


def _norm(iv: Iterable[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(iv):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return tuple(out)


@dataclass(frozen=True)
class PortSet:
    """A set of (protocol, port) over SCTP/TCP/UDP 1-65535, as sorted disjoint intervals per protocol."""

    ports: tuple[tuple[Protocol, Intervals], ...] = ()

    @staticmethod
    def of(items: Iterable[tuple[Protocol, int, int]]) -> PortSet:
        by: dict[Protocol, list[tuple[int, int]]] = {}
        for proto, lo, hi in items:
            lo, hi = max(lo, 1), min(hi, _MAX)
            if lo <= hi:
                by.setdefault(proto, []).append((lo, hi))
        return PortSet(tuple((p, _norm(v)) for p, v in sorted(by.items()) if v))

    @staticmethod
    def full() -> PortSet:
        return _FULL

    @staticmethod
    def from_connections(c: Connections) -> PortSet:
        if c.everything:
            return PortSet.full()
        return PortSet.of((p, r.start, r.end) for p, rs in c.ports if p in _UNIVERSE_PROTOCOLS for r in rs)

    def _items(self) -> list[tuple[Protocol, int, int]]:
        return [(p, lo, hi) for p, iv in self.ports for lo, hi in iv]

    # The shortcuts below (x | {} = x, x & everything = x, x - {} = x) are identities of the set algebra, exact
    # because every PortSet comes from ``of`` (normalised, within the universe); they spare the normalisation
    # on the evaluation's commonest operands (a few per workload pair, see Cluster).

    def __or__(self, other: PortSet) -> PortSet:
        if not other.ports:
            return self
        if not self.ports:
            return other
        return PortSet.of(self._items() + other._items())

    def __and__(self, other: PortSet) -> PortSet:
        if other is _FULL:
            return self
        if self is _FULL:
            return other
        theirs = dict(other.ports)
        return PortSet.of((p, max(a, c), min(b, d)) for p, iv in self.ports for a, b in iv
                          for c, d in theirs.get(p, ()))

    def __sub__(self, other: PortSet) -> PortSet:
        if not other.ports:
            return self
        theirs = dict(other.ports)
        out: list[tuple[Protocol, int, int]] = []
        for p, iv in self.ports:
            for lo, hi in iv:
                start = lo
                for c, d in theirs.get(p, ()):
                    if d < start or c > hi:
                        continue
                    if c > start:
                        out.append((p, start, c - 1))
                    start = max(start, d + 1)
                if start <= hi:
                    out.append((p, start, hi))
        return PortSet.of(out)

    @property
    def empty(self) -> bool:
        return not self.ports

    def connections(self) -> Connections:
        """As IR connections; the whole universe reads back as ``Connections(everything=True)``."""
        return _connections(self)


_FULL = PortSet.of((p, 1, _MAX) for p in _UNIVERSE_PROTOCOLS)


@functools.lru_cache(maxsize=4096)
def _connections(ports: PortSet) -> Connections:
    # Memoised: a cluster has far fewer distinct port sets than workload pairs (Connections is immutable).
    if ports == _FULL:
        return Connections(everything=True)
    return Connections.of((p, PortRange(start=lo, end=hi)) for p, iv in ports.ports for lo, hi in iv)


# -- the objects ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminPeer:
    """One peer: a namespace selector, a (namespace, pod) selector pair, networks, or nodes (no workload)."""

    namespace_selector: k8s.LabelSelector | None = None
    pod_selector: k8s.LabelSelector | None = None  # set (with namespace_selector) for a `pods` peer
    networks: tuple[k8s.Net, ...] = ()
    nodes: bool = False


@dataclass(frozen=True)
class AdminPort:
    protocol: Protocol | None  # None: a named port (any protocol)
    start: int = 0
    end: int = 0
    name: str | None = None


@dataclass(frozen=True)
class AdminRule:
    name: str
    action: str  # Allow, Deny or Pass
    peers: tuple[AdminPeer, ...]
    ports: tuple[AdminPort, ...] | None  # None: every port and protocol


@dataclass(frozen=True)
class AdminPolicy:
    """An AdminNetworkPolicy (``priority`` set) or the BaselineAdminNetworkPolicy (``priority`` None)."""

    kind: str
    name: str
    priority: int | None
    subject: AdminPeer
    ingress: tuple[AdminRule, ...] = ()
    egress: tuple[AdminRule, ...] = ()
    file: str = ""
    line: int | None = None


# -- parsing ----------------------------------------------------------------------------------------------------


def is_admin_kind(kind: object) -> bool:
    return kind in (ANP_KIND, BANP_KIND, f"{ANP_KIND}List", f"{BANP_KIND}List")


def parse_object(doc: Document, obj: dict[str, object], at: NodePath, notes: list[str] | None = None) -> AdminPolicy:
    """One ANP or BANP object (``obj`` at path ``at`` of ``doc``); strict, see the module docstring.

    Readings a reviewer should know about (a missing selector read as empty) are appended to ``notes``.
    """
    notes = [] if notes is None else notes
    kind = obj.get("kind")
    if obj.get("apiVersion") != API_VERSION:
        raise doc.error(f"apiVersion {obj.get('apiVersion')!r} (expected {API_VERSION})", (*at, "apiVersion"))
    expect_mapping(doc, obj, at, _OBJECT_KEYS)
    meta = expect_mapping(doc, obj.get("metadata"), (*at, "metadata"), k8s.META_KEYS)
    name = expect_string(doc, meta.get("name"), (*at, "metadata", "name"))
    spec_at = (*at, "spec")
    banp = kind == BANP_KIND
    spec = expect_mapping(doc, obj.get("spec"), spec_at,
                    {"subject", "ingress", "egress"} | (set() if banp else {"priority"}))
    priority: int | None = None
    if not banp:
        raw = spec.get("priority")
        # v1alpha1 API: priority is required, 0-1000 (lower numbers take precedence).
        if raw is None:
            raise doc.error("priority is required (an integer 0-1000)", (*spec_at, "priority"))
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 1000:
            raise doc.error(f"priority must be an integer 0-1000, not {raw!r}", (*spec_at, "priority"))
        priority = raw
    elif name != "default":
        # The BANP is a singleton: the API only admits the name `default`.
        raise doc.error(f"a BaselineAdminNetworkPolicy must be named 'default', not {name!r}",
                        (*at, "metadata", "name"))
    if "subject" not in spec:
        raise doc.error("subject is required", (*spec_at, "subject"))
    subject = _subject(doc, spec["subject"], (*spec_at, "subject"), notes)
    actions = ("Allow", "Deny") if banp else ("Allow", "Deny", "Pass")
    rules: dict[str, tuple[AdminRule, ...]] = {}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        raw_rules = spec.get(direction)
        items = expect_list(doc, raw_rules, (*spec_at, direction)) if raw_rules is not None else []
        rules[direction] = tuple(_rule(doc, r, (*spec_at, direction, i), peer_key, actions, direction == "egress",
                                       notes)
                                 for i, r in enumerate(items))
    return AdminPolicy(str(kind), name, priority, subject, rules["ingress"], rules["egress"], doc.file,
                       doc.line_of(at))


def _one_of(doc: Document, raw: dict[str, object], at: NodePath, what: str) -> str:
    # Subjects and peers are unions: exactly one member may be set (API reference, AdminNetworkPolicySubject
    # and the peer types).
    if len(raw) != 1:
        raise doc.error(f"{what} needs exactly one of {', '.join(sorted(raw)) or 'its members'}", at)
    return next(iter(raw))


def _subject(doc: Document, value: object, at: NodePath, notes: list[str]) -> AdminPeer:
    raw = expect_mapping(doc, value, at, _SUBJECT_KEYS)
    key = _one_of(doc, raw, at, "subject")
    return _selector_peer(doc, key, raw[key], (*at, key), notes)


def _selector_peer(doc: Document, key: str, value: object, at: NodePath, notes: list[str]) -> AdminPeer:
    if key == "namespaces":
        return AdminPeer(namespace_selector=k8s.parse_selector(doc, value, at))
    pods = expect_mapping(doc, value, at, _PODS_KEYS)
    for required in ("namespaceSelector", "podSelector"):
        if required not in pods:
            # The v1alpha1 types mark both selectors required, but the Go types hold them as values, so an
            # implementation decoding without the CRD schema (and np-guard's analyzer) reads a missing one as
            # the empty selector: every namespace / every pod. That reading is taken here, and reported.
            notes.append(f"{doc.file}:{doc.line_of((*at, required))}: {format_path((*at, required))} is missing; "
                          "read as the empty selector (the API requires it)")
    ns_at, pod_at = (*at, "namespaceSelector"), (*at, "podSelector")
    return AdminPeer(namespace_selector=k8s.parse_selector(doc, pods.get("namespaceSelector"), ns_at),
                     pod_selector=k8s.parse_selector(doc, pods.get("podSelector"), pod_at))


def _rule(doc: Document, value: object, at: NodePath, peer_key: str, actions: tuple[str, ...],
          egress: bool, notes: list[str]) -> AdminRule:
    raw = expect_mapping(doc, value, at, _RULE_KEYS | {peer_key})
    name = expect_string(doc, raw.get("name", ""), (*at, "name"))
    action = raw.get("action")
    if action not in actions:
        raise doc.error(f"action {action!r} (one of {', '.join(actions)})", (*at, "action"))
    # `from`/`to` is required with at least one peer (API reference): a rule without peers is refused
    # rather than read as "every peer".
    peers_raw = expect_list(doc, raw.get(peer_key), (*at, peer_key))
    if not peers_raw:
        raise doc.error(f"{peer_key} needs at least one peer", (*at, peer_key))
    peer_keys = {"namespaces", "pods"} | ({"networks", "nodes"} if egress else set())
    peers = []
    for i, p in enumerate(peers_raw):
        p_at = (*at, peer_key, i)
        praw = expect_mapping(doc, p, p_at, peer_keys)
        key = _one_of(doc, praw, p_at, "a peer")
        if key == "networks":
            nets = tuple(k8s.parse_net(doc, n, (*p_at, key, j))
                         for j, n in enumerate(expect_list(doc, praw[key], (*p_at, key))))
            if not nets:
                raise doc.error("networks needs at least one CIDR", (*p_at, key))
            peers.append(AdminPeer(networks=nets))
        elif key == "nodes":
            k8s.parse_selector(doc, praw[key], (*p_at, key))  # validated, then matches no workload
            peers.append(AdminPeer(nodes=True))
        else:
            peers.append(_selector_peer(doc, key, praw[key], (*p_at, key), notes))
    ports: tuple[AdminPort, ...] | None = None
    if raw.get("ports") is not None:
        entries = expect_list(doc, raw["ports"], (*at, "ports"))
        ports = tuple(_port(doc, p, (*at, "ports", i)) for i, p in enumerate(entries))
    return AdminRule(name, str(action), tuple(peers), ports)


def _port(doc: Document, value: object, at: NodePath) -> AdminPort:
    raw = expect_mapping(doc, value, at, {"portNumber", "namedPort", "portRange"})
    key = _one_of(doc, raw, at, "a port")
    if key == "namedPort":
        name = expect_string(doc, raw[key], (*at, key))
        if not k8s.is_port_name(name):
            raise doc.error(f"namedPort {name!r} is not a port name", (*at, key))
        return AdminPort(None, name=name)
    fields = {"protocol", "port"} if key == "portNumber" else {"protocol", "start", "end"}
    body = expect_mapping(doc, raw[key], (*at, key), fields)
    proto_text = expect_string(doc, body.get("protocol", "TCP"), (*at, key, "protocol"))  # default TCP (API reference)
    if proto_text not in _PROTOCOLS:
        raise doc.error(f"protocol {proto_text!r} (TCP, UDP or SCTP)", (*at, key, "protocol"))
    bounds = []
    for f in sorted(fields - {"protocol"}, reverse=key == "portRange"):  # port | start, end
        v = body.get(f)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX:
            raise doc.error(f"{f} must be a port number 1-65535, not {v!r}", (*at, key, f))
        bounds.append(v)
    start, end = (bounds[0], bounds[0]) if key == "portNumber" else (bounds[0], bounds[1])
    if end < start:
        raise doc.error(f"portRange end {end} is below start {start}", (*at, key, "end"))
    return AdminPort(_PROTOCOLS[proto_text], start, end)


@dataclass(frozen=True)
class PolicySet:
    """The policies found in a set of documents, and the kinds that were skipped (counted)."""

    netpols: tuple[k8s.NetPol, ...]
    admin: tuple[AdminPolicy, ...]
    skipped: tuple[tuple[str, int], ...]
    notes: tuple[str, ...] = ()


_LIST_KINDS = {"List", "NetworkPolicyList", f"{ANP_KIND}List", f"{BANP_KIND}List"}


def read_policies(docs: Iterable[Document]) -> PolicySet:
    """NetworkPolicies, ANPs and the BANP of ``docs``; objects of other kinds are skipped and counted.

    Inventory and policies often share files (a ``kubectl get all,networkpolicies -o yaml`` dump), so a
    Deployment or ConfigMap here is not an error; a policy object is read strictly. A mapping without a
    ``kind`` is an error (it cannot be told apart from a broken policy); a top-level list or scalar, which
    no Kubernetes tool can apply, is skipped with a note.
    """
    netpols: list[k8s.NetPol] = []
    admin: list[AdminPolicy] = []
    skipped: dict[str, int] = {}
    notes: list[str] = []

    def visit(doc: Document, obj: object, at: NodePath, item_kind: str | None) -> None:
        if not isinstance(obj, dict):
            raise doc.error("expected a Kubernetes object (a mapping)", at)
        kind = obj.get("kind", item_kind)
        if not isinstance(kind, str) or not kind:
            raise doc.error("object without a kind", (*at, "kind"))
        if kind.endswith("List") and "items" in obj:
            items = obj.get("items") or []
            if not isinstance(items, list):
                raise doc.error("items must be a list", (*at, "items"))
            inner = kind[: -len("List")] or None
            for i, item in enumerate(items):
                visit(doc, item, (*at, "items", i), inner)
            return
        if kind == "NetworkPolicy":
            netpols.extend(k8s.objects(doc, {**obj, "kind": kind}, at))
        elif kind in (ANP_KIND, BANP_KIND):
            admin.append(parse_object(doc, {**obj, "kind": kind}, at, notes))
        else:
            skipped[kind] = skipped.get(kind, 0) + 1

    for doc in docs:
        if isinstance(doc.data, dict):
            visit(doc, doc.data, (), None)
        elif doc.data is not None:
            # A top-level list or scalar is no Kubernetes object (kubectl cannot apply it either): it is
            # reported, not read (the corpus keeps analyser output such as connlist_output.json beside inputs).
            notes.append(f"{doc.file}:{doc.line}: skipped, not a Kubernetes object")
    return PolicySet(tuple(netpols), tuple(admin), tuple(sorted(skipped.items())), tuple(sorted(set(notes))))


def same_priority(anps: Sequence[AdminPolicy]) -> tuple[tuple[str, str, int], ...]:
    """Pairs of ANPs sharing a priority, whose relative order the API leaves undefined."""
    by: dict[int, list[str]] = {}
    for p in anps:
        if p.priority is not None:
            by.setdefault(p.priority, []).append(p.name)
    return tuple((a, b, prio) for prio, names in sorted(by.items()) for i, a in enumerate(sorted(names))
                 for b in sorted(names)[i + 1:])


# -- evaluation -------------------------------------------------------------------------------------------------


class Cluster:
    """All three tiers for one universe: ``decide(source, destination)`` is the allowed :class:`PortSet`."""

    def __init__(self, netpols: Sequence[k8s.NetPol], admin: Sequence[AdminPolicy],
                 subjects: Mapping[str, k8s.Subject], namespace_labels: Mapping[str, k8s.Labels]) -> None:
        anps = [p for p in admin if p.kind == ANP_KIND]
        banps = [p for p in admin if p.kind == BANP_KIND]
        if len(banps) > 1:
            second = banps[1]
            raise InputError("more than one BaselineAdminNetworkPolicy (it is a singleton named 'default')",
                                 file=second.file, line=second.line, field="metadata.name")
        self.anps = sorted(anps, key=lambda p: (p.priority or 0, p.name))
        self.banp = banps[0] if banps else None
        self.subjects = subjects
        self.ns_labels = namespace_labels
        self.np = k8s.Evaluator(netpols, namespace_labels, subjects)
        # What the NetworkPolicy tier allows, as a PortSet, per allowance object of ``self.np`` (for pod pairs
        # one of a few interned objects); the object is kept with it, so its id is not reused meanwhile.
        self._np_ports: dict[int, tuple[object, PortSet]] = {}

    def _ns_matches(self, sel: k8s.LabelSelector, s: k8s.Subject) -> bool:
        assert s.namespace is not None
        return sel.matches({**self.ns_labels.get(s.namespace, {}), k8s.NAMESPACE_NAME_LABEL: s.namespace})

    def _selects(self, peer: AdminPeer, s: k8s.Subject, span: Span | None) -> bool:
        if peer.networks:
            if s.namespace is not None:
                # "cluster-internal traffic will be checked against the rule as well ... if you Allow or Deny
                # traffic to 0.0.0.0/0, that will allow or deny all IPv4 pod-to-pod traffic" (API reference,
                # AdminNetworkPolicyEgressPeer.networks). Pod addresses are not in the IR: only the whole IPv4
                # space is known to hold every pod; a narrower CIDR is taken to hold none (see the README).
                return any(n.version == 4 and n.prefixlen == 0 for n in peer.networks)
            # ``span`` is wholly inside or outside the union of the peer's networks (the cut points are the
            # boundaries of that union), so touching one of them means being inside.
            return span is not None and any(k8s.net_overlaps(n, span) for n in peer.networks)
        if peer.nodes or s.namespace is None or peer.namespace_selector is None:
            return False
        if not self._ns_matches(peer.namespace_selector, s):
            return False
        return peer.pod_selector is None or s.pod_matches(peer.pod_selector)

    def _ports(self, rule: AdminRule, destination: k8s.Subject) -> PortSet:
        if rule.ports is None:
            return PortSet.full()
        items: list[tuple[Protocol, int, int]] = []
        for p in rule.ports:
            if p.name is None:
                assert p.protocol is not None
                items.append((p.protocol, p.start, p.end))
            elif destination.namespace is not None:
                items += [(lp.protocol, lp.port, lp.port) for lp in destination.workload.ports
                          if lp.name == p.name and lp.protocol in _UNIVERSE_PROTOCOLS]
        return PortSet.of(items)

    def _side(self, pod: k8s.Subject, other: k8s.Subject, direction: str, destination: k8s.Subject,
              span: Span | None) -> PortSet:
        """What ``pod`` allows in ``direction`` with ``other`` (one address span of it when not a pod)."""
        undecided = PortSet.full()
        allowed = PortSet()
        passed = PortSet()
        for policy in self.anps:
            if not self._selects(policy.subject, pod, None):
                continue
            for rule in policy.ingress if direction == "Ingress" else policy.egress:
                if undecided.empty:
                    break
                if not any(self._selects(peer, other, span) for peer in rule.peers):
                    continue
                hit = self._ports(rule, destination) & undecided
                undecided = undecided - hit
                if rule.action == "Allow":
                    allowed = allowed | hit
                elif rule.action == "Pass":
                    passed = passed | hit
        # Passed and unmatched traffic goes to the NetworkPolicy tier.
        rest = undecided | passed
        if rest.empty:
            return allowed
        if self.np.selecting(pod, direction):
            verdict = self.np.side_at(pod, other, direction, destination, span)
            cached = self._np_ports.get(id(verdict))
            if cached is None:
                cached = self._np_ports[id(verdict)] = (verdict, PortSet.from_connections(verdict.connections()))
            return allowed | (rest & cached[1])
        if self.banp is not None and self._selects(self.banp.subject, pod, None):
            for rule in self.banp.ingress if direction == "Ingress" else self.banp.egress:
                if rest.empty:
                    break
                if not any(self._selects(peer, other, span) for peer in rule.peers):
                    continue
                hit = self._ports(rule, destination) & rest
                rest = rest - hit
                if rule.action == "Allow":
                    allowed = allowed | hit
        return allowed | rest

    def decide(self, source: str, destination: str) -> PortSet:
        """Allowed connections from ``source`` to ``destination`` (names of the universe)."""
        src, dst = self.subjects[source], self.subjects[destination]
        result: PortSet | None = None
        # A non-pod is the set of its address pieces: it gets what is allowed to all of them.
        pieces: tuple[Span | None, ...] = (None,)
        if src.namespace is None or dst.namespace is None:
            ext = dst if src.namespace is not None else src
            pieces = ext.spans or (None,)
        for span in pieces:
            conns = PortSet.full()
            if src.namespace is not None:
                conns = conns & self._side(src, dst, "Egress", dst, span)
            if dst.namespace is not None:
                conns = conns & self._side(dst, src, "Ingress", dst, span)
            result = conns if result is None else result & conns
        assert result is not None
        return result


def connectivity(netpols: Sequence[k8s.NetPol], admin: Sequence[AdminPolicy], workloads: Sequence[Workload], *,
                 label_variants: Mapping[str, Sequence[k8s.Labels]] | None = None
                 ) -> dict[tuple[str, str], Connections]:
    """Allowed connections per ordered pair of distinct ``workloads`` with at least one side a pod.

    NetworkPolicies, AdminNetworkPolicies and the BaselineAdminNetworkPolicy together (module docstring).
    Non-pod workloads (external ranges, hosts) are matched by ``ipBlock``/``networks`` through their
    addresses. Pairs with no connection are omitted.
    """
    points = k8s.cut_points(netpols) | {p for a in admin for r in (*a.ingress, *a.egress) for peer in r.peers
                                        for p in k8s.set_points(peer.networks)}
    subjects, ns_labels = k8s.subjects(workloads, points, label_variants or {})
    cluster = Cluster(netpols, admin, subjects, ns_labels)
    out: dict[tuple[str, str], Connections] = {}
    names = sorted(subjects)
    for s in names:
        for d in names:
            if s == d or (subjects[s].namespace is None and subjects[d].namespace is None):
                continue
            c = cluster.decide(s, d)
            if not c.empty:
                out[(s, d)] = c.connections()
    return out


def external_workload(name: str, first: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      last: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Workload:
    """An external peer covering the address range ``first``-``last``."""
    nets = [network_text(n) for n in ipaddress.summarize_address_range(first, last)]
    return Workload(name=name, kind=WorkloadKind.EXTERNAL, addresses=tuple(nets))


__all__ = ["API_VERSION", "AdminPeer", "AdminPolicy", "AdminPort", "AdminRule", "Cluster", "PolicySet", "PortSet",
           "connectivity", "external_workload", "is_admin_kind", "parse_object", "read_policies", "same_priority"]
