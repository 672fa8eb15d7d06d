"""Read Calico policy objects back into per-pair connectivity (the Calico back end's read-back).

``read_back(files, policy)`` parses ``projectcalico.org/v3`` ``Tier``, ``NetworkPolicy`` and
``GlobalNetworkPolicy`` objects (the Calico back end's output, or hand-edited variants of it) and
evaluates them for the policy's universe of workloads. It returns, for every ordered pair of distinct
workloads of which at least one is a Kubernetes workload, the allowed connections; pairs with none
are omitted, as in :func:`microseg.ir.semantics.connectivity`.

Evaluation follows the Tier reference (https://docs.tigera.io/calico/latest/reference/resources/tier):
for one endpoint and one direction, the tiers that have a policy selecting the endpoint for that
direction are taken in ``order`` (smallest first; the ``default`` tier has order 1,000,000), their
policies in ``order`` then name; the first rule that matches decides: ``Allow`` and ``Deny`` end
evaluation, ``Pass`` skips to the next tier, ``Log`` goes on. A tier whose policies select the
endpoint but do not act denies (the tier's ``defaultAction``, ``Deny`` unless ``Pass``). After the last
tier, or with no policy at all, the endpoint's profile applies, which allows everything for
Kubernetes pods. A connection needs the egress verdict of its source and the ingress verdict of its
destination; only pods are Calico endpoints here (hosts and external peers are not evaluated).

Staged kinds (``StagedNetworkPolicy``, ...) enforce nothing and are ignored. Pods are matched by
their labels (``labels`` and ``selector`` of the workload) plus ``projectcalico.org/namespace``;
namespaces by their labels plus ``kubernetes.io/metadata.name``. ``nets`` never match pods (pod
addresses are not in the IR), and a CIDR peer matches an entity only when all its addresses (minus
its exceptions) are inside the entity's ``nets`` minus ``notNets``. Ports 1-65535 are evaluated (port 0
is not a destination port).

Fail closed: any kind, field, selector syntax or action this reader does not evaluate exactly raises
:class:`~microseg.errors.InputError`; it never guesses a verdict.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections

API_VERSION = "projectcalico.org/v3"
DEFAULT_TIER_ORDER = 1_000_000.0
_STAGED = {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"}
_POLICY_KEYS = {"tier", "order", "selector", "namespaceSelector", "serviceAccountSelector", "types", "ingress",
                "egress"}
_RULE_KEYS = {"action", "protocol", "source", "destination", "ipVersion"}
_ENTITY_KEYS = {"selector", "namespaceSelector", "nets", "notNets", "ports"}
_PROTOCOLS: dict[str, tuple[Protocol, int | None]] = {
    "TCP": (Protocol.TCP, None), "UDP": (Protocol.UDP, None), "SCTP": (Protocol.SCTP, None),
    "ICMP": (Protocol.ICMP, 4), "ICMPv6": (Protocol.ICMP, 6),
}
_NUMBERS = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = Mapping[str, str]


# -- selectors -------------------------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9_./-]+"
_VAL = r"'[^']*'|\"[^\"]*\""
_TERMS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Callable[[Labels], bool]]]] = [
    (re.compile(r"all\(\)"), lambda m: lambda labels: True),
    (re.compile(rf"has\(({_KEY})\)"), lambda m: lambda labels: m[1] in labels),
    (re.compile(rf"!\s*has\(({_KEY})\)"), lambda m: lambda labels: m[1] not in labels),
    (re.compile(rf"({_KEY})\s*==\s*({_VAL})"), lambda m: lambda labels: labels.get(m[1]) == m[2][1:-1]),
    (re.compile(rf"({_KEY})\s*!=\s*({_VAL})"), lambda m: lambda labels: labels.get(m[1]) != m[2][1:-1]),
    (re.compile(rf"({_KEY})\s+in\s*\{{\s*((?:{_VAL})(?:\s*,\s*(?:{_VAL}))*)\s*\}}"),
     lambda m: lambda labels: labels.get(m[1]) in _values(m[2])),
    (re.compile(rf"({_KEY})\s+not\s+in\s*\{{\s*((?:{_VAL})(?:\s*,\s*(?:{_VAL}))*)\s*\}}"),
     lambda m: lambda labels: labels.get(m[1]) not in _values(m[2])),
]


def _values(text: str) -> set[str]:
    return {v[1:-1] for v in re.findall(_VAL, text)}


def parse_selector(expr: str, where: str) -> Callable[[Labels], bool]:
    """A Calico selector of ``&&``-joined terms (``all()``, ``has``, ``==``, ``!=``, ``in``, ``not in``).

    ``||``, parentheses and the other functions are rejected: this reader evaluates exactly or not at all.
    """
    terms = []
    for part in _split_and(expr):
        for pattern, make in _TERMS:
            m = pattern.fullmatch(part.strip())
            if m:
                terms.append(make(m))
                break
        else:
            raise InputError(f"selector term {part.strip()!r} is not supported by this reader", file=where,
                             field="selector")
    return lambda labels: all(t(labels) for t in terms)


def _split_and(expr: str) -> list[str]:
    parts, buf, quote = [], "", ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif expr.startswith("&&", i):
            parts.append(buf)
            buf, i = "", i + 2
            continue
        buf += c
        i += 1
    parts.append(buf)
    if quote or any(not p.strip() for p in parts):
        raise InputError(f"cannot read selector {expr!r}", field="selector")
    return parts


# -- the objects ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    name: str
    namespace: str
    labels: Labels
    namespace_labels: Labels
    service_account_labels: Labels


@dataclass(frozen=True)
class _Entity:
    selector: Callable[[Labels], bool] | None
    namespace_selector: Callable[[Labels], bool] | None
    nets: tuple[Net, ...] | None
    not_nets: tuple[Net, ...]
    ports: tuple[PortRange, ...] | None


@dataclass(frozen=True)
class _Rule:
    action: str
    protocol: tuple[Protocol, int | None] | None
    source: _Entity | None
    destination: _Entity | None


@dataclass
class _Policy:
    name: str
    namespace: str | None
    tier: str
    order: float
    selector: Callable[[Labels], bool]
    namespace_selector: Callable[[Labels], bool] | None
    sa_selector: Callable[[Labels], bool] | None
    types: frozenset[str]
    ingress: list[_Rule] = field(default_factory=list)
    egress: list[_Rule] = field(default_factory=list)

    def selects(self, ep: _Endpoint) -> bool:
        if self.namespace is not None and ep.namespace != self.namespace:
            return False
        if self.namespace_selector is not None and not self.namespace_selector(ep.namespace_labels):
            return False
        if self.sa_selector is not None and not self.sa_selector(ep.service_account_labels):
            return False
        return self.selector(ep.labels)


def _net(text: object, where: str) -> Net:
    try:
        return ipaddress.ip_network(str(text), strict=True)
    except ValueError:
        raise InputError(f"bad CIDR {text!r}", file=where, field="nets") from None


def _port(item: object, where: str) -> PortRange:
    if isinstance(item, int) and not isinstance(item, bool):
        return PortRange(start=item, end=item)
    if isinstance(item, str) and re.fullmatch(r"\d+(:\d+)?", item):
        a, _, b = item.partition(":")
        return PortRange(start=int(a), end=int(b or a))
    raise InputError(f"port {item!r} is not supported by this reader (numbers and ranges only)", file=where,
                     field="ports")


def _entity(raw: object, where: str) -> _Entity:
    if not isinstance(raw, dict):
        raise InputError("entity rule must be a mapping", file=where)
    unknown = set(raw) - _ENTITY_KEYS
    if unknown:
        raise InputError(f"entity rule field {sorted(unknown)[0]!r} is not supported by this reader", file=where)
    sel = raw.get("selector")
    ns_sel = raw.get("namespaceSelector")
    nets = raw.get("nets")
    ports = raw.get("ports")
    return _Entity(
        selector=parse_selector(str(sel), where) if sel else None,
        namespace_selector=parse_selector(str(ns_sel), where) if ns_sel else None,
        nets=tuple(_net(n, where) for n in nets) if nets else None,
        not_nets=tuple(_net(n, where) for n in raw.get("notNets") or ()),
        ports=tuple(_port(p, where) for p in ports) if ports else None,
    )


def _rule(raw: object, where: str) -> _Rule:
    if not isinstance(raw, dict):
        raise InputError("rule must be a mapping", file=where)
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise InputError(f"rule field {sorted(unknown)[0]!r} is not supported by this reader", file=where)
    action = raw.get("action")
    if action not in ("Allow", "Deny", "Pass", "Log"):
        raise InputError(f"unknown rule action {action!r}", file=where, field="action")
    proto = raw.get("protocol")
    protocol: tuple[Protocol, int | None] | None = None
    if proto is not None:
        name = _NUMBERS.get(proto) if isinstance(proto, int) else str(proto)
        if name not in _PROTOCOLS:
            raise InputError(f"protocol {proto!r} is not supported by this reader", file=where, field="protocol")
        protocol = _PROTOCOLS[name]
    if "ipVersion" in raw and (protocol is None or protocol[1] != raw["ipVersion"]):
        raise InputError("ipVersion is only supported together with its ICMP protocol", file=where)
    src = _entity(raw["source"], where) if raw.get("source") else None
    dst = _entity(raw["destination"], where) if raw.get("destination") else None
    if src is not None and src.ports is not None:
        raise InputError("source ports are not supported by this reader", file=where)
    return _Rule(str(action), protocol, src, dst)


def _policy(doc: dict[str, Any], where: str) -> _Policy:
    kind = doc["kind"]
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    unknown = set(spec) - _POLICY_KEYS
    if unknown:
        raise InputError(f"{kind} field {sorted(unknown)[0]!r} is not supported by this reader", file=where)
    namespace = None
    if kind == "NetworkPolicy":
        namespace = str(meta.get("namespace") or "default")
        if "namespaceSelector" in spec:
            raise InputError("a namespaced NetworkPolicy has no namespaceSelector", file=where)
    types = spec.get("types")
    if not types:
        types = (["Ingress"] if "ingress" in spec or "egress" not in spec else []) + (
            ["Egress"] if "egress" in spec else [])
    order = spec.get("order")
    p = _Policy(
        name=str(meta.get("name")), namespace=namespace, tier=str(spec.get("tier") or "default"),
        order=math.inf if order is None else float(order),
        selector=parse_selector(str(spec.get("selector") or "all()"), where),
        namespace_selector=parse_selector(str(spec["namespaceSelector"]), where) if spec.get("namespaceSelector")
        else None,
        sa_selector=parse_selector(str(spec["serviceAccountSelector"]), where) if spec.get("serviceAccountSelector")
        else None,
        types=frozenset(types),
    )
    p.ingress = [_rule(r, where) for r in spec.get("ingress") or ()]
    p.egress = [_rule(r, where) for r in spec.get("egress") or ()]
    return p


@dataclass
class CalicoConfig:
    """Parsed Calico objects: policies and tier orders."""

    policies: list[_Policy] = field(default_factory=list)
    tiers: dict[str, tuple[float, str]] = field(default_factory=lambda: {"default": (DEFAULT_TIER_ORDER, "Deny")})


def parse(files: Mapping[str, str]) -> CalicoConfig:
    config = CalicoConfig()
    for path in sorted(files):
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(files[path]) if d is not None]
        except yaml.YAMLError as exc:
            raise InputError(f"not YAML: {exc}", file=path) from None
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION:
                raise InputError(f"not a {API_VERSION} object", file=path)
            kind = doc.get("kind")
            if kind in _STAGED:
                continue  # staged policies enforce nothing
            if kind == "Tier":
                spec = doc.get("spec") or {}
                order = spec.get("order")
                action = spec.get("defaultAction", "Deny")
                if action not in ("Deny", "Pass"):
                    raise InputError(f"tier defaultAction {action!r}", file=path)
                config.tiers[str(doc["metadata"]["name"])] = (math.inf if order is None else float(order), action)
            elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
                config.policies.append(_policy(doc, path))
            else:
                raise InputError(f"kind {kind!r} is not supported by this reader", file=path)
    for p in config.policies:
        if p.tier not in config.tiers:
            raise InputError(f"policy {p.name!r} is in tier {p.tier!r}, which is not defined")
    return config


# -- evaluation -------------------------------------------------------------------------------------------------

_PORT_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)


@dataclass(frozen=True)
class _Peer:
    """The other end of a connection: a pod, or a set of addresses (one atom of a CIDR workload)."""

    endpoint: _Endpoint | None
    space: _IntervalSet | None = None

    def families(self) -> set[int]:
        if self.endpoint is not None or self.space is None:
            return {4, 6}
        return {v for v, _, _ in self.space.items}


def _inside(space: _IntervalSet, nets: Iterable[Net], not_nets: Iterable[Net]) -> bool | None:
    """True when all of ``space`` is in nets minus notNets, False when none of it, None otherwise."""
    rule_space = _IntervalSet.of(nets) - _IntervalSet.of(not_nets)
    common = space & rule_space
    if common == space:
        return True
    if not common.items:
        return False
    return None


@dataclass(frozen=True)
class _IntervalSet:
    items: tuple[tuple[int, int, int], ...]  # (version, lo, hi)

    @staticmethod
    def of(nets: Iterable[Net]) -> _IntervalSet:
        return _IntervalSet(()).union(
            (n.version, int(n.network_address), int(n.broadcast_address)) for n in nets)

    def union(self, more: Iterable[tuple[int, int, int]]) -> _IntervalSet:
        out: list[tuple[int, int, int]] = []
        for v, lo, hi in sorted([*self.items, *more]):
            if out and out[-1][0] == v and lo <= out[-1][2] + 1:
                out[-1] = (v, out[-1][1], max(out[-1][2], hi))
            else:
                out.append((v, lo, hi))
        return _IntervalSet(tuple(out))

    def __sub__(self, other: _IntervalSet) -> _IntervalSet:
        out = []
        for v, lo, hi in self.items:
            cur = lo
            for ov, olo, ohi in other.items:
                if ov != v or ohi < cur or olo > hi:
                    continue
                if olo > cur:
                    out.append((v, cur, olo - 1))
                cur = max(cur, ohi + 1)
            if cur <= hi:
                out.append((v, cur, hi))
        return _IntervalSet(()).union(out)

    def __and__(self, other: _IntervalSet) -> _IntervalSet:
        return self - (self - other)


def _entity_matches(e: _Entity | None, peer: _Peer, own_namespace: str | None, where: str) -> bool:
    if e is None:
        return True
    if e.selector is not None or e.namespace_selector is not None:
        if e.nets is not None or e.not_nets:
            raise InputError("an entity rule that mixes selectors and nets is not supported by this reader",
                             file=where)
        ep = peer.endpoint
        if ep is None:
            return False
        if e.namespace_selector is not None:
            if not e.namespace_selector(ep.namespace_labels):
                return False
        elif own_namespace is not None and ep.namespace != own_namespace:
            return False  # a selector alone in a namespaced policy means the policy's own namespace
        return e.selector is None or e.selector(ep.labels)
    if e.nets is None and not e.not_nets:
        return True
    if peer.endpoint is not None:
        return False  # pod addresses are unknown here: assumed outside every CIDR of the policy
    assert peer.space is not None
    inside = _inside(peer.space, e.nets if e.nets is not None else _ALL_NETS, e.not_nets)
    if inside is None:  # cannot happen: peers are split into atoms at every CIDR boundary of the policies
        raise InputError("a CIDR peer only partly inside an entity rule's nets", file=where)
    return inside


_ALL_NETS: tuple[Net, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _rule_matches(rule: _Rule, p: _Policy, peer: _Peer, ingress: bool, proto: Protocol, family: int | None,
                  port: int | None) -> bool:
    if rule.protocol is not None:
        if rule.protocol[0] != proto or (family is not None and rule.protocol[1] not in (None, family)):
            return False
    other = rule.source if ingress else rule.destination
    if not _entity_matches(other, peer, p.namespace, p.name):
        return False
    if rule.destination is not None and rule.destination.ports is not None:
        if port is None or not any(r.contains(port) for r in rule.destination.ports):
            return False
    return True


class _Evaluator:
    def __init__(self, config: CalicoConfig) -> None:
        self.config = config
        tiers = sorted(config.tiers, key=lambda t: (config.tiers[t][0], t))
        self.by_tier = [(t, sorted((p for p in config.policies if p.tier == t), key=lambda p: (p.order, p.name)))
                        for t in tiers]

    def governed(self, ep: _Endpoint, ingress: bool) -> bool:
        direction = "Ingress" if ingress else "Egress"
        return any(direction in p.types and p.selects(ep) for p in self.config.policies)

    def verdict(self, ep: _Endpoint, peer: _Peer, ingress: bool, proto: Protocol, family: int | None,
                port: int | None) -> bool:
        direction = "Ingress" if ingress else "Egress"
        for tier, policies in self.by_tier:
            applying = [p for p in policies if direction in p.types and p.selects(ep)]
            if not applying:
                continue
            decided: str | None = None
            for p in applying:
                for rule in p.ingress if ingress else p.egress:
                    if rule.action != "Log" and _rule_matches(rule, p, peer, ingress, proto, family, port):
                        decided = rule.action
                        break
                if decided:
                    break
            if decided == "Allow":
                return True
            if decided == "Deny":
                return False
            if decided is None and self.config.tiers[tier][1] == "Deny":
                return False
            # Pass (or a tier whose default action is Pass): the next tier decides
        return True  # the profile of a Kubernetes pod allows everything


def _boundaries(config: CalicoConfig) -> list[int]:
    points = {1, 65536}
    for p in config.policies:
        for rule in p.ingress + p.egress:
            if rule.destination is not None and rule.destination.ports is not None:
                for r in rule.destination.ports:
                    points.update((max(r.start, 1), r.end + 1))
    return sorted(x for x in points if 1 <= x <= 65536)


def _cidr_points(config: CalicoConfig) -> set[tuple[int, int]]:
    points: set[tuple[int, int]] = set()
    for p in config.policies:
        for rule in p.ingress + p.egress:
            for e in (rule.source, rule.destination):
                if e is None:
                    continue
                for n in (*(e.nets or ()), *e.not_nets):
                    points.update({(n.version, int(n.network_address)), (n.version, int(n.broadcast_address) + 1)})
    return points


def _atoms(space: _IntervalSet, points: set[tuple[int, int]]) -> list[_IntervalSet]:
    """``space`` cut at every CIDR boundary, so each piece is wholly inside or outside every rule's nets."""
    out = []
    for v, lo, hi in space.items:
        cuts = sorted(x for pv, x in points if pv == v and lo < x <= hi)
        start = lo
        for c in [*cuts, hi + 1]:
            out.append(_IntervalSet(((v, start, c - 1),)))
            start = c
    return out


