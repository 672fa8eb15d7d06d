"""Cilium Hubble flows, JSON lines (``hubble observe -o jsonpb``, the Hubble exporter's events.log).

Format facts (cilium/cilium ``api/v1/flow/flow.proto`` and its README):

- Each line is a ``GetFlowsResponse`` (``{"flow": {...}, "node_name": ..., "time": ...}``) or a bare
  ``Flow``. Responses without a flow (``node_status``, ``lost_events``, agent/debug events) carry
  no traffic and are counted as skipped.
- ``verdict``: FORWARDED and REDIRECTED (to the L7 proxy) delivered the traffic -> accept; DROPPED
  and ERROR did not -> drop; AUDIT is "would have been dropped, policy in audit mode" -> audit.
  TRACED ("observed at a trace point, no verdict reached yet") and TRANSLATED (socket-level address
  translation) say nothing about whether traffic was allowed: skipped, as is a flow without an IP
  layer (ARP etc.). VERDICT_UNKNOWN or a missing verdict is a bad line: never guessed as accept.
  proto3 JSON may carry enums as numbers; both forms are read.
- ``is_reply`` is a BoolValue: absent means unknown. The deprecated ``reply`` has false negatives,
  so only ``reply: true`` is used, and only when ``is_reply`` is absent. Failing both, TCP flags
  (SYN without ACK = request, SYN+ACK = reply) decide; otherwise direction stays unknown.
- ``l4`` is a oneof: TCP, UDP, ICMPv4, ICMPv6, SCTP. ICMP has no ports (stored as 0).
- proto3 JSON encodes 64-bit integers as strings; every number is read from either form.
- L7 flows (``Type: L7``) are kept as flows of their L4 tuple.

Workload hints. An endpoint's hint is ``namespace/workloads[0].name``. Without ``workloads`` (older
Cilium, field-masked exports) it is derived from ``pod_name``:

- ``<name>-<pod-template-hash>-<5>`` (a Deployment's ReplicaSet pod) -> ``<name>``;
- ``<name>-<5>`` -> ``<name>``: the 5-character suffix of a controller-generated name (DaemonSet,
  Job, bare ReplicaSet). This is ambiguous with a pod whose own name ends in a 5-letter word, so the
  suffix must use only the characters Kubernetes generates names from (``k8s.io/apimachinery``
  ``util/rand``: consonants and 2456789, no vowels) - ``xwing`` or ``agent-probe`` are kept whole.
  A wrong guess is harmless: the mapping uses a hint only when it names an inventory workload and
  otherwise resolves the address;
- anything else (StatefulSet ``web-0``, bare pods) -> the pod name itself.

Reserved identities (a ``reserved:*`` label such as ``reserved:world`` or ``reserved:host``, or a
numeric identity below 256, Cilium's reserved range) give no hint: they are resolved by address.

Reading. DuckDB parses every line once and keeps the lines it is certain the Python reader reads as the
same record or skip (see "DuckDB fast path" below); every other line is read by the Python reader, which
names the line and field of every bad one. A repeated key reads its first occurrence on both paths
(``jsonline``). Tests assert that both paths give the same rows, counts and bad-line reports.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    STAGE_COLUMNS,
    TCP_ACK,
    TCP_SYN,
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    StageRow,
    StageWriter,
    canonical_ip,
    iter_lines,
    jsonline,
    open_text,
    sql_list,
    sql_str,
)
from microseg.sources.flows.sqlpath import (
    IPV4_PATTERN,
    IPV6_PATTERN,
    SCAN_ERRORS,
    canonical_ipv6,
    count_rejects,
    drop_after_scan,
    exact_int_sql,
    scan_error,
)

NAME = "hubble"

_VERDICTS: dict[str, str | None] = {
    "FORWARDED": "accept", "REDIRECTED": "accept", "DROPPED": "drop", "ERROR": "drop", "AUDIT": "audit",
    "TRACED": None, "TRANSLATED": None,
}
_VERDICT_NUMBERS = {1: "FORWARDED", 2: "DROPPED", 3: "ERROR", 4: "AUDIT", 5: "REDIRECTED", 6: "TRACED",
                    7: "TRANSLATED"}
ACTIONS = {"accept": "accept", "drop": "drop", "audit": "audit"}
_L4 = {"TCP": 6, "UDP": 17, "ICMPv4": 1, "ICMPv6": 58, "SCTP": 132}
_TCP_FLAG_BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128, "NS": 256}
_DIRECTIONS = {"INGRESS": "ingress", "EGRESS": "egress", 1: "ingress", 2: "egress"}
_NON_FLOW_KEYS = frozenset({"node_status", "lost_events", "agent_event", "debug_event"})
_FLOW_KEYS = frozenset({"verdict", "IP", "l4", "source", "destination", "Type", "event_type"})

_GEN = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphabet
# The pod-template-hash uses the same alphabet (older releases: decimal digits), 5-10 characters.
_RS_POD = re.compile(rf"(?P<base>.+)-[0-9{_GEN}]{{5,10}}-[{_GEN}]{{5}}")
_GENERATED_POD = re.compile(rf"(?P<base>.+)-[{_GEN}]{{5}}")
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")
_RESERVED_IDENTITY_LIMIT = 256  # Cilium: numeric identities below 256 are reserved
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Bad(Exception):
    """A record that cannot be read; carries the field for the report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sniff(head: list[str]) -> bool:
    if not head:
        return False
    try:
        obj = jsonline.loads(head[0])
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("flow"), dict):
        return True
    keys = set(obj)
    return bool(keys & _NON_FLOW_KEYS) or ("verdict" in keys and bool(keys & {"IP", "l4", "source"}))


