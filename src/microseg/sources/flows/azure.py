"""Azure Network Watcher flow logs: NSG flow logs (versions 1 and 2) and VNet flow logs (version 4).

Format facts (Microsoft Learn, "Flow logging for network security groups" - log format - and
"Virtual network flow logs" - log format; ``shared/samples/flows/azure/README.txt``):

- A blob (``PT1H.json``) is one JSON document ``{"records": [...]}``; exports through Event Hubs and
  collectors also write one record (or one ``{"records": ...}``) per line. Both are read by one
  incremental parser (``json.JSONDecoder.raw_decode`` over a buffered reader): a ``records`` array is
  taken record by record, so memory holds one record and a read chunk, never the blob (a busy VNet's
  hour can be gigabytes). A record larger than :data:`MAX_RECORD_CHARS` is refused. Members of the
  document after its ``records`` array are read and ignored, as in any other object. After a syntax
  error the rest of that line is a bad line and reading resumes on the next line, one value per line.
  A bad tuple is reported with the line its text is on.
- Blobs that DuckDB can read exactly as that parser does are read by DuckDB instead, many times
  faster, a large blob in pieces (bounded memory; see "DuckDB fast path" below); the outcome is the
  same, tuple for tuple, and a bad tuple there is still reported by the Python parser, with its line
  and field (reading again only the records that hold the first bad tuples).
- NSG record: ``properties.Version`` (1 or 2), ``properties.flows[].rule``,
  ``properties.flows[].flows[].mac`` and ``.flowTuples``. A version 2 tuple is
  ``unix-seconds,src,dst,sport,dport,protocol(T/U),direction(I/O),decision(A/D),state(B/C/E),``
  ``packets s->d,bytes s->d,packets d->s,bytes d->s`` (the counters are empty in a B tuple); a
  version 1 tuple stops after the decision.
- VNet record: ``flowLogVersion`` 4, ``macAddress``, ``flowRecords.flows[].aclID``,
  ``.flowGroups[].rule`` and ``.flowTuples``. A tuple is ``unix-milliseconds,src,dst,sport,dport,``
  ``protocol(IANA number),direction(I/O),state(B/C/E/D),encryption(X/NX/NX_*),`` and the same four
  counters. There is no decision letter: a denied flow has state D.
- State B (begin) opens a connection; C (continuing) and E (end) report it again, each with the
  counters of its interval, every few minutes while it lives. One connection is therefore one
  record here, not one per tuple: a B (or, for a connection that began before the batch, its first
  C/E) opens it; later C/E tuples of the same NIC and 5-tuple add their counters and extend its end,
  and are counted as skipped (``connection-update``); E closes it. A long connection that spans
  blobs ingested separately is counted once per ingest. The tracking runs in DuckDB over the staged
  tuples (window functions in log order), not in a Python dictionary of open connections, so its
  memory is DuckDB's bounded, spilling memory whatever the number of connections left open.
- A denied tuple (NSG decision D, VNet state D) is one denied attempt: one record each, action
  ``drop`` (NSGs discard denied packets without a reset). Allowed traffic is ``accept``.
- The tuple's direction is relative to the NIC: I -> ingress, O -> egress. The logs say nothing about
  replies or TCP flags, and carry no workload identity: those stay unknown and the mapping orients
  by ports and resolves by address.
- Both ends: a connection between two logged NICs (two VMs of a logged VNet, or NICs whose NSGs are
  both logged) is in the logs twice, as O at the client's NIC and as I at the server's, each tuple
  naming the same initiator-to-responder 5-tuple (the record names the NIC, ``macAddress`` / ``mac``).
  It counts once: an ingress record is a duplicate (skipped, reason ``peer-nic-duplicate``) when an
  egress record of the same 5-tuple started within :data:`PEER_WINDOW_SECONDS` of it. Logs are
  collected at one-minute intervals (Microsoft Learn, "Virtual network flow logs overview" / NSG
  flow logging overview), so the two ends stamp a connection within about a minute of each other,
  while a client cannot reuse the same 5-tuple that soon (TIME-WAIT, RFC 9293 section 3.6.1; 60 s
  on Linux). The egress record is kept; when the server's end denied the connection (an I tuple
  with D) the kept record is a ``drop``: the connection did not get through, whatever the client's
  side allowed. Duplicates are found among the files of one ingest (across files, not across runs).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    STAGE_COLUMNS,
    BadLine,
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    canonical_ip,
    sql_str,
)
from microseg.sources.flows.sqlpath import IPV4_PATTERN

NAME = "azure"

ACTIONS = {"accept": "accept", "drop": "drop"}
_MARKERS = ('"flowTuples"', '"flowLogVersion"', "NetworkSecurityGroupFlowEvent", "FlowLogFlowEvent")
_NSG_PROTOCOLS = {"T": 6, "U": 17}
_DIRECTIONS = {"I": "ingress", "O": "egress"}
_NSG_DECISIONS = {"A": "accept", "D": "drop"}
_STATES = frozenset("BCE")
_V2_FIELDS = ("time", "src", "dst", "src_port", "dst_port", "protocol", "direction", "decision", "state",
              "packets_s2d", "bytes_s2d", "packets_d2s", "bytes_d2s")
_V4_FIELDS = ("time", "src", "dst", "src_port", "dst_port", "protocol", "direction", "state", "encryption",
              "packets_s2d", "bytes_s2d", "packets_d2s", "bytes_d2s")
_MAX_UINT64 = (1 << 64) - 1
PEER_DUPLICATE = "peer-nic-duplicate"
PEER_WINDOW_SECONDS = 60
# One record (one NIC's flows of one interval) is far smaller in practice; a larger one is refused
# rather than read whole, which would break the memory bound.
MAX_RECORD_CHARS = 64 << 20
_CHUNK_CHARS = 1 << 20
_RECORDS_HEAD = re.compile(r'\{\s*"records"\s*:\s*\[')
_WS = re.compile(r"[ \t\n\r]*")
_TO_EOL = re.compile(r"[^\n]*")
_PLAIN = re.compile(r"[0-9A-Za-z.,:_ -]*")

CONNECTION_UPDATE = "connection-update"
# Staged after the staging columns: the NIC, the tuple's state (B/C/E; NULL = one record by itself),
# and its position in the batch (the log order connection tracking follows).
_EXTRA = {"nic": "VARCHAR", "state": "VARCHAR", "seq": "HUGEINT"}


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sniff(head: list[str]) -> bool:
    text = "\n".join(head)
    return text.lstrip().startswith("{") and any(m in text for m in _MARKERS)


@dataclass
class _Tuple:
    """One parsed flow tuple, before connection tracking."""

    time_us: int
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    direction: str
    action: str
    state: str | None  # B/C/E; None for a version 1 tuple or a denied one
    packets: int | None
    bytes: int | None


def _int(v: str, field: str, limit: int) -> int:
    if v.isdigit() and v.isascii():  # int() alone would accept " 1", "+1", "1_0" and other digits
        n = int(v)
        if n <= limit:
            return n
    raise _Bad(field, f"{v!r} is not a number in 0..{limit}")


def _ip(v: str, field: str) -> str:
    ip = canonical_ip(v)
    if ip is None:
        raise _Bad(field, f"{v!r} is not an IP address")
    return ip


def _counters(values: list[str], names: tuple[str, ...]) -> tuple[int | None, int | None]:
    """(packets, bytes) of both directions; None when the tuple has no counters (empty in a B tuple)."""
    if not values or all(v == "" for v in values):
        return None, None
    nums = [_int(v, f, _MAX_UINT64) for v, f in zip(values, names, strict=True)]
    return nums[0] + nums[2], nums[1] + nums[3]


def parse_tuple(text: str, version: int) -> _Tuple:
    """A flow tuple of an NSG (version 1 or 2) or VNet (version 4) flow log."""
    values = text.split(",")
    fields: tuple[str, ...]
    if version == 4:
        fields = _V4_FIELDS
        if len(values) != len(fields):
            raise _Bad("flowTuples", f"expected {len(fields)} fields, found {len(values)}")
        time_us = _int(values[0], "time", _MAX_UINT64 // 1000) * 1000  # milliseconds
        proto = _int(values[5], "protocol", 255)
        state = values[7]
        if state not in _STATES and state != "D":
            raise _Bad("state", f"unknown flow state {state!r} (expected B, C, E or D)")
        action = "drop" if state == "D" else "accept"
        state_out: str | None = None if state == "D" else state
    elif version in (1, 2):
        fields = _V2_FIELDS if version == 2 else _V2_FIELDS[:8]
        if len(values) != len(fields):
            raise _Bad("flowTuples", f"expected {len(fields)} fields for version {version}, found {len(values)}")
        time_us = _int(values[0], "time", _MAX_UINT64 // 1_000_000) * 1_000_000  # seconds
        if values[5] not in _NSG_PROTOCOLS:
            raise _Bad("protocol", f"unknown protocol {values[5]!r} (expected T or U)")
        proto = _NSG_PROTOCOLS[values[5]]
        if values[7] not in _NSG_DECISIONS:
            raise _Bad("decision", f"unknown decision {values[7]!r} (expected A or D)")
        action = _NSG_DECISIONS[values[7]]
        state_out = None
        if version == 2:
            if values[8] not in _STATES:
                raise _Bad("state", f"unknown flow state {values[8]!r} (expected B, C or E)")
            state_out = values[8] if action == "accept" else None
    else:
        raise _Bad("version", f"unsupported flow log version {version!r} (expected 1, 2 or 4)")
    if values[6] not in _DIRECTIONS:
        raise _Bad("direction", f"unknown direction {values[6]!r} (expected I or O)")
    packets, nbytes = _counters(values[9:], fields[9:])
    return _Tuple(time_us=time_us, src=_ip(values[1], "src"), dst=_ip(values[2], "dst"),
                  sport=_int(values[3], "src_port", 65535), dport=_int(values[4], "dst_port", 65535), proto=proto,
                  direction=_DIRECTIONS[values[6]], action=action, state=state_out, packets=packets, bytes=nbytes)


def _groups(record: Any) -> Iterator[tuple[int, str, list[Any]]]:
    """(version, NIC, tuples) of one record."""
    if not isinstance(record, dict):
        raise _Bad("records", "a record is not an object")
    if "flowLogVersion" in record:
        version = record["flowLogVersion"]
        nic = str(record.get("macAddress") or "")
        flows = (record.get("flowRecords") or {}).get("flows") if isinstance(record.get("flowRecords"), dict) else None
        if not isinstance(version, int) or not isinstance(flows, list):
            raise _Bad("flowRecords", "no flowRecords.flows list")
        for flow in flows:
            acl = flow.get("flowGroups") if isinstance(flow, dict) else None
            if not isinstance(acl, list):
                raise _Bad("flowRecords.flows", "no flowGroups list")
            for group in acl:
                tuples = group.get("flowTuples") if isinstance(group, dict) else None
                if not isinstance(tuples, list):
                    raise _Bad("flowGroups", "no flowTuples list")
                yield version, nic, tuples
        return
    props = record.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("flows"), list):
        raise _Bad("properties", "neither an NSG (properties.flows) nor a VNet (flowLogVersion) flow log record")
    version = props.get("Version", 1)
    if not isinstance(version, int):
        raise _Bad("properties.Version", f"{version!r} is not a version number")
    for rule in props["flows"]:
        inner = rule.get("flows") if isinstance(rule, dict) else None
        if not isinstance(inner, list):
            raise _Bad("properties.flows", "no flows list")
        for nic_flows in inner:
            tuples = nic_flows.get("flowTuples") if isinstance(nic_flows, dict) else None
            if not isinstance(tuples, list):
                raise _Bad("properties.flows.flows", "no flowTuples list")
            yield version, str(nic_flows.get("mac") or ""), tuples


class _Locator:
    """Line numbers of tuples in a document, found by scanning forward for each tuple's text."""

    def __init__(self, text: str, first_line: int) -> None:
        self.text = text
        self.pos = 0
        self.line = first_line

    def line_of(self, value: str) -> int:
        # A well-formed tuple needs no JSON escaping: quote it directly (json.dumps costs more per tuple).
        quoted = f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)
        idx = self.text.find(quoted, self.pos)
        if idx < 0:
            return self.line
        self.line += self.text.count("\n", self.pos, idx)
        self.pos = idx
        return self.line


