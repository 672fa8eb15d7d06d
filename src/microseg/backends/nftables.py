"""nftables host firewalls, and a forwarding ruleset for a router/firewall between segments.

What it governs. Hosts (``kind: host``, VMs and bare metal) are the workloads that run a host
firewall: each gets ``hosts/<id>.nft``. Managed services cannot run nftables, so they get no file;
like external peers they appear as *peers* (named address sets) in the hosts' rulesets and on the
router. Kubernetes workloads are governed by the Kubernetes back ends and get nothing here.

Per host, ``hosts/<id>.nft`` replaces ``table inet microseg`` in one atomic transaction and touches no
other table: the kernel applies a file given to ``nft -f`` as one transaction (nftables wiki, "Atomic
rule replacement"), and the file starts with ``table inet microseg`` (create it if absent) then
``delete table inet microseg``, because ``flush table`` would keep the old sets. The ``inet`` family sees
IPv4 and IPv6 in the same chains (nft(8), "ADDRESS FAMILIES"). It has three base chains with
``policy drop``, so default deny is concrete in both directions:

* ``input`` (hook input): the rules naming the host among their destinations, one nft rule per
  (allow rule, source, address family): ``ip saddr @<set of the source> tcp dport 22 accept``;
* ``output`` (hook output): the rules naming the host among their sources, ``ip daddr @<set>``;
* ``forward`` (hook forward): nothing: a host does not route (a host that does, e.g. for
  containers, is outside what this target can express).

The input and output chains start with the infrastructure allowances every host needs, which the
README lists:
``ct state established,related accept`` (replies of allowed connections, and the ICMP errors that
conntrack relates to them), loopback (``iifname``/``oifname "lo"``), IPv6 neighbour discovery
(router/neighbour solicitation and advertisement, only with hop limit 255, which RFC 4861 section 7.1
requires of every ND message so that an off-link sender cannot forge one) and multicast listener
discovery (hop limit 1, RFC 3810 section 5), without which IPv6 does not work on a link. No other
ICMP is allowed unless a rule says so: an IR ICMP rule allows ICMP (v4) and ICMPv6 of every type
between its peers. Nothing else is implicit: DHCP, DNS, NTP, package mirrors need rules.

Addresses. Every peer is a named set per address family (``set v4_<id>`` / ``set v6_<id>``,
``flags interval``) holding the peer's addresses minus its ``except_addresses``, computed exactly and
written as disjoint CIDRs (nft rejects overlapping intervals in a set). A Kubernetes peer has no stable
address in the IR, so a rule between a host and a Kubernetes workload raises ``UnsupportedFeature``
naming the rule (unless the inventory gave that workload addresses): it is never widened to a pod
CIDR. Also unsupported, never widened: a peer without addresses, and an address with host bits set
(``10.0.0.5/24``: one host or the subnet?). A rule whose peer has no address left after its
exceptions allows nothing and compiles to nothing. Peers are matched by address only, so workloads
whose addresses overlap (a host inside an external peer's CIDR) match each other's rules; the README
says to keep external CIDRs clear of the estate with ``except_addresses``.

The router. ``router.nft`` replaces ``table inet microseg_router``, whose only chain is ``forward``
(policy drop, plus established/related): what a firewall between segments sees. It allows exactly
the rules between two workloads with addresses (hosts, managed services, external peers) in
different zones (``policy.assignments``; a workload without a zone counts as a zone of its own),
with both ``saddr`` and ``daddr`` matched: ``ip saddr @v4_web ip daddr @v4_app tcp dport 8080
accept``. Rules with a Kubernetes side cannot be written there; the README lists those that cross
zones, so that nobody mistakes the router for their enforcement point.

Observe mode. The same chains and rules; only the end of each chain differs. Every chain ends with
``counter limit rate 50/second burst 100 packets log prefix "<prefix>"``, then in observe mode with
``accept comment "microseg observe: accept what enforce would drop"``: nothing is blocked, and each
packet that enforce would drop is counted (exactly) and logged (rate limited). Because an accepted
connection becomes ``established``, only its first packet reaches the log rule: one line per
would-be-denied connection and chain. In enforce mode the log rule is followed by the chain's
``policy drop``. The prefix is parseable by deny-log review (``microseg.backends.nftables.LOG_PREFIX``)::

    microseg-drop host=<id> chain=<input|output|forward>      (enforce)
    microseg-would-drop host=<id> chain=<input|output|forward> (observe)
    microseg-drop router chain=forward / microseg-would-drop router chain=forward

followed by one space and the kernel's ``IN=... OUT=... SRC=... DST=... PROTO=... SPT=... DPT=...``.
The kernel logs only from the initial network namespace unless ``net.netfilter.nf_log_all_netns`` is
set (Documentation/networking/netfilter-sysctl.rst): inside containers, read the counters.

Other tables. A packet accepted by one base chain is still evaluated by the other base chains of the
same hook, and a drop anywhere is final (nft(8), "VERDICT STATEMENT"; NF_ACCEPT in libnetfilter_queue):
these tables only ever take away, so they compose with firewalld, Docker or distribution rules already
on the host, which may still drop what the policy allows.

Names and escaping. nft quoted strings have no escape sequences (a ``"`` cannot be written inside
one), so text from the inventory reaches a quoted string or an identifier only when it is made of
characters nft reads literally. Identifiers are the workload name when it is ``[a-z0-9_.-]``
(starting and ending with a letter or digit, at most 40 characters), else the name lowercased, other
characters folded to ``_``, shortened, with an 8-hex-digit SHA-256 of the full name, so two names
never share an identifier. Comments are the rule id and peer name reduced to a safe character set and
clipped to nft's 128 characters. The exact names are written in ``#`` line comments as JSON strings
(ASCII, so no newline can end the comment early), in ``index.json`` and in the README.

``index.json`` maps each host workload to its file and identifier (for deployment tooling and for
:func:`microseg.sources.deployed.nftables.read_back`, which loads every file into a throwaway network
namespace and compares what the kernel holds with the IR).

L7 and DNS names. A rule with HTTP matches (``AllowRule.http``) raises ``UnsupportedFeature`` ("L7 HTTP
rules") when this target would compile it: nftables matches packets, not HTTP requests, and the same
rule at layer 4 would admit every request. An external peer with DNS names (``fqdns``) is compiled from
its addresses (never wider than the IR, see :mod:`microseg.ir.semantics`); one with names and no
addresses raises ``UnsupportedFeature``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from microseg.backends.base import Mode, check_mode, reject_l7, reject_names_only
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.intervals import Interval, address_text, merge, network_text, subtract
from microseg.ir.model import AllowRule, JustificationKind, Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import merge_ranges

TARGET = "nftables"
HOST_TABLE = "microseg"
ROUTER_TABLE = "microseg_router"
ROUTER_FILE = "router.nft"
INDEX_FILE = "index.json"
OBSERVE_COMMENT = "microseg observe: accept what enforce would drop"
# Deny-log review parses kernel log lines with this; the kernel fields follow the prefix.
LOG_PREFIX = re.compile(r"microseg-(?P<action>drop|would-drop) (?:host=(?P<host>[a-z0-9_.-]+)|(?P<router>router)) "
                        r"chain=(?P<chain>input|output|forward) ")
LOG_LIMIT = "limit rate 50/second burst 100 packets"

_MAX_IDENT = 40  # keeps "v4_<id>" and the log prefix (127 bytes at most, NF_LOG_PREFIXLEN) short
_MAX_COMMENT = 128  # nft: "comment too long, 128 characters maximum allowed"
_SAFE_IDENT = re.compile(r"[a-z0-9]([a-z0-9_.-]*[a-z0-9])?")
_UNSAFE_COMMENT = re.compile(r"[^A-Za-z0-9 _.:/@+=,()-]")
_FILE_HEADER = "#!/usr/sbin/nft -f\n# Generated by microseg from the policy: edit the policy, not this file.\n"
_ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"
_MLD_TYPES = "mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report"

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class NftablesBackend:
    """Compiles a policy to nftables rulesets; see the module docstring for the exact mapping."""

    name = TARGET
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "icmp", "port-range", "ingress", "egress", "ipblock",
                              "ipblock-except", "observe-mode", "audit-log"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        return _Compiler(policy, mode).run()


BACKEND = NftablesBackend()


# -- names ---------------------------------------------------------------------------------------------


def ident(name: str) -> str:
    """A safe nft identifier part for a workload name, unique by a hash when it had to be changed.

    nft identifiers may contain letters, digits, ``_``, ``-`` and ``.`` after a leading letter (the
    ``v4_``/``v6_`` prefix of set names provides it); names that already fit ``[a-z0-9_.-]`` are kept.
    """
    if len(name) <= _MAX_IDENT and _SAFE_IDENT.fullmatch(name):
        return name
    clean = re.sub(r"_{2,}", "_", re.sub(r"[^a-z0-9_.-]", "_", name.lower()))
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    clean = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", clean[:_MAX_IDENT - len(digest) - 1])
    return f"{clean}_{digest}" if clean else f"w_{digest}"


def comment(text: str) -> str:
    """An nft ``comment "..."`` argument: nft strings have no escapes, so unsafe characters become ``_``."""
    safe = _UNSAFE_COMMENT.sub("_", " ".join(text.split()))
    if len(safe) > _MAX_COMMENT:
        safe = safe[:_MAX_COMMENT - 3] + "..."
    return f'"{safe}"'


def _json_name(name: str) -> str:
    # ensure_ascii: no newline, U+2028 or other character can end a '#' comment line early.
    return json.dumps(name, ensure_ascii=True)


def log_prefix(mode: Mode, host_ident: str | None, chain: str) -> str:
    action = "drop" if mode == "enforce" else "would-drop"
    point = "router" if host_ident is None else f"host={host_ident}"
    return f"microseg-{action} {point} chain={chain} "


# -- addresses -----------------------------------------------------------------------------------------


def _network(address: str, w: Workload, rule_id: str | None) -> Net:
    try:
        return ipaddress.ip_network(address, strict=True)
    except ValueError:
        raise UnsupportedFeature(TARGET, f"address {address!r} of {w.name!r} (host bits set: write the host as "
                                 "/32 or /128, or the network address of the subnet)", rule_id) from None


def effective_addresses(w: Workload, rule_id: str | None) -> dict[int, list[Interval]]:
    """IP version -> disjoint sorted address intervals: ``addresses`` minus ``except_addresses``."""
    out: dict[int, list[Interval]] = {}
    for version in (4, 6):
        keep = merge((int(n.network_address), int(n.broadcast_address))
                      for n in (_network(a, w, rule_id) for a in w.addresses) if n.version == version)
        drop = merge((int(n.network_address), int(n.broadcast_address))
                      for n in (_network(a, w, rule_id) for a in w.except_addresses) if n.version == version)
        rest = subtract(keep, drop)
        if rest:
            out[version] = rest
    return out


def _elements(version: int, intervals: Sequence[Interval]) -> list[str]:
    addr = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    out = []
    for a, b in intervals:
        for net in ipaddress.summarize_address_range(addr(a), addr(b)):
            # nft prints a single address without its /32 or /128; so do we.
            out.append(address_text(net.network_address) if net.prefixlen == net.max_prefixlen else network_text(net))
    return out


# -- compilation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    key: tuple[str, str, str, int]  # rule id, first peer, second peer, IP version
    text: str


def _ports_match(rule: AllowRule, version: int) -> str | None:
    """The protocol/port part of an nft rule for ``rule`` (nft(8), "PAYLOAD EXPRESSION", "META EXPRESSIONS").

    ``None`` for a TCP/UDP/SCTP rule without ports: it allows nothing, so it compiles to nothing.
    """
    if rule.protocol == Protocol.ICMP:
        # IR ICMP covers ICMP and ICMPv6 of every type (IANA 1 and 58 both read as ICMP).
        return "meta l4proto icmp" if version == 4 else "meta l4proto ipv6-icmp"
    proto = rule.protocol.value.lower()
    ranges = merge_ranges(rule.ports)
    if not ranges:
        return None
    if ranges == (PortRange(start=0, end=65535),):
        return f"meta l4proto {proto}"
    items = [str(r.start) if r.start == r.end else f"{r.start}-{r.end}" for r in ranges]
    return f"{proto} dport " + (items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }")


def _family(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _set_name(version: int, w: Workload) -> str:
    return f"v{version}_{ident(w.name)}"


class _Table:
    """The sets and chain bodies of one table, collected rule by rule."""

    def __init__(self) -> None:
        self.sets: dict[str, tuple[Workload, int, list[Interval]]] = {}
        self.chains: dict[str, list[_Line]] = {"input": [], "output": [], "forward": []}

    def use_set(self, w: Workload, version: int, intervals: list[Interval]) -> str:
        name = _set_name(version, w)
        self.sets.setdefault(name, (w, version, intervals))
        return name


class _Compiler:
    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy = policy
        self.mode = mode
        self.workloads = policy.workload_map()
        zones = policy.zone_of()
        self.zone = {w.name: zones.get(w.name, w.zone) for w in policy.workloads}
        self.hosts = sorted(w.name for w in policy.workloads if w.kind == WorkloadKind.HOST)
        self.tables: dict[str, _Table] = {h: _Table() for h in self.hosts}
        self.router = _Table()
        self.rules_in: dict[str, set[str]] = {h: set() for h in self.hosts}
        self.rules_out: dict[str, set[str]] = {h: set() for h in self.hosts}
        self.router_rules: set[str] = set()
        self.not_on_router: dict[str, AllowRule] = {}
        self.compiled: dict[str, AllowRule] = {}

    def check_names(self) -> None:
        seen: dict[str, str] = {}
        for w in sorted(self.policy.workloads, key=lambda w: w.name):
            i = ident(w.name)
            if i in seen and seen[i] != w.name:
                raise MicrosegError(f"workloads {seen[i]!r} and {w.name!r} both get the nftables name {i!r}")
            seen[i] = w.name

    def resolve(self, rule: AllowRule, names: Iterable[str]) -> list[Workload]:
        out = []
        for n in sorted(set(names)):
            w = self.workloads.get(n)
            if w is None:  # fail closed: an unresolvable name never compiles to something
                raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
            out.append(w)
        return out

    def peer_addresses(self, rule: AllowRule, w: Workload) -> dict[int, list[Interval]]:
        reject_names_only(TARGET, w, rule.id)
        if not w.addresses:
            if w.kind == WorkloadKind.KUBERNETES:
                raise UnsupportedFeature(
                    TARGET, f"Kubernetes workload {w.name!r} as a host-firewall peer (the policy has no address for "
                    "its pods, and a pod CIDR would allow every pod in it)", rule.id)
            raise UnsupportedFeature(TARGET, f"peer {w.name!r} without addresses", rule.id)
        return effective_addresses(w, rule.id)

    def add_rule(self, rule: AllowRule) -> None:
        sources = self.resolve(rule, rule.sources)
        destinations = self.resolve(rule, rule.destinations)
        for d in destinations:
            if d.kind != WorkloadKind.HOST:
                continue
            for s in sources:
                if s.name != d.name:
                    self.host_line(rule, d, s, "input", "saddr", "from")
        for s in sources:
            if s.kind != WorkloadKind.HOST:
                continue
            for d in destinations:
                if d.name != s.name:
                    self.host_line(rule, s, d, "output", "daddr", "to")
        for s in sources:
            for d in destinations:
                if s.name != d.name and self.crosses_zones(s, d):
                    self.router_line(rule, s, d)

    def host_line(self, rule: AllowRule, host: Workload, peer: Workload, chain: str, field: str, word: str) -> None:
        reject_l7(TARGET, rule)  # nftables matches L3/L4 only
        table = self.tables[host.name]
        for version, intervals in sorted(self.peer_addresses(rule, peer).items()):
            ports = _ports_match(rule, version)
            if ports is None:
                return
            name = table.use_set(peer, version, intervals)
            note = comment(f"{rule.id} {word} {peer.name}")
            text = f"{_family(version)} {field} @{name} {ports} accept comment {note}"
            table.chains[chain].append(_Line((rule.id, peer.name, "", version), text))
            (self.rules_in if chain == "input" else self.rules_out)[host.name].add(rule.id)
            self.compiled[rule.id] = rule

    def crosses_zones(self, s: Workload, d: Workload) -> bool:
        zs, zd = self.zone.get(s.name), self.zone.get(d.name)
        return zs is None or zd is None or zs != zd

    def router_line(self, rule: AllowRule, s: Workload, d: Workload) -> None:
        s_pod = s.kind == WorkloadKind.KUBERNETES and not s.addresses
        d_pod = d.kind == WorkloadKind.KUBERNETES and not d.addresses
        if s_pod or d_pod:
            # Not expressible on the router (it matches addresses). A host on the other side has
            # already raised UnsupportedFeature; a rule between two pods is no router's concern.
            if not (s_pod and d_pod):
                self.not_on_router[rule.id] = rule
            return
        reject_l7(TARGET, rule)
        src, dst = self.peer_addresses(rule, s), self.peer_addresses(rule, d)
        for version in sorted(set(src) & set(dst)):
            ports = _ports_match(rule, version)
            if ports is None:
                return
            sname = self.router.use_set(s, version, src[version])
            dname = self.router.use_set(d, version, dst[version])
            fam = _family(version)
            text = (f"{fam} saddr @{sname} {fam} daddr @{dname} {ports} accept "
                    f"comment {comment(f'{rule.id} {s.name} to {d.name}')}")
            self.router.chains["forward"].append(_Line((rule.id, s.name, d.name, version), text))
            self.router_rules.add(rule.id)
            self.compiled[rule.id] = rule

    # -- output ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        self.check_names()
        for rule in sorted(self.policy.all_rules(), key=lambda r: (r.id, json.dumps(r.model_dump(mode="json"),
                                                                                     sort_keys=True))):
            self.add_rule(rule)
        files = {f"hosts/{ident(h)}.nft": self.host_file(h) for h in self.hosts}
        files[ROUTER_FILE] = self.router_file()
        files[INDEX_FILE] = self.index()
        files["README.md"] = self.readme()
        return files

    def chain_text(self, table: _Table, chain: str, host_ident: str | None) -> list[str]:
        host = host_ident is not None
        lines = [f"\tchain {chain} {{", f"\t\ttype filter hook {chain} priority filter; policy drop;"]
        if chain != "forward" or not host:
            lines.append("\t\tct state established,related accept")
        if host and chain != "forward":
            lo = "iifname" if chain == "input" else "oifname"
            lines += [f'\t\t{lo} "lo" accept',
                      f"\t\ticmpv6 type {{ {_ND_TYPES} }} ip6 hoplimit 255 accept "
                      f"comment {comment('infrastructure: IPv6 neighbour discovery')}",
                      f"\t\ticmpv6 type {{ {_MLD_TYPES} }} ip6 hoplimit 1 accept "
                      f"comment {comment('infrastructure: IPv6 multicast listener discovery')}"]
        seen: set[str] = set()
        for line in sorted(table.chains[chain], key=lambda ln: ln.key):
            if line.text not in seen:  # the same rule listed twice (rules and exceptions) is written once
                seen.add(line.text)
                lines.append("\t\t" + line.text)
        lines.append(f'\t\tcounter {LOG_LIMIT} log prefix "{log_prefix(self.mode, host_ident, chain)}"')
        if self.mode == "observe":
            lines.append(f"\t\taccept comment {comment(OBSERVE_COMMENT)}")
        lines.append("\t}")
        return lines

    def table_text(self, family_table: str, table: _Table, chains: Sequence[str], host_ident: str | None) -> str:
        lines = [f"table inet {family_table}", f"delete table inet {family_table}", "",
                 f"table inet {family_table} {{"]
        for name in sorted(table.sets):
            w, version, intervals = table.sets[name]
            elements = _elements(version, intervals)
            lines += [f"\t# {_json_name(w.name)} ({w.kind.value})", f"\tset {name} {{",
                      f"\t\ttype {'ipv4_addr' if version == 4 else 'ipv6_addr'}", "\t\tflags interval"]
            if len(elements) == 1:
                lines.append(f"\t\telements = {{ {elements[0]} }}")
            else:
                lines += ["\t\telements = {"] + [f"\t\t\t{e}," for e in elements[:-1]] + [f"\t\t\t{elements[-1]}",
                                                                                          "\t\t}"]
            lines += ["\t}", ""]
        for i, chain in enumerate(chains):
            if i:
                lines.append("")
            lines += self.chain_text(table, chain, host_ident)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def host_file(self, host: str) -> str:
        i = ident(host)
        head = (_FILE_HEADER + f"# Host firewall of {_json_name(host)}, mode {self.mode}. `nft -f` this file on the "
                f"host: it replaces table inet {HOST_TABLE} atomically and leaves other tables alone.\n\n")
        return head + self.table_text(HOST_TABLE, self.tables[host], ("input", "output", "forward"), i)

    def router_file(self) -> str:
        head = (_FILE_HEADER + f"# Router/firewall between segments, mode {self.mode}. `nft -f` this file on the "
                f"router: it replaces table inet {ROUTER_TABLE} atomically and leaves other tables alone.\n\n")
        return head + self.table_text(ROUTER_TABLE, self.router, ("forward",), None)

    def index(self) -> str:
        doc = {
            "target": TARGET,
            "mode": self.mode,
            "hosts": [{"workload": h, "file": f"hosts/{ident(h)}.nft", "table": f"inet {HOST_TABLE}",
                       "id": ident(h)} for h in self.hosts],
            "router": {"file": ROUTER_FILE, "table": f"inet {ROUTER_TABLE}"},
        }
        return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=True) + "\n"

    # -- README ------------------------------------------------------------------------------------------

    def readme(self) -> str:
        mode_text = _README_ENFORCE if self.mode == "enforce" else _README_OBSERVE
        lines = ["# nftables rulesets generated by microseg", "", mode_text, "",
                 "| host | file | rules allowing input | rules allowing output |", "| --- | --- | --- | --- |"]
        for h in self.hosts:
            lines.append(f"| {_md(h)} | hosts/{ident(h)}.nft | {len(self.rules_in[h])} | {len(self.rules_out[h])} |")
        lines += ["", f"`{ROUTER_FILE}` (table `inet {ROUTER_TABLE}`, chain `forward`): {len(self.router_rules)} "
                  "rules between workloads in different zones.", "",
                  f"`{INDEX_FILE}` maps each host to its file and to the identifier used in its log prefix.", "",
                  "## Log prefixes", "", _README_LOG, "",
                  "## Infrastructure allowances", "", *_README_INFRA]
        compiled = [self.compiled[k] for k in sorted(self.compiled)]
        infra = [r for r in compiled if r.justification.kind == JustificationKind.INFRASTRUCTURE]
        lines += ["", "Rules of the policy justified as infrastructure:", ""]
        lines += _rule_table(infra) if infra else ["None."]
        lines += ["", "## Approved exceptions", ""]
        exc = sorted((e for e in self.policy.exceptions if e.rule.id in self.compiled), key=lambda e: e.rule.id)
        if exc:
            lines += ["| rule | guardrail | approver | expires | reason |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {_md(e.rule.id)} | {_md(e.guardrail)} | {_md(e.approver)} | "
                      f"{e.expires.isoformat()} | {_md(e.reason)} |" for e in exc]
        else:
            lines.append("None.")
        services = sorted(w.name for w in self.policy.workloads if w.kind == WorkloadKind.SERVICE)
        lines += ["", "## Not governed here", "",
                  "Managed services cannot run a host firewall: they are peers only (and on the router). "
                  + ("Managed services: " + ", ".join(_md(s) for s in services) + "." if services else
                     "The policy has none."),
                  "", "Kubernetes workloads are governed by the Kubernetes back ends. Rules between a Kubernetes "
                  "workload and a workload with addresses in another zone are not on the router (it matches "
                  "addresses, and the policy has none for pods): pod traffic crossing the router is dropped there.",
                  ""]
        if self.not_on_router:
            lines += _rule_table([self.not_on_router[k] for k in sorted(self.not_on_router)])
        else:
            lines.append("None.")
        lines += ["", "## Caveats", "", *_README_CAVEATS, ""]
        return "\n".join(lines)


_README_ENFORCE = ("Mode: **enforce**. Every chain (`input`, `output`, `forward` on hosts; `forward` on the router) "
                   "has `policy drop`: default deny in both directions. The rules allow exactly the policy's allow "
                   "rules, plus the infrastructure allowances below. Packets reaching the end of a chain are counted "
                   "and logged (rate limited) before the policy drops them.")
_README_OBSERVE = ("Mode: **observe**. The same chains and rules as in enforce mode, but each chain ends with "
                   "`accept`: nothing is blocked. Every packet that enforce mode would drop is counted and logged "
                   "(rate limited) with a `microseg-would-drop` prefix first; an accepted connection is then "
                   "`established`, so each would-be-denied connection is logged once per chain. Review those log "
                   "lines (or the counters of the log rules) before loading the enforce output, which replaces the "
                   "same tables.")
_README_LOG = ("Every chain ends with `counter limit rate 50/second burst 100 packets log prefix \"...\"`. The "
               "prefix is `microseg-drop host=<id> chain=<chain> ` (enforce) or `microseg-would-drop host=<id> "
               "chain=<chain> ` (observe), `router` instead of `host=<id>` on the router; `<id>` is the host's "
               "identifier from `index.json`, and the kernel's `IN= OUT= SRC= DST= PROTO= SPT= DPT=` fields follow. "
               "The kernel logs from the initial network namespace only, unless `net.netfilter.nf_log_all_netns` "
               "is set; in containers, read the counters (`nft list chain inet microseg input`).")
_README_INFRA = (
    "Built into every host chain (never hidden, never widened):",
    "",
    "- `ct state established,related accept`: replies of allowed connections, and ICMP errors about them;",
    "- loopback (`iifname \"lo\"` on input, `oifname \"lo\"` on output);",
    ("- IPv6 neighbour and router discovery with hop limit 255 (RFC 4861 section 7.1: off-link senders cannot "
     "forge it), and multicast listener discovery with hop limit 1 (RFC 3810): IPv6 does not work without them."),
    "",
    "Nothing else: DHCP, DNS, NTP and package mirrors need rules in the policy.",
)
_README_CAVEATS = (
    ("- A packet accepted here is still evaluated by the other tables of the host (firewalld, Docker, ...), "
     "which may drop it; these tables never accept on their behalf."),
    ("- The host's own addresses are not matched: its `input` chain allows a rule's sources to reach any "
     "address of the host."),
    ("- The router allows rules between workloads with addresses in different zones; traffic between "
     "workloads in one zone does not cross it. A workload without a zone counts as a zone of its own."),
    ("- Peers are matched by address: when a workload's addresses overlap another's (a host inside an external "
     "CIDR), a rule for one also matches the other. Keep external CIDRs clear of the estate (`except_addresses`)."),
    "- Load a file with `nft -f FILE`; check it first with `nft -c -f FILE`.",
)


def _md(text: str) -> str:
    """Escape free text (names, reasons) for a Markdown table cell: no HTML, no links, no new rows."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)


def _rule_table(rules: Sequence[AllowRule]) -> list[str]:
    lines = ["| rule | from | to | protocol | ports | justification |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        ports = "-" if r.protocol == Protocol.ICMP else ",".join(str(p) for p in merge_ranges(r.ports))
        lines.append(f"| {_md(r.id)} | {_md(', '.join(sorted(r.sources)))} | {_md(', '.join(sorted(r.destinations)))}"
                     f" | {r.protocol.value} | {ports} | {_md(r.justification.text)} |")
    return lines
