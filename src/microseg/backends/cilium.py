"""Cilium (``cilium.io/v2``) back end: CiliumNetworkPolicy per workload, a clusterwide default deny.

What is generated:

* ``<namespace>.yaml``: per enforced Kubernetes workload with at least one allowed peer, a
  ``CiliumNetworkPolicy`` ``microseg-<workload>`` whose ``endpointSelector`` matches the workload's
  labels (``workload.selector``) and, when the workload has a service account, the label
  ``io.cilium.k8s.policy.serviceaccount`` that Cilium derives from the pod's service account (the AND
  can only narrow). One ``ingress`` entry per (allow rule, peer) at the destination, one ``egress`` entry
  at the source: both sides of every rule are compiled.
* ``clusterwide.yaml``: the ``CiliumClusterwideNetworkPolicy`` ``microseg-default-deny``, selecting every
  endpoint whose ``k8s:io.kubernetes.pod.namespace`` is in scope, with ``ingress: [{}]`` and
  ``egress: [{}]``. In Cilium an empty rule allows nothing, unlike ``ingress: [{}]`` in a Kubernetes
  NetworkPolicy; the policy only puts the endpoints into default deny in both directions ("Ingress/Egress
  Default Deny", https://docs.cilium.io/en/stable/security/policy/language/), made explicit with
  ``enableDefaultDeny: {ingress: true, egress: true}``.

Peers. A Kubernetes peer is an endpoint selector with the peer's labels and
``k8s:io.kubernetes.pod.namespace: <ns>``: without that label a selector in a CiliumNetworkPolicy only
matches endpoints of the policy's own namespace ("Namespaces", Cilium policy language page). A host,
managed service or external peer is ``fromCIDRSet``/``toCIDRSet`` entries (``cidr`` with ``except`` inside
it). Entities (``world``, ``kube-apiserver``, ...) are not used: the IR names peers by address, and an
entity would stand for more (``world`` is every address outside the cluster). Ports are ``toPorts`` with
``port`` and ``endPort`` (1-65535; port 0 is clipped, never widened; every port is ``port: "1"``,
``endPort: 65535`` rather than Cilium's wildcard port ``"0"``, so each entry reads as the range it is).

One L3 selector kind per entry. Cilium refuses a rule that combines two of ``toEndpoints``,
``toCIDRSet``, ``toFQDNs`` (``fromEndpoints``, ``fromCIDRSet`` on ingress): "Combining %s and %s is not
supported yet" (``EgressRule.sanitize``/``IngressRule.sanitize``, pkg/policy/api/rule_validation.go). A
rule with peers of several kinds therefore becomes one entry per kind, each with the same ``toPorts``;
the entries of a direction are ORed, so together they allow exactly the rule.

Layer 7 (HTTP). A rule with ``http`` matches gets ``toPorts[].rules.http``: one ``{method, path}`` per
match (the IR's patterns are Cilium's: extended POSIX regular expressions matched against the whole
method and path, https://docs.cilium.io/en/stable/security/policy/layer7/), on both sides, since Cilium
enforces L7 rules on ingress and on egress through its Envoy proxy. Requests matching no entry are
answered by the proxy (HTTP 403), not dropped. Rules on the same peer and port combine as in the IR:
"If a layer 4 rule is specified in the policy, and a similar layer 4 rule with layer 7 rules is also
specified, then the layer 7 portions of the latter rule will have no effect" (same page). L7 needs the
agent's L7 proxy (Helm ``l7Proxy``, on by default): without it Cilium rejects the policy ("L7 policy is
not supported since L7 proxy is not enabled"), which fails closed.

DNS names (``toFQDNs``). An external peer with ``fqdns`` that a rule names as a *destination* becomes an
egress entry ``toFQDNs`` (``matchName`` for a name, ``matchPattern`` for ``*.`` plus one label, which is
what Cilium's ``*.`` matches), next to its ``toCIDRSet`` entry when it also has addresses: the union, as
the IR defines such a peer. Cilium learns a name's addresses only from the DNS answers its DNS proxy sees
("IPs are obtained via intercepting DNS requests with a proxy", "DNS Policy and IP Discovery", Layer 7
page; ``toFQDNs`` in the CRD: "An explicit rule to allow for DNS traffic is needed"), so for every
workload with a ``toFQDNs`` entry the egress entries of its DNS allowance (a rule to workloads of
``policy.dns_resolvers`` only, UDP or TCP port 53 only) get ``rules: {dns: [{matchPattern: "*"}]}``: the
proxy then sees every lookup, and allows every name, which is what the L4 allowance already allowed
(nothing wider). A workload with a ``toFQDNs`` entry and no such allowance raises ``UnsupportedFeature``
(its names could never resolve to allowed addresses). Cilium has no ``fromFQDNs``: a peer with names as a
*source* is matched by its addresses only (narrower than the IR; with no addresses it raises).
``toFQDNs`` never applies to addresses inside the cluster (CRD: "If the resolved IPs are IPs within the
kubernetes cluster, the ToFQDN rule will not apply to that IP").

Never wider, so these raise ``UnsupportedFeature``: ICMP (Cilium's ``icmps`` match listed ICMP types,
and the IR's ICMP means every type), an empty selector, a selector that also matches another
workload's pods, label syntax that is not Kubernetes' (a key like ``reserved:world`` would select a
Cilium reserved identity), a CIDR with host bits set, a namespace that is not a DNS-1123 label.

Scope. Kubernetes workloads outside ``settings.excluded_namespaces``; rules between hosts are skipped.
CIDR rules match addresses outside the cluster: Cilium gives pods and nodes their own identities, so
a CIDR peer inside the cluster (a node) is not matched by ``toCIDRSet`` (caveat in the README).

Observe mode. Cilium's documented way to audit is Policy Audit Mode: "Policy Audit Mode configures
Cilium to allow all traffic while logging all connections that would otherwise be dropped by network
policies" (https://docs.cilium.io/en/latest/security/policy-creation/). It is a switch of the agent
(``--policy-audit-mode``, Helm ``policyAuditMode``) for every endpoint of a node, or of one endpoint
(``cilium-dbg endpoint config <id> PolicyAuditMode=Enabled``); it cannot be scoped to a policy, a
namespace or a CRD object, and while it is on no policy is enforced on those endpoints, including
policies that were enforcing before. Nothing in a policy object can turn it on. So ``mode="observe"``
generates objects that are safe to apply without it: the same allow policies with
``enableDefaultDeny: {ingress: false, egress: false}`` (a policy that does not request default deny
adds allowances and blocks nothing; "If multiple policies apply to an endpoint, that endpoint's default
deny will be enabled if any policy requests it", ``enableDefaultDeny`` in the CiliumNetworkPolicy
reference; Cilium 1.16+), and no clusterwide default deny. Hubble's policy-verdict events then show
which flows match an allow rule. To see would-be drops, the operator enables Policy Audit Mode on the
chosen endpoints or nodes and applies the *enforce* output; verdicts show as ``AUDIT``. Observe mode
leaves out ``rules.http``: an HTTP rule sends the peer's requests through the proxy, which answers a
request matching no entry with 403, and observe output must block nothing; the L4 part of the rule stays.
The DNS-proxy rules and ``toFQDNs`` stay (a ``*`` DNS rule refuses no lookup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from microseg.backends._k8s_common import (
    canon,
    check_unambiguous,
    cidr_blocks,
    namespace_of,
    object_stem,
    port_ranges,
    readme_exceptions,
    readme_rule_table,
    resolve,
    service_account,
    sorted_rules,
    workload_selector,
)
from microseg.backends._k8s_common import dump_yaml as _dump
from microseg.backends._k8s_common import md as _md
from microseg.backends.base import Mode, check_mode
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.intervals import network_text
from microseg.ir.model import AllowRule, HttpMatch, JustificationKind, Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import merge_ranges

TARGET = "cilium"
API_VERSION = "cilium.io/v2"
NS_LABEL = "k8s:io.kubernetes.pod.namespace"
SA_LABEL = "k8s:io.cilium.k8s.policy.serviceaccount"
MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
ANNOTATION_PREFIX = "microseg.io/"
DEFAULT_DENY = "microseg-default-deny"
_PREFIX = "microseg-"
_FILE_HEADER = "# Generated by microseg from the policy: edit the policy, not this file.\n"

Doc = dict[str, Any]


@dataclass(frozen=True)
class _Entry:
    rule: AllowRule
    body: Doc
    dns: bool = False  # egress to the cluster resolver on port 53 only: where the DNS-proxy rule goes

    def sort_key(self) -> tuple[str, str]:
        return (self.rule.id, canon(self.body))


class CiliumBackend:
    """Compiles a policy to Cilium policies; see the module docstring for the exact mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "cross-namespace", "identity", "observe-mode", "l7", "fqdn"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = CiliumBackend()


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.workloads = policy.workload_map()
        self.excluded = frozenset(policy.settings.excluded_namespaces)
        self.namespace = {w.name: namespace_of(TARGET, w) for w in sorted(policy.workloads, key=lambda w: w.name)
                          if w.kind == WorkloadKind.KUBERNETES}
        self.scope = sorted({ns for ns in self.namespace.values() if ns not in self.excluded})
        self.ingress: dict[str, list[_Entry]] = {}
        self.egress: dict[str, list[_Entry]] = {}
        self.used: set[str] = set()
        self.fqdn_subjects: dict[str, str] = {}  # workload with a toFQDNs entry -> first such rule id

    def in_scope(self, w: Workload) -> bool:
        return w.kind == WorkloadKind.KUBERNETES and self.namespace[w.name] not in self.excluded

    def endpoint_selector(self, w: Workload, rule_id: str | None, *, peer: bool) -> Doc:
        labels = workload_selector(TARGET, w, rule_id)
        sa = service_account(TARGET, w, rule_id)
        if sa:
            labels[SA_LABEL] = sa
        if peer:
            labels[NS_LABEL] = self.namespace[w.name]
        return {"matchLabels": dict(sorted(labels.items()))}

    def peer_groups(self, rule: AllowRule, peers: Sequence[Workload], side: str) -> list[Doc]:
        """The rule's peers on one side, one selector kind per group (Cilium refuses combinations)."""
        endpoints: dict[str, Doc] = {}
        cidrs: dict[str, Doc] = {}
        names: set[str] = set()
        for p in peers:
            if p.kind == WorkloadKind.KUBERNETES:
                self.used.add(p.name)
                sel = self.endpoint_selector(p, rule.id, peer=True)
                endpoints[canon(sel)] = sel
                continue
            if p.fqdns and side == "egress":
                names.update(p.fqdns)
            elif p.fqdns and not p.addresses:
                raise UnsupportedFeature(TARGET, f"FQDN peer {p.name!r} as a source (Cilium matches DNS names on "
                                         "egress only, with toFQDNs, and the peer has no addresses)", rule.id)
            if p.addresses or not p.fqdns:
                for net, excepts in cidr_blocks(TARGET, p, rule.id):
                    entry: Doc = {"cidr": network_text(net)}
                    if excepts:
                        entry["except"] = [network_text(e) for e in excepts]
                    cidrs[canon(entry)] = entry
        prefix = "from" if side == "ingress" else "to"
        groups: list[Doc] = []
        if endpoints:
            groups.append({prefix + "Endpoints": [endpoints[k] for k in sorted(endpoints)]})
        if cidrs:
            groups.append({prefix + "CIDRSet": [cidrs[k] for k in sorted(cidrs)]})
        if names:
            # The IR's "*.example.com" is exactly one more label, as Cilium's matchPattern "*.": "`*.cilium.io`
            # matches subdomains of cilium at that level" (CRD, toFQDNs.matchPattern).
            groups.append({"toFQDNs": [{"matchPattern": n} if n.startswith("*.") else {"matchName": n}
                                       for n in sorted(names)]})
        return groups

    def to_ports(self, rule: AllowRule) -> list[Doc]:
        ports: list[Doc] = []
        for r in port_ranges(rule):
            if r.start == r.end:
                ports.append({"port": str(r.start), "protocol": rule.protocol.value})
            else:
                ports.append({"port": str(r.start), "endPort": r.end, "protocol": rule.protocol.value})
        if not ports:
            return []
        port_rule: Doc = {"ports": ports}
        if rule.http and self.mode == "enforce":  # observe mode must block nothing: see the module docstring
            port_rule["rules"] = {"http": [_http_rule(m) for m in sorted(set(rule.http), key=HttpMatch.sort_key)]}
        return [port_rule]

    def is_dns_allowance(self, rule: AllowRule) -> bool:
        """A rule to the cluster resolver(s) only, on UDP or TCP port 53 only: the DNS proxy goes there."""
        resolvers = set(self.policy.dns_resolvers)
        return (bool(resolvers) and not rule.http and rule.protocol in (Protocol.UDP, Protocol.TCP)
                and set(rule.destinations) <= resolvers
                and all(self.workloads[d].kind == WorkloadKind.KUBERNETES for d in rule.destinations)
                and [(r.start, r.end) for r in merge_ranges(rule.ports)] == [(53, 53)])

    def add_rule(self, rule: AllowRule) -> None:
        sources = resolve(self.workloads, rule, rule.sources)
        destinations = resolve(self.workloads, rule, rule.destinations)
        guarded_dst = [d for d in destinations if self.in_scope(d)]
        guarded_src = [s for s in sources if self.in_scope(s)]
        if not guarded_dst and not guarded_src:
            return
        if rule.protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise UnsupportedFeature(TARGET, f"{rule.protocol.value} (Cilium ICMP rules match listed ICMP types; "
                                     "the IR's ICMP means every type)", rule.id)
        to_ports = self.to_ports(rule)
        if not to_ports:
            return  # only port 0: nothing to allow
        dns = self.is_dns_allowance(rule)
        for side, subjects, peers, table in (("ingress", guarded_dst, sources, self.ingress),
                                             ("egress", guarded_src, destinations, self.egress)):
            if not subjects:
                continue  # this side is enforced by no policy of ours
            groups = self.peer_groups(rule, peers, side)  # empty: every peer address excepted, nothing allowed
            for subject in subjects:
                self.used.add(subject.name)
                self.endpoint_selector(subject, rule.id, peer=False)
                for group in groups:
                    table.setdefault(subject.name, []).append(
                        _Entry(rule, {**group, "toPorts": to_ports}, dns and side == "egress"))
                    if "toFQDNs" in group:
                        self.fqdn_subjects.setdefault(subject.name, rule.id)

    def run(self) -> dict[str, str]:
        for rule in sorted_rules(self.policy):
            self.add_rule(rule)
        check_unambiguous(TARGET, self.policy.workloads, self.namespace, self.used)
        docs: dict[str, list[Doc]] = {ns: [] for ns in self.scope}
        names: dict[tuple[str, str], str] = {}
        for wname in sorted(set(self.ingress) | set(self.egress)):
            doc = self.workload_policy(self.workloads[wname])
            key = (self.namespace[wname], doc["metadata"]["name"])
            if key in names:
                raise MicrosegError(f"workloads {names[key]!r} and {wname!r} both compile to "
                                    f"CiliumNetworkPolicy {key[0]}/{key[1]}")
            names[key] = wname
            docs[key[0]].append(doc)
        files: dict[str, str] = {}
        for ns in self.scope:
            if docs[ns]:
                files[f"{ns}.yaml"] = _FILE_HEADER + _dump(sorted(docs[ns], key=lambda d: str(d["metadata"]["name"])))
        if self.scope and self.mode == "enforce":
            files["clusterwide.yaml"] = _FILE_HEADER + _dump([self.default_deny()])
        files["README.md"] = self.readme()
        return files

    def default_deny(self) -> Doc:
        return {
            "apiVersion": API_VERSION, "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": DEFAULT_DENY, "labels": dict(MANAGED_BY),
                         "annotations": {ANNOTATION_PREFIX + "mode": self.mode,
                                         ANNOTATION_PREFIX + "purpose": "default deny east-west: every endpoint of "
                                         "the namespaces in scope, both directions"}},
            "spec": {
                "description": "microseg default deny: empty rules allow nothing and put the endpoints into "
                               "default deny in both directions",
                "endpointSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "In",
                                                           "values": list(self.scope)}]},
                "enableDefaultDeny": {"ingress": True, "egress": True},
                "ingress": [{}],
                "egress": [{}],
            },
        }

    def with_dns_proxy(self, w: Workload, entries: list[_Entry]) -> list[_Entry]:
        """For a workload with toFQDNs entries: its DNS allowance through Cilium's DNS proxy."""
        if w.name not in self.fqdn_subjects:
            return entries
        if not any(e.dns for e in entries):
            raise UnsupportedFeature(
                TARGET, f"DNS names for {w.name!r} without a DNS allowance (Cilium learns a name's addresses from "
                "the answers its DNS proxy sees: allow the workload UDP/TCP 53 to a workload of "
                "policy.dns_resolvers, in a rule of its own)", self.fqdn_subjects[w.name])
        out = []
        for e in entries:
            if e.dns:
                # "*" refuses no lookup: the L4 allowance already allowed every query to the resolver.
                ports = [{**pr, "rules": {"dns": [{"matchPattern": "*"}]}} for pr in e.body["toPorts"]]
                e = _Entry(e.rule, {**e.body, "toPorts": ports}, True)
            out.append(e)
        return out

    def workload_policy(self, w: Workload) -> Doc:
        ns = self.namespace[w.name]
        ingress = sorted(self.ingress.get(w.name, []), key=_Entry.sort_key)
        egress = self.with_dns_proxy(w, sorted(self.egress.get(w.name, []), key=_Entry.sort_key))
        rules = {e.rule.id: e.rule for e in ingress + egress}
        rule_ids = sorted(rules)
        why = "\n".join(f"{r} [{rules[r].justification.kind.value}] {rules[r].justification.text}" for r in rule_ids)
        spec: Doc = {"endpointSelector": self.endpoint_selector(w, rule_ids[0], peer=False)}
        if self.mode == "observe":
            spec["enableDefaultDeny"] = {"ingress": False, "egress": False}
        if ingress:
            spec["ingress"] = _deduped(ingress)
        if egress:
            spec["egress"] = _deduped(egress)
        return {
            "apiVersion": API_VERSION, "kind": "CiliumNetworkPolicy",
            "metadata": {
                "name": _PREFIX + object_stem(w, ns, 63 - len(_PREFIX)), "namespace": ns, "labels": dict(MANAGED_BY),
                "annotations": {ANNOTATION_PREFIX + "mode": self.mode, ANNOTATION_PREFIX + "workload": w.name,
                                ANNOTATION_PREFIX + "rules": ",".join(rule_ids),
                                ANNOTATION_PREFIX + "justification": why},
            },
            "spec": spec,
        }

    def readme(self) -> str:
        lines = ["# Cilium policies generated by microseg", ""]
        if self.mode == "enforce":
            lines += ["Mode: **enforce**. One `CiliumNetworkPolicy` per workload allows exactly the rules of the "
                      f"policy; `clusterwide.yaml` holds `{DEFAULT_DENY}`, which puts every endpoint of the "
                      "namespaces in scope into default deny in both directions."]
        else:
            lines += ["Mode: **observe**. The same allow policies with `enableDefaultDeny: {ingress: false, egress: "
                      "false}` and no clusterwide default deny: applied alone they block nothing (Cilium 1.16 or "
                      "later; an older agent ignores the field and would enforce default deny on the selected "
                      "endpoints). Hubble's policy verdicts show which flows match an allow rule.",
                      "",
                      "To see the connections the enforce output would drop, use Policy Audit Mode and the "
                      "*enforce* output: enable it for the whole agent (`--policy-audit-mode`, Helm "
                      "`policyAuditMode=true`) or per endpoint (`cilium-dbg endpoint config <id> "
                      "PolicyAuditMode=Enabled`), then apply the enforce output; would-be drops show as `AUDIT` "
                      "verdicts. Audit mode cannot be limited to these policies or to a namespace, and while it is "
                      "on it enforces no policy at all on those endpoints, including policies applied before."]
        lines += ["", "| namespace | file | workloads with a policy |", "| --- | --- | --- |"]
        for ns in self.scope:
            n = sum(1 for w in set(self.ingress) | set(self.egress) if self.namespace[w] == ns)
            lines.append(f"| {_md(ns)} | {_md(ns) + '.yaml' if n else '-'} | {n} |")
        compiled = {e.rule.id: e.rule for entries in (*self.ingress.values(), *self.egress.values()) for e in entries}
        infra = [compiled[k] for k in sorted(compiled)
                 if compiled[k].justification.kind == JustificationKind.INFRASTRUCTURE]
        lines += ["", "## Infrastructure allowances", ""]
        lines += readme_rule_table(infra) if infra else ["None."]
        l7 = [compiled[k] for k in sorted(compiled) if compiled[k].http]
        lines += ["", "## Layer 7 (HTTP) rules", ""]
        if l7 and self.mode == "observe":
            lines += ["Left out in observe mode (only their L4 part is applied): the proxy would answer requests "
                      "that match no entry with 403. They apply with the enforce output:", ""]
        if l7:
            lines += ["Method and path are regular expressions matched against the whole method and the whole "
                      "path (query string included). Cilium does not document normalising paths (`..`, "
                      "percent-encoding) before matching: do not rely on it in a pattern.", "",
                      "| rule | method | path |", "| --- | --- | --- |"]
            lines += [f"| {_md(r.id)} | {_md_or_any(m.method)} | {_md_or_any(m.path)} |"
                      for r in l7 for m in sorted(set(r.http), key=HttpMatch.sort_key)]
        else:
            lines.append("None.")
        lines += ["", "## DNS names (toFQDNs)", ""]
        if self.fqdn_subjects:
            lines += ["Egress to these names goes through `toFQDNs`; each workload's DNS allowance carries "
                      "`rules.dns: [{matchPattern: \"*\"}]` so that Cilium's DNS proxy sees the answers. Needs "
                      "the L7 proxy (Helm `l7Proxy`, on by default).", "",
                      "| workload | rule | names |", "| --- | --- | --- |"]
            for wname in sorted(self.fqdn_subjects):
                for rid in sorted({e.rule.id for e in self.egress[wname] if "toFQDNs" in e.body}):
                    names = sorted({n for e in self.egress[wname] if e.rule.id == rid and "toFQDNs" in e.body
                                    for item in e.body["toFQDNs"] for n in item.values()})
                    lines.append(f"| {_md(wname)} | {_md(rid)} | {_md(', '.join(names))} |")
        else:
            lines.append("None.")
        lines += ["", "## Approved exceptions", "", *readme_exceptions(self.policy, set(compiled))]
        lines += ["", "## Caveats", "",
                  "- Only Kubernetes pods are governed; hosts and managed services need their own target.",
                  ("- `toCIDRSet`/`fromCIDRSet` match addresses outside the cluster: a peer that is a node or a pod "
                   "of this cluster has a Cilium identity of its own and is not matched by its CIDR."),
                  ("- Workloads with a service account are selected by labels *and* "
                   "`io.cilium.k8s.policy.serviceaccount`, which can only narrow a rule."),
                  ("- A peer with DNS names is matched by name on egress only: Cilium has no `fromFQDNs`, so as a "
                   "source it is matched by its addresses; `toFQDNs` never matches addresses inside the cluster."),
                  ""]
        return "\n".join(lines)


def _http_rule(m: HttpMatch) -> Doc:
    out: Doc = {}
    if m.method is not None:
        out["method"] = m.method
    if m.path is not None:
        out["path"] = m.path
    return out


def _md_or_any(text: str | None) -> str:
    return "any" if text is None else _md(text)


def _deduped(entries: Sequence[_Entry]) -> list[Doc]:
    seen: set[str] = set()
    out = []
    for e in entries:
        key = canon(e.body)
        if key not in seen:
            seen.add(key)
            out.append(e.body)
    return out
