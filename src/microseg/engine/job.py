"""The mapping job - normalised flows to edges and coverage - written once, in Ibis.

The semantics (resolution, orientation, aggregation) are described in ``engine/mapping.py``, which
prepares the inventory side in Python and turns this job's rows into IR. This module expresses the
part that scans flows as one Ibis expression, so that the same job runs on DuckDB (the embedded
default, over the flow store), on Spark, and on the engines Ibis reaches by URL (Trino/Athena, ...).

What crosses between Python and the engine, in order:

1. the distinct addresses of the flows come back (one column), so that Python can resolve the
   addresses no binding explains (external networks, internet, unresolved: CIDR containment and
   IPv6 parsing are not portable SQL);
2. small inventory tables go to the engine as in-memory tables: one row per flow address, the
   bindings of reused addresses cut into time segments, workload names, declared ports;
3. the oriented, classified flow aggregates are materialised on the engine (``Table.cache``) and
   three small results come back: the edges, the coverage counts, the top unresolved addresses.

Only portable operations are used (joins, CASE, filtered aggregates, a window). The one exception
is the OR of the hour-of-day bit sets, which Ibis 12's PySpark compiler does not map: there Spark
SQL's built-in aggregate ``bit_or`` (the bitwise OR of the non-null values; documented with
``pyspark.sql.functions.bit_or``, PySpark 3.5+) is named directly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa
from ibis.backends import BaseBackend

from microseg.engine.store import EPHEMERAL_START
from microseg.errors import InputError

# The columns of normalised flows the job reads: the contract for a flow table that lives in the
# user's engine (README, "Engines"). The store's ``flows`` table (engine/store.py) has all of them.
FLOW_SCHEMA: dict[str, str] = {
    "ts_start": "timestamp",
    "ts_end": "timestamp",
    "ts_start_last": "timestamp",
    "bucket": "timestamp",
    "hours": "int32",
    "src_ip": "string",
    "dst_ip": "string",
    "src_port": "int32",
    "dst_port": "int32",
    "src_port_min": "int32",
    "src_port_max": "int32",
    "dst_port_min": "int32",
    "dst_port_max": "int32",
    "protocol": "string",
    "bytes": "int64",
    "action": "string",
    "is_reply": "boolean",
    "src_workload": "string",
    "dst_workload": "string",
    "records": "int64",
}
# Columns the job reads when the table has them, and takes as unknown (NULL) when it does not.
# ``tcp_flags``: the bit-OR of the aggregate's TCP flags (FIN 1, SYN 2, RST 4, ACK 16, ...); it
# decides whether a TCP edge was ever answered (see ``engine/mapping.py``, "Aggregate").
OPTIONAL_SCHEMA: dict[str, str] = {
    "tcp_flags": "int32",
}

WELL_KNOWN_LIMIT = 1024


# Resolution states; the unresolved ones appear in the coverage as reasons.
HINT = "hint"
BOUND = "bound"
TIME_AMBIGUOUS = "time-ambiguous"
BINDING_CONFLICT = "binding-conflict"
NO_TIME = "no-time"

_ADDRESSES = pa.schema([("ip", pa.string()), ("static_w", pa.string()), ("dyn", pa.bool_()), ("nt_w", pa.string()),
                        ("ext_w", pa.string()), ("ext_state", pa.string())])
_SEGMENTS = pa.schema([("ip", pa.string()), ("workload", pa.string()), ("valid_from", pa.timestamp("us")),
                       ("valid_to", pa.timestamp("us"))])
_NAMES = pa.schema([("name", pa.string())])
_PORTS = pa.schema([("workload", pa.string()), ("protocol", pa.string()), ("port", pa.int32())])


@ibis.udf.agg.builtin(name="bit_or")  # type: ignore[untyped-decorator]
def _builtin_bit_or(arg: int) -> int:  # type: ignore[empty-body]
    """The engine's own ``bit_or`` aggregate, for backends where Ibis has no BitOr."""


