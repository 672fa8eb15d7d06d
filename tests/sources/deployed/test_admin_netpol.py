"""AdminNetworkPolicy / BaselineAdminNetworkPolicy semantics on small hand-written clusters.

Every expected line is worked out by hand from the network-policy-api rules (ANP by priority, rules in order,
first match decides; Pass and unmatched traffic go to NetworkPolicies; then the BANP; then allow).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg.errors import InputError
from microseg.ir.model import Protocol
from microseg.ir.semantics import Connections
from microseg.pipeline import connectivity
from microseg.sources.deployed.admin_netpol import PortSet

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: x, namespace: a, labels: {app: x}}
spec: {containers: [{name: c, image: i, ports: [{name: web, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: y, namespace: b, labels: {app: y}}
spec: {containers: [{name: c, image: i}]}
"""
X, Y = "a/x[Pod]", "b/y[Pod]"
EVERYWHERE = "0.0.0.0-255.255.255.255[External]"


def anp(name: str, priority: int, ingress: str = "", egress: str = "", subject: str = "{namespaces: {matchLabels: "
        "{team: a}}}") -> str:
    return (f"apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: {name}}}\n"
            f"spec:\n  priority: {priority}\n  subject: {subject}\n"
            + (f"  ingress:\n{ingress}" if ingress else "") + (f"  egress:\n{egress}" if egress else ""))


def banp(ingress: str) -> str:
    return ("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"
            "metadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n" f"  ingress:\n{ingress}")


FROM_B = "    from: [{namespaces: {matchLabels: {team: b}}}]\n"


def rule(action: str, ports: str = "", peers: str = FROM_B) -> str:
    return f"  - name: r\n    action: {action}\n{peers}" + (f"    ports: {ports}\n" if ports else "")


def lines(tmp_path: Path, *docs: str) -> list[str]:
    f = tmp_path / "all.yaml"
    f.write_text("\n---\n".join((CLUSTER, *docs)))
    return connectivity([f], [f]).text.splitlines()


def into_x(tmp_path: Path, *docs: str) -> str | None:
    """What y may open to x (None: nothing)."""
    found = [line.split(" : ", 1)[1] for line in lines(tmp_path, *docs) if line.startswith(f"{Y} => {X} : ")]
    return found[0] if found else None


def test_no_policy_allows_everything(tmp_path: Path) -> None:
    assert lines(tmp_path) == [f"{EVERYWHERE} => {X} : All Connections", f"{EVERYWHERE} => {Y} : All Connections",
                               f"{X} => {EVERYWHERE} : All Connections", f"{X} => {Y} : All Connections",
                               f"{Y} => {EVERYWHERE} : All Connections", f"{Y} => {X} : All Connections"]


def test_lower_priority_number_wins(tmp_path: Path) -> None:
    deny, allow = rule("Deny"), rule("Allow")
    assert into_x(tmp_path, anp("d", 10, deny), anp("a", 20, allow)) is None
    assert into_x(tmp_path, anp("d", 30, deny), anp("a", 20, allow)) == "All Connections"


def test_rules_apply_in_order_and_the_first_match_decides(tmp_path: Path) -> None:
    allow_80_then_deny = rule("Allow", "[{portNumber: {protocol: TCP, port: 80}}]") + rule("Deny")
    assert into_x(tmp_path, anp("p", 5, allow_80_then_deny)) == "TCP 80"
    deny_then_allow_80 = rule("Deny") + rule("Allow", "[{portNumber: {protocol: TCP, port: 80}}]")
    assert into_x(tmp_path, anp("p", 5, deny_then_allow_80)) is None


def test_allow_overrides_networkpolicy_and_pass_delegates_to_it(tmp_path: Path) -> None:
    # A NetworkPolicy isolating x for ingress, allowing TCP 443 from anywhere.
    netpol = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: a}\n"
              "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress: [{ports: [{port: 443}]}]\n")
    assert into_x(tmp_path, netpol) == "TCP 443"
    assert into_x(tmp_path, netpol, anp("p", 5, rule("Allow", "[{portNumber: {protocol: UDP, port: 53}}]"))) == \
        "TCP 443,UDP 53"
    assert into_x(tmp_path, netpol, anp("p", 5, rule("Pass"))) == "TCP 443"
    # Denied by the ANP, 443 is gone although the NetworkPolicy allows it.
    assert into_x(tmp_path, netpol, anp("p", 5, rule("Deny", "[{portRange: {protocol: TCP, start: 400, end: 500}}]"))) \
        is None


def test_banp_only_sees_what_networkpolicies_left_undecided(tmp_path: Path) -> None:
    deny = "  - name: d\n    action: Deny\n    from: [{namespaces: {}}]\n"
    assert into_x(tmp_path, banp(deny)) is None
    # Pass skips the ANP tier; no NetworkPolicy selects x, so the BANP decides.
    assert into_x(tmp_path, banp(deny), anp("p", 5, rule("Pass"))) is None
    assert into_x(tmp_path, banp(deny), anp("p", 5, rule("Allow", "[{portNumber: {protocol: TCP, port: 22}}]"))) == \
        "TCP 22"
    netpol = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: a}\n"
              "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress: [{ports: [{port: 443}]}]\n")
    assert into_x(tmp_path, banp(deny), netpol) == "TCP 443"