# Pods, addresses and names repeat on almost every line of a flow log: the pure string functions
# below are memoised (bounded). ipaddress parsing and the pod-name patterns were about a third of
# the per-line cost of this reader; errors are not cached, so a repeated bad value is reported again.
_CACHE = 1 << 16


@functools.lru_cache(maxsize=_CACHE)
def workload_from_pod(pod: str) -> str:
    """The owning workload's name guessed from a pod name (see the module docstring)."""
    for pattern in (_RS_POD, _GENERATED_POD):
        if m := pattern.fullmatch(pod):
            return m.group("base")
    return pod


def _int(v: Any, field: str) -> int:
    if isinstance(v, bool):
        raise _Bad(field, f"{v!r} is not a number")
    if isinstance(v, int):
        return v
    # ASCII digits only: str.isdigit() also accepts digits int() cannot read ("²") or that no writer
    # of Hubble JSON produces ("٣")
    if isinstance(v, str) and v.isascii() and v.isdigit():
        return int(v)
    raise _Bad(field, f"{v!r} is not a number")


def _port(v: Any, field: str) -> int:
    p = 0 if v is None else _int(v, field)  # proto3 JSON omits zero values
    if not 0 <= p <= 65535:
        raise _Bad(field, f"port {p} out of range")
    return p


def _hint(ep: Any, field: str) -> str | None:
    if ep is None:
        return None
    if not isinstance(ep, dict):
        raise _Bad(field, "endpoint is not an object")
    labels = ep.get("labels") or []
    if not isinstance(labels, list):  # Hubble writes labels as a list of "source:key=value" strings
        raise _Bad(f"{field}.labels", f"{labels!r} is not a list of labels")
    if any(isinstance(x, str) and x.startswith("reserved:") for x in labels):
        return None
    identity = ep.get("identity")
    if identity is not None and 0 < _int(identity, f"{field}.identity") < _RESERVED_IDENTITY_LIMIT:
        return None
    ns = ep.get("namespace")
    if not ns or not isinstance(ns, str):
        return None
    name: str | None = None
    workloads = ep.get("workloads")
    if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict):
        w = workloads[0].get("name")
        name = w if isinstance(w, str) and w else None
    if name is None:
        pod = ep.get("pod_name")
        name = workload_from_pod(pod) if isinstance(pod, str) and pod else None
    if name is None:
        return None
    hint = f"{ns}/{name}"
    if _has_space(hint):
        raise _Bad(field, f"{hint!r} is not a Kubernetes name")
    return hint


def _time_us(v: Any) -> int | None:
    if v is None:
        return None
    m = _TIME.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise _Bad("time", f"{v!r} is not an RFC 3339 time")
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError as exc:
        raise _Bad("time", str(exc)) from None
    micros = int((frac or "0")[:6].ljust(6, "0"))  # nanoseconds are cut to microseconds
    delta = dt - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + micros
    if us < 0:
        raise _Bad("time", f"{v!r} is before 1970")
    if us > MAX_EPOCH_SECONDS * 1_000_000:  # the store's limit, checked per line (an offset or a fraction)
        raise _Bad("time", f"{v!r} is after 9999-12-31T23:59:59Z")
    return us


def _verdict(v: Any) -> str | None:
    name = _VERDICT_NUMBERS.get(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(name, str) or name not in _VERDICTS:
        raise _Bad("verdict", f"unknown or missing verdict {v!r}")
    return _VERDICTS[name]


@functools.lru_cache(maxsize=_CACHE)
def _has_space(text: str) -> bool:  # or a lone surrogate (a JSON \ud800 escape): no Kubernetes name either
    return any(c.isspace() or "\ud800" <= c <= "\udfff" for c in text)


def _ip(v: Any, field: str) -> str:
    ip = canonical_ip(v) if isinstance(v, str) else None
    if ip is None:
        raise _Bad(field, f"{v!r} is not an IP address")
    return ip


def _direction(v: Any) -> str | None:
    """``traffic_direction`` (an enum name; absent or unknown: no hint). A list or object there is malformed."""
    if v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
        return _DIRECTIONS.get(v)  # proto3 JSON may write the enum as its number
    raise _Bad("flow.traffic_direction", f"{v!r} is not a traffic direction")


def _record(obj: Any, file_index: int) -> StageRow:
    if not isinstance(obj, dict):
        raise _Bad("flow", "not a JSON object")
    flow = obj.get("flow")
    if flow is None:
        if set(obj) & _NON_FLOW_KEYS:
            raise _Skip("non-flow")
        if not set(obj) & _FLOW_KEYS:
            raise _Bad("flow", "neither a GetFlowsResponse nor a Flow")
        flow = obj
    if not isinstance(flow, dict):
        raise _Bad("flow", "flow is not an object")
    action = _verdict(flow.get("verdict"))
    ip = flow.get("IP")
    if not ip:
        raise _Skip("non-ip")
    if action is None:
        raise _Skip("no-verdict")
    if not isinstance(ip, dict):
        raise _Bad("IP", "IP is not an object")
    src, dst = _ip(ip.get("source"), "IP.source"), _ip(ip.get("destination"), "IP.destination")
    t = _time_us(flow.get("time", obj.get("time")))
    proto: int | None = None
    sport = dport = flags = None
    l4 = flow.get("l4") or {}
    if not isinstance(l4, dict):
        raise _Bad("l4", "l4 is not an object")
    for key, body in l4.items():
        if key not in _L4:
            continue  # a newer L4 type: protocol stays unknown and the record maps to no edge
        proto = _L4[key]
        if not isinstance(body, dict):
            raise _Bad(f"l4.{key}", "not an object")
        if proto in (6, 17, 132):
            sport = _port(body.get("source_port"), f"l4.{key}.source_port")
            dport = _port(body.get("destination_port"), f"l4.{key}.destination_port")
        else:
            sport = dport = 0
        if proto == 6 and isinstance(body.get("flags"), dict):
            # Over the flags present (usually one or two) rather than all nine names: the same sum.
            flags = sum(_TCP_FLAG_BITS.get(name, 0) for name, on in body["flags"].items() if on is True)
        break
    is_reply = flow.get("is_reply")
    if is_reply is not None and not isinstance(is_reply, bool):
        raise _Bad("is_reply", f"{is_reply!r} is not a boolean")
    if is_reply is None and flow.get("reply") is True:
        is_reply = True
    if is_reply is None and flags is not None:
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
            is_reply = True
        elif flags & TCP_SYN:
            is_reply = False
    return StageRow(
        t_start=t, t_end=t, src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport, proto=proto, bytes=None,
        packets=None, action=action, tcp_flags=flags, is_reply=is_reply,
        direction=_direction(flow.get("traffic_direction")),
        src_workload=_hint(flow.get("source"), "source"), dst_workload=_hint(flow.get("destination"), "destination"),
        log_status="OK", file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=_SKIPS)
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    done = False
    fast: _Fast | None = None
    try:
        sql_files: list[int] = []
        for index, src in enumerate(files):
            try:
                if not _starts_with_bom(src):  # DuckDB drops a BOM, Python's reader does not
                    sql_files.append(index)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        fast = _scan(con, files, sql_files, f"_ms_hubble_{id(staged)}") if sql_files else None
        for index, src in enumerate(files):
            try:
                if fast is None or index in fast.whole_files or index not in sql_files:
                    _stage_file(src, index, writer, staged, options)
                elif index in fast.pending and _stage_file(src, index, writer, staged, options,
                                                           fast.pending[index]) is False:
                    # a line DuckDB split unlike Python (CR CR LF, CR LF CR): none of its rows, all of it here
                    con.execute(f"DELETE FROM {fast.table} WHERE file_index = {index}")
                    _stage_file(src, index, writer, staged, options)
            except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
        done = True
    finally:
        writer.close()
        if not done:  # the store never sees this Staged: remove the staging file and the fast path's table
            writer.path.unlink(missing_ok=True)
            if fast is not None:
                con.execute(f"DROP TABLE IF EXISTS {fast.table}")
    python = writer.relation(list(files), time_unit=1_000_000)
    if fast is None:
        relation = python
    else:
        # One relation: the store folds the SQL rows and the Python rows into the same aggregates,
        # whichever path read a line (as the Python reader alone gives them).
        # (t_end is t_start, and bytes and packets are NULL: not stored in the table)
        derived = {"t_end": "t_start AS t_end", "bytes": "NULL::UBIGINT AS bytes",
                   "packets": "NULL::UBIGINT AS packets"}
        columns = ", ".join(derived.get(c, c) for c in STAGE_COLUMNS)
        sql = f"SELECT {columns} FROM {fast.table} WHERE line IS NULL"
        if writer.rows:
            sql = f"({sql}) UNION ALL ({python.sql})"
        relation = StagedRelation(sql=sql, files=list(files), time_unit=1_000_000,
                                  after_scan=drop_after_scan([fast.table]))
    relation.null_columns = frozenset({"bytes", "packets"})  # Hubble flows carry no byte/packet counts
    staged.relations.append(relation)
    # Every check the store repeats after aggregation has been made here already (SQL or Python).
    staged.locate_bad = lambda _src: []
    return staged


def _starts_with_bom(src: SourceFile) -> bool:
    with open_text(src) as fh:
        return fh.read(1) == "\ufeff"


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions,
                only: frozenset[str] | None = None) -> bool:
    """Reads ``src`` in Python; with ``only``, just the lines of that text (the fast path read the rest).
    False, with nothing read, when some text of ``only`` is no line of the file as Python reads it."""
    lines: Iterable[tuple[int, str]] = iter_lines(src)
    if only is not None:
        lines = [(no, text) for no, text in lines if text in only]
        if len({text for _no, text in lines}) != len(only):
            return False
    for no, text in lines:
        if not text.strip():
            continue
        try:
            try:
                obj = jsonline.loads(text)
            except ValueError as exc:
                raise _Bad("json", f"invalid JSON: {exc}") from None
            writer.write(_record(obj, index))
        except _Skip as skip:
            staged.skipped[(src.path, skip.reason)] += 1
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
    return True


