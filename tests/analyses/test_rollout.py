"""plan_rollout and rollout.md on a hand-built policy: each blocker, the hours of day the flow logs cover,
and the scheduled-looking dependencies, with answers known by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microseg.analyses.rollout import RolloutPlan, SegmentReadiness, capture_text, hour_ranges, plan_rollout
from microseg.analyses.validate import validate
from microseg.ir.model import AllowRule, Edge, Finding, Justification, Policy, Segment, Workload, ZoneAssignment
from microseg.reports.markdown import CoverageView, IngestView, PlanView, rollout_md

T0 = datetime(2026, 11, 2, tzinfo=UTC)
T1 = datetime(2026, 11, 8, 23, tzinfo=UTC)
J = Justification(kind="observed", text="t")
ALL_DAY = tuple(range(24))
OFFICE = tuple(range(8, 18))  # 08-17


def k8s(name: str) -> Workload:
    ns, short = name.split("/")
    return Workload(name=name, kind="kubernetes", namespace=ns, selector={"app": short})


ZONES = {"shop/db": "data", "ops/backup": "management", "shop/api": "app", "shop/front": "internet-facing"}
POLICY = Policy(
    workloads=tuple(k8s(w) for w in ZONES),
    segments=(Segment(name="data", trust=90, members=("shop/db",)),
              Segment(name="management", trust=80, members=("ops/backup",)),
              Segment(name="app", trust=50, members=("shop/api",)),
              Segment(name="internet-facing", trust=20, members=("shop/front",))),
    assignments=tuple(ZoneAssignment(workload=w, zone=z, reason="t") for w, z in ZONES.items()),
    rules=(AllowRule(id="AR-api-db", sources=("shop/api",), destinations=("shop/db",), protocol="TCP",
                     ports=("5432",), justification=J),
           AllowRule(id="AR-backup-db", sources=("ops/backup",), destinations=("shop/db",), protocol="TCP",
                     ports=("5432",), justification=J),
           AllowRule(id="AR-front-api", sources=("shop/front",), destinations=("shop/api",), protocol="TCP",
                     ports=("8080",), justification=J)),
)  # management has no inbound rule: nothing to enforce there, so no observation blocker


def edge(s: str, d: str, port: int, *, hours: tuple[int, ...], flows: int = 50, days: int = 7,
         denied: int = 0) -> Edge:
    return Edge(source=s, destination=d, protocol="TCP", port=port, flows=flows, denied_flows=denied, days=days,
                hours=hours, first_seen=T0, last_seen=T1)


def busy(hours: tuple[int, ...] = ALL_DAY, days: int = 7) -> list[Edge]:
    """The estate's steady traffic: the API all day into the data tier, the front end into the API."""
    return [edge("shop/api", "shop/db", 5432, hours=hours, days=days),
            edge("shop/front", "shop/api", 8080, hours=hours, days=days)]


BACKUP = edge("ops/backup", "shop/db", 5432, hours=(2,), flows=50, days=1)  # a weekly job at 02


def plan(edges: list[Edge], findings: tuple[Finding, ...] = (), unresolved: float = 0.0) -> RolloutPlan:
    return plan_rollout(POLICY, edges, findings, unresolved_share=unresolved)


def seg(p: RolloutPlan, name: str) -> SegmentReadiness:
    return next(s for s in p.order if s.segment == name)


def test_order_is_data_tier_first() -> None:
    assert [s.segment for s in plan(busy()).order] == ["data", "management", "app", "internet-facing"]


def test_every_segment_ready_after_a_clean_week() -> None:
    p = plan(busy())
    assert p.capture_hours == ALL_DAY
    assert [(s.segment, s.ready, s.blockers) for s in p.order if s.segment != "management"] == [
        ("data", True, ()), ("app", True, ()), ("internet-facing", True, ())]
    assert seg(p, "data").observed_days == 7 and seg(p, "data").inbound_rules == 2


@pytest.mark.parametrize(("days", "blocked"), [(6, True), (7, False)])
def test_days_blocker(days: int, blocked: bool) -> None:
    data = seg(plan(busy(days=days)), "data")
    assert data.observed_days == days
    assert data.ready is not blocked
    assert data.blockers == (("traffic into it seen on 6 of the 7 days the flow logs span; at least 7 needed to see "
                              "weekly jobs - if the logs covered it all along, it is quiet on the other days: "
                              "confirm, then proceed",) if blocked else ())


