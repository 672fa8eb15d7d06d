"""AWS EC2 inventories (describe-instances, describe-network-interfaces): exact workloads, bindings
and labels from the fixtures, located errors, name collisions, and an end-to-end synthesis with a
CMDB host."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from microseg.analyses.synthesis import synthesize
from microseg.analyses.zones import default_guardrails
from microseg.errors import InputError
from microseg.ir.model import Edge, Settings, Workload, WorkloadKind
from microseg.sources.inventory import read_inventory
from microseg.sources.inventory.aws_ec2 import safe_label_key, service_name

FIXTURES = Path(__file__).parents[2] / "fixtures/inventory"
INSTANCES = FIXTURES / "describe-instances.json"
ENIS = FIXTURES / "describe-network-interfaces.json"


def copy(tmp_path: Path, *names: str) -> Path:
    for name in names:
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_instances_exact(tmp_path: Path) -> None:
    d = copy(tmp_path, "describe-instances.json")
    res = read_inventory([d])
    f = f"{d}/describe-instances.json"
    hosts = {w.name: w for w in res.inventory.workloads if w.kind is WorkloadKind.HOST}
    assert hosts == {
        "web-1": Workload(
            name="web-1", kind=WorkloadKind.HOST,
            addresses=("10.0.1.10", "10.0.1.11", "2001:db8:1:1::10"),
            labels={"tier": "web", "aws/instance-id": "i-0aaa0000000000001", "aws-sg/sg-0web0000000000001": "web",
                    "aws-tag/Name": "web-1", "aws-tag/Tier": "web", "aws-tag/Env": "prod",
                    "aws-tag/aws-cloudformation-stack-name": "shop"},
            environment="prod", location="vpc-0prod000000000001/subnet-0web0000000000001",
            identity="arn:aws:iam::123456789012:instance-profile/web",
            exposure="internet", exposure_reason=f"public IP 203.0.113.10 in {f}"),
        # Two instances share Name=app: neither gets it, both are named by instance id (never merged).
        "i-0bbb0000000000002": Workload(
            name="i-0bbb0000000000002", kind=WorkloadKind.HOST, addresses=("10.0.2.20", "10.0.9.20"),
            labels={"role": "orders-api", "aws/instance-id": "i-0bbb0000000000002",
                    "aws-sg/sg-0app0000000000001": "app", "aws-sg/sg-0mgmt000000000001": "mgmt",
                    "aws-tag/Name": "app", "aws-tag/Role": "orders-api", "aws-tag/Environment": "prod"},
            environment="prod", location="vpc-0prod000000000001/subnet-0app0000000000001"),
        "i-0ccc0000000000003": Workload(
            name="i-0ccc0000000000003", kind=WorkloadKind.HOST, addresses=("10.0.2.21",),
            labels={"aws/instance-id": "i-0ccc0000000000003", "aws-tag/Name": "app"},
            location="vpc-0prod000000000001/subnet-0app0000000000001"),
    }
    assert {(b.ip, b.workload) for b in res.inventory.bindings} == {
        ("10.0.1.10", "web-1"), ("10.0.1.11", "web-1"), ("2001:db8:1:1::10", "web-1"),
        ("10.0.2.20", "i-0bbb0000000000002"), ("10.0.9.20", "i-0bbb0000000000002"),
        ("10.0.2.21", "i-0ccc0000000000003")}
    # the public IP is not east-west: never bound
    assert all(b.ip != "203.0.113.10" for b in res.inventory.bindings)
    assert all(b.valid_from is None and b.valid_to is None for b in res.inventory.bindings)
    assert res.report.notes == (f"{f}: 1 terminated instance(s) skipped",)


def test_network_interfaces_exact(tmp_path: Path) -> None:
    d = copy(tmp_path, "describe-network-interfaces.json")
    res = read_inventory([d])
    f = f"{d}/describe-network-interfaces.json"
    services = {w.name: w for w in res.inventory.workloads if w.kind is WorkloadKind.SERVICE}
    assert services == {
        "elb-shop-alb-50dc6c495c0c9188": Workload(
            name="elb-shop-alb-50dc6c495c0c9188", kind=WorkloadKind.SERVICE, addresses=("10.0.1.100", "10.0.3.100"),
            labels={"aws-sg/sg-0alb0000000000001": "alb", "aws/interface-type": "interface"},
            location="vpc-0prod000000000001", exposure="internet", exposure_reason=f"public IP 198.51.100.7 in {f}"),
        "rds-eni-0db00000000000001": Workload(
            name="rds-eni-0db00000000000001", kind=WorkloadKind.SERVICE, addresses=("10.0.4.50", "2001:db8:1:4::50"),
            labels={"aws-sg/sg-0db00000000000001": "db", "aws/interface-type": "interface", "tier": "data",
                    "aws-tag/Tier": "data"},
            location="vpc-0prod000000000001/subnet-0data000000000001"),
        "nat-0a1b2c3d4e5f60001": Workload(
            name="nat-0a1b2c3d4e5f60001", kind=WorkloadKind.SERVICE, addresses=("10.0.1.5",),
            labels={"aws/interface-type": "nat_gateway"},
            location="vpc-0prod000000000001/subnet-0web0000000000001"),
        "vpce-0a1b2c3d4e5f60001": Workload(
            name="vpce-0a1b2c3d4e5f60001", kind=WorkloadKind.SERVICE, addresses=("10.0.2.200",),
            labels={"aws-sg/sg-0ep00000000000001": "endpoints", "aws/interface-type": "vpc_endpoint"},
            location="vpc-0prod000000000001/subnet-0app0000000000001"),
    }
    assert {(b.ip, b.workload) for b in res.inventory.bindings} == {
        ("10.0.1.100", "elb-shop-alb-50dc6c495c0c9188"), ("10.0.3.100", "elb-shop-alb-50dc6c495c0c9188"),
        ("10.0.4.50", "rds-eni-0db00000000000001"), ("2001:db8:1:4::50", "rds-eni-0db00000000000001"),
        ("10.0.1.5", "nat-0a1b2c3d4e5f60001"), ("10.0.2.200", "vpce-0a1b2c3d4e5f60001")}
    assert res.report.notes == (
        f"{f}: 1 network interface(s) attached to instances skipped (their addresses come from describe-instances)",
        f"{f}: 1 network interface(s) of no identifiable service skipped")


def test_both_files_bind_each_address_once(tmp_path: Path) -> None:
    d = copy(tmp_path, "describe-instances.json", "describe-network-interfaces.json")
    bindings = read_inventory([d]).inventory.bindings
    ips = [b.ip for b in bindings]
    assert len(ips) == len(set(ips)) and "10.0.1.10" in ips


@pytest.mark.parametrize(("description", "itype", "expected"), [
    ("ELB app/shop-alb/50dc6c495c0c9188", "interface", "elb-shop-alb-50dc6c495c0c9188"),
    ("ELB net/Shop_NLB/0123abcd", "network_load_balancer", "elb-shop-nlb-0123abcd"),
    ("ELB classic-lb", "interface", "elb-classic-lb"),
    ("Interface for NAT Gateway nat-0a1b", "nat_gateway", "nat-0a1b"),
    ("VPC Endpoint Interface vpce-0a1b", "vpc_endpoint", "vpce-0a1b"),
    ("AWS Lambda VPC ENI-resize-images-4f2c", "lambda", "lambda-resize-images-4f2c"),
    ("RDSNetworkInterface", "interface", "rds-eni-0x"),
    ("ElastiCache cache-01", "interface", "aws-elasticache-cache-01"),
    ("", "transit_gateway", "transit-gateway-eni-0x"),
])
def test_service_names(description: str, itype: str, expected: str) -> None:
    assert service_name(description, itype, "eni-0x") == expected


def test_safe_label_key() -> None:
    assert safe_label_key("aws-tag", "aws:cloudformation:stack-name") == "aws-tag/aws-cloudformation-stack-name"
    assert safe_label_key("aws-tag", "Cost Center") == "aws-tag/Cost-Center"
    assert safe_label_key("aws-tag", "::") == ""
    assert safe_label_key("", "patch window") == "patch-window"


def write_json(tmp_path: Path, data: object, name: str = "ec2.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def instance(iid: str, ip: str, **extra: object) -> dict[str, object]:
    return {"InstanceId": iid, "State": {"Name": "running"}, "PrivateIpAddress": ip, **extra}


def test_bad_address_is_located(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1", NetworkInterfaces=[
        {"NetworkInterfaceId": "eni-1", "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.300"}]}])]}]})
    with pytest.raises(InputError) as exc:
        read_inventory([path])
    e = exc.value
    assert (e.file, e.field) == (str(path), "Reservations[0].Instances[0].NetworkInterfaces[0]"
                                 ".PrivateIpAddresses[0].PrivateIpAddress")
    assert e.line is not None and "10.0.0.300" in path.read_text().splitlines()[e.line - 1]
    assert "'10.0.0.300' is not an IP address" in e.message


def test_wrong_type_is_located(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1", Tags={"Name": "x"})]}]})
    with pytest.raises(InputError, match=r"Tags should be a list") as exc:
        read_inventory([path])
    assert exc.value.field == "Reservations[0].Instances[0].Tags" and exc.value.line is not None
    assert '"Tags"' in path.read_text().splitlines()[exc.value.line - 1]


def test_missing_instance_id(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [{"State": {"Name": "running"}}]}]})
    with pytest.raises(InputError, match="valid InstanceId") as exc:
        read_inventory([path])
    assert exc.value.field == "Reservations[0].Instances[0].InstanceId"


def test_env_tags_disagree(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1", Tags=[
        {"Key": "Env", "Value": "prod"}, {"Key": "Environment", "Value": "dev"}])]}]})
    with pytest.raises(InputError, match="disagree") as exc:
        read_inventory([path])
    assert exc.value.field == "Reservations[0].Instances[0].Tags"


def test_invalid_name_tag_falls_back_to_instance_id(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [
        instance("i-1", "10.0.0.1", Tags=[{"Key": "Name", "Value": "web server/1"}])]}]})
    names = {w.name for w in read_inventory([path]).inventory.workloads}
    assert names == {"i-1", "external:internet"}


def test_name_collision_across_files_is_an_error(tmp_path: Path) -> None:
    write_json(tmp_path, {"Reservations": [{"Instances": [
        instance("i-1", "10.0.0.1", Tags=[{"Key": "Name", "Value": "web"}])]}]}, "a.json")
    write_json(tmp_path, {"Reservations": [{"Instances": [
        instance("i-2", "10.0.0.2", Tags=[{"Key": "Name", "Value": "web"}])]}]}, "b.json")
    with pytest.raises(InputError, match=r"workload 'web' is already defined at .*a\.json"):
        read_inventory([tmp_path])


def test_address_on_instance_and_service_is_an_error(tmp_path: Path) -> None:
    write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1")]}]}, "a.json")
    eni = {"NetworkInterfaceId": "eni-9", "InterfaceType": "lambda", "Description": "AWS Lambda VPC ENI-f",
           "PrivateIpAddress": "10.0.0.1"}
    write_json(tmp_path, {"NetworkInterfaces": [eni]}, "b.json")
    with pytest.raises(InputError, match="IP 10.0.0.1 is bound to"):
        read_inventory([tmp_path])


def test_end_to_end_cmdb_host_and_ec2_instance(tmp_path: Path) -> None:
    d = copy(tmp_path, "describe-instances.json", "cmdb.csv")
    inv = read_inventory([d]).inventory
    t0, t1 = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC)
    edge = Edge(source="i-0bbb0000000000002", destination="db-01", protocol="TCP", port=5432, flows=40, days=6,
                first_seen=t0, last_seen=t1)
    res = synthesize(inv, [edge], guardrails=default_guardrails(), settings=Settings(min_flows=1, min_days=1))
    rules = [r for r in res.policy.rules if r.destinations == ("db-01",)]
    assert len(rules) == 1
    rule = rules[0]
    assert rule.sources == ("i-0bbb0000000000002",) and rule.protocol.value == "TCP"
    assert [str(p) for p in rule.ports] == ["5432"] and rule.justification.kind == "observed"
    placed = {a.workload for a in res.policy.assignments}
    assert {"i-0bbb0000000000002", "db-01", "web-1", "jump-01"} <= placed