class _Stager:
    def __init__(self, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
        self.writer = writer
        self.staged = staged
        self.options = options
        self.seq = 0

    def bad(self, src: SourceFile, line: int, field: str, message: str, text: str) -> None:
        self.staged.add_bad(src.path, line, field, message, text, self.options.max_samples)

    def document(self, src: SourceFile, index: int, obj: Any, text: str, first_line: int) -> None:
        locator = _Locator(text, first_line)
        if isinstance(obj, dict) and "records" in obj:
            records = obj["records"]
            if not isinstance(records, list):
                self.bad(src, first_line, "records", "records is not a list", text)
                return
        else:
            records = [obj]
        for record in records:
            try:
                for version, nic, tuples in _groups(record):
                    for t in tuples:
                        line = locator.line_of(t) if isinstance(t, str) else locator.line
                        try:
                            if not isinstance(t, str):
                                raise _Bad("flowTuples", "a flow tuple is not a string")
                            self.tuple(parse_tuple(t, version), nic, index, src)
                        except _Bad as bad:
                            self.bad(src, line, bad.field, bad.message, str(t))
            except _Bad as bad:
                self.bad(src, locator.line, bad.field, bad.message, json.dumps(record)[:500])

    def tuple(self, t: _Tuple, nic: str, index: int, src: SourceFile) -> None:
        del src
        row = StageRow(
            t_start=t.time_us, t_end=t.time_us, src_ip=t.src, dst_ip=t.dst, src_port=t.sport, dst_port=t.dport,
            proto=t.proto, bytes=t.bytes, packets=t.packets, action=t.action, tcp_flags=None, is_reply=None,
            direction=t.direction, src_workload=None, dst_workload=None, log_status="OK", file_index=index)
        self.seq += 1
        # A denied attempt or a version 1 tuple (state None) is one record by itself.
        self.writer.write(row, nic or None, t.state, self.seq)


class _JsonStream:
    """The top-level JSON values of a text stream, read incrementally, with the line each starts on.

    A ``{"records": [...]}`` document yields its records one by one. Only the value being decoded and
    one read chunk are held. Incomplete input at the end of the buffer is told apart from a syntax
    error by where the decoder stopped: near the end (or in a string running off it) means "read
    more"; each retry at least doubles what is held, so the work stays linear in the value's size.
    """

    def __init__(self, fh: IO[str], where: str, progress: Callable[[int], None]) -> None:
        self.fh = fh
        self.where = where
        self.progress = progress
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(_CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        self.progress(self.line)
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def _skip_ws(self) -> bool:
        """Past whitespace; False at the end of the input."""
        while True:
            m = _WS.match(self.buf, self.pos)
            self._advance(m.end() if m else self.pos)
            if self.pos < len(self.buf):
                return True
            if not self._fill():
                return False

    def _ensure(self, n: int) -> None:
        while len(self.buf) - self.pos < n and self._fill():
            pass

    def _decode(self) -> tuple[Any, str]:
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                held = len(self.buf) - self.pos
                maybe_cut = exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated string")
                if not maybe_cut or self.eof:
                    raise
                if held > MAX_RECORD_CHARS:
                    raise InputError(f"a JSON value longer than {MAX_RECORD_CHARS} characters: refused to keep "
                                     "memory bounded", file=self.where, line=self.line, field="records") from None
                self._ensure(2 * held)
                continue
            if end == len(self.buf) and self._fill():  # a number or literal may go on in the next chunk
                continue
            text = self.buf[self.pos:end]
            self._advance(end)
            return obj, text

    def _rest_of_line(self) -> str:
        """Skip to the start of the next line; the skipped text (for a bad-line sample)."""
        self._ensure(501)
        m = _TO_EOL.match(self.buf, self.pos)
        text = self.buf[self.pos:m.end() if m else self.pos][:500]
        while True:
            nl = self.buf.find("\n", self.pos)
            if nl >= 0:
                self._advance(nl + 1)
                return text
            self._advance(len(self.buf))
            if not self._fill():
                return text

    def values(self) -> Iterator[tuple[int, Any, str, _Bad | None]]:
        """(line, value, its text, error); after an error, one value per line (the JSON Lines form)."""
        by_line = False
        while self._skip_ws():
            start = self.line
            try:
                self._ensure(64)
                head = _RECORDS_HEAD.match(self.buf, self.pos)
                if head is not None and not by_line:
                    self._advance(head.end())
                    yield from self._records()
                    continue
                obj, text = self._decode()
                if by_line:
                    m = _WS.match(self.buf, self.pos)
                    tail = self.buf[self.pos:m.end() if m else self.pos]
                    if "\n" not in tail and (m is None or m.end() < len(self.buf)):
                        raise _Bad("json", "text after the JSON value on its line")
                yield start, obj, text, None
            except (json.JSONDecodeError, _Bad) as exc:
                bad = exc if isinstance(exc, _Bad) else _Bad("json", f"invalid JSON: {exc}")
                by_line = True
                line = self.line
                yield line, None, self._rest_of_line(), bad

    def _records(self) -> Iterator[tuple[int, Any, str, _Bad | None]]:
        """The elements of a ``records`` array whose ``[`` was just read, then the closing ``}``."""
        if not self._skip_ws():
            raise json.JSONDecodeError("unterminated records array", self.buf, self.pos)
        if self.buf[self.pos] == "]":
            self._advance(self.pos + 1)
        else:
            while True:
                self._skip_ws()
                start = self.line
                obj, text = self._decode()
                yield start, obj, text, None
                if not self._skip_ws() or self.buf[self.pos] not in ",]":
                    raise json.JSONDecodeError("expected ',' or ']' after a record", self.buf, self.pos)
                sep = self.buf[self.pos]
                self._advance(self.pos + 1)
                if sep == "]":
                    break
        # Members after the array are read and ignored, as when the object is decoded whole (a repeated
        # "records" too: the first occurrence of a key is the one read, the rule of jsonline.py).
        while self._skip_ws() and self.buf[self.pos] == ",":
            self._advance(self.pos + 1)
            self._skip_ws()
            key, _ = self._decode()
            if not isinstance(key, str) or not self._skip_ws() or self.buf[self.pos] != ":":
                raise json.JSONDecodeError("expected a key and ':' in the object of the records array",
                                           self.buf, self.pos)
            self._advance(self.pos + 1)
            self._skip_ws()
            self._decode()
        if not self._skip_ws() or self.buf[self.pos] != "}":
            raise json.JSONDecodeError("expected '}' after the records array", self.buf, self.pos)
        self._advance(self.pos + 1)


def _open(src: SourceFile) -> tuple[IO[str], IO[bytes]]:
    """The file as text (decompressed when gzip; bad UTF-8 replaced) and the raw file, for its position."""
    raw = src.path.open("rb")
    binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if src.gzip else raw
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=""), raw


def _documents(src: SourceFile, options: ReaderOptions) -> Iterator[tuple[int, Any, str, _Bad | None]]:
    """(first line, parsed JSON, its text, error) for every record or top-level value of the file."""
    try:
        fh, raw = _open(src)
        with fh, raw:
            stream = _JsonStream(fh, str(src.path), lambda line: options.report_read(src.path, raw.tell(), line))
            yield from stream.values()
    except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
        raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc


_STAGE_LIST = ", ".join(STAGE_COLUMNS)
_CONN = "nic, src_ip, dst_ip, src_port, dst_port, proto, direction"


def _tracking_sql(tuples_sql: str, materialized: bool = True, counted: bool = False) -> str:
    """One record per connection (see the module docstring), as staging rows.

    A tuple opens a connection when it is a B, the first of its NIC, 5-tuple and direction, or follows
    an E; the opener carries the connection's end (latest tuple) and summed counters (NULL when no
    tuple had any, as in a lone B); every other tuple of it is a ``connection-update`` skip. Tuples
    with no state are records as they are. ``materialized``: ``tuples_sql`` is computed once (else it is
    read once per use: for a table, which is cheaper than a copy). ``counted``: the rows have one more
    column, ``n``: NULL for a row, else the row stands for ``n`` rows (the ``connection-update`` skips of a
    file, which have no other values), which :func:`_expand_sql` writes out.
    """
    # Most NIC, 5-tuple and direction groups hold one connection: no B but (maybe) the first tuple, no E
    # but (maybe) the last - the first tuple is then the only opener. Those (of one file) are one hash
    # aggregate: the opener's row with the group's end and sums, and a skipped row (no values but its
    # file) for each other tuple. The other groups are split in log order: one sort, where ``conn``
    # numbers the connections - it grows at every opener (by the B counted there, or by the E counted
    # just before it) and nowhere else, so the tuples of one connection share it - and ``opens`` marks
    # the openers; a connection is then one group, as above.
    opener = {"t_start": "t0", "t_end": "conn_end", "packets": "conn_packets", "bytes": "conn_bytes",
              "action": "action0", "file_index": "fi0", "log_status": "'OK'"}
    key = _CONN.split(", ")
    columns = ", ".join(
        f"CAST(CASE WHEN x < 0 THEN {opener.get(c, c if c in key else 'NULL')} END AS {t}) AS {c}"
        if c not in ("log_status", "file_index") else
        f"CASE WHEN x < 0 THEN 'OK' ELSE '{CONNECTION_UPDATE}' END AS log_status" if c == "log_status" else
        "CAST(CASE WHEN x < 0 THEN fi0 ELSE x END AS INTEGER) AS file_index"
        for c, t in STAGE_COLUMNS.items())
    # The first tuple's file is the least file index (seq orders the files first); and every tuple with a
    # state is an allowed one (parse_tuple: a denied tuple has none), so the first tuple's action is any
    # tuple's: min() for both, not arg_min() (two aggregates less on a million tuples).
    aggregates = ("arg_min(t_start, seq) AS t0, max(t_start) AS conn_end, sum(packets) AS conn_packets, "
                  "sum(bytes) AS conn_bytes, min(action) AS action0, min(file_index) AS fi0")
    simple = ("nb = CAST(s0 = 'B' AS INTEGER) AND ne = CAST(s1 = 'E' AS INTEGER) AND fi0 = f_hi")
    same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM c.{c}" for c in key)
    one = ", NULL::BIGINT AS n" if counted else ""
    if counted:  # the skips of the one-connection groups, as one count a file
        skips = ", ".join(f"NULL::{t} AS {c}" if c not in ("log_status", "file_index") else
                          f"'{CONNECTION_UPDATE}' AS log_status" if c == "log_status" else
                          "CAST(fi0 AS INTEGER) AS file_index" for c, t in STAGE_COLUMNS.items())
        simple_rows = (f"SELECT {columns}{one} FROM (SELECT *, -1 AS x FROM g WHERE {simple})\n"
                       f"UNION ALL\nSELECT {skips}, CAST(sum(n - 1) AS BIGINT) AS n FROM g "
                       f"WHERE {simple} AND n > 1 GROUP BY fi0")
    else:
        simple_rows = f"""SELECT {columns}
FROM (
  SELECT *, CASE WHEN k = 0 THEN -1 ELSE fi0 END AS x
  FROM (SELECT *, unnest(range(n)) AS k FROM g WHERE {simple}))"""
    return f"""
WITH t AS {"" if materialized else "NOT "}MATERIALIZED ({tuples_sql}),
g AS (
  SELECT {_CONN}, count(*) AS n, count(CASE WHEN state = 'B' THEN 1 END) AS nb,
    count(CASE WHEN state = 'E' THEN 1 END) AS ne, arg_min(state, seq) AS s0, arg_max(state, seq) AS s1,
    max(file_index) AS f_hi, {aggregates}
  FROM t WHERE state IS NOT NULL GROUP BY ALL),
c AS (SELECT {_CONN} FROM g WHERE NOT ({simple}))
{simple_rows}
UNION ALL
SELECT {columns}{one}
FROM (
  SELECT *, unnest(list_prepend(-1, skips)) AS x
  FROM (
    SELECT {_CONN}, conn, {aggregates}, coalesce(list(file_index) FILTER (WHERE NOT opens), []) AS skips
    FROM (
      SELECT {_CONN}, seq, t_start, packets, bytes, action, file_index,
        coalesce(state = 'B' OR prev IS NULL OR prev = 'E', false) AS opens,
        coalesce(ends, 0) + begins AS conn
      FROM (
        SELECT {_CONN}, seq, t_start, packets, bytes, action, file_index, state,
          lag(state) OVER o AS prev,
          count(CASE WHEN state = 'E' THEN 1 END) OVER (o ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ends,
          count(CASE WHEN state = 'B' THEN 1 END) OVER (o ROWS UNBOUNDED PRECEDING) AS begins
        FROM (SELECT t.* FROM t SEMI JOIN c ON {same} WHERE t.state IS NOT NULL)
        WINDOW o AS (PARTITION BY {_CONN} ORDER BY seq)))
    GROUP BY ALL))
UNION ALL
SELECT {_STAGE_LIST}{one} FROM t WHERE state IS NULL"""


def _expand_sql(rows_sql: str) -> str:
    """The staging rows of ``rows_sql`` (rows with the column ``n``, see _tracking_sql), counts written out."""
    skipped = ", ".join(c if c in ("log_status", "file_index") else f"NULL::{t} AS {c}"
                        for c, t in STAGE_COLUMNS.items())
    return (f"SELECT {_STAGE_LIST} FROM {rows_sql} WHERE n IS NULL UNION ALL SELECT {skipped} FROM "
            f"(SELECT log_status, file_index, unnest(range(n)) FROM {rows_sql} WHERE n IS NOT NULL)")


def _dedupe_sql(rows_sql: str, counted: bool = False) -> str:
    """The staged rows with each connection seen at both ends counted once (see the module docstring).

    One sort: the records of each 5-tuple in time order; the nearest egress record (and ingress drop)
    before and after each record tell whether one lies within the window. ``counted``: the rows have the
    column ``n`` of _tracking_sql, kept."""
    w = PEER_WINDOW_SECONDS * 1_000_000
    # Frames in start-time order: the rows before (after) the current one start no later (earlier), so
    # the unsigned differences below never go negative.
    before = "OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    after = "OVER (p ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)"
    egress = "CASE WHEN direction = 'egress' THEN t_start END"
    denied = "CASE WHEN direction = 'ingress' AND action = 'drop' THEN t_start END"
    columns = ", ".join({"log_status": f"""CASE WHEN direction = 'ingress' AND (t_start - eg_before <= {w}
          OR eg_after - t_start <= {w}) THEN '{PEER_DUPLICATE}' ELSE log_status END AS log_status""",
                         "action": f"""CASE WHEN direction = 'egress' AND action = 'accept' AND
          (t_start - dr_before <= {w} OR dr_after - t_start <= {w}) THEN 'drop' ELSE action END AS action"""}.get(c, c)
                        for c in STAGE_COLUMNS) + (", n" if counted else "")
    # Only a 5-tuple with both egress and ingress records can change (most have one direction: a NIC whose
    # peer is not logged): those alone are sorted; the records of the others are as they are.
    key = ("src_ip", "dst_ip", "src_port", "dst_port", "proto")
    same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM m.{c}" for c in key)
    return f"""
WITH s AS ({rows_sql}),
m AS (
  SELECT {", ".join(key)} FROM s WHERE log_status = 'OK' GROUP BY ALL
  HAVING bool_or(direction = 'egress') AND bool_or(direction = 'ingress'))
SELECT {columns}
FROM (
  SELECT *, max({egress}) {before} AS eg_before, min({egress}) {after} AS eg_after,
    max({denied}) {before} AS dr_before, min({denied}) {after} AS dr_after
  FROM (SELECT s.* FROM s SEMI JOIN m ON {same} WHERE s.log_status = 'OK')
  WINDOW p AS (PARTITION BY {", ".join(key)} ORDER BY t_start))
UNION ALL
SELECT s.* FROM s ANTI JOIN m ON {same} WHERE s.log_status = 'OK'
UNION ALL
SELECT * FROM s WHERE log_status IS DISTINCT FROM 'OK'"""


class _Discard:
    """A staging writer that keeps nothing: the Python reader run only for its bad-line reports."""

    def write(self, row: StageRow, *extra: object) -> None:
        del row, extra


def _python_read(stager: _Stager, src: SourceFile, index: int, options: ReaderOptions) -> None:
    stager.seq = index << _SEQ_BITS
    for first_line, obj, text, error in _documents(src, options):
        if error is not None:
            stager.bad(src, first_line, error.field, error.message, text)
        else:
            stager.document(src, index, obj, text, first_line)


def _locate(src: SourceFile, options: ReaderOptions, records: set[int]) -> list[BadLine]:
    """The bad lines the Python reader reports for ``src`` (the fast path counted them, see below), read from
    ``records`` (positions in the file, from 1): the records that hold its first bad tuples. Every other
    record is only decoded (json, in C), to keep count of records and lines; the file is one document whose
    only bad lines are bad tuples (else the fast path would not have read it), so the first bad lines the
    Python reader reports are those of these records."""
    staged = Staged(relations=[], actions={}, skip_statuses=frozenset())
    stager = _Stager(cast(StageWriter, _Discard()), staged, options)
    last = max(records, default=0)
    for n, (first_line, obj, text, error) in enumerate(_documents(src, options), 1):
        if n > last or len(staged.bad) >= options.max_samples:
            break
        if error is not None:
            stager.bad(src, first_line, error.field, error.message, text)
        elif n in records:
            stager.document(src, 0, obj, text, first_line)
    return staged.bad


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS),
                    skip_statuses=frozenset({PEER_DUPLICATE, CONNECTION_UPDATE}))
    writer = StageWriter(options.tmp_dir, extra=_EXTRA)
    staged.cleanup.append(writer.path)
    stager = _Stager(writer, staged, options)
    fast = _Fast(read=set(), bad={}, side=None)
    nulls = frozenset({"tcp_flags", "is_reply", "src_workload", "dst_workload"})
    try:
        fast = _fast_path(con, files, options)
        for index, src in enumerate(files):
            if index not in fast.read:
                _python_read(stager, src, index, options)
        writer.close()
        python_rows = writer.relation(list(files), time_unit=1_000_000).sql
        if fast.side is None:
            # Connections whose E is not in the batch are counted once all the same.
            sql = _dedupe_sql(_tracking_sql(python_rows))
        else:
            # Tracked on the fast path's connection, with the rows of the files read in Python, into a
            # Parquet file the store scans (_expand_sql): the fast path's connection (and its memory) is gone before the
            # store's scan, whatever happens next; the file goes with the staging file.
            out = _temp_path(".parquet", options)
            staged.cleanup.append(out)
            # (t leaves out the columns that are NULL, or t_start, in every row of this format)
            stored = {"t_end": "t_start", **{c: f"NULL::{STAGE_COLUMNS[c]}" for c in nulls}}
            columns = ", ".join(f"{stored[c]} AS {c}" if c in stored else c for c in [*STAGE_COLUMNS, *_EXTRA])
            parts = [f"SELECT {columns} FROM t WHERE kind = 't' AND file_index IN "
                     f"({', '.join(map(str, sorted(fast.read)))})"] + ([python_rows] if writer.rows else [])
            typed = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in STAGE_COLUMNS.items())
            # (the connection-update skips as a count a file: a fraction of the rows to write)
            tracked = _tracking_sql(" UNION ALL ".join(parts), materialized=bool(writer.rows), counted=True)
            fast.side.execute(f"COPY (SELECT {typed}, n FROM ({_dedupe_sql(tracked, counted=True)})) "
                              f"TO {sql_str(str(out))} (FORMAT parquet, COMPRESSION uncompressed)")
            sql = _expand_sql(f"read_parquet({sql_str(str(out))})")
    except BaseException:  # the store never sees this Staged: remove its files here
        writer.close()
        for path in staged.cleanup:
            path.unlink(missing_ok=True)
        raise
    finally:
        if fast.side is not None:
            fast.side.close()
        _remove_files(fast.spill)
    staged.relations.append(StagedRelation(sql=sql, files=list(files), time_unit=1_000_000, null_columns=nulls))
    # Files read in Python reported their bad lines as they went; in a file the fast path read, the bad
    # tuples were counted in SQL and the Python reader names them (lines, fields) on demand, reading again
    # only the records that hold the first of them.
    with_bad = {files[i].path: records for i, records in fast.bad.items()}
    staged.locate_bad = lambda src: _locate(src, options, with_bad[src.path]) if src.path in with_bad else []
    return staged


