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
(``2026-01-02T03:04:05.5Z``); an ISO time without a zone is read as UTC. A time after
9999-12-31T23:59:59Z, or a ``bytes`` / ``packets`` count beyond 2^64 - 1, is a bad line (the store's
limits; sums of counts beyond its BIGINT saturate there).

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

Reading. Files with a complete header are parsed by DuckDB (see "DuckDB fast path" below) with the
same checks as the Python parser; lines SQL cannot decide exactly (quoted fields, non-ASCII text, ISO
times) are read by the Python parser, which also names the line and column of every bad record. A
test asserts that both paths give the same rows, counts and bad-line reports.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    BadLine,
    ReaderOptions,
    Scanned,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    canonical_ip,
    iter_lines,
    sql_list,
    sql_str,
)
from microseg.sources.flows.sqlpath import (
    ADDRESS_PATTERN,
    address_sql,
    count_rejects,
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
# The store's limits: a time after 9999-12-31T23:59:59Z is bad there too (for the readers it aggregates
# unchecked, per aggregate); a counter is staged as a UBIGINT (sums saturate in the store, a value that
# does not fit fails the read of the staging file). Here each is one bad line.
_MAX_US = MAX_EPOCH_SECONDS * 1_000_000
_UBIGINT_MAX = (1 << 64) - 1
_MAX_DIGITS = 20  # digits of _UBIGINT_MAX: a number of more (leading zeros aside) is out of every range
_TOO_BIG_NUMBER = 10 ** _MAX_DIGITS  # stands for it: int() of thousands of digits is slow, past 4300 refused


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


def _shown(v: str) -> str:
    """``v`` for a message: a hostile value may have thousands of digits."""
    return repr(v) if len(v) <= 40 else f"{v[:30]!r}... ({len(v)} characters)"


def _number(digits: str) -> int:
    """int() of ASCII digits, _TOO_BIG_NUMBER for one of more than _MAX_DIGITS (leading zeros aside)."""
    return int(digits) if len(digits.lstrip("0")) <= _MAX_DIGITS else _TOO_BIG_NUMBER


def _int(v: str, field: str, limit: int = _UBIGINT_MAX) -> int:
    if not v.isdigit() or not v.isascii():
        raise _Bad(field, f"{_shown(v)} is not a non-negative integer")
    n = _number(v)
    if n > limit:
        raise _Bad(field, f"{n if n < _TOO_BIG_NUMBER else _shown(v)} is out of range (0-{limit})")
    return n


def _ip(v: str, field: str) -> str:
    ip = canonical_ip(v)
    if ip is None:
        raise _Bad(field, f"{v!r} is not an IP address")
    return ip


def _protocol(v: str) -> int:
    if v.isdigit():
        return _int(v, "protocol", 255)
    number = _PROTOCOLS.get(v.lower())
    if number is None:
        raise _Bad("protocol", f"unknown protocol {v!r}")
    return number


def time_us(v: str, field: str) -> int:
    """Microseconds since the epoch of an epoch-seconds, epoch-milliseconds or ISO 8601 value, at most
    9999-12-31T23:59:59Z (the store's limit)."""
    if m := _EPOCH_NUMBER.fullmatch(v):
        whole, frac = m.groups()
        n = _number(whole)
        if n >= _MS_THRESHOLD:
            if frac is not None:
                raise _Bad(field, f"{_shown(v)}: milliseconds with a fraction")
            us = n * 1000
        else:
            us = n * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
    else:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise _Bad(field, f"{_shown(v)} is neither epoch seconds/milliseconds nor ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # documented: a time without a zone is UTC
        delta = dt - _EPOCH
        us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        if us < 0:
            raise _Bad(field, f"{v!r} is before 1970")
    if us > _MAX_US:
        raise _Bad(field, f"{_shown(v)} is after 9999-12-31T23:59:59Z")
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
        bytes=_int(opt("bytes"), "bytes") if opt("bytes") else None,  # at most _UBIGINT_MAX
        packets=_int(opt("packets"), "packets") if opt("packets") else None,
        action=action, tcp_flags=None, is_reply=None, direction=direction,
        src_workload=_hint(opt("src_workload"), "src_workload"),
        dst_workload=_hint(opt("dst_workload"), "dst_workload"), log_status="OK", file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset({_UNCERTAIN}))
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    try:
        plan = _plan(con, files, staged)
        for relation, indexes, rejects, exact in plan.scans:
            relation.after_scan = functools.partial(_after_scan, files=files, indexes=indexes, rejects=rejects,
                                                    staged=staged, options=options, plan=plan, exact=exact)
        for index, src in enumerate(files):
            if index in plan.python:
                plan.whole.add(src.path)
                _stage_whole(src, index, writer, staged, options)
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    staged.relations.append(writer.relation(list(files), time_unit=1_000_000))
    staged.relations[:0] = plan.relations
    # Lines DuckDB found bad are named by the Python parser; lines read in Python were reported there.
    # A file read wholly in Python was reported there (were the store ever to refuse a record the reader
    # accepted - the two share canonical_ip now - there would be no bad line to name). ``whole`` grows
    # while the store scans (see _after_scan); locate_bad runs after every scan.
    staged.locate_bad = functools.partial(_locate_bad, done_lines=plan.done_lines, whole=plan.whole,
                                          max_samples=options.max_samples)
    return staged


def _stage_whole(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                 only: frozenset[str] | None = None, done_lines: set[int] | None = None) -> None:
    try:
        if only is None:
            _stage_file(src, index, writer, staged, options)
        else:
            _stage_file(src, index, writer, staged, options, only, done_lines)
    except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
        raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc


def _records(src: SourceFile, only: frozenset[str] | None = None
             ) -> Iterator[tuple[int, str, list[str | None]]]:
    """(line number, text, columns) of every record line; the header (the first non-blank line) is
    checked here. With ``only``, every other record line is passed over unread (see ``_plan``)."""
    columns: list[str | None] | None = None
    for no, text in iter_lines(src):
        if columns is not None and only is not None and text not in only:
            continue
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
        yield no, text, columns


def _parse(text: str, columns: list[str | None], index: int) -> StageRow:
    try:
        fields = _split(text)
    except csv.Error as exc:
        raise _Bad("csv", f"invalid CSV: {exc}") from None
    if len(fields) != len(columns):
        raise _Bad("columns", f"{len(fields)} fields, the header names {len(columns)}")
    values = {name: v for name, v in zip(columns, fields, strict=True) if name is not None}
    return _record(values, index)


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                only: frozenset[str] | None = None, done_lines: set[int] | None = None) -> None:
    """Reads ``src`` in Python; with ``only``, just the lines with those texts (DuckDB reads the rest)."""
    for no, text, columns in _records(src, only):
        if done_lines is not None:
            done_lines.add(no)
        try:
            writer.write(_parse(text, columns, index))
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)