def test_named_port_resolves_at_the_destination(tmp_path: Path) -> None:
    deny_web = rule("Deny", "[{namedPort: web}]")
    assert into_x(tmp_path, anp("p", 5, deny_web)) == "SCTP 1-65535,TCP 1-8079,8081-65535,UDP 1-65535"


def test_egress_networks_cut_the_external_ranges(tmp_path: Path) -> None:
    egress = "  - name: no-rfc1918\n    action: Deny\n    to: [{networks: [10.0.0.0/9, 10.128.0.0/9]}]\n"
    out = [line for line in lines(tmp_path, anp("e", 1, egress=egress)) if line.startswith(f"{X} => ")]
    # One range per side of 10.0.0.0/8 (the two /9 are one set); x reaches y and the outside but not 10/8.
    assert out == [f"{X} => 0.0.0.0-9.255.255.255[External] : All Connections",
                   f"{X} => 11.0.0.0-255.255.255.255[External] : All Connections",
                   f"{X} => {Y} : All Connections"]


def test_portset_algebra() -> None:
    full = PortSet.full()
    tcp80 = PortSet.of([(Protocol.TCP, 80, 80)])
    assert str((full - tcp80).connections()) == "SCTP 1-65535,TCP 1-79,81-65535,UDP 1-65535"
    assert (full - tcp80) | tcp80 == full
    assert str(((full - tcp80) | tcp80).connections()) == "All Connections"
    assert (tcp80 & PortSet.of([(Protocol.TCP, 1, 79)])).empty


@pytest.mark.parametrize(("doc", "field"), [
    (banp("").replace("name: default", "name: other"), "metadata.name"),
    (anp("p", 1001, rule("Allow")), "spec.priority"),
    (anp("p", 1, rule("Allow", peers="    from: []\n")), "spec.ingress[0].from"),
    (anp("p", 1, rule("Allow", "[{portNumber: {protocol: ICMP, port: 1}}]")),
     "spec.ingress[0].ports[0].portNumber.protocol"),
    (anp("p", 1, rule("Allow", "[{portRange: {protocol: TCP, start: 90, end: 80}}]")),
     "spec.ingress[0].ports[0].portRange.end"),
    (anp("p", 1, subject="{namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}", ingress=rule("Allow")),
     "spec.subject"),
])
def test_invalid_admin_policies_are_refused(tmp_path: Path, doc: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        lines(tmp_path, doc)
    assert err.value.field == field
    assert err.value.file == str(tmp_path / "all.yaml")


@pytest.mark.parametrize("case", ["ipblockstest", "test_with_named_ports", "with_end_port_example",
                                  "onlineboutique_workloads"])
def test_without_admin_policies_the_tiers_agree_with_the_networkpolicy_evaluator(shared: Path, case: str) -> None:
    from microseg.sources.deployed import admin_netpol, kubernetes
    from microseg.sources.inventory import discover
    from microseg.sources.inventory.kubernetes import KubernetesReader
    from microseg.sources.yamlpos import load_documents

    directory = shared / "conformance/netpol/cases" / case
    docs = [doc for path, display in discover([directory]) for doc in load_documents(path, display)]
    reader = KubernetesReader(lenient=True)
    for doc in docs:
        if isinstance(doc.data, dict):
            reader.add(doc)
    workloads = reader.build().workloads
    netpols = admin_netpol.read_policies(docs).netpols
    assert netpols
    expected = kubernetes.connectivity(netpols, workloads)
    assert expected  # something is allowed, so the comparison means something
    # NetworkPolicy's "every port of TCP, UDP and SCTP" and "everything" are the same set; PortSet says so.
    def same_footing(m: dict[tuple[str, str], Connections]) -> dict[tuple[str, str], Connections]:
        return {k: PortSet.from_connections(c).connections() for k, c in m.items()}

    assert admin_netpol.connectivity(netpols, (), workloads) == same_footing(expected)


def test_networks_0_0_0_0_slash_0_covers_pods_too(tmp_path: Path) -> None:
    # API reference: a networks rule on 0.0.0.0/0 allows or denies all IPv4 pod-to-pod traffic as well.
    deny_all = "  - name: no-egress\n    action: Deny\n    to: [{networks: [0.0.0.0/0]}]\n"
    assert [line for line in lines(tmp_path, anp("e", 1, egress=deny_all)) if line.startswith(f"{X} => ")] == []
    narrower = "  - name: no-rfc1918\n    action: Deny\n    to: [{networks: [10.0.0.0/8]}]\n"
    assert f"{X} => {Y} : All Connections" in lines(tmp_path, anp("e", 1, egress=narrower))
