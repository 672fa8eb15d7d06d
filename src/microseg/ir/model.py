"""The intermediate representation: the only thing that crosses layer boundaries.

Readers produce it, analyses read it and return it, back ends turn it into text. Every model is a
frozen pydantic model with ``extra="forbid"`` so that a policy file with an unknown or misspelt field
is rejected instead of silently ignored (fail closed), and so that the same classes give the
policy-as-code YAML its JSON Schema.

No I/O happens in this package.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    ICMP = "ICMP"
    SCTP = "SCTP"


IANA_PROTOCOLS: dict[int, Protocol] = {1: Protocol.ICMP, 6: Protocol.TCP, 17: Protocol.UDP, 58: Protocol.ICMP,
                                       132: Protocol.SCTP}


class PortRange(Frozen):
    """An inclusive port range; ``start == end`` for a single port. ICMP rules use 0-0 (no ports)."""

    start: Annotated[int, Field(ge=0, le=65535)]
    end: Annotated[int, Field(ge=0, le=65535)]

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.end < self.start:
            raise ValueError(f"port range {self.start}-{self.end} ends before it starts")
        return self

    @classmethod
    def parse(cls, text: str | int) -> PortRange:
        s = str(text).strip()
        if "-" in s:
            a, b = s.split("-", 1)
            return cls(start=int(a), end=int(b))
        return cls(start=int(s), end=int(s))

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"

    def contains(self, port: int) -> bool:
        return self.start <= port <= self.end


class WorkloadKind(StrEnum):
    KUBERNETES = "kubernetes"
    HOST = "host"  # VM or bare-metal host
    SERVICE = "managed-service"  # RDS, S3 endpoint, ...
    EXTERNAL = "external"  # internet, SaaS, a named CIDR outside the estate


class ListenPort(Frozen):
    port: Annotated[int, Field(ge=0, le=65535)]
    protocol: Protocol = Protocol.TCP
    name: str | None = None


class Dependency(Frozen):
    """A declared dependency (from the inventory): this workload calls ``destination``."""

    destination: str
    protocol: Protocol = Protocol.TCP
    port: Annotated[int, Field(ge=0, le=65535)]
    reason: str = ""


Label = tuple[str, str]


class Workload(Frozen):
    """The unit that gets an identity.

    ``name`` is ``namespace/name`` for Kubernetes workloads, the host name for hosts and VMs and
    ``external:<name>`` for external peers. ``selector`` is the set of pod labels that identifies the
    workload's pods and nothing else (Kubernetes); ``addresses`` are static IPs/CIDRs (hosts,
    external peers). Labels are sorted tuples so that the model stays hashable and canonical.
    """

    name: str
    kind: WorkloadKind
    namespace: str | None = None
    k8s_kind: str | None = None  # Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod
    labels: tuple[Label, ...] = ()
    selector: tuple[Label, ...] = ()
    namespace_labels: tuple[Label, ...] = ()
    service_account: str | None = None
    identity: str | None = None  # SPIFFE ID, cloud role, host certificate subject
    addresses: tuple[str, ...] = ()
    except_addresses: tuple[str, ...] = ()  # for external peers such as "internet" = 0/0 minus RFC1918
    ports: tuple[ListenPort, ...] = ()
    images: tuple[str, ...] = ()
    exposure: Literal["internet", "internal"] = "internal"
    exposure_reason: str = ""
    environment: str | None = None
    sensitivity: str | None = None
    compliance: tuple[str, ...] = ()
    owner: str | None = None
    ai_role: str | None = None
    zone: str | None = None  # a user override; the proposed zone lives in the segment map
    location: str | None = None  # cluster/namespace, VPC/subnet, VLAN
    declared: tuple[Dependency, ...] = ()

    @field_validator("labels", "selector", "namespace_labels", mode="before")
    @classmethod
    def _labels_from_mapping(cls, v: object) -> object:
        if isinstance(v, dict):
            return tuple(sorted((str(k), str(val)) for k, val in v.items()))
        return v

    @field_validator("addresses", "except_addresses")
    @classmethod
    def _valid_networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            ipaddress.ip_network(a, strict=False)
        return v

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def selector_map(self) -> dict[str, str]:
        return dict(self.selector)


class AddressBinding(Frozen):
    """Which workload held ``ip`` during ``[valid_from, valid_to)``; ``None`` bounds are open.

    Pod IPs are reused: a flow is resolved with the binding valid at the flow's time.
    """

    ip: str
    workload: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    source: str = ""  # file (and object) the binding was read from


class Inventory(Frozen):
    workloads: tuple[Workload, ...] = ()
    bindings: tuple[AddressBinding, ...] = ()
    # Namespaces seen (name -> labels), so back ends can select them by kubernetes.io/metadata.name.
    namespaces: tuple[tuple[str, tuple[Label, ...]], ...] = ()
    # DNS resolver workload(s) of the cluster, e.g. "kube-system/coredns"; used for the DNS allowance.
    dns_resolvers: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def by_name(self) -> dict[str, Workload]:
        return {w.name: w for w in self.workloads}


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    DROP = "drop"
    AUDIT = "audit"


class EdgeOrigin(StrEnum):
    OBSERVED = "observed"
    DECLARED = "declared"
    BOTH = "both"


class Edge(Frozen):
    """Aggregated dependency between two workloads on the server's port."""

    source: str
    destination: str
    protocol: Protocol
    port: int
    flows: int = 0
    bytes: int = 0
    denied_flows: int = 0  # records with reject/drop actions for this edge
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    days: int = 0
    hours: tuple[int, ...] = ()  # hours of day (UTC) in which the edge was seen
    origin: EdgeOrigin = EdgeOrigin.OBSERVED

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.source, self.destination, self.protocol.value, self.port)


