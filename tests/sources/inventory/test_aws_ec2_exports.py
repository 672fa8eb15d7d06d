"""AWS EC2 exports beyond the fixtures: one page of a paginated output, addresses in the wrong field, an
address held twice, malformed public IPs, the primary IPv6 fields, delegated prefixes, branch ENIs and
repeated ENI ids: read exactly, or refused with the file, the JSON path and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg.errors import InputError
from microseg.sources.inventory import read_inventory

from .test_aws_ec2 import instance, write_json


def lambda_eni(eni_id: str, function: str, ip: str, **extra: object) -> dict[str, object]:
    return {"NetworkInterfaceId": eni_id, "InterfaceType": "lambda", "RequesterManaged": True,
            "Description": f"AWS Lambda VPC ENI-{function}", "PrivateIpAddress": ip, **extra}


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as exc:
        read_inventory([path])
    assert exc.value.file == str(path)
    return exc.value


def test_one_page_of_a_paginated_output_is_refused(tmp_path: Path) -> None:
    # --max-items / --no-paginate print the token of the next page: the hosts on it would be missing.
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1")]}],
                                 "NextToken": "eyJOZXh0VG9rZW4iOiBudWxsfQ=="})
    e = error_of(path)
    assert e.field == "NextToken" and "one page" in e.message
    assert e.line is not None and '"NextToken"' in path.read_text().splitlines()[e.line - 1]


@pytest.mark.parametrize("value", [None, {}, "x"])
def test_top_level_list_of_another_type_is_an_error(tmp_path: Path, value: object) -> None:
    # Was "unrecognized" (a report nobody reads) and so an inventory without those hosts.
    path = write_json(tmp_path, {"Reservations": value})
    e = error_of(path)
    assert e.field == "Reservations" and "Reservations should be a list" in e.message


@pytest.mark.parametrize(("inst", "field", "message"), [
    (instance("i-1", "2001:db8::1"), "Reservations[0].Instances[0].PrivateIpAddress",
     "'2001:db8::1' is not an IPv4 address"),
    (instance("i-1", "10.0.0.1", NetworkInterfaces=[
        {"NetworkInterfaceId": "eni-1", "Ipv6Addresses": [{"Ipv6Address": "10.0.0.9"}]}]),
     "Reservations[0].Instances[0].NetworkInterfaces[0].Ipv6Addresses[0].Ipv6Address",
     "'10.0.0.9' is not an IPv6 address"),
    (instance("i-1", "10.0.0.1", PublicIpAddress="203.0.113.300"), "Reservations[0].Instances[0].PublicIpAddress",
     "'203.0.113.300' is not an IP address"),
    (instance("i-1", "10.0.0.1", NetworkInterfaces=[{"NetworkInterfaceId": "eni-1", "PrivateIpAddresses": [
        {"PrivateIpAddress": "10.0.0.1", "Association": {"PublicIp": "<none>"}}]}]),
     "Reservations[0].Instances[0].NetworkInterfaces[0].PrivateIpAddresses[0].Association.PublicIp",
     "'<none>' is not an IP address"),
    (instance("i-1", "10.0.0.1", NetworkInterfaces=[
        {"NetworkInterfaceId": "eni-1", "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.0.16/27x"}]}]),
     "Reservations[0].Instances[0].NetworkInterfaces[0].Ipv4Prefixes[0].Ipv4Prefix",
     "'10.0.0.16/27x' is not a prefix"),
])
def test_bad_addresses_are_located(tmp_path: Path, inst: dict[str, object], field: str, message: str) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [inst]}]})
    e = error_of(path)
    assert e.field == field and message in e.message


def test_address_of_two_instances_is_located(tmp_path: Path) -> None:
    # The loader refused it too, but with neither a line nor a path.
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1")]},
                                                  {"Instances": [instance("i-2", "10.0.0.1")]}]})
    e = error_of(path)
    assert e.field == "Reservations[1].Instances[0].PrivateIpAddress"
    assert e.line is not None and '"10.0.0.1"' in path.read_text().splitlines()[e.line - 1]
    assert "10.0.0.1 is also the address of i-1 (instance i-1, Reservations[0].Instances[0].PrivateIpAddress" \
        in e.message


def test_address_of_two_services_is_located(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"NetworkInterfaces": [lambda_eni("eni-1", "f", "10.0.0.7"),
                                                       lambda_eni("eni-2", "g", "10.0.0.7")]})
    e = error_of(path)
    assert e.field == "NetworkInterfaces[1].PrivateIpAddress" and "also the address of lambda-f" in e.message


def test_network_interface_listed_twice_is_an_error(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"NetworkInterfaces": [lambda_eni("eni-1", "f", "10.0.0.7"),
                                                       lambda_eni("eni-1", "g", "10.0.0.8")]})
    e = error_of(path)
    assert e.field == "NetworkInterfaces[1].NetworkInterfaceId" and "eni-1 is listed twice" in e.message


def test_primary_ipv6_fields_are_bound(tmp_path: Path) -> None:
    # Instance.Ipv6Address and NetworkInterface.Ipv6Address: the primary IPv6 address.
    path = write_json(tmp_path, {
        "Reservations": [{"Instances": [instance("i-1", "10.0.0.1", Ipv6Address="2001:db8::1")]}],
        "NetworkInterfaces": [lambda_eni("eni-7", "f", "10.0.0.7", Ipv6Address="2001:DB8::7")]})
    bindings = {(b.ip, b.workload, b.source) for b in read_inventory([path]).inventory.bindings}
    assert bindings == {("10.0.0.1", "i-1", f"{path}#instance i-1"), ("2001:db8::1", "i-1", f"{path}#instance i-1"),
                        ("10.0.0.7", "lambda-f", f"{path}#network interface eni-7"),
                        ("2001:db8::7", "lambda-f", f"{path}#network interface eni-7")}


def test_delegated_prefixes_are_counted_not_bound(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"Reservations": [{"Instances": [instance("i-1", "10.0.0.1", NetworkInterfaces=[
        {"NetworkInterfaceId": "eni-1", "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.0.16/28"}],
         "Ipv6Prefixes": [{"Ipv6Prefix": "2001:db8:1:1:1::/80"}]}])]}]})
    res = read_inventory([path])
    assert [b.ip for b in res.inventory.bindings] == ["10.0.0.1"]
    assert res.report.notes == (f"{path}: 2 prefix(es) delegated to network interfaces not bound (flows from "
                                "addresses in them are attributed only if another inventory binds them)",)


def test_branch_interfaces_are_not_merged_into_one_service(tmp_path: Path) -> None:
    # Every pod's branch ENI carries the same description: the old reader made them one workload
    # ("aws-aws-k8s-branch-eni") holding every such pod's address.
    enis = [{"NetworkInterfaceId": f"eni-{i}", "InterfaceType": "branch", "RequesterManaged": False,
             "Description": "aws-k8s-branch-eni", "PrivateIpAddress": f"10.0.5.{i}"} for i in (1, 2)]
    path = write_json(tmp_path, {"NetworkInterfaces": enis})
    res = read_inventory([path])
    assert {w.name for w in res.inventory.workloads} == {"external:internet"}
    assert res.inventory.bindings == ()
    assert res.report.notes == (f"{path}: 2 branch network interface(s) skipped (EKS security groups for pods: "
                                "each is one pod's, which the Kubernetes inventory names)",)


@pytest.mark.parametrize(("text", "line"), [
    ('{"Reservations": [{"Instances": [\n', 2),  # a file cut short
    ('{"Reservations": []}\n{"Reservations": []}\n', 2),  # pages concatenated by hand
    ("", 1),
])
def test_not_one_json_document_is_an_error(tmp_path: Path, text: str, line: int) -> None:
    """Already right; pinned: never a partial read."""
    path = tmp_path / "ec2.json"
    path.write_text(text)
    e = error_of(path)
    assert e.line == line and "malformed JSON" in e.message


def test_one_private_ip_in_two_vpcs_is_refused_naming_both(tmp_path: Path) -> None:
    """Overlapping VPC CIDRs: a flow to 10.0.1.5 could be either instance's, so the inventory is refused
    (never one of them picked), naming both instances and, when they are in different VPCs, both VPCs."""
    prod = instance("i-0aaa", "10.0.1.5", VpcId="vpc-prod", SubnetId="subnet-p1",
                    Tags=[{"Key": "Name", "Value": "billing-db"}])
    test = instance("i-0bbb", "10.0.1.5", VpcId="vpc-test", SubnetId="subnet-t1",
                    Tags=[{"Key": "Name", "Value": "test-db"}])
    one = tmp_path / "one"
    one.mkdir()
    e = error_of(write_json(one, {"Reservations": [{"Instances": [prod]}, {"Instances": [test]}]}))
    assert e.field == "Reservations[1].Instances[0].PrivateIpAddress"
    assert e.message.startswith("test-db (instance i-0bbb): 10.0.1.5 is also the address of billing-db "
                                "(instance i-0aaa, Reservations[0].Instances[0].PrivateIpAddress")
    assert "test-db is in vpc-test, billing-db in vpc-prod: VPCs that reuse one private range" in e.message
    # One export per VPC (or account): the loader refuses the address the same way, naming both.
    two = tmp_path / "two"
    two.mkdir()
    write_json(two, {"Reservations": [{"Instances": [prod]}]}, "prod.json")
    write_json(two, {"Reservations": [{"Instances": [test]}]}, "test.json")
    with pytest.raises(InputError, match=r"IP 10\.0\.1\.5 is bound to billing-db .*prod\.json#instance i-0aaa.* "
                       r"and to test-db .*test\.json#instance i-0bbb"):
        read_inventory([two])
