"""The Hubble reader's DuckDB fast path against its Python reader, line for line."""

from __future__ import annotations

import gzip
import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from microseg.errors import InputError
from microseg.sources.flows import hubble
from tests.sources.flows import _fastpath

FLOW: dict[str, Any] = {
    "time": "2026-01-02T03:04:05.123456789Z", "uuid": "u-1", "verdict": "FORWARDED",
    "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
    "l4": {"TCP": {"source_port": 40000, "destination_port": 443, "flags": {"SYN": True}}},
    "source": {"ID": 7, "identity": 20001, "namespace": "shop", "labels": ["k8s:app=api"],
               "pod_name": "api-7c9bf5d8f6-bx9kz", "workloads": [{"name": "api", "kind": "Deployment"}]},
    "destination": {"identity": "20002", "namespace": "shop", "labels": ["k8s:app=db"], "pod_name": "db-0"},
    "Type": "L3_L4", "traffic_direction": "EGRESS", "is_reply": False, "Summary": "TCP Flags: SYN",
}


def flow(**kw: Any) -> dict[str, Any]:
    out = {**FLOW, **kw}
    return {k: v for k, v in out.items() if v is not ...}


def line(**kw: Any) -> str:
    """A {"flow": ...} response, compact as Hubble writes it; ``...`` removes a key."""
    return json.dumps({"flow": flow(**kw), "node_name": "n1", "time": FLOW["time"]}, separators=(",", ":"))


def ep(side: str, **kw: Any) -> dict[str, Any]:
    out = {**FLOW[side], **kw}
    return {k: v for k, v in out.items() if v is not ...}


def l4(proto: str, **body: Any) -> dict[str, Any]:
    return {proto: body}


