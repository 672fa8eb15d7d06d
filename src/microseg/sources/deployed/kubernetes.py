"""Read Kubernetes NetworkPolicies back into per-pair connectivity (the kubernetes back end's read-back).

``parse(files)`` reads ``networking.k8s.io/v1`` ``NetworkPolicy`` objects from the ``*.yaml``/``*.yml``/
``*.json`` files of ``files`` (multi-document YAML, or ``kind: List``/``NetworkPolicyList``); other files
(the README) are skipped. ``connectivity(netpols, workloads)`` evaluates them for a universe of IR
workloads and ``read_back(files, policy)`` does both for a policy's workloads.

Semantics, from the Kubernetes "Network Policies" concept page
(https://kubernetes.io/docs/concepts/services-networking/network-policies/) and the NetworkPolicy API
reference (https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/):

* "The two sorts of pod isolation": a pod is isolated for ingress (egress) when some NetworkPolicy of
  its namespace selects it (``podSelector``) and lists ``Ingress`` (``Egress``) in ``policyTypes``. A pod
  that is not isolated for a direction allows everything in that direction.
* ``policyTypes`` (missing or empty) defaults to ``Ingress``, plus ``Egress`` when the policy has an
  ``egress`` section with rules (API reference, field ``policyTypes``); ``egress: []`` without
  ``policyTypes`` is refused as ambiguous. A section whose type is not listed is ignored.
* Policies are additive: the allowances of a direction are the union of the rules of every policy
  that selects the pod for it; the order of policies and rules means nothing.
* A connection needs the source's egress *and* the destination's ingress to allow it ("both the
  egress policy on the source pod and the ingress policy on the destination pod need to allow the
  connection").
* A rule matches a peer when one of its ``from``/``to`` elements does; a missing or empty list matches
  every peer (so the rule ``{}`` allows everything). In one element, ``namespaceSelector`` and
  ``podSelector`` are ANDed ("Behavior of to and from selectors"); ``podSelector`` alone means the
  policy's own namespace; ``namespaceSelector`` alone means every pod of the matching namespaces, and
  ``{}`` matches every namespace. Label selectors AND their ``matchLabels`` and ``matchExpressions``
  (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``; ``NotIn`` matches a pod without the key, as in the
  label-selector documentation); an empty selector matches everything.
* ``ports``: a missing or empty list matches every port and protocol. An entry's ``protocol`` defaults
  to TCP; no ``port`` means every port of the protocol; ``endPort`` makes the range ``port``-``endPort``
  inclusive (numeric ``port`` only); a named port matches the port of that name and protocol among the
  *destination* pod's container ports (``Workload.ports`` with a ``name``), so it never matches a
  destination that is not a pod.
* ``ipBlock`` (``cidr`` minus ``except``) matches addresses. Whether it matches pod IPs is left to the
  network plugin ("cluster ingress and egress mechanisms often require rewriting the source or
  destination IP"), and pod addresses are not part of the IR: here an ``ipBlock`` matches only
  workloads that are not pods (hosts, managed services, external peers), by their ``addresses`` minus
  ``except_addresses``, and pods never. A non-pod workload gets what the rules allow to *all* of its
  addresses: its address space is cut at every CIDR boundary of the policies and the allowances of the
  pieces are intersected. A workload without addresses matches no ``ipBlock``.

Pods are matched by their ``labels`` plus ``selector``; namespaces by the ``namespace_labels`` of their
workloads plus ``kubernetes.io/metadata.name``. A NetworkPolicy without ``metadata.namespace`` is taken
to be in ``default`` (what ``kubectl apply`` does without ``-n``). Port numbers are 1-65535; "every port"
reads back as 1-65535 (port 0 is not a destination port), and a side that allows everything with
everything on the other side reads back as ``Connections(everything=True)``.

Which pairs the result covers: ordered pairs of distinct workloads with at least one side a pod
outside ``excluded_namespaces`` (:func:`governed_pairs` for a policy). A pair of two non-pods is no
NetworkPolicy's business, and the kubernetes back end writes no policy in an excluded namespace, so a
pair between such a pod and a non-pod is not governed by its output either.

Fail closed: an unknown kind, apiVersion or field, and any malformed value (selector operator, CIDR,
port, protocol) raises :class:`~microseg.errors.InputError` naming the file, line and field; this reader
never guesses a verdict.
"""

from __future__ import annotations

import ipaddress
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from microseg.errors import InputError
from microseg.ir.intervals import Span, address_spans
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.yamlpos import Document, NodePath, expect_list, expect_mapping, expect_string, load_documents

