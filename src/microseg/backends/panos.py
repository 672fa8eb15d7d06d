"""PAN-OS (Palo Alto Networks firewalls) back end: configure-mode ``set`` commands.

What is generated, in ``microseg.set`` (one command per line, for a single-vsys firewall's
configure mode; on Panorama prefix each line with the device group or template path):

* one **zone** per segment of the policy, ``ms-<segment>``, created as an empty layer-3 zone
  (``set zone Z network layer3 [ ]``): bind the interfaces (or subinterfaces) that lead to each
  segment yourself — microseg does not know the firewall's cabling;
* one **address object** per CIDR of every peer (``ip-netmask``), and an **address group** (static)
  per peer with more than one CIDR; the peer's addresses are its ``addresses`` minus its
  ``except_addresses``, written as the CIDRs of the difference (PAN-OS address objects have no
  "except"), so ``internet`` becomes a group of the CIDRs of 0.0.0.0/0 minus the private ranges;
* one **service object** per protocol and port set (``protocol tcp|udp|sctp port 80,443,8000-8080``);
* one **security rule** per allow rule and pair of zones it connects (``from``, ``to``, ``source``,
  ``destination``, ``application any``, ``service``, ``action allow``, ``log-end yes``, tag
  ``microseg``), so an address is only ever allowed from or to the zone of its workload. ``application
  any`` with a port-based service matches exactly the rule's protocol and ports. ICMP, which service
  objects cannot express, uses the App-IDs ``icmp``, ``ipv6-icmp`` and ``ping`` with service
  ``application-default`` (the firewall "recognizes" ICMP sessions "as an icmp or ipv6-icmp session",
  PAN-OS admin guide, "Security Policy Rules Based on ICMP and ICMPv6 Packets"; echo is App-ID
  ``ping``);
* a final rule, from any zone to any zone, moved to the bottom of the rulebase: ``microseg-deny-all``
  (``action deny``, ``log-end yes``) in enforce mode. PAN-OS's own default rules allow intrazone
  traffic and do not log, so without it traffic within a zone would pass unlogged.

Plus ``remove.set``, the ``delete`` commands for every rule and object ``microseg.set`` creates
(zones excepted: they carry the interfaces you bound). ``set`` adds members to an existing list
instead of replacing it, so updating a rule in place could keep members it no longer has: to change
the policy, load the *previous* output's ``remove.set`` and then the new ``microseg.set`` into the
candidate configuration, and commit once (a commit is atomic).

What is governed: hosts and managed services. An allow rule is compiled when one of its sides is one
of them; rules between Kubernetes workloads and external peers only are left to other targets and
listed in the README. Every peer of a compiled rule needs addresses (a Kubernetes workload has them
only when the policy gives them, the one documented address source for pods: otherwise
``UnsupportedFeature`` names the rule, never a pod CIDR) and a zone assignment.

Observe mode. PAN-OS has no log-only action, but logging is per rule, so ``mode="observe"`` emits the
same zones, objects and allow rules, and the final rule becomes ``microseg-observe-allow-all``
(``action allow``, ``log-end yes``, tag ``microseg-observe``): nothing is blocked, and every session
it logs is one enforcement would deny. Its distinct name is what the deny-log review keys on. Caveat:
that rule also lets through whatever the firewall's default interzone rule denied before.

Names: PAN-OS object names are at most 63 characters of letters, digits, ``_``, ``.`` and ``-``,
starting with a letter or digit (31 for zones); a name from the inventory that is not already such a
name is cleaned and gets an 8-hex-digit hash of the full name, so names stay unique and stable.
Descriptions keep only characters that are inert on the CLI (no quotes, backslashes, ``;``, ``{}``,
``$`` or control characters), so no text from the inventory can end a quoted string or add a command.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: the zone rules generated here match addresses, protocol and
ports only, and the same rule at layer 4 would admit every request. An external peer with DNS names
(``fqdns``) is compiled from its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`);
one with names and no addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microseg.backends._firewall import (
    Net,
    ZonePlan,
    ZoneRule,
    check_unique,
    digest,
    md,
    object_name,
    safe_text,
    zone_plan,
)
from microseg.backends.base import Mode, check_mode
from microseg.errors import MicrosegError
from microseg.ir.intervals import network_text
from microseg.ir.model import Policy, PortRange, Protocol

TARGET = "panos"
TAG = "microseg"
OBSERVE_TAG = "microseg-observe"
DENY_RULE = "microseg-deny-all"
OBSERVE_RULE = "microseg-observe-allow-all"
ICMP_APPLICATIONS = ("icmp", "ipv6-icmp", "ping")
_MAX_NAME = 63
_MAX_ZONE = 31
_MAX_DESCRIPTION = 255


def zone_name(segment: str) -> str:
    return object_name(segment, max_len=_MAX_ZONE, prefix="ms-")


def quote(text: str) -> str:
    """A double-quoted CLI string of text already reduced by :func:`safe_text`."""
    if safe_text(text, len(text)) != text:
        raise MicrosegError(f"refusing to quote unsafe text {text!r}")
    return f'"{text}"'


def members(names: Sequence[str]) -> str:
    return "[ " + " ".join(names) + " ]"


def port_list(ports: Sequence[PortRange]) -> str:
    return ",".join(str(p) for p in ports)


@dataclass(frozen=True)
class AddressBook:
    """Address objects and groups: one name per peer workload, every name checked for uniqueness."""

    objects: tuple[tuple[str, Net, str], ...]  # (name, network, workload)
    groups: tuple[tuple[str, tuple[str, ...], str], ...]  # (name, member names, workload)
    names: dict[str, str]  # workload -> object or group name


def address_book(plan: ZonePlan, *, max_len: int = _MAX_NAME) -> AddressBook:
    objects: list[tuple[str, Net, str]] = []
    groups: list[tuple[str, tuple[str, ...], str]] = []
    names: dict[str, str] = {}
    owners: dict[str, list[str]] = {}
    for wname in sorted(plan.networks):
        nets = plan.networks[wname]
        if not nets:
            continue
        base = object_name(wname, max_len=max_len - 8, prefix="ms-")
        names[wname] = base
        owners.setdefault(base, []).append(wname)
        if len(nets) == 1:
            objects.append((base, nets[0], wname))
            continue
        # "--" never occurs in an object_name, so member names cannot collide with other bases.
        member_names = tuple(f"{base}--{i}" for i in range(1, len(nets) + 1))
        objects += [(m, n, wname) for m, n in zip(member_names, nets, strict=True)]
        groups.append((base, member_names, wname))
    check_unique(owners, "address object")
    return AddressBook(tuple(objects), tuple(groups), names)


class PanosBackend:
    """Compiles a policy to PAN-OS set commands; see the module docstring for the mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "icmp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "observe-mode", "audit-log"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = PanosBackend()


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.plan = zone_plan(policy, TARGET)
        self.book = address_book(self.plan)
        zone_owners: dict[str, list[str]] = {}
        self.zones: dict[str, str] = {}
        for z in self.plan.zones:
            self.zones[z] = zone_name(z)
            zone_owners.setdefault(self.zones[z], []).append(z)
        check_unique(zone_owners, "zone")
        self.services: dict[str, tuple[str, tuple[PortRange, ...]]] = {}
        self.rule_names: list[tuple[str, ZoneRule]] = []
        by_rule: dict[str, list[ZoneRule]] = {}
        for zr in self.plan.rules:
            by_rule.setdefault(zr.rule.id, []).append(zr)
        owners: dict[str, list[str]] = {}
        for rid in sorted(by_rule):
            base = object_name(rid, max_len=_MAX_NAME - 6, prefix="ms-")
            zrs = by_rule[rid]
            for i, zr in enumerate(zrs, start=1):
                name = base if len(zrs) == 1 else f"{base}--{i}"
                owners.setdefault(name, []).append(f"{rid} {zr.src_zone}>{zr.dst_zone}")
                self.rule_names.append((name, zr))
        check_unique(owners, "security rule")

    def service(self, proto: Protocol, ports: tuple[PortRange, ...]) -> str:
        text = "_".join(str(p) for p in ports)
        name = f"ms-{proto.value.lower()}-{text}"
        if len(name) > _MAX_NAME:
            name = f"ms-{proto.value.lower()}-{digest(text)}"
        known = self.services.setdefault(name, (proto.value.lower(), ports))
        if known != (proto.value.lower(), ports):
            raise MicrosegError(f"two port sets compile to service {name!r}")
        return name

    def rule_line(self, name: str, zr: ZoneRule) -> str:
        src = sorted({self.book.names[w.name] for w in zr.sources})
        dst = sorted({self.book.names[w.name] for w in zr.destinations})
        if zr.rule.protocol == Protocol.ICMP:
            app, svc = members(ICMP_APPLICATIONS), members(["application-default"])
        else:
            app, svc = members(["any"]), members([self.service(zr.rule.protocol, zr.ports)])
        why = safe_text(f"{zr.rule.id} ({zr.rule.justification.kind.value}) {zr.rule.justification.text}",
                        _MAX_DESCRIPTION)
        return (f"set rulebase security rules {name} from {members([self.zones[zr.src_zone]])} "
                f"to {members([self.zones[zr.dst_zone]])} source {members(src)} destination {members(dst)} "
                f"source-user [ any ] category [ any ] application {app} service {svc} action allow "
                f"log-end yes tag {members([TAG])} description {quote(why)}")

    def run(self) -> dict[str, str]:
        rule_lines = [self.rule_line(name, zr) for name, zr in self.rule_names]
        final = DENY_RULE if self.mode == "enforce" else OBSERVE_RULE
        tags = [TAG] if self.mode == "enforce" else [TAG, OBSERVE_TAG]
        lines = [f"set tag {TAG} comments {quote('managed by microseg: edit the policy, not the firewall')}"]
        if self.mode == "observe":
            lines.append(f"set tag {OBSERVE_TAG} comments {quote('microseg observe mode: logs what enforce denies')}")
        lines += [f"set zone {self.zones[z]} network layer3 [ ]" for z in self.plan.zones]
        for name, net, wname in self.book.objects:
            lines.append(f"set address {name} ip-netmask {network_text(net)} tag {members([TAG])} "
                         f"description {quote(safe_text('microseg ' + wname, _MAX_DESCRIPTION))}")
        for name, member_names, wname in self.book.groups:
            lines.append(f"set address-group {name} static {members(member_names)} tag {members([TAG])} "
                         f"description {quote(safe_text('microseg ' + wname, _MAX_DESCRIPTION))}")
        for name, (proto, ports) in sorted(self.services.items()):
            lines.append(f"set service {name} protocol {proto} port {port_list(ports)}")
        lines += rule_lines
        action = "deny" if self.mode == "enforce" else "allow"
        lines.append(f"set rulebase security rules {final} from [ any ] to [ any ] source [ any ] destination [ any ] "
                     f"source-user [ any ] category [ any ] application [ any ] service [ any ] action {action} "
                     f"log-end yes tag {members(tags)} description "
                     + quote("microseg default deny" if self.mode == "enforce"
                             else "microseg observe: would be denied in enforce mode"))
        lines.append(f"move rulebase security rules {final} bottom")
        remove = [f"delete rulebase security rules {name}" for name, _ in self.rule_names]
        remove.append(f"delete rulebase security rules {final}")
        remove += [f"delete address-group {name}" for name, _, _ in self.book.groups]
        remove += [f"delete address {name}" for name, _, _ in self.book.objects]
        remove += [f"delete service {name}" for name in sorted(self.services)]
        remove += [f"delete tag {t}" for t in tags]
        return {"microseg.set": "\n".join(lines) + "\n", "remove.set": "\n".join(remove) + "\n",
                "README.md": self.readme(final)}

    def readme(self, final: str) -> str:
        lines = ["# PAN-OS security rules generated by microseg", "", _README_MODE[self.mode], "",
                 "## Zones", "", "Bind the interfaces that lead to each segment to its zone:", "",
                 "| zone | segment |", "| --- | --- |"]
        lines += [f"| {self.zones[z]} | {md(z)} |" for z in self.plan.zones]
        lines += ["", "## Rules", "", "| rule | policy rule | from | to | protocol |",
                  "| --- | --- | --- | --- | --- |"]
        for name, zr in self.rule_names:
            lines.append(f"| {name} | {md(zr.rule.id)} | {self.zones[zr.src_zone]} | {self.zones[zr.dst_zone]} | "
                         f"{(zr.rule.protocol.value + ' ' + port_list(zr.ports)).strip()} |")
        lines.append(f"| {final} | (default) | any | any | any |")
        lines += ["", "## Address objects", "", "| object | workload |", "| --- | --- |"]
        lines += [f"| {name} | {md(w)} |" for w, name in sorted(self.book.names.items())]
        lines += ["", "## Not compiled here", "", "Rules with no host or managed-service side (left to other targets):",
                  ""]
        lines += [f"- {md(rid)}" for rid, _ in self.plan.skipped] or ["None."]
        lines += ["", "## Applying and updating", "", *_APPLY, "", "## Caveats", "", *_CAVEATS, ""]
        return "\n".join(lines)


