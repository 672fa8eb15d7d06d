"""Drift: does what is deployed, and what is observed, still match the reviewed policy?

Findings (ids are stable, ``MS4xx``, never reused; severity in brackets):

* MS401 [high] deployed allows connections on a pair where the desired policy allows none (the
  dangerous direction: enforcement is wider than what was reviewed)
* MS402 [medium] deployed allows nothing on a pair where the desired policy allows connections
  (traffic the review approved would break)
* MS403 [high when deployed allows anything extra, else medium] deployed and desired both allow
  something on a pair, but not the same connections
* MS404 [low] an allow rule no observed flow hit during the last N days of the flow data (orphaned)
* MS405 [medium] an allow rule names a workload that is not in the current inventory (its selector
  selects nothing: dead, or worse, ready to match whatever takes the name next)
* MS406 [high] an observed, accepted flow that the desired policy does not allow (unexplained: it
  would break at enforcement); [medium] when it breaks a guardrail, so that it is denied on purpose
* MS407 [high] an exception whose expiry date has passed
* MS408 [medium] a workload in no segment (no zone assignment, a zone that is not a segment, or a
  workload of the current inventory the policy does not know)
* MS409 [high] a workload the target should enforce (a host for nftables, a host or managed service
  for aws_sg) has no enforcement at all in the deployed output

The per-pair comparison (MS401-MS403) runs on the pairs the target governs, with the desired
connectivity taken as that target can express it (see :func:`desired_for_target`); everything else is
a set operation on :func:`microseg.ir.semantics.connectivity` and the observed edges. This module does no
I/O: the pipeline reads the files and passes text and IR in.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import yaml

from microseg.analyses.conndiff import PairChange, semantic_diff
from microseg.errors import InputError
from microseg.ir import intervals
from microseg.ir.model import (
    Edge,
    Inventory,
    JustificationKind,
    Policy,
    PortRange,
    Protocol,
    Severity,
    Workload,
    WorkloadKind,
)
from microseg.ir.semantics import Connections, Evaluator, breached_guardrails, connectivity, is_enforced
from microseg.ir.serde import ExceptionsDoc, exception_from_entry

Pair = tuple[str, str]
TARGETS = ("kubernetes", "calico", "istio", "nftables", "aws_sg")
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# id -> (short name, description, default severity). Every id appears in SARIF's tool.driver.rules.
RULES: dict[str, tuple[str, str, Severity]] = {
    "MS401": ("deployed-allows-unreviewed-pair", "The deployed policy allows connections on a pair where the "
              "reviewed policy allows none.", "high"),
    "MS402": ("deployed-blocks-reviewed-pair", "The deployed policy allows nothing on a pair where the reviewed "
              "policy allows connections: approved traffic would break.", "medium"),
    "MS403": ("deployed-differs-on-pair", "Deployed and reviewed policy allow different connections on a pair.",
              "high"),
    "MS404": ("orphaned-rule", "No observed flow hit this allow rule during the last N days of flow data.", "low"),
    "MS405": ("rule-selects-nothing", "The allow rule names a workload that is not in the current inventory.",
              "medium"),
    "MS406": ("unexplained-flow", "An observed flow the reviewed policy does not allow: it would break at "
              "enforcement.", "high"),
    "MS407": ("expired-exception", "An approved exception has passed its expiry date.", "high"),
    "MS408": ("workload-in-no-segment", "A workload is in no segment (trust zone).", "medium"),
    "MS409": ("workload-not-enforced", "A workload the target should enforce has no enforcement in the deployed "
              "output.", "high"),
}


def at_or_above(severity: Severity, threshold: Severity) -> bool:
    return _RANK[severity] <= _RANK[threshold]


@dataclass(frozen=True)
class Location:
    """Where in the policy-as-code a finding points: file (as given to the pipeline) and 1-based line."""

    file: str
    line: int | None = None


@dataclass(frozen=True)
class DriftFinding:
    id: str
    severity: Severity
    message: str
    source: str | None = None
    destination: str | None = None
    rule: str | None = None  # the allow rule or exception id the finding is about
    location: Location | None = None
    evidence: str = ""

    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.id, self.source or "", self.destination or "", self.rule or "", self.message)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "severity": self.severity, "message": self.message}
        for key, value in (("source", self.source), ("destination", self.destination), ("rule", self.rule)):
            if value is not None:
                out[key] = value
        if self.location is not None:
            out["file"] = self.location.file
            if self.location.line is not None:
                out["line"] = self.location.line
        if self.evidence:
            out["evidence"] = self.evidence
        return out


@dataclass(frozen=True)
class DriftReport:
    target: str | None
    findings: tuple[DriftFinding, ...]
    pairs_compared: int  # governed pairs compared with the deployed output (0 without --deployed)
    edges_checked: int  # observed edges checked (0 without flows)

    def failing(self, threshold: Severity) -> tuple[DriftFinding, ...]:
        return tuple(f for f in self.findings if at_or_above(f.severity, threshold))


# -- connections as sets ------------------------------------------------------------------------------------

_PORTED = (Protocol.SCTP, Protocol.TCP, Protocol.UDP)
Intervals = list[tuple[int, int]]


def _as_sets(c: Connections) -> dict[Protocol, Intervals]:
    if c.everything:
        return {p: [(0, 65535)] for p in (*_PORTED, Protocol.ICMP)}
    # ICMP has no ports in the IR: any ICMP range means every ICMP type (semantics.Evaluator.pair).
    return {p: [(0, 65535)] if p == Protocol.ICMP else [(r.start, r.end) for r in rs] for p, rs in c.ports if rs}


def _from_sets(sets: Mapping[Protocol, Intervals]) -> Connections:
    if all(sets.get(p) == [(0, 65535)] for p in (*_PORTED, Protocol.ICMP)):
        return Connections(everything=True)
    return Connections.of((p, PortRange(start=a, end=b)) for p, ivs in sets.items() for a, b in ivs)


def subtract(a: Connections, b: Connections) -> Connections:
    """The connections ``a`` allows and ``b`` does not."""
    sa, sb = _as_sets(a), _as_sets(b)
    return _from_sets({p: rest for p, ivs in sa.items() if (rest := intervals.subtract(ivs, sb.get(p, [])))})


def canonical(c: Connections) -> Connections:
    """``c`` with every protocol's full range written as ``everything``, so that equal sets compare equal."""
    return _from_sets(_as_sets(c))


