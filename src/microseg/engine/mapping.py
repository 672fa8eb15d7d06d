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
"""

from __future__ import annotations

import bisect
import csv
import functools
import ipaddress
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from microseg.engine.store import EPHEMERAL_START, FlowStore
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Edge, Frozen, Inventory, Protocol, WorkloadKind
from microseg.sources.flows import sql_str

INTERNET = "external:internet"
WELL_KNOWN_LIMIT = 1024
TOP_UNRESOLVED = 20

# Unresolved reasons, as they appear in the coverage.
PRIVATE = "private"  # not bound, not external, not globally routable
INVALID = "invalid"  # not an IP address
TIME_AMBIGUOUS = "time-ambiguous"
BINDING_CONFLICT = "binding-conflict"
NO_TIME = "no-time"


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
        return str(ipaddress.ip_address(b.ip.strip()))
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


def _load(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, str], rows: Sequence[Sequence[object]],
          tmp_dir: Path) -> None:
    """Create temp table ``name`` from ``rows`` via one CSV scan (executemany is slow for 10^5 rows)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({', '.join(f'{k} {v}' for k, v in columns.items())})")
    if not rows:
        return
    fd, tmp = tempfile.mkstemp(prefix=f"microseg-{name}-", suffix=".csv", dir=tmp_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            # Strings are quoted (any character is safe); None is written as "" and read as NULL.
            csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(rows)
        spec = "{" + ", ".join(f"{sql_str(k)}: {sql_str(v)}" for k, v in columns.items()) + "}"
        con.execute(f"INSERT INTO {name} SELECT * FROM read_csv({sql_str(tmp)}, header=false, delim=',', "
                    f"quote='\"', escape='\"', nullstr='', auto_detect=false, columns={spec})")
    finally:
        Path(tmp).unlink(missing_ok=True)


# Time-dependent resolution, only for addresses with bounded or several bindings.
_DYNAMIC_SQL = f"""
CREATE OR REPLACE TEMP TABLE _mm_dyn AS
WITH e AS (
  SELECT rowid AS rid, 0 AS side, src_ip AS ip, ts_start, ts_start_last FROM flows
  WHERE src_ip IN (SELECT ip FROM _mm_no_time)
  UNION ALL
  SELECT rowid, 1, dst_ip, ts_start, ts_start_last FROM flows WHERE dst_ip IN (SELECT ip FROM _mm_no_time)
), ov AS (
  -- the segments overlapping the aggregate's start times; exactly one, covering them all = resolved
  SELECT e.rid, e.side, count(*) AS n, any_value(b.workload) AS w, bool_or(b.workload IS NULL) AS conflict,
    bool_and((b.valid_from IS NULL OR b.valid_from <= e.ts_start)
             AND (b.valid_to IS NULL OR e.ts_start_last < b.valid_to)) AS covers
  FROM e JOIN _mm_bind b ON b.ip = e.ip
  WHERE e.ts_start IS NOT NULL
    AND (b.valid_from IS NULL OR b.valid_from <= e.ts_start_last)
    AND (b.valid_to IS NULL OR e.ts_start < b.valid_to)
  GROUP BY e.rid, e.side
), r AS (
  SELECT e.rid, e.side,
    CASE WHEN e.ts_start IS NULL THEN CASE WHEN nt.workload IS NULL THEN '{NO_TIME}' ELSE 'bound' END
         WHEN ov.n = 1 AND ov.covers THEN CASE WHEN ov.conflict THEN '{BINDING_CONFLICT}' ELSE 'bound' END
         WHEN ov.n >= 1 THEN '{TIME_AMBIGUOUS}'
         ELSE 'lookup' END AS state,
    CASE WHEN e.ts_start IS NULL THEN nt.workload WHEN ov.n = 1 AND ov.covers THEN ov.w END AS workload
  FROM e JOIN _mm_no_time nt ON nt.ip = e.ip
  LEFT JOIN ov ON ov.rid = e.rid AND ov.side = e.side
)
SELECT * FROM r WHERE state <> 'lookup'
"""


def _side(prefix: str, col: str) -> str:
    """Resolution of one side: hint, static binding, dynamic binding, else external / internet."""
    p = prefix
    return f"""
    CASE WHEN h{p}.name IS NOT NULL THEN h{p}.name WHEN s{p}.ip IS NOT NULL THEN s{p}.workload
         WHEN y{p}.rid IS NOT NULL THEN y{p}.workload ELSE x{p}.workload END AS {p}w,
    CASE WHEN h{p}.name IS NOT NULL THEN 'hint' WHEN s{p}.ip IS NOT NULL THEN 'bound'
         WHEN y{p}.rid IS NOT NULL THEN y{p}.state ELSE x{p}.state END AS {p}_state"""


def _joins(prefix: str, side: int) -> str:
    p, ip, hint = prefix, f"{'src' if side == 0 else 'dst'}_ip", f"{'src' if side == 0 else 'dst'}_workload"
    return f"""
LEFT JOIN _mm_workloads h{p} ON h{p}.name = f.{hint}
LEFT JOIN _mm_static s{p} ON s{p}.ip = f.{ip}
LEFT JOIN _mm_dyn y{p} ON y{p}.rid = f.rowid AND y{p}.side = {side}
LEFT JOIN _mm_ext x{p} ON x{p}.ip = f.{ip}"""


# One pass: resolve both sides, orient, classify every aggregate. `server` is 'd' when the
# destination serves (the record is a request) and 's' when the source does (a reply).
_MAP_SQL = f"""
CREATE OR REPLACE TEMP TABLE _mm_o AS
WITH r AS (
  SELECT f.ts_start, f.ts_end, f.ts_start_last, f.bucket, f.hours, f.src_ip, f.dst_ip, f.src_port, f.dst_port,
    f.src_port_min, f.src_port_max, f.dst_port_min, f.dst_port_max, f.protocol, f.action, f.is_reply,
    f.records, coalesce(f.bytes, 0) AS b, {_side('s', 'src')}, {_side('d', 'dst')}
  FROM flows f {_joins('s', 0)} {_joins('d', 1)}
), m AS (
  SELECT r.*,
    coalesce(r.src_port, r.src_port_min) AS sp_lo, coalesce(r.dst_port, r.dst_port_min) AS dp_lo,
    pd.port IS NOT NULL AS d_listen, ps.port IS NOT NULL AS s_listen,
    -- a declared (high) listening port inside a folded ephemeral range: cannot tell the records apart
    r.dst_port IS NULL AND coalesce(len(list_filter(hd.ports, lambda x: x BETWEEN r.dst_port_min AND r.dst_port_max)),
      0) > 0 AS d_maybe,
    r.src_port IS NULL AND coalesce(len(list_filter(hs.ports, lambda x: x BETWEEN r.src_port_min AND r.src_port_max)),
      0) > 0 AS s_maybe,
    r.sw IS NOT NULL AND r.dw IS NOT NULL AS resolved,
    r.action IS NOT NULL AND (r.protocol = 'ICMP' OR (r.protocol IN ('TCP', 'UDP', 'SCTP')
      AND r.src_port_min IS NOT NULL AND r.dst_port_min IS NOT NULL)) AS mappable
  FROM r
  LEFT JOIN _mm_ports pd ON pd.workload = r.dw AND pd.protocol = r.protocol AND pd.port = r.dst_port
  LEFT JOIN _mm_ports ps ON ps.workload = r.sw AND ps.protocol = r.protocol AND ps.port = r.src_port
  LEFT JOIN _mm_high hd ON hd.workload = r.dw AND hd.protocol = r.protocol
  LEFT JOIN _mm_high hs ON hs.workload = r.sw AND hs.protocol = r.protocol
), s AS (
  SELECT *, CASE WHEN NOT (resolved AND mappable) THEN NULL
    WHEN protocol = 'ICMP' THEN 'd'
    WHEN is_reply IS NOT NULL THEN CASE WHEN is_reply THEN 's' ELSE 'd' END
    WHEN d_listen THEN 'd'
    WHEN s_listen THEN 's'
    WHEN d_maybe OR s_maybe THEN NULL
    WHEN dp_lo < {WELL_KNOWN_LIMIT} AND sp_lo >= {WELL_KNOWN_LIMIT} THEN 'd'
    WHEN sp_lo < {WELL_KNOWN_LIMIT} AND dp_lo >= {WELL_KNOWN_LIMIT} THEN 's'
    WHEN dp_lo < {EPHEMERAL_START} AND sp_lo >= {EPHEMERAL_START} THEN 'd'
    WHEN sp_lo < {EPHEMERAL_START} AND dp_lo >= {EPHEMERAL_START} THEN 's'
    WHEN src_port IS NOT NULL AND dst_port IS NOT NULL THEN CASE WHEN dst_port <= src_port THEN 'd' ELSE 's' END
    END AS server
  FROM m
), o AS (
  SELECT *,
    CASE WHEN protocol = 'ICMP' THEN 0 WHEN server = 'd' THEN dst_port WHEN server = 's' THEN src_port END AS port,
    CASE WHEN server = 'd' THEN d_listen ELSE s_listen END AS server_listens
  FROM s
)
SELECT ts_start, ts_end, ts_start_last, bucket, hours, src_ip, dst_ip, protocol, records, b, sw, s_state, dw,
  d_state, server, port, action IN ('accept', 'audit') AS accepted,
  CASE WHEN server = 'd' THEN sw ELSE dw END AS client_w,
  CASE WHEN server = 'd' THEN dw ELSE sw END AS server_w,
  CASE WHEN NOT resolved THEN 'unresolved' WHEN NOT mappable THEN 'unmappable'
       WHEN server IS NOT NULL AND port IS NOT NULL AND (port < {EPHEMERAL_START} OR server_listens
                                                         OR protocol = 'ICMP') THEN 'edge'
       ELSE 'unoriented' END AS kind
FROM o
"""

_EDGES_SQL = """
SELECT client_w, server_w, protocol, port,
  coalesce(sum(records) FILTER (WHERE accepted AND server = 'd'), 0)::BIGINT AS acc_req,
  coalesce(sum(records) FILTER (WHERE accepted AND server = 's'), 0)::BIGINT AS acc_rep,
  coalesce(sum(records) FILTER (WHERE NOT accepted), 0)::BIGINT AS denied,
  coalesce(sum(b) FILTER (WHERE accepted), 0) AS a_bytes,
  min(ts_start) FILTER (WHERE accepted) AS a_first,
  max(coalesce(ts_end, ts_start_last)) FILTER (WHERE accepted) AS a_last,
  count(DISTINCT CAST(bucket AS DATE)) FILTER (WHERE accepted) AS a_days,
  bit_or(hours) FILTER (WHERE accepted) AS a_hours,
  coalesce(sum(b) FILTER (WHERE NOT accepted), 0) AS d_bytes,
  min(ts_start) FILTER (WHERE NOT accepted) AS d_first,
  max(coalesce(ts_end, ts_start_last)) FILTER (WHERE NOT accepted) AS d_last,
  count(DISTINCT CAST(bucket AS DATE)) FILTER (WHERE NOT accepted) AS d_days,
  bit_or(hours) FILTER (WHERE NOT accepted) AS d_hours
FROM _mm_o WHERE kind = 'edge'
GROUP BY client_w, server_w, protocol, port
ORDER BY client_w, server_w, protocol, port
"""

_COVERAGE_SQL = """
SELECT coalesce(sum(records), 0)::BIGINT, coalesce(sum(b), 0),
  coalesce(sum(records) FILTER (WHERE kind <> 'unresolved'), 0)::BIGINT,
  coalesce(sum(b) FILTER (WHERE kind <> 'unresolved'), 0),
  coalesce(sum(records) FILTER (WHERE kind = 'unmappable'), 0)::BIGINT,
  coalesce(sum(records) FILTER (WHERE kind = 'unoriented'), 0)::BIGINT,
  coalesce(sum(records) FILTER (WHERE kind = 'edge'), 0)::BIGINT
FROM _mm_o
"""

_UNRESOLVED_SQL = """
WITH u AS (
  SELECT src_ip AS ip, s_state AS reason, records, b FROM _mm_o WHERE sw IS NULL
  UNION ALL
  SELECT dst_ip, d_state, records, b FROM _mm_o WHERE dw IS NULL
), per_reason AS (
  SELECT ip, reason, sum(records) AS n, sum(b) AS nb FROM u GROUP BY ip, reason
), per_ip AS (
  SELECT ip, first(reason ORDER BY n DESC, reason) AS reason, sum(n)::BIGINT AS n, sum(nb) AS nb
  FROM per_reason GROUP BY ip
)
SELECT ip, reason, n, nb, count(*) OVER () AS total FROM per_ip ORDER BY n DESC, nb DESC, ip LIMIT {limit}
"""


@functools.lru_cache(maxsize=4096)
def _hours(mask: int | None) -> tuple[int, ...]:
    """Hours of day from the store's 24-bit set (few distinct masks recur across edges)."""
    return tuple(h for h in range(24) if mask is not None and mask >> h & 1)


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=UTC)


