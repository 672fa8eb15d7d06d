"""GCP VPC Flow Logs: the DuckDB fast path against the Python reader, line for line."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from microseg.errors import InputError
from microseg.sources.flows import gcp


def entry(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: Any = 40000, dport: Any = 443, reporter: Any = "DEST",
          *, proto: Any = 6, **extra: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {k: v for k, v in (("dest_ip", dst), ("dest_port", dport), ("protocol", proto),
                                              ("src_ip", src), ("src_port", sport)) if v is not _DROP}
    payload: dict[str, Any] = {"bytes_sent": "100", "connection": conn, "end_time": "2026-01-02T03:04:06.5Z",
                               "packets_sent": "2", "reporter": reporter,
                               "start_time": "2026-01-02T03:04:05.123456789Z"}
    for key, value in extra.items():
        if value is _DROP:
            payload.pop(key, None)
            conn.pop(key, None)
        elif key in conn:
            conn[key] = value
        else:
            payload[key] = value
    payload = {k: v for k, v in payload.items() if v is not _DROP}
    return {"insertId": "x1", "jsonPayload": payload, "logName": "projects/p/logs/compute.googleapis.com%2Fvpc_flows",
            "resource": {"labels": {"project_id": "p"}, "type": "gce_subnetwork"}}


_DROP = object()


def line(*args: Any, compact: bool = True, **kw: Any) -> str:
    return json.dumps(entry(*args, **kw), separators=(",", ":") if compact else None)


def gke(ns: str, pod: str, workload: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"pod_name": pod, "pod_namespace": ns}
    if workload:
        details["pod_workload"] = {"workload_name": workload, "workload_type": "DEPLOYMENT"}
    return {"cluster": {"cluster_name": "c1"}, "pod": details}


VM = {"project_id": "p", "vm_name": "web-1", "zone": "z"}
GOOD = line(sport=40001, src_instance=VM)

# Each line with what the Python reader makes of it; the fast path must agree on every one.
TRICKY = [
    GOOD,  # 1: SQL reads it
    line(sport="40002", dport="443", proto="6"),  # 2: counters and ports as digit strings
    line(sport=40003, proto=6.0),  # 3: a float protocol: bad
    line(sport=80.5),  # 4: bad port
    line(sport=True),  # 5: bad port
    line(src=True, sport=40005),  # 6: bad address
    line(sport=40006, dport=707, bytes_sent=str((1 << 64) - 1), packets_sent=(1 << 64) - 1),  # 7: the largest counters
    line(sport=40007, bytes_sent=str(1 << 64)),  # 8: past uint64: bad
    line(sport=40008, packets_sent=10 ** 30),  # 9: a huge JSON number: bad
    line(sport=_DROP, dport=_DROP, proto=1),  # 10: ICMP, no ports: 0
    line(sport=None),  # 11: a null port: bad
    line(sport=40011, bytes_sent=_DROP, packets_sent=None),  # 12: no counters
    line(sport=40012, start_time=_DROP),  # 13: no start time: bad
    line(sport=40013, reporter=_DROP),  # 14: no reporter: no flow entry
    line(sport=40014, src_instance={"vm_name": "caf\u00e9"}),  # 15: an escape (json.dumps writes \u00e9)
    line(sport=40015, src_instance={"vm_name": "caf\u00e9"}).replace("\\u00e9", "\u00e9"),  # 16: raw non-ASCII
    line(sport=40016, labels={"q": 'a"b'}),  # 17: an escaped quote in an unused value
    line(sport=40017)[:-2] + ",}}",  # 18: a trailing comma: bad JSON for Python
    line(sport=40018).replace('"logName"', '"x":{"y":1,},"logName"'),  # 19: a nested trailing comma
    line(sport=40019)[:-1] + ', "n": NaN}',  # 20: NaN in an unused value: Python reads it
    line(sport=40020)[:-1] + ',"n":nan}',  # 21: nan: yyjson reads it, Python does not
    line(sport=40021)[:-1] + ',"n":-Infinity}',  # 22
    line(sport=40022)[:-1] + ',"n":-inf}',  # 23
    line(sport=40023, dport=2424, reporter="SRC", rtt_msec="3")[:-2] + ',"reporter":"DEST"}}',  # 24: first key wins
    "",  # 25: blank
    "   \t",  # 26: blank
    "# a comment in the middle",  # 27: bad
    line("2001:DB8::1", "2001:db8::2", sport=40027),  # 28: IPv6, canonicalised by Python
    line(sport=40028, dport=2929, start_time="2026-01-02T05:04:05+02:00"),  # 29: an offset: Python converts it
    line(sport=40029, start_time="2026-02-30T03:04:05Z"),  # 30: no such day: bad
    line(sport=40030, start_time="2026-01-02T24:00:00Z"),  # 31: hour 24: bad
    line(sport=40031, dport=3232, start_time="2026-01-02T03:04:05.9876549Z"),  # 32: long fraction, cut at 6 digits
    line(sport=40032, start_time="2026-01-02T03:04:05z"),  # 33: lower-case z: bad
    line(sport=40033, start_time="1969-12-31T23:59:59Z"),  # 34: before 1970: bad
    line(sport=40034, src_gke_details=gke("shop", "frontend-7d4b9c6f5-x2x9z"), src_instance=VM,
         dest_gke_details=gke("shop", "carts-0", "carts")),  # 35: pods, the node's VM name ignored
    line(sport=40035, src_gke_details="node"),  # 36: GKE details not an object: bad
    line(sport=40036, src_gke_details={"cluster": {}}, dest_gke_details={"pod": "x"}),  # 37: no pod: no hint
    line(sport=40037, src_gke_details=gke("shop", "a b")),  # 38: a blank in a pod name: bad
    line(sport=40038, src_gke_details=gke("shop", "a b", "api")),  # 39: the workload name wins: no check
    line(sport=40039, dest_instance={"vm_name": "a/b"}),  # 40: '/' in a name: bad
    line(sport=40040, dest_instance={"vm_name": 5}),  # 41: a number as a name: bad
    line(sport=40041, dest_instance={"vm_name": ""}, src_instance={"zone": "z"}),  # 42: no names
    line(sport=40042, dest_instance="vm"),  # 43: instance not an object: bad
    line(sport=40043, dest_instance=None, src_instance={"vm_name": None}),  # 44: nulls: no hints
    line(sport=40044, compact=False),  # 45: blanks between tokens
    line(sport=40045, compact=False)[:-1] + ", }",  # 46: a trailing comma after a blank
    line(sport=40046, labels=[1, 2]),  # 47: an array
    line(sport=40047, labels=[1, float("nan")]),  # 48: NaN in an array
    line(sport=40048)[:-1] + ',"l":[1,inf]}',  # 49
    line(sport=40049)[:-1] + ',"l":[1,]}',  # 50
    line(sport=40050, proto=-0.0),  # 51: -0.0 is a float
    line(sport=40051, reporter="DEST_GATEWAY", rtt_msec=None),  # 52: a gateway
    line(sport=40052, reporter="SRC", rtt_msec={"a": 1}),  # 53: any RTT value is evidence
    line(sport=40053, reporter="src"),  # 54: unknown reporter
    line(sport=40054, dport=70000),  # 55
    line(sport="0x10"),  # 56
    line(sport="\u0663"),  # 57: an Arabic-Indic digit is no port
    line(sport=" 80"),  # 58
    line(sport=40058, bytes_sent="1e3"),  # 59
    line(sport=40059, bytes_sent=""),  # 60
    line(sport=40060, src="10.0.0.01"),  # 61: a leading zero: no address
    json.dumps(entry(sport=40061)["jsonPayload"]),  # 62: a bare payload
    "[" + GOOD + "]",  # 63: an array: no entry
    " " + line(sport=40063),  # 64: a blank before the document: Python reads it
    line(sport=40064)[:-1] + ',"deep":' + "[" * 1200 + "]" * 1200 + "}",  # 65: too deep for Python: bad
    line(sport=40065)[:-1] + ',"deep":' + "[" * 100 + "]" * 100 + "}",  # 66: deep, but not too deep
    line(sport=40066, bytes_sent="7" * 5000),  # 67: more digits than int() converts: bad
    line(sport=40067)[:-1] + ',"pad":"' + "x" * 5000 + '"}',  # 68: a long line
    line(sport=40068, start_time="2026-01-02T03:04:05Z"),  # 69: no fraction
    line(sport=40069, start_time="\uff12026-01-02T03:04:05Z"),  # 70: a full-width digit
    line(sport=40070, dest_gke_details=None, dest_instance={"vm_name": "db"}),  # 71: null GKE details
    line(sport=40071)[:-1] + ',"n":Infinity}',  # 72
    line(sport=40072)[:-1] + ',"n":INF}',  # 73
    line(sport=40073)[:-1] + ',"a":{"b": nan}}',  # 74
]


def rows(store: FlowStore) -> list[tuple[Any, ...]]:
    got = [(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
            r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["direction"], r["src_workload"],
            r["dst_workload"]) for r in store.rows()]
    return sorted(got, key=repr)


def write(tmp_path: Path, lines: list[str], name: str, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes("".join(text + newline for text in lines).encode())
    return path


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any, list[Any]]:
    """(report, rows) through the fast path, then through the Python reader alone, and the files and
    line texts the fast path left to Python."""
    out = []
    calls: list[Any] = []
    real_read, real_scan = gcp._read, gcp._scan
    scanned: list[Any] = []

    def read(src: Any, index: int, writer: Any, pending: Any, only: frozenset[str] | None = None) -> bool:
        calls.append((src.path.name, only))
        return real_read(src, index, writer, pending, only)

    def scan(*a: Any, **k: Any) -> Any:
        scanned.append(real_scan(*a, **k))
        return scanned[-1]

    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            m.setattr(gcp, "_scan", (lambda *_a, **_k: None) if python_only else scan)
            if not python_only:
                m.setattr(gcp, "_read", read)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest(list(paths), fmt="gcp", bad_threshold=1.0, max_samples=100)
                got = rows(s)
            if not python_only:
                assert scanned and scanned[0] is not None, "the fast path was not taken"
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(Path(b.file).name, b.line, b.field, b.message, b.text) for b in report.bad_samples]), got))
    return out[0], out[1], calls


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, TRICKY, "a.ndjson")
    b = write(tmp_path, [line(sport=41000), line(sport=41001, reporter="SRC")], "b.ndjson", "\r\n")  # CRLF
    c = tmp_path / "c.ndjson.gz"
    with gzip.open(c, "wt") as fh:
        fh.write("\n".join([line(sport=42000), TRICKY[20], line(sport=42001, src_instance=VM)]) + "\n")
    d = tmp_path / "d.ndjson"  # invalid UTF-8 in an unused value: all of d in Python
    d.write_bytes((line(sport=43000) + "\n" + line(sport=43001, labels={"x": "\u00e9"}).replace("\\u00e9", "\xe9")
                   + "\n").encode("latin-1"))
    e = tmp_path / "e.ndjson"  # a byte order mark: the first line is bad JSON for Python
    e.write_bytes(b"\xef\xbb\xbf" + (line(sport=44000) + "\n" + line(sport=44001) + "\n").encode())
    f = tmp_path / "f.ndjson"  # CR CR LF: DuckDB splits it unlike Python: all of f in Python
    f.write_bytes((line(sport=45000) + "\r\r\n" + line(sport=45001) + "\n").encode())
    g = write(tmp_path, [line(sport=46000), line(sport=46001, labels={"x": "\x01"}).replace("\\u0001", "\x01")],
              "g.ndjson")  # the delimiter DuckDB splits at: all of g in Python
    # an ideographic space alone: no blank DuckDB trims, a blank str.strip() removes; Python does not find
    # the text SQL left to it, and reads all of h
    h = write(tmp_path, [line(sport=47000), "\u3000", line(sport=47001)], "h.ndjson")
    fast, python, calls = both_paths(tmp_path, monkeypatch, a, b, c, d, e, f, g, h)
    assert fast == python
    assert [call for call in calls if call[0] == "h.ndjson"] == [("h.ndjson", frozenset({"\u3000"})),
                                                                 ("h.ndjson", None)]
    # a.ndjson: the lines SQL cannot be certain of, alone; c: its nan line; d, e, f, g: whole
    by_file = dict(calls)
    assert set(by_file) == {"a.ndjson", "c.ndjson.gz", "d.ndjson", "e.ndjson", "f.ndjson", "g.ndjson", "h.ndjson"}
    assert by_file["c.ndjson.gz"] == frozenset({TRICKY[20]})
    assert by_file["d.ndjson"] is None and by_file["e.ndjson"] is None and by_file["f.ndjson"] is None
    assert by_file["g.ndjson"] is None
    assert by_file["a.ndjson"] is not None and {TRICKY[n - 1] for n in (3, 15, 16, 18, 19, 21, 23, 27, 46, 48,
                                                                         49, 50, 65, 67, 68, 73, 74)} <= \
        by_file["a.ndjson"]
    assert GOOD not in by_file["a.ndjson"] and TRICKY[34] not in by_file["a.ndjson"]  # SQL read those
    assert TRICKY[27] not in by_file["a.ndjson"]  # 28: IPv6 too (canonicalised after the scan)
    report, got = fast
    bad = [(name, no, field) for name, no, field, _, _ in report[4]]
    assert bad == [
        ("a.ndjson", 3, "connection.protocol"), ("a.ndjson", 4, "connection.src_port"),
        ("a.ndjson", 5, "connection.src_port"), ("a.ndjson", 6, "connection.src_ip"),
        ("a.ndjson", 8, "bytes_sent"), ("a.ndjson", 9, "packets_sent"), ("a.ndjson", 11, "connection.src_port"),
        ("a.ndjson", 13, "start_time"), ("a.ndjson", 14, "jsonPayload"), ("a.ndjson", 18, "json"),
        ("a.ndjson", 19, "json"), ("a.ndjson", 21, "json"), ("a.ndjson", 23, "json"), ("a.ndjson", 27, "json"),
        ("a.ndjson", 30, "start_time"), ("a.ndjson", 31, "start_time"), ("a.ndjson", 33, "start_time"),
        ("a.ndjson", 34, "start_time"), ("a.ndjson", 36, "src_gke_details"),
        ("a.ndjson", 38, "src_gke_details.pod.pod_name"), ("a.ndjson", 40, "dest_instance.vm_name"),
        ("a.ndjson", 41, "dest_instance.vm_name"), ("a.ndjson", 43, "dest_instance"), ("a.ndjson", 46, "json"),
        ("a.ndjson", 49, "json"), ("a.ndjson", 50, "json"), ("a.ndjson", 51, "connection.protocol"),
        ("a.ndjson", 54, "reporter"), ("a.ndjson", 55, "connection.dest_port"), ("a.ndjson", 56, "connection.src_port"),
        ("a.ndjson", 57, "connection.src_port"), ("a.ndjson", 58, "connection.src_port"),
        ("a.ndjson", 59, "bytes_sent"),
        ("a.ndjson", 60, "bytes_sent"), ("a.ndjson", 61, "connection.src_ip"), ("a.ndjson", 63, "jsonPayload"),
        ("a.ndjson", 65, "json"), ("a.ndjson", 67, "bytes_sent"), ("a.ndjson", 70, "start_time"),
        ("a.ndjson", 73, "json"), ("a.ndjson", 74, "json"),
        ("c.ndjson.gz", 2, "json"), ("e.ndjson", 1, "json"), ("g.ndjson", 2, "json")]  # g: a raw control character
    # by hand: a.ndjson 72 lines (2 blank), 41 bad; b 2 records; c 3 lines, 1 bad; d 2 records; e 2 lines,
    # 1 bad; f 2 records (CR CR LF is a blank line between them for Python); g 2 lines, 1 bad; h 2 records
    assert report[:4] == (72 + 2 + 3 + 2 + 2 + 2 + 2 + 2, 72 - 41 + 2 + 2 + 2 + 1 + 2 + 1 + 2, 41 + 3, {})
    by_port = {r[3]: r for r in got}
    assert by_port[707][11] == "ingress" and by_port[707][6] == 1  # 7
    assert by_port[2424][11] == "egress"  # 24: the first "reporter" (SRC) is the one read
    assert by_port[2929][9] == datetime(2026, 1, 2, 3, 4, 5)  # 29: +02:00
    assert by_port[3232][9] == datetime(2026, 1, 2, 3, 4, 5, 987654)  # 32
    assert ("2001:db8::1", "2001:db8::2") in {r[:2] for r in got}  # 28
    assert {("web-1", None), ("café", None), ("shop/frontend", "shop/carts"), ("shop/api", None), (None, "db")} \
        <= {(r[12], r[13]) for r in got}


def test_fast_path_on_a_clean_file_reads_nothing_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line(f"10.0.{i % 7}.1", f"10.1.{i % 5}.2", sport=40000 + i, dport=443 + i % 3,
                  reporter=("DEST", "SRC", "SRC_GATEWAY", "DEST_GATEWAY")[i % 4], rtt_msec="2" if i % 3 else None,
                  bytes_sent=str(i), src_instance={"vm_name": f"vm-{i % 7}"},
                  dest_gke_details=gke("shop", f"api-7d4b9c6f5-x2x{'bcdfghjklm'[i % 10]}z") if i % 2 else None)
             for i in range(200)]
    path = write(tmp_path, lines, "clean.ndjson")
    calls: list[Any] = []
    real = gcp._read
    monkeypatch.setattr(gcp, "_read", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path])
        assert (report.lines, report.records, report.bad) == (200, 200, 0)
        got = s.rows()
        assert sum(r["records"] for r in got) == 200
        assert sum(r["bytes"] for r in got) == sum(range(200))
        assert {r["dst_workload"] for r in got} == {None, "shop/api"}
        assert {r["src_workload"] for r in got} == {f"vm-{i}" for i in range(7)}
        # SRC without an RTT and no reply logged: no action; DEST always accepted
        assert {(r["direction"], r["action"]) for r in got} == {
            ("ingress", "accept"), ("egress", "accept"), ("egress", None), (None, "accept"), (None, None)}
    assert calls == []


def test_both_ends_across_the_two_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One end's report read by SQL, the other's by Python (an escape in an unused value makes a line
    uncertain): the rank and reply rules see both."""
    escaped = {"q": 'say "hi"'}
    lines = [
        line("10.0.0.1", "10.0.0.2", 40000, 5432, "SRC", rtt_msec="1"),  # 1: SQL; line 2 is the better report
        line("10.0.0.1", "10.0.0.2", 40000, 5432, "DEST", labels=escaped),  # 2: Python
        line("10.0.0.3", "10.0.0.4", 40001, 80, "SRC", labels=escaped),  # 3: Python; skipped for line 4
        line("10.0.0.3", "10.0.0.4", 40001, 80, "DEST"),  # 4: SQL
        line("10.0.0.5", "10.0.0.6", 40002, 22, "SRC"),  # 5: SQL, no RTT: its reply (6, Python) is evidence
        line("10.0.0.6", "10.0.0.5", 22, 40002, "SRC_GATEWAY", labels=escaped),  # 6: Python
        line("10.0.0.7", "10.0.0.8", 40003, 53, "SRC", proto=17),  # 7: SQL, no evidence
        line("10.0.0.9", "10.0.0.10", 40004, 443, "SRC", labels=escaped),  # 8: Python; skipped for line 9 ...
        line("10.0.0.9", "10.0.0.10", 40004, 443, "DEST", start_time="yesterday"),  # 9: ... though 9 is bad
    ]
    path = write(tmp_path, lines, "ends.ndjson")
    fast, python, calls = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    assert calls == [("ends.ndjson", frozenset(lines[i - 1] for i in (2, 3, 6, 8, 9)))]
    report, got = fast
    assert report[:4] == (9, 5, 1, {"duplicate-report": 3})
    assert [(no, field) for _, no, field, _, _ in report[4]] == [(9, "start_time")]
    assert {(r[0], r[1], r[5], r[11]) for r in got} == {
        ("10.0.0.1", "10.0.0.2", "accept", "ingress"), ("10.0.0.3", "10.0.0.4", "accept", "ingress"),
        ("10.0.0.5", "10.0.0.6", "accept", "egress"), ("10.0.0.6", "10.0.0.5", "accept", None),
        ("10.0.0.7", "10.0.0.8", None, "egress")}


