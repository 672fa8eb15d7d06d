"""AdminNetworkPolicy / BaselineAdminNetworkPolicy (``policy.networking.k8s.io/v1alpha1``) back end.

The admin layer of the network-policy API, compiled as the *upper bound* of the plan. Precedence, from
the API (action descriptions in the AdminNetworkPolicy CRD of kubernetes-sigs/network-policy-api, and
https://network-policy-api.sigs.k8s.io/): AdminNetworkPolicies by ``priority`` (lower first) — ``Allow``
and ``Deny`` are final, ``Pass`` skips the remaining ANPs and hands the traffic to the NetworkPolicies
that select the pod, or, if none does, to the BaselineAdminNetworkPolicy; NetworkPolicies cannot
override an ANP's ``Allow`` or ``Deny``.

What is generated (``admin.yaml``, cluster-scoped objects):

* per enforced Kubernetes workload with a rule or a guardrail to express, the AdminNetworkPolicy
  ``microseg-<namespace>-<workload>`` at ``priority: 50``, subject the workload's pods (``pods`` with
  ``namespaceSelector`` on ``kubernetes.io/metadata.name`` and ``podSelector`` on ``workload.selector``).
  Its rules, in this order (first match wins inside an ANP):

  1. ``Pass`` for each approved exception that involves the workload (before the guardrail it breaks);
  2. ``Deny`` for each guardrail the workload is on one side of: zones are not labels in Kubernetes,
     so the other side is spelled out as the pods of its member workloads (ingress and egress) and the
     addresses of its CIDR members (egress ``networks``) — per-workload selectors, never a zone label
     that anyone allowed to label pods could add or remove;
  3. ``Pass`` for each allow rule of the plan: the traffic goes on to the NetworkPolicy layer.

* ``microseg-default-deny``, ``priority: 100``: subject every pod of the namespaces in scope, ``Deny``
  from every pod and to every pod and every address. Namespace NetworkPolicies cannot widen past it:
  whatever the plan does not pass is denied before they are consulted.
* the BaselineAdminNetworkPolicy ``default`` (the API allows exactly one, named ``default``), subject
  the namespaces in scope, ``Deny`` in both directions: traffic the plan passed that no NetworkPolicy
  decides is denied. The allowances themselves come from the NetworkPolicy layer — microseg's
  ``kubernetes`` target, or namespace owners' own policies, which can narrow the plan but never widen it.

So this target is meant to be deployed *with* the ``kubernetes`` target: together they allow exactly
the plan, and a namespace owner's NetworkPolicy can only remove from it. Alone it denies everything
in scope (the plan is passed, then denied by the baseline).

What it cannot govern (v1alpha1): ingress from addresses outside the cluster — ANP and BANP ingress
peers are namespaces and pods only. Ingress from hosts, managed services and external peers is left
to the NetworkPolicy layer (the ``kubernetes`` target's default deny covers it); rules with such
sources compile no ANP rule, and the README lists them. Guardrails whose protocols include ICMP, rules
on ICMP, and rules or guardrails needing more than 100 rules or peers per direction raise
``UnsupportedFeature``; so do a plan rule that breaks a guardrail without an approved exception (the
guardrail's ``Deny`` would silently remove it), an empty or ambiguous selector, label syntax that is
not Kubernetes', a CIDR with host bits set.

Observe mode. The API has no log-only action. ``mode="observe"`` emits the same objects with every
``Deny`` of the ANPs turned into ``Pass`` and the BaselineAdminNetworkPolicy ``default`` turned into
``Allow`` rules: nothing is blocked by them (traffic reaches NetworkPolicies and their defaults as
before), while implementations that log per ANP rule (OVN-Kubernetes ACL logging, for one) show which
traffic each named rule would have denied. Same names in both modes, so applying the enforce output
replaces the observe objects in place.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: AdminNetworkPolicy matches pods, networks and ports only, and
the same rule at layer 4 would admit every request. An external peer with DNS names (``fqdns``) is
compiled from its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`); one with names
and no addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
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
    sorted_rules,
    within,
    workload_selector,
)
from microseg.backends._k8s_common import dump_yaml as _dump
from microseg.backends._k8s_common import md as _md
from microseg.backends.base import Mode, check_mode, reject_l7
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.intervals import network_text
from microseg.ir.model import AllowRule, Guardrail, Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import guardrail_applies, merge_ranges

TARGET = "kubernetes_admin"
API_VERSION = "policy.networking.k8s.io/v1alpha1"
NS_NAME_LABEL = "kubernetes.io/metadata.name"
WORKLOAD_PRIORITY = 50
DEFAULT_DENY_PRIORITY = 100
DEFAULT_DENY = "microseg-default-deny"
MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
ANNOTATION_PREFIX = "microseg.io/"
MAX_ITEMS = 100  # rules per direction, peers per rule and ports per rule (CRD maxItems)
MAX_NETWORKS = 25  # CIDRs per networks peer
_PREFIX = "microseg-"
_FILE_HEADER = "# Generated by microseg from the policy: edit the policy, not this file.\n"
_ALL_NETWORKS = ["0.0.0.0/0", "::/0"]

Doc = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class KubernetesAdminBackend:
    """Compiles a policy to ANPs and the BANP; see the module docstring for the design."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "port-range", "ingress", "egress", "ipblock",
                              "cross-namespace", "observe-mode"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = KubernetesAdminBackend()


def _rule_name(text: str) -> str:
    return text if len(text) <= 100 else text[:97] + "..."


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.workloads = policy.workload_map()
        self.excluded = frozenset(policy.settings.excluded_namespaces)
        self.namespace = {w.name: namespace_of(TARGET, w) for w in sorted(policy.workloads, key=lambda w: w.name)
                          if w.kind == WorkloadKind.KUBERNETES}
        self.scope = sorted({ns for ns in self.namespace.values() if ns not in self.excluded})
        self.zones = policy.zone_of()
        self.exception_ids = {e.rule.id for e in policy.exceptions}
        self.used: set[str] = set()
        # subject -> direction -> [(stage, sort key, rule doc, allow rule or None)]
        self.rules: dict[str, dict[str, list[tuple[int, tuple[str, str], Doc]]]] = {}
        self.not_governed: dict[str, AllowRule] = {}
        self.compiled: dict[str, AllowRule] = {}

    def in_scope(self, w: Workload) -> bool:
        return w.kind == WorkloadKind.KUBERNETES and self.namespace[w.name] not in self.excluded

    def pods_peer(self, w: Workload, rule_id: str | None) -> Doc:
        self.used.add(w.name)
        return {"pods": {"namespaceSelector": {"matchLabels": {NS_NAME_LABEL: self.namespace[w.name]}},
                         "podSelector": {"matchLabels": workload_selector(TARGET, w, rule_id)}}}

    def peers(self, workloads: Sequence[Workload], side: str, rule_id: str | None) -> list[Doc]:
        pods: dict[str, Doc] = {}
        nets: set[str] = set()
        for w in workloads:
            if w.kind == WorkloadKind.KUBERNETES:
                peer = self.pods_peer(w, rule_id)
                pods[canon(peer)] = peer
            elif side == "egress":
                for net, excepts in cidr_blocks(TARGET, w, rule_id):
                    nets.update(network_text(n) for n in _minus(net, excepts))
        out = [pods[k] for k in sorted(pods)]
        ordered = sorted(nets, key=_net_sort)
        out += [{"networks": ordered[i:i + MAX_NETWORKS]} for i in range(0, len(ordered), MAX_NETWORKS)]
        if len(out) > MAX_ITEMS:
            raise UnsupportedFeature(TARGET, f"more than {MAX_ITEMS} peers in one rule", rule_id)
        return out

    def add(self, subject: Workload, side: str, stage: int, key: str, doc: Doc) -> None:
        self.used.add(subject.name)
        workload_selector(TARGET, subject, key)
        self.rules.setdefault(subject.name, {}).setdefault(side, []).append((stage, (key, canon(doc)), doc))

    # -- plan rules ---------------------------------------------------------------------------------------

    def add_rule(self, rule: AllowRule) -> None:
        sources = resolve(self.workloads, rule, rule.sources)
        destinations = resolve(self.workloads, rule, rule.destinations)
        guarded_dst = [d for d in destinations if self.in_scope(d)]
        guarded_src = [s for s in sources if self.in_scope(s)]
        if not guarded_dst and not guarded_src:
            return
        reject_l7(TARGET, rule)  # AdminNetworkPolicy matches L3/L4 only
        if rule.protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise UnsupportedFeature(TARGET, f"{rule.protocol.value} (AdminNetworkPolicy ports are TCP, UDP and "
                                     "SCTP)", rule.id)
        ports = _ports(port_ranges(rule), [rule.protocol], rule.id)
        if not ports:
            return
        is_exception = rule.id in self.exception_ids
        stage = 0 if is_exception else 2
        if guarded_dst and any(s.kind != WorkloadKind.KUBERNETES for s in sources):
            self.not_governed[rule.id] = rule  # ingress from addresses: not expressible in v1alpha1
        for side, subjects, others in (("ingress", guarded_dst, sources), ("egress", guarded_src, destinations)):
            peers = self.peers(others, side, rule.id)
            if not peers:
                continue
            self.compiled[rule.id] = rule
            peer_key = "from" if side == "ingress" else "to"
            doc = {"name": _rule_name(f"pass {rule.id}"), "action": "Pass", peer_key: peers, "ports": ports}
            for subject in subjects:
                if not is_exception:
                    self.check_guardrails(rule, subject, others, side)
                self.add(subject, side, stage, rule.id, doc)

    def check_guardrails(self, rule: AllowRule, subject: Workload, others: Sequence[Workload], side: str) -> None:
        for other in others:
            src, dst = (other, subject) if side == "ingress" else (subject, other)
            for g in self.policy.guardrails:
                if guardrail_applies(g, self.zones.get(src.name), src.environment, self.zones.get(dst.name),
                                     dst.environment, rule.protocol, rule.ports):
                    raise MicrosegError(f"rule {rule.id} ({src.name} -> {dst.name}) breaks guardrail {g.id} and is "
                                        "not an approved exception: its Deny would remove the rule")

    # -- guardrails ---------------------------------------------------------------------------------------

    def side_members(self, g: Guardrail, source_side: bool) -> list[Workload]:
        m = g.source if source_side else g.destination
        out = []
        for w in sorted(self.policy.workloads, key=lambda w: w.name):
            zone, env = self.zones.get(w.name), (w.environment or "").lower()
            if m.zones and zone not in m.zones:
                continue
            if m.except_zones and zone in m.except_zones:
                continue
            if m.environments and env not in m.environments:
                continue
            out.append(w)
        return out

    def add_guardrail(self, g: Guardrail) -> None:
        if Protocol.ICMP in g.protocols:
            raise UnsupportedFeature(TARGET, f"guardrail {g.id} on ICMP (AdminNetworkPolicy ports are TCP, UDP and "
                                     "SCTP)")
        ports: list[Doc] | None = None
        if g.ports:
            ports = _ports(list(merge_ranges(g.ports)), list(g.protocols) or [Protocol.TCP, Protocol.UDP,
                                                                            Protocol.SCTP], g.id)
        elif g.protocols:
            ports = _ports([PortRange(start=1, end=65535)], list(g.protocols), g.id)
        sources, destinations = self.side_members(g, True), self.side_members(g, False)
        for side, subjects, others in (("ingress", destinations, sources), ("egress", sources, destinations)):
            for subject in (s for s in subjects if self.in_scope(s)):
                peers = self.peers([o for o in others if o.name != subject.name], side, g.id)
                if not peers:
                    continue
                peer_key = "from" if side == "ingress" else "to"
                doc: Doc = {"name": _rule_name(f"guardrail {g.id}"), "action": "Deny", peer_key: peers}
                if ports is not None:
                    doc["ports"] = ports
                self.add(subject, side, 1, g.id, doc)

    # -- documents ----------------------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        for rule in sorted_rules(self.policy):
            self.add_rule(rule)
        for g in sorted(self.policy.guardrails, key=lambda g: g.id):
            self.add_guardrail(g)
        check_unambiguous(TARGET, self.policy.workloads, self.namespace, self.used)
        docs: list[Doc] = []
        names: dict[str, str] = {}
        for wname in sorted(self.rules):
            doc = self.workload_policy(self.workloads[wname])
            name = doc["metadata"]["name"]
            if name in names:
                raise MicrosegError(f"workloads {names[name]!r} and {wname!r} both compile to AdminNetworkPolicy "
                                    f"{name}")
            names[name] = wname
            docs.append(doc)
        files: dict[str, str] = {}
        if self.scope:
            ordered = sorted(docs, key=lambda d: str(d["metadata"]["name"])) + [self.default_deny(), self.baseline()]
            files["admin.yaml"] = _FILE_HEADER + _dump(ordered)
        files["README.md"] = self.readme()
        return files

    def action(self, action: str) -> str:
        return "Pass" if self.mode == "observe" and action == "Deny" else action

    def metadata(self, name: str, annotations: dict[str, str]) -> Doc:
        return {"name": name, "labels": dict(MANAGED_BY),
                "annotations": {ANNOTATION_PREFIX + "mode": self.mode, **annotations}}

    def workload_policy(self, w: Workload) -> Doc:
        ns = self.namespace[w.name]
        spec: Doc = {"priority": WORKLOAD_PRIORITY,
                     "subject": self.pods_peer(w, None)}
        ids: set[str] = set()
        for side in ("ingress", "egress"):
            entries = sorted(self.rules[w.name].get(side, []), key=lambda e: (e[0], e[1]))
            if len(entries) > MAX_ITEMS:
                raise UnsupportedFeature(TARGET, f"more than {MAX_ITEMS} {side} rules for workload {w.name!r}")
            rules = []
            seen: set[str] = set()
            for _, (key, _), doc in entries:
                ids.add(key)
                doc = {**doc, "action": self.action(doc["action"])}
                if canon(doc) not in seen:
                    seen.add(canon(doc))
                    rules.append(doc)
            if rules:
                spec[side] = rules
        stem = object_stem(w, None, 63 - len(_PREFIX))
        return {"apiVersion": API_VERSION, "kind": "AdminNetworkPolicy",
                "metadata": self.metadata(_PREFIX + stem, {ANNOTATION_PREFIX + "workload": w.name,
                                                           ANNOTATION_PREFIX + "namespace": ns,
                                                           ANNOTATION_PREFIX + "rules": ",".join(sorted(ids))}),
                "spec": spec}

    def scope_subject(self) -> Doc:
        return {"namespaces": {"matchExpressions": [{"key": NS_NAME_LABEL, "operator": "In",
                                                     "values": list(self.scope)}]}}

    def default_deny(self) -> Doc:
        deny = self.action("Deny")
        return {"apiVersion": API_VERSION, "kind": "AdminNetworkPolicy",
                "metadata": self.metadata(DEFAULT_DENY, {
                    ANNOTATION_PREFIX + "purpose": "default deny east-west, not overridable by NetworkPolicies: "
                                                   "everything the workload policies did not pass"}),
                "spec": {"priority": DEFAULT_DENY_PRIORITY, "subject": self.scope_subject(),
                         "ingress": [{"name": "default deny ingress", "action": deny, "from": [{"namespaces": {}}]}],
                         "egress": [{"name": "default deny egress", "action": deny,
                                     "to": [{"namespaces": {}}, {"networks": list(_ALL_NETWORKS)}]}]}}

    def baseline(self) -> Doc:
        action = "Deny" if self.mode == "enforce" else "Allow"
        return {"apiVersion": API_VERSION, "kind": "BaselineAdminNetworkPolicy",
                "metadata": self.metadata("default", {
                    ANNOTATION_PREFIX + "purpose": "baseline: traffic passed by the plan that no NetworkPolicy "
                                                   "decides" + (" is denied" if self.mode == "enforce"
                                                               else " is allowed (observe mode)")}),
                "spec": {"subject": self.scope_subject(),
                         "ingress": [{"name": f"baseline {action.lower()} ingress", "action": action,
                                      "from": [{"namespaces": {}}]}],
                         "egress": [{"name": f"baseline {action.lower()} egress", "action": action,
                                     "to": [{"namespaces": {}}, {"networks": list(_ALL_NETWORKS)}]}]}}

    def readme(self) -> str:
        lines = ["# AdminNetworkPolicies generated by microseg", ""]
        if self.mode == "enforce":
            lines += ["Mode: **enforce**. Deploy together with the `kubernetes` target's NetworkPolicies. Per "
                      f"workload, an AdminNetworkPolicy (priority {WORKLOAD_PRIORITY}) passes exactly the plan's "
                      "rules to the NetworkPolicy layer and denies what the guardrails forbid; "
                      f"`{DEFAULT_DENY}` (priority {DEFAULT_DENY_PRIORITY}) denies everything else, and the "
                      "BaselineAdminNetworkPolicy `default` denies passed traffic that no NetworkPolicy allows. "
                      "Namespace NetworkPolicies can narrow the plan, never widen it."]
        else:
            lines += ["Mode: **observe**. The same objects with every `Deny` turned into `Pass`, and the "
                      "BaselineAdminNetworkPolicy `default` allowing: nothing is blocked by them. Per-rule logging "
                      "of the network plugin (where it has it) shows the traffic each named rule would deny. "
                      "Applying the enforce output replaces these objects in place (same names)."]
        compiled = [self.compiled[k] for k in sorted(self.compiled)]
        lines += ["", "## Allowed rules (passed to the NetworkPolicy layer)", ""]
        lines += readme_rule_table(compiled) if compiled else ["None."]
        lines += ["", "## Not governed by this target: ingress from addresses outside the cluster", ""]
        ng = [self.not_governed[k] for k in sorted(self.not_governed)]
        lines += (readme_rule_table(ng) + ["", "AdminNetworkPolicy ingress peers are pods and namespaces only: "
                                           "these sources, and every other address, are left to the "
                                           "NetworkPolicy layer."]) if ng else ["None."]
        lines += ["", "## Approved exceptions", "", *readme_exceptions(self.policy, set(self.compiled))]
        lines += ["", "## Guardrails", ""]
        lines += [f"- {_md(g.id)}: {_md(g.description)}" for g in sorted(self.policy.guardrails, key=lambda g: g.id)] \
            or ["None."]
        lines.append("")
        return "\n".join(lines)