def _locate_bad(src: SourceFile, done_lines: dict[Path, set[int]], whole: Collection[Path],
                max_samples: int) -> list[BadLine]:
    """The lines behind the records DuckDB counted as bad, with the column the Python parser names."""
    out: list[BadLine] = []
    if src.path in whole:
        return out
    done = done_lines.get(src.path, set())
    for no, text, columns in _records(src):
        if no in done:
            continue  # read in Python already, and reported there
        try:
            _parse(text, columns, 0)
        except _Bad as bad:
            out.append(BadLine(file=str(src.path), line=no, field=bad.field, message=bad.message, text=text[:500]))
            if len(out) >= max_samples:
                break
    return out


# -- DuckDB fast path -----------------------------------------------------------------------------
#
# A file whose header (read here, in Python) is complete is parsed by DuckDB: split at commas, every
# field typed and checked in SQL exactly as _record does it in Python (addresses with the shared
# patterns of what ipaddress accepts); a value is judged as read first and stripped only when that
# fails (see _stage_sql). Lines SQL cannot decide exactly are "uncertain" and read by the Python
# parser: a double quote (RFC 4180 quoting is the csv module's), a NUL, non-ASCII text (Python's strip,
# isdigit and lower know more than ASCII), and a start or end that is not epoch seconds/milliseconds
# (datetime.fromisoformat's ISO 8601 forms). One scan, inside the store's aggregation: the scan marks
# them (a log-status of their own, their text joined back from DuckDB's split) and _after_scan takes
# them out of the store's aggregates and reads them in Python, by their text. A line the checks refuse
# is tested whole, as it was; a line they accept can only hold these in the fields they do not check,
# which alone are tested (see _stage_sql). DuckDB skips the lines up to the header. A file with an
# uncertain line of more fields than the header has plus one (the split cuts it: its text is not the
# line's), with a line DuckDB rejects (invalid UTF-8, an over-long line) or without a valid header is
# read in Python (which reports a bad header as the InputError it is). A line of more fields whose
# uncertain text is only in what the split cut is bad on both paths (Python has at least one field too
# many, or a CSV error). Bad lines stay in the relation with a log-status the store counts as bad;
# locate_bad re-reads such a file to name line and column.

