"""Hosts from an AWS EC2 export and from a CMDB CSV, end to end through `plan` and `validate`.

Issue 3 asks that hosts and VMs flow through zones, synthesis and validation exactly as Kubernetes
workloads do. The bundled example's hosts come from a native inventory, so here each of the two
other host inventories (``describe-instances`` JSON, a CMDB CSV) is planned with a few VPC flow-log
lines: a host's zone comes from what its reader read (a public IP, a ``Role`` tag, the CMDB's
``zone`` and ``environment`` columns), an observed host-to-host dependency becomes an allow rule in
the host back ends' output (nftables host files, AWS security groups), and a lateral move seen in
the same flows is reported, not codified, and denied by the policy that validates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from microseg.config import PlanConfig
from microseg.ir.semantics import Evaluator
from microseg.pipeline import PlanOutcome, plan, validate_policy

DAY0 = int(datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp())
TARGETS = ("nftables", "aws_sg")


def vpc_lines(flows: list[tuple[str, str, int, str]], days: int = 3) -> str:
    """AWS VPC flow log, version 2 default format: one record per (src, dst, port, action) and day."""
    out = []
    for day in range(days):
        t = DAY0 + day * 86_400
        for i, (src, dst, port, action) in enumerate(flows):
            out.append(f"2 123456789012 eni-0abc {src} {dst} {40000 + i} {port} 6 10 840 {t + i} {t + i + 30} "
                       f"{action} OK")
    return "\n".join(out) + "\n"


def zones_of(out: PlanOutcome) -> dict[str, str]:
    zones = yaml.safe_load((out.out_dir / "zones.yaml").read_text())["zones"]
    return {m["workload"]: z["name"] for z in zones for m in z["members"]}


def host_file(out: PlanOutcome, host: str) -> str:
    return (out.out_dir / "enforce" / "nftables" / "hosts" / f"{host}.nft").read_text()


def input_chain(nft: str) -> str:
    return nft.split("chain input {", 1)[1].split("\n\t}", 1)[0]


def security_group_rules(out: PlanOutcome) -> list[dict[str, object]]:
    """Every ingress rule resource in the aws_sg target's Terraform JSON."""
    rules: list[dict[str, object]] = []
    for f in sorted((out.out_dir / "enforce" / "aws_sg").rglob("*.json")):
        doc = json.loads(f.read_text())
        for resource in doc.get("resource", {}).get("aws_vpc_security_group_ingress_rule", {}).values():
            rules.append(resource)
    return rules


def check_validation(out: PlanOutcome, inventory: list[Path], flows: Path) -> None:
    assert out.view.validation.ok, out.view.validation.violations
    again = validate_policy(out.out_dir / "policy", inventory_paths=inventory, flows=[str(flows)]).result
    assert again.ok, again.violations
    assert again.edges_checked == len([e for e in out.view.edges if e.flows > 0]) > 0


# -- AWS describe-instances ------------------------------------------------------------------------------


def instance(iid: str, name: str, ip: str, *, secondary: str | None = None, public: str | None = None,
             tags: dict[str, str] | None = None) -> dict[str, object]:
    addresses: list[dict[str, object]] = [{"PrivateIpAddress": ip, "Primary": True}]
    if secondary:
        addresses.append({"PrivateIpAddress": secondary, "Primary": False})
    if public:
        addresses[0]["Association"] = {"PublicIp": public}
    return {
        "InstanceId": iid, "State": {"Name": "running"}, "VpcId": "vpc-0prod", "SubnetId": "subnet-0a",
        "PrivateIpAddress": ip, **({"PublicIpAddress": public} if public else {}),
        "Tags": [{"Key": k, "Value": v} for k, v in {"Name": name, "Env": "prod", **(tags or {})}.items()],
        "SecurityGroups": [{"GroupId": f"sg-{name}", "GroupName": name}],
        "NetworkInterfaces": [{"NetworkInterfaceId": f"eni-{iid[2:]}", "PrivateIpAddresses": addresses,
                               "Groups": [{"GroupId": f"sg-{name}", "GroupName": name}]}],
    }


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlanOutcome, list[Path], Path]:
    d = tmp_path_factory.mktemp("aws")
    inv = d / "inventory"
    inv.mkdir()
    (inv / "describe-instances.json").write_text(json.dumps({"Reservations": [{"Instances": [
        instance("i-0web", "web-1", "10.0.1.10", public="203.0.113.10", tags={"Tier": "web"}),
        # the app server's flows use its secondary private IP: it must resolve to app-1 too
        instance("i-0app", "app-1", "10.0.2.20", secondary="10.0.2.21", tags={"Tier": "app"}),
        instance("i-0ops", "ops-1", "10.0.9.5", tags={"Role": "bastion"}),
    ]}]}, indent=2))
    flows = d / "flows.log"
    flows.write_text(vpc_lines([
        ("10.0.1.10", "10.0.2.21", 8080, "ACCEPT"),   # web -> app: the dependency
        ("10.0.9.5", "10.0.2.20", 22, "ACCEPT"),      # bastion -> app SSH: admin from management
        ("10.0.1.10", "10.0.2.20", 22, "ACCEPT"),     # web -> app SSH: a lateral move
    ]))
    out = plan([inv], [str(flows)], d / "out", config=PlanConfig(targets=TARGETS))
    return out, [inv], flows


