"""Kubernetes objects (manifests or ``kubectl get -o json|yaml`` dumps) -> IR workloads and bindings.

A *workload* is the top-level owner of a set of pods: Pod -> ReplicaSet -> Deployment and
Pod -> Job -> CronJob through ``ownerReferences``, a StatefulSet or DaemonSet directly, and the Pod
itself when nothing owns it. When the owner objects are not part of the input (a ``kubectl get pods``
dump on its own) the owner is recovered from the names the controllers generate, but only with
evidence beyond the name — the ``pod-template-hash`` label equal to the ReplicaSet name's suffix, the
``statefulset.kubernetes.io/pod-name`` label, the DaemonSet's ``pod-template-generation`` label — or a
controller of that name in the input whose selector matches the pod. A wrong grouping would hand one
workload's allowances to another, so when in doubt the narrower unit (ReplicaSet, Job, Pod) is kept.

Address bindings (pod IPs are reused): a pod with an IP binds it to its workload from its
creationTimestamp (or status.startTime) until the earliest of its deletionTimestamp, the end of its
last container if it Succeeded/Failed, the creation of the next pod that holds the same IP (across all
snapshots), and the time of the first later snapshot of its namespace that no longer lists it; else
the binding is open. The same pod (uid, else namespace/name + creationTimestamp) in several snapshots
is one binding. Host-network pods are not bound: their IP is the node's. A Service's clusterIP is
bound, open-ended, when its selector picks exactly one workload.

Reference for every generated name and label used here:
https://kubernetes.io/docs/concepts/workloads/controllers/ (deployment, statefulset, daemonset, job,
cron-jobs) and https://kubernetes.io/docs/reference/labels-annotations-taints/.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from microseg.errors import InputError
from microseg.ir.intervals import address_text
from microseg.ir.model import AddressBinding, Label, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.yamlpos import Document, NodePath, format_path

# The API groups each kind is read from. A kind in another group is someone else's resource (Knative's
# serving.knative.dev Service is not a core Service) and is only counted.
_GROUPS: dict[str, frozenset[str]] = {
    "Namespace": frozenset({""}), "Pod": frozenset({""}), "Service": frozenset({""}),
    "ServiceAccount": frozenset({""}),
    "Deployment": frozenset({"apps", "extensions"}), "ReplicaSet": frozenset({"apps", "extensions"}),
    "DaemonSet": frozenset({"apps", "extensions"}), "StatefulSet": frozenset({"apps"}),
    "Job": frozenset({"batch"}), "CronJob": frozenset({"batch"}),
    "Ingress": frozenset({"networking.k8s.io", "extensions"}),
}
_INTERMEDIATE = frozenset({"ReplicaSet", "Job", "VirtualMachineInstance"})
_CONTROLLERS = frozenset({"Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "CronJob"})
# KubeVirt (lenient reading only, for `connectivity`): a VirtualMachine is a workload whose pod template is
# spec.template (its labels reach the virt-launcher pod, which is what NetworkPolicies select); its
# VirtualMachineInstance and the VMI's virt-launcher pod are members of it. A VMI without a VM is a workload.
# https://kubevirt.io/user-guide/network/network_policies/ ; the kinds' schema: kubevirt.io/v1.
_KUBEVIRT = frozenset({"VirtualMachine", "VirtualMachineInstance"})
# Multus secondary-network attachments of a pod: `k8s.v1.cni.cncf.io/networks`, either a comma-separated
# list of `[namespace/]name[@interface]` or a JSON list of {"name", "namespace", "interface", ...}
# (Network Plumbing WG, "Kubernetes Network Custom Resource Definition De-facto Standard", section 4.1.2).
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"

# Labels that controllers stamp on pods per revision, per pod or per run. They identify a ReplicaSet,
# a revision, one StatefulSet ordinal or one Job run, never the workload, so they are left out of a
# workload's labels and a selector built on them would stop matching after the next rollout.
_VOLATILE = frozenset({
    "pod-template-hash",  # Deployment -> ReplicaSet revision
    "controller-revision-hash",  # StatefulSet / DaemonSet revision
    "pod-template-generation",  # DaemonSet template generation (legacy)
    "statefulset.kubernetes.io/pod-name",  # one StatefulSet pod
    "apps.kubernetes.io/pod-index",  # StatefulSet ordinal (1.28+)
    "job-name", "controller-uid",  # one Job run (pre-1.27 names)
})
_VOLATILE_PREFIXES = ("batch.kubernetes.io/",)  # job-name, controller-uid, job-completion-index

# Generated names draw from k8s.io/apimachinery/pkg/util/rand's alphabet, which leaves out vowels
# (and 0, 1, 3) so that no words form: a pod suffix is 5 of these characters, a ReplicaSet's
# pod-template-hash is the FNV hash encoded with them (or, before Kubernetes 1.11, in decimal). A name
# part with a vowel, such as `canary`, is therefore never mistaken for generated.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
_RANDOM_SUFFIX = re.compile(rf"^(?P<base>.+)-[{_ALPHANUMS}]{{5}}$")
_HASH_TOKEN = re.compile(rf"^([{_ALPHANUMS}]{{1,10}}|\d{{1,10}})$")
_ORDINAL_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<ordinal>\d+)$")
_CRONJOB_RUN = re.compile(r"^\d+$")  # Job names of a CronJob end in the scheduled time in minutes
# A named port is an IANA_SVC_NAME: lower-case alphanumerics and '-', at least one letter, <= 15 chars.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

# Environment detection, in this order (the first hit wins):
#  1. the workload's labels `environment`, `env`, `app.kubernetes.io/environment`, `stage`;
#  2. the same labels on its Namespace object;
#  3. the namespace name, when it is, starts with or ends with (split on '-') a known environment word.
# Values are lower-cased and synonyms folded (production/prd -> prod, stage/stg -> staging, ...);
# other label values are kept as written. `tier` is deliberately not read: by convention it names the
# application layer (frontend, backend), not the environment.
ENV_LABEL_KEYS = ("environment", "env", "app.kubernetes.io/environment", "stage")
_ENV_WORDS = {
    "prod": "prod", "production": "prod", "prd": "prod",
    "staging": "staging", "stage": "staging", "stg": "staging",
    "dev": "dev", "development": "dev", "develop": "dev",
    "test": "test", "testing": "test", "qa": "qa", "uat": "uat",
}

# The fields of a port entry (core/v1 ContainerPort, ServicePort). The API server rejects others
# (strict field validation), and a misspelt key would otherwise silently lose or change a port.
_CONTAINER_PORT_FIELDS = frozenset({"containerPort", "hostPort", "hostIP", "name", "protocol"})
_SERVICE_PORT_FIELDS = frozenset({"port", "targetPort", "nodePort", "name", "protocol", "appProtocol"})

# A Service of type LoadBalancer (or NodePort) makes its workloads internet-facing, unless one of
# these cloud-provider annotations asks for a private load balancer: counting an internal NLB as
# internet exposure would invite an internet -> workload allowance. Values compared lower-cased.
# AWS (in-tree and AWS Load Balancer Controller), GKE (current and legacy), AKS, OCI, OpenStack,
# IBM Cloud, Alibaba Cloud.
_INTERNAL_LB: dict[str, frozenset[str]] = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": frozenset({"true", "0.0.0.0/0"}),
    "service.beta.kubernetes.io/aws-load-balancer-scheme": frozenset({"internal"}),
    "networking.gke.io/load-balancer-type": frozenset({"internal"}),
    "cloud.google.com/load-balancer-type": frozenset({"internal"}),
    "service.beta.kubernetes.io/azure-load-balancer-internal": frozenset({"true"}),
    "service.beta.kubernetes.io/oci-load-balancer-internal": frozenset({"true"}),
    "service.beta.kubernetes.io/openstack-internal-load-balancer": frozenset({"true"}),
    "service.kubernetes.io/ibm-load-balancer-cloud-provider-ip-type": frozenset({"private"}),
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": frozenset({"intranet"}),
}

DNS_LABEL = ("k8s-app", "kube-dns")  # CoreDNS keeps kube-dns's label for compatibility
SPIFFE_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Origin:
    """Where an object was read. The line is looked up only when a message needs it."""

    doc: Document
    path: NodePath

    @property
    def file(self) -> str:
        return self.doc.file

    @property
    def line(self) -> int:
        return self.doc.line_of((*self.path, "kind"))

    @property
    def key(self) -> tuple[str, int, tuple[int, ...]]:
        """Reading order: file, document, position in (nested) Lists."""
        return (self.doc.file, self.doc.index, tuple(e for e in self.path if isinstance(e, int)))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class _Node:
    """A value inside a document, with its path, and typed accessors that fail with file/line/field."""

    doc: Document
    path: NodePath
    value: object

    def error(self, message: str) -> InputError:
        return self.doc.error(message, self.path)

    def at(self, *keys: str) -> _Node:
        node = self
        for key in keys:
            if node.value is None:
                node = _Node(node.doc, (*node.path, key), None)
            elif isinstance(node.value, dict):
                node = _Node(node.doc, (*node.path, key), node.value.get(key))
            else:
                raise node.error(f"expected a mapping, got {_type_name(node.value)}")
        return node

    def items(self) -> list[_Node]:
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_type_name(self.value)}")
        return [_Node(self.doc, (*self.path, i), v) for i, v in enumerate(self.value)]

    def string(self) -> str | None:
        if self.value is None or isinstance(self.value, str):
            return self.value
        raise self.error(f"expected a string, got {_type_name(self.value)}")

    def required_string(self) -> str:
        value = self.string()
        if not value:
            raise self.error("required string is missing or empty")
        return value

    def integer(self) -> int | None:
        if self.value is None:
            return None
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            return self.value
        raise self.error(f"expected an integer, got {_type_name(self.value)}")

    def port(self) -> int:
        value = self.integer()
        if value is None:
            raise self.error("required port number is missing")
        if not 1 <= value <= 65535:
            raise self.error(f"expected a port number 1-65535, got {value}")
        return value

    def only_fields(self, allowed: frozenset[str]) -> _Node:
        """Reject unknown keys where a typo changes meaning (``containerport`` drops the port)."""
        if isinstance(self.value, dict):
            for key in self.value:
                if key not in allowed:
                    where = _Node(self.doc, (*self.path, str(key)), None)
                    raise UnknownField(f"unknown field {key!r} (expected one of {', '.join(sorted(allowed))})",
                                       file=where.doc.file, line=where.doc.line_of(where.path),
                                       field=format_path(where.path) or None)
        return self

    def boolean(self) -> bool:
        if self.value is None:
            return False
        if isinstance(self.value, bool):
            return self.value
        raise self.error(f"expected true or false, got {_type_name(self.value)}")

    def labels(self) -> dict[str, str]:
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping of labels, got {_type_name(self.value)}")
        out: dict[str, str] = {}
        for key, val in self.value.items():
            if not isinstance(key, str) or not isinstance(val, str):
                # Kubernetes rejects non-string label values; YAML turns `enabled: yes` into a bool.
                raise _Node(self.doc, (*self.path, str(key)), val).error(
                    f"label {key!r}: keys and values must be strings, got {_type_name(val)} (quote it)")
            out[key] = val
        return out

    def protocol(self) -> Protocol:
        value = self.string() or "TCP"
        if value not in ("TCP", "UDP", "SCTP"):
            raise self.error(f"protocol must be TCP, UDP or SCTP, got {value!r}")
        return Protocol(value)

    def timestamp(self) -> datetime | None:
        value = self.value
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise self.error(f"not an RFC 3339 timestamp: {self.value!r}") from None
        if not isinstance(value, datetime):
            raise self.error(f"expected a timestamp, got {_type_name(value)}")
        if value.tzinfo is None:
            # The API server always writes UTC with a 'Z'; a zone-less time could be off by hours,
            # which would attribute flows to the wrong holder of a reused IP.
            raise self.error(f"timestamp without a time zone: {self.value!r}")
        return value.astimezone(UTC)

    def ip(self) -> str:
        text = self.required_string()
        try:
            return address_text(ipaddress.ip_address(text))
        except ValueError:
            raise self.error(f"not an IP address: {text!r}") from None


class UnknownField(InputError):
    """A field the API server does not know: with strict field validation it rejects the whole object."""


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class _Port:
    port: int
    protocol: Protocol
    name: str | None


@dataclass(frozen=True)
class _Template:
    """The facts of a pod spec (a controller's pod template or a pod) that the IR needs."""

    labels: tuple[Label, ...]
    service_account: str
    ports: tuple[_Port, ...]
    images: tuple[str, ...]
    host_network: bool
    # Lenient reading only: the secondary networks (NetworkAttachmentDefinitions, "namespace/name") the pods
    # attach to, from the networks annotation or a VM's `multus` networks.
    networks: tuple[str, ...] = ()

    @property
    def stable_labels(self) -> tuple[Label, ...]:
        return tuple((k, v) for k, v in self.labels if not _is_volatile(k))


def _is_volatile(key: str) -> bool:
    return key in _VOLATILE or key.startswith(_VOLATILE_PREFIXES)


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class _Selector:
    match_labels: tuple[Label, ...]
    expressions: tuple[_Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels)
                and all(r.matches(labels) for r in self.expressions))


