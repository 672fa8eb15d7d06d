"""Kubernetes inventory reader: real samples (sock-shop, bookinfo, the conformance corpus) and small
hand-written cases for owner resolution, selectors, exposure, IP reuse and malformed input."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, Workload, WorkloadKind
from microseg.sources.inventory import load_inventory, read_inventory

INTERNET = "external:internet"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def write_json(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def k8s(inv: Inventory) -> dict[str, Workload]:
    return {w.name: w for w in inv.workloads if w.kind is WorkloadKind.KUBERNETES}


def ports(w: Workload) -> set[tuple[int, str, str | None]]:
    return {(p.port, p.protocol.value, p.name) for p in w.ports}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- sock-shop -------------------------------------------------------------------------------------


def test_sock_shop(shared: Path) -> None:
    result = read_inventory([shared / "samples/apps/sock-shop/deploy"])
    inv = result.inventory
    services = ["carts", "carts-db", "catalogue", "catalogue-db", "front-end", "orders", "orders-db", "payment",
                "queue-master", "rabbitmq", "session-db", "shipping", "user", "user-db"]
    # complete-demo.yaml repeats manifests/ object for object: read once, not twice.
    assert [w.name for w in inv.workloads] == sorted(
        [INTERNET, "loadtest/load-test", *(f"sock-shop/{s}" for s in services)])
    ws = k8s(inv)
    for s in services:
        w = ws[f"sock-shop/{s}"]
        assert (w.k8s_kind, w.namespace, w.labels, w.selector) == ("Deployment", "sock-shop", (("name", s),),
                                                                   (("name", s),))
        assert w.identity == "spiffe://cluster.local/ns/sock-shop/sa/default"
        assert w.location == "cluster/sock-shop"
        assert w.namespace_labels == (("kubernetes.io/metadata.name", "sock-shop"),)
    assert {n: ports(w) for n, w in ws.items()} == {
        "loadtest/load-test": set(),
        "sock-shop/carts": {(80, "TCP", None)},
        "sock-shop/carts-db": {(27017, "TCP", "mongo")},
        "sock-shop/catalogue": {(80, "TCP", None)},
        "sock-shop/catalogue-db": {(3306, "TCP", "mysql")},
        "sock-shop/front-end": {(8079, "TCP", None)},
        "sock-shop/orders": {(80, "TCP", None)},
        "sock-shop/orders-db": {(27017, "TCP", "mongo")},
        "sock-shop/payment": {(80, "TCP", None)},
        "sock-shop/queue-master": {(80, "TCP", None)},
        # Service port 9090 has the *named* targetPort `exporter`, resolved against the second container.
        "sock-shop/rabbitmq": {(5672, "TCP", "rabbitmq"), (9090, "TCP", "exporter"),
                               (15672, "TCP", "management")},
        "sock-shop/session-db": {(6379, "TCP", "redis")},
        "sock-shop/shipping": {(80, "TCP", None)},
        "sock-shop/user": {(80, "TCP", None)},
        "sock-shop/user-db": {(27017, "TCP", "mongo")},
    }
    assert set(ws["sock-shop/rabbitmq"].images) == {"rabbitmq:3.6.8-management", "kbudde/rabbitmq-exporter"}
    exposed = {n: w.exposure_reason for n, w in ws.items() if w.exposure == "internet"}
    assert exposed == {"sock-shop/front-end": "Service sock-shop/front-end is type NodePort"}
    assert inv.namespaces == (("loadtest", (("kubernetes.io/metadata.name", "loadtest"),)),
                              ("sock-shop", (("kubernetes.io/metadata.name", "sock-shop"),)))
    assert inv.bindings == ()  # manifests only: no pod IPs, no clusterIPs
    assert inv.dns_resolvers == ()
    # manifests-policy/: 13 NetworkPolicies (netpol-default-deny.yaml holds none, only an annotation)
    assert result.report.ignored_kinds == (("NetworkPolicy", 13),)
    assert result.report.notes == ()


# -- bookinfo --------------------------------------------------------------------------------------


def test_bookinfo_identities_and_versioned_selectors(shared: Path) -> None:
    kube = shared / "samples/apps/bookinfo/platform/kube"
    inv = load_inventory([kube / "bookinfo.yaml", kube / "bookinfo-ingress.yaml"])
    ws = k8s(inv)
    assert {n: (w.k8s_kind, w.service_account, w.identity) for n, w in ws.items()} == {
        "default/details-v1": ("Deployment", "bookinfo-details",
                               "spiffe://cluster.local/ns/default/sa/bookinfo-details"),
        "default/productpage-v1": ("Deployment", "bookinfo-productpage",
                                   "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "default/ratings-v1": ("Deployment", "bookinfo-ratings",
                               "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"),
        "default/reviews-v1": ("Deployment", "bookinfo-reviews",
                               "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "default/reviews-v2": ("Deployment", "bookinfo-reviews",
                               "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "default/reviews-v3": ("Deployment", "bookinfo-reviews",
                               "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
    }
    # One service account for three versions: the selectors, not the identity, tell them apart.
    assert {n: w.selector for n, w in ws.items() if n.startswith("default/reviews")} == {
        f"default/reviews-{v}": (("app", "reviews"), ("version", v)) for v in ("v1", "v2", "v3")}
    assert all(ports(w) == {(9080, "TCP", None)} for w in ws.values())
    assert {n: w.exposure_reason for n, w in ws.items() if w.exposure == "internet"} == {
        "default/productpage-v1": "Ingress default/gateway routes to Service default/productpage"}
    assert inv.namespaces == (("default", (("kubernetes.io/metadata.name", "default"),)),)


def test_bookinfo_alternative_manifests_conflict(shared: Path) -> None:
    # The directory holds alternative variants of the same Deployments (plain, dual-stack, PSA, ...);
    # merging them would mean picking one silently, so reading them together is an error.
    with pytest.raises(InputError) as err:
        load_inventory([shared / "samples/apps/bookinfo"])
    assert "Deployment default/details-v1 is also defined at" in str(err.value)
    assert err.value.file is not None and err.value.file.endswith("bookinfo-dualstack.yaml")
    assert "bookinfo-details-dualstack.yaml:35" in str(err.value)


# -- conformance corpus: kubectl Lists --------------------------------------------------------------


def test_pod_list_and_namespace_list_json(shared: Path) -> None:
    case = shared / "conformance/netpol/cases/test_with_named_ports"
    result = read_inventory([case])
    ws = k8s(result.inventory)
    # The independent analyser's owners, from its expected output: ReplicaSets whose Deployment cannot
    # be told (the old pod-template-hash format does not match the ReplicaSet name) stay ReplicaSets.
    expected = (shared / "conformance/netpol/expected/connlist/test_with_named_ports.txt").read_text()
    peers = set(re.findall(r"([\w.-]+/[\w.-]+)\[(\w+)\]", expected))
    assert {(n, w.k8s_kind) for n, w in ws.items()} == peers
    assert len(peers) == 21
    assert ws["default/cog-agents-analyzer"].selector == (("app", "skydive"), ("tier", "analyzer"))
    assert ws["kube-system/tiller-deploy-5c45c9966b"].labels == (("app", "helm"), ("name", "tiller"),
                                                               ("tier", "frontend"))
    assert ports(ws["kube-system-dummy-to-ignore/kube-dns-amd64-d66bf76db"]) == {
        (53, "TCP", "dns-tcp"), (53, "UDP", "dns"), (10053, "TCP", "dns-tcp-local"),
        (10053, "UDP", "dns-local"), (10054, "TCP", "metrics")}
    assert result.inventory.dns_resolvers == ("kube-system-dummy-to-ignore/kube-dns-amd64-d66bf76db",)
    assert dict(result.inventory.namespaces)["vendor-system"] == (
        ("kubernetes.io/metadata.name", "vendor-system"), ("unique-label", "vendor-systemNameSpace"))
    # Workloads whose labels another workload's pods also carry are reported, not silently widened.
    assert {n.split(":")[0] for n in result.report.notes} == {
        "default/cog-agents-analyzer", "default/cog-local-analyzer-7d77fb55cc", "kube-system/calico-node",
        "kube-system/kube-fluentd"}


def test_kubectl_list_yaml_with_pod_ips(shared: Path) -> None:
    case = shared / "conformance/netpol/cases/onlineboutique"
    inv = load_inventory([case / "pods.yaml", case / "ns.yaml"])
    apps = ["adservice", "cartservice", "checkoutservice", "currencyservice", "emailservice", "frontend",
            "loadgenerator", "paymentservice", "productcatalogservice", "recommendationservice", "redis-cart",
            "shippingservice"]
    assert {n: (w.k8s_kind, w.selector) for n, w in k8s(inv).items()} == {
        f"default/{a}": ("Deployment", (("app", a),)) for a in apps}
    got = {(b.ip, b.workload, b.valid_from, b.valid_to) for b in inv.bindings}
    assert got == {
        ("10.244.120.70", "default/checkoutservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.71", "default/emailservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.72", "default/recommendationservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.73", "default/frontend", t("2022-08-01T17:05:20"), None),
        ("10.244.120.74", "default/productcatalogservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.75", "default/paymentservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.76", "default/currencyservice", t("2022-08-01T17:05:21"), None),
        ("10.244.120.77", "default/loadgenerator", t("2022-08-01T17:05:21"), None),
        ("10.244.120.78", "default/cartservice", t("2022-08-01T17:05:20"), None),
        ("10.244.120.79", "default/adservice", t("2022-08-01T17:05:22"), None),
        ("10.244.120.80", "default/redis-cart", t("2022-08-01T17:05:22"), None),
        ("10.244.120.81", "default/shippingservice", t("2022-08-01T17:05:21"), None),
    }
    assert inv.bindings[0].source == f"{case / 'pods.yaml'}#pod default/checkoutservice-69c8ff664b-x5bhp"


def test_host_network_pods_and_completed_jobs(shared: Path) -> None:
    result = read_inventory([shared / "conformance/netpol/cases/minikube_resources"])
    inv = result.inventory
    assert {n: w.k8s_kind for n, w in k8s(inv).items()} == {
        "ingress-nginx/ingress-nginx-admission-create": "Job",
        "ingress-nginx/ingress-nginx-admission-patch": "Job",
        "ingress-nginx/ingress-nginx-controller": "Deployment",
        "kube-system/calico-kube-controllers": "Deployment",
        "kube-system/calico-node": "DaemonSet",
        "kube-system/coredns": "Deployment",
        "kube-system/etcd-minikube": "Pod",  # static pods: owned by their Node
        "kube-system/kube-apiserver-minikube": "Pod",
        "kube-system/kube-controller-manager-minikube": "Pod",
        "kube-system/kube-proxy": "DaemonSet",
        "kube-system/kube-scheduler-minikube": "Pod",
        "kube-system/storage-provisioner": "Pod",
    }
    # Host-network pods (calico-node, kube-proxy, the control plane) hold the node's IP: not bound.
    # The admission Jobs completed: their IPs are free from the container's finishedAt on.
    assert {(b.ip, b.workload, b.valid_from, b.valid_to) for b in inv.bindings} == {
        ("10.244.120.65", "kube-system/calico-kube-controllers", t("2023-01-09T09:20:24"), None),
        ("10.244.120.66", "ingress-nginx/ingress-nginx-admission-create", t("2023-01-09T09:20:24"),
         t("2023-01-09T09:21:01")),
        ("10.244.120.67", "ingress-nginx/ingress-nginx-admission-patch", t("2023-01-09T09:20:24"),
         t("2023-01-09T09:21:03")),
        ("10.244.120.68", "kube-system/coredns", t("2023-01-09T09:20:24"), None),
        ("10.244.120.69", "ingress-nginx/ingress-nginx-controller", t("2023-01-09T09:20:24"), None),
    }
    assert inv.dns_resolvers == ("kube-system/coredns",)
    host_net = {n.split(":")[0] for n in result.report.notes if "uses the host network" in n}
    assert host_net == {"kube-system/calico-node", "kube-system/etcd-minikube", "kube-system/kube-apiserver-minikube",
                        "kube-system/kube-controller-manager-minikube", "kube-system/kube-proxy",
                        "kube-system/kube-scheduler-minikube", "kube-system/storage-provisioner"}


def test_conflicting_duplicate_service_in_real_case(shared: Path) -> None:
    # Two files define Service payments/visa-processor-service with different selectors.
    case = shared / "conformance/netpol/cases/acs-security-demos-added-workloads"
    with pytest.raises(InputError) as err:
        load_inventory([case])
    assert err.value.file == str(case / "payments/visa-processor/deployment.yaml")
    assert err.value.line == 82
    assert "Service payments/visa-processor-service is also defined, differently, at" in str(err.value)


# -- owner resolution -------------------------------------------------------------------------------

OWNED = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: shop}
    spec:
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: web:1}]}
    ---
    apiVersion: apps/v1
    kind: ReplicaSet
    metadata:
      name: web-5d4b8c7f9
      namespace: shop
      ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d1, controller: true}]
    spec:
      selector: {matchLabels: {app: web, pod-template-hash: 5d4b8c7f9}}
      template:
        metadata: {labels: {app: web, pod-template-hash: 5d4b8c7f9}}
        spec: {containers: [{name: web, image: web:1}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: web-5d4b8c7f9-x7k2p
      namespace: shop
      labels: {app: web, pod-template-hash: 5d4b8c7f9}
      ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4b8c7f9, uid: r1, controller: true}]
    spec: {containers: [{name: web, image: web:1}]}
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: backup, namespace: shop}
    spec:
      schedule: "0 3 * * *"
      jobTemplate:
        spec:
          template:
            metadata: {labels: {app: backup}}
            spec: {containers: [{name: b, image: backup:1}], restartPolicy: OnFailure}
    ---
    apiVersion: batch/v1
    kind: Job
    metadata:
      name: backup-28000000
      namespace: shop
      ownerReferences: [{apiVersion: batch/v1, kind: CronJob, name: backup, uid: c1, controller: true}]
    spec:
      template:
        metadata: {labels: {app: backup, batch.kubernetes.io/job-name: backup-28000000, job-name: backup-28000000}}
        spec: {containers: [{name: b, image: backup:1}], restartPolicy: OnFailure}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: backup-28000000-xkz72
      namespace: shop
      labels: {app: backup, batch.kubernetes.io/job-name: backup-28000000, job-name: backup-28000000,
               batch.kubernetes.io/controller-uid: j1, controller-uid: j1}
      ownerReferences: [{apiVersion: batch/v1, kind: Job, name: backup-28000000, uid: j1, controller: true}]
    spec: {containers: [{name: b, image: backup:1}]}
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db, namespace: shop}
    spec:
      selector: {matchLabels: {app: db}}
      serviceName: db
      template:
        metadata: {labels: {app: db}}
        spec: {containers: [{name: db, image: pg:16, ports: [{containerPort: 5432, name: pg}]}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: db-0
      namespace: shop
      labels: {app: db, apps.kubernetes.io/pod-index: "0", controller-revision-hash: db-7c9f,
               statefulset.kubernetes.io/pod-name: db-0}
      ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: s1, controller: true}]
    spec: {containers: [{name: db, image: pg:16, ports: [{containerPort: 5432, name: pg}]}]}
    ---
    apiVersion: batch/v1
    kind: Job
    metadata:
      name: nightly-28000001
      namespace: shop
      ownerReferences: [{apiVersion: batch/v1, kind: CronJob, name: nightly, uid: c2, controller: true}]
    spec:
      template:
        metadata: {labels: {app: nightly, controller-uid: j2}}
        spec: {containers: [{name: n, image: nightly:1}], restartPolicy: Never}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: debug
      namespace: shop
      labels: {run: debug}
    spec: {containers: [{name: sh, image: busybox}]}
    """


