"""Read nftables rulesets into per-pair connectivity: the nftables back end's output, or any real host's.

What is read is the kernel's own view of a ruleset: the JSON of ``nft -j list ruleset`` (schema in
libnftables-json(5)), as taken from a deployed host (:func:`read_back_deployed`), or, for compiled
output, from a throwaway network namespace into which the generated file was loaded (:func:`read_back`
does that through :func:`microseg.twin.netns.nft_json`, so the kernel, not this module, parses the nft
syntax).

Evaluation. For an ordered pair (source, destination) and each IP version both have addresses in, a
*new* connection from the source's addresses to the destination's is followed through every
enforcement point on its path: the source host's ``output`` and ``postrouting`` hooks, the destination
host's ``prerouting`` and ``input`` hooks, and the router's ``prerouting``, ``forward`` and
``postrouting`` hooks when the two are in different zones. At each hook every filter base chain of
every ``inet``/``ip``/``ip6`` table is evaluated (a packet must pass all of them: an accept ends one
base chain, a drop is final, nft(8) "VERDICT STATEMENT"); a hook without a chain allows everything. A
chain is walked in order, rule by rule, over the whole space of (protocol, destination port):
``accept`` allows what it matches of what is still undecided, ``drop``/``reject`` removes it, ``jump``
walks the regular chain and comes back after it, ``goto`` walks it and does not come back (what falls
off its end gets the base chain's policy), ``return`` leaves the chain, verdict maps (``vmap``) are one
rule per element, rules without a verdict (``counter``, ``log``, ``continue``) change nothing, and the
chain policy decides the rest.

What a new connection is made of decides some matches exactly: ``ct state`` is ``new`` (so
``established,related accept`` and ``invalid drop`` do not apply), the traffic never crosses loopback
(``iifname "lo"``, ``iif "lo"``), its hop limit is an ordinary one. Others cannot be decided per pair
and are read as matching *some* of its packets: other interface names (which interface a pair crosses is
not known), rate limits, source ports (the client's are ephemeral), a rule matching only some of a
peer's addresses. Such a rule's accept counts and its drop does not, so the result never understates
what a ruleset allows. ICMP counts as allowed when an echo request would pass (neighbour discovery with
hop limit 255 is not an ICMP connection). ``th dport`` is read only after a ``meta l4proto`` match
limiting the rule to TCP, UDP or SCTP (elsewhere those bytes are no port). The reverse-path filter
(``fib saddr . iif oif missing drop``) is read as passed: a pair's packets come from its real
addresses over the interface the route back to them uses.

``nat`` chains are not filters: they see the first packet of a connection to choose its translation.
Source NAT (``snat``, ``masquerade``) happens after every filter hook of the host and is ignored;
destination NAT (``dnat``, ``redirect``, ``tproxy``), which changes the address, port and hook (input or
forward) the filters see, and any drop in a nat chain are refused. Tables of the ``arp``, ``bridge`` and
``netdev`` families are not read: they sit below IP.

Which pairs are read (:func:`governed_pairs`): distinct workloads that both have addresses, of which
one is a host with a ruleset, or which are in different zones when a router ruleset is given (and
one of them is enforced: external peers between themselves are nobody's business). Pairs with no
connection are omitted, as in :func:`microseg.ir.semantics.connectivity`.

``as_enforced=True`` reads an observe-mode ruleset as it will behave in enforce mode: the rule
whose comment is the back end's observe marker is skipped.

Fail closed: any expression, statement, verdict, hook or chain type this reader does not evaluate
exactly raises :class:`~microseg.errors.InputError` naming the rule (family, table, chain, handle); it
never guesses. Refused, for example: other ``fib`` lookups, ``meta mark``, ``tcp flags``, ``notrack``, ``queue``,
concatenated sets, ``ingress`` hooks, loops of jumps, protocols the IR cannot name when allowed in part.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from microseg.errors import InputError
from microseg.ir.intervals import Interval, intersect, merge, subtract
from microseg.ir.model import Policy, PortRange, Protocol, Workload
from microseg.ir.semantics import ALL_PORTS, Connections, is_enforced

OBSERVE_COMMENT = "microseg observe: accept what enforce would drop"
INDEX_FILE = "index.json"

Space = dict[str, list[Interval]]  # protocol key -> destination port intervals
Pair = tuple[str, str]

_KEYS = ("TCP", "UDP", "SCTP", "ICMP", "OTHER")  # OTHER: every protocol the IR cannot name
_FULL_PORTS: list[Interval] = [(0, 65535)]
_L4_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58}
_PORT_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
_HOOKS = {"prerouting", "input", "output", "forward", "postrouting"}
_FAMILIES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
_PROBE_HOPLIMIT = 64  # an ordinary routed packet; neighbour discovery (255) never matches it

# Tri-state of a condition over the probe class: every, some or no packet of it matches.
ALL, SOME, NONE = 2, 1, 0


# -- intervals and spaces ---------------------------------------------------------------------------------


def _full() -> Space:
    return {k: list(_FULL_PORTS) for k in _KEYS}


def _empty(s: Space) -> bool:
    return not any(s.values())


def _space_op(x: Space, y: Space, op: Callable[[Sequence[Interval], Sequence[Interval]], list[Interval]]) -> Space:
    return {k: op(x.get(k, []), y.get(k, [])) for k in _KEYS}


def _union(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    return merge([*x, *y])


# -- the parsed ruleset -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """The class of packets a pair's new connections are made of, for one IP version."""

    version: int
    source: tuple[Interval, ...]
    destination: tuple[Interval, ...]


