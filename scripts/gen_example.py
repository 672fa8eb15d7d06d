#!/usr/bin/env python3
"""Generate the bundled example environment "shop" (src/microseg/examples/shop).

Usage::

    python scripts/gen_example.py                 # rewrite src/microseg/examples/shop
    python scripts/gen_example.py --out /tmp/shop # write somewhere else (tests compare the two)

The output is a pure function of ``--seed``: every random choice comes from ``random.Random``
instances seeded from it (one stream per concern, so that changing the traffic mix does not rename
the pods), there is no wall clock, JSON is written with sorted keys and gzip headers carry
``mtime=0`` and no file name. Running the generator twice gives byte-identical files.

Only the standard library and PyYAML are used, so the generator does not depend on microseg itself:
the example is ground truth that microseg is measured against, not something derived from it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import ipaddress
import json
import math
import random
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

SEED = 20261102
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "src" / "microseg" / "examples" / "shop"

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
DAYS = 7
CLUSTER = "prod"
ACCOUNT = "111122223333"
REGION = "eu-west-1"
VPC = "vpc-0c5e2f7a9b1d34e68"
SERVICE_CIDR = "172.20.0.0/16"
KUBE_DNS_IP = "172.20.0.10"
SNAPSHOT_TIMES = tuple(DAY0 + timedelta(days=d, hours=2, minutes=30) for d in (0, 3, 6))
HUBBLE_DAY = 5  # 0-based: day 6, Saturday 2026-11-07
HUBBLE_NAMESPACE = "ai"
EPHEMERAL = (32768, 60999)  # Linux net.ipv4.ip_local_port_range default

# The planted events (see README "Planted facts").
CARTS_ROLLOUT = DAY0 + timedelta(days=2, hours=14, minutes=11, seconds=50)  # new carts pod created
CARTS_OLD_DELETED = DAY0 + timedelta(days=2, hours=14, minutes=12, seconds=40)
CATALOGUE_SCALE_UP = DAY0 + timedelta(days=2, hours=14, minutes=20, seconds=5)  # reuses the old carts IP
DEV_FRONTEND_REDEPLOY = DAY0 + timedelta(days=4, hours=11, minutes=5, seconds=12)
REINDEX_START = DAY0 + timedelta(days=3, hours=2)  # CronJob "0 2 * * 4": Thursday 2026-11-05
REINDEX_POD_CREATED = REINDEX_START + timedelta(seconds=3)
REINDEX_FINISHED = REINDEX_START + timedelta(minutes=47, seconds=12)
ATTACK_DAY = 5  # 0-based: day 6, Saturday 2026-11-07
ATTACK_T0 = DAY0 + timedelta(days=ATTACK_DAY, hours=3, minutes=12, seconds=7)
UNKNOWN_HOST = "10.99.4.17"

VPC_FIELDS = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
              "action log-status vpc-id subnet-id instance-id tcp-flags type flow-direction").split()

# Kubernetes' generated-name alphabet (k8s.io/apimachinery/pkg/util/rand): no vowels, no 0/1/3.
K8S_ALPHANUM = "bcdfghjklmnpqrstvwxz2456789"


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream for one concern (str seeds hash with SHA-512)."""
    return random.Random(f"{seed}/{name}")


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def day_of(t: datetime) -> int:
    return (t - DAY0).days


# --------------------------------------------------------------------------------------------------
# The estate
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    az: str
    instance: str
    eni: str  # primary ENI (node address)
    pod_eni: str  # secondary ENI in the pod subnet (VPC CNI custom networking)
    subnet: str
    pod_subnet: str
    pod_cidr: str


NODES = (
    Node("ip-10-0-1-11.eu-west-1.compute.internal", "10.0.1.11", "eu-west-1a", "i-0a3c1f2b4d5e60111",
         "eni-0b1d2f3a4c5e60111", "eni-0c2e3a4b5d6f70111", "subnet-0a1b2c3d4e5f60001",
         "subnet-0d4e5f6a7b8c90001", "10.244.16.0/20"),
    Node("ip-10-0-2-12.eu-west-1.compute.internal", "10.0.2.12", "eu-west-1b", "i-0a3c1f2b4d5e60212",
         "eni-0b1d2f3a4c5e60212", "eni-0c2e3a4b5d6f70212", "subnet-0a1b2c3d4e5f60002",
         "subnet-0d4e5f6a7b8c90002", "10.244.32.0/20"),
    Node("ip-10-0-3-13.eu-west-1.compute.internal", "10.0.3.13", "eu-west-1c", "i-0a3c1f2b4d5e60313",
         "eni-0b1d2f3a4c5e60313", "eni-0c2e3a4b5d6f70313", "subnet-0a1b2c3d4e5f60003",
         "subnet-0d4e5f6a7b8c90003", "10.244.48.0/20"),
)


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    labels: dict[str, str]
    ports: tuple[tuple[int, str, str], ...]  # (port, protocol, name)
    environment: str
    zone: str | None
    owner: str
    location: str
    eni: str
    subnet: str
    instance: str
    depends_on: tuple[dict[str, Any], ...] = ()


HOSTS = (
    Host("bastion-1", "10.20.0.10", {"role": "bastion"}, ((22, "TCP", "ssh"),), "prod", "management",
         "ops-team", "vpc-prod/subnet-mgmt", "eni-0e1f2a3b4c5d60010", "subnet-0f1e2d3c4b5a60010",
         "i-0f5e4d3c2b1a00010",
         ({"destination": "legacy-erp", "protocol": "TCP", "port": 22, "reason": "admin SSH jump host"},
          {"destination": "backup-1", "protocol": "TCP", "port": 22, "reason": "admin SSH jump host"},
          {"destination": "legacy-erp", "protocol": "ICMP", "port": 0, "reason": "uptime ping"},
          {"destination": "backup-1", "protocol": "ICMP", "port": 0, "reason": "uptime ping"})),
    Host("legacy-erp", "10.20.1.20", {"role": "erp", "app": "erp"}, ((8443, "TCP", "https"), (22, "TCP", "ssh")),
         "prod", None, "finance-it", "vpc-prod/subnet-apps", "eni-0e1f2a3b4c5d60120",
         "subnet-0f1e2d3c4b5a60120", "i-0f5e4d3c2b1a00120",
         ({"destination": "shop/orders", "protocol": "TCP", "port": 8080,
           "reason": "nightly order export through the orders-internal NLB (client IP preserved)"},)),
    Host("backup-1", "10.20.2.30", {"role": "backup"}, ((22, "TCP", "ssh"),), "prod", "management", "ops-team",
         "vpc-prod/subnet-backup", "eni-0e1f2a3b4c5d60230", "subnet-0f1e2d3c4b5a60230", "i-0f5e4d3c2b1a00230",
         ({"destination": "shop/postgres", "protocol": "TCP", "port": 5432,
           "reason": "nightly pg_dump at 01:30 UTC"},)),
)

EXTERNAL = (
    {"name": "payments-psp", "cidrs": ["198.51.100.0/24"], "description": "card processor (PSP) API"},
    {"name": "corp-vpn", "cidrs": ["10.50.0.0/16"], "description": "office VPN client pool (administrators)"},
)
PSP_IPS = ("198.51.100.23", "198.51.100.24")
VPN_USERS = ("10.50.3.14", "10.50.3.77", "10.50.7.201")

OVERRIDES = (
    {"workload": "shop/postgres", "sensitivity": "restricted", "compliance": ["pci"], "owner": "shop-team"},
    {"workload": "shop/payment", "sensitivity": "restricted", "compliance": ["pci"], "owner": "shop-team",
     "depends_on": [{"destination": "external:payments-psp", "protocol": "TCP", "port": 443,
                     "reason": "card authorisation API"}]},
    {"workload": "shop/orders", "owner": "shop-team",
     "depends_on": [{"destination": "legacy-erp", "protocol": "TCP", "port": 8443,
                     "reason": "posts invoices to the ERP"}]},
    {"workload": "shop/catalogue-db", "sensitivity": "medium"},
    {"workload": "ai/assistant", "ai_role": "agent", "owner": "ai-team"},
    {"workload": "ai/model-server", "ai_role": "model-endpoint", "owner": "ai-team"},
    {"workload": "ai/vector-store", "ai_role": "vector-store", "sensitivity": "high", "owner": "ai-team"},
    {"workload": "ai/embedding-reindex", "ai_role": "embedding-pipeline", "owner": "ai-team"},
    # The administrators' VPN pool is where admin sessions start: it belongs to the management zone,
    # not to "external", or every SSH session to the bastion would break a guardrail.
    {"workload": "external:corp-vpn", "zone": "management", "owner": "ops-team"},
)

NAMESPACES: dict[str, dict[str, str]] = {
    "kube-system": {},
    "ingress-nginx": {"app.kubernetes.io/name": "ingress-nginx", "env": "prod"},
    "shop": {"env": "prod", "team": "shop"},
    "shop-dev": {"env": "dev", "team": "shop"},
    "ai": {"env": "prod", "team": "ai"},
    "ops": {"env": "prod", "team": "platform"},
}


@dataclass(frozen=True)
class CPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    ports: tuple[CPort, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class WL:
    ns: str
    name: str
    kind: str  # Deployment, StatefulSet, DaemonSet, CronJob
    labels: dict[str, str]
    containers: tuple[Container, ...]
    placement: tuple[int, ...] = (0,)  # node index per replica (DaemonSet: ignored)
    sa: str | None = None
    host_network: bool = False
    metrics: tuple[int, ...] = ()  # ports Prometheus scrapes
    schedule: str | None = None
    in_repo: bool = True  # False: cluster add-on, only visible in the pod snapshots
    comment: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"

    @property
    def selector(self) -> dict[str, str]:
        first = next(iter(self.labels))
        return {first: self.labels[first]}

    def port(self, name: str) -> int:
        for c in self.containers:
            for p in c.ports:
                if p.name == name:
                    return p.port
        raise KeyError(name)


def sock(name: str, image: str, port: int, tier: str = "backend", placement: tuple[int, ...] = (0,),
         env: tuple[tuple[str, str], ...] = (), ns: str = "shop", comment: str = "") -> WL:
    return WL(ns, name, "Deployment", {"app": name, "tier": tier},
              (Container(name, image, (CPort("http", port),), env),), placement, sa=name,
              metrics=(port,) if ns == "shop" else (), comment=comment)


FRONTEND_ENV = (("CATALOGUE_URL", "http://catalogue"), ("CARTS_URL", "http://carts"),
                ("ORDERS_URL", "http://orders"), ("USER_URL", "http://user"),
                ("ASSISTANT_URL", "http://assistant.ai.svc.cluster.local"))
DEV_FRONTEND_ENV = (("CATALOGUE_URL", "http://catalogue"), ("CARTS_URL", "http://carts"),
                    ("ORDERS_URL", "http://orders.shop.svc.cluster.local"), ("USER_URL", "http://user"),
                    ("ASSISTANT_URL", "http://assistant.ai.svc.cluster.local"))

WORKLOADS: tuple[WL, ...] = (
    # kube-system: CoreDNS is in the repo (pinned add-on config); aws-node and kube-proxy are EKS-managed.
    WL("kube-system", "coredns", "Deployment", {"k8s-app": "kube-dns"},
       (Container("coredns", "registry.k8s.io/coredns/coredns:v1.11.3",
                  (CPort("dns", 53, "UDP"), CPort("dns-tcp", 53, "TCP"), CPort("metrics", 9153)),
                  args=("-conf", "/etc/coredns/Corefile")),), (0, 1), sa="coredns", metrics=(9153,),
       comment="EKS coredns add-on, pinned here so its configuration is reviewed"),
    WL("kube-system", "aws-node", "DaemonSet", {"k8s-app": "aws-node"},
       (Container("aws-node", "602401143452.dkr.ecr.eu-west-1.amazonaws.com/amazon-k8s-cni:v1.18.5-eksbuild.1",
                  (CPort("metrics", 61678),)),), sa="aws-node", host_network=True, in_repo=False),
    WL("kube-system", "kube-proxy", "DaemonSet", {"k8s-app": "kube-proxy"},
       (Container("kube-proxy", "602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/kube-proxy:v1.30.6-eksbuild.3"),),
       sa="kube-proxy", host_network=True, in_repo=False),
    # ingress-nginx
    WL("ingress-nginx", "ingress-nginx-controller", "Deployment",
       {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
       (Container("controller", "registry.k8s.io/ingress-nginx/controller:v1.11.3",
                  (CPort("http", 80), CPort("https", 443), CPort("metrics", 10254), CPort("webhook", 8443)),
                  args=("/nginx-ingress-controller", "--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller",
                        "--ingress-class=nginx", "--validating-webhook=:8443")),), (0, 2),
       sa="ingress-nginx", metrics=(10254,)),
    # shop (Sock-Shop-like)
    sock("frontend", "weaveworksdemos/front-end:0.3.12", 8079, "web", (0, 1), FRONTEND_ENV),
    sock("catalogue", "weaveworksdemos/catalogue:0.3.5", 80, placement=(1, 2)),
    WL("shop", "catalogue-db", "StatefulSet", {"app": "catalogue-db", "tier": "data"},
       (Container("catalogue-db", "mysql:8.0", (CPort("mysql", 3306),), (("MYSQL_DATABASE", "socksdb"),)),),
       (2,), sa="catalogue-db"),
    sock("carts", "weaveworksdemos/carts:0.4.9", 8080, placement=(1,),
         env=(("REDIS_HOST", "redis"), ("JAVA_OPTS", "-Xms64m -Xmx128m"))),
    WL("shop", "redis", "Deployment", {"app": "redis", "tier": "data"},
       (Container("redis", "redis:7.2", (CPort("redis", 6379),)),), (0,), sa="redis",
       comment="session store for carts"),
    sock("orders", "weaveworksdemos/orders:0.4.7", 8080, placement=(0, 2),
         env=(("DB_HOST", "postgres"), ("ERP_URL", "https://10.20.1.20:8443"))),
    sock("payment", "weaveworksdemos/payment:0.4.3", 80, placement=(1,),
         env=(("PSP_URL", "https://api.psp.example.net"),)),
    sock("shipping", "weaveworksdemos/shipping:0.4.8", 8080, placement=(2,)),
    sock("user", "weaveworksdemos/user:0.4.7", 80, placement=(0,), env=(("DB_HOST", "postgres"),)),
    sock("queue-master", "weaveworksdemos/queue-master:0.3.1", 8080, placement=(1,)),
    WL("shop", "rabbitmq", "StatefulSet", {"app": "rabbitmq", "tier": "messaging"},
       (Container("rabbitmq", "rabbitmq:3.13-management",
                  (CPort("amqp", 5672), CPort("management", 15672), CPort("prometheus", 15692))),),
       (2,), sa="rabbitmq", metrics=(15692,)),
    WL("shop", "postgres", "StatefulSet", {"app": "postgres", "tier": "data"},
       (Container("postgres", "postgres:16", (CPort("postgres", 5432),), (("POSTGRES_DB", "shop"),)),
        Container("exporter", "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
                  (CPort("metrics", 9187),))),
       (1,), sa="postgres", metrics=(9187,), comment="orders and users; card tokens live here (PCI scope)"),
    # shop-dev: same images, release candidates
    sock("frontend", "weaveworksdemos/front-end:0.3.13-rc.2", 8079, "web", (2,), DEV_FRONTEND_ENV, ns="shop-dev",
         comment="ORDERS_URL was copied from the prod values file: dev calls prod orders"),
    sock("catalogue", "weaveworksdemos/catalogue:0.3.6-rc.1", 80, placement=(0,), ns="shop-dev"),
    sock("orders", "weaveworksdemos/orders:0.4.8-rc.1", 8080, placement=(1,), ns="shop-dev"),
    # ai
    WL("ai", "assistant", "Deployment", {"app": "assistant", "component": "agent"},
       (Container("assistant", "registry.example.com/ai/shop-assistant:1.4.2", (CPort("http", 8080),),
                  (("MODEL_URL", "http://model-server:8000/v1"), ("QDRANT_URL", "http://vector-store:6333"),
                   ("CATALOGUE_TOOL_URL", "http://catalogue.shop.svc.cluster.local"))),),
       (0, 2), sa="assistant", metrics=(8080,), comment="shopping assistant agent; catalogue search is a tool"),
    WL("ai", "model-server", "Deployment", {"app": "model-server", "component": "inference"},
       (Container("ray-head", "rayproject/ray:2.40.0-py311-gpu",
                  (CPort("serve", 8000), CPort("dashboard", 8265), CPort("metrics", 8080)),
                  (("RAY_SERVE_CONFIG", "/config/serve-vllm.yaml"),),
                  ("ray", "start", "--head", "--block", "--dashboard-host=0.0.0.0", "--metrics-export-port=8080")),),
       (1,), sa="model-server", metrics=(8080,),
       comment="Ray Serve + vLLM (OpenAI API on 8000); the Ray dashboard on 8265 also serves the Jobs API"),
    WL("ai", "vector-store", "StatefulSet", {"app": "vector-store", "component": "vector-db"},
       (Container("qdrant", "qdrant/qdrant:v1.12.4", (CPort("http", 6333), CPort("grpc", 6334))),),
       (2,), sa="vector-store", metrics=(6333,)),
    WL("ai", "embedding-reindex", "CronJob", {"app": "embedding-reindex", "component": "ingestion"},
       (Container("embedder", "registry.example.com/ai/embedder:0.9.1", (),
                  (("CATALOGUE_URL", "http://catalogue.shop.svc.cluster.local"),
                   ("MODEL_URL", "http://model-server:8000/v1"), ("QDRANT_URL", "http://vector-store:6333"))),),
       (0,), sa="embedding", schedule="0 2 * * 4",
       comment="weekly full re-index of the catalogue into the vector store (Thursdays 02:00 UTC)"),
    # ops
    WL("ops", "prometheus", "Deployment", {"app": "prometheus"},
       (Container("prometheus", "prom/prometheus:v2.54.1", (CPort("web", 9090),),
                  args=("--config.file=/etc/prometheus/prometheus.yml",)),), (2,), sa="prometheus"),
    WL("ops", "node-exporter", "DaemonSet", {"app": "node-exporter"},
       (Container("node-exporter", "prom/node-exporter:v1.8.2", (CPort("metrics", 9100),)),),
       sa="node-exporter", host_network=True, metrics=(9100,)),
)
WL_BY_KEY = {w.key: w for w in WORKLOADS}


@dataclass(frozen=True)
class Svc:
    ns: str
    name: str
    selector: dict[str, str]
    ports: tuple[tuple[str, int, int | str, str], ...]  # (name, port, targetPort, protocol)
    type: str = "ClusterIP"
    cluster_ip: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


NLB_INTERNET = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes": "preserve_client_ip.enabled=true",
}
NLB_INTERNAL = dict(NLB_INTERNET, **{"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"})

SERVICES = (
    Svc("kube-system", "kube-dns", {"k8s-app": "kube-dns"},
        (("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP"), ("metrics", 9153, 9153, "TCP")),
        cluster_ip=KUBE_DNS_IP),
    Svc("ingress-nginx", "ingress-nginx-controller", {"app.kubernetes.io/name": "ingress-nginx"},
        (("http", 80, "http", "TCP"), ("https", 443, "https", "TCP")), "LoadBalancer",
        annotations=NLB_INTERNET, extra={"externalTrafficPolicy": "Local"}),
    Svc("ingress-nginx", "ingress-nginx-controller-admission", {"app.kubernetes.io/name": "ingress-nginx"},
        (("https-webhook", 443, "webhook", "TCP"),)),
    Svc("shop", "frontend", {"app": "frontend"}, (("http", 80, "http", "TCP"),)),
    Svc("shop", "catalogue", {"app": "catalogue"}, (("http", 80, "http", "TCP"),)),
    Svc("shop", "catalogue-db", {"app": "catalogue-db"}, (("mysql", 3306, "mysql", "TCP"),)),
    Svc("shop", "carts", {"app": "carts"}, (("http", 80, 8080, "TCP"),)),
    Svc("shop", "redis", {"app": "redis"}, (("redis", 6379, "redis", "TCP"),)),
    Svc("shop", "orders", {"app": "orders"}, (("http", 80, "http", "TCP"),)),
    Svc("shop", "orders-internal", {"app": "orders"}, (("http", 80, "http", "TCP"),), "LoadBalancer",
        annotations=NLB_INTERNAL),
    Svc("shop", "payment", {"app": "payment"}, (("http", 80, "http", "TCP"),)),
    Svc("shop", "shipping", {"app": "shipping"}, (("http", 80, 8080, "TCP"),)),
    Svc("shop", "user", {"app": "user"}, (("http", 80, "http", "TCP"),)),
    Svc("shop", "queue-master", {"app": "queue-master"}, (("http", 80, 8080, "TCP"),)),
    Svc("shop", "rabbitmq", {"app": "rabbitmq"},
        (("amqp", 5672, "amqp", "TCP"), ("management", 15672, "management", "TCP"))),
    Svc("shop", "postgres", {"app": "postgres"}, (("postgres", 5432, "postgres", "TCP"),), cluster_ip="None",
        annotations={"external-dns.alpha.kubernetes.io/hostname": "postgres.shop.prod.internal"}),
    Svc("shop-dev", "frontend", {"app": "frontend"}, (("http", 80, "http", "TCP"),)),
    Svc("shop-dev", "catalogue", {"app": "catalogue"}, (("http", 80, "http", "TCP"),)),
    Svc("shop-dev", "orders", {"app": "orders"}, (("http", 80, "http", "TCP"),)),
    Svc("ai", "assistant", {"app": "assistant"}, (("http", 80, "http", "TCP"),)),
    Svc("ai", "model-server", {"app": "model-server"}, (("serve", 8000, "serve", "TCP"),)),
    Svc("ai", "vector-store", {"app": "vector-store"}, (("http", 6333, "http", "TCP"), ("grpc", 6334, "grpc", "TCP"))),
    Svc("ops", "prometheus", {"app": "prometheus"}, (("web", 9090, "web", "TCP"),)),
)

# --------------------------------------------------------------------------------------------------
# Pods and their addresses over the week
# --------------------------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    wl: WL
    node: Node
    ip: str
    created: datetime
    uid: str
    owner_kind: str
    owner_name: str
    owner_uid: str
    labels: dict[str, str]
    containers: tuple[Container, ...]
    deleted: datetime | None = None  # deletion (not visible in any snapshot; documented in the README)
    finished: datetime | None = None  # Job pods: container finished (phase Succeeded)
    ready_after: float = 15.0
    endpoint_id: int = 0

    @property
    def ns(self) -> str:
        return self.wl.ns

    def serving(self, t: datetime) -> bool:
        if t < self.created + timedelta(seconds=self.ready_after):
            return False
        end = self.finished or self.deleted
        return end is None or t < end

    def exists(self, t: datetime) -> bool:
        return self.created <= t and (self.deleted is None or t < self.deleted)


def k8s_rand(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(K8S_ALPHANUM) for _ in range(n))


def new_uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Estate:
    """All pods of the week, built in a fixed order from one random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = stream(seed, "pods")
        self.used_ips: set[str] = set()
        self.pods: list[Pod] = []
        self.rs_hash: dict[tuple[str, str], str] = {}
        self._build()

    def pod_ip(self, node: Node) -> str:
        net = ipaddress.ip_network(node.pod_cidr)
        while True:
            ip = str(net[self.rng.randrange(10, net.num_addresses - 10)])
            if ip not in self.used_ips:
                self.used_ips.add(ip)
                return ip

    def _created(self) -> datetime:
        # long-lived pods: created some time in October
        return datetime(2026, 10, 5, tzinfo=UTC) + timedelta(seconds=self.rng.randrange(24 * 86400))

    def _pod(self, wl: WL, node: Node, created: datetime, *, template: str = "", index: int | None = None,
             ip: str | None = None, containers: tuple[Container, ...] | None = None,
             job: tuple[str, str] | None = None) -> Pod:
        labels = dict(wl.labels)
        uid = new_uid(self.rng)
        if wl.kind == "Deployment":
            key = (wl.key, template)
            if key not in self.rs_hash:
                self.rs_hash[key] = k8s_rand(self.rng, 10)
            h = self.rs_hash[key]
            labels["pod-template-hash"] = h
            owner_kind, owner_name = "ReplicaSet", f"{wl.name}-{h}"
            name = f"{owner_name}-{k8s_rand(self.rng, 5)}"
        elif wl.kind == "StatefulSet":
            key = (wl.key, template)
            if key not in self.rs_hash:
                self.rs_hash[key] = k8s_rand(self.rng, 10)
            name = f"{wl.name}-{index or 0}"
            labels["controller-revision-hash"] = f"{wl.name}-{self.rs_hash[key]}"
            labels["statefulset.kubernetes.io/pod-name"] = name
            labels["apps.kubernetes.io/pod-index"] = str(index or 0)
            owner_kind, owner_name = "StatefulSet", wl.name
        elif wl.kind == "DaemonSet":
            key = (wl.key, template)
            if key not in self.rs_hash:
                self.rs_hash[key] = "".join(self.rng.choice("0123456789abcdef") for _ in range(9))
            labels["controller-revision-hash"] = self.rs_hash[key]
            labels["pod-template-generation"] = "1"
            owner_kind, owner_name = "DaemonSet", wl.name
            name = f"{wl.name}-{k8s_rand(self.rng, 5)}"
        else:  # CronJob -> Job -> Pod
            assert job is not None
            job_name, job_uid = job
            labels.update({"batch.kubernetes.io/controller-uid": job_uid, "batch.kubernetes.io/job-name": job_name,
                           "controller-uid": job_uid, "job-name": job_name})
            owner_kind, owner_name = "Job", job_name
            name = f"{job_name}-{k8s_rand(self.rng, 5)}"
        pod = Pod(name=name, wl=wl, node=node, ip=ip or (node.ip if wl.host_network else self.pod_ip(node)),
                  created=created, uid=uid, owner_kind=owner_kind, owner_name=owner_name,
                  owner_uid=new_uid(self.rng) if owner_kind != "Job" else job[1],  # type: ignore[index]
                  labels=labels, containers=containers or wl.containers,
                  ready_after=float(self.rng.randrange(8, 25)), endpoint_id=self.rng.randrange(100, 4000))
        self.pods.append(pod)
        return pod

    def _build(self) -> None:
        for wl in WORKLOADS:
            if wl.kind == "CronJob":
                continue
            if wl.kind == "DaemonSet":
                for node in NODES:
                    self._pod(wl, node, self._created())
                continue
            if wl.key == "shop/carts":
                # carts ran 0.4.8 before the rollout on day 3
                old = (Container("carts", "weaveworksdemos/carts:0.4.8", wl.containers[0].ports,
                                 wl.containers[0].env),)
                self.carts_old = self._pod(wl, NODES[1], self._created(), template="0.4.8", containers=old)
                self.carts_old.deleted = CARTS_OLD_DELETED
                continue
            if wl.key == "shop-dev/frontend":
                self.dev_frontend_old = self._pod(wl, NODES[2], datetime(2026, 10, 28, 9, 41, 7, tzinfo=UTC),
                                                  template="rc.1")
                self.dev_frontend_old.deleted = DEV_FRONTEND_REDEPLOY + timedelta(seconds=41)
                continue
            for i, n in enumerate(wl.placement):
                self._pod(wl, NODES[n], self._created(), index=i)
        # Day 3: carts rollout (new ReplicaSet, new IP) ...
        carts = WL_BY_KEY["shop/carts"]
        self.carts_new = self._pod(carts, NODES[2], CARTS_ROLLOUT, template="0.4.9")
        # ... and the HPA scales catalogue 2 -> 3; the VPC CNI hands out the IP the old carts pod just freed.
        self.used_ips.discard(self.carts_old.ip)
        self.catalogue_new = self._pod(WL_BY_KEY["shop/catalogue"], NODES[1], CATALOGUE_SCALE_UP,
                                       ip=self.carts_old.ip)
        # Day 4: the weekly re-index job.
        cron = WL_BY_KEY["ai/embedding-reindex"]
        job_name = f"{cron.name}-{epoch(REINDEX_START) // 60}"
        self.reindex = self._pod(cron, NODES[0], REINDEX_POD_CREATED, job=(job_name, new_uid(self.rng)))
        self.reindex.finished = REINDEX_FINISHED
        # Day 5: shop-dev/frontend redeployed (rc.2), new pod and new IP.
        self.dev_frontend_new = self._pod(WL_BY_KEY["shop-dev/frontend"], NODES[0], DEV_FRONTEND_REDEPLOY,
                                          template="rc.2")
        self.pods.sort(key=lambda p: (p.ns, p.name))

    def of(self, key: str) -> list[Pod]:
        return [p for p in self.pods if p.wl.key == key]

    def serving(self, key: str, t: datetime) -> list[Pod]:
        return [p for p in self.pods if p.wl.key == key and p.serving(t)]

    def at(self, ip: str, t: datetime) -> Pod | None:
        """The (non-host-network) pod that holds ``ip`` at ``t``."""
        for p in self.pods:
            if p.ip == ip and not p.wl.host_network and p.created <= t and (p.deleted is None or t < p.deleted):
                return p
        return None


# --------------------------------------------------------------------------------------------------
# Manifests, snapshots, inventory
# --------------------------------------------------------------------------------------------------


def container_manifest(c: Container) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "image": c.image}
    if c.args:
        out["args"] = list(c.args)
    if c.env:
        out["env"] = [{"name": k, "value": v} for k, v in c.env]
    if c.ports:
        out["ports"] = [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in c.ports]
    return out


def pod_template(wl: WL) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": dict(wl.labels)}
    if wl.metrics:
        meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(wl.metrics[0])}
    spec: dict[str, Any] = {"serviceAccountName": wl.sa}
    if wl.host_network:
        spec["hostNetwork"] = True
    if wl.kind == "CronJob":
        spec["restartPolicy"] = "OnFailure"
    spec["containers"] = [container_manifest(c) for c in wl.containers]
    return {"metadata": meta, "spec": spec}


def workload_manifest(wl: WL) -> dict[str, Any]:
    meta = {"name": wl.name, "namespace": wl.ns, "labels": dict(wl.labels)}
    if wl.kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": wl.schedule, "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                         "jobTemplate": {"spec": {"backoffLimit": 2, "template": pod_template(wl)}}}}
    spec: dict[str, Any] = {}
    if wl.kind in ("Deployment", "StatefulSet"):
        spec["replicas"] = len(wl.placement)
    if wl.kind == "StatefulSet":
        spec["serviceName"] = wl.name
    spec["selector"] = {"matchLabels": wl.selector}
    spec["template"] = pod_template(wl)
    return {"apiVersion": "apps/v1", "kind": wl.kind, "metadata": meta, "spec": spec}


def service_manifest(s: Svc) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": s.name, "namespace": s.ns}
    if s.annotations:
        meta["annotations"] = dict(s.annotations)
    spec: dict[str, Any] = {"type": s.type}
    if s.cluster_ip:
        spec["clusterIP"] = s.cluster_ip
    spec.update(s.extra)
    spec["selector"] = dict(s.selector)
    spec["ports"] = [{"name": n, "port": p, "targetPort": t, "protocol": proto} for n, p, t, proto in s.ports]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def yaml_docs(docs: Iterable[tuple[str, dict[str, Any]]], header: str) -> str:
    parts = [header]
    for comment, doc in docs:
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
        parts.append("---\n" + "".join(f"# {line}\n" for line in comment.splitlines() if comment) + text)
    return "".join(parts)


def k8s_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for ns, labels in NAMESPACES.items():
        docs: list[tuple[str, dict[str, Any]]] = []
        ns_meta: dict[str, Any] = {"name": ns}
        if labels:
            ns_meta["labels"] = dict(labels)
        docs.append(("", {"apiVersion": "v1", "kind": "Namespace", "metadata": ns_meta}))
        wls = [w for w in WORKLOADS if w.ns == ns and w.in_repo]
        for sa in sorted({w.sa for w in wls if w.sa}):
            docs.append(("", {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": sa, "namespace": ns}}))
        for w in wls:
            docs.append((w.comment, workload_manifest(w)))
        for s in SERVICES:
            if s.ns == ns:
                docs.append(("", service_manifest(s)))
        if ns == "ingress-nginx":
            docs.append(("", {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                              "metadata": {"name": "nginx"},
                              "spec": {"controller": "k8s.io/ingress-nginx"}}))
        if ns == "shop":
            docs.append(("the shop's public entry point", {
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "shop", "namespace": "shop"},
                "spec": {"ingressClassName": "nginx",
                         "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                         "rules": [{"host": "shop.example.com", "http": {"paths": [
                             {"path": "/", "pathType": "Prefix",
                              "backend": {"service": {"name": "frontend", "port": {"number": 80}}}}]}}]}}))
            docs.append(("", {
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "catalogue", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "catalogue"},
                         "minReplicas": 2, "maxReplicas": 4,
                         "metrics": [{"type": "Resource", "resource": {
                             "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}))
        header = (f"# Namespace {ns} of cluster \"{CLUSTER}\" (EKS, {REGION}).\n"
                  "# Generated by scripts/gen_example.py -- edit the generator, not this file.\n")
        if ns == "kube-system":
            header += "# aws-node and kube-proxy are EKS-managed add-ons: they appear in the pod snapshots only.\n"
        files[f"k8s/{ns}.yaml"] = yaml_docs(docs, header)
    return files


def pod_json(p: Pod, rv: int, at: datetime) -> dict[str, Any]:
    """The pod as ``kubectl get pods -o json`` shows it at time ``at``."""
    finished = p.finished if p.finished is not None and p.finished <= at else None
    meta: dict[str, Any] = {
        "creationTimestamp": iso(p.created),
        "labels": dict(sorted(p.labels.items())),
        "name": p.name,
        "namespace": p.ns,
        "ownerReferences": [{"apiVersion": "batch/v1" if p.owner_kind == "Job" else "apps/v1",
                             "blockOwnerDeletion": True, "controller": True, "kind": p.owner_kind,
                             "name": p.owner_name, "uid": p.owner_uid}],
        "resourceVersion": str(rv),
        "uid": p.uid,
    }
    if p.owner_kind in ("ReplicaSet", "DaemonSet", "Job"):
        meta["generateName"] = f"{p.owner_name}-"
    if p.wl.metrics:
        meta["annotations"] = {"prometheus.io/port": str(p.wl.metrics[0]), "prometheus.io/scrape": "true"}
    containers = []
    for c in p.containers:
        cj: dict[str, Any] = {"image": c.image, "imagePullPolicy": "IfNotPresent", "name": c.name,
                              "resources": {}, "terminationMessagePath": "/dev/termination-log",
                              "terminationMessagePolicy": "File"}
        if c.args:
            cj["args"] = list(c.args)
        if c.env:
            cj["env"] = [{"name": k, "value": v} for k, v in c.env]
        if c.ports:
            cj["ports"] = [{"containerPort": q.port, "name": q.name, "protocol": q.protocol}
                           | ({"hostPort": q.port} if p.wl.host_network else {}) for q in c.ports]
        containers.append(cj)
    spec: dict[str, Any] = {
        "containers": containers,
        "dnsPolicy": "ClusterFirstWithHostNet" if p.wl.host_network else "ClusterFirst",
        "enableServiceLinks": True,
        "nodeName": p.node.name,
        "restartPolicy": "OnFailure" if p.owner_kind == "Job" else "Always",
        "schedulerName": "default-scheduler",
        "serviceAccount": p.wl.sa,
        "serviceAccountName": p.wl.sa,
        "terminationGracePeriodSeconds": 30,
    }
    if p.wl.host_network:
        spec["hostNetwork"] = True
    if p.wl.kind == "StatefulSet":
        spec["hostname"] = p.name
        spec["subdomain"] = p.wl.name
    started = p.created + timedelta(seconds=3)
    statuses = []
    for c in p.containers:
        st: dict[str, Any] = {"image": c.image, "name": c.name, "restartCount": 0}
        if finished is not None:
            st.update(ready=False, started=False, state={"terminated": {
                "exitCode": 0, "finishedAt": iso(finished), "reason": "Completed", "startedAt": iso(started)}})
        else:
            st.update(ready=True, started=True, state={"running": {"startedAt": iso(started)}})
        statuses.append(st)
    status = {
        "containerStatuses": statuses,
        "hostIP": p.node.ip,
        "hostIPs": [{"ip": p.node.ip}],
        "phase": "Succeeded" if finished is not None else "Running",
        "podIP": p.ip,
        "podIPs": [{"ip": p.ip}],
        "qosClass": "BestEffort",
        "startTime": iso(p.created),
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def snapshot_files(est: Estate, seed: int) -> dict[str, str]:
    rng = stream(seed, "snapshots")
    files = {}
    for t in SNAPSHOT_TIMES:
        items = []
        for p in est.pods:
            if not p.exists(t):
                continue
            items.append(pod_json(p, rng.randrange(10_000_000, 99_999_999), t))
        doc = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
        files[f"snapshots/pods-{t:%Y%m%dT%H%M%SZ}.json"] = json.dumps(doc, indent=4, sort_keys=True) + "\n"
    return files


def inventory_file() -> str:
    hosts = []
    for h in HOSTS:
        d: dict[str, Any] = {"name": h.name, "addresses": [h.ip], "labels": dict(h.labels),
                             "ports": [{"port": p, "protocol": proto, "name": n} for p, proto, n in h.ports],
                             "environment": h.environment}
        if h.zone:
            d["zone"] = h.zone
        d.update(owner=h.owner, location=h.location)
        if h.depends_on:
            d["depends_on"] = [dict(x) for x in h.depends_on]
        hosts.append(d)
    doc = {"apiVersion": "microseg/v1", "kind": "Inventory", "hosts": hosts,
           "external": [dict(e) for e in EXTERNAL], "overrides": [dict(o) for o in OVERRIDES]}
    header = ("# VMs and named external peers of the shop estate (the Kubernetes side comes from ../k8s and\n"
              "# ../snapshots). Generated by scripts/gen_example.py -- edit the generator, not this file.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


# --------------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------------


@dataclass
class Conn:
    t: datetime
    cip: str
    sip: str
    cport: int
    sport: int
    proto: int  # IANA: 1 ICMP, 6 TCP, 17 UDP
    req_pkts: int
    req_bytes: int
    resp_pkts: int
    resp_bytes: int
    duration: float  # seconds
    client: str  # ground-truth labels, for the README tables (never written to the flow files)
    server: str
    outcome: str = "ok"  # ok | rst (closed port) | reject (security group)
    tag: str = ""


WEB = (2, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 9, 9, 9, 8, 8, 9, 10, 11, 12, 11, 9, 6, 4)
OFFICE = (0, 0, 0, 0, 0, 0, 0, 1, 4, 6, 6, 5, 3, 5, 6, 6, 5, 3, 1, 0, 0, 0, 0, 0)
FLAT = (1,) * 24


class Traffic:
    def __init__(self, est: Estate, seed: int) -> None:
        self.est = est
        self.rng = stream(seed, "traffic")
        self.conns: list[Conn] = []
        inet = stream(seed, "internet-clients")
        pool = [f"203.0.113.{i}" for i in range(1, 255)] + [f"192.0.2.{i}" for i in range(1, 255)]
        self.clients = sorted(inet.sample(pool, 70), key=lambda a: ipaddress.ip_address(a))
        self.client_weights = [inet.paretovariate(1.3) for _ in self.clients]  # a few heavy users

    # -- helpers ----------------------------------------------------------------------------------

    def eph(self) -> int:
        return self.rng.randint(*EPHEMERAL)

    def times(self, day: int, n: int, profile: tuple[int, ...]) -> list[datetime]:
        base = DAY0 + timedelta(days=day)
        hours = self.rng.choices(range(24), weights=profile, k=n)
        return sorted(base + timedelta(hours=h, seconds=self.rng.randrange(3600)) for h in hours)

    def size(self, mean: float) -> int:
        return max(40, int(self.rng.lognormvariate(math.log(mean), 0.6)))

    def add(self, t: datetime, cip: str, sip: str, sport: int, client: str, server: str, *, proto: int = 6,
            req: float = 600, resp: float = 4000, duration: float | None = None, outcome: str = "ok",
            cport: int | None = None, tag: str = "") -> Conn:
        rb = self.size(req) if proto == 6 else int(req)
        sb = self.size(resp) if proto == 6 else int(resp)
        if proto == 6:
            rp = max(3, rb // 500 + self.rng.randint(2, 5))
            sp = max(2, sb // 1300 + self.rng.randint(1, 4))
        else:
            rp, sp = 1, 1
        if outcome == "rst":
            rb, rp, sb, sp = 60, 1, 40, 1
        elif outcome == "reject":
            rb, rp, sb, sp = 120, 2, 0, 0
        c = Conn(t, cip, sip, cport if cport is not None else (0 if proto == 1 else self.eph()), sport, proto,
                 rp, rb, sp, sb, duration if duration is not None else round(self.rng.uniform(0.02, 1.5), 3),
                 client, server, outcome, tag)
        self.conns.append(c)
        return c

    def dns(self, pod: Pod, t: datetime, p_tcp: float = 0.0) -> None:
        dns_pods = self.est.serving("kube-system/coredns", t)
        if not dns_pods or pod.wl.host_network:
            return
        srv = self.rng.choice(dns_pods)
        tcp = self.rng.random() < p_tcp
        q = t - timedelta(milliseconds=self.rng.randrange(5, 900))
        if tcp:
            self.add(q, pod.ip, srv.ip, 53, pod.wl.key, "kube-system/coredns", req=180, resp=1400)
        else:
            # A and AAAA from the same socket: two packets each way in one record
            c = self.add(q, pod.ip, srv.ip, 53, pod.wl.key, "kube-system/coredns", proto=17,
                         req=2 * self.rng.randrange(60, 95), resp=2 * self.rng.randrange(90, 260), duration=0.01)
            c.req_pkts, c.resp_pkts = 2, 2

    def pod_edge(self, day: int, src: str, dst: str, port: int, per_day: float, profile: tuple[int, ...],
                 req: float, resp: float, p_dns: float = 0.25, duration: float | None = None) -> None:
        n = max(0, round(per_day * self.rng.uniform(0.8, 1.2)))
        for t in self.times(day, n, profile):
            a, b = self.est.serving(src, t), self.est.serving(dst, t)
            if not a or not b:
                continue
            cp, sp = self.rng.choice(a), self.rng.choice(b)
            if self.rng.random() < p_dns:
                self.dns(cp, t)
            self.add(t, cp.ip, sp.ip, port, src, dst, req=req, resp=resp, duration=duration)

    # -- the week ---------------------------------------------------------------------------------

    def generate(self) -> None:
        for day in range(DAYS):
            weekend = day >= 5
            w = 1.3 if weekend else 1.0
            self.internet(day, w)
            self.shop(day, w)
            self.ai(day, w)
            self.dev(day, weekend)
            self.vms(day, weekend)
            self.scrapes(day)
            self.background_dns(day)
            self.unknown(day)
            if day == 3:
                self.reindex()
            if day == ATTACK_DAY:
                self.attack()
        self.conns.sort(key=lambda c: (c.t, c.cip, c.cport, c.sip, c.sport))

    def internet(self, day: int, w: float) -> None:
        for port, per_day in ((443, 150 * w), (80, 14 * w)):
            n = round(per_day * self.rng.uniform(0.85, 1.15))
            for t in self.times(day, n, WEB):
                ing = self.est.serving("ingress-nginx/ingress-nginx-controller", t)
                cl = self.rng.choices(self.clients, weights=self.client_weights)[0]
                srv = self.rng.choice(ing)
                if port == 80:  # redirect to https
                    self.add(t, cl, srv.ip, 80, "internet", srv.wl.key, req=420, resp=600)
                else:
                    self.add(t, cl, srv.ip, 443, "internet", srv.wl.key, req=2400, resp=38000,
                             duration=round(self.rng.uniform(0.3, 40), 3))

    def shop(self, day: int, w: float) -> None:
        E = self.pod_edge
        ing = "ingress-nginx/ingress-nginx-controller"
        E(day, ing, "shop/frontend", 8079, 130 * w, WEB, 1800, 30000, p_dns=0.0)
        E(day, "shop/frontend", "shop/catalogue", 80, 90 * w, WEB, 500, 9000)
        E(day, "shop/frontend", "shop/carts", 8080, 45 * w, WEB, 700, 2500)
        E(day, "shop/frontend", "shop/orders", 8080, 20 * w, WEB, 1400, 3000)
        E(day, "shop/frontend", "shop/user", 80, 35 * w, WEB, 600, 1500)
        E(day, "shop/frontend", "ai/assistant", 8080, 12 * w, WEB, 1500, 6000)
        E(day, "shop/carts", "shop/redis", 6379, 30 * w, WEB, 300, 900, p_dns=0.1)
        E(day, "shop/catalogue", "shop/catalogue-db", 3306, 25 * w, WEB, 400, 12000, p_dns=0.1)
        E(day, "shop/orders", "shop/postgres", 5432, 15 * w, WEB, 900, 2500, p_dns=0.1)
        E(day, "shop/user", "shop/postgres", 5432, 15 * w, WEB, 700, 1800, p_dns=0.1)
        E(day, "shop/orders", "shop/payment", 80, 12 * w, WEB, 800, 600)
        E(day, "shop/orders", "shop/shipping", 8080, 12 * w, WEB, 700, 500)
        E(day, "shop/orders", "shop/carts", 8080, 12 * w, WEB, 500, 2000)
        E(day, "shop/orders", "shop/user", 80, 12 * w, WEB, 500, 1500)
        E(day, "shop/shipping", "shop/rabbitmq", 5672, 12 * w, WEB, 1200, 400, p_dns=0.1)
        E(day, "shop/queue-master", "shop/rabbitmq", 5672, 10 * w, WEB, 500, 1500, p_dns=0.1)
        # shop/orders -> legacy-erp (invoices), logged on the ERP's ENI
        n = round(8 * w * self.rng.uniform(0.8, 1.2))
        erp = next(h for h in HOSTS if h.name == "legacy-erp")
        for t in self.times(day, n, WEB):
            o = self.rng.choice(self.est.serving("shop/orders", t))
            self.add(t, o.ip, erp.ip, 8443, "shop/orders", "legacy-erp", req=5200, resp=700)
        # shop/payment -> payments-psp (egress through the NAT gateway; logged on the pod's ENI)
        n = round(12 * w * self.rng.uniform(0.8, 1.2))
        for t in self.times(day, n, WEB):
            p = self.rng.choice(self.est.serving("shop/payment", t))
            if self.rng.random() < 0.3:
                self.dns(p, t)
            self.add(t, p.ip, self.rng.choice(PSP_IPS), 443, "shop/payment", "external:payments-psp",
                     req=3100, resp=5200, duration=round(self.rng.uniform(0.2, 1.8), 3))

    def ai(self, day: int, w: float) -> None:
        E = self.pod_edge
        E(day, "ai/assistant", "ai/model-server", 8000, 15 * w, WEB, 4000, 9000, duration=None)
        E(day, "ai/assistant", "ai/vector-store", 6333, 15 * w, WEB, 1800, 7000)
        E(day, "ai/assistant", "shop/catalogue", 80, 10 * w, WEB, 500, 6000)

    def dev(self, day: int, weekend: bool) -> None:
        if weekend:
            return
        self.pod_edge(day, "shop-dev/frontend", "shop-dev/catalogue", 80, 10, OFFICE, 500, 8000)
        # planted: dev calls prod (ORDERS_URL points at orders.shop.svc.cluster.local)
        self.pod_edge(day, "shop-dev/frontend", "shop/orders", 8080, 5, OFFICE, 1400, 3000, p_dns=0.6)

    def vms(self, day: int, weekend: bool) -> None:
        by = {h.name: h for h in HOSTS}
        base = DAY0 + timedelta(days=day)
        # legacy-erp pulls the day's orders at 00:15 through the internal NLB (client IP preserved)
        for k in range(3):
            t = base + timedelta(minutes=15, seconds=k * 40 + self.rng.randrange(20))
            o = self.rng.choice(self.est.serving("shop/orders", t))
            self.add(t, by["legacy-erp"].ip, o.ip, 8080, "legacy-erp", "shop/orders", req=900, resp=150000)
        # backup-1: nightly pg_dump at 01:30, one long connection (several aggregation windows)
        t = base + timedelta(hours=1, minutes=30, seconds=self.rng.randrange(1, 9))
        pg = self.est.serving("shop/postgres", t)[0]
        dur = self.rng.randrange(9 * 60, 14 * 60)
        self.add(t, by["backup-1"].ip, pg.ip, 5432, "backup-1", "shop/postgres", req=dur * 2000,
                 resp=dur * 2_400_000, duration=dur)
        # admins: VPN -> bastion (SSH sessions), bastion -> ERP / backup-1
        if not weekend:
            for _ in range(self.rng.randint(2, 4)):
                t = self.times(day, 1, OFFICE)[0]
                self.add(t, self.rng.choice(VPN_USERS), by["bastion-1"].ip, 22, "external:corp-vpn", "bastion-1",
                         req=40000, resp=90000, duration=self.rng.randrange(4 * 60, 25 * 60))
            t = self.times(day, 1, OFFICE)[0]
            self.add(t, by["bastion-1"].ip, by["legacy-erp"].ip, 22, "bastion-1", "legacy-erp", req=20000,
                     resp=60000, duration=self.rng.randrange(3 * 60, 12 * 60))
        if day in (1, 4):
            t = self.times(day, 1, OFFICE)[0]
            self.add(t, by["bastion-1"].ip, by["backup-1"].ip, 22, "bastion-1", "backup-1", req=15000,
                     resp=30000, duration=self.rng.randrange(2 * 60, 8 * 60))
        # bastion's uptime ping, every 4 hours
        for h in range(0, 24, 4):
            for target in ("legacy-erp", "backup-1"):
                t = base + timedelta(hours=h, minutes=2, seconds=self.rng.randrange(50))
                c = self.add(t, by["bastion-1"].ip, by[target].ip, 0, "bastion-1", target, proto=1, req=3 * 84,
                             resp=3 * 84, cport=0, duration=2.0)
                c.req_pkts = c.resp_pkts = 3  # three echo requests, three replies

    def scrapes(self, day: int) -> None:
        # Prometheus keeps connections to its targets; the sample shows one record pair per target
        # every 3 hours (see README).
        base = DAY0 + timedelta(days=day)
        targets = [w for w in WORKLOADS if w.metrics]
        for h in range(0, 24, 3):
            for wl in targets:
                for port in wl.metrics:
                    t = base + timedelta(hours=h, seconds=self.rng.randrange(600))
                    prom = self.est.serving("ops/prometheus", t)[0]
                    for p in self.est.serving(wl.key, t):
                        self.add(t, prom.ip, p.ip, port, "ops/prometheus", wl.key, req=330, resp=25000)

    def background_dns(self, day: int) -> None:
        base = DAY0 + timedelta(days=day)
        for p in self.est.pods:
            if p.wl.host_network or p.wl.key == "kube-system/coredns":
                continue
            for _ in range(self.rng.randint(2, 5)):
                t = base + timedelta(seconds=self.rng.randrange(86400))
                if p.serving(t):
                    self.dns(p, t, p_tcp=0.05)

    def unknown(self, day: int) -> None:
        if day not in (1, 3, 5):
            return
        base = DAY0 + timedelta(days=day, hours=6)
        for k in range(2):
            t = base + timedelta(minutes=k * 7, seconds=self.rng.randrange(60))
            o = self.rng.choice(self.est.serving("shop/orders", t))
            self.add(t, UNKNOWN_HOST, o.ip, 8080, "unknown:" + UNKNOWN_HOST, "shop/orders", req=700, resp=48000)

    def reindex(self) -> None:
        p = self.est.reindex
        t0 = p.created + timedelta(seconds=p.ready_after + 5)
        span = (REINDEX_FINISHED - t0).total_seconds() - 30
        plan = (("shop/catalogue", 80, 12, 500, 40000), ("ai/model-server", 8000, 20, 30000, 90000),
                ("ai/vector-store", 6333, 20, 120000, 800))
        self.dns(p, t0)
        for dst, port, n, req, resp in plan:
            for k in range(n):
                t = t0 + timedelta(seconds=int(span * (k + self.rng.random()) / n))
                srv = self.rng.choice(self.est.serving(dst, t))
                self.add(t, p.ip, srv.ip, port, "ai/embedding-reindex", dst, req=req, resp=resp,
                         duration=round(self.rng.uniform(0.5, 6), 3), tag="reindex")

    def attack(self) -> None:
        fe = self.est.of("shop/frontend")[0]
        t = ATTACK_T0
        self.compromised = fe
        # 1. SSH sweep: pods answer with RST (nothing listens on 22); the bastion's security group rejects
        targets = [self.est.carts_new, self.est.of("shop/orders")[1], self.est.of("shop/payment")[0],
                   self.est.of("shop/queue-master")[0]]
        for tgt in targets:
            self.add(t, fe.ip, tgt.ip, 22, "shop/frontend", tgt.wl.key, outcome="rst", duration=0.001, tag="attack")
            t += timedelta(seconds=self.rng.randrange(2, 9))
        bastion = next(h for h in HOSTS if h.name == "bastion-1")
        self.add(t, fe.ip, bastion.ip, 22, "shop/frontend", "bastion-1", outcome="reject", duration=1.0,
                 tag="attack")
        # 2. Straight to the database (flat network: accepted); password guessing
        t = ATTACK_T0 + timedelta(minutes=1, seconds=55)
        pg = self.est.of("shop/postgres")[0]
        for _ in range(8):
            self.add(t, fe.ip, pg.ip, 5432, "shop/frontend", "shop/postgres", req=420, resp=380,
                     duration=0.05, tag="attack")
            t += timedelta(seconds=self.rng.randrange(9, 25))
        # 3. The model server's Ray dashboard / Jobs API (ShadowRay-style job submission)
        t = ATTACK_T0 + timedelta(minutes=6, seconds=8)
        ms = self.est.of("ai/model-server")[0]
        self.add(t, fe.ip, ms.ip, 8265, "shop/frontend", "ai/model-server", req=350, resp=900, duration=0.2,
                 tag="attack")
        t += timedelta(seconds=4)
        self.add(t, fe.ip, ms.ip, 8265, "shop/frontend", "ai/model-server", req=1900, resp=700, duration=0.4,
                 tag="attack")


# --------------------------------------------------------------------------------------------------
# Writers: VPC Flow Logs and Hubble
# --------------------------------------------------------------------------------------------------


class Enis:
    def __init__(self, est: Estate) -> None:
        self.est = est
        self.hosts = {h.ip: h for h in HOSTS}
        self.nodes = {n.ip: n for n in NODES}

    def of(self, ip: str, t: datetime) -> tuple[str, str, str] | None:
        """(interface-id, subnet-id, instance-id) of the ENI that holds ``ip``, if it is in the VPC."""
        if ip in self.hosts:
            h = self.hosts[ip]
            return h.eni, h.subnet, h.instance
        if ip in self.nodes:
            n = self.nodes[ip]
            return n.eni, n.subnet, n.instance
        p = self.est.at(ip, t)
        if p is not None:
            return p.node.pod_eni, p.node.pod_subnet, p.node.instance
        return None


def vpc_lines(c: Conn, enis: Enis) -> list[tuple[int, str]]:
    server_eni = enis.of(c.sip, c.t)
    if server_eni is not None:
        eni, req_dir, rep_dir = server_eni, "ingress", "egress"
    else:
        client_eni = enis.of(c.cip, c.t)
        assert client_eni is not None, c
        eni, req_dir, rep_dir = client_eni, "egress", "ingress"
    start = epoch(c.t)
    # One record per 60-second aggregation window the connection is active in.
    windows = max(1, math.ceil(c.duration / 60)) if c.duration > 60 else 1
    out = []
    for k in range(windows):
        ws = start + 60 * k
        we = min(start + math.ceil(c.duration), ws + 59) if windows > 1 else start + math.ceil(c.duration)
        share = 1 / windows
        if c.proto == 6:
            if c.outcome == "rst":
                fq, fr = 2, 4
            elif c.outcome == "reject":
                fq, fr = 2, 0
            elif windows == 1:
                fq, fr = 3, 19  # SYN|FIN, SYN-ACK|FIN
            else:
                fq, fr = (2, 18) if k == 0 else ((1, 17) if k == windows - 1 else (0, 0))
        else:
            fq = fr = 0
        qp, qb = max(1, round(c.req_pkts * share)), max(40, round(c.req_bytes * share))
        rp, rb = max(1, round(c.resp_pkts * share)), max(40, round(c.resp_bytes * share))
        action = "REJECT" if c.outcome == "reject" else "ACCEPT"
        common = [eni[1], eni[2]]
        out.append((ws, " ".join(map(str, [5, ACCOUNT, eni[0], c.cip, c.sip, c.cport, c.sport, c.proto, qp, qb, ws, we,
                                            action, "OK", VPC, *common, fq, "IPv4", req_dir]))))
        if c.outcome != "reject":
            out.append((ws, " ".join(map(str, [5, ACCOUNT, eni[0], c.sip, c.cip, c.sport, c.cport, c.proto, rp, rb, ws,
                                                we, "ACCEPT", "OK", VPC, *common, fr, "IPv4", rep_dir]))))
    return out


def nodata_lines(day: int, rng: random.Random, busy: set[tuple[str, int]]) -> list[tuple[int, str]]:
    """Idle ENIs (the VMs) report NODATA for some capture windows in which they carried nothing."""
    out = []
    base = epoch(DAY0 + timedelta(days=day))
    for h in HOSTS:
        for _ in range(2):
            while True:
                s = base + 60 * rng.randrange(3 * 60, 23 * 60)
                if not any((h.eni, m) in busy for m in range(s // 60 - 1, s // 60 + 2)):
                    break
            out.append((s, " ".join(map(str, [5, ACCOUNT, h.eni, "-", "-", "-", "-", "-", "-", "-", s, s + 59, "-",
                                               "NODATA", VPC, h.subnet, h.instance, "-", "-", "-"]))))
    return out


def gz(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(text.encode())
    return buf.getvalue()


def vpc_files(tr: Traffic, enis: Enis, seed: int) -> tuple[dict[str, bytes], dict[str, int]]:
    rng = stream(seed, "nodata")
    per_day: dict[int, list[tuple[int, str]]] = defaultdict(list)
    busy: set[tuple[str, int]] = set()  # (interface-id, minute) with traffic
    for c in tr.conns:
        for s, line in vpc_lines(c, enis):
            per_day[day_of(datetime.fromtimestamp(s, UTC))].append((s, line))
            f = line.split()
            busy.update((f[2], m) for m in range(int(f[10]) // 60, int(f[11]) // 60 + 1))
    files, counts = {}, {}
    for day in range(DAYS):
        recs = per_day[day] + nodata_lines(day, rng, busy)
        recs.sort()
        date = DAY0 + timedelta(days=day)
        name = f"flows/vpc-{date:%Y-%m-%d}.log.gz"
        files[name] = gz(" ".join(VPC_FIELDS) + "\n" + "".join(line + "\n" for _, line in recs))
        counts[name] = len(recs)
    return files, counts


POD_LABEL_NOISE = ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
                   "apps.kubernetes.io/pod-index", "pod-template-generation", "controller-uid", "job-name",
                   "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name")


class Hubble:
    def __init__(self, est: Estate, seed: int) -> None:
        self.est = est
        self.seed = seed
        self.rng = stream(seed, "hubble")
        self.identities: dict[tuple[str, ...], int] = {}

    def endpoint(self, p: Pod) -> dict[str, Any]:
        labels = [f"k8s:{k}={v}" for k, v in p.labels.items() if k not in POD_LABEL_NOISE]
        ns_labels = {"kubernetes.io/metadata.name": p.ns, **NAMESPACES[p.ns]}
        labels += [f"k8s:io.cilium.k8s.namespace.labels.{k}={v}" for k, v in ns_labels.items()]
        labels += [f"k8s:io.cilium.k8s.policy.cluster={CLUSTER}",
                   f"k8s:io.cilium.k8s.policy.serviceaccount={p.wl.sa}", f"k8s:io.kubernetes.pod.namespace={p.ns}"]
        labels.sort()
        key = tuple(labels)
        if key not in self.identities:
            # identities are allocated from a stable per-label-set stream, like the kvstore allocator
            self.identities[key] = stream(self.seed, "identity/" + "|".join(key)).randrange(1000, 65000)
        return {"ID": p.endpoint_id, "identity": self.identities[key], "cluster_name": CLUSTER, "namespace": p.ns,
                "labels": labels, "pod_name": p.name,
                "workloads": [{"name": p.wl.name, "kind": p.wl.kind}]}

    def event(self, t: datetime, src: str, dst: str, sport: int, dport: int, proto: int, flags: list[str] | None,
              reply: bool, node: Node, direction: str) -> str:
        ps, pd = self.est.at(src, t), self.est.at(dst, t)
        assert ps is not None and pd is not None
        stamp = f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}{self.rng.randrange(1000):03d}Z"
        if proto == 6:
            l4 = {"TCP": {"source_port": sport, "destination_port": dport, "flags": {f: True for f in flags or []}}}
            summary = "TCP Flags: " + ", ".join(flags or [])
        else:
            l4 = {"UDP": {"source_port": sport, "destination_port": dport}}
            summary = "UDP"
        flow = {
            "time": stamp, "uuid": new_uid(self.rng), "verdict": "FORWARDED",
            "IP": {"source": src, "destination": dst, "ipVersion": "IPv4"}, "l4": l4,
            "source": self.endpoint(ps), "destination": self.endpoint(pd), "Type": "L3_L4",
            "node_name": f"{CLUSTER}/{node.name}", "event_type": {"type": 4},
            "traffic_direction": direction, "trace_observation_point": "TO_ENDPOINT",
            "trace_reason": "REPLY" if reply else "NEW", "is_reply": reply, "Summary": summary,
        }
        return json.dumps({"flow": flow, "node_name": flow["node_name"], "time": stamp}, sort_keys=True,
                          separators=(",", ":"))

    def lines(self, conns: list[Conn]) -> list[tuple[datetime, str]]:
        out = []
        for c in conns:
            if day_of(c.t) != HUBBLE_DAY:
                continue
            pc, ps = self.est.at(c.cip, c.t), self.est.at(c.sip, c.t)
            if pc is None or ps is None or HUBBLE_NAMESPACE not in (pc.ns, ps.ns):
                continue
            # same second as the VPC record's start; sub-second part only where the connection has none
            tq = c.t if c.t.microsecond else c.t + timedelta(microseconds=self.rng.randrange(990_000))
            out.append((tq, self.event(tq, c.cip, c.sip, c.cport, c.sport, c.proto,
                                       ["SYN"] if c.proto == 6 else None, False, ps.node, "INGRESS")))
            rt = tq + timedelta(microseconds=self.rng.randrange(150, 3000))
            flags = ["SYN", "ACK"] if c.outcome == "ok" else ["RST", "ACK"]
            out.append((rt, self.event(rt, c.sip, c.cip, c.sport, c.cport, c.proto,
                                       flags if c.proto == 6 else None, True, pc.node, "EGRESS")))
        out.sort(key=lambda x: x[0])
        return out


# --------------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------------


def md_table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def hm(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def readme(est: Estate, tr: Traffic, counts: dict[str, int], hubble_name: str, hubble_count: int,
           seed: int) -> str:
    carts_old, carts_new, cat_new = est.carts_old, est.carts_new, est.catalogue_new
    x = carts_old.ip
    to_x = [c for c in tr.conns if c.sip == x]
    last_carts = max(c.t for c in to_x if c.server == "shop/carts")
    first_cat = min(c.t for c in to_x if c.server == "shop/catalogue")
    fe = tr.compromised
    attack = [c for c in tr.conns if c.tag == "attack"]
    pg = est.of("shop/postgres")[0]
    ms = est.of("ai/model-server")[0]
    dev = [c for c in tr.conns if c.client == "shop-dev/frontend" and c.server == "shop/orders"]
    dev_days = sorted({day_of(c.t) + 1 for c in dev})
    reidx = [c for c in tr.conns if c.tag == "reindex"]
    unk = [c for c in tr.conns if c.cip == UNKNOWN_HOST]

    # Ground-truth edge table
    edges: dict[tuple[str, str, str, int], list[Conn]] = defaultdict(list)
    for c in tr.conns:
        proto = {1: "ICMP", 6: "TCP", 17: "UDP"}[c.proto]
        edges[(c.client, c.server, proto, c.sport)].append(c)
    edge_rows = []
    for (cl, sv, proto, port), cs in sorted(edges.items()):
        days = sorted({day_of(c.t) + 1 for c in cs})
        note = []
        if any(c.tag == "attack" for c in cs):
            note.append("**attack (fact 2)**")
        if cl == "shop-dev/frontend" and sv.startswith("shop/"):
            note.append("**dev→prod (fact 3)**")
        if cl == "ai/embedding-reindex":
            note.append("**rare (fact 4)**")
        if cl.startswith("unknown:"):
            note.append("unexplained source")
        if any(c.outcome == "reject" for c in cs):
            note.append("REJECT, no reply")
        elif any(c.outcome == "rst" for c in cs):
            note.append("accepted, answered with RST")
        edge_rows.append([cl, sv, proto, port, len(cs), ",".join(map(str, days)), "; ".join(note)])

    pod_rows = []
    for p in sorted(est.pods, key=lambda p: (p.ns, p.wl.name, p.created, p.name)):
        end = p.finished or p.deleted
        seen = [f"{t:%d}" for t in SNAPSHOT_TIMES if p.exists(t)]
        pod_rows.append([f"{p.ns}/{p.wl.name}", p.wl.kind, p.name, p.ip, p.node.name.split(".")[0],
                         hm(p.created), hm(end), "day " + ",".join(str(int(s) - 1) for s in seen) if seen else "-"])

    n_conn = len(tr.conns)
    total_records = sum(counts.values())
    file_rows = [[f"`{k}`", v] for k, v in sorted(counts.items())]
    file_rows.append([f"`{hubble_name}`", f"{hubble_count} events"])
    hosts_rows = [[h.name, h.ip, ", ".join(f"{p}/{proto}" for p, proto, _ in h.ports), h.zone or "-", h.location]
                  for h in HOSTS]

    attack_rows = []
    for c in sorted(attack, key=lambda c: c.t):
        what = {"rst": "ACCEPT, reply RST (tcp-flags 2 / 4)", "reject": "REJECT, no reply record",
                "ok": "ACCEPT both ways (tcp-flags 3 / 19)"}[c.outcome]
        attack_rows.append([hm(c.t), c.cport, f"{c.sip}:{c.sport}", c.server, what])

    files_rows = [
        ["`k8s/<namespace>.yaml`", "the repository manifests, one multi-document file per namespace: Namespace, "
         "ServiceAccounts, Deployments/StatefulSets/DaemonSet/CronJob, Services, Ingress, HPA"],
        ["`snapshots/pods-*.json`", "three `kubectl get pods -A -o json` Lists, taken at 02:30 UTC on day 1 "
         "(Mon 11-02), day 4 (Thu 11-05) and day 7 (Sun 11-08)"],
        ["`inventory/hosts.yaml`", "microseg's native inventory: the VMs, the named external peers, and overrides "
         "(sensitivity, compliance, AI role, declared dependencies) for Kubernetes workloads"],
        ["`flows/vpc-<date>.log.gz`", "AWS VPC Flow Logs, version 5 custom format with a header line, one gzip "
         "file per UTC day"],
        [f"`{hubble_name}`", "Cilium Hubble flows (`hubble observe -o jsonpb` / exporter format, one "
         f'`{{"flow": ...}}` object a line) for day 6, namespace `{HUBBLE_NAMESPACE}` only'],
    ]
    ns_text = ", ".join(f"`{ns}` ({', '.join(f'{k}={v}' for k, v in lb.items()) or 'no labels'})"
                        for ns, lb in NAMESPACES.items())
    reidx_days = sorted({day_of(c.t) + 1 for c in tr.conns if c.client == "ai/embedding-reindex"})

    return f"""# The "shop" example environment

A small but realistic estate for trying microseg end to end and for checking its output against a
known answer: one EKS cluster (`{CLUSTER}`, {REGION}) running a Sock-Shop-like web shop, an AI
shopping assistant, monitoring, a dev namespace, three VMs and two named external peers, plus one week
(Monday 2026-11-02 to Sunday 2026-11-08, UTC) of east-west flow logs in which four facts were planted.

Everything here is written by `scripts/gen_example.py` (seed `{seed}`); do not edit the files by hand.
`tests/test_example_data.py` regenerates the folder into a temporary directory, requires it to be
byte-identical to what is committed, and checks every planted fact directly from the files.

```
python scripts/gen_example.py                 # rewrite this folder
python scripts/gen_example.py --out /tmp/shop # or write a fresh copy elsewhere
```

## Files

{md_table(["path", "what"], files_rows)}
## The estate

**Network.** VPC `{VPC}` (account {ACCOUNT}). Nodes live in 10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24
(one per AZ). The Amazon VPC CNI uses custom networking: pods get real VPC addresses from the secondary
CIDR 10.244.0.0/16 (pod subnets {", ".join(n.pod_cidr for n in NODES)}), on a secondary ENI of their node,
which is why VPC Flow Logs see pod addresses. Services use {SERVICE_CIDR} (`kube-dns` is {KUBE_DNS_IP}),
but kube-proxy DNATs on the sending node, so **flow records carry pod IPs and target (container) ports,
never ClusterIPs or Service ports** (e.g. `carts` Service port 80 is seen as 8080). VMs sit in 10.20.0.0/16.

| node | address | AZ | pod subnet |
| --- | --- | --- | --- |
{"".join(f"| {n.name} | {n.ip} | {n.az} | {n.pod_cidr} |{chr(10)}" for n in NODES)}
**Namespaces.** {ns_text}.

- `shop` (prod): `frontend` (web, 8079, published by the `shop` Ingress through ingress-nginx),
  `catalogue` (80) with `catalogue-db` (MySQL 3306), `carts` (8080) with `redis` (6379, sessions),
  `orders` (8080; also published to the VMs by the internal NLB Service `orders-internal`),
  `payment` (80; calls the PSP), `shipping` (8080), `user` (80), `queue-master` (8080), `rabbitmq`
  (5672, metrics 15692), `postgres` (StatefulSet, 5432, with a postgres-exporter sidecar on 9187;
  orders and users, PCI scope). Services use named target ports except `carts`, `shipping`,
  `queue-master` (numeric 8080).
- `shop-dev` (dev): `frontend`, `catalogue`, `orders` release candidates. Its frontend's
  `ORDERS_URL` is `http://orders.shop.svc.cluster.local` (copied from prod values: fact 3).
  `shop-dev/orders` receives no traffic at all during the week.
- `ai` (prod): `assistant` (agent, 8080; the frontend's chat widget calls it; it calls the model server,
  the vector store and `shop/catalogue` as a tool), `model-server` (Ray Serve + vLLM: OpenAI API 8000,
  Ray dashboard/Jobs API 8265, metrics 8080), `vector-store` (Qdrant 6333/6334), `embedding-reindex`
  (CronJob `0 2 * * 4`: weekly full re-index of the catalogue).
- `ops`: `prometheus` (scrapes the ports named in `prometheus.io/port`), `node-exporter` (DaemonSet,
  hostNetwork, 9100 on the node addresses).
- `kube-system`: `coredns` (`k8s-app: kube-dns`, Service `kube-dns` 53/UDP+TCP); `aws-node` and
  `kube-proxy` are EKS-managed hostNetwork DaemonSets present in the snapshots only.
- `ingress-nginx`: `ingress-nginx-controller` (80/443, metrics 10254), Service type LoadBalancer
  (internet-facing NLB, IP targets, client IP preserved, so internet clients appear with their own
  addresses).

**VMs and external peers** (`inventory/hosts.yaml`):

{md_table(["host", "address", "ports", "zone", "location"], hosts_rows)}
External peers: `payments-psp` 198.51.100.0/24 (the PSP's API is reached at {", ".join(PSP_IPS)}),
`corp-vpn` 10.50.0.0/16 (administrators' VPN, who SSH to the bastion). Internet clients come from
203.0.113.0/24 and 192.0.2.0/24 ({len(tr.clients)} distinct addresses, heavy-tailed).

### Every pod of the week

"snapshots" says in which snapshot (day number) the pod appears. Deletion times are not in any
snapshot (they are what `kubectl get events` said); a reader has to infer the end of a binding from the
next snapshot or from the next pod that takes the address.

{md_table(["workload", "kind", "pod", "IP", "node", "created (UTC)", "ended (UTC)", "snapshots"], pod_rows)}
Host-network pods (`aws-node`, `kube-proxy`, `node-exporter`) share their node's address with each
other: a flow to 10.0.x.x:9100 is node-exporter, identified by the port.

## The flows

{n_conn} connections over the week, {total_records} VPC records. Volume follows a web shop's day (peak
18:00-21:00 UTC, weekend x1.3); dev and admin traffic happen on weekdays in office hours only.

{md_table(["file", "records"], file_rows)}
How the records are made (and what is simplified):

- Each connection is logged **once, on the server side's ENI** (`flow-direction` ingress for the
  request, egress for the reply); connections to peers outside the VPC (the PSP) are logged on the
  client's ENI (egress request, ingress reply). Real VPC-wide logging would also show each pod-to-pod
  connection on the client's ENI, and would *miss* traffic between two pods on the same node (it never
  leaves the node): here every connection is logged exactly once.
- A request record goes client → server (client port from 32768-60999, the Linux default range); the
  reply record goes server → client with the ports swapped. Rejected connections have no reply record.
- `tcp-flags`: 3 (SYN|FIN) on a short request, 19 (SYN-ACK|FIN) on its reply; long connections
  (SSH sessions, the nightly pg_dump) are split into 60-second aggregation windows with flags 2/18 in
  the first, 0/0 in the middle and 1/17 in the last; a closed port answers RST (4). UDP and ICMP carry 0.
- DNS: every pod resolves through CoreDNS (UDP 53, A+AAAA in one record of 2 packets; a few TCP 53).
  Lookups are cached, so only some connections are preceded by one.
- Prometheus keeps connections open; the example shows one request/reply record pair per target every
  3 hours (a real log would show one every aggregation interval).
- ICMP: the bastion pings the two other VMs every 4 hours (ports 0).
- `NODATA` records: each VM's ENI reports two idle capture windows a day.
- Not modelled: NLB health checks, kubelet probes, control-plane → webhook traffic, image pulls,
  Amazon DNS resolver traffic (VPC Flow Logs never record the latter).
- The Hubble file covers day 6 (Saturday 2026-11-07) for connections with an endpoint in namespace
  `{HUBBLE_NAMESPACE}`: a request event (`is_reply: false`, SYN, observed at the server's endpoint, INGRESS)
  and a reply event (`is_reply: true`, observed at the client's endpoint, EGRESS) per connection. The
  same connections are also in `flows/vpc-2026-11-07.log.gz` (same addresses, ports and seconds): a pipeline
  that reads both must not count them twice. All verdicts are FORWARDED: nothing enforces policy today.

### Ground truth: every edge (client → server, server port)

Names are microseg workload names: `namespace/name` for Kubernetes, host names for VMs, `external:<name>`
for named peers, `internet` for the unnamed rest, `unknown:<ip>` for the one address nothing explains.
"days" are day numbers 1-7 (day 1 = Monday 2026-11-02).

{md_table(["client", "server", "proto", "port", "connections", "days", "note"], edge_rows)}
## Planted facts

### 1. Pod churn with IP reuse: {x}

- `shop/carts` pod `{carts_old.name}` (image carts:0.4.8, node {carts_old.node.name.split(".")[0]}) held
  **{x}** from {hm(carts_old.created)} (it is in the day-1 snapshot).
- Day 3, Wednesday 2026-11-04: the carts rollout to 0.4.9 creates `{carts_new.name}` at
  {hm(carts_new.created)} with a new address **{carts_new.ip}**; the old pod is deleted at
  {hm(CARTS_OLD_DELETED)}.
- At **{hm(cat_new.created)}** (the new pod's `creationTimestamp`) the HPA scales `shop/catalogue`
  from 2 to 3 and the VPC CNI hands the freed address to `{cat_new.name}`: **{x}** now belongs to
  `shop/catalogue` (it is in the day-4 and day-7 snapshots).
- So flows to or from {x} before {hm(CARTS_OLD_DELETED)} are carts (server port 8080; last one at
  {hm(last_carts)}), flows from {hm(cat_new.created)} on are catalogue (server port 80; first one at
  {hm(first_cat)}); nothing touches {x} in between. Prometheus scrapes it as carts:8080 before and as
  catalogue:80 after. A resolver that uses the latest binding would invent an edge
  `shop/frontend → shop/catalogue:8080` and `… → shop/redis` from catalogue, and lose carts' history.

### 2. Lateral movement from a compromised frontend (day 6, Saturday 2026-11-07, 03:12-03:18 UTC)

`shop/frontend` pod `{fe.name}` (**{fe.ip}**, node {fe.node.name.split(".")[0]}) is compromised. None of
these (destination, port) pairs occurs in the manifests' wiring or in the rest of the week's traffic:

{md_table(["time (UTC)", "client port", "destination", "workload", "records"], attack_rows)}
- the SSH sweep hits four pods ({", ".join(c.server for c in attack if c.outcome == "rst")}) — they answer
  RST — and the bastion `10.20.0.10:22`, whose security group only admits the VPN: REJECT;
- then 8 connections straight to `shop/postgres` ({pg.ip}:5432): accepted (flat network), small byte
  counts (failed logins);
- then two connections to the `ai/model-server` Ray dashboard / Jobs API ({ms.ip}:8265), which is not
  published by any Service; they are also in the Hubble file with workload names.

A guardrail "internet-facing never reaches the data tier" must flag frontend → postgres; none of these
edges should become an allow rule.

### 3. Dev reaches prod

`shop-dev/frontend` calls `shop/orders` on 8080 ({len(dev)} connections on days {", ".join(map(str, dev_days))},
weekdays, office hours), because its `ORDERS_URL` points at `orders.shop.svc.cluster.local`. The
caller is `{est.dev_frontend_old.name}` ({est.dev_frontend_old.ip}) until it is replaced on day 5 at
{hm(DEV_FRONTEND_REDEPLOY)} by `{est.dev_frontend_new.name}` ({est.dev_frontend_new.ip}). A
"dev never reaches prod" guardrail (namespace label env=dev → env=prod) must flag it.

### 4. A rare but legitimate edge: the weekly re-index (day 4 only)

CronJob `ai/embedding-reindex` (`0 2 * * 4`) runs once in the week: Job
`{est.reindex.owner_name}`, pod `{est.reindex.name}` (**{est.reindex.ip}**, created
{hm(est.reindex.created)}, finished {hm(est.reindex.finished)}; Running in the day-4 snapshot,
Succeeded — still listing its podIP — in the day-7 snapshot). It makes {len(reidx)} connections, all on day
{", ".join(map(str, reidx_days))} between {hm(min(c.t for c in reidx))} and {hm(max(c.t for c in reidx))}:
to `shop/catalogue:80`, `ai/model-server:8000` and
**`ai/vector-store:6333`** (the write path into the vector store). With a "seen on at least 2 days"
threshold these edges would be dropped and next Thursday's re-index would break; the plan should keep
them (the schedule explains the single day) or surface them for review, not silently lose them.
By contrast the nightly `backup-1 → shop/postgres:5432` is seen every day and declared in
`hosts.yaml`.

## Other things a reader has to cope with

- **Unexplained address**: `{UNKNOWN_HOST}` (nothing in any inventory) calls `shop/orders:8080`
  {len(unk)} times (06:00-06:10 on days {", ".join(str(d) for d in sorted({day_of(c.t) + 1 for c in unk}))}).
- **Succeeded pod with an IP**: the day-7 snapshot lists the finished re-index pod with its podIP.
- **Shared node addresses**: `aws-node`, `kube-proxy` and `node-exporter` all hold the node IPs.
- **Long connections** span several records with the same 5-tuple (pg_dump, SSH sessions).
- **Same labels in two namespaces**: `shop/frontend` and `shop-dev/frontend` have identical pod labels;
  only the namespace tells them apart.
- **Declared vs observed**: `hosts.yaml` declares backup-1 → postgres, legacy-erp → orders:8080,
  payment → PSP:443, orders → legacy-erp:8443 and the bastion's SSH/ping; all are observed too.
"""


# --------------------------------------------------------------------------------------------------


def generate(seed: int = SEED) -> dict[str, bytes]:
    est = Estate(seed)
    tr = Traffic(est, seed)
    tr.generate()
    files: dict[str, bytes] = {}
    for name, text in k8s_files().items():
        files[name] = text.encode()
    for name, text in snapshot_files(est, seed).items():
        files[name] = text.encode()
    files["inventory/hosts.yaml"] = inventory_file().encode()
    enis = Enis(est)
    vpc, counts = vpc_files(tr, enis, seed)
    files.update(vpc)
    hub = Hubble(est, seed).lines(tr.conns)
    hubble_name = f"flows/hubble-{DAY0 + timedelta(days=HUBBLE_DAY):%Y-%m-%d}.jsonl"
    files[hubble_name] = "".join(line + "\n" for _, line in hub).encode()
    files["README.md"] = readme(est, tr, counts, hubble_name, len(hub), seed).encode()
    return files


GENERATED_DIRS = ("k8s", "snapshots", "inventory", "flows")


def write(files: dict[str, bytes], out: Path) -> None:
    """Write ``files`` under ``out`` and remove stale generated files (only in the folders we own)."""
    for d in GENERATED_DIRS:
        for path in sorted((out / d).rglob("*")) if (out / d).is_dir() else []:
            if path.is_file() and path.relative_to(out).as_posix() not in files:
                path.unlink()
    for name, data in sorted(files.items()):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    files = generate(args.seed)
    write(files, args.out)
    total = sum(len(b) for b in files.values())
    print(f"wrote {len(files)} files, {total} bytes to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