def test_owner_resolution_with_owner_objects(tmp_path: Path) -> None:
    inv = load_inventory([write(tmp_path, "owned.yaml", OWNED)])
    assert {n: (w.k8s_kind, w.labels, w.selector) for n, w in k8s(inv).items()} == {
        "shop/web": ("Deployment", (("app", "web"),), (("app", "web"),)),
        "shop/backup": ("CronJob", (("app", "backup"),), (("app", "backup"),)),
        "shop/db": ("StatefulSet", (("app", "db"),), (("app", "db"),)),
        # Job present, CronJob absent: the Job's ownerReference names the workload; volatile labels go.
        "shop/nightly": ("CronJob", (("app", "nightly"),), (("app", "nightly"),)),
        "shop/debug": ("Pod", (("run", "debug"),), (("run", "debug"),)),
    }
    assert ports(k8s(inv)["shop/db"]) == {(5432, "TCP", "pg")}


PODS_ONLY = """
    apiVersion: v1
    kind: List
    items:
    - apiVersion: v1
      kind: Pod
      metadata:
        name: web-5d4b8c7f9-x7k2p
        namespace: shop
        labels: {app: web, pod-template-hash: 5d4b8c7f9}
        ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4b8c7f9, uid: r1, controller: true}]
      spec: {containers: [{name: web, image: web:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: legacy-7d77fb55cc-bs8rc
        namespace: shop
        labels: {app: legacy, pod-template-hash: "3833961177"}
        ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: legacy-7d77fb55cc, uid: r2,
                           controller: true}]
      spec: {containers: [{name: l, image: legacy:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: api-6b9f8d7c5-q2w4z
        namespace: shop
        labels: {app: api, pod-template-hash: 6b9f8d7c5}
      spec: {containers: [{name: api, image: api:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: db-1
        namespace: shop
        labels: {app: db, controller-revision-hash: db-7c9f, statefulset.kubernetes.io/pod-name: db-1}
      spec: {containers: [{name: db, image: pg:16}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: agent-k2x9z
        namespace: shop
        labels: {app: agent, controller-revision-hash: 6f7d8, pod-template-generation: "3"}
      spec: {containers: [{name: a, image: agent:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: backup-28000000-xkz72
        namespace: shop
        labels: {app: backup, job-name: backup-28000000, controller-uid: j1}
      spec: {containers: [{name: b, image: backup:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: lonely-12345
        namespace: shop
        labels: {app: lonely}
      spec: {containers: [{name: l, image: lonely:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: mon-mb72c
        namespace: shop
        labels: {app: mon}
      spec: {containers: [{name: m, image: mon:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: worker-x7k2p
        namespace: shop
        labels: {app: worker}
      spec: {containers: [{name: w, image: worker:1}]}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: front-6c8d5b9f7-k2v2k
        namespace: shop
        labels: {app: front}
      spec: {containers: [{name: f, image: front:1}]}
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: front, namespace: shop}
      spec:
        selector: {matchLabels: {app: front}}
        template:
          metadata: {labels: {app: front}}
          spec: {containers: [{name: f, image: front:1}]}
    - apiVersion: apps/v1
      kind: DaemonSet
      metadata: {name: mon, namespace: shop}
      spec:
        selector: {matchLabels: {app: mon}}
        template:
          metadata: {labels: {app: mon}}
          spec: {containers: [{name: m, image: mon:1}]}
    """