# A condition maps a probe to (tri-state, restriction of the (protocol, port) space or None).
Condition = Callable[[Probe], tuple[int, Space | None]]
ChainKey = tuple[str, str, str]  # family, table, name

_MAX_DEPTH = 16  # the kernel's jump stack (NFT_JUMP_STACK_SIZE); deeper rulesets do not load


@dataclass
class Rule:
    conditions: list[Condition]
    verdict: str | None  # "accept", "drop", "return", "jump", "goto", or None (evaluation goes on)
    comment: str | None
    where: str
    target: str | None = None  # the chain of a jump or goto

    def match(self, probe: Probe) -> tuple[int, Space]:
        state, space = ALL, _full()
        for cond in self.conditions:
            s, restriction = cond(probe)
            state = min(state, s)
            if state == NONE:
                return NONE, {}
            if restriction is not None:
                space = _space_op(space, restriction, intersect)
        if _empty(space):
            return NONE, space
        return state, space


@dataclass
class Chain:
    family: str
    table: str
    name: str
    hook: str | None  # None: a regular chain, entered by jump or goto only
    policy: str
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Ruleset:
    """The filter chains of a ruleset: base chains by hook, and the regular chains they jump to."""

    source: str
    hooks: dict[str, list[Chain]] = field(default_factory=dict)
    chains: dict[ChainKey, Chain] = field(default_factory=dict)

    # Hooks a packet of each path crosses, in the order of the netfilter hook diagram (nft(8), "ADDRESS
    # FAMILIES"): sent by this host, received by it, or routed through it.
    PATHS: ClassVar[dict[str, tuple[str, ...]]] = {
        "output": ("output", "postrouting"), "input": ("prerouting", "input"),
        "forward": ("prerouting", "forward", "postrouting")}

    def allowed(self, path: str, probe: Probe, *, as_enforced: bool) -> Space:
        space = _full()
        for hook in self.PATHS[path]:
            for chain in self.hooks.get(hook, []):
                if probe.version not in _FAMILIES[chain.family]:
                    continue  # an ip table never sees IPv6 packets, and the other way round
                accepted, rest = self._walk(chain, probe, _full(), as_enforced, ())
                if chain.policy == "accept":
                    accepted = _space_op(accepted, rest, _union)
                space = _space_op(space, accepted, intersect)
        return space

    def _walk(self, chain: Chain, probe: Probe, todo: Space, as_enforced: bool,
              stack: tuple[str, ...]) -> tuple[Space, Space]:
        """(accepted, fell off the end or returned) of the packets ``todo`` entering ``chain``.

        Both are upper bounds: a rule matching only some packets of the class (state SOME) accepts what it
        matches, but never removes it from what later rules see (nft(8), "VERDICT STATEMENT": accept ends
        the base chain's evaluation, drop is final, return goes back to the calling chain, jump returns
        after the called chain ends, goto does not).
        """
        if len(stack) > _MAX_DEPTH:
            raise InputError(f"chain {chain.name}: jumps nest deeper than {_MAX_DEPTH}", file=self.source)
        remaining, accepted, out = todo, _none(), _none()
        for rule in chain.rules:
            if as_enforced and rule.comment == OBSERVE_COMMENT:
                continue
            state, space = rule.match(probe)
            if state == NONE or rule.verdict is None:
                continue
            matched = _space_op(space, remaining, intersect)
            returned = _none()
            if rule.verdict == "accept":
                accepted = _space_op(accepted, matched, _union)
            elif rule.verdict == "return":
                out = _space_op(out, matched, _union)
            elif rule.verdict in ("jump", "goto"):
                assert rule.target is not None
                key = (chain.family, chain.table, rule.target)
                if rule.target in stack or rule.target == chain.name:
                    raise InputError(f"{rule.where}: a loop through chain {rule.target}", file=self.source)
                got, returned = self._walk(self.chains[key], probe, matched, as_enforced, (*stack, chain.name))
                accepted = _space_op(accepted, got, _union)
                if rule.verdict == "goto":  # the called chain's end returns to *our* caller
                    out = _space_op(out, returned, _union)
                    returned = _none()
            if state == ALL:  # only a rule that matches every packet of the class decides it
                remaining = _space_op(_space_op(remaining, matched, subtract), returned, _union)
        return accepted, _space_op(out, remaining, _union)


