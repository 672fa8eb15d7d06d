"""AWS security groups as Terraform JSON (``main.tf.json``) back end.

What is governed. Security groups attach to network interfaces (ENIs) and are stateful (replies to
an allowed connection are allowed whatever the rules say), so the governed workloads are the ones
that own ENIs in the policy: hosts (EC2 instances) and managed services (RDS, ElastiCache, interface
endpoints and the like). Each gets **one group of its own**, even without any rule: attached alone,
a group without rules is that workload's default deny, in both directions. Kubernetes workloads are
not governed here (pods share their node's ENIs unless a CNI-specific "security groups for pods"
setup is used, which the policy does not describe): rules between workloads none of which is a host
or a managed service are skipped and listed in the README; the Kubernetes targets enforce them.

Rules. Every allow rule with a governed side is compiled on both sides, as separate
``aws_vpc_security_group_ingress_rule`` / ``aws_vpc_security_group_egress_rule`` resources, the
provider's current practice ("should be used for all new security group rules", Terraform AWS provider
docs for ``aws_vpc_security_group_ingress_rule``); the group itself has no inline ``ingress`` or
``egress`` block, because mixing inline rules with rule resources makes them overwrite each other
(same page). Peers:

* a governed workload is named by its group (``referenced_security_group_id``), never by address;
* an external peer, or a Kubernetes workload to which the policy gives ``addresses`` (the one
  documented address source for pods: the user's, used as-is), becomes one rule per CIDR
  (``cidr_ipv4`` / ``cidr_ipv6``) of its addresses minus its ``except_addresses``. Security groups
  have no "except", so ``internet`` (0.0.0.0/0 minus the private ranges) is written as the CIDRs of
  that complement: exact, never wider, at the cost of rules (see the quota below);
* a Kubernetes workload without addresses as the peer of a governed workload has nothing a group
  can name: ``UnsupportedFeature`` naming the rule (never a pod or node CIDR).

Protocols: ``tcp``/``udp`` with ``from_port``/``to_port`` per merged port range; ICMP (every type and
code in the IR) as ``icmp`` for IPv4 peers and ``icmpv6`` for IPv6 peers, both for a referenced
group, with ``-1``/``-1`` ("-1 (all ICMP types)", EC2 API IpPermission); SCTP only on every port, as
protocol number ``132``, because for any protocol but tcp, udp, icmp and icmpv6 "traffic on all
ports" is allowed "regardless of any port range you specify" (same page): SCTP on some ports raises
``UnsupportedFeature``. Rules that compile to the same group, direction, peer, protocol and ports are
one resource (AWS rejects duplicate rules); its description lists the policy's rule ids.

Default egress. AWS gives a new VPC security group an allow-all egress rule. The provider revokes it,
IPv4 and IPv6, when it creates the group ("Terraform will remove this default rule", NOTE on Egress
rules of ``aws_security_group``; the create function revokes ``0.0.0.0/0`` and ``::/0`` protocol
``-1``). Declaring ``egress = []`` inline instead would fight the egress rule resources, so it is not
done. A group that was *imported* instead of created keeps AWS's default egress: never import them.

Quota: by default 60 inbound and 60 outbound rules per group, counted separately for IPv4 and IPv6,
a referenced group counting once for each (Amazon VPC quotas, "Inbound or outbound rules per
security group"). The README flags groups above it; AWS then refuses the extra rules at apply time
(fewer rules, never more).

Observe mode. Security groups have no log-only action: a group attached to an ENI enforces at once,
and the rules of all groups of an ENI add up (a union), so a group only denies when it is the ENI's
only group. ``mode="observe"`` therefore emits the very same groups and rules (tagged
``microseg:mode = observe``) with a README that says to create them and attach **nothing**: AWS
validates every rule (and the quota) while traffic is untouched; VPC Flow Logs, compared with the
rules by ``microseg validate``, show what enforcement would deny. Enforcing is attaching each group,
from the ``security_group_ids`` output, as the only group of its workload's ENIs.

Names and escaping. A group is ``aws_security_group.sg-<workload>`` (``[a-z0-9-]``; a workload name
that is not already such a name is cleaned and gets an 8-hex-digit hash of the full name), a rule is
``<group>--<in|out>--<protocol>[-<ports>]--<peer>``, readable and unique by construction. The file is
written by the JSON serializer (all non-ASCII escaped) and, because Terraform parses every JSON string
in an expression as a string template ("Expression Mapping", Terraform JSON configuration syntax),
``${`` and ``%{`` in text from the inventory (the ``microseg:workload`` and ``microseg:zone`` tags) are
written as ``$${`` and ``%%{``; descriptions keep only an inert subset of the characters AWS accepts
in them. :mod:`microseg.sources.deployed.aws_sg` reads the file back into per-pair connectivity.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: a security group matches protocol, ports and peers only, and
the same rule at layer 4 would admit every request. An external peer with DNS names (``fqdns``) is
compiled from its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`); one with names
and no addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from microseg.backends._firewall import (
    Net,
    canon,
    check_unique,
    governed,
    md,
    object_name,
    peer_networks,
    port_ranges,
    resolve,
    safe_text,
    sorted_rules,
)
from microseg.backends.base import Mode, check_mode, reject_l7
from microseg.errors import UnsupportedFeature
from microseg.ir.intervals import network_text
from microseg.ir.model import AllowRule, Policy, Protocol, Workload
from microseg.ir.semantics import ALL_PORTS

TARGET = "aws_sg"
FILE = "main.tf.json"
PROVIDER_VERSION = ">= 5.0"  # aws_vpc_security_group_{ingress,egress}_rule exist in every 5.x release
RULE_QUOTA = 60
MAX_TAG_VALUE = 256  # EC2 tag values: up to 256 characters
GROUP_TYPE = "aws_security_group"
INGRESS_TYPE = "aws_vpc_security_group_ingress_rule"
EGRESS_TYPE = "aws_vpc_security_group_egress_rule"
WORKLOAD_TAG = "microseg:workload"
_MAX_RESOURCE_NAME = 48
_COMMENT = "Generated by microseg from the policy: edit the policy, not this file."

Doc = dict[str, Any]
# (peer kind, peer value): ("sg", resource name) or ("cidr", network)
PeerKey = tuple[str, str]
# (protocol as AWS writes it, from_port, to_port); ports None for protocol 132
ProtoKey = tuple[str, int | None, int | None]


def template_escape(text: str) -> str:
    """Literal text for a Terraform JSON string: ``${`` and ``%{`` would start a template sequence."""
    return text.replace("${", "$${").replace("%{", "%%{")


def group_resource_name(w: Workload) -> str:
    """``sg-<name>``: the workload name if it is made of ``[a-z0-9-]``, else cleaned plus a hash of it."""
    return object_name(w.name, max_len=_MAX_RESOURCE_NAME, prefix="sg-", lower=True, chars="a-z0-9-")


def rule_resource_name(group: str, direction: str, peer: PeerKey, proto: ProtoKey) -> str:
    """``<group>--<in|out>--<protocol>[-<ports>]--<peer>``, readable and injective.

    No part contains ``--`` (group names never do, CIDRs are written with ``-`` for ``.`` and ``_``
    for ``:`` and ``/``), so two different rules never get the same name.
    """
    ip_protocol, lo, hi = proto
    if lo is None or lo == -1:
        what = ip_protocol
    else:
        what = f"{ip_protocol}-{lo}" if lo == hi else f"{ip_protocol}-{lo}-{hi}"
    kind, value = peer
    who = value if kind == "sg" else value.replace(".", "-").replace(":", "_").replace("/", "_")
    return f"{group}--{direction}--{what}--{who}"


@dataclass
class _Entry:
    rule_ids: set[str] = field(default_factory=set)


class AwsSgBackend:
    """Compiles a policy to security groups in Terraform JSON; see the module docstring for the mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "icmp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "observe-mode"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = AwsSgBackend()


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.workloads = policy.workload_map()
        self.groups: dict[str, str] = {}  # workload -> resource name
        owners: dict[str, list[str]] = {}
        for w in sorted(policy.workloads, key=lambda w: w.name):
            if governed(w):
                if len(w.name) > MAX_TAG_VALUE:
                    raise UnsupportedFeature(TARGET, f"workload name longer than the {MAX_TAG_VALUE} characters of an "
                                             f"EC2 tag value: {w.name[:40]!r}...")
                self.groups[w.name] = group_resource_name(w)
                owners.setdefault(self.groups[w.name], []).append(w.name)
        check_unique(owners, "security group resource")
        # (group resource, "in"/"out") -> (peer, proto) -> entry
        self.entries: dict[tuple[str, str], dict[tuple[PeerKey, ProtoKey], _Entry]] = {}
        self.skipped: list[str] = []

    def peers(self, w: Workload, rule: AllowRule) -> list[tuple[PeerKey, Net | None]]:
        if w.name in self.groups:
            return [(("sg", self.groups[w.name]), None)]
        return [(("cidr", network_text(n)), n) for n in peer_networks(w, TARGET, rule.id)]

    def protos(self, rule: AllowRule, net: Net | None) -> list[ProtoKey]:
        if rule.protocol == Protocol.ICMP:
            # "-1 (all ICMP types)"; a referenced group may be reached over either family.
            fams = ["icmp", "icmpv6"] if net is None else ["icmp" if net.version == 4 else "icmpv6"]
            return [(f, -1, -1) for f in fams]
        ports = port_ranges(rule)
        if rule.protocol == Protocol.SCTP:
            if ports != (ALL_PORTS,):
                raise UnsupportedFeature(TARGET, "SCTP on some ports (a security group rule for a protocol other "
                                         "than tcp, udp, icmp and icmpv6 allows every port)", rule.id)
            return [("132", None, None)]
        return [(rule.protocol.value.lower(), r.start, r.end) for r in ports]

    def add(self, group: str, direction: str, rule: AllowRule, peers: Sequence[Workload]) -> None:
        bucket = self.entries.setdefault((group, direction), {})
        for p in peers:
            for peer, net in self.peers(p, rule):
                for proto in self.protos(rule, net):
                    bucket.setdefault((peer, proto), _Entry()).rule_ids.add(rule.id)

    def run(self) -> dict[str, str]:
        for rule in sorted_rules(self.policy):
            sources = resolve(self.workloads, rule, rule.sources)
            destinations = resolve(self.workloads, rule, rule.destinations)
            gsrc = [s for s in sources if s.name in self.groups]
            gdst = [d for d in destinations if d.name in self.groups]
            if not gsrc and not gdst:
                self.skipped.append(rule.id)
                continue
            reject_l7(TARGET, rule)  # security groups match L3/L4 only
            for d in gdst:
                self.add(self.groups[d.name], "in", rule, sources)
            for s in gsrc:
                self.add(self.groups[s.name], "out", rule, destinations)
        self.merge_port_ranges()
        return {FILE: self.terraform(), "README.md": self.readme()}

    def merge_port_ranges(self) -> None:
        """Join adjacent or overlapping port ranges of one group, direction, peer and protocol."""
        for key, bucket in self.entries.items():
            merged: dict[tuple[PeerKey, ProtoKey], _Entry] = {}
            spans: dict[tuple[PeerKey, str], list[tuple[int, int, set[str]]]] = {}
            for (peer, (proto, lo, hi)), entry in bucket.items():
                if proto in ("tcp", "udp") and lo is not None and hi is not None:
                    spans.setdefault((peer, proto), []).append((lo, hi, entry.rule_ids))
                else:
                    merged[(peer, (proto, lo, hi))] = entry
            for (peer, proto), items in spans.items():
                items.sort(key=lambda t: (t[0], t[1]))
                cur_lo, cur_hi, ids = items[0][0], items[0][1], set(items[0][2])
                for lo, hi, more in items[1:]:
                    if lo <= cur_hi + 1:
                        cur_hi = max(cur_hi, hi)
                        ids |= more
                    else:
                        merged[(peer, (proto, cur_lo, cur_hi))] = _Entry(ids)
                        cur_lo, cur_hi, ids = lo, hi, set(more)
                merged[(peer, (proto, cur_lo, cur_hi))] = _Entry(ids)
            self.entries[key] = merged

    # -- Terraform JSON ------------------------------------------------------------------------------

    def terraform(self) -> str:
        groups: Doc = {}
        for wname, res in sorted(self.groups.items(), key=lambda kv: kv[1]):
            zone = self.policy.zone_of().get(wname)
            tags = {"Name": f"microseg-{res[3:]}", WORKLOAD_TAG: template_escape(wname), "microseg:mode": self.mode}
            if zone is not None:
                tags["microseg:zone"] = template_escape(zone[:MAX_TAG_VALUE])
            groups[res] = {
                "name": f"microseg-{res[3:]}",
                "description": safe_text(f"microseg default deny for {wname}", 255) or "microseg default deny",
                "vpc_id": "${var.vpc_id}",
                "revoke_rules_on_delete": True,
                "tags": tags,
            }
        ingress: Doc = {}
        egress: Doc = {}
        for (group, direction), bucket in sorted(self.entries.items()):
            target = ingress if direction == "in" else egress
            names: dict[str, list[str]] = {}
            for (peer, proto), entry in sorted(bucket.items(), key=lambda kv: canon(kv[0])):
                rname = rule_resource_name(group, direction, peer, proto)
                names.setdefault(rname, []).append(canon([peer, proto]))
                target[rname] = self.rule_resource(group, peer, proto, entry)
            check_unique(names, "security group rule resource")
        resources: Doc = {GROUP_TYPE: groups}
        if ingress:
            resources[INGRESS_TYPE] = ingress
        if egress:
            resources[EGRESS_TYPE] = egress
        doc: Doc = {
            "//": _COMMENT,
            "terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": PROVIDER_VERSION}}},
            "variable": {"vpc_id": {"type": "string",
                                    "description": "ID of the VPC of the workloads these groups govern"}},
            "resource": resources,
            "output": {"security_group_ids": {
                "description": ("Security group id per group resource name (README.md maps them to workloads). "
                                + ("Attach each as the only group of its workload's network interfaces."
                                   if self.mode == "enforce" else
                                   "Observe mode: attach none of them; compare VPC Flow Logs with the rules.")),
                "value": {res: f"${{aws_security_group.{res}.id}}" for res in sorted(self.groups.values())},
            }},
        }
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"

    def rule_resource(self, group: str, peer: PeerKey, proto: ProtoKey, entry: _Entry) -> Doc:
        ip_protocol, lo, hi = proto
        doc: Doc = {"security_group_id": f"${{aws_security_group.{group}.id}}", "ip_protocol": ip_protocol}
        if lo is not None and hi is not None:
            doc["from_port"] = lo
            doc["to_port"] = hi
        kind, value = peer
        if kind == "sg":
            doc["referenced_security_group_id"] = f"${{aws_security_group.{value}.id}}"
        else:
            doc["cidr_ipv6" if ":" in value else "cidr_ipv4"] = value
        doc["description"] = safe_text("microseg " + ",".join(sorted(entry.rule_ids)), 255)
        return doc

    # -- README ---------------------------------------------------------------------------------------

    def quota_counts(self, group: str, direction: str) -> tuple[int, int]:
        v4 = v6 = 0
        for (kind, value), _proto in self.entries.get((group, direction), {}):
            if kind == "sg":
                v4 += 1
                v6 += 1
            elif ":" in value:
                v6 += 1
            else:
                v4 += 1
        return v4, v6

    def readme(self) -> str:
        lines = ["# AWS security groups generated by microseg", "", _README_MODE[self.mode], "",
                 "| workload | group resource | zone | inbound rules (IPv4/IPv6) | outbound rules (IPv4/IPv6) |",
                 "| --- | --- | --- | --- | --- |"]
        over: list[str] = []
        zones = self.policy.zone_of()
        for wname, res in sorted(self.groups.items(), key=lambda kv: kv[1]):
            cells = []
            for direction in ("in", "out"):
                v4, v6 = self.quota_counts(res, direction)
                cells.append(f"{v4}/{v6}")
                if v4 > RULE_QUOTA or v6 > RULE_QUOTA:
                    over.append(f"- {res} ({'inbound' if direction == 'in' else 'outbound'}: {v4} IPv4, {v6} IPv6)")
            lines.append(f"| {md(wname)} | {res} | {md(zones.get(wname, ''))} | {cells[0]} | {cells[1]} |")
        if not self.groups:
            lines.append("| (none: the policy has no host or managed service) | | | | |")
        lines += ["", "## Above the default rule quota", ""]
        lines += ([f"More than {RULE_QUOTA} rules in one direction and address family: raise the quota "
                   "(Service Quotas L-0EA8095F) before applying, or AWS refuses the extra rules.", ""] + over
                  if over else ["None."])
        not_governed = sorted(w.name for w in self.policy.workloads if not governed(w))
        lines += ["", "## Not governed here", "",
                  "Kubernetes workloads and external peers get no group: they are peers, named by address where "
                  "the policy gives one. Rules with no host or managed-service side are left to other targets:"]
        lines += [""] + ([f"- {md(r)}" for r in self.skipped] if self.skipped else ["None."])
        lines += ["", f"Workloads without a group (Kubernetes workloads and external peers): {len(not_governed)}.", "",
                  "## Caveats", "", *_CAVEATS, ""]
        return "\n".join(lines)


