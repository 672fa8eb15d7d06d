"""Calico Enterprise / Calico Cloud flow logs: the JSON documents sent to Elasticsearch, and the
space-delimited on-node flow log file.

Format facts (docs.tigera.io, calico-enterprise ``observability/elastic/flow/datatypes`` and
``.../flow/filtering``):

- JSON: one document per flow aggregate, as NDJSON or pretty-printed (several lines per document);
  documents may follow one another or sit in a JSON array. ``start_time`` / ``end_time`` are Unix
  epoch seconds (the collection interval, 5 minutes by default).
- The file form has the space-delimited fields ``startTime endTime srcType srcNamespace srcName
  srcLabels dstType dstNamespace dstName dstLabels srcIP dstIP proto srcPort dstPort numFlows
  numFlowsStarted numFlowsCompleted reporter packetsIn packetsOut bytesIn bytesOut action`` ("unless
  filtered out": a header line naming the fields, when present, gives their order). ``-`` marks a
  field removed by aggregation, ``proto`` is the IANA number and ``reporter`` is ``in`` / ``out``.
- ``action``: ``allow`` = "Calico accepted the flow" -> accept; ``deny`` = "Calico denied the flow"
  -> drop (a Calico Deny rule drops the packet; nothing is sent back). Anything else is a bad line.
- ``reporter``: ``src`` (file form ``out``) = reported by the endpoint that initiated the
  connection, on egress; ``dst`` (``in``) = reported by the endpoint that received it, on ingress.
  The source is therefore always the client: every record is a request (``is_reply`` false).
- The same connection between two Calico endpoints is reported by both ends. The destination's
  record is the one that saw the whole policy path (egress allowed at the source, then ingress
  policy at the destination), so a source report whose aggregate (times, addresses, ports,
  protocol, endpoint names) also has a destination report in the batch is counted as skipped
  (``reported-by-both-ends``): one connection stays one record. Reports whose windows differ are
  both kept: the mapping then counts that dependency twice, never misses it.
- ``source_ip`` / ``dest_ip``: "a null value indicates aggregation" (aggregation levels 1-2 drop
  the addresses, and the file form writes ``-``); ``source_port`` likewise. ``*_name_aggr`` is the
  pod's name prefix ending in ``*`` (``nginx-86c57db685-*``), or ``pvt`` / ``pub`` for an endpoint
  that is not a pod, with an address in a private subnet / "probably on the public internet".
- ``*_type``: ``wep`` (workload endpoint = pod), ``hep`` (host endpoint), ``ns`` (network set),
  ``net`` (any other network).
- ``dest_port`` is "not applicable for ICMP packets": ICMP records get port 0 on both sides.

Missing addresses. The flow store requires an address on both sides, so an aggregated endpoint
gets a placeholder that the mapping can never resolve to a wrong workload:

- ``pub`` without an address -> ``64:ff9b::`` (the RFC 6052 well-known NAT64 prefix, a globally
  routable address that no workload holds): the mapping classifies it as ``external:internet``;
- any other endpoint without an address -> ``0.0.0.0`` (RFC 1122 "this host", never a peer): the
  mapping leaves it unresolved (private) unless the record's workload hint names an inventory
  workload.

A source port removed by aggregation is staged as 0: the record is a request (see ``reporter``), so
the destination port is the server port and the client port never matters.

Workload hints (pods only, ``*_type`` ``wep`` with a namespace): ``namespace/<workload>`` where the
workload is the aggregated name without its ``*`` and, where present, the ReplicaSet's
pod-template-hash (``access-6b687c8dcb-*`` -> ``access``); a full pod name is reduced as the Hubble
reader does (``hubble.workload_from_pod``). Host endpoints, network sets and networks give no hint:
a network set's name is no workload, and is resolved by address.

Counters the format carries but the store does not (``num_flows``, policy hits) are not staged; a
record is one aggregate.

Reading. NDJSON documents and the file form are parsed by DuckDB, typed and checked in SQL exactly as
the Python parser does it (see "DuckDB fast path" below): a file whose every line is plainly one
record is read whole by ``read_json`` / ``read_csv`` (the direct path), any other line by line. What
SQL cannot decide exactly is read by the Python parser, which names the line and field of every bad
record: single lines (escapes, repeated or missing keys, literals yyjson reads and Python does not,
blanks Python splits on) or whole files (pretty-printed documents, arrays on one line, a record that
fails a check). IPv6 addresses are checked and written by ``ipaddress`` itself, once per distinct
address. A repeated key reads as its first occurrence everywhere (``jsonline``). The
reported-by-both-ends rule runs in SQL over all rows. Tests assert that both paths give the same rows,
counts and bad-line reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    STAGE_COLUMNS,
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
from microseg.sources.flows.hubble import workload_from_pod
from microseg.sources.flows.sqlpath import (
    IPV4_PATTERN,
    SCAN_ERRORS,
    count_rejects,
    drop_after_scan,
    drop_both_ends,
    drop_tables,
    scan_error,
)

NAME = "calico"

ACTIONS = {"allow": "accept", "deny": "drop"}
_REPORTERS = {"src": "egress", "dst": "ingress", "out": "egress", "in": "ingress"}
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "icmpv6": 58, "sctp": 132, "udplite": 136}
_ENDPOINT_TYPES = frozenset({"wep", "hep", "ns", "net"})
PUBLIC_PLACEHOLDER = "64:ff9b::"
PRIVATE_PLACEHOLDER = "0.0.0.0"
DUPLICATE = "reported-by-both-ends"

# The file form's documented field order (filtering.mdx) and its JSON names.
FILE_FIELDS = ("startTime endTime srcType srcNamespace srcName srcLabels dstType dstNamespace dstName dstLabels "
               "srcIP dstIP proto srcPort dstPort numFlows numFlowsStarted numFlowsCompleted reporter packetsIn "
               "packetsOut bytesIn bytesOut action").split()
_FILE_TO_JSON = {
    "startTime": "start_time", "endTime": "end_time", "srcType": "source_type", "srcNamespace": "source_namespace",
    "srcName": "source_name_aggr", "srcLabels": "source_labels", "dstType": "dest_type",
    "dstNamespace": "dest_namespace", "dstName": "dest_name_aggr", "dstLabels": "dest_labels",
    "srcIP": "source_ip", "dstIP": "dest_ip", "proto": "proto", "srcPort": "source_port", "dstPort": "dest_port",
    "numFlows": "num_flows", "numFlowsStarted": "num_flows_started", "numFlowsCompleted": "num_flows_completed",
    "reporter": "reporter", "packetsIn": "packets_in", "packetsOut": "packets_out", "bytesIn": "bytes_in",
    "bytesOut": "bytes_out", "action": "action",
}
_FILE_REQUIRED = frozenset({"startTime", "endTime", "srcIP", "dstIP", "proto", "dstPort", "reporter", "action"})

# Field names of the JSON documents (datatypes.mdx, Calico Enterprise 3.x), nested keys included.
# Sniffing asks that every key in the head is one of them, so other JSON logs are not claimed.
JSON_KEYS = frozenset("""
    start_time end_time action bytes_in bytes_out dest_ip dest_name dest_name_aggr dest_namespace dest_port
    dest_service_name dest_service_namespace dest_service_port dest_service_port_num dest_type dest_labels
    dest_domains labels host http_requests_allowed_in http_requests_denied_in num_flows num_flows_completed
    num_flows_started num_original_source_ips original_source_ips packets_in packets_out policies
    all_policies enforced_policies pending_policies proto reporter source_ip source_name source_name_aggr
    source_namespace source_port source_type source_labels process_name num_process_names process_id
    num_process_ids process_args num_process_args tcp_mean_send_congestion_window
    tcp_min_send_congestion_window tcp_mean_smooth_rtt tcp_max_smooth_rtt tcp_mean_min_rtt tcp_max_min_rtt
    tcp_mean_mss tcp_min_mss tcp_total_retransmissions tcp_lost_packets tcp_unrecovered_to nat_outgoing_ports
    cluster_name @timestamp
""".split())
_DISTINCT_KEYS = frozenset({"source_name_aggr", "dest_name_aggr", "source_type", "dest_type", "reporter",
                            "source_namespace", "dest_namespace", "source_name", "dest_name"})
_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')

_GEN = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphabet
# What an aggregated ReplicaSet prefix keeps after its workload: the pod-template-hash (that
# alphabet; before Kubernetes 1.8 decimal digits), 5-10 characters.
_RS_PREFIX = re.compile(rf"(?P<base>.+)-[0-9{_GEN}]{{5,10}}")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_MAX_DOC_LINES = 10_000  # a JSON document still open after this many lines is reported bad


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sniff(head: list[str]) -> bool:
    if not head:
        return False
    tokens = head[0].split()
    if tokens and tokens[0] == "startTime":
        return {"endTime", "srcIP", "dstIP", "reporter", "action"} <= set(tokens)
    if len(tokens) == len(FILE_FIELDS):
        return (tokens[0].isdigit() and tokens[1].isdigit() and tokens[2] in _ENDPOINT_TYPES
                and tokens[6] in _ENDPOINT_TYPES and tokens[18] in {"in", "out"} and tokens[23] in ACTIONS)
    text = "\n".join(head).lstrip()
    if not text.startswith(("{", "[")):
        return False
    keys = set(_KEY.findall(text))
    return "start_time" in keys and bool(keys & _DISTINCT_KEYS) and keys <= JSON_KEYS


def workload_hint(namespace: Any, name: Any, kind: Any, field: str) -> str | None:
    """``namespace/workload`` for a pod endpoint (see the module docstring), else None."""
    if kind != "wep" or not isinstance(namespace, str) or namespace in ("", "-"):
        return None
    if not isinstance(name, str) or name in ("", "-", "pvt", "pub"):
        return None
    if name.endswith("*"):
        base = name[:-1].rstrip("-")
        if m := _RS_PREFIX.fullmatch(base):
            base = m.group("base")
    else:
        base = workload_from_pod(name)
    if not base:
        return None
    if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(base)):
        raise _Bad(field, f"{namespace}/{name!r} is not a Kubernetes name")
    return f"{namespace}/{base}"


def _absent(v: Any) -> bool:
    return v is None or v in ("", "-")


def _int(v: Any, field: str, *, limit: int) -> int:
    if isinstance(v, bool):
        raise _Bad(field, f"{v!r} is not a number")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str) and v.isascii() and v.isdigit():
        n = int(v)
    else:
        raise _Bad(field, f"{v!r} is not a number")
    if not 0 <= n <= limit:
        raise _Bad(field, f"{n} out of range")
    return n


def _address(ip: Any, name: Any, field: str) -> str:
    if _absent(ip):
        return PUBLIC_PLACEHOLDER if name == "pub" else PRIVATE_PLACEHOLDER
    if not isinstance(ip, str):
        raise _Bad(field, f"{ip!r} is not an IP address")
    canon = canonical_ip(ip)
    if canon is None:
        raise _Bad(field, f"{ip!r} is not an IP address")
    return canon


def _proto(v: Any) -> int:
    if isinstance(v, str) and v.lower() in _PROTOCOLS:
        return _PROTOCOLS[v.lower()]
    if _absent(v):
        raise _Bad("proto", "missing protocol")
    return _int(v, "proto", limit=255)


def _sum(doc: dict[str, Any], a: str, b: str) -> int | None:
    if _absent(doc.get(a)) and _absent(doc.get(b)):
        return None
    return sum(_int(doc[k], k, limit=1 << 62) for k in (a, b) if not _absent(doc.get(k)))


def _record(doc: Any, file_index: int) -> StageRow:
    """One staging row from a document (file-form lines are renamed to the JSON names first)."""
    if not isinstance(doc, dict):
        raise _Bad("json", "not a JSON object")
    action = doc.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise _Bad("action", f"unknown or missing action {action!r}")
    reporter = doc.get("reporter")
    if not isinstance(reporter, str) or reporter not in _REPORTERS:
        raise _Bad("reporter", f"unknown or missing reporter {reporter!r}")
    t_start = _int(doc.get("start_time"), "start_time", limit=MAX_EPOCH_SECONDS)
    t_end = _int(doc.get("end_time"), "end_time", limit=MAX_EPOCH_SECONDS)
    proto = _proto(doc.get("proto"))
    for side in ("source", "dest"):
        kind = doc.get(f"{side}_type")
        if not _absent(kind) and not (isinstance(kind, str) and kind in _ENDPOINT_TYPES):
            raise _Bad(f"{side}_type", f"unknown endpoint type {kind!r}")
    src_name = doc.get("source_name_aggr", doc.get("source_name"))
    dst_name = doc.get("dest_name_aggr", doc.get("dest_name"))
    if proto in (1, 58):
        sport = dport = 0
    else:
        sport = 0 if _absent(doc.get("source_port")) else _int(doc["source_port"], "source_port", limit=65535)
        if _absent(doc.get("dest_port")):
            raise _Bad("dest_port", "missing destination port")
        dport = _int(doc["dest_port"], "dest_port", limit=65535)
    return StageRow(
        t_start=t_start, t_end=t_end,
        src_ip=_address(doc.get("source_ip"), src_name, "source_ip"),
        dst_ip=_address(doc.get("dest_ip"), dst_name, "dest_ip"),
        src_port=sport, dst_port=dport, proto=proto,
        bytes=_sum(doc, "bytes_in", "bytes_out"), packets=_sum(doc, "packets_in", "packets_out"),
        action=action, tcp_flags=None, is_reply=False, direction=_REPORTERS[reporter],
        src_workload=workload_hint(doc.get("source_namespace"), src_name, doc.get("source_type"), "source_name_aggr"),
        dst_workload=workload_hint(doc.get("dest_namespace"), dst_name, doc.get("dest_type"), "dest_name_aggr"),
        log_status="OK", file_index=file_index)


def _depth(text: str, depth: int, in_string: bool) -> tuple[int, bool]:
    """Bracket depth after ``text``, outside JSON strings (a multi-line document ends at depth 0)."""
    escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
    return depth, in_string


class _Batch:
    """Rows of one stage() call; source reports wait until the destination reports are known."""

    def __init__(self, writer: StageWriter, staged: Staged, options: ReaderOptions, *, dedupe: bool = True) -> None:
        self.writer, self.staged, self.options = writer, staged, options
        self.dedupe = dedupe  # False: every row is written, and the fast path drops duplicates in SQL
        self.directions: set[str] = set()  # of the rows written when not ``dedupe``
        self.dst_keys: set[tuple[Any, ...]] = set()
        self.src_rows: list[tuple[tuple[Any, ...], StageRow, SourceFile]] = []

    def add(self, row: StageRow, src: SourceFile) -> None:
        if not self.dedupe:
            self.writer.write(row)
            self.directions.add(str(row.direction))
            return
        key = (row.t_start, row.t_end, row.src_ip, row.dst_ip, row.src_port, row.dst_port, row.proto,
               row.src_workload, row.dst_workload)
        if row.direction == "ingress":
            self.dst_keys.add(key)
            self.writer.write(row)
        else:
            self.src_rows.append((key, row, src))

    def bad(self, src: SourceFile, no: int, bad: _Bad, text: str) -> None:
        self.staged.add_bad(src.path, no, bad.field, bad.message, text, self.options.max_samples)

    def finish(self) -> None:
        for key, row, src in self.src_rows:
            if key in self.dst_keys:
                self.staged.skipped[(src.path, DUPLICATE)] += 1
            else:
                self.writer.write(row)


def _stage_json(src: SourceFile, index: int, batch: _Batch, only: frozenset[str] | None = None) -> None:
    """Reads the JSON documents of ``src``; with ``only``, just the lines of that text (the fast path
    read the rest: every line of such a file is one whole document or punctuation, see _scan_sql)."""
    buf: list[str] = []
    start = 0
    depth, in_string = 0, False
    for no, text in iter_lines(src):
        if only is not None and text not in only:
            continue
        if not buf:
            stripped = text.strip()
            # Array punctuation between documents ("[", "]", "," lines) carries nothing.
            if stripped in ("", "[", "]", ",", "],"):
                continue
            if stripped.startswith("["):  # a whole array on one line
                text = stripped[1:]
            start = no
            if stripped.startswith("{") and stripped.endswith(("}", "},")):
                # NDJSON, the common case: one document per line, no bracket counting needed.
                try:
                    doc = jsonline.loads(stripped.removesuffix(","))
                except ValueError:
                    pass  # counted below (it may also be the first line of a larger document)
                else:
                    try:
                        batch.add(_record(doc, index), src)
                    except _Bad as bad:
                        batch.bad(src, no, bad, text)
                    continue
        buf.append(text)
        depth, in_string = _depth(text, depth, in_string)
        if depth > 0 and len(buf) < _MAX_DOC_LINES:
            continue
        doc_text = "\n".join(buf).strip()
        buf, depth, in_string = [], 0, False
        # A document inside an array is followed by a comma; a closing "]" may end the line.
        doc_text = doc_text.removesuffix("]").rstrip().removesuffix(",").rstrip()
        try:
            doc = jsonline.loads(doc_text)
        except json.JSONDecodeError as exc:
            # Reported at the line of the error, with that line as the sample.
            line = start + exc.lineno - 1
            batch.bad(src, line, _Bad("json", f"invalid JSON: {exc.msg}"), doc_text.split("\n")[exc.lineno - 1])
            continue
        except ValueError as exc:  # nested too deeply, an integer past Python's digit limit
            batch.bad(src, start, _Bad("json", f"invalid JSON: {exc}"), doc_text.split("\n", 1)[0])
            continue
        try:
            batch.add(_record(doc, index), src)
        except _Bad as bad:
            batch.bad(src, start, bad, doc_text.split("\n", 1)[0])
    if buf:
        batch.bad(src, start, _Bad("json", "document not closed at the end of the file"), buf[0])


def _stage_file_form(src: SourceFile, index: int, batch: _Batch, only: frozenset[str] | None = None) -> None:
    """Reads the file form; with ``only``, just the lines of that text and the header (the fast path
    read the rest, with the header's field order, see _scan)."""
    columns = FILE_FIELDS
    for no, text in iter_lines(src):
        if only is not None and text not in only and "startTime" not in text:
            continue
        tokens = text.split()
        if not tokens:
            continue
        try:
            if tokens[0] == "startTime":  # a header: the field order of the lines that follow
                unknown = [t for t in tokens if t not in _FILE_TO_JSON]
                if unknown:
                    raise _Bad("header", f"unknown field {unknown[0]!r}")
                if missing := sorted(_FILE_REQUIRED - set(tokens)):
                    raise _Bad("header", f"missing field {missing[0]!r}")
                columns = tokens
                continue
            if len(tokens) != len(columns):
                raise _Bad("fields", f"{len(tokens)} fields, expected {len(columns)}")
            doc = {_FILE_TO_JSON[c]: v for c, v in zip(columns, tokens, strict=True)}
            batch.add(_record(doc, index), src)
        except _Bad as bad:
            batch.bad(src, no, bad, text)


def _is_json(src: SourceFile) -> bool:
    for _no, text in iter_lines(src):
        if text.strip():
            return text.lstrip().startswith(("{", "["))
    return False


def _file_form_head(src: SourceFile) -> tuple[str | None, tuple[str, ...]] | None:
    """(header line or None, field order) of a file-form file for the fast path; None when its first
    line is a header _stage_file_form reports as bad or with a repeated field, or the file starts with
    a byte order mark (read in Python)."""
    for no, text in iter_lines(src):
        if no == 1 and text.startswith("\ufeff"):
            return None  # DuckDB drops a byte order mark; Python reads it as part of the first token
        tokens = text.split()
        if not tokens:
            continue
        if tokens[0] != "startTime":
            return None, tuple(FILE_FIELDS)
        if any(t not in _FILE_TO_JSON for t in tokens) or _FILE_REQUIRED - set(tokens) or \
                len(set(tokens)) != len(tokens):
            return None
        return text, tuple(tokens)
    return None, tuple(FILE_FIELDS)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    fast: _Fast | None = None
    try:
        json_files: set[int] = set()
        heads: dict[int, tuple[str | None, tuple[str, ...]]] = {}  # file-form files the fast path reads
        for i, src in enumerate(files):
            try:
                if _is_json(src):
                    json_files.add(i)
                elif (head := _file_form_head(src)) is not None:
                    heads[i] = head
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        fast = _scan(con, files, json_files, heads, f"_ms_calico_{id(staged)}") if json_files or heads else None
        batch = _Batch(writer, staged, options, dedupe=fast is None)
        for index, src in enumerate(files):
            read = _stage_json if index in json_files else _stage_file_form
            try:
                if fast is None or index in fast.whole_files or (index not in json_files and index not in heads):
                    read(src, index, batch)
                elif index in fast.pending:
                    read(src, index, batch, fast.pending[index])
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        batch.finish()
        writer.close()
        if fast is not None:
            staged.relations.append(_finish(con, fast, writer, staged, list(files), batch.directions))
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file and the fast path's tables
            writer.path.unlink(missing_ok=True)
            if fast is not None:
                drop_tables(con, [*fast.tables(), fast.tag])
    if fast is None:
        relation = writer.relation(list(files), time_unit=1)
        relation.null_columns = _NULL_COLUMNS
        staged.relations.append(relation)
    staged.locate_bad = lambda _src: []  # every bad line was read, and reported, in Python
    return staged


_NULL_COLUMNS = frozenset({"tcp_flags"})  # Calico flow logs carry no TCP flags


# -- DuckDB fast path (JSON documents, file form) -------------------------------------------------
#
# NDJSON files and file-form files are parsed by DuckDB, typed and checked in SQL as _record does it
# in Python, into temporary tables (see _Part: the checked rows, and their distinct endpoints with
# the address and workload hint each gives). SQL reads a line only when it is certain to give exactly
# the Python result. Two SQL paths:
#
# - the direct path, for a file whose every line is *clean*: a whole JSON document without a
#   backslash, a trailing comma or a literal yyjson reads and Python does not (``nan``, ``inf``, ...;
#   checked by a cheap superset, see _DOUBT), or blanks (JSON); a header as the first line, then ASCII
#   tokens separated by single spaces, no other blank str.split() splits on (file form). A first
#   pass over the lines (``read_csv`` of whole lines, the rejects counted) counts the clean lines of
#   every file; a file with nothing but clean lines is read by ``read_json`` (``records``; the used
#   keys as text, names and namespaces as JSON text) or ``read_csv(delim=' ')``, which parse each
#   line once, with no per-line text kept. Such a file
#   is taken only when that read gives one row per line of the first pass (``read_json`` gives at
#   most one row per line, ``read_csv`` splits lines as the first pass does) and every row passes
#   every check; otherwise its rows are dropped and the file goes to the per-line path.
# - the per-line path: each line is read as one column and parsed (``from_json_strict`` /
#   ``string_split``); what it cannot read goes to Python:
#   - that line alone ("pending", matched by its text) when SQL could not split or parse it but
#     Python reads it as one unit: JSON with a backslash (escapes; \u in keys), a used key missing
#     or repeated (from_json_strict fails), a literal Python does not read (yyjson's ``nan``, ``inf``:
#     Python reports the line), blanks or a comma around the document; a file-form line with tabs,
#     repeated or non-ASCII blanks, or another number of fields;
#   - the whole file when a line parsed but fails a check (Python names the line and field of a
#     bad record), a trailing comma
#     inside a document (yyjson accepts it, Python does not), a line that is not one whole document
#     (pretty-printed documents, arrays on one line, broken JSON: Python joins lines there), or a
#     file-form header other than the first line.
# The whole batch goes to Python on invalid UTF-8 or an over-long line (DuckDB rejects it; Python
# replaces). The staging relation is the rows SQL read, joined to their endpoints, and the rows from
# Python. When both source and destination reports occur, it is written to a table, where the
# reported-by-both-ends rule runs in SQL on all of them, as _Batch does it in Python; otherwise the
# store scans it as it is computed (no row can be dropped, so no staging table is written). A
# repeated key reads as its first occurrence on every path (jsonline: yyjson's rule, and the Python
# reader's).

# The keys _record reads. ``source_name`` / ``dest_name`` are read only when ``*_name_aggr`` is
# absent: from_json_strict fails then (the line goes to Python); read_json reads an absent key and a
# null one alike, so the direct path also reads ``*_name`` and takes a row only where the two
# readings of the name cannot differ.
_FAST_KEYS = ("start_time", "end_time", "action", "reporter", "proto", "source_type", "dest_type",
              "source_name_aggr", "dest_name_aggr", "source_namespace", "dest_namespace", "source_port",
              "dest_port", "source_ip", "dest_ip", "bytes_in", "bytes_out", "packets_in", "packets_out")
# What str.strip() removes from an ASCII line; a line with other (non-ASCII) blanks around its
# document does not start with "{" after this trim, and its file is read in Python.
_WS = " \t\n\v\f\r\x1c\x1d\x1e\x1f"
_GEN_POD = f"[{_GEN}]{{5}}"  # hubble._GENERATED_POD / _RS_POD, as RE2 patterns (same greedy groups)
_RS_HASH = f"[0-9{_GEN}]{{5,10}}"
_BLANK = ", ".join(sql_str(x) for x in ("", "[", "]", ",", "],"))
# yyjson (DuckDB) reads what Python's json does not: a trailing comma (",}" ", ]") and the literals
# nan / inf / infinity in any case, signed or not (Python reads only NaN, Infinity, -Infinity). A
# value literal follows ":", "," or "[" and blanks; these patterns match every line with one of
# those (and some harmless ones: "NaN", "[i" in a string): a superset of the doubtful lines. Three
# patterns, each starting with one literal character, are several times faster in RE2 than one
# alternation (it skips to that character).
_LITERAL_START = "-?([iI]|[nN][aA])"
_DOUBT = (f":[ \t]*{_LITERAL_START}", f",[ \t]*({_LITERAL_START}|[]}}])", f"\\[[ \t]*{_LITERAL_START}")
_LITERAL = "[:,\\[][ \t]*(-?[nNiI][A-Za-z]*)"  # the literal itself (a string's text, at worst)
# What str.split() splits on besides " " in an ASCII line (the line ends at \n and \r).
_SPLIT_BLANKS = "\t\v\f\x1c\x1d\x1e\x1f"


def _doubtful(c0: str) -> str:
    """SQL: the line may hold a trailing comma or a literal Python's json does not read (see _DOUBT)."""
    return "(" + " OR ".join(f"regexp_matches({c0}, {sql_str(p)})" for p in _DOUBT) + ")"


def _python_rejects_literal(c0: str) -> str:
    """SQL: the line has a value literal yyjson reads and Python's json does not (see _DOUBT)."""
    literal = " OR ".join(f"regexp_matches({c0}, {sql_str(p)})" for p in (_DOUBT[0], _DOUBT[2],
                                                                        f",[ \t]*{_LITERAL_START}"))
    return (f"coalesce(({literal}) AND list_bool_or(list_transform(regexp_extract_all({c0}, {sql_str(_LITERAL)}, 1), "
            "lambda t: lower(ltrim(t, '-')) IN ('nan', 'inf', 'infinity') "
            "AND t NOT IN ('NaN', 'Infinity', '-Infinity'))), false)")


@dataclass
class _Part:
    """What one statement read: ``rows``, a table of one row per line (see _rows_sql), and ``ends``, the
    distinct endpoints of its passing rows (see _endpoints); ``json_keys`` as for _Values; ``key``: the
    endpoint columns the staging relation joins rows and endpoints on (see _join_key)."""

    rows: str
    ends: str
    json_keys: frozenset[str]
    key: tuple[str, ...] = ("kind", "ns", "name", "ip")


@dataclass
class _Fast:
    tag: str
    parts: list[_Part]
    whole_files: set[int]  # read in Python from start to end
    pending: dict[int, frozenset[str]]  # file index -> text of the lines Python reads

    def tables(self) -> list[str]:
        return [t for p in self.parts for t in (p.rows, p.ends)]


def _lines_of(parts: Sequence[_Part], where: str = "true") -> str:
    """SQL: (fi, line) of every row of ``parts`` that meets ``where``."""
    return " UNION ALL ".join(f"SELECT fi, line FROM {p.rows} WHERE {where}" for p in parts)


def _lines_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str] | None) -> str:
    """Every line of ``files`` as ``c0`` (``c1``: text after a '\\x01'), ``fi`` its file's index.
    nullstr: a value no line has, so that an empty field is '' and a missing one NULL. DuckDB splits
    lines at \\n, \\r\\n and a lone \\r, as Python's text reader does with newline=""."""
    mapping = ", ".join(str(i) for i in indexes)
    store = (f", store_rejects=true, rejects_table='{rejects[0]}', rejects_scan='{rejects[1]}'"
             if rejects else ", ignore_errors=true")
    return f"""SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, c1
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{"gzip" if files[0].gzip else "none"}'{store})"""


