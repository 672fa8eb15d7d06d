"""Istio ``AuthorizationPolicy`` and ``PeerAuthentication`` (``security.istio.io/v1``) back end.

Istio enforces at the destination: an AuthorizationPolicy is evaluated by the proxy in front of the
server (sidecar or waypoint), for the connections it receives. So this target governs exactly the
*inbound TCP traffic of Kubernetes workloads in the mesh*: the namespaces of Kubernetes workloads in
the policy minus ``settings.excluded_namespaces``. Everything else is skipped, and the README says so.

What is generated, per mesh namespace, in ``<namespace>.yaml`` (multi-document):

* ``microseg-mtls``, a namespace-wide PeerAuthentication with ``mtls.mode: STRICT``: "Connection is
  an mTLS tunnel (TLS with client cert must be presented)" (PeerAuthentication reference,
  https://istio.io/latest/docs/reference/config/security/peer_authentication/). Principals are
  "derived from the peer certificate" and need mTLS (AuthorizationPolicy reference, ``Source``), so
  STRICT is what makes a principal trustworthy.
* ``microseg-allow-nothing``: ``spec: {}``, an ALLOW policy with no rules in the namespace. "If not
  set, the match will never occur. This is equivalent to setting a default of deny for the target
  workloads if the action is ALLOW", and once a workload has an ALLOW policy, a request is allowed only
  if some ALLOW policy matches it (evaluation order in
  https://istio.io/latest/docs/reference/config/security/authorization-policy/). This is the default
  deny of every pod of the namespace, including pods the policy does not know.
* ``microseg-<workload>`` (AuthorizationPolicy) per mesh workload with at least one allowed source:
  ``selector.matchLabels`` = the workload's selector, ``action: ALLOW``, one Istio rule per allow rule
  (sorted by rule id). Its ``from`` lists one ``source`` with the ``principals`` of the rule's
  Kubernetes sources, plus one ``source`` per source without mesh identity (``ipBlocks``, and
  ``notIpBlocks`` for its ``except_addresses``: fields of one ``source`` are ANDed, ``from`` entries
  ORed). Its ``to.operation.ports`` are the rule's ports; ``to`` is left out only when the rule allows
  every TCP port.
* ``microseg-<workload>`` (PeerAuthentication, same name) per mesh workload that a source without
  mesh identity may reach: ``mtls: STRICT`` with ``portLevelMtls: {<port>: PERMISSIVE}`` on exactly the
  ports such a source is allowed on (``mtls: PERMISSIVE`` when it is allowed every port). "The port
  refers to the port of the workload, not the port of the Kubernetes service", which is the server
  port microseg's rules carry. A plaintext connection has no principal, so it can only match an
  ``ipBlocks`` source: accepting plaintext there widens nothing.

Principals. ``<trust-domain>/ns/<namespace>/sa/<service-account>`` (the format documented for
``Source.principals``): the workload's SPIFFE ID without ``spiffe://`` when it has one, else
``cluster.local`` (Istio's default trust domain) and its namespace and service account. A Kubernetes
source with neither, an identity in another format, or an identity that disagrees with the workload's
namespace or service account raises ``UnsupportedFeature``. A principal stands for a *service
account*, not a workload: if another workload of the policy runs under the same one (a workload
without a service account runs under ``default``) and is not allowed the same ports to the same
destination by the policy, the rule would widen, so it raises ``UnsupportedFeature``. Every string
field of an Istio rule supports prefix/suffix ``*`` matching ("Any string field in the rule supports
Exact, Prefix, Suffix and Presence match"), so principals are validated against a strict pattern
that admits no ``*``.

Sources without mesh identity (hosts, managed services, external peers) become ``ipBlocks``, not
``remoteIpBlocks``: ``ipBlocks`` is "populated from the source address of the IP packet", the direct
peer, which is right east-west; ``remoteIpBlocks`` comes from X-Forwarded-For or the PROXY protocol and
is only meaningful at a gateway configured with ``numTrustedProxies``. Behind a load balancer, a NAT
or a gateway the direct peer is not the client: such traffic matches only if the intermediary's
address is in the block (narrower, never wider).

Never wider, so these raise ``UnsupportedFeature``: a rule that is not TCP with a mesh destination
("Non-TCP based protocols, such as UDP, are not proxied",
https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/: Istio can
neither allow nor deny them); a port range wider than 64 ports (``ports`` are exact strings, so a
range is expanded, and only up to that bound); the principal problems above; a destination with an
empty selector or a selector that also matches another workload's pods; a selector label with ``*`` or
an empty key (rejected by the CRD's validation rules); a CIDR with host bits set; a namespace that is
not a DNS-1123 label. Rules without a mesh destination are skipped (another target's business), and
so are rules whose only ports are port 0. ``from``, ``to`` and ``ports`` are never emitted empty: in
Istio an empty or absent field means "any".

Layer 7 (HTTP). A rule with ``http`` matches becomes one ``to`` entry per match (``to`` entries are ORed,
the fields of one ``operation`` ANDed): ``ports`` as above, ``methods`` and ``paths``. Istio matches
strings exactly, by prefix (``abc*``) or suffix (``*abc``), and compares ``paths`` with the query string
removed and after normalising the path ("Authorization Policy Normalization",
https://istio.io/latest/docs/reference/config/security/normalization/), while the IR's patterns are
regular expressions over the whole method and the whole path with its query string. So only these
patterns are translated, each to an equivalent Istio match: a method ``GET`` or ``GET|HEAD`` (also in
parentheses) to ``methods``; a path ``/x(\\?.*)?`` (the path ``/x`` with or without a query string) to the
exact path ``/x``; ``/x/.*`` to the prefix ``/x/*``; ``.*`` to no constraint on that field. Any other
pattern (a plain ``/x`` would also admit ``/x?...`` in Istio, which the IR does not) raises
``UnsupportedFeature``, as does a literal containing ``*``, ``?``, ``#``, ``{`` or ``}`` or not starting with
``/``. A match that leaves neither methods nor paths gets ``paths: ["*"]`` (presence: every HTTP request)
so that it still requires HTTP. HTTP fields apply to traffic Istio handles as HTTP; an ALLOW rule with
HTTP fields does not match plain TCP traffic (https://istio.io/latest/docs/tasks/security/authorization/
authz-tcp/), which is narrower, never wider. A principal shared with another workload must be allowed
the same requests there (see below), or the rule raises ``UnsupportedFeature``.

Egress. AuthorizationPolicy does not control egress: it is enforced at the destination, so a rule from
a mesh workload to a host or the internet is not enforced by this target (the README lists such rules).
A ``Sidecar`` with ``outboundTrafficPolicy: REGISTRY_ONLY`` is *not* emitted: it would block every
allowed external destination that has no ServiceEntry (narrowing the policy), and it is no security
boundary: "Istio cannot securely enforce that all egress traffic actually flows through the egress
gateways" (additional security considerations of the egress gateway task,
https://istio.io/latest/docs/tasks/traffic-management/egress/egress-gateway/). Enforce egress with the
Kubernetes NetworkPolicy target (or an egress gateway plus NetworkPolicy).

Observe mode. The very same AuthorizationPolicies (``microseg-allow-nothing`` included) carry the
annotation ``istio.io/dry-run: "true"``: the proxy evaluates them without enforcing and reports the
shadow result in its ``rbac`` debug log, in the ``authz_dry_run_result`` metric label and in tracing
tags (https://istio.io/latest/docs/tasks/security/authorization/authz-dry-run/). Dry-run supports only
ALLOW and DENY policies, which is all this target emits; its results are "for manual troubleshooting
purposes and should not be used as an API". The PeerAuthentications keep their names but get
``mode: UNSET`` ("Inherit from parent, if has one. Otherwise treated as PERMISSIVE") and no port-level
settings: observe mode neither rejects plaintext that is accepted today nor relaxes a mesh-wide STRICT.
What is observed: which connections the ALLOW policies would deny. What is not: the mTLS requirement
(plaintext clients are reported as shadow-denied, since they carry no principal, but are not
rejected), and everything this target never governs (non-TCP, egress, namespaces outside the mesh).
Applying the enforce output replaces every object in place (same names).

Names are DNS-1123 labels of at most 63 characters; a workload name that had to be changed gets an
8-hex-digit hash of the full name. Everything is emitted through the YAML dumper, never through string
templates, so a hostile name, label or justification cannot add a key, a document or a source.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from microseg.backends.base import Mode, check_mode, reject_names_only
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.intervals import network_text
from microseg.ir.model import (
    AllowRule,
    HttpMatch,
    JustificationKind,
    Policy,
    PortRange,
    Protocol,
    Workload,
    WorkloadKind,
)
from microseg.ir.semantics import Evaluator, merge_ranges

TARGET = "istio"
API_VERSION = "security.istio.io/v1"
DRY_RUN_ANNOTATION = "istio.io/dry-run"
MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
ANNOTATION_PREFIX = "microseg.io/"
ALLOW_NOTHING_NAME = "microseg-allow-nothing"
MTLS_NAME = "microseg-mtls"
DEFAULT_TRUST_DOMAIN = "cluster.local"  # Istio's default trust domain
MAX_RANGE_PORTS = 64

_PREFIX = "microseg-"
_RESERVED = frozenset({ALLOW_NOTHING_NAME, MTLS_NAME})
_MAX_NAME = 63
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
# <trust-domain>/ns/<namespace>/sa/<service-account>: SPIFFE trust domains are lower-case letters,
# digits, dots, dashes and underscores; namespaces are DNS-1123 labels, service accounts DNS-1123
# subdomains. Nothing here can be a `*` wildcard.
_PRINCIPAL = re.compile(rf"(?P<td>[a-z0-9._-]+)/ns/(?P<ns>{_LABEL})/sa/(?P<sa>{_LABEL}(?:\.{_LABEL})*)")
_SPIFFE = "spiffe://"
_FILE_HEADER = "# Generated by microseg from the policy: edit the policy, not this file.\n"

_README_ENFORCE = (
    "Mode: **enforce**. Each namespace file starts with `microseg-mtls` (PeerAuthentication, mTLS STRICT) and "
    "`microseg-allow-nothing` (AuthorizationPolicy `spec: {}`, the default deny of every pod of the namespace); "
    "the other AuthorizationPolicies allow exactly the rules whose destination is in the mesh.")
_README_OBSERVE = (
    "Mode: **observe**. The same AuthorizationPolicies as in enforce mode, each annotated `istio.io/dry-run: "
    "\"true\"`: the proxies evaluate them without enforcing and report the shadow result (rbac debug log, "
    "`authz_dry_run_result` metric label, tracing tags). The PeerAuthentications are `mode: UNSET` (inherit: "
    "nothing that is accepted today is rejected, and a mesh-wide STRICT is not relaxed). Plaintext clients are "
    "shadow-denied (they have no principal) but not rejected. Applying the enforce output replaces every object "
    "in place.")
_README_CAVEATS = (
    "- Istio governs only inbound TCP of workloads with a proxy: UDP and other non-TCP protocols are not proxied "
    "and stay open as far as Istio is concerned. Layer a NetworkPolicy for them (target `kubernetes`).",
    "- AuthorizationPolicy does not control egress. Rules listed under \"Not enforced by Istio\" need another "
    "target (Kubernetes NetworkPolicy, or an egress gateway together with NetworkPolicy); a `Sidecar` with "
    "`REGISTRY_ONLY` is not emitted because it is no security boundary and would block allowed destinations "
    "that have no ServiceEntry.",
    "- `ipBlocks` match the direct peer (\"the source address of the IP packet\"). Behind a load balancer, NAT or "
    "gateway that is not the client, and such traffic is denied unless the intermediary's address is allowed. "
    "Keep external CIDRs clear of the pod range: a pod whose IP falls in a block matches it whatever its "
    "principal.",
    "- Principals need mTLS: a source without a sidecar (for example in a namespace outside the mesh) has no "
    "principal and is denied.",
    "- Only one namespace-wide PeerAuthentication should exist per namespace: remove or merge any existing one "
    "into `microseg-mtls`.",
    "- Written for the sidecar data plane. In ambient mode ztunnel enforces the same L4 fields (principals, "
    "ipBlocks, ports); check the dry-run annotation and port-level mTLS against your Istio version there.",
    "- The `microseg.io/justification` annotation of each policy says, per rule, why it exists.",
)

Doc = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Entry:
    """One Istio rule: the compiled form of one allow rule at one mesh destination."""

    rule: AllowRule
    sources: tuple[Doc, ...]  # the `from` list
    ports: tuple[int, ...] | None  # None: every TCP port
    plaintext: bool  # some source has no mesh identity: it needs the ports to accept plaintext
    http: tuple[Doc, ...] = ()  # per HTTP match, its `methods`/`paths`; empty: any traffic on the ports

    def doc(self) -> Doc:
        out: Doc = {"from": list(self.sources)}
        ports = {} if self.ports is None else {"ports": [str(p) for p in self.ports]}
        if self.http:
            out["to"] = [{"operation": {**ports, **fields}} for fields in self.http]
        elif ports:
            out["to"] = [{"operation": ports}]
        return out


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class IstioBackend:
    """Compiles a policy to Istio security policies; see the module docstring for the exact mapping."""

    name = TARGET
    # "audit-log": dry-run logs the connections the policies would deny (observe mode).
    # "l7": HTTP methods and paths (exact or prefix) in `to.operation`, see the module docstring.
    capabilities = frozenset({"l4", "tcp", "ingress", "ipblock", "ipblock-except", "cross-namespace", "identity",
                              "observe-mode", "audit-log", "l7"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = IstioBackend()


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.workloads = policy.workload_map()
        self.excluded = frozenset(policy.settings.excluded_namespaces)
        self.namespace: dict[str, str] = {}
        for w in sorted(policy.workloads, key=lambda w: w.name):
            if w.kind == WorkloadKind.KUBERNETES:
                self.namespace[w.name] = _namespace_of(w)
        self.scope = sorted({ns for ns in self.namespace.values() if ns not in self.excluded})
        self.entries: dict[str, list[_Entry]] = {}
        self.not_enforced: list[AllowRule] = []  # rules with a mesh source but no mesh destination
        self.evaluator = Evaluator(policy)

    def in_mesh(self, w: Workload) -> bool:
        return w.kind == WorkloadKind.KUBERNETES and self.namespace[w.name] not in self.excluded

    def resolve(self, rule: AllowRule, names: Iterable[str]) -> list[Workload]:
        out = []
        for n in sorted(set(names)):
            w = self.workloads.get(n)
            if w is None:  # fail closed: an unresolvable name never compiles to something
                raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
            out.append(w)
        return out

    # -- rules -> entries ----------------------------------------------------------------------------

    def add_rule(self, rule: AllowRule) -> None:
        sources = self.resolve(rule, rule.sources)
        destinations = [d for d in self.resolve(rule, rule.destinations) if self.in_mesh(d)]
        if not destinations:
            if any(self.in_mesh(s) for s in sources):
                self.not_enforced.append(rule)
            return  # enforced at the destination, and the destination is not in the mesh
        if rule.protocol != Protocol.TCP:
            raise UnsupportedFeature(TARGET, f"{rule.protocol.value} to a mesh workload (Istio proxies TCP only; "
                                     "non-TCP traffic is neither allowed nor denied by it)", rule.id)
        ports = _ports(rule)
        if ports == ():
            return  # only port 0: the rule allows nothing Istio could name
        principals = sorted({self.principal(s, rule.id) for s in sources if s.kind == WorkloadKind.KUBERNETES})
        docs: list[Doc] = [{"source": {"principals": principals}}] if principals else []
        ip_docs = {_canon(d): d for s in sources if s.kind != WorkloadKind.KUBERNETES
                   for d in _ip_source(s, rule.id)}
        docs += [ip_docs[k] for k in sorted(ip_docs)]
        if not docs:
            return  # every source address excepted: an empty `from` would mean any source
        entry = _Entry(rule, tuple(docs), ports, bool(ip_docs), _http_operations(rule))
        for d in destinations:
            _selector(d, rule.id)
            self.check_shared_principals(entry, sources, d)
            self.entries.setdefault(d.name, []).append(entry)

    def principal(self, w: Workload, rule_id: str) -> str:
        ns = self.namespace[w.name]
        from_identity = w.identity[len(_SPIFFE):] if w.identity and w.identity.startswith(_SPIFFE) else None
        from_account = f"{DEFAULT_TRUST_DOMAIN}/ns/{ns}/sa/{w.service_account}" if w.service_account else None
        principal = from_identity or from_account
        if principal is None:
            raise UnsupportedFeature(TARGET, f"source {w.name!r} without a mesh identity (neither a SPIFFE ID nor a "
                                     "service account)", rule_id)
        m = _PRINCIPAL.fullmatch(principal)
        if m is None:
            raise UnsupportedFeature(TARGET, f"identity {principal!r} of {w.name!r} (not an Istio principal "
                                     "<trust-domain>/ns/<namespace>/sa/<service-account>)", rule_id)
        if m["ns"] != ns or (w.service_account is not None and m["sa"] != w.service_account):
            raise UnsupportedFeature(TARGET, f"identity {w.identity!r} of {w.name!r}, which disagrees with its "
                                     f"namespace {ns!r} or service account {w.service_account!r}", rule_id)
        return principal

    def check_shared_principals(self, entry: _Entry, sources: Sequence[Workload], destination: Workload) -> None:
        """Every workload that presents one of the entry's principals must be allowed what the entry allows."""
        named = {s.name for s in sources}
        principals = {p for doc in entry.sources for p in doc["source"].get("principals", ())}
        for w in self.policy.workloads:
            if w.kind != WorkloadKind.KUBERNETES or w.name in named or not self.may_present(w, principals):
                continue
            conns = self.evaluator.pair(w.name, destination.name)
            allowed = merge_ranges(r for p, rs in conns.ports if p == Protocol.TCP for r in rs)
            wanted = [PortRange(start=1, end=65535)] if entry.ports is None else [PortRange(start=p, end=p)
                                                                                  for p in entry.ports]
            if not conns.everything and not all(any(a.start <= r.start and r.end <= a.end for a in allowed)
                                                for r in wanted):
                raise UnsupportedFeature(
                    TARGET, f"principals {sorted(principals)} for {destination.name!r}: workload {w.name!r} runs "
                    "under the same service account but is not allowed the same ports (give each workload its own "
                    "service account)", entry.rule.id)
            if entry.rule.http and not self.admits_requests(w, destination, entry.rule.http, wanted):
                raise UnsupportedFeature(
                    TARGET, f"principals {sorted(principals)} for {destination.name!r}: workload {w.name!r} runs "
                    "under the same service account but is not allowed the same HTTP requests (give each workload "
                    "its own service account)", entry.rule.id)

    def admits_requests(self, w: Workload, destination: Workload, http: Sequence[HttpMatch],
                        wanted: Sequence[PortRange]) -> bool:
        """Whether ``w`` may send every request ``http`` admits on every port of ``wanted``."""
        # The L7 constraint of a pair only changes where some rule's port range starts or ends, so those
        # points (and the start of each wanted range) are enough to check.
        points = {r.start for r in wanted}
        for rule in self.policy.all_rules():
            if rule.protocol == Protocol.TCP and w.name in rule.sources and destination.name in rule.destinations:
                points.update(p for r in rule.ports for p in (r.start, r.end + 1))
        for port in sorted(p for p in points if any(r.contains(p) for r in wanted)):
            d = self.evaluator.decide(w.name, destination.name, Protocol.TCP, port)
            if not d.allowed or (d.http is not None and not set(http) <= set(d.http)):
                return False
        return True

    def may_present(self, w: Workload, principals: set[str]) -> bool:
        ns = self.namespace[w.name]
        if w.identity and w.identity.startswith(_SPIFFE):
            return w.identity[len(_SPIFFE):] in principals
        account = w.service_account or "default"  # a pod without serviceAccountName runs as `default`
        suffix = f"/ns/{ns}/sa/{account}"
        if w.service_account:
            return f"{DEFAULT_TRUST_DOMAIN}{suffix}" in principals
        return any(p.endswith(suffix) for p in principals)  # unknown account: assume the default one

    # -- entries -> documents ------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        for ns in sorted(set(self.namespace.values())):
            _check_namespace(ns)
        for rule in sorted(self.policy.all_rules(), key=lambda r: (r.id, _canon(r.model_dump(mode="json")))):
            self.add_rule(rule)
        self.check_selectors_are_unambiguous()
        docs: dict[str, list[Doc]] = {ns: [] for ns in self.scope}
        names: dict[tuple[str, str], str] = {}
        for wname in sorted(self.entries):
            w = self.workloads[wname]
            ns = self.namespace[wname]
            entries = sorted(self.entries[wname], key=lambda e: (e.rule.id, _canon(e.doc())))
            obj_name = _object_name(w, ns)
            if (ns, obj_name) in names:
                raise MicrosegError(f"workloads {names[ns, obj_name]!r} and {wname!r} both compile to {ns}/{obj_name}")
            names[ns, obj_name] = wname
            docs[ns].append(self.authorization_policy(w, obj_name, entries))
            plaintext = [e for e in entries if e.plaintext]
            if plaintext:
                docs[ns].append(self.workload_mtls(w, obj_name, plaintext))
        files = {}
        for ns in self.scope:
            ordered = [self.namespace_mtls(ns), self.allow_nothing(ns)]
            ordered += sorted(docs[ns], key=lambda d: (str(d["metadata"]["name"]), str(d["kind"])))
            files[f"{ns}.yaml"] = _FILE_HEADER + _dump(ordered)
        files["README.md"] = self.readme()
        return files

    def metadata(self, name: str, ns: str, annotations: dict[str, str], *, dry_run: bool) -> Doc:
        notes = {ANNOTATION_PREFIX + "mode": self.mode, **annotations}
        if dry_run and self.mode == "observe":
            notes[DRY_RUN_ANNOTATION] = "true"
        return {"name": name, "namespace": ns, "labels": dict(MANAGED_BY), "annotations": dict(sorted(notes.items()))}

    def namespace_mtls(self, ns: str) -> Doc:
        if self.mode == "enforce":
            purpose = "mTLS required for every workload of the namespace, so that principals are authenticated"
        else:
            purpose = "observe mode: mTLS mode inherited, replaced by STRICT when enforcing"
        return {"apiVersion": API_VERSION, "kind": "PeerAuthentication",
                "metadata": self.metadata(MTLS_NAME, ns, {ANNOTATION_PREFIX + "purpose": purpose}, dry_run=False),
                "spec": {"mtls": {"mode": "STRICT" if self.mode == "enforce" else "UNSET"}}}

    def allow_nothing(self, ns: str) -> Doc:
        purpose = "default deny: an ALLOW policy without rules for every workload of the namespace"
        return {"apiVersion": API_VERSION, "kind": "AuthorizationPolicy",
                "metadata": self.metadata(ALLOW_NOTHING_NAME, ns, {ANNOTATION_PREFIX + "purpose": purpose},
                                          dry_run=True),
                "spec": {}}

    def authorization_policy(self, w: Workload, name: str, entries: Sequence[_Entry]) -> Doc:
        rule_ids = list(dict.fromkeys(e.rule.id for e in entries))
        why = {e.rule.id: f"{e.rule.id} [{e.rule.justification.kind.value}] {e.rule.justification.text}"
               for e in entries}
        notes = {ANNOTATION_PREFIX + "workload": w.name, ANNOTATION_PREFIX + "rules": ",".join(rule_ids),
                 ANNOTATION_PREFIX + "justification": "\n".join(why[r] for r in rule_ids)}
        return {"apiVersion": API_VERSION, "kind": "AuthorizationPolicy",
                "metadata": self.metadata(name, self.namespace[w.name], notes, dry_run=True),
                "spec": {"selector": {"matchLabels": _selector(w, rule_ids[0])}, "action": "ALLOW",
                         "rules": [e.doc() for e in entries]}}

    def workload_mtls(self, w: Workload, name: str, entries: Sequence[_Entry]) -> Doc:
        rule_ids = sorted({e.rule.id for e in entries})
        purpose = ("plaintext accepted only where a peer without mesh identity is allowed (its rules match by "
                   "ipBlocks)")
        if self.mode == "observe":
            purpose = "observe mode: mTLS mode inherited; when enforcing, " + purpose
        notes = {ANNOTATION_PREFIX + "workload": w.name, ANNOTATION_PREFIX + "rules": ",".join(rule_ids),
                 ANNOTATION_PREFIX + "purpose": purpose}
        spec: Doc = {"selector": {"matchLabels": _selector(w, rule_ids[0])}}
        if self.mode == "observe":
            spec["mtls"] = {"mode": "UNSET"}
        elif any(e.ports is None for e in entries):
            spec["mtls"] = {"mode": "PERMISSIVE"}
        else:
            spec["mtls"] = {"mode": "STRICT"}
            ports = sorted({p for e in entries for p in e.ports or ()})
            spec["portLevelMtls"] = {str(p): {"mode": "PERMISSIVE"} for p in ports}
        return {"apiVersion": API_VERSION, "kind": "PeerAuthentication",
                "metadata": self.metadata(name, self.namespace[w.name], notes, dry_run=False), "spec": spec}

    def check_selectors_are_unambiguous(self) -> None:
        # A policy selects pods by labels, not by owner: if the selector of X also matches the labels
        # of Y's pods, every allowance of X silently applies to Y as well.
        by_ns: dict[str, list[Workload]] = {}
        for name in sorted(self.namespace):
            by_ns.setdefault(self.namespace[name], []).append(self.workloads[name])
        for name in sorted(self.entries):
            x = self.workloads[name]
            sel = set(x.selector)
            for y in by_ns[self.namespace[name]]:
                pod_labels = set(y.labels) | set(y.selector)
                if y.name != x.name and pod_labels and sel <= pod_labels:
                    raise UnsupportedFeature(
                        TARGET, f"selector {dict(x.selector)} of workload {x.name!r}, which also matches the pods "
                        f"of {y.name!r} (give each workload a selector that identifies only its own pods)")

    # -- README ---------------------------------------------------------------------------------------

    def readme(self) -> str:
        l7 = [r for r in self.compiled_rules() if r.http]
        lines = ["# Istio security policies generated by microseg", "",
                 _README_ENFORCE if self.mode == "enforce" else _README_OBSERVE, "",
                 "| namespace | file | workloads with an ALLOW policy | workloads accepting plaintext on some ports |",
                 "| --- | --- | --- | --- |"]
        for ns in self.scope:
            mine = [n for n in self.entries if self.namespace[n] == ns]
            plain = [n for n in mine if any(e.plaintext for e in self.entries[n])]
            lines.append(f"| {_md(ns)} | {_md(ns)}.yaml | {len(mine)} | {len(plain)} |")
        lines += ["", "## Peers without mesh identity", ""]
        plain_rows = [(n, e) for n in sorted(self.entries) for e in self.entries[n] if e.plaintext]
        if plain_rows:
            lines += ["Matched by `ipBlocks`; their ports accept plaintext (PeerAuthentication port-level PERMISSIVE) "
                      "in enforce mode.", "", "| destination | rule | ports |", "| --- | --- | --- |"]
            lines += [f"| {_md(n)} | {_md(e.rule.id)} | {_port_text(e.ports)} |" for n, e in plain_rows]
        else:
            lines.append("None.")
        lines += ["", "## Not enforced by Istio", "",
                  "Rules from mesh workloads to destinations outside the mesh (egress): enforce them with another "
                  "target.", ""]
        lines += _rule_table(sorted(self.not_enforced, key=lambda r: r.id)) if self.not_enforced else ["None."]
        compiled = self.compiled_rules()
        lines += ["", "## Infrastructure allowances", ""]
        infra = [r for r in compiled if r.justification.kind == JustificationKind.INFRASTRUCTURE]
        lines += _rule_table(infra) if infra else ["None."]
        lines += ["", "## Approved exceptions", ""]
        ids = {r.id for r in compiled}
        exc = sorted((e for e in self.policy.exceptions if e.rule.id in ids), key=lambda e: e.rule.id)
        if exc:
            lines += ["| rule | guardrail | approver | expires | reason |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {_md(e.rule.id)} | {_md(e.guardrail)} | {_md(e.approver)} | "
                      f"{e.expires.isoformat()} | {_md(e.reason)} |" for e in exc]
        else:
            lines.append("None.")
        if l7:
            lines += ["", "## Layer 7 (HTTP) rules", "",
                      "Compiled to `to.operation.methods`/`paths` (exact or prefix; Istio compares paths without the "
                      "query string, after normalising them). They apply to traffic Istio handles as HTTP (name the "
                      "port `http-...` or set `appProtocol`); over plain TCP these rules match nothing.", "",
                      "| rule | method | path |", "| --- | --- | --- |"]
            lines += [f"| {_md(r.id)} | {_md(m.method or 'any')} | {_md(m.path or 'any')} |"
                      for r in l7 for m in sorted(set(r.http), key=HttpMatch.sort_key)]
        lines += ["", "## Caveats", "", *_README_CAVEATS, ""]
        return "\n".join(lines)

    def compiled_rules(self) -> list[AllowRule]:
        seen = {e.rule.id: e.rule for entries in self.entries.values() for e in entries}
        return [seen[k] for k in sorted(seen)]


