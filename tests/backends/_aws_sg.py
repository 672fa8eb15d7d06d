"""AWS security groups test support: the Terraform JSON checks (shared by test_aws_sg.py and
test_contract.py).

No Terraform validator runs here (the terraform and OpenTofu binaries are not installable from the
registries this project uses); :func:`check_terraform` checks every resource against the attributes
the provider documents instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

GROUP_KEYS = {"name", "description", "vpc_id", "revoke_rules_on_delete", "tags"}
RULE_KEYS = {"security_group_id", "ip_protocol", "from_port", "to_port", "cidr_ipv4", "cidr_ipv6",
             "referenced_security_group_id", "description"}
REF = re.compile(r"\$\{aws_security_group\.(sg-[a-z0-9-]+)\.id\}")
# The AWS description charset ("a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*"), CreateSecurityGroup.
AWS_DESCRIPTION = re.compile(r"[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}")


def terraform(files: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(files["main.tf.json"])
    return doc


def check_terraform(doc: dict[str, Any]) -> None:
    """Every resource uses only attributes the provider documents, in the shapes it documents."""
    assert set(doc) <= {"//", "terraform", "variable", "resource", "output"}
    assert doc["variable"] == {"vpc_id": {"type": "string", "description": doc["variable"]["vpc_id"]["description"]}}
    resources = doc["resource"]
    assert set(resources) <= {"aws_security_group", "aws_vpc_security_group_ingress_rule",
                              "aws_vpc_security_group_egress_rule"}
    groups = resources["aws_security_group"]
    for name, g in groups.items():
        assert re.fullmatch(r"sg-[a-z0-9-]+", name), name
        assert set(g) == GROUP_KEYS, g  # no inline ingress/egress, ever
        assert g["vpc_id"] == "${var.vpc_id}" and g["revoke_rules_on_delete"] is True
        assert AWS_DESCRIPTION.fullmatch(g["description"]) and AWS_DESCRIPTION.fullmatch(g["name"])
        assert len(g["tags"]["microseg:workload"]) <= 2 * 256
    for rtype in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"):
        for name, r in resources.get(rtype, {}).items():
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name), name
            assert set(r) <= RULE_KEYS and "security_group_id" in r, r
            assert REF.fullmatch(r["security_group_id"]).group(1) in groups  # type: ignore[union-attr]
            peers = [k for k in ("cidr_ipv4", "cidr_ipv6", "referenced_security_group_id") if k in r]
            assert len(peers) == 1, r
            if "referenced_security_group_id" in r:
                assert REF.fullmatch(r["referenced_security_group_id"]).group(1) in groups  # type: ignore[union-attr]
            assert r["ip_protocol"] in ("tcp", "udp", "icmp", "icmpv6", "132"), r  # never -1 (everything)
            if r["ip_protocol"] in ("tcp", "udp"):
                assert 0 <= r["from_port"] <= r["to_port"] <= 65535
            elif r["ip_protocol"] == "132":
                assert "from_port" not in r and "to_port" not in r
            else:
                assert (r["from_port"], r["to_port"]) == (-1, -1)
            assert AWS_DESCRIPTION.fullmatch(r["description"])
            if "cidr_ipv4" in r:
                assert r["cidr_ipv4"] != "0.0.0.0/0" or r["ip_protocol"] not in ("tcp", "udp") or r["from_port"] > 0
