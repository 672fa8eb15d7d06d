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

Reading. Lines are parsed by DuckDB and checked in SQL exactly as the Python parser does it (see "DuckDB
fast path" below); what SQL cannot decide exactly is read by the Python parser, which names the line and
field of every bad record. JSON is read with jsonline's rule (a repeated key reads as its first
occurrence) on both paths. Tests assert that both paths give the same rows, counts and bad-line reports.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    STAGE_COLUMNS,
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    canonical_ip,
    hubble,
    iter_lines,
    sql_list,
    sql_str,
)
from microseg.sources.flows.hubble import workload_from_pod
from microseg.sources.flows.jsonline import loads
from microseg.sources.flows.sqlpath import (
    IPV4_PATTERN,
    SCAN_ERRORS,
    canonical_ipv6,
    drop_after_scan,
    drop_tables,
    exact_int_sql,
    scan_error,
)

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
        obj = loads(head[0])
    except ValueError:
        return False
    return _payload(obj) is not None


def _int(v: Any, field: str, limit: int = _MAX_UINT64) -> int:
    if isinstance(v, bool):
        raise _Bad(field, f"{v!r} is not a number")
    if isinstance(v, str) and v.isascii() and v.isdigit():
        try:
            v = int(v)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise _Bad(field, f"{v[:40]!r}... is not a number in 0..{limit}") from None
    if not isinstance(v, int) or not 0 <= v <= limit:
        raise _Bad(field, f"{v!r} is not a number in 0..{limit}")
    return v


# Addresses and names repeat on almost every line: their checks are memoised (bounded); a repeated
# bad value is still reported on every line (the verdict is cached, not the error).
_CACHE = 1 << 16


def _ip(v: Any, field: str) -> str:
    ip = canonical_ip(v) if isinstance(v, str) else None
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
    if us > MAX_EPOCH_SECONDS * 1_000_000:  # the store's limit, checked per line (an offset or a fraction)
        raise _Bad(field, f"{v!r} is after 9999-12-31T23:59:59Z")
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
        obj = loads(text)
    except ValueError as exc:  # jsonline turns too deep a nesting into a ValueError too
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
def _plain_name(text: str) -> bool:  # a lone surrogate (a JSON \ud800 escape) is no text: no name either
    return not any(c.isspace() or c == "/" or "\ud800" <= c <= "\udfff" for c in text)


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
    table = f"_ms_gcp_{id(staged)}"
    writer = StageWriter(options.tmp_dir, extra=_EXTRA)
    staged.cleanup.append(writer.path)
    done = False
    # One pass over the lines, each parsed once: by DuckDB when it is certain to read the line as the
    # Python parser does (see "DuckDB fast path" below), else by Python. Which report of a 5-tuple is
    # kept, and whether a record's reverse 5-tuple exists (reply evidence), depend on the whole batch:
    # they are worked out in SQL from the rank kept beside every row. Lines whose 5-tuple and reporter
    # parsed but whose other fields are bad still count for both: Python stages them as "ghost" rows
    # (never records) and judges them at the end - a duplicate report is skipped before its fields are read.
    pending: list[_Pending] = []
    try:
        scanned = [i for i, src in enumerate(files) if not _has_bom(src)]
        fast = _scan(con, files, scanned, table) if scanned else None
        whole = set(range(len(files))) if fast is None else fast.whole | (set(range(len(files))) - set(scanned))
        for index, src in enumerate(files):
            if index in whole:
                _read(src, index, writer, pending)
            elif fast is not None and index in fast.pending:
                if not _read(src, index, writer, pending, fast.pending[index]):
                    whole.add(index)  # a line DuckDB split or decoded unlike Python: all of it in Python
                    _read(src, index, writer, pending)
        writer.close()
        rows = f"SELECT *, NULL::VARCHAR AS line FROM ({writer.relation(list(files), 1).sql})"
        if fast is None:
            con.execute(f"CREATE TEMP TABLE {table} AS {rows}")
        else:
            if fast.pending or whole - set(fast.skipped):  # drop the rows of the lines Python read
                gone = sorted(whole - set(fast.skipped))
                con.execute(f"DELETE FROM {table} WHERE line IS NOT NULL"
                            + (f" OR file_index IN ({', '.join(map(str, gone))})" if gone else ""))
            if writer.rows:
                con.execute(f"INSERT INTO {table} {rows}")
        _judge_pending(con, table, files, pending, staged, options)
        _settle(con, table)
        done = True
    finally:
        writer.close()
        writer.path.unlink(missing_ok=True)
        if not done:  # the store never sees this Staged: remove the table here
            try:
                drop_tables(con, [table])
            except duckdb.Error:  # an aborted transaction: the store rolls it back, table and all
                pass
    staged.relations.append(StagedRelation(
        sql=f"SELECT {', '.join(STAGE_COLUMNS)} FROM {table} WHERE NOT k_ghost", files=list(files),
        time_unit=1_000_000, after_scan=drop_after_scan([table]),
        null_columns=frozenset({"tcp_flags", "is_reply"})))  # GCP logs neither
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged


_Pending = tuple[int, int, str, str, _Key | None, int]  # file, line, field, message, key (if parsed), rank


def _read(src: SourceFile, index: int, writer: StageWriter, pending: list[_Pending],
          only: frozenset[str] | None = None) -> bool:
    """Parses the lines of ``src`` (with ``only``: just the lines of that text, which the fast path
    left to Python). False, with nothing written, when some text of ``only`` is no line of the file
    as Python reads it."""
    rows: list[tuple[StageRow, int, bool]] = []
    aside: list[_Pending] = []
    seen: set[str] = set()
    for no, text in _lines(src):
        if only is not None:
            if text not in only:
                continue
            seen.add(text)
        try:
            payload, key, reporter = _parse(text)
        except _Bad as bad:
            aside.append((index, no, bad.field, bad.message, None, 0))
            continue
        rank = _REPORTER_RANK[reporter]
        try:
            row = _record(payload, key, reporter, index)
        except _Bad as bad:
            aside.append((index, no, bad.field, bad.message, key, rank))
            row, ghost = _ghost(key, index), True
        else:
            ghost = False
        if only is None:  # a whole file: straight to the staging file, nothing kept per line
            writer.write(row, rank, ghost)
        else:
            rows.append((row, rank, ghost))
    if only is not None and len(seen) != len(only):
        return False
    for row, rank, ghost in rows:
        writer.write(row, rank, ghost)
    pending.extend(aside)
    return True


_DUPLICATE = "duplicate-report"
_EXTRA = {"k_rank": "INTEGER", "k_ghost": "BOOLEAN"}
_TUPLE = ("src_ip", "dst_ip", "src_port", "dst_port", "proto")


def _settle(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Per 5-tuple the best (lowest) rank of the batch; a row of a worse rank is a duplicate report. A
    record without an action of its own (an egress report without rtt_msec) is accepted when the
    reverse 5-tuple was reported (the peer replied). Ghost rows count for both. The aggregates hold one
    entry per distinct 5-tuple, not per row; only the rows concerned are updated."""
    same = " AND ".join(f"t.{c} = d.{c}" for c in _TUPLE)
    dups = (f"SELECT {', '.join(_TUPLE)}, min(k_rank) AS best FROM {table} GROUP BY ALL "
            "HAVING min(k_rank) < max(k_rank)")
    con.execute(f"UPDATE {table} AS t SET log_status = '{_DUPLICATE}' FROM ({dups}) AS d "
                f"WHERE {same} AND t.k_rank > d.best")
    got = con.execute(f"SELECT count(*) FROM {table} WHERE action IS NULL AND NOT k_ghost").fetchone()
    if got and got[0]:
        reverse = ("r.src_ip = d.dst_ip AND r.dst_ip = d.src_ip AND r.src_port = d.dst_port "
                   "AND r.dst_port = d.src_port AND r.proto = d.proto")
        replied = (f"SELECT DISTINCT {', '.join(_TUPLE)} FROM {table} AS d WHERE action IS NULL AND NOT k_ghost "
                   f"AND EXISTS (SELECT 1 FROM {table} AS r WHERE {reverse})")
        con.execute(f"UPDATE {table} AS t SET action = 'accept' FROM ({replied}) AS d "
                    f"WHERE {same} AND t.action IS NULL AND NOT t.k_ghost")


def _ghost(key: _Key, file_index: int) -> StageRow:
    src, dst, sport, dport, proto = key
    return StageRow(t_start=None, t_end=None, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
                    bytes=None, packets=None, action=None, tcp_flags=None, is_reply=None, direction=None,
                    src_workload=None, dst_workload=None, log_status=None, file_index=file_index)


def _judge_pending(con: duckdb.DuckDBPyConnection, table: str, files: Sequence[SourceFile],
                   pending: list[_Pending], staged: Staged,
                   options: ReaderOptions) -> None:
    """Counts the lines read aside, in line order: a duplicate report is skipped, anything else is bad.

    The best rank of their 5-tuples is looked up in the staged rows ``table`` (which hold every line whose
    5-tuple parsed), and their text is read again only for the lines that become samples (bad lines
    are rare): nothing per line of the batch is kept in Python."""
    keys = sorted({key for *_, key, _rank in pending if key is not None})
    best: dict[_Key, int] = {}
    if keys:
        keyed = f"_ms_gcp_pending_{id(staged)}"
        con.execute(f"CREATE TEMP TABLE {keyed} (src_ip VARCHAR, dst_ip VARCHAR, src_port INTEGER, "
                    "dst_port INTEGER, proto INTEGER)")
        try:
            con.executemany(f"INSERT INTO {keyed} VALUES (?, ?, ?, ?, ?)", [list(k) for k in keys])
            for sip, dip, sport, dport, proto, low in con.execute(
                    f"SELECT {', '.join(_TUPLE)}, min(s.k_rank) FROM {keyed} "
                    f"JOIN {table} AS s USING ({', '.join(_TUPLE)}) GROUP BY ALL").fetchall():
                best[(str(sip), str(dip), int(sport), int(dport), int(proto))] = int(low)
        finally:
            con.execute(f"DROP TABLE IF EXISTS {keyed}")
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


# -- DuckDB fast path ------------------------------------------------------------------------------
#
# Every line is read by DuckDB as one column and parsed with one json_extract_string of the fields _record
# reads (yyjson, which like jsonline.loads reads the first of repeated keys). SQL keeps a line only
# when it is certain that the Python parser reads it as the same good record; Python reads the others:
# - that line alone, matched by its text ("pending"), when SQL cannot be certain of it: an escape anywhere
#   (no backslash: a key SQL looks for on the line is written as read, a string has no '"'), what yyjson
#   accepts and json.loads does not (a trailing comma; nan, inf and their other spellings, found by a cheap
#   test that also catches NaN and Infinity), a line long enough to nest deeper than Python's recursion limit
#   or to hold a number of more digits than int() converts, a value of an unexpected type or shape (an
#   address ipaddress refuses, or an IPv6 zone id that is not an interface name; times not in UTC "Z"; names
#   that are not plain ASCII), a bad value, blanks around the document; Python names the line and field of
#   every bad record;
# - the whole file when DuckDB's line is not Python's: a line with the delimiter \x01, a line with
#   CR or LF left in it, invalid UTF-8 or an over-long line (DuckDB rejects it, Python replaces it), a
#   byte order mark (DuckDB skips it, Python reads it as part of the first line: bad JSON), a pending
#   text Python does not find in the file, or an address SQL took that canonical_ip refuses (not expected:
#   a safety net, see sqlpath.canonical_ipv6).
# IPv6 addresses SQL read are rewritten as canonical_ip writes them (each distinct value judged in Python).
# The rows Python reads are added to the table; the rank rules then run in SQL on all of them.

# The payload fields _record reads; json_extract_string gives a string's content, any other value's JSON text
# (an object's as yyjson writes it, a number's as DuckDB gives it) and NULL for null or an absent key.
_LEAVES = ("connection.src_ip", "connection.dest_ip", "connection.src_port", "connection.dest_port",
           "connection.protocol", "reporter", "start_time", "end_time", "bytes_sent", "packets_sent", "rtt_msec",
           "src_gke_details", "dest_gke_details", "src_instance.vm_name", "dest_instance.vm_name")
_J = {name.rsplit(".", 1)[-1] if name.startswith("connection.") else name: i + 1 for i, name in enumerate(_LEAVES)}
_J["src_vm"], _J["dest_vm"] = _J.pop("src_instance.vm_name"), _J.pop("dest_instance.vm_name")
# Python's recursion limit (1000) bounds how deep json.loads nests; a shorter line cannot nest that
# deep, a longer one may when it has that many brackets. Past _MAX_LINE (real entries are 1-3 kB),
# or with a number of more than 4300 digits (int()'s limit), the line is Python's.
_SHORT_LINE = 1600
_MAX_LINE = 4000
_MAX_BRACKETS = 800
_MAX_US = MAX_EPOCH_SECONDS * 1_000_000  # a UTC time of 9999-12-31T23:59:59 with a fraction is past it
_TIME_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?Z"
_PLAIN_NAME = r'"[!#-.0-\[\]-~]+"'  # _plain_name: printable ASCII, no blank, '/', '"' or '\'
# The same as the content of a JSON string read as VARCHAR, which gives any other value's JSON text: that text
# starts with a digit, '-', '[' or '{' or is true / false (null reads as NULL; nan / inf never get here, see
# _ODD_VALUE), so a name starting otherwise that is neither of those was a string.
_PLAIN_NAME_TEXT = r"[!#-,.:-Z\]-z|-~][!#-.0-\[\]-~]*"
# What yyjson reads as a number and json.loads does not: nan / inf in any case (NaN and Infinity,
# which Python reads, are caught too), after ':' (and, on a line with '[', after '[' or ',').
_ODD_VALUE = "(?:-|[nN][aA]|[iI])"
_WS = "[ \\t]*"
# hubble.workload_from_pod's patterns (_RS_POD, _GENERATED_POD) for RE2, as calico.py spells them
_GEN = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphabet
_RS_POD = f"(.+)-[0-9{_GEN}]{{5,10}}-[{_GEN}]{{5}}"
_GENERATED_POD = f"(.+)-[{_GEN}]{{5}}"


@dataclass
class _Fast:
    whole: set[int]  # read in Python from start to end
    pending: dict[int, frozenset[str]]  # file index -> the text of the lines Python reads
    skipped: frozenset[int]  # not scanned (read in Python from start to end): no rows in the table


def _has_bom(src: SourceFile) -> bool:
    try:
        with gzip.open(src.path, "rb") if src.gzip else src.path.open("rb") as fh:
            return fh.read(3) == codecs.BOM_UTF8
    except (OSError, EOFError):
        return True  # the Python reader reports it


def _scan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], scanned: list[int], table: str) -> _Fast:
    """Parses the files ``scanned`` into ``table``: the staging columns, k_rank, k_ghost and ``line``
    (NULL: the row is exactly what _record gives; else the text Python reads, or '\\x01': the whole
    file in Python)."""
    groups = [idx for gz in (False, True) if (idx := [i for i in scanned if files[i].gzip == gz])]
    rejects = [(f"{table}_e{n}", f"{table}_s{n}") for n in range(len(groups))]
    parts = [_scan_sql([files[i] for i in idx], idx, names) for idx, names in zip(groups, rejects, strict=True)]
    try:
        con.execute(f"CREATE TEMP TABLE {table} AS {' UNION ALL '.join(parts)}")
    except SCAN_ERRORS as exc:  # the transaction is aborted: the store rolls it back
        raise scan_error(exc, files) from exc
    whole: set[int] = set()
    by_path = {str(files[i].path): i for i in scanned}
    for errors, scans in rejects:  # invalid UTF-8 or an over-long line: Python replaces or reads it
        for (path,) in con.execute(f"SELECT DISTINCT s.file_path FROM {errors} JOIN {scans} AS s "
                                   "USING (scan_id, file_id)").fetchall():
            whole.update([by_path[str(path)]] if str(path) in by_path else scanned)  # (unknown: all of them)
        drop_tables(con, (errors, scans))
    pending: dict[int, set[str]] = {}
    for fi, line in con.execute(f"SELECT DISTINCT file_index, line FROM {table} WHERE line IS NOT NULL").fetchall():
        if line == "\x01" or "\r" in line or "\n" in line:
            whole.add(int(fi))
        else:
            pending.setdefault(int(fi), set()).add(str(line))
    # IPv6 as ipaddress writes it, as the rows Python reads hold it: the rank and reply rules compare
    # addresses across both paths (_settle, _judge_pending)
    whole |= canonical_ipv6(con, table, "line IS NULL")
    return _Fast(whole=whole, pending={i: frozenset(v) for i, v in pending.items() if i not in whole},
                 skipped=frozenset(set(range(len(files))) - set(scanned)))


def _scan_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str]) -> str:
    mapping = ", ".join(str(i) for i in indexes)

    # The leaves are read as VARCHAR (json_extract_string): a string's content, any other value's JSON text,
    # NULL for null or absent. Where a string and another value differ to _record, the check below says why
    # no other value's text can pass it.
    def s(name: str) -> str:
        return f"s[{_J[name]}]"

    def text(v: str) -> str:  # a JSON text string's content (exact: there is no backslash on a parsed line)
        return f"substr({v}, 2, strlen({v}) - 2)"

    def num(v: str) -> str:  # _int's number (range checked later): a JSON integer or a string of ASCII digits
        # (the same digits either way; the digits are exactly the text when the number written back is the
        # text: no sign, blank, leading zero, '_', fraction or exponent, which a cast alone would take)
        return exact_int_sql(v, "UBIGINT")

    def port(name: str) -> str:  # absent: 0; null (which reads as NULL too, a bad port): not certain
        return (f"CASE WHEN {s(name)} IS NULL THEN CASE WHEN contains(c0, '\"{name}\"') THEN NULL ELSE 0 END "
                f"ELSE {num(s(name))} END")

    def address(v: str) -> str:  # an address ipaddress accepts as written (_scan canonicalises IPv6); NULL: uncertain
        # (no number, literal or JSON text of an object or array is an address: no string reads otherwise)
        return (f"CASE WHEN CASE WHEN contains({v}, ':') THEN regexp_full_match({v}, '{hubble.IPV6_SQL}') "
                f"ELSE regexp_full_match({v}, '{IPV4_PATTERN}') END THEN {v} END")

    def time_us(v: str) -> str:  # _time_us of a UTC time; NULL: not certain (only a string is a time)
        # YYYY-MM-DDTHH:MM:SS.ffffff (cut after 6 digits, as _time_us does) is a TIMESTAMP cast
        return (f"CASE WHEN regexp_full_match({v}, '{_TIME_RE}') THEN CASE WHEN strlen({v}) >= 27 "
                f"THEN epoch_us(TRY_CAST(left({v}, 26) AS TIMESTAMP)) "
                f"WHEN strlen({v}) = 20 THEN epoch_us(TRY_CAST(left({v}, 19) AS TIMESTAMP)) "
                f"ELSE epoch_us(TRY_CAST(left({v}, 19) AS TIMESTAMP)) "
                f"+ TRY_CAST(rpad(substr({v}, 21, strlen({v}) - 21), 6, '0') AS BIGINT) END END")

    def vm_name(v: str) -> str:  # _name of a VARCHAR leaf: NULL for null / "" / absent, the name, or '/'
        return (f"CASE WHEN {v} IS NULL OR {v} = '' THEN NULL WHEN regexp_full_match({v}, '{_PLAIN_NAME_TEXT}') "
                f"AND {v} NOT IN ('true', 'false') THEN {v} ELSE '/' END")

    def name(v: str) -> str:  # _name: NULL for null / "" / absent, the name, or '/' (no name can be '/'): not certain
        return (f"CASE WHEN {v} IS NULL OR {v} IN ('null', '\"\"') THEN NULL "
                f"WHEN regexp_full_match({v}, '{_PLAIN_NAME}') THEN {text(v)} ELSE '/' END")

    def pod_workload(n: str) -> str:  # hubble.workload_from_pod (RE2's greedy submatches are Python's here)
        return (f"coalesce(nullif(regexp_extract({n}, '^{_RS_POD}$', 1), ''), "
                f"nullif(regexp_extract({n}, '^{_GENERATED_POD}$', 1), ''), {n})")

    def gke_parts(side: str) -> str:  # pod, namespace, workload object, workload name, pod name (JSON text)
        # an object's JSON text, which with a key starts '{"' (a string's content has no '"'); {} is not certain
        g = s(f"{side}_gke_details")
        return (f"CASE WHEN starts_with({g}, '{{\"') THEN json_extract({g}, ['$.pod', '$.pod.pod_namespace', "
                "'$.pod.pod_workload', '$.pod.pod_workload.workload_name', '$.pod.pod_name']) END")

    def hint(side: str) -> str:
        """_hint as '/' + hint (or '/' alone for None), NULL when not certain."""
        g, vm, k = s(f"{side}_gke_details"), s(f"{side}_vm"), f"k_{side}"
        vm_checked = f"vm_{side}"  # vm_name(vm), computed once
        ns, wn, pn = name(f"{k}[2]"), f"CASE WHEN starts_with({k}[3], '{{') THEN {name(f'{k}[4]')} END", name(f"{k}[5]")
        gke = (f"CASE WHEN NOT coalesce(starts_with({k}[1], '{{'), false) THEN '/' "
               f"WHEN {ns} = '/' OR {wn} = '/' OR ({wn} IS NULL AND {pn} = '/') THEN NULL "
               f"ELSE '/' || coalesce({ns} || '/' || coalesce({wn}, {pod_workload(pn)}), '') END")
        # (a null vm_name reads as NULL too: not certain when the line names the instance)
        instance = (f"CASE WHEN {vm} IS NULL THEN CASE WHEN contains(c0, '{side}_instance\"') THEN NULL ELSE '/' END "
                    f"WHEN {vm_checked} = '/' THEN NULL ELSE '/' || coalesce({vm_checked}, '') END")
        return (f"CASE WHEN {g} IS NULL THEN {instance} WHEN starts_with({g}, '{{\"') THEN {gke} END")

    rank = " ".join(f"WHEN '{r}' THEN {n}" for r, n in _REPORTER_RANK.items())
    directions = " ".join(f"WHEN '{r}' THEN '{d}'" for r, d in _DIRECTIONS.items())
    paths = {p: "[" + ", ".join(sql_str(f"{p}{leaf}") for leaf in _LEAVES) + "]" for p in ("$.jsonPayload.", "$.")}
    # a line yyjson and json.loads read alike (see above): cheap literal scans, each CASE evaluating the
    # next test only on the lines that passed the last (AND and OR evaluate every operand on every row)
    plain = f"""CASE WHEN c1 IS NULL AND starts_with(c0, '{{') AND ends_with(c0, '}}') THEN
      CASE WHEN contains(c0, '\\') OR contains(c0, ',}}') OR regexp_matches(c0, ':{_WS}{_ODD_VALUE}') THEN false
      WHEN strlen(c0) > {_SHORT_LINE} AND (strlen(c0) > {_MAX_LINE}
        OR strlen(c0) - strlen(replace(replace(c0, '{{', ''), '[', '')) >= {_MAX_BRACKETS}) THEN false
      WHEN (contains(c0, ' ') OR contains(c0, '\t')) AND regexp_matches(c0, ',{_WS}[]}}]') THEN false
      WHEN contains(c0, '[') THEN NOT regexp_matches(c0, '[\\[,]{_WS}{_ODD_VALUE}|,{_WS}[]}}]')
      ELSE true END
    ELSE false END"""
    # the payload: jsonPayload when the entry has that key (else the entry itself, as _payload reads it)
    parse = (f"CASE WHEN {plain} THEN CASE WHEN contains(c0, 'jsonPayload\"') "
             f"THEN try(json_extract_string(c0, {paths['$.jsonPayload.']})) "
             f"ELSE try(json_extract_string(c0, {paths['$.']})) END END")
    values = f"""
SELECT *, {hint('src')} AS src_hint, {hint('dest')} AS dst_hint
FROM (
SELECT fi, c0, c1, s, {address(s('src_ip'))} AS src_ip, {address(s('dest_ip'))} AS dst_ip,
  {port('src_port')} AS src_port, {port('dest_port')} AS dst_port,
  {num(s('protocol'))} AS proto, CASE {s('reporter')} {rank} END AS k_rank,
  {time_us(s('start_time'))} AS t_start, {time_us(s('end_time'))} AS t_end,
  {num(s('bytes_sent'))} AS bytes, {num(s('packets_sent'))} AS packets,
  {vm_name(s('src_vm'))} AS vm_src, {vm_name(s('dest_vm'))} AS vm_dest,
  {gke_parts('src')} AS k_src, {gke_parts('dest')} AS k_dest
FROM (
SELECT fi, c0, c1, {parse} AS s
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, c1
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{"gzip" if files[0].gzip else "none"}', store_rejects=true, rejects_table='{rejects[0]}',
  rejects_scan='{rejects[1]}'))))"""
    # null and absent counters read as NULL alike, as _record reads them
    counted = " AND ".join(f"({s(k)} IS NULL OR {c} IS NOT NULL)" for k, c in (("bytes_sent", "bytes"),
                                                                               ("packets_sent", "packets")))
    ok = ("coalesce(src_ip IS NOT NULL AND dst_ip IS NOT NULL AND src_port <= 65535 AND dst_port <= 65535 "
          f"AND proto <= 255 AND k_rank IS NOT NULL "
          f"AND t_start BETWEEN 0 AND {_MAX_US} AND t_end BETWEEN 0 AND {_MAX_US} AND {counted} "
          "AND src_hint IS NOT NULL AND dst_hint IS NOT NULL, false)")
    # what str.strip() removes from an ASCII line: a line of only these is no line for Python
    blank = "trim(c0, ' \t\x0b\x0c\x1c\x1d\x1e\x1f') = ''"
    return f"""
