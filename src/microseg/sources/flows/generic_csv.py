"""A generic CSV of flows whose columns are named by a header line (format name ``csv``).

For exporters microseg has no dedicated reader: write the flows as comma-separated values (RFC 4180
quoting) with a header line naming the columns. A CSV file alone does not say what its columns
mean, so the header is the mapping: the first non-blank line must name every column with one of
the names below (case-insensitive, any order; ``-`` and spaces count as ``_``). Only the header
form is supported: :class:`ReaderOptions` has no slot for an explicit column mapping, so rename
the columns instead.

================ ======== ==========================================================================
column           required aliases and values
================ ======== ==========================================================================
``src_ip``       yes      ``srcaddr``, ``src_addr``, ``source_ip``, ``saddr``: IPv4 or IPv6 address
``dst_ip``       yes      ``dstaddr``, ``dst_addr``, ``destination_ip``, ``daddr``
``dst_port``     yes      ``dstport``, ``destination_port``, ``dport``: 0-65535; may be empty for
                          protocols without ports (ICMP etc., stored as 0)
``protocol``     yes      ``proto``: an IANA protocol number (0-255) or one of the names tcp, udp,
                          icmp, icmpv6 (``ipv6-icmp``), sctp, gre, esp, ah
``src_port``     no       ``srcport``, ``source_port``, ``sport``; empty = unknown
``start``        no       ``start_time``, ``timestamp``, ``time``, ``ts``
``end``          no       ``end_time``; a record with only one of the two uses it for both
``bytes``        no       ``octets``: a non-negative integer; empty = unknown
``packets``      no       ``pkts``
``action``       no       allow / accept / permit -> accept; deny / drop / block -> drop;
                          reject -> reject; audit -> audit
``direction``    no       ingress / inbound / in -> ingress; egress / outbound / out -> egress
``src_workload`` no       an identity hint (``namespace/name`` or a host name); empty = none
``dst_workload`` no       likewise for the destination
``x_...``        no       any column whose name starts with ``x_`` is ignored (keep your own fields)
================ ======== ==========================================================================

Times are epoch seconds (fractions allowed), epoch milliseconds (an integer of 12 or more digits:
100000000000 s would be the year 5138, so the two cannot be confused for real logs) or ISO 8601
(``2026-01-02T03:04:05.5Z``); an ISO time without a zone is read as UTC.

Fail closed. A header with an unknown or repeated column, or without a required column, is an
error for the whole file (nothing of it is read); auto-detection claims a file only when its first
line is such a complete header, so a CSV of another exporter is never misread as this one. A data
line with the wrong number of fields or a value that cannot be read - including an unknown or
empty action - is a bad line, reported with file:line and the column's canonical name. Without an
``action`` column every record is *observed traffic*, which a flow exporter only sees when it was
delivered: accept. One record is one physical line (a quoted field cannot span lines).

Replies: the format does not say which side opened the connection, so ``is_reply`` stays unknown
and the mapping orients each record by its ports (the server port is the one below the ephemeral
range); give one record per connection, client to server, where the exporter can.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    ReaderOptions,
    SourceFile,
    Staged,
    StageRow,
    StageWriter,
    iter_lines,
)

NAME = "csv"

_ALIASES: dict[str, tuple[str, ...]] = {
    "src_ip": ("srcaddr", "src_addr", "source_ip", "saddr"),
    "dst_ip": ("dstaddr", "dst_addr", "destination_ip", "daddr"),
    "src_port": ("srcport", "source_port", "sport"),
    "dst_port": ("dstport", "destination_port", "dport"),
    "protocol": ("proto",),
    "start": ("start_time", "timestamp", "time", "ts"),
    "end": ("end_time",),
    "bytes": ("octets",),
    "packets": ("pkts",),
    "action": (),
    "direction": (),
    "src_workload": (),
    "dst_workload": (),
}
_CANONICAL: dict[str, str] = {alias: name for name, aliases in _ALIASES.items() for alias in (name, *aliases)}
REQUIRED = frozenset({"src_ip", "dst_ip", "dst_port", "protocol"})
_IGNORED_PREFIX = "x_"

# IANA "Assigned Internet Protocol Numbers" (protocol-numbers registry) for the names accepted.
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "gre": 47,
              "esp": 50, "ah": 51}
_PORTED = frozenset({6, 17, 132})  # TCP, UDP, SCTP carry ports
_ACTIONS = {"allow": "accept", "accept": "accept", "permit": "accept", "deny": "drop", "drop": "drop",
            "block": "drop", "reject": "reject", "audit": "audit"}
ACTIONS = {"accept": "accept", "drop": "drop", "reject": "reject", "audit": "audit"}
_DIRECTIONS = {"ingress": "ingress", "inbound": "ingress", "in": "ingress",
               "egress": "egress", "outbound": "egress", "out": "egress"}
_EPOCH_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_MS_THRESHOLD = 100_000_000_000  # 12+ digits: milliseconds (see the module docstring)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Bad(Exception):
    """A line that cannot be read; carries the column for the report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _split(text: str) -> list[str]:
    """One physical line as CSV fields (RFC 4180 quoting via the csv module)."""
    return next(csv.reader([text], strict=True))