def test_aws_hosts_get_zones_from_their_tags_and_addresses(aws: tuple[PlanOutcome, list[Path], Path]) -> None:
    placed = zones_of(aws[0])
    assert placed["web-1"] == "internet-facing"  # public IP
    assert placed["ops-1"] == "management"  # by its Role=bastion tag alone (the name says nothing)
    assert placed["app-1"] == "app"
    assert {e.key for e in aws[0].view.edges if e.flows > 0} == {
        ("web-1", "app-1", "TCP", 8080), ("ops-1", "app-1", "TCP", 22), ("web-1", "app-1", "TCP", 22)}


def test_aws_dependency_is_a_host_rule_and_the_lateral_move_is_not(aws: tuple[PlanOutcome, list[Path], Path]) -> None:
    out = aws[0]
    ev = Evaluator(out.view.policy)
    assert ev.decide("web-1", "app-1", "TCP", 8080).allowed
    assert ev.decide("ops-1", "app-1", "TCP", 22).allowed
    assert not ev.decide("web-1", "app-1", "TCP", 22).allowed
    assert ("MS101", "web-1", "app-1", 22) in {(f.id, f.source, f.destination, f.port) for f in out.view.findings}
    # nftables: app-1's host firewall admits web-1 on 8080 and the bastion on 22, web-1 on nothing else
    app_in = input_chain(host_file(out, "app-1"))
    assert "ip saddr @v4_web-1 tcp dport 8080 accept" in app_in
    assert "ip saddr @v4_ops-1 tcp dport 22 accept" in app_in
    assert "ip saddr @v4_web-1 tcp dport 22" not in app_in
    web = host_file(out, "web-1")
    assert "ip daddr @v4_app-1 tcp dport 8080 accept" in web
    assert "elements = { 10.0.2.20/31 }" in web  # app-1's set: its primary and its secondary IP
    # AWS security groups: app-1's group admits web-1's group on 8080 only
    from_web = [r for r in security_group_rules(out) if "sg-app-1" in str(r["security_group_id"])
                and "sg-web-1" in str(r.get("referenced_security_group_id"))]
    assert [(r["from_port"], r["to_port"]) for r in from_web] == [(8080, 8080)]


def test_aws_plan_validates(aws: tuple[PlanOutcome, list[Path], Path]) -> None:
    check_validation(*aws)


# -- CMDB CSV --------------------------------------------------------------------------------------------


CMDB = """\
Hostname,IP Address,Subnet,VLAN,Role,Env,Owner,Zone,Rack
erp-01,10.50.1.20,10.50.1.0/24,110,erp,prod,erp-team,,r01
db-01,10.50.2.10;10.50.2.11,10.50.2.0/24,120,postgres,prod,dba-team,data,r12
dev-01,10.60.1.5,10.60.1.0/24,300,erp,test,erp-team,,r40
"""


@pytest.fixture(scope="module")
def cmdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlanOutcome, list[Path], Path]:
    d = tmp_path_factory.mktemp("cmdb")
    inv = d / "inventory"
    inv.mkdir()
    (inv / "cmdb.csv").write_text(CMDB)
    flows = d / "flows.log"
    flows.write_text(vpc_lines([
        ("10.50.1.20", "10.50.2.11", 5432, "ACCEPT"),  # erp -> db (second address): the dependency
        ("10.60.1.5", "10.50.2.10", 5432, "ACCEPT"),   # test host -> prod db: dev-to-prod, a lateral move
    ]))
    out = plan([inv], [str(flows)], d / "out", config=PlanConfig(targets=TARGETS))
    return out, [inv], flows


def test_cmdb_hosts_get_zones_from_their_columns(cmdb: tuple[PlanOutcome, list[Path], Path]) -> None:
    placed = zones_of(cmdb[0])
    assert placed["db-01"] == "data"  # the zone column
    assert placed["dev-01"] == "dev"  # environment test
    assert placed["erp-01"] == "app"
    assert {e.key for e in cmdb[0].view.edges if e.flows > 0} == {
        ("erp-01", "db-01", "TCP", 5432), ("dev-01", "db-01", "TCP", 5432)}


def test_cmdb_dependency_is_a_host_rule_and_the_lateral_move_is_not(
        cmdb: tuple[PlanOutcome, list[Path], Path]) -> None:
    out = cmdb[0]
    ev = Evaluator(out.view.policy)
    assert ev.decide("erp-01", "db-01", "TCP", 5432).allowed
    assert not ev.decide("dev-01", "db-01", "TCP", 5432).allowed
    assert ("MS101", "dev-01", "db-01", 5432) in {(f.id, f.source, f.destination, f.port) for f in out.view.findings}
    db_in = input_chain(host_file(out, "db-01"))
    assert "ip saddr @v4_erp-01 tcp dport 5432 accept" in db_in
    assert "@v4_dev-01" not in db_in
    erp = host_file(out, "erp-01")
    assert "ip daddr @v4_db-01 tcp dport 5432 accept" in erp
    assert "elements = { 10.50.2.10/31 }" in erp  # db-01's set: both of its addresses
    router = (out.out_dir / "enforce" / "nftables" / "router.nft").read_text()
    assert "ip saddr @v4_erp-01 ip daddr @v4_db-01 tcp dport 5432 accept" in router  # app -> data crosses zones
    assert "@v4_dev-01 ip daddr" not in router


def test_cmdb_plan_validates(cmdb: tuple[PlanOutcome, list[Path], Path]) -> None:
    check_validation(*cmdb)