def test_owner_resolution_without_owner_objects(tmp_path: Path) -> None:
    inv = load_inventory([write(tmp_path, "pods.yaml", PODS_ONLY)])
    assert {n: (w.k8s_kind, w.selector) for n, w in k8s(inv).items()} == {
        # ReplicaSet name = <deployment>-<pod-template-hash>, the hash also in the label
        "shop/web": ("Deployment", (("app", "web"),)),
        # hash label does not match the name (pre-1.11 hash format): the Deployment cannot be told
        "shop/legacy-7d77fb55cc": ("ReplicaSet", (("app", "legacy"),)),
        # no ownerReferences at all: <deployment>-<hash>-<5 chars> with the hash label
        "shop/api": ("Deployment", (("app", "api"),)),
        "shop/db": ("StatefulSet", (("app", "db"),)),  # statefulset.kubernetes.io/pod-name
        "shop/agent": ("DaemonSet", (("app", "agent"),)),  # pod-template-generation + revision hash
        "shop/backup-28000000": ("Job", (("app", "backup"),)),  # job-name label; no CronJob in the input
        "shop/lonely-12345": ("Pod", (("app", "lonely"),)),  # a name shape alone is no evidence
        "shop/worker-x7k2p": ("Pod", (("app", "worker"),)),
        # no owner reference, no hash label, but the Deployment in the input generates the name and
        # selects the pod
        "shop/front": ("Deployment", (("app", "front"),)),
        "shop/mon": ("DaemonSet", (("app", "mon"),)),  # the DaemonSet in the input selects the pod
    }


