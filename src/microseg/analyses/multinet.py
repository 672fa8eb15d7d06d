"""Connectivity per network for clusters with more than the pod network (OVN-Kubernetes, Multus, KubeVirt).

A pod (or KubeVirt VirtualMachine) has one *primary* network and may attach to *secondary* ones; each
network is its own connectivity domain, and the connection list is printed per network, in the sectioned
form of np-guard's netpol-analyzer (the conformance corpus's ``nad_*``, ``udn_*``, ``cudn_*`` cases):

- **Primary network.** The cluster's pod network, unless the workload's namespace is served by a primary
  UserDefinedNetwork (a ``UserDefinedNetwork`` of role ``Primary`` in the namespace) or a primary
  ClusterUserDefinedNetwork (role ``Primary``, ``spec.namespaceSelector`` selecting the namespace). OVN-K
  isolates a primary UDN: its pods reach neither the pod network nor other UDNs, only each other and the
  outside world (OVN-Kubernetes docs, "User Defined Networks": network isolation between UDNs and the
  default network; NetworkPolicies apply inside one). So each UDN / CUDN is evaluated on its own: its
  members and the external ranges, the NetworkPolicies of its namespaces, and the AdminNetworkPolicies and
  BaselineAdminNetworkPolicy with their peers limited to the members (as netpol-analyzer does: the
  corpus's udn_test_3, udn_and_vms_test_3). Pod-network workloads likewise with the other NetworkPolicies.
- **Secondary networks** (Multus NetworkAttachmentDefinitions, attached by the pod annotation
  ``k8s.v1.cni.cncf.io/networks`` or a VM's ``multus`` network): NetworkPolicies do not apply there; a
  MultiNetworkPolicy (same spec as a NetworkPolicy) applies to the networks its
  ``k8s.v1.cni.cncf.io/policy-for`` annotation names (k8snetworkplumbingwg/multi-networkpolicy, README:
  "policy-for ... specifies which network attachment definitions the policy applies to"). Only the
  attached workloads are peers; no external range is listed. NADs of the same name in several namespaces
  are one section (the corpus's ``nad_test_4``: ``ns1/l2-network`` and ``ns2/l2-network``).

Fail closed: what is not modelled is refused with an error naming the object: UDN/CUDN of role
``Secondary``, a namespace labelled for a primary UDN without one (or a UDN in an unlabelled namespace),
a MultiNetworkPolicy with ``ipBlock`` peers, an attachment to a NAD missing from the input, formats
other than text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from microseg.analyses.conndiff import render_connections
from microseg.analyses.connlist import EXTERNAL_KIND, ConnectionList, connection_list, workload_display
from microseg.errors import InputError, UnsupportedFeature
from microseg.ir.model import Protocol, Workload, WorkloadKind
from microseg.sources.deployed import admin_netpol, kubernetes
from microseg.sources.yamlpos import Document, NodePath

NAD_KIND = "NetworkAttachmentDefinition"
MNP_KIND = "MultiNetworkPolicy"
UDN_KIND = "UserDefinedNetwork"
CUDN_KIND = "ClusterUserDefinedNetwork"
KINDS = frozenset({NAD_KIND, MNP_KIND, UDN_KIND, CUDN_KIND})
# OVN-Kubernetes: a namespace meant for a primary UDN carries this label (set at creation).
PRIMARY_UDN_LABEL = "k8s.ovn.org/primary-user-defined-network"
POLICY_FOR = "k8s.v1.cni.cncf.io/policy-for"
POD_NETWORK = "pod-network"
ALL_UDN_MESSAGE = "all input workloads are configured with (C)UDN as their primary network interface"
NONE_ALLOWED_MESSAGE = "All connections are not allowed for the workloads in the pod-network"


@dataclass(frozen=True)
class MultiNetPolicy:
    """A MultiNetworkPolicy: its rules (read as a NetworkPolicy) and the NAD names it is for."""

    policy: kubernetes.NetPol
    networks: frozenset[str]


@dataclass(frozen=True)
class NetworkObjects:
    """The multi-network objects of the input."""

    nads: frozenset[str] = frozenset()  # "namespace/name"
    mnps: tuple[MultiNetPolicy, ...] = ()
    udns: Mapping[str, str] = field(default_factory=dict)  # namespace -> UDN name (primary only)
    cudns: tuple[tuple[str, kubernetes.LabelSelector], ...] = ()  # (name, namespaceSelector), primary only
    count: int = 0  # objects of the four kinds read (any role)

    @property
    def present(self) -> bool:
        return self.count > 0


def read_objects(docs: Iterable[Document]) -> NetworkObjects:
    """NADs, MultiNetworkPolicies, UDNs and CUDNs of ``docs`` (inside ``List`` objects too); others ignored.

    The same object read twice (inventory and policy paths naming the same file) counts once.
    """
    nads: set[str] = set()
    mnps: dict[tuple[str, str], MultiNetPolicy] = {}
    udns: dict[str, str] = {}
    cudns: dict[str, kubernetes.LabelSelector] = {}
    seen: set[tuple[str, int, NodePath]] = set()

    def visit(doc: Document, obj: object, at: NodePath) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
            for i, item in enumerate(obj["items"]):
                visit(doc, item, (*at, "items", i))
            return
        if kind not in KINDS or (doc.file, doc.index, at) in seen:
            return
        seen.add((doc.file, doc.index, at))
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise doc.error(f"{kind} without a name", (*at, "metadata", "name"))
        namespace = meta.get("namespace", "default")
        if not isinstance(namespace, str):
            raise doc.error("namespace must be a string", (*at, "metadata", "namespace"))
        if kind == NAD_KIND:
            nads.add(f"{namespace}/{name}")
        elif kind == MNP_KIND:
            mnps[(namespace, name)] = _mnp(doc, obj, at, namespace)
        elif kind == UDN_KIND:
            if _role(doc, obj.get("spec"), (*at, "spec"), kind, name) == "Primary":
                if namespace in udns and udns[namespace] != name:
                    raise doc.error(f"namespace {namespace} has two primary UserDefinedNetworks "
                                    f"({udns[namespace]}, {name})", (*at, "metadata", "name"))
                udns[namespace] = name
        else:
            spec = obj.get("spec")
            spec = spec if isinstance(spec, dict) else {}
            if _role(doc, spec.get("network"), (*at, "spec", "network"), kind, name) == "Primary":
                cudns[name] = kubernetes.parse_selector(doc, spec.get("namespaceSelector"),
                                                        (*at, "spec", "namespaceSelector"))

    for doc in docs:
        visit(doc, doc.data, ())
    return NetworkObjects(frozenset(nads), tuple(mnps[k] for k in sorted(mnps)), dict(sorted(udns.items())),
                          tuple(sorted(cudns.items())), len(seen))


def _role(doc: Document, network: object, at: NodePath, kind: str, name: str) -> str:
    """A (C)UDN network's role: ``spec.layer2.role`` or ``spec.layer3.role`` (topology Layer2/Layer3)."""
    if not isinstance(network, dict):
        raise doc.error(f"{kind} {name} without a network spec", at)
    for layer in ("layer2", "layer3"):
        body = network.get(layer)
        if isinstance(body, dict):
            role = body.get("role")
            if role == "Primary":
                return "Primary"
            raise UnsupportedFeature("connectivity", f"{kind} {name} of role {role!r} (only Primary is modelled)")
    raise UnsupportedFeature("connectivity", f"{kind} {name} of topology {network.get('topology')!r}")