def read_back(files: Mapping[str, str], policy: Policy) -> dict[tuple[str, str], Connections]:
    """Allowed connections per ordered pair (at least one side a Kubernetes workload) of ``policy``'s universe."""
    config = parse(files)
    ev = _Evaluator(config)
    ns_labels: dict[str, dict[str, str]] = {}
    for w in policy.workloads:
        if w.kind == WorkloadKind.KUBERNETES:
            ns = _namespace(w)
            ns_labels.setdefault(ns, {}).update(dict(w.namespace_labels))
            ns_labels[ns]["kubernetes.io/metadata.name"] = ns
    peers: dict[str, _Peer] = {}
    for w in policy.workloads:
        if w.kind == WorkloadKind.KUBERNETES:
            ns = _namespace(w)
            labels = {**dict(w.labels), **dict(w.selector), "projectcalico.org/namespace": ns}
            sa = {"projectcalico.org/name": w.service_account} if w.service_account else {}
            peers[w.name] = _Peer(_Endpoint(w.name, ns, labels, ns_labels[ns], sa))
        else:
            space = (_IntervalSet.of(ipaddress.ip_network(a, strict=False) for a in w.addresses)
                     - _IntervalSet.of(ipaddress.ip_network(a, strict=False) for a in w.except_addresses))
            peers[w.name] = _Peer(None, space)
    points = _boundaries(config)
    cidr_points = _cidr_points(config)
    out: dict[tuple[str, str], Connections] = {}
    names = sorted(peers)
    for s in names:
        for d in names:
            if s == d:
                continue
            src, dst = peers[s], peers[d]
            if src.endpoint is None and dst.endpoint is None:
                continue
            c = _pair(ev, src, dst, points, cidr_points)
            if not c.empty:
                out[(s, d)] = c
    return out