@dataclass(frozen=True)
class Lookup:
    """The inventory side of the job, as rows (built by ``engine/mapping.py``).

    ``addresses``: one row per flow address: (ip, static workload, has time-bound bindings, holder of
    flows without time, external/internet workload, external state). ``segments``: non-overlapping
    (ip, workload or None for a conflict, from, to) of the time-bound addresses. ``names``: inventory
    workload names (log hints must name one). ``ports``: declared (workload, protocol, port).
    """

    addresses: Sequence[tuple[str, str | None, bool, str | None, str | None, str | None]]
    segments: Sequence[tuple[str, str | None, datetime | None, datetime | None]]
    names: Sequence[str]
    ports: Sequence[tuple[str, str, int]]


@dataclass(frozen=True)
class JobResult:
    """Rows as the engine returned them; ``engine/mapping.py`` turns them into IR."""

    edges: list[tuple[Any, ...]]  # EDGE_COLUMNS, sorted by (client_w, server_w, protocol, port)
    coverage: dict[str, int]
    top_unresolved: list[dict[str, Any]]  # (ip, reason, n, nb), biggest first
    unresolved_addresses: int


def check_schema(flows: ir.Table, where: str) -> None:
    """Fail closed when a flow table lacks a column or has one of the wrong kind."""
    schema = flows.schema()
    for name, kind in {**FLOW_SCHEMA, **OPTIONAL_SCHEMA}.items():
        if name not in schema:
            if name in OPTIONAL_SCHEMA:
                continue
            raise InputError(f"flow table lacks column {name!r} (see README, Engines)", file=where, field=name)
        have, want = schema[name], dt.dtype(kind)
        if not ((want.is_integer() and have.is_integer()) or (want.is_timestamp() and have.is_timestamp())
                or (want.is_string() and have.is_string()) or (want.is_boolean() and have.is_boolean())):
            raise InputError(f"flow table column {name!r} has type {have}, expected {kind} (see README, Engines)",
                             file=where, field=name)


def distinct_addresses(flows: ir.Table) -> list[str]:
    """Every address the flows name (either side), sorted; NULL is no address."""
    ips = flows.select(ip=flows.src_ip).union(flows.select(ip=flows.dst_ip), distinct=True)
    return sorted(str(x) for x in ips.filter(ips.ip.notnull()).to_pyarrow().column("ip").to_pylist())


Loader = Callable[[str, pa.Table], ir.Table]


def memtable(name: str, table: pa.Table) -> ir.Table:
    """The default way inventory tables reach the engine: Ibis in-memory tables."""
    del name
    return ibis.memtable(table)


