"""Read security groups in Terraform JSON back into per-pair connectivity (the aws_sg back end's read-back).

``read_back(files, policy)`` parses every ``*.tf.json`` file of ``files`` (the aws_sg back end's output,
or a hand-edited variant of it) and evaluates the security groups for the policy's universe of
workloads. A workload is governed when a group carries its name in the ``microseg:workload`` tag.
The result has, for every ordered pair of distinct workloads of which at least one is governed, the
allowed connections; pairs with none are omitted, as in :func:`microseg.ir.semantics.connectivity`.

Evaluation follows how AWS applies security groups: a group's rules are allow rules and add up; a
connection leaves a governed source only if one of its group's egress rules matches the destination,
protocol and port, and reaches a governed destination only if one of its group's ingress rules
matches the source; an ungoverned side does not filter. A rule matches a peer when it references the
peer's group, or when its CIDRs (with the other rules on the same protocol and port) contain *all*
of the peer's addresses (its ``addresses`` minus its ``except_addresses``): a peer part of whose
addresses are allowed is not counted as allowed. ICMP counts as allowed only for every ICMP type of
each address family the peer uses (both families for a peer referenced by group), as the IR's ICMP
means every type. Protocol ``-1`` is every protocol and port; a protocol number other than tcp,
udp, icmp and icmpv6 is every port of that protocol ("IpPermission", EC2 API reference).

Fail closed: a resource type, attribute, reference, protocol or ICMP type this reader does not
evaluate exactly raises :class:`~microseg.errors.InputError`; it never guesses a verdict. In
particular inline ``ingress``/``egress`` blocks and ``aws_security_group_rule`` resources are refused.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload
from microseg.ir.semantics import Connections, merge_ranges

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

GROUP_TYPE = "aws_security_group"
RULE_TYPES = {"aws_vpc_security_group_ingress_rule": "in", "aws_vpc_security_group_egress_rule": "out"}
WORKLOAD_TAG = "microseg:workload"
_TOP_KEYS = {"//", "terraform", "variable", "resource", "output"}
_GROUP_KEYS = {"name", "description", "vpc_id", "revoke_rules_on_delete", "tags", "//"}
_RULE_KEYS = {"security_group_id", "ip_protocol", "from_port", "to_port", "cidr_ipv4", "cidr_ipv6",
              "referenced_security_group_id", "description", "tags", "//"}
_GROUP_REF = re.compile(r"\$\{aws_security_group\.([A-Za-z_][A-Za-z0-9_-]*)\.id\}")
_PROTOCOL_NAMES = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58"}
_IR_PROTOCOL = {"6": Protocol.TCP, "17": Protocol.UDP, "132": Protocol.SCTP}
_ALL = PortRange(start=0, end=65535)


@dataclass(frozen=True)
class _Rule:
    protocol: str  # IANA number as a string, or "-1"
    low: int  # port range (TCP/UDP), or -1..-1 for "all ICMP types"
    high: int
    group: str | None  # referenced group resource
    net: Net | None


@dataclass
class _Group:
    workload: str
    rules: dict[str, list[_Rule]] = field(default_factory=lambda: {"in": [], "out": []})


def template_unescape(text: str, where: str) -> str:
    """The literal value of a Terraform JSON string that must not contain a template sequence."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i) or text.startswith("%%{", i):
            out.append(text[i + 1:i + 3])
            i += 3
        elif text.startswith("${", i) or text.startswith("%{", i):
            raise InputError(f"template sequence in a literal string: {text!r}", field=where)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError("expected an object", field=where)
    return value


def _int(doc: Mapping[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"expected an integer {key}", field=where)
    return value


def _parse_rule(doc: Mapping[str, Any], where: str, groups: Mapping[str, _Group]) -> tuple[str, _Rule]:
    unknown = set(doc) - _RULE_KEYS
    if unknown:
        raise InputError(f"attributes this reader does not evaluate: {', '.join(sorted(unknown))}", field=where)
    ref = _GROUP_REF.fullmatch(str(doc.get("security_group_id", "")))
    if ref is None or ref.group(1) not in groups:
        raise InputError("security_group_id must reference a group of this configuration", field=where)
    raw = doc.get("ip_protocol")
    if not isinstance(raw, str):
        raise InputError("expected a string ip_protocol", field=where)
    proto = _PROTOCOL_NAMES.get(raw.lower(), raw)
    if proto == "all":
        proto = "-1"
    if proto != "-1" and proto not in ("1", "58") and proto not in _IR_PROTOCOL:
        raise InputError(f"protocol {raw!r} is outside the policy's protocols", field=where)
    low, high = -1, -1
    if proto in ("6", "17"):
        low, high = _int(doc, "from_port", where), _int(doc, "to_port", where)
        if not 0 <= low <= high <= 65535:
            raise InputError(f"port range {low}-{high}", field=where)
    elif proto in ("1", "58"):
        if proto == "58" and "from_port" not in doc and "to_port" not in doc:
            pass  # "For icmpv6, the port range is optional; if you omit it, all types and codes"
        elif _int(doc, "from_port", where) != -1 or _int(doc, "to_port", where) != -1:
            raise InputError("ICMP rules for some types only cannot be compared with the policy", field=where)
    peers = [k for k in ("cidr_ipv4", "cidr_ipv6", "referenced_security_group_id") if k in doc]
    if len(peers) != 1:
        raise InputError("expected exactly one of cidr_ipv4, cidr_ipv6, referenced_security_group_id", field=where)
    group: str | None = None
    net: Net | None = None
    if peers[0] == "referenced_security_group_id":
        m = _GROUP_REF.fullmatch(str(doc[peers[0]]))
        if m is None or m.group(1) not in groups:
            raise InputError("referenced_security_group_id must reference a group of this configuration", field=where)
        group = m.group(1)
    else:
        try:
            net = ipaddress.ip_network(str(doc[peers[0]]), strict=False)
        except ValueError:
            raise InputError(f"invalid CIDR {doc[peers[0]]!r}", field=where) from None
        if (net.version == 6) != (peers[0] == "cidr_ipv6"):
            raise InputError(f"{peers[0]} holds an IPv{net.version} CIDR", field=where)
    return ref.group(1), _Rule(proto, low, high, group, net)


def parse(files: Mapping[str, str], policy: Policy) -> dict[str, _Group]:
    """Groups by resource name, with their rules."""
    names = {w.name for w in policy.workloads}
    groups: dict[str, _Group] = {}
    rule_docs: list[tuple[str, str, Mapping[str, Any]]] = []
    for path in sorted(p for p in files if p.endswith(".tf.json")):
        try:
            doc = _obj(json.loads(files[path]), path)
        except json.JSONDecodeError as e:
            raise InputError(e.msg, file=path, line=e.lineno, column=e.colno) from None
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise InputError(f"top-level blocks this reader does not evaluate: {', '.join(sorted(unknown))}",
                             file=path)
        for rtype, resources in _obj(doc.get("resource", {}), f"{path}: resource").items():
            if rtype == "//":
                continue
            if rtype != GROUP_TYPE and rtype not in RULE_TYPES:
                raise InputError(f"resource type {rtype} is not evaluated by this reader", file=path)
            for rname, body in _obj(resources, f"{path}: {rtype}").items():
                where = f"{rtype}.{rname}"
                body = _obj(body, where)
                if rtype in RULE_TYPES:
                    rule_docs.append((RULE_TYPES[rtype], where, body))
                    continue
                unknown = set(body) - _GROUP_KEYS
                if unknown:
                    raise InputError(f"attributes this reader does not evaluate: {', '.join(sorted(unknown))} "
                                     "(inline rules are refused)", file=path, field=where)
                tags = _obj(body.get("tags", {}), where)
                workload = template_unescape(str(tags.get(WORKLOAD_TAG, "")), where)
                if workload not in names:
                    raise InputError(f"group for unknown workload {workload!r}", file=path, field=where)
                if rname in groups or any(g.workload == workload for g in groups.values()):
                    raise InputError(f"second group for {workload!r}", file=path, field=where)
                groups[rname] = _Group(workload)
    for direction, where, body in rule_docs:
        owner, rule = _parse_rule(body, where, groups)
        groups[owner].rules[direction].append(rule)
    return groups


# -- evaluation ------------------------------------------------------------------------------------------


def _networks(w: Workload) -> tuple[Net, ...]:
    """The workload's addresses minus its excepted ranges (an independent re-implementation)."""
    remaining: list[Net] = [ipaddress.ip_network(a, strict=False) for a in w.addresses]
    for raw in w.except_addresses:
        ex = ipaddress.ip_network(raw, strict=False)
        out: list[Net] = []
        for n in remaining:
            if n.version != ex.version or not n.overlaps(ex):
                out.append(n)
            elif not n.subnet_of(ex):  # type: ignore[arg-type]
                out.extend(n.address_exclude(ex))  # type: ignore[arg-type]
        remaining = out
    return tuple(remaining)


def _covered(nets: Iterable[Net], cidrs: Iterable[Net]) -> bool:
    remaining = list(nets)
    if not remaining:
        return False
    for c in cidrs:
        nxt: list[Net] = []
        for n in remaining:
            if n.version != c.version or not n.overlaps(c):
                nxt.append(n)
            elif not n.subnet_of(c):  # type: ignore[arg-type]
                nxt.extend(n.address_exclude(c))  # type: ignore[arg-type]
        remaining = nxt
        if not remaining:
            return True
    return not remaining


class _Matcher:
    """What one group's rules of one direction allow to or from one peer."""

    def __init__(self, rules: list[_Rule], peer_group: str | None, peer_nets: tuple[Net, ...]) -> None:
        self.rules = rules
        self.peer_group = peer_group
        self.nets = peer_nets

    def covers(self, rules: Iterable[_Rule], family: int | None = None) -> bool:
        rules = list(rules)
        if self.peer_group is not None and any(r.group == self.peer_group for r in rules):
            return True
        nets = [n for n in self.nets if family is None or n.version == family]
        return _covered(nets, [r.net for r in rules if r.net is not None])

    def ports(self, number: str) -> tuple[PortRange, ...]:
        relevant = [r for r in self.rules if r.protocol in ("-1", number)]
        spans = [(0, 65535, r) if r.protocol == "-1" or number == "132" else (r.low, r.high, r) for r in relevant]
        cuts = sorted({0, 65536} | {lo for lo, _, _ in spans} | {hi + 1 for _, hi, _ in spans})
        allowed = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            if self.covers(r for lo, hi, r in spans if lo <= a and b - 1 <= hi):
                allowed.append(PortRange(start=a, end=b - 1))
        return merge_ranges(allowed)

    def icmp(self) -> bool:
        families = (4, 6) if self.peer_group is not None else tuple(sorted({n.version for n in self.nets}))
        if not families:
            return False
        for fam in families:
            number = "1" if fam == 4 else "58"
            if not self.covers((r for r in self.rules if r.protocol in ("-1", number)), fam):
                return False
        return True

    def connections(self) -> dict[Protocol, tuple[PortRange, ...]]:
        out: dict[Protocol, tuple[PortRange, ...]] = {}
        for number, proto in _IR_PROTOCOL.items():
            ranges = self.ports(number)
            if ranges:
                out[proto] = ranges
        if self.icmp():
            out[Protocol.ICMP] = (_ALL,)
        return out


def _intersect(a: tuple[PortRange, ...], b: tuple[PortRange, ...]) -> tuple[PortRange, ...]:
    out = [PortRange(start=max(x.start, y.start), end=min(x.end, y.end))
           for x in a for y in b if max(x.start, y.start) <= min(x.end, y.end)]
    return merge_ranges(out)


def read_back(files: Mapping[str, str], policy: Policy) -> dict[tuple[str, str], Connections]:
    """Allowed connections per ordered pair of distinct workloads, at least one of them governed."""
    groups = parse(files, policy)
    group_of = {g.workload: name for name, g in groups.items()}
    workloads = policy.workload_map()
    nets = {w.name: _networks(w) for w in policy.workloads}
    out: dict[tuple[str, str], Connections] = {}
    for s in sorted(workloads):
        for d in sorted(workloads):
            if s == d or (s not in group_of and d not in group_of):
                continue
            sides: list[dict[Protocol, tuple[PortRange, ...]]] = []
            if s in group_of:
                sides.append(_Matcher(groups[group_of[s]].rules["out"], group_of.get(d), nets[d]).connections())
            if d in group_of:
                sides.append(_Matcher(groups[group_of[d]].rules["in"], group_of.get(s), nets[s]).connections())
            allowed = sides[0]
            for other in sides[1:]:
                allowed = {p: r for p in allowed.keys() & other.keys() if (r := _intersect(allowed[p], other[p]))}
            if allowed:
                out[(s, d)] = Connections(ports=tuple(sorted(allowed.items())))
    return out
