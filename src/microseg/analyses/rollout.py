"""The phased rollout plan: observe → codify → enforce, segment by segment, data tier first.

Each phase has exit criteria that microseg evaluates itself from the plan's edges and findings, so
the plan states not only what to do next but whether each segment is ready for it today.

The per-edge observation window feeds it: ``Edge.days`` (distinct UTC days with records) gives each
segment's days observed; ``Edge.hours`` (UTC hours of day in which the records started) gives the
hours of day the flow logs cover (``capture_hours``: a gap is a blocker, since jobs running at those
hours were never seen) and, per segment, the dependencies that only run at one or two hours of the
day (``scheduled``): the deny-log watch after enforcing must stay open across those hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from microseg.ir.model import Edge, Finding, Policy, Protocol
from microseg.ir.semantics import Evaluator

# Enforcement order: the most sensitive segments first (fewest, most stable clients, highest value
# to an attacker), the internet edge and dev last.
ENFORCE_ORDER = ("data", "ai-data", "management", "ai-inference", "ai-agents", "app", "platform",
                 "internet-facing", "dev")
MIN_OBSERVATION_DAYS = 7
HOURS_OF_DAY = 24
# An edge looks scheduled when its accepted records started in at most this many distinct hours of
# the day while the flow logs cover at least SCHEDULE_MIN_CAPTURE_HOURS of them (fewer: the logs
# themselves are the narrow thing, not the edge).
SCHEDULE_MAX_HOURS = 2
SCHEDULE_MIN_CAPTURE_HOURS = 12
# ... and has at least this many accepted records: one or two records always fall in at most two
# hours, so they say nothing about a schedule (a sparse DNS lookup is not a cron job). Five records
# spread at random over 12 or more hours land in at most two of them less than 1 % of the time.
SCHEDULE_MIN_FLOWS = 5


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
    # UTC hours of day of the scheduled-looking inbound dependencies below (union); the deny-log
    # watch after enforcing the segment must be open across them.
    watch_hours: tuple[int, ...]
    # "SRC -> DST PROTO/PORT at UTC HH[, HH] on N day(s)", sorted; not a blocker.
    scheduled: tuple[str, ...]


@dataclass(frozen=True)
class RolloutPlan:
    order: tuple[SegmentReadiness, ...]
    # UTC hours of day in which any edge has records (accepted or denied), sorted.
    capture_hours: tuple[int, ...]


def hour_ranges(hours: Iterable[int]) -> str:
    """UTC hours of day as compressed two-digit ranges: (0, 1, 2, 5, 22, 23) -> "00-02, 05, 22-23"."""
    runs: list[list[int]] = []
    for h in sorted(set(hours)):
        if runs and h == runs[-1][1] + 1:
            runs[-1][1] = h
        else:
            runs.append([h, h])
    return ", ".join(f"{a:02d}" if a == b else f"{a:02d}-{b:02d}" for a, b in runs)


def capture_text(capture_hours: Sequence[int]) -> str:
    """How many hours of the day the flow logs cover, naming the missing ones: "18 of 24: none in UTC 00-05"."""
    missing = [h for h in range(HOURS_OF_DAY) if h not in set(capture_hours)]
    text = f"{HOURS_OF_DAY - len(missing)} of {HOURS_OF_DAY}"
    return text + (f": none in UTC {hour_ranges(missing)}" if missing else "")


def _scheduled_text(e: Edge) -> str:
    service = e.protocol.value if e.protocol == Protocol.ICMP else f"{e.protocol.value}/{e.port}"
    return (f"{e.source} -> {e.destination} {service} at UTC {', '.join(f'{h:02d}' for h in e.hours)} "
            f"on {e.days} day(s)")


def plan_rollout(policy: Policy, edges: Sequence[Edge], findings: Sequence[Finding], *,
                 unresolved_share: float, min_days: int = MIN_OBSERVATION_DAYS) -> RolloutPlan:
    rank = {z: i for i, z in enumerate(ENFORCE_ORDER)}
    recorded = [e for e in edges if e.flows > 0 or e.denied_flows > 0]
    capture = tuple(sorted({h for e in recorded for h in e.hours}))
    # Calendar days (UTC) from the first record to the last: a segment seen on fewer days inside a long
    # enough span may simply be quiet on the others (dev at weekends), which the blocker then says.
    firsts = [e.first_seen for e in recorded if e.first_seen]
    lasts = [e.last_seen for e in recorded if e.last_seen]
    span = (max(lasts).date() - min(firsts).date()).days + 1 if firsts and lasts else 0
    ev = Evaluator(policy)
    out = []
    for seg in sorted(policy.segments, key=lambda s: (rank.get(s.name, len(rank)), -s.trust, s.name)):
        if seg.name == "external":
            continue  # nothing to enforce on the internet's side
        members = set(seg.members)
        inbound = [r for r in policy.all_rules() if members.intersection(r.destinations)]
        accepted = [e for e in edges if e.destination in members and e.flows > 0]
        days = max((e.days for e in accepted), default=0)
        open_f = [f for f in findings if f.destination in members and f.severity in ("critical", "high")]
        # Scheduled-looking: accepted records in few hours of a well-covered day, on an edge the plan
        # allows (an edge the plan denies - lateral movement, a scan - is not a dependency to watch).
        scheduled = sorted((e for e in accepted
                            if len(capture) >= SCHEDULE_MIN_CAPTURE_HOURS
                            and 0 < len(e.hours) <= SCHEDULE_MAX_HOURS and e.flows >= SCHEDULE_MIN_FLOWS
                            and ev.decide(e.source, e.destination, e.protocol, e.port).rule_ids),
                           key=lambda e: e.key)
        blockers = []
        if days < min_days and inbound and span >= min_days:
            blockers.append(f"traffic into it seen on {days} of the {span} days the flow logs span; at least "
                            f"{min_days} needed to see weekly jobs - if the logs covered it all along, it is quiet "
                            "on the other days: confirm, then proceed")
        elif days < min_days and inbound:
            blockers.append(f"observed for {days} day(s); at least {min_days} needed to see weekly jobs")
        if len(capture) < HOURS_OF_DAY and recorded and inbound:
            blockers.append(f"flow records in {capture_text(capture)}: traffic at those hours (nightly jobs, "
                            "backups) was never observed - a logging gap, or nothing runs then; confirm "
                            "before enforcing")
        if open_f:
            blockers.append(f"{len(open_f)} open high-severity finding(s) into this segment: "
                            + ", ".join(sorted({f.id for f in open_f})))
        if unresolved_share > 0.05:
            blockers.append(f"{unresolved_share:.1%} of flows are unresolved (at most 5% before enforcing)")
        out.append(SegmentReadiness(segment=seg.name, trust=seg.trust, members=len(members),
                                    inbound_rules=len(inbound), observed_days=days, open_findings=len(open_f),
                                    unresolved_share=unresolved_share, ready=not blockers,
                                    blockers=tuple(blockers),
                                    watch_hours=tuple(sorted({h for e in scheduled for h in e.hours})),
                                    scheduled=tuple(sorted(_scheduled_text(e) for e in scheduled))))
    return RolloutPlan(order=tuple(out), capture_hours=capture)
