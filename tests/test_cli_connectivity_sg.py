"""`microseg connectivity` on deployed AWS security groups (describe-security-groups + describe-instances).

The expected lines restate, in the command's output form, the connectivity worked out by hand from the
AWS security-group rules in ``tests/sources/deployed/test_aws_sg_describe.py::test_describe_fixture_exact``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GROUPS = FIXTURES / "deployed" / "describe-security-groups.json"

EXPECTED = """\
elb-shop-alb-50dc6c495c0c9188[Service] => web-1[Host] : TCP 8080
external:internet[External] => elb-shop-alb-50dc6c495c0c9188[Service] : TCP 443
i-0bbb0000000000002[Host] => i-0ccc0000000000003[Host] : TCP 22
i-0bbb0000000000002[Host] => nat-0a1b2c3d4e5f60001[Service] : TCP 22
i-0bbb0000000000002[Host] => rds-eni-0db00000000000001[Service] : TCP 5432
i-0bbb0000000000002[Host] => vpce-0a1b2c3d4e5f60001[Service] : TCP 443
i-0bbb0000000000002[Host] => web-1[Host] : TCP 22
i-0ccc0000000000003[Host] => elb-shop-alb-50dc6c495c0c9188[Service] : TCP 443
i-0ccc0000000000003[Host] => i-0bbb0000000000002[Host] : ICMP
i-0ccc0000000000003[Host] => rds-eni-0db00000000000001[Service] : ICMP
i-0ccc0000000000003[Host] => vpce-0a1b2c3d4e5f60001[Service] : TCP 443
nat-0a1b2c3d4e5f60001[Service] => elb-shop-alb-50dc6c495c0c9188[Service] : TCP 443
nat-0a1b2c3d4e5f60001[Service] => i-0bbb0000000000002[Host] : ICMP
nat-0a1b2c3d4e5f60001[Service] => rds-eni-0db00000000000001[Service] : ICMP
nat-0a1b2c3d4e5f60001[Service] => vpce-0a1b2c3d4e5f60001[Service] : TCP 443
web-1[Host] => elb-shop-alb-50dc6c495c0c9188[Service] : TCP 443
web-1[Host] => i-0bbb0000000000002[Host] : TCP 8443
web-1[Host] => i-0ccc0000000000003[Host] : All Connections
web-1[Host] => nat-0a1b2c3d4e5f60001[Service] : All Connections
"""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def inventory(tmp_path: Path) -> Path:
    d = tmp_path / "aws"
    d.mkdir()
    for name in ("describe-instances.json", "describe-network-interfaces.json"):
        shutil.copy(FIXTURES / "inventory" / name, d / name)
    return d


def test_connection_list_of_deployed_security_groups(inventory: Path) -> None:
    r = run("connectivity", "-i", inventory, "-p", GROUPS)
    assert r.returncode == 0, r.stderr
    assert r.stdout == EXPECTED
    # What is not governed, and references nothing carries, are said on stderr, not hidden.
    assert "nat-0a1b2c3d4e5f60001: carries no security group" in r.stderr
    assert "group sg-0peer000000000001 is referenced by a rule but carried by no workload" in r.stderr


def test_json_and_port_focus(inventory: Path) -> None:
    r = run("connectivity", "-i", inventory, "-p", GROUPS, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["connections"]
    assert {"kind": "Host", "namespace": None, "name": "web-1"} in [row["destination"] for row in rows]
    assert len(rows) == EXPECTED.count("\n")
    r = run("connectivity", "-i", inventory, "-p", GROUPS, "--port", "tcp/5432")
    assert r.stdout == ("Permitted connections on TCP 5432:\n"
                        "i-0bbb0000000000002[Host] => rds-eni-0db00000000000001[Service]\n"
                        "web-1[Host] => i-0ccc0000000000003[Host]\n"
                        "web-1[Host] => nat-0a1b2c3d4e5f60001[Service]\n")


def test_security_groups_next_to_kubernetes_policies_is_refused(inventory: Path) -> None:
    other = FIXTURES / "netpol_bad" / "workloads.yaml"
    r = run("connectivity", "-i", inventory, "-p", GROUPS, "-p", other)
    assert r.returncode == 2
    assert "security groups (describe-security-groups output) and other policy files in one run" in r.stderr
    assert "Traceback" not in r.stderr


def test_what_the_inventory_read_as_nothing_is_said(inventory: Path) -> None:
    # A terminated instance (skipped: it holds no address) and a file that is no inventory are said on stderr.
    (inventory / "old.json").write_text(json.dumps({"Reservations": [{"Instances": [
        {"InstanceId": "i-0ddd0000000000004", "State": {"Name": "terminated"}}]}]}))
    (inventory / "values.yaml").write_text("replicaCount: 3\n")
    r = run("connectivity", "-i", inventory, "-p", GROUPS)
    assert r.returncode == 0, r.stderr
    assert r.stdout == EXPECTED
    assert "inventory: " in r.stderr and "old.json: 1 terminated instance(s) skipped" in r.stderr
    assert "values.yaml:1 is no inventory document; read as nothing" in r.stderr