TRICKY = [
    line(),  # 1
    json.dumps(flow(), separators=(",", ":")),  # 2: a bare Flow
    json.dumps({"node_status": {"state": "NODE_CONNECTED"}, "node_name": "n1", "time": FLOW["time"]}),  # 3
    line(verdict="TRACED"),  # 4: skipped
    line(verdict="VERDICT_UNKNOWN"),  # 5: bad
    line(verdict=4, is_reply=True),  # 6: AUDIT by number
    line(verdict="4"),  # 7: a number in a string is no enum
    line(IP={"source": "FD00:0:0::1", "destination": "fd00::2"}),  # 8: IPv6 (Python canonicalises)
    line(IP={"source": "10.0.0.300", "destination": "10.0.0.2"}),  # 9
    line(IP={"source": "10.0.0.01", "destination": "10.0.0.2"}),  # 10: leading zero
    line(l4=l4("TCP", source_port="40001", destination_port="0443")),  # 11: digits in strings
    line(l4=l4("TCP", source_port=40002.5, destination_port=443)),  # 12: a fraction is no port
    line(l4=l4("TCP", source_port=40003, destination_port=True)),  # 13
    line(l4=l4("TCP", source_port=1 << 70, destination_port=443)),  # 14: huge
    line(l4=l4("UDP")),  # 15: ports omitted (proto3 zero values)
    line(l4=l4("UDP", source_port=None, destination_port=53)),  # 16: null port
    line(l4={"ICMPv4": {"type": 8}}),  # 17
    line(l4={"ICMPv6": 5}),  # 18: body not an object
    line(l4={"GRE": {}, "TCP": {"source_port": 40004, "destination_port": 443}}),  # 19: unknown first key
    line(l4={"SCTP": {"source_port": 40005, "destination_port": 3868}}),  # 20
    line(l4=None),  # 21: no L4: protocol unknown
    line(l4=l4("TCP", source_port=40006, destination_port=443, flags={"SYN": True, "ACK": True}),
         is_reply=...),  # 22: SYN+ACK: a reply
    line(l4=l4("TCP", source_port=40007, destination_port=443, flags={"SYN": True}), is_reply=...),  # 23
    line(is_reply=..., reply=True),  # 24: the deprecated reply, only when is_reply is absent
    line(is_reply="true"),  # 25: a string is no boolean
    line(is_reply=None, l4=l4("TCP", source_port=40008, destination_port=443, flags={"ACK": True, "FIN": 1})),  # 26
    line(traffic_direction="INGRESS"),  # 27
    line(traffic_direction=1),  # 28
    line(traffic_direction=True),  # 29
    line(traffic_direction="TRAFFIC_DIRECTION_UNKNOWN"),  # 30
    line(traffic_direction=[1]),  # 31
    line(traffic_direction=2.0),  # 32
    line(source=ep("source", labels=["reserved:world"], namespace="x")),  # 33: reserved: no hint
    line(source=ep("source", labels=[{"reserved:world": 1}])),  # 34: an object in labels is no label
    line(source=ep("source", labels="k8s:app=api")),  # 35: not a list
    line(source=ep("source", identity="2")),  # 36: reserved identity as a string
    line(source=ep("source", identity=2.0)),  # 37
    line(source=ep("source", identity=-5)),  # 38
    line(source=ep("source", workloads=..., pod_name="kube-proxy-x7k2p")),  # 39: generated suffix
    line(source=ep("source", workloads=[], pod_name="web-6799fc88d8-zn5s2")),  # 40: ReplicaSet pod
    line(source=ep("source", workloads=["api"])),  # 41: workloads[0] not an object: the pod name
    line(source=ep("source", workloads=[{"name": "has space"}])),  # 42: bad hint
    line(source=ep("source", namespace="sh\u00f6p")),  # 43: non-ASCII
    line(source=ep("source", namespace=5)),  # 44: no namespace string: no hint
    line(source={}),  # 45
    line(source=...),  # 46
    line(source="x"),  # 47
    line(time="2026-01-02T03:04:05Z"),  # 48
    line(time="2026-01-02T04:04:05.5+01:00"),  # 49: an offset (Python reads it)
    line(time="1969-12-31T23:59:59Z"),  # 50
    line(time="2026-02-30T00:00:00Z"),  # 51
    line(time=...),  # 52: the response's time
    line(time=None),  # 53
    line(time=1767323045),  # 54
    line(Summary="caf\u00e9 \"quoted\" \\ back"),  # 55: escapes in an unused value
    json.dumps({"flow": flow(Summary="caf\u00e9")}, ensure_ascii=False, separators=(",", ":")),  # 56: raw UTF-8
    line(extra=0).replace('"extra":0', '"extra":0,'),  # 57: trailing comma
    line(extra=[1, 2]).replace('"extra":[1,2]', '"extra":[1,2,]'),  # 58: trailing comma in an array
    line(extra=float("nan")),  # 59: NaN (json.loads reads it)
    line(extra=float("inf")),  # 60: Infinity
    line(extra=0).replace('"extra":0', '"extra":nan'),  # 61: DuckDB reads nan, Python does not
    line(extra=0).replace('"extra":0', '"extra":-inf'),  # 62
    line(extra=[0]).replace('"extra":[0]', '"extra":[Infinity,NaN]'),  # 63
    line(verdict="DROPPED", node_name="x").replace(',"node_name":"x"', ',"verdict":"FORWARDED"'),  # 64: repeated key
    line(verdict="DROPPED").replace('{"flow":{', '{"flow":{"verdict":"FORWARDED",'),  # 65: the first is read
    "",  # 66
    "   ",  # 67
    "# a comment",  # 68
    "{not json",  # 69
    "[1, 2]",  # 70
    line(IP=None),  # 71: no IP layer: skipped
    line(IP={}),  # 72
    line(flow_extra=1).replace('{"flow":{', '{ "flow":{'),  # 73: a blank inside
    json.dumps({"flow": flow(source=ep("source", namespace="a b"))}),  # 74: python-style separators
    json.dumps({"flow": flow(l4=l4("TCP", source_port=40009, destination_port=443, flags={"SYN": True}))}, indent=None,
               separators=(", ", ": ")),  # 75
    line(l4=l4("TCP", source_port=40010, destination_port=443, flags={"SYN": False, "SYN ": True, "ACK": True})),  # 76
    '{"flow":null,' + json.dumps(flow(l4=l4("UDP", source_port=5353, destination_port=53)),
                                 separators=(",", ":"))[1:],  # 77: a null flow: the object itself
    line(destination=ep("destination", pod_name="db-7d9f8c6b5-abcde", identity="0300")),  # 78
    line(source=ep("source", labels=None, identity=None, workloads=None)),  # 79
    line(source=ep("source", workloads=[{"name": ""}], pod_name="")),  # 80
    line(time="2024-02-29T23:59:59.9999999Z"),  # 81: a leap day; 100 ns cut, not rounded
    line(time="2026-01-02T03:04:60Z"),  # 82: no leap seconds in Python
]