def _none() -> Space:
    return {k: [] for k in _KEYS}


@dataclass
class _Raw:
    """What ``nft -j list ruleset`` lists, before the rules are read."""

    source: str
    sets: dict[ChainKey, dict[str, Any]] = field(default_factory=dict)  # sets and maps
    chains: dict[ChainKey, dict[str, Any]] = field(default_factory=dict)
    rules: dict[ChainKey, list[dict[str, Any]]] = field(default_factory=dict)

    def targets(self, key: ChainKey) -> list[str]:
        """Chains the rules of ``key`` jump or go to (also through verdict maps)."""
        out: list[str] = []
        for body in self.rules.get(key, []):
            for expr in body.get("expr", []) if isinstance(body.get("expr"), list) else []:
                if not isinstance(expr, dict):
                    continue
                for verdict in [expr, *_vmap_verdicts(expr.get("vmap"), key, self)]:
                    for kind in ("jump", "goto"):
                        arg = verdict.get(kind) if isinstance(verdict, dict) else None
                        if isinstance(arg, dict) and isinstance(arg.get("target"), str):
                            out.append(arg["target"])
        return out

    def reachable(self, roots: Iterable[ChainKey]) -> list[ChainKey]:
        seen: list[ChainKey] = []
        todo = list(roots)
        while todo:
            key = todo.pop(0)
            if key in seen:
                continue
            if key not in self.chains:
                raise InputError(f"jump or goto to chain {key[2]!r}, which table {key[0]} {key[1]} does not have",
                                 file=self.source)
            seen.append(key)
            todo.extend((key[0], key[1], t) for t in self.targets(key))
        return seen


def _vmap_verdicts(vmap: Any, key: ChainKey, raw: _Raw) -> list[Any]:
    if not isinstance(vmap, dict):
        return []
    data = vmap.get("data")
    if isinstance(data, str) and data.startswith("@"):
        data = {"set": raw.sets.get((key[0], key[1], data[1:]), {}).get("elem", [])}
    if not isinstance(data, dict) or not isinstance(data.get("set"), list):
        return []
    return [e[1] for e in data["set"] if isinstance(e, list) and len(e) == 2]


_OBJECTS_IGNORED = ("metainfo", "table", "flowtable", "counter", "quota", "ct helper", "limit", "ct timeout",
                    "ct expectation", "synproxy", "secmark")
_NAT_STATEMENTS = {"match", "counter", "log", "limit", "masquerade", "snat", "accept", "return", "continue",
                   "jump", "goto"}


