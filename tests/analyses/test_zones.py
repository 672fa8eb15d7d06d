"""Zone proposals for hosts and managed services: what a CMDB, an EC2 export and the flows say about them.

Hosts read from a CMDB or an EC2 export carry no image and no listening port, so a data store among them is
known only by its role/tier label, by being an RDS interface, or by the ports it accepted connections on.
Without these it was proposed ``app``, and the internet-to-data guardrail did not protect it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microseg.analyses.synthesis import synthesize
from microseg.analyses.zones import assign_zones, default_guardrails, propose
from microseg.ir.model import Edge, Inventory, ListenPort, Settings, Workload

T0 = datetime(2026, 11, 2, tzinfo=UTC)
T1 = datetime(2026, 11, 8, tzinfo=UTC)


def host(name: str, ip: str = "10.0.0.9", **kw: object) -> Workload:
    return Workload(name=name, kind="host", addresses=(ip,), **kw)  # type: ignore[arg-type]


def edge(s: str, d: str, port: int, flows: int = 40, denied: int = 0, proto: str = "TCP") -> Edge:
    return Edge(source=s, destination=d, protocol=proto, port=port, flows=flows, denied_flows=denied, days=7,  # type: ignore[arg-type]
                first_seen=T0, last_seen=T1)


def zone_of(workloads: list[Workload], edges: list[Edge], name: str) -> tuple[str, str]:
    _, assignments = assign_zones(workloads, edges)
    return next((a.zone, a.reason) for a in assignments if a.workload == name)


@pytest.mark.parametrize(("labels", "why"), [
    ({"role": "postgres-primary"}, "role=postgres-primary"),  # a CMDB role column
    ({"tier": "db"}, "tier=db"),  # EC2 Tier tag
    ({"role": "Database"}, "role=Database"),
    ({"tier": "data"}, "tier=data"),
    ({"app.kubernetes.io/component": "database"}, "app.kubernetes.io/component=database"),
    ({"role": "redis_cache"}, "role=redis_cache"),
    ({"role": "MongoDB"}, "role=MongoDB"),
])
def test_a_label_naming_a_data_store_puts_the_host_in_data(labels: dict[str, str], why: str) -> None:
    zone, reason = propose(host("db-01", labels=labels), set())
    assert zone == "data"
    assert why in reason


@pytest.mark.parametrize("labels", [
    {"role": "web"}, {"tier": "frontend"}, {"role": "postgres-exporter"}, {"role": "dbadmin-laptop"},
    {"owner": "db-team"},  # not a role/tier/component label
])
def test_other_labels_do_not(labels: dict[str, str]) -> None:
    assert propose(host("h-01", labels=labels), set())[0] == "app"


def test_a_host_without_declared_ports_is_known_by_the_ports_it_served() -> None:
    db, app = host("db-01", "10.0.0.5"), host("app-01", "10.0.0.6")
    edges = [edge("app-01", "db-01", 5432), edge("db-01", "app-01", 8080)]
    zone, reason = zone_of([db, app], edges, "db-01")
    assert zone == "data"
    assert "PostgreSQL port 5432" in reason and "observed" in reason
    # the client side of a connection says nothing about the client's own role
    assert zone_of([db, app], edges, "app-01")[0] == "app"


def test_declared_ports_win_over_observed_ones() -> None:
    web = host("web-01", ports=(ListenPort(port=8443),))
    assert zone_of([web], [edge("x", "web-01", 5432)], "web-01")[0] == "app"


def test_denied_attempts_and_icmp_are_not_served_ports() -> None:
    h = host("h-01")
    edges = [edge("x", "h-01", 5432, flows=0, denied=9), edge("x", "h-01", 3306, proto="ICMP")]
    assert zone_of([h], edges, "h-01")[0] == "app"


def test_an_internet_exposed_host_serving_a_data_port_stays_internet_facing() -> None:
    h = host("h-01", exposure="internet", exposure_reason="public IP 203.0.113.9")
    assert zone_of([h], [edge("x", "h-01", 5432)], "h-01")[0] == "internet-facing"


def test_an_rds_interface_is_a_database() -> None:
    rds = Workload(name="rds-eni-0abc", kind="managed-service", addresses=("10.0.3.7",))
    assert propose(rds, set()) == ("data", "Amazon RDS database (its network interface)")
    nat = Workload(name="nat-0abc", kind="managed-service", addresses=("10.0.3.8",))
    assert propose(nat, set())[0] == "app"


def test_the_internet_to_data_guardrail_now_covers_a_cmdb_database() -> None:
    """The point of the zone: a web host straight to a CMDB database is a guardrail finding, not a rule."""
    inv = Inventory(workloads=(
        host("web-01", "10.0.1.10", exposure="internet", exposure_reason="public IP"),
        host("db-01", "10.0.2.20", labels={"role": "oracle-db"}),
        host("app-01", "10.0.1.30"),
        Workload(name="external:internet", kind="external", addresses=("0.0.0.0/0",)),  # type: ignore[arg-type]
    ))
    edges = [edge("external:internet", "web-01", 443), edge("web-01", "app-01", 8080),
             edge("app-01", "db-01", 1521), edge("web-01", "db-01", 1521, flows=3)]
    res = synthesize(inv, edges, guardrails=default_guardrails(), settings=Settings(min_flows=1, min_days=1))
    assert ("MS101", "web-01", "db-01") in {(f.id, f.source, f.destination) for f in res.findings}
    allowed = {(r.sources, r.destinations) for r in res.policy.all_rules()}
    assert (("app-01",), ("db-01",)) in allowed
    assert (("web-01",), ("db-01",)) not in allowed
