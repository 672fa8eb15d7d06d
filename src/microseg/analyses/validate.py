"""Validation: the policy allows what must work, blocks lateral movement, and breaks no guardrail.

Checks (finding ids are stable, ``MS2xx``):

* MS201 an allow rule breaks a guardrail without an approved exception (violation)
* MS202 an exception has expired (violation)
* MS203 an observed, accepted flow would be denied at enforcement and breaks no guardrail: it would
  break production (violation)
* MS204 an observed flow that breaks a guardrail is denied by the plan: blocked as intended (info)
* MS205 an observed flow below the codification thresholds would be denied (warning)
* MS206 the plan allows a connection that only ever appeared as denied, or as attempts nobody answered,
  in the flows (warning: wider than today's controls, or a server that is not there)
* MS207 a matrix row that the evaluator does not allow, or an allowed pair that is not in the
  matrix (violation: the policy and its matrix disagree)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from microseg.ir.model import Edge, Finding, Policy, PortRange, WorkloadKind
from microseg.ir.semantics import Evaluator, breached_guardrails


@dataclass(frozen=True)
class BlastRadius:
    workload: str
    zone: str
    flat: int  # workloads reachable in a flat network (everyone else)
    direct: int  # workloads it can open a connection to under the plan
    transitive: int  # workloads reachable by hopping through workloads it can reach


@dataclass(frozen=True)
class ValidationResult:
    violations: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    info: tuple[Finding, ...]
    rows_checked: int
    pairs_checked: int
    edges_checked: int
    blast: tuple[BlastRadius, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def reachability(policy: Policy) -> dict[str, set[str]]:
    """Direct reachability (any port) between internal workloads under the policy."""
    ev = Evaluator(policy)
    internal = [w.name for w in policy.workloads if w.kind != WorkloadKind.EXTERNAL]
    unenforced = {n for n in internal if not ev.enforced(n)}
    reach: dict[str, set[str]] = {n: set() for n in internal}
    for rule in policy.all_rules():
        for s in rule.sources:
            if s in reach:
                reach[s].update(d for d in rule.destinations if d in reach and d != s)
    for s in unenforced:
        reach[s].update(unenforced - {s})
    return reach


def blast_radius(policy: Policy) -> tuple[BlastRadius, ...]:
    reach = reachability(policy)
    zones = policy.zone_of()
    n = len(reach)
    out = []
    for s in sorted(reach):
        seen = {s}
        queue = deque([s])
        while queue:
            for d in reach[queue.popleft()]:
                if d not in seen:
                    seen.add(d)
                    queue.append(d)
        out.append(BlastRadius(workload=s, zone=zones.get(s, "?"), flat=n - 1, direct=len(reach[s]),
                               transitive=len(seen) - 1))
    return tuple(out)


def validate(policy: Policy, edges: Sequence[Edge] | None = None, *, now: datetime | None = None,
             segment: str | None = None) -> ValidationResult:
    """Validate ``policy``; with ``edges`` also against observed flows. ``segment`` limits the
    flow checks to destinations in that segment (the exit criterion of one rollout phase)."""
    ev = Evaluator(policy)
    zones = policy.zone_of()
    violations: list[Finding] = []
    warnings: list[Finding] = []
    info: list[Finding] = []

    rows = 0
    matrix_pairs: set[tuple[str, str]] = set()
    exception_ids = {x.rule.id for x in policy.exceptions}
    for rule in policy.all_rules():
        for s in rule.sources:
            for d in rule.destinations:
                matrix_pairs.add((s, d))
                for rng in rule.ports:
                    for port in {rng.start, rng.end}:
                        rows += 1
                        if not ev.decide(s, d, rule.protocol, port).allowed:
                            violations.append(Finding(id="MS207", severity="critical", message=f"matrix row of "
                                                      f"{rule.id} is not allowed by the evaluator", source=s,
                                                      destination=d, protocol=rule.protocol, port=port))
                if rule.id in exception_ids:
                    continue
                for g in breached_guardrails(policy, s, d, rule.protocol, rule.ports):
                    violations.append(Finding(
                        id="MS201", severity="critical", message=f"rule {rule.id} breaks guardrail {g.id} "
                        f"({g.description}) and has no approved exception", source=s, destination=d,
                        protocol=rule.protocol, port=rule.ports[0].start if rule.ports else None))
    known_guardrails = {g.id for g in policy.guardrails}
    for x in policy.exceptions:
        if now is not None and x.expires < now:
            violations.append(Finding(id="MS202", severity="high", message=f"exception {x.rule.id} to "
                                      f"{x.guardrail} expired on {x.expires.date().isoformat()} (approver "
                                      f"{x.approver})", source=",".join(x.rule.sources),
                                      destination=",".join(x.rule.destinations)))
        if x.guardrail not in known_guardrails:
            warnings.append(Finding(id="MS208", severity="low", message=f"exception {x.rule.id} names unknown "
                                    f"guardrail {x.guardrail}"))

    # Everything else is denied: the only allowed pairs are matrix pairs or pairs outside enforcement.
    reach = reachability(policy)
    pairs = 0
    for s, dests in sorted(reach.items()):
        for d in sorted(dests):
            pairs += 1
            if (s, d) not in matrix_pairs and (ev.enforced(s) or ev.enforced(d)):
                violations.append(Finding(id="MS207", severity="critical", message="pair is reachable but not "
                                          "in the flow-to-policy matrix", source=s, destination=d))

    checked = 0
    for e in sorted(edges or (), key=lambda e: e.key):
        if segment is not None and zones.get(e.destination) != segment:
            continue
        checked += 1
        decision = ev.decide(e.source, e.destination, e.protocol, e.port)
        port_range = (PortRange(start=e.port, end=e.port),)
        if e.flows > 0 and not decision.allowed:
            breaches = breached_guardrails(policy, e.source, e.destination, e.protocol, port_range)
            if breaches:
                info.append(Finding(id="MS204", severity="info", message="observed flow breaks "
                                    f"{', '.join(g.id for g in breaches)}; denied by the plan (blocked as "
                                    "intended)", source=e.source, destination=e.destination, protocol=e.protocol,
                                    port=e.port, evidence=f"{e.flows} flow(s) on {e.days} day(s)"))
            elif e.flows < policy.settings.min_flows or e.days < policy.settings.min_days:
                warnings.append(Finding(id="MS205", severity="medium", message="observed flow below the "
                                        "codification thresholds will be denied at enforcement",
                                        source=e.source, destination=e.destination, protocol=e.protocol,
                                        port=e.port, evidence=f"{e.flows} flow(s) on {e.days} day(s)"))
            else:
                violations.append(Finding(id="MS203", severity="high", message="observed flow would be denied "
                                          "at enforcement (it would break production)", source=e.source,
                                          destination=e.destination, protocol=e.protocol, port=e.port,
                                          evidence=f"{e.flows} flow(s) on {e.days} day(s)"))
        elif e.flows == 0 and e.denied_flows > 0 and decision.allowed and decision.rule_ids:
            denied = e.denied_flows - e.unanswered
            seen = ", ".join(x for x in (f"{denied} denied attempt(s)" if denied else "",
                                         f"{e.unanswered} let through but never answered" if e.unanswered else "")
                             if x)
            # Unanswered attempts (engine/mapping.py) were not denied: today's controls let them through and
            # nothing answered, so the server may be down or not listening on that port.
            what = ("today's controls deny" if not e.unanswered else
                    "nothing answered today" if not denied else "today's controls deny or nothing answered")
            warnings.append(Finding(id="MS206", severity="medium", message=f"the plan allows a connection that "
                                    f"{what} ({seen})", source=e.source,
                                    destination=e.destination, protocol=e.protocol, port=e.port,
                                    evidence="allowed by " + ", ".join(decision.rule_ids)))
    return ValidationResult(violations=tuple(violations), warnings=tuple(warnings), info=tuple(info),
                            rows_checked=rows, pairs_checked=pairs, edges_checked=checked,
                            blast=blast_radius(policy))


