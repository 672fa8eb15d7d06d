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
below), with the same checks as the Python parser, each file once; every line SQL is not certain of - a
bad one, or one SQL cannot decide exactly (non-ASCII text, ISO times, repeated uids, a layout that changes
inside a file) - is read by the Python parser, which names the line and field of every bad record; the
addresses of the lines SQL keeps are judged by the store, each distinct one once, with the parser's own
rule (canonical_ip), and a refused one is reported with the parser's line and field. JSON files are parsed by DuckDB too
("DuckDB fast path, JSON"): SQL keeps only the lines it is certain Python reads as the same good
record; other lines go to the Python parser one by one, and a line that SQL parsed but that fails a
check sends the batch to it. Tests assert that both paths give the same rows, counts and bad-line
reports.
"""

from __future__ import annotations

import functools
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
    canonical_ip,
    iter_lines,
    jsonline,
    missing_lines,
    sql_list,
    sql_str,
)
from microseg.sources.flows.sqlpath import (
    ADDRESS_PATTERN,
    SCAN_ERRORS,
    canonical_ipv6,
    count_rejects,
    drop_after_scan,
    drop_tables,
    exact_int_sql,
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
# A Zeek log's numbers are ASCII: re.ASCII, since \d (and int()) would take other digits too ("\u0661" is 1).
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", re.ASCII)
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
    try:
        return int(whole) * 1_000_000 + int(frac[:6].ljust(6, "0"))  # finer than microseconds is cut
    except ValueError:  # more digits than int() reads (4300): far past 9999 anyway
        raise _Bad(field, f"{text[:40]!r}... has too many digits") from None


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
    if isinstance(v, str) and v.isascii() and v.isdigit():  # ASCII: int() reads other digits too ("\u0661")
        try:
            return int(v)
        except ValueError:  # more than 4300 digits
            pass
    raise _Bad(field, f"{v[:40] if isinstance(v, str) else v!r} is not a count")


def _port(v: Any, field: str) -> int:
    p = _count(v, field)
    if p is None or p > 65535:
        raise _Bad(field, f"{v!r} is not a port")
    return p


def _ip(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise _Bad(field, f"{v!r} is not an IP address")
    ip = canonical_ip(v)
    if ip is None:
        raise _Bad(field, f"{v!r} is not an IP address")
    return ip


_MAX_COUNT = 2**64 - 1  # the store's bytes and packets are UBIGINT (Zeek's count is a uint64)


def _sum(a: int | None, b: int | None, field: str) -> int | None:
    """Both directions' count, or None when either is unknown; past UBIGINT it is a bad line, not a crash."""
    if a is None or b is None:
        return None
    if a + b > _MAX_COUNT:
        raise _Bad(field, f"{a} + {b} is past 2^64 - 1")
    return a + b


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
    nbytes = _sum(_count(rec.get("orig_ip_bytes"), "orig_ip_bytes"), _count(rec.get("resp_ip_bytes"), "resp_ip_bytes"),
                  "orig_ip_bytes")
    packets = _sum(_count(rec.get("orig_pkts"), "orig_pkts"), _count(rec.get("resp_pkts"), "resp_pkts"), "orig_pkts")
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
        # exact microseconds, no float rounding; a repeated key reads as its first occurrence, as in DuckDB
        obj = jsonline.loads(text, parse_float=Decimal)
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
    """The lines behind the records DuckDB counted as bad, with the field the Python parser names.

    A TSV line DuckDB kept can only be bad on an address (the store judges those; every other check was
    made in SQL), so a TSV line whose two addresses canonical_ip accepts (each distinct one judged once)
    is passed over without being parsed: a file with one refused address is not parsed in full."""
    out: list[BadLine] = []
    done = done_lines.get(src.path, set())
    verdicts: dict[str, bool] = {}

    def good(address: str, tsv: _Tsv) -> bool:
        verdict = verdicts.get(address)
        if verdict is None:
            verdict = verdicts[address] = address not in (tsv.unset, tsv.empty) and canonical_ip(address) is not None
        return verdict

    fields: list[str] | None = None
    at: tuple[int, int] | None = None  # the columns of id.orig_h and id.resp_h in ``fields``
    for no, text, tsv in _records(src):
        if no in done:
            continue  # read in Python already, and reported there
        if tsv is not None and tsv.fields is not None:
            if tsv.fields is not fields:
                fields = tsv.fields
                pos = {name: i for i, name in enumerate(fields)}  # the last of a repeated name, as _Tsv.record
                at = (pos["id.orig_h"], pos["id.resp_h"]) if "id.orig_h" in pos and "id.resp_h" in pos else None
            values = text.split(tsv.separator)
            if at is not None and len(values) == len(fields) and good(values[at[0]], tsv) and good(values[at[1]], tsv):
                continue
        try:
            _record(_parse_line(tsv, text), 0)
        except _Bad as bad:
            out.append(BadLine(file=str(src.path), line=no, field=bad.field, message=bad.message, text=text[:500]))
            if len(out) >= max_samples:
                break
    return out


# -- DuckDB fast path -----------------------------------------------------------------------------
#
# A TSV conn.log is parsed by DuckDB: every line split on the separator, typed and checked in SQL as
# _record does it in Python. SQL keeps only the lines it is certain Python reads as the same good record;
# what SQL cannot decide exactly goes through the Python path above:
# - a file whose header is not one block at the top, or changes inside the file (rotated logs
#   concatenated): the whole batch is read in Python (rare; exact order for duplicates); JSON files
#   have their own SQL (_json_sql) and rules, below;
# - every other line, line by line: bad ones (Python names line and field), and the ones SQL cannot
#   judge: non-ASCII text (Python reads it; in a number it is bad: a Zeek log's digits are ASCII), ISO
#   ``ts`` values, leading zeros, counts of more than 18 digits;
# - addresses are not judged line by line: the store judges every distinct address after aggregation with
#   canonical_ip - the Python parser's own rule (_ip), on the same text - and writes IPv6 as it writes them.
#   An address it refuses makes its aggregates' records bad lines (a line whose other fields are all good
#   fails in Python on its address alone), and locate_bad names them as the Python parser does; an
#   aggregate holds one spelling of each address, so no good line is ever counted with a bad one;
# - every line whose uid occurs more than once in the batch: which copy is kept depends on the order
#   of lines, which SQL does not see.
# Each group of files is scanned once, into a temporary table (see _plan); the store aggregates from it.

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
    """The DuckDB relations for the batch and the lines left to Python; None: all of it in Python.

    Each group of files (one TSV header, or JSON; plain or gzip) is read ONCE, into a temporary table of
    its parsed lines (``_parsed_sql`` / ``_json_sql``: the staging values, ``ok``, ``hdr``, ``batch``,
    ``line``, ``uid``); the checks below and the store's aggregation then read those tables, not the files.

    A TSV table first holds each line's uid as its 64-bit hash (narrower to keep and to group than the text):
    distinct hashes prove distinct uids, so a batch without a repeated hash has no repeated uid. When some
    hash repeats (a repeated uid, or two uids of one hash), the batch is planned again with the uids' text,
    which names the repeated ones exactly."""
    plan = _plan_once(con, files, staged, options, uid_text=False)
    if plan is _REPEATED_HASH:
        plan = _plan_once(con, files, staged, options, uid_text=True)
    assert plan is not _REPEATED_HASH
    return plan


