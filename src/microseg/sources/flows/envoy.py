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
  (``outboundTrafficPolicy: REGISTRY_ONLY``).
- No connection -> ``drop`` (not established; as Zeek's S0, which synthesis does not allow but reports):
  a line that is not inbound (an outbound line, or one without an upstream cluster: no side) whose
  response flags say no upstream connection was made (below). An attempt that got no connection is
  no evidence that the dependency works: a client retrying a blocked or dead port must not become an
  allow rule.
  Any other line is ``accept``: the network path was allowed, whatever the application answered.
- Bytes are ``BYTES_RECEIVED`` + ``BYTES_SENT`` (body bytes); no packet counts. The protocol is TCP
  (HTTP/3 would be UDP, logged as ``HTTP/3``).

Response flags (Envoy "Access logging", ``%RESPONSE_FLAGS%``; several are written comma-separated).
``NOT_ESTABLISHED``, the flags that say no upstream connection was made for the request or connection
(_unreached adds one case):

- ``UF`` upstream connection failure (503): the connect to the upstream host failed.
- ``UH`` no healthy upstream host in the cluster (503): no host to connect to.
- ``UO`` upstream overflow, circuit breaking (503): Envoy did not forward the request.
- ``NR`` no route configured (404), or no matching filter chain for a downstream connection: no
  upstream at all. Istio logs such a line with upstream host and cluster ``-`` (no side), which is
  why the rule covers lines without a side.
- ``NC`` upstream cluster not found: no upstream at all.
- ``DF`` the request was terminated by a DNS resolution failure: no address to connect to.
- ``RL`` rate limited locally (429), ``RLSE`` rate limit service error, ``FI`` aborted by fault
  injection, ``IH`` an invalid strictly-checked header (400): Envoy answered the request itself and
  sent nothing upstream.
- ``URX`` (retry limit or maximum connect attempts reached) on a TCP line (no ``%PROTOCOL%``: ``-``,
  empty or absent): Envoy's TCP proxy counts an attempt only while connecting and never retries once
  connected (``source/common/tcp_proxy/tcp_proxy.cc``), so every attempt failed. It usually comes as
  ``UF,URX``, which ``UF`` covers already. On an HTTP line ``URX`` alone stays ``accept``: the router
  retries after answers of the upstream (a 5xx) too, so a connection may have existed; with ``UF`` or
  ``UH`` it drops through them. A custom format without ``%PROTOCOL%`` reads every line as TCP here
  (fail closed).

``drop``, not ``reject``, for all of them, ``NR`` and ``NC`` included: the reader's ``reject`` is an
authorization decision (RBAC, ext_authz, REGISTRY_ONLY); a missing route or cluster is a mesh
configuration gap, and the destination was never contacted. Left ``accept`` (a connection existed,
or may have): ``UC``, ``UR``, ``UT``, ``LR``, ``DC``, ``SI``, ``DT``, ``UMSDR``, ``DPE``, ``UPE``,
``DI``, ``LH`` and ``OM`` (the overload manager may end a request at any stage). A denial wins over
every flag (``reject``). An inbound line (the server's sidecar) keeps ``accept`` whatever its flags:
the peer reached the pod over the network, even if the local application failed (``503 UF``
inbound: the app's port is closed).

Logged by both sidecars: the rule above keys on request id and connection, not on the action. An
outbound line with a no-connection flag has no inbound twin (nothing reached the server), and its
source is usually the application's own socket (no upstream local address), which no inbound line
names. Should an inbound line with the same key exist all the same, the inbound line is kept
(``accept``: it proves the server was reached on that connection) and the outbound one counted as
skipped, on both paths.

Identity. A SPIFFE ID (``%DOWNSTREAM_PEER_URI_SAN%``, ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``,
only in custom formats) names a namespace and a *service account*, not a workload: several
workloads may share one account, so the reader cannot turn it into a workload hint without
guessing; such records are resolved by address like the others. The SPIFFE ID is still validated
(a malformed one is a bad line).

Speed. Files of the default TEXT format and of the JSON encoding are parsed and checked by DuckDB
(see "DuckDB fast path" below); every other file, and any file with a line DuckDB cannot judge
exactly, is read by the Python reader, which gives the same rows and reports bad lines. Both paths
read a repeated JSON key as its first occurrence (jsonline).
"""

from __future__ import annotations

import codecs
import functools
import gzip
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
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
    sql_list,
    sql_str,
)
from microseg.sources.flows.jsonline import loads as json_loads
from microseg.sources.flows.sqlpath import (
    IPV6_PATTERN,
    SCAN_ERRORS,
    canonical_ipv6,
    count_rejects,
    drop_after_scan,
    drop_both_ends,
    scan_error,
)

NAME = "envoy"

ACTIONS = {"accept": "accept", "reject": "reject", "drop": "drop"}
# Response flags saying that no upstream connection was made for the line (see the module docstring):
# ``drop`` on a line that is not inbound.
NOT_ESTABLISHED = frozenset({"UF", "UH", "UO", "NR", "NC", "DF", "RL", "RLSE", "FI", "IH"})
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
        if len(v) > 19:  # past the bound below (and int() refuses more than 4300 digits)
            raise _Bad(field, f"{v[:40]!r} out of range")
        n = int(v)
    else:
        raise _Bad(field, f"{v!r} is not a number")
    if not 0 <= n <= 1 << 62:  # bytes and milliseconds: a negative JSON integer is no count either
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
    ip = canonical_ip(host)
    return None if ip is None else (ip, int(port))


def _side(cluster: str) -> str | None:
    if cluster.startswith("outbound|") or cluster in ("PassthroughCluster", "BlackHoleCluster"):
        return "egress"
    if cluster.startswith(("inbound|", "InboundPassthroughCluster")):
        return "ingress"
    return None


def _flags(rec: dict[str, Any]) -> list[str]:
    # Envoy writes several flags comma-separated ("UF,URX")
    return str(rec.get("response_flags") or "").split(",")


def _denied(rec: dict[str, Any]) -> bool:
    details = f"{rec.get('response_code_details') or ''} {rec.get('connection_termination_details') or ''}"
    # "UAEX" = denied by ext_authz; "RBAC" is accepted too, as some Envoy builds and log pipelines name
    # the RBAC denial that way.
    flags = _flags(rec)
    return ("rbac_access_denied" in details or "UAEX" in flags or "RBAC" in flags
            or rec.get("upstream_cluster") == "BlackHoleCluster")


def _action(rec: dict[str, Any], direction: str | None) -> str:
    """``reject`` (a denial), ``drop`` (_unreached, on a line that is not the server's sidecar's: no
    upstream connection was made), else ``accept``."""
    if _denied(rec):
        return "reject"
    if direction != "ingress" and _unreached(rec):
        return "drop"
    return "accept"


def _unreached(rec: dict[str, Any]) -> bool:
    """A flag of NOT_ESTABLISHED, or URX on a TCP line (no protocol: a TCP proxy's connect attempts all
    failed)."""
    flags = _flags(rec)
    return not NOT_ESTABLISHED.isdisjoint(flags) or ("URX" in flags and _absent(rec.get("protocol")))


def _record(rec: Any, file_index: int) -> tuple[StageRow, tuple[Any, ...]]:
    """The staging row and the de-duplication key (request id, connection) of one log record."""
    if not isinstance(rec, dict):
        raise _Bad("json", "not a JSON object")
    for key in _REQUIRED:
        if _absent(rec.get(key)):
            raise _Bad(key, "missing")
    t = _time_us(rec["start_time"])
    duration = _int(rec.get("duration"), "duration")
    if t + (duration or 0) * 1000 > MAX_EPOCH_SECONDS * 1_000_000:  # the store's limit, checked per line
        raise _Bad("duration", f"{duration!r} ms from {rec['start_time']!r} ends after 9999-12-31T23:59:59Z")
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
        action=_action(rec, direction), tcp_flags=None, is_reply=False, direction=direction,
        src_workload=None, dst_workload=None, log_status="OK", file_index=file_index)
    request_id = rec.get("request_id", rec.get("x_request_id"))
    if not (request_id is None or isinstance(request_id, str)):
        raise _Bad("request_id", f"{request_id!r} is not a string")
    dedup_key = (None if _absent(request_id) else request_id, src, dst)
    return row, dedup_key


def _rid_key(rid: str) -> str:
    """The request id as the fast path's table spells it (the staging file is TSV): as is, unless it
    holds '"', a tab or a line break, which no id the fast path reads does; then json.dumps, which
    starts with '"', so the two spellings never meet."""
    return json.dumps(rid) if any(c in rid for c in '"\t\r\n') else rid


class _Batch:
    def __init__(self, writer: StageWriter, staged: Staged, options: ReaderOptions, *, dedupe: bool = True) -> None:
        self.writer, self.staged, self.options = writer, staged, options
        # False: every row is written with its request id, and the fast path drops duplicates in SQL
        self.dedupe = dedupe
        self.inbound: set[tuple[Any, ...]] = set()
        self.outbound: list[tuple[tuple[Any, ...], StageRow, SourceFile]] = []

    def add(self, row: StageRow, key: tuple[Any, ...], src: SourceFile) -> None:
        if not self.dedupe:
            self.writer.write(row, None if key[0] is None else _rid_key(key[0]))
        elif row.direction == "egress":
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
                    rec: Any = json_loads(text)  # a repeated key: the first wins, as in DuckDB
                except ValueError as exc:
                    raise _Bad("json", f"invalid JSON: {exc}") from None
            else:
                rec = _split(text, layout, used)
            row, key = _record(rec, index)
            batch.add(row, key, src)
        except _Bad as bad:
            batch.bad(src, no, bad, text)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=frozenset())
    tag = f"_ms_envoy_{id(staged)}"
    kinds = {i: kind for i, src in enumerate(files) if (kind := _kind(src)) is not None}
    fast = _scan(con, files, tag, kinds) if kinds else None
    writer = StageWriter(options.tmp_dir, extra={"rid": "VARCHAR"} if fast is not None else None)
    staged.cleanup.append(writer.path)
    batch = _Batch(writer, staged, options, dedupe=fast is None)
    done = False
    try:
        for index, src in enumerate(files):
            if fast is not None and index not in fast:
                continue  # every line of it is in the fast path's table
            try:
                _stage_file(src, index, batch)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        batch.finish()
        writer.close()
        if fast is not None:
            staged.relations.append(_finish(con, tag, writer, staged, list(files)))
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file and the fast path's table
            writer.path.unlink(missing_ok=True)
            if fast is not None:
                con.execute(f"DROP TABLE IF EXISTS {tag}")
    if fast is None:
        relation = writer.relation(list(files), time_unit=1_000_000)
        relation.null_columns = _NULL_COLUMNS
        staged.relations.append(relation)
    staged.locate_bad = lambda _src: []  # every check the store repeats was made here
    return staged


_NULL_COLUMNS = frozenset({"packets", "tcp_flags", "src_workload", "dst_workload"})


# -- DuckDB fast path (Istio's default TEXT format) -----------------------------------------------
#
# Each line is read as one column and matched, in one regular expression, against the default
# layout with every token in a shape where DuckDB's split is certainly _TOKEN's: single spaces
# between tokens, printable ASCII, quoted tokens without '"' or '\\', bare tokens not starting with
# '[' or '"', addresses IPv4:port or [IPv6]:port (written canonical afterwards, _canonical_v6), ports
# up to 65535, numbers short enough for BIGINT sums, times in UTC ("Z"). The used values are then
# typed and checked in SQL as _record does it. A file with any other non-empty line (a format line,
# JSON, a bad value, ...) is read whole in Python, which reports bad lines with
# file:line, field and sample; so is the whole batch on invalid UTF-8 or an over-long line (DuckDB
# rejects it; Python replaces it). A file whose first line is JSON or a format line, or that starts
# with a byte order mark, is read in Python without trying (_python_only). The rows Python reads
# are added to the table, and the logged-by-both-sidecars rule runs in SQL on all of them.

_BARE = r"[!#-Z\\-~][!#-~]*"  # _TOKEN's \S+: printable ASCII without '"', not starting with '[' (never stripped)
_WORD = r"[!#-\[\]-~]*"  # printable ASCII but space, '"' and '\'
_QUOTED = r'"[ !#-\[\]-~]*"'  # _TOKEN's quoted token, without '"' or '\' inside
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_V4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"  # what ipaddress accepts and str() gives back unchanged
# A port Python's int() reads as at most 65535 (leading zeros allowed), so SQL casts it without checking.
_PORT = "0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# IPv6 as "[address]:port" (what Envoy writes): hex digits, ':' and '.' with an optional zone of printable
# ASCII but space, '"', '\\' and ']', so the first ']' closes it. Only the shape: _v6_ok_sql checks the
# address on the rare lines that hold one, and _canonical_v6 writes it as Python does.
_V6 = r"\[[0-9A-Fa-f:.]+(?:%[!#-\[^-~]+)?\]"
_ADDR = rf"(?:{_V4}|{_V6}):{_PORT}"
# Byte counts of at most 18 digits and durations of at most 15 (_int's bound is 1 << 62, 19 digits): the
# sums and t_end fit a BIGINT; a longer number (leading zeros included) is left to Python.
_NUM = "(?:-|[0-9]{1,18})"
_DURATION = "(?:-|[0-9]{1,15})"
# DEFAULT_LAYOUT token by token, in the shapes the fast path reads (no capture groups: RE2 then
# matches with its fast automaton; the values are cut out with string_split, _text_fields_sql).
_TOKENS = (
    r"\[[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?Z\]",
    f'"{_WORD} {_WORD} {_WORD}"',  # method, path, protocol: str.split(" ") gives three parts
    _BARE, _BARE, _BARE, _BARE,  # code, flags, code details, termination details
    _QUOTED, _NUM, _NUM, _DURATION, _BARE,  # bytes received, bytes sent, duration
    _QUOTED, _QUOTED, _QUOTED, _QUOTED,  # x-forwarded-for, user agent, request id, authority
    f'"(?:|-|{_ADDR})"', _BARE, f"(?:-|{_ADDR})", _ADDR, _ADDR,  # upstream host, cluster .. remote
    _BARE, _BARE)
_LINE = "^" + " ".join(_TOKENS) + "$"
assert len(_TOKENS) == len(DEFAULT_LAYOUT)
_TEXT_PARSE = "c0, string_split(c0, ' ') AS w"


# What _record reads, from a line in the fast shape split at ' ' (``w``). [YYYY-MM-DDTHH:MM:SS(.frac)Z]
# is the time (a TIMESTAMP cast takes the T and, as _time_us, keeps the first six digits of the fraction:
# 05.9999999 is 05.999999, not 06). The first tokens (time, the request's three words, code, flags,
# details, termination) and the last seven (upstream host .. route) hold no space in the fast shape, so
# they are w[1..8] and w[-7..-1]; the numbers after the failure reason (w[9]) and the request id before
# the authority (w[-8]) are read from ``w`` when w[9] and w[-9] are whole quoted tokens ('"..."': the
# reason, and the id after an authority without space; a quoted token with spaces gives no such piece,
# as its content holds no '"'), else from the parts between '"' (the rare rows only). Every string
# function costs about as much per row, so the rare cases (HTTP/3, a flag or detail that may deny,
# IPv6) are computed on the rows that may hold them.
def _text_fields_sql(parsed: str) -> str:
    q = "string_split(c0, '\"')"
    denied = ("CASE WHEN contains(w[6], 'UAEX') OR contains(w[6], 'RBAC') "
              "THEN list_has_any(string_split(w[6], ','), ['UAEX', 'RBAC']) ELSE false END "
              "OR contains(w[7], 'rbac_access_denied') OR contains(w[8], 'rbac_access_denied') "
              "OR w[-6] = 'BlackHoleCluster'")
    v6 = " OR ".join(f"contains({a}, '[')" for a in ("w[-7]", "w[-5]", "w[-4]", "w[-3]"))
    v6_ok = _v6_ok_sql(("u_host", "u_local", "d_local", "d_remote"), 0)
    # most lines have no flag ('-'): the list is built on the others only
    # (URX: w[4] is the request's third word, the protocol, and its closing '"')
    unreached = (f"CASE WHEN w[6] <> '-' THEN list_has_any(string_split(w[6], ','), {_NOT_ESTABLISHED_SQL}) "
                 "OR (w[4] IN ('-\"', '\"') AND list_contains(string_split(w[6], ','), 'URX')) ELSE false END")

    def num(k: int) -> str:
        return f"CASE WHEN numbers THEN w[{9 + k}] ELSE string_split({q}[5], ' ')[{1 + k}] END"

    return f"""
SELECT fi, blank, shaped AND CASE WHEN v6 THEN {v6_ok} ELSE true END AS shaped, time,
  {_num_sql('received')} AS n_received, {_num_sql('sent')} AS n_sent, {_num_sql('duration')} AS n_duration,
  http3, denied, {_UNREACHED} AS unreached, direction, CASE WHEN rid IN ('', '-') THEN NULL ELSE rid END AS rid,
  CASE WHEN {_UP.format(absent="'', '-'")} AND u_local <> '-' THEN u_local ELSE d_remote END AS src,
  CASE WHEN {_UP.format(absent="'', '-'")} THEN u_host ELSE d_local END AS dst
FROM (
SELECT fi, blank, shaped, substr(w[1], 2, strlen(w[1]) - 3) AS time,
  {num(1)} AS received, {num(2)} AS sent, {num(3)} AS duration,
  CASE WHEN contains(w[4], '/3') THEN starts_with(upper(w[4]), 'HTTP/3') ELSE false END AS http3,
  {denied} AS denied, {unreached} AS flag_unreached, {_SIDE.format(c='w[-6]', q='')} AS direction,
  CASE WHEN rid_whole THEN substr(w[-9], 2, strlen(w[-9]) - 2) ELSE {q}[10] END AS rid,
  substr(w[-7], 2, strlen(w[-7]) - 2) AS u_host, w[-5] AS u_local, w[-4] AS d_local, w[-3] AS d_remote, {v6} AS v6
FROM (
SELECT *, w[9] LIKE '"%"' AS numbers, w[-9] LIKE '"%"' AS rid_whole
FROM ({parsed})))"""


def _v6_ok_sql(addresses: Sequence[str], q: int) -> str:
    """Every one of ``addresses`` (in the fast shape; ``q``: spelt in '"') that is "[...]:port" holds an
    address ipaddress reads (sqlpath.IPV6_PATTERN; an IPv4 address in brackets is left to Python)."""
    pattern, bracket = sql_str(IPV6_PATTERN), sql_str('"' * q + "[")
    return " AND ".join(f"(NOT starts_with({a}, {bracket}) OR "
                        f"regexp_full_match(substr({a}, {2 + q}, strpos({a}, ']') - {2 + q}), {pattern}))"
                        for a in addresses)


def _num_sql(k: str) -> str:
    """_int of a value in the fast shape (digits, or what _absent reads as absent: '-', '', null, none of
    which TRY_CAST reads): a BIGINT, or NULL; computed for shaped lines only (an unchecked value could
    overflow the sums)."""
    return f"CASE WHEN shaped THEN TRY_CAST({k} AS BIGINT) END"


# _side of ``c`` (spelt with the quotes ``q`` around it, as JSON text)
_SIDE = ("CASE WHEN starts_with({c}, '{q}outbound|') OR {c} IN ('{q}PassthroughCluster{q}', '{q}BlackHoleCluster{q}') "
         "THEN 'egress' WHEN starts_with({c}, '{q}inbound|') OR starts_with({c}, '{q}InboundPassthroughCluster') "
         "THEN 'ingress' END")
# the client sidecar's own connection to the chosen pod when an outbound line names one
_UP = "direction = 'egress' AND u_host NOT IN ({absent})"
# _action's drop: a line not inbound (egress, or no side: NULL) that _unreached (flag_unreached)
_UNREACHED = "coalesce(direction IS DISTINCT FROM 'ingress' AND flag_unreached, false)"
_NOT_ESTABLISHED_SQL = "[" + ", ".join(sql_str(f) for f in sorted(NOT_ESTABLISHED)) + "]"


# Istio's JSON encoding. DuckDB (yyjson) and json.loads agree on what a JSON text is, except that
# yyjson also takes trailing commas and nan / inf / infinity in any case (json.loads only NaN and
# Infinity): a line that may hold one of those (_JSON_LENIENT, a cheap superset found by regular
# expressions that start with a literal) is left to Python, as is one DuckDB cannot parse (try()
# gives NULL; a lone surrogate, for one). A repeated key reads as its first occurrence on both paths
# (jsonline; json_transform, not strict, keeps the first). The values are taken in ONE json_transform
# (every json_* call parses the line again; a struct of text leaves costs less than json_extract's
# list of JSON values, and needs no unquoting), each key as the leaf type that tells what _record needs
# (_JSON_LEAVES): VARCHAR (a string's value, escapes decoded as json.loads does; any other value's JSON
# text) where no other JSON value can pass the check that follows, JSON (a string as its JSON text,
# which starts with '"' and holds '\' wherever the string has '"', '\' or a control character) where
# _record tells a string from a number; null and a missing key are both NULL. The checks
# (_json_fields_sql) then leave to Python every line with a value _record might read differently, and
# the rest of _record's checks follow in _checked_sql on the same columns as the TEXT format gives.
# yyjson reads nan / inf (any case, a '-' before) only where a value starts: after ':', '[' or ','
# and blanks, where strict JSON has no bare word starting with those letters. Each expression starts
# with a literal character, which RE2 skips to (three of them cost less than two that start with
# a case-insensitive word, or one that joins them).
_JSON_LENIENT = (r",[ \t]*(?:[\]}]|[-+]?(?i:nan|inf))", r":[ \t]*[-+]?(?i:nan|inf)", r"\[[ \t]*[-+]?(?i:nan|inf)")
# VARCHAR: the time, the numbers and the addresses (only a string passes their shapes, or the numbers'
# write-back), the SPIFFE ID (only ''/'-' pass); JSON: the values _record takes as str() or needs as
# strings (protocol, flags, details, cluster, request ids), which must be strings without escapes.
_JSON_LEAVES = {"start_time": "VARCHAR", "protocol": "JSON", "response_flags": "JSON", "response_code_details": "JSON",
                "connection_termination_details": "JSON", "bytes_received": "VARCHAR", "bytes_sent": "VARCHAR",
                "duration": "VARCHAR", "request_id": "JSON", "x_request_id": "JSON", "upstream_host": "VARCHAR",
                "upstream_cluster": "JSON", "upstream_local_address": "VARCHAR", "downstream_local_address": "VARCHAR",
                "downstream_remote_address": "VARCHAR", "downstream_peer_uri_san": "VARCHAR"}
_JSON_STRUCT = sql_str("{" + ", ".join(f'"{k}": "{t}"' for k, t in _JSON_LEAVES.items()) + "}")
_JSON_PARSE = f"c0, CASE WHEN shaped THEN try(json_transform(c0, {_JSON_STRUCT})) END AS j"
_TIME_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?Z"


def _json_fields_sql(parsed: str) -> str:
    """_text_fields_sql's columns from the JSON lines of ``parsed``; ``shaped`` also says that every
    value has the type _record accepts and the shape the TEXT format's expression guarantees.

    - The time and the two downstream addresses (required), the upstream addresses (or absent: NULL,
      '' or '-') in the TEXT format's shapes, each matched on its own (less than one match over the
      values joined), which no JSON value but a string has (a number holds no ':', an array's or an
      object's text ends in ']' or '}'); the SPIFFE ID absent (the fast path reads no SPIFFE ID).
    - A number (_int) absent, or its text written back from UBIGINT (a JSON number in its shortest
      spelling: a fraction, an exponent, a sign, a bool or a container does not come back the same),
      else a string of ASCII digits with leading zeros (a regular expression, on those rows only); in
      either case below 10^18 (10^15 for the duration), the TEXT format's bound, so the sums fit.
    - The JSON leaves NULL, or a string without '\\' (its value is its text between the quotes); a
      null request_id next to an x_request_id is told from a missing one by json_extract (rare rows).
    Null, '""' and '"-"' are _absent, and a null protocol, flag or detail is '' in _record, which
    neither the HTTP/3 nor the denial test tells from NULL (both give false)."""

    def string(k: str) -> str:
        return f"({k} IS NULL OR (starts_with({k}, '\"') AND NOT contains({k}, '\\')))"

    def number(k: str, digits: int) -> str:
        return (f"({k} IS NULL OR {k} = '-' OR {k} = '' OR (u_{k} < {10 ** digits} AND "
                f"(u_{k}::VARCHAR = {k} OR regexp_full_match({k}, '[0-9]+'))))")

    def address(k: str, optional: bool) -> str:
        if optional:
            return f"({k} = '-' OR {k} = '' OR regexp_full_match({k}, {sql_str(_ADDR)}))"
        return f"regexp_full_match({k}, {sql_str(_ADDR)})"

    check = " AND ".join([
        f"regexp_full_match(start_time, {sql_str(_TIME_RE)})", address("downstream_local_address", False),
        address("downstream_remote_address", False), address("upstream_host", True),
        address("upstream_local_address", True),
        "(downstream_peer_uri_san IS NULL OR downstream_peer_uri_san IN ('', '-'))",
        number("bytes_received", 18), number("bytes_sent", 18), number("duration", 15),
        *(string(k) for k in ("protocol", "response_flags", "response_code_details", "connection_termination_details",
                              "upstream_cluster", "request_id"))])
    absent = "'', '-'"
    # length, not strlen: substr counts characters (a flag after a non-ASCII one is still a flag)
    flags = "string_split(substr(response_flags, 2, length(response_flags) - 2), ',')"
    denied = ("contains(response_code_details, 'rbac_access_denied') "
              "OR contains(connection_termination_details, 'rbac_access_denied') "
              "OR CASE WHEN contains(response_flags, 'UAEX') OR contains(response_flags, 'RBAC') "
              f"THEN list_has_any({flags}, ['UAEX', 'RBAC']) ELSE false END "
              "OR upstream_cluster = '\"BlackHoleCluster\"'")
    http3 = "CASE WHEN contains(protocol, '/3') THEN starts_with(upper(protocol), '\"HTTP/3') ELSE false END"
    unreached = (f"CASE WHEN response_flags <> '\"-\"' THEN list_has_any({flags}, {_NOT_ESTABLISHED_SQL}) "
                 f"OR ((protocol IS NULL OR protocol IN ('\"\"', '\"-\"')) AND list_contains({flags}, 'URX')) "
                 "ELSE false END")
    addresses = ("upstream_host", "upstream_local_address", "downstream_local_address", "downstream_remote_address")
    v6 = " OR ".join(f"contains({a}, '[')" for a in addresses)
    # request_id, else x_request_id when request_id is missing (not when it is null): _record's get()
    rid = ("CASE WHEN j.request_id IS NULL AND j.x_request_id IS NOT NULL AND json_extract(c0, '$.request_id') IS NULL "
           "THEN j.x_request_id ELSE j.request_id END")
    # an absent upstream address as '-' (NULL: null or missing, both absent in _record)
    columns = ", ".join(f"coalesce(j.{k}, '-') AS {k}" if k in ("upstream_host", "upstream_local_address") else f"j.{k}"
                        for k in _JSON_LEAVES if k not in ("request_id", "x_request_id"))
    numbers = ", ".join(f"TRY_CAST(j.{k} AS UBIGINT) AS u_{k}" for k in ("bytes_received", "bytes_sent", "duration"))
    return f"""
SELECT fi, blank, shaped, time, n_received, n_sent, n_duration, http3, denied, {_UNREACHED} AS unreached,
  direction, CASE WHEN request_id IS NULL OR request_id IN ('""', '"-"') THEN NULL
    ELSE substr(request_id, 2, length(request_id) - 2) END AS rid,
  CASE WHEN {_UP.format(absent=absent)} AND u_local NOT IN ({absent}) THEN u_local ELSE d_remote END AS src,
  CASE WHEN {_UP.format(absent=absent)} THEN u_host ELSE d_local END AS dst
FROM (
SELECT fi, blank, shaped, substr(start_time, 1, strlen(start_time) - 1) AS time,
  CASE WHEN shaped THEN u_bytes_received::BIGINT END AS n_received,
  CASE WHEN shaped THEN u_bytes_sent::BIGINT END AS n_sent, CASE WHEN shaped THEN u_duration::BIGINT END AS n_duration,
  {http3} AS http3, coalesce({denied}, false) AS denied, {unreached} AS flag_unreached,
  {_SIDE.format(c='upstream_cluster', q='"')} AS direction,
  request_id,
  upstream_host AS u_host, upstream_local_address AS u_local, downstream_local_address AS d_local,
  downstream_remote_address AS d_remote
FROM (
SELECT fi, blank, coalesce(shaped AND {check} AND CASE WHEN {v6} THEN {_v6_ok_sql(addresses, 0)} ELSE true END,
  false) AS shaped, * EXCLUDE (fi, blank, shaped)
FROM (SELECT fi, blank, shaped, {columns}, {rid} AS request_id, {numbers}
FROM ({parsed}))))"""


def _fields_sql(parsed: str, kind: str) -> str:
    """_text_fields_sql's columns of the lines of the relation ``parsed`` (_scan_sql)."""
    return _checked_sql(_json_fields_sql(parsed) if kind == "json" else _text_fields_sql(parsed))


def _kind(src: SourceFile) -> str | None:
    """"text" or "json" by the first non-blank line; None: read in Python without trying the fast
    path, as is a format line first, a file that starts with a UTF-8 byte order mark (DuckDB skips
    it, Python keeps it as part of the first token: a bad line), or one that cannot be read (the
    Python reader reports that)."""
    try:
        with gzip.open(src.path, "rb") if src.gzip else src.path.open("rb") as fh:
            if fh.read(3) == codecs.BOM_UTF8:
                return None
        for _no, text in iter_lines(src):
            if text.strip():
                return "text" if text.startswith("[") else "json" if text.startswith("{") else None
    except (OSError, EOFError):
        return None
    return None


def _scan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], tag: str,
          kinds: dict[int, str]) -> set[int] | None:
    """Parses the files of ``kinds`` ("text" / "json") into the table ``tag``; returns the indexes of
    the files Python reads whole, or None (no table): the whole batch in Python."""
    groups = [(n, kind, idx) for n, (kind, gz) in enumerate((k, g) for k in ("text", "json") for g in (0, 1))
              if (idx := [i for i, f in enumerate(files) if int(f.gzip) == gz and kinds.get(i) == kind])]
    parts = [_fields_sql(_scan_sql([files[i] for i in idx], idx, f"{tag}_e{n}", f"{tag}_s{n}", kind), kind)
             for n, kind, idx in groups]
    try:
        con.execute(f"CREATE TEMP TABLE {tag} AS " + " UNION ALL ".join(parts))
    except SCAN_ERRORS as exc:
        raise scan_error(exc, files) from exc
    # invalid UTF-8 or an over-long line: Python replaces or reads it
    if count_rejects(con, ((f"{tag}_e{n}", f"{tag}_s{n}") for n, *_ in groups)):
        con.execute(f"DROP TABLE {tag}")
        return None
    whole = {int(r[0]) for r in con.execute(f"SELECT DISTINCT file_index FROM {tag} WHERE NOT ok").fetchall()}
    con.execute(f"DELETE FROM {tag} WHERE NOT ok OR file_index IN (SELECT file_index FROM {tag} WHERE NOT ok)")
    return whole | _canonical_v6(con, tag) | (set(range(len(files))) - set(kinds))