def test_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ndjson.gz"
    with gzip.open(whole, "wt") as fh:
        fh.write("\n".join(line(sport=1 + i % 60000, insertId=f"{i:08x}") for i in range(5000)) + "\n")
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with FlowStore(tmp_path / "s" / "flows.duckdb") as store, pytest.raises(InputError) as err:
        store.ingest([cut], fmt="gcp")
    assert err.value.file == str(cut.resolve())


# IPv6 spellings (see test_hubble_fastpath.IPV6): SQL reads what ipaddress accepts, with zone ids of
# interface-name characters, and rewrites it as ipaddress writes it; the rest is Python's.
IPV6 = [
    line("fd00::1", "fd00::2", 50001),  # 1: RFC 5952 already
    line("FD00::1", "fd00::2", 50001),  # 2: upper case
    line("fd00:0:0:0:0:0:0:1", "fd00::2", 50001),  # 3: not zero-compressed
    line("fd00:0000:0000:0000:0000:0000:0000:0001", "FD00:0::2", 50001),  # 4: the full form
    line("::", "::1", 50002),  # 5
    line("1:2:3:4:5:6:7::", "1::", 50003),  # 6: "::" standing for one group
    line("::ffff:10.0.0.1", "::FFFF:10.0.0.2", 50004),  # 7: IPv4-mapped
    line("64:ff9b::192.0.2.33", "1:2:3:4:5:6:1.2.3.4", 50005),  # 8: embedded IPv4
    line("fe80::1%eth0", "FE80::2%eth0.100", 50006),  # 9: zone ids
    line("fe80::1%eth 0", "fd00::2", 50007),  # 10: a blank in the zone: bad (canonical_ip's zone rule; Python)
    line("fe80::1%a/b", "fd00::2", 50008),  # 11: bad
    line("fe80::1%", "fd00::2", 50009),  # 12: bad
    line("1:::2", "fd00::2", 50010),  # 13: bad
    line("12345::", "fd00::2", 50011),  # 14: bad
    line("1:2:3:4:5:6:7:8:9", "fd00::2", 50012),  # 15: too many groups: bad
    line("1:2:3:4::5:6:7:8", "fd00::2", 50013),  # 16: bad
    line("::ffff:1.2.3.04", "fd00::2", 50014),  # 17: bad
    line("10.0.0.1:80", "fd00::2", 50015),  # 18: bad
    line("fd00::1", "fd00::2", 50001, labels={"q": 'a"b'}),  # 19: an escape: Python reads the line
    line("fd00::1", "fd00::2", 50001).replace("fd00::1", "fd00::\\u0031"),  # 20: an escaped address (Python)
    # the same connection reported by both ends, spelled differently and read by both paths: one is kept
    line("2001:DB8::10", "2001:db8::20", 50100, 5432, "SRC", rtt_msec="1"),  # 21: SQL
    line("2001:db8::10", "2001:0db8::20", 50100, 5432, "DEST", labels={"q": 'a"b'}),  # 22: Python, kept
    line("2001:db8::30", "2001:db8::40", 50101, 53, "SRC", proto=17),  # 23: SQL, no RTT: 24 is its reply
    line("2001:DB8::40", "2001:DB8::30", 53, 50101, "SRC_GATEWAY", proto=17),  # 24: SQL
]