def _plan_once(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], staged: Staged,
               options: ReaderOptions, uid_text: bool) -> _Plan | None:
    """_plan, with the TSV tables' uids as text (``uid_text``) or as hashes; _REPEATED_HASH: a hash repeats
    (the tables are dropped; plan again with the text)."""
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
    tables = [f"{tag}_{n}" for n in range(len(group_list))]
    rejects = [(f"{tag}_{n}_err", f"{tag}_{n}_scan") for n in range(len(group_list))]
    created: list[str] = []
    try:
        for n, ((head, _gz), idx) in enumerate(group_list):
            group = [files[i] for i in idx]
            sql = (_json_sql(group, idx, rejects[n]) if head == _JSON_HEAD
                   else _parsed_sql(head, group, idx, rejects[n], uid_text))
            con.execute(f"CREATE TEMP TABLE {tables[n]} AS {sql}")
            created.append(tables[n])
    except SCAN_ERRORS as exc:
        # A truncated gzip, an unreadable file (the transaction is aborted: no Python fallback here).
        drop_tables(con, created)
        raise scan_error(exc, files) from exc
    if count_rejects(con, rejects):
        drop_tables(con, created)
        return None  # invalid UTF-8 or an over-long line: Python replaces or reads it
    # The batch in Python: a JSON line that asks for it (see "DuckDB fast path, JSON"), or a TSV layout
    # line ("#separator" ...) that is not the header's: the layout changes inside the file.
    layout_line = " OR ".join(f"starts_with(line, {sql_str(k)})" for k in _LAYOUT_KEYS)
    checks = " UNION ALL ".join(
        f"(SELECT DISTINCT fi, line, batch FROM {t} WHERE batch OR (hdr AND ({layout_line})))" for t in tables)
    for fi, line, batch in con.execute(checks).fetchall():
        if batch or str(line) not in heads[int(fi)].layout_lines:
            drop_tables(con, created)
            return None
    # JSON: IPv6 addresses as canonical_ip writes them, so that the rows SQL read and those Python reads fold
    # together; one it refuses (none: the SQL pattern is its verdict) sends the batch to Python. (TSV: the
    # store judges and rewrites the addresses, see _parsed_sql.)
    for t, ((head, _gz), _idx) in zip(tables, group_list, strict=True):
        if head == _JSON_HEAD and canonical_ipv6(con, t, "ok", index="fi"):
            drop_tables(con, created)
            return None
    # Every uid seen more than once in the batch (which copy is kept depends on the order of lines, which SQL
    # does not see: Python reads them all), first by hash: none repeated, no uid repeated (the common case).
    if not uid_text and any(head != _JSON_HEAD for head, _gz in groups):
        hashes = " UNION ALL ".join(
            f"(SELECT hash(u) AS h FROM (SELECT unnest(uid) AS u FROM {t} WHERE NOT ok AND uid IS NOT NULL)) UNION ALL "
            f"(SELECT hash(uid1) FROM {t} WHERE ok AND uid1 IS NOT NULL)" if head == _JSON_HEAD
            else f"(SELECT uid AS h FROM {t} WHERE uid IS NOT NULL)"
            for t, ((head, _gz), _idx) in zip(tables, group_list, strict=True))
        if con.execute(f"SELECT h FROM ({hashes}) GROUP BY h HAVING count(*) > 1 LIMIT 1").fetchall():
            drop_tables(con, created)
            return _REPEATED_HASH
    # Lines SQL is not certain of (Python reads them).
    uncertain: dict[int, set[str]] = {}
    lines_sql = " UNION ALL ".join(f"(SELECT fi, line FROM {t} WHERE NOT hdr AND NOT ok)" for t in tables)
    for line, lo, hi in con.execute(f"SELECT line, min(fi), max(fi) FROM ({lines_sql}) GROUP BY line").fetchall():
        for fi in range(int(lo), int(hi) + 1):
            uncertain.setdefault(fi, set()).add(str(line))
    # A line DuckDB split unlike Python (CR CR LF, CR LF CR: DuckDB's line is none Python finds) would lose
    # the record after it, uncounted: such a batch goes to Python.
    if missing_lines([files[fi] for fi in sorted(uncertain)], set().union(*uncertain.values())):
        drop_tables(con, created)
        return None
    uids_sql = " UNION ALL ".join(f"(SELECT unnest(uid) AS u FROM {t} WHERE NOT ok AND uid IS NOT NULL)"
                                  if head == _JSON_HEAD else f"(SELECT uid AS u FROM {t} WHERE uid IS NOT NULL)"
                                  for t, ((head, _gz), _idx) in zip(tables, group_list, strict=True))
    json_ok = " UNION ALL ".join(f"(SELECT uid1 AS u FROM {t} WHERE ok AND uid1 IS NOT NULL)"
                                 for t, ((head, _gz), _idx) in zip(tables, group_list, strict=True)
                                 if head == _JSON_HEAD)
    if json_ok:
        uids_sql += " UNION ALL " + json_ok
    dup_uids: set[str] = set()
    if uid_text or all(head == _JSON_HEAD for head, _gz in groups):  # else: no hash repeats, no uid either
        dup_uids = {str(u) for (u,) in con.execute(
            f"SELECT u FROM ({uids_sql}) GROUP BY u HAVING count(*) > 1").fetchall()}
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
    for t, ((head, _gz), _idx) in zip(tables, group_list, strict=True):
        uid = "uid1" if head == _JSON_HEAD else "uid"
        where = "ok"
        if dup_table is not None:
            where += f" AND ({uid} IS NULL OR {uid} NOT IN (SELECT uid FROM {dup_table}))"
        # file_index is the batch's file index (``fi``): every relation names all the batch's files.
        relations.append(StagedRelation(sql=f"{_STAGE_SELECT} FROM {t} WHERE {where}", files=list(files),
                                        time_unit=1_000_000, null_columns=_NULL_COLUMNS))
    relations[-1].after_scan = drop_after_scan([*created, *([dup_table] if dup_table is not None else [])])
    return _Plan(relations=relations, merged=any(head == _JSON_HEAD for head, _gz in groups),
                 pending=pending, done_lines={})


# _plan_once: a uid hash repeats in the batch; plan again with the uids' text.
_REPEATED_HASH = _Plan(relations=[], merged=False, pending={}, done_lines={})

# The fields a record's staging row depends on, by their SQL alias.
_USED = {"ts": "ts", "uid": "uid", "oh": "id.orig_h", "op": "id.orig_p", "rh": "id.resp_h", "rp": "id.resp_p",
         "proto": "proto", "ipp": "ip_proto", "state": "conn_state", "dur": "duration", "ob": "orig_ip_bytes",
         "rb": "resp_ip_bytes", "opk": "orig_pkts", "rpk": "resp_pkts"}

