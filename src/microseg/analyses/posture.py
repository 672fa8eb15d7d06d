"""Posture of deployed Kubernetes NetworkPolicies: what is reachable today, and which rules deserve a look.

Input: the NetworkPolicies (:mod:`microseg.sources.deployed.kubernetes`) and the inventory's workloads.
Only Kubernetes workloads (pods, grouped by their owning workload) take part: a NetworkPolicy selects
pods, and a pair of two non-pods is no NetworkPolicy's business. Every verdict comes from the public
evaluator :func:`microseg.sources.deployed.kubernetes.connectivity`, which implements the semantics of
the Kubernetes "Network Policies" concept page
(https://kubernetes.io/docs/concepts/services-networking/network-policies/).

Findings (ids are stable, ``MS5xx``, never reused):

* MS501 flat-network measure: the share of ordered pairs of distinct workloads that can connect at all,
  and on every port and protocol. Severity by the reachable share: >= 50 % high, >= 20 % medium,
  >= 5 % low, else info. The same measure per namespace (pairs inside it, and pairs into it from other
  namespaces) is in :attr:`PostureResult.namespaces`.
* MS502 / MS503 a workload that no NetworkPolicy selects for ingress / egress: a pod no policy selects
  for a direction is not isolated in it (concept page, "The two sorts of pod isolation"), so it accepts /
  opens every connection.
* MS504 a policy whose ``podSelector`` selects no workload of the inventory in its namespace.
* MS505 a rule peer (``podSelector`` / ``namespaceSelector``) that selects no workload of the inventory.
* MS506 a redundant rule: removing it (:func:`dataclasses.replace` on the NetworkPolicy) leaves what the
  policies of the rule's direction allow unchanged for every workload the policy selects, towards every
  workload of the inventory and every address. Each rule is evaluated alone by the public evaluator; as
  policies are additive (a direction's allowances are the union of the rules of every policy selecting
  the pod), the rule is redundant when the other rules that apply to each of its workloads allow, taken
  together, everything it allows. (tests/analyses/test_posture.py checks the removal literally.)
* MS507 a shadowed rule: one other single rule (of the same or another policy, same namespace and
  direction) already allows everything this rule allows to every workload this rule's policy selects.
  A shadowed rule is also redundant; it is reported once, as MS507 naming the shadowing rule. Of two
  rules that allow exactly the same, the later one (namespace, policy name, direction, rule index) is
  the shadowed one, so every chain of shadowing ends at a rule that is not: all MS507 rules can be
  removed together. MS506 is then decided with the MS507 rules already removed, one rule at a time
  (two MS506 rules may cover each other: remove one, and re-run).
* MS508 an overly broad ``ipBlock``: an IPv4 prefix of ``/broad_prefix`` or shorter (default /8), an
  IPv6 prefix of ``/broad_prefix6`` or shorter (default /32), or a block that (minus its ``except``)
  contains every private range of its family (RFC 1918's 10/8, 172.16/12, 192.168/16; RFC 4193's
  fc00::/7). Containing the private ranges is high (lateral movement inside the estate), broad by
  prefix only is medium (typically "the internet").
* MS509 a rule with peers but no ``ports``: every port and protocol to those peers (NetworkPolicy API
  reference, ``ports``: a missing or empty list matches all ports).
* MS510 a rule with no peers: every source (ingress) or destination (egress), on its ports (API
  reference, ``from``/``to``: a missing or empty list matches every peer); high without ports (the rule
  allows everything), medium with ports.
* MS511 a peer with ``namespaceSelector: {}``, which matches every namespace (an empty label selector
  matches everything): medium without a ``podSelector`` (every pod of the cluster), low with one.

Why MS506/MS507 look at one direction (what the *selected pods'* policies allow) and not at the pair's
final verdict: a connection also needs the other end's policy. A rule made moot only by the peer's own
egress (or ingress) rules becomes necessary the moment that other policy changes, so calling it
redundant would invite a removal that breaks traffic later. Directions whose type a policy does not
list are ignored by Kubernetes and so here.

Cost: the measure is one evaluation of every ordered pair. MS506/MS507 evaluate, per rule, only the
workloads its policy selects against the workloads its peers can match (and the address ranges, cut at
every ``ipBlock`` boundary of the input, that its ``ipBlock`` peers cover or, without peers, all of
them), in chunks, so the work grows with selected x matched, not with the cluster squared.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from microseg.ir.intervals import address_text, network_text
from microseg.ir.model import PortRange, Protocol, Severity, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.deployed.kubernetes import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    LabelSelector,
    NetPol,
    Peer,
    Rule,
    connectivity,
)

Direction = Literal["ingress", "egress"]
_TYPE = {"ingress": "Ingress", "egress": "Egress"}
_PEER_KEY = {"ingress": "from", "egress": "to"}
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
# RFC 1918 section 3 (IPv4 private address space) and RFC 4193 (IPv6 unique local addresses).
PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
PRIVATE_V6 = (ipaddress.ip_network("fc00::/7"),)
_MIN_CHUNK = 16  # fewest peers evaluated per connectivity call, next to the selected workloads


@dataclass(frozen=True)
class PostureConfig:
    """Thresholds. ``broad_prefix``: an IPv4 ipBlock of this prefix length or shorter is broad (/8: a whole
    former class A network, RFC 791's largest class); ``broad_prefix6``: the same for IPv6 (/32: the minimum
    allocation to a provider, an LIR, in the regional registries' joint "IPv6 Address Allocation and
    Assignment Policy", e.g. RIPE-481 / APNIC-089 section 5.1.2)."""

    broad_prefix: int = 8
    broad_prefix6: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.broad_prefix <= 32 or not 0 <= self.broad_prefix6 <= 128:
            raise ValueError("broad prefix lengths are 0-32 (IPv4) and 0-128 (IPv6)")


@dataclass(frozen=True)
class Reach:
    """Ordered pairs of distinct workloads: how many, how many can connect, how many on every port."""

    pairs: int = 0
    reachable: int = 0
    unrestricted: int = 0

    @property
    def reachable_share(self) -> float:
        return self.reachable / self.pairs if self.pairs else 0.0

    @property
    def unrestricted_share(self) -> float:
        return self.unrestricted / self.pairs if self.pairs else 0.0


@dataclass(frozen=True)
class NamespaceReach:
    namespace: str
    workloads: int
    intra: Reach  # both ends in the namespace
    inbound: Reach  # destination in the namespace, source in another namespace


@dataclass(frozen=True)
class ObjectRef:
    """What a finding is about: the cluster, a workload, a policy, one of its rules or one peer of a rule."""

    kind: Literal["cluster", "workload", "policy", "rule", "peer"]
    namespace: str = ""
    name: str = ""
    direction: Direction | None = None
    rule: int | None = None
    peer: int | None = None

    def __str__(self) -> str:
        if self.kind == "cluster":
            return "cluster"
        text = f"{self.namespace}/{self.name}" if self.kind != "workload" else self.name
        if self.direction is not None and self.rule is not None:
            text += f" {self.direction}[{self.rule}]"
            if self.peer is not None:
                text += f".{_PEER_KEY[self.direction]}[{self.peer}]"
        return f"{self.kind} {text}"


@dataclass(frozen=True)
class PostureFinding:
    id: str
    severity: Severity
    object: ObjectRef
    message: str
    file: str = ""  # the policy's file, when the finding is about a policy
    related: str = ""  # e.g. the rule that shadows this one

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.id, _SEVERITY_ORDER[self.severity], str(self.object), self.message)