def _census_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str],
                file_form: tuple[str | None, tuple[str, ...]] | None) -> str:
    """Per file: its lines, its clean lines (see the comment above), and its blank (JSON) or header
    (file form) lines; the direct path takes a file whose lines are all clean or blank / header."""
    if file_form is None:
        clean = (f"c1 IS NULL AND starts_with(c0, '{{') AND ends_with(c0, '}}') AND NOT contains(c0, '\\') "
                 f"AND NOT {_doubtful('c0')}")
        # read_json skips them, as Python does (trim is slow: only short lines are tried)
        other = "c1 IS NULL AND CASE WHEN strlen(c0) < 256 THEN trim(c0, ' \t') = '' ELSE false END"
    else:
        blanks = " AND ".join(f"NOT contains(c0, chr({ord(c)}))" for c in _SPLIT_BLANKS)
        clean = (f"c1 IS NULL AND strlen(c0) = length(c0) AND {blanks} AND NOT contains(c0, '  ') "
                 "AND NOT starts_with(c0, ' ') AND NOT ends_with(c0, ' ') AND NOT starts_with(c0, 'startTime')")
        other = f"c1 IS NULL AND c0 = {sql_str(file_form[0])}" if file_form[0] is not None else "false"
    return (f"SELECT fi, count(*), count(*) FILTER ({clean}), count(*) FILTER ({other}) "
            f"FROM ({_lines_sql(files, indexes, rejects)}) GROUP BY fi")