def _mnp(doc: Document, obj: dict[str, object], at: NodePath, namespace: str) -> MultiNetPolicy:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    target = annotations.get(POLICY_FOR) if isinstance(annotations, dict) else None
    if not isinstance(target, str) or not target.strip():
        raise doc.error(f"MultiNetworkPolicy without the {POLICY_FOR} annotation", (*at, "metadata", "annotations"))
    # Same spec as a NetworkPolicy (multi-networkpolicy's API types embed it); read with its strict reader.
    policy = kubernetes.objects(doc, {**obj, "kind": "NetworkPolicy", "apiVersion": kubernetes.API_VERSION}, at)[0]
    if any(peer.ip_block is not None for r in (*policy.ingress, *policy.egress) for peer in r.peers or ()):
        raise UnsupportedFeature("connectivity", f"MultiNetworkPolicy {namespace}/{policy.name}: ipBlock peers on "
                                 "a secondary network")
    names = frozenset(part.strip().rpartition("/")[2] for part in target.split(",") if part.strip())
    return MultiNetPolicy(policy, names)


# -- analysis ---------------------------------------------------------------------------------------------------


def applies(objects: NetworkObjects, workloads: Sequence[Workload],
            namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether the input needs the per-network form: network objects, a namespace labelled for a primary UDN,
    or a KubeVirt VM (netpol-analyzer then adds the workload-to-network mapping)."""
    return (objects.present or any(PRIMARY_UDN_LABEL in labels for labels in namespaces.values())
            or any(w.k8s_kind == "VirtualMachine" for w in workloads))


def primary_networks(objects: NetworkObjects, workloads: Sequence[Workload],
                     namespaces: Mapping[str, Mapping[str, str]],
                     secondary: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Workload -> its primary network ("pod-network", "UDN:<namespace>", "CUDN:<name>"), for a semantic diff.

    A diff line names only a pair, not a network, so secondary networks cannot be told apart there: refused.
    """
    if any(secondary.values()):
        raise UnsupportedFeature("connectivity diff", "secondary networks (NetworkAttachmentDefinitions)")
    out = {}
    for w in workloads:
        if w.kind == WorkloadKind.KUBERNETES:
            ns = w.namespace or "default"
            kind, name = _primary(ns, objects, namespaces.get(ns, {}))
            out[w.name] = POD_NETWORK if kind == "pod" else f"{kind}:{name}"
    return out


@dataclass(frozen=True)
class _Section:
    title: str
    lines: tuple[str, ...]
    workloads: int


def _primary(namespace: str, objects: NetworkObjects, ns_labels: Mapping[str, str]) -> tuple[str, str]:
    """(kind, name) of the namespace's primary network: ("pod", ...), ("UDN", namespace), ("CUDN", name)."""
    # OVN-Kubernetes serves a primary (C)UDN only to namespaces labelled for one when they were created
    # ("User Defined Networks": the label is required and immutable); a CUDN selecting an unlabelled
    # namespace leaves it on the pod network (the corpus's cudn_test_3).
    labelled = PRIMARY_UDN_LABEL in ns_labels
    if namespace in objects.udns:
        if not labelled:
            raise UnsupportedFeature("connectivity", f"UserDefinedNetwork {namespace}/{objects.udns[namespace]}: its "
                                     f"namespace is not labelled {PRIMARY_UDN_LABEL} (or not in the input)")
        return "UDN", namespace
    labels = {"kubernetes.io/metadata.name": namespace, **ns_labels}
    selecting = [name for name, sel in objects.cudns if labelled and sel.matches(labels)]
    if len(selecting) > 1:
        raise InputError(f"namespace {namespace} is selected by several primary ClusterUserDefinedNetworks: "
                         f"{', '.join(selecting)}")
    if selecting:
        return "CUDN", selecting[0]
    if PRIMARY_UDN_LABEL in ns_labels:
        raise UnsupportedFeature("connectivity", f"namespace {namespace}: labelled {PRIMARY_UDN_LABEL} but no "
                                 "primary UserDefinedNetwork or ClusterUserDefinedNetwork in the input serves it")
    return "pod", POD_NETWORK


def _lines(cl: ConnectionList, rename: Mapping[str, str], *, focused: bool, externals: bool) -> tuple[str, ...]:
    out = []
    for (s, d), c in cl.pairs.items():
        if not externals and EXTERNAL_KIND in (cl.peers[s].kind, cl.peers[d].kind):
            continue
        src, dst = rename.get(s, s), rename.get(d, d)
        out.append(f"{src} => {dst}" if focused else f"{src} => {dst} : {render_connections(c)}")
    return tuple(sorted(out))


def render(objects: NetworkObjects, workloads: Sequence[Workload], netpols: Sequence[kubernetes.NetPol],
           admin: Sequence[admin_netpol.AdminPolicy], *, namespaces: Mapping[str, Mapping[str, str]],
           secondary: Mapping[str, Sequence[str]], label_variants: Mapping[str, Sequence[kubernetes.Labels]],
           focus: tuple[Protocol, int] | None) -> str:
    """The per-network connection list as text (module docstring); ``focus`` keeps one port."""
    pods = [w for w in workloads if w.kind == WorkloadKind.KUBERNETES]
    primary = {w.name: _primary(w.namespace or "default", objects, namespaces.get(w.namespace or "default", {}))
               for w in pods}
    udn_namespaces = {w.namespace for w in pods if primary[w.name][0] != "pod"}

    def evaluate(members: Sequence[Workload], policies: Sequence[kubernetes.NetPol],
                 admins: Sequence[admin_netpol.AdminPolicy]) -> ConnectionList:
        cl = connection_list(members, policies, admins, label_variants=label_variants)
        return cl.focus(*focus) if focus is not None else cl

    sections: list[_Section] = []
    on_pod = [w for w in pods if primary[w.name][0] == "pod"]
    pod_cl = evaluate(on_pod, [p for p in netpols if p.namespace not in udn_namespaces], admin)
    sections.append(_Section("Pod network", _lines(pod_cl, {}, focused=focus is not None, externals=True),
                             len(on_pod)))
    for kind in ("UDN", "CUDN"):
        for name in sorted({n for k, n in primary.values() if k == kind}):
            members = [w for w in pods if primary[w.name] == (kind, name)]
            spaces = {w.namespace for w in members}
            cl = evaluate(members, [p for p in netpols if p.namespace in spaces], admin)
            # netpol-analyzer marks a namespace-scoped UDN's workloads `ns[udn]/name[Kind]` (not a CUDN's).
            rename = {workload_display(w): workload_display(w).replace("/", "[udn]/", 1) for w in members} \
                if kind == "UDN" else {}
            sections.append(_Section(f"primary {kind} {name}",
                                     _lines(cl, rename, focused=focus is not None, externals=True), len(members)))
    by_nad: dict[str, list[Workload]] = {}
    for w in pods:
        for ref in secondary.get(w.name, ()):
            if ref not in objects.nads:
                raise InputError(f"{w.name} attaches to NetworkAttachmentDefinition {ref}, which is not in the input")
            by_nad.setdefault(ref.split("/", 1)[1], []).append(w)
    for nad in sorted(by_nad):
        members = sorted(set(by_nad[nad]), key=lambda w: w.name)
        mnps = [m.policy for m in objects.mnps if nad in m.networks]
        cl = evaluate(members, mnps, ())
        sections.append(_Section(f"secondary NAD {nad}", _lines(cl, {}, focused=focus is not None, externals=False),
                                 len(members)))

    multi = len(sections) > 1
    out: list[str] = []
    if focus is not None:
        out.append(f"Permitted connections on {focus[0].value} {focus[1]}:")
        for i, section in enumerate(sections):
            if not section.lines:
                continue
            if i > 0:
                out.append("")
            out += ([f"Permitted connectivity analyzed in {section.title}:"] if multi else []) + list(section.lines)
        return "\n".join(out) + "\n"
    for i, section in enumerate(sections):
        if i > 0:
            out.append("")
        if multi:
            out.append(f"Permitted connectivity analyzed in {section.title}:")
        if i == 0 and multi and section.workloads == 0:
            out.append(ALL_UDN_MESSAGE)
        elif i == 0 and multi and not section.lines:
            out.append(NONE_ALLOWED_MESSAGE)
        out += section.lines
    out += ["", "Workload-to-Networks Mapping:"]
    for w in sorted(pods, key=workload_display):
        kind, name = primary[w.name]
        # netpol-analyzer writes a space after the colon.
        out += [f"{workload_display(w)}: ", f"\tPrimary Network: {POD_NETWORK if kind == 'pod' else f'{name}[{kind}]'}"]
        nads = sorted({ref.split("/", 1)[1] for ref in secondary.get(w.name, ())})
        if nads:
            out.append("\tSecondary Networks: " + ",".join(f"{n}[NAD]" for n in nads))
    return "\n".join(out) + "\n"


__all__ = ["ALL_UDN_MESSAGE", "KINDS", "MultiNetPolicy", "NetworkObjects", "applies", "primary_networks",
           "read_objects", "render"]