@dataclass(frozen=True)
class PostureResult:
    workloads: int
    policies: int
    overall: Reach
    namespaces: tuple[NamespaceReach, ...]
    findings: tuple[PostureFinding, ...]


# -- helpers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    variants: tuple[Mapping[str, str], ...] = ()  # the label sets of its pods, when read from a cluster

    def matches(self, selector: LabelSelector) -> bool:
        """As the evaluator decides (``kubernetes.Subject.pod_matches``): a selector matches the workload only
        when it matches every label set of its pods."""
        return all(selector.matches(v) for v in (self.variants or (self.labels,)))

    def selected_by(self, p: NetPol) -> bool:
        return p.namespace == self.namespace and self.matches(p.pod_selector)


def _pods(workloads: Sequence[Workload], label_variants: Mapping[str, Sequence[Mapping[str, str]]]) -> list[_Pod]:
    out = []
    for w in sorted(workloads, key=lambda w: w.name):
        if w.kind != WorkloadKind.KUBERNETES:
            continue
        ns = w.namespace or (w.name.split("/", 1)[0] if "/" in w.name else "")
        # The evaluator matches a pod by its labels plus its selector; so does this module.
        out.append(_Pod(w.name, ns, {**dict(w.labels), **dict(w.selector)}, tuple(label_variants.get(w.name, ()))))
    return out


