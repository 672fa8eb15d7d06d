"""Kubernetes NetworkPolicy (``networking.k8s.io/v1``) back end.

What is generated, per namespace in scope (namespaces of Kubernetes workloads in the policy, minus
``settings.excluded_namespaces``), in ``<namespace>.yaml`` (multi-document, baseline first, then the
other policies by name):

* ``microseg-baseline``: selects every pod of the namespace (``podSelector: {}``) with both policy
  types. In ``enforce`` mode it has no rules: that is the namespace's default deny east-west.
* per enforced workload with at least one allowed source, ``microseg-<workload>-ingress``: selects the
  workload's pods by ``matchLabels`` of ``workload.selector``; one ``ingress`` entry per allow rule,
  ``from`` every source of the rule and ``ports`` the rule's protocol and ports.
* per enforced workload with at least one allowed destination, ``microseg-<workload>-egress``, the
  mirror image. Both sides of a rule are compiled; a connection between two pods needs the egress of
  one and the ingress of the other ("To allow a connection from a source pod to a destination pod,
  both the egress policy on the source pod and the ingress policy on the destination pod need to
  allow the connection", https://kubernetes.io/docs/concepts/services-networking/network-policies/).

Plus ``README.md``: the mode, the files, the infrastructure allowances (rules justified as
infrastructure, e.g. DNS to the cluster resolver), approved exceptions, workloads that have no DNS
allowance, and the caveats below. Nothing is invented: DNS egress exists only because the policy has a
rule to a resolver in ``policy.dns_resolvers``.

Peers. A Kubernetes workload is one peer with ``namespaceSelector`` (``kubernetes.io/metadata.name``,
the immutable label the API server sets on every namespace, beta 1.21 and GA 1.22,
https://kubernetes.io/docs/reference/labels-annotations-taints/#kubernetes-io-metadata-name) and
``podSelector`` *in the same element*, which Kubernetes reads as AND (section "Behavior of to and from
selectors" of the page above); in separate elements they would be OR, a much wider rule. Hosts,
managed services and external peers become one ``ipBlock`` per address (``/32`` or ``/128`` for one
IP), with the workload's ``except_addresses`` that fall inside that CIDR. Rules to or from workloads in
excluded namespaces (kube-system/coredns) compile only their in-scope side.

Never wider (a silently widened rule is a security bug), so these raise ``UnsupportedFeature``:
ICMP with an in-scope Kubernetes side (NetworkPolicy matches TCP, UDP and SCTP only), a workload with
an empty selector (``podSelector: {}`` would select its whole namespace), a selector that also
matches the pods of another workload of the policy, a CIDR peer without addresses or with host bits
set (``10.0.0.5/24``: one host or the subnet?), a namespace name that is not a DNS-1123 label. An empty
``from``/``to``/``ports`` list means "everything" in NetworkPolicy, so an entry whose peers or ports
come out empty (every address excepted, only port 0) is left out instead: the IR allows nothing there.

Observe mode. NetworkPolicy has no audit or log-only action, and any policy that selects a pod
isolates it ("the two sorts of pod isolation" on the page above): applying only the allow policies
would already block everything else on the workloads they select. So ``mode="observe"`` emits the very
same allow policies, and ``microseg-baseline`` becomes an explicit allow-all (``ingress: [{}]``,
``egress: [{}]``) instead of a default deny: policies are additive, so nothing is blocked, while the
API server validates the allow policies and flow logs of the CNI can be compared with them. The
baseline keeps its name in both modes on purpose: applying the enforce output replaces the allow-all
object in place, so a forgotten allow-all cannot survive the switch to enforcement.

Names are DNS-1123 labels of at most 63 characters; a workload name that had to be changed (case,
characters, length) gets an 8-hex-digit hash of the full workload name, so names stay unique and
stable. Everything is emitted through the YAML dumper, never through string templates, so a hostile
name, label or justification cannot add a key, a document or a peer.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: NetworkPolicy matches addresses, pods and ports only, and the
same rule at layer 4 would admit every request. An external peer with DNS names (``fqdns``) is compiled
from its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`); one with names and no
addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from microseg.backends._k8s_common import dump_yaml as _dump
from microseg.backends._k8s_common import md as _md
from microseg.backends.base import Mode, check_mode, reject_l7, reject_names_only
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.intervals import network_text
from microseg.ir.model import AllowRule, JustificationKind, Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import merge_ranges

TARGET = "kubernetes"
API_VERSION = "networking.k8s.io/v1"
NS_NAME_LABEL = "kubernetes.io/metadata.name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
BASELINE_NAME = "microseg-baseline"
ANNOTATION_PREFIX = "microseg.io/"

_PREFIX = "microseg-"
_MAX_NAME = 63  # DNS-1123 label, so names also fit where a label value is expected
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_README_ENFORCE = ("Mode: **enforce**. Each namespace file starts with `microseg-baseline`, a default deny of "
                   "ingress and egress for every pod of the namespace; the other policies allow exactly the "
                   "rules of the policy.")
_README_OBSERVE = ("Mode: **observe**. NetworkPolicy has no log-only action, and a policy that selects a pod "
                   "isolates it. So `microseg-baseline` is an explicit allow-all in every namespace: with it, the "
                   "allow policies block nothing yet. Compare the flow logs of the network plugin with the allow "
                   "policies; to enforce, apply the enforce output, whose `microseg-baseline` (same name) replaces "
                   "the allow-all with the default deny.")
_README_NO_DNS = ("They cannot resolve names under default deny; add a rule to the resolver in the policy if "
                  "they need it.")
_README_CAVEATS = (
    "- NetworkPolicies take effect only with a network plugin that enforces them.",
    ("- Traffic between a pod and its own node (kubelet health checks) is always allowed by Kubernetes, "
     "whatever the policies say."),
    ("- `ipBlock` is meant for cluster-external addresses: whether a CIDR peer also matches pod IPs inside "
     "it, or traffic rewritten by a Service or a load balancer, depends on the network plugin. Keep "
     "external CIDRs clear of the pod and service ranges."),
    "- The `microseg.io/justification` annotation of each policy says, per rule, why it exists.",
)
_FILE_HEADER = "# Generated by microseg from the policy: edit the policy, not this file.\n"

Doc = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_PeerKey = tuple[int, str, str, int, int, int]  # pods by namespace and selector, then CIDRs by address


@dataclass(frozen=True)
class _Entry:
    """One ingress or egress entry: the compiled form of one allow rule at one workload."""

    rule: AllowRule
    peers: tuple[Doc, ...]
    ports: tuple[Doc, ...]

    def sort_key(self) -> tuple[str, str]:
        return (self.rule.id, _canon(self.peers) + _canon(self.ports))


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class KubernetesBackend:
    """Compiles a policy to NetworkPolicies; see the module docstring for the exact mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "cross-namespace", "observe-mode"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = KubernetesBackend()


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
        self.ingress: dict[str, list[_Entry]] = {}
        self.egress: dict[str, list[_Entry]] = {}
        self.emitted_selectors: set[str] = set()

    # -- rules -> entries ----------------------------------------------------------------------------

    def in_scope(self, w: Workload) -> bool:
        return w.kind == WorkloadKind.KUBERNETES and self.namespace[w.name] not in self.excluded

    def resolve(self, rule: AllowRule, names: Iterable[str]) -> list[Workload]:
        out = []
        for n in sorted(set(names)):
            w = self.workloads.get(n)
            if w is None:  # fail closed: an unresolvable name never compiles to something
                raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
            out.append(w)
        return out

    def peers(self, rule: AllowRule, workloads: Sequence[Workload]) -> tuple[Doc, ...]:
        """The peers of ``workloads``, deduplicated, pods (by namespace) before CIDRs (by address)."""
        seen: dict[_PeerKey, Doc] = {}
        for w in workloads:
            for key, peer in self.peer(rule, w):
                seen.setdefault(key, peer)
        return tuple(seen[k] for k in sorted(seen))

    def peer(self, rule: AllowRule, w: Workload) -> list[tuple[_PeerKey, Doc]]:
        if w.kind == WorkloadKind.KUBERNETES:
            self.emitted_selectors.add(w.name)
            ns, selector = self.namespace[w.name], _selector(w, rule.id)
            return [((0, ns, _canon(selector), 0, 0, 0), {
                "namespaceSelector": {"matchLabels": {NS_NAME_LABEL: ns}},
                "podSelector": {"matchLabels": selector},
            })]
        return [((1, "", "", *_net_key(net)), {"ipBlock": block}) for net, block in _ip_blocks(w, rule.id)]

    def add_rule(self, rule: AllowRule) -> None:
        sources = self.resolve(rule, rule.sources)
        destinations = self.resolve(rule, rule.destinations)
        guarded_dst = [d for d in destinations if self.in_scope(d)]
        guarded_src = [s for s in sources if self.in_scope(s)]
        if not guarded_dst and not guarded_src:
            return  # no in-scope Kubernetes side: another target's business
        reject_l7(TARGET, rule)  # NetworkPolicy matches L3/L4 only
        if rule.protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise UnsupportedFeature(TARGET, f"{rule.protocol.value} (NetworkPolicy matches TCP, UDP and SCTP "
                                     "only)", rule.id)
        ports = _ports(rule)
        if not ports:
            return  # e.g. only port 0: the rule allows nothing a NetworkPolicy could name
        if guarded_dst:
            entry = _Entry(rule, self.peers(rule, sources), ports)
            for d in guarded_dst:
                self.emitted_selectors.add(d.name)
                _selector(d, rule.id)
                if entry.peers:
                    self.ingress.setdefault(d.name, []).append(entry)
        if guarded_src:
            entry = _Entry(rule, self.peers(rule, destinations), ports)
            for s in guarded_src:
                self.emitted_selectors.add(s.name)
                _selector(s, rule.id)
                if entry.peers:
                    self.egress.setdefault(s.name, []).append(entry)

    # -- entries -> documents ------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        for ns in sorted(set(self.namespace.values())):
            _check_namespace(ns)
        for rule in sorted(self.policy.all_rules(), key=lambda r: (r.id, _canon(r.model_dump(mode="json")))):
            self.add_rule(rule)
        self.check_selectors_are_unambiguous()
        docs: dict[str, list[Doc]] = {ns: [] for ns in self.scope}
        names: dict[tuple[str, str], str] = {}
        for wname in sorted(set(self.ingress) | set(self.egress)):
            w = self.workloads[wname]
            ns = self.namespace[wname]
            for direction, entries in (("ingress", self.ingress.get(wname)), ("egress", self.egress.get(wname))):
                if not entries:
                    continue
                doc = self.workload_policy(w, direction, sorted(entries, key=_Entry.sort_key))
                obj_name = doc["metadata"]["name"]
                if (ns, obj_name) in names:
                    raise MicrosegError(f"workloads {names[ns, obj_name]!r} and {wname!r} both compile to "
                                        f"NetworkPolicy {ns}/{obj_name}")
                names[ns, obj_name] = wname
                docs[ns].append(doc)
        files = {}
        for ns in self.scope:
            ordered = [self.baseline(ns)] + sorted(docs[ns], key=lambda d: str(d["metadata"]["name"]))
            files[f"{ns}.yaml"] = _FILE_HEADER + _dump(ordered)
        files["README.md"] = self.readme()
        return files

    def baseline(self, ns: str) -> Doc:
        spec: Doc = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        if self.mode == "enforce":
            purpose = "default deny east-west: every pod of the namespace, both directions"
        else:
            # One empty rule matches every peer and port: an explicit allow-all, so the allow
            # policies below isolate nothing yet (see the module docstring).
            purpose = "observe mode: allow-all, replaced by the default deny when enforcing"
            spec["ingress"] = [{}]
            spec["egress"] = [{}]
        return {
            "apiVersion": API_VERSION, "kind": "NetworkPolicy",
            "metadata": {"name": BASELINE_NAME, "namespace": ns, "labels": dict(MANAGED_BY),
                         "annotations": {ANNOTATION_PREFIX + "mode": self.mode,
                                         ANNOTATION_PREFIX + "purpose": purpose}},
            "spec": spec,
        }

    def workload_policy(self, w: Workload, direction: str, entries: Sequence[_Entry]) -> Doc:
        peer_key = "from" if direction == "ingress" else "to"
        rule_ids = list(dict.fromkeys(e.rule.id for e in entries))
        why = {e.rule.id: f"{e.rule.id} [{e.rule.justification.kind.value}] {e.rule.justification.text}"
               for e in entries}
        return {
            "apiVersion": API_VERSION, "kind": "NetworkPolicy",
            "metadata": {
                "name": _object_name(w, self.namespace[w.name], direction),
                "namespace": self.namespace[w.name],
                "labels": dict(MANAGED_BY),
                "annotations": {
                    ANNOTATION_PREFIX + "workload": w.name,
                    ANNOTATION_PREFIX + "rules": ",".join(rule_ids),
                    ANNOTATION_PREFIX + "justification": "\n".join(why[r] for r in rule_ids),
                },
            },
            "spec": {
                "podSelector": {"matchLabels": _selector(w, rule_ids[0])},
                "policyTypes": ["Ingress" if direction == "ingress" else "Egress"],
                direction: [{peer_key: list(e.peers), "ports": list(e.ports)} for e in entries],
            },
        }

    def check_selectors_are_unambiguous(self) -> None:
        # A NetworkPolicy selects pods by labels, not by owner: if the selector of X also matches the
        # labels of Y's pods, every allowance of X silently applies to Y as well.
        by_ns: dict[str, list[Workload]] = {}
        for name in sorted(self.namespace):
            by_ns.setdefault(self.namespace[name], []).append(self.workloads[name])
        for name in sorted(self.emitted_selectors):
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
        lines = ["# Kubernetes NetworkPolicies generated by microseg", "",
                 _README_ENFORCE if self.mode == "enforce" else _README_OBSERVE, "",
                 "| namespace | file | workloads with an ingress policy | workloads with an egress policy |",
                 "| --- | --- | --- | --- |"]
        for ns in self.scope:
            ing = sum(1 for w in self.ingress if self.namespace[w] == ns)
            eg = sum(1 for w in self.egress if self.namespace[w] == ns)
            lines.append(f"| {_md(ns)} | {_md(ns)}.yaml | {ing} | {eg} |")
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
        if self.policy.dns_resolvers:
            lines += ["", "## Workloads without a DNS allowance", ""]
            missing = self.without_dns()
            if missing:
                lines += [f"- {_md(m)}" for m in missing] + ["", _README_NO_DNS]
            else:
                lines.append("None.")
        lines += ["", "## Caveats", "", *_README_CAVEATS, ""]
        return "\n".join(lines)

    def compiled_rules(self) -> list[AllowRule]:
        seen = {e.rule.id: e.rule for entries in (*self.ingress.values(), *self.egress.values()) for e in entries}
        return [seen[k] for k in sorted(seen)]

    def without_dns(self) -> list[str]:
        resolvers = set(self.policy.dns_resolvers)
        covered = {s for r in self.policy.all_rules()
                   if r.protocol == Protocol.UDP and r.allows_port(53) and resolvers & set(r.destinations)
                   for s in r.sources}
        return sorted(n for n in self.namespace if self.namespace[n] not in self.excluded
                      and n not in resolvers and n not in covered)