# What str.strip() removes from an ASCII line (non-ASCII lines take the Python path anyway).
_BLANK = r"[\t\n\v\f\r \x1c-\x1f]*"
_MAX_US = MAX_EPOCH_SECONDS * 1_000_000
_NO_HANDSHAKE_SQL = ", ".join(sql_str(s) for s in sorted(_NO_HANDSHAKE))  # is_reply NULL (see the docstring)


def _micros_sql(x: str) -> str:
    """SQL: the text ``x`` (ASCII ``\\d+(\\.\\d+)?``, as _micros reads it) as integer microseconds, digits finer
    than microseconds cut (not rounded); NULL when it is not such a text, or has more than 12 digits before
    the point (past 9999 unless written with leading zeros, which Python reads: such lines go to Python).
    The common form, Zeek's six decimals, takes one regexp and one cast."""
    return (f"CASE WHEN regexp_full_match({x}, '[0-9]{{1,12}}\\.[0-9]{{6}}') "
            f"THEN CAST(replace({x}, '.', '') AS BIGINT) "
            f"WHEN regexp_full_match({x}, '[0-9]{{1,12}}(\\.[0-9]+)?') THEN CAST(split_part({x}, '.', 1) AS BIGINT) "
            f"* 1000000 + CAST(rpad(left(split_part({x} || '.', '.', 2), 6), 6, '0') AS BIGINT) END")


def _count_sql(x: str, digits: int = 18) -> str:
    """SQL: ``x`` when it is ASCII digits without leading zeros (at most ``digits`` of them: sums of two fit
    BIGINT), else NULL (leading zeros go to Python, which reads them). DuckDB's cast alone is lenient ("+5",
    " 5", "5.4", "1e2", "0x10", "1_000"); a text that is the cast's value written back is digits only."""
    n = exact_int_sql(x, "UBIGINT")  # no sign: a negative count is not plain digits
    return f"CASE WHEN {n} < {10 ** digits} THEN CAST({n} AS BIGINT) END"


def _action_sql(state: str) -> str:
    """SQL: the action of conn_state ``state``; NULL for a missing or unknown state."""
    whens = " ".join(f"WHEN {sql_str(s)} THEN {sql_str(a)}" for s, a in sorted(_STATES.items()))
    return f"CASE {state} {whens} END"


def _values_sql(proto: str) -> str:
    """SQL over ``ts_us``, ``dur_us``, ``ipp_n`` ... (aliases of _USED with ``_n`` / ``_us``): the record's
    protocol and end, and ``checked``: the checks of _record on them (NULL: failed). Zeek's one "icmp" is
    ICMPv6 (58) between IPv6 addresses, as _record reads it."""
    protos = f"CASE {proto} " + " ".join(f"WHEN {sql_str(p)} THEN {n_}" for p, n_ in sorted(_PROTOS.items())) + " END"
    return f"""ts_us + coalesce(dur_us, 0) AS end_us,
  CASE WHEN ipp IS NOT NULL THEN ipp_n WHEN {proto} = 'unknown_transport' THEN NULL
    WHEN {proto} = 'icmp' AND contains(oh, ':') THEN 58 ELSE {protos} END AS proto_n,
  (CASE WHEN ipp IS NOT NULL THEN ipp_n <= 255 ELSE {proto} = 'unknown_transport' OR {protos} IS NOT NULL END)
  AND {proto} IS NOT NULL AND op_n <= 65535 AND rp_n <= 65535 AND ts_us <= {_MAX_US}
  AND ts_us + coalesce(dur_us, 0) <= {_MAX_US}
  AND (dur IS NULL OR dur_us IS NOT NULL) AND (ob IS NULL OR ob_n IS NOT NULL) AND (rb IS NULL OR rb_n IS NOT NULL)
  AND (opk IS NULL OR opk_n IS NOT NULL) AND (rpk IS NULL OR rpk_n IS NOT NULL) AS checked"""