def _rules(p: NetPol, direction: Direction) -> tuple[Rule, ...]:
    return p.ingress if direction == "ingress" else p.egress


def _only(p: NetPol, direction: Direction, rules: tuple[Rule, ...]) -> NetPol:
    """``p`` restricted to one direction with ``rules``: the other direction no longer isolates anyone."""
    return dataclasses.replace(p, policy_types=frozenset({_TYPE[direction]}),
                               ingress=rules if direction == "ingress" else (),
                               egress=rules if direction == "egress" else ())


def _covers(big: Connections, small: Connections) -> bool:
    """Whether every connection of ``small`` is in ``big``."""
    if big.everything:
        return True
    if small.everything:
        return False
    theirs = dict(big.ports)
    for proto, ranges in small.ports:
        have = theirs.get(proto, ())
        for r in ranges:
            if not any(h.start <= r.start and r.end <= h.end for h in have):
                return False  # big's ranges are merged, so one of them must hold r whole
    return True


def _empty_selector(sel: LabelSelector | None) -> bool:
    return sel is not None and not sel.match_labels and not sel.match_expressions


# -- the address space, cut where any ipBlock starts or ends ----------------------------------------------------

_SPACE = {4: (0, 2**32 - 1), 6: (0, 2**128 - 1)}


@dataclass(frozen=True)
class _Atom:
    version: int
    lo: int
    hi: int

    @property
    def name(self) -> str:
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        return f"ip:{address_text(cls(self.lo))}-{address_text(cls(self.hi))}"

    def workload(self) -> Workload:
        """An external workload standing for exactly this piece of the address space."""
        if self.version == 4:
            nets = [network_text(n) for n in ipaddress.summarize_address_range(ipaddress.IPv4Address(self.lo),
                                                                      ipaddress.IPv4Address(self.hi))]
        else:
            nets = [network_text(n) for n in ipaddress.summarize_address_range(ipaddress.IPv6Address(self.lo),
                                                                      ipaddress.IPv6Address(self.hi))]
        return Workload(name=self.name, kind=WorkloadKind.EXTERNAL, addresses=tuple(nets))


def _blocks(netpols: Iterable[NetPol]) -> list[IPBlock]:
    return [peer.ip_block for p in netpols for r in (*p.ingress, *p.egress) for peer in r.peers or ()
            if peer.ip_block is not None]


def _atoms(blocks: Sequence[IPBlock]) -> list[_Atom]:
    """The whole IPv4 and IPv6 space cut at every boundary of ``blocks``: each piece is wholly in or out of
    every block, so the evaluator's verdict for it holds for each of its addresses."""
    cuts: dict[int, set[int]] = {4: set(), 6: set()}
    for b in blocks:
        for n in (b.cidr, *b.excepts):
            cuts[n.version] |= {int(n.network_address), int(n.broadcast_address) + 1}
    out = []
    for version, (lo, hi) in _SPACE.items():
        start = lo
        for c in sorted(x for x in cuts[version] if lo < x <= hi):
            out.append(_Atom(version, start, c - 1))
            start = c
        out.append(_Atom(version, start, hi))
    return out


def _in_block(atom: _Atom, block: IPBlock) -> bool:
    n = block.cidr
    return n.version == atom.version and int(n.network_address) <= atom.lo and atom.hi <= int(n.broadcast_address)


# -- the analysis -------------------------------------------------------------------------------------------------