def map_flows(store: FlowStore, inventory: Inventory) -> MappingResult:
    """Edges (sorted by key) and coverage for everything in ``store``; see the module docstring."""
    con = store.con
    tmp_dir = store.path.parent
    b = prepare_bindings(inventory.bindings)
    tables: dict[str, tuple[dict[str, str], Sequence[Sequence[object]]]] = {
        "_mm_static": ({"ip": "VARCHAR", "workload": "VARCHAR"}, b.static),
        "_mm_bind": ({"ip": "VARCHAR", "workload": "VARCHAR", "valid_from": "TIMESTAMP", "valid_to": "TIMESTAMP"},
                     b.segments),
        "_mm_no_time": ({"ip": "VARCHAR", "workload": "VARCHAR"}, b.no_time),
        "_mm_workloads": ({"name": "VARCHAR"}, sorted((w.name,) for w in inventory.workloads)),
        "_mm_ports": ({"workload": "VARCHAR", "protocol": "VARCHAR", "port": "INTEGER"},
                      sorted({(w.name, p.protocol.value, p.port) for w in inventory.workloads for p in w.ports})),
    }
    try:
        for name, (columns, rows) in tables.items():
            _load(con, name, columns, rows, tmp_dir)
        # Declared listening ports in the ephemeral range, per workload: checked against folded ranges.
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _mm_high AS SELECT workload, protocol, list(port) AS ports
                        FROM _mm_ports WHERE port >= {EPHEMERAL_START} GROUP BY workload, protocol""")
        con.execute(_DYNAMIC_SQL)
        lookups = [r[0] for r in con.execute("""
            SELECT DISTINCT ip FROM (SELECT src_ip AS ip FROM flows UNION SELECT dst_ip FROM flows)
            WHERE ip NOT IN (SELECT ip FROM _mm_static) ORDER BY ip""").fetchall()]
        _load(con, "_mm_ext", {"ip": "VARCHAR", "workload": "VARCHAR", "state": "VARCHAR"},
              classify_addresses(lookups, inventory), tmp_dir)
        con.execute(_MAP_SQL)
        edges = tuple(_edge(row) for row in con.execute(_EDGES_SQL).fetchall())
        coverage = _coverage(con)
    finally:
        for t in (*tables, "_mm_high", "_mm_dyn", "_mm_ext", "_mm_o"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return MappingResult(edges=edges, coverage=coverage)


def _edge(row: tuple[Any, ...]) -> Edge:
    (client, server, protocol, port, acc_req, acc_rep, denied, a_bytes, a_first, a_last, a_days, a_hours,
     d_bytes, d_first, d_last, d_days, d_hours) = row
    accepted = acc_req + acc_rep > 0
    first, last, days, hours, nbytes = ((a_first, a_last, a_days, a_hours, a_bytes) if accepted
                                        else (d_first, d_last, d_days, d_hours, d_bytes))
    return Edge(
        source=client, destination=server, protocol=Protocol(protocol), port=port,
        flows=acc_req if acc_req else acc_rep, bytes=int(nbytes), denied_flows=denied,
        first_seen=_aware(first), last_seen=_aware(last), days=days, hours=_hours(hours))


def _coverage(con: duckdb.DuckDBPyConnection) -> Coverage:
    row = con.execute(_COVERAGE_SQL).fetchone()
    assert row is not None
    records, nbytes, res_records, res_bytes, unmappable, unoriented, edge_records = (int(x) for x in row)
    top = con.execute(_UNRESOLVED_SQL.format(limit=TOP_UNRESOLVED)).fetchall()
    return Coverage(
        records=records, bytes=nbytes, resolved_records=res_records, resolved_bytes=res_bytes,
        resolved_share=round(res_records / records, 6) if records else 0.0,
        resolved_bytes_share=round(res_bytes / nbytes, 6) if nbytes else 0.0,
        unresolved_records=records - res_records, unmappable_records=unmappable, unoriented_records=unoriented,
        edge_records=edge_records, unresolved_addresses=int(top[0][4]) if top else 0,
        top_unresolved=tuple(UnresolvedAddress(address=ip, reason=reason, records=n, bytes=int(nb))
                             for ip, reason, n, nb, _ in top))
