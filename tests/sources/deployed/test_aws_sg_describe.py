"""Deployed AWS security groups from ``aws ec2 describe-security-groups`` JSON.

Expected connectivity is written by hand from the AWS documentation (EC2 API reference "IpPermission";
Amazon VPC User Guide "Security group rules": allow rules only, the rules of all groups of an interface
aggregated, group references matching the interfaces that carry the group, stateful), not from the
code under test. The universe is the inventory fixture (tests/fixtures/inventory), read by the real
inventory reader, so the ``aws-sg/<id>`` labels are the ones describe-instances and
describe-network-interfaces give.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from microseg.backends.aws_sg import BACKEND
from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.deployed.aws_sg import connectivity_from_describe, read_back, read_describe
from microseg.sources.inventory import read_inventory
from tests.backends._addressed import addressed_policies, governed_pairs

FIXTURES = Path(__file__).parents[2] / "fixtures"
DESCRIBE = FIXTURES / "deployed/describe-security-groups.json"
SMALL_DESCRIBE = FIXTURES / "deployed/small-describe-security-groups.json"
GOLDEN_SMALL = Path(__file__).parents[2] / "backends/golden/aws_sg/small/policy.yaml"

ALB, INTERNET, APP, C, NAT = ("elb-shop-alb-50dc6c495c0c9188", "external:internet", "i-0bbb0000000000002",
                              "i-0ccc0000000000003", "nat-0a1b2c3d4e5f60001")
RDS, VPCE, WEB = "rds-eni-0db00000000000001", "vpce-0a1b2c3d4e5f60001", "web-1"


def tcp(*ports: int) -> Connections:
    return Connections.of((Protocol.TCP, PortRange(start=p, end=p)) for p in ports)


ICMP = Connections.of([(Protocol.ICMP, PortRange(start=0, end=65535))])
EVERYTHING = Connections(everything=True)


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workload, ...]:
    d = tmp_path_factory.mktemp("inventory")
    for name in ("describe-instances.json", "describe-network-interfaces.json"):
        shutil.copy(FIXTURES / "inventory" / name, d / name)
    return read_inventory([d]).inventory.workloads


def describe_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DESCRIBE.read_text(encoding="utf-8"))
    return doc


def files_of(doc: dict[str, Any], name: str = "sg.json") -> dict[str, str]:
    return {name: json.dumps(doc, indent=2)}


def group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in doc["SecurityGroups"] if g["GroupName"] == name)
    return found


def test_describe_fixture_exact(universe: tuple[Workload, ...]) -> None:
    got = read_describe({"describe-security-groups.json": DESCRIBE.read_text(encoding="utf-8")}, universe)
    assert got.connections == {
        # ALB: 443 from anywhere (both families, so the internet with its IPv6 is covered), egress 8080 to web.
        (ALB, WEB): tcp(8080),
        (INTERNET, ALB): tcp(443), (C, ALB): tcp(443), (NAT, ALB): tcp(443),
        # web: the new-group default egress (-1 to 0.0.0.0/0). It covers IPv4-only peers whole: all
        # connections to ungoverned ones, their ingress rules to governed ones; never a peer with IPv6
        # addresses (the RDS ENI, the internet), which 0.0.0.0/0 covers only in part.
        (WEB, ALB): tcp(443), (WEB, APP): tcp(8443), (WEB, C): EVERYTHING, (WEB, NAT): EVERYTHING,
        # app carries two groups (app + mgmt): their rules add up, in both directions.
        (APP, RDS): tcp(5432), (APP, VPCE): tcp(443), (APP, WEB): tcp(22),
        (APP, C): tcp(22), (APP, NAT): tcp(22),
        # ICMP from 10.0.0.0/16 (mgmt on app, db on RDS) counts for IPv4-only sources; web has an IPv6
        # address outside any ICMPv6 rule of app, so web gets no ICMP there.
        (C, APP): ICMP, (NAT, APP): ICMP, (C, RDS): ICMP, (NAT, RDS): ICMP,
        (C, VPCE): tcp(443), (NAT, VPCE): tcp(443),
    }
    # Stateful: the RDS ENI and the endpoint have no egress rule, yet answer; they initiate nothing.
    assert not any(s in (RDS, VPCE) for s, _ in got.connections)
    assert got.governed == (ALB, APP, RDS, VPCE, WEB)
    assert got.ungoverned == (C, NAT)  # no security group known: nothing here filters them
    # The other account's group, and the default group (it references itself; nothing carries it).
    assert got.unmatched_references == ("sg-0def0000000000001", "sg-0peer000000000001")


def test_order_and_paging_do_not_change_the_result(universe: tuple[Workload, ...]) -> None:
    doc = describe_doc()
    groups = doc["SecurityGroups"]
    page1 = {"SecurityGroups": list(reversed(groups[:3])), "NextToken": "eyJ2IjoiMiJ9"}
    page2 = {"SecurityGroups": list(reversed(groups[3:]))}
    for g in page2["SecurityGroups"]:
        g["IpPermissions"].reverse()
    paged = {"page-2.json": json.dumps(page2), "page-1.json": json.dumps(page1)}
    assert connectivity_from_describe(paged, universe) == connectivity_from_describe(files_of(doc), universe)


def test_default_group_self_reference_allows_everything_between_members(universe: tuple[Workload, ...]) -> None:
    # The default group: all inbound from its own members, all outbound to 0.0.0.0/0. The two services
    # given it alone (IPv4-only both) reach each other on every protocol, and nobody else reaches them.
    members = {ALB, VPCE}
    wl = tuple(w.model_copy(update={"labels": (("aws-sg/sg-0def0000000000001", "default"),)})
               if w.name in members else w for w in universe)
    got = connectivity_from_describe(files_of(describe_doc()), wl)
    assert got[(ALB, VPCE)] == EVERYTHING and got[(VPCE, ALB)] == EVERYTHING
    assert {k for k in got if k[1] in members} == {(ALB, VPCE), (VPCE, ALB)}


def test_describe_and_terraform_read_back_agree() -> None:
    # The aws_sg back end's Terraform for the small golden policy, and what describe-security-groups prints
    # for the same two groups once applied (the provider removes the default egress rule of a group it
    # creates, Terraform AWS provider docs, aws_security_group), read to the same connectivity.
    policy = Policy.model_validate(yaml.safe_load(GOLDEN_SMALL.read_text(encoding="utf-8")))
    expected = {("web-1", "db-1"): Connections.of([(Protocol.TCP, PortRange(start=5432, end=5433)),
                                                    (Protocol.ICMP, PortRange(start=0, end=65535))]),
                ("external:partner", "web-1"): tcp(443, 8443)}
    assert read_back(BACKEND.compile(policy), policy) == expected == governed_pairs(policy)
    sg = {"web-1": "sg-0a1b2c3d4e5f60011", "db-1": "sg-0a1b2c3d4e5f60022"}
    workloads = tuple(w.model_copy(update={"labels": ((f"aws-sg/{sg[w.name]}", f"microseg-{w.name}"),)})
                      if w.name in sg else w for w in policy.workloads)
    got = read_describe({"small.json": SMALL_DESCRIBE.read_text(encoding="utf-8")}, workloads)
    assert got.connections == expected
    assert got.ungoverned == ("shop/api", "shop/cache")


def test_partial_cover_is_not_allowed_and_union_of_rules_completes_it(universe: tuple[Workload, ...]) -> None:
    doc = describe_doc()
    ep = group(doc, "endpoints")
    # Two halves of 10.0.0.0/16, each in its own rule: together they cover the app host (10.0.2.20 and 10.0.9.20).
    ep["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/21"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.8.0/21"}]},
    ]
    assert connectivity_from_describe(files_of(doc), universe)[(APP, VPCE)] == tcp(443)
    ep["IpPermissions"].pop()  # now 10.0.9.20 is outside: part of the host allowed is not the host allowed
    assert (APP, VPCE) not in connectivity_from_describe(files_of(doc), universe)


def test_port_ranges_sctp_and_all_protocols(universe: tuple[Workload, ...]) -> None:
    doc = describe_doc()
    ep = group(doc, "endpoints")
    ep["IpPermissions"] = [
        {"IpProtocol": "6", "FromPort": 1000, "ToPort": 2000, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        # SCTP (132): every port, whatever FromPort/ToPort say (IpPermission).
        {"IpProtocol": "132", "FromPort": 7, "ToPort": 7, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
    ]
    got = connectivity_from_describe(files_of(doc), universe)
    assert got[(NAT, VPCE)] == Connections.of([(Protocol.TCP, PortRange(start=1000, end=2000)),
                                               (Protocol.UDP, PortRange(start=53, end=53)),
                                               (Protocol.SCTP, PortRange(start=0, end=65535))])
    ep["IpPermissions"] = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.1.0/24"}]}]
    got = connectivity_from_describe(files_of(doc), universe)
    assert got[(NAT, VPCE)] == EVERYTHING  # nat (10.0.1.5) is ungoverned: only the endpoint's ingress filters
    assert (C, VPCE) not in got  # 10.0.2.21


def test_a_stale_reference_matches_nothing_new(universe: tuple[Workload, ...]) -> None:
    # Removing the app group from the RDS rule leaves only the cross-account reference: app loses 5432.
    doc = describe_doc()
    pairs = group(doc, "db")["IpPermissions"][0]["UserIdGroupPairs"]
    pairs.pop(0)
    got = read_describe(files_of(doc), universe)
    assert (APP, RDS) not in got.connections
    assert got.unmatched_references == ("sg-0def0000000000001", "sg-0peer000000000001")


def _mutate(doc: dict[str, Any], mutation: str) -> tuple[str, str]:
    """Apply one malformation; return (expected field, message fragment)."""
    db = group(doc, "db")
    perm = db["IpPermissions"][1]  # icmp from 10.0.0.0/16
    if mutation == "icmp-type":
        perm["FromPort"] = 8
        return "SecurityGroups[4].IpPermissions[1].FromPort", "ICMP type 8 only"
    if mutation == "icmp-code":
        perm["ToPort"] = 0
        return "SecurityGroups[4].IpPermissions[1].ToPort", "all codes"
    if mutation == "gre":
        perm["IpProtocol"] = "47"
        return "SecurityGroups[4].IpPermissions[1].IpProtocol", "outside the policy's protocols"
    if mutation == "protocol-name":
        perm["IpProtocol"] = "gre"
        return "SecurityGroups[4].IpPermissions[1].IpProtocol", "neither a protocol name"
    if mutation == "prefix-list":
        perm["PrefixListIds"] = [{"PrefixListId": "pl-6da54004"}]
        return "SecurityGroups[4].IpPermissions[1].PrefixListIds[0].PrefixListId", "prefix list 'pl-6da54004'"
    if mutation == "peering-deleted":
        db["IpPermissions"][0]["UserIdGroupPairs"][1]["PeeringStatus"] = "deleted"
        return "SecurityGroups[4].IpPermissions[0].UserIdGroupPairs[1].PeeringStatus", "state 'deleted'"
    if mutation == "bad-cidr":
        perm["IpRanges"][0]["CidrIp"] = "10.0.0.0/33"
        return "SecurityGroups[4].IpPermissions[1].IpRanges[0].CidrIp", "invalid CIDR"
    if mutation == "v6-in-v4":
        perm["IpRanges"][0]["CidrIp"] = "2001:db8::/32"
        return "SecurityGroups[4].IpPermissions[1].IpRanges[0].CidrIp", "IPv4 CIDR"
    if mutation == "tcp-no-ports":
        del db["IpPermissions"][0]["FromPort"]
        return "SecurityGroups[4].IpPermissions[0].FromPort", "integer"
    if mutation == "ports-reversed":
        db["IpPermissions"][0]["FromPort"] = 6000
        return "SecurityGroups[4].IpPermissions[0].FromPort", "port range 6000-5432"
    if mutation == "unknown-field":
        perm["Action"] = "deny"
        return "SecurityGroups[4].IpPermissions[1].Action", "not evaluated"
    if mutation == "no-egress":
        del db["IpPermissionsEgress"]
        return "SecurityGroups[4]", "IpPermissionsEgress is missing"
    if mutation == "bad-group-id":
        db["IpPermissions"][0]["UserIdGroupPairs"][0] = {"GroupName": "app"}
        return "SecurityGroups[4].IpPermissions[0].UserIdGroupPairs[0].GroupId", "GroupId"
    if mutation == "duplicate":
        doc["SecurityGroups"].append(copy.deepcopy(db))
        return "SecurityGroups[7].GroupId", "described twice"
    if mutation == "no-peer":
        perm["IpRanges"] = []
        return "SecurityGroups[4].IpPermissions[1]", "without IpRanges"
    raise AssertionError(mutation)


@pytest.mark.parametrize("mutation", ["icmp-type", "icmp-code", "gre", "protocol-name", "prefix-list",
                                      "peering-deleted", "bad-cidr", "v6-in-v4", "tcp-no-ports", "ports-reversed",
                                      "unknown-field", "no-egress", "bad-group-id", "duplicate", "no-peer"])
def test_fails_closed_naming_file_line_and_field(universe: tuple[Workload, ...], mutation: str) -> None:
    doc = describe_doc()
    field, fragment = _mutate(doc, mutation)
    text = json.dumps(doc, indent=2)
    with pytest.raises(InputError) as info:
        read_describe({"sg.json": text}, universe)
    err = info.value
    assert err.file == "sg.json" and err.field == field and fragment in err.message, str(err)
    # The line is the field's own line in the file as written (or, for a missing field, its object's).
    assert err.line is not None
    key = field.rsplit(".", 1)[-1].split("[")[0]
    line_text = text.splitlines()[err.line - 1]
    missing = mutation in ("no-egress", "no-peer", "tcp-no-ports", "bad-group-id")  # a missing field: its object
    assert (line_text.strip() in ("{", "}") if missing else f'"{key}"' in line_text), line_text


def test_a_resolvable_prefix_list_is_read(universe: tuple[Workload, ...]) -> None:
    doc = describe_doc()
    group(doc, "endpoints")["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": "pl-0corp"}]}]
    got = connectivity_from_describe(files_of(doc), universe, prefix_lists={"pl-0corp": ["10.0.1.0/24"]})
    assert got[(NAT, VPCE)] == tcp(443) and (C, VPCE) not in got


def test_a_carried_group_nobody_describes_is_an_error(universe: tuple[Workload, ...]) -> None:
    doc = describe_doc()
    doc["SecurityGroups"] = [g for g in doc["SecurityGroups"] if g["GroupName"] != "mgmt"]
    with pytest.raises(InputError, match=r"i-0bbb0000000000002.*sg-0mgmt000000000001, which no file describes"):
        read_describe(files_of(doc), universe)


def test_malformed_json_and_wrong_shape() -> None:
    with pytest.raises(InputError, match=r"sg\.json:3"):
        read_describe({"sg.json": '{\n"SecurityGroups": [\n}'}, ())
    with pytest.raises(InputError, match="an object with SecurityGroups"):
        read_describe({"sg.json": '{"Reservations": []}'}, ())
    with pytest.raises(InputError, match="describe-security-groups"):
        read_describe({"sg.txt": "{}"}, ())


def test_external_peers_are_never_governed() -> None:
    peer = Workload(name="external:x", kind=WorkloadKind.EXTERNAL, addresses=("192.0.2.0/24",),
                    labels={"aws-sg/sg-0ghost": "x"})
    got = read_describe({"sg.json": '{"SecurityGroups": []}'}, (peer,))
    assert got.connections == {} and got.governed == () and got.ungoverned == ()


# -- one semantics, two formats: the back end's groups as describe-security-groups would print them -----------


def terraform_as_describe(files: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The groups of the aws_sg back end's Terraform, as ``describe-security-groups`` prints them once applied
    (ids made up; one IpPermission per rule resource, which AWS may also merge: the evaluator must not care).

    Returns (describe files, workload -> group id).
    """
    resources = json.loads(files["main.tf.json"])["resource"]
    ids = {name: f"sg-{i:017x}" for i, name in enumerate(sorted(resources["aws_security_group"]))}
    ref = re.compile(r"\$\{aws_security_group\.(.+)\.id\}")
    perms: dict[str, dict[str, list[dict[str, Any]]]] = {
        gid: {"IpPermissions": [], "IpPermissionsEgress": []} for gid in ids.values()}
    for rtype, key in (("aws_vpc_security_group_ingress_rule", "IpPermissions"),
                       ("aws_vpc_security_group_egress_rule", "IpPermissionsEgress")):
        for body in resources.get(rtype, {}).values():
            owner = ids[ref.fullmatch(body["security_group_id"]).group(1)]  # type: ignore[union-attr]
            perm: dict[str, Any] = {"IpProtocol": body["ip_protocol"], "IpRanges": [], "Ipv6Ranges": [],
                                    "PrefixListIds": [], "UserIdGroupPairs": []}
            if "from_port" in body:
                perm.update({"FromPort": body["from_port"], "ToPort": body["to_port"]})
            if "cidr_ipv4" in body:
                perm["IpRanges"].append({"CidrIp": body["cidr_ipv4"]})
            elif "cidr_ipv6" in body:
                perm["Ipv6Ranges"].append({"CidrIpv6": body["cidr_ipv6"]})
            else:
                peer = ids[ref.fullmatch(body["referenced_security_group_id"]).group(1)]  # type: ignore[union-attr]
                perm["UserIdGroupPairs"].append({"GroupId": peer, "UserId": "123456789012"})
            perms[owner][key].append(perm)
    groups = [{"GroupId": gid, "GroupName": name, "Description": name, "OwnerId": "123456789012",
               "VpcId": "vpc-0a1b2c3d4e5f60001", **perms[gid]} for name, gid in sorted(ids.items())]
    workload_of = {ids[name]: g["tags"]["microseg:workload"] for name, g in resources["aws_security_group"].items()}
    return ({"describe.json": json.dumps({"SecurityGroups": groups})},
            {w: gid for gid, w in workload_of.items()})


def with_groups(policy: Policy, carried: dict[str, str]) -> tuple[Workload, ...]:
    return tuple(w.model_copy(update={"labels": (*w.labels, (f"aws-sg/{carried[w.name]}", "g"))})
                 if w.name in carried else w for w in policy.workloads)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=addressed_policies(min_port=0, sctp="all-ports"))
def test_both_formats_read_to_the_policy(policy: Policy) -> None:
    compiled = BACKEND.compile(policy)
    files, carried = terraform_as_describe(compiled)
    assert connectivity_from_describe(files, with_groups(policy, carried)) == read_back(compiled, policy) \
        == governed_pairs(policy)