def _direct_sql(files: Sequence[SourceFile], indexes: Sequence[int], file_form: tuple[str, ...] | None) -> str:
    """The direct path's source rows (columns of _scan_sql's ``parsed``, ``line`` NULL)."""
    mapping = ", ".join(str(i) for i in indexes)
    compression = "gzip" if files[0].gzip else "none"
    if file_form is None:
        keys = (*_FAST_KEYS, "source_name", "dest_name")
        columns = "{" + ", ".join(f"{sql_str(k)}: {sql_str('JSON' if k in _DIRECT_JSON else 'VARCHAR')}"
                                  for k in keys) + "}"
        # _DIRECT_JSON keys as JSON text, cast to VARCHAR (a string's content is never cast back to JSON);
        # a row of a line read_json cannot read (ignore_errors) has every value NULL and fails the checks.
        values = ", ".join(f"{k}::VARCHAR AS {k}" if k in _DIRECT_JSON else k for k in _FAST_KEYS)
        names = " AND ".join(f"({s}_name_aggr IS NOT NULL OR {s}_name IS NULL)" for s in ("source", "dest"))
        return f"""SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, {names} AS parsed, NULL::VARCHAR AS line,
  {values}
FROM read_json({sql_list(files)}, format='newline_delimited', records=true, columns={columns},
  ignore_errors=true, compression='{compression}')"""
    n = len(file_form)
    where = {_FILE_TO_JSON[c]: i for i, c in enumerate(file_form)}
    columns = "{" + ", ".join(f"'f{i}': 'VARCHAR'" for i in range(n + 1)) + "}"
    values = ", ".join(f"f{where[k]} AS {k}" if k in where else f"NULL::VARCHAR AS {k}" for k in _FAST_KEYS)
    # one column more than fields: a line with more fields has it set (read_csv drops the rest); the
    # header is the one line whose first field is startTime (the census saw to that). nullstr: a text
    # no field holds (a line ends there), so that NULL is a missing field only, never a token.
    return f"""SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi,
  f{n - 1} IS NOT NULL AND f{n} IS NULL AS parsed, NULL::VARCHAR AS line, {values}
FROM read_csv({sql_list(files)}, delim=' ', header=false, quote='', escape='', auto_detect=false,
  columns={columns}, strict_mode=false, null_padding=true, nullstr='\n', ignore_errors=true,
  compression='{compression}')
WHERE f0 IS DISTINCT FROM 'startTime'"""