# -- helpers ------------------------------------------------------------------------------------------


def _namespace_of(w: Workload) -> str:
    if w.namespace:
        return w.namespace
    if "/" in w.name:
        return w.name.split("/", 1)[0]
    raise UnsupportedFeature(TARGET, f"Kubernetes workload {w.name!r} without a namespace")


def _check_namespace(ns: str) -> None:
    # Namespace names are DNS-1123 labels; it is also a file name here, so never "/" or "..".
    if len(ns) > _MAX_NAME or not _DNS1123_LABEL.fullmatch(ns):
        raise UnsupportedFeature(TARGET, f"namespace name {ns!r} (not a DNS-1123 label)")


def _selector(w: Workload, rule_id: str | None) -> dict[str, str]:
    if not w.selector:
        raise UnsupportedFeature(TARGET, f"workload {w.name!r} with an empty selector (a policy without selector "
                                 "applies to every workload of its namespace)", rule_id)
    for key, value in w.selector:
        # The CRD's validation rules: "wildcard not allowed in label key/value match", "key must not be empty".
        if not key or "*" in key or "*" in value:
            raise UnsupportedFeature(TARGET, f"selector label {key!r}={value!r} of {w.name!r} (Istio rejects empty "
                                     "keys and wildcards in workload selectors)", rule_id)
    return dict(sorted(w.selector))