def test_fast_path_ipv6_spellings_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, IPV6, "a.ndjson")
    b = write(tmp_path, IPV6[::-1], "b.ndjson", "\r\n")
    fast, python, calls = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    by_file = dict(calls)
    in_python = {10, *range(11, 21), 22}  # (a backslash anywhere: Python)
    assert by_file["a.ndjson"] == by_file["b.ndjson"] == frozenset(IPV6[n - 1] for n in in_python)
    report, got = fast
    assert [(no, field) for name, no, field, _, _ in report[4] if name == "a.ndjson"] == [
        (n, "connection.src_ip") for n in range(10, 19)]
    assert report[2] >= 2 * 9 and report[3] == {"duplicate-report": 2}  # 21, in both files
    keys = [(r[0], r[1], r[2], r[3]) for r in got]
    # by hand: every spelling of fd00::1 -> fd00::2 folds into one row per file
    assert [r[6] for r in got if r[:3] == ("fd00::1", "fd00::2", 50001)] == [6, 6]  # 1-4, 19, 20
    assert {("::", "::1", 50002, 443), ("1:2:3:4:5:6:7:0", "1::", 50003, 443),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.2", 50004, 443),
            ("64:ff9b::c000:221", "1:2:3:4:5:6:102:304", 50005, 443)} <= set(keys)
    both = {(r[0], r[1], r[5], r[11]) for r in got if r[2] in (50100, 50101, 53)}
    assert both == {("2001:db8::10", "2001:db8::20", "accept", "ingress"),
                    ("2001:db8::30", "2001:db8::40", "accept", "egress"),
                    ("2001:db8::40", "2001:db8::30", "accept", None)}