def _parsed_sql(head: _Head, files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str],
                uid_text: bool = True) -> str:
    """Every non-blank line of ``files`` (TSV): ``fi`` (batch file index), ``hdr`` ("#" line), ``ok`` (a record
    SQL is certain the Python parser reads as this same good record), ``line`` (the text of every other
    line), ``uid`` (its text, or with ``uid_text`` false its hash; NULL when unset or empty) and the staging
    values of the ``ok`` lines; ``batch`` is false (see _json_sql).

    DuckDB's CSV reader splits the fields (n + 1 columns, padded with NULL: a line of the header's shape has
    column n - 1 and not column n); nothing is ever quoted or escaped in Zeek's TSV. A line is ``ok`` only
    when every value passes an ASCII check that implies Python's (non-ASCII digits, ISO times, leading
    zeros, over-long numbers fail it), and both addresses are set (the store judges them: see above);
    every line that is not ``ok`` - a bad one, or one SQL cannot judge - is read by the Python parser, which
    reads it or names its line and field."""
    n = len(head.fields)
    pos = {name: i for i, name in enumerate(head.fields)}  # the last of a repeated name, as dict(zip())
    nulls = f"({sql_str(head.unset)}, {sql_str(head.empty)})"

    def v(name: str) -> str:
        if name not in pos:
            return "NULL::VARCHAR"
        return f"CASE WHEN c{pos[name]} IN {nulls} THEN NULL ELSE c{pos[name]} END"

    values = ", ".join(f"{v(field)} AS {alias}" for alias, field in _USED.items())
    mapping = ", ".join(str(i) for i in indexes)
    compression = "gzip" if files[0].gzip else "none"
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n + 1)) + "}"
    line = f"concat_ws({sql_str(head.separator)}, {', '.join(f'c{i}' for i in range(n + 1))})"
    # nullstr: a value no line has, so that an empty field is '' and a missing one NULL (padding).
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does with newline="".
    return f"""
SELECT fi, hdr, ok, false AS batch, CASE WHEN NOT ok THEN {line} END AS line,
  CASE WHEN NOT hdr AND uid <> '' THEN {'uid' if uid_text else 'hash(uid)'} END AS uid,
  ts_us AS t_start, end_us AS t_end, oh AS src_ip, rh AS dst_ip, op_n AS src_port, rp_n AS dst_port, proto_n AS proto,
  ob_n + rb_n AS bytes, opk_n + rpk_n AS packets, action, state NOT IN ({_NO_HANDSHAKE_SQL}) AS handshake
FROM (
SELECT *, coalesce(NOT hdr AND shape AND checked AND action IS NOT NULL AND op_n IS NOT NULL AND rp_n IS NOT NULL
  AND oh IS NOT NULL AND rh IS NOT NULL, false) AS ok
FROM (
SELECT *, {_values_sql('proto')}
FROM (
SELECT *, {_micros_sql('ts')} AS ts_us, {_micros_sql('dur')} AS dur_us, {_count_sql('op', 5)} AS op_n,
  {_count_sql('rp', 5)} AS rp_n, {_count_sql('ob')} AS ob_n, {_count_sql('rb')} AS rb_n, {_count_sql('opk')} AS opk_n,
  {_count_sql('rpk')} AS rpk_n, {_count_sql('ipp', 3)} AS ipp_n,
  {_action_sql('state')} AS action
FROM (
SELECT *, {values}
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, *, starts_with(c0, '#') AS hdr,
  c{n - 1} IS NOT NULL AND c{n} IS NULL AS shape
FROM read_csv({sql_list(files)}, delim={sql_str(head.separator)}, header=false, quote='', escape='',
  auto_detect=false, columns={columns}, strict_mode=false, null_padding=true, nullstr='\x01\x02',
  compression='{compression}', store_rejects=true, rejects_table='{rejects[0]}', rejects_scan='{rejects[1]}')
WHERE CASE WHEN c0 < '!' THEN NOT regexp_full_match({line}, '{_BLANK}') ELSE true END
)))))"""


# The staging columns of a group's table (its ``ok`` lines). ICMP "ports" and the ports of protocols
# without any are staged as 0.
_PORTLESS = (f"proto IN ({', '.join(str(p) for p in sorted(_ICMP))}) OR (proto IS NOT NULL AND proto NOT IN "
             f"({', '.join(str(p) for p in sorted(_PORTED))}))")
_STAGE_SELECT = f"""
SELECT CAST(t_start AS UBIGINT) AS t_start, CAST(t_end AS UBIGINT) AS t_end, src_ip, dst_ip,
  CAST(CASE WHEN {_PORTLESS} THEN 0 ELSE src_port END AS INTEGER) AS src_port,
  CAST(CASE WHEN {_PORTLESS} THEN 0 ELSE dst_port END AS INTEGER) AS dst_port,
  CAST(proto AS INTEGER) AS proto, CAST(bytes AS UBIGINT) AS bytes, CAST(packets AS UBIGINT) AS packets, action,
  NULL::INTEGER AS tcp_flags, CASE WHEN handshake THEN false END AS is_reply,
  NULL::VARCHAR AS direction, NULL::VARCHAR AS src_workload, NULL::VARCHAR AS dst_workload,
  'OK' AS log_status, fi::INTEGER AS file_index"""


