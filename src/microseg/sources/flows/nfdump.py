"""nfdump CSV (NetFlow v5/v9 and IPFIX collected by nfcapd, printed by ``nfdump -o csv``).

Format facts (phaag/nfdump sources: ``output_csv`` / ``output_util.c``, and the tagged releases):

- Legacy ``-o csv`` (up to 1.7.4): a header line ``ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,
  opkt,obyt,...``; old 1.6 builds print 43 columns (ending ``mpls10,ra,eng``), 1.6.x-1.7.4 print 48
  (``cl,sl,al`` before ``ra,eng``, then ``exid,tr``). ``pr`` is nfdump's protocol *name* (its own
  ``protoList``: ``TCP``, ``UDP``, ``ICMP``, ``ICMP6``, ``GRE`` ...; a number when it has none);
  ``flg`` the TCP flags as letters (``.AP.SF``, 6 columns UAPRSF; 8 columns CEUAPRSF in newer
  builds); ``cl/sl/al`` use ``%9.3f`` (leading spaces).
- 1.7.5+ replaced ``-o csv``: the predefined CSV is ``firstSeen,duration,proto,srcAddr,srcPort,
  dstAddr,dstPort,packets,bytes,flows`` with a numeric ``proto`` and ICMP's destination port printed
  as ``type.code``; ``-o csv-fast`` prints ``cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,
  dstPort,...,flags,srcTos,packets,bytes`` with times as epoch milliseconds; ``-o "csv:%ts,..."``
  names its columns the same way (``firstSeen``, ``lastSeen``, ``inPackets``, ``outBytes`` ...).
  Columns are therefore found by name, and every header line replaces the column list.
- Without ``-q`` a trailer follows: ``Summary``, ``flows,bytes,packets,avg_bps,avg_pps,avg_bpp`` and
  a line of totals; those total lines are counted as skipped ("summary"), never read as flows. An
  empty result prints ``No matching flows`` (skipped, "no-flows"). Lines starting with ``#`` are
  comments: nfdump never prints them, a record starts with a date or a number.

Times. ``ts``/``te``/``firstSeen``/``lastSeen`` are the collector's *local* time without a zone
(``YYYY-MM-DD HH:MM:SS``, ``.mmm`` in later versions): nfdump formats them with ``localtime()``, so
they are in the zone of the ``TZ`` environment of the process that printed them. The file does not say
which zone that was: ``ReaderOptions.timezone`` (an IANA name, UTC by default; ``--flow-timezone``)
states it. Two local times need a rule (Python ``zoneinfo``, PEP 495):

- the repeated hour when clocks go back (e.g. 02:30 twice in Europe/Berlin on the last Sunday of
  October) cannot be told apart in the output; the earlier instant is taken (``fold=0``), so a
  record is placed at most one hour early, never outside the file's time range by more;
- a time that does not exist (02:30 on the spring-forward day) cannot come from ``localtime()``: the
  line is bad (field ``ts``/``te``), never guessed.

Epoch milliseconds (``csv-fast``) are UTC whatever the zone. The end is ``te``/``lastSeen``, else
start + ``td``/``duration``.

Normalisation:

- Action from ``fwd``, the forwarding status (IPFIX IE 89, RFC 7270 section 4.12: the two high bits
  are 00 unknown, 01 forwarded, 10 dropped, 11 consumed): dropped -> drop; otherwise accept, since an
  exported flow is traffic the exporter saw pass and NetFlow v5 and most v9 exporters leave it 0.
- Bytes and packets are ``ibyt + obyt`` and ``ipkt + opkt`` (``obyt``/``opkt`` are the reverse
  direction of bidirectional records, NSEL/IPFIX biflows; 0 otherwise).
- ICMP: legacy prints ``sp`` 0 and ``dp`` = type * 256 + code (2816 = time exceeded 11.0), 1.7.5+
  ``type.code``: no service port, staged as 0 like every other ICMP source here.
- TCP flags are the OR over the flow's packets, so both directions of a connection show SYN and
  ACK: they are kept as ``tcp_flags`` but cannot tell a reply, and ``is_reply`` stays unknown (the
  mapping orients by ports). ``dir`` is left out too: nfdump prints 0 (ingress) when the exporter
  did not send the field, so 0 says nothing.
- NetFlow carries no workload identity.

Reading. A file whose first line (after comments) is a header is parsed by DuckDB (see "DuckDB fast
path" below; in a zone other than UTC local times are converted by a table of the zone's offsets built
from ``zoneinfo``, see ``zone_pieces``), with the same checks as the Python parser; the few lines SQL cannot
decide exactly, or whose meaning depends on the order of lines, are read by the Python parser, which
also names the line and field of every bad record. A test asserts that both paths give the same rows,
counts and bad-line reports.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import io
import itertools
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

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
    sql_list,
    sql_str,
    zone_info,
)
from microseg.sources.flows.sqlpath import (
    ADDRESS_PATTERN,
    SCAN_ERRORS,
    address_sql,
    count_rejects,
    scan_error,
)

NAME = "nfdump"

ACTIONS = {"accept": "accept", "drop": "drop"}

# nfdump's protocol names (protoList in output_util.c), index = IANA protocol number. Where it has
# no name it prints the number, which is read as a number.
_PROTO_NAMES = (
    "0 ICMP IGMP GGP IPIP ST TCP CBT EGP IGP BBN NVPII PUP ARGUS ENCOM XNET CHAOS UDP MUX DCN HMP PRM XNS "
    "Trnk1 Trnk2 Leaf1 Leaf2 RDP IRTP ISO-4 NETBK MFESP MEINP DCCP 3PC IDPR XTP DDP IDPR TP++ IL IPv6 SDRP "
    "Rte6 Frag6 IDRP RSVP GRE MHRP BNA ESP AH INLSP SWIPE NARP MOBIL TLSP SKIP ICMP6 NOHE6 OPTS6 HOST CFTP NET "
    "SATNT KLAN RVD IPPC FS SATM VISA IPCV CPNX CPHB WSN PVP BSATM SUNND WBMON WBEXP ISOIP VMTP SVMTP VINES "
    "TTP NSIGP DGP TCF EIGRP OSPF S-RPC LARP MTP AX.25 OS MICP SCCSP ETHIP ENCAP 99 GMTP IFMP PNNI PIM ARIS "
    "SCPS QNX A/N IPcmp SNP CpqPP IPXIP VRRP PGM 0hop L2TP DDX IATP STP SRP UTI SMP SM PTP ISIS4 FIRE CRTP "
    "CRUDP 128 IPLT SPS PIPE SCTP FC 134 MHEAD UDP-L MPLS").split()
# nfdump matches names case-insensitively; the first holder of a name (IDPR: 35) wins.
_PROTOS: dict[str, int] = {}
for _number, _name in enumerate(_PROTO_NAMES):
    _PROTOS.setdefault(_name.upper(), _number)
_ICMP = frozenset({1, 58})
_PORTED = frozenset({6, 17, 132})

# Column names: legacy name first, then the 1.7.5+ names.
_START = ("ts", "firstSeen")
_END = ("te", "lastSeen")
_DURATION = ("td", "duration")
_SRC, _DST = ("sa", "srcAddr"), ("da", "dstAddr")
_SPORT, _DPORT = ("sp", "srcPort"), ("dp", "dstPort")
_PROTO = ("pr", "proto")
_FLAGS = ("flg", "flags", "tcpFlags")
_IN_PKTS, _OUT_PKTS = ("ipkt", "inPackets"), ("opkt", "outPackets")
_IN_BYTES, _OUT_BYTES = ("ibyt", "inBytes"), ("obyt", "outBytes")
_LOCAL_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")
_DECIMAL = re.compile(r"(\d+)(?:\.(\d+))?")
_FLAG_LETTERS = {6: "UAPRSF", 8: "CEUAPRSF"}
_FWD_DROPPED = 0b10  # forwardingStatus high bits (RFC 7270 4.12)


class _Bad(Exception):
    """A record that cannot be read; carries the field for the report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _is_header(fields: list[str]) -> bool:
    names = set(fields)
    legacy = {"ts", "te", "sa", "da", "pr"} <= names
    current = {"srcAddr", "dstAddr", "proto", "firstSeen"} <= names
    return legacy or current