def _canonical_v6(con: duckdb.DuckDBPyConnection, table: str) -> set[int]:
    """Writes IPv6 addresses as _record does (sqlpath.canonical_ipv6), before the logged-by-both rule
    compares them and the store groups by them; returns the files to read in Python instead (their rows
    deleted): those with an address Python does not read, which _v6_ok_sql leaves none of."""
    whole = canonical_ipv6(con, table)
    if whole:
        con.execute(f"DELETE FROM {table} WHERE file_index IN ({', '.join(map(str, sorted(whole)))})")
    return whole


def _shape_sql(kind: str) -> str:
    if kind == "text":
        return f"regexp_full_match(c0, {sql_str(_LINE)})"
    return " AND ".join(f"NOT regexp_matches(c0, {sql_str(r)})" for r in _JSON_LENIENT)


def _scan_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: str, scan: str, kind: str) -> str:
    """Every line of ``files``: its file index, whether it is blank, whether it is in the fast shape
    (_LINE, or _JSON_LENIENT's superset), and then the line and its pieces between ' ' (``w``, TEXT) or
    the JSON texts of _JSON_KEYS (``j``)."""
    mapping = ", ".join(str(i) for i in indexes)
    fi = "file_index" if list(indexes) == list(range(len(indexes))) else f"[{mapping}][CAST(file_index AS BIGINT) + 1]"
    # nullstr: a value no line has, so that an empty line is '' and the delimiter \x01 gives c1.
    # DuckDB splits lines at \n, \r\n and a lone \r, as Python's text reader does with newline="".
    return f"""
SELECT fi, blank, shaped, {_JSON_PARSE if kind == "json" else _TEXT_PARSE}
FROM (
SELECT fi, c0, coalesce(c0 = '' AND c1 IS NULL, false) AS blank,
  coalesce(c1 IS NULL AND {_shape_sql(kind)}, false) AS shaped
FROM (
SELECT {fi} AS fi, c0, c1
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{"gzip" if files[0].gzip else "none"}', store_rejects=true, rejects_table='{rejects}',
  rejects_scan='{scan}')))"""


