"""Read nftables rulesets back into per-pair connectivity (the nftables back end's read-back).

What is read is the kernel's own view of a ruleset: the JSON of ``nft -j list ruleset`` (schema in
libnftables-json(5)), as taken from a deployed host, or, for compiled output, from a throwaway
network namespace into which the generated file was loaded (:func:`read_back` does that through
:func:`microseg.twin.netns.nft_json`, so the kernel, not this module, parses the nft syntax).

Evaluation. For an ordered pair (source, destination) and each IP version both have addresses in, a
*new* connection from the source's addresses to the destination's is followed through every
enforcement point on its path: the source host's ``output`` hook, the destination host's ``input``
hook, and the router's ``forward`` hook when the two are in different zones. At each hook every base
chain of every ``inet``/``ip``/``ip6`` table is evaluated (a packet must pass all of them: an accept
ends one base chain, a drop is final, nft(8) "VERDICT STATEMENT"); a hook without a chain allows
everything. A chain is walked in order, rule by rule, over the whole space of (protocol, destination
port): ``accept`` allows what it matches of what is still undecided, ``drop``/``reject`` removes it,
rules without a verdict (``counter``, ``log``) change nothing, and the chain policy decides the rest.
ICMP counts as allowed when an echo request would pass (the infrastructure allowances of the back end,
neighbour discovery with hop limit 255, are not an ICMP connection). Addresses are intervals: a rule
matching only *some* of a peer's addresses is read as allowing (never as denying) the pair, so the
result never understates what a ruleset allows.

Which pairs are read (:func:`governed_pairs`): distinct workloads that both have addresses, of which
one is a host with a ruleset, or which are in different zones when a router ruleset is given (and
one of them is enforced: external peers between themselves are nobody's business). Pairs with no
connection are omitted, as in :func:`microseg.ir.semantics.connectivity`.

``as_enforced=True`` reads an observe-mode ruleset as it will behave in enforce mode: the rule
whose comment is the back end's observe marker is skipped.

Fail closed: any expression, verdict or chain type this reader does not evaluate exactly raises
:class:`~microseg.errors.InputError`; it never guesses.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload
from microseg.ir.semantics import ALL_PORTS, Connections, is_enforced

OBSERVE_COMMENT = "microseg observe: accept what enforce would drop"
INDEX_FILE = "index.json"

Interval = tuple[int, int]
Space = dict[str, list[Interval]]  # protocol key -> destination port intervals
Pair = tuple[str, str]

_KEYS = ("TCP", "UDP", "SCTP", "ICMP", "OTHER")  # OTHER: every protocol the IR cannot name
_FULL_PORTS: list[Interval] = [(0, 65535)]
_L4_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58}
_PORT_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
_HOOKS = {"input", "output", "forward"}
_FAMILIES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
_PROBE_HOPLIMIT = 64  # an ordinary routed packet; neighbour discovery (255) never matches it

# Tri-state of a condition over the probe class: every, some or no packet of it matches.
ALL, SOME, NONE = 2, 1, 0


# -- intervals and spaces ---------------------------------------------------------------------------------


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    out = []
    for a, b in x:
        for c, d in y:
            lo, hi = max(a, c), min(b, d)
            if lo <= hi:
                out.append((lo, hi))
    return _merge(out)


def _subtract(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in x:
        cur = a
        for c, d in _merge(y):
            if d < cur or c > b:
                continue
            if c > cur:
                out.append((cur, c - 1))
            cur = max(cur, d + 1)
            if cur > b:
                break
        if cur <= b:
            out.append((cur, b))
    return out


def _full() -> Space:
    return {k: list(_FULL_PORTS) for k in _KEYS}


def _empty(s: Space) -> bool:
    return not any(s.values())


def _space_op(x: Space, y: Space, op: Callable[[Sequence[Interval], Sequence[Interval]], list[Interval]]) -> Space:
    return {k: op(x.get(k, []), y.get(k, [])) for k in _KEYS}


def _union(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    return _merge([*x, *y])


# -- the parsed ruleset -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """The class of packets a pair's new connections are made of, for one IP version."""

    version: int
    source: tuple[Interval, ...]
    destination: tuple[Interval, ...]


# A condition maps a probe to (tri-state, restriction of the (protocol, port) space or None).
Condition = Callable[[Probe], tuple[int, Space | None]]


