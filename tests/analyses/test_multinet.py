"""Per-network connectivity (primary UDNs, NAD secondary networks with MultiNetworkPolicies, KubeVirt VMs).

Small hand-written clusters; every expected line is worked out by hand from the rules in the module docstring
(the corpus cases are run by tests/conformance). Malformed or unmodelled inputs must be refused.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from microseg.analyses import multinet
from microseg.errors import InputError, UnsupportedFeature
from microseg.pipeline import connectivity
from microseg.sources.inventory.kubernetes import KubernetesResult

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: blue, labels: {k8s.ovn.org/primary-user-defined-network: ""}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: k8s.ovn.org/v1
kind: UserDefinedNetwork
metadata: {name: tenant, namespace: blue}
spec: {topology: Layer2, layer2: {role: Primary, subnets: [192.168.0.0/16]}}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: shared, namespace: blue}
spec: {config: '{"cniVersion": "0.3.1", "name": "shared", "type": "macvlan"}'}
"""


def _pod(namespace: str, name: str, networks: str | None = None) -> str:
    annotations = f"\n  annotations: {{k8s.v1.cni.cncf.io/networks: {networks}}}" if networks else ""
    return f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}}}{annotations}
spec: {{containers: [{{name: c, image: busybox}}]}}
"""


POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-q1, namespace: plain}
spec: {podSelector: {matchLabels: {app: q1}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-p2, namespace: blue}
spec: {podSelector: {matchLabels: {app: p2}}, policyTypes: [Ingress]}
---
apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: p2-web
  namespace: blue
  annotations: {k8s.v1.cni.cncf.io/policy-for: blue/shared}
spec:
  podSelector: {matchLabels: {app: p2}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {}}]
    ports: [{protocol: TCP, port: 8080}]
"""


def _cluster(tmp_path: Path, extra: str = "", policies: str = POLICIES) -> Path:
    text = NAMESPACES + _pod("blue", "p1") + _pod("blue", "p2", "shared") + _pod("plain", "q1") \
        + _pod("plain", "q2", "blue/shared") + extra
    (tmp_path / "cluster.yaml").write_text(text)
    (tmp_path / "policies.yaml").write_text(policies)
    return tmp_path


EXT = "0.0.0.0-255.255.255.255[External]"


def test_udn_is_isolated_and_netpols_do_not_govern_the_secondary_network(tmp_path: Path) -> None:
    d = _cluster(tmp_path)
    got = connectivity([d], [d]).text
    # Pod network: q1 is isolated for ingress; q2 open. blue's pods are on their UDN, so never here.
    # UDN blue: p2 is isolated for ingress by deny-p2 (NetworkPolicies apply inside the UDN).
    # NAD shared: deny-p2 does not apply; the MultiNetworkPolicy lets any attached pod reach p2 on TCP 8080.
    assert got == textwrap.dedent(f"""\
        Permitted connectivity analyzed in Pod network:
        {EXT} => plain/q2[Pod] : All Connections
        plain/q1[Pod] => {EXT} : All Connections
        plain/q1[Pod] => plain/q2[Pod] : All Connections
        plain/q2[Pod] => {EXT} : All Connections

        Permitted connectivity analyzed in primary UDN blue:
        {EXT} => blue[udn]/p1[Pod] : All Connections
        blue[udn]/p1[Pod] => {EXT} : All Connections
        blue[udn]/p2[Pod] => {EXT} : All Connections
        blue[udn]/p2[Pod] => blue[udn]/p1[Pod] : All Connections

        Permitted connectivity analyzed in secondary NAD shared:
        blue/p2[Pod] => plain/q2[Pod] : All Connections
        plain/q2[Pod] => blue/p2[Pod] : TCP 8080

        Workload-to-Networks Mapping:
        blue/p1[Pod]: 
        \tPrimary Network: blue[UDN]
        blue/p2[Pod]: 
        \tPrimary Network: blue[UDN]
        \tSecondary Networks: shared[NAD]
        plain/q1[Pod]: 
        \tPrimary Network: pod-network
        plain/q2[Pod]: 
        \tPrimary Network: pod-network
        \tSecondary Networks: shared[NAD]
        """)  # noqa: W291 - the trailing space after "]:" is netpol-analyzer's


def test_port_focus_keeps_sections_with_a_connection_on_that_port(tmp_path: Path) -> None:
    d = _cluster(tmp_path)
    # On UDP 53 the NAD has only p2 -> q2 (q2 -> p2 is TCP 8080 only); no mapping trailer in this form.
    assert connectivity([d], [d], port="udp/53").text == textwrap.dedent(f"""\
        Permitted connections on UDP 53:
        Permitted connectivity analyzed in Pod network:
        {EXT} => plain/q2[Pod]
        plain/q1[Pod] => {EXT}
        plain/q1[Pod] => plain/q2[Pod]
        plain/q2[Pod] => {EXT}

        Permitted connectivity analyzed in primary UDN blue:
        {EXT} => blue[udn]/p1[Pod]
        blue[udn]/p1[Pod] => {EXT}
        blue[udn]/p2[Pod] => {EXT}
        blue[udn]/p2[Pod] => blue[udn]/p1[Pod]

        Permitted connectivity analyzed in secondary NAD shared:
        blue/p2[Pod] => plain/q2[Pod]
        """)