def _checked_sql(fields: str) -> str:
    """_TABLE's columns and ``ok``: the row is exactly what _record gives (else the file is read in
    Python); blank lines give no row.

    ``shaped`` (_LINE, _json_fields_sql) already guarantees every address valid with a port of at most
    65535 and every number short enough for BIGINT arithmetic, so what is left is the time (a real day)
    and the values; only the two endpoints the row names (``src``, ``dst``) are cut into IP and port (an
    IPv6 address as written: _canonical_v6)."""

    def ip(a: str) -> str:
        return (f"CASE WHEN starts_with({a}, '[') THEN substr({a}, 2, strpos({a}, ']') - 2) "
                f"ELSE substr({a}, 1, strpos({a}, ':') - 1) END")

    def port(a: str) -> str:  # the digits after the last ':'
        colon = f"CASE WHEN starts_with({a}, '[') THEN strpos({a}, ']:') + 1 ELSE strpos({a}, ':') END"
        return f"TRY_CAST(substr({a}, {colon} + 1, strlen({a}) - {colon}) AS INTEGER)"

    return f"""
SELECT TRY_CAST(t AS UBIGINT) AS t_start, TRY_CAST(t_e AS UBIGINT) AS t_end,
  {ip('src')} AS src_ip, {ip('dst')} AS dst_ip, {port('src')} AS src_port, {port('dst')} AS dst_port,
  CASE WHEN http3 THEN 17 ELSE 6 END AS proto,
  TRY_CAST(CASE WHEN n_received IS NULL AND n_sent IS NULL THEN NULL
    ELSE coalesce(n_received, 0) + coalesce(n_sent, 0) END AS UBIGINT) AS bytes,
  denied, unreached, direction, fi::INTEGER AS file_index, rid,
  coalesce(shaped AND t >= 0 AND t_e <= {MAX_EPOCH_SECONDS * 1_000_000}, false) AS ok
FROM (
SELECT *, t + coalesce(n_duration, 0) * 1000 AS t_e
FROM (
SELECT *,
  CASE WHEN shaped THEN epoch_us(TRY_CAST(time AS TIMESTAMP)) END AS t
FROM ({fields}) WHERE NOT blank))"""


