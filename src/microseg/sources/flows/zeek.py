"""Zeek ``conn.log``: the ASCII writer's TSV form and its JSON forms (one object per line).

Format facts (Zeek documentation: ``base/protocols/conn/main.zeek`` ``Conn::Info``, the "Zeek
Logs" / ``logs/conn`` pages, and the ASCII writer ``LogAscii``):

- TSV: a header of ``#`` lines - ``#separator`` (written escaped, ``\\x09``), ``#set_separator``,
  ``#empty_field`` (``(empty)``), ``#unset_field`` (``-``), ``#path``, ``#open``, ``#fields``,
  ``#types`` - then one record per line, and ``#close`` at the end. The header may repeat inside
  a file (rotated logs concatenated): every ``#fields`` line replaces the column list. Columns are
  found by name, so added fields (``ip_proto`` since Zeek 7, ``local_orig``, community packages)
  and their order do not matter.
- JSON (``LogAscii::use_json=T``, or the json-streaming-logs package that adds ``_path`` and
  ``_write_ts``): the same field names as keys (``id.orig_h`` ...; a nested ``"id": {...}`` object,
  as some converters write it, is read too); unset fields are omitted. ``ts`` is epoch seconds
  (``JSON::TS_EPOCH``, a number), integer milliseconds (``JSON::TS_MILLIS``: an integer of at least
  10^11, which as seconds would be past the year 5000) or an ISO 8601 string (``JSON::TS_ISO8601``).
- ``ts`` is the time of the first packet and ``duration`` how long the connection lasted: the record
  covers ``ts .. ts + duration``.

Orientation. One record is one whole connection, both directions: ``id.orig_*`` is the originator
(the client, who sent the first packet; Zeek flips a connection whose first packet it missed, history
``^``) and ``id.resp_*`` the responder (the server). Records are therefore staged as requests
(``is_reply`` false) - except ``OTH``, "no SYN seen, just midstream traffic", where Zeek had no
handshake to tell the client: there the mapping's port rules decide. Bytes and packets are both
directions: ``orig_ip_bytes + resp_ip_bytes`` (IP-level, as VPC Flow Logs and NetFlow count) and
``orig_pkts + resp_pkts``; unknown when either side is unset.

Action, from ``conn_state`` (the ``Conn::Info$conn_state`` table of the same document):

- ``REJ`` "connection attempt rejected" (the responder answered the SYN with a RST) -> reject;
- ``S0`` "connection attempt seen, no reply", ``SH`` "originator sent a SYN followed by a FIN, we
  never saw a SYN ACK from the responder" and ``RSTOS0`` "originator sent a SYN followed by a RST,
  we never saw a SYN-ACK": attempts that got no answer, as a dropping firewall leaves them -> drop.
  For UDP, ``S0`` also describes one-way traffic that needs no answer (syslog, SNMP traps); it is
  still staged as drop, so such an edge is reported for review and never codified (fail closed);
- every other state (``S1``, ``SF``, ``S2``, ``S3``, ``RSTO``, ``RSTR``, ``RSTRH``, ``SHR``,
  ``OTH``) saw the responder answer or data flow -> accept;
- a missing or unknown state is a bad line: never guessed as accept.

Protocol: ``ip_proto`` (Zeek 7+) when present, else ``proto`` (``tcp``/``udp``/``icmp``; ``icmp``
over IPv6 is ICMPv6, 58). ``unknown_transport`` without ``ip_proto`` leaves the protocol unknown
(the record maps to no edge). ICMP "ports" are the message type and code (``Conn`` module docs);
they are staged as 0, as for every other ICMP source here.

Duplicates. ``uid`` is unique per connection, so a second record with a ``uid`` already read in the
same ingest is the same connection logged twice - typically by the json-streaming-logs package,
which writes ``json_streaming_conn.log`` beside the default ``conn.log`` - and is counted as skipped
("duplicate-uid"), so one connection stays one flow.

conn.log carries no workload identity: the hints stay empty and the addresses resolve.

Reading. TSV files whose header is one block at the top are parsed by DuckDB (see "DuckDB fast path"
below), with the same checks as the Python parser; what SQL cannot decide exactly (IPv6 addresses,
non-ASCII text, ISO times, repeated uids, a layout that changes inside a file) is read by the Python
parser, which names the line and field of every bad record. JSON files are parsed by DuckDB too
("DuckDB fast path, JSON"): SQL keeps only the lines it is certain Python reads as the same good
record; other lines go to the Python parser one by one, and a line that SQL parsed but that fails a
check sends the batch to it. Tests assert that both paths give the same rows, counts and bad-line
reports.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    BadLine,
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    iter_lines,
    sql_list,
    sql_str,
)
from microseg.sources.flows.sqlpath import (
    IPV4_PATTERN,
    SCAN_ERRORS,
    count_rejects,
    drop_after_scan,
    drop_tables,
    scan_error,
)

NAME = "zeek"

ACTIONS = {"accept": "accept", "reject": "reject", "drop": "drop"}
_STATES: dict[str, str] = {
    "REJ": "reject",
    "S0": "drop", "SH": "drop", "RSTOS0": "drop",
    "S1": "accept", "SF": "accept", "S2": "accept", "S3": "accept", "RSTO": "accept", "RSTR": "accept",
    "RSTRH": "accept", "SHR": "accept", "OTH": "accept",
}
_NO_HANDSHAKE = frozenset({"OTH"})
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
_ICMP = frozenset({1, 58})
_PORTED = frozenset({6, 17, 132})
_REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "conn_state")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")
_MILLIS_FROM = 10**11  # an integer ts at least this large is JSON::TS_MILLIS (see the docstring)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Bad(Exception):
    """A record that cannot be read; carries the field for the report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sniff(head: list[str]) -> bool:
    if not head:
        return False
    first = head[0]
    if first.startswith("#separator"):
        # The ASCII writer's header: claim conn logs only (dns.log etc. share the header shape).
        for line in head[1:]:
            if line.startswith("#path"):
                return line.split(maxsplit=1)[1:] == ["conn"]
            if line.startswith("#fields"):
                return "id.orig_h" in line.split() and "conn_state" in line.split()
        return False
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    obj = _flatten(obj)
    path = obj.get("_path")
    if path is not None and path != "conn":
        return False
    return {"id.orig_h", "id.resp_h", "conn_state"} <= set(obj)


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    ident = obj.get("id")
    if isinstance(ident, dict):
        obj = {k: v for k, v in obj.items() if k != "id"} | {f"id.{k}": v for k, v in ident.items()}
    return obj