# -- selectors ----------------------------------------------------------------------------------------


def test_selector_is_match_labels_only_when_unique(tmp_path: Path) -> None:
    path = write(tmp_path, "sel.yaml", """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: shop}
        spec:
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web, track: stable}}
            spec: {containers: [{name: web, image: web:1}]}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web-canary, namespace: shop}
        spec:
          selector: {matchLabels: {app: web, track: canary}}
          template:
            metadata: {labels: {app: web, track: canary}}
            spec: {containers: [{name: web, image: web:2}]}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api, namespace: shop}
        spec:
          selector:
            matchLabels: {app: api}
            matchExpressions: [{key: track, operator: NotIn, values: [canary]}]
          template:
            metadata: {labels: {app: api, track: stable}}
            spec: {containers: [{name: api, image: api:1}]}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: other}
        spec:
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web, track: canary}}
            spec: {containers: [{name: web, image: web:1}]}
        """)
    assert {n: w.selector for n, w in k8s(load_inventory([path])).items()} == {
        # {app: web} would also select web-canary's pods: the full template labels are used instead
        "shop/web": (("app", "web"), ("track", "stable")),
        "shop/web-canary": (("app", "web"), ("track", "canary")),
        # matchLabels without the expression would be wider than the real selector
        "shop/api": (("app", "api"), ("track", "stable")),
        # other namespaces do not compete
        "other/web": (("app", "web"),),
    }


# -- exposure, target ports, clusterIPs, environment --------------------------------------------------