SELECT TRY_CAST(t_start AS UBIGINT) AS t_start, TRY_CAST(t_end AS UBIGINT) AS t_end, src_ip, dst_ip,
  TRY_CAST(src_port AS INTEGER) AS src_port, TRY_CAST(dst_port AS INTEGER) AS dst_port,
  TRY_CAST(proto AS INTEGER) AS proto,
  bytes, packets,
  CASE WHEN k_rank = 0 OR {s('rtt_msec')} IS NOT NULL THEN 'accept' END AS action,
  NULL::INTEGER AS tcp_flags, NULL::BOOLEAN AS is_reply, CASE {s('reporter')} {directions} END AS direction,
  nullif(substr(src_hint, 2), '') AS src_workload, nullif(substr(dst_hint, 2), '') AS dst_workload,
  'OK' AS log_status, fi::INTEGER AS file_index, k_rank::INTEGER AS k_rank, false AS k_ghost,
  CASE WHEN {ok} THEN NULL WHEN c0 IS NULL OR c1 IS NOT NULL THEN '\x01' ELSE c0 END AS line
FROM ({values})
WHERE CASE WHEN starts_with(c0, '{{') THEN true WHEN c1 IS NOT NULL OR c0 IS NULL THEN true ELSE NOT {blank} END"""