# -- DuckDB fast path -------------------------------------------------------------------------------
#
# Every line is read by DuckDB as one column and parsed once (one json_extract of the fields _record
# reads; a line needing a rarely used value - pod names without workloads, "reply" without "is_reply",
# the response's time, an SCTP body - is parsed again for it); SQL keeps a line only when it is certain
# that _record reads it as the same good record (or the same skip). Every other line is "uncertain"
# and read by the Python reader above, matched by its text (every line of that text: certainty is a
# function of the text alone), which reads it or names the line and field that is bad. A line is certain when:
# - it is one JSON object, nothing around it, that Python's json module parses as DuckDB does: DuckDB
#   (yyjson) also accepts trailing commas and nan / inf / infinity literals in any case, which json.loads
#   rejects (it reads only NaN, Infinity, -Infinity), so a line with a comma before a closing bracket, or
#   nan / inf in any case after ":", "," or "[" (blanks and a "-" between), is uncertain (a superset: such
#   text inside a string counts too); a repeated key reads its first occurrence on both paths (jsonline);
# - it is a {"flow": {...}} response or a bare Flow without the keys of other responses, or a
#   response of another kind (node_status ...: skipped as "non-flow");
# - every value _record uses has the type and form SQL checks exactly: strings without escapes (their
#   JSON text, as DuckDB writes it back, is then their content), verdict names or numbers, addresses
#   ipaddress accepts (IPv6 in any spelling, a zone id of interface-name characters; each distinct IPv6
#   value is then rewritten as canonical_ip writes it, see sqlpath.canonical_ipv6), RFC 3339 UTC times, ports and
#   identities as JSON integers or ASCII digit strings, l4 with a known protocol first, booleans,
#   workload hints of printable ASCII; anything else (wrong types, NaN, huge numbers, non-ASCII names,
#   endpoints without any of the keys read) is left to Python.
# Invalid UTF-8 or an over-long line (DuckDB rejects it, Python replaces) sends the batch to Python; a
# line SQL cannot split exactly (the delimiter \x01) sends its file.

_SKIPS = frozenset({"non-flow", "non-ip", "no-verdict"})
# The values read, in this order, for a {"flow": ...} line (prefix "$.flow") and a bare Flow ("$");
# a bare line also reads the keys that make it a response of another kind.
_EP_KEYS = ("namespace", "labels", "identity", "workloads[0].name")
_FIELDS = ("verdict", "time", "IP.source", "IP.destination", "l4", "is_reply", "traffic_direction",
           *(f"{side}.{k}" for side in ("source", "destination") for k in _EP_KEYS),
           # the bodies' values, used when that protocol is the first key of l4 (an SCTP body is read apart)
           "l4.TCP.source_port", "l4.TCP.destination_port", "l4.TCP.flags", "l4.UDP.source_port",
           "l4.UDP.destination_port")
