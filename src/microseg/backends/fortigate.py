"""FortiGate (FortiOS 7.x) back end: CLI configuration script.

What is generated, in ``microseg.conf`` (a CLI script for one VDOM):

* ``config system zone``: one zone per segment of the policy, ``ms-<segment>``, with ``set intrazone
  deny`` and no interface: add the interfaces that lead to each segment yourself (microseg does not
  know the firewall's cabling);
* ``config firewall address`` / ``address6`` (``set subnet <ip> <mask>`` / ``set ip6 <cidr>``): one
  object per CIDR of every peer, per address family, and ``config firewall addrgrp`` / ``addrgrp6``
  for a peer with more than one CIDR in a family. A peer's addresses are its ``addresses`` minus its
  ``except_addresses``, written as the CIDRs of the difference (no "except" here either), so
  ``internet`` becomes groups of the CIDRs of 0.0.0.0/0 and ::/0 minus the private ranges;
* ``config firewall service custom``: one service per protocol and port set (``tcp-portrange``,
  ``udp-portrange``, ``sctp-portrange``), and ``ms-icmp`` / ``ms-icmp6`` (``set protocol ICMP`` /
  ``ICMP6`` without a type: every type) for ICMP;
* ``config firewall policy``: one ``accept`` policy per allow rule and pair of zones it connects
  (``srcintf``/``dstintf`` are the zones, ``srcaddr``/``dstaddr`` and ``srcaddr6``/``dstaddr6`` the
  peers' objects, ``set logtraffic all``), so an address is only allowed from or to the zone of its
  workload; an address family is set only when both sides have addresses in it. Policy ids start at
  ``1000001`` in the policy's canonical order; the last one is ``microseg-deny-all`` (``srcintf``/
  ``dstintf`` ``any``, every address, service ``ALL``, ``action deny``, ``set logtraffic all``).
  FortiOS ends every policy list with an implicit deny that does not log by default; the explicit
  final policy makes the default deny visible and logged.

Port 0 is not a FortiOS destination port: ranges are clipped to 1-65535 (narrower, never wider), and
a rule on port 0 only compiles to nothing. Plus ``remove.conf``: the ``delete`` commands for every
policy and object ``microseg.conf`` creates (zones excepted: they carry the interfaces you added).
``edit <id>`` keeps the fields a previous version set and this one does not, and new policies are
appended after existing ones: to change the policy, run the previous output's ``remove.conf`` and
then the new ``microseg.conf`` (traffic of the governed workloads falls to the implicit deny in
between: it fails closed).

What is governed, and the peers: as for PAN-OS (:mod:`microseg.backends.panos`): hosts and managed
services; rules with none of them on either side are left to other targets and listed in the README;
every peer of a compiled rule needs addresses (Kubernetes workloads only when the policy gives them,
else ``UnsupportedFeature`` naming the rule) and a zone.

Observe mode. FortiOS has no log-only policy action, but logging is per policy: ``mode="observe"``
emits the same zones, objects and accept policies and makes the final policy
``microseg-observe-allow`` (``action accept``, ``set logtraffic all``): nothing is blocked, and its log
entries (policy name ``microseg-observe-allow``) are exactly the sessions enforce mode would deny.
Caveat: it also accepts what the implicit deny blocked before.

Strings: FortiOS refuses ``"``, ``'``, ``<`` and ``>`` in text strings ("Text strings", FortiOS
handbook), so they cannot be escaped, only kept out: names are made of ``[A-Za-z0-9_.-]`` (a name
that had to change gets an 8-hex-digit hash of the full name; policy names and zones are at most 35
characters), comments keep only characters inert on the CLI (no quotes, backslashes, ``;``, ``{}``,
``$`` or control characters), and every string is written double-quoted.

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: the firewall policies generated here match addresses and
services only, and the same rule at layer 4 would admit every request. An external peer with DNS names
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
    split_families,
    zone_plan,
)
from microseg.backends.base import Mode, check_mode
from microseg.errors import MicrosegError
from microseg.ir.intervals import network_text
from microseg.ir.model import Policy, PortRange, Protocol

TARGET = "fortigate"
POLICY_ID_BASE = 1_000_000
DENY_POLICY = "microseg-deny-all"
OBSERVE_POLICY = "microseg-observe-allow"
_MAX_NAME = 63
_MAX_SHORT = 35  # policy names and zone names
_MAX_COMMENT = 255
_INDENT = "    "


def q(text: str) -> str:
    """A double-quoted FortiOS string of text that contains nothing FortiOS would read as syntax."""
    if safe_text(text, len(text)) != text:
        raise MicrosegError(f"refusing to quote unsafe text {text!r}")
    return f'"{text}"'


def qs(names: Sequence[str]) -> str:
    return " ".join(q(n) for n in names)


def zone_name(segment: str) -> str:
    return object_name(segment, max_len=_MAX_SHORT, prefix="ms-")


def clip(ports: Sequence[PortRange]) -> tuple[PortRange, ...]:
    out = []
    for r in ports:
        start = max(r.start, 1)
        if start <= r.end:
            out.append(PortRange(start=start, end=r.end))
    return tuple(out)


@dataclass(frozen=True)
class _Family:
    """Address objects and groups of one address family."""

    objects: tuple[tuple[str, Net, str], ...]  # (name, network, workload)
    groups: tuple[tuple[str, tuple[str, ...], str], ...]
    names: dict[str, str]  # workload -> object or group name


def _families(plan: ZonePlan) -> tuple[_Family, _Family]:
    built = []
    owners: dict[str, list[str]] = {}
    for version in (4, 6):
        objects: list[tuple[str, Net, str]] = []
        groups: list[tuple[str, tuple[str, ...], str]] = []
        names: dict[str, str] = {}
        for wname in sorted(plan.networks):
            nets = split_families(plan.networks[wname])[0 if version == 4 else 1]
            if not nets:
                continue
            # "--" never occurs in an object_name: the suffixes below cannot collide with another base.
            base = object_name(wname, max_len=_MAX_NAME - 12, prefix="ms-") + ("--v6" if version == 6 else "")
            names[wname] = base
            owners.setdefault(base, []).append(wname)
            if len(nets) == 1:
                objects.append((base, nets[0], wname))
                continue
            member_names = tuple(f"{base}--{i}" for i in range(1, len(nets) + 1))
            objects += [(m, n, wname) for m, n in zip(member_names, nets, strict=True)]
            groups.append((base, member_names, wname))
        built.append(_Family(tuple(objects), tuple(groups), names))
    check_unique(owners, "address object")
    return built[0], built[1]


class FortigateBackend:
    """Compiles a policy to a FortiOS CLI script; see the module docstring for the mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "icmp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "observe-mode", "audit-log"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = FortigateBackend()