API_VERSION = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_NAMESPACE = "default"
_SUFFIXES = (".yaml", ".yml", ".json")
_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
_OBJECT_KEYS = {"apiVersion", "kind", "metadata", "spec", "status"}
META_KEYS = {"name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
              "creationTimestamp", "managedFields", "generateName", "selfLink", "finalizers", "ownerReferences"}
_SPEC_KEYS = {"podSelector", "policyTypes", "ingress", "egress"}
_SELECTOR_KEYS = {"matchLabels", "matchExpressions"}
_EXPRESSION_KEYS = {"key", "operator", "values"}
_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}
_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}
_PORT_KEYS = {"protocol", "port", "endPort"}
_PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = Mapping[str, str]


# -- the objects ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSelector:
    """``matchLabels`` AND every ``matchExpressions`` entry; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Labels) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class IPBlock:
    cidr: Net
    excepts: tuple[Net, ...] = ()

    def contains(self, span: Span) -> bool:
        """Whether ``span`` is in the block; ``span`` is wholly inside or outside the block's address set (an
        atom of :func:`cut_points`), so touching an ``except`` means being outside."""
        return net_contains(self.cidr, span) and not any(net_overlaps(e, span) for e in self.excepts)


@dataclass(frozen=True)
class Peer:
    """One element of ``from``/``to``: selectors (ANDed) or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class Port:
    protocol: Protocol
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress/egress rule; ``None`` peers or ports mean every peer or every port and protocol."""

    peers: tuple[Peer, ...] | None = None
    ports: tuple[Port, ...] | None = None


@dataclass(frozen=True)
class NetPol:
    name: str
    namespace: str
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    file: str = ""

    def selects(self, namespace: str, labels: Labels) -> bool:
        return namespace == self.namespace and self.pod_selector.matches(labels)


# -- parsing ----------------------------------------------------------------------------------------------------


def parse(files: Mapping[str, str]) -> tuple[NetPol, ...]:
    """Every NetworkPolicy of ``files`` (path -> text), in file order. Strict: see the module docstring."""
    out: list[NetPol] = []
    with tempfile.TemporaryDirectory(prefix="microseg-netpol-") as tmp:
        for path in sorted(files):
            suffix = PurePosixPath(path).suffix.lower()
            if suffix not in _SUFFIXES:
                continue
            # load_documents reads a file (and gives every value its line); the texts here are in memory.
            scratch = Path(tmp) / f"input{suffix}"
            scratch.write_text(files[path], encoding="utf-8")
            for doc in load_documents(scratch, path):
                if doc.data is not None:
                    out += objects(doc, doc.data, ())
    return tuple(out)


def objects(doc: Document, obj: object, at: NodePath) -> list[NetPol]:
    """The NetworkPolicies of one object (a NetworkPolicy or a list of them); other kinds are errors."""
    if not isinstance(obj, dict):
        raise doc.error("expected a Kubernetes object (a mapping)", at)
    kind = obj.get("kind")
    if kind in ("List", "NetworkPolicyList"):
        # kubectl's lists: apiVersion v1 (List) or networking.k8s.io/v1 (NetworkPolicyList).
        unknown = set(obj) - {"apiVersion", "kind", "metadata", "items"}
        if unknown:
            raise doc.error(f"unknown field {sorted(unknown)[0]!r}", (*at, sorted(unknown)[0]))
        items = obj.get("items") or []
        if not isinstance(items, list):
            raise doc.error("items must be a list", (*at, "items"))
        return [p for i, item in enumerate(items) for p in objects(doc, item, (*at, "items", i))]
    if kind != "NetworkPolicy":
        raise doc.error(f"kind {kind!r} is not a NetworkPolicy", (*at, "kind"))
    if obj.get("apiVersion") != API_VERSION:
        raise doc.error(f"apiVersion {obj.get('apiVersion')!r} (expected {API_VERSION})", (*at, "apiVersion"))
    return [_netpol(doc, obj, at)]


def _netpol(doc: Document, obj: dict[str, object], at: NodePath) -> NetPol:
    expect_mapping(doc, obj, at, _OBJECT_KEYS)
    meta = expect_mapping(doc, obj.get("metadata"), (*at, "metadata"), META_KEYS)
    name = expect_string(doc, meta.get("name"), (*at, "metadata", "name"))
    namespace = expect_string(doc, meta.get("namespace", DEFAULT_NAMESPACE), (*at, "metadata", "namespace"))
    spec_at = (*at, "spec")
    spec = expect_mapping(doc, obj.get("spec"), spec_at, _SPEC_KEYS)
    if "podSelector" not in spec:
        raise doc.error("podSelector is required", (*spec_at, "podSelector"))
    selector = parse_selector(doc, spec["podSelector"], (*spec_at, "podSelector"))
    types = [expect_string(doc, t, (*spec_at, "policyTypes", i))
             for i, t in enumerate(expect_list(doc, spec.get("policyTypes") or [], (*spec_at, "policyTypes")))]
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            raise doc.error(f"policy type {t!r} (Ingress or Egress)", (*spec_at, "policyTypes", i))
    if not types:
        # API reference, policyTypes: "If this field is not specified, it will default based on the
        # existence of ingress or egress rules": Ingress always, Egress for "policies that contain an
        # egress section". An empty `egress: []` is where that wording and the API server's defaulting
        # (which counts egress rules) could be read differently: refused rather than guessed.
        if spec.get("egress") == []:
            raise doc.error("egress: [] without policyTypes is ambiguous (say policyTypes explicitly)",
                            (*spec_at, "egress"))
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    rules = {}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        raw = spec.get(direction)
        rules[direction] = tuple(
            _rule(doc, r, (*spec_at, direction, i), peer_key)
            for i, r in enumerate(expect_list(doc, raw, (*spec_at, direction)) if raw is not None else ()))
    return NetPol(name=name, namespace=namespace, pod_selector=selector, policy_types=frozenset(types),
                  ingress=rules["ingress"], egress=rules["egress"], file=doc.file)


def parse_selector(doc: Document, value: object, at: NodePath) -> LabelSelector:
    """A ``LabelSelector`` at ``at`` (null: the empty selector); strict about fields and operators."""
    raw = expect_mapping(doc, {} if value is None else value, at, _SELECTOR_KEYS)
    ml = raw.get("matchLabels") or {}
    if not isinstance(ml, dict):
        raise doc.error("expected a mapping", (*at, "matchLabels"))
    match_labels = tuple(sorted((expect_string(doc, k, (*at, "matchLabels")),
                                 expect_string(doc, v, (*at, "matchLabels", k))) for k, v in ml.items()))
    exprs = []
    for i, e in enumerate(expect_list(doc, raw.get("matchExpressions") or [], (*at, "matchExpressions"))):
        e_at = (*at, "matchExpressions", i)
        expr = expect_mapping(doc, e, e_at, _EXPRESSION_KEYS)
        key = expect_string(doc, expr.get("key"), (*e_at, "key"))
        op = expect_string(doc, expr.get("operator"), (*e_at, "operator"))
        if op not in _OPERATORS:
            raise doc.error(f"selector operator {op!r} (In, NotIn, Exists or DoesNotExist)", (*e_at, "operator"))
        values = tuple(expect_string(doc, v, (*e_at, "values", j))
                       for j, v in enumerate(expect_list(doc, expr.get("values") or [], (*e_at, "values"))))
        # Label-selector rules: In/NotIn need values, Exists/DoesNotExist must have none.
        if (op in ("In", "NotIn")) != bool(values):
            raise doc.error(f"operator {op} {'needs' if op in ('In', 'NotIn') else 'takes no'} values",
                            (*e_at, "values"))
        exprs.append((key, op, values))
    return LabelSelector(match_labels, tuple(exprs))


def _rule(doc: Document, value: object, at: NodePath, peer_key: str) -> Rule:
    raw = expect_mapping(doc, value, at, {peer_key, "ports"})
    peers: tuple[Peer, ...] | None = None
    if raw.get(peer_key):  # missing, null or [] all mean "every peer"
        peers = tuple(_peer(doc, p, (*at, peer_key, i))
                      for i, p in enumerate(expect_list(doc, raw[peer_key], (*at, peer_key))))
    ports: tuple[Port, ...] | None = None
    if raw.get("ports"):  # missing, null or [] all mean "every port"
        entries = expect_list(doc, raw["ports"], (*at, "ports"))
        ports = tuple(_port(doc, p, (*at, "ports", i)) for i, p in enumerate(entries))
    return Rule(peers, ports)


def _peer(doc: Document, value: object, at: NodePath) -> Peer:
    raw = expect_mapping(doc, value, at, _PEER_KEYS)
    if not raw:
        raise doc.error("a peer needs podSelector, namespaceSelector or ipBlock", at)
    if "ipBlock" in raw:
        if len(raw) > 1:
            raise doc.error("ipBlock cannot be combined with selectors in one peer", at)
        block = expect_mapping(doc, raw["ipBlock"], (*at, "ipBlock"), {"cidr", "except"})
        cidr = parse_net(doc, block.get("cidr"), (*at, "ipBlock", "cidr"))
        excepts = tuple(parse_net(doc, e, (*at, "ipBlock", "except", i))
                        for i, e in enumerate(expect_list(doc, block.get("except") or [], (*at, "ipBlock", "except"))))
        for i, e in enumerate(excepts):
            # API reference, IPBlock.except: "Except values will be rejected if they are outside the cidr range".
            if e.version != cidr.version or not e.subnet_of(cidr):  # type: ignore[arg-type]
                raise doc.error(f"except {e} is outside the cidr {cidr}", (*at, "ipBlock", "except", i))
        return Peer(ip_block=IPBlock(cidr, excepts))
    return Peer(
        pod_selector=parse_selector(doc, raw["podSelector"], (*at, "podSelector")) if "podSelector" in raw else None,
        namespace_selector=parse_selector(doc, raw["namespaceSelector"], (*at, "namespaceSelector"))
        if "namespaceSelector" in raw else None)


def parse_net(doc: Document, value: object, at: NodePath) -> Net:
    text = expect_string(doc, value, at)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise doc.error(f"not a CIDR: {text!r}", at) from None


def _port(doc: Document, value: object, at: NodePath) -> Port:
    raw = expect_mapping(doc, value, at, _PORT_KEYS)
    proto_text = expect_string(doc, raw.get("protocol", "TCP"), (*at, "protocol"))  # default TCP (API reference)
    if proto_text not in _PROTOCOLS:
        raise doc.error(f"protocol {proto_text!r} (TCP, UDP or SCTP)", (*at, "protocol"))
    port = raw.get("port")
    end = raw.get("endPort")
    if port is not None and not _is_port_number(port):
        # A named port is an IANA_SVC_NAME (API reference, ContainerPort.name): at most 15 lower-case
        # letters, digits and inner dashes, at least one letter.
        if not isinstance(port, str) or not is_port_name(port):
            raise doc.error(f"port {port!r} (a number 1-65535 or a port name)", (*at, "port"))
    if end is not None:
        # endPort: "cannot be defined if the port field is not defined or if the port field is defined
        # as a named (string) port", and must be >= port (API reference, NetworkPolicyPort).
        if not _is_port_number(end) or not _is_port_number(port) or int(str(end)) < int(str(port)):
            raise doc.error(f"endPort {end!r} needs a numeric port <= endPort <= 65535", (*at, "endPort"))
    return Port(_PROTOCOLS[proto_text], port if isinstance(port, (int, str)) else None,
                end if isinstance(end, int) else None)


def is_port_name(name: str) -> bool:
    """An IANA_SVC_NAME: at most 15 lower-case letters, digits and inner single dashes, one letter at least."""
    return bool(_PORT_NAME.fullmatch(name)) and "--" not in name


def _is_port_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


# -- evaluation -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Conns:
    """Allowed connections on one side: everything, or port ranges per protocol."""

    everything: bool = False
    ports: tuple[tuple[Protocol, tuple[PortRange, ...]], ...] = ()

    @staticmethod
    def of(pairs: Iterable[tuple[Protocol, PortRange]]) -> _Conns:
        c = Connections.of(pairs)
        return _Conns(ports=c.ports)

    def __or__(self, other: _Conns) -> _Conns:
        if self.everything or other.everything:
            return _ALL
        return _Conns.of([(p, r) for c in (self, other) for p, rs in c.ports for r in rs])

    def __and__(self, other: _Conns) -> _Conns:
        if self.everything:
            return other
        if other.everything:
            return self
        theirs = dict(other.ports)
        pairs = []
        for proto, ranges in self.ports:
            for a in ranges:
                for b in theirs.get(proto, ()):
                    lo, hi = max(a.start, b.start), min(a.end, b.end)
                    if lo <= hi:
                        pairs.append((proto, PortRange(start=lo, end=hi)))
        return _Conns.of(pairs)

    def connections(self) -> Connections:
        return Connections(everything=True) if self.everything else Connections(ports=self.ports)


_ALL = _Conns(everything=True)
_NONE = _Conns()


@dataclass(frozen=True)
class Subject:
    """A workload as NetworkPolicy sees it: a pod (namespace, labels) or a set of addresses.

    ``variants`` are the label sets of the workload's pods when they differ (pods of one owner that were
    relabelled): a selector matches the workload only when it matches every one of them, since an
    allowance that holds for some of its pods only is not the workload's.
    """

    workload: Workload
    namespace: str | None  # None: not a pod
    labels: Labels
    spans: tuple[Span, ...] = ()
    variants: tuple[Labels, ...] = ()

    def pod_matches(self, selector: LabelSelector) -> bool:
        return all(selector.matches(v) for v in (self.variants or (self.labels,)))



def net_contains(net: Net, span: Span) -> bool:
    return net.version == span[0] and int(net.network_address) <= span[1] and span[2] <= int(net.broadcast_address)


def net_overlaps(net: Net, span: Span) -> bool:
    return net.version == span[0] and int(net.network_address) <= span[2] and span[1] <= int(net.broadcast_address)



def set_points(include: Iterable[Net], exclude: Iterable[Net] = ()) -> set[tuple[int, int]]:
    """The boundaries of the address set ``include`` minus ``exclude``: where each of its intervals starts and ends.

    Boundaries of the *set*, not of every CIDR: ``0.0.0.0/0`` except ``10.0.0.0/9`` and ``10.128.0.0/9`` has
    the same boundaries as ``0.0.0.0/0`` except ``10.0.0.0/8``, so both cut the address space alike.
    """
    return {pt for v, lo, hi in address_spans(include, exclude) for pt in ((v, lo), (v, hi + 1))}


def cut_points(netpols: Iterable[NetPol], direction: str | None = None) -> set[tuple[int, int]]:
    """Every boundary of the ``ipBlock`` address sets of ``netpols`` (``direction``: Ingress/Egress only)."""
    points: set[tuple[int, int]] = set()
    for p in netpols:
        rules = (p.ingress if direction != "Egress" else ()) + (p.egress if direction != "Ingress" else ())
        for rule in rules:
            for peer in rule.peers or ():
                if peer.ip_block is not None:
                    points |= set_points([peer.ip_block.cidr], peer.ip_block.excepts)
    return points


def _space(w: Workload) -> list[Span]:
    """The workload's addresses minus its exceptions, as sorted disjoint spans."""
    return address_spans((ipaddress.ip_network(a, strict=False) for a in w.addresses),
                         (ipaddress.ip_network(a, strict=False) for a in w.except_addresses))