_BARE_EXTRA = ("flow", *sorted(_NON_FLOW_KEYS))
_GEN_POD = f"[{_GEN}]{{5}}"
_RS_HASH = f"[0-9{_GEN}]{{5,10}}"
_VERDICT_SQL = {**{f'"{k}"': v for k, v in _VERDICTS.items()},
                **{str(n): _VERDICTS[k] for n, k in _VERDICT_NUMBERS.items()}}
_FALSY = ("'null'", "'{}'", "'[]'", "'\"\"'", "'0'", "'false'")  # JSON texts Python reads as falsy
_TCP_FLAGS = tuple(_TCP_FLAG_BITS.items())
# The flag sets Hubble writes most (as DuckDB writes the object back): looked up, not parsed again.
_COMMON_FLAGS = {json.dumps({k: True for k in names}, separators=(",", ":")): sum(_TCP_FLAG_BITS[k] for k in names)
                 for names in (["SYN"], ["ACK"], ["SYN", "ACK"], ["PSH", "ACK"], ["ACK", "PSH"], ["FIN", "ACK"],
                               ["ACK", "FIN"], ["RST"], ["RST", "ACK"], ["ACK", "RST"], ["FIN"], ["PSH"])}

# IPv6 on the fast paths of this reader and gcp's: sqlpath's pattern of the texts canonical_ip accepts.
IPV6_SQL = IPV6_PATTERN


def address_json_sql(v: str) -> str:
    """SQL: the JSON text ``v`` is a string (no escape: the patterns hold no backslash or quote) of an
    address canonical_ip accepts. Its content is the address as written: IPv6 still needs sqlpath.canonical_ipv6."""
    return (f"CASE WHEN contains({v}, ':') THEN regexp_full_match({v}, '\"{IPV6_SQL}\"') "
            f"ELSE regexp_full_match({v}, '\"{IPV4_PATTERN}\"') END")


@dataclass
class _Fast:
    table: str
    whole_files: set[int]  # read in Python from start to end
    pending: dict[int, frozenset[str]]  # file index -> text of the lines Python reads


def _scan(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], indexes: list[int], tag: str) -> _Fast | None:
    """Parses the files ``indexes`` into the table ``tag``; None (nothing created): all of it in Python."""
    groups: dict[bool, list[int]] = {}
    for i in indexes:
        groups.setdefault(files[i].gzip, []).append(i)
    steps = [_scan_sql([files[i] for i in idx], idx, (f"{tag}_e{n}", f"{tag}_s{n}"))
             for n, idx in enumerate(groups.values())]
    try:
        con.execute(f"CREATE TEMP TABLE {tag} AS {' UNION ALL '.join(steps)}")
    except SCAN_ERRORS as exc:
        raise scan_error(exc, files) from exc
    if count_rejects(con, ((f"{tag}_e{n}", f"{tag}_s{n}") for n in range(len(steps)))):
        con.execute(f"DROP TABLE {tag}")
        return None  # invalid UTF-8 or an over-long line: Python replaces or reads it
    whole: set[int] = set()
    pending: dict[int, set[str]] = {}
    for fi, line in con.execute(f"SELECT DISTINCT file_index, line FROM {tag} WHERE line IS NOT NULL").fetchall():
        if line == "\x01":
            whole.add(int(fi))
        else:
            pending.setdefault(int(fi), set()).add(str(line))
    # IPv6 as ipaddress writes it (RFC 5952), like the rows Python reads: the store aggregates both alike
    whole |= canonical_ipv6(con, tag, "line IS NULL AND log_status = 'OK'")
    for i in whole:
        pending.pop(i, None)
    if whole:
        con.execute(f"DELETE FROM {tag} WHERE file_index IN ({', '.join(str(i) for i in sorted(whole))})")
    return _Fast(table=tag, whole_files=whole, pending={i: frozenset(v) for i, v in pending.items()})