def sniff(head: list[str]) -> bool:
    for line in head:
        if line.startswith("#") or line.strip() == "No matching flows":
            continue
        return _is_header([f.strip() for f in line.split(",")])
    return False


def _col(row: dict[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """(column name, value) of the first of ``names`` the header has."""
    for name in names:
        if name in row:
            return name, row[name]
    return None


def _time_us(name: str, v: str, zone: tzinfo) -> int:
    if v.isdigit():  # csv-fast: epoch milliseconds
        us = int(v) * 1000
    else:
        m = _LOCAL_TIME.fullmatch(v)
        if m is None:
            raise _Bad(name, f"{v!r} is not a time")
        y, mo, d, h, mi, s, frac = m.groups()
        try:
            # Local time in the stated zone; fold=0: the earlier of a repeated hour (module docstring).
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=zone)
            utc = dt.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise _Bad(name, f"{v!r}: {exc}") from None
        if zone is not UTC and utc.astimezone(zone).replace(tzinfo=None) != dt.replace(tzinfo=None):
            raise _Bad(name, f"{v!r} does not exist in time zone {zone} (the clocks skipped it)")
        us = int(utc.timestamp()) * 1_000_000 + int((frac or "0").ljust(6, "0"))
    if not 0 <= us <= MAX_EPOCH_SECONDS * 1_000_000:
        raise _Bad(name, f"{v!r} is out of range")
    return us


def _count(row: dict[str, str], names: tuple[str, ...]) -> int | None:
    got = _col(row, names)
    if got is None:
        return None
    name, v = got
    if not v.isdigit():
        raise _Bad(name, f"{v!r} is not a count")
    return int(v)


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None else a + (b or 0)  # no reverse counter: a unidirectional record


def _proto(name: str, v: str) -> int:
    if v.isdigit():
        p = int(v)
    elif v.upper() in _PROTOS:
        p = _PROTOS[v.upper()]
    else:
        raise _Bad(name, f"unknown protocol {v!r}")
    if p > 255:
        raise _Bad(name, f"protocol {p} out of range")
    return p


def _port(name: str, v: str) -> int:
    if not v.isdigit() or int(v) > 65535:
        raise _Bad(name, f"{v!r} is not a port")
    return int(v)


def _icmp_port(name: str, v: str) -> None:
    """Checks an ICMP "port": a number (type * 256 + code) or ``type.code``."""
    if not (v.isdigit() or re.fullmatch(r"\d{1,3}\.\d{1,3}", v)):
        raise _Bad(name, f"{v!r} is not an ICMP type/code")


def _flags(name: str, v: str) -> int:
    if v.isdigit():
        return int(v) & 0xFF
    letters = _FLAG_LETTERS.get(len(v))
    if letters is None or any(c not in (".", letters[i]) for i, c in enumerate(v)):
        raise _Bad(name, f"{v!r} is not a TCP flags string")
    return sum(1 << (len(v) - 1 - i) for i, c in enumerate(v) if c != ".")


def _ip(name: str, v: str) -> str:
    ip = canonical_ip(v)
    if ip is None:
        raise _Bad(name, f"{v!r} is not an IP address")
    return ip


def _need(row: dict[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    got = _col(row, names)
    if got is None or got[1] == "":
        raise _Bad(names[0], f"{names[0]} is missing")
    return got


def _record(row: dict[str, str], file_index: int, zone: tzinfo) -> StageRow:
    start = _time_us(*_need(row, _START), zone)
    end_col = _col(row, _END)
    duration = _col(row, _DURATION)
    if end_col is not None:
        end = _time_us(*end_col, zone)
    elif duration is not None:
        m = _DECIMAL.fullmatch(duration[1])
        if m is None:
            raise _Bad(duration[0], f"{duration[1]!r} is not a duration")
        end = start + int(m.group(1)) * 1_000_000 + int((m.group(2) or "0")[:6].ljust(6, "0"))
    else:
        end = start
    if end < start:
        raise _Bad(end_col[0] if end_col else "te", "the flow ends before it starts")
    if end > MAX_EPOCH_SECONDS * 1_000_000:
        # the column the end came from: te, or the duration (td, or "duration" in nfdump 1.7.5's CSV)
        raise _Bad(end_col[0] if end_col else duration[0] if duration else "td", "the flow ends after 9999")
    src, dst = _ip(*_need(row, _SRC)), _ip(*_need(row, _DST))
    proto = _proto(*_need(row, _PROTO))
    sport_col, dport_col = _need(row, _SPORT), _need(row, _DPORT)
    if proto in _ICMP:
        _icmp_port(*sport_col)
        _icmp_port(*dport_col)
        sport = dport = 0  # type/code: no service port
    else:
        sport, dport = _port(*sport_col), _port(*dport_col)
        if proto not in _PORTED:
            sport = dport = 0
    flags_col = _col(row, _FLAGS)
    flags = _flags(*flags_col) if flags_col is not None and proto == 6 else None
    fwd = _count(row, ("fwd",))
    action = "drop" if fwd is not None and (fwd >> 6) & 0b11 == _FWD_DROPPED else "accept"
    packets = _sum(_count(row, _IN_PKTS), _count(row, _OUT_PKTS))
    if packets is None:
        packets = _count(row, ("packets",))
    nbytes = _sum(_count(row, _IN_BYTES), _count(row, _OUT_BYTES))
    if nbytes is None:
        nbytes = _count(row, ("bytes",))
    return StageRow(
        t_start=start, t_end=end, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto,
        bytes=nbytes, packets=packets, action=action, tcp_flags=flags, is_reply=None, direction=None,
        src_workload=None, dst_workload=None, log_status="OK", file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    zone: tzinfo = UTC if options.timezone == "UTC" else options.zone
    try:
        plan = _plan(con, files, staged, options)
        for index, src in enumerate(files):
            try:
                if index in plan.python:
                    _stage_file(src, index, writer, staged, options, zone)
                elif index in plan.pending:
                    _stage_file(src, index, writer, staged, options, zone, plan.pending[index],
                                plan.done_lines.setdefault(src.path, set()))
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        staged.skipped.update(plan.skipped)
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1_000_000)
    relation.null_columns = _NULL_COLUMNS
    staged.relations.append(relation)
    staged.relations[:0] = plan.relations
    # Lines DuckDB found bad are named by the Python parser; lines read in Python were reported there.
    # A file read wholly in Python was reported there (were the store ever to refuse a record the reader
    # accepted - the two share canonical_ip now - there would be no bad line to name).
    whole = frozenset(files[i].path for i in plan.python)
    staged.locate_bad = functools.partial(_locate_bad, done_lines=plan.done_lines, whole=whole, zone=zone,
                                          max_samples=options.max_samples)
    return staged


_NULL_COLUMNS = frozenset({"is_reply", "direction", "src_workload", "dst_workload"})


def _walk(src: SourceFile, only: frozenset[str] | None = None
          ) -> Iterator[tuple[int, str, list[str], list[str] | None] | tuple[str]]:
    """The file's lines as the reader sees them: ``(no, text, fields, columns)`` for a record line (columns
    None before any header), ``(reason,)`` for a line counted as skipped; headers, comments and blank
    lines yield nothing. With ``only``, every other line is passed over unread (see ``_plan``)."""
    columns: list[str] | None = None
    summary = False
    for no, text in iter_lines(src):
        if only is not None and text not in only:
            continue
        if not text.strip() or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")]
        if _is_header(fields):
            columns, summary = fields, False
            continue
        if text.strip() == "Summary":
            summary = True
            continue
        if summary:
            if fields[0] != "flows":  # the totals' own header line is not counted
                yield ("summary",)
            continue
        if text.strip() == "No matching flows":
            yield ("no-flows",)
            continue
        yield no, text, fields, columns


def _parse(fields: list[str], columns: list[str] | None, index: int, zone: tzinfo) -> StageRow:
    if columns is None:
        raise _Bad("header", "record before the CSV header line")
    if len(fields) != len(columns):
        raise _Bad("header", f"{len(fields)} columns, the header names {len(columns)}")
    return _record(dict(zip(columns, fields, strict=True)), index, zone)


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                zone: tzinfo, only: frozenset[str] | None = None, done_lines: set[int] | None = None) -> None:
    """Reads ``src`` in Python; with ``only``, just the lines with those texts (DuckDB reads the rest)."""
    for item in _walk(src, only):
        if len(item) == 1:
            staged.skipped[(src.path, item[0])] += 1
            continue
        no, text, fields, columns = item
        if done_lines is not None:
            done_lines.add(no)
        try:
            writer.write(_parse(fields, columns, index, zone))
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)


def _locate_bad(src: SourceFile, done_lines: dict[Path, set[int]], whole: frozenset[Path], zone: tzinfo,
                max_samples: int) -> list[BadLine]:
    """The lines behind the records DuckDB counted as bad, with the field the Python parser names."""
    out: list[BadLine] = []
    if src.path in whole:
        return out
    done = done_lines.get(src.path, set())
    for item in _walk(src):
        if len(item) == 1 or item[0] in done:
            continue  # skipped, or read in Python already and reported there
        no, text, fields, columns = item
        try:
            _parse(fields, columns, 0, zone)
        except _Bad as bad:
            out.append(BadLine(file=str(src.path), line=no, field=bad.field, message=bad.message, text=text[:500]))
            if len(out) >= max_samples:
                break
    return out


# -- DuckDB fast path -----------------------------------------------------------------------------
#
# A file whose first line (after comments) is a header is parsed by DuckDB: split at commas, every
# field typed and checked in SQL exactly as _record does it in Python (IPv6 addresses by a pattern of
# what ipaddress accepts; the store writes them in RFC 5952 form as str() does); a value is judged as
# read first and stripped only when that fails (see _stage_sql). The
# reader's state (the current header, "in the Summary block") depends on the order of lines, which SQL
# does not see; so a first scan reads each line as one value and returns the few lines that are
# "special": any line that might be a header, "Summary" or "No matching flows", non-ASCII text
# (Python's strip and isdigit know more than ASCII), and the lines of the file's Summary block (found
# in its last 64 KiB, read here; the count tells whether such a line also occurs before it).
# - Only the top header and one Summary block at the end (nfdump's plain output): DuckDB skips to the
#   header, the block is counted here, and no line is read in Python.
# - Other special lines: DuckDB leaves them out by their text, and the Python parser reads the file
#   passing over every other line (it keeps the state exact, as all lines that change it are special).
# - More than one Summary line, one not at the end, another header than the first, invalid UTF-8, or
#   a zone zone_pieces cannot table: the file is read in Python.
# In a zone other than UTC a line with a field that starts like a local time of 2100 or later (past
# the zone table) is special too.
# Bad lines stay in the relation with a log-status the store counts as bad; locate_bad re-reads such a
# file in Python to name line and field.

_BAD_STATUS = "(bad)"
# address_sql as one pattern, for the raw values of every row: one match instead of a test for ':' and a
# match (every IPv6 form has a ':', no IPv4 one has), measurably cheaper; the same addresses.
_HEAD_LINES = 64
_TAIL_BYTES = 1 << 16
_LINE_DELIM = "\x01\x02\x03\x04"  # DuckDB's longest delimiter; a line holding it goes to Python
_NULLSTR = "\x01\x02"  # a value no line has: an empty field is '', a missing one NULL (padding)
_WS = " \t\n\v\f\r\x1c\x1d\x1e\x1f"  # what str.strip() removes from ASCII text
_BLANK = r"[\t\n\v\f\r \x1c-\x1f]*"
_MAX_EXCLUDED = 5000  # special lines of a file beyond which the file is read in Python
_MAX_TAIL = 64  # lines of a Summary block beyond which the file is read in Python
_TOO_LATE = "CAST(10 ** 30 AS HUGEINT)"  # microseconds far past 9999

# Local times in a zone other than UTC (see zone_pieces): the table covers instants from _ZONE_FROM to
# _ZONE_UNTIL; a line with a field starting like a local time of year 2100 or later is read in Python.
_ZONE_FROM = int(datetime(1969, 12, 30, tzinfo=UTC).timestamp())
_ZONE_UNTIL = int(datetime(2100, 1, 3, tzinfo=UTC).timestamp())
_LATE_YEAR = r"[\t\n\v\f\r \x1c-\x1f]*(2[1-9]|[3-9][0-9])[0-9][0-9]-"  # after the fields before it
_DAY = 86400
_MIN_GAP_DAYS = 2  # offset changes closer together than this: the zone is read in Python


def _seconds(off: timedelta | None) -> int | None:
    """A UTC offset in whole seconds (None if it is not whole)."""
    if off is None or off % timedelta(seconds=1):
        return None
    return off // timedelta(seconds=1)


def _local_to_utc(local: int, zone: tzinfo) -> int | None:
    """_time_us for the whole local second ``local`` (seconds since 1970-01-01 00:00 as if UTC): the UTC
    epoch second, or None when the local time does not exist (the reader's rule, fold=0)."""
    naive = datetime(1970, 1, 1) + timedelta(seconds=local)
    utc = naive.replace(tzinfo=zone).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != naive:
        return None
    return int(utc.timestamp())


def _explicit_changes_apart(name: str) -> bool:
    """True when the transitions the zone's TZif data lists between ``_ZONE_FROM`` and ``_ZONE_UNTIL`` are
    at least ``_MIN_GAP_DAYS`` apart, so that sampling the offset daily cannot miss a pair of them.

    The list is read with the standard library's pure-Python ``zoneinfo`` (the same TZif file and search
    path as the C implementation); it is not public API, so when it is not there the answer is False and
    the zone is read in Python (slow, exact). Transitions after the last listed one follow the zone's
    POSIX rule, one pair a year."""
    try:
        from zoneinfo._zoneinfo import ZoneInfo as PyZoneInfo  # type: ignore[import-not-found]

        listed = PyZoneInfo.no_cache(name)._trans_utc
        inside = [int(t) for t in listed if _ZONE_FROM <= t < _ZONE_UNTIL]
    except Exception:  # noqa: BLE001 - a private API: any failure means "cannot tell"
        return False
    return all(b - a >= _MIN_GAP_DAYS * _DAY for a, b in itertools.pairwise(inside))


@functools.lru_cache(maxsize=8)
def zone_pieces(name: str) -> tuple[tuple[int, int | None], ...] | None:
    """The local -> UTC rule of the IANA zone ``name`` as Python's ``zoneinfo`` applies it in _time_us, as
    pieces ``(first local second, offset seconds or None)`` sorted by their first second (the first piece
    starts at minus infinity): a local second L of a piece with offset o is the instant L - o; None marks
    the local times the clocks skipped (bad lines). None when the zone cannot be tabled exactly: the
    files are then read in Python.

    Built from ``zoneinfo`` itself, not from DuckDB's ICU (whose time zone data may be of another tzdata
    release, and which takes the later of a repeated hour where the reader takes the earlier): the UTC
    offset is sampled daily from 1969-12-30 to 2100 and every change is bisected to the second. A change
    (at T, offset a -> b) starts a piece at T + max(a, b), the local time from which the reader
    (``fold=0``, PEP 495) uses b: in a repeated hour the earlier instant, a skipped time is bad; b > a
    also starts a piece of skipped times at T + a. A local time the table may misplace (an instant
    before 1969-12-30) is before 1970 under any offset within two days of the table's (bad either way);
    those of 2100 and later are read in Python (``_LATE_YEAR``). Assumed: no two changes within one day
    (the daily sampling would miss such a pair): checked against the zone's own list of transitions
    (``_explicit_changes_apart``), and a test checks every second around each change of several zones.
    Changes less than ``_MIN_GAP_DAYS`` apart, or a
    result differing from ``_local_to_utc`` at any piece's first second or the second before it, leave
    the zone to Python. About 0.15 s a zone, once a process.
    """
    zone = zone_info(name)
    if not _explicit_changes_apart(name):
        return None
    changes: list[tuple[int, int, int]] = []  # (instant, offset before, offset after)

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, zone).utcoffset()

    before = offset(_ZONE_FROM)
    for t in range(_ZONE_FROM, _ZONE_UNTIL, _DAY):  # the hot loop: timedelta compared, not converted
        after = offset(t + _DAY)
        if after == before:
            continue
        lo, hi = t, t + _DAY  # offset(lo) == before, offset(hi) == after
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == before else (lo, mid)
        a, b = _seconds(before), _seconds(after)
        if a is None or b is None or (changes and hi - changes[-1][0] < _MIN_GAP_DAYS * _DAY):
            return None
        changes.append((hi, a, b))
        before = after
    first = changes[0][1] if changes else _seconds(before)
    if first is None:
        return None
    pieces: list[tuple[int, int | None]] = [(-(1 << 62), first)]
    for at, a, b in changes:
        if b > a:
            pieces.append((at + a, None))
        pieces.append((at + max(a, b), b))
    starts = [p[0] for p in pieces]
    if starts != sorted(set(starts)):
        return None
    for start, _off in pieces[1:]:
        for local in (start - 1, start):
            k = bisect.bisect_right(starts, local) - 1
            table = pieces[k][1]
            if _local_to_utc(local, zone) != (None if table is None else local - table):
                return None
    return tuple(pieces)