def _scan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], json_files: set[int],
          heads: dict[int, tuple[str | None, tuple[str, ...]]], tag: str) -> _Fast | None:
    """Parses the JSON files and the file-form files with their field order (``heads``) into tables
    named after ``tag`` (see _Part); None (nothing created): all of it in Python."""
    groups: dict[tuple[bool, tuple[str, ...] | None], list[int]] = {}
    for i in sorted(json_files | set(heads)):
        groups.setdefault((files[i].gzip, heads[i][1] if i in heads else None), []).append(i)
    # The census: every line of every file, once.
    census = [_census_sql([files[i] for i in idx], idx, (f"{tag}_e{n}", f"{tag}_s{n}"),
                          heads[idx[0]] if columns is not None else None)
              for n, ((_gz, columns), idx) in enumerate(groups.items())]
    try:
        counts = {int(fi): (int(n), int(clean), int(other)) for fi, n, clean, other in
                  con.execute(" UNION ALL ".join(census)).fetchall()}
    except SCAN_ERRORS as exc:
        raise scan_error(exc, files) from exc
    # invalid UTF-8 or an over-long line: Python replaces or reads it
    if count_rejects(con, ((f"{tag}_e{n}", f"{tag}_s{n}") for n in range(len(census)))):
        return None
    expected: dict[int, int] = {}  # direct-path file -> the rows its read must give
    for i, (n, clean, other) in counts.items():
        if i in heads:
            if clean + other == n and other == (heads[i][0] is not None):
                expected[i] = clean
        elif clean + other == n and clean:
            expected[i] = clean
    parts: list[_Part] = []
    per_line = dict(groups)
    direct_groups = [(key, [i for i in idx if i in expected]) for key, idx in groups.items()]
    direct_groups = [(key, idx) for key, idx in direct_groups if idx]
    if direct_groups:
        for (_gz, columns), idx in direct_groups:
            model = _PLAIN if columns is not None else _DIRECT_JSON
            _insert_checked(con, parts, tag, model, f"({_direct_sql([files[i] for i in idx], idx, columns)})")
        got = {int(fi): (int(rows), int(doubtful)) for fi, rows, doubtful in
               con.execute(f"SELECT fi, count(*), count(line) FROM ({_lines_of(parts)}) GROUP BY ALL").fetchall()}
        taken = {i for i in expected if got.get(i) == (expected[i], 0)}
        if len(taken) < len(got):
            for part in parts:
                con.execute(f"DELETE FROM {part.rows} WHERE fi NOT IN ({', '.join(map(str, sorted(taken))) or '-1'})")
        per_line = {key: [i for i in idx if i not in taken] for key, idx in groups.items()}
        per_line = {key: idx for key, idx in per_line.items() if idx}
    if per_line:
        _scan_per_line(con, files, per_line, parts, tag)
    # The lines SQL did not read: one whole document (as Python reads it: blanks stripped, a trailing
    # comma dropped) that DuckDB finds valid JSON -> the Python reader reads that line alone (valid
    # JSON keeps its brackets balanced, so Python never joins it with the next line); anything else
    # (and '\x01': a line with the delimiter, or the null string) -> the whole file in Python.
    whole: set[int] = set()
    pending: dict[int, set[str]] = {}
    skipped_lines = False
    for fi, line, blank, unit in con.execute(f"""
            SELECT fi, line, t IN ({_BLANK}),
              coalesce(starts_with(doc, '{{') AND ends_with(doc, '}}') AND json_valid(doc), false)
            FROM (SELECT fi, line, CASE WHEN ends_with(t, ',') THEN left(t, strlen(t) - 1) ELSE t END AS doc, t
              FROM (SELECT DISTINCT fi, line, trim(line, {sql_str(_WS)}) AS t
              FROM ({_lines_of(parts, 'line IS NOT NULL')})))""").fetchall():
        skipped_lines = True
        if int(fi) in heads:
            # The file form: a line with one field per token, a line Python reads alone, unless it is
            # a header other than the first line (a new field order for the lines after it).
            tokens = str(line).split()
            if line == "\x01" or (tokens[:1] == ["startTime"] and line != heads[int(fi)][0]):
                whole.add(int(fi))
            elif tokens and tokens[0] != "startTime":
                pending.setdefault(int(fi), set()).add(str(line))
            continue
        if blank:  # as _stage_json: blank lines and array punctuation carry nothing
            continue
        if unit and line != "\x01":
            pending.setdefault(int(fi), set()).add(str(line))
        else:
            whole.add(int(fi))
    # A line DuckDB split unlike Python (CR CR LF, CR LF CR) is no line Python finds: the record after it
    # would be lost, uncounted; such a file is read whole in Python.
    whole.update(i for i, texts in pending.items() if i not in whole and missing_lines([files[i]], texts))
    if skipped_lines:
        for part in parts:
            con.execute(f"DELETE FROM {part.rows} WHERE line IS NOT NULL" + (
                f" OR fi IN ({', '.join(str(i) for i in sorted(whole))})" if whole else ""))
    for i in whole:
        pending.pop(i, None)
    return _Fast(tag=tag, parts=parts, whole_files=whole, pending={i: frozenset(v) for i, v in pending.items()})