def parse_ruleset(text: str, *, source: str = "<nft -j list ruleset>") -> Ruleset:
    """Parse ``nft -j list ruleset`` output."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e.msg}", file=source, line=e.lineno, column=e.colno) from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InputError("expected an object with an \"nftables\" list (nft -j list ruleset)", file=source)
    raw = _Raw(source)
    rule_keys: list[ChainKey] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise InputError(f"unexpected item {item!r}", file=source)
        ((kind, body),) = item.items()
        if kind in _OBJECTS_IGNORED:
            continue  # stateful objects and tables hold no verdict of their own
        if not isinstance(body, dict):
            raise InputError(f"unexpected {kind} {body!r}", file=source)
        if kind in ("set", "map"):
            raw.sets[(str(body.get("family")), str(body.get("table")), str(body.get("name")))] = body
        elif kind == "chain":
            raw.chains[(str(body.get("family")), str(body.get("table")), str(body.get("name")))] = body
        elif kind == "rule":
            key = (str(body.get("family")), str(body.get("table")), str(body.get("chain")))
            raw.rules.setdefault(key, []).append(body)
            rule_keys.append(key)
        else:
            raise InputError(f"unsupported ruleset object {kind!r}", file=source)
    for key in rule_keys:
        if key not in raw.chains:
            raise InputError(f"rule of unknown chain {key}", file=source)
    filters: list[ChainKey] = []
    nats: list[ChainKey] = []
    out = Ruleset(source)
    for key, body in raw.chains.items():
        role = _base_chain(body, source)
        if role == "filter":
            filters.append(key)
        elif role == "nat":
            nats.append(key)
    for key in raw.reachable(nats):
        for body in raw.rules.get(key, []):
            _check_nat_rule(body, key, source)
    for key in raw.reachable(filters):
        body = raw.chains[key]
        hook = str(body["hook"]) if key in filters else None
        chain = Chain(key[0], key[1], key[2], hook, str(body.get("policy", "accept")))
        for rule_body in raw.rules.get(key, []):
            chain.rules.extend(_rule(rule_body, chain, raw, source))
        out.chains[key] = chain
        if hook is not None:
            out.hooks.setdefault(hook, []).append(chain)
    return out


def _base_chain(body: dict[str, Any], source: str) -> str | None:
    """"filter" (read), "nat" (checked, then ignored) or None (a regular chain, or not read here)."""
    if "hook" not in body:
        return None
    family, hook = str(body.get("family")), str(body["hook"])
    if family not in _FAMILIES:
        return None  # arp, bridge, netdev: not where this reader looks (see the module docstring)
    where = f"chain {family} {body.get('table')} {body.get('name')}"
    if hook not in _HOOKS:
        raise InputError(f"{where}: hook {hook!r} not evaluated", file=source)
    if body.get("type") == "nat":
        return "nat"
    if body.get("type") not in ("filter", "route"):
        raise InputError(f"{where}: chain type {body.get('type')!r} not evaluated", file=source)
    policy = str(body.get("policy", "accept"))
    if policy not in ("accept", "drop"):
        raise InputError(f"{where}: policy {policy!r}", file=source)
    return "filter"


def _check_nat_rule(body: dict[str, Any], key: ChainKey, source: str) -> None:
    """A nat chain is ignored for filtering, which is exact only while it translates sources alone.

    nat chains see the first packet of a connection only, to choose its translation (nftables wiki,
    "Performing Network Address Translation (NAT)"); source NAT (snat, masquerade) runs at postrouting,
    after every filter hook of this host. Destination NAT (dnat, redirect) and tproxy change which
    address, port and hook (input or forward) the filter sees, and a drop in a nat chain filters: those
    are refused rather than guessed.
    """
    where = f"{key[0]} {key[1]} {key[2]} handle {body.get('handle')}"
    for expr in body.get("expr", []) if isinstance(body.get("expr"), list) else []:
        op = next(iter(expr), None) if isinstance(expr, dict) and len(expr) == 1 else None
        if op in ("dnat", "redirect", "tproxy"):
            raise InputError(f"{where}: {op} (destination NAT) changes the address, port and hook that filter "
                             "the connection; not evaluated", file=source)
        if op not in _NAT_STATEMENTS:
            raise InputError(f"{where}: statement {op!r} in a nat chain not evaluated", file=source)


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


def _named_set(right: str, chain: Chain, raw: _Raw, kind: str, where: str, source: str) -> list[Any]:
    """The elements of set ``@name`` of the chain's table; its type must be ``kind``."""
    body = raw.sets.get((chain.family, chain.table, right[1:]))
    if body is None or "map" in body:
        raise InputError(f"{where}: unknown set {right}", file=source)
    if body.get("type") != kind:
        raise InputError(f"{where}: set {right} has type {body.get('type')!r}, not {kind}", file=source)
    elems = body.get("elem", [])
    if not isinstance(elems, list):
        raise InputError(f"{where}: set {right}: elements {elems!r}", file=source)
    return [e["elem"].get("val") if isinstance(e, dict) and isinstance(e.get("elem"), dict) else e for e in elems]