class _Context:
    def __init__(self, netpols: Sequence[NetPol], workloads: Sequence[Workload],
                 label_variants: Mapping[str, Sequence[Mapping[str, str]]]) -> None:
        self.netpols = list(netpols)
        self.workloads = {w.name: w for w in workloads if w.kind == WorkloadKind.KUBERNETES}
        self.label_variants = label_variants
        self.pods = _pods(workloads, label_variants)
        # Namespace labels as the evaluator gathers them: from the workloads of each namespace.
        self.ns_labels: dict[str, dict[str, str]] = {}
        for q in self.pods:
            self.ns_labels.setdefault(q.namespace, {}).update(dict(self.workloads[q.name].namespace_labels))
        self.atoms = _atoms(_blocks(netpols))
        self.atom_workloads = {a.name: a.workload() for a in self.atoms}
        # policy index -> names of the workloads it selects
        self.selected = [[q.name for q in self.pods if q.selected_by(p)] for p in self.netpols]
        self.selected_sets = [frozenset(names) for names in self.selected]

    def peer_pods(self, peer: Peer, own_namespace: str) -> list[str]:
        """Workloads a selector peer matches ("Behavior of to and from selectors"): namespaceSelector AND
        podSelector; podSelector alone means the policy's own namespace; an ipBlock matches no pod."""
        if peer.ip_block is not None:
            return []
        out = []
        for q in self.pods:
            if peer.namespace_selector is None:
                if q.namespace != own_namespace:
                    continue
            elif not peer.namespace_selector.matches({**self.ns_labels.get(q.namespace, {}),
                                                      NAMESPACE_NAME_LABEL: q.namespace}):
                continue
            if peer.pod_selector is None or q.matches(peer.pod_selector):
                out.append(q.name)
        return out

    def rule_peers(self, rule: Rule, own_namespace: str) -> tuple[list[str], list[_Atom]]:
        """Workloads and address atoms the rule can match (a superset is safe: the evaluator decides)."""
        if rule.peers is None:
            return [q.name for q in self.pods], list(self.atoms)
        pods: set[str] = set()
        atoms: dict[str, _Atom] = {}
        for peer in rule.peers:
            pods.update(self.peer_pods(peer, own_namespace))
            if peer.ip_block is not None:
                atoms.update((a.name, a) for a in self.atoms if _in_block(a, peer.ip_block))
        return sorted(pods), [atoms[n] for n in sorted(atoms)]

    def side(self, netpols: Sequence[NetPol], direction: Direction, selected: Sequence[str],
             peers: Sequence[str], atoms: Sequence[_Atom]) -> dict[tuple[str, str], Connections]:
        """What ``netpols`` (one direction only) allow between each selected workload and each peer, keyed
        (selected, peer); empty verdicts are left out. Evaluated in chunks of peers (see the docstring)."""
        chosen = set(selected)
        wanted = set(peers) | {a.name for a in atoms}
        others = [self.workloads[n] for n in peers if n not in chosen] + [self.atom_workloads[a.name] for a in atoms]
        base = [self.workloads[n] for n in selected]
        out: dict[tuple[str, str], Connections] = {}
        # Each call evaluates (selected + chunk)^2 pairs for the selected x chunk that count: a chunk as large
        # as the selection keeps that at 4x, with few calls.
        chunk = max(len(base), _MIN_CHUNK)
        for start in range(0, max(len(others), 1), chunk):
            for (s, d), c in connectivity(netpols, base + others[start:start + chunk],
                                          label_variants=self.label_variants).items():
                inside, other = (d, s) if direction == "ingress" else (s, d)
                if inside in chosen and other in wanted:
                    out[(inside, other)] = c
        return out