def write(tmp_path: Path, lines: list[str], name: str, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def rows(store: FlowStore) -> list[tuple[Any, ...]]:
    return sorted(((r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
                    r["ts_start"], r["ts_end"], r["is_reply"], r["tcp_flags"], r["direction"], r["src_workload"],
                    r["dst_workload"]) for r in store.rows()), key=repr)


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any]:
    return _fastpath.both_paths(tmp_path, monkeypatch, hubble, "_scan", paths, rows, fmt="hubble")


def spy_stage_file(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, frozenset[str] | None]]:
    """Records (file name, lines asked for; None: the whole file) of every file the Python reader reads."""
    calls: list[tuple[str, frozenset[str] | None]] = []
    real = hubble._stage_file

    def spy(src: Any, index: int, writer: Any, staged: Any, options: Any, only: frozenset[str] | None = None) -> None:
        calls.append((src.path.name, only))
        real(src, index, writer, staged, options, only)

    monkeypatch.setattr(hubble, "_stage_file", spy)
    return calls


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, TRICKY, "a.jsonl")
    b = write(tmp_path, TRICKY[::-1], "b.jsonl", newline="\r\n")  # CRLF, reversed
    c = tmp_path / "c.jsonl.gz"
    with gzip.open(c, "wt") as fh:
        fh.write("\n".join(TRICKY[:30]) + "\n")
    calls = spy_stage_file(monkeypatch)
    fast, python = both_paths(tmp_path, monkeypatch, a, b, c)
    assert fast == python
    # SQL read these lines itself (1-based numbers in TRICKY); every other one went to Python
    in_sql = {1, 2, 3, 4, 6, 8, 11, 15, 16, 17, 20, 21, 22, 23, 24, 26, 27, 28, 30, 33, 36, 38, 39, 40, 41, 44, 48,
              52, 55, 56, 64, 65, 75, 76, 78, 79, 80, 81}  # 8: IPv6, canonicalised after the scan
    only = dict(calls[:3])
    assert only["a.jsonl"] == frozenset(TRICKY[i - 1] for i in range(1, len(TRICKY) + 1) if i not in in_sql
                                        and TRICKY[i - 1] != "")
    assert only["b.jsonl"] == only["a.jsonl"]
    report, got = fast
    assert report[2] > 0 and report[1] > 0
    assert {"no-verdict", "non-flow", "non-ip"} <= set(report[3])
    # a few rows written out by hand from hubble.py's rules, independent of either path
    keys = {(r[4], r[5], r[3], r[9], r[10], r[12], r[13]) for r in got}
    hints = ("shop/api", "shop/db-0")
    assert ("TCP", "drop", 443, False, 2, *hints) in keys  # 64: the first of a repeated "verdict"
    assert ("TCP", "audit", 443, True, 2, *hints) in keys  # 6: AUDIT as its enum number
    assert ("TCP", "accept", 443, True, 2 | 16, *hints) in keys  # 22: SYN+ACK without is_reply
    assert ("SCTP", "accept", 3868, False, None, *hints) in keys  # 20
    assert ("ICMP", "accept", 0, False, None, *hints) in keys  # 17
    assert ("TCP", "accept", 443, False, 2, "shop/kube-proxy", "shop/db-0") in keys  # 39
    assert ("TCP", "accept", 443, False, 2, "shop/web", "shop/db-0") in keys  # 40
    assert ("TCP", "accept", 443, False, 2, None, "shop/db-0") in keys  # 33, 36: reserved
    assert datetime(2024, 2, 29, 23, 59, 59, 999999) in {r[7] for r in got}  # 81