def _without_port_zero(c: Connections) -> Connections:
    # NetworkPolicy, Calico and Istio ports are 1-65535: port 0 is no destination port, and the back ends
    # drop it rather than widen it (as the kubernetes reader's ranges_of does).
    sets = _as_sets(c)
    return _from_sets({p: rest for p, ivs in sets.items()
                       if (rest := ivs if p == Protocol.ICMP else intervals.subtract(ivs, [(0, 0)]))})


def _tcp_only(c: Connections) -> Connections:
    # Istio's sidecars proxy TCP only, so an AuthorizationPolicy neither allows nor denies anything else
    # (the istio reader's contract, microseg.sources.deployed.istio, after Istio's AuthorizationPolicy reference).
    sets = _as_sets(c)
    tcp = intervals.subtract(sets.get(Protocol.TCP, []), [(0, 0)])
    return Connections.of((Protocol.TCP, PortRange(start=a, end=b)) for a, b in tcp)


# -- what a target governs and can express ------------------------------------------------------------------


def _pods(policy: Policy) -> set[str]:
    excluded = policy.settings.excluded_namespaces
    return {w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)}


def _pairs_touching(policy: Policy, side: Collection[str]) -> set[Pair]:
    names = sorted(w.name for w in policy.workloads)
    return {(s, d) for s in names for d in names if s != d and (s in side or d in side)}


@dataclass(frozen=True)
class TargetScope:
    """The pairs a target's deployed output decides, and the workloads it should but does not enforce."""

    governed: frozenset[Pair]
    unenforced: tuple[str, ...] = ()


def target_scope(target: str, policy: Policy, files: Mapping[str, str]) -> TargetScope:
    """Which pairs of ``policy``'s universe the deployed ``files`` of ``target`` govern.

    kubernetes and calico govern every pair with a pod under default deny on one side (each back end's
    read-back contract); istio governs pairs whose destination is such a pod (authorization is enforced
    at the destination's sidecar); nftables governs the pairs its reader evaluates for the hosts named in
    ``index.json`` (and the router between zones, if any); aws_sg the pairs with one side in a security
    group tagged with its workload.
    """
    if target in ("kubernetes", "calico"):
        return TargetScope(frozenset(_pairs_touching(policy, _pods(policy))))
    if target == "istio":
        mesh = _pods(policy)
        names = sorted(w.name for w in policy.workloads)
        return TargetScope(frozenset((s, d) for s in names for d in mesh if s != d))
    if target == "nftables":
        from microseg.sources.deployed import nftables as nft

        hosts, router = nftables_index(files)
        wanted = sorted(w.name for w in policy.workloads if w.kind == WorkloadKind.HOST)
        return TargetScope(frozenset(nft.governed_pairs(policy, hosts, router=router)),
                           tuple(h for h in wanted if h not in hosts))
    if target == "aws_sg":
        from microseg.sources.deployed import aws_sg

        grouped = {g.workload for g in aws_sg.parse(files, policy).values()}
        excluded = policy.settings.excluded_namespaces
        wanted = sorted(w.name for w in policy.workloads
                        if w.kind in (WorkloadKind.HOST, WorkloadKind.SERVICE) and is_enforced(w, excluded))
        return TargetScope(frozenset(_pairs_touching(policy, grouped)), tuple(h for h in wanted if h not in grouped))
    raise InputError(f"drift cannot read deployed {target!r}; use one of {', '.join(TARGETS)}", field="--target")