def _insert_checked(con: duckdb.DuckDBPyConnection, parts: list[_Part], tag: str, json_keys: frozenset[str],
                    source: str) -> None:
    """The checked rows of ``source`` (see _rows_sql) and their endpoints (see _endpoints), as a new part."""
    part = _Part(rows=f"{tag}_r{len(parts)}", ends=f"{tag}_h{len(parts)}", json_keys=json_keys)
    parts.append(part)
    con.execute(f"CREATE TEMP TABLE {part.rows} AS {_rows_sql(json_keys, source)}")
    _endpoints(con, part)


def _scan_per_line(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile],
                   groups: dict[tuple[bool, tuple[str, ...] | None], list[int]], parts: list[_Part], tag: str) -> None:
    """The per-line path: the files of ``groups`` as new ``parts``, ``line`` set where SQL did not read."""
    steps = [(_parsed_sql([files[i] for i in idx], idx, (f"{tag}_e{n}", f"{tag}_s{n}"), columns), columns is not None)
             for n, ((_gz, columns), idx) in enumerate(groups.items())]
    source = f"{tag}_p"
    try:
        for file_form in (False, True):
            if sqls := [sql for sql, form in steps if form == file_form]:
                con.execute(f"CREATE TEMP TABLE {source} AS {' UNION ALL '.join(sqls)}")
                _insert_checked(con, parts, tag, _PLAIN if file_form else _ALL_JSON, source)
                con.execute(f"DROP TABLE {source}")
    except SCAN_ERRORS as exc:
        raise scan_error(exc, files) from exc
    # the census found no rejects in these files
    count_rejects(con, ((f"{tag}_e{n}", f"{tag}_s{n}") for n in range(len(steps))))


_KEY_COLUMNS = ("t_start", "t_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "src_workload",
                "dst_workload")


def _finish(con: duckdb.DuckDBPyConnection, fast: _Fast, writer: StageWriter, staged: Staged,
            files: list[SourceFile], python_directions: set[str]) -> StagedRelation:
    """One relation over the rows SQL read and the Python rows. When both source and destination
    reports occur, they are written to a table first, and the source reports that a destination report
    repeats are dropped (counted as skipped, as _Batch does); otherwise no row can be dropped, and the
    store scans the relation as it is computed (nothing more is written)."""
    columns = ", ".join(STAGE_COLUMNS)
    selects = [_stage_select(part) for part in fast.parts]
    if writer.rows or not selects:
        selects.append(f"SELECT {columns} FROM ({writer.relation(files, 1).sql})")
    sql = " UNION ALL ".join(f"({x})" for x in selects)
    directions = set(python_directions)
    if fast.parts:
        got = con.execute(" UNION ALL ".join(f"SELECT bool_or(egress), bool_or(NOT egress) FROM {p.rows}"
                                             for p in fast.parts)).fetchall()
        directions |= {"egress" for egress, _ in got if egress} | {"ingress" for _, ingress in got if ingress}
    if len(directions) < 2:
        return StagedRelation(sql=sql, files=files, time_unit=1, after_scan=drop_after_scan(fast.tables()),
                              null_columns=_NULL_COLUMNS)
    table = fast.tag
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT {columns} FROM ({sql})")
    drop_tables(con, fast.tables())
    drop_both_ends(con, table, _KEY_COLUMNS, files, staged, DUPLICATE)
    return StagedRelation(sql=f"SELECT {columns} FROM {table}", files=files, time_unit=1,
                          after_scan=drop_after_scan([table]), null_columns=_NULL_COLUMNS)


def _parsed_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str],
                file_form: tuple[str, ...] | None = None) -> str:
    """The per-line path's ``parsed`` rows: every line of ``files``, its used values (JSON text; file-form
    tokens as they are), ``parsed`` and its text (``line``) when it is no fast line (see _scan),
    materialised (DuckDB inlines the expressions of subqueries, so a column referenced again would
    be computed again)."""
    lines = _lines_sql(files, indexes, rejects)
    if file_form is None:
        struct = "{" + ", ".join(f'"{k}": "JSON"' for k in _FAST_KEYS) + "}"
        # JSON text; VARCHAR, so that a string's content (below) is never cast back to JSON
        fields = ", ".join(f"s.{k}::VARCHAR AS {k}" for k in _FAST_KEYS)
        # A fast line is one whole document, nothing around it, without a backslash (escapes, \\u in
        # keys), without a literal Python's json does not read, and without a trailing comma (yyjson
        # accepts ",}" and ", ]", Python does not; checked once the line parsed: ``s`` is referenced
        # once per field, and its condition stays cheap).
        fast_line = (f"c1 IS NULL AND starts_with(c0, '{{') AND ends_with(c0, '}}') AND NOT contains(c0, '\\') "
                     f"AND NOT {_python_rejects_literal('c0')}")
        return f"""
SELECT fi, s IS NOT NULL AND NOT regexp_matches(c0, ',[ \t]*[]}}]') AS parsed,
  CASE WHEN s IS NULL THEN CASE WHEN c0 IS NULL OR c1 IS NOT NULL THEN '\x01' ELSE c0 END END AS line, {fields}
FROM (
SELECT fi, c0, c1, CASE WHEN {fast_line} THEN try(from_json_strict(c0, '{struct}')) END AS s
FROM ({lines}))"""
    # The file form with the field order ``file_form``: a line of single-space separated printable
    # ASCII tokens, as many as fields (str.split() gives those tokens), as _record reads the file
    # form (its values are strings; "-" is absent).
    where = {_FILE_TO_JSON[c]: i for i, c in enumerate(file_form)}
    tokens = ", ".join(f"tok[{where[k] + 1}] AS {k}" if k in where else f"NULL::VARCHAR AS {k}" for k in _FAST_KEYS)
    shape = (f"coalesce(regexp_full_match(c0, '[!-~]+( [!-~]+)*') AND len(tok) = {len(file_form)} "
             "AND tok[1] <> 'startTime', false)")  # a header line is no record
    return f"""
SELECT fi, shape AS parsed, CASE WHEN NOT shape THEN CASE WHEN c0 IS NULL OR c1 IS NOT NULL THEN '\x01' ELSE c0 END
  END AS line, {tokens}
FROM (
SELECT fi, c0, c1, {shape} AS shape, tok
FROM (SELECT fi, c0, c1, string_split(c0, ' ') AS tok FROM ({lines})))"""


