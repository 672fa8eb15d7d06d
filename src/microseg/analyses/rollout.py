"""The phased rollout plan: observe → codify → enforce, segment by segment, data tier first.

Each phase has exit criteria that microseg evaluates itself from the plan's edges and findings, so
the plan states not only what to do next but whether each segment is ready for it today.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microseg.ir.model import Edge, Finding, Policy

# Enforcement order: the most sensitive segments first (fewest, most stable clients, highest value
# to an attacker), the internet edge and dev last.
ENFORCE_ORDER = ("data", "ai-data", "management", "ai-inference", "ai-agents", "app", "platform",
                 "internet-facing", "dev")
MIN_OBSERVATION_DAYS = 7


@dataclass(frozen=True)
class SegmentReadiness:
    segment: str
    trust: int
    members: int
    inbound_rules: int
    observed_days: int  # longest observation window among edges into the segment
    open_findings: int  # high/critical planning findings whose destination is in the segment
    unresolved_share: float
    ready: bool
    blockers: tuple[str, ...]


@dataclass(frozen=True)
class RolloutPlan:
    order: tuple[SegmentReadiness, ...]


def plan_rollout(policy: Policy, edges: Sequence[Edge], findings: Sequence[Finding], *,
                 unresolved_share: float, min_days: int = MIN_OBSERVATION_DAYS) -> RolloutPlan:
    rank = {z: i for i, z in enumerate(ENFORCE_ORDER)}
    out = []
    for seg in sorted(policy.segments, key=lambda s: (rank.get(s.name, len(rank)), -s.trust, s.name)):
        if seg.name == "external":
            continue  # nothing to enforce on the internet's side
        members = set(seg.members)
        inbound = [r for r in policy.all_rules() if members.intersection(r.destinations)]
        days = max((e.days for e in edges if e.destination in members and e.flows > 0), default=0)
        open_f = [f for f in findings if f.destination in members and f.severity in ("critical", "high")]
        blockers = []
        if days < min_days and inbound:
            blockers.append(f"observed for {days} day(s); at least {min_days} needed to see weekly jobs")
        if open_f:
            blockers.append(f"{len(open_f)} open high-severity finding(s) into this segment: "
                            + ", ".join(sorted({f.id for f in open_f})))
        if unresolved_share > 0.05:
            blockers.append(f"{unresolved_share:.1%} of flows are unresolved (at most 5% before enforcing)")
        out.append(SegmentReadiness(segment=seg.name, trust=seg.trust, members=len(members),
                                    inbound_rules=len(inbound), observed_days=days, open_findings=len(open_f),
                                    unresolved_share=unresolved_share, ready=not blockers,
                                    blockers=tuple(blockers)))
    return RolloutPlan(order=tuple(out))