@dataclass(frozen=True)
class _Controller:
    kind: str
    namespace: str
    name: str
    selector: _Selector | None
    template: _Template
    owner: _Owner | None
    created: datetime | None
    origin: Origin = field(compare=False)

    def selects(self, labels: Mapping[str, str]) -> bool:
        # Without a selector (old extensions/v1beta1 objects, Jobs) the template labels are the selector.
        selector = self.selector or _Selector(self.template.stable_labels, ())
        return bool(selector.match_labels or selector.expressions) and selector.matches(labels)


@dataclass(frozen=True)
class _Pod:
    namespace: str
    name: str
    uid: str | None
    created: datetime | None
    deleted: datetime | None
    finished: datetime | None  # when a Succeeded/Failed pod's last container ended (its IP is free)
    template: _Template
    owner: _Owner | None
    ips: tuple[str, ...]
    host_ip: str | None
    seen_at: datetime | None  # latest past event recorded in the object: the snapshot is no older
    origin: Origin = field(compare=False)

    @property
    def key(self) -> tuple[str, ...]:
        # The same pod in several snapshots: uid when present, else name plus creation time.
        # A uid is unique per object and a pod is never renamed; the name is part of the key so that
        # hand-made dumps that copy one uid into several pods do not merge different pods into one.
        if self.uid:
            return ("uid", self.uid, self.namespace, self.name)
        return ("name", self.namespace, self.name, self.created.isoformat() if self.created else "")