def nftables_index(files: Mapping[str, str]) -> tuple[set[str], bool]:
    """Host workloads and whether a router ruleset is named in the nftables output's ``index.json``."""
    text = files.get("index.json")
    if text is None:
        raise InputError("no index.json among the deployed nftables files (it names each host's ruleset)",
                         file="index.json")
    try:
        index = json.loads(text)
        hosts = {str(h["workload"]) for h in index["hosts"]}
        router = bool(index.get("router"))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"malformed index: {e}", file="index.json", field="hosts") from None
    return hosts, router


Span = intervals.Span


def _space(w: Workload) -> list[Span]:
    """The workload's addresses minus its exceptions, as sorted disjoint spans."""
    return intervals.address_spans((ipaddress.ip_network(a, strict=False) for a in w.addresses),
                                   (ipaddress.ip_network(a, strict=False) for a in w.except_addresses))


def union(cs: Iterable[Connections]) -> Connections:
    sets: dict[Protocol, Intervals] = {}
    for c in cs:
        for p, ivs in _as_sets(c).items():
            sets.setdefault(p, []).extend(ivs)
    return canonical(Connections.of((p, PortRange(start=a, end=b)) for p, ivs in sets.items() for a, b in ivs)
                     ) if sets else Connections()


def intersect(a: Connections, b: Connections) -> Connections:
    return subtract(a, subtract(a, b))


def _address_matched(policy: Policy, ir: Mapping[Pair, Connections], pairs: Collection[Pair],
                     other_side: Callable[[Workload, Workload], Workload | None]) -> dict[Pair, Connections]:
    """What an address-matching target allows, given that it allows the IR: a peer matched by its addresses
    also gets the allowances of every peer whose addresses contain part of its own, and is allowed what is
    allowed to *all* its addresses (the caveat every ipBlock/CIDR target documents, e.g. NetworkPolicy's
    ipBlock "cluster ingress and egress mechanisms often require rewriting", and the read-backs' rule "a peer
    part of whose addresses are allowed is not counted as allowed"). Per pair: the intersection, over the
    pieces of the peer's address space cut at every CIDR boundary, of the union of the IR's allowances of
    every addressed workload that contains the piece."""
    wl = policy.workload_map()
    spaces = {n: sp for n, w in wl.items() if w.kind != WorkloadKind.KUBERNETES and (sp := _space(w))}
    points = {(v, x) for sp in spaces.values() for v, lo, hi in sp for x in (lo, hi + 1)}
    out: dict[Pair, Connections] = {}
    for s, d in pairs:
        c = ir.get((s, d), Connections())
        other = other_side(wl[s], wl[d])
        if other is not None and other.name in spaces:
            acc: Connections | None = None
            for v, lo, hi in spaces[other.name]:
                for cut in sorted({lo} | {x for pv, x in points if pv == v and lo < x <= hi}):
                    owners = [n for n, sp in spaces.items() if any(sv == v and a <= cut <= b for sv, a, b in sp)]
                    piece = union(ir.get((n, d) if other.name == s else (s, n), Connections()) for n in owners)
                    acc = piece if acc is None else intersect(acc, piece)
            c = acc or Connections()
        if not c.empty:
            out[(s, d)] = c
    return out


def _non_pod(s: Workload, d: Workload) -> Workload | None:
    return s if s.kind != WorkloadKind.KUBERNETES else d if d.kind != WorkloadKind.KUBERNETES else None


def _external(s: Workload, d: Workload) -> Workload | None:
    # Security groups reference governed hosts and services by group; only external peers are matched by CIDR.
    return s if s.kind == WorkloadKind.EXTERNAL else d if d.kind == WorkloadKind.EXTERNAL else None


