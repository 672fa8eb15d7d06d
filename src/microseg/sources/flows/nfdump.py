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
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

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
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise _Bad(name, f"{v!r} is not an IP address") from None


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
        raise _Bad(end_col[0] if end_col else "td", "the flow ends after 9999")
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
    del con  # everything is parsed in Python and bulk-loaded through the staging file
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
    relation = writer.relation(list(files), time_unit=1_000_000)
    relation.null_columns = frozenset({"is_reply", "direction", "src_workload", "dst_workload"})
    staged.relations.append(relation)
    # Every check the store repeats after aggregation has been made here already.
    staged.locate_bad = lambda _src: []
    return staged


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
    columns: list[str] | None = None
    summary = False
    zone: tzinfo = UTC if options.timezone == "UTC" else options.zone
    for no, text in iter_lines(src):
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
                staged.skipped[(src.path, "summary")] += 1
            continue
        if text.strip() == "No matching flows":
            staged.skipped[(src.path, "no-flows")] += 1
            continue
        try:
            if columns is None:
                raise _Bad("header", "record before the CSV header line")
            if len(fields) != len(columns):
                raise _Bad("header", f"{len(fields)} columns, the header names {len(columns)}")
            writer.write(_record(dict(zip(columns, fields, strict=True)), index, zone))
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