def _values(right: Any) -> list[Any]:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    return [right]


def _tri(matches: bool, negate: bool) -> int:
    return ALL if matches != negate else NONE


@dataclass
class _RuleContext:
    chain: Chain
    raw: _Raw
    source: str
    where: str
    l4: set[int] | None = None  # protocols an earlier match of the rule limited it to


def _rule(body: dict[str, Any], chain: Chain, raw: _Raw, source: str) -> list[Rule]:
    """One rule, or several when it ends in a verdict map (one per element: their keys never overlap)."""
    where = f"{chain.family} {chain.table} {chain.name} handle {body.get('handle')}"
    ctx = _RuleContext(chain, raw, source, where)
    conditions: list[Condition] = []
    verdict: str | None = None
    target: str | None = None
    comment = body.get("comment")
    note = comment if isinstance(comment, str) else None
    exprs = body.get("expr", [])
    if not isinstance(exprs, list):
        raise InputError(f"{where}: expressions {exprs!r}", file=source)
    for expr in exprs:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise InputError(f"{where}: unexpected expression {expr!r}", file=source)
        ((op, arg),) = expr.items()
        if verdict is not None:
            raise InputError(f"{where}: expression after the verdict", file=source)
        if op in ("counter", "log"):
            continue
        if op == "limit":
            conditions.append(lambda probe: (SOME, None))  # rate limited: some packets only
        elif op == "vmap":
            return [Rule([*conditions, cond], v, note, where, t) for cond, v, t in _vmap(arg, ctx)]
        elif op == "match":
            conditions.append(_match(arg, ctx))
        else:
            verdict, target = _verdict(op, arg, ctx)
    return [Rule(conditions, verdict, note, where, target)]


def _verdict(op: str, arg: Any, ctx: _RuleContext) -> tuple[str | None, str | None]:
    if op in ("accept", "drop", "reject"):
        return ("accept" if op == "accept" else "drop"), None
    if op == "return":
        return "return", None
    if op == "continue":
        return None, None
    if op in ("jump", "goto"):
        target = arg.get("target") if isinstance(arg, dict) else None
        if not isinstance(target, str) or (ctx.chain.family, ctx.chain.table, target) not in ctx.raw.chains:
            raise InputError(f"{ctx.where}: {op} to unknown chain {target!r}", file=ctx.source)
        return op, target
    raise InputError(f"{ctx.where}: statement {op!r} not evaluated", file=ctx.source)


def _vmap(arg: Any, ctx: _RuleContext) -> list[tuple[Condition, str | None, str | None]]:
    """``KEY vmap { k1 : verdict1, ... }`` as one rule per element, ``KEY == k1 verdict1``: at most one
    element matches a packet (nft refuses overlapping keys), so the order of the split rules is moot."""
    if not isinstance(arg, dict) or "key" not in arg:
        raise InputError(f"{ctx.where}: verdict map {arg!r}", file=ctx.source)
    data = arg.get("data")
    if isinstance(data, str) and data.startswith("@"):
        body = ctx.raw.sets.get((ctx.chain.family, ctx.chain.table, data[1:]))
        if body is None or body.get("map") != "verdict":
            raise InputError(f"{ctx.where}: unknown verdict map {data}", file=ctx.source)
        elements = body.get("elem", [])
    elif isinstance(data, dict) and isinstance(data.get("set"), list):
        elements = data["set"]
    else:
        raise InputError(f"{ctx.where}: verdict map data {data!r}", file=ctx.source)
    out: list[tuple[Condition, str | None, str | None]] = []
    for element in elements:
        if not isinstance(element, list) or len(element) != 2 or not isinstance(element[1], dict) \
                or len(element[1]) != 1:
            raise InputError(f"{ctx.where}: verdict map element {element!r}", file=ctx.source)
        ((op, verdict_arg),) = element[1].items()
        verdict, target = _verdict(op, verdict_arg, ctx)
        key = element[0]["elem"].get("val") if isinstance(element[0], dict) and "elem" in element[0] else element[0]
        out.append((_match({"op": "==", "left": arg["key"], "right": key}, ctx), verdict, target))
    return out