def desired_for_target(target: str, policy: Policy, governed: Collection[Pair]) -> dict[Pair, Connections]:
    """``connectivity(policy)`` on the governed pairs, as ``target`` can express it.

    Port 0 is dropped for kubernetes, calico and istio (their ports are 1-65535) and istio keeps TCP only.
    Address-matching targets (kubernetes, calico, istio, aws_sg) give an external peer inside another's
    CIDRs that peer's allowances too (:func:`_address_matched`), so a faithful deployment shows no drift.
    nftables is compared with the IR as it is (its reader counts a partly matched peer as allowed).
    """
    wanted = set(governed)
    ir = connectivity(policy)
    if target in ("kubernetes", "calico", "istio"):
        projected = _address_matched(policy, ir, wanted, _non_pod)
    elif target == "aws_sg":
        projected = _address_matched(policy, ir, wanted, _external)
    else:
        projected = {k: v for k, v in ir.items() if k in wanted}
    out: dict[Pair, Connections] = {}
    for pair, c in sorted(projected.items()):
        if target in ("kubernetes", "calico"):
            c = _without_port_zero(c)
        elif target == "istio":
            c = _tcp_only(c)
        c = canonical(c)
        if not c.empty:
            out[pair] = c
    return out


# -- the checks ---------------------------------------------------------------------------------------------


def _describe(change: PairChange, extra: Connections, missing: Connections) -> tuple[str, Severity, str]:
    if change.kind == "added":
        return "MS401", "high", f"deployed allows {extra}; the reviewed policy allows nothing"
    if change.kind == "removed":
        return "MS402", "medium", f"deployed allows nothing; the reviewed policy allows {missing} (it would break)"
    parts = []
    if not extra.empty:
        parts.append(f"deployed also allows {extra}")
    if not missing.empty:
        parts.append(f"deployed does not allow {missing} (it would break)")
    return "MS403", "high" if not extra.empty else "medium", "; ".join(parts)


def compare_deployed(policy: Policy, target: str, deployed: Mapping[Pair, Connections], scope: TargetScope,
                     locations: Mapping[str, Location] | None = None) -> list[DriftFinding]:
    """MS401-MS403 on the governed pairs, and MS409 for workloads the output does not enforce at all."""
    locations = locations or {}
    desired = desired_for_target(target, policy, scope.governed)
    actual = {k: canonical(v) for k, v in deployed.items() if k in scope.governed and not v.empty}
    ev = Evaluator(policy)
    out: list[DriftFinding] = []
    for change in semantic_diff(desired, actual):
        extra = subtract(change.after, change.before)
        missing = subtract(change.before, change.after)
        fid, severity, message = _describe(change, extra, missing)
        rules = sorted({r.id for r in policy.all_rules()
                        if change.source in r.sources and change.destination in r.destinations})
        evidence = f"reviewed: {change.before}; deployed: {change.after}"
        if rules:
            evidence += "; rules of the pair: " + ", ".join(rules)
        elif not ev.enforced(change.source) and not ev.enforced(change.destination):
            evidence += "; neither side is under default deny"
        loc = locations.get(f"rule:{rules[0]}") if rules else None
        out.append(DriftFinding(fid, severity, message, change.source, change.destination, rules[0] if rules else None,
                                loc, evidence))
    for name in scope.unenforced:
        out.append(DriftFinding("MS409", "high", f"{name} is under default deny in the reviewed policy but the "
                                f"deployed {target} output does not enforce it", source=name,
                                location=locations.get(f"workload:{name}")))
    return out


def _hits(rule_sources: Collection[str], rule_destinations: Collection[str], protocol: Protocol,
          ports: Sequence[PortRange], e: Edge) -> bool:
    return (e.source in rule_sources and e.destination in rule_destinations and e.protocol == protocol
            and (protocol == Protocol.ICMP or any(r.contains(e.port) for r in ports)))