def test_an_empty_pod_network_section_is_left_out_of_the_focused_form(tmp_path: Path) -> None:
    deny_all = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: plain}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""
    (tmp_path / "cluster.yaml").write_text(NAMESPACES
                                           + _pod("plain", "q1", "blue/shared") + _pod("plain", "q2", "blue/shared"))
    (tmp_path / "policies.yaml").write_text(deny_all)
    got = connectivity([tmp_path], [tmp_path], port="tcp/80").text
    assert got == textwrap.dedent("""\
        Permitted connections on TCP 80:

        Permitted connectivity analyzed in secondary NAD shared:
        plain/q1[Pod] => plain/q2[Pod]
        plain/q2[Pod] => plain/q1[Pod]
        """)
    full = connectivity([tmp_path], [tmp_path]).text
    assert full.startswith("Permitted connectivity analyzed in Pod network:\n"
                           "All connections are not allowed for the workloads in the pod-network\n\n")


def test_secondary_udn_is_refused(tmp_path: Path) -> None:
    d = _cluster(tmp_path, extra="""---
apiVersion: k8s.ovn.org/v1
kind: UserDefinedNetwork
metadata: {name: side, namespace: plain}
spec: {topology: Layer3, layer3: {role: Secondary}}
""")
    with pytest.raises(UnsupportedFeature, match="UserDefinedNetwork side of role 'Secondary'"):
        connectivity([d], [d])


def test_multinetworkpolicy_with_ipblock_is_refused(tmp_path: Path) -> None:
    d = _cluster(tmp_path, policies=POLICIES.replace("[{namespaceSelector: {}, podSelector: {}}]",
                                                     "[{ipBlock: {cidr: 10.0.0.0/8}}]"))
    with pytest.raises(UnsupportedFeature, match="MultiNetworkPolicy blue/p2-web: ipBlock"):
        connectivity([d], [d])


def test_multinetworkpolicy_without_policy_for_is_an_input_error(tmp_path: Path) -> None:
    d = _cluster(tmp_path, policies=POLICIES.replace("annotations: {k8s.v1.cni.cncf.io/policy-for: blue/shared}",
                                                     "labels: {a: b}"))
    with pytest.raises(InputError, match="without the k8s.v1.cni.cncf.io/policy-for annotation"):
        connectivity([d], [d])


def test_attachment_to_a_missing_nad_is_an_input_error(tmp_path: Path) -> None:
    d = _cluster(tmp_path, extra=_pod("plain", "q3", "nowhere"))
    with pytest.raises(InputError, match="plain/q3 attaches to NetworkAttachmentDefinition plain/nowhere"):
        connectivity([d], [d])


def test_labelled_namespace_without_a_primary_network_is_refused(tmp_path: Path) -> None:
    d = _cluster(tmp_path, extra="""---
apiVersion: v1
kind: Namespace
metadata: {name: lost, labels: {k8s.ovn.org/primary-user-defined-network: ""}}
""" + _pod("lost", "r1"))
    with pytest.raises(UnsupportedFeature, match="namespace lost: labelled"):
        connectivity([d], [d])


def test_json_and_csv_are_refused_for_sectioned_output(tmp_path: Path) -> None:
    d = _cluster(tmp_path)
    for fmt in ("json", "csv"):
        with pytest.raises(UnsupportedFeature, match=f"--format {fmt}"):
            connectivity([d], [d], fmt=fmt)


def test_inputs_without_network_objects_keep_the_plain_form(tmp_path: Path) -> None:
    (tmp_path / "pods.yaml").write_text(_pod("plain", "q1") + _pod("plain", "q2"))
    assert connectivity([tmp_path], [tmp_path]).text == textwrap.dedent(f"""\
        {EXT} => plain/q1[Pod] : All Connections
        {EXT} => plain/q2[Pod] : All Connections
        plain/q1[Pod] => {EXT} : All Connections
        plain/q1[Pod] => plain/q2[Pod] : All Connections
        plain/q2[Pod] => {EXT} : All Connections
        plain/q2[Pod] => plain/q1[Pod] : All Connections
        """)


def _read(tmp_path: Path) -> tuple[multinet.NetworkObjects, KubernetesResult, dict[str, dict[str, str]]]:
    from microseg.sources.inventory import discover
    from microseg.sources.inventory.kubernetes import KubernetesReader
    from microseg.sources.yamlpos import load_documents

    docs = [doc for path, display in discover([tmp_path]) for doc in load_documents(path, display)]
    reader = KubernetesReader(lenient=True)
    for doc in docs:
        reader.add(doc)
    found = reader.build()
    return multinet.read_objects(docs), found, {n: dict(labels) for n, labels in found.namespaces}


def test_diff_keeps_primary_networks_apart_and_refuses_secondary_ones(tmp_path: Path) -> None:
    from microseg.analyses.conndiff import render_diff
    from microseg.analyses.connlist import PolicyInput, connectivity_diff

    (tmp_path / "cluster.yaml").write_text(NAMESPACES + _pod("blue", "p1") + _pod("plain", "q1"))
    objects, found, namespaces = _read(tmp_path)
    networks = multinet.primary_networks(objects, found.workloads, namespaces, found.secondary_networks)
    assert networks == {"blue/p1": "UDN:blue", "plain/q1": "pod-network"}
    flat = PolicyInput(found.workloads, ())
    isolated = PolicyInput(found.workloads, (), networks=networks)
    lines = render_diff(connectivity_diff(flat, isolated)).splitlines()[1:]
    assert lines == [
        "diff-type: removed, source: blue/p1[Pod], destination: plain/q1[Pod], ref1: All Connections, "
        "ref2: No Connections",
        "diff-type: removed, source: plain/q1[Pod], destination: blue/p1[Pod], ref1: All Connections, "
        "ref2: No Connections"]
    (tmp_path / "more.yaml").write_text(_pod("plain", "q2", "blue/shared"))
    objects, found, namespaces = _read(tmp_path)
    with pytest.raises(UnsupportedFeature, match="secondary networks"):
        multinet.primary_networks(objects, found.workloads, namespaces, found.secondary_networks)
