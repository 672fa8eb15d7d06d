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
    TCP_ACK,
    TCP_SYN,
    ReaderOptions,
    SourceFile,
    Staged,
    StageRow,
    StageWriter,
    iter_lines,
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
        obj = json.loads(head[0])
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
    if isinstance(v, str) and v.isdigit():
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
    return us


def _verdict(v: Any) -> str | None:
    name = _VERDICT_NUMBERS.get(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(name, str) or name not in _VERDICTS:
        raise _Bad("verdict", f"unknown or missing verdict {v!r}")
    return _VERDICTS[name]


@functools.lru_cache(maxsize=_CACHE)
def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


@functools.lru_cache(maxsize=_CACHE)
def _canonical_ip(text: str) -> str | None:
    """``text`` as ``ipaddress`` writes it; None when it is not an address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ip(v: Any, field: str) -> str:
    ip = _canonical_ip(v) if isinstance(v, str) else None
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
    relation.null_columns = frozenset({"bytes", "packets"})  # Hubble flows carry no byte/packet counts
    staged.relations.append(relation)
    # Every check the store repeats after aggregation has been made here already.
    staged.locate_bad = lambda _src: []
    return staged


def _stage_file(src: SourceFile, index: int, writer: StageWriter, staged: Staged, options: ReaderOptions) -> None:
    for no, text in iter_lines(src):
        if not text.strip():
            continue
        try:
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise _Bad("json", f"invalid JSON: {exc}") from None
            writer.write(_record(obj, index))
        except _Skip as skip:
            staged.skipped[(src.path, skip.reason)] += 1
        except _Bad as bad:
            staged.add_bad(src.path, no, bad.field, bad.message, text, options.max_samples)