class ZoneAssignment(Frozen):
    workload: str
    zone: str
    reason: str
    overridden: bool = False


class Segment(Frozen):
    name: str
    trust: Annotated[int, Field(ge=0, le=100)]  # 0 = untrusted (internet) .. 100 = most protected
    description: str = ""
    members: tuple[str, ...] = ()


class ZoneMatch(Frozen):
    """Matches workloads by zone and/or environment. Empty tuples match everything."""

    zones: tuple[str, ...] = ()
    except_zones: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()


class Guardrail(Frozen):
    """A zone-to-zone statement that holds whatever flows were observed."""

    id: str
    description: str
    source: ZoneMatch = Field(alias="from")
    destination: ZoneMatch = Field(alias="to")
    ports: tuple[PortRange, ...] = ()  # empty = every port
    protocols: tuple[Protocol, ...] = ()  # empty = every protocol


class JustificationKind(StrEnum):
    OBSERVED = "observed"
    DECLARED = "declared"
    INFRASTRUCTURE = "infrastructure"
    EXCEPTION = "exception"
    TEMPLATE = "template"


class Justification(Frozen):
    kind: JustificationKind
    text: str
    flows: int = 0
    days: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class AllowRule(Frozen):
    """Source workloads -> destination workloads on protocol/ports, with a mandatory justification."""

    id: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocol: Protocol
    ports: tuple[PortRange, ...]
    justification: Justification

    @field_validator("ports", mode="before")
    @classmethod
    def _parse_ports(cls, v: object) -> object:
        if isinstance(v, (list, tuple)):
            return tuple(PortRange.parse(p) if isinstance(p, (str, int)) else p for p in v)
        return v

    def allows_port(self, port: int) -> bool:
        return any(r.contains(port) for r in self.ports)


class PolicyException(Frozen):
    """An allow rule outside the guardrails, approved by a person until an expiry date."""

    rule: AllowRule
    guardrail: str
    approver: str
    reason: str
    expires: datetime


class Settings(Frozen):
    min_flows: int = 1
    min_days: int = 1
    # Namespaces never put under default deny (the cluster's own machinery). Rules may still name
    # their workloads as peers; only the in-scope side of such a rule is enforced.
    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")


class Policy(Frozen):
    """Segments, guardrails, allow rules and exceptions, plus the universe of workloads they name."""

    version: Literal[1] = 1
    workloads: tuple[Workload, ...] = ()
    segments: tuple[Segment, ...] = ()
    assignments: tuple[ZoneAssignment, ...] = ()
    guardrails: tuple[Guardrail, ...] = ()
    rules: tuple[AllowRule, ...] = ()
    exceptions: tuple[PolicyException, ...] = ()
    dns_resolvers: tuple[str, ...] = ()
    settings: Settings = Settings()

    def workload_map(self) -> dict[str, Workload]:
        return {w.name: w for w in self.workloads}

    def zone_of(self) -> dict[str, str]:
        return {a.workload: a.zone for a in self.assignments}

    def all_rules(self) -> tuple[AllowRule, ...]:
        return self.rules + tuple(e.rule for e in self.exceptions)


Severity = Literal["critical", "high", "medium", "low", "info"]


class Finding(Frozen):
    """A finding with a stable id (``MS1xx`` planning, ``MS2xx`` validation). Ids are never reused."""

    id: str
    severity: Severity
    message: str
    source: str | None = None
    destination: str | None = None
    protocol: Protocol | None = None
    port: int | None = None
    evidence: str = ""
    suggestion: str = ""