def _zone_sql(local_us: str, pieces: Sequence[tuple[int, int | None]]) -> str:
    """SQL: the UTC microseconds of the local microseconds ``local_us`` by ``pieces`` (a binary search in
    nested CASEs, a few comparisons a row), NULL for a skipped local time."""
    def tree(lo: int, hi: int) -> str:
        if lo == hi:
            off = pieces[lo][1]
            return "NULL" if off is None else f"{local_us} - {off * 1_000_000}"
        mid = (lo + hi + 1) // 2
        return f"CASE WHEN {local_us} < {pieces[mid][0] * 1_000_000} THEN {tree(lo, mid - 1)} ELSE {tree(mid, hi)} END"
    return tree(0, len(pieces) - 1)


@dataclass
class _Plan:
    relations: list[StagedRelation] = field(default_factory=list)
    python: set[int] = field(default_factory=set)  # files read wholly in Python
    pending: dict[int, frozenset[str]] = field(default_factory=dict)  # file -> line texts read in Python
    done_lines: dict[Path, set[int]] = field(default_factory=dict)
    skipped: Counter[tuple[Path, str]] = field(default_factory=Counter)


def _top_header(src: SourceFile) -> tuple[str, tuple[str, ...], int] | None:
    """(text, columns, line number) of the file's first line after blank lines and comments, when it is
    an ASCII header."""
    for n, (no, text) in enumerate(iter_lines(src)):
        if n >= _HEAD_LINES:
            return None
        if not text.strip() or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")]
        if not text.isascii() or not _is_header(fields):
            return None
        return text, tuple(fields), no
    return None