def _micros(v: Any, field: str) -> int:
    """Non-negative seconds (a decimal string or number) as integer microseconds, exactly."""
    if isinstance(v, bool):
        raise _Bad(field, f"{v!r} is not a number")
    if isinstance(v, int | Decimal):
        text = str(v)
    elif isinstance(v, str):
        text = v
    else:
        raise _Bad(field, f"{v!r} is not a number")
    if not _NUMBER.fullmatch(text):
        raise _Bad(field, f"{v!r} is not a non-negative number")
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000 + int(frac[:6].ljust(6, "0"))  # finer than microseconds is cut


def _ts(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= _MILLIS_FROM:
        us = v * 1000
    elif isinstance(v, str) and "T" in v:
        m = _ISO.fullmatch(v)
        if m is None:
            raise _Bad("ts", f"{v!r} is not an ISO 8601 time")
        base, frac, zone = m.groups()
        try:
            dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
        except ValueError as exc:
            raise _Bad("ts", str(exc)) from None
        delta = dt - _EPOCH
        us = (delta.days * 86400 + delta.seconds) * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
        if us < 0:
            raise _Bad("ts", f"{v!r} is before 1970")
    else:
        us = _micros(v, "ts")
    if us > MAX_EPOCH_SECONDS * 1_000_000:
        raise _Bad("ts", f"{v!r} is after 9999")
    return us


def _count(v: Any, field: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    raise _Bad(field, f"{v!r} is not a count")


def _port(v: Any, field: str) -> int:
    p = _count(v, field)
    if p is None or p > 65535:
        raise _Bad(field, f"{v!r} is not a port")
    return p


def _ip(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise _Bad(field, f"{v!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise _Bad(field, f"{v!r} is not an IP address") from None


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _record(rec: dict[str, Any], file_index: int) -> StageRow:
    """One conn.log record (unset fields absent or None) as a staging row."""
    for name in _REQUIRED:
        if rec.get(name) is None:
            raise _Bad(name, f"{name} is missing or unset")
    state = rec["conn_state"]
    action = _STATES.get(state) if isinstance(state, str) else None
    if action is None:
        raise _Bad("conn_state", f"unknown conn_state {state!r}")
    src, dst = _ip(rec["id.orig_h"], "id.orig_h"), _ip(rec["id.resp_h"], "id.resp_h")
    sport, dport = _port(rec["id.orig_p"], "id.orig_p"), _port(rec["id.resp_p"], "id.resp_p")
    proto: int | None
    if rec.get("ip_proto") is not None:
        proto = _count(rec["ip_proto"], "ip_proto")
        if proto is None or proto > 255:
            raise _Bad("ip_proto", f"{rec['ip_proto']!r} is not an IP protocol number")
    elif rec["proto"] == "unknown_transport":
        proto = None
    elif isinstance(rec["proto"], str) and rec["proto"] in _PROTOS:
        proto = _PROTOS[rec["proto"]]
        if proto == 1 and ":" in src:
            proto = 58  # Zeek's transport_proto has one "icmp" for ICMP and ICMPv6
    else:
        raise _Bad("proto", f"unknown transport protocol {rec['proto']!r}")
    if proto in _ICMP or (proto is not None and proto not in _PORTED):
        sport = dport = 0  # ICMP type/code (or meaningless for other protocols): no service port
    start = _ts(rec["ts"])
    duration = rec.get("duration")
    end = start + (0 if duration is None else _micros(duration, "duration"))
    if end > MAX_EPOCH_SECONDS * 1_000_000:
        raise _Bad("duration", f"{duration!r} ends after 9999")
    nbytes = _sum(_count(rec.get("orig_ip_bytes"), "orig_ip_bytes"), _count(rec.get("resp_ip_bytes"), "resp_ip_bytes"))
    packets = _sum(_count(rec.get("orig_pkts"), "orig_pkts"), _count(rec.get("resp_pkts"), "resp_pkts"))
    return StageRow(
        t_start=start, t_end=end, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
        bytes=nbytes, packets=packets, action=action, tcp_flags=None,
        is_reply=None if state in _NO_HANDSHAKE else False, direction=None, src_workload=None,
        dst_workload=None, log_status="OK", file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    seen: set[str] = set()
    try:
        plan = _plan(con, files, staged, options)
        for index, src in enumerate(files):
            try:
                if plan is None:
                    _stage_file(src, index, writer, staged, options, seen)
                elif index in plan.pending:
                    _stage_file(src, index, writer, staged, options, seen, plan.pending[index],
                                plan.done_lines.setdefault(src.path, set()))
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1_000_000)
    relation.null_columns = _NULL_COLUMNS
    staged.relations.append(relation)
    if plan is None:
        # Every check the store repeats after aggregation has been made here already.
        staged.locate_bad = lambda _src: []
    elif plan.merged:
        # JSON: the Python rows and the SQL rows in one relation, so that the store folds them into the
        # same aggregates whichever path read a line (one flows row, as the Python reader alone gives).
        python = staged.relations.pop()
        after = plan.relations[-1].after_scan
        staged.relations.append(StagedRelation(
            sql=" UNION ALL BY NAME ".join(f"({r.sql})" for r in [*plan.relations, python]), files=list(files),
            time_unit=1_000_000, after_scan=after, null_columns=_NULL_COLUMNS))
        staged.locate_bad = functools.partial(_locate_bad, done_lines=plan.done_lines,
                                              max_samples=options.max_samples)
    else:
        staged.relations[:0] = plan.relations
        staged.locate_bad = functools.partial(_locate_bad, done_lines=plan.done_lines,
                                              max_samples=options.max_samples)
    return staged


_NULL_COLUMNS = frozenset({"tcp_flags", "direction", "src_workload", "dst_workload"})


class _Tsv:
    """The ASCII writer's header state of one file."""

    def __init__(self) -> None:
        self.separator = "\t"
        self.unset = "-"
        self.empty = "(empty)"
        self.fields: list[str] | None = None

    def header(self, text: str) -> None:
        if text.startswith("#separator"):
            # Written escaped (``\x09``), itself separated from its key by a space or the separator.
            value = text[len("#separator"):].strip(" \t")
            self.separator = re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value) or "\t"
            return
        key, _, value = text.partition(self.separator)
        if key == "#unset_field":
            self.unset = value
        elif key == "#empty_field":
            self.empty = value
        elif key == "#fields":
            self.fields = value.split(self.separator)

    def record(self, text: str) -> dict[str, Any]:
        if self.fields is None:
            raise _Bad("#fields", "record before any #fields header line")
        values = text.split(self.separator)
        if len(values) != len(self.fields):
            raise _Bad("#fields", f"{len(values)} columns, the #fields line names {len(self.fields)}")
        return {k: None if v in (self.unset, self.empty) else v for k, v in zip(self.fields, values, strict=True)}


def _parse_line(tsv: _Tsv | None, text: str) -> dict[str, Any]:
    if tsv is not None:
        return tsv.record(text)
    try:
        obj = json.loads(text, parse_float=Decimal)  # exact microseconds, no float rounding
    except (ValueError, InvalidOperation) as exc:
        raise _Bad("json", f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Bad("json", "not a JSON object")
    return _flatten(obj)


def _records(src: SourceFile) -> Iterator[tuple[int, str, _Tsv | None]]:
    """(line number, text, header state) of every record line; header lines update the state."""
    tsv: _Tsv | None = None
    for no, text in iter_lines(src):
        if not text.strip():
            continue
        if text.startswith("#"):
            if tsv is None:
                tsv = _Tsv()
            tsv.header(text)  # #close, #open, #path, #types carry nothing a record needs
            continue
        yield no, text, tsv


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                seen: set[str], pending: tuple[frozenset[str], frozenset[str]] | None = None,
                done_lines: set[int] | None = None) -> None:
    """Reads ``src`` in Python; with ``pending`` (lines, uids), only those lines and the records with those
    uids (the rest went through DuckDB)."""
    lines, uids = pending if pending is not None else (frozenset(), frozenset())
    for no, text, tsv in _records(src):
        if pending is not None:
            if text not in lines:
                if not uids:
                    continue
                try:
                    if _parse_line(tsv, text).get("uid") not in uids:
                        continue
                except _Bad:
                    continue  # DuckDB counted it as bad, and locate_bad reports it
            if done_lines is not None:
                done_lines.add(no)
        try:
            rec = _parse_line(tsv, text)
            row = _record(rec, index)
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
            continue
        uid = rec.get("uid")
        if isinstance(uid, str) and uid:
            if uid in seen:
                staged.skipped[(src.path, "duplicate-uid")] += 1
                continue
            seen.add(uid)
        writer.write(row)


def _locate_bad(src: SourceFile, done_lines: dict[Path, set[int]], max_samples: int) -> list[BadLine]:
    """The lines behind the records DuckDB counted as bad, with the field the Python parser names."""
    out: list[BadLine] = []
    done = done_lines.get(src.path, set())
    for no, text, tsv in _records(src):
        if no in done:
            continue  # read in Python already, and reported there
        try:
            _record(_parse_line(tsv, text), 0)
        except _Bad as bad:
            out.append(BadLine(file=str(src.path), line=no, field=bad.field, message=bad.message, text=text[:500]))
            if len(out) >= max_samples:
                break
    return out


# -- DuckDB fast path -----------------------------------------------------------------------------
#
# A TSV conn.log is parsed by DuckDB: every line read as one column, split on the separator, typed
# and checked in SQL exactly as _record does it in Python. What SQL cannot decide exactly goes
# through the Python path above, line by line:
# - a file whose header is not one block at the top, or changes inside the file (rotated logs
#   concatenated): the whole batch is read in Python (rare; exact order for duplicates); JSON files
#   have their own SQL (_json_raw_sql, _json_sql) and rules, below;
# - "uncertain" lines: non-ASCII text (Python's str.isdigit and \d accept other digits), IPv6
#   addresses (Python canonicalises and validates them), ISO ``ts`` values, counts beyond UBIGINT;
# - every line whose uid occurs more than once in the batch: which copy is kept depends on the order
#   of lines, which SQL does not see.
# Bad lines stay in the relation, marked with a log-status the store counts as bad; locate_bad
# re-reads such a file in Python to name line and field.

_BAD_STATUS = "(bad)"
_HEAD_LINES = 64
_LAYOUT_KEYS = ("#separator", "#unset_field", "#empty_field", "#fields")


@dataclass(frozen=True)
class _Head:
    """The header block at the top of a TSV file, as the Python reader would read it."""

    separator: str
    unset: str
    empty: str
    fields: tuple[str, ...]
    layout_lines: frozenset[str]  # the raw #separator / #unset_field / #empty_field / #fields lines


def _head(src: SourceFile) -> _Head | None:
    """The file's header block, when it is one block of ``#`` lines at the top naming the fields."""
    tsv = _Tsv()
    layout: set[str] = set()
    any_header = False
    for n, (_no, text) in enumerate(iter_lines(src)):
        if n >= _HEAD_LINES:
            return None
        if not text.strip():
            continue
        if not text.startswith("#"):
            if not any_header:
                return _JSON_HEAD  # no header above the first record: JSON (a "#" line further on: see _plan)
            break
        any_header = True
        tsv.header(text)
        if text.startswith(_LAYOUT_KEYS):
            layout.add(text)
    if not any_header:
        return _JSON_HEAD  # empty, or only blank lines
    if tsv.fields is None or len(tsv.separator) != 1:
        return None
    return _Head(tsv.separator, tsv.unset, tsv.empty, tuple(tsv.fields), frozenset(layout))


# JSON files (no header): one group of their own, read by _json_raw_sql and _json_sql.
_JSON_HEAD = _Head("", "", "", (), frozenset())


@dataclass
class _Plan:
    relations: list[StagedRelation]
    merged: bool  # JSON in the batch: stage() scans these relations and the Python rows as one
    pending: dict[int, tuple[frozenset[str], frozenset[str]]]  # file index -> (uncertain lines, uids)
    done_lines: dict[Path, set[int]]


def _plan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], staged: Staged,
          options: ReaderOptions) -> _Plan | None:
    """The DuckDB relations for the batch and the lines left to Python; None: all of it in Python."""
    heads: list[_Head] = []
    for src in files:
        head = _head(src)
        if head is None:
            return None
        heads.append(head)
    groups: dict[tuple[_Head, bool], list[int]] = {}
    for i, (src, head) in enumerate(zip(files, heads, strict=True)):
        groups.setdefault((head, src.gzip), []).append(i)
    tag = f"_ms_zeek_{id(staged)}"
    group_list = list(groups.items())
    # One scan: the layout lines of every file, the uncertain lines, and the uids seen more than once.
    layout_line = " OR ".join(f"starts_with(line, {sql_str(k)})" for k in _LAYOUT_KEYS)
    parts = []
    json_tables = {n: f"{tag}_{n}_json" for n, ((head, _gz), _idx) in enumerate(group_list) if head == _JSON_HEAD}
    for n, ((head, _gz), idx) in enumerate(group_list):
        if head == _JSON_HEAD:
            try:
                con.execute(f"CREATE TEMP TABLE {json_tables[n]} AS "
                            + _json_raw_sql([files[i] for i in idx], idx, (f"{tag}_{n}_err", f"{tag}_{n}_scan")))
            except SCAN_ERRORS as exc:
                drop_tables(con, json_tables.values())
                raise scan_error(exc, files) from exc
            sql = _json_sql(json_tables[n])
            # The batch in Python: any "#" line (Python reads the lines after it as TSV), a line whose
            # uid SQL cannot know (escapes), or a line of the flat grammar that fails a check here (its
            # text is not kept; Python names the line and field). ``xuid``: every uid Python may read
            # on an uncertain line.
            parts.append(f"SELECT fi, CASE WHEN NOT uncertain THEN uid END AS uid, "
                         f"CASE WHEN uncertain THEN line END AS xline, "
                         f"CASE WHEN hdr OR unknown_uid OR (uncertain AND flat) THEN fi || chr(9) || '#' END AS hline, "
                         f"CASE WHEN uncertain THEN xuids END AS xuid FROM ({sql})")
            continue
        sql = _parsed_sql(head, [files[i] for i in idx], idx, (f"{tag}_{n}_err", f"{tag}_{n}_scan"))
        # A line of another shape that is not ASCII may be blank to Python (NBSP, NEL): "weird",
        # read in Python. "#" lines: the layout lines must be the header's.
        parts.append(f"SELECT fi, CASE WHEN NOT hdr AND NOT uncertain AND shape THEN uid END AS uid, "
                     f"CASE WHEN uncertain THEN line END AS xline, "
                     f"CASE WHEN hdr AND ({layout_line}) OR (NOT hdr AND NOT shape AND "
                     f"strlen(line) <> length(line)) THEN fi || chr(9) || line END AS hline, "
                     f"CASE WHEN uncertain THEN uid END AS xuid FROM ({sql})")
    # (A HAVING clause here trips a DuckDB 2.0 binder error; the outer WHERE is equivalent.)
    try:
        rows = con.execute(f"""
            SELECT uid, xline, hline, xuid, lo, hi FROM (
              SELECT uid, xline, hline, xuid, count(*) AS n, min(fi) AS lo, max(fi) AS hi
              FROM ({' UNION ALL '.join(parts)}) GROUP BY GROUPING SETS ((uid), (xline), (hline), (xuid)))
            WHERE (uid IS NOT NULL AND n > 1) OR xline IS NOT NULL OR hline IS NOT NULL OR xuid IS NOT NULL
            """).fetchall()
    except SCAN_ERRORS as exc:
        # A truncated gzip, an unreadable file (the transaction is aborted: no Python fallback here).
        drop_tables(con, json_tables.values())
        raise scan_error(exc, files) from exc
    if count_rejects(con, ((f"{tag}_{n}_err", f"{tag}_{n}_scan") for n in range(len(group_list)))):
        drop_tables(con, json_tables.values())
        return None  # invalid UTF-8 or an over-long line: Python replaces or reads it
    dup_uids: set[str] = set()
    uncertain: dict[int, set[str]] = {}
    for uid, xline, hline, xuid, lo, hi in rows:
        if hline is not None:
            where, _, line = str(hline).partition("\t")
            if line not in heads[int(where)].layout_lines:
                drop_tables(con, json_tables.values())
                return None  # the layout changes inside the file (JSON: see above)
        elif xline is not None:
            for fi in range(int(lo), int(hi) + 1):
                uncertain.setdefault(fi, set()).add(str(xline))
        elif xuid is not None:
            # An uncertain line's uid (JSON: all candidates, \x01-separated; a TSV uid never holds \x01,
            # and if it did, splitting it only sends more lines to Python): both to Python.
            dup_uids.update(str(xuid).split("\x01"))
        elif uid is not None:
            dup_uids.add(str(uid))
    pending: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
    if dup_uids or uncertain:
        for i in range(len(files)):
            pending[i] = (frozenset(uncertain.get(i, ())), frozenset(dup_uids))
    dup_table = None
    if dup_uids:
        dup_table = f"{tag}_dup"
        con.execute(f"CREATE TEMP TABLE {dup_table} (uid VARCHAR)")
        con.executemany(f"INSERT INTO {dup_table} VALUES (?)", [[u] for u in sorted(dup_uids)])
    relations = []
    for n, ((head, _gz), idx) in enumerate(group_list):
        where = "NOT hdr AND NOT uncertain"
        if dup_table is not None:
            where += f" AND (uid IS NULL OR uid NOT IN (SELECT uid FROM {dup_table}))"
        if head == _JSON_HEAD:
            sql = _json_sql(json_tables[n])
        else:
            sql = _parsed_sql(head, [files[i] for i in idx], idx, None)
        # file_index is the batch's file index (``fi``): every relation names all the batch's files.
        relations.append(StagedRelation(sql=_STAGE_SELECT + f" FROM ({sql}) WHERE {where}", files=list(files),
                                        time_unit=1_000_000, null_columns=_NULL_COLUMNS))
    temp = [*json_tables.values(), *([dup_table] if dup_table is not None else [])]
    if temp:
        relations[-1].after_scan = drop_after_scan(temp)
    return _Plan(relations=relations, merged=any(head == _JSON_HEAD for head, _gz in groups),
                 pending=pending, done_lines={})


# The fields a record's staging row depends on, by their SQL alias.
_USED = {"ts": "ts", "uid": "uid", "oh": "id.orig_h", "op": "id.orig_p", "rh": "id.resp_h", "rp": "id.resp_p",
         "proto": "proto", "ipp": "ip_proto", "state": "conn_state", "dur": "duration", "ob": "orig_ip_bytes",
         "rb": "resp_ip_bytes", "opk": "orig_pkts", "rpk": "resp_pkts"}


_TOO_LATE = "CAST(10 ** 30 AS HUGEINT)"  # microseconds far past 9999


# What str.strip() removes from an ASCII line (non-ASCII lines take the Python path anyway).
_BLANK = r"[\t\n\v\f\r \x1c-\x1f]*"


def _parsed_sql(head: _Head, files: Sequence[SourceFile], indexes: Sequence[int],
                rejects: tuple[str, str] | None) -> str:
    """Every non-blank line of ``files``: ``fi`` (batch file index), ``line``, ``hdr``, ``shape``,
    ``uncertain``, ``weird``, ``uid`` and, for record lines, the typed values and ``ok``.

    DuckDB's CSV reader splits the fields (n + 1 columns, padded with NULL: a line of the header's
    shape has column n - 1 and not column n); nothing is ever quoted or escaped in Zeek's TSV."""
    n = len(head.fields)
    pos = {name: i for i, name in enumerate(head.fields)}  # the last of a repeated name, as dict(zip())
    nulls = f"({sql_str(head.unset)}, {sql_str(head.empty)})"

    def v(name: str) -> str:
        if name not in pos:
            return "NULL::VARCHAR"
        return f"CASE WHEN c{pos[name]} IN {nulls} THEN NULL ELSE c{pos[name]} END"

    values = ", ".join(f"{v(field)} AS {alias}" for alias, field in _USED.items())

    def micros(x: str) -> str:
        # \d+(\.\d+)? as _micros reads it: exact, digits finer than microseconds cut (not rounded); a
        # whole part of more than 15 digits is past 9999 whatever it says (the sentinel fails the check).
        whole = f"split_part({x}, '.', 1)"
        return (f"CASE WHEN NOT regexp_full_match({x}, '[0-9]+(\\.[0-9]+)?') THEN NULL "
                f"WHEN strlen({whole}) > 15 THEN {_TOO_LATE} "
                f"ELSE CAST(CAST(left({x}, strlen({whole}) + 7) AS DECIMAL(22, 6)) * 1000000 AS HUGEINT) END")

    def count(x: str) -> str:
        return f"CASE WHEN regexp_full_match({x}, '[0-9]+') THEN TRY_CAST({x} AS HUGEINT) END"

    states = ", ".join(sql_str(s) for s in sorted(_STATES))
    protos = "CASE proto " + " ".join(f"WHEN {sql_str(p)} THEN {n_}" for p, n_ in sorted(_PROTOS.items())) + " END"
    max_us = MAX_EPOCH_SECONDS * 1_000_000
    mapping = ", ".join(str(i) for i in indexes)
    compression = "gzip" if files[0].gzip else "none"
    errors = "" if rejects is None else (f", store_rejects=true, rejects_table='{rejects[0]}', "
                                         f"rejects_scan='{rejects[1]}'")
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n + 1)) + "}"
    line = f"concat_ws({sql_str(head.separator)}, {', '.join(f'c{i}' for i in range(n + 1))})"
    ascii_used = " AND ".join(f"strlen(coalesce({a}, '')) = length(coalesce({a}, ''))" for a in _USED)
    # nullstr: a value no line has, so that an empty field is '' and a missing one NULL (padding).
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does with newline="".
    return f"""
SELECT *,
  coalesce(NOT hdr AND shape AND ts IS NOT NULL AND oh IS NOT NULL AND op IS NOT NULL AND rh IS NOT NULL
    AND rp IS NOT NULL AND proto IS NOT NULL AND state IN ({states})
    AND regexp_full_match(oh, '{IPV4_PATTERN}') AND regexp_full_match(rh, '{IPV4_PATTERN}')
    AND op_n <= 65535 AND rp_n <= 65535 AND proto_ok
    AND ts_us <= {max_us} AND (dur IS NULL OR dur_us IS NOT NULL) AND end_us <= {max_us}
    AND (ob IS NULL OR ob_n IS NOT NULL) AND (rb IS NULL OR rb_n IS NOT NULL)
    AND (opk IS NULL OR opk_n IS NOT NULL) AND (rpk IS NULL OR rpk_n IS NOT NULL), false) AS ok
FROM (
SELECT *, ts_us + coalesce(dur_us, 0) AS end_us,
  CASE WHEN ipp IS NOT NULL THEN ipp_n WHEN proto = 'unknown_transport' THEN NULL ELSE {protos} END AS proto_n,
  CASE WHEN ipp IS NOT NULL THEN coalesce(ipp_n <= 255, false)
    ELSE proto = 'unknown_transport' OR {protos} IS NOT NULL END AS proto_ok,
  CASE WHEN hdr OR NOT shape OR uncertain THEN {line} END AS line
FROM (
SELECT *, {micros('ts')} AS ts_us, {micros('dur')} AS dur_us, {count('op')} AS op_n, {count('rp')} AS rp_n,
  {count('ob')} AS ob_n, {count('rb')} AS rb_n, {count('opk')} AS opk_n, {count('rpk')} AS rpk_n,
  {count('ipp')} AS ipp_n,
  NOT hdr AND shape AND (NOT ({ascii_used}) OR contains(coalesce(ts, ''), 'T')
    OR contains(coalesce(oh, ''), ':') OR contains(coalesce(rh, ''), ':')
    OR strlen(coalesce(ob, '')) > 18 OR strlen(coalesce(rb, '')) > 18
    OR strlen(coalesce(opk, '')) > 18 OR strlen(coalesce(rpk, '')) > 18) AS uncertain
FROM (
SELECT *, {values}
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, *, starts_with(c0, '#') AS hdr,
  c{n - 1} IS NOT NULL AND c{n} IS NULL AS shape
FROM read_csv({sql_list(files)}, delim={sql_str(head.separator)}, header=false, quote='', escape='',
  auto_detect=false, columns={columns}, strict_mode=false, null_padding=true, nullstr='\x01\x02',
  compression='{compression}'{errors})
WHERE NOT ((c0 = '' OR ord(c0) <= 32) AND regexp_full_match({line}, '{_BLANK}'))
))))"""


