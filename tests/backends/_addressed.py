"""Test support for the address-based targets (aws_sg, panos, fortigate).

* :func:`addressed_policies`: a hypothesis strategy of policies made of hosts and managed services
  (governed), external peers with excepted ranges, and Kubernetes workloads that only talk among
  themselves or to external peers (so no rule needs a pod address). Addresses never overlap: an
  address-based target cannot tell apart two peers whose addresses overlap, and that caveat is
  documented, not tested for equality.
* :func:`governed_pairs`: the pairs these targets govern (at least one side a host or managed service).
* :class:`FwRule` and :func:`fw_connectivity`: an independent evaluator of zone-firewall rules
  (first match, allow rules before a final catch-all), used on what the PAN-OS and FortiGate tests
  parse back from the compiled text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from microseg.ir.model import (
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    PortRange,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)
from microseg.ir.semantics import Connections, connectivity

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
GOVERNED = (WorkloadKind.HOST, WorkloadKind.SERVICE)
_PLAIN_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_PLAIN_TEXT = st.just("why")


def networks(w: Workload) -> tuple[Net, ...]:
    """Addresses minus excepted ranges, computed here independently of the code under test."""
    out: list[Net] = []
    for a in w.addresses:
        parts: list[Net] = [ipaddress.ip_network(a, strict=False)]
        for e in w.except_addresses:
            ex = ipaddress.ip_network(e, strict=False)
            nxt: list[Net] = []
            for p in parts:
                if p.version == ex.version and p.overlaps(ex):  # type: ignore[arg-type]
                    if not p.subnet_of(ex):  # type: ignore[arg-type]
                        nxt.extend(p.address_exclude(ex))  # type: ignore[arg-type]
                else:
                    nxt.append(p)
            parts = nxt
        out.extend(parts)
    return tuple(out)


def governed_pairs(policy: Policy) -> dict[tuple[str, str], Connections]:
    """``connectivity(policy)`` restricted to the pairs with a host or managed service on one side."""
    gov = {w.name for w in policy.workloads if w.kind in GOVERNED}
    return {k: v for k, v in connectivity(policy).items() if k[0] in gov or k[1] in gov}


@st.composite
def port_sets(draw: st.DrawFn, min_port: int) -> tuple[str, ...]:
    ranges = draw(st.lists(st.tuples(st.integers(min_port, 70), st.integers(0, 5)), min_size=1, max_size=3))
    return tuple(f"{a}-{a + n}" if n else str(a) for a, n in ranges)


@st.composite
def addressed_policies(draw: st.DrawFn, *, names: st.SearchStrategy[str] = _PLAIN_NAMES,
                       texts: st.SearchStrategy[str] = _PLAIN_TEXT, min_port: int = 1,
                       sctp: str = "any") -> Policy:
    """Random policies for address-based targets; ``sctp`` is "any", "all-ports" or "none"."""
    n_gov, n_ext, n_k8s = draw(st.integers(1, 4)), draw(st.integers(0, 2)), draw(st.integers(0, 2))
    raw = draw(st.lists(names, min_size=n_gov + n_ext + n_k8s + 3, max_size=n_gov + n_ext + n_k8s + 3,
                        unique=True))
    zones = raw[:3]
    wl: list[Workload] = []
    for i in range(n_gov):
        addresses = [f"10.9.{i}.{draw(st.integers(1, 250))}/32"]
        if draw(st.booleans()):
            addresses.append(f"2001:db8:9::{i + 1:x}/128")
        wl.append(Workload(name=raw[3 + i], kind=draw(st.sampled_from(GOVERNED)), addresses=tuple(addresses)))
    for i in range(n_ext):
        addresses = [f"203.0.{113 + i}.0/24"]
        if draw(st.booleans()):
            addresses.append(f"2001:db8:{100 + i}::/48")
        excepts = (f"203.0.{113 + i}.128/25",) if draw(st.booleans()) else ()
        wl.append(Workload(name=raw[3 + n_gov + i], kind=WorkloadKind.EXTERNAL, addresses=tuple(addresses),
                           except_addresses=excepts))
    for i in range(n_k8s):
        wl.append(Workload(name=f"ns/{raw[3 + n_gov + n_ext + i]}", kind=WorkloadKind.KUBERNETES, namespace="ns",
                           selector=(("app", f"a{i}"),)))
    gov = [w.name for w in wl if w.kind in GOVERNED]
    ext = [w.name for w in wl if w.kind == WorkloadKind.EXTERNAL]
    k8s = [w.name for w in wl if w.kind == WorkloadKind.KUBERNETES]
    protocols = [Protocol.TCP, Protocol.UDP, Protocol.ICMP] + ([Protocol.SCTP] if sctp != "none" else [])
    rules = []
    for j in range(draw(st.integers(0, 6))):
        if k8s and draw(st.integers(0, 4)) == 0:  # a rule no address-based target governs
            src = draw(st.lists(st.sampled_from(k8s + ext), min_size=1, max_size=2, unique=True))
            dst = draw(st.lists(st.sampled_from(k8s), min_size=1, max_size=2, unique=True))
        else:
            src = draw(st.lists(st.sampled_from(gov + ext), min_size=1, max_size=3, unique=True))
            dst = draw(st.lists(st.sampled_from(gov + ext), min_size=1, max_size=3, unique=True))
            if not set(src + dst) & set(gov):
                dst = [*dst, draw(st.sampled_from(gov))]
        proto = draw(st.sampled_from(protocols))
        if proto == Protocol.ICMP:
            ports: tuple[str, ...] = ("0",)
        elif proto == Protocol.SCTP and sctp == "all-ports":
            ports = ("0-65535",)
        else:
            ports = draw(port_sets(min_port))
        kind = draw(st.sampled_from(list(JustificationKind)))
        rules.append(AllowRule(id=draw(texts) + f"-{j}", sources=tuple(src), destinations=tuple(dst), protocol=proto,
                               ports=ports, justification=Justification(kind=kind, text=draw(texts))))
    assignments = tuple(ZoneAssignment(workload=w.name, zone=draw(st.sampled_from(zones)), reason="test")
                        for w in wl)
    segments = tuple(Segment(name=z, trust=50) for z in zones)
    return Policy(workloads=tuple(wl), rules=tuple(rules), segments=segments, assignments=assignments)


# -- a zone-firewall evaluator ----------------------------------------------------------------------------


@dataclass
class FwRule:
    """A parsed firewall rule. ``None`` zones or networks mean "any"."""

    action: str
    src_zones: set[str] | None
    dst_zones: set[str] | None
    src_nets: list[Net] | None
    dst_nets: list[Net] | None
    # protocol -> port ranges; ICMP families as "icmp4"/"icmp6" -> () ; None = every protocol and port
    services: dict[str, list[PortRange]] | None = field(default=None)


def _covers(nets: Sequence[Net], cidrs: Sequence[Net]) -> bool:
    remaining = list(nets)
    for c in cidrs:
        nxt: list[Net] = []
        for n in remaining:
            if n.version == c.version and n.overlaps(c):  # type: ignore[arg-type]
                if not n.subnet_of(c):  # type: ignore[arg-type]
                    nxt.extend(n.address_exclude(c))  # type: ignore[arg-type]
            else:
                nxt.append(n)
        remaining = nxt
    return not remaining


def _side(w_nets: Sequence[Net], zone: str, zones: set[str] | None, nets: list[Net] | None) -> bool:
    if zones is not None and zone not in zones:
        return False
    return nets is None or _covers(w_nets, nets)


def fw_connectivity(rules: Sequence[FwRule], policy: Policy, zone_name: dict[str, str]) -> dict[tuple[str, str],
                                                                                                 Connections]:
    """Allowed connections on governed pairs: a (protocol, port) is allowed between two workloads when, for
    every address family both use, an allow rule above the first matching deny covers both sides' addresses
    of that family, their zones and the (protocol, port)."""
    gov = {w.name for w in policy.workloads if w.kind in GOVERNED}
    wl = policy.workload_map()
    zone_of = {a.workload: zone_name[a.zone] for a in policy.assignments}
    out: dict[tuple[str, str], Connections] = {}
    for s in sorted(wl):
        for d in sorted(wl):
            if s == d or not ({s, d} & gov):
                continue
            sn, dn = networks(wl[s]), networks(wl[d])
            fams = sorted({n.version for n in sn} & {n.version for n in dn})
            if not fams or s not in zone_of or d not in zone_of:
                continue
            pairs: list[tuple[Protocol, PortRange]] = []
            for proto in (Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP):
                # The decision is constant between the boundaries of the rules' port ranges.
                ranges = [p for r in rules if r.services for p in r.services.get(proto.value, [])]
                cuts = sorted({0, 65536} | {p.start for p in ranges} | {p.end + 1 for p in ranges})
                segments = [(0, 65535)] if proto == Protocol.ICMP else list(zip(cuts, [c - 1 for c in cuts[1:]],
                                                                                 strict=False))
                for lo, hi in segments:
                    if all(_allowed(rules, [n for n in sn if n.version == f], [n for n in dn if n.version == f],
                                    zone_of[s], zone_of[d], proto, lo, f) for f in fams):
                        pairs.append((proto, PortRange(start=lo, end=hi)))
            if pairs:
                out[(s, d)] = Connections.of(pairs)
    return out


def _allowed(rules: Sequence[FwRule], sn: list[Net], dn: list[Net], sz: str, dz: str, proto: Protocol, port: int,
             family: int) -> bool:
    for r in rules:
        if not (_side(sn, sz, r.src_zones, r.src_nets) and _side(dn, dz, r.dst_zones, r.dst_nets)):
            continue
        if r.services is not None:
            if proto == Protocol.ICMP:
                if f"icmp{family}" not in r.services:
                    continue
            elif not any(p.contains(port) for p in r.services.get(proto.value, [])):
                continue
        return r.action == "allow"
    return False