def orphaned_rules(policy: Policy, edges: Sequence[Edge], days: int,
                   locations: Mapping[str, Location] | None = None) -> list[DriftFinding]:
    """MS404: allow rules no accepted flow hit in the last ``days`` days of the flow data.

    "Now" is the end of the observed data (the latest ``last_seen``), not the wall clock, so that the
    same flows always give the same answer and an old export does not make every rule look orphaned.
    Infrastructure allowances (DNS, health checks, ...) are not judged: they are kept because every
    rollout needs them, not because flows showed them (DESIGN: "default-deny east-west").
    """
    locations = locations or {}
    seen = [e for e in edges if e.flows > 0 and e.last_seen is not None]
    if not seen:
        return []
    end = max(e.last_seen for e in seen if e.last_seen is not None)
    cutoff = end - timedelta(days=days)
    out: list[DriftFinding] = []
    for rule in policy.all_rules():
        if rule.justification.kind == JustificationKind.INFRASTRUCTURE:
            continue
        hits = [e for e in seen if _hits(rule.sources, rule.destinations, rule.protocol, rule.ports, e)]
        last = max((e.last_seen for e in hits if e.last_seen is not None), default=None)
        if last is not None and last >= cutoff:
            continue
        why = (f"last hit {last.isoformat()}" if last is not None else "never hit by an observed flow")
        out.append(DriftFinding("MS404", "low", f"rule {rule.id} had no flow hit in the last {days} day(s) of flow "
                                f"data ({why})", rule=rule.id,
                                location=locations.get(f"rule:{rule.id}") or locations.get(f"exception:{rule.id}"),
                                evidence=f"flow data ends {end.isoformat()}"))
    return out


def dangling_rules(policy: Policy, inventory: Inventory,
                   locations: Mapping[str, Location] | None = None) -> list[DriftFinding]:
    """MS405: rules naming a workload that the current inventory does not have."""
    locations = locations or {}
    current = {w.name for w in inventory.workloads}
    out: list[DriftFinding] = []
    for rule in policy.all_rules():
        gone = sorted({n for n in rule.sources + rule.destinations if n not in current})
        if gone:
            out.append(DriftFinding("MS405", "medium", f"rule {rule.id} names {', '.join(gone)}, not in the current "
                                    "inventory: that side selects no workload", rule=rule.id,
                                    location=locations.get(f"rule:{rule.id}") or locations.get(f"exception:{rule.id}")))
    return out


def unexplained_flows(policy: Policy, edges: Sequence[Edge]) -> list[DriftFinding]:
    """MS406: observed accepted flows the desired policy denies."""
    ev = Evaluator(policy)
    out: list[DriftFinding] = []
    for e in sorted(edges, key=lambda e: e.key):
        if e.flows <= 0 or ev.decide(e.source, e.destination, e.protocol, e.port).allowed:
            continue
        port = "" if e.protocol == Protocol.ICMP else f" {e.port}"
        last = e.last_seen.isoformat() if e.last_seen else "?"
        evidence = f"{e.flows} flow(s) on {e.days} day(s), last seen {last}"
        breaches = breached_guardrails(policy, e.source, e.destination, e.protocol, (PortRange(start=e.port,
                                                                                                end=e.port),))
        if breaches:
            # Denied on purpose (a guardrail, as validate's MS204), but still happening: review it as
            # possible lateral movement or an undeclared dependency rather than gate on it.
            out.append(DriftFinding("MS406", "medium", f"observed {e.protocol.value}{port} breaks guardrail "
                                    f"{', '.join(g.id for g in breaches)} and is denied by the reviewed policy: "
                                    "review it (lateral movement or an undeclared dependency)", e.source,
                                    e.destination, evidence=evidence))
            continue
        out.append(DriftFinding("MS406", "high", f"observed {e.protocol.value}{port} is not allowed by the reviewed "
                                "policy: it would break at enforcement", e.source, e.destination, evidence=evidence))
    return out


def expired_exceptions(policy: Policy, now: datetime,
                       locations: Mapping[str, Location] | None = None) -> list[DriftFinding]:
    """MS407: exceptions whose expiry is before ``now``."""
    locations = locations or {}
    return [DriftFinding("MS407", "high", f"exception {x.rule.id} to {x.guardrail} expired on "
                         f"{x.expires.date().isoformat()} (approver {x.approver})", ",".join(x.rule.sources),
                         ",".join(x.rule.destinations), x.rule.id, locations.get(f"exception:{x.rule.id}"))
            for x in policy.exceptions if x.expires < now]