# -- DuckDB fast path ---------------------------------------------------------------------------------
#
# A blob is read by DuckDB (read_json_objects and json_transform_strict, the records unnested down to their
# tuples, each tuple split and checked in SQL) when the outcome is certain to be the Python reader's, tuple
# for tuple; otherwise the whole file is read by the Python reader. Certain means:
# - the file passes a byte pre-scan (which also reports reading progress): it is one ``{"records": [``
#   document as the streaming parser takes it (records the first key), cut into pieces at records
#   (see _PIECE_BYTES) or at most FAST_MAX_BYTES once decompressed, with no backslash anywhere (no
#   escapes: every string is its own text) and no comma before a closing bracket (yyjson accepts
#   trailing commas, Python does not); an NSG file does not name flowLogVersion at all (a null
#   flowLogVersion is a VNet record to Python, absent to DuckDB);
# - DuckDB parses it (each piece) as exactly one document (invalid UTF-8, control characters in strings,
#   comments, a repeated key, a value of the wrong JSON type for the members below, a record without
#   one of them: errors, so Python reads it); a file that names flowLogVersion is read as VNet records,
#   any other as NSG records (a record of the other kind lacks the members: Python);
# - every record has the structure _groups walks, with versions 1, 2 (NSG) or 4 (VNet) written as those
#   plain JSON integers, and every NIC name is null or a JSON string;
# - no tuple has counters whose sums leave UBIGINT. An address with a colon (IPv6) is rewritten as
#   canonical_ip writes it (Python itself, once per distinct text: _canonical_v6), before connections
#   are tracked; a tuple with one that canonical_ip refuses is bad.
# A tuple is then either good - its staging row is exactly parse_tuple's - or certainly bad: staged with
# the status ``bad-tuple``, which the store counts as a bad line; _locate reports its line and field.
# - no record can be over MAX_RECORD_CHARS, which the streaming parser refuses (see _fast_path).
# DuckDB holds a JSON document whole, so a blob it reads as one document is at most FAST_MAX_BYTES; the
# pieces of a larger blob are documents of their own. The tuples are tracked into connections and the
# both-ends rule applied on the fast path's connection, together with the rows of the files read in
# Python, into a Parquet file the store scans: the fast path's connection is closed when stage() returns,
# whatever happens to the ingest after it.