def _namespace(w: Workload) -> str:
    ns = w.namespace or (w.name.split("/", 1)[0] if "/" in w.name else None)
    if not ns:
        raise InputError(f"Kubernetes workload {w.name!r} has no namespace")
    return ns


def _pair(ev: _Evaluator, src: _Peer, dst: _Peer, points: list[int],
          cidr_points: set[tuple[int, int]]) -> Connections:
    """What the policies allow from ``src`` to ``dst``; for a CIDR workload, what they allow to all of it."""
    checks: list[tuple[_Endpoint, _Peer, bool]] = []
    for ep, other, ingress in ((src.endpoint, dst, False), (dst.endpoint, src, True)):
        if ep is None or not ev.governed(ep, ingress):
            continue
        if other.space is None:
            checks.append((ep, other, ingress))
        else:
            checks += [(ep, _Peer(None, atom), ingress) for atom in _atoms(other.space, cidr_points)]
    if not checks:
        return Connections(everything=True)

    def allowed(proto: Protocol, family: int | None, port: int | None) -> bool:
        return all(ev.verdict(ep, peer, ingress, proto, family, port) for ep, peer, ingress in checks
                   if family is None or family in peer.families())

    pairs: list[tuple[Protocol, PortRange]] = []
    for proto in _PORT_PROTOCOLS:
        for lo, nxt in zip(points, points[1:], strict=False):
            if allowed(proto, None, lo):
                pairs.append((proto, PortRange(start=lo, end=nxt - 1)))
    families = src.families() & dst.families()
    if families and all(allowed(Protocol.ICMP, f, None) for f in sorted(families)):
        pairs.append((Protocol.ICMP, PortRange(start=0, end=65535)))
    return Connections.of(pairs)