@dataclass
class _Snapshot:
    """One dump of live pods (a document with pods that have a uid or an IP).

    A dump carries no time of its own; ``taken_after`` is the latest event any of its pods records,
    a lower bound of when it was taken.
    """

    origin: Origin
    pods: set[tuple[str, ...]] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    taken_after: datetime | None = None


@dataclass(frozen=True)
class _ServicePort:
    port: int
    protocol: Protocol
    target: int | str


@dataclass(frozen=True)
class _Service:
    namespace: str
    name: str
    type: str
    selector: tuple[Label, ...]
    ports: tuple[_ServicePort, ...]
    cluster_ips: tuple[str, ...]
    internal_lb: str | None  # the annotation that makes a LoadBalancer private, as "key=value"
    origin: Origin = field(compare=False)


@dataclass(frozen=True)
class _Ingress:
    namespace: str
    name: str
    services: tuple[str, ...]
    origin: Origin = field(compare=False)


@dataclass(frozen=True)
class KubernetesResult:
    workloads: tuple[Workload, ...]
    origins: Mapping[str, Origin]  # workload name -> where it was first seen
    bindings: tuple[AddressBinding, ...]
    namespaces: tuple[tuple[str, tuple[Label, ...]], ...]
    dns_resolvers: tuple[str, ...]
    ignored_kinds: Mapping[str, int]
    notes: tuple[str, ...]
    # Lenient reading only (see KubernetesReader): the label sets of each workload's pods, when they differ
    # from one another, and the objects skipped because the API server would reject them.
    label_variants: Mapping[str, tuple[tuple[Label, ...], ...]] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()
    # Lenient reading only: workload -> the secondary networks ("namespace/name" of a
    # NetworkAttachmentDefinition) its pods attach to; workloads without any are left out.
    secondary_networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def is_kubernetes_object(data: object) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("kind"), str)
            and isinstance(data.get("apiVersion"), str))


@dataclass
class _Group:
    """Everything that makes up one workload: its own object, intermediate controllers, its pods."""

    kind: str
    namespace: str
    name: str
    top: _Controller | None = None
    intermediates: list[_Controller] = field(default_factory=list)
    pods: list[_Pod] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"


