"""Envoy / Istio sidecar access logs: Istio's default TEXT format (or any format given by a
``%OPERATOR%`` format line) and Istio's JSON encoding.

Format facts (istio/istio ``pilot/pkg/model/telemetry_logging.go`` ``EnvoyTextLogFormat`` and its
JSON twin; istio.io "Envoy Access Logs"; Envoy "Access logging" command operators):

- One line per HTTP request, or per TCP connection for non-HTTP traffic (``"- - -"`` request,
  response code 0). ``START_TIME`` is RFC 3339 UTC with milliseconds; ``DURATION`` milliseconds.
- ``UPSTREAM_CLUSTER`` (``UPSTREAM_CLUSTER_RAW`` in current Istio) tells who logged the line:
  ``outbound|<port>|<subset>|<host>`` = the client's sidecar, ``inbound|<port>||`` = the server's
  sidecar; ``PassthroughCluster`` / ``BlackHoleCluster`` are outbound, ``InboundPassthroughCluster*``
  inbound.
- Outbound line: the connection on the wire is ``UPSTREAM_LOCAL_ADDRESS`` (the client pod's sidecar
  socket) -> ``UPSTREAM_HOST`` (the server pod chosen by the load balancer); ``DOWNSTREAM_LOCAL_ADDRESS``
  is the original destination (usually a Service's ClusterIP), used when no upstream was reached.
- Inbound line: ``DOWNSTREAM_REMOTE_ADDRESS`` (client) -> ``DOWNSTREAM_LOCAL_ADDRESS`` (this pod);
  ``UPSTREAM_HOST`` is the local app (127.0.0.1 or the pod IP) and says nothing about the peer.
- A request between two sidecars is logged by both: the two lines carry the same connection
  (client address:port -> server address:port) and the same ``x-request-id``. The server's inbound
  line is kept (it saw the authorization decision); an outbound line with the same key in the batch
  is counted as skipped (``logged-by-both-sidecars``). Every line is a request from its downstream:
  ``is_reply`` is false; direction is ``ingress`` for inbound lines, ``egress`` for outbound.
- Denials -> ``reject`` (Envoy answers 403 or closes the connection; nothing is silently dropped):
  ``RESPONSE_CODE_DETAILS`` or ``CONNECTION_TERMINATION_DETAILS`` ``rbac_access_denied_matched_policy[...]``
  (Envoy's HTTP / network RBAC filter, i.e. an Istio AuthorizationPolicy), response flag ``UAEX``
  ("unauthorized external service": denied by ext_authz), or the ``BlackHoleCluster``
  (``outboundTrafficPolicy: REGISTRY_ONLY``). Any other line is ``accept``: the network path was
  allowed, whatever the application answered.
- Bytes are ``BYTES_RECEIVED`` + ``BYTES_SENT`` (body bytes); no packet counts. The protocol is TCP
  (HTTP/3 would be UDP, logged as ``HTTP/3``).

Identity. A SPIFFE ID (``%DOWNSTREAM_PEER_URI_SAN%``, ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``,
only in custom formats) names a namespace and a *service account*, not a workload: several
workloads may share one account, so the reader cannot turn it into a workload hint without
guessing; such records are resolved by address like the others. The SPIFFE ID is still validated
(a malformed one is a bad line).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
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

NAME = "envoy"

ACTIONS = {"accept": "accept", "reject": "reject"}
DUPLICATE = "logged-by-both-sidecars"
FORMAT_LINE = "format-line"

# Istio's default TEXT format (telemetry_logging.go), the layout of lines without a format line.
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%')

# Command operators the reader uses -> the key Istio's JSON format gives the same value.
_OPERATORS = {
    "START_TIME": "start_time", "PROTOCOL": "protocol", "RESPONSE_CODE": "response_code",
    "RESPONSE_FLAGS": "response_flags", "RESPONSE_CODE_DETAILS": "response_code_details",
    "CONNECTION_TERMINATION_DETAILS": "connection_termination_details", "BYTES_RECEIVED": "bytes_received",
    "BYTES_SENT": "bytes_sent", "DURATION": "duration", "REQ(X-REQUEST-ID)": "request_id",
    "UPSTREAM_HOST": "upstream_host", "UPSTREAM_CLUSTER": "upstream_cluster",
    "UPSTREAM_CLUSTER_RAW": "upstream_cluster", "UPSTREAM_LOCAL_ADDRESS": "upstream_local_address",
    "DOWNSTREAM_LOCAL_ADDRESS": "downstream_local_address",
    "DOWNSTREAM_REMOTE_ADDRESS": "downstream_remote_address", "DOWNSTREAM_PEER_URI_SAN": "downstream_peer_uri_san",
}
_REQUIRED = ("start_time", "downstream_local_address", "downstream_remote_address")
_JSON_MARKERS = frozenset({"upstream_cluster", "downstream_remote_address", "downstream_local_address"})

# [time], "quoted", or bare; "[fd00::1]:41000" (an IPv6 address:port) is one bare token.
_TOKEN = re.compile(r'\[[^\]]*\](?=\s|$)|"(?:[^"\\]|\\.)*"|\S+')
_OPERATOR = re.compile(r"%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%")
_TEXT_LINE = re.compile(r'\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)\] "')
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)")
_SPIFFE = re.compile(r"spiffe://[^/\s]+/ns/[^/\s]+/sa/[^/\s]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _layout(format_line: str) -> list[list[str | None]]:
    """Per token of a format line, the JSON keys of the operators it holds (None = not used)."""
    out: list[list[str | None]] = []
    for token in _TOKEN.findall(format_line):
        out.append([_OPERATORS.get(op) for op in _OPERATOR.findall(token)])
    return out


DEFAULT_LAYOUT = _layout(ISTIO_TEXT_FORMAT)
_CLUSTER_INDEX = DEFAULT_LAYOUT.index(["upstream_cluster"])


def _is_format_line(line: str) -> bool:
    return line.lstrip().startswith("[%START_TIME") or bool(re.match(r"\s*%[A-Z_]+", line))


def sniff(head: list[str]) -> bool:
    if not head:
        return False
    first = head[0]
    if _is_format_line(first):
        return "%UPSTREAM_CLUSTER" in first or "%DOWNSTREAM_REMOTE_ADDRESS%" in first
    if _TEXT_LINE.match(first):
        tokens = _TOKEN.findall(first)
        return len(tokens) == len(DEFAULT_LAYOUT) and _side(tokens[_CLUSTER_INDEX]) is not None
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and "start_time" in obj and _JSON_MARKERS <= set(obj)


def _split(line: str, layout: list[list[str | None]], used: list[int]) -> dict[str, str]:
    tokens = _TOKEN.findall(line)
    if len(tokens) != len(layout):
        raise _Bad("fields", f"{len(tokens)} fields, expected {len(layout)}")
    out: dict[str, str] = {}
    for i in used:
        keys, token = layout[i], tokens[i]
        if token[0] in '["' and token[-1] in ']"' and len(token) > 1:
            token = token[1:-1]
        if len(keys) == 1:
            out[keys[0] or ""] = token
            continue
        parts = token.split(" ")
        if len(parts) != len(keys):
            raise _Bad(next(k for k in keys if k is not None), f"{token!r} does not have {len(keys)} parts")
        for key, part in zip(keys, parts, strict=True):
            if key is not None:
                out[key] = part
    return out


def _used(layout: list[list[str | None]]) -> list[int]:
    """Indexes of the tokens that hold an operator the reader uses (computed once per layout)."""
    return [i for i, keys in enumerate(layout) if any(keys)]


def _absent(v: Any) -> bool:
    return v is None or v in ("", "-")


def _time_us(v: Any) -> int:
    m = _TIME.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise _Bad("start_time", f"{v!r} is not an RFC 3339 time")
    base, frac, zone = m.groups()
    if zone != "Z" and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError as exc:
        raise _Bad("start_time", str(exc)) from None
    delta = dt - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
    if not 0 <= us <= MAX_EPOCH_SECONDS * 1_000_000:
        raise _Bad("start_time", f"{v!r} out of range")
    return us


def _int(v: Any, field: str) -> int | None:
    if _absent(v):
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str) and v.isascii() and v.isdigit():
        n = int(v)
    else:
        raise _Bad(field, f"{v!r} is not a number")
    if n > 1 << 62:
        raise _Bad(field, f"{n} out of range")
    return n


def _endpoint(v: Any, field: str) -> tuple[str, int] | None:
    """``ip:port`` / ``[v6]:port`` -> (ip, port); ``-`` -> None."""
    if _absent(v):
        return None
    if not isinstance(v, str):
        raise _Bad(field, f"{v!r} is not an address")
    parsed = _parse_endpoint(v)
    if parsed is None:
        raise _Bad(field, f"{v!r} is not an address:port")
    return parsed


@functools.lru_cache(maxsize=65536)  # pod addresses repeat across millions of lines
def _parse_endpoint(v: str) -> tuple[str, int] | None:
    host, sep, port = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return None


def _side(cluster: str) -> str | None:
    if cluster.startswith("outbound|") or cluster in ("PassthroughCluster", "BlackHoleCluster"):
        return "egress"
    if cluster.startswith(("inbound|", "InboundPassthroughCluster")):
        return "ingress"
    return None


def _denied(rec: dict[str, Any]) -> bool:
    details = f"{rec.get('response_code_details') or ''} {rec.get('connection_termination_details') or ''}"
    # Envoy writes several flags comma-separated ("UAEX" = denied by ext_authz); "RBAC" is accepted too,
    # as some Envoy builds and log pipelines name the RBAC denial that way.
    flags = str(rec.get("response_flags") or "").split(",")
    return ("rbac_access_denied" in details or "UAEX" in flags or "RBAC" in flags
            or rec.get("upstream_cluster") == "BlackHoleCluster")


def _record(rec: Any, file_index: int) -> tuple[StageRow, tuple[Any, ...]]:
    """The staging row and the de-duplication key (request id, connection) of one log record."""
    if not isinstance(rec, dict):
        raise _Bad("json", "not a JSON object")
    for key in _REQUIRED:
        if _absent(rec.get(key)):
            raise _Bad(key, "missing")
    t = _time_us(rec["start_time"])
    duration = _int(rec.get("duration"), "duration")
    cluster = str(rec.get("upstream_cluster") or "-")
    direction = _side(cluster)
    d_local = _endpoint(rec["downstream_local_address"], "downstream_local_address")
    d_remote = _endpoint(rec["downstream_remote_address"], "downstream_remote_address")
    u_host = _endpoint(rec.get("upstream_host"), "upstream_host")
    u_local = _endpoint(rec.get("upstream_local_address"), "upstream_local_address")
    if d_local is None or d_remote is None:  # "-" in a text line
        raise _Bad("downstream_remote_address" if d_remote is None else "downstream_local_address", "missing")
    if direction == "egress" and u_host is not None:
        # The client sidecar's own connection to the chosen server pod.
        src, dst = u_local or d_remote, u_host
    else:
        src, dst = d_remote, d_local
    san = rec.get("downstream_peer_uri_san")
    if not _absent(san) and not (isinstance(san, str) and all(_SPIFFE.fullmatch(s) for s in san.split(","))):
        raise _Bad("downstream_peer_uri_san", f"{san!r} is not a SPIFFE ID")
    received, sent = _int(rec.get("bytes_received"), "bytes_received"), _int(rec.get("bytes_sent"), "bytes_sent")
    nbytes = None if received is None and sent is None else (received or 0) + (sent or 0)
    protocol = str(rec.get("protocol") or "")
    row = StageRow(
        t_start=t, t_end=t + (duration or 0) * 1000, src_ip=src[0], dst_ip=dst[0], src_port=src[1],
        dst_port=dst[1], proto=17 if protocol.upper().startswith("HTTP/3") else 6, bytes=nbytes, packets=None,
        action="reject" if _denied(rec) else "accept", tcp_flags=None, is_reply=False, direction=direction,
        src_workload=None, dst_workload=None, log_status="OK", file_index=file_index)
    request_id = rec.get("request_id", rec.get("x_request_id"))
    if not (request_id is None or isinstance(request_id, str)):
        raise _Bad("request_id", f"{request_id!r} is not a string")
    dedup_key = (None if _absent(request_id) else request_id, src, dst)
    return row, dedup_key


class _Batch:
    def __init__(self, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
        self.writer, self.staged, self.options = writer, staged, options
        self.inbound: set[tuple[Any, ...]] = set()
        self.outbound: list[tuple[tuple[Any, ...], StageRow, SourceFile]] = []

    def add(self, row: StageRow, key: tuple[Any, ...], src: SourceFile) -> None:
        if row.direction == "egress":
            self.outbound.append((key, row, src))
        else:
            if row.direction == "ingress":
                self.inbound.add(key)
            self.writer.write(row)

    def bad(self, src: SourceFile, no: int, bad: _Bad, text: str) -> None:
        self.staged.add_bad(src.path, no, bad.field, bad.message, text, self.options.max_samples)

    def finish(self) -> None:
        for key, row, src in self.outbound:
            if key in self.inbound:
                self.staged.skipped[(src.path, DUPLICATE)] += 1
            else:
                self.writer.write(row)


def _stage_file(src: SourceFile, index: int, batch: _Batch) -> None:
    layout = DEFAULT_LAYOUT
    used = _used(layout)
    for no, text in iter_lines(src):
        if not text.strip():
            continue
        try:
            if _is_format_line(text):
                # A format line (the %OPERATOR% string) declares the layout of the lines after it.
                layout = _layout(text)
                used = _used(layout)
                if not {"start_time", "downstream_remote_address"} <= {k for ks in layout for k in ks}:
                    raise _Bad("format", "the format lacks %START_TIME% or %DOWNSTREAM_REMOTE_ADDRESS%")
                batch.staged.skipped[(src.path, FORMAT_LINE)] += 1
                continue
            if text.lstrip().startswith("{"):
                try:
                    rec: Any = json.loads(text)
                except ValueError as exc:
                    raise _Bad("json", f"invalid JSON: {exc}") from None
            else:
                rec = _split(text, layout, used)
            row, key = _record(rec, index)
            batch.add(row, key, src)
        except _Bad as bad:
            batch.bad(src, no, bad, text)


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
                _stage_file(src, index, batch)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        batch.finish()
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file here
            writer.path.unlink(missing_ok=True)
    relation = writer.relation(list(files), time_unit=1_000_000)
    relation.null_columns = frozenset({"packets", "tcp_flags", "src_workload", "dst_workload"})
    staged.relations.append(relation)
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged
