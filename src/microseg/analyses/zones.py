"""Propose a trust zone for every workload, with the reason, and the default guardrails.

The proposal is a heuristic over what the inventory and the flows say (image, listening ports,
exposure, AI role, names); every proposal carries its reason so a reviewer can overrule it, and an
explicit ``zone`` in the inventory always wins.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

from microseg.ir.model import (
    Edge,
    Guardrail,
    PortRange,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
    ZoneMatch,
)

# Zone catalogue: name -> (trust 0..100, description). Trust orders enforcement in the rollout and
# is what a reviewer reads first; the numbers only need to be ordinal.
ZONES: dict[str, tuple[int, str]] = {
    "external": (0, "Endpoints outside the estate: the internet, SaaS, partner networks"),
    "internet-facing": (20, "Workloads that accept connections from the internet or a public load balancer"),
    "dev": (30, "Development and test workloads"),
    "app": (50, "Application tier (the default)"),
    "platform": (60, "Cluster and platform services (DNS, ingress controllers, monitoring)"),
    "ai-agents": (60, "AI agents and tool runners: call models, tools and data on a user's behalf"),
    "ai-inference": (70, "Model endpoints and LLM gateways"),
    "management": (80, "Bastions and administrative access (SSH, RDP, WinRM)"),
    "ai-data": (85, "Vector stores, feature stores, embedding and ingestion pipelines"),
    "data": (90, "Data stores: databases, caches, queues, search"),
}

# Data stores, recognised by image repository name and by well-known ports.
_DATA_IMAGES = (
    "postgres", "postgis", "mysql", "mariadb", "percona", "redis", "valkey", "keydb", "mongo", "elasticsearch",
    "opensearch", "kafka", "zookeeper", "rabbitmq", "cassandra", "scylla", "couchdb", "couchbase", "cockroach",
    "memcached", "clickhouse", "influxdb", "neo4j", "minio", "mssql", "oracle/database", "etcd", "nats",
)
_DATA_PORTS = {
    5432: "PostgreSQL", 3306: "MySQL", 6379: "Redis", 27017: "MongoDB", 9200: "Elasticsearch/OpenSearch",
    9300: "Elasticsearch transport", 9092: "Kafka", 5672: "RabbitMQ (AMQP)", 9042: "Cassandra", 26257: "CockroachDB",
    11211: "memcached", 1433: "SQL Server", 1521: "Oracle", 8123: "ClickHouse HTTP", 7687: "Neo4j Bolt",
    8086: "InfluxDB",
}
# Data stores named in a role/tier/component label: these words, or a word starting with a data-store image
# name ("postgresql", "mongodb", "redis").
_DATA_LABEL_KEYS = ("role", "tier", "component", "app.kubernetes.io/component")
_DATA_LABEL_WORDS = frozenset({"data", "db", "database", "datastore", "dbms", "sql", "nosql", "cache", "queue",
                               "broker"})
_DATA_IMAGE_WORDS = tuple(x for x in _DATA_IMAGES if "/" not in x)
_VECTOR_IMAGES = ("qdrant", "weaviate", "milvus", "chroma", "pgvector", "vespa", "marqo", "lancedb", "feast")
_VECTOR_PORTS = {6333: "Qdrant", 6334: "Qdrant gRPC", 19530: "Milvus"}
_MODEL_IMAGES = (
    "vllm", "ollama", "text-generation-inference", "tritonserver", "triton", "llama.cpp", "llama-cpp", "localai",
    "torchserve", "kserve", "seldon", "openllm", "ray-ml", "litellm",
)
_MODEL_PORTS = {11434: "Ollama"}
_AGENT_WORDS = re.compile(r"(^|[-_/])(agent|assistant|copilot|mcp|tool-?runner|autogen|crewai)([-_/]|$)")
_MGMT_WORDS = re.compile(r"(^|[-_/.])(bastion|jump(host|box)?|jumpbox|admin-?host)([-_/.]|$)")
_ADMIN_PORTS = {22: "SSH", 3389: "RDP", 5985: "WinRM", 5986: "WinRM/TLS", 23: "Telnet", 5900: "VNC"}
_MONITORING_IMAGES = ("prometheus", "alertmanager", "grafana", "node-exporter", "kube-state-metrics", "datadog",
                      "fluent-bit", "fluentd", "opentelemetry-collector", "otel", "vector", "promtail", "loki")
_PLATFORM_NAMESPACES = ("kube-system", "ingress-nginx", "istio-system", "cert-manager", "monitoring")
_AI_ROLE_ZONE = {
    "model-endpoint": "ai-inference", "llm-gateway": "ai-inference", "vector-store": "ai-data",
    "feature-store": "ai-data", "embedding-pipeline": "ai-data", "ingestion-pipeline": "ai-data",
    "agent": "ai-agents", "tool-integration": "ai-agents",
}
DEV_ENVIRONMENTS = ("dev", "development", "test", "testing", "qa", "staging", "sandbox")
PROD_ENVIRONMENTS = ("prod", "production")


def _image_match(images: Iterable[str], words: Sequence[str]) -> str | None:
    """The first image whose repository name contains one of ``words`` (metrics exporters excluded)."""
    for image in images:
        ref = image.split("@", 1)[0].lower()
        name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
        if "exporter" in name:
            continue
        for word in words:
            if ("/" in word and word in ref) or word in name:
                return image
    return None


def _port_match(w: Workload, table: dict[int, str], observed: Collection[int] = ()) -> str | None:
    """The first declared port of ``w`` in ``table``; for a workload that declares none (a host from a CMDB or
    an EC2 export, a pod spec without containerPort), the first port it accepted connections on."""
    for p in sorted(w.ports, key=lambda p: p.port):
        if p.port in table:
            return f"{table[p.port]} port {p.port}"
    if not w.ports:
        for port in sorted(observed):
            if port in table:
                return f"{table[port]} port {port} (accepted connections in the observed flows)"
    return None


def _data_label(w: Workload) -> str | None:
    """The label (``role``/``tier``/``component``: a CMDB's role column, EC2's Role/Tier tags, Kubernetes'
    recommended ``app.kubernetes.io/component``) whose value names a data store, e.g. ``db``, ``database``,
    ``postgres-primary``, ``redis-cache``; metrics exporters excluded as for images."""
    labels = w.label_map
    for key in _DATA_LABEL_KEYS:
        value = labels.get(key, "")
        words = [x for x in re.split(r"[^a-z0-9]+", value.lower()) if x]
        if "exporter" in words:
            continue
        if any(x in _DATA_LABEL_WORDS or x.startswith(_DATA_IMAGE_WORDS) for x in words):
            return f"{key}={value}"
    return None


def propose(w: Workload, internet_peers: set[str], observed_ports: Collection[int] = ()) -> tuple[str, str]:
    """The proposed zone for one workload and the reason a reviewer will read. ``observed_ports``: the ports
    it accepted connections on in the flows, read as its listening ports when the inventory declares none."""
    if w.kind == WorkloadKind.EXTERNAL:
        return "external", "external peer (outside the estate)"
    if w.ai_role and w.ai_role in _AI_ROLE_ZONE:
        return _AI_ROLE_ZONE[w.ai_role], f"AI role {w.ai_role} declared in the inventory"
    if (img := _image_match(w.images, _VECTOR_IMAGES)) is not None:
        return "ai-data", f"vector/feature store image {img}"
    if (why := _port_match(w, _VECTOR_PORTS, observed_ports)) is not None:
        return "ai-data", f"listens on {why}"
    if (img := _image_match(w.images, _DATA_IMAGES)) is not None:
        return "data", f"data store image {img}"
    if (label := _data_label(w)) is not None:
        return "data", f"label {label} names a data store"
    if w.kind == WorkloadKind.SERVICE and w.name.startswith("rds-"):
        return "data", "Amazon RDS database (its network interface)"
    if (img := _image_match(w.images, _MODEL_IMAGES)) is not None:
        return "ai-inference", f"model server image {img}"
    if (why := _port_match(w, _MODEL_PORTS, observed_ports)) is not None:
        return "ai-inference", f"listens on {why}"
    if (why := _port_match(w, _DATA_PORTS, observed_ports)) is not None and not w.exposure == "internet":
        return "data", f"listens on {why}"
    short = w.name.rsplit("/", 1)[-1].lower()
    if _AGENT_WORDS.search(short):
        return "ai-agents", f"name '{short}' marks an AI agent/tool runner"
    if _MGMT_WORDS.search(short) or w.label_map.get("role", "").lower() in ("bastion", "jumphost", "management"):
        return "management", "bastion/jump host by name or role label"
    if w.exposure == "internet":
        return "internet-facing", w.exposure_reason or "exposed to the internet"
    if w.name in internet_peers:
        return "internet-facing", "accepts connections from public addresses (observed flows)"
    if w.kind == WorkloadKind.KUBERNETES and w.namespace in _PLATFORM_NAMESPACES:
        return "platform", f"cluster platform namespace {w.namespace}"
    if (img := _image_match(w.images, _MONITORING_IMAGES)) is not None:
        return "platform", f"monitoring/telemetry image {img}"
    # Nearly every Linux host listens on SSH, so only a host that serves nothing *but* admin
    # protocols is a management host by its ports.
    if w.kind != WorkloadKind.KUBERNETES and w.ports and all(p.port in _ADMIN_PORTS for p in w.ports):
        return "management", f"host serves only admin protocols ({_port_match(w, _ADMIN_PORTS)})"
    if (w.environment or "").lower() in DEV_ENVIRONMENTS:
        return "dev", f"environment {w.environment}"
    return "app", "application tier (no data-store, AI, management or internet-facing signal)"


def assign_zones(workloads: Sequence[Workload], edges: Sequence[Edge] = ()) -> tuple[tuple[Segment, ...],
                                                                                     tuple[ZoneAssignment, ...]]:
    """Place every workload in a zone; an inventory ``zone`` override wins and is marked as such."""
    external = {w.name for w in workloads if w.kind == WorkloadKind.EXTERNAL}
    # A workload that accepted (not merely was probed by) connections from a public address is
    # internet-facing even if no Service/Ingress says so: the flows show the exposure.
    internet_peers = {e.destination for e in edges if e.source == "external:internet" and e.flows > 0
                      and e.destination not in external}
    served: dict[str, set[int]] = {}  # the ports each workload accepted connections on (server side)
    for e in edges:
        if e.flows > 0 and e.protocol != Protocol.ICMP:
            served.setdefault(e.destination, set()).add(e.port)
    assignments: list[ZoneAssignment] = []
    for w in sorted(workloads, key=lambda w: w.name):
        if w.zone:
            assignments.append(ZoneAssignment(workload=w.name, zone=w.zone, reason="set in the inventory",
                                              overridden=True))
        else:
            zone, reason = propose(w, internet_peers, served.get(w.name, ()))
            assignments.append(ZoneAssignment(workload=w.name, zone=zone, reason=reason))
    members: dict[str, list[str]] = {}
    for a in assignments:
        members.setdefault(a.zone, []).append(a.workload)
    segments = []
    for name in sorted(members, key=lambda z: (-ZONES.get(z, (50, ""))[0], z)):
        trust, desc = ZONES.get(name, (50, "user-defined zone"))
        segments.append(Segment(name=name, trust=trust, description=desc, members=tuple(sorted(members[name]))))
    return tuple(segments), tuple(assignments)


# Admin interfaces: remote shells and desktops, plus control planes that run code on request —
# Docker's API (2375/2376), the kubelet API (10250), the Ray dashboard/Jobs API (8265, exploited as
# "ShadowRay", CVE-2023-48022) and the RabbitMQ management UI (15672).
ADMIN_PORT_RANGES = tuple(PortRange.parse(p) for p in ("22-23", "2375-2376", "3389", "5900", "5985-5986", "8265",
                                                       "10250", "15672"))


def default_guardrails() -> tuple[Guardrail, ...]:
    """The guardrails every plan starts with; a config file may replace or extend them."""
    return (
        Guardrail(id="GR-internet-to-data", description="Internet-facing workloads and external peers never "
                  "reach the data tier directly", source=ZoneMatch(zones=("internet-facing", "external")),
                  destination=ZoneMatch(zones=("data", "ai-data"))),
        Guardrail(id="GR-internet-ingress", description="The internet reaches only internet-facing workloads",
                  source=ZoneMatch(zones=("external",)),
                  destination=ZoneMatch(except_zones=("internet-facing", "external"))),
        Guardrail(id="GR-dev-to-prod", description="Dev/test never reaches prod",
                  source=ZoneMatch(environments=DEV_ENVIRONMENTS),
                  destination=ZoneMatch(environments=PROD_ENVIRONMENTS)),
        Guardrail(id="GR-admin-from-management", description="Admin ports (SSH, Telnet, RDP, VNC, WinRM, "
                  "Docker, kubelet, Ray dashboard, RabbitMQ management) only from the management zone",
                  source=ZoneMatch(except_zones=("management",)),
                  destination=ZoneMatch(), ports=ADMIN_PORT_RANGES),
        Guardrail(id="GR-ai-no-direct-egress", description="Model endpoints and AI data stores never reach the "
                  "internet directly (egress goes through a proxy)",
                  source=ZoneMatch(zones=("ai-inference", "ai-data")), destination=ZoneMatch(zones=("external",))),
    )