def atoms(space: Sequence[Span], points: set[tuple[int, int]]) -> tuple[Span, ...]:
    """``space`` cut at every CIDR boundary of the policies: each piece is wholly in or out of every block."""
    out: list[Span] = []
    for v, lo, hi in space:
        start = lo
        for c in sorted(x for pv, x in points if pv == v and lo < x <= hi):
            out.append((v, start, c - 1))
            start = c
        out.append((v, start, hi))
    return tuple(out)


_Table = tuple[_Conns, dict[str, _Conns]]  # the allowance for a pod not listed, and the allowance per listed pod


class Evaluator:
    """The NetworkPolicy tier: which policies isolate a pod, and what they allow with a peer.

    ``pods`` (optional) are the universe's pods by name. Given them, what a pod's policies allow with one of
    these pods is not recomputed per pair: :meth:`table` matches each rule's peers against all the pods once,
    and folds the rules of a (pod, direction) into an allowance per peer pod, so that :meth:`pod_side` is a
    lookup. The result is the one :meth:`side_at` computes rule by rule (the union of the rules whose peers
    match), since the union is order-free and the port sets are canonical; :meth:`side_at` takes that path
    for such pods itself. A peer that is not a pod (an address piece) always takes the rule-by-rule path.
    """

    def __init__(self, netpols: Sequence[NetPol], namespace_labels: Mapping[str, Labels],
                 pods: Mapping[str, Subject] | None = None) -> None:
        self.netpols = netpols
        self.namespace_labels = namespace_labels
        self.pods = {n: s for n, s in (pods or {}).items() if s.namespace is not None}
        self._pods_by_namespace: dict[str, list[str]] = {}
        for name in sorted(self.pods):
            self._pods_by_namespace.setdefault(self.pods[name].namespace or "", []).append(name)
        self._selecting: dict[tuple[str, str], list[NetPol]] = {}
        self._by_span: dict[tuple[tuple[int, ...], str, Span | None, str | None], _Conns] = {}
        self._tables: dict[tuple[str, str], _Table | None] = {}
        self._peer_pods: dict[tuple[Peer, str], frozenset[str]] = {}
        self._rule_pods: dict[tuple[int, str], frozenset[str] | None] = {}
        self._rule_ports: dict[tuple[int, str], _Conns] = {}
        # Every allowance in a table is one interned object, so that callers can memoise by identity
        # (connectivity() intersects and converts each distinct pair of allowances once). The interned
        # objects live as long as the evaluator, so their ids are not reused.
        self._interned: dict[_Conns, _Conns] = {_ALL: _ALL, _NONE: _NONE}
        self._unions: dict[frozenset[int], _Conns] = {}

    def selecting(self, pod: Subject, direction: str) -> list[NetPol]:
        assert pod.namespace is not None
        key = (pod.workload.name, direction)
        if key not in self._selecting:
            self._selecting[key] = [p for p in self.netpols if direction in p.policy_types
                                    and p.namespace == pod.namespace and pod.pod_matches(p.pod_selector)]
        return self._selecting[key]

    def namespace_matches(self, peer: Peer, own_namespace: str, namespace: str) -> bool:
        """Whether the selectors of ``peer`` (of a policy in ``own_namespace``) admit the namespace ``namespace``."""
        if peer.namespace_selector is None:
            return namespace == own_namespace  # podSelector alone: the policy's own namespace
        ns_labels = {**self.namespace_labels.get(namespace, {}), NAMESPACE_NAME_LABEL: namespace}
        return peer.namespace_selector.matches(ns_labels)

    def peer_matches(self, peer: Peer, own_namespace: str, other: Subject, span: Span | None) -> bool:
        if peer.ip_block is not None:
            return span is not None and peer.ip_block.contains(span)
        if other.namespace is None:
            return False  # selectors name pods only
        if not self.namespace_matches(peer, own_namespace, other.namespace):
            return False
        return peer.pod_selector is None or other.pod_matches(peer.pod_selector)

    def side_at(self, pod: Subject, other: Subject, direction: str, destination: Subject,
                span: Span | None) -> _Conns:
        """What ``pod``'s policies allow in ``direction`` with ``other`` (one address piece ``span`` of it)."""
        name = other.workload.name
        if (span is None and self.pods.get(name) is other and self.pods.get(pod.workload.name) is pod
                and destination is (other if direction == "Egress" else pod)):
            return self.pod_side(pod, name, direction)
        policies = self.selecting(pod, direction)
        if not policies:
            return _ALL  # not isolated for this direction
        # With an address piece on the other side, the answer depends only on the selecting policies, the
        # piece and (for named ports) the destination: pods selected by the same policies share it.
        key = None
        if other.namespace is None:
            key = (tuple(id(p) for p in policies), direction, span,
                   destination.workload.name if destination.namespace is not None else None)
            if key in self._by_span:
                return self._by_span[key]
        allowed = _NONE
        for p in policies:
            for rule in p.ingress if direction == "Ingress" else p.egress:
                if rule.peers is None or any(self.peer_matches(peer, p.namespace, other, span) for peer in rule.peers):
                    allowed = allowed | _rule_ports(rule, destination)
        if key is not None:
            self._by_span[key] = allowed
        return allowed

    def side(self, pod: Subject, other: Subject, direction: str, destination: Subject) -> _Conns:
        """What ``pod``'s policies allow in ``direction`` with ``other``; named ports resolve at ``destination``."""
        # A pod is one peer; a non-pod is every atom of its address space (no addresses: one piece
        # that no ipBlock contains), and gets what is allowed to all of them.
        spans: tuple[Span | None, ...] = (None,) if other.namespace is not None or not other.spans else other.spans
        result: _Conns | None = None
        for span in spans:
            allowed = self.side_at(pod, other, direction, destination, span)
            result = allowed if result is None else result & allowed
        assert result is not None
        return result

    # -- the per-pod tables (pod peers of ``pods`` only) -------------------------------------------------------

    def pod_side(self, pod: Subject, other: str, direction: str) -> _Conns:
        """What ``pod``'s policies allow in ``direction`` with the pod ``other`` of ``pods`` (an interned object).

        The destination, where named ports resolve, is ``other`` for Egress and ``pod`` for Ingress.
        """
        table = self.table(pod, direction)
        if table is None:
            return _ALL  # not isolated for this direction
        return table[1].get(other, table[0])

    def table(self, pod: Subject, direction: str) -> _Table | None:
        """``None`` when ``pod`` is not isolated for ``direction``; else its allowance per peer pod of ``pods``.

        The first item is what a pod matched only by peer-less rules gets; the dictionary lists every pod
        that some rule with peers matches, and every pod whose allowance depends on it as a destination
        (an Egress rule with a named port resolves it at each destination pod).
        """
        key = (pod.workload.name, direction)
        if key in self._tables:
            return self._tables[key]
        policies = self.selecting(pod, direction)
        table: _Table | None = None
        if policies:
            common: dict[int, _Conns] = {}  # from peer-less rules whose ports are the same for every peer
            per: dict[str, dict[int, _Conns]] = {}
            for p in policies:
                for rule in p.ingress if direction == "Ingress" else p.egress:
                    matched = self._matched(p, rule)
                    if direction == "Ingress" or not _named(rule):
                        # Ingress: the destination is ``pod`` itself; Egress without named ports: none needed.
                        c = self._ports_at(rule, pod)
                        if matched is None:
                            common[id(c)] = c
                        for o in matched or ():
                            per.setdefault(o, {})[id(c)] = c
                    else:
                        for o in sorted(self.pods) if matched is None else matched:
                            c = self._ports_at(rule, self.pods[o])
                            per.setdefault(o, {})[id(c)] = c
            table = (self._union(common), {o: self._union({**common, **parts}) for o, parts in per.items()})
        self._tables[key] = table
        return table

    def _matched(self, policy: NetPol, rule: Rule) -> frozenset[str] | None:
        """The pods of ``pods`` that some peer of ``rule`` matches; ``None`` for a rule without peers (all)."""
        key = (id(rule), policy.namespace)
        if key not in self._rule_pods:
            self._rule_pods[key] = None if rule.peers is None else frozenset[str]().union(
                *(self._peer_matches(peer, policy.namespace) for peer in rule.peers))
        return self._rule_pods[key]

    def _peer_matches(self, peer: Peer, own_namespace: str) -> frozenset[str]:
        key = (peer, own_namespace)
        if key not in self._peer_pods:
            found: list[str] = []
            if peer.ip_block is None:  # an ipBlock matches no pod (module docstring)
                for ns, names in self._pods_by_namespace.items():
                    if self.namespace_matches(peer, own_namespace, ns):
                        found += [n for n in names
                                  if peer.pod_selector is None or self.pods[n].pod_matches(peer.pod_selector)]
            self._peer_pods[key] = frozenset(found)
        return self._peer_pods[key]

    def _ports_at(self, rule: Rule, destination: Subject) -> _Conns:
        key = (id(rule), destination.workload.name if _named(rule) else "")
        if key not in self._rule_ports:
            self._rule_ports[key] = self.intern(_rule_ports(rule, destination))
        return self._rule_ports[key]

    def _union(self, parts: Mapping[int, _Conns]) -> _Conns:
        """The union of interned allowances (by id), itself interned and memoised."""
        key = frozenset(parts)
        if key not in self._unions:
            result = _NONE
            if any(c.everything for c in parts.values()):
                result = _ALL
            elif len(parts) == 1:
                result = next(iter(parts.values()))
            elif parts:
                result = _Conns.of([(p, r) for c in parts.values() for p, rs in c.ports for r in rs])
            self._unions[key] = self.intern(result)
        return self._unions[key]

    def intern(self, c: _Conns) -> _Conns:
        """The one object equal to ``c`` that this evaluator hands out (kept alive with the evaluator)."""
        return self._interned.setdefault(c, c)