@dataclass(frozen=True)
class _Policy:
    id: int
    name: str
    zone_rule: ZoneRule
    addrs4: tuple[tuple[str, ...], tuple[str, ...]]
    addrs6: tuple[tuple[str, ...], tuple[str, ...]]
    services: tuple[str, ...]


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.plan = zone_plan(policy, TARGET)
        self.v4, self.v6 = _families(self.plan)
        self.zones = {z: zone_name(z) for z in self.plan.zones}
        zone_owners: dict[str, list[str]] = {}
        for z, name in self.zones.items():
            zone_owners.setdefault(name, []).append(z)
        check_unique(zone_owners, "zone")
        self.services: dict[str, tuple[str, tuple[PortRange, ...]]] = {}
        self.policies: list[_Policy] = []
        self.no_family: list[str] = []
        by_rule: dict[str, list[ZoneRule]] = {}
        for zr in self.plan.rules:
            by_rule.setdefault(zr.rule.id, []).append(zr)
        owners: dict[str, list[str]] = {}
        next_id = POLICY_ID_BASE + 1
        for rid in sorted(by_rule):
            base = object_name(rid, max_len=_MAX_SHORT - 5, prefix="ms-")
            zrs = by_rule[rid]
            for i, zr in enumerate(zrs, start=1):
                name = base if len(zrs) == 1 else f"{base}--{i}"
                built = self.build(next_id, name, zr)
                if built is None:
                    continue
                owners.setdefault(name, []).append(f"{rid} {zr.src_zone}>{zr.dst_zone}")
                self.policies.append(built)
                next_id += 1
        check_unique(owners, "policy name")
        self.final_id = next_id

    def service(self, proto: str, ports: tuple[PortRange, ...]) -> str:
        text = "_".join(str(p) for p in ports)
        name = f"ms-{proto.lower()}-{text}" if text else f"ms-{proto.lower()}"
        if len(name) > _MAX_NAME:
            name = f"ms-{proto.lower()}-{digest(text)}"
        if self.services.setdefault(name, (proto, ports)) != (proto, ports):
            raise MicrosegError(f"two port sets compile to service {name!r}")
        return name

    def build(self, pid: int, name: str, zr: ZoneRule) -> _Policy | None:
        sides = []
        for fam in (self.v4, self.v6):
            src = tuple(sorted({fam.names[w.name] for w in zr.sources if w.name in fam.names}))
            dst = tuple(sorted({fam.names[w.name] for w in zr.destinations if w.name in fam.names}))
            sides.append((src, dst) if src and dst else ((), ()))
        if not any(s for s, _ in sides):
            self.no_family.append(f"{zr.rule.id}: {zr.src_zone} to {zr.dst_zone}")
            return None
        if zr.rule.protocol == Protocol.ICMP:
            services = tuple(svc for svc, (s, _) in zip(("ms-icmp", "ms-icmp6"), sides, strict=True) if s)
            for svc in services:
                self.service("ICMP" if svc == "ms-icmp" else "ICMP6", ())
        else:
            ports = clip(zr.ports)
            if not ports:
                return None  # e.g. only port 0: nothing FortiOS can name
            services = (self.service(zr.rule.protocol.value, ports),)
        return _Policy(pid, name, zr, sides[0], sides[1], services)

    # -- output ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        out: list[str] = []
        block = _Block(out)
        with block("config system zone"):
            for z in self.plan.zones:
                with block(f"edit {q(self.zones[z])}", end="next"):
                    block.line("set intrazone deny")
        for fam, table in ((self.v4, "address"), (self.v6, "address6")):
            if fam.objects:
                with block(f"config firewall {table}"):
                    for oname, net, wname in fam.objects:
                        with block(f"edit {q(oname)}", end="next"):
                            if net.version == 4:
                                block.line(f"set subnet {net.network_address} {net.netmask}")
                            else:
                                block.line(f"set ip6 {network_text(net)}")
                            block.line(f"set comment {q(safe_text('microseg ' + wname, _MAX_COMMENT))}")
        for fam, table in ((self.v4, "addrgrp"), (self.v6, "addrgrp6")):
            if fam.groups:
                with block(f"config firewall {table}"):
                    for gname, member_names, wname in fam.groups:
                        with block(f"edit {q(gname)}", end="next"):
                            block.line(f"set member {qs(member_names)}")
                            block.line(f"set comment {q(safe_text('microseg ' + wname, _MAX_COMMENT))}")
        if self.services:
            with block("config firewall service custom"):
                for sname, (proto, ports) in sorted(self.services.items()):
                    with block(f"edit {q(sname)}", end="next"):
                        if proto in ("ICMP", "ICMP6"):
                            block.line(f"set protocol {proto}")
                        else:
                            block.line("set protocol TCP/UDP/SCTP")
                            block.line(f"set {proto.lower()}-portrange {' '.join(str(p) for p in ports)}")
                        block.line(f"set comment {q('microseg')}")
        with block("config firewall policy"):
            for p in self.policies:
                zr = p.zone_rule
                with block(f"edit {p.id}", end="next"):
                    block.line(f"set name {q(p.name)}")
                    block.line(f"set srcintf {q(self.zones[zr.src_zone])}")
                    block.line(f"set dstintf {q(self.zones[zr.dst_zone])}")
                    if p.addrs4[0]:
                        block.line(f"set srcaddr {qs(p.addrs4[0])}")
                        block.line(f"set dstaddr {qs(p.addrs4[1])}")
                    if p.addrs6[0]:
                        block.line(f"set srcaddr6 {qs(p.addrs6[0])}")
                        block.line(f"set dstaddr6 {qs(p.addrs6[1])}")
                    block.line("set action accept")
                    block.line(f"set schedule {q('always')}")
                    block.line(f"set service {qs(p.services)}")
                    block.line("set logtraffic all")
                    why = f"{zr.rule.id} ({zr.rule.justification.kind.value}) {zr.rule.justification.text}"
                    block.line(f"set comments {q(safe_text(why, _MAX_COMMENT))}")
            final = DENY_POLICY if self.mode == "enforce" else OBSERVE_POLICY
            with block(f"edit {self.final_id}", end="next"):
                block.line(f"set name {q(final)}")
                block.line(f"set srcintf {q('any')}")
                block.line(f"set dstintf {q('any')}")
                block.line(f"set srcaddr {q('all')}")
                block.line(f"set dstaddr {q('all')}")
                block.line(f"set srcaddr6 {q('all')}")
                block.line(f"set dstaddr6 {q('all')}")
                block.line("set action " + ("deny" if self.mode == "enforce" else "accept"))
                block.line(f"set schedule {q('always')}")
                block.line(f"set service {q('ALL')}")
                block.line("set logtraffic all")
                block.line("set comments " + q("microseg default deny" if self.mode == "enforce"
                                               else "microseg observe: would be denied in enforce mode"))
        return {"microseg.conf": "\n".join(out) + "\n", "remove.conf": self.remove(), "README.md": self.readme()}

    def remove(self) -> str:
        out: list[str] = []
        block = _Block(out)
        with block("config firewall policy"):
            for pid in [p.id for p in self.policies] + [self.final_id]:
                block.line(f"delete {pid}")
        for name, entries in (("addrgrp", self.v4.groups), ("addrgrp6", self.v6.groups),
                              ("address", self.v4.objects), ("address6", self.v6.objects)):
            if entries:
                with block(f"config firewall {name}"):
                    for ename, _, _ in entries:
                        block.line(f"delete {q(ename)}")
        if self.services:
            with block("config firewall service custom"):
                for sname in sorted(self.services):
                    block.line(f"delete {q(sname)}")
        return "\n".join(out) + "\n"

    def readme(self) -> str:
        final = DENY_POLICY if self.mode == "enforce" else OBSERVE_POLICY
        lines = ["# FortiGate policies generated by microseg", "", _README_MODE[self.mode], "",
                 "## Zones", "", "Add the interfaces that lead to each segment to its zone:", "",
                 "| zone | segment |", "| --- | --- |"]
        lines += [f"| {self.zones[z]} | {md(z)} |" for z in self.plan.zones]
        lines += ["", "## Policies", "", "| id | name | policy rule | from | to | service |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for p in self.policies:
            zr = p.zone_rule
            lines.append(f"| {p.id} | {p.name} | {md(zr.rule.id)} | {self.zones[zr.src_zone]} | "
                         f"{self.zones[zr.dst_zone]} | {' '.join(p.services)} |")
        lines.append(f"| {self.final_id} | {final} | (default) | any | any | ALL |")
        lines += ["", f"Policy ids {POLICY_ID_BASE + 1}-{self.final_id} belong to microseg.", "",
                  "## Not compiled here", "", "Rules with no host or managed-service side (left to other targets):", ""]
        lines += [f"- {md(rid)}" for rid, _ in self.plan.skipped] or ["None."]
        if self.no_family:
            lines += ["", "Zone pairs whose sources and destinations share no address family (nothing to allow):", ""]
            lines += [f"- {md(x)}" for x in self.no_family]
        lines += ["", "## Applying and updating", "", *_APPLY, "", "## Caveats", "", *_CAVEATS, ""]
        return "\n".join(lines)


class _Block:
    """Indented ``config``/``edit`` blocks, closed by ``end``/``next``."""

    def __init__(self, out: list[str]) -> None:
        self.out = out
        self.depth = 0
        self._pending: list[str] = []

    def line(self, text: str) -> None:
        self.out.append(_INDENT * self.depth + text)

    def __call__(self, opener: str, *, end: str = "end") -> _Block:
        self.line(opener)
        self._pending.append(end)
        return self

    def __enter__(self) -> _Block:
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        self.line(self._pending.pop())


_README_MODE = {
    "enforce": ("Mode: **enforce**. `microseg.conf` accepts exactly the policy's rules between the workloads it "
                "governs (hosts and managed services); the last policy, `microseg-deny-all`, denies and logs "
                "everything else (FortiOS's implicit deny does not log by default)."),
    "observe": ("Mode: **observe**. The same zones, objects and accept policies, but the last policy is "
                "`microseg-observe-allow`: it accepts and logs every session the policies above do not match. "
                "Its log entries are exactly what enforce mode would deny: review them, then switch to the "
                "enforce output."),
}
_APPLY = (
    "1. Run `microseg.conf` in the CLI of the VDOM (for a change: first the previous output's `remove.conf`, "
    "then the new `microseg.conf`).",
    "2. Add the interfaces of each segment to its zone.",
    "",
    "`edit <id>` keeps fields an earlier version set and new policies are appended after existing ones, "
    "which is why a change goes through `remove.conf`.",
)
_CAVEATS = (
    "- A firewall only enforces traffic that crosses it: workloads of one segment behind one interface talk "
    "to each other without passing it.",
    "- The last policy matches all traffic through the firewall, including traffic between workloads this "
    "policy does not govern (Kubernetes pods, external peers): allow it with policies of your own above it.",
    "- Port 0 is not a FortiOS port: port ranges start at 1.",
    "- Consolidated IPv4/IPv6 policies (`srcaddr6` in `firewall policy`) need FortiOS 7.0 or later.",
    "- External peers are address objects: a peer whose addresses contain another peer's addresses also "
    "allows that peer.",
)