class KubernetesReader:
    """Collects objects document by document, then :meth:`build` resolves them into IR.

    ``lenient=True`` reads objects the way a cluster holds them, for evaluating deployed policies (the
    ``connectivity`` command): a workload is the owner its pods *name* (``ownerReferences``, followed only
    through objects in the input), never one inferred from generated names, so a pod of a ReplicaSet whose
    Deployment is not in the input is the ReplicaSet's; an owner reference without a ``kind`` groups its
    pods under the owner's name as kind ``Pod``; a container port entry with an unknown field (e.g.
    ``containerport``: the API server's non-strict decoding drops the field, leaving the entry without a
    port) is left out and listed in ``rejected``; a Service defined twice differently is kept once (the
    first by file and line) with a note, since Services do not change what NetworkPolicies allow. A
    left-out port resolves no named port, so NetworkPolicy allowances only narrow; the report names it.
    """

    def __init__(self, *, lenient: bool = False) -> None:
        self.lenient = lenient
        self._rejected: list[str] = []
        # Lenient reading: port entries dropped for an unknown field are recorded here (None: strict).
        self._dropped_ports: list[str] | None = self._rejected if lenient else None
        self._controllers: dict[tuple[str, str, str], _Controller] = {}
        self._pods: dict[tuple[str, ...], _Pod] = {}
        self._services: dict[tuple[str, str], _Service] = {}
        self._ingresses: dict[tuple[str, str], _Ingress] = {}
        self._namespace_labels: dict[str, list[tuple[dict[str, str], Origin]]] = defaultdict(list)
        self._namespaces_seen: set[str] = set()
        self._service_accounts: set[tuple[str, str]] = set()
        self._snapshots: dict[tuple[str, int], _Snapshot] = {}
        self.ignored: Counter[str] = Counter()
        self._notes: set[str] = set()

    # -- reading ------------------------------------------------------------------------------------

    def add(self, doc: Document) -> None:
        self._add_object(_Node(doc, (), doc.data), depth=0)

    def _add_object(self, obj: _Node, depth: int, list_kind: str | None = None) -> None:
        if not isinstance(obj.value, dict):
            raise obj.error(f"expected a Kubernetes object, got {_type_name(obj.value)}")
        kind = obj.at("kind").string() or list_kind
        api = obj.at("apiVersion").string() or ""
        if not kind:
            raise obj.error("object without a kind")
        if kind.endswith("List") and "items" in obj.value:
            if depth > 3:
                raise obj.error("Lists nested too deeply")
            # `kubectl get -o json` writes `kind: List`; API list responses (PodList, ...) may omit
            # each item's kind, which is then the list's kind without "List".
            item_kind = kind[: -len("List")] or None
            for item in obj.at("items").items():
                self._add_object(item, depth + 1, item_kind)
            return
        group = api.rsplit("/", 1)[0] if "/" in api else ""
        if self.lenient and kind in _KUBEVIRT and group == "kubevirt.io":
            namespace = obj.at("metadata", "namespace").string() or "default"
            self._namespaces_seen.add(namespace)
            self._add_controller(_parse_kubevirt(obj, kind, namespace))
            return
        if kind not in _GROUPS or (api and group not in _GROUPS[kind]):
            self.ignored[kind if kind not in _GROUPS else f"{kind} ({api})"] += 1
            return
        if kind == "Namespace":
            name = obj.at("metadata", "name").required_string()
            self._namespace_labels[name].append((obj.at("metadata", "labels").labels(), _origin(obj)))
            self._namespaces_seen.add(name)
            return
        namespace = obj.at("metadata", "namespace").string() or "default"
        self._namespaces_seen.add(namespace)
        if kind == "Pod":
            pod = _parse_pod(obj, namespace, self._dropped_ports)
            self._add_pod(pod)
            if pod.uid or pod.ips:
                snap = self._snapshots.setdefault((obj.doc.file, obj.doc.index), _Snapshot(Origin(obj.doc, ())))
                snap.pods.add(pod.key)
                snap.namespaces.add(namespace)
                snap.taken_after = _max_time(snap.taken_after, pod.seen_at)
        elif kind in _CONTROLLERS:
            self._add_controller(_parse_controller(obj, kind, namespace, self._dropped_ports))
        elif kind == "Service":
            self._add_unique(self._services, _parse_service(obj, namespace), "Service")
        elif kind == "Ingress":
            self._add_unique(self._ingresses, _parse_ingress(obj, namespace), "Ingress")
        elif kind == "ServiceAccount":
            self._service_accounts.add((namespace, obj.at("metadata", "name").required_string()))

    def _add_controller(self, ctrl: _Controller) -> None:
        key = (ctrl.kind, ctrl.namespace, ctrl.name)
        prior = self._controllers.get(key)
        if prior is None:
            self._controllers[key] = ctrl
            return
        # The same object from the repo's manifests and from a dump, or from two dumps. Images and
        # ports may move on between snapshots and are merged; a different selector, label set or
        # service account would change what the workload *is*, so that is an error.
        same = (prior.selector == ctrl.selector and prior.owner == ctrl.owner
                and prior.template.labels == ctrl.template.labels
                and prior.template.service_account == ctrl.template.service_account
                and prior.template.host_network == ctrl.template.host_network)
        if not same:
            raise InputError(f"{ctrl.kind} {ctrl.namespace}/{ctrl.name} is also defined at {prior.origin} "
                             "with a different selector, labels, owner or service account",
                             file=ctrl.origin.file, line=ctrl.origin.line)
        template = _Template(prior.template.labels, prior.template.service_account,
                             _union(prior.template.ports, ctrl.template.ports),
                             _union(prior.template.images, ctrl.template.images), prior.template.host_network,
                             _union(prior.template.networks, ctrl.template.networks))
        self._controllers[key] = _Controller(
            prior.kind, prior.namespace, prior.name, prior.selector, template, prior.owner,
            _min_time(prior.created, ctrl.created), min(prior.origin, ctrl.origin, key=_origin_key))

    def _add_pod(self, pod: _Pod) -> None:
        prior = self._pods.get(pod.key)
        if prior is None:
            self._pods[pod.key] = pod
            return
        # One pod in several snapshots: one binding. It may have had no IP yet in the first one and
        # have been marked for deletion in the last.
        self._pods[pod.key] = _Pod(
            prior.namespace, prior.name, prior.uid, _min_time(prior.created, pod.created),
            _min_time(prior.deleted, pod.deleted), _min_time(prior.finished, pod.finished),
            min(prior.template, pod.template, key=repr), prior.owner or pod.owner, _union(prior.ips, pod.ips),
            prior.host_ip or pod.host_ip, _max_time(prior.seen_at, pod.seen_at),
            min(prior.origin, pod.origin, key=_origin_key))

    def _add_unique(self, table: dict[tuple[str, str], _S], item: _S, kind: str) -> None:
        key = (item.namespace, item.name)
        prior = table.get(key)
        if prior is not None and prior != item and self.lenient and kind == "Service":
            first, second = sorted((prior.origin, item.origin), key=_origin_key)
            self._notes.add(f"Service {item.namespace}/{item.name} is defined differently at {first} and {second}; "
                            f"the one at {first} is kept")
        elif prior is not None and prior != item:
            raise InputError(f"{kind} {item.namespace}/{item.name} is also defined, differently, "
                             f"at {prior.origin}",
                             file=item.origin.file, line=item.origin.line)
        if prior is None or _origin_key(item.origin) < _origin_key(prior.origin):
            table[key] = item

    # -- resolving ----------------------------------------------------------------------------------

    def build(self) -> KubernetesResult:
        groups = self._group()
        namespaces = self._namespaces()
        ns_labels = dict(namespaces)
        workloads: dict[str, Workload] = {}
        origins: dict[str, Origin] = {}
        facts = {g.full_name: self._facts(g) for g in groups.values()}
        # Selectors compete only within a namespace; indexing by it keeps this linear per namespace.
        facts_by_ns: dict[str, dict[str, tuple[tuple[Label, ...], _Template, Origin]]] = defaultdict(dict)
        for g in groups.values():
            facts_by_ns[g.namespace][g.full_name] = facts[g.full_name]
        for full_name, group in sorted((g.full_name, g) for g in groups.values()):
            labels, template, origin = facts[full_name]
            selector = self._selector(group, labels, facts_by_ns[group.namespace])
            workloads[full_name] = Workload(
                name=full_name, kind=WorkloadKind.KUBERNETES, namespace=group.namespace, k8s_kind=group.kind,
                labels=labels, selector=selector, namespace_labels=ns_labels[group.namespace],
                service_account=template.service_account,
                identity=f"spiffe://{SPIFFE_TRUST_DOMAIN}/ns/{group.namespace}/sa/{template.service_account}",
                ports=_listen_ports(template.ports), images=tuple(sorted(set(template.images))),
                environment=_environment(dict(labels), dict(ns_labels[group.namespace]), group.namespace),
                location=f"cluster/{group.namespace}")
            origins[full_name] = origin
            if template.host_network:
                self._notes.add(f"{full_name}: uses the host network; its pods have the node's IP, which is "
                                "not bound to it, and NetworkPolicy does not apply to them")
            if (group.namespace, template.service_account) not in self._service_accounts and any(
                    ns == group.namespace for ns, _ in self._service_accounts):
                self._notes.add(f"{full_name}: ServiceAccount {template.service_account} is not in the input")
        bindings = self._service_facts(workloads)
        bindings.extend(self._pod_bindings(groups))
        dns = tuple(sorted(n for n, w in workloads.items() if DNS_LABEL in w.labels))
        return KubernetesResult(
            workloads=tuple(workloads[n] for n in sorted(workloads)), origins=origins,
            bindings=tuple(bindings),
            namespaces=namespaces, dns_resolvers=dns, ignored_kinds=dict(sorted(self.ignored.items())),
            notes=tuple(sorted(self._notes)), label_variants=self._label_variants(groups),
            rejected=tuple(sorted(self._rejected)),
            secondary_networks={n: tuple(sorted(facts[n][1].networks)) for n in sorted(facts) if facts[n][1].networks})

    def _label_variants(self, groups: Mapping[tuple[str, str, str], _Group]
                        ) -> dict[str, tuple[tuple[Label, ...], ...]]:
        """Each workload's pod label sets in full (volatile labels too: a policy may select on them).

        A workload's own pod template is authoritative; without one, its members' labels are listed when
        they differ, since the common labels alone would let a selector match pods it does not match.
        """
        out: dict[str, tuple[tuple[Label, ...], ...]] = {}
        for g in groups.values():
            if g.top is not None:
                sets = {g.top.template.labels}
            else:
                members = g.intermediates or g.pods
                sets = {m.template.labels for m in members}
            out[g.full_name] = tuple(sorted(sets))
        return out

    def _group(self) -> dict[tuple[str, str, str], _Group]:
        groups: dict[tuple[str, str, str], _Group] = {}

        def group_of(kind: str, namespace: str, name: str) -> _Group:
            key = (kind, namespace, name)
            if key not in groups:
                groups[key] = _Group(kind, namespace, name)
            return groups[key]

        for ctrl in sorted(self._controllers.values(), key=lambda c: (c.kind, c.namespace, c.name)):
            kind, name = self._top_of(ctrl.namespace, ctrl.kind, ctrl.name, dict(ctrl.template.labels))
            group = group_of(kind, ctrl.namespace, name)
            if (kind, name) == (ctrl.kind, ctrl.name):
                group.top = ctrl
            else:
                group.intermediates.append(ctrl)
        for pod in sorted(self._pods.values(), key=lambda p: (p.namespace, p.name, p.key)):
            kind, name = self._top_of_pod(pod)
            group_of(kind, pod.namespace, name).pods.append(pod)
        # Two workloads may not share "namespace/name" (a Deployment and a StatefulSet both called
        # `web`): every later stage addresses workloads by that name.
        by_name: dict[str, _Group] = {}
        for group in sorted(groups.values(), key=lambda g: (g.full_name, g.kind)):
            other = by_name.setdefault(group.full_name, group)
            if other is not group:
                origin = _group_origin(group)
                raise InputError(f"two workloads are named {group.full_name}: a {other.kind} "
                                 f"({_group_origin(other)}) and a {group.kind}",
                                 file=origin.file, line=origin.line)
        return groups

    def _top_of_pod(self, pod: _Pod) -> tuple[str, str]:
        labels = dict(pod.template.labels)
        # Static (mirror) pods are "owned" by their Node: they are workloads of their own.
        if pod.owner is not None and not pod.owner.kind:
            return "Pod", pod.owner.name  # lenient reading only: an owner reference without a kind
        if pod.owner is not None and pod.owner.kind != "Node":
            return self._top_of(pod.namespace, pod.owner.kind, pod.owner.name, labels)
        if self.lenient:
            return "Pod", pod.name
        return self._infer_owner(pod, labels)

    def _top_of(self, namespace: str, kind: str, name: str, labels: Mapping[str, str], depth: int = 0
                ) -> tuple[str, str]:
        """Follow owners up from (kind, name); objects missing from the input are inferred by name."""
        ctrl = self._controllers.get((kind, namespace, name))
        # Only ReplicaSets, Jobs (and VMIs) are intermediate: a Deployment or StatefulSet that an operator's
        # custom resource owns is still the workload (the unit that has a pod template and selector).
        if ctrl is not None and ctrl.owner is not None and kind in _INTERMEDIATE and depth < 4:
            return self._top_of(namespace, ctrl.owner.kind, ctrl.owner.name, labels, depth + 1)
        if kind == "ReplicaSet" and not self.lenient:
            pod_hash = dict(ctrl.template.labels if ctrl else labels).get("pod-template-hash")
            deployment = self._deployment_for(namespace, name, pod_hash, labels)
            if deployment is not None:
                return self._top_of(namespace, "Deployment", deployment, labels, depth + 1)
        if kind == "Job" and not self.lenient:
            cronjob = self._cronjob_for(namespace, name, labels)
            if cronjob is not None:
                return "CronJob", cronjob
        return kind, name

    def _deployment_for(self, namespace: str, rs: str, pod_hash: str | None, labels: Mapping[str, str]
                        ) -> str | None:
        # A Deployment in the input whose name plus a hash is the ReplicaSet's and that selects the pod.
        head, sep, tail = rs.rpartition("-")
        deployment = self._controllers.get(("Deployment", namespace, head))
        if sep and deployment is not None and _HASH_TOKEN.match(tail) and deployment.selects(labels):
            return head
        # `<deployment>-<pod-template-hash>`, with the hash also in the pod's label: the controller's
        # own naming, and the label makes it more than a guess from the shape of the name.
        if pod_hash and rs.endswith("-" + pod_hash) and len(rs) > len(pod_hash) + 1:
            return rs[: -len(pod_hash) - 1]
        return None

    def _cronjob_for(self, namespace: str, job: str, labels: Mapping[str, str]) -> str | None:
        head, sep, tail = job.rpartition("-")
        cronjob = self._controllers.get(("CronJob", namespace, head))
        if sep and cronjob is not None and _CRONJOB_RUN.match(tail) and cronjob.selects(labels):
            return head
        return None

    def _infer_owner(self, pod: _Pod, labels: Mapping[str, str]) -> tuple[str, str]:
        """A pod without a controller reference (stripped dump, hand-written file)."""
        ns = pod.namespace
        random = _RANDOM_SUFFIX.match(pod.name)
        ordinal = _ORDINAL_SUFFIX.match(pod.name)
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        # First choice: a controller in the input whose name generates this pod's and whose selector
        # matches the pod.
        candidates: list[tuple[str, str]] = []
        if random:
            candidates += [("ReplicaSet", random["base"]), ("DaemonSet", random["base"])]
        if ordinal:
            candidates.append(("StatefulSet", ordinal["base"]))
        if job and pod.name.startswith(job + "-"):
            candidates.append(("Job", job))
        for kind, name in candidates:
            ctrl = self._controllers.get((kind, ns, name))
            if ctrl is not None and ctrl.selects(labels):
                return self._top_of(ns, kind, name, labels)
        deployment = self._deployment_for(ns, random["base"], None, labels) if random else None
        if deployment is not None:
            return "Deployment", deployment
        # Then the labels each controller stamps on its pods.
        pod_hash = labels.get("pod-template-hash")
        if random and pod_hash and random["base"].endswith("-" + pod_hash):
            return self._top_of(ns, "ReplicaSet", random["base"], labels)
        if ordinal and labels.get("statefulset.kubernetes.io/pod-name") == pod.name:
            return "StatefulSet", ordinal["base"]
        if random and "pod-template-generation" in labels and "controller-revision-hash" in labels:
            return "DaemonSet", random["base"]
        if job and pod.name.startswith(job + "-"):
            return self._top_of(ns, "Job", job, labels)
        return "Pod", pod.name

    def _facts(self, group: _Group) -> tuple[tuple[Label, ...], _Template, Origin]:
        """Labels and pod facts of a workload: its own template, else its members' in agreement."""
        if group.top is not None:
            return group.top.template.stable_labels, group.top.template, group.top.origin
        members: list[tuple[datetime | None, Origin, _Template]] = (
            [(c.created, c.origin, c.template) for c in group.intermediates] if group.intermediates
            else [(p.created, p.origin, p.template) for p in group.pods])
        # Members may come from different revisions: the workload's labels are those every member has
        # (so the selector matches all its pods), ports and images are the union.
        common = set(members[0][2].stable_labels)
        for _, _, t in members[1:]:
            common &= set(t.stable_labels)
        accounts = {t.service_account for _, _, t in members}
        newest = max(members, key=lambda m: (m[0] or datetime.min.replace(tzinfo=UTC), _origin_key(m[1])))
        if len(accounts) > 1:
            self._notes.add(f"{group.full_name}: pods run as several service accounts "
                            f"({', '.join(sorted(accounts))}); the newest, {newest[2].service_account}, "
                            "is used")
        template = _Template(
            tuple(sorted(common)), newest[2].service_account,
            _union(*(t.ports for _, _, t in members)), _union(*(t.images for _, _, t in members)),
            any(t.host_network for _, _, t in members), _union(*(t.networks for _, _, t in members)))
        return template.labels, template, min((m[1] for m in members), key=_origin_key)

    def _selector(self, group: _Group, labels: tuple[Label, ...],
                  facts: Mapping[str, tuple[tuple[Label, ...], _Template, Origin]]) -> tuple[Label, ...]:
        """Labels selecting exactly this workload's pods among the workloads of its namespace."""
        others = [set(f[0]) for name, f in facts.items() if name != group.full_name]
        top = group.top
        if (top is not None and top.selector is not None and top.selector.match_labels
                and not top.selector.expressions
                and not any(_is_volatile(k) for k, _ in top.selector.match_labels)):
            # matchLabels alone is the controller's own selector, unless another workload's pods
            # carry the same labels (bookinfo's `app: reviews` on reviews-v1, -v2 and -v3).
            candidate = set(top.selector.match_labels)
            if not any(candidate <= other for other in others):
                return tuple(sorted(candidate))
        if not labels:
            self._notes.add(f"{group.full_name}: has no stable labels, so no label selector can single "
                            "it out")
        elif any(set(labels) <= other for other in others):
            self._notes.add(f"{group.full_name}: its labels {_fmt_labels(labels)} also match another "
                            "workload's pods; a label selector cannot single it out")
        return labels

    def _service_facts(self, workloads: dict[str, Workload]) -> list[AddressBinding]:
        """Service target ports, internet exposure and clusterIP bindings, folded into the workloads."""
        extra_ports: dict[str, set[ListenPort]] = defaultdict(set)
        reasons: dict[str, set[str]] = defaultdict(set)
        bindings: list[AddressBinding] = []
        selected: dict[tuple[str, str], list[str]] = {}
        by_ns: dict[str | None, list[Workload]] = defaultdict(list)
        for w in workloads.values():
            by_ns[w.namespace].append(w)
        for (ns, name), svc in sorted(self._services.items()):
            # An empty selector selects no pods (the Service's Endpoints are managed by hand).
            matches = [w for w in by_ns[ns] if svc.selector
                       and all(w.label_map.get(k) == v for k, v in svc.selector)]
            selected[(ns, name)] = [w.name for w in matches]
            for w in matches:
                for sp in svc.ports:
                    port = _resolve_target(sp, w)
                    if port is None:
                        self._notes.add(f"Service {ns}/{name} port {sp.port}: targetPort {sp.target!r} is "
                                        f"not a named port of {w.name}; no port added")
                    else:
                        extra_ports[w.name].add(port)
                if svc.type == "LoadBalancer" and svc.internal_lb:
                    self._notes.add(f"Service {ns}/{name} is an internal load balancer ({svc.internal_lb}): "
                                    f"{w.name} is not counted as internet-facing for it")
                elif svc.type in ("LoadBalancer", "NodePort"):
                    reasons[w.name].add(f"Service {ns}/{name} is type {svc.type}")
            ips = [ip for ip in svc.cluster_ips if ip not in ("", "None")]
            if ips and svc.type != "ExternalName":
                if len(matches) == 1:
                    source = f"{svc.origin.file}#service {ns}/{name}"
                    bindings.extend(AddressBinding(ip=address_text(ipaddress.ip_address(ip)), workload=matches[0].name,
                                                   source=source) for ip in ips)
                else:
                    self._notes.add(f"Service {ns}/{name}: clusterIP not bound, it selects "
                                    f"{len(matches)} workloads")
        for (ns, name), ing in sorted(self._ingresses.items()):
            for svc_name in ing.services:
                if (ns, svc_name) not in selected:
                    self._notes.add(f"Ingress {ns}/{name}: Service {ns}/{svc_name} is not in the input")
                for wname in selected.get((ns, svc_name), []):
                    reasons[wname].add(f"Ingress {ns}/{name} routes to Service {ns}/{svc_name}")
        for wname, w in list(workloads.items()):
            changes: dict[str, object] = {"ports": _dedupe_ports((*w.ports, *extra_ports[wname]))}
            if reasons[wname]:
                changes.update(exposure="internet", exposure_reason="; ".join(sorted(reasons[wname])))
            workloads[wname] = w.model_copy(update=changes)
        return bindings

    def _pod_bindings(self, groups: Mapping[tuple[str, str, str], _Group]) -> list[AddressBinding]:
        """Which workload held which pod IP when: [creation, deletion or the next holder's creation)."""
        holders: dict[str, list[tuple[_Pod, str]]] = defaultdict(list)
        for group in groups.values():
            for pod in group.pods:
                # A host-network pod's IP is the node's: binding it would attribute every flow of the
                # node (kubelet, other host-network pods) to this workload. A dump may lack the
                # hostNetwork field; the pod IP equal to the host IP says the same.
                if pod.template.host_network:
                    continue
                if pod.host_ip is not None and pod.host_ip in pod.ips:
                    self._notes.add(f"{group.full_name}: pod {pod.name} has its node's IP {pod.host_ip}; "
                                    "not bound")
                    continue
                for ip in pod.ips:
                    holders[ip].append((pod, group.full_name))
        gone = self._gone_before({pod.key for held in holders.values() for pod, _ in held})
        ended: Counter[str] = Counter(w for held in holders.values() for pod, w in held if pod.key in gone)
        for workload, count in ended.items():
            self._notes.add(f"{workload}: {count} pod(s) missing from a later snapshot of their namespace; "
                            "their address bindings end when that snapshot was taken")
        bindings: list[AddressBinding] = []
        for ip, held in holders.items():
            held.sort(key=lambda h: (h[0].created or datetime.min.replace(tzinfo=UTC), h[0].key))
            for i, (pod, workload) in enumerate(held):
                nxt = next((p.created for p, _ in held[i + 1:]
                            if p.key != pod.key and p.created is not None and pod.created is not None
                            and p.created > pod.created), None)
                end = _min_time(_min_time(pod.deleted, pod.finished), _min_time(nxt, gone.get(pod.key)))
                if pod.created is not None and end is not None and end < pod.created:
                    raise InputError(f"pod {pod.namespace}/{pod.name} ends ({end.isoformat()}) before it was "
                                     f"created ({pod.created.isoformat()})",
                                     file=pod.origin.file, line=pod.origin.line)
                bindings.append(AddressBinding(ip=ip, workload=workload, valid_from=pod.created, valid_to=end,
                                               source=f"{pod.origin.file}#pod {pod.namespace}/{pod.name}"))
        return bindings

    def _gone_before(self, keys: set[tuple[str, ...]]) -> dict[tuple[str, ...], datetime]:
        """Pods missing from a later snapshot of their namespace ended before it was taken.

        Without a deletionTimestamp, the end of a pod's binding is bounded by the first later dump
        that lists other pods of its namespace but not this one. That dump's time is only known from
        below (``taken_after``); ending the binding there may cut it a little early, which leaves a
        few flows unattributed, where leaving it open would attribute the next holder's flows (a pod
        that came and went between dumps) to this workload.
        """
        # Dumps without any time cannot be ordered and say nothing.
        snaps = sorted(((s.taken_after, s) for s in self._snapshots.values() if s.taken_after is not None),
                       key=lambda ts: (ts[0], _origin_key(ts[1].origin)))
        gone: dict[tuple[str, ...], datetime] = {}
        for key in sorted(keys):
            pod = self._pods[key]
            seen = [taken for taken, snap in snaps if key in snap.pods]
            if not seen:
                continue
            for taken, snap in snaps:
                if taken > seen[-1] and pod.namespace in snap.namespaces and key not in snap.pods:
                    gone[key] = max(taken, pod.seen_at or taken)
                    break
        return gone

    def _namespaces(self) -> tuple[tuple[str, tuple[Label, ...]], ...]:
        out = []
        for name in sorted(self._namespaces_seen):
            seen = self._namespace_labels.get(name, [])
            common: set[Label] = set(seen[0][0].items()) if seen else set()
            for labels, _ in seen[1:]:
                common &= set(labels.items())
            if any(set(labels.items()) != common for labels, _ in seen):
                # Snapshots disagree: keep only what every snapshot shows, so that no namespace
                # selector is built on a label the namespace may not carry.
                self._notes.add(f"Namespace {name}: labels differ between inputs; only common labels kept")
            # The API server sets this label on every namespace (1.21+), always equal to the name;
            # policies select namespaces by it.
            common = {(k, v) for k, v in common if k != "kubernetes.io/metadata.name"}
            common.add(("kubernetes.io/metadata.name", name))
            out.append((name, tuple(sorted(common))))
        return tuple(out)