def test_logs_spanning_fewer_days_than_needed_say_so() -> None:
    """Records from Monday to Wednesday only: the logs themselves are too short, whatever the segment does."""
    short = [e.model_copy(update={"days": 3, "last_seen": datetime(2026, 11, 4, 23, tzinfo=UTC)}) for e in busy()]
    data = seg(plan(short), "data")
    assert data.blockers == ("observed for 3 day(s); at least 7 needed to see weekly jobs",)


def test_days_are_the_longest_edge_window_and_ignore_denied_only_edges() -> None:
    edges = [edge("shop/api", "shop/db", 5432, hours=ALL_DAY, days=3), BACKUP,
             edge("shop/front", "shop/db", 5432, hours=ALL_DAY, flows=0, denied=9, days=7)]
    data = seg(plan(edges), "data")
    assert data.observed_days == 3
    assert data.blockers[0].startswith("traffic into it seen on 3 of the 7 days the flow logs span; at least 7 ")


def test_segment_without_inbound_rules_is_not_blocked_by_observation() -> None:
    mgmt = seg(plan(busy(OFFICE, days=2)), "management")
    assert (mgmt.inbound_rules, mgmt.observed_days, mgmt.ready) == (0, 0, True)


def test_high_findings_block_their_destination_segment_only() -> None:
    findings = (Finding(id="MS101", severity="high", message="m", source="shop/front", destination="shop/db"),
                Finding(id="MS102", severity="critical", message="m", source="shop/front", destination="shop/db"),
                Finding(id="MS103", severity="medium", message="m", source="shop/db", destination="shop/api"))
    p = plan(busy(), findings)
    assert seg(p, "data").open_findings == 2
    assert seg(p, "data").blockers == ("2 open high-severity finding(s) into this segment: MS101, MS102",)
    assert (seg(p, "app").open_findings, seg(p, "app").ready) == (0, True)  # medium is not a blocker


@pytest.mark.parametrize(("share", "blocked"), [(0.06, True), (0.05, False)])
def test_unresolved_share_blocker(share: float, blocked: bool) -> None:
    p = plan(busy(), unresolved=share)
    expected = ("6.0% of flows are unresolved (at most 5% before enforcing)",) if blocked else ()
    assert [(s.segment, s.blockers) for s in p.order if s.inbound_rules] == [("data", expected), ("app", expected)]
    assert seg(p, "data").unresolved_share == share


def test_office_hours_capture_blocks_every_segment_with_inbound_rules() -> None:
    p = plan(busy(OFFICE))
    assert p.capture_hours == OFFICE
    blocker = ("flow records in 10 of 24: none in UTC 00-07, 18-23: traffic at those hours (nightly jobs, "
               "backups) was never observed - a logging gap, or nothing runs then; confirm before enforcing")
    assert {s.segment: s.blockers for s in p.order} == {
        "data": (blocker,), "management": (), "app": (blocker,), "internet-facing": ()}
    # internet-facing has no inbound rule in this policy (the internet's side is not modelled here)


def test_capture_covering_the_whole_day_is_not_a_blocker() -> None:
    p = plan(busy(ALL_DAY))
    assert p.capture_hours == ALL_DAY and all(s.ready for s in p.order)


def test_capture_hours_count_denied_records_too() -> None:
    night = tuple(h for h in ALL_DAY if h not in OFFICE)
    scan = edge("shop/front", "shop/db", 22, hours=night, flows=0, denied=40)
    p = plan([*busy(OFFICE), scan])
    assert p.capture_hours == ALL_DAY
    assert seg(p, "data").ready


def test_no_observed_edge_gives_no_capture_blocker() -> None:
    declared = Edge(source="shop/api", destination="shop/db", protocol="TCP", port=5432,
                    origin="declared")
    p = plan([declared])
    assert p.capture_hours == ()
    assert seg(p, "data").blockers == ("observed for 0 day(s); at least 7 needed to see weekly jobs",)


def test_backup_at_02_is_scheduled_when_the_capture_covers_the_day() -> None:
    p = plan([*busy(ALL_DAY), BACKUP])
    data = seg(p, "data")
    assert data.watch_hours == (2,)
    assert data.scheduled == ("ops/backup -> shop/db TCP/5432 at UTC 02 on 1 day(s)",)
    assert data.ready  # listed, not a blocker
    assert [(s.segment, s.watch_hours, s.scheduled) for s in p.order if s.segment != "data"] == [
        ("management", (), ()), ("app", (), ()), ("internet-facing", (), ())]


def test_backup_is_not_scheduled_when_the_capture_covers_only_8_hours() -> None:
    p = plan([*busy(tuple(range(0, 8))), BACKUP])
    assert len(p.capture_hours) == 8
    assert (seg(p, "data").watch_hours, seg(p, "data").scheduled) == ((), ())


def test_scheduled_takes_two_hours_not_three_and_joins_the_watch_hours() -> None:
    two = edge("ops/backup", "shop/db", 5432, hours=(1, 23), days=7)
    three = edge("shop/front", "shop/api", 8080, hours=(3, 4, 5), days=7)
    p = plan([edge("shop/api", "shop/db", 5432, hours=ALL_DAY), two, three])
    assert seg(p, "data").watch_hours == (1, 23)
    assert seg(p, "data").scheduled == ("ops/backup -> shop/db TCP/5432 at UTC 01, 23 on 7 day(s)",)
    assert seg(p, "app").scheduled == ()


def test_sparse_or_denied_edges_are_not_scheduled_dependencies() -> None:
    sparse = edge("ops/backup", "shop/db", 5432, hours=(4,), flows=4, days=1)  # too few records to tell
    lateral = edge("shop/front", "shop/db", 5432, hours=(3,), flows=80, days=1)  # no rule: denied by the plan
    denied_only = edge("ops/backup", "shop/db", 5432, hours=(5,), flows=0, denied=60)
    for extra in (sparse, lateral, denied_only):
        data = seg(plan([*busy(ALL_DAY), extra]), "data")
        assert (data.watch_hours, data.scheduled) == ((), ()), extra
    data = seg(plan([*busy(ALL_DAY), sparse.model_copy(update={"flows": 5})]), "data")
    assert data.watch_hours == (4,)


@pytest.mark.parametrize(("hours", "text"), [
    ((), ""), ((2,), "02"), ((22, 23), "22-23"), ((0, 1, 2, 3, 4, 5, 22, 23), "00-05, 22-23"),
    ((5, 0, 2, 3, 2), "00, 02-03, 05"), (ALL_DAY, "00-23")])
def test_hour_ranges(hours: tuple[int, ...], text: str) -> None:
    assert hour_ranges(hours) == text


def test_capture_text() -> None:
    assert capture_text(ALL_DAY) == "24 of 24"
    assert capture_text(tuple(range(6, 24))) == "18 of 24: none in UTC 00-05"
    assert capture_text(tuple(range(1, 22))) == "21 of 24: none in UTC 00, 22-23"
    assert capture_text(()) == "0 of 24: none in UTC 00-23"


def view(edges: list[Edge]) -> PlanView:
    return PlanView(policy=POLICY, edges=tuple(edges), findings=(), matrix=(), rollout=plan(edges),
                    validation=validate(POLICY, edges, now=T1),
                    coverage=CoverageView(records=1, resolved_records=1, total_bytes=1, resolved_bytes=1, unoriented=0,
                                          top_unresolved=()),
                    ingest=IngestView(files=1, lines=1, records=1, skipped=0, bad=0))


def test_rollout_md_renders_capture_watch_and_scheduled() -> None:
    text = rollout_md(view([*busy(ALL_DAY), BACKUP]))
    assert "  - Today: records in every hour of the day (UTC): 24 of 24.\n" in text
    assert "| data | 90 | 1 | 2 | 7 | 0 | 02 | ready |" in text
    assert "| app | 50 | 1 | 1 | 7 | 0 | - | ready |" in text
    assert "| segment | trust | workloads | inbound rules | days observed | open findings | watch (UTC) | " \
           "status today |" in text
    section = text[text.index("## Scheduled-looking dependencies"):]
    assert "- **data** (watch UTC 02, observed for 7 day(s)):\n  - ops/backup -\\> shop/db TCP/5432 at UTC 02 " \
           "on 1 day(s)" in section
    assert "1 of 7: a weekly job" in section and "48 h watch" in section
    assert "**app**" not in section


def test_rollout_md_names_the_missing_hours() -> None:
    text = rollout_md(view([*busy((6, 7, 8, 9, 20, 21)), BACKUP]))
    assert "  - Today: records in every hour of the day (UTC): 7 of 24: none in UTC 00-01, 03-05, 10-19, " \
           "22-23.\n" in text
    assert "| data | 90 | 1 | 2 | 7 | 0 | - | not ready: flow records in 7 of 24: none in UTC 00-01, 03-05, " \
           "10-19, 22-23: traffic at those hours" in text
    assert "## Scheduled-looking dependencies\n\nNone: " in text  # 7 hours covered: too few to tell a schedule
