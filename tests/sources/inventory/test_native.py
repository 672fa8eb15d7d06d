"""Native microseg inventory files: the happy path, overrides across sources, located errors, the
committed JSON Schema, and order independence of the whole inventory loader."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microseg
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Dependency, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.inventory import load_inventory, native, read_inventory

INVENTORY = """
    apiVersion: microseg/v1
    kind: Inventory
    hosts:
      - name: bastion-1
        addresses: [10.20.0.10, "2001:db8:0:0::10"]
        labels: {role: bastion}
        ports: [{port: 22, protocol: TCP, name: ssh}]
        environment: prod
        zone: management
        owner: ops-team
        sensitivity: high
        compliance: [pci, sox, pci]
        ai_role: null
        identity: host/bastion-1
        location: vpc-prod/subnet-mgmt
        depends_on: [{destination: sock-shop/carts-db, protocol: TCP, port: 27017, reason: nightly backup}]
    services:
      - name: orders-rds
        addresses: [10.30.1.5]
        ports: [{port: 5432}]
        sensitivity: restricted
        compliance: [pci]
        location: vpc-prod/subnet-data
      - name: rag-vectors
        addresses: [10.30.2.7]
        ports: [{port: 6333, name: qdrant}]
        ai_role: vector-store
        exposure: internal
    external:
      - name: payments-psp
        cidrs: [198.51.100.0/24, "2001:db8:ff::/48"]
        ports: [{port: 443}]
        description: card processor
    overrides:
      - workload: sock-shop/front-end
        zone: internet-facing
        labels: {team: web, name: ignored-in-selector}
      - workload: sock-shop/carts-db
        sensitivity: high
        compliance: [pci]
        owner: carts-team
        depends_on: [{destination: orders-rds, port: 5432, reason: replication}]
      - workload: external:payments-psp
        compliance: [pci]
    """


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture()
def manifests(shared: Path) -> Path:
    return shared / "samples/apps/sock-shop/deploy/kubernetes/manifests"


def test_native_happy_path(tmp_path: Path, manifests: Path) -> None:
    inv_file = write(tmp_path, "inventory.yaml", INVENTORY)
    inv = load_inventory([inv_file, manifests])
    by_name = inv.by_name()
    assert [n for n in by_name if not n.startswith("sock-shop/")] == [
        "bastion-1", "external:internet", "external:payments-psp", "orders-rds", "rag-vectors"]
    assert by_name["bastion-1"] == Workload(
        name="bastion-1", kind=WorkloadKind.HOST, labels=(("role", "bastion"),),
        addresses=("10.20.0.10", "2001:db8::10"), ports=(ListenPort(port=22, protocol=Protocol.TCP, name="ssh"),),
        environment="prod", zone="management", owner="ops-team", sensitivity="high", compliance=("pci", "sox"),
        identity="host/bastion-1", location="vpc-prod/subnet-mgmt",
        declared=(Dependency(destination="sock-shop/carts-db", port=27017, reason="nightly backup"),))
    assert by_name["orders-rds"] == Workload(
        name="orders-rds", kind=WorkloadKind.SERVICE, addresses=("10.30.1.5",), ports=(ListenPort(port=5432),),
        sensitivity="restricted", compliance=("pci",), location="vpc-prod/subnet-data")
    assert by_name["rag-vectors"].ai_role == "vector-store"
    assert by_name["external:payments-psp"] == Workload(
        name="external:payments-psp", kind=WorkloadKind.EXTERNAL, addresses=("198.51.100.0/24", "2001:db8:ff::/48"),
        ports=(ListenPort(port=443),), compliance=("pci",))
    assert by_name["external:internet"] == Workload(
        name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0", "::/0"),
        except_addresses=("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                          "192.168.0.0/16", "224.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))
    # Overrides reach Kubernetes workloads; labels merge into labels, never into the selector.
    front = by_name["sock-shop/front-end"]
    assert (front.zone, front.labels, front.selector) == (
        "internet-facing", (("name", "ignored-in-selector"), ("team", "web")), (("name", "front-end"),))
    carts_db = by_name["sock-shop/carts-db"]
    assert (carts_db.sensitivity, carts_db.compliance, carts_db.owner, carts_db.declared) == (
        "high", ("pci",), "carts-team", (Dependency(destination="orders-rds", port=5432, reason="replication"),))
    assert inv.bindings == (
        AddressBinding(ip="10.20.0.10", workload="bastion-1", source=f"{inv_file}#host bastion-1"),
        AddressBinding(ip="10.30.1.5", workload="orders-rds", source=f"{inv_file}#service orders-rds"),
        AddressBinding(ip="10.30.2.7", workload="rag-vectors", source=f"{inv_file}#service rag-vectors"),
        AddressBinding(ip="2001:db8::10", workload="bastion-1", source=f"{inv_file}#host bastion-1"),
    )


def test_file_may_define_the_internet_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        external:
          - name: internet
            cidrs: [0.0.0.0/0]
            except_cidrs: [10.0.0.0/8]
        """)
    internet = [w for w in load_inventory([path]).workloads if w.name == "external:internet"]
    assert internet == [Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",),
                                 except_addresses=("10.0.0.0/8",))]