# ``ok`` is referenced once: DuckDB inlines the expressions of the subqueries, so every further
# reference would evaluate the checks again. Values of bad rows are NULL or meaningless, and the
# store counts those rows as bad by their log-status alone.
_PORTLESS = (f"proto_n IN ({', '.join(str(p) for p in sorted(_ICMP))}) OR (proto_n IS NOT NULL AND proto_n NOT IN "
             f"({', '.join(str(p) for p in sorted(_PORTED))}))")
_STAGE_SELECT = f"""
SELECT TRY_CAST(ts_us AS UBIGINT) AS t_start, TRY_CAST(end_us AS UBIGINT) AS t_end, oh AS src_ip, rh AS dst_ip,
  CASE WHEN {_PORTLESS} THEN 0 ELSE TRY_CAST(op_n AS INTEGER) END AS src_port,
  CASE WHEN {_PORTLESS} THEN 0 ELSE TRY_CAST(rp_n AS INTEGER) END AS dst_port,
  TRY_CAST(proto_n AS INTEGER) AS proto, TRY_CAST(ob_n + rb_n AS UBIGINT) AS bytes,
  TRY_CAST(opk_n + rpk_n AS UBIGINT) AS packets,
  CASE state {' '.join(f"WHEN {sql_str(s)} THEN {sql_str(a)}" for s, a in sorted(_STATES.items()))} END AS action,
  NULL::INTEGER AS tcp_flags,
  CASE WHEN state NOT IN ({', '.join(sql_str(s) for s in sorted(_NO_HANDSHAKE))}) THEN false END AS is_reply,
  NULL::VARCHAR AS direction, NULL::VARCHAR AS src_workload, NULL::VARCHAR AS dst_workload,
  CASE WHEN ok THEN 'OK' ELSE '{_BAD_STATUS}' END AS log_status, fi::INTEGER AS file_index"""