def _dedupe_ports(ports: Iterable[ListenPort]) -> tuple[ListenPort, ...]:
    """One entry per (port, protocol, name); a named entry wins over the bare number from a Service."""
    unique = set(ports)
    named = {(p.port, p.protocol) for p in unique if p.name}
    kept = {p for p in unique if p.name or (p.port, p.protocol) not in named}
    return tuple(sorted(kept, key=lambda p: (p.port, p.protocol.value, p.name or "")))


def _listen_ports(ports: Iterable[_Port]) -> tuple[ListenPort, ...]:
    return _dedupe_ports(ListenPort(port=p.port, protocol=p.protocol, name=p.name) for p in ports)


def _resolve_target(sp: _ServicePort, w: Workload) -> ListenPort | None:
    if isinstance(sp.target, int):
        return ListenPort(port=sp.target, protocol=sp.protocol)
    for p in w.ports:
        if p.name == sp.target and p.protocol == sp.protocol:
            return p
    return None


def _environment(labels: Mapping[str, str], ns_labels: Mapping[str, str], namespace: str) -> str | None:
    for source in (labels, ns_labels):
        for key in ENV_LABEL_KEYS:
            if source.get(key):
                value = source[key].strip()
                return _ENV_WORDS.get(value.lower(), value)
    tokens = namespace.lower().split("-")
    for word in (namespace.lower(), tokens[0], tokens[-1]):
        if word in _ENV_WORDS:
            return _ENV_WORDS[word]
    return None