# -- DuckDB fast path, JSON -------------------------------------------------------------------------
#
# A JSON conn.log (no header line) is read by DuckDB too: every line as one column, every used key
# extracted in one JSON parse. SQL keeps a line only when it is certain that the Python parser reads it as
# the same good record (``ok``). Repeated keys read the same on both paths (the first occurrence: jsonline).
# A line is "flat" when DuckDB parses it as an object and nothing on it can read differently in Python:
# - it starts with "{" and has no other "{" (no nested object, so _flatten changes nothing) and no
#   backslash (so a string's JSON text is its raw text, and the first ``"key"`` on the line is the key);
# - nothing DuckDB's JSON reader accepts and Python's json module rejects: a trailing comma, a nan / inf
#   literal in any case and with a sign (a superset: any value starting with "n" but not "nu", "N", "i",
#   "I", "+", or "-" and no digit; NaN and -Infinity included), an integer of more than 4300 digits
#   (Python's int() limit; a superset: any line longer than 4300 bytes). ``null`` and negative numbers are
#   read alike by both (``-0`` is 0 in both; DuckDB writes it "0"): a line with them in fields nothing
#   reads stays flat; a negative number in a field the record reads is left to the Python parser;
# - numbers are read from their text as Python reads them: a fraction is a Decimal, which _micros reads as
#   ``str(Decimal)`` - exponent form below 10^-6 ("0.0000001" is "1E-7", a bad line) - so only fractions
#   whose str() is their text are read in SQL (from the line itself, as DuckDB rounds them to a double);
#   integers as DuckDB gives them (exact up to 18 digits, which the patterns allow);
# - ISO ``ts`` values: read in SQL when their fields are in range (Python's datetime.fromisoformat).
# A line that is not flat is read by the Python parser, which reads it or reports it bad; a flat line that
# fails a check here, a "#" line (Python reads the lines after it as TSV) and a line whose uid SQL cannot
# know (a backslash) send the batch to Python (``batch``), so that Python names the line and field (such
# lines are the rare bad ones). Uids: an ``ok`` line's uid is exact (``uid1``); a line that is not ``ok``
# contributes every ``"uid": "..."`` string on it (``uid``, a superset of what Python reads).