def _named(rule: Rule) -> bool:
    """Whether ``rule``'s ports depend on the destination (a named port)."""
    return any(isinstance(p.port, str) for p in rule.ports or ())


def _rule_ports(rule: Rule, destination: Subject) -> _Conns:
    if rule.ports is None:
        return _ALL
    pairs: list[tuple[Protocol, PortRange]] = []
    for p in rule.ports:
        if p.port is None:
            pairs.append((p.protocol, PortRange(start=1, end=65535)))
        elif isinstance(p.port, int):
            pairs.append((p.protocol, PortRange(start=p.port, end=p.end_port or p.port)))
        elif destination.namespace is not None:
            # A named port is a container port of the destination pod, with that name and protocol.
            pairs += [(p.protocol, PortRange(start=lp.port, end=lp.port)) for lp in destination.workload.ports
                      if lp.name == p.port and lp.protocol == p.protocol and lp.port >= 1]
    return _Conns.of(pairs)


def _namespace(w: Workload) -> str:
    ns = w.namespace or (w.name.split("/", 1)[0] if "/" in w.name else None)
    if not ns:
        raise InputError(f"Kubernetes workload {w.name!r} has no namespace")
    return ns


def subjects(workloads: Sequence[Workload], points: set[tuple[int, int]],
             label_variants: Mapping[str, Sequence[Labels]] | None = None
             ) -> tuple[dict[str, Subject], dict[str, dict[str, str]]]:
    """Every workload as a :class:`Subject` (non-pods cut at ``points``), and each namespace's labels."""
    ns_labels: dict[str, dict[str, str]] = {}
    out: dict[str, Subject] = {}
    variants = label_variants or {}
    for w in workloads:
        if w.kind == WorkloadKind.KUBERNETES:
            ns = _namespace(w)
            ns_labels.setdefault(ns, {}).update(dict(w.namespace_labels))
            out[w.name] = Subject(w, ns, {**dict(w.labels), **dict(w.selector)},
                                  variants=tuple(variants.get(w.name, ())))
    for w in workloads:
        if w.kind != WorkloadKind.KUBERNETES:
            out[w.name] = Subject(w, None, {}, atoms(_space(w), points))
    return out, ns_labels