def _scan_sql(files: Sequence[SourceFile], indexes: Sequence[int], rejects: tuple[str, str]) -> str:
    """Every line of ``files``: the staging columns and ``line``, NULL when the row is what _record gives
    (or a skip, in log_status), else the line's text ('\\x01': a line SQL could not split exactly)."""
    n = len(_FIELDS)
    flow_paths = "[" + ", ".join(sql_str(f"$.flow.{f}") for f in _FIELDS) + "]"
    bare_paths = "[" + ", ".join(sql_str(f"$.{f}") for f in (*_FIELDS, *_BARE_EXTRA)) + "]"
    names = ["verdict", "time", "src", "dst", "l4", "isr", "dir",
             *(f"{p}_{k}" for p in ("s", "d") for k in ("ns", "lb", "id", "wn")), "tsp", "tdp", "tfl", "usp", "udp"]
    assert len(names) == n
    picks = ", ".join(f"j[{i}] AS v_{name}" for i, name in enumerate(names, 1))
    bare_picks = ", ".join(f"j[{n + i}] AS x_{i}" for i in range(1, len(_BARE_EXTRA) + 1))

    def one_of(x: str, items: Sequence[str]) -> str:
        """``x IN (items)`` (SQL literals) as comparisons: DuckDB plans a list of six or more as a join, which
        cost more than the comparisons on every line."""
        return "(" + " OR ".join(f"{x} = {i}" for i in items) + ")"

    def text(x: str) -> str:  # a string value's content (its JSON text has no escape: checked by str_ok)
        return f"substr({x}, 2, length({x}) - 2)"

    def str_ok(x: str) -> str:
        return f"(starts_with({x}, '\"') AND NOT contains({x}, '\\'))"

    def nonempty(x: str) -> str:
        return f"({str_ok(x)} AND {x} <> '\"\"')"

    def lazy(path: str) -> str:  # a value read only for the few rows that need it (a second parse)
        return (f"CASE WHEN bare THEN try(json_extract(c0, {sql_str('$.' + path)})) "
                f"ELSE try(json_extract(c0, {sql_str('$.flow.' + path)})) END::VARCHAR")

    # the pod names, read only when a workload name is not a string (one more parse of those lines)
    pods = ("CASE WHEN bare THEN try(json_extract(c0, ['$.source.pod_name', '$.destination.pod_name'])) "
            "ELSE try(json_extract(c0, ['$.flow.source.pod_name', '$.flow.destination.pod_name'])) END::VARCHAR[]")

    def endpoint(p: str) -> str:
        """The hint of one endpoint as _hint reads it: NULL for none, '\x01' when SQL cannot judge it."""
        ns, lb, ident, wn = (f"v_{p}_{k}" for k in ("ns", "lb", "id", "wn"))
        known = f"({ns} IS NOT NULL OR {lb} IS NOT NULL OR {ident} IS NOT NULL OR {wn} IS NOT NULL)"  # a dict
        labels_list = f"starts_with({lb}, '[')"
        labels_ok = f"({lb} IS NULL OR {one_of(lb, _FALSY)} OR {labels_list})"
        has_reserved = f"coalesce({labels_list} AND contains({lb}, '\"reserved:'), false)"
        flat = f"regexp_full_match({lb}, '\\[(\"[^\"\\\\]*\"(,\"[^\"\\\\]*\")*)?\\]')"
        number = f"n_{p}_id"  # the identity as a number (see identity(), below)
        ident_ok = f"({ident} IS NULL OR {ident} = 'null' OR {number} IS NOT NULL)"
        ident_reserved = f"coalesce({number} BETWEEN 1 AND {_RESERVED_IDENTITY_LIMIT - 1}, false)"
        pn = f"v_{p}_pn"  # read only when the workload name is not a string (see pods, below)
        name = (f"CASE WHEN {nonempty(wn)} THEN {text(wn)} "
                f"WHEN {nonempty(pn)} THEN "
                f"coalesce(nullif(regexp_extract({text(pn)}, '^(.+)-{_RS_HASH}-{_GEN_POD}$', 1), ''), "
                f"nullif(regexp_extract({text(pn)}, '^(.+)-{_GEN_POD}$', 1), ''), {text(pn)}) END")
        # hint: NULL for "no hint"; '\x01' for a value SQL cannot judge
        hint = (f"CASE WHEN NOT {known} OR NOT {labels_ok} THEN '\x01' "
                f"WHEN {has_reserved} THEN CASE WHEN {flat} THEN NULL ELSE '\x01' END "
                f"WHEN NOT {ident_ok} THEN '\x01' WHEN {ident_reserved} THEN NULL "
                f"WHEN NOT {nonempty(ns)} THEN CASE WHEN contains(coalesce({ns}, ''), '\\') THEN '\x01' END "
                # an escape in the workload or pod name: the name Python reads is not its JSON text (this
                # once gave the name NULL, so the line "no hint" where Python reads one)
                f"WHEN contains(coalesce({wn}, ''), '\\') OR contains(coalesce({pn}, ''), '\\') THEN '\x01' "
                f"ELSE {text(ns)} || '/' || ({name}) END")
        return hint

    src_hint, dst_hint = endpoint("s"), endpoint("d")

    def identity(p: str) -> str:
        """A JSON integer (DuckDB writes it back as its digits; a fraction has a "." or an exponent: checked by
        casting and writing it back, which gives its text exactly for the integers of BIGINT) or a string of
        ASCII digits, as a number; else NULL."""
        x = f"v_{p}_id"
        return (f"CASE WHEN starts_with({x}, '\"') THEN "
                f"CASE WHEN regexp_full_match({x}, '\"[0-9]{{1,18}}\"') THEN CAST({text(x)} AS BIGINT) END "
                f"ELSE {exact_int_sql(x, 'BIGINT')} END")

    verdicts = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in _VERDICT_SQL.items() if v is not None)
    no_verdict = ", ".join(sql_str(k) for k, v in _VERDICT_SQL.items() if v is None)
    time_re = ("\"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
               "(\\.[0-9]+)?Z\"")
    port_re = '"[0-9]{1,5}"'

    def port(x: str) -> str:  # _port; NULL: uncertain
        # a JSON number: cast and written back, its text is that of a port exactly when it is one (no regexp)
        value = f"CAST({text(x)} AS INTEGER)"
        return (f"CASE WHEN {x} IS NULL OR {x} = 'null' THEN 0 "
                f"WHEN starts_with({x}, '\"') THEN CASE WHEN regexp_full_match({x}, '{port_re}') AND {value} <= 65535 "
                f"THEN {value} END "
                f"ELSE CAST({exact_int_sql(x, 'USMALLINT')} AS INTEGER) END")

    flag_sum = " + ".join(f"CASE WHEN fl[{i}] = 'true' THEN {bit} ELSE 0 END"
                          for i, (_n, bit) in enumerate(_TCP_FLAGS, 1))
    flag_paths = "[" + ", ".join(sql_str(f"$.{name}") for name, _bit in _TCP_FLAGS) + "]"
    common_flags = " ".join(f"WHEN {sql_str(t)} THEN {v}" for t, v in _COMMON_FLAGS.items())
    mapping = ", ".join(str(i) for i in indexes)
    # A line DuckDB and json.loads may read differently (see above): a superset, each check cheap.
    literal = "[ \\t]*-?([Nn][Aa][Nn]|[Ii][Nn][Ff])"  # yyjson's nan / inf literals, in any case
    lenient = (f"regexp_matches(c0, ',([ \\t]*[]}}]|{literal})') OR regexp_matches(c0, ':{literal}') "
               f"OR regexp_matches(c0, '\\[{literal}')")
    return f"""
SELECT t_start, src_ip, dst_ip, src_port, dst_port, proto, action, tcp_flags, is_reply, direction, src_workload,
  dst_workload, log_status, file_index, line
FROM (
SELECT fi::INTEGER AS file_index, TRY_CAST(us AS UBIGINT) AS t_start, {text('v_src')} AS src_ip,
  {text('v_dst')} AS dst_ip, sport AS src_port, dport AS dst_port, proto, action, flags AS tcp_flags,
  coalesce(isr, CASE WHEN reply THEN true END, CASE WHEN flags & 18 = 18 THEN true WHEN flags & 2 = 2 THEN false END)
    AS is_reply, direction, src_wl AS src_workload, dst_wl AS dst_workload,
  status AS log_status,
  CASE WHEN status IS NULL THEN CASE WHEN c0 IS NULL OR c1 IS NOT NULL OR contains(c0, chr(1)) THEN chr(1)
    ELSE c0 END END AS line
FROM (
SELECT *,
  CASE WHEN j IS NULL THEN NULL
    WHEN bare AND x_1 IS NOT NULL AND x_1 <> 'null' THEN NULL
    WHEN bare AND (x_2 IS NOT NULL OR x_3 IS NOT NULL OR x_4 IS NOT NULL OR x_5 IS NOT NULL) THEN 'non-flow'
    WHEN v_verdict IN ({no_verdict}) AND (v_src IS NOT NULL OR v_dst IS NOT NULL) THEN 'no-verdict'
    WHEN action IS NOT NULL AND {address_json_sql('v_src')} AND {address_json_sql('v_dst')}
      AND us BETWEEN 0 AND {MAX_EPOCH_SECONDS * 1_000_000} AND l4_ok
      AND (v_isr IS NULL OR v_isr IN ('null', 'true', 'false')) AND dir_ok
      AND (src_wl IS NULL OR (src_wl <> chr(1) AND strlen(src_wl) = length(src_wl) AND NOT contains(src_wl, ' ')))
      AND (dst_wl IS NULL OR (dst_wl <> chr(1) AND strlen(dst_wl) = length(dst_wl) AND NOT contains(dst_wl, ' ')))
      THEN 'OK' END AS status
FROM (
SELECT *,
  CASE v_verdict {verdicts} END AS action,
  -- DuckDB cuts a fraction finer than microseconds, as _time_us does; an impossible date gives NULL
  CASE WHEN regexp_full_match(tm, '{time_re}') THEN epoch_us(TRY_CAST(substr(tm, 2, strlen(tm) - 2) AS TIMESTAMPTZ))
    END AS us,
  CASE v_isr WHEN 'true' THEN true WHEN 'false' THEN false END AS isr,
  CASE WHEN j IS NOT NULL AND (v_isr IS NULL OR v_isr = 'null') THEN coalesce({lazy('reply')} = 'true', false)
    ELSE false END AS reply,
  CASE WHEN v_dir IS NULL OR v_dir = 'null' THEN true WHEN starts_with(v_dir, '"') THEN NOT contains(v_dir, '\\')
    ELSE regexp_full_match(v_dir, '-?[0-9]+') END AS dir_ok,
  CASE v_dir WHEN '"INGRESS"' THEN 'ingress' WHEN '"EGRESS"' THEN 'egress' WHEN '1' THEN 'ingress'
    WHEN '2' THEN 'egress' END AS direction,
  CASE WHEN l4_none THEN true WHEN proto IN (1, 58) THEN body_ok
    WHEN proto IN (6, 17, 132) THEN body_ok AND sport IS NOT NULL AND dport IS NOT NULL ELSE false END AS l4_ok,
  CASE WHEN proto = 6 AND starts_with(lp[3], '{{') THEN CASE lp[3] {common_flags}
    ELSE {flag_sum} END END AS flags,
  {src_hint} AS src_wl, {dst_hint} AS dst_wl
FROM (
SELECT *, CASE WHEN proto IN (1, 58) THEN 0 WHEN proto IN (6, 17, 132) THEN {port('lp[1]')} END AS sport,
  CASE WHEN proto = 6 AND starts_with(lp[3], '{{') AND NOT {one_of('lp[3]', [sql_str(t) for t in _COMMON_FLAGS])}
    THEN try(json_extract(lp[3], {flag_paths}))::VARCHAR[] END AS fl,
  CASE WHEN proto IN (1, 58) THEN 0 WHEN proto IN (6, 17, 132) THEN {port('lp[2]')} END AS dport
FROM (
SELECT *,
  CASE k4 WHEN 'TCP' THEN [v_tsp, v_tdp, v_tfl] WHEN 'UDP' THEN [v_usp, v_udp]
    WHEN 'SCTP' THEN try(json_extract(v_l4, ['$.SCTP.source_port', '$.SCTP.destination_port']))::VARCHAR[] END AS lp
FROM (
SELECT *, v_l4 IS NULL OR {one_of('v_l4', _FALSY)} AS l4_none,
  {identity('s')} AS n_s_id, {identity('d')} AS n_d_id,
  CASE WHEN starts_with(v_l4, '{{"') AND NOT contains(v_l4, '\\') THEN split_part(v_l4, '"', 2) END AS k4,
  CASE k4 {' '.join(f"WHEN '{k}' THEN {v}" for k, v in _L4.items())} END AS proto,
  substr(v_l4, strlen(k4) + 5, 1) = '{{' AS body_ok,
  CASE WHEN j IS NOT NULL AND v_time IS NULL AND NOT bare THEN try(json_extract(c0, '$.time'))::VARCHAR
    ELSE v_time END AS tm,
  pods[1] AS v_s_pn, pods[2] AS v_d_pn
FROM (
SELECT *, CASE WHEN j IS NOT NULL AND (v_s_wn IS NULL OR NOT starts_with(v_s_wn, '"') OR v_s_wn = '""'
    OR v_d_wn IS NULL OR NOT starts_with(v_d_wn, '"') OR v_d_wn = '""') THEN {pods} END AS pods
FROM (
SELECT fi, c0, c1, bare, j, {picks}, {bare_picks}
FROM (
SELECT fi, c0, c1, bare,
  CASE WHEN c1 IS NULL AND starts_with(c0, '{{') AND ends_with(c0, '}}') AND NOT ({lenient}) THEN
    CASE WHEN bare THEN try(json_extract(c0, {bare_paths})) ELSE try(json_extract(c0, {flow_paths})) END
  END::VARCHAR[] AS j
FROM (
SELECT [{mapping}][CAST(file_index AS BIGINT) + 1] AS fi, c0, c1, NOT starts_with(c0, '{{"flow":') AS bare
FROM read_csv({sql_list(files)}, delim='\x01', header=false, quote='', escape='', auto_detect=false,
  columns={{'c0': 'VARCHAR', 'c1': 'VARCHAR'}}, strict_mode=false, null_padding=true, nullstr='\x02\x03',
  compression='{"gzip" if files[0].gzip else "none"}', store_rejects=true, rejects_table='{rejects[0]}',
  rejects_scan='{rejects[1]}')
))))))))))"""
