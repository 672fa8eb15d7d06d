"""Connectivity semantics of a policy: what it allows, as a function of (policy, universe).

This is the evaluator every other check is measured against: ``validate`` asks it whether each
matrix row is allowed and every other pair denied, the back-end tests compare compiled output
against it, and the independent oracle (network-config-analyzer) is compared with it.

Semantics (the contract every back end must preserve):

* A workload is *enforced* when default deny applies to it: hosts, managed services and
  Kubernetes workloads outside ``settings.excluded_namespaces``. External peers are never
  enforced (we do not control the internet), nor are excluded namespaces.
* A connection between two non-enforced workloads is allowed (nothing of ours sits in its way).
* Otherwise it is allowed exactly when an allow rule (or exception) names the source among its
  sources, the destination among its destinations, the protocol and a port range containing the
  port. Every back end compiles both sides of a rule (egress at the source, ingress at the
  destination), so one rule suffices for both enforcement points.

Layer 7 (HTTP). Connectivity is decided at layer 4: a rule with ``http`` matches allows the TCP
connection exactly like the same rule without them, so :class:`Connections`, :meth:`Evaluator.pair`,
:func:`connectivity`, ``validate``, diff and blast radius are unchanged by L7. What ``http`` adds is a
constraint on the *requests* carried over that connection: only HTTP requests whose method and path
match one of the rule's :class:`~microseg.ir.model.HttpMatch` entries (whole-string regular
expressions, Cilium's semantics). Several rules that allow the same connection combine as a union:
if any of them has no ``http``, the connection is unconstrained (any traffic); otherwise requests
matching any entry of any of them are admitted (as Cilium does: "If a layer 4 rule is specified in the
policy, and a similar layer 4 rule with layer 7 rules is also specified, then the layer 7 portions of
the latter rule will have no effect", https://docs.cilium.io/en/stable/security/policy/layer7/).
:meth:`Evaluator.decide` reports the constraint in ``Decision.http`` (``None``: unconstrained). A
target that cannot enforce requests must refuse such a rule (``UnsupportedFeature``): compiling it
at layer 4 would allow every request, which is wider.

External peers with DNS names (``Workload.fqdns``). Such a peer stands for its addresses (minus
``except_addresses``) *and* whatever its names resolve to when a connection is made; the exceptions
narrow the addresses only. Connectivity is still per workload, so nothing above changes. A target that
can match names where it enforces (Cilium's ``toFQDNs``, on egress) matches both; a target that matches
addresses only compiles the peer from its addresses, which is never wider than the IR (it may be
narrower: the names' addresses outside the listed CIDRs are not allowed there), and it refuses
(``UnsupportedFeature``) a peer that has names but no addresses, for which it would have nothing to
match. Names never come from flow logs: a person writes them in the inventory's external peers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from microseg.ir.model import (
    AllowRule,
    Guardrail,
    HttpMatch,
    Policy,
    PortRange,
    Protocol,
    Workload,
    WorkloadKind,
    ZoneMatch,
)

ALL_PORTS = PortRange(start=0, end=65535)


def merge_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Canonical form of a set of port ranges: sorted, overlapping and adjacent ranges joined."""
    out: list[PortRange] = []
    for r in sorted(ranges, key=lambda r: (r.start, r.end)):
        if out and r.start <= out[-1].end + 1:
            if r.end > out[-1].end:
                out[-1] = PortRange(start=out[-1].start, end=r.end)
        else:
            out.append(r)
    return tuple(out)


@dataclass(frozen=True)
class Connections:
    """Allowed connections between one ordered pair: everything, or ports per protocol."""

    everything: bool = False
    ports: tuple[tuple[Protocol, tuple[PortRange, ...]], ...] = ()

    @staticmethod
    def of(pairs: Iterable[tuple[Protocol, PortRange]]) -> Connections:
        by_proto: dict[Protocol, list[PortRange]] = {}
        for proto, rng in pairs:
            by_proto.setdefault(proto, []).append(rng)
        return Connections(ports=tuple((p, merge_ranges(r)) for p, r in sorted(by_proto.items())))

    @property
    def empty(self) -> bool:
        return not self.everything and not self.ports

    def allows(self, protocol: Protocol, port: int) -> bool:
        if self.everything:
            return True
        return any(p == protocol and any(r.contains(port) for r in rs) for p, rs in self.ports)

    def __str__(self) -> str:
        if self.everything:
            return "All Connections"
        if not self.ports:
            return "No Connections"
        parts = []
        for proto, ranges in self.ports:
            if proto == Protocol.ICMP:
                parts.append("ICMP")
            else:
                parts.append(f"{proto.value} " + ",".join(str(r) for r in ranges))
        return ",".join(parts)