EXPOSURE = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: shop, namespace: edge}
    spec:
      selector: {matchLabels: {app: shop}}
      template:
        metadata: {labels: {app: shop}}
        spec:
          containers:
          - name: shop
            image: shop:1
            ports: [{containerPort: 8080, name: http-alt}, {containerPort: 9000, protocol: UDP, name: stats}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: lb, namespace: edge}
    spec:
      type: LoadBalancer
      clusterIP: 10.96.0.20
      selector: {app: shop}
      ports:
      - {port: 80, targetPort: http-alt}
      - {port: 9100, targetPort: 9100}
      - {port: 9000, targetPort: stats, protocol: UDP}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: edge}
    spec:
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: web:1, ports: [{containerPort: 8000}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web-svc, namespace: edge}
    spec:
      clusterIP: 10.96.0.21
      selector: {app: web}
      ports: [{port: 80, targetPort: 8000}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: main, namespace: edge}
    spec:
      defaultBackend: {service: {name: web-svc, port: {number: 80}}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: legacy, namespace: edge}
    spec:
      selector: {matchLabels: {app: legacy}}
      template:
        metadata: {labels: {app: legacy}}
        spec: {containers: [{name: legacy, image: legacy:1, ports: [{containerPort: 8080}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: legacy-svc, namespace: edge}
    spec:
      selector: {app: legacy}
      ports: [{port: 80, targetPort: http}]
    ---
    apiVersion: extensions/v1beta1
    kind: Ingress
    metadata: {name: old, namespace: edge}
    spec:
      rules:
      - host: old.example.com
        http:
          paths: [{path: /, backend: {serviceName: legacy-svc, servicePort: 80}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: all, namespace: edge}
    spec:
      clusterIP: 10.96.0.22
      selector: {}
      ports: [{port: 1}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: np, namespace: edge}
    spec:
      type: NodePort
      selector: {app: web}
      ports: [{port: 80, targetPort: 8000, nodePort: 30080}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: orders, namespace: edge}
    spec:
      selector: {matchLabels: {app: orders}}
      template:
        metadata: {labels: {app: orders}}
        spec: {containers: [{name: orders, image: orders:1, ports: [{containerPort: 8080, name: http}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: orders-internal
      namespace: edge
      annotations: {service.beta.kubernetes.io/aws-load-balancer-scheme: internal}
    spec:
      type: LoadBalancer
      selector: {app: orders}
      ports: [{port: 80, targetPort: http}]
    ---
    apiVersion: serving.knative.dev/v1
    kind: Service
    metadata: {name: knative, namespace: edge}
    spec: {template: {spec: {containers: [{image: kn:1}]}}}
    """


def test_exposure_target_ports_and_cluster_ips(tmp_path: Path) -> None:
    path = write(tmp_path, "exposure.yaml", EXPOSURE)
    result = read_inventory([path])
    ws = k8s(result.inventory)
    assert {n: (w.exposure, w.exposure_reason) for n, w in ws.items()} == {
        "edge/shop": ("internet", "Service edge/lb is type LoadBalancer"),
        "edge/web": ("internet", "Ingress edge/main routes to Service edge/web-svc; Service edge/np is type NodePort"),
        "edge/legacy": ("internet", "Ingress edge/old routes to Service edge/legacy-svc"),
        # a private load balancer (AWS Load Balancer Controller annotation) is no internet exposure
        "edge/orders": ("internal", ""),
    }
    assert ("Service edge/orders-internal is an internal load balancer (service.beta.kubernetes.io/"
            "aws-load-balancer-scheme=internal): edge/orders is not counted as internet-facing for it"
            in result.report.notes)
    # Named targetPorts resolve to the container's named ports (protocol included); a numeric
    # targetPort the containers do not declare still adds that port.
    assert ports(ws["edge/shop"]) == {(8080, "TCP", "http-alt"), (9000, "UDP", "stats"), (9100, "TCP", None)}
    # `http` is no named port of legacy: nothing is guessed, the gap is reported.
    assert ports(ws["edge/legacy"]) == {(8080, "TCP", None)}
    assert ("Service edge/legacy-svc port 80: targetPort 'http' is not a named port of edge/legacy; no port added"
            in result.report.notes)
    # clusterIPs bind (open-ended) when the selector picks exactly one workload; an empty selector
    # selects no pods (the Service has manual Endpoints), so `all` binds nothing.
    assert result.inventory.bindings == (
        AddressBinding(ip="10.96.0.20", workload="edge/shop", source=f"{path}#service edge/lb"),
        AddressBinding(ip="10.96.0.21", workload="edge/web", source=f"{path}#service edge/web-svc"),
    )
    assert "Service edge/all: clusterIP not bound, it selects 0 workloads" in result.report.notes
    # Knative's `Service` is another group's kind: counted, not read as a core Service.
    assert result.report.ignored_kinds == (("Service (serving.knative.dev/v1)", 1),)


def test_environment_conventions(tmp_path: Path) -> None:
    def deployment(name: str, ns: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name, **labels}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}}}

    def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}

    path = write_json(tmp_path, "env.json", {"apiVersion": "v1", "kind": "List", "items": [
        deployment("a", "apps", {"env": "Production"}),
        deployment("b", "apps", {"environment": "perf"}),
        deployment("c", "team", {}), namespace("team", {"environment": "stg"}),
        deployment("d", "shop-dev", {}),
        deployment("e", "prod", {}),
        deployment("f", "frontend", {"tier": "prod"}), namespace("frontend", {"tier": "web"}),
    ]})
    inv = load_inventory([path])
    assert {n: w.environment for n, w in k8s(inv).items()} == {
        "apps/a": "prod", "apps/b": "perf", "team/c": "staging", "shop-dev/d": "dev", "prod/e": "prod",
        "frontend/f": None}
    assert dict(inv.namespaces)["team"] == (("environment", "stg"), ("kubernetes.io/metadata.name", "team"))


# -- IP reuse across snapshots --------------------------------------------------------------------


def pod(name: str, rs: str, ip: str, created: str, uid: str, *, deleted: str | None = None,
        host_network: bool = False, namespace: str = "prod") -> dict[str, Any]:
    app, pod_hash = rs.rsplit("-", 1)
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": uid, "creationTimestamp": created,
        "labels": {"app": app, "pod-template-hash": pod_hash},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": f"rs-{rs}",
                             "controller": True, "blockOwnerDeletion": True}]}
    if deleted:
        meta["deletionTimestamp"] = deleted
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"hostNetwork": host_network, "serviceAccountName": app,
                     "containers": [{"name": app, "image": f"{app}:1", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "hostIP": "192.168.10.5", "podIP": ip, "podIPs": [{"ip": ip}],
                       "startTime": created}}


def snapshot(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(pods), "metadata": {"resourceVersion": ""}}


def reuse_snapshots(tmp_path: Path) -> list[Path]:
    monday = snapshot(
        pod("a-6d4cf56db6-x7k2p", "a-6d4cf56db6", "10.1.0.5", "2024-05-06T08:00:00Z", "u1"),
        pod("b-7f9c8d6b5-q8w9t", "b-7f9c8d6b5", "10.1.0.6", "2024-05-06T08:00:00Z", "u2"),
        pod("c-6d4cf56db6-bb2kk", "c-6d4cf56db6", "10.1.0.9", "2024-05-06T08:00:00Z", "u5"),
        pod("etl-7f9c8d6b5-q8w9t", "etl-7f9c8d6b5", "10.1.0.10", "2024-05-06T08:00:00Z", "u6", namespace="batch"),
        pod("node-agent-4h5j6", "node-agent-5c5c5c5c5", "192.168.10.5", "2024-05-06T07:00:00Z", "u9",
            host_network=True))
    # Wednesday: a's pod was replaced (new IP); b scaled up and its new pod got a's old IP. b's first pod
    # is still there (same uid: one binding), now being deleted. c is gone. The dump does not cover
    # namespace batch (none of its pods is listed), so it says nothing about etl.
    wednesday = snapshot(
        pod("a-6d4cf56db6-m7n4b", "a-6d4cf56db6", "10.1.0.7", "2024-05-07T10:00:00Z", "u3"),
        pod("b-7f9c8d6b5-q8w9t", "b-7f9c8d6b5", "10.1.0.6", "2024-05-06T08:00:00Z", "u2",
            deleted="2024-05-08T09:30:00Z"),
        pod("b-7f9c8d6b5-z6x2c", "b-7f9c8d6b5", "10.1.0.5", "2024-05-07T12:00:00Z", "u4"))
    return [write_json(tmp_path, "pods-mon.json", monday), write_json(tmp_path, "pods-wed.json", wednesday)]


def test_ip_reuse_across_snapshots(tmp_path: Path) -> None:
    mon, wed = reuse_snapshots(tmp_path)
    result = read_inventory([mon, wed])
    inv = result.inventory
    assert {n: (w.k8s_kind, w.selector, w.service_account) for n, w in k8s(inv).items()} == {
        "prod/a": ("Deployment", (("app", "a"),), "a"),
        "prod/b": ("Deployment", (("app", "b"),), "b"),
        "prod/c": ("Deployment", (("app", "c"),), "c"),
        "batch/etl": ("Deployment", (("app", "etl"),), "etl"),
        "prod/node-agent": ("Deployment", (("app", "node-agent"),), "node-agent"),
    }
    assert inv.bindings == (
        AddressBinding(ip="10.1.0.5", workload="prod/a", valid_from=t("2024-05-06T08:00:00"),
                       valid_to=t("2024-05-07T12:00:00"), source=f"{mon}#pod prod/a-6d4cf56db6-x7k2p"),
        AddressBinding(ip="10.1.0.5", workload="prod/b", valid_from=t("2024-05-07T12:00:00"), valid_to=None,
                       source=f"{wed}#pod prod/b-7f9c8d6b5-z6x2c"),
        AddressBinding(ip="10.1.0.6", workload="prod/b", valid_from=t("2024-05-06T08:00:00"),
                       valid_to=t("2024-05-08T09:30:00"), source=f"{mon}#pod prod/b-7f9c8d6b5-q8w9t"),
        AddressBinding(ip="10.1.0.7", workload="prod/a", valid_from=t("2024-05-07T10:00:00"), valid_to=None,
                       source=f"{wed}#pod prod/a-6d4cf56db6-m7n4b"),
        # Gone by Wednesday's dump, which was taken after its latest event (b's new pod, Tue 12:00).
        AddressBinding(ip="10.1.0.9", workload="prod/c", valid_from=t("2024-05-06T08:00:00"),
                       valid_to=t("2024-05-07T12:00:00"), source=f"{mon}#pod prod/c-6d4cf56db6-bb2kk"),
        AddressBinding(ip="10.1.0.10", workload="batch/etl", valid_from=t("2024-05-06T08:00:00"), valid_to=None,
                       source=f"{mon}#pod batch/etl-7f9c8d6b5-q8w9t"),
    )
    assert result.report.notes == (
        "prod/a: 1 pod(s) missing from a later snapshot of their namespace; their address bindings end when "
        "that snapshot was taken",
        "prod/c: 1 pod(s) missing from a later snapshot of their namespace; their address bindings end when "
        "that snapshot was taken",
        "prod/node-agent: uses the host network; its pods have the node's IP, which is not bound to it, and "
        "NetworkPolicy does not apply to them",
    )
    assert load_inventory([wed, mon]) == inv
    assert load_inventory([tmp_path]) == inv


def test_same_ip_without_timestamps_is_ambiguous(tmp_path: Path) -> None:
    one = pod("a-6d4cf56db6-x7k2p", "a-6d4cf56db6", "10.1.0.5", "2024-05-06T08:00:00Z", "u1")
    two = pod("b-7f9c8d6b5-z6x2c", "b-7f9c8d6b5", "10.1.0.5", "2024-05-06T08:00:00Z", "u2")
    for p in (one, two):
        del p["metadata"]["creationTimestamp"], p["status"]["startTime"]
    path = write_json(tmp_path, "pods.json", snapshot(one, two))
    with pytest.raises(InputError, match=r"IP 10\.1\.0\.5 is bound to prod/a .* and to prod/b .* overlapping"):
        load_inventory([path])


# -- malformed input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "line", "field", "message"), [
    ("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x: y\n", 4, None, "malformed YAML"),
    ("bad.json", '{\n  "kind": "List",\n  "items": [\n    {"a": 1,}\n  ]\n}\n', 4, None, "malformed JSON"),
    ("containers.yaml", """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          template:
            spec:
              containers:
                name: web
        """, 7, "spec.template.spec.containers", "expected a list, got a mapping"),
    ("port.yaml", """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Pod
          metadata: {name: p}
          spec:
            containers:
            - name: c
              ports:
              - containerPort: "80"
        """, 11, "items[0].spec.containers[0].ports[0].containerPort", "expected an integer, got a string"),
    ("label.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    enabled: yes\n", 6,
     "metadata.labels.enabled", "keys and values must be strings"),
    ("dup.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector: {app: a}\n"
     "  selector: {app: b}\n", 7, "spec.selector", "duplicate key 'selector' (first on line 6)"),
    ("dup.json", '{"apiVersion": "v1", "kind": "List",\n "items": [{"kind": "Pod", "apiVersion": "v1",\n'
     '  "metadata": {"name": "a",\n   "name": "b"}}]}', 4, "items[0].metadata.name", "duplicate key 'name'"),
    ("target.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n"
     "  - port: 80\n    targetPort: '8080'\n", 7, "spec.ports[0].targetPort", "neither a number nor"),
    ("time.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  creationTimestamp: '2024-05-06 08:00'\n",
     5, "metadata.creationTimestamp", "timestamp without a time zone"),
])
def test_malformed_input_names_file_line_and_field(tmp_path: Path, name: str, text: str, line: int,
                                                    field: str | None, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as err:
        load_inventory([path])
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)
    assert message in err.value.message


def test_misspelt_port_field_in_real_case(shared: Path) -> None:
    # `containerport:` (lower-case p): Kubernetes rejects the field; dropping it would lose the port.
    case = shared / "conformance/netpol/cases/netpol_named_port_test"
    with pytest.raises(InputError) as err:
        load_inventory([case])
    assert (err.value.file, err.value.line, err.value.field) == (
        str(case / "pods.yaml"), 32, "spec.template.spec.containers[0].ports[1].containerport")
    assert err.value.message.startswith("unknown field 'containerport'")


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        load_inventory([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    write(tmp_path, "empty/README.md", "not an inventory")
    with pytest.raises(InputError, match="no inventory files"):
        load_inventory([tmp_path / "empty"])


# -- the bundled example ------------------------------------------------------------------------------


def test_bundled_shop_example() -> None:
    # Manifests, three weekly pod dumps and a native file, read together as `microseg plan` does; the
    # expected values are the ones the example's README documents.
    from microseg.examples import example_dir

    shop = example_dir("shop")
    snaps = shop / "snapshots"
    inv = load_inventory([shop])
    ws = k8s(inv)
    assert {n for n in ws if n.startswith("shop/")} == {
        f"shop/{n}" for n in ("carts", "catalogue", "catalogue-db", "frontend", "orders", "payment", "postgres",
                              "queue-master", "rabbitmq", "redis", "shipping", "user")}
    # Fact 1: carts' old pod address is reused by a catalogue pod; the binding changes hands then.
    reused = [(b.workload, b.valid_from, b.valid_to, b.source) for b in inv.bindings if b.ip == "10.244.34.205"]
    assert reused == [
        ("shop/carts", t("2026-10-08T20:12:21"), t("2026-11-04T14:20:05"),
         f"{snaps / 'pods-20261102T023000Z.json'}#pod shop/carts-rxvqgztdmp-v5kcr"),
        ("shop/catalogue", t("2026-11-04T14:20:05"), None,
         f"{snaps / 'pods-20261105T023000Z.json'}#pod shop/catalogue-5zrvmt4pqf-ndnm5"),
    ]
    # shop-dev's old frontend pod is missing from the day-7 dump: its binding ends before that dump
    # (it really ended 11:05:53; the dump's latest event, 11:05:15, bounds it from below).
    assert [(b.workload, b.valid_to) for b in inv.bindings if b.ip == "10.244.60.168"] == [
        ("shop-dev/frontend", t("2026-11-06T11:05:15"))]
    assert {n: w.exposure_reason for n, w in ws.items() if w.exposure == "internet"} == {
        "ingress-nginx/ingress-nginx-controller":
            "Service ingress-nginx/ingress-nginx-controller is type LoadBalancer",
        "shop/frontend": "Ingress shop/shop routes to Service shop/frontend",
    }
    assert {n for n, w in ws.items() if w.environment == "dev"} == {
        "shop-dev/catalogue", "shop-dev/frontend", "shop-dev/orders"}
    assert inv.dns_resolvers == ("kube-system/coredns",)
    assert ports(ws["kube-system/coredns"]) == {(53, "TCP", "dns-tcp"), (53, "UDP", "dns"), (9153, "TCP", "metrics")}
    assert [b for b in inv.bindings if b.workload == "kube-system/coredns" and b.valid_from is None] == [
        AddressBinding(ip="172.20.0.10", workload="kube-system/coredns",
                       source=f"{shop / 'k8s/kube-system.yaml'}#service kube-system/kube-dns")]
    # Host-network DaemonSets hold node addresses: none is bound.
    assert not [b for b in inv.bindings if b.ip.startswith("10.0.")]


# -- lenient reading (deployed policies: `microseg connectivity`) -----------------------------------


def _lenient(*paths: Path) -> Any:
    from microseg.sources.inventory import discover
    from microseg.sources.inventory.kubernetes import KubernetesReader
    from microseg.sources.yamlpos import load_documents

    reader = KubernetesReader(lenient=True)
    for path, display in discover(list(paths)):
        for doc in load_documents(path, display):
            if isinstance(doc.data, dict):
                reader.add(doc)
    return reader.build()


def test_lenient_drops_a_misspelt_port_entry_and_says_so(shared: Path) -> None:
    case = shared / "conformance/netpol/cases/netpol_named_port_test"
    found = _lenient(case)
    pod_a = {w.name: w for w in found.workloads}["helloworld/pod-a"]
    # The `udps` entry (containerport: 3535) is gone; the SCTP port `newport` stays.
    assert ports(pod_a) == {(8956, "SCTP", "newport")}
    assert found.rejected == (f"{case / 'pods.yaml'}:32 [spec.template.spec.containers[0].ports[1].containerport]: "
                              "unknown field 'containerport' (expected one of containerPort, hostIP, hostPort, name, "
                              "protocol) - port entry ignored",)


def test_lenient_keeps_the_owner_the_pods_name(tmp_path: Path) -> None:
    write(tmp_path, "pods.yaml", """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-5d4b8c7f9-x7k2p
          namespace: shop
          labels: {app: web, pod-template-hash: 5d4b8c7f9}
          ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4b8c7f9, uid: r1, controller: true}]
        spec: {containers: [{name: web, image: web:1}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: p1
          namespace: shop
          labels: {app: a, tier: t}
          ownerReferences: [{name: group, controller: true}]
        spec: {containers: [{name: c, image: i}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: p2
          namespace: shop
          labels: {app: b, tier: t}
          ownerReferences: [{name: group, controller: true}]
        spec: {containers: [{name: c, image: i}]}
        """)
    found = _lenient(tmp_path)
    # Strict reading infers the Deployment from the pod-template-hash; lenient keeps the ReplicaSet the pod
    # names, and groups the kind-less owner's pods under its name as kind Pod.
    assert {(w.name, w.k8s_kind) for w in found.workloads} == {("shop/web-5d4b8c7f9", "ReplicaSet"),
                                                               ("shop/group", "Pod")}
    assert found.label_variants["shop/group"] == ((("app", "a"), ("tier", "t")), (("app", "b"), ("tier", "t")))
    # Strict reading refuses the kind-less owner reference.
    with pytest.raises(InputError) as err:
        load_inventory([tmp_path / "pods.yaml"])
    assert err.value.field == "metadata.ownerReferences[0].kind"


def test_lenient_keeps_the_first_of_two_different_services(shared: Path) -> None:
    case = shared / "conformance/netpol/cases/acs-security-demos-added-workloads"
    found = _lenient(case)
    notes = [n for n in found.notes if n.startswith("Service payments/visa-processor-service is defined differently")]
    assert len(notes) == 1 and notes[0].endswith("is kept")


# -- KubeVirt and secondary networks (lenient reading, for `connectivity`) ------------------------------------


def test_lenient_groups_a_vm_its_vmi_and_virt_launcher_pod_under_the_vm(shared: Path) -> None:
    # udn_and_vms_test_5: two VMs, their VMIs (owned by the VMs) and virt-launcher pods (owned by the VMIs).
    found = _lenient(shared / "conformance/netpol/cases/udn_and_vms_test_5")
    assert {(w.name, w.k8s_kind) for w in found.workloads} == {
        ("foo/fedora-apricot-pike-81", "VirtualMachine"), ("foo/fedora-tomato-zebra-41", "VirtualMachine")}
    vm = {w.name: w for w in found.workloads}["foo/fedora-tomato-zebra-41"]
    # The labels of spec.template.metadata (what KubeVirt puts on the virt-launcher pod), not the VM's own.
    assert dict(vm.labels) == {"kubevirt.io/domain": "fedora-tomato-zebra-41", "kubevirt.io/size": "small"}
    assert found.secondary_networks == {}


def test_lenient_reads_vm_multus_networks_and_the_networks_annotation(tmp_path: Path) -> None:
    write(tmp_path, "objs.yaml", """
        apiVersion: kubevirt.io/v1
        kind: VirtualMachine
        metadata: {name: vm1, namespace: lab}
        spec:
          template:
            metadata: {labels: {app: vm1}}
            spec:
              networks:
              - {name: default, pod: {}}
              - {name: sec, multus: {networkName: flat}}
              - {name: other, multus: {networkName: infra/shared}}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: a
          namespace: lab
          annotations: {k8s.v1.cni.cncf.io/networks: "flat, infra/shared@eth2"}
        spec: {containers: [{name: c, image: busybox}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: b
          namespace: lab
          annotations:
            k8s.v1.cni.cncf.io/networks: '[{"name": "flat", "interface": "n1"}, {"name": "x", "namespace": "y"}]'
        spec: {containers: [{name: c, image: busybox}]}
    """)
    found = _lenient(tmp_path)
    assert found.secondary_networks == {"lab/a": ("infra/shared", "lab/flat"), "lab/b": ("lab/flat", "y/x"),
                                        "lab/vm1": ("infra/shared", "lab/flat")}
    assert {w.name: dict(w.labels) for w in found.workloads}["lab/vm1"] == {"app": "vm1"}


def test_lenient_refuses_a_malformed_networks_annotation(tmp_path: Path) -> None:
    write(tmp_path, "pod.yaml", """
        apiVersion: v1
        kind: Pod
        metadata:
          name: a
          annotations: {k8s.v1.cni.cncf.io/networks: '[{"interface": "n1"}]'}
        spec: {containers: [{name: c, image: busybox}]}
    """)
    with pytest.raises(InputError, match="network selection element without a name"):
        _lenient(tmp_path)


def test_strict_reading_still_only_counts_virtual_machines(tmp_path: Path) -> None:
    write(tmp_path, "vm.yaml", """
        apiVersion: kubevirt.io/v1
        kind: VirtualMachine
        metadata: {name: vm1, namespace: lab}
        spec: {template: {metadata: {labels: {app: vm1}}, spec: {}}}
    """)
    from microseg.sources.inventory import discover
    from microseg.sources.inventory.kubernetes import KubernetesReader
    from microseg.sources.yamlpos import load_documents

    reader = KubernetesReader()
    for path, display in discover([tmp_path]):
        for doc in load_documents(path, display):
            reader.add(doc)
    found = reader.build()
    assert found.workloads == ()
    assert found.ignored_kinds == {"VirtualMachine": 1}