def _tail(src: SourceFile) -> list[str]:
    """The last whole lines of the file (its last 64 KiB), split as iter_lines splits them."""
    if src.gzip:
        keep = b""
        with gzip.open(src.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                keep = (keep + chunk)[-_TAIL_BYTES:]
        data, whole = keep, False  # a file shorter than that is not worth telling apart
    else:
        with src.path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL_BYTES))
            data, whole = fh.read(), size <= _TAIL_BYTES
    lines = [line.rstrip("\r\n") for line in io.StringIO(data.decode("utf-8", errors="replace"), newline="")]
    return lines if whole else lines[1:]  # the first may be cut


def _plan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], staged: Staged,
          options: ReaderOptions) -> _Plan:
    plan = _Plan()
    pieces = None if options.timezone == "UTC" else zone_pieces(options.timezone)
    if options.timezone != "UTC" and pieces is None:
        plan.python.update(range(len(files)))  # a zone whose offsets could not be tabled exactly
        return plan
    heads: dict[int, tuple[str, tuple[str, ...], int]] = {}
    tails: dict[int, list[str]] = {}
    for i, src in enumerate(files):
        try:
            head = _top_header(src)
            tail = _tail(src) if head is not None else []
        except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
            raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        marks = [k for k, t in enumerate(tail) if t.strip() == "Summary"]
        tail = tail[marks[-1]:] if marks else []  # the last Summary line and what follows it
        if head is None or len(tail) > _MAX_TAIL:
            plan.python.add(i)
        else:
            heads[i], tails[i] = head, tail
    groups: dict[tuple[tuple[str, ...], bool, int], list[int]] = {}
    for i, (_text, columns, no) in heads.items():
        groups.setdefault((columns, files[i].gzip, no), []).append(i)
    tag = f"_ms_nfdump_{id(staged)}"
    special: dict[int, dict[str, int]] = {i: {} for i in heads}
    for n, ((columns, gz, _no), idx) in enumerate(groups.items()):
        err = (f"{tag}_{n}_err", f"{tag}_{n}_scan")
        trailer = sorted({t for i in idx for t in tails[i]})
        try:
            rows = con.execute(_special_sql([files[i] for i in idx], idx, gz, trailer, err,
                                            late=_time_positions(columns) if pieces is not None else ())
                               ).fetchall()
        except SCAN_ERRORS as exc:
            # A truncated gzip, an unreadable file (the transaction is aborted: no Python fallback here).
            raise scan_error(exc, [files[i] for i in idx], fallback=1) from exc
        if count_rejects(con, [err]):
            plan.python.update(idx)  # invalid UTF-8 or an over-long line: Python replaces or reads it
            continue
        for fi, text, wide, count in rows:
            if wide:
                plan.python.add(int(fi))
            special[int(fi)][str(text)] = int(count)
    excluded: dict[int, set[str]] = {}
    for i, (htext, columns, _no) in heads.items():
        texts = special[i]
        headers = {t for t in texts if _is_header([f.strip() for f in t.split(",")])}
        summaries = sum(n for t, n in texts.items() if t.strip() == "Summary")
        width = len(columns)
        if (i in plan.python or headers - {htext} or summaries > 1 or (summaries and not tails[i])
                or len(texts) > _MAX_EXCLUDED or any(t.count(",") >= width for t in texts)):
            # The layout changes inside the file, several Summary blocks or one not at the end, many
            # special lines, or one with more fields than the header (DuckDB cuts such lines).
            plan.python.add(i)
            continue
        tail = tails[i] if summaries else []
        after = [t for t in tail[1:] if t.strip() and not t.startswith("#")]
        block = Counter(tail[:1] + after)
        alone = (texts.get(htext) == 1 and all(n == block[t] for t, n in texts.items() if t != htext)
                 and not any(_is_header([f.strip() for f in t.split(",")]) for t in after))
        if alone:
            # Only the top header and nfdump's trailer: counted here, no line read in Python.
            for t in after:
                if t.split(",")[0].strip() != "flows":
                    plan.skipped[(files[i].path, "summary")] += 1
        else:
            plan.pending[i] = frozenset(texts)
        # DuckDB skips the lines up to the top header; a header seen again is looked up by its text.
        excluded[i] = set(texts) - ({htext} if texts.get(htext) == 1 else set())
    for (columns, gz, no), idx in groups.items():
        fast = [i for i in idx if i not in plan.python]
        if fast:
            plan.relations.append(StagedRelation(sql=_stage_sql(columns, files, fast, gz, no, excluded, pieces),
                                                 files=list(files), time_unit=1_000_000, null_columns=_NULL_COLUMNS))
    return plan


def _read_csv(files: Sequence[SourceFile], gz: bool, delim: str, columns: int, errors: str = "") -> str:
    types = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(columns)) + "}"
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does with newline="".
    return (f"read_csv({sql_list(files)}, delim={sql_str(delim)}, header=false, quote='', escape='', "
            f"auto_detect=false, columns={types}, strict_mode=false, null_padding=true, "
            f"nullstr={sql_str(_NULLSTR)}, compression='{'gzip' if gz else 'none'}'{errors})")


def _time_positions(columns: Sequence[str]) -> tuple[int, ...]:
    """The fields _record reads its local times from (the last of a repeated name, as dict(zip()))."""
    pos = {name: i for i, name in enumerate(columns)}
    found = (next((n for n in names if n in pos), None) for names in (_START, _END))
    return tuple(sorted({pos[name] for name in found if name is not None}))


def _special_sql(files: Sequence[SourceFile], indexes: Sequence[int], gz: bool, trailer: Sequence[str],
                 rejects: tuple[str, str], *, late: Sequence[int] = ()) -> str:
    """(file index, text, wide, count) of every special line (see above) of ``files``; ``trailer``: the
    lines of the files' Summary blocks, counted wherever they are. ``late``: the positions of the time
    fields; a line where one starts like a local time of a year past the zone table (see zone_pieces)
    is special too (an anchored pattern: it reads only the line's first fields)."""
    mapping = ", ".join(str(i) for i in indexes)
    legacy = " AND ".join(f"contains(c0, {sql_str(n)})" for n in ("ts", "te", "sa", "da", "pr"))
    current = " AND ".join(f"contains(c0, {sql_str(n)})" for n in ("srcAddr", "dstAddr", "proto", "firstSeen"))
    block = f"c0 IN ({', '.join(sql_str(t) for t in trailer)})" if trailer else "false"
    errors = f", store_rejects=true, rejects_table='{rejects[0]}', rejects_scan='{rejects[1]}'"
    fields = "|".join(f"([^,]*,){{{k}}}" if k else "" for k in late)
    late_sql = f"\n  OR regexp_matches(c0, '^({fields}){_LATE_YEAR}')" if late else ""
    return f"""
SELECT fi, c0, c1 IS NOT NULL AS wide, count(*) FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, c1
FROM {_read_csv(files, gz, _LINE_DELIM, 2, errors)}
WHERE NOT starts_with(c0, '#') AND NOT (ord(c0) <= 32 AND regexp_full_match(c0, '{_BLANK}')))
WHERE c1 IS NOT NULL OR strlen(c0) <> length(c0) OR contains(c0, 'Summary') OR contains(c0, 'No matching flows')
  OR ({legacy}) OR ({current}) OR {block}{late_sql}
GROUP BY ALL"""




