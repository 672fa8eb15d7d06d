"""Compiled NetworkPolicies, evaluated by network-config-analyzer, equal microseg's own evaluation.

NCA is a required component: without .nca-venv these tests fail (run `make nca` or
scripts/setup-nca.sh), they are never skipped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.backends import Mode
from microseg.backends.kubernetes import BACKEND
from microseg.ir.model import (
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    PortRange,
    Protocol,
    Workload,
    WorkloadKind,
)
from microseg.ir.semantics import Connections
from tests.oracle import nca

GOLDEN = Path(__file__).parent / "golden" / "kubernetes"
WHY = Justification(kind=JustificationKind.DECLARED, text="test")


def golden_policy(case: str) -> Policy:
    return Policy.model_validate(yaml.safe_load((GOLDEN / case / "policy.yaml").read_text(encoding="utf-8")))


def pod(name: str, **labels: str) -> Workload:
    ns, short = name.split("/", 1)
    sel = labels or {"app": short}
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector=sel, labels=sel)


def allow(rid: str, src: list[str], dst: list[str], proto: Protocol, *ports: str) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=ports,
                     justification=WHY)


def overlapping_peers() -> Policy:
    """External peers that overlap each other and a host, both directions, cross-namespace, SCTP."""
    internet = Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",),
                        except_addresses=("10.0.0.0/8",))
    office = Workload(name="external:office", kind=WorkloadKind.EXTERNAL, addresses=("198.51.100.0/24",))
    admin = Workload(name="admin-01", kind=WorkloadKind.HOST, addresses=("10.9.0.4/32", "10.9.0.5/32"))
    svc = Workload(name="rds-orders", kind=WorkloadKind.SERVICE, addresses=("10.50.0.0/28",))
    return Policy(
        workloads=(pod("front/web"), pod("back/orders"), pod("back/worker"), pod("kube-system/coredns",
                   **{"k8s-app": "kube-dns"}), internet, office, admin, svc),
        rules=(allow("AR-1", ["front/web"], ["back/orders"], Protocol.TCP, "8080", "9000-9100"),
               allow("AR-2", ["back/orders"], ["rds-orders"], Protocol.TCP, "5432"),
               allow("AR-3", ["external:office", "admin-01"], ["front/web"], Protocol.TCP, "443"),
               allow("AR-4", ["external:internet"], ["front/web"], Protocol.TCP, "80"),
               allow("AR-5", ["back/worker"], ["external:internet"], Protocol.TCP, "443"),
               allow("AR-6", ["back/worker", "back/orders"], ["kube-system/coredns"], Protocol.UDP, "53"),
               allow("AR-7", ["back/worker"], ["back/orders"], Protocol.SCTP, "3868"),
               allow("AR-8", ["admin-01"], ["back/orders", "back/worker"], Protocol.TCP, "22"),
               allow("AR-9", ["back/orders"], ["back/worker"], Protocol.UDP, "0-65535")),
        dns_resolvers=("kube-system/coredns",),
    )


POLICIES = {"shop": lambda: golden_policy("shop"), "edge-cases": lambda: golden_policy("edge-cases"),
            "overlapping-peers": overlapping_peers}


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_nca_agrees(name: str, mode: str, tmp_path: Path) -> None:
    policy = POLICIES[name]()
    m: Mode = "observe" if mode == "observe" else "enforce"
    nca.assert_nca_agrees(policy, BACKEND.compile(policy, mode=m), tmp_path, mode=m)


_UNIVERSE = (pod("a/web"), pod("a/db"), pod("b/api"), pod("kube-system/dns", **{"k8s-app": "dns"}),
             Workload(name="external:net", kind=WorkloadKind.EXTERNAL, addresses=("192.0.2.0/24", "2001:db8::/64"),
                      except_addresses=("192.0.2.128/26",)),
             Workload(name="h1", kind=WorkloadKind.HOST, addresses=("10.1.1.1/32",)))
_NAMES = [w.name for w in _UNIVERSE]
_port_range = st.tuples(st.integers(1, 65535), st.integers(0, 300)).map(lambda t: f"{t[0]}-{min(65535, sum(t))}")
_rules = st.lists(st.tuples(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True),
                            st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True),
                            st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.SCTP]),
                            st.lists(st.one_of(_port_range, st.sampled_from(["53", "443", "1-65535"])),
                                     min_size=1, max_size=3)),
                  min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=_rules, mode=st.sampled_from(["enforce", "observe"]))
def test_compile_then_nca_gives_the_same_connectivity(rules: list[tuple[list[str], list[str], Protocol, list[str]]],
                                                     mode: Mode) -> None:
    """The law: compile, evaluate the output independently, get the policy's connectivity back."""
    policy = Policy(workloads=_UNIVERSE, rules=tuple(
        allow(f"AR-{i}", src, dst, proto, *ports) for i, (src, dst, proto, ports) in enumerate(rules)))
    with tempfile.TemporaryDirectory() as tmp:
        nca.assert_nca_agrees(policy, BACKEND.compile(policy, mode=mode), Path(tmp), mode=mode)


