"""Helpers shared by the Kubernetes-style back ends (kubernetes, calico, cilium, kubernetes_admin).

Private to the back-end package (the leading underscore keeps it out of the target registry). What is
here is about Kubernetes objects in general — label syntax, selectors, namespaces, CIDR peers, the YAML
emitter and Markdown escaping for the output README — not about any one target.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from microseg.backends.base import reject_names_only
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.model import AllowRule, Policy, PortRange, Workload, WorkloadKind
from microseg.ir.semantics import merge_ranges

NS_NAME_LABEL = "kubernetes.io/metadata.name"

Doc = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Kubernetes label syntax (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
# #syntax-and-character-set): an optional DNS-subdomain prefix and "/", then a name of at most 63
# characters; values are empty or at most 63 such characters. Anything else cannot be a pod label, and
# a value with a quote or "&&" would change a Calico selector expression.
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# -- helpers shared by the Kubernetes-style back ends (cilium, kubernetes_admin import them) ------------------


def valid_label_key(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def valid_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


def check_labels(target: str, w: Workload, labels: Iterable[tuple[str, str]], rule_id: str | None) -> None:
    for k, v in labels:
        if not valid_label_key(k) or not valid_label_value(v):
            raise UnsupportedFeature(target, f"label {k!r}={v!r} of {w.name!r} (not valid Kubernetes label syntax)",
                                     rule_id)


def workload_selector(target: str, w: Workload, rule_id: str | None) -> dict[str, str]:
    """The workload's pod selector, checked: never empty, only valid label syntax."""
    if not w.selector:
        raise UnsupportedFeature(target, f"workload {w.name!r} with an empty selector (it would select every pod "
                                 "of its namespace)", rule_id)
    check_labels(target, w, w.selector, rule_id)
    return dict(sorted(w.selector))


def service_account(target: str, w: Workload, rule_id: str | None) -> str | None:
    sa = w.service_account
    if sa is None:
        return None
    if len(sa) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(sa):
        raise UnsupportedFeature(target, f"service account {sa!r} of {w.name!r} (not a DNS-1123 subdomain)", rule_id)
    return sa


def namespace_of(target: str, w: Workload) -> str:
    ns = w.namespace or (w.name.split("/", 1)[0] if "/" in w.name else None)
    if not ns:
        raise UnsupportedFeature(target, f"Kubernetes workload {w.name!r} without a namespace")
    if len(ns) > 63 or not _DNS1123_LABEL.fullmatch(ns):
        # It also names a file: never "/" or "..".
        raise UnsupportedFeature(target, f"namespace name {ns!r} (not a DNS-1123 label)")
    return ns


def check_unambiguous(target: str, workloads: Sequence[Workload], namespace: dict[str, str],
                      used: Iterable[str]) -> None:
    """A selector that also matches another workload's pods would apply its allowances to them too."""
    by_name = {w.name: w for w in workloads}
    for name in sorted(set(used)):
        x = by_name[name]
        sel = set(x.selector)
        for y in workloads:
            if y.kind != WorkloadKind.KUBERNETES or y.name == x.name or namespace.get(y.name) != namespace[name]:
                continue
            pod_labels = set(y.labels) | set(y.selector)
            if pod_labels and sel <= pod_labels:
                raise UnsupportedFeature(
                    target, f"selector {dict(x.selector)} of workload {x.name!r}, which also matches the pods of "
                    f"{y.name!r} (give each workload a selector that identifies only its own pods)")


def network(target: str, address: str, w: Workload, rule_id: str | None) -> Net:
    try:
        return ipaddress.ip_network(address, strict=True)
    except ValueError:
        raise UnsupportedFeature(target, f"address {address!r} of {w.name!r} (host bits set: write the host as /32 "
                                 "or /128, or the network address of the subnet)", rule_id) from None


def net_key(n: Net) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def within(inner: Net, outer: Net) -> bool:
    """``inner`` is ``outer`` or a subnet of it (two CIDRs are either nested or disjoint)."""
    return (inner.version == outer.version and inner.prefixlen >= outer.prefixlen
            and int(inner.network_address) >> (inner.max_prefixlen - outer.prefixlen)
            == int(outer.network_address) >> (outer.max_prefixlen - outer.prefixlen))


