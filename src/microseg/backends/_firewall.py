"""Helpers shared by the address-based targets (security groups, PAN-OS, FortiGate).

These targets govern what has an address: hosts and managed services are put under default deny;
external peers and, where the policy gives them addresses, Kubernetes workloads are named as peers by
address. This module holds what they share and nothing target-specific: exact address sets (a peer's
addresses minus its excepted ranges, never wider), deterministic object names that cannot carry
syntax, free text reduced to characters that are inert in every one of their syntaxes, and the
zone-to-zone expansion of allow rules that both firewall targets compile.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from microseg.backends.base import reject_l7, reject_names_only
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.model import AllowRule, Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import merge_ranges

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Characters that are inert in every output syntax these targets write: no quote of any kind, no
# backslash, no template or variable sigil ($, %, {, }), no command separator (;), no markup (<, >)
# and no control character. It is also a subset of what AWS accepts in a security group or rule
# description ("a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*", EC2 API CreateSecurityGroup).
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 ._:/,@()+=#-]")

GOVERNED_KINDS = frozenset({WorkloadKind.HOST, WorkloadKind.SERVICE})


def governed(w: Workload) -> bool:
    """Hosts and managed services: what these targets put under default deny."""
    return w.kind in GOVERNED_KINDS


# -- addresses -------------------------------------------------------------------------------------------


def net_key(n: Net) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def parse_network(address: str, w: Workload, target: str, rule_id: str | None) -> Net:
    try:
        return ipaddress.ip_network(address, strict=True)
    except ValueError:
        raise UnsupportedFeature(target, f"address {address!r} of {w.name!r} (host bits set: write the host as /32 "
                                 "or /128, or the network address of the subnet)", rule_id) from None


def subtract(nets: Iterable[Net], excluded: Iterable[Net]) -> tuple[Net, ...]:
    """``nets`` minus ``excluded``, exactly, as the fewest CIDRs in canonical order.

    Two CIDRs are either nested or disjoint, so each exclusion drops a whole CIDR, splits one
    (``address_exclude``) or leaves it alone.
    """
    remaining: list[Net] = list(nets)
    for ex in excluded:
        out: list[Net] = []
        for n in remaining:
            if n.version != ex.version or not (n.overlaps(ex)):
                out.append(n)
            elif n.subnet_of(ex):  # type: ignore[arg-type]
                continue
            else:
                out.extend(n.address_exclude(ex))  # type: ignore[arg-type]
        remaining = out
    v4 = [n for n in remaining if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in remaining if isinstance(n, ipaddress.IPv6Network)]
    collapsed: list[Net] = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    return tuple(sorted(collapsed, key=net_key))


def effective_networks(w: Workload, target: str, rule_id: str | None = None) -> tuple[Net, ...]:
    """The workload's addresses minus its excepted ranges, exactly.

    None of these targets has an "except" construct, so ``internet`` (0.0.0.0/0 minus the private
    ranges) becomes the CIDRs of its complement: more objects or rules, never a wider one.
    """
    nets = [parse_network(a, w, target, rule_id) for a in w.addresses]
    excepts = [parse_network(a, w, target, rule_id) for a in w.except_addresses]
    return subtract(nets, excepts)


def peer_networks(w: Workload, target: str, rule_id: str) -> tuple[Net, ...]:
    """Addresses of a peer named by address (anything but a governed workload on a group target)."""
    if w.kind == WorkloadKind.KUBERNETES and not w.addresses:
        raise UnsupportedFeature(
            target, f"Kubernetes workload {w.name!r} as a peer: pods have no stable address in the policy (give "
            "the workload `addresses` that only its pods use, or leave this rule to the Kubernetes targets)",
            rule_id)
    reject_names_only(target, w, rule_id)
    if w.kind != WorkloadKind.KUBERNETES and not w.addresses:
        raise UnsupportedFeature(target, f"peer {w.name!r} without addresses", rule_id)
    return effective_networks(w, target, rule_id)


# -- rules -----------------------------------------------------------------------------------------------


def canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def sorted_rules(policy: Policy) -> list[AllowRule]:
    return sorted(policy.all_rules(), key=lambda r: (r.id, canon(r.model_dump(mode="json"))))


def resolve(workloads: Mapping[str, Workload], rule: AllowRule, names: Iterable[str]) -> list[Workload]:
    out = []
    for n in sorted(set(names)):
        w = workloads.get(n)
        if w is None:  # fail closed: an unresolvable name never compiles to something
            raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
        out.append(w)
    return out


def port_ranges(rule: AllowRule) -> tuple[PortRange, ...]:
    """Merged port ranges of a rule; ICMP has none (the IR's ICMP means every type and code)."""
    return () if rule.protocol == Protocol.ICMP else merge_ranges(rule.ports)


# -- names and text --------------------------------------------------------------------------------------


def digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def object_name(text: str, *, max_len: int, prefix: str = "", lower: bool = False,
                chars: str = "A-Za-z0-9_.-") -> str:
    """A name of ``[chars]`` (which must include ``-``) that starts with a letter or digit, at most ``max_len`` long.

    A text that already is such a name (after ``prefix``) is kept as it is; any other text gets an
    8-hex-digit hash of the full text, so names stay unique and stable. Results never contain "--":
    callers use that separator for suffixes of their own, which therefore cannot collide.
    """
    clean = re.sub(f"[^{chars}]", "-", text.lower() if lower else text)
    clean = re.sub(r"-{2,}", "-", clean).strip("-._")
    room = max_len - len(prefix)
    if clean == text and len(clean) <= room and (prefix or clean[:1].isalnum()):
        return prefix + clean
    clean = clean[:room - 9].strip("-._")
    return prefix + (f"{clean}-{digest(text)}" if clean else digest(text))


def safe_text(text: str, max_len: int) -> str:
    """Free text (names, rule ids) reduced to characters inert in every output syntax here."""
    return _SAFE_TEXT.sub("_", " ".join(text.split()))[:max_len].strip()


def check_unique(owners: Mapping[str, list[str]], what: str) -> None:
    for name, who in sorted(owners.items()):
        if len(set(who)) > 1:
            raise MicrosegError(f"{', '.join(repr(w) for w in sorted(set(who)))} all compile to {what} {name!r}")


def md(text: str) -> str:
    """Escape free text for a Markdown table cell: no HTML, no links, no new rows."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)


# -- zone firewalls --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneRule:
    """One allow rule restricted to one source zone and one destination zone.

    A firewall rule names zones and addresses; splitting by zone pair keeps each address in the zone
    of its workload, so no address is allowed from (or to) a zone it does not live in.
    """

    rule: AllowRule
    src_zone: str
    dst_zone: str
    sources: tuple[Workload, ...]
    destinations: tuple[Workload, ...]
    ports: tuple[PortRange, ...]  # merged; () for ICMP


@dataclass(frozen=True)
class ZonePlan:
    rules: tuple[ZoneRule, ...]
    zones: tuple[str, ...]  # every zone of the policy's segments and assignments, sorted
    networks: Mapping[str, tuple[Net, ...]]  # workload -> exact addresses, for every peer used
    skipped: tuple[tuple[str, str], ...]  # (rule id, why) for rules these targets leave alone


def zone_plan(policy: Policy, target: str) -> ZonePlan:
    """Expand allow rules into zone-pair rules for the workloads a zone firewall governs.

    A rule is compiled when one of its sides has a governed workload (host or managed service);
    rules between workloads that are all Kubernetes or external are another target's business and
    are listed in ``skipped``. Every peer of a compiled rule needs addresses and a zone.
    """
    workloads = policy.workload_map()
    zone_of = policy.zone_of()
    networks: dict[str, tuple[Net, ...]] = {}
    rules: list[ZoneRule] = []
    skipped: list[tuple[str, str]] = []
    for rule in sorted_rules(policy):
        sources = resolve(workloads, rule, rule.sources)
        destinations = resolve(workloads, rule, rule.destinations)
        if not any(governed(w) for w in (*sources, *destinations)):
            skipped.append((rule.id, "no host or managed-service side"))
            continue
        reject_l7(target, rule)  # zone firewall rules here match L3/L4 only (no App-ID/application control)
        ports = port_ranges(rule)
        if rule.protocol != Protocol.ICMP and not ports:
            continue
        by_zone: dict[str, dict[str, list[Workload]]] = {"src": {}, "dst": {}}
        for side, members in (("src", sources), ("dst", destinations)):
            for w in members:
                zone = zone_of.get(w.name)
                if zone is None:
                    raise UnsupportedFeature(target, f"workload {w.name!r} without a zone assignment (a zone "
                                             "firewall names the zone of every peer)", rule.id)
                nets = peer_networks(w, target, rule.id)
                networks[w.name] = nets
                if nets:  # a peer whose every address is excepted contributes nothing
                    by_zone[side].setdefault(zone, []).append(w)
        for zs in sorted(by_zone["src"]):
            for zd in sorted(by_zone["dst"]):
                rules.append(ZoneRule(rule, zs, zd, tuple(by_zone["src"][zs]), tuple(by_zone["dst"][zd]), ports))
    zones = sorted({s.name for s in policy.segments} | set(zone_of.values()))
    return ZonePlan(tuple(rules), tuple(zones), networks, tuple(skipped))


def split_families(nets: Sequence[Net]) -> tuple[tuple[Net, ...], tuple[Net, ...]]:
    return (tuple(n for n in nets if n.version == 4), tuple(n for n in nets if n.version == 6))
