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

The IR has no L7 (HTTP) or FQDN construct, so no ``rules.http``, ``toFQDNs`` or DNS-proxy rule
(``rules.dns``) is generated: DNS to the cluster resolver is an ordinary L4 rule when the policy has it.

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
chosen endpoints or nodes and applies the *enforce* output; verdicts show as ``AUDIT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from microseg.backends.base import MODES, Mode
from microseg.backends.calico import (
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
from microseg.backends.kubernetes import _dump, _md
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.model import AllowRule, JustificationKind, Policy, Protocol, Workload, WorkloadKind

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

    def sort_key(self) -> tuple[str, str]:
        return (self.rule.id, canon(self.body))


class CiliumBackend:
    """Compiles a policy to Cilium policies; see the module docstring for the exact mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "cross-namespace", "identity", "observe-mode"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        if mode not in MODES:
            raise MicrosegError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
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

    def peer_fields(self, rule: AllowRule, peers: Sequence[Workload], side: str) -> Doc:
        endpoints: dict[str, Doc] = {}
        cidrs: dict[str, Doc] = {}
        for p in peers:
            if p.kind == WorkloadKind.KUBERNETES:
                self.used.add(p.name)
                sel = self.endpoint_selector(p, rule.id, peer=True)
                endpoints[canon(sel)] = sel
            else:
                for net, excepts in cidr_blocks(TARGET, p, rule.id):
                    entry: Doc = {"cidr": str(net)}
                    if excepts:
                        entry["except"] = [str(e) for e in excepts]
                    cidrs[canon(entry)] = entry
        prefix = "from" if side == "ingress" else "to"
        out: Doc = {}
        if endpoints:
            out[prefix + "Endpoints"] = [endpoints[k] for k in sorted(endpoints)]
        if cidrs:
            out[prefix + "CIDRSet"] = [cidrs[k] for k in sorted(cidrs)]
        return out

    def to_ports(self, rule: AllowRule) -> list[Doc]:
        ports: list[Doc] = []
        for r in port_ranges(rule):
            if r.start == r.end:
                ports.append({"port": str(r.start), "protocol": rule.protocol.value})
            else:
                ports.append({"port": str(r.start), "endPort": r.end, "protocol": rule.protocol.value})
        return [{"ports": ports}] if ports else []

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
        for side, subjects, peers, table in (("ingress", guarded_dst, sources, self.ingress),
                                             ("egress", guarded_src, destinations, self.egress)):
            fields = self.peer_fields(rule, peers, side)
            for subject in subjects:
                self.used.add(subject.name)
                self.endpoint_selector(subject, rule.id, peer=False)
                if fields:  # every peer address excepted: the IR allows nothing there
                    table.setdefault(subject.name, []).append(_Entry(rule, {**fields, "toPorts": to_ports}))

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

    def workload_policy(self, w: Workload) -> Doc:
        ns = self.namespace[w.name]
        ingress = sorted(self.ingress.get(w.name, []), key=_Entry.sort_key)
        egress = sorted(self.egress.get(w.name, []), key=_Entry.sort_key)
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
        lines += ["", "## Approved exceptions", "", *readme_exceptions(self.policy, set(compiled))]
        lines += ["", "## Caveats", "",
                  "- Only Kubernetes pods are governed; hosts and managed services need their own target.",
                  ("- `toCIDRSet`/`fromCIDRSet` match addresses outside the cluster: a peer that is a node or a pod "
                   "of this cluster has a Cilium identity of its own and is not matched by its CIDR."),
                  ("- Workloads with a service account are selected by labels *and* "
                   "`io.cilium.k8s.policy.serviceaccount`, which can only narrow a rule."),
                  "- No L7 or FQDN rules: the policy has none.",
                  ""]
        return "\n".join(lines)


def _deduped(entries: Sequence[_Entry]) -> list[Doc]:
    seen: set[str] = set()
    out = []
    for e in entries:
        key = canon(e.body)
        if key not in seen:
            seen.add(key)
            out.append(e.body)
    return out