def cidr_blocks(target: str, w: Workload, rule_id: str | None) -> list[tuple[Net, list[Net]]]:
    """The workload's CIDRs, each with the exceptions inside it; CIDRs wholly excepted are left out."""
    reject_names_only(target, w, rule_id)
    if not w.addresses:
        raise UnsupportedFeature(target, f"peer {w.name!r} without addresses", rule_id)
    excepts = [network(target, a, w, rule_id) for a in w.except_addresses]
    out = []
    for net in sorted({network(target, a, w, rule_id) for a in w.addresses}, key=net_key):
        if any(within(net, e) for e in excepts):
            continue
        out.append((net, sorted({e for e in excepts if within(e, net) and e != net}, key=net_key)))
    return out


def port_ranges(rule: AllowRule) -> list[PortRange]:
    """The rule's ports as 1-65535 ranges (port 0 is never a destination port; it is clipped, not widened)."""
    out = []
    for r in merge_ranges(rule.ports):
        start = max(r.start, 1)
        if r.end >= start:
            out.append(PortRange(start=start, end=r.end))
    return out


def object_stem(w: Workload, ns: str | None, room: int) -> str:
    """A DNS-1123 stem for the workload of at most ``room`` characters; hashed when it had to change."""
    short = w.name[len(ns) + 1:] if ns and w.name.startswith(ns + "/") else w.name
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", short.lower())).strip("-")
    if clean == short and len(clean) <= room:
        return clean
    digest = hashlib.sha256(w.name.encode("utf-8")).hexdigest()[:8]
    clean = clean[:room - len(digest) - 1].strip("-")
    return f"{clean}-{digest}" if clean else digest


def canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def readme_rule_table(rules: Sequence[AllowRule]) -> list[str]:
    lines = ["| rule | from | to | protocol | ports | justification |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        ports = ",".join(str(p) for p in merge_ranges(r.ports))
        lines.append(f"| {md(r.id)} | {md(', '.join(sorted(r.sources)))} | {md(', '.join(sorted(r.destinations)))}"
                     f" | {r.protocol.value} | {ports} | {md(r.justification.text)} |")
    return lines


def readme_exceptions(policy: Policy, compiled_ids: set[str]) -> list[str]:
    exc = sorted((e for e in policy.exceptions if e.rule.id in compiled_ids), key=lambda e: e.rule.id)
    if not exc:
        return ["None."]
    lines = ["| rule | guardrail | approver | expires | reason |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {md(e.rule.id)} | {md(e.guardrail)} | {md(e.approver)} | {e.expires.isoformat()} | "
              f"{md(e.reason)} |" for e in exc]
    return lines


def sorted_rules(policy: Policy) -> list[AllowRule]:
    return sorted(policy.all_rules(), key=lambda r: (r.id, canon(r.model_dump(mode="json"))))


def resolve(policy_workloads: dict[str, Workload], rule: AllowRule, names: Iterable[str]) -> list[Workload]:
    out = []
    for n in sorted(set(names)):
        w = policy_workloads.get(n)
        if w is None:  # fail closed: an unresolvable name never compiles to something
            raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
        out.append(w)
    return out


# -- Calico selectors --------------------------------------------------------------------------------------


class YamlDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (justifications) as literal blocks, and no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        # A peer shared by several entries must be written out each time, not as &id001/*id001.
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Only a style *request*: the emitter still falls back to a quoted scalar when a literal block
    # could not carry the string exactly (trailing spaces, control characters, ...).
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


YamlDumper.add_representer(str, _represent_str)


def dump_yaml(docs: Sequence[Doc]) -> str:
    # allow_unicode=False: every non-ASCII or control character is escaped, so what a reviewer
    # reads is what the API server gets. A huge width keeps long annotations on one line.
    return yaml.dump_all(docs, Dumper=YamlDumper, explicit_start=True, sort_keys=False, default_flow_style=False,
                         allow_unicode=False, width=1 << 20)


def md(text: str) -> str:
    """Escape free text (names, reasons) for a Markdown table cell: no HTML, no links, no new rows."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)