def _ports(rule: AllowRule) -> tuple[int, ...] | None:
    """The rule's TCP ports as Istio's exact port list; None for every port, () for none."""
    ranges = [(max(r.start, 1), r.end) for r in merge_ranges(rule.ports) if r.end >= 1]  # port 0 is no port
    if ranges == [(1, 65535)]:
        return None
    out: list[int] = []
    for start, end in ranges:
        if end - start + 1 > MAX_RANGE_PORTS:
            raise UnsupportedFeature(TARGET, f"port range {start}-{end} (Istio matches exact ports; microseg "
                                     f"expands ranges of at most {MAX_RANGE_PORTS} ports)", rule.id)
        out.extend(range(start, end + 1))
    return tuple(out)


# A regex that stands for one literal string: ordinary characters and backslash-escaped punctuation.
_LITERAL = r"(?:[^.\[\]()*+?{}|^$\\]|\\[^A-Za-z0-9])+"
_METHOD = re.compile(r"[A-Z][A-Z_-]*")


def _literal(regex: str) -> str:
    return re.sub(r"\\(.)", r"\1", regex)


def _istio_methods(pattern: str | None, rule_id: str) -> list[str] | None:
    """Istio ``methods`` equal to the IR's method pattern; None for any method."""
    if pattern is None or pattern == ".*":
        return None
    body = pattern[1:-1] if pattern.startswith("(") and pattern.endswith(")") else pattern
    methods = body.split("|")
    if not all(_METHOD.fullmatch(m) for m in methods):
        raise UnsupportedFeature(TARGET, f"HTTP method pattern {pattern!r} (Istio matches listed methods: write "
                                 "GET or GET|HEAD)", rule_id)
    return sorted(set(methods))


