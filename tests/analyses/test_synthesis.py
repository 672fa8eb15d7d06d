"""Zones, synthesis and guardrails on a small hand-built estate whose right answer is known."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from microseg.analyses.synthesis import DEFAULT_DNS, rule_id, synthesize
from microseg.analyses.zones import assign_zones, default_guardrails, propose
from microseg.ir.model import Dependency, Edge, Inventory, ListenPort, PolicyException, Settings, Workload
from microseg.ir.semantics import Evaluator

T0 = datetime(2026, 11, 2, tzinfo=UTC)
T1 = datetime(2026, 11, 8, tzinfo=UTC)


def k8s(name: str, **kw: object) -> Workload:
    ns, short = name.split("/")
    return Workload(name=name, kind="kubernetes", namespace=ns, selector={"app": short}, **kw)  # type: ignore[arg-type]


INV = Inventory(workloads=(
    k8s("shop/front", exposure="internet", exposure_reason="Ingress shop/web", environment="prod"),
    k8s("shop/api", environment="prod"),
    k8s("shop/db", images=("docker.io/library/postgres:16",), ports=(ListenPort(port=5432),), environment="prod"),
    k8s("ai/llm", images=("vllm/vllm-openai:v0.6",), environment="prod"),
    k8s("ai/qdrant", images=("qdrant/qdrant:v1.9",), environment="prod"),
    k8s("ai/assistant", environment="prod"),
    k8s("dev/api", environment="dev"),
    Workload(name="bastion-1", kind="host", addresses=("10.20.0.10",), ports=(ListenPort(port=22),),
             declared=(Dependency(destination="shop/db", port=5432, reason="backup"),)),
    Workload(name="external:internet", kind="external", addresses=("0.0.0.0/0",)),
))


def edge(s: str, d: str, port: int, flows: int = 50, days: int = 7, proto: str = "TCP", denied: int = 0) -> Edge:
    return Edge(source=s, destination=d, protocol=proto, port=port, flows=flows, days=days, denied_flows=denied,
                first_seen=T0, last_seen=T1)


EDGES = [
    edge("external:internet", "shop/front", 8080),
    edge("shop/front", "shop/api", 80),
    edge("shop/front", "shop/api", 8080),
    edge("shop/api", "shop/db", 5432),
    edge("shop/front", "shop/db", 5432, flows=3, days=1),  # lateral movement
    edge("dev/api", "shop/api", 80),  # dev -> prod
    edge("shop/api", "shop/front", 22, flows=0, denied=4),  # blocked scan
    edge("ai/assistant", "ai/llm", 8000),
    edge("ai/assistant", "ai/qdrant", 6333, days=1, flows=2),
    edge("shop/api", "kube-system/kube-dns", 53, proto="UDP"),
]


def test_zone_proposals_have_reasons() -> None:
    _, assignments = assign_zones(list(INV.workloads), EDGES)
    zones = {a.workload: (a.zone, a.reason) for a in assignments}
    assert zones["shop/db"][0] == "data" and "postgres" in zones["shop/db"][1]
    assert zones["shop/front"][0] == "internet-facing"
    assert zones["ai/llm"][0] == "ai-inference"
    assert zones["ai/qdrant"][0] == "ai-data"
    assert zones["ai/assistant"][0] == "ai-agents"
    assert zones["bastion-1"][0] == "management"
    assert zones["shop/api"][0] == "app"
    assert zones["dev/api"][0] == "dev"
    assert zones["external:internet"][0] == "external"


def test_override_wins() -> None:
    w = k8s("shop/api", zone="data")
    _, a = assign_zones([w])
    assert (a[0].zone, a[0].overridden) == ("data", True)


def test_exporter_is_not_a_database() -> None:
    assert propose(k8s("ops/x", images=("prom/redis-exporter:v1",)), set())[0] == "app"


def test_synthesis_rules_and_findings() -> None:
    res = synthesize(INV, EDGES, guardrails=default_guardrails(), settings=Settings(min_flows=1, min_days=1))
    rules = {(r.sources, r.destinations, r.protocol.value): [str(p) for p in r.ports] for r in res.policy.rules}
    # merged ports, one rule per triple
    assert rules[(("shop/front",), ("shop/api",), "TCP")] == ["80", "8080"]
    assert rules[(("shop/api",), ("shop/db",), "TCP")] == ["5432"]
    assert rules[(("external:internet",), ("shop/front",), "TCP")] == ["8080"]
    # guardrail breakers, blocked scans and DNS are not per-edge rules
    assert (("shop/front",), ("shop/db",), "TCP") not in rules
    assert (("dev/api",), ("shop/api",), "TCP") not in rules
    assert (("shop/api",), ("shop/front",), "TCP") not in rules
    assert (("shop/api",), ("kube-system/kube-dns",), "UDP") not in rules
    # the declared backup from the bastion is codified although never observed
    backup = [r for r in res.policy.rules if r.sources == ("bastion-1",)]
    assert len(backup) == 1 and backup[0].justification.kind == "declared"
    # DNS is an explicit infrastructure allowance, to the conventional resolver when none is inventoried
    dns = [r for r in res.policy.rules if r.justification.kind == "infrastructure"]
    assert {r.protocol.value for r in dns} == {"UDP", "TCP"}
    assert all(r.destinations == (DEFAULT_DNS.name,) for r in dns)
    assert "shop/api" in dns[0].sources and "dev/api" in dns[0].sources
    ids = {(f.id, f.source, f.destination) for f in res.findings}
    assert ("MS101", "shop/front", "shop/db") in ids
    assert ("MS101", "dev/api", "shop/api") in ids
    assert ("MS102", "shop/api", "shop/front") in ids
    gr = {f.message.split("guardrail ")[1].split(" ")[0] for f in res.findings if f.id == "MS101"}
    assert gr == {"GR-internet-to-data", "GR-dev-to-prod"}


def test_thresholds_turn_rare_edges_into_findings() -> None:
    res = synthesize(INV, EDGES, guardrails=default_guardrails(), settings=Settings(min_flows=5, min_days=2))
    assert not any(r.destinations == ("ai/qdrant",) for r in res.policy.rules)
    assert any(f.id == "MS104" and f.destination == "ai/qdrant" for f in res.findings)


def test_exception_codifies_the_flow() -> None:
    base = synthesize(INV, EDGES, guardrails=default_guardrails())
    lateral = next(f for f in base.findings if f.id == "MS101" and f.source == "shop/front")
    assert "exceptions.yaml" in lateral.suggestion
    from microseg.ir.model import AllowRule, Justification

    exc = PolicyException(rule=AllowRule(id="EX-1", sources=("shop/front",), destinations=("shop/db",),
                                         protocol="TCP", ports=("5432",),
                                         justification=Justification(kind="exception", text="approved")),
                          guardrail="GR-internet-to-data", approver="alice", reason="migration", expires=T1)
    res = synthesize(INV, EDGES, guardrails=default_guardrails(), exceptions=[exc])
    assert not any(f.id == "MS101" and f.source == "shop/front" for f in res.findings)
    assert Evaluator(res.policy).decide("shop/front", "shop/db", "TCP", 5432).rule_ids == ("EX-1",)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", [1, -1])
def test_output_independent_of_input_order(order: int) -> None:
    a = synthesize(INV, EDGES, guardrails=default_guardrails())
    inv2 = INV.model_copy(update={"workloads": tuple(reversed(INV.workloads))})
    b = synthesize(inv2, EDGES[::order], guardrails=tuple(reversed(default_guardrails())))
    assert a.policy.rules == b.policy.rules and a.findings == b.findings
    assert a.policy.assignments == b.policy.assignments


def test_rule_ids_are_stable() -> None:
    from microseg.ir.model import Protocol

    tcp, udp = Protocol.TCP, Protocol.UDP
    assert rule_id("a/b", "c/d", tcp) == "AR-" + hashlib.sha256(b"a/b|c/d|TCP").hexdigest()[:10]
    assert rule_id("a/b", "c/d", tcp) != rule_id("a/b", "c/d", udp)


def test_guardrails_are_checked_per_port() -> None:
    """An SSH probe on a pair must not take the pair's legitimate port out of the policy (nor the reverse)."""
    res = synthesize(INV, [*EDGES, edge("shop/front", "shop/api", 22, flows=2, days=1)],
                     guardrails=default_guardrails())
    ports = {str(p) for r in res.policy.rules if r.sources == ("shop/front",) and r.destinations == ("shop/api",)
             for p in r.ports}
    assert ports == {"80", "8080"}
    assert any(f.id == "MS101" and f.destination == "shop/api" and f.port == 22 for f in res.findings)


def test_admin_interfaces_of_ai_platforms_are_admin_ports() -> None:
    """The Ray dashboard/Jobs API (8265) runs code on the cluster: only management may reach it."""
    inv = INV.model_copy(update={"workloads": (*INV.workloads, k8s("ai/ray", images=("rayproject/ray:2.40",)))})
    res = synthesize(inv, [edge("shop/api", "ai/ray", 8265)], guardrails=default_guardrails())
    assert not any(r.destinations == ("ai/ray",) for r in res.policy.rules)
    assert any(f.id == "MS101" and "GR-admin-from-management" in f.message for f in res.findings)
