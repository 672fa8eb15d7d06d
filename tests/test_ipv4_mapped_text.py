"""IPv4-mapped IPv6 addresses and networks are written as ``::ffff:192.0.2.1`` (RFC 5952 section 5) by every
module that writes an address or a network as text: inventory readers, mapping, analyses, back ends.

``str()`` writes them so only from Python 3.13 (CPython gh-87799); up to 3.12 it writes ``::ffff:c000:201``.
The same input must give the same store, report and policy on every Python version, and the flow store
writes them as canonical_ip does (tests/sources/flows/test_canonical_ip.py): the bindings must match."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from microseg.analyses import connlist, posture
from microseg.backends import get_backend
from microseg.engine.mapping import prepare_bindings
from microseg.ir.model import (
    AddressBinding,
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)
from microseg.sources.deployed import admin_netpol
from microseg.sources.inventory import read_inventory

MAPPED = "::ffff:10.0.0.5"  # 3.11 and 3.12 write ::ffff:a00:5
MAPPED_NET = "::ffff:198.51.100.0/120"  # ::ffff:c633:6400/120


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_native_inventory(tmp_path: Path) -> None:
    path = _write(tmp_path / "inv.yaml", """
        apiVersion: microseg/v1
        kind: Inventory
        hosts:
          - name: h1
            addresses: ["::FFFF:a00:5"]
        external:
          - name: partner
            cidrs: ["::ffff:c633:6400/120"]
        """)
    inv = read_inventory([path]).inventory
    wl = {w.name: w for w in inv.workloads}
    assert wl["h1"].addresses == (MAPPED,)
    assert wl["external:partner"].addresses == (MAPPED_NET,)
    assert {(b.ip, b.workload) for b in inv.bindings} == {(MAPPED, "h1")}


def test_cmdb_csv_inventory(tmp_path: Path) -> None:
    path = _write(tmp_path / "cmdb.csv", """
        hostname,ip,subnet
        h1,::ffff:a00:5,::ffff:a00:0/120
        """)
    inv = read_inventory([path]).inventory
    h1 = next(w for w in inv.workloads if w.name == "h1")
    assert (h1.addresses, h1.label_map["subnet"], h1.location) == ((MAPPED,), "::ffff:10.0.0.0/120",
                                                                    "::ffff:10.0.0.0/120")
    assert {b.ip for b in inv.bindings} == {MAPPED}


def test_aws_ec2_inventory(tmp_path: Path) -> None:
    path = tmp_path / "ec2.json"
    path.write_text(json.dumps({"Reservations": [{"Instances": [{
        "InstanceId": "i-1", "State": {"Name": "running"}, "PrivateIpAddress": "10.0.0.1",
        "NetworkInterfaces": [{"NetworkInterfaceId": "eni-1", "Ipv6Addresses": [{"Ipv6Address": "::FFFF:a00:5"}]}],
    }]}]}))
    inv = read_inventory([path]).inventory
    assert {b.ip for b in inv.bindings} == {"10.0.0.1", MAPPED}
    assert MAPPED in next(w for w in inv.workloads if w.kind == WorkloadKind.HOST).addresses


def test_kubernetes_inventory_pod_and_cluster_ips(tmp_path: Path) -> None:
    pods = _write(tmp_path / "pods.yaml", """
        apiVersion: v1
        kind: Pod
        metadata:
          {name: web-1, namespace: shop, uid: u1, labels: {app: web}, creationTimestamp: "2026-01-02T03:00:00Z"}
        spec: {containers: [{name: web, image: web:1}]}
        status:
          {phase: Running, podIP: "::ffff:a00:5", podIPs: [{ip: "::ffff:a00:5"}], startTime: "2026-01-02T03:00:00Z"}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          clusterIP: "::FFFF:a60:14"
          selector: {app: web}
          ports: [{port: 80}]
        """)
    inv = read_inventory([pods]).inventory
    assert {b.ip for b in inv.bindings} == {MAPPED, "::ffff:10.96.0.20"}


def test_mapping_writes_bindings_as_the_flow_store_writes_addresses() -> None:
    prepared = prepare_bindings([AddressBinding(ip="::FFFF:a00:5", workload="h1"),
                                 AddressBinding(ip="2001:DB8::1", workload="h2")])
    assert sorted(prepared.static) == [("2001:db8::1", "h2"), (MAPPED, "h1")]


def test_admin_netpol_external_workload() -> None:
    w = admin_netpol.external_workload("x", ipaddress.ip_address("::ffff:198.51.100.0"),
                                       ipaddress.ip_address("::ffff:198.51.100.255"))
    assert w.addresses == (MAPPED_NET,)


def test_posture_atom_name_and_workload() -> None:
    net = ipaddress.ip_network(MAPPED_NET)
    atom = posture._Atom(6, int(net.network_address), int(net.broadcast_address))
    assert atom.name == "ip:::ffff:198.51.100.0-::ffff:198.51.100.255"
    assert atom.workload().addresses == (MAPPED_NET,)


def test_connlist_external_ranges() -> None:
    net = ipaddress.ip_network(MAPPED_NET)
    points = {(6, int(net.network_address)), (6, int(net.broadcast_address) + 1)}
    pod = Workload(name="shop/web", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "web"},
                   labels={"app": "web"})
    cl = connlist.connection_list([pod], [], extra_points=(points, points))
    ranges = {(p.first, p.last) for p in cl.peers.values() if p.first is not None}
    assert ("::ffff:198.51.100.0", "::ffff:198.51.100.255") in ranges
    assert "::ffff:198.51.100.0-::ffff:198.51.100.255[External]" in cl.peers
    assert not any("c633" in d for d in cl.peers)
    # merging adjacent ranges names the run the same way
    first, second = "::ffff:198.51.100.0-::ffff:198.51.100.127", "::ffff:198.51.100.128-::ffff:198.51.100.255"
    peers = {f"{r}[External]": connlist.Peer(f"{r}[External]", "External", first=r.split("-")[0],
                                             last=r.split("-")[1]) for r in (first, second)}
    changes = [connlist.PairChange("added", f"{r}[External]", "shop/web", None, None, "") for r in (first, second)]
    merged = connlist.merge_adjacent_ranges(changes, peers)
    assert [c.source for c in merged] == ["::ffff:198.51.100.0-::ffff:198.51.100.255[External]"]


WHY = Justification(kind=JustificationKind.DECLARED, text="test")


def _policy() -> Policy:
    wl = (Workload(name="web-01", kind=WorkloadKind.HOST, addresses=("10.0.0.5/32", "::ffff:a00:6/128")),
          Workload(name="shop/web", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "web"},
                   labels={"app": "web"}, service_account="web"),
          Workload(name="external:partner", kind=WorkloadKind.EXTERNAL,
                   addresses=("198.51.100.0/24", "::ffff:c633:6400/120"),
                   except_addresses=("::ffff:c633:6480/121",)))
    zones = {"web-01": "app", "shop/web": "app", "external:partner": "external"}
    rules = (AllowRule(id="AR-web-partner", sources=("shop/web",), destinations=("external:partner",),
                       protocol=Protocol.TCP, ports=("443",), justification=WHY),
             AllowRule(id="AR-partner-host", sources=("external:partner",), destinations=("web-01",),
                       protocol=Protocol.TCP, ports=("443",), justification=WHY),
             AllowRule(id="AR-host-partner", sources=("web-01",), destinations=("external:partner",),
                       protocol=Protocol.TCP, ports=("443",), justification=WHY),
             AllowRule(id="AR-partner-web", sources=("external:partner",), destinations=("shop/web",),
                       protocol=Protocol.TCP, ports=("443",), justification=WHY))
    return Policy(workloads=wl, rules=rules,
                  segments=tuple(Segment(name=z, trust=50) for z in sorted(set(zones.values()))),
                  assignments=tuple(ZoneAssignment(workload=n, zone=z, reason="test")
                                    for n, z in sorted(zones.items())))


# Each target with the IPv4-mapped text it must write: the partner's /120 minus its upper /121 (an except, or
# the /121 left), and for the host targets the host's own address too.
TARGETS = {
    "kubernetes": ["::ffff:198.51.100.0/120", "::ffff:198.51.100.128/121"],
    "kubernetes_admin": ["::ffff:198.51.100.0/121"],
    "cilium": ["::ffff:198.51.100.0/120", "::ffff:198.51.100.128/121"],
    "calico": ["::ffff:198.51.100.0/120", "::ffff:198.51.100.128/121"],
    "istio": ["::ffff:198.51.100.0/120", "::ffff:198.51.100.128/121"],
    "nftables": ["::ffff:198.51.100.0/121", "::ffff:10.0.0.6"],
    "aws_sg": ["::ffff:198.51.100.0/121"],
    "panos": ["::ffff:198.51.100.0/121", "::ffff:10.0.0.6/128"],
    "fortigate": ["::ffff:198.51.100.0/121", "::ffff:10.0.0.6/128"],
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_back_ends_write_ipv4_mapped_networks_with_the_dotted_quad(target: str) -> None:
    policy = _policy()
    # The Kubernetes targets: the pod's rules (Istio governs its ingress only); the others: the host's.
    ids = {"istio": {"AR-partner-web"}}.get(target, {"AR-web-partner", "AR-partner-web"}) if target in (
        "kubernetes", "kubernetes_admin", "cilium", "calico", "istio") else {"AR-partner-host", "AR-host-partner"}
    policy = policy.model_copy(update={"rules": tuple(r for r in policy.rules if r.id in ids)})
    text = "\n".join(get_backend(target).compile(policy).values())
    for written in TARGETS[target]:
        assert written in text, (target, written)
    assert "c633" not in text and "a00:6" not in text