def _istio_paths(pattern: str | None, rule_id: str) -> list[str] | None:
    """Istio ``paths`` equal to the IR's path pattern; None for any path."""
    if pattern is None or pattern == ".*":
        return None
    exact = re.fullmatch(rf"({_LITERAL})\(\\\?\.\*\)\?", pattern)
    prefix = re.fullmatch(rf"({_LITERAL})\.\*", pattern)
    found = exact or prefix
    text = _literal(found.group(1)) if found else ""
    if not found or not text.startswith("/") or any(c in text for c in "*?#{}"):
        raise UnsupportedFeature(TARGET, f"HTTP path pattern {pattern!r} (Istio matches a path exactly or by "
                                 "prefix, without its query string: write /x(\\?.*)? for the path /x with any "
                                 "query string, /x/.* for a prefix)", rule_id)
    return [text] if exact else [text + "*"]


def _http_operations(rule: AllowRule) -> tuple[Doc, ...]:
    """Per HTTP match of the rule, the `methods`/`paths` of one Istio operation (sorted, deduplicated)."""
    out: dict[str, Doc] = {}
    for m in rule.http:
        fields: Doc = {}
        methods, paths = _istio_methods(m.method, rule.id), _istio_paths(m.path, rule.id)
        if methods is not None:
            fields["methods"] = methods
        if paths is not None:
            fields["paths"] = paths
        if not fields:
            fields["paths"] = ["*"]  # presence: any HTTP request, still HTTP only (never plain TCP)
        out[_canon(fields)] = fields
    return tuple(out[k] for k in sorted(out))