_BAD_STATUS = "(bad)"
# address_sql as one pattern, for the raw values of every row: one match instead of a test for ':' and a
# match (every IPv6 form has a ':', no IPv4 one has), measurably cheaper; the same addresses.
_HEAD_LINES = 64
_NULLSTR = "\n"  # a value no field has (lines end there): an empty field is '', a missing one NULL (padding)
_WS = " \t\n\v\f\r\x1c\x1d\x1e\x1f"  # what str.strip() removes from ASCII text
_BLANK_CHARS = r"\t\n\v\f\r \x1c-\x1f"
_BLANK = f"[{_BLANK_CHARS}]*"
_EPOCH_SQL = f"{_BLANK}[0-9]+(\\.[0-9]+)?{_BLANK}"  # an epoch number with blanks around it, as _uncertain
_UNCERTAIN = "(uncertain)"  # the log-status of the lines the scan leaves to Python (see _after_scan)
_MAX_PENDING = 100_000  # uncertain lines of a file beyond which the file is read in Python
_TOO_BIG = "CAST(10 ** 30 AS HUGEINT)"  # stands for any value of more than 30 digits


@dataclass
class _Plan:
    relations: list[StagedRelation] = field(default_factory=list)
    python: set[int] = field(default_factory=set)  # files read wholly in Python (after their scan, for some)
    pending: dict[int, frozenset[str]] = field(default_factory=dict)  # file -> line texts read in Python
    done_lines: dict[Path, set[int]] = field(default_factory=dict)  # lines read in Python, per file
    whole: set[Path] = field(default_factory=set)  # the paths of ``python``
    # (relation, its files' batch indexes, its rejects tables): the scans _after_scan completes
    # (relation, its files' batch indexes, its rejects tables, the scan checking every address): the scans
    # _after_scan completes
    scans: list[tuple[StagedRelation, list[int], tuple[str, str], StagedRelation]] = field(default_factory=list)


def _head(src: SourceFile) -> tuple[tuple[str | None, ...], int] | None:
    """(columns, line number) of the file's header when it is complete, else None (Python reads it)."""
    for n, (no, text) in enumerate(iter_lines(src)):
        if n >= _HEAD_LINES:
            return None
        if not text.strip():
            continue
        try:
            columns, problem = header_columns(_split(text))
        except csv.Error:
            return None
        return (tuple(columns), no) if problem is None else None
    return None