# Which values a source holds as JSON text (a string quoted, so that its type shows); the others are
# plain text: file-form tokens, or what read_json gives for a VARCHAR column (a string's content, a
# number's digits; a non-string never reads as a string these checks accept, except in the names
# and namespaces of workload hints, which Python takes only from strings: JSON text there).
_ALL_JSON = frozenset(_FAST_KEYS)
_DIRECT_JSON = frozenset({"source_namespace", "dest_namespace", "source_name_aggr", "dest_name_aggr"})
_PLAIN: frozenset[str] = frozenset()


class _Values:
    """SQL for _record's reading of one value, as a source holds it (see _ALL_JSON). Lists of values
    are OR chains: DuckDB runs ``x IN (...)`` on strings as a join, many times slower."""

    def __init__(self, json_keys: frozenset[str]) -> None:
        self.json_keys = json_keys

    def text(self, k: str) -> str:  # a string value's content (exact: nothing is escaped on a fast line)
        return f"substr({k}, 2, strlen({k}) - 2)" if k in self.json_keys else k

    def is_str(self, k: str) -> str:
        return f"starts_with({k}, '\"')" if k in self.json_keys else f"({k} IS NOT NULL)"

    def isin(self, k: str, *values: str) -> str:  # ``k`` is one of these strings
        return "(" + " OR ".join(f"{k} = {sql_str(chr(34) + x + chr(34) if k in self.json_keys else x)}"
                                 for x in values) + ")"

    def absent(self, k: str) -> str:
        return f"({k} IS NULL OR {self.isin(k, '', '-')})"

    def num_text(self, k: str) -> str:
        """The text _int reads as a number (an integer's digits, a negative one's with "-", or a
        string's content): the value's text, a string's content where the source holds JSON text."""
        return f"CASE WHEN {self.is_str(k)} THEN {self.text(k)} ELSE {k} END" if k in self.json_keys else k

    @staticmethod
    def first_digit_cast(x: str) -> str:
        """TRY_CAST(x AS UBIGINT) where ``x`` starts with an ASCII digit (byte order: '' and every other
        first byte fail), else NULL: a cast that fails costs about four times one that passes (a
        protocol name, "-"), and digits_of() is NULL anyway unless ``x`` is digits only."""
        return f"CASE WHEN {x} >= '0' AND {x} < ':' THEN TRY_CAST({x} AS UBIGINT) END"

    @staticmethod
    def digits_of(x: str, c: str) -> str:
        """A string of ASCII digits only, as str.isdigit() on an ASCII string, as UBIGINT (NULL past it),
        given ``c`` = first_digit_cast(x), computed once in a lower projection.

        The cast also reads blanks, signs, "_", "1e3", "0x10", "1.0": a number it gives is taken when
        written back it is the text (digits, no leading zero: what every Calico writer gives, and the
        cheaper test); else when the text is digits only (leading zeros, which Python's int() reads
        too: "0053" is 53). CASE tries the second test only on rows the first one failed."""
        return (f"CASE WHEN {c}::VARCHAR = {x} THEN {c} "
                f"WHEN {c} IS NOT NULL AND NOT ({x} GLOB '*[!0-9]*') THEN {c} END")


def _rows_sql(json_keys: frozenset[str], source: str) -> str:
    """From ``source`` (fi, parsed, line and the values of _FAST_KEYS, see _ALL_JSON): every check of
    _record that reads one row, the staging values typed, and each side's endpoint (type, namespace,
    name, address) as the source holds it; ``line`` NULL for a row that passes (its endpoints are
    checked once each, see _endpoints), else the line's text, or '\\x01' for a line that parsed but
    fails a check (its file is read in Python)."""
    v = _Values(json_keys)

    def n(k: str) -> str:
        return f"n_{k}"

    def within(k: str, limit: int) -> str:
        return f"coalesce({n(k)} <= {limit}, false)"

    def total(a: str, b: str) -> str:  # _sum: NULL when both are absent (a bad term, 0: the row fails ``counted``)
        return (f"CASE WHEN {v.absent(a)} AND {v.absent(b)} THEN NULL "
                f"ELSE CASE WHEN {within(a, 1 << 62)} THEN {n(a)} ELSE 0 END "
                f"+ CASE WHEN {within(b, 1 << 62)} THEN {n(b)} ELSE 0 END END")

    def counted(a: str) -> str:  # _sum's check of one term: absent, or a number up to 2^62
        return f"({v.absent(a)} OR {within(a, 1 << 62)})"

    numbers = ("start_time", "end_time", "source_port", "dest_port", "bytes_in", "bytes_out", "packets_in",
               "packets_out", "proto")
    protos = " ".join(f"WHEN {sql_str(k)} THEN {x}" for k, x in sorted(_PROTOCOLS.items()))
    # _proto: a protocol name (ASCII: Python's lower() and DuckDB's agree), else a number
    p = v.text("proto")
    # (a string of digits is no protocol name: the number is tried first)
    proto = (f"CASE WHEN n_proto IS NOT NULL THEN CASE WHEN n_proto <= 255 THEN n_proto END "
             f"WHEN {v.is_str('proto')} THEN CASE {p} {protos} ELSE CASE WHEN strlen({p}) = length({p}) "
             f"THEN CASE lower({p}) {protos} END END END END")  # the name as Calico writes it first: no lower()
    types = sorted(_ENDPOINT_TYPES)
    # every check but the endpoints' (see _endpoints)
    ok = f"""coalesce(parsed
      AND {v.isin('action', *sorted(ACTIONS))} AND {v.isin('reporter', *sorted(_REPORTERS))}
      AND {within('start_time', MAX_EPOCH_SECONDS)} AND {within('end_time', MAX_EPOCH_SECONDS)}
      AND proto_n IS NOT NULL AND ({v.absent('source_type')} OR {v.isin('source_type', *types)})
      AND ({v.absent('dest_type')} OR {v.isin('dest_type', *types)}) AND sport IS NOT NULL AND dport IS NOT NULL
      AND {' AND '.join(counted(k) for k in ('bytes_in', 'bytes_out', 'packets_in', 'packets_out'))}, false)"""
    # The values in their staging types (a row that fails a check is never staged: its values do not matter).
    return f"""
SELECT fi::INTEGER AS fi, CASE WHEN {ok} THEN NULL ELSE coalesce(line, '\x01') END AS line,
  n_start_time AS t_start, n_end_time AS t_end, TRY_CAST(sport AS INTEGER) AS src_port,
  TRY_CAST(dport AS INTEGER) AS dst_port, TRY_CAST(proto_n AS INTEGER) AS proto, nbytes AS bytes,
  npackets AS packets, {v.isin('action', 'deny')} AS deny, {v.isin('reporter', 'src', 'out')} AS egress,
  source_type AS s_kind, source_namespace AS s_ns, source_name_aggr AS s_name, source_ip AS s_ip,
  dest_type AS d_kind, dest_namespace AS d_ns, dest_name_aggr AS d_name, dest_ip AS d_ip
FROM (
SELECT *,
  CASE WHEN proto_n IN (1, 58) OR {v.absent('source_port')} THEN 0
    WHEN {within('source_port', 65535)} THEN n_source_port END AS sport,
  CASE WHEN proto_n IN (1, 58) THEN 0 WHEN {within('dest_port', 65535)} AND NOT {v.absent('dest_port')}
    THEN n_dest_port END AS dport,
  {total('bytes_in', 'bytes_out')} AS nbytes, {total('packets_in', 'packets_out')} AS npackets
FROM (
SELECT *, {proto} AS proto_n
FROM (
SELECT *, {', '.join(f"{v.digits_of(f'x_{k}', f'c_{k}')} AS n_{k}" for k in numbers)}
FROM (
SELECT *, {', '.join(f"{v.first_digit_cast(f'x_{k}')} AS c_{k}" for k in numbers)}
FROM (
SELECT *, {', '.join(f"{v.num_text(k)} AS x_{k}" for k in numbers)}
FROM {source})))))"""