FAST_MAX_BYTES = 128 << 20
# A blob longer than this is cut into pieces, at a record boundary, each read by DuckDB as a document of its
# own: the pieces are parsed in parallel, and DuckDB never holds more than a few pieces of a large blob. A
# cut is at a comma between "}" and "{", at a line break (as blobs have them between records: one record
# per line, or a line starting with ",{"); a piece's text is written as the one element of a list,
# {"records": [[piece]]}. If a cut is not between two records, its pieces are not both complete lists of
# values and one fails to parse, or parses as other than one list: the file then goes to the Python reader
# (a list of pieces that each parse as one list of values is exactly the array they were cut from, since a
# JSON value ends where it ends whatever follows it, and no escape can hide a quote: there are none).
_PIECE_BYTES = 8 << 20
# Pieces keep DuckDB's memory bounded whatever the blob's size (a 1 GB blob of 14.5 M tuples: 722 MB peak
# RSS, the Python reader's result exactly, 3.6 times faster); a limit for tests.
_PIECED_MAX_BYTES = 1 << 62
_PIECE_MAX = 64 << 20  # no cut in this much: the file is read as one document (if it is small enough)
_CUT = re.compile(rb"\}(?:[ \t\r]*,[ \t\r]*\n|[ \t\r]*\n,)\{")
_END = re.compile(rb"\][ \t\n\r]*\}[ \t\n\r]*\Z")
_FAST_BATCH_BYTES = 64 << 20  # small blobs are read together, up to this much at a time
_PRE_CHUNK = 8 << 20
# seq = file index << 80 | position in the file: log order across the batch (the fast path's position:
# piece << 56 | record << 32 | position in the record; more pieces, records or tuples: Python)
_SEQ_BITS = 80
_FAST_HEAD = re.compile(rb"[ \t\n\r]*\{[ \t\n\r]*\"records\"[ \t\n\r]*:[ \t\n\r]*\[")
_BAD_TUPLE = "bad-tuple"
_NUM = "[0-9]+"
_COUNTERS = f"({_NUM},{_NUM},{_NUM},{_NUM}|,,,)"
# A tuple of this shape is good once its numbers are in range (parse_tuple's checks, field by field).
_SHAPES = {
    4: f"{_NUM},{IPV4_PATTERN},{IPV4_PATTERN},{_NUM},{_NUM},{_NUM},[IO],[BCED],[^,]*,{_COUNTERS}",
    2: f"{_NUM},{IPV4_PATTERN},{IPV4_PATTERN},{_NUM},{_NUM},[TU],[IO],[AD],[BCE],{_COUNTERS}",
    1: f"{_NUM},{IPV4_PATTERN},{IPV4_PATTERN},{_NUM},{_NUM},[TU],[IO],[AD]",
}
_REC = ('STRUCT("flowLogVersion" JSON, "macAddress" JSON, '
        '"flowRecords" STRUCT("flows" STRUCT("flowGroups" STRUCT("flowTuples" VARCHAR[])[])[]), '
        '"properties" STRUCT("Version" JSON, "flows" STRUCT("flows" STRUCT("mac" JSON, "flowTuples" VARCHAR[])[])[]))')