def test_fast_path_on_a_clean_file_reads_nothing_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line(l4=l4("TCP", source_port=40000 + i, destination_port=443 + i % 3,
                        flags={"SYN": True} if i % 2 else {"ACK": True, "PSH": True}),
                  verdict="DROPPED" if i % 10 == 0 else "FORWARDED", is_reply=bool(i % 2 == 0)) for i in range(200)]
    lines.append(json.dumps({"node_status": {"state": "NODE_CONNECTED"}}))
    path = write(tmp_path, lines, "clean.jsonl")
    calls: list[Any] = []
    real = hubble._stage_file
    monkeypatch.setattr(hubble, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path])
        assert (report.lines, report.records, report.bad, report.skipped) == (201, 200, 0, {"non-flow": 1})
        assert sum(r["records"] for r in s.rows()) == 200
        assert {r["action"] for r in s.rows()} == {"accept", "drop"}
        assert {(r["src_workload"], r["dst_workload"]) for r in s.rows()} == {("shop/api", "shop/db-0")}
        assert {r["tcp_flags"] for r in s.rows()} == {2, 8 | 16}
    assert calls == []


def test_fast_path_invalid_utf8_bom_and_truncated_gzip(tmp_path: Path) -> None:
    raw = tmp_path / "latin1.jsonl"
    raw.write_bytes((line() + "\n" + line(Summary="\u00e9") + "\n").encode().replace("\u00e9".encode(), b"\xe9"))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (line() + "\n" + line() + "\n").encode())
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([raw], fmt="hubble")  # DuckDB rejects the line, Python reads it (replaced)
        assert (report.lines, report.records, report.bad) == (2, 2, 0)
        report = s.ingest([bom], fmt="hubble", bad_threshold=1.0)  # as Python reads it: line 1 is no JSON
        assert (report.lines, report.records, report.bad) == (2, 1, 1)
        assert [(b.line, b.field) for b in report.bad_samples] == [(1, "json")]
        whole = tmp_path / "whole.jsonl.gz"
        with gzip.open(whole, "wt") as fh:
            fh.write("\n".join(line(l4=l4("TCP", source_port=30000 + i, destination_port=443)) for i in range(5000)))
        cut = tmp_path / "cut.jsonl.gz"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(InputError) as err:
            s.ingest([cut], fmt="hubble")
        assert str(cut.resolve()) in str(err.value.file)


def _raw_identity(text: str) -> str:
    """A line whose source identity is the JSON text ``text`` as written (json.dumps cannot write 2E4)."""
    return line(source=ep("source", identity=424242)).replace('"identity":424242', f'"identity":{text}')


# Endpoints around the bounds of the SQL hint's checks: identities near the reserved range and in other JSON
# forms, labels that are no plain list, names with escapes (SQL once read an escaped workload or pod name as
# "no hint", where Python reads the name).
ENDPOINTS = [
    line(source=ep("source", identity=255)),  # 1: the last reserved identity
    line(source=ep("source", identity=256)),  # 2: the first that is not
    line(source=ep("source", identity=100)),  # 3
    line(source=ep("source", identity=99)),  # 4
    line(source=ep("source", identity=0)),  # 5: not reserved (0 < identity fails)
    line(source=ep("source", identity=-300)),  # 6
    line(source=ep("source", identity=10 ** 17)),  # 7: 18 digits
    line(source=ep("source", identity=10 ** 18)),  # 8: 19 digits
    line(source=ep("source", identity=2 ** 64)),  # 9: beyond 64 bits
    line(source=ep("source", identity=True)),  # 10
    line(source=ep("source", identity="300")),  # 11: digits in a string
    line(source=ep("source", identity="255")),  # 12
    _raw_identity("2E4"),  # 13: an exponent
    _raw_identity("2e4"),  # 14
    _raw_identity("20001.0"),  # 15: a fraction
    _raw_identity("2.0001e4"),  # 16
    _raw_identity("300 "),  # 17: a blank after the number
    line(source=ep("source", labels=[])),  # 18
    line(source=ep("source", labels=["k8s:a", "reserved:host"])),  # 19: reserved, not first
    line(source=ep("source", labels=['k8s:a="reserved:x"'])),  # 20: an escaped quote before reserved:
    line(source=ep("source", labels=[1, "k8s:a"])),  # 21: not a string first
    line(source=ep("source", labels=None)),  # 22
    line(source=ep("source", namespace="")),  # 23
    line(source=ep("source", namespace='sh"op')),  # 24: an escape in the namespace
    line(source=ep("source", workloads=[{"name": 'a"pi'}])),  # 25: an escape in the workload name
    line(source=ep("source", workloads=[{"name": 5}])),  # 26: the pod name then
    line(source=ep("source", workloads=[{"name": "api"}], identity="20001")),  # 27
    line(destination=ep("destination", workloads=[{"name": "db"}], identity=20002)),  # 28: workload names on both sides
    line(source=ep("source", workloads=..., pod_name='we"b-0')),  # 29: an escape in the pod name
    line(source=ep("source", workloads=[{"name": 'a\\pi'}])),  # 30: a backslash in the workload name
]