_WORKLOAD = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?"  # workload_hint's names
_ENDPOINT = ("kind", "ns", "name", "ip")


# Endpoint columns that may tell the endpoints of a part apart on their own, tried in this order.
_JOIN_KEYS = (("ip",), ("name",), ("ns", "name"), ("name", "ip"))


def _same_endpoint(h: str, r: str, side: str, key: Sequence[str] = _ENDPOINT) -> str:
    """SQL: endpoint row ``h`` is side ``side`` (s / d) of row ``r`` (NULL matches NULL, as in DISTINCT),
    compared on the columns ``key``."""
    return " AND ".join(f"{h}.{a} IS NOT DISTINCT FROM {r}.{side}_{a}" for a in key)


def _join_key(con: duckdb.DuckDBPyConnection, ends: str) -> tuple[str, ...]:
    """The first of _JOIN_KEYS that no two rows of ``ends`` share (NULL equal to NULL, as DISTINCT and IS
    NOT DISTINCT FROM have it), else every endpoint column. Every passing row's endpoint is a row of
    ``ends``, so a match on such a key is that very row; a hash join on one column costs a third of one
    on four (the store scans the join: twice per record)."""
    total = con.execute(f"SELECT count(*) FROM {ends}").fetchone()
    for key in _JOIN_KEYS:  # one at a time: the first usually tells them apart
        got = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(key)} FROM {ends})").fetchone()
        if got is not None and total is not None and got[0] == total[0]:
            return key
    return _ENDPOINT


def _endpoints(con: duckdb.DuckDBPyConnection, part: _Part) -> None:
    """The table ``part.ends``: every distinct endpoint (kind, ns, name, ip as ``part.rows`` holds them)
    of a passing row, with its staged address (``addr``) and workload hint (``wl``); then the rows with
    an endpoint _record rejects get ``line`` '\\x01'. Checked once per distinct endpoint (a few thousand,
    where rows are millions). IPv6 addresses are written by ipaddress itself (canonical_ip, as _address
    does): a handful of distinct texts, read in Python."""
    # kind / ns / name / ip as the source holds source_type / _namespace / _name_aggr / _ip.
    e = _Values(frozenset(x for k, x in (("source_type", "kind"), ("source_namespace", "ns"),
                                         ("source_name_aggr", "name"), ("source_ip", "ip")) if k in part.json_keys))
    ip = e.text("ip")
    # NULL: not certain (IPv6: below; or bad)
    address = (f"CASE WHEN {e.absent('ip')} THEN CASE WHEN {e.isin('name', 'pub')} "
               f"THEN {sql_str(PUBLIC_PLACEHOLDER)} ELSE {sql_str(PRIVATE_PLACEHOLDER)} END "
               f"WHEN {e.is_str('ip')} AND regexp_full_match({ip}, '{IPV4_PATTERN}') THEN {ip} END")
    # workload_hint's workload; regexp_extract gives '' when the pattern does not match, and RE2's
    # leftmost-first submatches are Python's backtracking ones for these patterns.
    x = e.text("name")
    cut = f"rtrim(left({x}, strlen({x}) - 1), '-')"
    base = (f"CASE WHEN ends_with({x}, '*') THEN coalesce(nullif(regexp_extract({cut}, "
            f"'^(.+)-{_RS_HASH}$', 1), ''), {cut}) "
            f"ELSE coalesce(nullif(regexp_extract({x}, '^(.+)-{_RS_HASH}-{_GEN_POD}$', 1), ''), "
            f"nullif(regexp_extract({x}, '^(.+)-{_GEN_POD}$', 1), ''), {x}) END")
    # NULL when workload_hint gives None; '' || NULL is NULL (an empty workload gives no hint)
    hint = (f"CASE WHEN {e.isin('kind', 'wep')} AND {e.is_str('ns')} AND NOT {e.absent('ns')} "
            f"AND {e.is_str('name')} AND NOT {e.isin('name', '', '-', 'pvt', 'pub')} "
            f"THEN {e.text('ns')} || '/' || nullif({base}, '') END")
    hint_ok = f"(wl IS NULL OR regexp_full_match(wl, {sql_str(_WORKLOAD)}))"
    sides = " UNION ".join(f"SELECT DISTINCT {', '.join(f'{s}_{a} AS {a}' for a in _ENDPOINT)} FROM {part.rows} "
                           "WHERE line IS NULL" for s in ("s", "d"))
    # v6: the text of an address that may be IPv6 (a JSON object or array never reads as an address)
    con.execute(f"""CREATE TEMP TABLE {part.ends} AS
SELECT kind, ns, name, ip, wl, addr, addr IS NOT NULL AND {hint_ok} AS end_ok,
  CASE WHEN addr IS NULL AND {e.is_str('ip')} AND contains({ip}, ':') THEN {ip} END AS v6
FROM (SELECT kind, ns, name, ip, {hint} AS wl, {address} AS addr FROM ({sides}))""")
    texts = [str(t) for (t,) in con.execute(f"SELECT DISTINCT v6 FROM {part.ends} WHERE v6 IS NOT NULL").fetchall()]
    if v6 := [(t, a) for t in texts if (a := canonical_ip(t)) is not None]:
        con.execute(f"CREATE TEMP TABLE {part.ends}_v6 AS SELECT unnest(?::VARCHAR[]) AS raw, "
                    "unnest(?::VARCHAR[]) AS canon", [[t for t, _ in v6], [a for _, a in v6]])
        con.execute(f"UPDATE {part.ends} SET addr = m.canon, end_ok = {hint_ok} FROM {part.ends}_v6 m "
                    f"WHERE {part.ends}.v6 = m.raw")
        con.execute(f"DROP TABLE {part.ends}_v6")
    bad = con.execute(f"SELECT count(*) FROM {part.ends} WHERE NOT end_ok").fetchone()
    if bad and bad[0]:
        failing = " OR ".join(f"EXISTS (SELECT 1 FROM {part.ends} f WHERE NOT f.end_ok AND "
                              f"{_same_endpoint('f', part.rows, s)})" for s in ("s", "d"))
        con.execute(f"UPDATE {part.rows} SET line = '\x01' WHERE line IS NULL AND ({failing})")
    part.key = _join_key(con, part.ends)


def _stage_select(part: _Part) -> str:
    """The staging rows of ``part`` (its rows that passed every check): computed as the store scans them."""
    return f"""SELECT r.t_start, r.t_end, hs.addr AS src_ip, hd.addr AS dst_ip, r.src_port, r.dst_port, r.proto,
  r.bytes, r.packets, CASE WHEN r.deny THEN 'deny' ELSE 'allow' END AS action, NULL::INTEGER AS tcp_flags,
  false AS is_reply, CASE WHEN r.egress THEN 'egress' ELSE 'ingress' END AS direction, hs.wl AS src_workload,
  hd.wl AS dst_workload, 'OK' AS log_status, r.fi AS file_index
FROM {part.rows} r LEFT JOIN {part.ends} hs ON {_same_endpoint('hs', 'r', 's', part.key)}
  LEFT JOIN {part.ends} hd ON {_same_endpoint('hd', 'r', 'd', part.key)}
WHERE r.line IS NULL"""