def test_exposure_override_records_where(tmp_path: Path, manifests: Path) -> None:
    path = write(tmp_path, "inv.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        overrides:
          - workload: sock-shop/front-end
            exposure: internal
        """)
    front = load_inventory([path, manifests]).by_name()["sock-shop/front-end"]
    assert (front.exposure, front.exposure_reason) == ("internal", f"override in {path}:4")


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: db-1
         addresses: [10.0.0.1]
         sensitivty: high
     """, 6, "hosts[0].sensitivty", "unknown field 'sensitivty'"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     external:
       - name: psp
         description: card processor
         cidrs:
           - 198.51.100.0/24
           - 198.51.100.0/33
     """, 8, "external[0].cidrs[1]", "'198.51.100.0/33' is not a valid CIDR"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     external:
       - name: office
         cidrs: [203.0.113.7/24]
     """, 5, "external[0].cidrs[0]", "has host bits set"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: db-1
         addresses: [10.0.0.0/24]
     """, 5, "hosts[0].addresses[0]", "is not an IP address"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - addresses: [10.0.0.1]
     """, 4, "hosts[0].name", "Field required"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: db-1
         sensitivity: secret
     """, 5, "hosts[0].sensitivity", "Input should be 'low', 'medium', 'high' or 'restricted'"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     overrides:
       - workload: sock-shop/front-end
         zone: edge
       - workload: shop/frontend
         zone: internet-facing
     """, 6, "overrides[1].workload", "override names workload 'shop/frontend', which no inventory source defines"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: db-1
         depends_on:
           - {destination: sock-shop/cart, port: 80}
     """, 6, "hosts[0].depends_on[0].destination", "declared dependency on 'sock-shop/cart'"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: sock-shop/carts
     """, 4, "hosts[0].name", "workload 'sock-shop/carts' is already defined at"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     overrides:
       - workload: sock-shop/carts
         owner: team-a
       - workload: sock-shop/carts
         owner: team-b
     """, 6, "overrides[1].workload", "override sets owner of 'sock-shop/carts' to 'team-b', but"),
    ("""
     apiVersion: microseg/v2
     kind: Inventory
     """, 1, "apiVersion", "Input should be 'microseg/v1'"),
    ("""
     apiVersion: microseg/v1
     kind: Inventory
     hosts:
       - name: a
         labels: {tier: [x]}
     """, 5, "hosts[0].labels.tier", "Input should be a valid string"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, manifests: Path, text: str, line: int, field: str,
                                         message: str) -> None:
    path = write(tmp_path, "inventory.yaml", text)
    with pytest.raises(InputError) as err:
        load_inventory([path, manifests])
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)
    assert message in err.value.message


def test_bad_yaml_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inventory.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        hosts:
          - name: db-1
            addresses: [10.0.0.1
          - name: db-2
        """)
    with pytest.raises(InputError) as err:
        load_inventory([path])
    assert (err.value.file, err.value.line) == (str(path), 6)
    assert "malformed YAML" in err.value.message


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "inventory.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        hosts:
          - name: a
            adresses: [10.0.0.1]
          - name: b
            ports: [{port: 70000}]
        """)
    with pytest.raises(InputError) as err:
        load_inventory([path])
    assert (err.value.line, err.value.field) == (5, "hosts[0].adresses")
    assert "and 1 more: line 7 [hosts[1].ports[0].port]" in err.value.message


def test_one_ip_on_two_hosts_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "inventory.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        hosts:
          - {name: a, addresses: [10.0.0.1]}
          - {name: b, addresses: [10.0.0.1]}
        """)
    with pytest.raises(InputError, match=r"IP 10\.0\.0\.1 is bound to a .* and to b .* overlapping"):
        load_inventory([path])


def test_committed_schema_is_current() -> None:
    committed = Path(microseg.__file__).parent / "schemas" / "inventory.schema.json"
    assert committed.read_text() == native.schema_text(), (
        "regenerate: python -m microseg.sources.inventory.native --schema > src/microseg/schemas/inventory.schema.json")
    schema = json.loads(committed.read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"apiVersion", "kind", "hosts", "services", "external", "overrides"}


def test_schema_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert native.main(["--schema"]) == 0
    assert capsys.readouterr().out == native.schema_text()


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> list[Path]:
    tmp = tmp_path_factory.mktemp("mixed")
    manifests = shared / "samples/apps/sock-shop/deploy/kubernetes/manifests"
    pods = shared / "conformance/netpol/cases/onlineboutique/pods.yaml"
    extra = write(tmp, "extra.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        hosts:
          - {name: backup-1, addresses: [10.9.0.1], depends_on: [{destination: default/redis-cart, port: 6379}]}
        overrides:
          - {workload: default/frontend, zone: edge}
        """)
    return [write(tmp, "inventory.yaml", INVENTORY), extra, pods, *sorted(manifests.iterdir())]


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_same_files_in_any_order_give_the_same_inventory(mixed_files: list[Path], data: st.DataObject) -> None:
    baseline = read_inventory(mixed_files)
    order = data.draw(st.permutations(mixed_files))
    again = read_inventory(order)
    assert again.inventory == baseline.inventory
    assert again.inventory.model_dump_json() == baseline.inventory.model_dump_json()
    assert again.report == baseline.report