def _ports(ranges: Sequence[PortRange], protocols: Sequence[Protocol], rule_id: str) -> list[Doc]:
    out: list[Doc] = []
    for proto in protocols:
        for r in ranges:
            start = max(r.start, 1)
            if r.end < start:
                continue
            if start == r.end:
                out.append({"portNumber": {"port": start, "protocol": proto.value}})
            else:
                out.append({"portRange": {"start": start, "end": r.end, "protocol": proto.value}})
    if len(out) > MAX_ITEMS:
        raise UnsupportedFeature(TARGET, f"more than {MAX_ITEMS} ports in one rule", rule_id)
    return out


def _minus(net: Net, excepts: Sequence[Net]) -> list[Net]:
    """``net`` minus the CIDRs in ``excepts`` (all inside it), as CIDRs: ``networks`` has no ``except``."""
    out: list[Net] = [net]
    for e in excepts:
        nxt: list[Net] = []
        for n in out:
            if within(e, n):
                nxt += [x for x in n.address_exclude(e)]  # type: ignore[arg-type]
            elif not within(n, e):
                nxt.append(n)
        out = nxt
    return out


def _net_sort(text: str) -> tuple[int, int, int]:
    n = ipaddress.ip_network(text)
    return (n.version, int(n.network_address), n.prefixlen)
