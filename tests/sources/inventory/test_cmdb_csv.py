"""CMDB CSV exports: documented columns and aliases, unknown columns as labels, located errors,
content detection in directories."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from microseg.errors import InputError
from microseg.ir.model import Workload, WorkloadKind
from microseg.sources.inventory import discover, read_inventory

FIXTURES = Path(__file__).parents[2] / "fixtures/inventory"


def write(tmp_path: Path, text: str, name: str = "cmdb.csv") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_fixture_exact(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "cmdb.csv", tmp_path / "cmdb.csv")
    inv = read_inventory([tmp_path]).inventory
    hosts = {w.name: w for w in inv.workloads if w.kind is WorkloadKind.HOST}
    assert hosts == {
        "db-01": Workload(
            name="db-01", kind=WorkloadKind.HOST, addresses=("10.50.1.10", "10.50.1.11"),
            labels={"role": "postgres", "subnet": "10.50.1.0/24", "vlan": "120", "rack": "r12",
                    "patch_window": "sun 02:00"},
            environment="prod", owner="dba-team", compliance=("pci", "sox"), sensitivity="restricted",
            location="10.50.1.0/24 vlan 120"),
        "jump-01": Workload(
            name="jump-01", kind=WorkloadKind.HOST, addresses=("10.50.9.5", "2001:db8:50:9::5"),
            labels={"role": "bastion", "subnet": "10.50.9.0/24"}, environment="prod", owner="ops-team",
            zone="management", location="10.50.9.0/24"),
    }
    source = f"{tmp_path}/cmdb.csv"
    assert {(b.ip, b.workload, b.source) for b in inv.bindings} == {
        ("10.50.1.10", "db-01", f"{source}#host db-01"), ("10.50.1.11", "db-01", f"{source}#host db-01"),
        ("10.50.9.5", "jump-01", f"{source}#host jump-01"), ("2001:db8:50:9::5", "jump-01", f"{source}#host jump-01")}


def test_discovery_by_content(tmp_path: Path) -> None:
    write(tmp_path, "hostname,ip\nh1,10.0.0.1\n", "hosts.csv")
    write(tmp_path, "date,bytes\n2026-01-01,5\n", "other.csv")  # not a CMDB: not read
    assert [d for _, d in discover([tmp_path])] == [f"{tmp_path}/hosts.csv"]
    # a named file is detected by content whatever its suffix
    named = write(tmp_path, "HOST,IPs\nh2,10.0.0.2\n", "cmdb.txt")
    inv = read_inventory([named]).inventory
    assert {w.name for w in inv.workloads} == {"h2", "external:internet"}


def error_of(tmp_path: Path, text: str) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        read_inventory([path])
    assert exc.value.file == str(path)
    return exc.value


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("hostname,ip\nh1,10.0.0.1\nh1,10.0.0.2\n", 3, "hostname", "already defined on line 2"),
    ("hostname,ip\nh1,10.0.0.300\n", 2, "ip", "'10.0.0.300' is not an IP address"),
    ("hostname,ip\nh1,\n", 2, "ip", "no IP address"),
    ("hostname,ip\nns/h1,10.0.0.1\n", 2, "hostname", "not a valid host name"),
    ("hostname,ip,subnet\nh1,10.0.0.1,10.1.0.0/16\n", 2, "ip", "not in subnet 10.1.0.0/16"),
    ("hostname,ip,subnet\nh1,10.0.0.1,10.0.0.1/8\n", 2, "subnet", "is not a subnet"),
    ("Hostname,IP,VLAN\nh1,10.0.0.1,5000\n", 2, "VLAN", "not a VLAN id"),
    ("hostname,ip,Data Classification\nh1,10.0.0.1,secret\n", 2, "Data Classification",
     "'secret' is not one of low, medium, high, restricted"),
    ('hostname,ip,notes\nh1,10.0.0.1,"multi\nline"\nh1,10.0.0.2,x\n', 4, "hostname", "already defined on line 2"),
    ("hostname,ip,env,environment\nh1,10.0.0.1,a,b\n", 1, "environment", "both mean 'environment'"),
])
def test_errors_are_located(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    e = error_of(tmp_path, text)
    assert (e.line, e.field) == (line, field)
    assert message in e.message


def test_row_length_mismatch(tmp_path: Path) -> None:
    e = error_of(tmp_path, "hostname,ip\n\nh1,10.0.0.1,extra\n")
    assert e.line == 3 and "3 cells, the header 2" in e.message


def test_duplicate_host_across_sources_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "hostname,ip\nweb,10.0.0.1\n", "a.csv")
    write(tmp_path, "hostname,ip\nweb,10.0.0.2\n", "b.csv")
    with pytest.raises(InputError, match=r"workload 'web' is already defined at .*a\.csv:2"):
        read_inventory([tmp_path])


def test_empty_cells_and_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, """
        FQDN,IP Addresses,Function,Team,Scope,Trust-Zone,Cost Center
        app-1,10.0.0.1 ; 10.0.0.2,api,,PCI;HIPAA,,
        """)
    (w,) = [w for w in read_inventory([path]).inventory.workloads if w.name == "app-1"]
    assert w.addresses == ("10.0.0.1", "10.0.0.2") and w.labels == (("role", "api"),)
    assert w.compliance == ("hipaa", "pci") and w.owner is None and w.zone is None