def test_nca_connectivity_of_the_shop(tmp_path: Path) -> None:
    """The public helper, spelled out on the golden shop policy: a few pairs by hand."""
    policy = golden_policy("shop")
    manifest_dir = tmp_path / "in"
    manifest_dir.mkdir()
    docs, _ = nca.workload_manifests(policy)
    (manifest_dir / "workloads.yaml").write_text(yaml.safe_dump_all(docs))
    for rel, text in BACKEND.compile(policy).items():
        (manifest_dir / rel).write_text(text)
    conn = nca.connectivity(manifest_dir)
    assert conn["shop/web", "shop/db"] == "TCP 5432"
    assert conn["shop/web", "payments/api"] == "TCP 8443-8444"
    assert conn["shop/db", "kube-system/coredns"] == "TCP 53,UDP 53"
    assert conn["10.20.0.7", "shop/db"] == "TCP 5432"
    assert conn["kube-system/coredns", "0.0.0.0-255.255.255.255"] == "All Connections"
    assert ("shop/db", "shop/web") not in conn and ("payments/api", "shop/web") not in conn
    assert conn["payments/api", "203.0.113.0-203.0.113.127"] == "TCP 443"


def test_the_oracle_catches_a_wider_policy(tmp_path: Path) -> None:
    """Not vacuous: drop the shop namespace's default deny and NCA must disagree."""
    policy = golden_policy("shop")
    files = BACKEND.compile(policy)
    head, _, rest = files["shop.yaml"].partition("---\n")
    files["shop.yaml"] = head + rest.split("---\n", 1)[1]  # the first document is microseg-baseline
    with pytest.raises(AssertionError, match="shop/cache -> shop/web: microseg No Connections, NCA All Connections"):
        nca.assert_nca_agrees(policy, files, tmp_path)


def test_the_oracle_catches_a_wider_port(tmp_path: Path) -> None:
    policy = golden_policy("shop")
    files = BACKEND.compile(policy)
    files["payments.yaml"] = files["payments.yaml"].replace("endPort: 8444", "endPort: 8445")
    files["shop.yaml"] = files["shop.yaml"].replace("endPort: 8444", "endPort: 8445")
    with pytest.raises(AssertionError, match="shop/web -> payments/api: microseg TCP 8443-8444, NCA TCP 8443-8445"):
        nca.assert_nca_agrees(policy, files, tmp_path)


def test_missing_nca_fails_with_the_setup_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(nca, "NCA_VENV", tmp_path / "absent")
    with pytest.raises(pytest.fail.Exception, match="make nca"):
        nca.nca_executable()


# -- the parser of NCA's output (no NCA needed) --------------------------------------------------------------


@pytest.mark.parametrize(("text", "canonical"), [
    ("All connections", "All Connections"),
    ("{protocols:TCP,dst_ports:53,80,5432-5440}", "TCP 53,80,5432-5440"),
    ("{protocols:TCP, UDP,dst_ports:53}", "TCP 53,UDP 53"),
    ("{protocols:TCP}", "TCP 1-65535"),
    ("{protocols:SCTP,dst_ports:1000-2000},{protocols:UDP,dst_ports:53}", "SCTP 1000-2000,UDP 53"),
    ("All but {protocols:all but TCP}", "TCP 1-65535"),
])
def test_parse_connections(text: str, canonical: str) -> None:
    assert str(nca.parse_connections(text)) == canonical


def test_parse_connections_complement() -> None:
    conns = nca.parse_connections("All but {protocols:TCP,dst_ports:80}")
    as_dict = conns.as_dict()
    assert as_dict[6] == ((1, 79), (81, 65535)) and as_dict[17] == ((1, 65535),) and len(as_dict) == 256


@pytest.mark.parametrize("text", ["{protocols:TCP,src_ports:80}", "{protocols:QUIC}", "something else"])
def test_parse_connections_fails_loudly(text: str) -> None:
    with pytest.raises(nca.NcaOutputError):
        nca.parse_connections(text)


def test_canonical_form_of_microseg_connections() -> None:
    c = Connections.of([(Protocol.UDP, PortRange(start=53, end=53)), (Protocol.TCP, PortRange(start=0, end=1023)),
                        (Protocol.TCP, PortRange(start=8080, end=8080))])
    assert nca.canonical(c) == "TCP 1-1023,8080,UDP 53"
    assert nca.canonical(Connections(everything=True)) == "All Connections"


def test_parse_connectivity_lines() -> None:
    lines = nca.parse_connectivity(
        "shop/web[Deployment] => 10.0.0.0-10.0.255.255 : {protocols:TCP,dst_ports:443}\n"
        "2001:db8::-2001:db8::ff => shop/db[StatefulSet] : All connections\n")
    assert lines[0].src == "shop/web" and str(lines[0].dst[0]) == "10.0.0.0-10.0.255.255"
    assert str(lines[1].src[0]) == "2001:db8::-2001:db8::ff" and lines[1].dst == "shop/db"