def _network(address: str, w: Workload, rule_id: str) -> Net:
    try:
        return ipaddress.ip_network(address, strict=True)
    except ValueError:
        raise UnsupportedFeature(TARGET, f"address {address!r} of {w.name!r} (host bits set: write the host as "
                                 "/32 or /128, or the network address of the subnet)", rule_id) from None


def _net_key(n: Net) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def _within(inner: Net, outer: Net) -> bool:
    """``inner`` is ``outer`` or a subnet of it (two CIDRs are either nested or disjoint)."""
    return (inner.version == outer.version and inner.prefixlen >= outer.prefixlen
            and int(inner.network_address) >> (inner.max_prefixlen - outer.prefixlen)
            == int(outer.network_address) >> (outer.max_prefixlen - outer.prefixlen))


def _ip_source(w: Workload, rule_id: str) -> list[Doc]:
    """One ``source`` for a peer without mesh identity: its CIDRs, minus its exceptions; [] if none remain."""
    reject_names_only(TARGET, w, rule_id)
    if not w.addresses:
        raise UnsupportedFeature(TARGET, f"peer {w.name!r} without addresses (and without mesh identity)", rule_id)
    excepts = {_network(a, w, rule_id) for a in w.except_addresses}
    blocks = sorted({n for n in (_network(a, w, rule_id) for a in w.addresses)
                     if not any(_within(n, e) for e in excepts)}, key=_net_key)
    if not blocks:
        return []
    # Exceptions that overlap no block change nothing; leave them out.
    relevant = sorted((e for e in excepts if any(_within(e, b) or _within(b, e) for b in blocks)), key=_net_key)
    source: Doc = {"ipBlocks": [network_text(b) for b in blocks]}
    if relevant:
        source["notIpBlocks"] = [network_text(e) for e in relevant]
    return [{"source": source}]


