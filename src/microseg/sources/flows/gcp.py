"""GCP VPC Flow Logs: Cloud Logging ``LogEntry`` JSON lines (a sink to Cloud Storage, ``gcloud logging read``).

Format facts (Google Cloud, "About VPC Flow Logs records" and "VPC Flow Logs" key properties):

- The record is the entry's ``jsonPayload``. ``connection`` (``IpConnection``) is the 5-tuple:
  ``src_ip``, ``dest_ip``, ``src_port``, ``dest_port``, ``protocol`` (IANA number). Ports are absent
  for protocols without them (proto3 JSON omits zero values): stored as 0.
- Each record is one direction of a connection, as one endpoint saw it: ``bytes_sent`` /
  ``packets_sent`` count source -> destination only, so a connection's reply is its own record
  with the 5-tuple reversed. Those counters are ``int64``, which Cloud Logging writes as JSON
  strings; both forms are read.
- ``reporter`` is the side that logged the record: ``SRC`` or ``DEST`` for VMs, ``SRC_GATEWAY`` /
  ``DEST_GATEWAY`` for VLAN attachments and Cloud VPN tunnels. When both ends are VMs with flow
  logs on, *the same direction of the same connection is logged twice*, once by each end (and a
  gateway may log it a third time). One connection must count once, so per 5-tuple only the
  records of the best reporter in the batch are kept - DEST, then SRC, then the gateways - and the
  others are counted as skipped (``duplicate-report``).
- ``start_time`` / ``end_time``: RFC 3339, first and last packet of the aggregation interval.
- There is no action field. Google documents that ingress packets are sampled *after* ingress
  firewall rules (a denied packet is never logged) but egress packets *before* egress firewall
  rules (a denied packet may still be logged). So a DEST record is accepted traffic, while a SRC
  (or gateway) record is accepted only with evidence that traffic went through: ``rtt_msec``
  (measured from a sent SEQ to its ACK, so the peer answered) or a record of the reverse 5-tuple
  in the batch (the peer replied). Without evidence the action stays unknown (NULL): the mapping
  treats such a record as unmappable, it never becomes an allow rule on a guess.
- ``reporter`` gives the direction relative to the reporting VM: SRC -> egress, DEST -> ingress;
  gateway records have none. GCP has no reply flag: ``is_reply`` stays unknown and the mapping
  orients by ports.

Workload hints. ``src_gke_details`` / ``dest_gke_details`` name the pod: ``pod.pod_namespace`` with
``pod.pod_workload.workload_name`` (the owning controller) gives ``namespace/workload``; without it
the workload is derived from ``pod.pod_name`` as the Hubble reader does. Without GKE details,
``src_instance.vm_name`` / ``dest_instance.vm_name`` name the VM. The instance of a pod's address
is its *node*, so a record with GKE details never falls back to the VM name. Metadata fields are
Google's approximations; the mapping uses a hint only when it names an inventory workload.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    iter_lines,
)
from microseg.sources.flows.hubble import workload_from_pod

NAME = "gcp"

ACTIONS = {"accept": "accept"}
# Lower is preferred when several reporters logged the same 5-tuple (see the module docstring).
_REPORTER_RANK = {"DEST": 0, "SRC": 1, "DEST_GATEWAY": 2, "SRC_GATEWAY": 3}
_DIRECTIONS = {"SRC": "egress", "DEST": "ingress"}
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_UINT64 = (1 << 64) - 1

_Key = tuple[str, str, int, int, int]


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _payload(obj: Any) -> dict[str, Any] | None:
    """The flow record of a LogEntry (or a bare jsonPayload), if it looks like one."""
    if not isinstance(obj, dict):
        return None
    payload = obj.get("jsonPayload", obj)
    if isinstance(payload, dict) and isinstance(payload.get("connection"), dict) and "reporter" in payload:
        return payload
    return None


def sniff(head: list[str]) -> bool:
    if not head:
        return False
    try:
        obj = json.loads(head[0])
    except ValueError:
        return False
    return _payload(obj) is not None


def _int(v: Any, field: str, limit: int = _MAX_UINT64) -> int:
    if isinstance(v, bool):
        raise _Bad(field, f"{v!r} is not a number")
    if isinstance(v, str) and v.isascii() and v.isdigit():
        v = int(v)
    if not isinstance(v, int) or not 0 <= v <= limit:
        raise _Bad(field, f"{v!r} is not a number in 0..{limit}")
    return v


# Addresses and names repeat on almost every line: their checks are memoised (bounded); a repeated
# bad value is still reported on every line (the verdict is cached, not the error).
_CACHE = 1 << 16


@functools.lru_cache(maxsize=_CACHE)
def _canonical_ip(text: str) -> str | None:
    """``text`` as ``ipaddress`` writes it; None when it is not an address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ip(v: Any, field: str) -> str:
    ip = _canonical_ip(v) if isinstance(v, str) else None
    if ip is None:
        raise _Bad(field, f"{v!r} is not an IP address")
    return ip


def _time_us(v: Any, field: str) -> int:
    m = _TIME.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise _Bad(field, f"{v!r} is not an RFC 3339 time")
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError as exc:
        raise _Bad(field, str(exc)) from None
    delta = dt - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
    if us < 0:
        raise _Bad(field, f"{v!r} is before 1970")
    return us


def _key(payload: dict[str, Any]) -> _Key:
    conn = payload["connection"]
    proto = _int(conn.get("protocol"), "connection.protocol", 255)
    return (_ip(conn.get("src_ip"), "connection.src_ip"), _ip(conn.get("dest_ip"), "connection.dest_ip"),
            _int(conn.get("src_port", 0), "connection.src_port", 65535),
            _int(conn.get("dest_port", 0), "connection.dest_port", 65535), proto)


def _reporter(payload: dict[str, Any]) -> str:
    reporter = payload.get("reporter")
    if not isinstance(reporter, str) or reporter not in _REPORTER_RANK:
        raise _Bad("reporter", f"unknown reporter {reporter!r} (expected SRC, DEST, SRC_GATEWAY or DEST_GATEWAY)")
    return reporter


def _parse(text: str) -> tuple[dict[str, Any], _Key, str]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise _Bad("json", f"invalid JSON: {exc}") from None
    payload = _payload(obj)
    if payload is None:
        raise _Bad("jsonPayload", "not a VPC flow log entry (no jsonPayload.connection / reporter)")
    return payload, _key(payload), _reporter(payload)


def _name(v: Any, field: str) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str) or not _plain_name(v):
        raise _Bad(field, f"{v!r} is not a resource name")
    return v


@functools.lru_cache(maxsize=_CACHE)
def _plain_name(text: str) -> bool:
    return not any(c.isspace() or c == "/" for c in text)


def _hint(payload: dict[str, Any], side: str) -> str | None:
    gke = payload.get(f"{side}_gke_details")
    if gke is not None:
        # A pod's address belongs to the pod, its instance is the node: never the VM name here.
        if not isinstance(gke, dict):
            raise _Bad(f"{side}_gke_details", "not an object")
        pod = gke.get("pod")
        if not isinstance(pod, dict):
            return None
        ns = _name(pod.get("pod_namespace"), f"{side}_gke_details.pod.pod_namespace")
        workload = pod.get("pod_workload")
        name = None
        if isinstance(workload, dict):
            name = _name(workload.get("workload_name"), f"{side}_gke_details.pod.pod_workload.workload_name")
        if name is None:
            pod_name = _name(pod.get("pod_name"), f"{side}_gke_details.pod.pod_name")
            name = workload_from_pod(pod_name) if pod_name else None
        return f"{ns}/{name}" if ns and name else None
    instance = payload.get(f"{side}_instance")
    if instance is None:
        return None
    if not isinstance(instance, dict):
        raise _Bad(f"{side}_instance", "not an object")
    return _name(instance.get("vm_name"), f"{side}_instance.vm_name")


def _record(payload: dict[str, Any], key: _Key, reporter: str, file_index: int) -> StageRow:
    """The staging row; the action is NULL when only the reverse 5-tuple can be evidence (see _RELATION)."""
    src, dst, sport, dport, proto = key
    t_start = _time_us(payload.get("start_time"), "start_time")
    t_end = _time_us(payload.get("end_time"), "end_time")
    nbytes = payload.get("bytes_sent")
    npackets = payload.get("packets_sent")
    action = "accept" if reporter == "DEST" or payload.get("rtt_msec") is not None else None
    return StageRow(
        t_start=t_start, t_end=t_end, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
        bytes=None if nbytes is None else _int(nbytes, "bytes_sent"),
        packets=None if npackets is None else _int(npackets, "packets_sent"),
        action=action, tcp_flags=None, is_reply=None, direction=_DIRECTIONS.get(reporter),
        src_workload=_hint(payload, "src"), dst_workload=_hint(payload, "dest"), log_status="OK",
        file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset({_DUPLICATE}))
    writer = StageWriter(options.tmp_dir, extra=_EXTRA)
    staged.cleanup.append(writer.path)
    done = False
    # One pass over the lines (each parsed once). Which report of a 5-tuple is kept, and whether a
    # record's reverse 5-tuple exists (reply evidence), depend on the whole batch: the relation works
    # them out in SQL from the rank written beside every row. Lines whose 5-tuple and reporter parsed
    # but whose other fields are bad still count for both: they are staged as "ghost" rows (never
    # records) and judged at the end - a duplicate report is skipped before its fields are read.
    pending: list[tuple[int, int, str, str, _Key | None, int]] = []  # file, line, field, message, key, rank
    try:
        for index, src in enumerate(files):
            for no, text in _lines(src):
                try:
                    payload, key, reporter = _parse(text)
                except _Bad as bad:
                    pending.append((index, no, bad.field, bad.message, None, 0))
                    continue
                rank = _REPORTER_RANK[reporter]
                try:
                    row = _record(payload, key, reporter, index)
                except _Bad as bad:
                    pending.append((index, no, bad.field, bad.message, key, rank))
                    writer.write(_ghost(key, index), rank, True)
                    continue
                writer.write(row, rank, False)
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    rows = writer.relation(list(files), time_unit=1_000_000).sql
    _judge_pending(con, rows, files, pending, staged, options)
    staged.relations.append(StagedRelation(sql=_RELATION.format(rows=rows), files=list(files), time_unit=1_000_000,
                                           null_columns=frozenset({"tcp_flags", "is_reply"})))  # GCP logs neither
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged


_DUPLICATE = "duplicate-report"
_EXTRA = {"k_rank": "INTEGER", "k_ghost": "BOOLEAN"}
_TUPLE = ("src_ip", "dst_ip", "src_port", "dst_port", "proto")
# Per 5-tuple the best (lowest) rank of the batch; a row of a worse rank is a duplicate report. A
# record without an action of its own (an egress report without rtt_msec) is accepted when the
# reverse 5-tuple was reported (the peer replied). Hash aggregate and joins hold one entry per
# distinct 5-tuple, not per row: memory stays bounded by the connections, as in Python before.
_RELATION = f"""
SELECT s.t_start, s.t_end, s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.proto, s.bytes, s.packets,
  coalesce(s.action, CASE WHEN r.best IS NOT NULL THEN 'accept' END) AS action, s.tcp_flags, s.is_reply,
  s.direction, s.src_workload, s.dst_workload,
  CASE WHEN s.k_rank > b.best THEN '{_DUPLICATE}' ELSE s.log_status END AS log_status, s.file_index
FROM ({{rows}}) AS s
JOIN (SELECT {", ".join(_TUPLE)}, min(k_rank) AS best FROM ({{rows}}) GROUP BY ALL) AS b USING ({", ".join(_TUPLE)})
LEFT JOIN (SELECT DISTINCT {", ".join(_TUPLE)}, 0 AS best FROM ({{rows}})) AS r
  ON r.src_ip = s.dst_ip AND r.dst_ip = s.src_ip AND r.src_port = s.dst_port AND r.dst_port = s.src_port
  AND r.proto = s.proto
WHERE NOT s.k_ghost"""


def _ghost(key: _Key, file_index: int) -> StageRow:
    src, dst, sport, dport, proto = key
    return StageRow(t_start=None, t_end=None, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
                    bytes=None, packets=None, action=None, tcp_flags=None, is_reply=None, direction=None,
                    src_workload=None, dst_workload=None, log_status=None, file_index=file_index)


def _judge_pending(con: duckdb.DuckDBPyConnection, rows: str, files: Sequence[SourceFile],
                   pending: list[tuple[int, int, str, str, _Key | None, int]], staged: Staged,
                   options: ReaderOptions) -> None:
    """Counts the lines read aside, in line order: a duplicate report is skipped, anything else is bad.

    The best rank of their 5-tuples is looked up in the staged rows (which hold every line whose
    5-tuple parsed), and their text is read again only for the lines that become samples (bad lines
    are rare): nothing per line of the batch is kept in Python."""
    keys = sorted({key for *_, key, _rank in pending if key is not None})
    best: dict[_Key, int] = {}
    if keys:
        table = f"_ms_gcp_pending_{id(staged)}"
        con.execute(f"CREATE TEMP TABLE {table} (src_ip VARCHAR, dst_ip VARCHAR, src_port INTEGER, "
                    "dst_port INTEGER, proto INTEGER)")
        try:
            con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)", [list(k) for k in keys])
            for sip, dip, sport, dport, proto, low in con.execute(
                    f"SELECT {', '.join(_TUPLE)}, min(s.k_rank) FROM {table} "
                    f"JOIN ({rows}) AS s USING ({', '.join(_TUPLE)}) GROUP BY ALL").fetchall():
                best[(str(sip), str(dip), int(sport), int(dport), int(proto))] = int(low)
        finally:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    bad: dict[int, list[tuple[int, str, str]]] = {}
    for index, no, field, message, key, rank in pending:
        if key is not None and rank > best[key]:
            staged.skipped[(files[index].path, _DUPLICATE)] += 1
        else:
            bad.setdefault(index, []).append((no, field, message))
    for index, lines in bad.items():
        src = files[index]
        wanted = {no for no, _, _ in lines[:options.max_samples]}
        texts = {no: text for no, text in _lines(src, until=max(wanted)) if no in wanted}
        for no, field, message in lines:
            staged.add_bad(src.path, no, field, message, texts.get(no, ""), options.max_samples)


def _lines(src: SourceFile, until: int | None = None) -> Iterator[tuple[int, str]]:
    try:
        for no, text in iter_lines(src):
            if text.strip():
                yield no, text
            if until is not None and no >= until:
                return
    except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
        raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