_ICMP_ECHO = {4: ("echo-request", 8), 6: ("echo-request", 128)}


def _match(arg: Any, ctx: _RuleContext) -> Condition:
    source, where = ctx.source, ctx.where
    if not isinstance(arg, dict):
        raise InputError(f"{where}: match {arg!r}", file=source)
    op, left, right = arg.get("op"), arg.get("left"), arg.get("right")
    if op not in ("==", "!=", "in"):
        raise InputError(f"{where}: operator {op!r} not evaluated", file=source)
    negate = op == "!="
    if isinstance(left, dict) and "payload" in left:
        proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            return _address_match(4 if proto == "ip" else 6, fld, negate, right, ctx)
        if proto in _PORT_PROTOCOLS and fld in ("dport", "sport"):
            return _port_match([_PORT_PROTOCOLS[proto]], fld, negate, right, ctx)
        if proto == "th" and fld in ("dport", "sport"):
            # The transport header's ports sit at the same offset in TCP, UDP and SCTP, but those bytes
            # mean something else in ICMP and other protocols: only read after a match limiting the rule
            # to protocols with ports ("meta l4proto { tcp, udp } th dport 53").
            if ctx.l4 is None or not ctx.l4 <= {6, 17, 132}:
                raise InputError(f"{where}: th {fld} without an earlier meta l4proto match to tcp, udp or sctp",
                                 file=source)
            keys = [k for n, k in ((6, "TCP"), (17, "UDP"), (132, "SCTP")) if n in ctx.l4]
            return _port_match(keys, fld, negate, right, ctx)
        if (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            # ip6 nexthdr is the first extension header; new connections of the pairs read here carry none.
            version = 4 if proto == "ip" else 6
            inner = _proto_match(negate, right, ctx)
            return lambda probe: inner(probe) if probe.version == version else (NONE, None)
        if proto in ("icmp", "icmpv6") and fld == "type":
            version = 4 if proto == "icmp" else 6
            hit = any(v in _ICMP_ECHO[version] for v in _values(right))

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
            return _proto_match(negate, right, ctx)
        if key == "nfproto":
            versions = {4 if v == "ipv4" else 6 if v == "ipv6" else 0 for v in _values(right)}
            return lambda probe: (_tri(probe.version in versions, negate), None)
        if key in ("iifname", "oifname", "iif", "oif"):
            names = set(_values(right))
            # The probed traffic crosses a real interface, never loopback; any other name may match.
            state = _tri(False, negate) if names == {"lo"} else SOME
            return lambda probe: (state, None)
    elif isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        hit = "new" in _values(right)  # the first packet of a connection, which is what is read here
        return lambda probe: (_tri(hit, negate), None)
    elif isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "status" \
            and set(_values(right)) == {"dnat"}:
        # Connections whose destination was translated: none here, as destination NAT is refused above.
        return lambda probe: (_tri(False, negate), None)
    elif isinstance(left, dict) and isinstance(left.get("fib"), dict) and left["fib"].get("result") == "oif" \
            and {"saddr", "iif"} <= set(left["fib"].get("flags", [])) and right is False and op in ("==", "!="):
        # The reverse-path filter ("fib saddr . iif oif missing drop", firewalld's rpfilter): a pair's
        # packets come in where the route back to their source points (its real addresses, no spoofing,
        # symmetric routing), so "missing" never holds for them.
        return lambda probe: (_tri(False, negate), None)
    raise InputError(f"{where}: match on {json.dumps(left)} not evaluated", file=source)


def _address_match(version: int, fld: str, negate: bool, right: Any, ctx: _RuleContext) -> Condition:
    if isinstance(right, str) and right.startswith("@"):
        kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        elems = _named_set(right, ctx.chain, ctx.raw, kind, ctx.where, ctx.source)
        target = merge(iv for v in elems for iv in _address(v, version, f"{ctx.where}: set {right}", ctx.source))
    else:
        target = merge(iv for v in _values(right) for iv in _address(v, version, ctx.where, ctx.source))

    def address(probe: Probe) -> tuple[int, Space | None]:
        if probe.version != version:
            return NONE, None
        mine = list(probe.source if fld == "saddr" else probe.destination)
        inside = intersect(mine, target)
        if not inside:
            state = NONE
        elif inside == merge(mine):
            state = ALL
        else:
            state = SOME
        if negate:
            state = ALL - state  # ALL <-> NONE, SOME stays
        return state, None
    return address


def _port_match(keys: list[str], fld: str, negate: bool, right: Any, ctx: _RuleContext) -> Condition:
    values = right
    if isinstance(right, str) and right.startswith("@"):
        values = _named_set(right, ctx.chain, ctx.raw, "inet_service", ctx.where, ctx.source)
    ports: list[Interval] = []
    for v in _values(values):
        if isinstance(v, int) and not isinstance(v, bool):
            ports.append((v, v))
        elif isinstance(v, dict) and "range" in v and all(isinstance(x, int) for x in v["range"]):
            ports.append((v["range"][0], v["range"][1]))
        else:
            raise InputError(f"{ctx.where}: port {v!r} not evaluated", file=ctx.source)
    ports = merge(ports)
    if negate:
        ports = subtract(_FULL_PORTS, ports)
    if fld == "sport":
        # The client's source port is ephemeral: a match on it matches some of the pair's connections
        # (all of them only when it names every port). It limits the protocol, not the server's port.
        state = ALL if ports == _FULL_PORTS else SOME if ports else NONE
        whole: Space = {k: list(_FULL_PORTS) for k in keys}
        return lambda probe: (state, whole)
    # A transport header match implies its protocol (nft adds the l4proto dependency itself).
    restriction: Space = {k: ports for k in keys}
    return lambda probe: (ALL, restriction)


def _proto_match(negate: bool, right: Any, ctx: _RuleContext) -> Condition:
    numbers = set()
    for v in _values(right):
        if isinstance(v, int) and not isinstance(v, bool):
            numbers.add(v)
        elif isinstance(v, str) and v in _L4_NUMBERS:
            numbers.add(_L4_NUMBERS[v])
        else:
            raise InputError(f"{ctx.where}: protocol {v!r} not evaluated", file=ctx.source)
    if not negate:
        ctx.l4 = numbers if ctx.l4 is None else ctx.l4 & numbers

    def proto(probe: Probe) -> tuple[int, Space | None]:
        icmp = 1 if probe.version == 4 else 58
        wanted = {"TCP": 6 in numbers, "UDP": 17 in numbers, "SCTP": 132 in numbers, "ICMP": icmp in numbers}
        # The other family's ICMP (ipv6-icmp in an IPv4 packet) is no connection anyone makes: it is left
        # out rather than counted as a protocol the IR cannot name, so "meta l4proto { icmp, ipv6-icmp }"
        # in an inet table reads as ICMP for both families.
        others = bool(numbers - {6, 17, 132, 1, 58})
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
        keep = merge((int(n.network_address), int(n.broadcast_address))
                      for n in (ipaddress.ip_network(a, strict=False) for a in w.addresses) if n.version == version)
        drop = merge((int(n.network_address), int(n.broadcast_address))
                      for n in (ipaddress.ip_network(a, strict=False) for a in w.except_addresses)
                      if n.version == version)
        rest = subtract(keep, drop)
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
                space = _space_op(space, parsed[s].allowed("output", probe, as_enforced=as_enforced), intersect)
            if d in parsed:
                space = _space_op(space, parsed[d].allowed("input", probe, as_enforced=as_enforced), intersect)
            if router_rs is not None and _crosses(zones, s, d):
                space = _space_op(space, router_rs.allowed("forward", probe, as_enforced=as_enforced), intersect)
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