def _plan(_con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], staged: Staged) -> _Plan:
    """The files read wholly in Python (no complete header) and one scan per header, gzip and header line."""
    plan = _Plan()
    groups: dict[tuple[tuple[str | None, ...], bool, int], list[int]] = {}
    for i, src in enumerate(files):
        try:
            head = _head(src)
        except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
            raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        if head is None:
            plan.python.add(i)
        else:
            groups.setdefault((head[0], src.gzip, head[1]), []).append(i)
    tag = f"_ms_csv_{id(staged)}"
    for n, ((columns, gz, skip), idx) in enumerate(groups.items()):
        rejects = (f"{tag}_{n}_err", f"{tag}_{n}_scan")
        absent = {"direction", "src_workload", "dst_workload"} - set(columns)
        scan = _scan_sql(columns, [files[i] for i in idx], idx, gz, skip, rejects)
        relation, exact = (StagedRelation(
            sql=_stage_sql(scan, columns, exact_addresses=exact_addresses), files=list(files), time_unit=1_000_000,
            null_columns=frozenset({"tcp_flags", "is_reply"} | absent)) for exact_addresses in (False, True))
        plan.relations.append(relation)
        plan.scans.append((relation, idx, rejects, exact))
    return plan


def _after_scan(con: duckdb.DuckDBPyConnection, scanned: Scanned, *, files: Sequence[SourceFile],
                indexes: Sequence[int], rejects: tuple[str, str], staged: Staged, options: ReaderOptions,
                plan: _Plan, exact: StagedRelation | None) -> list[StagedRelation]:
    """Once the store has aggregated a scan: the lines it marked uncertain (their text in ``src_ip``, in
    aggregates of the uncertain status, see _stage_sql) are taken out of the store's aggregates and read in
    Python; a file with a line DuckDB rejected (invalid UTF-8, an over-long line), with an uncertain line
    that the split may have cut, or with too many uncertain lines, is taken out whole and read in Python.
    Nothing of the aggregates is counted before this hook returns (see flows.Scanned).

    ``exact``: the scan that checks every address, when this one did not (it took each as it stands, see
    _stage_sql): if one of the addresses its aggregates hold is not one as it stands, this scan's
    aggregates are dropped and that scan replaces it (whose hook then does the above)."""
    held = scanned.aggregates(indexes)
    whole: set[int] = set()
    if count_rejects(con, [rejects]):
        whole.update(indexes)  # invalid UTF-8 or an over-long line: Python replaces or reads it
    elif exact is not None:
        odd = con.execute(f"""SELECT count(*) FROM {held} WHERE status IS DISTINCT FROM ?
            AND NOT (regexp_full_match(src_ip, '{ADDRESS_PATTERN}') AND regexp_full_match(dst_ip, '{ADDRESS_PATTERN}'))
            """, [_UNCERTAIN]).fetchone()
        if odd and odd[0]:
            scanned.discard(indexes)
            exact.after_scan = functools.partial(_after_scan, files=files, indexes=indexes, rejects=rejects,
                                                 staged=staged, options=options, plan=plan, exact=None)
            return [exact]
    texts: dict[int, set[str]] = {}
    for i, line, cut in con.execute(f"SELECT file_index, src_ip, dst_ip FROM {held} WHERE status = ?",
                                    [_UNCERTAIN]).fetchall():
        if cut != "0":
            whole.add(i)
        texts.setdefault(i, set()).add(str(line))
    whole.update(i for i, lines in texts.items() if len(lines) > _MAX_PENDING)
    pending = {i: frozenset(lines) for i, lines in texts.items() if i not in whole}
    if not whole and not pending:
        return []
    scanned.discard(sorted(whole))
    scanned.discard(indexes, _UNCERTAIN)
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    try:
        for i in sorted(whole | set(pending)):
            src = files[i]
            if i in whole:
                plan.python.add(i)
                plan.whole.add(src.path)
                _stage_whole(src, i, writer, staged, options)
            else:
                plan.pending[i] = pending[i]
                _stage_whole(src, i, writer, staged, options, pending[i], plan.done_lines.setdefault(src.path, set()))
        done = True
    finally:
        writer.close()
        if not done:
            writer.path.unlink(missing_ok=True)
    return [writer.relation(list(files), time_unit=1_000_000)]