_README_MODE = {
    "enforce": ("Mode: **enforce**. Each host and managed service has one group whose rules are exactly the policy's "
                "allow rules on that side; AWS's default allow-all egress is revoked when Terraform creates the "
                "group. Attach each group (output `security_group_ids`) as the **only** group of its workload's "
                "network interfaces: the rules of all groups of an interface add up, so any other group widens it."),
    "observe": ("Mode: **observe**. Security groups have no log-only action: an attached group enforces at once. "
                "Apply this configuration to create the groups and let AWS validate every rule, but attach **none** "
                "of them. Enable VPC Flow Logs on the workloads' interfaces and compare them with the rules "
                "(`microseg validate`); flows the rules do not allow are what enforcement would deny. To enforce, "
                "compile with `--mode enforce` and attach each group as the only group of its workload's interfaces."),
}
_CAVEATS = (
    "- Security groups are stateful: replies to an allowed connection are always allowed.",
    "- Never `terraform import` an existing group into these resources: only a group Terraform creates has "
    "AWS's default allow-all egress rule revoked.",
    "- Do not add inline `ingress`/`egress` blocks or `aws_security_group_rule` resources to these groups: "
    "they and the rule resources overwrite each other.",
    "- External peers are written as CIDRs, with excepted ranges left out by splitting the CIDR: `internet` "
    "costs many rules.",
    "- A CIDR peer whose addresses contain another workload's addresses allows that workload too: security "
    "groups see addresses, not names.",
    "- Referencing a group across a VPC peering has restrictions (AWS VPC peering guide).",
)