# -- helpers ------------------------------------------------------------------------------------------


def _namespace_of(w: Workload) -> str:
    if w.namespace:
        return w.namespace
    if "/" in w.name:
        return w.name.split("/", 1)[0]
    raise UnsupportedFeature(TARGET, f"Kubernetes workload {w.name!r} without a namespace")


def _check_namespace(ns: str) -> None:
    # Namespace names are DNS-1123 labels; anything else cannot exist in a cluster, and it is also
    # used as a file name here, so it must never carry "/" or "..".
    if len(ns) > _MAX_NAME or not _DNS1123_LABEL.fullmatch(ns):
        raise UnsupportedFeature(TARGET, f"namespace name {ns!r} (not a DNS-1123 label)")


def _selector(w: Workload, rule_id: str | None) -> dict[str, str]:
    if not w.selector:
        raise UnsupportedFeature(TARGET, f"workload {w.name!r} with an empty selector (podSelector: {{}} would "
                                 "select every pod of its namespace)", rule_id)
    return dict(sorted(w.selector))


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


def _ip_blocks(w: Workload, rule_id: str) -> list[tuple[Net, Doc]]:
    reject_names_only(TARGET, w, rule_id)
    if not w.addresses:
        raise UnsupportedFeature(TARGET, f"peer {w.name!r} without addresses", rule_id)
    excepts = [_network(a, w, rule_id) for a in w.except_addresses]
    blocks: list[tuple[Net, Doc]] = []
    for net in sorted({_network(a, w, rule_id) for a in w.addresses}, key=_net_key):
        same = [e for e in excepts if e.version == net.version]
        if any(_within(net, e) for e in same):
            continue  # the whole CIDR is excepted: it contributes no address
        inside = [e for e in same if _within(e, net)]
        block: Doc = {"cidr": network_text(net)}
        if inside:
            # "except values will be rejected if they are outside the cidr range" (IPBlock API).
            block["except"] = [network_text(e) for e in sorted(set(inside), key=_net_key)]
        blocks.append((net, block))
    return blocks