# What json_transform_strict reads of a record (a VNet record in a file that names flowLogVersion, else an NSG
# record), cast to _REC (by name; the other kind's members NULL). read_json_objects and json_transform_strict
# parse and convert as read_json(columns=...) does (same yyjson reading, strict casts: a value of the wrong
# JSON type, a repeated key, invalid UTF-8 are errors), at a fraction of its cost (read_json spends 1.3 -
# 1.9 s on the 76 MB VNet benchmark blob, these 0.3 s; DuckDB 2.0); json_transform_strict also fails on a
# missing member, where read_json gives NULL: such a file goes to the Python reader, which is exact.
_REC_VNET = {"flowLogVersion": "JSON", "macAddress": "JSON",
             "flowRecords": {"flows": [{"flowGroups": [{"flowTuples": ["VARCHAR"]}]}]}}
_REC_NSG = {"properties": {"Version": "JSON", "flows": [{"flows": [{"mac": "JSON", "flowTuples": ["VARCHAR"]}]}]}}


@dataclass
class _Fast:
    read: set[int]  # file indexes whose tuples are in the table t of ``side``
    bad: dict[int, set[int]]  # ... of which some tuples are bad: the first records with one (_bad_records)
    side: duckdb.DuckDBPyConnection | None  # the fast path's connection (None: nothing read)
    spill: list[Path] = field(default_factory=list)  # files t reads (removed once side is closed)


@dataclass
class _Pre:
    size: int  # decompressed bytes
    names_version: bool  # the text contains "flowLogVersion"
    # The file's records array cut into pieces (see _PIECE_BYTES): (path, bytes) of each piece file, or
    # None when DuckDB reads the file itself, as one document.
    pieces: list[tuple[Path, int]] | None = None


