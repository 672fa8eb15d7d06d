"""Calico (``projectcalico.org/v3``) back end: tiered NetworkPolicy and GlobalNetworkPolicy.

What is generated:

* ``00-tier.yaml``: the ``Tier`` ``microseg`` with ``order: 100``. Calico evaluates tiers by order,
  smallest first; the ``default`` tier, where Kubernetes NetworkPolicies and untiered Calico policies
  live, has order 1,000,000, so this tier decides first ("How policy is evaluated", Tier reference,
  https://docs.tigera.io/calico/latest/reference/resources/tier).
* ``<namespace>.yaml``: per enforced Kubernetes workload with at least one allowed peer, a namespaced
  ``NetworkPolicy`` ``microseg.<workload>`` in the tier (``order: 100``) selecting the workload's pods
  (``app == 'web' && ...`` from ``workload.selector``, plus ``serviceAccountSelector:
  projectcalico.org/name == '<sa>'`` when the workload has a service account: Calico labels a service
  account with its name under ``projectcalico.org/name``, and the AND can only narrow), with one
  ``Allow`` rule per (allow rule, peer, protocol). Both sides of a rule are compiled: egress rules at
  the source, ingress rules at the destination.
* ``global.yaml``: the ``GlobalNetworkPolicy`` ``microseg.default-deny`` in the tier, ``order: 10000``
  (after every allow policy), selecting every pod of the namespaces in scope (``namespaceSelector`` on
  ``kubernetes.io/metadata.name``) with one ``Deny`` rule per direction. That is default deny east-west,
  concrete and final: a ``Deny`` ends evaluation, so no later tier (namespace owners' NetworkPolicies)
  and no profile can re-allow what the plan does not.

Policy names carry the tier as prefix (``microseg.``), the convention of tiered policy names (sample
of the StagedNetworkPolicy reference: ``internal-access.allow-tcp-6379``).

``Pass``. A ``Pass`` rule hands the packet to the next tier that has a policy for the endpoint, and
after the last tier to the endpoint's profile, which allows everything for Kubernetes pods (Tier
reference above). microseg never emits ``Pass``: in the microseg tier it would let the ``default`` tier
or the profile allow traffic the plan does not name, i.e. widen the policy. The read-back
(:mod:`microseg.sources.deployed.calico`) still evaluates ``Pass`` so that it can read hand-edited output.

Peers. A Kubernetes peer is ``namespaceSelector: kubernetes.io/metadata.name == '<ns>'`` and
``selector`` on its labels in one entity rule (fields of one entity rule are ANDed). A host, managed
service or external peer is ``nets`` (its addresses) and ``notNets`` (its exceptions inside them) — the
entity matches addresses in ``nets`` and not in ``notNets``. Selectors and nets are never mixed in one
entity rule. ICMP becomes one rule for ``ICMP`` and one for ``ICMPv6`` (the IR's ICMP is both
families); with CIDR peers each family gets only its own addresses, as Calico requires ipVersion 4 for
ICMP and 6 for ICMPv6. Port ranges are ``"start:end"``; ports are 1-65535 (port 0 is never a
destination port), and a rule on every port has no ``ports`` at all.

Scope. Kubernetes workloads outside ``settings.excluded_namespaces`` are governed. Hosts and managed
services are not (Calico HostEndpoints are not generated): rules between them are skipped, and rules
between them and pods compile only their pod side.

Observe mode. ``mode="observe"`` writes the same specs as ``StagedNetworkPolicy`` and
``StagedGlobalNetworkPolicy`` (and the same ``Tier``): staged policies "are used to preview network
behavior and do not enforce network traffic" (StagedNetworkPolicy reference,
https://docs.tigera.io/calico/latest/reference/resources/stagednetworkpolicy). A tier with no enforced
policy for an endpoint is skipped, so nothing is blocked; flow logs show the verdict each staged
policy would have given. To enforce, apply the enforce output and delete the staged objects.

Never wider: a workload with an empty selector, a selector that also matches another workload's pods,
a label key or value or a service account that is not valid Kubernetes syntax (it would otherwise be
pasted into a selector expression), a CIDR with host bits set, a namespace that is not a DNS-1123
label — each raises ``UnsupportedFeature``. Everything is emitted through the YAML dumper.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: Calico matches a rule's ``http`` only "for Istio-enabled
apps" with application layer policy enabled, and for ingress only
(https://docs.tigera.io/calico/latest/network-policy/istio/http-methods), none of which this target sets
up; the same rule at layer 4 would admit every request. An external peer with DNS names (``fqdns``) is
compiled from its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`); one with names
and no addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microseg.backends._k8s_common import (
    Doc,
    canon,
    check_unambiguous,
    cidr_blocks,
    namespace_of,
    net_key,
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
from microseg.backends.base import Mode, check_mode, reject_l7
from microseg.errors import MicrosegError
from microseg.ir.intervals import network_text
from microseg.ir.model import AllowRule, JustificationKind, Policy, Protocol, Workload, WorkloadKind

TARGET = "calico"
API_VERSION = "projectcalico.org/v3"
TIER = "microseg"
TIER_ORDER = 100
ALLOW_ORDER = 100
DENY_ORDER = 10000
NS_NAME_LABEL = "kubernetes.io/metadata.name"
SA_NAME_LABEL = "projectcalico.org/name"  # the label Calico gives a service account's name
MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
ANNOTATION_PREFIX = "microseg.io/"
DEFAULT_DENY = f"{TIER}.default-deny"
_FILE_HEADER = "# Generated by microseg from the policy: edit the policy, not this file.\n"

def selector_expr(labels: dict[str, str]) -> str:
    """``k == 'v' && ...`` in key order. Keys and values were checked against the Kubernetes label syntax,
    which has no quote, space, ``&`` or ``|``, so single quotes delimit them safely."""
    return " && ".join(f"{k} == '{v}'" for k, v in sorted(labels.items()))


def namespace_expr(namespaces: Sequence[str]) -> str:
    if len(namespaces) == 1:
        return f"{NS_NAME_LABEL} == '{namespaces[0]}'"
    return f"{NS_NAME_LABEL} in {{" + ", ".join(f"'{ns}'" for ns in namespaces) + "}"


# -- the compiler ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    rule: AllowRule
    sort_key: tuple[str, str]
    body: Doc


class CalicoBackend:
    """Compiles a policy to a Calico tier; see the module docstring for the exact mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "icmp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "cross-namespace", "identity", "observe-mode"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = CalicoBackend()


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

    def entities(self, rule: AllowRule, peer: Workload) -> list[tuple[int | None, Doc]]:
        """(ip version or None, entity rule) for one peer; CIDR peers split by family only for ICMP."""
        if peer.kind == WorkloadKind.KUBERNETES:
            self.used.add(peer.name)
            # Peers are matched by namespace and labels only: the scope of serviceAccounts.names across
            # namespaces is not what this compiler wants to depend on; the subject side narrows instead.
            entity: Doc = {"namespaceSelector": f"{NS_NAME_LABEL} == '{self.namespace[peer.name]}'",
                           "selector": selector_expr(workload_selector(TARGET, peer, rule.id))}
            return [(None, entity)]
        blocks = cidr_blocks(TARGET, peer, rule.id)
        out: list[tuple[int | None, Doc]] = []
        versions: list[int | None] = [4, 6] if rule.protocol == Protocol.ICMP else [None]
        for version in versions:
            nets = [n for n, _ in blocks if version is None or n.version == version]
            if not nets:
                continue
            entity = {"nets": [network_text(n) for n in nets]}
            excepts = sorted({e for n, es in blocks for e in es if n in nets}, key=net_key)
            if excepts:
                entity["notNets"] = [network_text(e) for e in excepts]
            out.append((version, entity))
        return out

    def rule_bodies(self, rule: AllowRule, peer: Workload, side: str) -> list[Doc]:
        bodies: list[Doc] = []
        ports = port_ranges(rule)
        for version, entity in self.entities(rule, peer):
            protocols: list[tuple[str, int | None]] = (
                [("ICMP", 4), ("ICMPv6", 6)] if rule.protocol == Protocol.ICMP else [(rule.protocol.value, None)])
            for proto, family in protocols:
                if version is not None and family != version:
                    continue
                body: Doc = {"action": "Allow", "protocol": proto}
                src = entity if side == "ingress" else {}
                dst = dict(entity) if side == "egress" else {}
                if rule.protocol != Protocol.ICMP and not (len(ports) == 1 and ports[0].start == 1
                                                            and ports[0].end == 65535):
                    dst["ports"] = [p.start if p.start == p.end else f"{p.start}:{p.end}" for p in ports]
                if src:
                    body["source"] = src
                if dst:
                    body["destination"] = dst
                bodies.append(body)
        return bodies

    def add_rule(self, rule: AllowRule) -> None:
        sources = resolve(self.workloads, rule, rule.sources)
        destinations = resolve(self.workloads, rule, rule.destinations)
        guarded_dst = [d for d in destinations if self.in_scope(d)]
        guarded_src = [s for s in sources if self.in_scope(s)]
        if not guarded_dst and not guarded_src:
            return  # no governed side: another target's business
        # Calico matches HTTP only with application layer policy (a sidecar the policy does not set up).
        reject_l7(TARGET, rule)
        if rule.protocol != Protocol.ICMP and not port_ranges(rule):
            return  # only port 0: nothing a policy could name, and nothing the IR allows in practice
        for side, subjects, peers, table in (("ingress", guarded_dst, sources, self.ingress),
                                             ("egress", guarded_src, destinations, self.egress)):
            bodies = [b for p in peers for b in self.rule_bodies(rule, p, side)]
            for subject in subjects:
                self.used.add(subject.name)
                workload_selector(TARGET, subject, rule.id)
                service_account(TARGET, subject, rule.id)
                for body in bodies:
                    table.setdefault(subject.name, []).append(_Entry(rule, (rule.id, canon(body)), body))

    def run(self) -> dict[str, str]:
        for rule in sorted_rules(self.policy):
            self.add_rule(rule)
        check_unambiguous(TARGET, self.policy.workloads, self.namespace, self.used)
        kind_np = "NetworkPolicy" if self.mode == "enforce" else "StagedNetworkPolicy"
        kind_gnp = "GlobalNetworkPolicy" if self.mode == "enforce" else "StagedGlobalNetworkPolicy"
        docs: dict[str, list[Doc]] = {ns: [] for ns in self.scope}
        names: dict[tuple[str, str], str] = {}
        for wname in sorted(set(self.ingress) | set(self.egress)):
            w = self.workloads[wname]
            ns = self.namespace[wname]
            doc = self.workload_policy(w, kind_np)
            key = (ns, doc["metadata"]["name"])
            if key in names:
                raise MicrosegError(f"workloads {names[key]!r} and {wname!r} both compile to {kind_np} {ns}/{key[1]}")
            names[key] = wname
            docs[ns].append(doc)
        files: dict[str, str] = {"00-tier.yaml": _FILE_HEADER + _dump([self.tier()])}
        for ns in self.scope:
            if docs[ns]:
                files[f"{ns}.yaml"] = _FILE_HEADER + _dump(sorted(docs[ns], key=lambda d: str(d["metadata"]["name"])))
        if self.scope:
            files["global.yaml"] = _FILE_HEADER + _dump([self.default_deny(kind_gnp)])
        files["README.md"] = self.readme()
        return files

    def metadata(self, name: str, namespace: str | None, annotations: dict[str, str]) -> Doc:
        meta: Doc = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        meta["labels"] = dict(MANAGED_BY)
        meta["annotations"] = {ANNOTATION_PREFIX + "mode": self.mode, **annotations}
        return meta

    def tier(self) -> Doc:
        return {"apiVersion": API_VERSION, "kind": "Tier",
                "metadata": {"name": TIER, "labels": dict(MANAGED_BY)},
                "spec": {"order": TIER_ORDER}}

    def default_deny(self, kind: str) -> Doc:
        return {
            "apiVersion": API_VERSION, "kind": kind,
            "metadata": self.metadata(DEFAULT_DENY, None, {
                ANNOTATION_PREFIX + "purpose": "default deny east-west: every pod of the namespaces in scope, "
                                               "both directions, after every allow policy of the tier"}),
            "spec": {
                "tier": TIER, "order": DENY_ORDER,
                "namespaceSelector": namespace_expr(self.scope),
                "selector": "all()",
                "types": ["Ingress", "Egress"],
                "ingress": [{"action": "Deny"}],
                "egress": [{"action": "Deny"}],
            },
        }

    def workload_policy(self, w: Workload, kind: str) -> Doc:
        ns = self.namespace[w.name]
        ingress = sorted(self.ingress.get(w.name, []), key=lambda e: e.sort_key)
        egress = sorted(self.egress.get(w.name, []), key=lambda e: e.sort_key)
        rule_ids = sorted({e.rule.id for e in ingress + egress})
        rules = {e.rule.id: e.rule for e in ingress + egress}
        why = "\n".join(f"{r} [{rules[r].justification.kind.value}] {rules[r].justification.text}" for r in rule_ids)
        spec: Doc = {"tier": TIER, "order": ALLOW_ORDER,
                     "selector": selector_expr(workload_selector(TARGET, w, rule_ids[0]))}
        sa = service_account(TARGET, w, rule_ids[0])
        if sa:
            spec["serviceAccountSelector"] = f"{SA_NAME_LABEL} == '{sa}'"
        spec["types"] = [t for t, entries in (("Ingress", ingress), ("Egress", egress)) if entries]
        if ingress:
            spec["ingress"] = _deduped(ingress)
        if egress:
            spec["egress"] = _deduped(egress)
        return {
            "apiVersion": API_VERSION, "kind": kind,
            "metadata": self.metadata(f"{TIER}.{object_stem(w, ns, 63 - len(TIER) - 1)}", ns, {
                ANNOTATION_PREFIX + "workload": w.name,
                ANNOTATION_PREFIX + "rules": ",".join(rule_ids),
                ANNOTATION_PREFIX + "justification": why,
            }),
            "spec": spec,
        }

    def readme(self) -> str:
        enforce = self.mode == "enforce"
        lines = ["# Calico policies generated by microseg", ""]
        if enforce:
            lines += [f"Mode: **enforce**. Tier `{TIER}` (order {TIER_ORDER}) holds one `NetworkPolicy` per workload "
                      f"(order {ALLOW_ORDER}) with `Allow` rules for exactly the rules of the policy, and the "
                      f"`GlobalNetworkPolicy` `{DEFAULT_DENY}` (order {DENY_ORDER}) that denies everything else to "
                      "and from the pods of the namespaces in scope. `Deny` is final: later tiers (Kubernetes "
                      "NetworkPolicies live in the `default` tier) cannot re-allow it."]
        else:
            lines += ["Mode: **observe**. The same specs as `StagedNetworkPolicy` and `StagedGlobalNetworkPolicy`: "
                      "staged policies preview their verdicts in flow logs and enforce nothing. The tier object is "
                      "the same; a tier without enforced policies for an endpoint is skipped. To enforce, apply the "
                      "enforce output and delete the staged objects (they have the same names)."]
        lines += ["", "Apply `00-tier.yaml` first (policies in a tier need the tier).", "",
                  "| namespace | file | workloads with a policy |", "| --- | --- | --- |"]
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
                  ("- `nets` match addresses, including pod addresses inside them: keep external CIDRs clear of the "
                   "pod and service ranges."),
                  ("- A policy of a workload with a service account selects its pods by labels *and* service "
                   "account (`serviceAccountSelector`), which can only narrow it; peers are matched by namespace "
                   "and labels."),
                  "- microseg emits no `Pass`: it would hand traffic the plan does not name to later tiers.",
                  ""]
        return "\n".join(lines)


def _deduped(entries: Sequence[_Entry]) -> list[Doc]:
    """Rule bodies in order, each once (two allow rules may compile to the same Calico rule)."""
    seen: set[str] = set()
    out = []
    for e in entries:
        key = canon(e.body)
        if key not in seen:
            seen.add(key)
            out.append(e.body)
    return out