def assess(netpols: Sequence[NetPol], workloads: Sequence[Workload],
           config: PostureConfig = PostureConfig(), *,
           label_variants: Mapping[str, Sequence[Mapping[str, str]]] | None = None) -> PostureResult:
    """The posture of ``netpols`` over the Kubernetes workloads of ``workloads`` (see the module docstring).

    ``label_variants``: the label sets of each workload's pods as read from a cluster (the lenient Kubernetes
    reader's ``label_variants``); a selector then matches a workload only when it matches all of them.
    """
    ctx = _Context(netpols, workloads, label_variants or {})
    findings: list[PostureFinding] = []
    overall, namespaces = _measure(ctx)
    if overall.pairs:
        share = overall.reachable_share
        severity: Severity = "high" if share >= 0.5 else "medium" if share >= 0.2 else "low" if share >= 0.05 \
            else "info"
        findings.append(PostureFinding(
            "MS501", severity, ObjectRef("cluster"),
            f"{overall.reachable} of {overall.pairs} ordered workload pairs can connect ({share:.1%}); "
            f"{overall.unrestricted} ({overall.unrestricted_share:.1%}) on every port and protocol"))
    findings += _unprotected(ctx)
    findings += _unused(ctx)
    findings += _broad(ctx, config)
    findings += _redundant(ctx)
    return PostureResult(workloads=len(ctx.pods), policies=len(ctx.netpols), overall=overall,
                         namespaces=namespaces, findings=tuple(sorted(findings, key=PostureFinding.sort_key)))


def _measure(ctx: _Context) -> tuple[Reach, tuple[NamespaceReach, ...]]:
    conns = connectivity(ctx.netpols, list(ctx.workloads.values()), label_variants=ctx.label_variants)
    # Counters per namespace: [pairs, reachable, every port] inside it and from other namespaces into it.
    counts: dict[str, int] = {}
    intra: dict[str, list[int]] = {}
    inbound: dict[str, list[int]] = {}
    for q in ctx.pods:
        counts[q.namespace] = counts.get(q.namespace, 0) + 1
        intra.setdefault(q.namespace, [0, 0, 0])
        inbound.setdefault(q.namespace, [0, 0, 0])
    for q in ctx.pods:
        intra[q.namespace][0] += counts[q.namespace] - 1
        inbound[q.namespace][0] += len(ctx.pods) - counts[q.namespace]
    ns_of = {q.name: q.namespace for q in ctx.pods}
    for (src, dst), c in conns.items():  # connectivity() omits the pairs with no connection
        if src not in ns_of or dst not in ns_of:
            continue
        row = intra[ns_of[dst]] if ns_of[src] == ns_of[dst] else inbound[ns_of[dst]]
        row[1] += 1
        row[2] += c.everything
    total = [sum(r[i] for r in (*intra.values(), *inbound.values())) for i in range(3)]
    return Reach(*total), tuple(NamespaceReach(ns, counts[ns], Reach(*intra[ns]), Reach(*inbound[ns]))
                                for ns in sorted(counts))


def _unprotected(ctx: _Context) -> list[PostureFinding]:
    out = []
    for q in ctx.pods:
        for direction, fid in (("ingress", "MS502"), ("egress", "MS503")):
            if not any(_TYPE[direction] in p.policy_types and q.selected_by(p) for p in ctx.netpols):
                what = "accepts connections from" if direction == "ingress" else "may connect to"
                out.append(PostureFinding(fid, "medium", ObjectRef("workload", q.namespace, q.name),
                                          f"no NetworkPolicy selects it for {direction}: it {what} every peer"))
    return out


def _policy_ref(p: NetPol, direction: Direction | None = None, rule: int | None = None,
                peer: int | None = None) -> ObjectRef:
    kind: Literal["policy", "rule", "peer"] = "policy" if rule is None else "rule" if peer is None else "peer"
    return ObjectRef(kind, p.namespace, p.name, direction, rule, peer)


def _directions(p: NetPol) -> list[Direction]:
    return [d for d in ("ingress", "egress") if _TYPE[d] in p.policy_types]


def _unused(ctx: _Context) -> list[PostureFinding]:
    out = []
    for i, p in enumerate(ctx.netpols):
        if not ctx.selected[i]:
            out.append(PostureFinding("MS504", "low", _policy_ref(p), f"podSelector selects no workload of the "
                                      f"inventory in namespace {p.namespace}", file=p.file))
        for direction in _directions(p):
            for r_i, rule in enumerate(_rules(p, direction)):
                for p_i, peer in enumerate(rule.peers or ()):
                    if peer.ip_block is None and not ctx.peer_pods(peer, p.namespace):
                        out.append(PostureFinding("MS505", "low", _policy_ref(p, direction, r_i, p_i),
                                                  "peer selects no workload of the inventory", file=p.file))
    return out