def _object_name(w: Workload, ns: str) -> str:
    short = w.name[len(ns) + 1:] if w.name.startswith(ns + "/") else w.name
    room = _MAX_NAME - len(_PREFIX)
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", short.lower())).strip("-")
    if clean == short and len(clean) <= room and _PREFIX + clean not in _RESERVED:
        return _PREFIX + clean
    digest = hashlib.sha256(w.name.encode("utf-8")).hexdigest()[:8]
    clean = clean[:room - len(digest) - 1].strip("-")
    return _PREFIX + (f"{clean}-{digest}" if clean else digest)


def _port_text(ports: tuple[int, ...] | None) -> str:
    if ports is None:
        return "every TCP port"
    return ",".join(str(r) for r in merge_ranges(PortRange(start=p, end=p) for p in ports))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (justifications) as literal blocks, and no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a source shared by several rules is written out each time, never as &id001/*id001


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Only a style request: the emitter falls back to a quoted scalar when a literal block could not
    # carry the string exactly (trailing spaces, control characters, ...).
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def _dump(docs: Sequence[Doc]) -> str:
    # allow_unicode=False: every non-ASCII or control character is escaped, so what a reviewer reads
    # is what the API server gets.
    return yaml.dump_all(docs, Dumper=_Dumper, explicit_start=True, sort_keys=False, default_flow_style=False,
                         allow_unicode=False, width=1 << 20)


def _md(text: str) -> str:
    """Escape free text for a Markdown table cell: no HTML, no links, no new rows."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)


def _rule_table(rules: Sequence[AllowRule]) -> list[str]:
    lines = ["| rule | from | to | protocol | ports | justification |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        ports = ",".join(str(p) for p in merge_ranges(r.ports))
        lines.append(f"| {_md(r.id)} | {_md(', '.join(sorted(r.sources)))} | {_md(', '.join(sorted(r.destinations)))}"
                     f" | {r.protocol.value} | {ports} | {_md(r.justification.text)} |")
    return lines