# -- DuckDB fast path, JSON -------------------------------------------------------------------------
#
# A JSON conn.log (no header line) is read by DuckDB too, with a one-sided rule: SQL keeps a line only
# when it is certain that the Python parser reads it as the same good record. A line is certain when:
# - it is one flat JSON object in the strict grammar (RFC 8259) that Python's json module accepts
#   (``_FLAT_OBJECT``: no backslash, so a string's JSON text is its raw text; no nested object, so
#   ``_flatten`` changes nothing; no NaN / Infinity and no trailing comma, which DuckDB's JSON reader
#   accepts), and no key occurs twice (json.loads keeps the last, DuckDB's reader the first);
# - numbers are read from their text: Python reads a JSON fraction as Decimal (``parse_float``) and
#   _micros then reads ``str(Decimal)``, which switches to exponent form below 10^-6 ("0.0000001" is
#   "1E-7", a bad line): only fractions whose str() is their text are read in SQL; integers as
#   DuckDB gives them (exact up to 18 digits, which the patterns allow);
# - ISO ``ts`` values: read in SQL when their fields are in range (Python's datetime.fromisoformat).
# Other lines ("uncertain") are read by the Python parser, which reads them or reports them bad as
# before: a line that is not in the flat grammar by its text (it is not kept in SQL), a line in the
# grammar that fails a check here by sending the batch to Python (so that Python names its line and
# field; such lines are the rare bad ones). Uids: a kept line's uid is exact; an uncertain line
# contributes every ``"uid": "..."`` string on it (a superset of what Python reads), and a line with a
# backslash anywhere, whose uid SQL cannot know, sends the batch to Python.