# The fast path's table: the staging columns that vary (``denied`` and ``unreached`` for ``action``), and
# ``rid``, the request id as the table spells it (_rid_key). Writing a column costs about as much as
# computing one, so the constants are added when the store reads the table (_STAGE_SQL).
_TABLE = ("t_start", "t_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "bytes", "denied", "unreached",
          "direction", "file_index", "rid")
_CONSTANT = {"packets": "NULL::UBIGINT",
             "action": "CASE WHEN denied THEN 'reject' WHEN unreached THEN 'drop' ELSE 'accept' END",
             "tcp_flags": "NULL::INTEGER", "is_reply": "false", "src_workload": "NULL::VARCHAR",
             "dst_workload": "NULL::VARCHAR", "log_status": "'OK'"}
_STAGE_SQL = ", ".join(f"{_CONSTANT[c]} AS {c}" if c in _CONSTANT else c for c in STAGE_COLUMNS)
assert set(STAGE_COLUMNS) == set(_TABLE) - {"denied", "unreached", "rid"} | set(_CONSTANT)


def _finish(con: duckdb.DuckDBPyConnection, table: str, writer: StageWriter, staged: Staged,
            files: list[SourceFile]) -> StagedRelation:
    """Adds the Python rows to the table, drops outbound lines whose request the server's sidecar
    logged too (counted as skipped, as _Batch does) and returns the relation over the table."""
    if writer.rows:
        python = ", ".join({"denied": "action = 'reject'", "unreached": "action = 'drop'"}.get(c, c) for c in _TABLE)
        con.execute(f"INSERT INTO {table} SELECT {python}, true FROM ({writer.relation(files, 1).sql})")
    # _Batch's key: (request id or None, source, destination); None matches None, as in a Python set
    drop_both_ends(con, table, ("rid", "src_ip", "src_port", "dst_ip", "dst_port"), files, staged, DUPLICATE)
    return StagedRelation(sql=f"SELECT {_STAGE_SQL} FROM {table}", files=files, time_unit=1_000_000,
                          after_scan=drop_after_scan([table]), null_columns=_NULL_COLUMNS)