def _arrow(rows: Sequence[Sequence[object]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.table([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


def _dynamic(flows: ir.Table, addresses: ir.Table, segments: ir.Table) -> ir.Table:
    """Time-dependent resolution per distinct (ip, ts_start, ts_start_last) of a time-bound address.

    The outcome depends on nothing else, so it is computed once per key and joined back (no row ids:
    they are not portable). Flows without time are resolved from ``addresses.nt_w`` instead.
    """
    dyn_ips = addresses.filter(addresses.dyn).select("ip")
    timed = flows.filter(flows.ts_start.notnull())
    # The semi-joins come before the DISTINCT: most flow addresses are not time-bound.
    src = timed.select(ip=timed.src_ip, ts_start=timed.ts_start, ts_start_last=timed.ts_start_last)
    dst = timed.select(ip=timed.dst_ip, ts_start=timed.ts_start, ts_start_last=timed.ts_start_last)
    keys = src.semi_join(dyn_ips, "ip").union(dst.semi_join(dyn_ips, "ip"), distinct=True)
    b = segments
    # The segments overlapping the aggregate's start times; exactly one, covering them all = resolved.
    ov = keys.join(b, [keys.ip == b.ip,
                       b.valid_from.isnull() | (b.valid_from <= keys.ts_start_last),
                       b.valid_to.isnull() | (keys.ts_start < b.valid_to)])
    covers = ((ov.valid_from.isnull() | (ov.valid_from <= ov.ts_start))
              & (ov.valid_to.isnull() | (ov.ts_start_last < ov.valid_to)))
    agg = ov.group_by(["ip", "ts_start", "ts_start_last"]).aggregate(
        n=ov.count(), w=ov.workload.max(), conflict=ov.workload.isnull().any(), covers=covers.all())
    one = (agg.n == 1) & agg.covers
    return agg.select(
        "ip", "ts_start", "ts_start_last",
        dstate=ibis.cases((one & agg.conflict, BINDING_CONFLICT), (one, BOUND), else_=TIME_AMBIGUOUS),
        dw=ibis.cases((one & ~agg.conflict, agg.w), else_=ibis.null(dt.string)))


def oriented(flows: ir.Table, lookup: Lookup, load: Loader = memtable) -> ir.Table:
    """Every flow aggregate resolved, oriented and classified (``kind``): the job's one big step."""
    addresses = load("addresses", _arrow(lookup.addresses, _ADDRESSES))
    segments = load("segments", _arrow(lookup.segments, _SEGMENTS))
    names = load("names", _arrow([(n,) for n in sorted(set(lookup.names))], _NAMES))
    ports = load("ports", _arrow(sorted(set(lookup.ports)), _PORTS))
    # Without time-bound addresses (hosts and VMs only, say) the time-dependent step has nothing to
    # do: it is left out of the expression rather than evaluated empty.
    dyn = _dynamic(flows, addresses, segments) if any(a[2] for a in lookup.addresses) else None

    f = flows.select(*FLOW_SCHEMA, tcp_flags=(flows.tcp_flags.cast(dt.int32) if "tcp_flags" in flows.columns
                                              else ibis.null(dt.int32)))
    joined = f
    for side in ("src", "dst"):
        p = side[0]
        hn = names.rename({f"h{p}_name": "name"})
        ad = addresses.rename({f"a{p}_{c}": c for c in addresses.columns})
        joined = (joined.left_join(hn, f[f"{side}_workload"] == hn[f"h{p}_name"])
                  .left_join(ad, f[f"{side}_ip"] == ad[f"a{p}_ip"]))
        if dyn is not None:
            dy = dyn.rename({f"y{p}_{c}": c for c in dyn.columns})
            joined = joined.left_join(dy, [f[f"{side}_ip"] == dy[f"y{p}_ip"], f.ts_start == dy[f"y{p}_ts_start"],
                                           f.ts_start_last == dy[f"y{p}_ts_start_last"]])
    r = joined
    resolved_cols: dict[str, ir.Value] = {}
    for p in ("s", "d"):
        hint_w, static_w = r[f"h{p}_name"], r[f"a{p}_static_w"]
        nt_w = r[f"a{p}_nt_w"]
        dstate = r[f"y{p}_dstate"] if dyn is not None else ibis.null(dt.string)
        dw = r[f"y{p}_dw"] if dyn is not None else ibis.null(dt.string)
        no_time = r[f"a{p}_dyn"].fill_null(False) & r.ts_start.isnull()
        resolved_cols[f"{p}w"] = ibis.cases(
            (hint_w.notnull(), hint_w), (static_w.notnull(), static_w), (no_time, nt_w),
            (dstate.notnull(), dw), else_=r[f"a{p}_ext_w"])
        resolved_cols[f"{p}_state"] = ibis.cases(
            (hint_w.notnull(), HINT), (static_w.notnull(), BOUND),
            (no_time & nt_w.isnull(), NO_TIME), (no_time, BOUND),
            (dstate.notnull(), dstate), else_=r[f"a{p}_ext_state"])
    # view(): a new relation, so that the next joins start a new join chain (Ibis merges a select into
    # the join it selects from, and would not let the next join refer to that select's columns).
    r = r.select(*FLOW_SCHEMA, "tcp_flags", b=r.bytes.fill_null(0), **resolved_cols).view()

    # Declared listening ports: exact match on (workload, protocol, port).
    for p, col in (("d", "dst_port"), ("s", "src_port")):
        pt = ports.rename({f"p{p}_workload": "workload", f"p{p}_protocol": "protocol", f"p{p}_port": "port"})
        r = r.left_join(pt, [r[f"{p}w"] == pt[f"p{p}_workload"], r.protocol == pt[f"p{p}_protocol"],
                             r[col] == pt[f"p{p}_port"]])
    m = r.mutate(
        sp_lo=r.src_port.coalesce(r.src_port_min), dp_lo=r.dst_port.coalesce(r.dst_port_min),
        d_listen=r.pd_port.notnull(), s_listen=r.ps_port.notnull(),
        # a declared (high) listening port inside a folded ephemeral range: cannot tell the records apart
        d_maybe=r.dst_port.isnull() & _inside_declared(r, lookup, "dw", "dst_port_min", "dst_port_max"),
        s_maybe=r.src_port.isnull() & _inside_declared(r, lookup, "sw", "src_port_min", "src_port_max"),
        resolved=r.sw.notnull() & r.dw.notnull(),
        mappable=r.action.notnull() & ((r.protocol == "ICMP") | (r.protocol.isin(("TCP", "UDP", "SCTP"))
                                                                 & r.src_port_min.notnull()
                                                                 & r.dst_port_min.notnull())))
    # `server` is 'd' when the destination serves (the record is a request), 's' when the source does.
    s = m.mutate(server=ibis.cases(
        (~(m.resolved & m.mappable), ibis.null(dt.string)),
        (m.protocol == "ICMP", "d"),
        (m.is_reply.notnull(), ibis.cases((m.is_reply, "s"), else_="d")),
        (m.d_listen, "d"),
        (m.s_listen, "s"),
        (m.d_maybe | m.s_maybe, ibis.null(dt.string)),
        ((m.dp_lo < WELL_KNOWN_LIMIT) & (m.sp_lo >= WELL_KNOWN_LIMIT), "d"),
        ((m.sp_lo < WELL_KNOWN_LIMIT) & (m.dp_lo >= WELL_KNOWN_LIMIT), "s"),
        ((m.dp_lo < EPHEMERAL_START) & (m.sp_lo >= EPHEMERAL_START), "d"),
        ((m.sp_lo < EPHEMERAL_START) & (m.dp_lo >= EPHEMERAL_START), "s"),
        (m.src_port.notnull() & m.dst_port.notnull(), ibis.cases((m.dst_port <= m.src_port, "d"), else_="s")),
        else_=ibis.null(dt.string)))
    o = s.mutate(
        port=ibis.cases((s.protocol == "ICMP", 0), (s.server == "d", s.dst_port), (s.server == "s", s.src_port),
                        else_=ibis.null(dt.int32)),
        server_listens=ibis.cases((s.server == "d", s.d_listen), else_=s.s_listen))
    return o.select(
        "ts_start", "ts_end", "ts_start_last", "bucket", "hours", "src_ip", "dst_ip", "protocol", "records", "b",
        "tcp_flags", "sw", "s_state", "dw", "d_state", "server", "port",
        accepted=o.action.isin(("accept", "audit")),
        client_w=ibis.cases((o.server == "d", o.sw), else_=o.dw),
        server_w=ibis.cases((o.server == "d", o.dw), else_=o.sw),
        kind=ibis.cases(
            (~o.resolved, "unresolved"), (~o.mappable, "unmappable"),
            (o.server.notnull() & o.port.notnull()
             & ((o.port < EPHEMERAL_START) | o.server_listens | (o.protocol == "ICMP")), "edge"),
            else_="unoriented"))


def _inside_declared(r: ir.Table, lookup: Lookup, w: str, lo: str, hi: str) -> ir.BooleanValue:
    """Whether the side's workload declares a listening port in the ephemeral range inside [lo, hi].

    Such ports are rare (a handful per inventory), so the test is an inline expression rather than
    a join - and ``false`` when there are none, which engines fold away.
    """
    by_port: dict[tuple[str, int], set[str]] = defaultdict(set)
    for workload, protocol, port in lookup.ports:
        if port >= EPHEMERAL_START:
            by_port[(protocol, port)].add(workload)
    cond: ir.BooleanValue = ibis.literal(False)
    for (protocol, port), workloads in sorted(by_port.items()):
        cond = cond | (r[w].isin(sorted(workloads)) & (r.protocol == protocol) & (r[lo] <= port) & (port <= r[hi]))
    return cond


def _bit_or(backend: BaseBackend, col: ir.IntegerColumn, where: ir.BooleanValue | None = None) -> ir.IntegerScalar:
    only = col if where is None else ibis.cases((where, col), else_=ibis.null(col.type()))
    if backend.has_operation(ops.BitOr):
        result: ir.IntegerScalar = only.bit_or()
        return result
    return _builtin_bit_or(only)


EDGE_COLUMNS = ("client_w", "server_w", "protocol", "port", "acc_req", "acc_rep", "denied", "a_bytes", "a_first",
                "a_last", "a_days", "a_hours", "d_bytes", "d_first", "d_last", "d_days", "d_hours", "days",
                "a_req_flags", "a_rep_flags", "a_flags_unknown", "a_flags_zero")


def edges_expr(backend: BaseBackend, o: ir.Table) -> ir.Table:
    """Edges per (client, server, protocol, port), evidence split into accepted (a_*) and denied (d_*).

    Two levels: first per day and accepted-or-not, then per edge. Days seen is then a plain count of
    the first level's rows - exact, and no filtered COUNT(DISTINCT), whose form varies by engine;
    ``days`` counts the distinct days of all the edge's records (for an edge whose accepted records
    turn out to be unanswered attempts, see ``engine/mapping.py``).

    TCP flags of the accepted records: ``a_req_flags``/``a_rep_flags`` the bit-OR in the request and
    the reply direction (NULL when none is known), ``a_flags_unknown`` the records without flags,
    ``a_flags_zero`` the records whose aggregate has flags 0 (mid-connection intervals).
    """
    key = ["client_w", "server_w", "protocol", "port"]
    e = o.filter(o.kind == "edge")
    e = e.select(*key, "accepted", "server", "records", "b", "ts_start", "hours", "tcp_flags", day=e.bucket.date(),
                 last=e.ts_end.coalesce(e.ts_start_last))
    g = e.group_by([*key, "accepted", "day"]).aggregate(
        req=e.records.sum(where=e.server == "d"), rep=e.records.sum(where=e.server == "s"), recs=e.records.sum(),
        b=e.b.sum(), first=e.ts_start.min(), last=e.last.max(), hours=_bit_or(backend, e.hours),
        req_fl=_bit_or(backend, e.tcp_flags, e.server == "d"), rep_fl=_bit_or(backend, e.tcp_flags, e.server == "s"),
        fl_unknown=e.records.sum(where=e.tcp_flags.isnull()), fl_zero=e.records.sum(where=e.tcp_flags == 0))
    acc, den = g.accepted, ~g.accepted
    return g.group_by(key).aggregate(
        acc_req=g.req.sum(where=acc).coalesce(0), acc_rep=g.rep.sum(where=acc).coalesce(0),
        denied=g.recs.sum(where=den).coalesce(0),
        a_bytes=g.b.sum(where=acc).coalesce(0), a_first=g.first.min(where=acc), a_last=g.last.max(where=acc),
        a_days=g.count(where=acc & g.day.notnull()), a_hours=_bit_or(backend, g.hours, acc),
        d_bytes=g.b.sum(where=den).coalesce(0), d_first=g.first.min(where=den), d_last=g.last.max(where=den),
        d_days=g.count(where=den & g.day.notnull()), d_hours=_bit_or(backend, g.hours, den),
        days=g.day.nunique(),
        a_req_flags=_bit_or(backend, g.req_fl, acc), a_rep_flags=_bit_or(backend, g.rep_fl, acc),
        a_flags_unknown=g.fl_unknown.sum(where=acc).coalesce(0), a_flags_zero=g.fl_zero.sum(where=acc).coalesce(0))


def coverage_expr(o: ir.Table) -> ir.Table:
    return o.aggregate(
        records=o.records.sum().coalesce(0), bytes=o.b.sum().coalesce(0),
        resolved_records=o.records.sum(where=o.kind != "unresolved").coalesce(0),
        resolved_bytes=o.b.sum(where=o.kind != "unresolved").coalesce(0),
        unmappable=o.records.sum(where=o.kind == "unmappable").coalesce(0),
        unoriented=o.records.sum(where=o.kind == "unoriented").coalesce(0),
        edge_records=o.records.sum(where=o.kind == "edge").coalesce(0))


def unresolved_expr(o: ir.Table) -> ir.Table:
    """Per unresolved address: its records, bytes, and the reason covering most of its records."""
    u = (o.filter(o.sw.isnull()).select(ip=o.src_ip, reason=o.s_state, records=o.records, b=o.b)
         .union(o.filter(o.dw.isnull()).select(ip=o.dst_ip, reason=o.d_state, records=o.records, b=o.b),
                distinct=False))
    per_reason = u.group_by(["ip", "reason"]).aggregate(n=u.records.sum(), nb=u.b.sum())
    w = ibis.window(group_by=per_reason.ip, order_by=[per_reason.n.desc(), per_reason.reason.asc()])
    whole = ibis.window(group_by=per_reason.ip)
    ranked = per_reason.mutate(rn=ibis.row_number().over(w), n_ip=per_reason.n.sum().over(whole),
                               nb_ip=per_reason.nb.sum().over(whole))
    top = ranked.filter(ranked.rn == 0)
    return top.select("ip", "reason", n=top.n_ip, nb=top.nb_ip)


def run(backend: BaseBackend, flows: ir.Table, lookup: Lookup, *, top: int, cache: bool = True,
        load: Loader = memtable) -> JobResult:
    """Run the job on ``backend``; only edges, coverage counts and the top unresolved come back.

    ``load`` puts the inventory tables on the engine (default: Ibis in-memory tables).
    """
    o = oriented(flows, lookup, load)
    cached = o.cache() if cache else o
    try:
        edges = _tuples(edges_expr(backend, cached).select(*EDGE_COLUMNS))
        per_ip = unresolved_expr(cached)
        # One round trip for the coverage counts and the number of unresolved addresses.
        coverage = _rows(coverage_expr(cached).cross_join(per_ip.aggregate(unresolved_addresses=per_ip.count())))[0]
        top_rows = _rows(per_ip.order_by([per_ip.n.desc(), per_ip.nb.desc(), per_ip.ip.asc()]).limit(top))
    finally:
        if cache:
            cached.release()
    # Sorted here rather than by the engine: string collation may differ between engines.
    edges.sort(key=lambda e: e[:4])
    top_rows.sort(key=lambda t: (-t["n"], -t["nb"], t["ip"]))
    total = int(coverage.pop("unresolved_addresses"))
    return JobResult(edges=edges, coverage={k: int(v or 0) for k, v in coverage.items()}, top_unresolved=top_rows,
                     unresolved_addresses=total)


def _tuples(expr: ir.Table) -> list[tuple[Any, ...]]:
    """The result as row tuples, converted column-wise (several times faster than Arrow's to_pylist)."""
    table = expr.to_pyarrow()
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True)) if table.num_rows else []


def _rows(expr: ir.Table) -> list[dict[str, Any]]:
    """The result as row dicts; column-wise conversion is several times faster than Arrow's to_pylist."""
    table = expr.to_pyarrow()
    names = table.column_names
    return [dict(zip(names, row, strict=True))
            for row in zip(*(c.to_pylist() for c in table.columns), strict=True)] if table.num_rows else []
