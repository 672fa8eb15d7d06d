"""Read AWS security groups back into per-pair connectivity: one semantics, two formats.

Two parsers feed one evaluator:

* :func:`read_back` reads the aws_sg back end's Terraform JSON (every ``*.tf.json`` of ``files``, or a
  hand-edited variant of it) for a policy's universe. A workload is governed when a group carries its
  name in the ``microseg:workload`` tag (one group per workload, as the back end writes them).
* :func:`read_describe` / :func:`connectivity_from_describe` read what is deployed: the JSON printed by
  ``aws ec2 describe-security-groups`` (``{"SecurityGroups": [...]}``, one or more pages, API type
  SecurityGroup, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_SecurityGroup.html). Which
  workload carries which groups comes from the inventory: :mod:`microseg.sources.inventory.aws_ec2`
  labels each instance and managed-service ENI ``aws-sg/<group-id>`` for every group of its ENIs. A
  workload may carry several groups; a workload that carries none is *not governed* (nothing here
  filters its traffic; :attr:`DescribeReading.ungoverned` lists them). External peers are never
  governed. A group a workload carries but no file describes is an error: its rules are unknown.

Both give, for every ordered pair of distinct workloads of which at least one is governed, the allowed
connections; pairs with none are omitted, as in :func:`microseg.ir.semantics.connectivity`.

Evaluation follows how AWS applies security groups (Amazon VPC User Guide, "Security group rules",
https://docs.aws.amazon.com/vpc/latest/userguide/security-group-rules.html): rules only allow and add
up, and the rules of all groups associated with a network interface are aggregated into one set. A
*new* connection leaves a governed source only if one of its groups' egress rules matches the
destination, protocol and port, and reaches a governed destination only if one of its groups' ingress
rules matches the source; an ungoverned side does not filter. Groups are stateful (responses to an
allowed connection pass whatever the rules of the other direction say), so connections are read per
initiating direction only and a rule never allows anything in the opposite direction.

A rule matches a peer when it references one of the peer's groups (AWS matches the private addresses of
the interfaces associated with the referenced group; which workloads those are is known only from the
inventory, so a reference to a group no workload of the universe carries matches none of them, whichever
account or peered VPC it is in: see :attr:`DescribeReading.unmatched_references`), or when its CIDRs
(with the other rules on the same protocol and port) contain *all* of the peer's addresses (its
``addresses`` minus its ``except_addresses``): a peer part of whose addresses are allowed is not counted
as allowed. ICMP counts as allowed only for every ICMP type of each address family the peer has
addresses in (both families for a peer without addresses), as the IR's ICMP means every type. Protocol
``-1`` is every protocol and port; a protocol number other than tcp, udp, icmp and icmpv6 is every port
of that protocol ("IpPermission", https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_IpPermission.html).
A pair whose connections are allowed by ``-1`` rules on every governed side reads as all connections.

Known limit of the describe reading: security groups belong to network interfaces, the inventory's
workloads to instances. An instance whose interfaces carry different groups is read with the union of
them on all its addresses, which can be wider than what each interface allows.

Fail closed: a field, resource type, reference, protocol or ICMP type this module does not evaluate
exactly raises :class:`~microseg.errors.InputError` (for describe output with the file, line and field);
it never guesses a verdict. Refused in particular: Terraform inline ``ingress``/``egress`` blocks and
``aws_security_group_rule`` resources; rules for some ICMP types only (the IR cannot say "echo request
only", and counting or dropping them would widen or narrow the result); protocols the IR cannot name
(GRE, ESP, ...); prefix lists whose CIDRs are not given (``prefix_lists``); references across a peering
connection that is not active.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections, merge_ranges
from microseg.sources.yamlpos import Document, NodePath, load_documents

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
    group: str | None  # referenced group: Terraform resource name, or GroupId
    net: Net | None


@dataclass
class _Group:
    workload: str  # Terraform: the tagged workload; describe output: "" (membership is the inventory's)
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


# -- describe-security-groups ----------------------------------------------------------------------------

Pair = tuple[str, str]
LABEL_PREFIX = "aws-sg/"  # the inventory's label for each group a workload carries (aws_ec2.safe_label_key)
_GROUP_ID = re.compile(r"sg-[0-9A-Za-z]{1,40}")
_DESCRIBE_TOP = {"SecurityGroups", "NextToken"}
_DESCRIBE_GROUP = {"Description", "GroupName", "IpPermissions", "OwnerId", "GroupId", "IpPermissionsEgress",
                   "Tags", "VpcId", "SecurityGroupArn"}
_PERMISSION = {"IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs"}
_PEER_KEYS = {"IpRanges": {"CidrIp", "Description"}, "Ipv6Ranges": {"CidrIpv6", "Description"},
              "PrefixListIds": {"PrefixListId", "Description"},
              "UserIdGroupPairs": {"Description", "GroupId", "GroupName", "PeeringStatus", "UserId", "VpcId",
                                   "VpcPeeringConnectionId"}}
_DIRECTIONS = {"IpPermissions": "in", "IpPermissionsEgress": "out"}


@dataclass(frozen=True)
class DescribeReading:
    """What :func:`read_describe` found.

    ``ungoverned``: workloads (not external peers) that carry no security group, which nothing read
    here filters. ``unmatched_references``: groups that rules reference but no workload of the universe
    carries (another account's, a peered VPC's, or simply unused); such rules match none of the
    universe's workloads.
    """

    connections: dict[Pair, Connections]
    governed: tuple[str, ...]
    ungoverned: tuple[str, ...]
    unmatched_references: tuple[str, ...]


def _located(files: Mapping[str, str]) -> list[Document]:
    """Every file's JSON document, with lines (load_documents reads files; these texts are in memory)."""
    docs: list[Document] = []
    with tempfile.TemporaryDirectory(prefix="microseg-sg-") as tmp:
        for path in sorted(files):
            if PurePosixPath(path).suffix.lower() != ".json":
                raise InputError("expected the JSON printed by `aws ec2 describe-security-groups` (a .json file)",
                                 file=path)
            scratch = Path(tmp) / "input.json"
            scratch.write_text(files[path], encoding="utf-8")
            docs += load_documents(scratch, path)
    return docs