_JWS = "[ \\t]*"  # JSON whitespace inside one line
_JSTR = '"[^"\\\\\\x00-\\x1f]*"'  # no escapes, no raw control characters (json.loads rejects them)
_JNUM = "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?"
_JSCALAR = f"({_JSTR}|{_JNUM}|true|false|null)"
_JVALUE = f"({_JSCALAR}|\\[{_JWS}({_JSCALAR}({_JWS},{_JWS}{_JSCALAR})*)?{_JWS}\\])"
_JPAIR = f"{_JSTR}{_JWS}:{_JWS}{_JVALUE}"
_FLAT_OBJECT = f"\\{{{_JWS}({_JPAIR}({_JWS},{_JWS}{_JPAIR})*)?{_JWS}\\}}"
# A number as _micros reads it from a JSON integer, a JSON fraction whose str(Decimal) is its text, or a
# string of ASCII digits (quotes included).
_JSECONDS = '0|[1-9][0-9]*|[1-9][0-9]*\\.[0-9]+|0\\.[0-9]{0,5}[1-9][0-9]*|"[0-9]+(\\.[0-9]+)?"'
_JCOUNT = '[0-9]{1,18}|"[0-9]{1,18}"'  # _count: a JSON integer or a string of digits (18: sums fit UBIGINT)
_ISO_SQL = ("[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            "(\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")


def _value(key: str) -> str:
    """A constant pattern: the raw value of the first occurrence of ``key`` on a _FLAT_OBJECT line (a string,
    a number or literal, or "[" for an array); the line is certain only when no used key is repeated."""
    return sql_str(f'"{re.escape(key)}"{_JWS}:{_JWS}("[^"]*"|[^,}}\\] \\t\\[]+|\\[)')


_JSON_KEYS = {"ts": "ts", "uid": "uid", "oh": "id.orig_h", "op": "id.orig_p", "rh": "id.resp_h",
              "rp": "id.resp_p", "proto": "proto", "ipp": "ip_proto", "state": "conn_state", "dur": "duration",
              "ob": "orig_ip_bytes", "rb": "resp_ip_bytes", "opk": "orig_pkts", "rpk": "resp_pkts"}


def _json_raw_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str]) -> str:
    """Every line of ``files`` (JSON), materialised (DuckDB inlines subquery columns, so every further
    reference to a value would extract it again): ``fi``, ``hdr`` ("#" line), ``unknown_uid``, ``odd``
    (NULL on a line of the flat grammar without a repeated key, else its ``line`` and ``xuids``), and the
    raw value ``j_<alias>`` of every used key (NULL when absent or null)."""
    # Values: strings and integers as DuckDB's JSON reader gives them (one parse per line; without
    # escapes a string's JSON text is its raw text), ``ts`` and ``duration`` from their raw text, as
    # Python reads a fraction's digits (DuckDB's reader rounds it to a double).
    paths = "[" + ", ".join(sql_str(f'$."{k}"') for k in _JSON_KEYS.values()) + "]"
    raw = ", ".join(f"nullif(nullif(regexp_extract(c0, {_value(_JSON_KEYS[a])}, 1), ''), 'null') AS j_{a}"
                    for a in ("ts", "dur"))
    # No key twice (json.loads keeps the last, DuckDB's reader and the patterns the first).
    no_repeat = "len(json_keys(c0)) = list_unique(json_keys(c0))"
    uid_any = sql_str(f'"uid"{_JWS}:{_JWS}"([^"]*)"')
    mapping = ", ".join(str(i) for i in indexes)
    compression = "gzip" if files[0].gzip else "none"
    # nullstr: a value no line has; a line with \x01 (the delimiter) has c1 and is uncertain, and its
    # uid unknown. DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does.
    return f"""
SELECT fi, starts_with(c0, '#') AS hdr, contains(c0, '\\') OR c1 IS NOT NULL AS unknown_uid,
  CASE WHEN c1 IS NULL AND regexp_full_match(c0, {sql_str(_FLAT_OBJECT)}) AND {no_repeat}
    THEN struct_pack(j := json_extract(c0, {paths})::VARCHAR[], line := NULL::VARCHAR, xuids := NULL::VARCHAR)
    ELSE struct_pack(j := NULL::VARCHAR[], line := c0,
      xuids := nullif(array_to_string(regexp_extract_all(c0, {uid_any}, 1), chr(1)), '')) END AS v, {raw}
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, c1
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{compression}', store_rejects=true, rejects_table='{rejects[0]}', rejects_scan='{rejects[1]}')
)"""