def _column_name(raw: str) -> str:
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def header_columns(fields: list[str]) -> tuple[list[str | None], str | None]:
    """Canonical name per column (None = ignored ``x_`` column) and the first problem, if any."""
    out: list[str | None] = []
    seen: set[str] = set()
    for raw in fields:
        name = _column_name(raw)
        if name.startswith(_IGNORED_PREFIX) and len(name) > len(_IGNORED_PREFIX):
            out.append(None)
            continue
        canonical = _CANONICAL.get(name)
        if canonical is None:
            return out, f"unknown column {raw.strip()!r} (name it as documented, or prefix it with x_)"
        if canonical in seen:
            return out, f"column {raw.strip()!r} repeats {canonical!r}"
        seen.add(canonical)
        out.append(canonical)
    missing = sorted(REQUIRED - seen)
    if missing:
        return out, f"missing required column(s): {', '.join(missing)}"
    return out, None


def sniff(head: list[str]) -> bool:
    if not head or "," not in head[0]:
        return False
    try:
        fields = _split(head[0])
    except csv.Error:
        return False
    return header_columns(fields)[1] is None


def _int(v: str, field: str, limit: int | None = None) -> int:
    if not v.isdigit() or not v.isascii():
        raise _Bad(field, f"{v!r} is not a non-negative integer")
    n = int(v)
    if limit is not None and n > limit:
        raise _Bad(field, f"{n} is out of range (0-{limit})")
    return n


def _ip(v: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise _Bad(field, f"{v!r} is not an IP address") from None


def _protocol(v: str) -> int:
    if v.isdigit():
        return _int(v, "protocol", 255)
    number = _PROTOCOLS.get(v.lower())
    if number is None:
        raise _Bad("protocol", f"unknown protocol {v!r}")
    return number


def time_us(v: str, field: str) -> int:
    """Microseconds since the epoch of an epoch-seconds, epoch-milliseconds or ISO 8601 value."""
    if m := _EPOCH_NUMBER.fullmatch(v):
        whole, frac = m.groups()
        if int(whole) >= _MS_THRESHOLD:
            if frac is not None:
                raise _Bad(field, f"{v!r}: milliseconds with a fraction")
            return int(whole) * 1000
        return int(whole) * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise _Bad(field, f"{v!r} is neither epoch seconds/milliseconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # documented: a time without a zone is UTC
    delta = dt - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if us < 0:
        raise _Bad(field, f"{v!r} is before 1970")
    return us


def _hint(v: str, field: str) -> str | None:
    if not v:
        return None
    if any(c.isspace() for c in v):
        raise _Bad(field, f"{v!r} is not a workload name")
    return v


def _record(values: dict[str, str], file_index: int) -> StageRow:
    def opt(name: str) -> str:
        return values.get(name, "").strip()

    src, dst = _ip(opt("src_ip"), "src_ip"), _ip(opt("dst_ip"), "dst_ip")
    proto = _protocol(opt("protocol"))
    dport_text = opt("dst_port")
    if dport_text:
        dport = _int(dport_text, "dst_port", 65535)
    elif proto in _PORTED:
        raise _Bad("dst_port", "missing destination port")
    else:
        dport = 0
    sport_text = opt("src_port")
    sport = _int(sport_text, "src_port", 65535) if sport_text else (None if proto in _PORTED else 0)
    start = time_us(opt("start"), "start") if opt("start") else None
    end = time_us(opt("end"), "end") if opt("end") else None
    if start is not None and end is not None and end < start:
        raise _Bad("end", "end is before start")
    if "action" in values:
        raw = opt("action")
        action = _ACTIONS.get(raw.lower())
        if action is None:
            raise _Bad("action", f"unknown or empty action {raw!r}")
    else:
        action = "accept"  # observed traffic (see the module docstring)
    direction: str | None = None
    if raw_dir := opt("direction"):
        direction = _DIRECTIONS.get(raw_dir.lower())
        if direction is None:
            raise _Bad("direction", f"unknown direction {raw_dir!r}")
    return StageRow(
        t_start=start if start is not None else end, t_end=end if end is not None else start,
        src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
        bytes=_int(opt("bytes"), "bytes") if opt("bytes") else None,
        packets=_int(opt("packets"), "packets") if opt("packets") else None,
        action=action, tcp_flags=None, is_reply=None, direction=direction,
        src_workload=_hint(opt("src_workload"), "src_workload"),
        dst_workload=_hint(opt("dst_workload"), "dst_workload"), log_status="OK", file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    del con  # parsed in Python and bulk-loaded through the staging file
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    try:
        for index, src in enumerate(files):
            try:
                _stage_file(src, index, writer, staged, options)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    staged.relations.append(writer.relation(list(files), time_unit=1_000_000))
    # Every check the store repeats after aggregation has been made here already.
    staged.locate_bad = lambda _src: []
    return staged


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
    columns: list[str | None] | None = None
    for no, text in iter_lines(src):
        if not text.strip():
            continue
        if columns is None:
            try:
                fields = _split(text)
            except csv.Error as exc:
                raise InputError(f"header is not valid CSV: {exc}", file=str(src.path), line=no) from None
            columns, problem = header_columns(fields)
            if problem is not None:
                # Fail closed: without a complete header no column of the file can be trusted.
                raise InputError(f"header: {problem}", file=str(src.path), line=no, field="header")
            continue
        try:
            try:
                fields = _split(text)
            except csv.Error as exc:
                raise _Bad("csv", f"invalid CSV: {exc}") from None
            if len(fields) != len(columns):
                raise _Bad("columns", f"{len(fields)} fields, the header names {len(columns)}")
            values = {name: v for name, v in zip(columns, fields, strict=True) if name is not None}
            writer.write(_record(values, index))
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