def _list(doc: Document, obj: Mapping[str, Any], path: NodePath, key: str, *, required: bool = False) -> list[Any]:
    if key not in obj:
        if required:
            raise doc.error(f"{key} is missing (the reader needs each group as describe-security-groups prints "
                            "it, not a --query projection)", path)
        return []
    value = obj[key]
    if not isinstance(value, list):
        raise doc.error(f"{key} should be a list", (*path, key))
    return value


def _object(doc: Document, value: object, path: NodePath, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error("expected an object", path)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise doc.error(f"field {unknown[0]!r} is not evaluated by this reader", (*path, unknown[0]))
    return value


def _port(doc: Document, perm: Mapping[str, Any], path: NodePath, key: str) -> int:
    value = perm.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise doc.error(f"{key} should be an integer", (*path, key))
    return value


def _permission_ports(doc: Document, perm: Mapping[str, Any], path: NodePath) -> tuple[str, int, int]:
    raw = perm.get("IpProtocol")
    if not isinstance(raw, str):
        raise doc.error("IpProtocol should be a string", (*path, "IpProtocol"))
    proto = _PROTOCOL_NAMES.get(raw.lower(), raw)
    if proto != "-1" and not (proto.isdigit() and 0 <= int(proto) <= 255):
        raise doc.error(f"IpProtocol {raw!r} is neither a protocol name (tcp, udp, icmp, icmpv6), a number "
                        "nor -1", (*path, "IpProtocol"))
    proto = proto if proto == "-1" else str(int(proto))
    if proto in ("6", "17"):
        low, high = _port(doc, perm, path, "FromPort"), _port(doc, perm, path, "ToPort")
        if not 0 <= low <= high <= 65535:
            raise doc.error(f"port range {low}-{high}", (*path, "FromPort"))
        return proto, low, high
    if proto in ("1", "58"):
        if proto == "58" and "FromPort" not in perm and "ToPort" not in perm:
            return proto, -1, -1  # "For icmpv6, the port range is optional; if you omit it, all types and codes"
        icmp_type, code = _port(doc, perm, path, "FromPort"), _port(doc, perm, path, "ToPort")
        if icmp_type != -1:
            raise doc.error(f"a rule for ICMP type {icmp_type} only: the policy's ICMP means every type, and such "
                            "a rule can be neither counted (wider) nor ignored (narrower)", (*path, "FromPort"))
        if code != -1:
            raise doc.error("all ICMP types need all codes (ToPort -1)", (*path, "ToPort"))
        return proto, -1, -1
    if proto != "-1" and proto not in _IR_PROTOCOL:
        raise doc.error(f"protocol {raw!r} is outside the policy's protocols (TCP, UDP, SCTP, ICMP)",
                        (*path, "IpProtocol"))
    return proto, -1, -1  # -1 and SCTP: every port, whatever FromPort/ToPort say (IpPermission)


def _cidr(doc: Document, text: object, version: int, path: NodePath) -> Net:
    try:
        net = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise doc.error(f"invalid CIDR {text!r}", path) from None
    if not isinstance(text, str) or net.version != version:
        raise doc.error(f"expected an IPv{version} CIDR, not {text!r}", path)
    return net


def _permission(doc: Document, value: object, path: NodePath,
                prefix_lists: Mapping[str, Sequence[str]]) -> list[_Rule]:
    perm = _object(doc, value, path, _PERMISSION)
    proto, low, high = _permission_ports(doc, perm, path)
    rules: list[_Rule] = []
    for key, fields in _PEER_KEYS.items():
        for i, raw in enumerate(_list(doc, perm, path, key)):
            at = (*path, key, i)
            peer = _object(doc, raw, at, fields)
            if key == "IpRanges":
                rules.append(_Rule(proto, low, high, None, _cidr(doc, peer.get("CidrIp"), 4, (*at, "CidrIp"))))
            elif key == "Ipv6Ranges":
                rules.append(_Rule(proto, low, high, None, _cidr(doc, peer.get("CidrIpv6"), 6, (*at, "CidrIpv6"))))
            elif key == "PrefixListIds":
                pl = peer.get("PrefixListId")
                if not isinstance(pl, str) or pl not in prefix_lists:
                    # A prefix list is a set of CIDRs kept elsewhere (AWS-managed ones change over time):
                    # describe-security-groups does not print them, and a guess could widen or narrow.
                    raise doc.error(f"prefix list {pl!r}: its CIDRs are not known here (pass them as prefix_lists, "
                                    "e.g. from `aws ec2 get-managed-prefix-list-entries`)", (*at, "PrefixListId"))
                for cidr in prefix_lists[pl]:
                    net = ipaddress.ip_network(cidr, strict=False)
                    rules.append(_Rule(proto, low, high, None, net))
            else:
                gid = peer.get("GroupId")
                if not isinstance(gid, str) or not _GROUP_ID.fullmatch(gid):
                    raise doc.error(f"a group reference needs a GroupId (sg-...), not {gid!r}", (*at, "GroupId"))
                status = peer.get("PeeringStatus")
                if status is not None and status != "active":
                    # A reference across a peering connection that is not active matches nothing now and
                    # may match again later ("stale" rules): not a state to read as either.
                    raise doc.error(f"reference to {gid} across a peering connection in state {status!r}",
                                    (*at, "PeeringStatus"))
                rules.append(_Rule(proto, low, high, gid, None))
    if not rules:
        raise doc.error("a permission without IpRanges, Ipv6Ranges, PrefixListIds or UserIdGroupPairs", path)
    return rules


def parse_describe(files: Mapping[str, str], *,
                   prefix_lists: Mapping[str, Sequence[str]] | None = None) -> dict[str, _Group]:
    """Groups by GroupId from ``describe-security-groups`` output (path -> JSON text), with their rules.

    ``prefix_lists`` maps a prefix-list id to its CIDRs; a rule naming any other prefix list is refused.
    """
    known: dict[str, tuple[str, ...]] = {}
    for pl, cidrs in (prefix_lists or {}).items():
        try:
            known[pl] = tuple(str(ipaddress.ip_network(c, strict=False)) for c in cidrs)
        except ValueError as e:
            raise InputError(f"prefix list {pl}: {e}", field="prefix_lists") from None
    groups: dict[str, _Group] = {}
    seen: dict[str, str] = {}
    for doc in _located(files):
        if not isinstance(doc.data, dict) or "SecurityGroups" not in doc.data:
            raise doc.error("expected the JSON of `aws ec2 describe-security-groups`: an object with SecurityGroups")
        top = _object(doc, doc.data, (), _DESCRIBE_TOP)
        for i, raw in enumerate(_list(doc, top, (), "SecurityGroups", required=True)):
            path: NodePath = ("SecurityGroups", i)
            group = _object(doc, raw, path, _DESCRIBE_GROUP)
            gid = group.get("GroupId")
            if not isinstance(gid, str) or not _GROUP_ID.fullmatch(gid):
                raise doc.error(f"GroupId should be a security group id (sg-...), not {gid!r}", (*path, "GroupId"))
            if gid in groups:
                raise doc.error(f"group {gid} is described twice (also in {seen[gid]})", (*path, "GroupId"))
            seen[gid] = f"{doc.file}:{doc.line_of((*path, 'GroupId'))}"
            out = _Group("")
            for key, direction in _DIRECTIONS.items():
                for j, perm in enumerate(_list(doc, group, path, key, required=True)):
                    out.rules[direction] += _permission(doc, perm, (*path, key, j), known)
            groups[gid] = out
    return groups


def groups_of(workloads: Sequence[Workload]) -> dict[str, tuple[str, ...]]:
    """Security groups each workload carries, from the inventory's ``aws-sg/<group-id>`` labels.

    External peers carry none: they are never governed.
    """
    out: dict[str, tuple[str, ...]] = {}
    for w in workloads:
        gids = tuple(sorted(k.removeprefix(LABEL_PREFIX) for k, _ in w.labels if k.startswith(LABEL_PREFIX)))
        if gids and w.kind != WorkloadKind.EXTERNAL:
            out[w.name] = gids
    return out


def read_describe(files: Mapping[str, str], workloads: Sequence[Workload], *,
                  prefix_lists: Mapping[str, Sequence[str]] | None = None) -> DescribeReading:
    """Per-pair connectivity of deployed security groups (``describe-security-groups`` output) for
    ``workloads``, whose ``aws-sg/<group-id>`` labels say which groups each carries."""
    groups = parse_describe(files, prefix_lists=prefix_lists)
    members = groups_of(workloads)
    for name, gids in sorted(members.items()):
        missing = [g for g in gids if g not in groups]
        if missing:
            read = ", ".join(sorted(files)) or "none"
            raise InputError(f"workload {name!r} carries security group {missing[0]}, which no file describes "
                             f"(read: {read})", field=f"labels.{LABEL_PREFIX}{missing[0]}")
    carried = {g for gids in members.values() for g in gids}
    referenced = {r.group for g in groups.values() for rs in g.rules.values() for r in rs if r.group is not None}
    return DescribeReading(
        connections=_evaluate(groups, members, workloads),
        governed=tuple(sorted(members)),
        ungoverned=tuple(sorted(w.name for w in workloads
                                if w.name not in members and w.kind != WorkloadKind.EXTERNAL)),
        unmatched_references=tuple(sorted(referenced - carried)))


def connectivity_from_describe(files: Mapping[str, str], workloads: Sequence[Workload], *,
                               prefix_lists: Mapping[str, Sequence[str]] | None = None) -> dict[Pair, Connections]:
    """Just the connections of :func:`read_describe`."""
    return read_describe(files, workloads, prefix_lists=prefix_lists).connections


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


_ICMP, _OTHER = "icmp", "other"  # keys next to the protocol numbers of _IR_PROTOCOL


class _Matcher:
    """What the rules of one direction of one workload's groups allow to or from one peer."""

    def __init__(self, rules: list[_Rule], peer_groups: frozenset[str], peer_nets: tuple[Net, ...]) -> None:
        self.rules = rules
        self.peer_groups = peer_groups
        self.nets = peer_nets

    def covers(self, rules: Iterable[_Rule], family: int | None = None) -> bool:
        rules = list(rules)
        if any(r.group in self.peer_groups for r in rules if r.group is not None):
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
        families = tuple(sorted({n.version for n in self.nets})) or ((4, 6) if self.peer_groups else ())
        if not families:
            return False
        for fam in families:
            number = "1" if fam == 4 else "58"
            if not self.covers((r for r in self.rules if r.protocol in ("-1", number)), fam):
                return False
        return True

    def connections(self) -> dict[str, tuple[PortRange, ...]]:
        out: dict[str, tuple[PortRange, ...]] = {}
        for number in _IR_PROTOCOL:
            ranges = self.ports(number)
            if ranges:
                out[number] = ranges
        if self.icmp():
            out[_ICMP] = (_ALL,)
        # Every protocol, including those the IR cannot name: only "-1" rules allow them.
        if self.covers(r for r in self.rules if r.protocol == "-1"):
            out[_OTHER] = (_ALL,)
        return out


def _intersect(a: tuple[PortRange, ...], b: tuple[PortRange, ...]) -> tuple[PortRange, ...]:
    out = [PortRange(start=max(x.start, y.start), end=min(x.end, y.end))
           for x in a for y in b if max(x.start, y.start) <= min(x.end, y.end)]
    return merge_ranges(out)


def _evaluate(groups: Mapping[str, _Group], members: Mapping[str, tuple[str, ...]],
              workloads: Sequence[Workload]) -> dict[Pair, Connections]:
    """The shared semantics: ``members`` maps each governed workload to the groups it carries."""
    names = sorted({w.name for w in workloads})
    nets = {w.name: _networks(w) for w in workloads}
    carried = {name: frozenset(gids) for name, gids in members.items()}
    rules = {name: {d: [r for g in gids for r in groups[g].rules[d]] for d in ("in", "out")}
             for name, gids in members.items()}
    out: dict[Pair, Connections] = {}
    for s in names:
        for d in names:
            if s == d or (s not in members and d not in members):
                continue
            sides: list[dict[str, tuple[PortRange, ...]]] = []
            if s in members:
                sides.append(_Matcher(rules[s]["out"], carried.get(d, frozenset()), nets[d]).connections())
            if d in members:
                sides.append(_Matcher(rules[d]["in"], carried.get(s, frozenset()), nets[s]).connections())
            allowed = sides[0]
            for other in sides[1:]:
                allowed = {p: r for p in allowed.keys() & other.keys() if (r := _intersect(allowed[p], other[p]))}
            if _OTHER in allowed:
                out[(s, d)] = Connections(everything=True)
            elif allowed:
                out[(s, d)] = Connections.of((_IR_PROTOCOL.get(k, Protocol.ICMP), r)
                                             for k, rs in allowed.items() for r in rs)
    return out


def read_back(files: Mapping[str, str], policy: Policy) -> dict[Pair, Connections]:
    """Allowed connections per ordered pair of distinct workloads, at least one of them governed
    (the aws_sg back end's Terraform JSON)."""
    groups = parse(files, policy)
    return _evaluate(groups, {g.workload: (name,) for name, g in groups.items()}, policy.workloads)


def describe_files(policy_paths: Sequence[Path]) -> dict[str, str]:
    """The ``aws ec2 describe-security-groups`` outputs among ``policy_paths`` (display name -> text).

    Recognised by their top-level ``SecurityGroups`` list. One run reads one kind of enforcement point:
    security groups next to Kubernetes policies is refused, since each needs its own inventory reading.
    """
    from microseg.sources.inventory import discover

    found: dict[str, str] = {}
    others: list[str] = []
    for path, display in discover(policy_paths):
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json" and text.lstrip().startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None  # reported with its line by whichever reader reads it
            if isinstance(doc, dict) and "SecurityGroups" in doc:
                found[display] = text
                continue
        others.append(display)
    if found and others:
        raise InputError("security groups (describe-security-groups output) and other policy files in one run: "
                         f"give them separately (other files: {', '.join(others[:3])})", file=others[0],
                         field="--policies")
    return found