def _json_sql(table: str) -> str:
    """The lines of ``table`` (_json_raw_sql): its columns, ``uncertain`` (see above), ``uid`` and the
    values _STAGE_SELECT reads."""

    def text(a: str) -> str:  # a string value's content, else NULL
        return f"CASE WHEN starts_with(j_{a}, '\"') THEN substr(j_{a}, 2, strlen(j_{a}) - 2) END"

    def count(a: str) -> str:
        return (f"CASE WHEN regexp_full_match(j_{a}, {sql_str(_JCOUNT)}) "
                f"THEN CAST(replace(j_{a}, '\"', '') AS HUGEINT) END")

    def micros(x: str) -> str:  # as in _parsed_sql, on checked text (at most 15 digits before the point)
        whole = f"split_part({x}, '.', 1)"
        return (f"CASE WHEN strlen({whole}) > 15 THEN {_TOO_LATE} "
                f"ELSE CAST(CAST(left({x}, strlen({whole}) + 7) AS DECIMAL(22, 6)) * 1000000 AS HUGEINT) END")

    def seconds(a: str) -> str:
        unquoted = f"replace(j_{a}, chr(34), '')"
        return f"CASE WHEN regexp_full_match(j_{a}, {sql_str(_JSECONDS)}) THEN {micros(unquoted)} END"

    iso = text("ts")
    zone = f"right({iso}, 6)"
    iso_us = (f"CASE WHEN regexp_full_match({iso}, {sql_str(_ISO_SQL)}) AND TRY_CAST(left({iso}, 10) AS DATE) "
              f"IS NOT NULL THEN epoch_us(CAST(left({iso}, 19) AS TIMESTAMP)) "
              f"- CASE WHEN ends_with({iso}, 'Z') THEN 0 ELSE (CASE WHEN starts_with({zone}, '-') THEN -1 ELSE 1 END) "
              f"* (CAST(substr({zone}, 2, 2) AS BIGINT) * 3600 + CAST(substr({zone}, 5, 2) AS BIGINT) * 60) "
              f"* 1000000 END + CASE WHEN substr({iso}, 20, 1) = '.' THEN CAST(rpad(left(regexp_extract({iso}, "
              f"'\\.([0-9]+)', 1), 6), 6, '0') AS BIGINT) ELSE 0 END END")
    ts = (f"CASE WHEN regexp_full_match(j_ts, '[0-9]{{12,18}}') AND CAST(j_ts AS HUGEINT) >= {_MILLIS_FROM} "
          f"THEN CAST(j_ts AS HUGEINT) * 1000 WHEN contains(coalesce({iso}, ''), 'T') THEN {iso_us} "
          f"ELSE {seconds('ts')} END")
    states = ", ".join(sql_str(s) for s in sorted(_STATES))
    protos = "CASE " + text("proto") + " " + " ".join(
        f"WHEN {sql_str(p)} THEN {n_}" for p, n_ in sorted(_PROTOS.items())) + " END"
    max_us = MAX_EPOCH_SECONDS * 1_000_000
    # Every check of _record that a kept line must pass; NULL counts as failed.
    certain = f"""coalesce(flat AND j_ts IS NOT NULL AND j_op IS NOT NULL AND j_rp IS NOT NULL AND j_proto IS NOT NULL
    AND state IN ({states}) AND regexp_full_match(oh, '{IPV4_PATTERN}') AND regexp_full_match(rh, '{IPV4_PATTERN}')
    AND op_n <= 65535 AND rp_n <= 65535 AND proto_ok AND ts_us <= {max_us} AND ts_us >= 0
    AND (j_dur IS NULL OR dur_us IS NOT NULL) AND end_us <= {max_us}
    AND (j_ob IS NULL OR ob_n IS NOT NULL) AND (j_rb IS NULL OR rb_n IS NOT NULL)
    AND (j_opk IS NULL OR opk_n IS NOT NULL) AND (j_rpk IS NULL OR rpk_n IS NOT NULL), false)"""
    return f"""
SELECT *, true AS ok, NOT hdr AND NOT {certain} AS uncertain
FROM (
SELECT *, ts_us + coalesce(dur_us, 0) AS end_us,
  CASE WHEN j_ipp IS NOT NULL THEN ipp_n WHEN {text('proto')} = 'unknown_transport' THEN NULL
    ELSE {protos} END AS proto_n,
  CASE WHEN j_ipp IS NOT NULL THEN coalesce(ipp_n <= 255, false)
    ELSE {text('proto')} = 'unknown_transport' OR {protos} IS NOT NULL END AS proto_ok
FROM (
SELECT *, {ts} AS ts_us, CASE WHEN j_dur IS NOT NULL THEN {seconds('dur')} END AS dur_us,
  {count('op')} AS op_n, {count('rp')} AS rp_n, {count('ob')} AS ob_n, {count('rb')} AS rb_n,
  {count('opk')} AS opk_n, {count('rpk')} AS rpk_n, {count('ipp')} AS ipp_n,
  {text('state')} AS state, {text('oh')} AS oh, {text('rh')} AS rh, nullif({text('uid')}, '') AS uid
FROM (SELECT fi, hdr, unknown_uid, j_ts, j_dur, v.j IS NOT NULL AS flat, v.line AS line, v.xuids AS xuids,
  {', '.join(f"nullif(v.j[{i}], 'null') AS j_{a}" for i, a in enumerate(_JSON_KEYS, 1) if a not in ("ts", "dur"))}
  FROM {table})))"""