# -- object parsers ---------------------------------------------------------------------------------


def _origin(obj: _Node) -> Origin:
    return Origin(obj.doc, obj.path)


def _origin_key(o: Origin) -> tuple[str, int, tuple[int, ...]]:
    return o.key


def _group_origin(group: _Group) -> Origin:
    origins = [c.origin for c in ([group.top] if group.top else []) + group.intermediates] + [
        p.origin for p in group.pods]
    return min(origins, key=_origin_key)


def _owner(obj: _Node, lenient: bool = False) -> _Owner | None:
    refs = obj.at("metadata", "ownerReferences").items()
    parsed = [(r.at("controller").boolean(),
               _Owner((r.at("kind").string() or "") if lenient else r.at("kind").required_string(),
                      r.at("name").required_string())) for r in refs]
    controllers = [o for is_ctrl, o in parsed if is_ctrl]
    # At most one reference may be the controller; a lone reference without the flag (hand-written
    # or very old objects) is taken as the owner.
    if controllers:
        return controllers[0]
    return parsed[0][1] if len(parsed) == 1 else None


def _parse_template(spec: _Node, labels: _Node, dropped: list[str] | None = None,
                    annotations: _Node | None = None, namespace: str = "") -> _Template:
    ports: list[_Port] = []
    images: list[str] = []
    containers = spec.at("containers").items()
    # Native sidecars (init containers with restartPolicy: Always, 1.28+) keep running and may listen.
    containers += [c for c in spec.at("initContainers").items() if c.at("restartPolicy").string() == "Always"]
    for container in containers:
        image = container.at("image").string()
        if image:
            images.append(image)
        for p in container.at("ports").items():
            name = p.at("name").string()
            if name is not None and not _PORT_NAME.match(name):
                raise p.at("name").error(f"invalid port name {name!r} (lower-case, at most 15 characters)")
            try:
                p.only_fields(_CONTAINER_PORT_FIELDS)
            except UnknownField as err:
                if dropped is None:
                    raise
                # Lenient reading: the API server's non-strict decoding drops an unknown field, and this
                # entry then declares no port; it is left out (its name resolves no named port) and reported.
                dropped.append(f"{err} - port entry ignored")
                continue
            ports.append(_Port(p.at("containerPort").port(), p.at("protocol").protocol(), name))
    account = spec.at("serviceAccountName").string() or spec.at("serviceAccount").string() or "default"
    # Lenient reading only (annotations given): the pods' secondary networks.
    networks = _network_refs(annotations, namespace) if annotations is not None and dropped is not None else ()
    return _Template(tuple(sorted(labels.labels().items())), account, _union(ports), _union(images),
                     spec.at("hostNetwork").boolean(), networks)