def test_fast_path_endpoint_hints_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, ENDPOINTS, "a.jsonl")
    calls = spy_stage_file(monkeypatch)
    fast, python = both_paths(tmp_path, monkeypatch, a)
    assert fast == python
    hints = {(r[12], r[13]) for r in fast[1]}
    assert (None, "shop/db-0") in hints  # 1, 3: reserved identities
    assert ("shop/api", "shop/db") in hints  # 28
    assert ('shop/a"pi', "shop/db-0") in hints  # 25 (SQL once read it as no hint)
    assert ('shop/we"b-0', "shop/db-0") in hints  # 29
    # plain endpoints are still read in SQL: 256, 18 digits, a 0 identity, the string "300", workload names
    in_sql = {2, 5, 7, 11, 27, 28}
    assert calls and calls[0][0] == "a.jsonl" and calls[0][1] is not None  # some lines, not the whole file
    assert not {ENDPOINTS[i - 1] for i in in_sql} & calls[0][1]


def _ip(source: str, destination: str = "fd00::2", **kw: Any) -> str:
    return line(IP={"source": source, "destination": destination, "ipVersion": "IPv6"}, **kw)


# IPv6 spellings: SQL reads the ones ipaddress accepts (zone ids of interface-name characters) and rewrites
# them as ipaddress writes them; the doubtful and the bad ones are Python's.
IPV6 = [
    _ip("fd00::1"),  # 1: RFC 5952 already
    _ip("FD00::1"),  # 2: upper case
    _ip("fd00:0:0:0:0:0:0:1"),  # 3: not zero-compressed
    _ip("fd00:0000:0000:0000:0000:0000:0000:0001"),  # 4: the full form
    _ip("FD00:0000:0000::0001", "FD00::2"),  # 5
    _ip("::"),  # 6
    _ip("::1", "1::"),  # 7
    _ip("1:2:3:4:5:6:7::"),  # 8: "::" standing for one group
    _ip("::ffff:10.0.0.1"),  # 9: IPv4-mapped (written ::ffff:10.0.0.1 on every Python version)
    _ip("::FFFF:10.0.0.1", "::ffff:a00:2"),  # 10
    _ip("64:ff9b::192.0.2.33"),  # 11: embedded IPv4 (NAT64)
    _ip("1:2:3:4:5:6:1.2.3.4"),  # 12
    _ip("::1.2.3.4"),  # 13: IPv4-compatible
    _ip("fe80::1%eth0", "fe80::2%eth0"),  # 14: zone ids, kept as written
    _ip("FE80::0001%eth0.100"),  # 15
    _ip("fe80::1%1"),  # 16
    _ip("fe80::1%eth 0"),  # 17: a blank in the zone: ipaddress takes it, canonical_ip does not (Python: bad)
    json.dumps({"flow": flow(IP={"source": "fe80::1%\u00e9th0", "destination": "fd00::2"})}, ensure_ascii=False,
               separators=(",", ":")),  # 18: a non-ASCII zone (Python: bad)
    _ip("fe80::1%a/b"),  # 19: "/" anywhere: bad
    _ip("fe80::1%"),  # 20: an empty zone: bad
    _ip("fe80::1%a%b"),  # 21: bad
    _ip("1:::2"),  # 22: bad
    _ip("12345::"),  # 23: a group of five digits: bad
    _ip("1:2:3:4:5:6:7:8:9"),  # 24: too many groups: bad
    _ip("1:2:3:4:5:6:7"),  # 25: too few without "::": bad
    _ip("1::2::3"),  # 26: bad
    _ip(":1::2"),  # 27: bad
    _ip("1:2:3:4::5:6:7:8"),  # 28: "::" standing for no group: bad
    _ip("::ffff:1.2.3.04"),  # 29: a leading zero in the IPv4 part: bad
    _ip("::ffff:256.1.1.1"),  # 30: bad
    _ip("1.2.3.4::"),  # 31: bad
    _ip("g::1"),  # 32: bad
    _ip(":::"),  # 33: bad
    _ip("10.0.0.1:80"),  # 34: an address with a port: bad
    _ip("fd00::1 "),  # 35: a trailing blank: bad
    _ip("fd00::1").replace("fd00::1", "fd00::\\u0031"),  # 36: an escape (DuckDB writes the value back as fd00::1)
    _ip("::ffff:1.2.3.4%eth0"),  # 37
    _ip("fd00::1", "fd00::2", Summary='"'),  # 38: an escape in a value not read
    _ip("FD00::1", "fd00:0::2", l4=l4("UDP", source_port=53, destination_port=5353)),  # 39
    _ip("fd00::1%eth0", "::ffff:10.0.0.1", l4=l4("UDP", source_port=53, destination_port=5353)),  # 40
]


