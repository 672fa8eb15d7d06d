"""Azure Network Watcher flow logs: NSG flow logs (versions 1 and 2) and VNet flow logs (version 4).

Format facts (Microsoft Learn, "Flow logging for network security groups" - log format - and
"Virtual network flow logs" - log format; ``shared/samples/flows/azure/README.txt``):

- A blob (``PT1H.json``) is one JSON document ``{"records": [...]}``; exports through Event Hubs and
  collectors also write one record (or one ``{"records": ...}``) per line. Both are read by one
  incremental parser (``json.JSONDecoder.raw_decode`` over a buffered reader): a ``records`` array is
  taken record by record, so memory holds one record and a read chunk, never the blob (a busy VNet's
  hour can be gigabytes). A record larger than :data:`MAX_RECORD_CHARS` is refused. After a syntax
  error the rest of that line is a bad line and reading resumes on the next line, one value per line.
  A bad tuple is reported with the line its text is on.
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

import functools
import gzip
import io
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    STAGE_COLUMNS,
    ReaderOptions,
    SourceFile,
    Staged,
    StageRow,
    StageWriter,
)

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
_EXTRA = {"nic": "VARCHAR", "state": "VARCHAR", "seq": "BIGINT"}


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


@functools.lru_cache(maxsize=1 << 16)
def _ip_text(v: str) -> str | None:
    # Cached: a VNet's logs name the same few thousand addresses millions of times.
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        return None


def _ip(v: str, field: str) -> str:
    ip = _ip_text(v)
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


def _tracking_sql(tuples_sql: str) -> str:
    """One record per connection (see the module docstring), as staging rows.

    A tuple opens a connection when it is a B, the first of its NIC, 5-tuple and direction, or follows
    an E; the opener carries the connection's end (latest tuple) and summed counters (NULL when no
    tuple had any, as in a lone B); every other tuple of it is a ``connection-update`` skip. Tuples
    with no state are records as they are.
    """
    status = f"CASE WHEN seq = first_seq THEN 'OK' ELSE '{CONNECTION_UPDATE}' END AS log_status"
    # The sorts behind the window functions carry only the columns they need (they spill at scale);
    # the staging columns Azure never fills are NULL here.
    nulls = {"tcp_flags": "NULL::INTEGER AS tcp_flags", "is_reply": "NULL::BOOLEAN AS is_reply",
             "src_workload": "NULL::VARCHAR AS src_workload", "dst_workload": "NULL::VARCHAR AS dst_workload"}
    opener = ", ".join({"t_end": "conn_end AS t_end", "packets": "conn_packets AS packets",
                        "bytes": "conn_bytes AS bytes", "log_status": status, **nulls}.get(c, c) for c in STAGE_COLUMNS)
    return f"""
WITH t AS ({tuples_sql}),
opened AS (
  SELECT *, CASE WHEN state = 'B' OR prev IS NULL OR prev = 'E' THEN 1 ELSE 0 END AS opens
  FROM (SELECT {_CONN}, seq, state, t_start, packets, bytes, action, file_index,
          lag(state) OVER (PARTITION BY {_CONN} ORDER BY seq) AS prev FROM t WHERE state IS NOT NULL)),
numbered AS (
  SELECT *, sum(opens) OVER (PARTITION BY {_CONN} ORDER BY seq ROWS UNBOUNDED PRECEDING) AS conn FROM opened),
summed AS (
  SELECT *, min(seq) OVER c AS first_seq, max(t_start) OVER c AS conn_end, sum(packets) OVER c AS conn_packets,
    sum(bytes) OVER c AS conn_bytes
  FROM numbered WINDOW c AS (PARTITION BY {_CONN}, conn))
SELECT {opener} FROM summed
UNION ALL
SELECT {_STAGE_LIST} FROM t WHERE state IS NULL"""


def _dedupe_sql(rows_sql: str) -> str:
    """The staged rows with each connection seen at both ends counted once (see the module docstring)."""
    window_us = PEER_WINDOW_SECONDS * 1_000_000
    # HUGEINT: start times are unsigned microseconds; a difference must not wrap or overflow.
    same = (f"p.src_ip = s.src_ip AND p.dst_ip = s.dst_ip AND p.src_port = s.src_port AND p.dst_port = s.dst_port "
            f"AND p.proto = s.proto AND p.log_status = 'OK' AND abs(CAST(p.t_start AS HUGEINT) - "
            f"CAST(s.t_start AS HUGEINT)) <= {window_us}")
    return f"""
WITH s AS ({rows_sql})
SELECT s.* REPLACE (
  CASE WHEN s.direction = 'ingress' AND s.log_status = 'OK'
            AND EXISTS (SELECT 1 FROM s AS p WHERE p.direction = 'egress' AND {same})
       THEN '{PEER_DUPLICATE}' ELSE s.log_status END AS log_status,
  CASE WHEN s.direction = 'egress' AND s.log_status = 'OK' AND s.action = 'accept'
            AND EXISTS (SELECT 1 FROM s AS p WHERE p.direction = 'ingress' AND p.action = 'drop' AND {same})
       THEN 'drop' ELSE s.action END AS action)
FROM s"""


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    del con  # parsed in Python and bulk-loaded through the staging file
    staged = Staged(relations=[], actions=dict(ACTIONS),
                    skip_statuses=frozenset({PEER_DUPLICATE, CONNECTION_UPDATE}))
    writer = StageWriter(options.tmp_dir, extra=_EXTRA)
    staged.cleanup.append(writer.path)
    stager = _Stager(writer, staged, options)
    done = False
    try:
        for index, src in enumerate(files):
            for first_line, obj, text, error in _documents(src, options):
                if error is not None:
                    stager.bad(src, first_line, error.field, error.message, text)
                else:
                    stager.document(src, index, obj, text, first_line)
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1_000_000)
    # Connections whose E is not in the batch are counted once all the same.
    relation.sql = _dedupe_sql(_tracking_sql(relation.sql))
    relation.null_columns = frozenset({"tcp_flags", "is_reply", "src_workload", "dst_workload"})
    staged.relations.append(relation)
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged
