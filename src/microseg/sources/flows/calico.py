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
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
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
from microseg.sources.flows.hubble import workload_from_pod

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
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise _Bad(field, f"{ip!r} is not an IP address") from None


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

    def __init__(self, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
        self.writer, self.staged, self.options = writer, staged, options
        self.dst_keys: set[tuple[Any, ...]] = set()
        self.src_rows: list[tuple[tuple[Any, ...], StageRow, SourceFile]] = []

    def add(self, row: StageRow, src: SourceFile) -> None:
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


def _stage_json(src: SourceFile, index: int, batch: _Batch) -> None:
    buf: list[str] = []
    start = 0
    depth, in_string = 0, False
    for no, text in iter_lines(src):
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
                    doc = json.loads(stripped.removesuffix(","))
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
            doc = json.loads(doc_text)
        except json.JSONDecodeError as exc:
            # Reported at the line of the error, with that line as the sample.
            line = start + exc.lineno - 1
            batch.bad(src, line, _Bad("json", f"invalid JSON: {exc.msg}"), doc_text.split("\n")[exc.lineno - 1])
            continue
        try:
            batch.add(_record(doc, index), src)
        except _Bad as bad:
            batch.bad(src, start, bad, doc_text.split("\n", 1)[0])
    if buf:
        batch.bad(src, start, _Bad("json", "document not closed at the end of the file"), buf[0])


def _stage_file_form(src: SourceFile, index: int, batch: _Batch) -> None:
    columns = FILE_FIELDS
    for no, text in iter_lines(src):
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


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    del con  # parsed in Python and bulk-loaded through the staging file
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    batch = _Batch(writer, staged, options)
    done = False
    try:
        for index, src in enumerate(files):
            try:
                if _is_json(src):
                    _stage_json(src, index, batch)
                else:
                    _stage_file_form(src, index, batch)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        batch.finish()
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1)
    relation.null_columns = frozenset({"tcp_flags"})  # Calico flow logs carry no TCP flags
    staged.relations.append(relation)
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged
