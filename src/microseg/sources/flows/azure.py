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
- Blobs of up to :data:`FAST_MAX_BYTES` that DuckDB can read exactly as that parser does are read by
  DuckDB instead, many times faster (see "DuckDB fast path" below); the outcome is the same, tuple for
  tuple, and a bad tuple there is still reported by the Python parser, with its line and field.
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
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
    sql_list,
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


def _tracking_sql(tuples_sql: str) -> str:
    """One record per connection (see the module docstring), as staging rows.

    A tuple opens a connection when it is a B, the first of its NIC, 5-tuple and direction, or follows
    an E; the opener carries the connection's end (latest tuple) and summed counters (NULL when no
    tuple had any, as in a lone B); every other tuple of it is a ``connection-update`` skip. Tuples
    with no state are records as they are.
    """
    # One sort, log order within each NIC, 5-tuple and direction: ``conn`` numbers the connections - it
    # grows at every opener (by the B counted there, or by the E counted just before it) and nowhere
    # else, so the tuples of one connection share it - and ``opens`` marks the openers. A connection is
    # then one group: its opener's row with the group's end and sums, and a skipped row (no values
    # but its file) for each other tuple.
    opener = {"t_start": "t0", "t_end": "conn_end", "packets": "conn_packets", "bytes": "conn_bytes",
              "action": "action0", "file_index": "fi0", "log_status": "'OK'"}
    key = _CONN.split(", ")
    columns = ", ".join(
        f"CAST(CASE WHEN x < 0 THEN {opener.get(c, c if c in key else 'NULL')} END AS {t}) AS {c}"
        if c not in ("log_status", "file_index") else
        f"CASE WHEN x < 0 THEN 'OK' ELSE '{CONNECTION_UPDATE}' END AS log_status" if c == "log_status" else
        "CAST(CASE WHEN x < 0 THEN fi0 ELSE x END AS INTEGER) AS file_index"
        for c, t in STAGE_COLUMNS.items())
    return f"""
WITH t AS ({tuples_sql})
SELECT {columns}
FROM (
  SELECT *, unnest(list_prepend(-1, skips)) AS x
  FROM (
    SELECT {_CONN}, conn, arg_min(t_start, seq) AS t0, max(t_start) AS conn_end, sum(packets) AS conn_packets,
      sum(bytes) AS conn_bytes, arg_min(action, seq) AS action0, arg_min(file_index, seq) AS fi0,
      coalesce(list(file_index) FILTER (WHERE NOT opens), []) AS skips
    FROM (
      SELECT {_CONN}, seq, t_start, packets, bytes, action, file_index,
        coalesce(state = 'B' OR prev IS NULL OR prev = 'E', false) AS opens,
        coalesce(ends, 0) + begins AS conn
      FROM (
        SELECT {_CONN}, seq, t_start, packets, bytes, action, file_index, state,
          lag(state) OVER o AS prev,
          count(CASE WHEN state = 'E' THEN 1 END) OVER (o ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ends,
          count(CASE WHEN state = 'B' THEN 1 END) OVER (o ROWS UNBOUNDED PRECEDING) AS begins
        FROM t WHERE state IS NOT NULL
        WINDOW o AS (PARTITION BY {_CONN} ORDER BY seq)))
    GROUP BY ALL))
UNION ALL
SELECT {_STAGE_LIST} FROM t WHERE state IS NULL"""


def _dedupe_sql(rows_sql: str) -> str:
    """The staged rows with each connection seen at both ends counted once (see the module docstring).

    One sort: the records of each 5-tuple in time order; the nearest egress record (and ingress drop)
    before and after each record tell whether one lies within the window."""
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
                        for c in STAGE_COLUMNS)
    return f"""
WITH s AS ({rows_sql})
SELECT {columns}
FROM (
  SELECT *, max({egress}) {before} AS eg_before, min({egress}) {after} AS eg_after,
    max({denied}) {before} AS dr_before, min({denied}) {after} AS dr_after
  FROM s WHERE log_status = 'OK'
  WINDOW p AS (PARTITION BY src_ip, dst_ip, src_port, dst_port, proto ORDER BY t_start))
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


def _locate(src: SourceFile, options: ReaderOptions) -> list[BadLine]:
    """The bad lines the Python reader reports for ``src`` (the fast path counted them, see below)."""
    staged = Staged(relations=[], actions={}, skip_statuses=frozenset())
    _python_read(_Stager(cast(StageWriter, _Discard()), staged, options), src, 0, options)
    return staged.bad


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS),
                    skip_statuses=frozenset({PEER_DUPLICATE, CONNECTION_UPDATE}))
    writer = StageWriter(options.tmp_dir, extra=_EXTRA)
    staged.cleanup.append(writer.path)
    stager = _Stager(writer, staged, options)
    fast = _Fast(read=set(), bad=set(), side=None)
    done = False
    try:
        fast = _fast_path(con, files, options)
        for index, src in enumerate(files):
            if index not in fast.read:
                _python_read(stager, src, index, options)
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file and the fast path's here
            writer.path.unlink(missing_ok=True)
            if fast.side is not None:
                fast.side.close()
    nulls = frozenset({"tcp_flags", "is_reply", "src_workload", "dst_workload"})
    python_rows = writer.relation(list(files), time_unit=1_000_000).sql
    if fast.side is None:
        # Connections whose E is not in the batch are counted once all the same.
        staged.relations.append(StagedRelation(sql=_dedupe_sql(_tracking_sql(python_rows)), files=list(files),
                                               time_unit=1_000_000, null_columns=nulls))
    else:
        # Tracked on the fast path's connection, with the rows of the files read in Python, and streamed
        # (Arrow) into the store's aggregation: the staging rows are never held twice.
        side = fast.side
        parts = [f"SELECT {', '.join([*STAGE_COLUMNS, *_EXTRA])} FROM t WHERE kind = 't' AND file_index IN "
                 f"({', '.join(map(str, sorted(fast.read)))})"] + ([python_rows] if writer.rows else [])
        typed = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in STAGE_COLUMNS.items())
        rows = side.sql(f"SELECT {typed} FROM ({_dedupe_sql(_tracking_sql(' UNION ALL '.join(parts)))})")
        view = f"_ms_azure_{id(staged)}"
        con.register(view, rows.to_arrow_reader(1 << 16))

        def close(c: duckdb.DuckDBPyConnection) -> list[StagedRelation]:
            c.execute("SELECT 1").fetchall()  # unregister() refuses while a result of c is still open
            c.unregister(view)
            side.close()
            return []

        staged.relations.append(StagedRelation(sql=f"SELECT * FROM {view}", files=list(files), time_unit=1_000_000,
                                               after_scan=close, null_columns=nulls))
    # Files read in Python reported their bad lines as they went; in a file the fast path read, the bad
    # tuples were counted in SQL and the Python reader names them (lines, fields) on demand.
    with_bad = {files[i].path for i in fast.bad}
    staged.locate_bad = lambda src: _locate(src, options) if src.path in with_bad else []
    return staged


# -- DuckDB fast path ---------------------------------------------------------------------------------
#
# A blob is read by DuckDB (read_json, the records unnested down to their tuples, each tuple split and
# checked in SQL) when the outcome is certain to be the Python reader's, tuple for tuple; otherwise the
# whole file is read by the Python reader. Certain means:
# - the file passes a byte pre-scan (which also reports reading progress): it is one ``{"records": [``
#   document as the streaming parser takes it (records the first key), at most FAST_MAX_BYTES once
#   decompressed, with no backslash anywhere (no escapes: every string is its own text) and no comma
#   before a closing bracket (yyjson accepts trailing commas, Python does not); an NSG file does not
#   name flowLogVersion at all (a null flowLogVersion is a VNet record to Python, absent to DuckDB);
# - DuckDB parses it as exactly one document (invalid UTF-8, control characters in strings, comments,
#   a repeated key, a value of the wrong JSON type for the columns below: errors, so Python reads it);
# - every record has the structure _groups walks, with versions 1, 2 (NSG) or 4 (VNet) written as those
#   plain JSON integers, and every NIC name is absent, null or a JSON string;
# - no tuple names an IPv6 address (Python writes it in canonical form) or has counters whose sums
#   leave UBIGINT.
# A tuple is then either good - its staging row is exactly parse_tuple's - or certainly bad: staged with
# the status ``bad-tuple``, which the store counts as a bad line; _locate reports its line and field.
# - no record can be over MAX_RECORD_CHARS, which the streaming parser refuses (see _fast_path).
# Files above FAST_MAX_BYTES are streamed in Python record by record (bounded memory): DuckDB holds
# a JSON document whole, and a blob's document is the whole blob (a 76 MB blob peaks near 750 MB RSS).
# The tuples are tracked into connections and the both-ends rule applied on the fast path's connection,
# together with the rows of the files read in Python, and the result is streamed (Arrow) into the
# store's aggregation.

FAST_MAX_BYTES = 128 << 20
_FAST_BATCH_BYTES = 64 << 20  # small blobs are read together, up to this much at a time
_PRE_CHUNK = 8 << 20
_SEQ_BITS = 40  # seq = file index << 40 | position in the file: log order across the batch
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


@dataclass
class _Fast:
    read: set[int]  # file indexes whose tuples are in the table t of ``side``
    bad: set[int]  # ... of which some tuples are bad
    side: duckdb.DuckDBPyConnection | None  # the fast path's connection (None: nothing read)


@dataclass
class _Pre:
    size: int  # decompressed bytes
    names_version: bool  # the text contains "flowLogVersion"


def _prescan(src: SourceFile, options: ReaderOptions) -> _Pre | None:
    """The byte checks of the fast path (see above); None: the Python reader reads the file."""
    key = b'"flowLogVersion"'
    try:
        with src.path.open("rb") as raw:
            fh = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if src.gzip else raw
            size = lines = 0
            comma = names = False
            tail = b""
            while chunk := fh.read(_PRE_CHUNK):
                if size == 0 and not _FAST_HEAD.match(chunk):
                    return None
                size += len(chunk)
                if size > FAST_MAX_BYTES or b"\\" in chunk or _trailing_comma(chunk, comma):
                    return None
                names = names or key in chunk or key in tail + chunk[:len(key)]
                stripped = chunk.rstrip(b" \t\n\r")
                comma = stripped.endswith(b",") or (comma and not stripped)
                tail = chunk[-len(key):]
                lines += chunk.count(b"\n")
                options.report_read(src.path, raw.tell(), lines)
            return _Pre(size, names) if size else None
    except (OSError, EOFError):  # unreadable, a truncated gzip: the Python reader says so
        return None


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


def _fast_path(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> _Fast:
    """Reads what it can (see above) into the table ``t`` of a connection of its own.

    DuckDB runs there because a file it cannot parse fails a statement, which would abort the store's
    transaction; on its own connection the file just goes to the Python reader."""
    pre = {i: p for i, src in enumerate(files) if (p := _prescan(src, options)) is not None}
    if not pre:
        return _Fast(read=set(), bad=set(), side=None)
    settings = con.execute("SELECT current_setting('memory_limit'), current_setting('threads'), "
                           "current_setting('temp_directory')").fetchall()[0]
    side = duckdb.connect()
    try:
        side.execute(f"SET memory_limit = {sql_str(str(settings[0]))}")
        side.execute(f"SET threads = {int(settings[1])}")
        if settings[2]:
            side.execute(f"SET temp_directory = {sql_str(str(settings[2]))}")
        side.execute("SET preserve_insertion_order = false")
        # batches of one kind (plain / gzip), up to _FAST_BATCH_BYTES each
        batches: list[list[int]] = []
        for gz in (False, True):
            batch: list[int] = []
            size = 0
            for i in sorted(i for i in pre if files[i].gzip == gz):
                if batch and size + pre[i].size > _FAST_BATCH_BYTES:
                    batches.append(batch)
                    batch, size = [], 0
                batch.append(i)
                size += pre[i].size
            if batch:
                batches.append(batch)
        read: set[int] = set()
        while batches:
            batch = batches.pop(0)
            try:
                side.execute(("INSERT INTO raw " if read else "CREATE TEMP TABLE raw AS ")
                             + _scan_sql(files, batch, pre))
            except duckdb.Error:
                if len(batch) > 1:  # find the files DuckDB cannot read; the others are still read here
                    batches[:0] = [batch[:len(batch) // 2], batch[len(batch) // 2:]]
                continue
            read.update(batch)
        if not read:
            side.close()
            return _Fast(read=set(), bad=set(), side=None)
        # The documents were unnested to their tuples by one thread each; the tuples are judged in parallel.
        side.execute(f"CREATE TEMP TABLE t AS {_tuples_select()}")
        side.execute("DROP TABLE raw")
        # One document per file, every record and tuple judged; and no record that the streaming reader
        # refuses (over MAX_RECORD_CHARS): the file is no longer, or a record is at most the file less the
        # other records' good tuples (their quoted text is in the file as it is, without escapes, and a
        # character takes a byte or more).
        bad: set[int] = set()
        for fi, docs, doubt, any_bad, largest, total in side.execute("""
                SELECT file_index, sum(docs), bool_or(doubt), bool_or(bad), max(n), sum(n) FROM (
                  SELECT file_index, ri, count(*) FILTER (kind = 'm') AS docs, bool_or(doubt) AS doubt,
                    bool_or(kind = 't' AND log_status = 'bad-tuple') AS bad, coalesce(sum(text_bytes), 0) AS n
                  FROM t GROUP BY ALL) GROUP BY ALL""").fetchall():
            size = pre[int(fi)].size
            if docs != 1 or doubt or (size > MAX_RECORD_CHARS and size - int(total) + int(largest) > MAX_RECORD_CHARS):
                read.discard(int(fi))
            elif any_bad:
                bad.add(int(fi))
        if not read:
            side.close()
            return _Fast(read=set(), bad=set(), side=None)
    except BaseException:
        side.close()
        raise
    return _Fast(read=read, bad=bad, side=side)


def _scan_sql(files: Sequence[SourceFile], batch: list[int], pre: dict[int, _Pre]) -> str:
    """One row per tuple of the files of ``batch``, with its file, record, version, NIC and position; one
    row with no tuple (record 0) per document, and one per record SQL does not read (NULL version). One
    pass over the documents: nothing but the result is materialised."""
    paths = sql_list([files[i] for i in batch])
    names = ", ".join(f"({sql_str(str(files[i].path))}, {i}, {str(pre[i].names_version).lower()})" for i in batch)
    size = max(pre[i].size for i in batch) + 1

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
    # seq = file index << 40 | record << 24 | position in the record (more records or tuples: Python)
    return f"""
WITH docs AS (
  SELECT m.fi, m.names_version, j.records IS NULL AS no_records, list_prepend(NULL, j.records) AS records
  FROM read_json({paths}, format='unstructured', filename=true, maximum_object_size={size},
    compression='{"gzip" if files[batch[0]].gzip else "none"}', columns={{'records': '{_REC}[]'}}) AS j
  JOIN (VALUES {names}) AS m(path, fi, names_version) ON j.filename = m.path),
recs AS (
  SELECT fi, ri, version, no_records,
    CASE WHEN version IS NOT NULL THEN {groups} END AS gs
  FROM (
    SELECT fi, ri, r, no_records, CASE WHEN ri = 0 OR r IS NULL OR ri >= 65536 THEN NULL
        WHEN r.flowLogVersion IS NOT NULL THEN CASE WHEN {vnet_ok} THEN 4 END
        WHEN {nsg_ok} THEN CAST(CAST(r.properties.Version AS VARCHAR) AS INTEGER) END AS version
    FROM (SELECT fi, names_version, no_records, unnest(records) AS r, unnest(range(len(records))) AS ri
          FROM docs))),
grps AS (
  SELECT fi, ri, version, no_records,
    CASE WHEN version IS NULL THEN [{{'nic': NULL, 't': [NULL], 'off': 0}}]
      ELSE list_transform(gs, lambda x, i: {{'nic': x.nic, 't': x.t,
        'off': CAST(coalesce(list_sum(list_transform(gs[1:i - 1], lambda y: len(y.t))), 0) AS BIGINT)}})
      END AS gs2,
    coalesce(list_sum(list_transform(gs, lambda y: len(y.t))), 0) >= 16777216 AS too_many
  FROM recs),
tuples AS (
  SELECT fi, ri, version, no_records, too_many, grp.nic AS nic, grp.off AS off, unnest(grp.t) AS t,
    unnest(range(len(grp.t))) AS ti
  FROM (SELECT fi, ri, version, no_records, too_many, unnest(gs2) AS grp FROM grps))
SELECT * FROM tuples"""


def _tuples_select() -> str:
    """The rows of ``raw`` (see _scan_sql): ``kind`` 't' for a tuple - 'good' (its row exactly
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
      WHEN 4 THEN n = 13 AND {digits('f[1]', max_u64 // 1000)} AND {digits('f[6]', 255)}
        AND f[8] IN ('B', 'C', 'E', 'D') AND f[7] IN ('I', 'O') AND {counters_ok}
      WHEN 2 THEN n = 13 AND {digits('f[1]', max_u64 // 1_000_000)} AND f[6] IN ('T', 'U') AND f[8] IN ('A', 'D')
        AND f[9] IN ('B', 'C', 'E') AND f[7] IN ('I', 'O') AND {counters_ok}
      ELSE n = 8 AND {digits('f[1]', max_u64 // 1_000_000)} AND f[6] IN ('T', 'U') AND f[8] IN ('A', 'D')
        AND f[7] IN ('I', 'O') END
      AND {digits('f[4]', 65535)} AND {digits('f[5]', 65535)}"""
    in_range = f"""CASE version WHEN 4 THEN TRY_CAST(f[1] AS UBIGINT) <= {max_u64 // 1000}
        AND TRY_CAST(f[6] AS UBIGINT) <= 255 ELSE TRY_CAST(f[1] AS UBIGINT) <= {max_u64 // 1_000_000} END
      AND TRY_CAST(f[4] AS UBIGINT) <= 65535 AND TRY_CAST(f[5] AS UBIGINT) <= 65535
      AND (version = 1 OR f[10] = '' OR (TRY_CAST(f[10] AS UBIGINT) IS NOT NULL AND TRY_CAST(f[11] AS UBIGINT)
        IS NOT NULL AND TRY_CAST(f[12] AS UBIGINT) IS NOT NULL AND TRY_CAST(f[13] AS UBIGINT) IS NOT NULL))"""
    shape = " ".join(f"WHEN {v} THEN regexp_full_match(t, '{_SHAPES[v]}')" for v in (4, 2, 1))
    # 'good', 'bad' or 'doubt' (IPv6: Python writes the canonical form)
    verdict = f"""CASE WHEN t IS NULL THEN 'bad'
      WHEN coalesce(CASE version {shape} END AND {in_range}, false) THEN 'good'
      WHEN NOT coalesce({fields_ok}, false) THEN 'bad'
      WHEN (contains(f[2], ':') OR {ipv4('f[2]')}) AND (contains(f[3], ':') OR {ipv4('f[3]')}) THEN 'doubt'
      ELSE 'bad' END"""
    unit = "CASE version WHEN 4 THEN 1000 ELSE 1000000 END"
    counters = "version <> 1 AND f[10] <> ''"

    def total(a: int, b: int) -> str:
        return f"CASE WHEN {counters} THEN CAST(f[{a}] AS HUGEINT) + CAST(f[{b}] AS HUGEINT) END"

    return f"""
SELECT CASE WHEN good THEN t_us END AS t_start, CASE WHEN good THEN t_us END AS t_end,
  CASE WHEN good THEN f[2] END AS src_ip, CASE WHEN good THEN f[3] END AS dst_ip,
  CASE WHEN good THEN CAST(f[4] AS INTEGER) END AS src_port, CASE WHEN good THEN CAST(f[5] AS INTEGER) END AS dst_port,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN CAST(f[6] AS INTEGER) WHEN f[6] = 'T' THEN 6 ELSE 17 END AS proto,
  TRY_CAST(CASE WHEN good THEN nbytes END AS UBIGINT) AS bytes,
  TRY_CAST(CASE WHEN good THEN npackets END AS UBIGINT) AS packets,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN CASE WHEN f[8] = 'D' THEN 'drop' ELSE 'accept' END
    WHEN f[8] = 'A' THEN 'accept' ELSE 'drop' END AS action,
  NULL::INTEGER AS tcp_flags, NULL::BOOLEAN AS is_reply,
  CASE WHEN NOT good THEN NULL WHEN f[7] = 'I' THEN 'ingress' ELSE 'egress' END AS direction,
  NULL::VARCHAR AS src_workload, NULL::VARCHAR AS dst_workload,
  CASE WHEN good THEN 'OK' ELSE '{_BAD_TUPLE}' END AS log_status, fi AS file_index,
  CASE WHEN good THEN nic END AS nic,
  CASE WHEN NOT good THEN NULL WHEN version = 4 THEN nullif(f[8], 'D') WHEN version = 2 AND f[8] = 'A' THEN f[9]
    END AS state,
  seq, ri, CASE WHEN good THEN strlen(t) + 2 END AS text_bytes,
  CASE WHEN ri = 0 THEN 'm' WHEN version IS NULL THEN 'd' ELSE 't' END AS kind,
  CASE WHEN ri = 0 THEN no_records WHEN version IS NULL THEN true
    ELSE coalesce(too_many OR verdict = 'doubt' OR (good AND (nbytes > {max_u64} OR npackets > {max_u64})), false)
    END AS doubt
FROM (
  SELECT *, verdict = 'good' AS good,
    CASE WHEN verdict = 'good' THEN CAST(TRY_CAST(f[1] AS UBIGINT) * {unit} AS UBIGINT) END AS t_us,
    CASE WHEN verdict = 'good' THEN {total(11, 13)} END AS nbytes,
    CASE WHEN verdict = 'good' THEN {total(10, 12)} END AS npackets
  FROM (
    SELECT *, CASE WHEN version IS NULL THEN 'doubt' ELSE {verdict} END AS verdict
    FROM (
      SELECT fi, ri, version, no_records, too_many, nic, t,
        (CAST(fi AS BIGINT) << {_SEQ_BITS}) + (ri << 24) + off + ti AS seq,
        string_split(t, ',') AS f, len(string_split(t, ',')) AS n
      FROM raw)))"""
