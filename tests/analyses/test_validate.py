"""validate: violations and blast radius on policies whose answer is known by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from microseg.analyses.synthesis import synthesize
from microseg.analyses.validate import blast_radius, validate
from microseg.analyses.zones import default_guardrails
from microseg.ir.model import AllowRule, Edge, Justification, PolicyException

from .test_synthesis import EDGES, INV, T1

J = Justification(kind="observed", text="t")


def planned():  # type: ignore[no-untyped-def]
    return synthesize(INV, EDGES, guardrails=default_guardrails()).policy


def test_synthesised_plan_passes_and_blocks_the_lateral_movement() -> None:
    res = validate(planned(), EDGES, now=T1)
    assert res.ok, res.violations
    blocked = {(f.source, f.destination) for f in res.info if f.id == "MS204"}
    assert ("shop/front", "shop/db") in blocked and ("dev/api", "shop/api") in blocked


def test_rule_breaking_a_guardrail_is_a_violation() -> None:
    p = planned()
    bad = AllowRule(id="AR-bad", sources=("shop/front",), destinations=("shop/db",), protocol="TCP",
                    ports=("5432",), justification=J)
    res = validate(p.model_copy(update={"rules": p.rules + (bad,)}), now=T1)
    assert [(f.id, f.source, f.destination) for f in res.violations] == [("MS201", "shop/front", "shop/db")]


def test_observed_flow_that_would_break_is_a_violation() -> None:
    p = planned()
    new = Edge(source="shop/api", destination="ai/llm", protocol="TCP", port=8000, flows=10, days=3)
    res = validate(p, [*EDGES, new], now=T1)
    assert [(f.id, f.destination) for f in res.violations] == [("MS203", "ai/llm")]
    assert validate(p, [*EDGES, new], now=T1, segment="data").ok  # other segments only


def test_expired_exception() -> None:
    p = planned()
    x = PolicyException(rule=AllowRule(id="EX-1", sources=("shop/front",), destinations=("shop/db",), protocol="TCP",
                                       ports=("5432",), justification=J), guardrail="GR-internet-to-data",
                        approver="bob", reason="r", expires=datetime(2026, 1, 1, tzinfo=UTC))
    res = validate(p.model_copy(update={"exceptions": (x,)}), now=T1)
    assert [f.id for f in res.violations] == ["MS202"]
    assert validate(p.model_copy(update={"exceptions": (x,)}), now=datetime(2025, 1, 1, tzinfo=UTC)).ok


def test_plan_allowing_what_is_denied_today_is_flagged() -> None:
    p = planned()
    scan = Edge(source="shop/front", destination="shop/api", protocol="TCP", port=80, flows=0, denied_flows=3)
    res = validate(p, [scan], now=T1)
    assert [(f.id, f.source) for f in res.warnings] == [("MS206", "shop/front")]
    assert "today's controls deny (3 denied attempt(s))" in res.warnings[0].message


def test_plan_allowing_what_nothing_answered_says_so() -> None:
    """Unanswered attempts were let through, not denied: the warning must not claim the controls deny them."""
    p = planned()
    dead = Edge(source="shop/front", destination="shop/api", protocol="TCP", port=80, flows=0, denied_flows=5,
                unanswered=5)
    [w] = validate(p, [dead], now=T1).warnings
    assert w.id == "MS206"
    assert "nothing answered today (5 let through but never answered)" in w.message
    assert "deny" not in w.message
    mixed = dead.model_copy(update={"denied_flows": 7})
    [w] = validate(p, [mixed], now=T1).warnings
    assert "today's controls deny or nothing answered (2 denied attempt(s), 5 let through but never answered)" \
        in w.message


def test_blast_radius_flat_vs_plan() -> None:
    p = planned()
    radius = {b.workload: b for b in blast_radius(p)}
    internal = [w for w in INV.workloads if w.kind.value != "external"]
    # 8 internal workloads + the synthesised kube-dns resolver
    assert radius["shop/front"].flat == len(internal)
    assert radius["shop/front"].direct == 2  # api and DNS
    assert radius["shop/front"].transitive == 3  # api, DNS, and db through api
    assert radius["shop/db"].direct == 1  # DNS only