def test_fast_path_ipv6_spellings_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, IPV6, "a.jsonl")
    b = write(tmp_path, IPV6[::-1], "b.jsonl", newline="\r\n")
    calls = spy_stage_file(monkeypatch)
    fast, python = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    only = dict(calls[:2])
    in_python = {17, 18, *range(19, 36)}
    assert only["a.jsonl"] == only["b.jsonl"] == frozenset(IPV6[i - 1] for i in in_python)
    report, got = fast
    # the reader's bad lines: 17-35 (17 and 18: zones no interface has), in both files
    assert report[0] == 80 and report[1] + report[2] == 80 and report[2] >= 2 * 19
    assert {(b[1], b[2]) for b in report[4] if b[0].endswith("a.jsonl")} >= {(n, "IP.source") for n in range(17, 36)}
    tcp = [((r[0], r[1]), r[6]) for r in got if r[4] == "TCP"]
    # by hand: every spelling of fd00::1 -> fd00::2, whichever path read it, folds into one row per file
    assert [n for k, n in tcp if k == ("fd00::1", "fd00::2")] == [7, 7]  # 1, 2, 3, 4, 5, 36, 38
    assert [n for k, n in tcp if k == ("::ffff:10.0.0.1", "fd00::2")] == [1, 1]  # 9
    assert [n for k, n in tcp if k == ("::ffff:10.0.0.1", "::ffff:10.0.0.2")] == [1, 1]  # 10
    assert {("::", "fd00::2"), ("::1", "1::"), ("1:2:3:4:5:6:7:0", "fd00::2"), ("64:ff9b::c000:221", "fd00::2"),
            ("1:2:3:4:5:6:102:304", "fd00::2"), ("::102:304", "fd00::2")} <= {k for k, _ in tcp}
    written = {json.loads(t)["flow"]["IP"][side] for t in IPV6 for side in ("source", "destination")}
    assert not {r[i] for r in got for i in (0, 1)} & {w for w in written if _spelled_otherwise(w)}  # rewritten
    assert [r[6] for r in got if r[:2] == ("fd00::1", "fd00::2") and r[4] == "UDP"] == [1, 1]  # 39


def _spelled_otherwise(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)  # RFC 5952; IPv4-mapped with the dotted quad (section 5)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (str(ip) if mapped is None else f"::ffff:{mapped}" + (f"%{ip.scope_id}" if ip.scope_id else "")) != text
    except ValueError:
        return True