@dataclass
class Rule:
    conditions: list[Condition]
    verdict: str | None  # "accept", "drop" or None (no verdict: evaluation goes on)
    comment: str | None
    where: str

    def match(self, probe: Probe) -> tuple[int, Space]:
        state, space = ALL, _full()
        for cond in self.conditions:
            s, restriction = cond(probe)
            state = min(state, s)
            if state == NONE:
                return NONE, {}
            if restriction is not None:
                space = _space_op(space, restriction, _intersect)
        if _empty(space):
            return NONE, space
        return state, space


@dataclass
class Chain:
    family: str
    table: str
    name: str
    hook: str
    policy: str
    rules: list[Rule] = field(default_factory=list)

    def allowed(self, probe: Probe, *, as_enforced: bool) -> Space:
        if probe.version not in _FAMILIES[self.family]:
            return _full()  # an ip table never sees IPv6 packets, and the other way round
        remaining: Space = _full()
        allowed: Space = {k: [] for k in _KEYS}
        for rule in self.rules:
            if as_enforced and rule.comment == OBSERVE_COMMENT:
                continue
            state, space = rule.match(probe)
            if state == NONE or rule.verdict is None:
                continue
            matched = _space_op(space, remaining, _intersect)
            if rule.verdict == "accept":
                allowed = _space_op(allowed, matched, _union)
            if state == ALL:  # only a rule that matches every packet of the class decides it
                remaining = _space_op(remaining, matched, _subtract)
        if self.policy == "accept":
            allowed = _space_op(allowed, remaining, _union)
        return allowed


@dataclass
class Ruleset:
    """The base chains of a ruleset by hook (only input, output and forward matter here)."""

    source: str
    hooks: dict[str, list[Chain]] = field(default_factory=dict)

    def allowed(self, hook: str, probe: Probe, *, as_enforced: bool) -> Space:
        space = _full()
        for chain in self.hooks.get(hook, []):
            space = _space_op(space, chain.allowed(probe, as_enforced=as_enforced), _intersect)
        return space