def test_an_address_sql_takes_and_python_refuses_sends_the_file_to_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net behind the IPv6 pattern (sqlpath.canonical_ipv6): were it ever to accept a text
    ipaddress refuses, the files holding that value are read in Python (here a deliberately loose pattern)."""
    from microseg.sources.flows import hubble
    monkeypatch.setattr(hubble, "IPV6_SQL", "[0-9A-Fa-f:.%a-z]+")
    a = write(tmp_path, IPV6, "a.ndjson")
    clean = write(tmp_path, IPV6[:8], "clean.ndjson")
    fast, python, calls = both_paths(tmp_path, monkeypatch, a, clean)
    assert fast == python
    assert [(no, field) for name, no, field, _, _ in fast[0][4] if name == "a.ndjson"] == [
        (n, "connection.src_ip") for n in range(10, 19)]
    assert ("a.ndjson", None) in calls  # whole
    assert [c for c in calls if c[0] == "clean.ndjson"] == []  # SQL read all of the clean file


# Every JSON type in every field the fast path reads as VARCHAR (a string's content, any other value's JSON
# text, NULL for null and absent alike): each form must read as the Python reader reads it.
_FORMS: list[Any] = [
    "7", "07", "", " 7", "+7", "-7", "7.0", "1e2", "0x10", "\u0667", "caf\u00e9", "true", "false", "null", "{}", "[]",
    "{x", "10.0.0.9", "DEST", 7, 0, -7, -0.0, 7.5, 1e2, 1e400, 10 ** 30, (1 << 64) - 1, 1 << 64, True, False, None,
    {}, {"a": 1}, [], [1], ["x"], _DROP,
]
_LEAF_KEYS = ("src_ip", "dest_ip", "src_port", "dest_port", "protocol", "reporter", "start_time", "end_time",
              "bytes_sent", "packets_sent", "rtt_msec", "src_gke_details", "dest_gke_details")


def _forms() -> list[str]:
    out = []
    port = 30000
    for key in _LEAF_KEYS:
        for value in _FORMS:
            port += 1
            out.append(line(sport=port, **{key: value}))
        port += 1  # a JSON escape in the value, and a repeated key (the first one is read)
        out.append(line(sport=port, **{key: "x"}).replace('"x"', '"\\u0078"'))
        port += 1
        out.append(line(sport=port, rtt_msec="1").replace(f'"{key}":', f'"{key}":"bad","{key}":', 1))
        port += 1
        out.append(line(sport=port, rtt_msec="1")[:-2] + f',"{key}":"bad"}}}}')
    for side in ("src", "dest"):  # the instance's VM name, and the instance itself
        for value in [*_FORMS, "vm-1", "Vm_1.a", "1vm", "-vm", "[vm", "{vm", "vm}", "true-vm", "True", "a b", "a/b"]:
            port += 1
            out.append(line(sport=port, **{f"{side}_instance": {"vm_name": value}} if value is not _DROP
                            else {f"{side}_instance": {"zone": "z"}}))
        for value in _FORMS:
            port += 1
            out.append(line(sport=port, **{f"{side}_instance": value}))
        port += 1
        out.append(line(sport=port, **{f"{side}_instance": {"vm_name": "a"}}).replace('"vm_name":"a"',
                                                                                        '"vm_name":"a","vm_name":5'))
    for time in ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.12345Z",
                 "2026-01-02T03:04:05.123456Z", "2026-01-02T03:04:05.1234567Z", "2026-01-02T03:04:05.Z",
                 "2026-01-02 03:04:05Z", "2026-1-02T03:04:05Z", "2026-01-02T03:04:05", "2026-01-02T03:04:60Z",
                 "2026-01-02T03:04:05.123456789012345678901234567890Z", "20260-01-02T03:04:05Z"):
        port += 1
        out.append(line(sport=port, end_time=time))
    return out


def test_every_json_type_in_every_field_reads_as_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _forms()
    bare = [json.dumps(json.loads(text)["jsonPayload"]) for text in lines]  # the same payloads without LogEntry
    a = write(tmp_path, lines, "a.ndjson")
    b = write(tmp_path, bare, "b.ndjson")
    fast, python, calls = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    report, got = fast
    assert report[2] > 100 and report[1] > 100  # both good and bad lines in every group
    # what SQL reads itself (the common forms), and what it leaves to Python
    by_file = dict(calls)
    in_python = by_file["a.ndjson"] or frozenset()
    for value in ("7", 7, 0):
        assert line(sport=30000 + 1 + _FORMS.index(value), **{"bytes_sent": value}) not in in_python
    for side, value in (("src", "vm-1"), ("dest", "true-vm"), ("src", "Vm_1.a")):
        assert not [t for t in in_python if f'"vm_name":"{value}"' in t and f'"{side}_instance"' in t]
    assert not [t for t in in_python if '"end_time":"2026-01-02T03:04:05Z"' in t]
    assert not [t for t in in_python if '"end_time":"2026-01-02T03:04:05.1Z"' in t]