def unsegmented(policy: Policy, inventory: Inventory | None = None,
                locations: Mapping[str, Location] | None = None) -> list[DriftFinding]:
    """MS408: policy workloads with no zone, or a zone that is no segment; inventory workloads the policy lacks.

    External peers are not placed in zones of ours unless the plan did so, so they are only judged
    when they have an assignment naming an unknown segment.
    """
    locations = locations or {}
    zones = policy.zone_of()
    segments = {s.name for s in policy.segments}
    out: list[DriftFinding] = []
    for w in policy.workloads:
        zone = zones.get(w.name)
        if zone is None and w.kind == WorkloadKind.EXTERNAL:
            continue
        if zone is None:
            out.append(DriftFinding("MS408", "medium", f"{w.name} has no zone assignment", source=w.name,
                                    location=locations.get(f"workload:{w.name}")))
        elif zone not in segments:
            out.append(DriftFinding("MS408", "medium", f"{w.name} is assigned to zone {zone!r}, which is not a "
                                    "segment", source=w.name, location=locations.get(f"assignment:{w.name}")))
    if inventory is not None:
        known = {w.name for w in policy.workloads}
        for w in sorted(inventory.workloads, key=lambda w: w.name):
            if w.name not in known and w.kind != WorkloadKind.EXTERNAL:
                out.append(DriftFinding("MS408", "medium", f"{w.name} is in the current inventory but not in the "
                                        "policy: it is in no segment (re-plan to place it)", source=w.name))
    return out


def detect_drift(policy: Policy, *, now: datetime, target: str | None = None,
                 deployed: Mapping[Pair, Connections] | None = None, scope: TargetScope | None = None,
                 edges: Sequence[Edge] | None = None, inventory: Inventory | None = None, orphan_days: int = 30,
                 locations: Mapping[str, Location] | None = None) -> DriftReport:
    """Every drift check whose inputs are given, in one sorted report."""
    if orphan_days < 1:
        raise InputError("--orphan-days must be at least 1", field="--orphan-days")
    findings: list[DriftFinding] = []
    pairs = 0
    if deployed is not None:
        if target is None or scope is None:
            raise InputError("deployed connectivity needs its target and scope", field="--target")
        findings += compare_deployed(policy, target, deployed, scope, locations)
        pairs = len(scope.governed)
    if edges is not None:
        findings += orphaned_rules(policy, edges, orphan_days, locations)
        findings += unexplained_flows(policy, edges)
    if inventory is not None:
        findings += dangling_rules(policy, inventory, locations)
    findings += expired_exceptions(policy, now, locations)
    findings += unsegmented(policy, inventory, locations)
    return DriftReport(target if deployed is not None else None, tuple(sorted(findings, key=DriftFinding.sort_key)),
                       pairs, len(edges or ()))


# -- where things are in the policy files -------------------------------------------------------------------


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None  # the loader has already accepted the file; a location is a nicety, not a verdict


def _items(node: yaml.Node | None, key: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.SequenceNode):
            return list(v.value)
    return []


def _scalar(node: yaml.Node, key: str) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.ScalarNode):
                return str(v.value)
    return None


def policy_locations(texts: Mapping[str, str], where: str = "") -> dict[str, Location]:
    """``rule:ID``, ``exception:ID``, ``workload:NAME``, ``assignment:NAME`` -> file and line of the entry.

    Exceptions written without an ``id`` get the generated one (:func:`exception_from_entry`), so the
    entry is found by position.
    """
    def path(name: str) -> str:
        return f"{where.rstrip('/')}/{name}" if where else name

    out: dict[str, Location] = {}
    for name, key, field, prefix in (("rules.yaml", "rules", "id", "rule"),
                                      ("workloads.yaml", "workloads", "name", "workload"),
                                      ("segments.yaml", "assignments", "workload", "assignment")):
        for node in _items(_compose(texts.get(name, "")), key):
            value = _scalar(node, field)
            if value is not None:
                out.setdefault(f"{prefix}:{value}", Location(path(name), node.start_mark.line + 1))
    text = texts.get("exceptions.yaml", "")
    nodes = _items(_compose(text), "exceptions")
    data = yaml.safe_load(text) if nodes else None
    if nodes and isinstance(data, dict):
        doc = ExceptionsDoc.model_validate(data)
        for node, entry in zip(nodes, doc.exceptions, strict=False):
            out.setdefault(f"exception:{exception_from_entry(entry).rule.id}",
                           Location(path("exceptions.yaml"), node.start_mark.line + 1))
    return out


__all__ = ["RULES", "SEVERITIES", "TARGETS", "DriftFinding", "DriftReport", "Location", "TargetScope",
           "at_or_above", "canonical", "compare_deployed", "dangling_rules", "desired_for_target", "detect_drift",
           "expired_exceptions", "intersect", "nftables_index", "orphaned_rules", "policy_locations", "subtract",
           "target_scope", "unexplained_flows", "union", "unsegmented"]