def _network_refs(annotations: _Node, namespace: str) -> tuple[str, ...]:
    """The NetworkAttachmentDefinitions named by the networks annotation, as "namespace/name" (see
    NETWORKS_ANNOTATION); a name without a namespace is in the pod's own namespace."""
    node = annotations.at(NETWORKS_ANNOTATION)
    text = node.string()
    if node.value is not None and text is None:
        raise node.error("the networks annotation must be a string")
    if not text or not text.strip():
        return ()
    refs: list[str] = []
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except ValueError as err:
            raise node.error(f"the networks annotation is not valid JSON: {err}") from err
        if not isinstance(entries, list):
            raise node.error("the networks annotation must be a JSON list")
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            ns = entry.get("namespace", namespace) if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or not isinstance(ns, str) or not ns:
                raise node.error(f"network selection element without a name and namespace: {entry!r}")
            refs.append(f"{ns}/{name}")
        return _union(refs)
    for part in text.split(","):
        ref = part.strip().split("@", 1)[0]
        ns, _, name = ref.rpartition("/")
        if not name:
            raise node.error(f"empty network name in {text!r}")
        refs.append(f"{ns or namespace}/{name}")
    return _union(refs)


def _parse_kubevirt(obj: _Node, kind: str, namespace: str) -> _Controller:
    """A VirtualMachine (its spec.template) or a VirtualMachineInstance (itself) as a pod-less controller.

    The labels are those KubeVirt copies onto the virt-launcher pod; the secondary networks are the
    `multus` entries of spec.networks (kubevirt.io/v1 Network). A multus network marked `default` replaces
    the pod network, which is not modelled: refused rather than read as a secondary one.
    """
    meta, spec = (obj.at("spec", "template", "metadata"), obj.at("spec", "template", "spec")) \
        if kind == "VirtualMachine" else (obj.at("metadata"), obj.at("spec"))
    refs: list[str] = []
    for net in spec.at("networks").items():
        multus = net.at("multus")
        if multus.value is None:
            continue
        if multus.at("default").value is True:
            raise multus.error(f"{kind} with a default multus network (it replaces the pod network): not modelled")
        ns, _, name = multus.at("networkName").required_string().rpartition("/")
        refs.append(f"{ns or namespace}/{name}")
    template = _Template(tuple(sorted(meta.at("labels").labels().items())), "default", (), (), False, _union(refs))
    return _Controller(kind=kind, namespace=namespace, name=obj.at("metadata", "name").required_string(),
                       selector=None, template=template, owner=_owner(obj, True) if kind != "VirtualMachine" else None,
                       created=obj.at("metadata", "creationTimestamp").timestamp(), origin=_origin(obj))