def test_an_address_sql_takes_and_python_refuses_sends_the_file_to_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net behind the IPv6 pattern: were it ever to accept a text ipaddress refuses, the files
    holding that value are read in Python from start to end (here a deliberately loose pattern)."""
    monkeypatch.setattr(hubble, "IPV6_SQL", "[0-9A-Fa-f:.%a-z]+")
    a = write(tmp_path, IPV6, "a.jsonl")
    clean = write(tmp_path, IPV6[:16], "clean.jsonl")
    calls = spy_stage_file(monkeypatch)
    fast, python = both_paths(tmp_path, monkeypatch, a, clean)
    assert fast == python
    assert {(b[1], b[2]) for b in fast[0][4] if b[0].endswith("a.jsonl")} >= {(n, "IP.source") for n in range(19, 36)}
    assert calls[0] == ("a.jsonl", None)  # whole
    assert [c for c in calls[:2] if c[0] == "clean.jsonl"] == []  # SQL read all of the clean file


def _raw_port(text: str, proto: str = "TCP") -> str:
    """A line whose source port is the JSON text ``text`` as written (json.dumps cannot write every form)."""
    return line(l4=l4(proto, source_port=4242, destination_port=443)).replace('"source_port":4242',
                                                                            f'"source_port":{text}')


# Every JSON form of a port and of an identity: SQL checks a number by casting it and writing it back (not by
# a regexp), a string by its digits; whatever it cannot judge is Python's.
PORT_FORMS = ["443", "0", "65535", "65536", "-1", "-0", "443.0", "4.43e2", "443E0", "1e400", str(2 ** 64),
              "1" + "0" * 30, '"443"', '"0443"', '"65535"', '"65536"', '"-1"', '" 443"', '"44\\u0033"',
              '"\u0664\u0664\u0663"', '"443 "', "null", "true", "false", "{}", "[]", "[443]", '{"a":1}', "01", "4_43",
              '443,"source_port":80']
ID_FORMS = ["-0", str(2 ** 63 - 1), str(-(2 ** 63)), str(2 ** 63), str(-(2 ** 63) - 1), "null", "[1]", '{"a":1}',
            '"-5"', '"\\u0032\\u0035\\u0035"', '"\u0663\u0660\u0660"', "false", "2.55e2", "255.0", "-255",
            '256,"identity":2']
PORTS = [*(_raw_port(t) for t in PORT_FORMS), *(_raw_port(t, "UDP") for t in PORT_FORMS),
         line(l4=l4("TCP", source_port=40000, destination_port=443)).replace(
             '"destination_port":443', '"destination_port":"\\u0034\\u0034\\u0033"'),
         *(_raw_identity(t) for t in ID_FORMS)]


def test_fast_path_port_and_identity_forms_match_the_python_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, PORTS, "a.jsonl")
    b = write(tmp_path, PORTS[::-1], "b.jsonl", newline="\r\n")
    calls = spy_stage_file(monkeypatch)
    fast, python = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    report, got = fast
    assert report[2] > 0 and report[1] > 0  # both bad lines and records
    # by hand: the plain forms, read in SQL; a repeated key reads its first occurrence
    n = len(PORT_FORMS)
    plain = {0, 1, 2, 12, 13, 14, 18}  # 443, 0, 65535, "443", "0443", "65535", "44\u0033"
    in_sql = {*plain, *(n + i for i in plain), 2 * n, 2 * n + 1 + ID_FORMS.index(str(2 ** 63 - 1))}
    only = dict(calls[:2])
    assert not {PORTS[i] for i in in_sql} & only["a.jsonl"]
    # by hand from _port and _int: good ports 443, 0, 65535, -0, "443", "0443", "65535", "44\u0033", null and the
    # repeated key, in TCP and UDP; the escaped destination port; good identities -0, the four beyond +-2^63, null,
    # "\u0032\u0035\u0035", -255 and the repeated key
    assert report[1] == 2 * (10 + 10 + 1 + 9) and report[2] == 2 * len(PORTS) - report[1]
    assert {(r[4], r[3]) for r in got} == {("TCP", 443), ("UDP", 443)}
    assert {r[2] for r in got if r[4] == "UDP"} == {0, 443, 65535}