def parse_ruleset(text: str, *, source: str = "<nft -j list ruleset>") -> Ruleset:
    """Parse ``nft -j list ruleset`` output."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e.msg}", file=source, line=e.lineno, column=e.colno) from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InputError("expected an object with an \"nftables\" list (nft -j list ruleset)", file=source)
    sets: dict[tuple[str, str, str], dict[int, list[Interval]]] = {}
    chains: dict[tuple[str, str, str], Chain | None] = {}
    rules: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise InputError(f"unexpected item {item!r}", file=source)
        ((kind, body),) = item.items()
        if kind in ("metainfo", "table", "flowtable", "counter", "quota", "ct helper", "limit", "map"):
            continue
        if not isinstance(body, dict):
            raise InputError(f"unexpected {kind} {body!r}", file=source)
        key = (str(body.get("family")), str(body.get("table")), str(body.get("name")))
        if kind == "set":
            sets[key] = _set_elements(body, source)
        elif kind == "chain":
            chains[key] = _chain(body, source)
        elif kind == "rule":
            rules.append(body)
        else:
            raise InputError(f"unsupported ruleset object {kind!r}", file=source)
    for body in rules:
        chain_key = (str(body.get("family")), str(body.get("table")), str(body.get("chain")))
        if chain_key not in chains:
            raise InputError(f"rule of unknown chain {chain_key}", file=source)
        chain = chains[chain_key]
        if chain is None:
            continue  # a regular chain: only reachable by jump/goto, which raise below
        where = f"{chain.family} {chain.table} {chain.name} handle {body.get('handle')}"
        chain.rules.append(_rule(body, chain, sets, source, where))
    out = Ruleset(source)
    for c in chains.values():
        if c is not None:
            out.hooks.setdefault(c.hook, []).append(c)
    return out


def _chain(body: dict[str, Any], source: str) -> Chain | None:
    if "hook" not in body:
        return None
    family, hook = str(body.get("family")), str(body["hook"])
    if family not in _FAMILIES or hook not in _HOOKS:
        return None  # arp, bridge, netdev, prerouting/postrouting: not where this reader looks
    where = f"chain {family} {body.get('table')} {body.get('name')}"
    if body.get("type") == "nat":
        return None  # nat chains translate, they do not filter
    if body.get("type") not in ("filter", "route"):
        raise InputError(f"{where}: chain type {body.get('type')!r} not evaluated", file=source)
    policy = str(body.get("policy", "accept"))
    if policy not in ("accept", "drop"):
        raise InputError(f"{where}: policy {policy!r}", file=source)
    return Chain(family, str(body.get("table")), str(body.get("name")), hook, policy)


def _address(value: Any, version: int, where: str, source: str) -> list[Interval]:
    """Intervals of an address literal: ``"a"``, ``{"prefix": ...}`` or ``{"range": [a, b]}``."""
    try:
        if isinstance(value, str):
            net = ipaddress.ip_network(value, strict=False)
            if net.version == version:
                return [(int(net.network_address), int(net.broadcast_address))]
        elif isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            net = ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
            if net.version == version:
                return [(int(net.network_address), int(net.broadcast_address))]
        elif isinstance(value, dict) and "range" in value:
            a, b = (ipaddress.ip_address(x) for x in value["range"])
            if a.version == version:
                return [(int(a), int(b))]
        elif isinstance(value, dict) and "elem" in value:
            return _address(value["elem"].get("val"), version, where, source)
        else:
            raise ValueError(f"address {value!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{where}: {e}", file=source) from None
    raise InputError(f"{where}: {value!r} is not an IPv{version} address", file=source)


def _set_elements(body: dict[str, Any], source: str) -> dict[int, list[Interval]]:
    where = f"set {body.get('family')} {body.get('table')} {body.get('name')}"
    kind = body.get("type")
    if kind not in ("ipv4_addr", "ipv6_addr"):
        return {}  # not an address set; a rule that uses it as one raises
    version = 4 if kind == "ipv4_addr" else 6
    elems = body.get("elem", [])
    return {version: _merge(iv for e in elems for iv in _address(e, version, where, source))}


def _values(right: Any) -> list[Any]:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    return [right]


def _tri(matches: bool, negate: bool) -> int:
    return ALL if matches != negate else NONE


def _rule(body: dict[str, Any], chain: Chain, sets: Mapping[tuple[str, str, str], dict[int, list[Interval]]],
          source: str, where: str) -> Rule:
    conditions: list[Condition] = []
    verdict: str | None = None
    for expr in body.get("expr", []):
        if not isinstance(expr, dict) or len(expr) != 1:
            raise InputError(f"{where}: unexpected expression {expr!r}", file=source)
        ((op, arg),) = expr.items()
        if verdict is not None:
            raise InputError(f"{where}: expression after the verdict", file=source)
        if op in ("counter", "log"):
            continue
        if op == "limit":
            conditions.append(lambda probe: (SOME, None))  # rate limited: some packets only
        elif op in ("accept", "drop", "reject"):
            verdict = "accept" if op == "accept" else "drop"
        elif op == "match":
            conditions.append(_match(arg, chain, sets, source, where))
        else:
            raise InputError(f"{where}: statement {op!r} not evaluated", file=source)
    comment = body.get("comment")
    return Rule(conditions, verdict, comment if isinstance(comment, str) else None, where)


def _match(arg: Any, chain: Chain, sets: Mapping[tuple[str, str, str], dict[int, list[Interval]]],
           source: str, where: str) -> Condition:
    if not isinstance(arg, dict):
        raise InputError(f"{where}: match {arg!r}", file=source)
    op, left, right = arg.get("op"), arg.get("left"), arg.get("right")
    if op not in ("==", "!=", "in"):
        raise InputError(f"{where}: operator {op!r} not evaluated", file=source)
    negate = op == "!="
    if isinstance(left, dict) and "payload" in left:
        proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            return _address_match(4 if proto == "ip" else 6, fld, negate, right, chain, sets, source, where)
        if proto in _PORT_PROTOCOLS and fld == "dport":
            return _port_match(_PORT_PROTOCOLS[proto], negate, right, where, source)
        if proto in ("icmp", "icmpv6") and fld == "type":
            version = 4 if proto == "icmp" else 6
            hit = "echo-request" in _values(right)

            def icmp_type(probe: Probe) -> tuple[int, Space | None]:
                if probe.version != version:
                    return NONE, None
                return _tri(hit, negate), {"ICMP": list(_FULL_PORTS)}
            return icmp_type
        if (proto, fld) in (("ip6", "hoplimit"), ("ip", "ttl")):
            version = 6 if proto == "ip6" else 4
            hit = _PROBE_HOPLIMIT in _values(right)
            return lambda probe: (_tri(hit, negate) if probe.version == version else NONE, None)
    elif isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return _proto_match(negate, right, where, source)
        if key == "nfproto":
            versions = {4 if v == "ipv4" else 6 if v == "ipv6" else 0 for v in _values(right)}
            return lambda probe: (_tri(probe.version in versions, negate), None)
        if key in ("iifname", "oifname"):
            names = set(_values(right))
            # The probed traffic crosses a real interface, never loopback; any other name may match.
            state = _tri(False, negate) if names == {"lo"} else SOME
            return lambda probe: (state, None)
    elif isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        hit = "new" in _values(right)
        return lambda probe: (_tri(hit, negate), None)
    raise InputError(f"{where}: match on {json.dumps(left)} not evaluated", file=source)


def _address_match(version: int, fld: str, negate: bool, right: Any, chain: Chain,
                   sets: Mapping[tuple[str, str, str], dict[int, list[Interval]]], source: str,
                   where: str) -> Condition:
    if isinstance(right, str) and right.startswith("@"):
        key = (chain.family, chain.table, right[1:])
        if key not in sets:
            raise InputError(f"{where}: unknown set {right}", file=source)
        if version not in sets[key]:
            raise InputError(f"{where}: set {right} is not an IPv{version} address set", file=source)
        target = sets[key][version]
    else:
        target = _merge(iv for v in _values(right) for iv in _address(v, version, where, source))

    def address(probe: Probe) -> tuple[int, Space | None]:
        if probe.version != version:
            return NONE, None
        mine = list(probe.source if fld == "saddr" else probe.destination)
        inside = _intersect(mine, target)
        if not inside:
            state = NONE
        elif inside == _merge(mine):
            state = ALL
        else:
            state = SOME
        if negate:
            state = ALL - state  # ALL <-> NONE, SOME stays
        return state, None
    return address


def _port_match(key: str, negate: bool, right: Any, where: str, source: str) -> Condition:
    ports: list[Interval] = []
    for v in _values(right):
        if isinstance(v, int):
            ports.append((v, v))
        elif isinstance(v, dict) and "range" in v and all(isinstance(x, int) for x in v["range"]):
            ports.append((v["range"][0], v["range"][1]))
        else:
            raise InputError(f"{where}: port {v!r} not evaluated", file=source)
    ports = _merge(ports)
    if negate:
        ports = _subtract(_FULL_PORTS, ports)
    # A transport header match implies its protocol (nft adds the l4proto dependency itself).
    restriction: Space = {key: ports}
    return lambda probe: (ALL, restriction)


def _proto_match(negate: bool, right: Any, where: str, source: str) -> Condition:
    numbers = set()
    for v in _values(right):
        if isinstance(v, int):
            numbers.add(v)
        elif isinstance(v, str) and v in _L4_NUMBERS:
            numbers.add(_L4_NUMBERS[v])
        else:
            raise InputError(f"{where}: protocol {v!r} not evaluated", file=source)

    def proto(probe: Probe) -> tuple[int, Space | None]:
        icmp = 1 if probe.version == 4 else 58
        wanted = {"TCP": 6 in numbers, "UDP": 17 in numbers, "SCTP": 132 in numbers, "ICMP": icmp in numbers}
        others = bool(numbers - {6, 17, 132, icmp})
        space: Space = {k: list(_FULL_PORTS) for k, hit in wanted.items() if hit != negate}
        if negate or others:
            # Some other protocol matches (all of them, when negated): "OTHER" is only ever
            # allowed whole (observe mode, an accept-all); a part of it cannot be named in the IR.
            space["OTHER"] = list(_FULL_PORTS)
            if not negate:
                return SOME, space
        return ALL, space
    return proto


# -- per-pair reading ---------------------------------------------------------------------------------------


def _effective(w: Workload) -> dict[int, list[Interval]]:
    out: dict[int, list[Interval]] = {}
    for version in (4, 6):
        keep = _merge((int(n.network_address), int(n.broadcast_address))
                      for n in (ipaddress.ip_network(a, strict=False) for a in w.addresses) if n.version == version)
        drop = _merge((int(n.network_address), int(n.broadcast_address))
                      for n in (ipaddress.ip_network(a, strict=False) for a in w.except_addresses)
                      if n.version == version)
        rest = _subtract(keep, drop)
        if rest:
            out[version] = rest
    return out


def _zones(policy: Policy) -> dict[str, str | None]:
    assigned = policy.zone_of()
    return {w.name: assigned.get(w.name, w.zone) for w in policy.workloads}


def _crosses(zones: Mapping[str, str | None], s: str, d: str) -> bool:
    zs, zd = zones.get(s), zones.get(d)
    return zs is None or zd is None or zs != zd


def governed_pairs(policy: Policy, hosts: Collection[str], *, router: bool) -> set[Pair]:
    """Pairs whose connectivity the rulesets decide (see the module docstring)."""
    wl = policy.workload_map()
    zones = _zones(policy)
    excluded = policy.settings.excluded_namespaces
    addressed = sorted(n for n, w in wl.items() if _effective(w))
    out = set()
    for s in addressed:
        for d in addressed:
            if s == d:
                continue
            enforced = is_enforced(wl[s], excluded) or is_enforced(wl[d], excluded)
            if s in hosts or d in hosts or (router and enforced and _crosses(zones, s, d)):
                out.add((s, d))
    return out


def _connections(space: Space, where: str) -> Connections:
    if all(space[k] == _FULL_PORTS for k in _KEYS):
        return Connections(everything=True)
    if space["OTHER"]:
        raise InputError(f"{where}: allows protocols other than TCP, UDP, SCTP and ICMP, which the IR cannot name")
    pairs: list[tuple[Protocol, PortRange]] = []
    for key in ("TCP", "UDP", "SCTP"):
        pairs += [(Protocol(key), PortRange(start=a, end=b)) for a, b in space[key]]
    if space["ICMP"]:
        pairs.append((Protocol.ICMP, ALL_PORTS))
    return Connections.of(pairs)


def read_back_deployed(hosts: Mapping[str, str | Ruleset], policy: Policy, *, router: str | Ruleset | None = None,
                       as_enforced: bool = False) -> dict[Pair, Connections]:
    """Per-pair connectivity of deployed rulesets.

    ``hosts`` maps a host workload's name to its ``nft -j list ruleset`` output (or a parsed
    :class:`Ruleset`); ``router`` is the router's, if one sits between the zones.
    """
    wl = policy.workload_map()
    parsed = {h: r if isinstance(r, Ruleset) else parse_ruleset(r, source=f"ruleset of {h}")
              for h, r in hosts.items()}
    unknown = sorted(h for h in parsed if h not in wl)
    if unknown:
        raise InputError(f"rulesets of workloads the policy does not name: {', '.join(unknown)}")
    router_rs = router if isinstance(router, Ruleset) or router is None else parse_ruleset(router, source="router")
    zones = _zones(policy)
    addresses = {n: _effective(w) for n, w in wl.items()}
    out: dict[Pair, Connections] = {}
    for s, d in sorted(governed_pairs(policy, parsed, router=router_rs is not None)):
        total: Space = {k: [] for k in _KEYS}
        for version in sorted(set(addresses[s]) & set(addresses[d])):
            probe = Probe(version, tuple(addresses[s][version]), tuple(addresses[d][version]))
            space = _full()
            if s in parsed:
                space = _space_op(space, parsed[s].allowed("output", probe, as_enforced=as_enforced), _intersect)
            if d in parsed:
                space = _space_op(space, parsed[d].allowed("input", probe, as_enforced=as_enforced), _intersect)
            if router_rs is not None and _crosses(zones, s, d):
                space = _space_op(space, router_rs.allowed("forward", probe, as_enforced=as_enforced), _intersect)
            total = _space_op(total, space, _union)
        if not _empty(total):
            out[(s, d)] = _connections(total, f"{s} -> {d}")
    return out


def _kernel_json(text: str, name: str) -> str:
    from microseg.twin.netns import nft_json  # namespaces are only needed when reading compiled text

    return nft_json(text, name=name)


def read_back(files: Mapping[str, str], policy: Policy, *, as_enforced: bool = False,
              to_json: Callable[[str, str], str] | None = None) -> dict[Pair, Connections]:
    """Per-pair connectivity of the nftables back end's compiled output.

    ``index.json`` says which file is which host's and which is the router's; each file is loaded
    into a throwaway network namespace and read back as the kernel lists it (``to_json(text, name)``,
    by default :func:`microseg.twin.netns.nft_json`, which needs root or unprivileged user namespaces).
    """
    convert = to_json or _kernel_json
    if INDEX_FILE not in files:
        raise InputError(f"no {INDEX_FILE} among the compiled files")
    try:
        index = json.loads(files[INDEX_FILE])
        host_files = {str(h["workload"]): str(h["file"]) for h in index["hosts"]}
        router_file = index.get("router", {}).get("file")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"malformed index: {e}", file=INDEX_FILE) from None
    missing = sorted(f for f in [*host_files.values(), *([router_file] if router_file else [])] if f not in files)
    if missing:
        raise InputError(f"files named in the index are missing: {', '.join(missing)}", file=INDEX_FILE)
    hosts = {h: convert(files[f], f) for h, f in host_files.items()}
    router = convert(files[router_file], router_file) if router_file else None
    return read_back_deployed(hosts, policy, router=router, as_enforced=as_enforced)
