"""Policy synthesis: edges (observed and declared) + zones + guardrails → allow rules and findings.

One allow rule per (source, destination, protocol) with the server ports merged; identities, never
IPs (back ends turn workload names into label selectors or, for hosts, their addresses). An edge that
breaks a guardrail is not codified: it becomes a finding with a suggested exception, because an
observed flow is evidence that something talked, not that it should.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from microseg.analyses.zones import assign_zones
from microseg.ir.model import (
    AllowRule,
    Edge,
    EdgeOrigin,
    Finding,
    Guardrail,
    Inventory,
    Justification,
    JustificationKind,
    ListenPort,
    Policy,
    PolicyException,
    PortRange,
    Protocol,
    Settings,
    Workload,
    WorkloadKind,
)
from microseg.ir.semantics import Evaluator, breached_guardrails, is_enforced, merge_ranges

# The conventional selector of the cluster resolver (CoreDNS and kube-dns both carry it), used when
# the inventory does not contain the resolver's Deployment. See the Kubernetes DNS docs
# ("DNS for Services and Pods"): the kube-dns Service selects k8s-app=kube-dns.
DEFAULT_DNS = Workload(name="kube-system/kube-dns", kind=WorkloadKind.KUBERNETES, namespace="kube-system",
                       k8s_kind="Deployment", labels=(("k8s-app", "kube-dns"),), selector=(("k8s-app", "kube-dns"),),
                       namespace_labels=(("kubernetes.io/metadata.name", "kube-system"),),
                       ports=(ListenPort(port=53, protocol=Protocol.UDP, name="dns"),
                              ListenPort(port=53, protocol=Protocol.TCP, name="dns-tcp")),
                       exposure_reason="", location="cluster/kube-system")
DNS_RULE_PREFIX = "AR-infra-dns"
DEFAULT_SETTINGS = Settings()  # frozen, so one shared default is safe


def rule_id(source: str, destination: str, protocol: Protocol) -> str:
    """Stable id: the same triple always gets the same id, so reviews and drift reports line up."""
    digest = hashlib.sha256(f"{source}|{destination}|{protocol.value}".encode()).hexdigest()[:10]
    return f"AR-{digest}"


@dataclass
class _Candidate:
    source: str
    destination: str
    protocol: Protocol
    ports: list[PortRange] = field(default_factory=list)
    flows: int = 0
    days: int = 0
    first: datetime | None = None
    last: datetime | None = None
    declared: list[str] = field(default_factory=list)
    guardrails: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class SynthesisResult:
    policy: Policy
    findings: tuple[Finding, ...]


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def declared_edges(workloads: Sequence[Workload]) -> list[Edge]:
    out = []
    for w in workloads:
        for dep in w.declared:
            out.append(Edge(source=w.name, destination=dep.destination, protocol=dep.protocol, port=dep.port,
                            origin=EdgeOrigin.DECLARED))
    return out


def _suggested_exception(c: _Candidate, guardrail: str) -> str:
    ports = ",".join(str(p) for p in merge_ranges(c.ports))
    return (f"If this dependency is legitimate, add to policy/exceptions.yaml: {{guardrail: {guardrail}, "
            f"sources: [{c.source}], destinations: [{c.destination}], protocol: {c.protocol.value}, "
            f"ports: [{ports}], approver: <name>, reason: <why>, expires: <YYYY-MM-DD>}}")


def synthesize(inventory: Inventory, edges: Sequence[Edge], *, guardrails: Sequence[Guardrail],
               settings: Settings = DEFAULT_SETTINGS, exceptions: Sequence[PolicyException] = ()) -> SynthesisResult:
    workloads = list(inventory.workloads)
    names = {w.name for w in workloads}
    dns = tuple(sorted(inventory.dns_resolvers))
    if not dns and any(w.kind == WorkloadKind.KUBERNETES for w in workloads):
        if DEFAULT_DNS.name not in names:
            workloads.append(DEFAULT_DNS)
            names.add(DEFAULT_DNS.name)
        dns = (DEFAULT_DNS.name,)
    workloads.sort(key=lambda w: w.name)
    segments, assignments = assign_zones(workloads, edges)
    skeleton = Policy(workloads=tuple(workloads), segments=segments, assignments=assignments,
                      guardrails=tuple(guardrails), dns_resolvers=dns, settings=settings,
                      exceptions=tuple(exceptions))
    findings: list[Finding] = []
    wl = skeleton.workload_map()

    # Infrastructure allowance: DNS from every enforced Kubernetes workload to the cluster resolver.
    dns_sources = tuple(sorted(w.name for w in workloads if w.kind == WorkloadKind.KUBERNETES
                               and is_enforced(w, settings.excluded_namespaces) and w.name not in dns))
    rules: list[AllowRule] = []
    if dns and dns_sources:
        for proto in (Protocol.UDP, Protocol.TCP):
            rules.append(AllowRule(
                id=f"{DNS_RULE_PREFIX}-{proto.value.lower()}", sources=dns_sources, destinations=dns,
                protocol=proto, ports=(PortRange(start=53, end=53),),
                justification=Justification(kind=JustificationKind.INFRASTRUCTURE,
                                            text="DNS to the cluster resolver (infrastructure allowance)")))

    candidates: dict[tuple[str, str, Protocol], _Candidate] = {}
    flagged: dict[tuple[str, str, Protocol], _Candidate] = {}
    exceptions_ev = Evaluator(Policy(workloads=skeleton.workloads, exceptions=tuple(exceptions),
                                     settings=settings))
    for e in sorted(list(edges) + declared_edges(workloads), key=lambda e: (e.key, e.origin.value)):
        if e.source not in names or e.destination not in names:
            findings.append(Finding(id="MS105", severity="medium", message="declared dependency names a "
                                    "workload that is not in the inventory; not codified", source=e.source,
                                    destination=e.destination, protocol=e.protocol, port=e.port))
            continue
        if e.destination in dns and e.port == 53 and e.protocol in (Protocol.UDP, Protocol.TCP) \
                and e.source in dns_sources:
            continue  # covered by the DNS allowance
        if e.origin == EdgeOrigin.OBSERVED and e.flows == 0 and e.unanswered:
            findings.append(_unanswered(skeleton, e))
            continue
        if e.origin == EdgeOrigin.OBSERVED and e.flows == 0:
            findings.append(Finding(
                id="MS102", severity="medium" if e.denied_flows < 10 else "high",
                message=f"{e.denied_flows} connection attempt(s) denied by the current controls; not codified",
                source=e.source, destination=e.destination, protocol=e.protocol, port=e.port,
                evidence=f"first {_fmt(e.first_seen)}, last {_fmt(e.last_seen)}",
                suggestion="Blocked today and blocked in the plan. Investigate if unexpected (scanning?)."))
            continue
        if e.origin == EdgeOrigin.OBSERVED and (e.flows < settings.min_flows or e.days < settings.min_days):
            findings.append(Finding(
                id="MS104", severity="low", message=f"observed {e.flows} flow(s) on {e.days} day(s), below the "
                f"thresholds (min_flows={settings.min_flows}, min_days={settings.min_days}); not codified",
                source=e.source, destination=e.destination, protocol=e.protocol, port=e.port,
                suggestion="Declare the dependency in the inventory (depends_on) if it is legitimate."))
            continue
        port = PortRange(start=e.port, end=e.port) if e.protocol != Protocol.ICMP else PortRange(start=0, end=0)
        # Guardrails are checked per port, so one forbidden port (an SSH probe, say) never drags the
        # legitimate ports of the same pair out of the policy, nor the reverse.
        breaches = breached_guardrails(skeleton, e.source, e.destination, e.protocol, (port,))
        if breaches and exceptions_ev.decide(e.source, e.destination, e.protocol, e.port).rule_ids:
            continue  # an approved exception already carries this flow
        key = (e.source, e.destination, e.protocol)
        c = (flagged if breaches else candidates).setdefault(key, _Candidate(e.source, e.destination, e.protocol))
        c.guardrails.update(g.id for g in breaches)
        c.ports.append(port)
        if e.origin == EdgeOrigin.DECLARED:
            c.declared.append(str(e.port))
        c.flows += e.flows
        c.days = max(c.days, e.days)
        c.first = _earliest(c.first, e.first_seen)
        c.last = _latest(c.last, e.last_seen)

    zone_of = skeleton.zone_of()
    guardrail_text = {g.id: g.description for g in guardrails}
    for key in sorted(flagged, key=lambda k: (k[0], k[1], k[2].value)):
        c = flagged[key]
        ports = merge_ranges(c.ports)
        for gid in sorted(c.guardrails):
            findings.append(Finding(
                id="MS101", severity="high",
                message=f"{'declared' if c.declared and not c.flows else 'observed'} flow breaks guardrail "
                f"{gid} ({guardrail_text[gid]}): possible lateral movement or undeclared dependency; not codified",
                source=c.source, destination=c.destination, protocol=c.protocol, port=ports[0].start,
                evidence=f"{zone_of.get(c.source)} -> {zone_of.get(c.destination)}; {c.flows} flow(s) on {c.days} "
                f"day(s), ports {','.join(map(str, ports))}, first {_fmt(c.first)}, last {_fmt(c.last)}",
                suggestion=_suggested_exception(c, gid)))
    for key in sorted(candidates, key=lambda k: (k[0], k[1], k[2].value)):
        c = candidates[key]
        if not is_enforced(wl[c.source], settings.excluded_namespaces) and not is_enforced(
                wl[c.destination], settings.excluded_namespaces):
            continue  # nothing of ours enforces this pair; a rule would be noise
        rules.append(AllowRule(id=rule_id(c.source, c.destination, c.protocol), sources=(c.source,),
                               destinations=(c.destination,), protocol=c.protocol, ports=merge_ranges(c.ports),
                               justification=_justify(c)))
    rules.sort(key=lambda r: r.id)
    policy = skeleton.model_copy(update={"rules": tuple(rules)})
    return SynthesisResult(policy=policy, findings=tuple(sorted(findings, key=finding_key)))


def _unanswered(skeleton: Policy, e: Edge) -> Finding:
    """MS102 for attempts today's controls let through but nothing answered (``Edge.unanswered``).

    Not "denied by the current controls": they were not. Never codified either (nothing worked), but
    an attempt that breaks a guardrail - a host trying SSH on its neighbours - is high severity, as
    the same flow answered would be (MS101).
    """
    breaches = breached_guardrails(skeleton, e.source, e.destination, e.protocol,
                                   (PortRange(start=e.port, end=e.port),))
    denied = e.denied_flows - e.unanswered
    message = (f"{e.unanswered} connection attempt(s) let through by the current controls but never answered "
               "(no SYN-ACK: a closed port or a dead host)" + (f", {denied} denied" if denied else ""))
    if breaches:
        message += (f"; breaks guardrail {', '.join(sorted(g.id for g in breaches))}: possible lateral movement "
                    "or scanning")
    return Finding(
        id="MS102", severity="high" if breaches or e.denied_flows >= 10 else "medium",
        message=message + "; not codified", source=e.source, destination=e.destination, protocol=e.protocol,
        port=e.port, evidence=f"first {_fmt(e.first_seen)}, last {_fmt(e.last_seen)}",
        suggestion="Nothing answered, so blocking it in the plan breaks nothing that works today. Investigate the "
                   "client if unexpected (scanning? a stale configuration?).")


def _fmt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


def _justify(c: _Candidate) -> Justification:
    parts = []
    if c.flows:
        parts.append(f"observed {c.flows} flow(s) over {c.days} day(s) ({_fmt(c.first)} .. {_fmt(c.last)})")
    if c.declared:
        parts.append("declared dependency in the inventory")
    kind = JustificationKind.OBSERVED if c.flows else JustificationKind.DECLARED
    return Justification(kind=kind, text="; ".join(parts), flows=c.flows, days=c.days, first_seen=c.first,
                         last_seen=c.last)


_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def finding_key(f: Finding) -> tuple[int, str, str, str, str, int]:
    return (_SEVERITY_ORDER[f.severity], f.id, f.source or "", f.destination or "",
            f.protocol.value if f.protocol else "", f.port or 0)