def _prescan(src: SourceFile, options: ReaderOptions) -> _Pre | None:
    """The byte checks of the fast path (see above); None: the Python reader reads the file.

    A file longer than _PIECE_BYTES is also cut into pieces on the way, each a document of its own."""
    key = b'"flowLogVersion"'
    pieces: list[tuple[Path, int]] = []
    ok = False
    try:
        with src.path.open("rb") as raw:
            fh = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if src.gzip else raw
            size = lines = 0
            comma = names = False
            tail = b""
            pending = bytearray()  # the text after the last cut (after the head, before the first)
            cutting = True  # False: no cut found in _PIECE_MAX bytes, the file is read as one document
            while chunk := fh.read(_PRE_CHUNK):
                if size == 0:
                    head = _FAST_HEAD.match(chunk)
                    if head is None:
                        return None
                    chunk_text = chunk[head.end():]
                else:
                    chunk_text = chunk
                size += len(chunk)
                if b"\\" in chunk or _trailing_comma(chunk, comma):
                    return None
                names = names or key in chunk or key in tail + chunk[:len(key)]
                stripped = chunk.rstrip(b" \t\n\r")
                comma = stripped.endswith(b",") or (comma and not stripped)
                tail = chunk[-len(key):]
                lines += chunk.count(b"\n")
                if cutting:
                    pending += chunk_text
                    while (cut := _CUT.search(pending, _PIECE_BYTES)) is not None:
                        pieces.append(_write_piece(pending[:cut.start() + 1], options))
                        del pending[:cut.end() - 1]
                    if len(pending) > _PIECE_MAX:
                        if pieces:
                            return None
                        cutting = False
                        pending = bytearray()
                if size > (_PIECED_MAX_BYTES if pieces else FAST_MAX_BYTES):
                    return None
                options.report_read(src.path, raw.tell(), lines)
            if not size:
                return None
            if pieces:  # the last piece ends the records array, and the file
                end = _END.search(pending)
                if end is None:
                    return None
                pieces.append(_write_piece(pending[:end.start()], options))
            ok = True
            return _Pre(size, names, pieces or None)
    except (OSError, EOFError):  # unreadable, a truncated gzip: the Python reader says so
        return None
    finally:
        if not ok:
            _remove_pieces(pieces)


def _write_piece(text: bytearray | bytes, options: ReaderOptions) -> tuple[Path, int]:
    """A piece file: the records of ``text`` (a part of the records array between two cuts) as the one
    element of a list in a document of their own, {"records": [[...]]} (see _PIECE_BYTES)."""
    path = _temp_path(".json", options)
    with path.open("wb") as out:
        out.write(b'{"records":[[')
        out.write(text)
        out.write(b"]]}")
    return path, len(text) + 16


def _remove_pieces(pieces: Sequence[tuple[Path, int]]) -> None:
    for path, _ in pieces:
        path.unlink(missing_ok=True)


_BLANK = frozenset(b" \t\n\r")


def _trailing_comma(chunk: bytes, comma_before: bool) -> bool:
    """Whether a ``]`` or ``}`` of ``chunk`` follows a comma, blanks aside (inside strings too: a superset);
    ``comma_before``: the text before ``chunk`` ends with a comma and blanks. Closing brackets are few in
    a blob (a tuple has none), so each is looked at, rather than every comma."""
    for closer in (b"]", b"}"):
        pos = chunk.find(closer)
        while pos >= 0:
            k = pos - 1
            while k >= 0 and chunk[k] in _BLANK:
                k -= 1
            if (chunk[k] == 0x2C) if k >= 0 else comma_before:
                return True
            pos = chunk.find(closer, pos + 1)
    return False


@dataclass(frozen=True)
class _Unit:
    """What one read_json_objects reads: a file (piece 0, ``path`` None) or one piece of it."""

    fi: int
    pc: int
    path: Path | None
    size: int
    names_version: bool

    @property
    def kind(self) -> int:  # 0: a plain file, 1: a gzip file, 2: a piece
        return 2 if self.path is not None else 0


def _fast_path(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> _Fast:
    """Reads what it can (see above) into the table ``t`` of a connection of its own.

    DuckDB runs there because a file it cannot parse fails a statement, which would abort the store's
    transaction; on its own connection the file just goes to the Python reader."""
    pre: dict[int, _Pre] = {}
    try:
        for i, src in enumerate(files):
            if (p := _prescan(src, options)) is not None:
                pre[i] = p
        if not pre:
            return _Fast(read=set(), bad={}, side=None)
        return _fast_read(con, files, pre, options)
    finally:  # the pieces are in the table t (or the file goes to Python): their files go now
        for p in pre.values():
            _remove_pieces(p.pieces or [])


def _fast_read(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], pre: dict[int, _Pre],
               options: ReaderOptions) -> _Fast:
    settings = con.execute("SELECT current_setting('memory_limit'), current_setting('threads'), "
                           "current_setting('temp_directory')").fetchall()[0]
    side = duckdb.connect()
    spill: list[Path] = []
    try:
        side.execute(f"SET memory_limit = {sql_str(str(settings[0]))}")
        side.execute(f"SET threads = {int(settings[1])}")
        if settings[2]:
            side.execute(f"SET temp_directory = {sql_str(str(settings[2]))}")
        side.execute("SET preserve_insertion_order = false")
        units = {i: [_Unit(i, pc, path, size, p.names_version) for pc, (path, size) in enumerate(p.pieces)]
                 if p.pieces else [_Unit(i, 0, None, p.size, p.names_version)] for i, p in pre.items()}
        # batches of one kind (plain / gzip file, piece) and one record type (NSG / VNet), up to
        # _FAST_BATCH_BYTES each
        batches: list[list[_Unit]] = []
        for kind, nv in ((k, nv) for k in (0, 1, 2) for nv in (False, True)):
            batch: list[_Unit] = []
            size = 0
            for u in (u for i in sorted(units) for u in units[i]):
                if (u.kind or int(files[u.fi].gzip)) != kind or u.names_version != nv:
                    continue
                if batch and size + u.size > _FAST_BATCH_BYTES:
                    batches.append(batch)
                    batch, size = [], 0
                batch.append(u)
                size += u.size
            if batch:
                batches.append(batch)
        failed: set[int] = set()
        created = False
        # More than DuckDB would keep in memory: the judged tuples go to Parquet files (compressed, and
        # streamed: memory holds a few pieces), which t then reads.
        big = sum(p.size for p in pre.values()) > FAST_MAX_BYTES
        while batches:
            batch = [u for u in batches.pop(0) if u.fi not in failed]
            if not batch:
                continue
            try:  # the documents are parsed, unnested to their tuples and each tuple judged in one pass
                sql = _tuples_select(_scan_sql(files, batch))
                if big:
                    out = _temp_path(".parquet", options)
                    spill.append(out)
                    # (Parquet has no 128-bit integer: DuckDB would write seq as a DOUBLE, losing the low bits
                    # that order the tuples; DECIMAL(38, 0) keeps it exact)
                    side.execute(f"COPY (SELECT * REPLACE (CAST(seq AS DECIMAL(38, 0)) AS seq) FROM ({sql})) "
                                 f"TO {sql_str(str(out))} (FORMAT parquet)")
                else:
                    side.execute(("INSERT INTO t " if created else "CREATE TEMP TABLE t AS ") + sql)
                    created = True
            except duckdb.Error:
                if big:
                    spill.pop().unlink(missing_ok=True)
                if len(batch) > 1:  # find the files DuckDB cannot read; the others are still read here
                    batches[:0] = [batch[:len(batch) // 2], batch[len(batch) // 2:]]
                else:
                    failed.add(batch[0].fi)
        read = set(units) - failed
        if not read:
            side.close()
            _remove_files(spill)
            return _Fast(read=set(), bad={}, side=None)
        if spill:
            parquet = f"read_parquet([{', '.join(sql_str(str(p)) for p in spill)}])"
            v6 = side.execute(f"SELECT count(*) FROM {parquet} WHERE v6").fetchall()[0][0]
            side.execute(f"CREATE TEMP {'TABLE' if v6 else 'VIEW'} t AS "
                         f"SELECT * REPLACE (CAST(seq AS HUGEINT) AS seq) FROM {parquet}")
        _canonical_v6(side)
        # One document per file or piece, every record and tuple judged; and no record that the streaming
        # reader refuses (over MAX_RECORD_CHARS): the file or piece is no longer, or a record is at most its
        # text less the other records' good tuples (their quoted text is in the file as it is, without
        # escapes, and a character takes a byte or more).
        with_bad: set[int] = set()
        sizes = {(u.fi, u.pc): u.size for us in units.values() for u in us}
        too_long: set[int] = set()
        for fi, pc, largest, total in side.execute("""
                SELECT file_index, pc, max(n), sum(n) FROM (
                  SELECT file_index, pc, ri, coalesce(sum(text_bytes), 0) AS n FROM t GROUP BY ALL) GROUP BY ALL
                """).fetchall():
            size = sizes.get((int(fi), int(pc)), 0)
            if size > MAX_RECORD_CHARS and size - int(total) + int(largest) > MAX_RECORD_CHARS:
                too_long.add(int(fi))
        for fi, docs, doubt, any_bad in side.execute(f"""
                SELECT file_index, count(*) FILTER (kind = 'm'), bool_or(doubt),
                  bool_or(kind = 't' AND log_status = '{_BAD_TUPLE}') FROM t GROUP BY ALL""").fetchall():
            if int(fi) not in read:
                continue
            if docs != len(units[int(fi)]) or doubt or int(fi) in too_long:
                read.discard(int(fi))
            elif any_bad:
                with_bad.add(int(fi))
        if not read:
            side.close()
            _remove_files(spill)
            return _Fast(read=set(), bad={}, side=None)
        bad = _bad_records(side, with_bad, options.max_samples)
    except BaseException:
        side.close()
        _remove_files(spill)
        raise
    return _Fast(read=read, bad=bad, side=side, spill=spill)


def _temp_path(suffix: str, options: ReaderOptions) -> Path:
    fd, name = tempfile.mkstemp(prefix="microseg-azure-", suffix=suffix, dir=options.tmp_dir)
    os.close(fd)
    return Path(name)


def _remove_files(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _canonical_v6(side: duckdb.DuckDBPyConnection) -> None:
    """The addresses with a colon of the tuples judged 'v6' in the table t, as the Python reader writes them
    (canonical_ip itself, once per distinct text); a tuple with an address it refuses is bad."""
    texts = [ip for (ip,) in side.execute("""SELECT DISTINCT ip FROM (SELECT src_ip AS ip FROM t WHERE v6
        UNION ALL SELECT dst_ip FROM t WHERE v6) WHERE contains(ip, ':') ORDER BY ip""").fetchall()]
    if not texts:
        return
    side.execute("CREATE TEMP TABLE v6 AS SELECT unnest($1::VARCHAR[]) AS raw, unnest($2::VARCHAR[]) AS canon",
                 [texts, [canonical_ip(ip) for ip in texts]])
    for col in ("src_ip", "dst_ip"):
        side.execute(f"UPDATE t SET {col} = v6.canon FROM v6 WHERE t.v6 AND t.{col} = v6.raw")
    nulls = ", ".join(f"{c} = NULL" for c in (*STAGE_COLUMNS, *_EXTRA, "text_bytes")
                      if c not in ("t_end", "tcp_flags", "is_reply", "src_workload", "dst_workload", "log_status",
                                   "file_index", "seq"))
    side.execute(f"UPDATE t SET {nulls}, log_status = '{_BAD_TUPLE}' WHERE v6 AND (src_ip IS NULL OR dst_ip IS NULL)")
    side.execute("DROP TABLE v6")


def _bad_records(side: duckdb.DuckDBPyConnection, files: set[int], max_samples: int) -> dict[int, set[int]]:
    """The first ``max_samples`` records (positions in the file, from 1) with a bad tuple, of each of ``files``:
    the Python reader reads those again to report the first bad tuples' lines and fields."""
    if not files:
        return {}
    rows = side.execute(f"""
        WITH r AS (
          SELECT file_index, pc, ri, max(nrec) AS n, bool_or(kind = 't' AND log_status = '{_BAD_TUPLE}') AS bad
          FROM t WHERE file_index IN ({", ".join(map(str, sorted(files)))}) GROUP BY ALL),
        p AS (
          SELECT file_index, pc, coalesce(sum(n) OVER (PARTITION BY file_index ORDER BY pc
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS base
          FROM (SELECT file_index, pc, max(n) AS n FROM r GROUP BY ALL))
        SELECT file_index, base + ri AS ordinal FROM r JOIN p USING (file_index, pc)
        WHERE bad QUALIFY row_number() OVER (PARTITION BY file_index ORDER BY base + ri) <= {int(max_samples)}
        """).fetchall()
    out: dict[int, set[int]] = {fi: set() for fi in files}
    for fi, ordinal in rows:
        out[int(fi)].add(int(ordinal))
    return out


def _scan_sql(files: Sequence[SourceFile], batch: list[_Unit]) -> str:
    """One row per tuple of the files or pieces of ``batch`` (all of one kind), with its file, piece, record,
    version, NIC and position; one row with no tuple (record 0) per document, and one per record SQL does
    not read (NULL version). One pass over the documents: nothing but the result is materialised."""
    def path(u: _Unit) -> str:
        return str(u.path if u.path is not None else files[u.fi].path)

    paths = "[" + ", ".join(sql_str(path(u)) for u in batch) + "]"
    names = ", ".join(f"({sql_str(path(u))}, {u.fi}, {u.pc}, {str(u.names_version).lower()})" for u in batch)
    size = max(u.size for u in batch) + 1
    piece = batch[0].path is not None
    gz = not piece and files[batch[0].fi].gzip
    names_version = batch[0].names_version
    # the records of one document (a piece: of the one element of its list), as _REC values
    shape: Any = [_REC_VNET if names_version else _REC_NSG]
    records = (f"CAST(json_transform_strict(json, {sql_str(json.dumps({'records': [shape] if piece else shape}))})"
               f".records AS {_REC}[]{'[]' if piece else ''})")
    if piece:
        # A piece is {"records": [[...]]}: its records are those of the one element of its list (unnested:
        # one row a document for that element, as the count of documents checks). One read a piece, not one
        # for all: DuckDB reads a list of files at twice the cost (measured, 1.5 - DuckDB 2.0).
        source = " UNION ALL ".join(
            f"SELECT {u.fi} AS fi, {u.pc} AS pc, {str(u.names_version).lower()} AS names_version, "
            f"unnest({records}) AS recs FROM read_json_objects({sql_str(path(u))}, format='unstructured', "
            f"maximum_object_size={size}, compression='none')" for u in batch)
    else:
        source = f"""SELECT m.fi, m.pc, m.names_version, {records} AS recs
    FROM read_json_objects({paths}, format='unstructured', filename=true, maximum_object_size={size},
      compression='{"gzip" if gz else "none"}') AS j
    JOIN (VALUES {names}) AS m(path, fi, pc, names_version) ON j.filename = m.path"""

    def nic(m: str) -> str:  # str(mac or "") or None; NULL also for a value that is no string (checked below)
        return f"nullif(CASE WHEN starts_with({m}, '\"') THEN substr({m}, 2, strlen({m}) - 2) END, '')"

    def no_string(m: str) -> str:
        return f"({m} IS NOT NULL AND NOT starts_with({m}, '\"'))"

    vnet_ok = ("r.flowLogVersion = '4' AND r.flowRecords.flows IS NOT NULL AND NOT " + no_string("r.macAddress")
               + " AND NOT coalesce(list_bool_or(list_transform(r.flowRecords.flows, lambda f: f IS NULL OR "
               "f.flowGroups IS NULL OR coalesce(list_bool_or(list_transform(f.flowGroups, lambda g: g IS NULL OR "
               "g.flowTuples IS NULL)), false))), false)")
    nsg_ok = ("NOT names_version AND r.properties.Version IN ('1', '2') AND r.properties.flows IS NOT NULL "
              "AND NOT coalesce(list_bool_or(list_transform(r.properties.flows, lambda x: x IS NULL OR x.flows IS NULL "
              "OR coalesce(list_bool_or(list_transform(x.flows, lambda n: n IS NULL OR n.flowTuples IS NULL OR "
              + no_string("n.mac") + ")), false))), false)")
    groups = (f"CASE WHEN r.flowLogVersion IS NOT NULL THEN flatten(list_transform(r.flowRecords.flows, "
              f"lambda f: list_transform(f.flowGroups, lambda g: {{'nic': {nic('r.macAddress')}, "
              "'t': g.flowTuples}))) "
              f"ELSE flatten(list_transform(r.properties.flows, lambda x: list_transform(x.flows, "
              f"lambda n: {{'nic': {nic('n.mac')}, 't': n.flowTuples}}))) END")
    return f"""
WITH docs AS (
  SELECT fi, pc, names_version, recs IS NULL AS no_records, list_prepend(NULL, recs) AS records,
    coalesce(len(recs), 0) AS nrec
  FROM ({source})),
recs AS (
  SELECT fi, pc, ri, nrec, version, no_records,
    CASE WHEN version IS NOT NULL THEN {groups} END AS gs
  FROM (
    SELECT fi, pc, ri, nrec, r, no_records, CASE WHEN ri = 0 OR r IS NULL OR ri >= 16777216 THEN NULL
        WHEN r.flowLogVersion IS NOT NULL THEN CASE WHEN {vnet_ok} THEN 4 END
        WHEN {nsg_ok} THEN CAST(CAST(r.properties.Version AS VARCHAR) AS INTEGER) END AS version
    FROM (SELECT fi, pc, nrec, names_version, no_records, unnest(records) AS r, unnest(range(len(records))) AS ri
          FROM docs))),
grps AS (
  SELECT fi, pc, ri, nrec, version, no_records,
    CASE WHEN version IS NULL THEN [{{'nic': NULL, 't': [NULL], 'off': 0}}]
      ELSE list_transform(gs, lambda x, i: {{'nic': x.nic, 't': x.t,
        'off': CAST(coalesce(list_sum(list_transform(gs[1:i - 1], lambda y: len(y.t))), 0) AS BIGINT)}})
      END AS gs2,
    coalesce(list_sum(list_transform(gs, lambda y: len(y.t))), 0) >= 4294967296 AS too_many
  FROM recs),
tuples AS (
  SELECT fi, pc, ri, nrec, version, no_records, too_many, grp.nic AS nic, grp.off AS off, unnest(grp.t) AS t,
    unnest(range(len(grp.t))) AS ti
  FROM (SELECT fi, pc, ri, nrec, version, no_records, too_many, unnest(gs2) AS grp FROM grps))
SELECT * FROM tuples"""


def _tuples_select(raw: str) -> str:
    """The rows of the query ``raw`` (see _scan_sql): ``kind`` 't' for a tuple - 'good' (its row exactly
    parse_tuple's, staging columns, NIC, state and seq as _Stager writes them; and its quoted length),
    'bad' (parse_tuple raises: the status 'bad-tuple') or 'doubt' (``doubt``: its file goes to Python) -
    'm' for a document, 'd' for a record SQL does not read (``doubt``)."""
    max_u64 = _MAX_UINT64

    def digits(x: str, limit: int) -> str:  # _int
        return f"(regexp_full_match({x}, '[0-9]+') AND coalesce(TRY_CAST({x} AS UBIGINT) <= {limit}, false))"

    def ipv4(x: str) -> str:
        return f"regexp_full_match({x}, '{IPV4_PATTERN}')"

    counters_ok = ("((f[10] = '' AND f[11] = '' AND f[12] = '' AND f[13] = '') OR (" + " AND ".join(
        digits(f"f[{i}]", max_u64) for i in range(10, 14)) + "))")
    # every check of parse_tuple but the addresses, for a tuple not of the regular shape
    fields_ok = f"""CASE version
      WHEN 4 THEN len(f) = 13 AND {digits('f[1]', max_u64 // 1000)} AND {digits('f[6]', 255)}
        AND f[8] IN ('B', 'C', 'E', 'D') AND f[7] IN ('I', 'O') AND {counters_ok}
      WHEN 2 THEN len(f) = 13 AND {digits('f[1]', max_u64 // 1_000_000)} AND f[6] IN ('T', 'U') AND f[8] IN ('A', 'D')
        AND f[9] IN ('B', 'C', 'E') AND f[7] IN ('I', 'O') AND {counters_ok}
      ELSE len(f) = 8 AND {digits('f[1]', max_u64 // 1_000_000)} AND f[6] IN ('T', 'U') AND f[8] IN ('A', 'D')
        AND f[7] IN ('I', 'O') END
      AND {digits('f[4]', 65535)} AND {digits('f[5]', 65535)}"""
    # (n<i>: TRY_CAST(f[i] AS UBIGINT), computed once for the checks and the values)
    in_range = f"""CASE version WHEN 4 THEN n1 <= {max_u64 // 1000} AND n6 <= 255 ELSE n1 <= {max_u64 // 1_000_000} END
      AND n4 <= 65535 AND n5 <= 65535
      AND (version = 1 OR f[10] = '' OR (n10 IS NOT NULL AND n11 IS NOT NULL AND n12 IS NOT NULL
        AND n13 IS NOT NULL))"""
    # (regexp_matches with anchors: the same full match as regexp_full_match, measurably faster)
    shape = " ".join(f"WHEN {v} THEN regexp_matches(t, '^(?:{_SHAPES[v]})$')" for v in (4, 2, 1))
    # 'good', 'bad' or 'v6': good but for an address with a colon, which Python reads with canonical_ip (see
    # _canonical_v6)
    verdict = f"""CASE WHEN t IS NULL THEN 'bad'
      WHEN coalesce(CASE version {shape} END AND {in_range}, false) THEN 'good'
      WHEN NOT coalesce({fields_ok}, false) THEN 'bad'
      WHEN (contains(f[2], ':') OR {ipv4('f[2]')}) AND (contains(f[3], ':') OR {ipv4('f[3]')}) THEN 'v6'
      ELSE 'bad' END"""
    unit = "CASE version WHEN 4 THEN 1000 ELSE 1000000 END"
    counters = "version <> 1 AND f[10] <> ''"

    def total(a: int, b: int) -> str:
        return f"CASE WHEN {counters} THEN CAST(n{a} AS HUGEINT) + n{b} END"

    return f"""
SELECT CASE WHEN good THEN t_us END AS t_start,
  CASE WHEN good THEN f[2] END AS src_ip, CASE WHEN good THEN f[3] END AS dst_ip,
  CASE WHEN good THEN CAST(n4 AS INTEGER) END AS src_port, CASE WHEN good THEN CAST(n5 AS INTEGER) END AS dst_port,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN CAST(n6 AS INTEGER) WHEN f[6] = 'T' THEN 6 ELSE 17 END AS proto,
  TRY_CAST(CASE WHEN good THEN nbytes END AS UBIGINT) AS bytes,
  TRY_CAST(CASE WHEN good THEN npackets END AS UBIGINT) AS packets,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN CASE WHEN f[8] = 'D' THEN 'drop' ELSE 'accept' END
    WHEN f[8] = 'A' THEN 'accept' ELSE 'drop' END AS action,
  CASE WHEN NOT good THEN NULL WHEN f[7] = 'I' THEN 'ingress' ELSE 'egress' END AS direction,
  CASE WHEN good THEN 'OK' ELSE '{_BAD_TUPLE}' END AS log_status, fi AS file_index,
  CASE WHEN good THEN nic END AS nic,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN nullif(f[8], 'D') WHEN version = 2 AND f[8] = 'A' THEN f[9]
    END AS state,
  seq, pc, ri, CASE WHEN ri = 0 THEN nrec END AS nrec, verdict = 'v6' AS v6,
  CASE WHEN good THEN strlen(t) + 2 END AS text_bytes,
  CASE WHEN ri = 0 THEN 'm' WHEN version IS NULL THEN 'd' ELSE 't' END AS kind,
  CASE WHEN ri = 0 THEN no_records WHEN version IS NULL THEN true
    ELSE coalesce(too_many OR verdict = 'doubt' OR (good AND (nbytes > {max_u64} OR npackets > {max_u64})), false)
    END AS doubt
FROM (
  SELECT *, verdict IN ('good', 'v6') AS good,
    CASE WHEN verdict IN ('good', 'v6') THEN CAST(n1 * {unit} AS UBIGINT) END AS t_us,
    CASE WHEN verdict IN ('good', 'v6') THEN {total(11, 13)} END AS nbytes,
    CASE WHEN verdict IN ('good', 'v6') THEN {total(10, 12)} END AS npackets
  FROM (
    SELECT *, CASE WHEN version IS NULL THEN 'doubt' ELSE {verdict} END AS verdict
    FROM (SELECT *, {", ".join(f"TRY_CAST(f[{i}] AS UBIGINT) AS n{i}" for i in (1, 4, 5, 6, 10, 11, 12, 13))}
    FROM (
      SELECT fi, pc, ri, nrec, version, no_records, too_many, nic, t,
        (CAST(fi AS HUGEINT) << {_SEQ_BITS}) + (CAST(pc AS HUGEINT) << 56) + (CAST(ri AS HUGEINT) << 32) + off + ti
          AS seq,
        string_split(t, ',') AS f
      FROM ({raw})))))"""