_README_MODE = {
    "enforce": ("Mode: **enforce**. `microseg.set` allows exactly the policy's rules between the workloads it "
                "governs (hosts and managed services), then `microseg-deny-all` denies and logs everything else "
                "that crosses the firewall."),
    "observe": ("Mode: **observe**. The same zones, objects and allow rules, but the final rule is "
                "`microseg-observe-allow-all`: it allows and logs (tag `microseg-observe`) every session the "
                "allow rules do not match. Those log entries are exactly what enforce mode would deny: review "
                "them, then switch to the enforce output."),
}
_APPLY = (
    "1. In configure mode, load `microseg.set` (for a change: first the previous output's `remove.set`, "
    "then the new `microseg.set`).",
    "2. Review the candidate configuration, then `commit`: the commit applies everything at once.",
    "",
    "`set` adds list members to an existing rule instead of replacing them, which is why a change goes "
    "through `remove.set` rather than by re-applying `microseg.set` alone.",
)
_CAVEATS = (
    "- A firewall only enforces traffic that crosses it: workloads of one segment behind one interface talk "
    "to each other without passing it.",
    "- The final rule matches all traffic through the firewall, including traffic between workloads this "
    "policy does not govern (Kubernetes pods, external peers): allow it with rules of your own above it.",
    "- ICMP rules allow the App-IDs icmp, ipv6-icmp and ping (every ICMP type); service objects cannot "
    "express ICMP.",
    "- External peers are address objects: a peer whose addresses contain another peer's addresses also "
    "allows that peer.",
)