def _uncertain(line: str, columns: tuple[str | None, ...]) -> str:
    """SQL: ``line`` is uncertain (see above). A start or end that is neither empty nor an epoch number
    is found by one anchored pattern over the line's first fields: cheaper than splitting it."""
    pos = {name: k for k, name in enumerate(columns) if name is not None}
    times = {pos[t] for t in ("start", "end") if t in pos}
    test = f"contains({line}, '\"') OR contains({line}, chr(0)) OR strlen({line}) <> length({line})"
    if times:
        ws, num = f"[{_BLANK_CHARS}]*", r"([0-9]+(\.[0-9]+)?)?"
        fields = [f"{ws}{num}{ws}" if k in times else "[^,]*" for k in range(max(times) + 1)]
        test += f" OR NOT regexp_matches({line}, {sql_str('^' + ','.join(fields) + '(,|$)')})"
    return test


def _scan_sql(columns: tuple[str | None, ...], files: Sequence[SourceFile], indexes: Sequence[int], gz: bool,
              skip: int, rejects: tuple[str, str]) -> str:
    """Every non-blank line after the header of ``files``: ``fi`` (batch file index), ``shape``, the
    fields ``c<k>`` as split at commas (one more than the header names: a longer line is cut there; a
    missing field is NULL, which no field can be: ``_NULLSTR`` is a line break), and the raw (unstripped)
    values ``r_<column>`` by canonical column name. Lines DuckDB cannot read go to the rejects tables."""
    n = len(columns)
    pos = {name: k for k, name in enumerate(columns) if name is not None}
    values = ", ".join(f"c{pos[name]} AS r_{name}" if name in pos else f"'' AS r_{name}" for name in _ALIASES)
    mapping = ", ".join(str(i) for i in indexes)
    types = "{" + ", ".join(f"'c{k}': 'VARCHAR'" for k in range(n + 1)) + "}"
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does with newline="".
    return f"""
SELECT *, {values}
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, *, c{n - 1} IS NOT NULL AND c{n} IS NULL AS shape
FROM read_csv({sql_list(files)}, delim=',', header=false, quote='', escape='', auto_detect=false,
  columns={types}, strict_mode=false, null_padding=true, nullstr={sql_str(_NULLSTR)}, skip={skip},
  compression='{'gzip' if gz else 'none'}', store_rejects=true, rejects_table='{rejects[0]}',
  rejects_scan='{rejects[1]}')
WHERE c0 IS NOT NULL AND NOT (c1 IS NULL AND c0 < '!' AND regexp_full_match(c0, '{_BLANK}'))
)"""


