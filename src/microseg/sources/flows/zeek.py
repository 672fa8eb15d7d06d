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
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    ReaderOptions,
    SourceFile,
    Staged,
    StageRow,
    StageWriter,
    iter_lines,
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
    del con  # everything is parsed in Python and bulk-loaded through the staging file
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    seen: set[str] = set()
    try:
        for index, src in enumerate(files):
            try:
                _stage_file(src, index, writer, staged, options, seen)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1_000_000)
    relation.null_columns = frozenset({"tcp_flags", "direction", "src_workload", "dst_workload"})
    staged.relations.append(relation)
    # Every check the store repeats after aggregation has been made here already.
    staged.locate_bad = lambda _src: []
    return staged


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


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                seen: set[str]) -> None:
    tsv: _Tsv | None = None
    for no, text in iter_lines(src):
        if not text.strip():
            continue
        if text.startswith("#"):
            if tsv is None:
                tsv = _Tsv()
            tsv.header(text)  # #close, #open, #path, #types carry nothing a record needs
            continue
        try:
            if tsv is not None:
                rec = tsv.record(text)
            else:
                try:
                    obj = json.loads(text, parse_float=Decimal)  # exact microseconds, no float rounding
                except (ValueError, InvalidOperation) as exc:
                    raise _Bad("json", f"invalid JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise _Bad("json", "not a JSON object")
                rec = _flatten(obj)
            row = _record(rec, index)
            uid = rec.get("uid")
            if isinstance(uid, str) and uid:
                if uid in seen:
                    staged.skipped[(src.path, "duplicate-uid")] += 1
                    continue
                seen.add(uid)
            writer.write(row)
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