@dataclass(frozen=True)
class Decision:
    """The answer for one (source, destination, protocol, port).

    ``http`` is the layer-7 constraint of an allowed connection: ``None`` when it is unconstrained (a
    matching rule has no ``http``, or neither side is under default deny), otherwise the union of the
    matching rules' HTTP matches, in canonical order: only requests matching one of them are admitted.
    """

    allowed: bool
    rule_ids: tuple[str, ...]
    reason: str
    http: tuple[HttpMatch, ...] | None = None

    @property
    def l7_constrained(self) -> bool:
        return self.http is not None


@dataclass
class Evaluator:
    """Answers allow/deny with the matching rules for (source, destination, protocol, port).

    Build once per policy; lookups index rules by (source, destination) so that full pairwise
    connectivity over thousands of workloads stays a dictionary walk.
    """

    policy: Policy
    _index: dict[tuple[str, str], list[AllowRule]] = field(init=False, default_factory=dict)
    _workloads: dict[str, Workload] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._workloads = self.policy.workload_map()
        for rule in self.policy.all_rules():
            for s in rule.sources:
                for d in rule.destinations:
                    self._index.setdefault((s, d), []).append(rule)

    def enforced(self, name: str) -> bool:
        w = self._workloads.get(name)
        if w is None:  # an unknown name is treated as enforced: fail closed
            return True
        return is_enforced(w, self.policy.settings.excluded_namespaces)

    def decide(self, source: str, destination: str, protocol: Protocol, port: int) -> Decision:
        rules = [r for r in self._index.get((source, destination), ())
                 if r.protocol == protocol and (protocol == Protocol.ICMP or r.allows_port(port))]
        if rules:
            ids = tuple(sorted(r.id for r in rules))
            http: tuple[HttpMatch, ...] | None = None
            # One rule without L7 constraints admits any traffic; between two workloads outside default
            # deny nothing of ours sits in the way to enforce a constraint.
            if all(r.http for r in rules) and (self.enforced(source) or self.enforced(destination)):
                http = tuple(sorted({m for r in rules for m in r.http}, key=HttpMatch.sort_key))
            return Decision(True, ids, "allowed by " + ", ".join(ids), http)
        if not self.enforced(source) and not self.enforced(destination):
            return Decision(True, (), "neither side is under default deny")
        return Decision(False, (), "default deny: no allow rule matches")

    def pair(self, source: str, destination: str) -> Connections:
        if not self.enforced(source) and not self.enforced(destination):
            return Connections(everything=True)
        pairs: list[tuple[Protocol, PortRange]] = []
        for rule in self._index.get((source, destination), ()):
            if rule.protocol == Protocol.ICMP:
                pairs.append((Protocol.ICMP, ALL_PORTS))
            else:
                pairs.extend((rule.protocol, r) for r in rule.ports)
        return Connections.of(pairs)


def is_enforced(w: Workload, excluded_namespaces: Sequence[str]) -> bool:
    if w.kind == WorkloadKind.EXTERNAL:
        return False
    if w.kind == WorkloadKind.KUBERNETES and w.namespace in excluded_namespaces:
        return False
    return True


def connectivity(policy: Policy, universe: Sequence[str] | None = None) -> dict[tuple[str, str], Connections]:
    """Allowed connections for every ordered pair of distinct workloads in ``universe``.

    ``universe`` defaults to every workload the policy names. Pairs with no connection are omitted.
    """
    ev = Evaluator(policy)
    names = sorted(universe if universe is not None else (w.name for w in policy.workloads))
    out: dict[tuple[str, str], Connections] = {}
    for s in names:
        for d in names:
            if s == d:
                continue
            c = ev.pair(s, d)
            if not c.empty:
                out[(s, d)] = c
    return out


def _zone_match(m: ZoneMatch, zone: str | None, environment: str | None) -> bool:
    if m.zones and zone not in m.zones:
        return False
    if m.except_zones and zone in m.except_zones:
        return False
    if m.environments and (environment or "").lower() not in m.environments:
        return False
    return True


def guardrail_applies(g: Guardrail, src_zone: str | None, src_env: str | None, dst_zone: str | None,
                      dst_env: str | None, protocol: Protocol, ports: Sequence[PortRange]) -> bool:
    """Whether a connection class (zone/env of both ends, protocol, any of ``ports``) breaks ``g``."""
    if g.protocols and protocol not in g.protocols:
        return False
    if g.ports and (protocol == Protocol.ICMP or not any(
            gp.start <= p.end and p.start <= gp.end for gp in g.ports for p in ports)):
        return False  # a port-scoped guardrail says nothing about ICMP, which has no ports
    return _zone_match(g.source, src_zone, src_env) and _zone_match(g.destination, dst_zone, dst_env)


def breached_guardrails(policy: Policy, source: str, destination: str, protocol: Protocol,
                        ports: Sequence[PortRange]) -> tuple[Guardrail, ...]:
    zones = policy.zone_of()
    wl = policy.workload_map()
    s, d = wl.get(source), wl.get(destination)
    return tuple(g for g in policy.guardrails if guardrail_applies(
        g, zones.get(source), s.environment if s else None, zones.get(destination),
        d.environment if d else None, protocol, ports))