def _stage_sql(scan: str, columns: tuple[str | None, ...], exact_addresses: bool = True) -> str:
    """The staging rows of the lines of ``scan`` that are not uncertain, checked as _record checks them;
    ``present``: the canonical names of the file's columns (the others are empty: constants here).

    Every value is first judged as DuckDB read it (``r_<column>``, unstripped): a value the rule accepts
    as it stands has no blank around it, so str.strip() would not change it. Only a value the rule
    refuses is stripped and judged again by the full rule, inside a CASE that evaluates that for those
    rows alone (CASE and coalesce() evaluate lazily; AND and OR in a select list do not).

    Uncertain lines (see "DuckDB fast path") get the log-status _UNCERTAIN, their text (joined back from
    the split) in ``src_ip`` and in ``dst_ip`` whether the split may have cut it ('1'), for _after_scan.
    The test is the line's only on the lines the checks refuse. A line they accept has only ASCII digits,
    addresses and names (matched as they stand or after an ASCII-only lower()) in the columns they
    check, so only its other fields (``x_`` columns, workload hints) can hold a quote or a NUL, only the
    hints a non-ASCII character that matters, and its times are tested alone: a time written back by its
    DECIMAL cast is the plain epoch number Python reads, any other goes by the pattern.

    Without ``exact_addresses`` every address is taken as it stands (no match per line: a fifth of the
    scan's time): _after_scan matches the distinct ones the store's aggregates hold, and only when one is
    not an address as it stands (padded, bad) does the scan with them replace this one. Where every
    address is one as it stands, the two scans compute the same rows (the match is true on each)."""
    present = {c for c in columns if c is not None}
    def v(name: str) -> str:  # the value as _record reads it
        return f"trim(r_{name}, {sql_str(_WS)})"

    def digits(x: str) -> str:  # str.isdigit() and isascii()
        return f"regexp_full_match({x}, '[0-9]+')"

    def number(x: str) -> str:  # _number(): a non-negative integer (HUGEINT), of more than 30 digits
        # (leading zeros aside, as int() reads them) _TOO_BIG; both are beyond every limit checked.
        return f"CASE WHEN strlen(ltrim({x}, '0')) > 30 THEN {_TOO_BIG} ELSE TRY_CAST({x} AS HUGEINT) END"

    def count(name: str) -> str:
        # int() of the stripped value when it is str.isdigit(), else NULL. A number as exporters print it
        # (digits, no leading zero) is read by one cast and checked by printing it back.
        if name not in present:
            return "NULL::HUGEINT"
        st = v(name)
        return (f"CASE WHEN CAST(u_{name} AS VARCHAR) = r_{name} THEN CAST(u_{name} AS HUGEINT) "
                f"WHEN {digits(st)} THEN {number(st)} END")

    def empty_or(value: str, name: str, limit: int | None = None) -> str:
        # The check of an optional column: a value that reads (at most ``limit``), or nothing (blanks only).
        if name not in present:
            return "true"
        ok = "true" if limit is None else f"{value} <= {limit}"
        return f"CASE WHEN {value} IS NOT NULL THEN {ok} ELSE {v(name)} = '' END"

    def time_us(t: str) -> str:
        # time_us for epoch numbers: at least 10^11 are milliseconds and take no fraction, nor may they
        # be after 9999 (NULL: bad); seconds keep six fraction digits, cut (below 10^11 s: all before
        # 9999, so the common path needs no limit). A value as exporters print it (digits, at most six
        # fraction digits) is read by one DECIMAL cast and checked by printing it back: the value is a
        # beginning of the cast's text (which has six fraction digits) and does not end at its '.'. Any
        # other is read as Python reads it when it is digits with an optional fraction and blanks
        # around it (the pattern), whole and fraction taken apart in integers (a DECIMAL(38) product
        # costs more than the rest of the line); every other form (ISO 8601, a sign, an exponent) is
        # NULL here: a bad value, and the line is uncertain (ISO times are Python's).
        if t not in present:
            return "NULL::HUGEINT"
        st = v(t)
        whole, frac = f"split_part({st}, '.', 1)", f"split_part({st}, '.', 2)"
        slow = (f"CASE WHEN {st} = '' THEN NULL WHEN NOT regexp_full_match(r_{t}, {sql_str(_EPOCH_SQL)}) THEN NULL "
                f"WHEN {number(whole)} >= {_MS_THRESHOLD} THEN "
                f"CASE WHEN {frac} = '' AND {number(whole)} <= {_MAX_US // 1000} THEN {number(whole)} * 1000 END "
                f"ELSE {number(whole)} * 1000000 + TRY_CAST(rpad(left({frac}, 6), 6, '0') AS HUGEINT) END")
        return (f"CASE WHEN r_{t} = '' THEN NULL WHEN d_{t} < {_MS_THRESHOLD} AND d_{t} >= 0 AND "
                f"starts_with(CAST(d_{t} AS VARCHAR), r_{t}) AND NOT ends_with(r_{t}, '.') "
                f"THEN CAST(trunc(d_{t}) AS BIGINT) * 1000000 + CAST((d_{t} % 1) * 1000000 AS BIGINT) "
                f"ELSE {slow} END")

    def ascii_mapped(name: str, table: dict[str, str] | dict[str, int]) -> str:
        # lower() of an ASCII value only (DuckDB's lower() and str.lower() differ beyond ASCII, e.g. on
        # U+0130): a value with another character is NULL here, a bad value, and so uncertain.
        return f"CASE WHEN strlen(r_{name}) = length(r_{name}) THEN {mapped(f'lower({v(name)})', table)} END"

    def lookup(x: str, table: dict[str, str] | dict[str, int]) -> str:
        # In the tables' order: the common values (tcp, udp; allow) are tested first.
        return (f"CASE {x} " + " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v) if isinstance(v, str) else v}"
                                        for k, v in table.items()) + " END")

    def mapped(x: str, table: dict[str, str] | dict[str, int]) -> str:
        # One lookup (a CASE would repeat x, which DuckDB then computes for every row, outside the CASE).
        return "MAP {" + ", ".join(f"{sql_str(k)}: {sql_str(v) if isinstance(v, str) else v}"
                                   for k, v in table.items()) + f"}}[{x}]"

    def looked_up(name: str, table: dict[str, str]) -> str:
        # The table's keys are lower case: a raw value equal to one is its own lower() and stripped.
        return f"coalesce({lookup(f'r_{name}', table)}, {ascii_mapped(name, table)})"

    def address(name: str) -> str:
        return (f"CASE WHEN a_{name} THEN r_{name} ELSE {v(name)} END AS {name}, "
                f"CASE WHEN a_{name} THEN true ELSE {address_sql(v(name))} END AS {name}_ok")

    space = r"[\t\n\v\f\r \x1c-\x1f]"

    def hint(name: str) -> str:
        # _hint: the stripped value, which may not hold a blank (NULL when empty).
        if name not in present:
            return f"NULL::VARCHAR AS {name}, true AS {name}_ok"
        return (f"CASE WHEN NOT regexp_matches(r_{name}, '{space}') THEN nullif(r_{name}, '') "
                f"ELSE nullif({v(name)}, '') END AS {name}, "
                f"CASE WHEN NOT regexp_matches(r_{name}, '{space}') THEN true "
                f"ELSE NOT regexp_matches({v(name)}, '{space}') END AS {name}_ok")

    ported = "pr_n IN (6, 17, 132)"
    numbers = [x for x in ("src_port", "dst_port", "bytes", "packets") if x in present]
    src_port_ok = (f"CASE WHEN sp_n IS NOT NULL THEN sp_n <= 65535 ELSE {v('src_port')} = '' END"
                   if "src_port" in present else "true")
    checks = [
        "shape", "src_ip_ok", "dst_ip_ok", "pr_n <= 255",
        f"CASE WHEN dp_n IS NOT NULL THEN dp_n <= 65535 WHEN r_dst_port IS NULL THEN false "
        f"ELSE {v('dst_port')} = '' AND NOT {ported} END", src_port_ok,
        empty_or("start_us", "start"), empty_or("end_us", "end"),
        "(start_us IS NULL OR end_us IS NULL OR end_us >= start_us)",
        "action_n IS NOT NULL", empty_or("direction_n", "direction"), "src_workload_ok", "dst_workload_ok",
        empty_or("bytes_n", "bytes", _UBIGINT_MAX), empty_or("packets_n", "packets", _UBIGINT_MAX),
    ]
    # Every value of a line these accept fits its staging type (times at most _MAX_US, see time_us;
    # counters UBIGINT), as in Python: a value beyond is a bad line on both paths, not a failed ingest.
    ok = "coalesce(" + " AND ".join(checks) + ", false)"
    n = len(columns)
    cs = ", ".join(f"c{k}" for k in range(n + 1))
    line = f"concat_ws(',', {', '.join(f'c{k}' for k in range(n + 1))})"
    others = [k for k, name in enumerate(columns) if name is None or name in ("src_workload", "dst_workload")]
    odd = [f"contains(c{k}, '\"') OR contains(c{k}, chr(0))" for k in others]
    odd += [f"strlen(r_{h}) <> length(r_{h})" for h in ("src_workload", "dst_workload") if h in present]
    status = (f"CASE WHEN {ok} THEN CASE WHEN {' OR '.join(odd) if odd else 'false'} THEN '{_UNCERTAIN}' "
              "ELSE 'OK' END "
              f"WHEN {_uncertain(line, columns)} THEN '{_UNCERTAIN}' ELSE '{_BAD_STATUS}' END")
    pr = v("protocol")
    protocol = (f"CASE r_protocol WHEN 'tcp' THEN 6 WHEN 'udp' THEN 17 ELSE coalesce("
                f"{ascii_mapped('protocol', _PROTOCOLS)}, CASE WHEN {digits(pr)} THEN {number(pr)} END) END")
    action = looked_up("action", _ACTIONS) if "action" in present else "'accept'"  # observed traffic
    direction = (f"CASE WHEN r_direction <> '' THEN {looked_up('direction', _DIRECTIONS)} END"
                 if "direction" in present else "NULL::VARCHAR")
    raw_rules = [f"TRY_CAST(r_{x} AS UBIGINT) AS u_{x}" for x in numbers]
    raw_rules += [f"TRY_CAST(r_{t} AS DECIMAL(18, 6)) AS d_{t}" for t in ("start", "end") if t in present]
    raw_rules += [(f"regexp_full_match(r_{a}, '{ADDRESS_PATTERN}')" if exact_addresses else "true") + f" AS a_{a}"
                  for a in ("src_ip", "dst_ip")]
    return f"""
SELECT * EXCLUDE (src_ip, dst_ip, {cs}),
  CASE WHEN log_status = '{_UNCERTAIN}' THEN {line} ELSE src_ip END AS src_ip,
  CASE WHEN log_status <> '{_UNCERTAIN}' THEN dst_ip WHEN c{n} IS NULL THEN '0' ELSE '1' END AS dst_ip
FROM (
SELECT TRY_CAST(t0 AS UBIGINT) AS t_start, TRY_CAST(t1 AS UBIGINT) AS t_end, src_ip, dst_ip,
  CASE WHEN sp_n IS NOT NULL THEN TRY_CAST(sp_n AS INTEGER) WHEN NOT {ported} THEN 0 END AS src_port,
  CASE WHEN dp_n IS NOT NULL THEN TRY_CAST(dp_n AS INTEGER) ELSE 0 END AS dst_port,
  TRY_CAST(pr_n AS INTEGER) AS proto, TRY_CAST(bytes_n AS UBIGINT) AS bytes,
  TRY_CAST(packets_n AS UBIGINT) AS packets, action_n AS action, NULL::INTEGER AS tcp_flags,
  NULL::BOOLEAN AS is_reply, direction_n AS direction, src_workload, dst_workload,
  {status} AS log_status, fi::INTEGER AS file_index, {cs}
FROM (
SELECT *, coalesce(start_us, end_us) AS t0, coalesce(end_us, start_us) AS t1
FROM (
SELECT *, {protocol} AS pr_n, {count('src_port')} AS sp_n, {count('dst_port')} AS dp_n,
  {time_us('start')} AS start_us, {time_us('end')} AS end_us, {action} AS action_n, {direction} AS direction_n,
  {count('bytes')} AS bytes_n, {count('packets')} AS packets_n,
  {address('src_ip')}, {address('dst_ip')}, {hint('src_workload')}, {hint('dst_workload')}
FROM (
SELECT *, {', '.join(raw_rules)}
FROM ({scan})
))))"""