def connectivity(netpols: Sequence[NetPol], workloads: Sequence[Workload], *,
                 excluded_namespaces: Sequence[str] = (),
                 label_variants: Mapping[str, Sequence[Labels]] | None = None) -> dict[tuple[str, str], Connections]:
    """Allowed connections per ordered pair of distinct ``workloads`` with a pod outside ``excluded_namespaces``.

    Every policy of ``netpols`` is evaluated (also those in excluded namespaces); ``excluded_namespaces``
    only narrows which pairs are reported. Pairs with no connection are omitted. ``label_variants``: the
    label sets of a workload's pods (see :class:`Subject`).
    """
    subs, ns_labels = subjects(workloads, cut_points(netpols), label_variants)
    ev = Evaluator(netpols, ns_labels, subs)
    governing = {n for n, s in subs.items() if s.namespace is not None and s.namespace not in excluded_namespaces}
    # Pod to pod: the allowances are interned objects of ``ev``, and far fewer distinct than pairs, so each
    # distinct (egress, ingress) couple is intersected and converted once (None: no connection).
    couples: dict[tuple[int, int], Connections | None] = {}
    out: dict[tuple[str, str], Connections] = {}
    names = sorted(subs)
    # The tables looked up directly (pod_side without the call): a million pairs at 1,000 pods.
    ingress_tables = {n: ev.table(subs[n], "Ingress") for n in names if subs[n].namespace is not None}
    for s in names:
        src = subs[s]
        egress_table = ev.table(src, "Egress") if src.namespace is not None else None
        for d in names:
            if s == d or (s not in governing and d not in governing):
                continue
            dst = subs[d]
            if src.namespace is not None and dst.namespace is not None:
                egress = _ALL if egress_table is None else egress_table[1].get(d, egress_table[0])
                if egress is _NONE:
                    continue  # nothing leaves: the destination's ingress does not matter
                table = ingress_tables[d]
                ingress = _ALL if table is None else table[1].get(s, table[0])
                key = (id(egress), id(ingress))
                if key not in couples:
                    both = (egress & ingress).connections()
                    couples[key] = None if both.empty else both
                found = couples[key]
                if found is not None:
                    out[(s, d)] = found
                continue
            conns = _ALL
            if src.namespace is not None:
                conns = conns & ev.side(src, dst, "Egress", dst)
            if dst.namespace is not None:
                conns = conns & ev.side(dst, src, "Ingress", dst)
            c = conns.connections()
            if not c.empty:
                out[(s, d)] = c
    return out


def governed_pairs(policy: Policy) -> set[tuple[str, str]]:
    """The ordered pairs the kubernetes back end's output governs: at least one side a pod under default deny."""
    excluded = policy.settings.excluded_namespaces
    names = sorted(w.name for w in policy.workloads)
    pods = {w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and _namespace(w) not in excluded}
    return {(s, d) for s in names for d in names if s != d and (s in pods or d in pods)}


def read_back(files: Mapping[str, str], policy: Policy) -> dict[tuple[str, str], Connections]:
    """What the NetworkPolicies of ``files`` allow on :func:`governed_pairs` of ``policy`` (none: omitted)."""
    return connectivity(parse(files), policy.workloads, excluded_namespaces=policy.settings.excluded_namespaces)


def ranges_of(c: Connections) -> Connections:
    """``c`` as NetworkPolicy can express it: ports 1-65535 (port 0 is no destination port)."""
    if c.everything:
        return c
    return Connections.of((p, PortRange(start=max(r.start, 1), end=r.end)) for p, rs in c.ports for r in rs
                          if r.end >= 1)


__all__ = ["IPBlock", "LabelSelector", "NetPol", "Peer", "Port", "Rule", "connectivity", "governed_pairs", "parse",
           "ranges_of", "read_back"]