def _parse_selector(node: _Node) -> _Selector | None:
    if node.value is None:
        return None
    requirements = []
    for expr in node.at("matchExpressions").items():
        op = expr.at("operator").required_string()
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise expr.at("operator").error(f"unknown selector operator {op!r}")
        values = tuple(v.required_string() for v in expr.at("values").items())
        requirements.append(_Requirement(expr.at("key").required_string(), op, values))
    return _Selector(tuple(sorted(node.at("matchLabels").labels().items())), tuple(requirements))


def _parse_controller(obj: _Node, kind: str, namespace: str, dropped: list[str] | None = None) -> _Controller:
    spec = obj.at("spec")
    if kind == "CronJob":
        spec = spec.at("jobTemplate", "spec")
    template = spec.at("template")
    if template.value is None:
        raise template.error(f"{kind} without a pod template")
    return _Controller(
        kind=kind, namespace=namespace, name=obj.at("metadata", "name").required_string(),
        selector=_parse_selector(spec.at("selector")),
        template=_parse_template(template.at("spec"), template.at("metadata", "labels"), dropped,
                                 template.at("metadata", "annotations"), namespace),
        owner=_owner(obj, dropped is not None), created=obj.at("metadata", "creationTimestamp").timestamp(),
        origin=_origin(obj))


def _parse_pod(obj: _Node, namespace: str, dropped: list[str] | None = None) -> _Pod:
    status = obj.at("status")
    ips = [status.at("podIP")] if status.at("podIP").value else []
    ips += [entry.at("ip") for entry in status.at("podIPs").items()]
    finished = None
    if status.at("phase").string() in ("Succeeded", "Failed"):
        ends = [t for cs in status.at("containerStatuses").items()
                if (t := cs.at("state", "terminated", "finishedAt").timestamp()) is not None]
        finished = max(ends) if ends else None
    host_ip = status.at("hostIP").ip() if status.at("hostIP").value else None
    # Every event time the object records happened before the dump was taken.
    events = [status.at("startTime").timestamp(), finished]
    events += [c.at("lastTransitionTime").timestamp() for c in status.at("conditions").items()]
    for cs in status.at("containerStatuses").items():
        for state in ("state", "lastState"):
            events += [cs.at(state, phase, "startedAt").timestamp() for phase in ("running", "terminated")]
            events.append(cs.at(state, "terminated", "finishedAt").timestamp())
    created = obj.at("metadata", "creationTimestamp").timestamp() or status.at("startTime").timestamp()
    return _Pod(
        namespace=namespace, name=obj.at("metadata", "name").required_string(),
        uid=obj.at("metadata", "uid").string(),
        created=created,
        deleted=obj.at("metadata", "deletionTimestamp").timestamp(), finished=finished,
        template=_parse_template(obj.at("spec"), obj.at("metadata", "labels"), dropped,
                                 obj.at("metadata", "annotations"), namespace),
        owner=_owner(obj, dropped is not None),
        ips=_union([n.ip() for n in ips]), host_ip=host_ip,
        seen_at=max((e for e in (created, *events) if e is not None), default=None), origin=_origin(obj))


def _parse_service(obj: _Node, namespace: str) -> _Service:
    spec = obj.at("spec")
    ports = []
    for p in spec.at("ports").items():
        port = p.only_fields(_SERVICE_PORT_FIELDS).at("port").port()
        target_node = p.at("targetPort")
        target: int | str
        if isinstance(target_node.value, str):
            target = target_node.value
            if not _PORT_NAME.match(target):
                raise target_node.error(f"targetPort {target!r} is neither a number nor a valid port name")
        else:
            target = target_node.port() if target_node.value is not None else port
        ports.append(_ServicePort(port, p.at("protocol").protocol(), target))
    cluster_ips = [n.required_string() for n in spec.at("clusterIPs").items()]
    if spec.at("clusterIP").string():
        cluster_ips.append(spec.at("clusterIP").required_string())
    for ip in cluster_ips:
        if ip != "None":
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise spec.at("clusterIP").error(f"not an IP address: {ip!r}") from None
    annotations = obj.at("metadata", "annotations").labels()
    internal = next((f"{k}={annotations[k]}" for k, values in sorted(_INTERNAL_LB.items())
                     if annotations.get(k, "").strip().lower() in values), None)
    return _Service(namespace, obj.at("metadata", "name").required_string(),
                    spec.at("type").string() or "ClusterIP",
                    tuple(sorted(spec.at("selector").labels().items())), _union(ports), _union(cluster_ips),
                    internal, _origin(obj))


def _parse_ingress(obj: _Node, namespace: str) -> _Ingress:
    spec = obj.at("spec")
    backends = [spec.at("defaultBackend"), spec.at("backend")]  # v1, and extensions/v1beta1
    for rule in spec.at("rules").items():
        backends += [path.at("backend") for path in rule.at("http", "paths").items()]
    services = []
    for backend in backends:
        # v1: backend.service.name; v1beta1: backend.serviceName. Resource backends are not Services.
        name = backend.at("service", "name").string() or backend.at("serviceName").string()
        if name:
            services.append(name)
    return _Ingress(namespace, obj.at("metadata", "name").required_string(), _union(services), _origin(obj))


# -- small helpers ----------------------------------------------------------------------------------


_T = TypeVar("_T")
_S = TypeVar("_S", _Service, _Ingress)


def _union(*seqs: Iterable[_T]) -> tuple[_T, ...]:
    """Items of all sequences, first occurrence kept, in a canonical (sorted by repr) order."""
    return tuple(sorted(dict.fromkeys(x for seq in seqs for x in seq), key=repr))


def _min_time(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max_time(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _fmt_labels(labels: Sequence[Label]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in labels) + "}"