def _broad_block(block: IPBlock, config: PostureConfig) -> tuple[Severity, str] | None:
    cidr = block.cidr
    private = PRIVATE_V4 if cidr.version == 4 else PRIVATE_V6
    covered = all(cidr.version == n.version and n.subnet_of(cidr)  # type: ignore[arg-type]
                  and not any(e.overlaps(n) for e in block.excepts) for n in private)
    limit = config.broad_prefix if cidr.version == 4 else config.broad_prefix6
    excepts = f" except {', '.join(map(str, block.excepts))}" if block.excepts else ""
    if covered:
        return "high", f"ipBlock {cidr}{excepts} contains every private range ({', '.join(map(str, private))})"
    if cidr.prefixlen <= limit:
        return "medium", f"ipBlock {cidr}{excepts} is /{cidr.prefixlen}, at most /{limit}"
    return None


def _broad(ctx: _Context, config: PostureConfig) -> list[PostureFinding]:
    out = []
    for p in ctx.netpols:
        for direction in _directions(p):
            whom = "source" if direction == "ingress" else "destination"
            for r_i, rule in enumerate(_rules(p, direction)):
                ref = _policy_ref(p, direction, r_i)
                if rule.peers is None:
                    if rule.ports is None:
                        out.append(PostureFinding("MS510", "high", ref, f"no peers and no ports: every {whom}, "
                                                  "every port and protocol", file=p.file))
                    else:
                        out.append(PostureFinding("MS510", "medium", ref, f"no peers: every {whom} on "
                                                  f"{_ports_text(rule)}", file=p.file))
                elif rule.ports is None:
                    out.append(PostureFinding("MS509", "medium", ref, f"no ports: every port and protocol to its "
                                              f"{len(rule.peers)} peer(s)", file=p.file))
                for p_i, peer in enumerate(rule.peers or ()):
                    pref = _policy_ref(p, direction, r_i, p_i)
                    if peer.ip_block is not None:
                        broad = _broad_block(peer.ip_block, config)
                        if broad is not None:
                            out.append(PostureFinding("MS508", broad[0], pref, broad[1], file=p.file))
                    elif _empty_selector(peer.namespace_selector):
                        if peer.pod_selector is None or _empty_selector(peer.pod_selector):
                            out.append(PostureFinding("MS511", "medium", pref, "namespaceSelector: {} without a "
                                                      "podSelector: every pod of every namespace", file=p.file))
                        else:
                            out.append(PostureFinding("MS511", "low", pref, "namespaceSelector: {}: pods matching "
                                                      "the podSelector in every namespace", file=p.file))
    return out


def _ports_text(rule: Rule) -> str:
    parts = []
    for port in rule.ports or ():
        if port.port is None:
            parts.append(f"{port.protocol.value} (all ports)")
        elif port.end_port is not None:
            parts.append(f"{port.protocol.value} {port.port}-{port.end_port}")
        else:
            parts.append(f"{port.protocol.value} {port.port}")
    return ", ".join(parts)


RuleKey = tuple[int, Direction, int]  # (policy index, direction, rule index)


