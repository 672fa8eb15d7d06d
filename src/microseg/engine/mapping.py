"""Map stored flows to edges between workloads: resolve, orient, aggregate - in DuckDB SQL.

**Resolve** each endpoint of each stored flow aggregate (see ``engine/store.py``):

1. a workload hint given by the log (Hubble ``namespace/workload``) wins when it names an inventory
   workload;
2. else the address binding valid at the flow's time. Bindings are first cut into non-overlapping
   segments per address: where two bindings overlap, the one that started later holds the address
   (its start post-dates the other's, whose end was most likely never seen); two bindings starting
   together for different workloads leave the overlap *conflicting* (unresolved). An aggregate must
   fall inside one segment (``ts_start .. ts_start_last``): if a binding boundary falls inside it,
   its records may belong to two holders and the endpoint is *time-ambiguous* (unresolved, never
   guessed). A flow without a time matches only an address's open-ended binding(s) for one
   workload or, failing that, its only binding;
3. else the longest prefix among EXTERNAL workloads' ``addresses`` (minus ``except_addresses``;
   ties go to the alphabetically first name);
4. else a globally routable address is ``external:internet``;
5. else the address is unresolved (private and unexplained, or unparseable): no edge; counted and
   listed in the coverage.

**Orient** each aggregate to the server side, so that a request and its reply are one dependency:
the log's ``is_reply`` (Hubble, or TCP flags: SYN without ACK is a request, SYN+ACK a reply); else
a port that the endpoint's workload declares as a listening port (destination first); else a
well-known port (< 1024) against a higher one; else a port below the Linux ephemeral range (32768)
against one inside it; else the lower port. A server port at or above 32768 that is not a declared
listening port gives no edge (*unoriented*): ephemeral ports never become rules. Where the store
folded several ephemeral ports into a range and the workload declares a listening port inside that
range, the records cannot be told apart and are counted as unoriented too. ICMP keeps the logged
direction, port 0. Protocols other than TCP/UDP/SCTP/ICMP, and records without protocol, ports or
action, are *unmappable*.

**Aggregate** per (client, server, protocol, server port): ``flows`` counts accepted (accept,
audit) records in the request direction, or the reply records when no request was seen;
``denied_flows`` counts reject/drop records in both directions. The evidence fields - bytes
(both directions), first/last seen, days, hours - describe the accepted records when there are
any and the denied ones otherwise, so an edge's "N flows over D days" never counts denied traffic.
Denied-only edges are kept (flows=0): the planner reports them and never codifies them.

**Unanswered TCP edges.** An accept only says the network control let the packets through, not
that the server answered. Where the log has TCP flags (``tcp_flags``, the bit-OR of an aggregate's
records: VPC v3+ ``tcp-flags``, nfdump, Hubble), a TCP edge is *unanswered* when, over its accepted
records: every record's flags are known; the request direction shows SYN and nothing but SYN and
RST; the reply direction shows nothing but RST, or RST with ACK (a closed port's RST-ACK in nfdump
and Hubble; VPC logs ACK only with SYN), or nothing at all; and no record has flags 0 (VPC logs a
connection still open across capture intervals as later records with flags 0). So a dead host
(SYN only) or a closed port (SYN, then RST) is unanswered, while any SYN-ACK (VPC 18), FIN, ACK in
the request direction (nfdump's and Hubble's established client) or flags-0 interval makes the
edge answered. This is judged only where the log shows the client's replies at all: the client
has some TCP edge whose reply direction shows SYN-ACK. A log of requests only - a Hubble export of
policy-verdict events (one per new connection, its SYN), an exporter that sees one direction,
replies filtered out - shows every connection as a lone SYN; its clients have no SYN-ACK anywhere
and nothing of theirs is judged (nor is a client whose only traffic is the unanswered attempts).

An unanswered edge's accepted records are counted as denied attempts: ``flows`` 0,
``denied_flows`` all its records (``unanswered`` the accepted ones among them), evidence over all
of them - so, like a denied-only edge, it is reported (MS102, worded as never answered rather
than denied) and never codified. One answered connection on the edge keeps it an edge with
flows; a record without flags (VPC v2, other logs) leaves it as it was. The store ORs the flags of
the records it folds together: a flags-0 record that shares an aggregate with an RST-only record
(the same client, server port and day, no FIN) is hidden - the edge then reads unanswered only if
nothing else on it answered, and errs towards no rule.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ibis
import ibis.backends.duckdb  # noqa: F401 - see _warm_imports
import ibis.expr.types as ir
from ibis.backends import BaseBackend

from microseg.engine import job
from microseg.engine.job import BINDING_CONFLICT, NO_TIME, TIME_AMBIGUOUS, Lookup
from microseg.engine.store import FlowStore
from microseg.errors import InputError
from microseg.ir.intervals import address_text
from microseg.ir.model import AddressBinding, Edge, Frozen, Inventory, Protocol, WorkloadKind
from microseg.sources.flows import TCP_ACK, TCP_RST, TCP_SYN

INTERNET = "external:internet"
TOP_UNRESOLVED = 20

# Unresolved reasons, as they appear in the coverage (the time-related ones come from engine/job.py:
# TIME_AMBIGUOUS, BINDING_CONFLICT, NO_TIME).
PRIVATE = "private"  # not bound, not external, not globally routable
INVALID = "invalid"  # not an IP address
__all__ = ["BINDING_CONFLICT", "INTERNET", "NO_TIME", "PRIVATE", "INVALID", "TIME_AMBIGUOUS", "Coverage",
           "MappingResult", "UnresolvedAddress", "classify_addresses", "map_flows", "map_table", "prepare_bindings"]


class UnresolvedAddress(Frozen):
    address: str
    reason: str  # the reason covering most of its records
    records: int
    bytes: int


class Coverage(Frozen):
    records: int
    bytes: int
    resolved_records: int  # both ends resolved
    resolved_bytes: int
    resolved_share: float
    resolved_bytes_share: float
    unresolved_records: int
    unmappable_records: int  # resolved, but no usable protocol / ports / action
    unoriented_records: int  # resolved, but no server side (ephemeral-only or ambiguous)
    edge_records: int  # records behind the edges
    unresolved_addresses: int
    top_unresolved: tuple[UnresolvedAddress, ...]


class MappingResult(Frozen):
    edges: tuple[Edge, ...]
    coverage: Coverage


Segment = tuple[str, str | None, datetime | None, datetime | None]


def _utc(t: datetime | None) -> datetime | None:
    """Naive UTC, as DuckDB TIMESTAMP stores it; a naive input is taken to be UTC already."""
    if t is None or t.tzinfo is None:
        return t
    return t.astimezone(UTC).replace(tzinfo=None)


def _norm_ip(b: AddressBinding) -> str:
    try:
        return address_text(ipaddress.ip_address(b.ip.strip()))  # as the flow store writes it (canonical_ip)
    except ValueError:
        raise InputError(f"binding of {b.workload!r} has an invalid address {b.ip!r}", file=b.source or None,
                         field="ip") from None


@dataclass(frozen=True)
class Bindings:
    """The inventory's bindings prepared for SQL.

    ``static``: addresses with one binding for all time (hosts, most VMs): resolved without looking
    at flow times. ``segments``: non-overlapping (ip, workload | None, from, to) for the others.
    ``no_time``: for those others, the holder of flows that carry no time (or None).
    """

    static: list[tuple[str, str]]
    segments: list[Segment]
    no_time: list[tuple[str, str | None]]


def prepare_bindings(bindings: Iterable[AddressBinding]) -> Bindings:
    by_ip: dict[str, set[tuple[datetime | None, datetime | None, str]]] = defaultdict(set)
    for b in bindings:
        lo, hi = _utc(b.valid_from), _utc(b.valid_to)
        if lo is not None and hi is not None and hi <= lo:
            raise InputError(f"binding of {b.ip} to {b.workload!r} ends before it starts", file=b.source or None,
                             field="valid_to")
        by_ip[_norm_ip(b)].add((lo, hi, b.workload))
    out = Bindings(static=[], segments=[], no_time=[])
    for ip in sorted(by_ip):
        bs = sorted(by_ip[ip], key=lambda x: (x[0] is not None, x[0] or datetime.min, x[2]))
        if len(bs) == 1 and bs[0][0] is None and bs[0][1] is None:
            out.static.append((ip, bs[0][2]))
            continue
        open_holders = {w for lo, hi, w in bs if lo is None and hi is None}
        if len(open_holders) == 1:
            out.no_time.append((ip, next(iter(open_holders))))
        elif len(bs) == 1:
            out.no_time.append((ip, bs[0][2]))
        else:
            out.no_time.append((ip, None))
        out.segments.extend(_sweep(ip, bs))
    return out


def _sweep(ip: str, bs: list[tuple[datetime | None, datetime | None, str]]) -> list[Segment]:
    """Cut one address's bindings into non-overlapping segments; the latest start holds an overlap."""
    points = sorted({t for lo, hi, _ in bs for t in (lo, hi) if t is not None})
    bounds: list[datetime | None] = [None, *points, None]
    merged: list[Segment] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        active = [(blo, w) for blo, bhi, w in bs
                  if (blo is None or (lo is not None and blo <= lo))
                  and (bhi is None or (hi is not None and hi <= bhi))]
        if not active:
            continue
        latest = max((blo is not None, blo or datetime.min) for blo, _ in active)
        holders = {w for blo, w in active if (blo is not None, blo or datetime.min) == latest}
        holder = next(iter(holders)) if len(holders) == 1 else None
        if merged and merged[-1][1] == holder and merged[-1][3] == lo:
            merged[-1] = (ip, holder, merged[-1][2], hi)
        else:
            merged.append((ip, holder, lo, hi))
    return merged


# IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates): blocks that are not globally
# reachable, plus multicast (224/4), which is no workload either. A bisect over these is ~20x faster
# than ipaddress's is_global, which matters with 10^5 distinct internet peers.
_NON_PUBLIC_V4 = sorted(
    (int(n.network_address), int(n.broadcast_address)) for n in map(ipaddress.IPv4Network, (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")))
_NON_PUBLIC_V4_STARTS = [lo for lo, _ in _NON_PUBLIC_V4]


def _v4_int(text: str) -> int | None:
    """Dotted-quad IPv4 as an integer, strictly (no leading zeros); None when it is not one.

    ipaddress does the same but ~10x slower, which shows with 10^5 distinct internet peers.
    """
    parts = text.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for p in parts:
        if not (p.isdigit() and p.isascii() and len(p) <= 3 and (p == "0" or p[0] != "0")) or int(p) > 255:
            return None
        n = n << 8 | int(p)
    return n


def _v4_public(n: int) -> bool:
    i = bisect.bisect_right(_NON_PUBLIC_V4_STARTS, n) - 1
    return i < 0 or n > _NON_PUBLIC_V4[i][1]


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_public(int(ip))
    return ip.is_global and not ip.is_multicast


_Net = tuple[int, str, int, int, list[tuple[int, int]]]  # -prefixlen, name, first, last, excepts


def _external_nets(inventory: Inventory) -> dict[int, list[_Net]]:
    """EXTERNAL workloads' networks per IP version, longest prefix first, then by name."""
    nets: dict[int, list[_Net]] = {4: [], 6: []}
    for w in inventory.workloads:
        if w.kind != WorkloadKind.EXTERNAL:
            continue
        excepts = [ipaddress.ip_network(e, strict=False) for e in w.except_addresses]
        for a in w.addresses:
            net = ipaddress.ip_network(a, strict=False)
            exc = [(int(e.network_address), int(e.broadcast_address)) for e in excepts if e.version == net.version]
            nets[net.version].append((-net.prefixlen, w.name, int(net.network_address), int(net.broadcast_address),
                                      exc))
    for v in nets.values():
        v.sort(key=lambda n: (n[0], n[1]))
    return nets


def classify_addresses(ips: Iterable[str], inventory: Inventory) -> list[tuple[str, str | None, str]]:
    """(ip, workload | None, state) for addresses no binding explains: external, internet, or unresolved."""
    nets = _external_nets(inventory)
    out: list[tuple[str, str | None, str]] = []
    for text in ips:
        n = _v4_int(text)
        version = 4
        ip6: ipaddress.IPv6Address | None = None
        if n is None:
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                out.append((text, None, INVALID))
                continue
            n, version = int(parsed), parsed.version
            ip6 = parsed if isinstance(parsed, ipaddress.IPv6Address) else None
        match = next((name for _, name, lo, hi, exc in nets[version]
                      if lo <= n <= hi and not any(elo <= n <= ehi for elo, ehi in exc)), None)
        if match is not None:
            out.append((text, match, "external"))
        elif (ip6.is_global and not ip6.is_multicast) if ip6 is not None else _v4_public(n):
            out.append((text, INTERNET, "internet"))
        else:
            out.append((text, None, PRIVATE))
    return out


def build_lookup(inventory: Inventory, addresses: Sequence[str], prepared: Bindings | None = None) -> Lookup:
    """The inventory side of the mapping job for the flows' distinct ``addresses``."""
    b = prepared or prepare_bindings(inventory.bindings)
    static = dict(b.static)
    no_time = dict(b.no_time)
    rows: list[tuple[str, str | None, bool, str | None, str | None, str | None]] = [
        (ip, static[ip], False, None, None, None) for ip in addresses if ip in static]
    lookups = [ip for ip in addresses if ip not in static]
    # Row order does not matter: the engine joins on ip.
    rows.extend((ip, None, ip in no_time, no_time.get(ip), workload, state)
                for ip, workload, state in classify_addresses(lookups, inventory))
    return Lookup(addresses=rows, segments=b.segments, names=[w.name for w in inventory.workloads],
                  ports=[(w.name, p.protocol.value, p.port) for w in inventory.workloads for p in w.ports])


def _warm_imports() -> None:
    """Import what Ibis would otherwise import lazily on the first query (its Arrow conversion pulls in
    pandas, ~0.3 s): with the module, so that it is start-up cost, paid once, and not inside a mapping."""
    import pandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401


_warm_imports()


def map_table(backend: BaseBackend, flows: ir.Table, inventory: Inventory, *, cache: bool = True,
              where: str = "flows", load: job.Loader = job.memtable) -> MappingResult:
    """Edges (sorted by key) and coverage for the normalised flows in ``flows`` on ``backend``.

    ``flows`` has the columns of ``job.FLOW_SCHEMA`` (the store's ``flows`` table, or a table of the
    same shape on another engine); ``where`` names it in errors.
    """
    job.check_schema(flows, where)
    prepared = prepare_bindings(inventory.bindings)
    lookup = build_lookup(inventory, job.distinct_addresses(flows), prepared)
    result = job.run(backend, flows, lookup, top=TOP_UNRESOLVED, cache=cache, load=load)
    # Clients whose replies the log shows: a SYN-ACK in the reply direction of one of their TCP edges.
    rep_flags = job.EDGE_COLUMNS.index("a_rep_flags")
    replies_seen = {row[0] for row in result.edges
                    if row[2] == "TCP" and (row[rep_flags] or 0) & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK}
    return MappingResult(edges=tuple(_edge(row, row[0] in replies_seen) for row in result.edges),
                         coverage=_coverage(result))


def map_flows(store: FlowStore, inventory: Inventory) -> MappingResult:
    """Edges (sorted by key) and coverage for everything in ``store``; see the module docstring."""
    backend = ibis.duckdb.from_connection(store.con)
    return map_table(backend, backend.table("flows"), inventory, where=str(store.path))


@functools.lru_cache(maxsize=4096)
def _hours(mask: int | None) -> tuple[int, ...]:
    """Hours of day from the store's 24-bit set (few distinct masks recur across edges)."""
    return tuple(h for h in range(24) if mask is not None and mask >> h & 1)


def _aware(t: datetime | None) -> datetime | None:
    """UTC-aware: engines return naive UTC (DuckDB, Spark's TIMESTAMP_NTZ) or an aware time."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def unanswered(protocol: str, req_flags: int | None, rep_flags: int | None, unknown: int, zero: int) -> bool:
    """Whether a TCP edge's accepted records are connection attempts nobody answered (module docstring)."""
    if protocol != "TCP" or unknown or zero or req_flags is None:
        return False
    rep = rep_flags or 0
    return (req_flags & TCP_SYN != 0 and req_flags & ~(TCP_SYN | TCP_RST) == 0
            and rep & ~(TCP_RST | TCP_ACK) == 0 and (rep & TCP_ACK == 0 or rep & TCP_RST != 0))


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None else b if a is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None else b if a is None else max(a, b)


def _edge(row: tuple[Any, ...], replies_seen: bool) -> Edge:
    """The edge of one job row; ``replies_seen``: the log shows the client's replies (module docstring)."""
    (client, server, protocol, port, acc_req, acc_rep, denied, a_bytes, a_first, a_last, a_days, a_hours,
     d_bytes, d_first, d_last, d_days, d_hours, all_days, req_flags, rep_flags, flags_unknown,
     flags_zero) = row  # job.EDGE_COLUMNS
    accepted = acc_req + acc_rep > 0
    if accepted and replies_seen and unanswered(protocol, req_flags, rep_flags, flags_unknown, flags_zero):
        # Every accepted record was an attempt nobody answered: a denied attempt, evidence over all records.
        return Edge(
            source=client, destination=server, protocol=Protocol(protocol), port=port, flows=0,
            bytes=int(a_bytes + d_bytes), denied_flows=denied + acc_req + acc_rep, unanswered=acc_req + acc_rep,
            first_seen=_aware(_min(a_first, d_first)), last_seen=_aware(_max(a_last, d_last)), days=all_days,
            hours=_hours((a_hours or 0) | (d_hours or 0)))
    first, last, days, hours, nbytes = ((a_first, a_last, a_days, a_hours, a_bytes) if accepted
                                        else (d_first, d_last, d_days, d_hours, d_bytes))
    return Edge(
        source=client, destination=server, protocol=Protocol(protocol), port=port,
        flows=acc_req if acc_req else acc_rep, bytes=int(nbytes), denied_flows=denied,
        first_seen=_aware(first), last_seen=_aware(last), days=days, hours=_hours(hours))


def _coverage(r: job.JobResult) -> Coverage:
    c = r.coverage
    records, nbytes, res_records, res_bytes = c["records"], c["bytes"], c["resolved_records"], c["resolved_bytes"]
    return Coverage(
        records=records, bytes=nbytes, resolved_records=res_records, resolved_bytes=res_bytes,
        resolved_share=round(res_records / records, 6) if records else 0.0,
        resolved_bytes_share=round(res_bytes / nbytes, 6) if nbytes else 0.0,
        unresolved_records=records - res_records, unmappable_records=c["unmappable"],
        unoriented_records=c["unoriented"], edge_records=c["edge_records"],
        unresolved_addresses=r.unresolved_addresses,
        top_unresolved=tuple(UnresolvedAddress(address=t["ip"], reason=t["reason"], records=int(t["n"]),
                                               bytes=int(t["nb"])) for t in r.top_unresolved))