_JWS = "[ \\t]*"  # JSON whitespace inside one line
# What DuckDB's JSON reader accepts and Python's json module rejects, on a flat line (which ends with its
# only "}"), as supersets: a trailing comma (",}" at the end; a blank before the final "}" counts as
# suspect; in an array: only lines with a "[" are searched); a value - after ":", or "[" / "," in an
# array - that is a nan / inf literal in any case or with a sign: starting with "n" not followed by "u"
# ("null" is the only such literal DuckDB accepts), "N", "i", "I", "+", or "-" not followed by a digit.
# (Searches that start at a ":" are fast: the regexp engine skips to the next one.)
_SUSPECT_VALUE = "(n[^u]|[NiI+]|-[^0-9])"
_NAN_INF = f":{_JWS}{_SUSPECT_VALUE}"
_ARRAY_LENIENT = f"[\\[,]{_JWS}{_SUSPECT_VALUE}|,{_JWS}\\]"
_MAX_FLAT = 4300  # bytes: a longer line may hold an integer of more digits than Python's int() reads
# A number as _micros reads it from a JSON integer or a JSON fraction whose str(Decimal) is its text.
_JSECONDS = "0|[1-9][0-9]*|[1-9][0-9]*\\.[0-9]+|0\\.[0-9]{0,5}[1-9][0-9]*"
_ISO_SQL = ("[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            "(\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
# The common form (Zeek's JSON::TS_ISO8601): UTC, at most microseconds; one checked cast.
_ISO_Z6 = ("[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
           "(\\.[0-9]{1,6})?Z")
_JSON_KEYS = _USED
_JSON_AS_TEXT = frozenset({"oh", "rh", "state", "proto", "op", "rp", "ob", "rb", "opk", "rpk", "ipp"})  # see _json_sql


def _quoted(name: str) -> str:
    """A SQL identifier (the used keys have no double quote)."""
    return '"' + name.replace('"', '""') + '"'


def _raw_number(key: str) -> str:
    """SQL: the JSON number text after the first ``"key"`` of a flat line (see above: it is the key's value
    there; only asked for when DuckDB read that value as a number), '' when that text is not a number.

    The whole line is searched (a literal first, which the regexp engine skips to): the number's text is
    never cut, so an exponent far after the point is seen as Python sees it."""
    k = f'"{key}"'
    return f"regexp_extract(c0, {sql_str(re.escape(k) + _JWS + ':' + _JWS + '(-?[0-9][0-9.eE+-]*)')}, 1)"


def _json_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str]) -> str:
    """Every non-blank line of ``files`` (JSON): ``fi``, ``hdr``, ``ok``, ``batch``, ``line`` (the text of a
    line that is not ``ok``), ``uid`` (its candidate uids), ``uid1`` (an ``ok`` line's uid) and the staging
    values of the ``ok`` lines, as _parsed_sql gives them."""
    # Every used key's value as JSON text, in one walk over the object: json_transform to a struct of JSON
    # fields reads the values json_extract does (same parser, the first of a repeated key, keys matched
    # exactly), at less than half the cost of one json_extract path per key.
    # The keys whose value Python reads only as a string (state, protocol, addresses) or as a count (an integer
    # or a string of digits, the same to _count) are read as VARCHAR: a string's content, any other value's JSON
    # text - never a state, protocol, address or digits that a JSON string or integer would not give as well
    # (reals are written with a "." or an exponent). ts, duration and uid, where a string and a number differ
    # to Python, stay JSON text.
    shape = sql_str(json.dumps({k: "VARCHAR" if a in _JSON_AS_TEXT else "JSON" for a, k in _JSON_KEYS.items()}))
    uid_any = sql_str(f'"uid"{_JWS}:{_JWS}"([^"]*)"')
    mapping = ", ".join(str(i) for i in indexes)
    compression = "gzip" if files[0].gzip else "none"

    def text(a: str) -> str:  # a string value's content (no escapes on a flat line), else NULL
        return f"CASE WHEN starts_with(j_{a}, '\"') THEN substr(j_{a}, 2, strlen(j_{a}) - 2) END"

    def count(a: str) -> str:  # _count: a JSON integer or a string of digits (18 at most: sums fit BIGINT)
        # The VARCHAR of a JSON integer or of a string of digits: first _count_sql's check that the text is its
        # value written back (cheaper than a pattern), then the digits with leading zeros (a string's).
        # (a string with leading zeros is read here: a flat line failing a check would send the batch to Python)
        return (f"CASE WHEN {_count_sql(f'j_{a}')} IS NOT NULL THEN {_count_sql(f'j_{a}')} "
                f"WHEN regexp_full_match(j_{a}, '[0-9]{{1,18}}') THEN CAST(j_{a} AS BIGINT) END")

    def number(a: str, key: str) -> str:
        # The value's text: a string's content; an integer as DuckDB gives it; a fraction or exponent form
        # from the line (DuckDB gives the double's shortest form: "1.50" is "1.5").
        return (f"CASE WHEN starts_with(j_{a}, '\"') THEN s_{a} WHEN regexp_full_match(j_{a}, '[0-9]+') THEN j_{a} "
                f"WHEN left(j_{a}, 1) BETWEEN '0' AND '9' THEN {_raw_number(key)} END")

    def seconds(a: str) -> str:  # n_<a>: a string of digits (as _micros) or a number in the _JSECONDS forms
        # Zeek's six decimals first, in one pattern: as a string it is what _micros reads; as a JSON number its
        # integer part has no leading zero (JSON), so str(Decimal) is the text itself (six decimals: no exponent).
        return (f"CASE WHEN regexp_full_match(n_{a}, '[0-9]{{1,12}}\\.[0-9]{{6}}') "
                f"THEN CAST(replace(n_{a}, '.', '') AS BIGINT) "
                f"WHEN CASE WHEN starts_with(j_{a}, '\"') THEN regexp_full_match(n_{a}, '[0-9]+(\\.[0-9]+)?') "
                f"ELSE regexp_full_match(n_{a}, {sql_str(_JSECONDS)}) END THEN {_micros_sql(f'n_{a}')} END")

    iso = "s_ts"
    zone = f"right({iso}, 6)"
    iso_us = (f"CASE WHEN regexp_full_match({iso}, {sql_str(_ISO_Z6)}) "
              f"THEN epoch_us(TRY_CAST(left({iso}, strlen({iso}) - 1) AS TIMESTAMP)) "
              f"WHEN regexp_full_match({iso}, {sql_str(_ISO_SQL)}) AND TRY_CAST(left({iso}, 10) AS DATE) "
              f"IS NOT NULL THEN epoch_us(CAST(left({iso}, 19) AS TIMESTAMP)) "
              f"- CASE WHEN ends_with({iso}, 'Z') THEN 0 ELSE (CASE WHEN starts_with({zone}, '-') THEN -1 ELSE 1 END) "
              f"* (CAST(substr({zone}, 2, 2) AS BIGINT) * 3600 + CAST(substr({zone}, 5, 2) AS BIGINT) * 60) "
              f"* 1000000 END + CASE WHEN substr({iso}, 20, 1) = '.' THEN CAST(rpad(left(regexp_extract({iso}, "
              f"'\\.([0-9]+)', 1), 6), 6, '0') AS BIGINT) ELSE 0 END END")
    # ISO first (Zeek's JSON::TS_ISO8601, the common form); a string is never the millisecond integer
    ts = (f"CASE WHEN contains(coalesce(s_ts, ''), 'T') THEN {iso_us} "
          f"WHEN regexp_full_match(j_ts, '[0-9]{{12,15}}') AND TRY_CAST(j_ts AS BIGINT) >= {_MILLIS_FROM} "
          f"THEN TRY_CAST(j_ts AS BIGINT) * 1000 ELSE {seconds('ts')} END")
    extracted = ", ".join(
        (f"j.{_quoted(k)}" if a in _JSON_AS_TEXT else f"nullif(CAST(j.{_quoted(k)} AS VARCHAR), 'null')") + f" AS j_{a}"
        for a, k in _JSON_KEYS.items())
    strings = ", ".join(f"{text(a)} AS s_{a}" for a in ("ts", "dur", "uid"))
    # a negative number where the record reads a value: the Python parser reads the line (a bad one)
    negative = " OR ".join(f"starts_with(j_{a}, '-')" for a in _JSON_KEYS)
    ends = " OR ".join(f"ends_with(c0, {sql_str(end)})" for end in (",}", " }", "\t}"))  # "\t": a tab
    lenient = (f"{ends} OR regexp_matches(c0, {sql_str(_NAN_INF)}) "
               f"OR CASE WHEN contains(c0, '[') THEN regexp_matches(c0, {sql_str(_ARRAY_LENIENT)}) END OR {negative}")
    # nullstr: a value no line has; a line with \x01 (the delimiter) has c1, and its uid is unknown.
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does.
    return f"""
SELECT fi, hdr, ok, hdr OR unknown_uid OR (flat AND NOT ok) AS batch, CASE WHEN NOT ok THEN c0 END AS line,
  CASE WHEN NOT ok AND NOT hdr AND NOT unknown_uid
    THEN list_filter(regexp_extract_all(c0, {uid_any}, 1), lambda u: u <> '') END AS uid,
  CASE WHEN ok THEN nullif(s_uid, '') END AS uid1,
  ts_us AS t_start, end_us AS t_end, oh AS src_ip, rh AS dst_ip, op_n AS src_port, rp_n AS dst_port, proto_n AS proto,
  ob_n + rb_n AS bytes, opk_n + rpk_n AS packets, action, state NOT IN ({_NO_HANDSHAKE_SQL}) AS handshake
FROM (
SELECT *, coalesce(flat AND checked AND action IS NOT NULL AND op_n IS NOT NULL AND rp_n IS NOT NULL
  AND ts_us >= 0 AND regexp_full_match(oh, '{ADDRESS_PATTERN}') AND regexp_full_match(rh, '{ADDRESS_PATTERN}'),
  false) AS ok
FROM (
SELECT *, {_values_sql('proto')}
FROM (
SELECT *, {ts} AS ts_us, CASE WHEN dur IS NOT NULL THEN {seconds('dur')} END AS dur_us,
  {count('op')} AS op_n, {count('rp')} AS rp_n, {count('ob')} AS ob_n, {count('rb')} AS rb_n,
  {count('opk')} AS opk_n, {count('rpk')} AS rpk_n, {count('ipp')} AS ipp_n, {_action_sql('state')} AS action
FROM (
SELECT *, {number('ts', 'ts')} AS n_ts, {number('dur', 'duration')} AS n_dur
FROM (
SELECT *, j_dur AS dur, j_ob AS ob, j_rb AS rb, j_opk AS opk, j_rpk AS rpk, j_ipp AS ipp, j_state AS state, j_oh AS oh,
  j_rh AS rh, j_proto AS proto,
  j IS NOT NULL AND starts_with(c0, '{{') AND ends_with(c0, '}}') AND NOT contains(substr(c0, 2), '{{')
    AND strlen(c0) <= {_MAX_FLAT}
    AND j_ts IS NOT NULL AND j_op IS NOT NULL AND j_rp IS NOT NULL AND j_proto IS NOT NULL
    AND NOT coalesce({lenient}, false) AS flat
FROM (
SELECT *, {strings}
FROM (
SELECT *, {extracted}
FROM (
SELECT *, CASE WHEN NOT hdr AND NOT unknown_uid THEN TRY(json_transform(c0, {shape})) END AS j
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, starts_with(c0, '#') AS hdr,
  contains(c0, '\\') OR c1 IS NOT NULL AS unknown_uid
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{compression}', store_rejects=true, rejects_table='{rejects[0]}', rejects_scan='{rejects[1]}')
WHERE CASE WHEN c0 < '!' THEN NOT regexp_full_match(c0, '{_BLANK}') ELSE true END
)))))))))"""