def _ports(rule: AllowRule) -> tuple[Doc, ...]:
    out: list[Doc] = []
    for r in merge_ranges(rule.ports):
        # NetworkPolicy ports are 1-65535; port 0 is reserved and never a destination port.
        start = max(r.start, 1)
        if r.end < start:
            continue
        if start == 1 and r.end == 65535:
            out.append({"protocol": rule.protocol.value})  # no port: every port of the protocol
        elif start == r.end:
            out.append({"protocol": rule.protocol.value, "port": start})
        else:
            # endPort: "the range of ports from port to endPort, inclusive" (section "Targeting a range
            # of ports" of the NetworkPolicy concept page; stable since 1.25).
            out.append({"protocol": rule.protocol.value, "port": start, "endPort": r.end})
    return tuple(out)


def _object_name(w: Workload, ns: str, direction: str) -> str:
    short = w.name[len(ns) + 1:] if w.name.startswith(ns + "/") else w.name
    suffix = "-" + direction
    # Same stem for both directions (sized for the longer suffix), so a workload's two policies
    # sort and read together.
    room = _MAX_NAME - len(_PREFIX) - len("-ingress")
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", short.lower())).strip("-")
    if clean == short and len(clean) <= room:
        return _PREFIX + clean + suffix
    digest = hashlib.sha256(w.name.encode("utf-8")).hexdigest()[:8]
    clean = clean[:room - len(digest) - 1].strip("-")
    return _PREFIX + (f"{clean}-{digest}" if clean else digest) + suffix


def _rule_table(rules: Sequence[AllowRule]) -> list[str]:
    lines = ["| rule | from | to | protocol | ports | justification |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        ports = ",".join(str(p) for p in merge_ranges(r.ports))
        lines.append(f"| {_md(r.id)} | {_md(', '.join(sorted(r.sources)))} | {_md(', '.join(sorted(r.destinations)))}"
                     f" | {r.protocol.value} | {ports} | {_md(r.justification.text)} |")
    return lines