def _stage_sql(columns: tuple[str, ...], files: Sequence[SourceFile], indexes: Sequence[int], gz: bool,
               skip: int, excluded: dict[int, set[str]],
               pieces: Sequence[tuple[int, int | None]] | None = None) -> str:
    """The staging rows of ``files[i]`` for ``i`` in ``indexes`` (one header), checked as _record checks
    them; the lines in ``excluded[i]`` are left out (Python reads or counts them). ``pieces``: the
    zone_pieces of a zone other than UTC, by which local times are converted (epoch milliseconds are UTC)."""
    n = len(columns)
    pos = {name: i for i, name in enumerate(columns)}  # the last of a repeated name, as dict(zip())

    def first(names: tuple[str, ...]) -> str | None:
        return next((name for name in names if name in pos), None)

    cols = {"ts": first(_START), "te": first(_END), "td": first(_DURATION), "sa": first(_SRC), "da": first(_DST),
            "sp": first(_SPORT), "dp": first(_DPORT), "pr": first(_PROTO), "flg": first(_FLAGS),
            "fwd": first(("fwd",)), "ipk": first(_IN_PKTS), "opk": first(_OUT_PKTS), "pk": first(("packets",)),
            "ib": first(_IN_BYTES), "ob": first(_OUT_BYTES), "byts": first(("bytes",))}
    has = {alias for alias, name in cols.items() if name is not None}
    # Every value is first judged as DuckDB read it ("raw", r_<alias>): a value the rule accepts as it
    # stands has no blank around it, so str.strip() would not change it. Only a value the rule refuses
    # is stripped and judged again, inside a CASE that evaluates that for those rows alone.
    raws = ", ".join(f"c{pos[name]} AS r_{alias}" if name is not None else f"NULL::VARCHAR AS r_{alias}"
                     for alias, name in cols.items())

    def stripped(alias: str) -> str:
        return f"trim(r_{alias}, {sql_str(_WS)})"

    def digits(x: str) -> str:  # str.isdigit() of ASCII text (only ASCII lines reach SQL)
        return f"regexp_full_match({x}, '[0-9]+')"

    def local_us(x: str) -> str:
        # YYYY-MM-DD HH:MM:SS[.f] that datetime() accepts, as microseconds of a UTC clock; NULL when not.
        # DuckDB's cast refuses the impossible dates, minutes and seconds datetime() refuses, but reads
        # hour 24 as the next day: that one is checked here.
        return (f"CASE WHEN regexp_full_match({x}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}} [0-9]{{2}}:[0-9]{{2}}:"
                f"[0-9]{{2}}(\\.[0-9]{{1,6}})?') THEN CASE WHEN substr({x}, 12, 2) < '24' "
                f"THEN epoch_us(TRY_CAST({x} AS TIMESTAMP)) END END")

    def epoch_ms(x: str) -> str:  # csv-fast: epoch milliseconds, UTC in any zone
        return (f"CASE WHEN {digits(x)} THEN CASE WHEN strlen({x}) > 20 THEN {_TOO_LATE} "
                f"ELSE CAST({x} AS HUGEINT) * 1000 END END")

    def time_us(x: str) -> str:
        # _time_us in UTC: epoch milliseconds, or a local time read as UTC; NULL when neither.
        return (f"CASE WHEN regexp_full_match({x}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}} [0-9]{{2}}:[0-9]{{2}}:"
                f"[0-9]{{2}}(\\.[0-9]{{1,6}})?') THEN CASE WHEN substr({x}, 12, 2) < '24' "
                f"THEN epoch_us(TRY_CAST({x} AS TIMESTAMP)) END "
                f"WHEN {digits(x)} THEN CASE WHEN strlen({x}) > 20 THEN {_TOO_LATE} "
                f"ELSE CAST({x} AS HUGEINT) * 1000 END END")

    def micros(x: str) -> str:
        # _DECIMAL as _record reads a duration: exact, digits finer than microseconds cut; a whole
        # part of more than 15 digits ends past 9999 whatever it says.
        whole = f"split_part({x}, '.', 1)"
        return (f"CASE WHEN NOT regexp_full_match({x}, '[0-9]+(\\.[0-9]+)?') THEN NULL "
                f"WHEN strlen({whole}) > 15 THEN {_TOO_LATE} "
                f"ELSE CAST(CAST(left({x}, strlen({whole}) + 7) AS DECIMAL(22, 6)) * 1000000 AS HUGEINT) END")

    def number(x: str) -> str:
        # int() of a str.isdigit() value (10^30 stands for anything longer), NULL for any other value.
        return (f"CASE WHEN {digits(x)} THEN CASE WHEN strlen({x}) > 30 THEN {_TOO_LATE} "
                f"ELSE CAST({x} AS HUGEINT) END END")

    def low_byte(x: str) -> str:
        # int(x) & 0xFF of a decimal of any length: 10^8 is a multiple of 256, the last 8 digits decide.
        return f"CAST(right({x}, 8) AS BIGINT) & 255"

    max_us = MAX_EPOCH_SECONDS * 1_000_000
    names = "MAP {" + ", ".join(f"{sql_str(k)}: {p}" for k, p in sorted(_PROTOS.items()) if not k.isdigit()) + "}"
    # Every flags string of the letter forms with its bits: one lookup instead of patterns per row.
    letter_forms = {"".join(c if bits >> (size - 1 - k) & 1 else "." for k, c in enumerate(letters)): bits
                    for size, letters in sorted(_FLAG_LETTERS.items()) for bits in range(1 << size)}
    flag_map = "MAP {" + ", ".join(f"{sql_str(k)}: {v}" for k, v in letter_forms.items()) + "}"
    type_code = r"[0-9]{1,3}\.[0-9]{1,3}"
    icmp = "pr_n IN (1, 58)"

    # Layer "raw_rules": the cheap judgement of each raw value. A counter or port as nfdump prints it
    # (digits without a leading zero) is read by one cast and checked by printing it back (n_<alias>);
    # anything else (leading zeros, more than UBIGINT, blanks, not a number) is NULL there and number()
    # decides on the stripped value.
    counted = [a for a in ("sp", "dp", "fwd", "ipk", "opk", "pk", "ib", "ob", "byts") if a in has]
    raw_rules = [f"TRY_CAST(r_{a} AS UBIGINT) AS u_{a}" for a in counted]
    # A time is read by DuckDB's cast; printed back it equals the value only when the value is in
    # nfdump's own form (all digits, a valid date and time, hour below 24), which _time_us reads alike.
    raw_rules += [f"TRY_CAST(r_{a} AS TIMESTAMP) AS p_{a}" for a in ("ts", "te") if a in has]
    raw_rules += [f"regexp_full_match(r_{a}, '{ADDRESS_PATTERN}') AS a_{a}" for a in ("sa", "da") if a in has]
    if "flg" in has:
        raw_rules.append(f"{flag_map}[r_flg] AS f_flg")
    plain = [f"CASE WHEN CAST(u_{a} AS VARCHAR) = r_{a} THEN u_{a} END AS n_{a}" for a in counted]
    plain += [f"CASE WHEN CAST(p_{a} AS VARCHAR) = r_{a} THEN epoch_us(p_{a}) END AS t_{a}"
              for a in ("ts", "te") if a in has]

    def time_value(a: str) -> str:
        if a not in has:
            return "NULL::HUGEINT"
        return f"CASE WHEN t_{a} IS NOT NULL THEN t_{a} ELSE {time_us(stripped(a))} END"

    # In a zone other than UTC a local time is read as on a UTC clock first (<a>_loc), then converted by
    # the zone's pieces one layer up (it is referenced once per comparison there); epoch ms are UTC.
    zoned: list[str] = []
    if pieces is None:
        times = [f"{time_value(a)} AS {a}_us" for a in ("ts", "te")]
    else:
        times = []
        for a in ("ts", "te"):
            if a not in has:
                times.append(f"NULL::HUGEINT AS {a}_us")
                continue
            times += [f"CASE WHEN t_{a} IS NOT NULL THEN t_{a} ELSE {local_us(stripped(a))} END AS {a}_loc",
                      f"CASE WHEN t_{a} IS NULL THEN {epoch_ms(stripped(a))} END AS {a}_ms"]
            zoned.append(f"CASE WHEN {a}_loc IS NOT NULL THEN {_zone_sql(f'{a}_loc', pieces)} ELSE {a}_ms END "
                         f"AS {a}_us")

    def count_value(a: str) -> str:  # int() of the stripped value when it is str.isdigit(), else NULL
        return f"CASE WHEN n_{a} IS NOT NULL THEN CAST(n_{a} AS HUGEINT) ELSE {number(stripped(a))} END"

    def address(a: str) -> str:
        # The address as _ip reads it (stripped), and whether ipaddress accepts it.
        return (f"CASE WHEN a_{a} THEN r_{a} ELSE {stripped(a)} END AS {a}, "
                f"CASE WHEN a_{a} THEN true ELSE {address_sql(stripped(a))} END AS {a}_ok")

    def port_ok(a: str) -> str:
        # _port (0-65535), or _icmp_port for ICMP (digits of any size, or type.code).
        st = stripped(a)
        return (f"CASE WHEN n_{a} IS NOT NULL THEN {icmp} OR n_{a} <= 65535 "
                f"WHEN {icmp} THEN {digits(st)} OR regexp_full_match({st}, '{type_code}') "
                f"ELSE {digits(st)} AND TRY_CAST({st} AS HUGEINT) <= 65535 END")

    flg_st = stripped("flg")
    typed = [*times,
             f"CASE r_pr WHEN 'TCP' THEN 6 WHEN 'UDP' THEN 17 WHEN 'ICMP' THEN 1 ELSE "
             f"CASE WHEN {digits(stripped('pr'))} THEN TRY_CAST({stripped('pr')} AS HUGEINT) "
             f"ELSE {names}[upper({stripped('pr')})] END END AS pr_n",
             *(f"{count_value(a)} AS {a}_v" for a in counted)]
    if "flg" in has:
        typed.append(f"CASE WHEN f_flg IS NOT NULL THEN f_flg WHEN {digits(flg_st)} THEN {low_byte(flg_st)} "
                     f"ELSE {flag_map}[{flg_st}] END AS flag_n")
    else:
        typed.append("NULL::BIGINT AS flag_n")
    typed += [address("sa") if "sa" in has else "NULL::VARCHAR AS sa, false AS sa_ok",
              address("da") if "da" in has else "NULL::VARCHAR AS da, false AS da_ok"]

    def total(inner: str, outer: str, single: str) -> str:
        # _sum: in + out (out 0 when absent), else the single counter of 1.7.5+. A counter Python would
        # stage beyond UBIGINT makes the store's read of its staging file fail (an InputError): so does
        # the strict cast of the total below (10^30 stands for anything longer).
        if inner in has:
            return f"{inner}_v + coalesce({outer + '_v' if outer in has else 'NULL'}, 0)"
        return f"{single}_v" if single in has else "NULL::HUGEINT"

    def checked(*aliases: str) -> list[str]:
        return [f"{a}_v IS NOT NULL" for a in aliases if a in has]

    if {"ts", "sa", "da", "pr", "sp", "dp"} <= has:
        end = "te_us" if "te" in has else (
            f"ts_us + CASE WHEN regexp_full_match(r_td, '[0-9]{{1,9}}(\\.[0-9]{{1,6}})?') THEN "
            f"CAST(CAST(r_td AS DECIMAL(15, 6)) * 1000000 AS HUGEINT) ELSE {micros(stripped('td'))} END"
            if "td" in has else "ts_us")
        checks = [f"ts_us BETWEEN 0 AND {max_us}", f"end_us >= ts_us AND end_us <= {max_us}",
                  "sa_ok", "da_ok", "pr_n <= 255", port_ok("sp"), port_ok("dp"),
                  *checked("fwd", "ipk", "opk", "ib", "ob")]
        if "te" in has:
            checks.append(f"te_us BETWEEN 0 AND {max_us}")
        if "flg" in has:
            checks.append("(pr_n <> 6 OR flag_n IS NOT NULL)")
        if "ipk" not in has:
            checks += checked("pk")
        if "ib" not in has:
            checks += checked("byts")
        ok = "coalesce(" + " AND ".join(checks) + ", false)"  # referenced once: evaluated once
    else:
        end, ok = "NULL::HUGEINT", "false"  # _need: a column every record needs is missing
    fwd_value = "CAST(fwd_v % 256 AS BIGINT)" if "fwd" in has else "NULL::BIGINT"
    totals = (f"{end} AS end_us, {fwd_value} AS fwd_n, "
              f"{total('ipk', 'opk', 'pk')} AS packets_n, {total('ib', 'ob', 'byts')} AS bytes_n")
    # Excluded lines are found by their text, comparing only as many columns as the text has: DuckDB
    # then reads just the columns used (unless a special line has the header's shape: rare).
    def joined(k: int) -> str:
        return f"concat_ws(',', {', '.join(f'c{j}' for j in range(k))})"

    short: dict[int, list[str]] = {}  # field count -> "WHEN fi THEN text IN (...)"
    shaped: list[str] = []
    starts: set[str] = set()
    for i in indexes:
        by_width: dict[int, list[str]] = {}
        for t in sorted(excluded.get(i, ())):
            by_width.setdefault(t.count(",") + 1, []).append(sql_str(t))
        for k, texts in sorted(by_width.items()):
            if k == n:
                shaped.append(f"WHEN {i} THEN {joined(n)} IN ({', '.join(texts)})")
                starts |= {t.split(",")[0] for t in excluded[i] if t.count(",") == n - 1}
            else:  # fewer fields than the header: more are cut to Python in _plan
                short.setdefault(k, []).append(f"WHEN {i} THEN {joined(k)} IN ({', '.join(texts)})")
    shape = f"c{n - 1} IS NOT NULL AND c{n} IS NULL"
    other = " OR ".join(f"(c{k - 1} IS NOT NULL AND c{k} IS NULL AND CASE fi {' '.join(w)} ELSE false END)"
                        for k, w in sorted(short.items())) or "false"
    same = (f"c0 IN ({', '.join(sql_str(t) for t in sorted(starts))}) AND CASE fi {' '.join(shaped)} ELSE false END"
            if shaped else "false")
    special = f"CASE WHEN {shape} THEN {same} ELSE {other} END"
    # A counter beyond UBIGINT in a good record: Python stages it and the store's read of its staging
    # file fails (an InputError); here error() fails the scan, which the store reports the same way.
    fits = " OR ".join(f"{x} > 18446744073709551615" for x in ("bytes_n", "packets_n"))
    ok = (f"CASE WHEN {ok} AND shape THEN CASE WHEN {fits} THEN error('nfdump counter out of range') "
          f"ELSE true END ELSE false END")
    portless = "pr_n IN (1, 58) OR pr_n NOT IN (6, 17, 132)"
    mapping = ", ".join(str(i) for i in indexes)
    return f"""
SELECT TRY_CAST(ts_us AS UBIGINT) AS t_start, TRY_CAST(end_us AS UBIGINT) AS t_end, sa AS src_ip, da AS dst_ip,
  CASE WHEN {portless} THEN 0 ELSE TRY_CAST(sp_v AS INTEGER) END AS src_port,
  CASE WHEN {portless} THEN 0 ELSE TRY_CAST(dp_v AS INTEGER) END AS dst_port,
  TRY_CAST(pr_n AS INTEGER) AS proto, TRY_CAST(bytes_n AS UBIGINT) AS bytes,
  TRY_CAST(packets_n AS UBIGINT) AS packets,
  CASE WHEN (fwd_n >> 6) & 3 = {_FWD_DROPPED} THEN 'drop' ELSE 'accept' END AS action,
  CASE WHEN pr_n = 6 THEN TRY_CAST(flag_n AS INTEGER) END AS tcp_flags,
  NULL::BOOLEAN AS is_reply, NULL::VARCHAR AS direction, NULL::VARCHAR AS src_workload,
  NULL::VARCHAR AS dst_workload, CASE WHEN {ok} THEN 'OK' ELSE '{_BAD_STATUS}' END AS log_status,
  fi::INTEGER AS file_index
FROM (
SELECT *, {totals}
FROM (
SELECT *{''.join(', ' + x for x in zoned)}
FROM (
SELECT *, {', '.join(typed)}
FROM (
SELECT *{''.join(', ' + x for x in plain)}
FROM (
SELECT *{''.join(', ' + x for x in raw_rules)}
FROM (
SELECT fi, shape, {raws}
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, *, {shape} AS shape
FROM {_read_csv([files[i] for i in indexes], gz, ',', n + 1, f", skip={skip}")}
WHERE NOT starts_with(c0, '#') AND NOT (c1 IS NULL AND c0 < '!' AND regexp_full_match(c0, '{_BLANK}'))
)
WHERE NOT ({special})
))))))"""