def _redundant(ctx: _Context) -> list[PostureFinding]:
    order = sorted(range(len(ctx.netpols)), key=lambda i: (ctx.netpols[i].namespace, ctx.netpols[i].name, i))
    rank = {i: n for n, i in enumerate(order)}

    def key_order(k: RuleKey) -> tuple[int, int, int]:
        return (rank[k[0]], 0 if k[1] == "ingress" else 1, k[2])

    # Each rule alone, over the workloads its policy selects and the peers it can match.
    alone: dict[RuleKey, dict[tuple[str, str], Connections]] = {}
    for i in order:
        p = ctx.netpols[i]
        if not ctx.selected[i]:
            continue  # MS504 already says the policy selects nothing
        for direction in _directions(p):
            for r_i, rule in enumerate(_rules(p, direction)):
                peers, atoms = ctx.rule_peers(rule, p.namespace)
                alone[(i, direction, r_i)] = ctx.side([_only(p, direction, (rule,))], direction, ctx.selected[i],
                                                      peers, atoms)
    applies: dict[tuple[Direction, str], list[RuleKey]] = {}  # the rules that apply to a workload
    for key in alone:
        for name in ctx.selected[key[0]]:
            applies.setdefault((key[1], name), []).append(key)
    out: list[PostureFinding] = []
    shadowed: dict[RuleKey, RuleKey] = {}
    for key in sorted(alone, key=key_order):
        shadow = _shadowing(ctx, key, alone[key], alone, key_order)
        if shadow is not None:
            shadowed[key] = shadow
            i, direction, r_i = key
            other = str(_policy_ref(ctx.netpols[shadow[0]], shadow[1], shadow[2])).removeprefix("rule ")
            out.append(PostureFinding("MS507", "low", _policy_ref(ctx.netpols[i], direction, r_i),
                                      f"shadowed by {other}: it allows everything this rule allows to every "
                                      "workload this policy selects", file=ctx.netpols[i].file, related=other))
    for key in sorted(alone, key=key_order):
        if key in shadowed:
            continue
        i, direction, r_i = key
        p = ctx.netpols[i]
        ref = _policy_ref(p, direction, r_i)
        if not alone[key]:
            rule = _rules(p, direction)[r_i]
            dead_peers = rule.peers is not None and all(
                peer.ip_block is None and not ctx.peer_pods(peer, p.namespace) for peer in rule.peers)
            if not dead_peers:  # otherwise MS505 has already named every peer as the reason
                out.append(PostureFinding("MS506", "low", ref, "redundant: it allows no connection to any "
                                          "workload of the inventory or any address", file=p.file))
            continue
        # Policies are additive: what the policies selecting a workload allow in a direction is the union of
        # what each of their rules allows alone. So the rule is redundant when, for every (workload, peer) it
        # allows, the other rules that apply to that workload (shadowed ones left out: they go together, see
        # MS507) allow it too.
        covered = True
        for (inside, other), c in alone[key].items():
            rest = [alone[k].get((inside, other)) for k in applies[(direction, inside)]
                    if k != key and k not in shadowed]
            if not _covers(_union(x for x in rest if x is not None), c):
                covered = False
                break
        if covered:
            out.append(PostureFinding("MS506", "low", ref, "redundant: the other rules of the policies selecting "
                                      "these workloads already allow everything it allows", file=p.file))
    return out


def _union(conns: Iterable[Connections]) -> Connections:
    pairs: list[tuple[Protocol, PortRange]] = []
    for c in conns:
        if c.everything:
            return c
        pairs += [(proto, r) for proto, ranges in c.ports for r in ranges]
    return Connections.of(pairs)


def _shadowing(ctx: _Context, key: RuleKey, mine: Mapping[tuple[str, str], Connections],
               alone: Mapping[RuleKey, Mapping[tuple[str, str], Connections]],
               key_order: Callable[[RuleKey], tuple[int, int, int]]) -> RuleKey | None:
    """The first other rule (in canonical order) that allows, alone, everything ``key`` allows."""
    if not mine:
        return None
    i, direction, _ = key
    ns = ctx.netpols[i].namespace
    inside = {a for a, _ in mine}
    candidates = [k for k in alone if k != key and k[1] == direction and ctx.netpols[k[0]].namespace == ns
                  and inside <= ctx.selected_sets[k[0]]]
    for other in sorted(candidates, key=key_order):
        theirs = alone[other]
        if all(_covers(theirs.get(pair, Connections()), c) for pair, c in mine.items()):
            mutual = all(_covers(mine.get(pair, Connections()), c) for pair, c in theirs.items())
            if not mutual or key_order(other) < key_order(key):
                return other
    return None


def severity_rank(severity: str) -> int:
    return _SEVERITY_ORDER[severity]


__all__ = ["PRIVATE_V4", "PRIVATE_V6", "NamespaceReach", "ObjectRef", "PostureConfig", "PostureFinding",
           "PostureResult", "Reach", "assess", "severity_rank"]
