"""The intermediate representation: the only thing that crosses layer boundaries.

Readers produce it, analyses read it and return it, back ends turn it into text. Every model is a
frozen pydantic model with ``extra="forbid"`` so that a policy file with an unknown or misspelt field
is rejected instead of silently ignored (fail closed), and so that the same classes give the
policy-as-code YAML its JSON Schema.

No I/O happens in this package.
"""

from __future__ import annotations

import ipaddress
import re
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

# A DNS name as a peer of an allow rule: lower-case LDH labels (underscores allowed, as in Cilium's
# matchName), no trailing dot, optionally behind one leading "*." wildcard label.
_DNS_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_FQDN = re.compile(rf"(?:\*\.)?(?:{_DNS_LABEL}\.)*{_DNS_LABEL}")


def check_fqdn(name: str) -> str:
    """Validate one DNS name of an external peer (see :attr:`Workload.fqdns`)."""
    if name != name.lower():
        raise ValueError(f"DNS name {name!r}: write DNS names in lower case")
    if name.endswith("."):
        raise ValueError(f"DNS name {name!r}: leave out the trailing dot")
    if len(name) > 253 or not _FQDN.fullmatch(name):
        raise ValueError(f"DNS name {name!r} is not a DNS name (letters, digits, '-', '_', dots; an optional "
                         "leading '*.' for exactly one more label)")
    return name


def fqdn_matches(pattern: str, name: str) -> bool:
    """Whether DNS name ``name`` is matched by ``pattern`` (an exact name, or ``*.`` plus one label)."""
    if pattern.startswith("*."):
        head, _, tail = name.partition(".")
        return bool(head) and tail == pattern[2:]
    return name == pattern


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
    # External peers only: DNS names the peer is reached by ("api.example.com", or "*.example.com" for
    # exactly one more label, as Cilium's "*." pattern). The peer stands for its addresses *and* the
    # addresses these names resolve to; see microseg.ir.semantics for what each target makes of it.
    fqdns: tuple[str, ...] = ()

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

    @field_validator("fqdns")
    @classmethod
    def _valid_fqdns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({check_fqdn(n) for n in v}))

    @model_validator(mode="after")
    def _fqdns_only_external(self) -> Workload:
        if self.fqdns and self.kind != WorkloadKind.EXTERNAL:
            raise ValueError(f"workload {self.name!r}: only external peers have DNS names (fqdns)")
        return self

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
    # Of denied_flows: accepted TCP records that nobody answered (SYN only, or refused by RST), counted as
    # attempts rather than flows (engine/mapping.py).
    unanswered: int = 0
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



def check_regex(text: str, what: str) -> str:
    """Validate an HTTP match pattern: the part of POSIX ERE that RE2 and Python read the same way.

    Cilium hands the patterns to its Envoy proxy (RE2); its documentation calls them extended POSIX
    regular expressions. Constructs whose meaning differs between those dialects are refused rather
    than guessed: ``(?...)`` groups, backslash-letter/digit escapes (``\\d``, back-references), lazy or
    possessive quantifiers, backslashes and ``[:class:]``/``[.x.]``/``[=x=]`` inside brackets.
    """
    if not text:
        raise ValueError(f"{what}: an empty pattern (leave the field out to match any)")
    if len(text) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} {text!r}: too long or contains control characters")
    i, after_quantifier = 0, False
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1].isalnum():
                raise ValueError(f"{what} {text!r}: a backslash may only escape punctuation (no \\d, \\w, "
                                 "back-references)")
            i, after_quantifier = i + 2, False
            continue
        if c == "[":
            j = i + 1 + (text[i + 1:i + 2] == "^")
            j += text[j:j + 1] == "]"  # a leading "]" is a literal member
            close = text.find("]", j)
            body = text[i + 1:close] if close >= 0 else ""
            if close < 0 or "\\" in body or any(x in body for x in ("[:", "[.", "[=")):
                raise ValueError(f"{what} {text!r}: bracket expressions may not contain backslashes or "
                                 "[:class:] forms")
            i, after_quantifier = close + 1, False
            continue
        if c in "?+" and after_quantifier:
            raise ValueError(f"{what} {text!r}: lazy or possessive quantifiers are not POSIX")
        if c == "(" and text[i + 1:i + 2] == "?":
            raise ValueError(f"{what} {text!r}: (?...) groups are not POSIX")
        after_quantifier = c in "*+?}"
        i += 1
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{what} {text!r} is not a valid regular expression: {exc}") from None
    return text


class HttpMatch(Frozen):
    """One class of HTTP requests an allow rule admits (Cilium's ``PortRuleHTTP`` semantics).

    ``method`` and ``path`` are regular expressions (the POSIX ERE subset of :func:`check_regex`) that
    must match the *whole* request method and the *whole* request path as the proxy receives it, query
    string included (Cilium: "allows GET requests to the URL /public ... requests to any other URL ...
    will be rejected", https://docs.cilium.io/en/stable/security/policy/layer7/). A missing field
    matches anything; at least one must be given. To admit a path with any query string write
    ``/healthz(\\?.*)?``; a prefix is ``/api/.*``.
    """

    method: str | None = None
    path: str | None = None

    @field_validator("method")
    @classmethod
    def _valid_method(cls, v: str | None) -> str | None:
        return None if v is None else check_regex(v, "HTTP method pattern")

    @field_validator("path")
    @classmethod
    def _valid_path(cls, v: str | None) -> str | None:
        return None if v is None else check_regex(v, "HTTP path pattern")

    @model_validator(mode="after")
    def _not_empty(self) -> HttpMatch:
        if self.method is None and self.path is None:
            raise ValueError("an HTTP match needs a method or a path pattern")
        return self

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.method or "", self.path or "", str(self.method is None), str(self.path is None))

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path (query string included) is admitted."""
        return ((self.method is None or re.fullmatch(self.method, method) is not None)
                and (self.path is None or re.fullmatch(self.path, path) is not None))


class AllowRule(Frozen):
    """Source workloads -> destination workloads on protocol/ports, with a mandatory justification.

    ``http`` (TCP only) narrows the rule to HTTP requests matching one of its entries; empty means any
    traffic on the ports. See :mod:`microseg.ir.semantics` for how L7 constraints combine.
    """

    id: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocol: Protocol
    ports: tuple[PortRange, ...]
    justification: Justification
    http: tuple[HttpMatch, ...] = ()

    @field_validator("ports", mode="before")
    @classmethod
    def _parse_ports(cls, v: object) -> object:
        if isinstance(v, (list, tuple)):
            return tuple(PortRange.parse(p) if isinstance(p, (str, int)) else p for p in v)
        return v

    @field_validator("http")
    @classmethod
    def _canonical_http(cls, v: tuple[HttpMatch, ...]) -> tuple[HttpMatch, ...]:
        return tuple(sorted(set(v), key=HttpMatch.sort_key))

    @model_validator(mode="after")
    def _http_needs_tcp(self) -> AllowRule:
        if self.http and self.protocol != Protocol.TCP:
            raise ValueError(f"rule {self.id}: HTTP matches need protocol TCP, not {self.protocol.value}")
        return self

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
