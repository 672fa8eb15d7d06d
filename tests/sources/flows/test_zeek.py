"""Zeek conn.log reader, through the flow store: every sample file, exact normalised rows."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError, TooManyBadLines
from microseg.ir.model import AddressBinding, Inventory, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.flows import detect, zeek
from tests.sources.flows import _fastpath

SAMPLES = Path("samples/flows/zeek")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, start, end, bytes, packets, is_reply)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    out = set()
    for r in store.rows():
        # conn.log carries no TCP flags, no logged direction and no workload identity
        assert (r["tcp_flags"], r["direction"], r["src_workload"], r["dst_workload"]) == (None, None, None, None)
        out.add((r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
                 r["ts_start"], r["ts_end"], r["bytes"], r["packets"], r["is_reply"]))
    return out


def ingest(store: FlowStore, *paths: Path, bad_threshold: float | None = None) -> IngestReport:
    report = (store.ingest(list(paths)) if bad_threshold is None
              else store.ingest(list(paths), bad_threshold=bad_threshold))
    assert all(f.format == "zeek" for f in report.files)
    return report


# The same RDP connection (history ShADTdtr, responder reset) in the zed sample, TSV and streaming JSON.
RDP = ("10.164.94.120", "10.47.3.155", 39681, 3389, "TCP", "accept", 1, datetime(2018, 3, 24, 17, 15, 21, 255387),
       datetime(2018, 3, 24, 17, 15, 21, 259653), 730 + 342, 10 + 6, False)


def test_tsv_zed_sample(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "conn-tsv-zed-sample.log")
    assert (report.lines, report.records, report.bad, report.skipped) == (1, 1, 0, {})
    assert rows(store) == {RDP}  # unset service/local_orig and tunnel_parents '-' are no obstacle


def test_json_streaming_iso_ts(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "conn-json-streaming-logs.ndjson")
    # duration 0.004266023635864258 s: cut to microseconds, as the TSV writer rounds it to 0.004266
    assert rows(store) == {RDP}


def test_json_zeek_docs_epoch_ts(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "conn-json-zeek-docs.ndjson")
    assert rows(store) == {
        ("192.168.4.76", "192.168.4.1", 36844, 53, "UDP", "accept", 1, datetime(2020, 6, 5, 14, 39, 59, 305988),
         datetime(2020, 6, 5, 14, 39, 59, 372839), 118 + 197, 4, False),
        ("192.168.4.76", "31.3.245.133", 46378, 80, "TCP", "accept", 1, datetime(2020, 6, 5, 14, 39, 59, 430166),
         datetime(2020, 6, 5, 14, 39, 59, 684281), 397 + 511, 10, False),
    }


def test_every_sample_one_connection_once(store: FlowStore, shared: Path) -> None:
    files = sorted((shared / SAMPLES).glob("conn-*"))
    assert len(files) == 3
    report = ingest(store, *files)
    # The RDP connection (uid C8Tful1TvM3Zf5x8fl) is in both the streaming JSON and the TSV log: once.
    assert (report.lines, report.records, report.bad, report.skipped) == (4, 3, 0, {"duplicate-uid": 1})
    assert {(r["source_file"].rsplit("/", 1)[1], r["dst_port"]) for r in store.rows()} == {
        ("conn-json-streaming-logs.ndjson", 3389), ("conn-json-zeek-docs.ndjson", 53),
        ("conn-json-zeek-docs.ndjson", 80)}


def test_every_sample_is_detected_and_claims_nothing_else(shared: Path) -> None:
    flows = shared / "samples" / "flows"
    mine = sorted((flows / "zeek").glob("conn-*"))
    assert len(mine) == 3
    assert {f.name: detect(f) for f in mine} == {f.name: "zeek" for f in mine}
    others = [p for p in sorted(flows.rglob("*")) if p.is_file() and p.parent.name != "zeek" and p.name != "README.txt"]
    assert len(others) >= 10
    for path in others:
        try:
            assert detect(path) != "zeek", path
        except InputError:
            continue


HEADER = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn",
          "#open\t2026-01-02-03-00-00"]
FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
          "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts",
          "resp_ip_bytes", "tunnel_parents"]


def tsv(*records: str, fields: list[str] = FIELDS) -> list[str]:
    return [*HEADER, "#fields\t" + "\t".join(fields), "#types\t" + "\t".join("string" for _ in fields), *records]


def write(tmp_path: Path, lines: list[str], name: str = "conn.log") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tsv_conn_states_protocols_and_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        "1767322800.5\tCa\t10.0.0.1\t40001\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tS0\tS\t2\t120\t0\t0\t(empty)",  # 9
        "1767322801\tCb\t10.0.0.1\t40002\t10.0.0.2\t5433\ttcp\t-\t0.000100\t0\t0\tREJ\tSr\t1\t60\t1\t40\t(empty)",
        "1767322802\tCc\t10.0.0.1\t40003\t10.0.0.2\t22\ttcp\tssh\t1.5\t10\t20\tRSTO\tShADR\t5\t300\t4\t200\t-",
        "1767322803\tCd\t10.0.0.2\t443\t10.0.0.1\t50000\ttcp\t-\t2\t-\t-\tOTH\tDd\t3\t-\t3\t900\t-",  # 12: no SYN
        "1767322804\tCe\t10.0.0.1\t8\t10.0.0.2\t0\ticmp\t-\t-\t-\t-\tOTH\t-\t1\t84\t1\t84\t-",  # 13: echo request
        "1767322805\tCf\tfe80::1\t135\tfe80::2\t0\ticmp\t-\t-\t-\t-\tOTH\t-\t1\t72\t0\t0\t-",  # 14: ICMPv6 NS
        "1767322806\tCg\t10.0.0.1\t40004\t10.0.0.2\t5432\ttcp\t-",  # 15: columns missing
        "1767322807\tCh\t10.0.0.300\t40005\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t1\t1\t1\t-",  # 16
        "1767322808\tCi\t10.0.0.1\t40006\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tXX\t-\t1\t1\t1\t1\t-",  # 17
        "1767322809\tCj\t10.0.0.1\t40007\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\t-\t-\t1\t1\t1\t1\t-",  # 18: unset state
        "1767322810\tCk\t10.0.0.1\t70000\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t1\t1\t1\t-",  # 19
        "#close\t2026-01-02-04-00-00",
    ]
    report = ingest(store, write(tmp_path, tsv(*lines)), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (11, 6, 5, {})
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (15, "#fields"), (16, "id.orig_h"), (17, "conn_state"), (18, "conn_state"), (19, "id.orig_p")]
    assert rows(store) == {
        # no answer: drop; unset resp-side counts leave nothing unknown here (0 is a value)
        ("10.0.0.1", "10.0.0.2", 40001, 5432, "TCP", "drop", 1, datetime(2026, 1, 2, 3, 0, 0, 500000),
         datetime(2026, 1, 2, 3, 0, 0, 500000), 120, 2, False),
        # RST to the SYN: reject
        ("10.0.0.1", "10.0.0.2", 40002, 5433, "TCP", "reject", 1, datetime(2026, 1, 2, 3, 0, 1),
         datetime(2026, 1, 2, 3, 0, 1, 100), 100, 2, False),
        # established, then the originator aborted: accept
        ("10.0.0.1", "10.0.0.2", 40003, 22, "TCP", "accept", 1, datetime(2026, 1, 2, 3, 0, 2),
         datetime(2026, 1, 2, 3, 0, 3, 500000), 500, 9, False),
        # midstream: orientation unknown (the mapping's port rules decide); orig_ip_bytes unset -> bytes unknown
        ("10.0.0.2", "10.0.0.1", 443, 50000, "TCP", "accept", 1, datetime(2026, 1, 2, 3, 0, 3),
         datetime(2026, 1, 2, 3, 0, 5), None, 6, None),
        # ICMP type/code are not service ports
        ("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "accept", 1, datetime(2026, 1, 2, 3, 0, 4),
         datetime(2026, 1, 2, 3, 0, 4), 168, 2, None),
        ("fe80::1", "fe80::2", 0, 0, "ICMP", "accept", 1, datetime(2026, 1, 2, 3, 0, 5),
         datetime(2026, 1, 2, 3, 0, 5), 72, 1, None),
    }


def test_tsv_repeated_header_ip_proto_and_record_before_fields(store: FlowStore, tmp_path: Path) -> None:
    fields = ["ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "conn_state", "ip_proto"]
    lines = [
        *HEADER, "1767322800\t10.0.0.1\t40001\t10.0.0.2\t80\ttcp\tSF\t6",  # 7: before any #fields
        *tsv("1767322800\t10.0.0.1\t40001\t10.0.0.2\t80\ttcp\tSF\t6",
             "1767322801\t10.0.0.1\t0\t10.0.0.3\t0\tunknown_transport\tOTH\t47", fields=fields),
        # a rotated log appended: a new header with another column order
        *tsv("10.0.0.4\t1767322802\t10.0.0.5\t53\t41000\tudp\tSF", fields=["id.orig_h", "ts", "id.resp_h",
                                                                          "id.resp_p", "id.orig_p", "proto",
                                                                          "conn_state"]),
    ]
    report = ingest(store, write(tmp_path, lines), bad_threshold=1.0)
    assert [(b.line, b.field) for b in report.bad_samples] == [(7, "#fields")]
    assert {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["bytes"])
            for r in store.rows()} == {
        ("10.0.0.1", "10.0.0.2", 40001, 80, "TCP", None),
        ("10.0.0.1", "10.0.0.3", 0, 0, "IP-47", None),  # GRE, from Zeek 7's ip_proto
        ("10.0.0.4", "10.0.0.5", 41000, 53, "UDP", None),
    }


CONN: dict[str, Any] = {"ts": 1767322800.25, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 40001,
                        "id.resp_h": "10.0.0.2", "id.resp_p": 5432, "proto": "tcp", "duration": 0.5,
                        "conn_state": "SF", "orig_pkts": 3, "orig_ip_bytes": 200, "resp_pkts": 2,
                        "resp_ip_bytes": 1000}


def test_json_time_forms_nested_id_and_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    nested = {k: v for k, v in CONN.items() if not k.startswith("id.")}
    nested["uid"] = "C4"
    nested["id"] = {"orig_h": "10.0.0.1", "orig_p": 40002, "resp_h": "10.0.0.2", "resp_p": 5432}
    lines = [
        json.dumps(CONN),  # 1: JSON::TS_EPOCH
        json.dumps({**CONN, "uid": "C2", "ts": "2026-01-02T03:00:00.250000Z", "id.orig_p": 40003}),  # 2: TS_ISO8601
        json.dumps({**CONN, "uid": "C3", "ts": 1767322800250, "id.orig_p": 40004}),  # 3: JSON::TS_MILLIS
        json.dumps(nested),  # 4
        "{not json",  # 5
        json.dumps({k: v for k, v in CONN.items() if k != "conn_state"}),  # 6: never guessed as accept
        json.dumps({**CONN, "ts": "yesterday"}),  # 7
        json.dumps({**CONN, "proto": "sctp"}),  # 8: not a transport_proto value
        json.dumps([1, 2]),  # 9
        "",  # 10: blank
        json.dumps({**CONN, "uid": "C5", "id.resp_p": "5432/tcp"}),  # 11
        json.dumps({**CONN, "duration": 9}),  # 12: uid C1 again: the same connection, logged twice
    ]
    report = ingest(store, write(tmp_path, lines, "conn.json"), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (11, 4, 6, {"duplicate-uid": 1})
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (5, "json"), (6, "conn_state"), (7, "ts"), (8, "proto"), (9, "json"), (11, "id.resp_p")]
    start, end = datetime(2026, 1, 2, 3, 0, 0, 250000), datetime(2026, 1, 2, 3, 0, 0, 750000)
    # four client ports, folded by the store into one aggregate
    assert rows(store) == {("10.0.0.1", "10.0.0.2", None, 5432, "TCP", "accept", 4, start, end, 4800, 20, False)}
    ((low, high),) = {(r["src_port_min"], r["src_port_max"]) for r in store.rows()}
    assert (low, high) == (40001, 40004)


def test_gzip_and_threshold(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "conn.log.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(CONN) + "\n" + json.dumps({**CONN, "id.orig_h": "nope"}) + "\n")
    with pytest.raises(TooManyBadLines) as err:
        store.ingest([path])
    assert (err.value.line, err.value.field) == (2, "id.orig_h")
    assert store.rows() == []
    report = store.ingest([path], bad_threshold=0.5)
    assert (report.records, report.bad) == (1, 1)


def test_sniff() -> None:
    assert zeek.sniff([json.dumps(CONN)])
    assert zeek.sniff([json.dumps({"_path": "conn", **CONN})])
    assert zeek.sniff(HEADER[:5])
    assert zeek.sniff(["#separator \\x09", "#fields\t" + "\t".join(FIELDS)])
    # other Zeek logs share the shape but are not flows
    assert not zeek.sniff([*HEADER[:4], "#path\tdns"])
    assert not zeek.sniff([json.dumps({"_path": "dns", **CONN})])
    assert not zeek.sniff([json.dumps({"ts": 1, "uid": "C1", "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.2",
                                       "proto": "udp", "query": "example.com"})])  # dns.log JSON
    assert not zeek.sniff(['{"flow": {"verdict": "FORWARDED"}}'])
    assert not zeek.sniff(["version account-id srcaddr dstaddr"])
    assert not zeek.sniff([])


def test_mapping_one_edge_on_the_server_port(store: FlowStore, shared: Path) -> None:
    """End to end: the sample's RDP connection, logged twice (TSV and JSON), is one flow on 3389."""
    inventory = Inventory(
        workloads=(Workload(name="jump", kind=WorkloadKind.HOST),
                   Workload(name="rdp-host", kind=WorkloadKind.HOST, ports=(ListenPort(port=3389),))),
        bindings=(AddressBinding(ip="10.164.94.120", workload="jump"),
                  AddressBinding(ip="10.47.3.155", workload="rdp-host")))
    ingest(store, shared / SAMPLES / "conn-tsv-zed-sample.log", shared / SAMPLES / "conn-json-streaming-logs.ndjson")
    edges = {(e.source, e.destination, e.protocol, e.port): (e.flows, e.denied_flows, e.bytes)
             for e in map_flows(store, inventory).edges}
    assert edges == {("jump", "rdp-host", Protocol.TCP, 3389): (1, 0, 1072)}


# -- the DuckDB fast path reads exactly what the Python reader reads ---------------------------

TRICKY = [
    "1767322800.5\tA1\t10.0.0.1\t40001\t10.0.0.2\t5432\ttcp\t-\t0.25\t1\t2\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.1234567\tA2\t10.0.0.1\t40002\t10.0.0.2\t5432\ttcp\t-\t1.0000009\t-\t-\tS0\t-\t1\t60\t-\t-\t-",
    "1767322800\tA3\t010.0.0.1\t40003\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # leading zero
    "1767322800\tA4\t10.0.0.1\t65536\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800\tA5\t10.0.0.1\t-1\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1e9\tA6\t10.0.0.1\t40006\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "2026-01-02T03:00:00Z\tA7\t10.0.0.1\t40007\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800\tA8\t10.0.0.1\t40008\t10.0.0.2\t5432\ttcp\t-\tabc\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "-\tA9\t10.0.0.1\t40009\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800\tB1\t10.0.0.1\t40010\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\t(empty)\t-\t1\t60\t1\t60\t-",
    "1767322800\tB2\t10.0.0.1\t40011\t10.0.0.2\t5432\tsctp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800\tB3\t10.0.0.1\t40012\t10.0.0.9\t80\tunknown_transport\t-\t-\t-\t-\tOTH\t-\t1\t60\t1\t60\t-",
    "1767322800\tB4\t10.0.0.1\t8\t10.0.0.2\t0\ticmp\t-\t-\t-\t-\tOTH\t-\t1\t84\t1\t84\t-",
    "1767322800\tB5\t10.0.0.1\t40013\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t99999999999\t1\t60\t-",
    "1767322800\tB6\tfe80::1\t40014\tFE80::0002\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # IPv6
    "1767322800\tB7\t10.0.0.1\t\u0663\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # Arabic 3: bad
    "1767322800\tB8\t10.0.0.1\t40016\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-\r",
    "   ",
    "\t\t",
    "1767322800\tB9\t10.0.0.1\t40017\t10.0.0.2",
    "1767322800\tA1\t10.0.0.1\t40018\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tXX\t-\t1\t60\t1\t60\t-",  # uid again, bad
    "1767322801\tA1\t10.0.0.1\t40019\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # uid again, good
    "1767322802\t-\t10.0.0.1\t40020\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # no uid
    "1767322802\t-\t10.0.0.1\t40020\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "253402300799\tC1\t10.0.0.1\t40021\t10.0.0.2\t5432\ttcp\t-\t1\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # ends after 9999
    "253402300799.999999\tC2\t10.0.0.1\t40022\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tRSTR\t-\t1\t60\t1\t60\t-",
    "1767322800\tC3\t10.0.0.1\t40023\t10.0.0.2\t5432\tudp\t-\t-\t-\t-\tS0\t-\t-\t-\t1\t60\t-",
    "#close\t2026-01-02-04-00-00",
]
IP_PROTO_FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "conn_state", "ip_proto"]


def merged(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Aggregates keyed by flow: lines read in Python form their own aggregate next to DuckDB's (the
    store aggregates each staged relation by itself), so the two paths are compared on the sums."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        key = (r["source_file"], r["src_ip"], r["dst_ip"], r["dst_port"], r["protocol"], r["action"], r["is_reply"],
               r["bucket"])
        new = (r["records"], r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["src_port_min"],
               r["src_port_max"])
        if key in out:
            old = out[key]
            new = (old[0] + new[0], None if old[1] is None or new[1] is None else old[1] + new[1],
                   None if old[2] is None or new[2] is None else old[2] + new[2], min(old[3], new[3]),
                   max(old[4], new[4]), min(old[5], new[5]), max(old[6], new[6]))
        out[key] = new
    return out


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any]:
    return _fastpath.both_paths(tmp_path, monkeypatch, zeek, "_plan", paths, lambda s: merged(s.rows()))


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, tsv(*TRICKY), "a.log")
    b = tmp_path / "b.log.gz"  # uid A1 and B4 again; gzip, as rotated Zeek logs are kept
    with gzip.open(b, "wt") as fh:
        fh.write("\n".join(tsv(TRICKY[0].replace("40001", "41001"), TRICKY[12])) + "\n")
    c = write(tmp_path, tsv(
        "1767322800\tD1\t10.0.0.1\t40001\t10.0.0.2\t47\tunknown_transport\tOTH\t47",
        "1767322800\tD2\t10.0.0.1\t40001\t10.0.0.2\t47\tunknown_transport\tOTH\t300",
        "1767322800\tD3\t10.0.0.1\t40001\t10.0.0.2\t80\tgre\tSF\t6",  # ip_proto wins over proto
        fields=IP_PROTO_FIELDS), "c.log")
    fast, python = both_paths(tmp_path, monkeypatch, a, b, c)
    assert fast == python
    report, _ = fast
    # written out by hand from the rules in zeek.py's docstring, independent of either path
    # a.log: 25 record lines (26 and 27 are blank), 13 bad, line 30 repeats uid A1; b.log repeats A1 and B4;
    # c.log: ip_proto 300 is bad, GRE (47) and ip_proto 6 over "gre" are read.
    assert report[:4] == (30, 13, 14, {"duplicate-uid": 3})
    assert [(path.rsplit("/", 1)[1], line, field) for path, line, field, _, _ in report[4]] == [
        ("a.log", 11, "id.orig_h"), ("a.log", 12, "id.orig_p"), ("a.log", 13, "id.orig_p"), ("a.log", 14, "ts"),
        ("a.log", 16, "duration"), ("a.log", 17, "ts"), ("a.log", 18, "conn_state"), ("a.log", 19, "proto"),
        ("a.log", 24, "id.orig_p"), ("a.log", 28, "#fields"), ("a.log", 29, "conn_state"), ("a.log", 33, "duration"),
        ("a.log", 34, "ts"), ("c.log", 10, "ip_proto")]


def test_fast_path_on_a_clean_file_reads_nothing_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [f"{1767322800 + i}.25\tU{i}\t10.0.0.{i % 7}\t{40000 + i}\t10.0.1.{i % 5}\t{443 + i % 3}\ttcp\t-\t0.5\t"
             f"1\t2\t{'REJ' if i % 10 == 0 else 'SF'}\t-\t{i % 4}\t{100 + i}\t1\t60\t(empty)" for i in range(200)]
    path = write(tmp_path, tsv(*lines))
    calls: list[Any] = []
    real = zeek._stage_file
    monkeypatch.setattr(zeek, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path])
        assert (report.lines, report.records, report.bad) == (200, 200, 0)
        assert sum(r["records"] for r in s.rows()) == 200
        assert sum(r["bytes"] for r in s.rows()) == sum(100 + i + 60 for i in range(200))
        assert {r["action"] for r in s.rows()} == {"accept", "reject"}
    assert calls == []


def test_truncated_gzip_tsv_is_an_input_error(store: FlowStore, tmp_path: Path) -> None:
    lines = [f"1767322800\tT{i}\t10.0.0.1\t{40000 + i}\t10.0.0.2\t443\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-"
             for i in range(5000)]
    whole = tmp_path / "whole.log.gz"
    with gzip.open(whole, "wt") as fh:
        fh.write("\n".join(tsv(*lines)) + "\n")
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        store.ingest([cut], fmt="zeek")
    assert err.value.file == str(cut.resolve())
    assert store.rows() == []


def _conn(**changes: Any) -> dict[str, Any]:
    return {**CONN, **changes}


def test_json_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    nested = {k: v for k, v in CONN.items() if not k.startswith("id.")}
    ident = {"orig_h": "10.0.0.1", "orig_p": 40004, "resp_h": "10.0.0.2", "resp_p": 5432}
    dup_key = json.dumps(_conn(uid="J5", **{"id.orig_p": 40005, "id.resp_p": 80}))[:-1] + ', "id.resp_p": 5432}'
    lines = [
        json.dumps(_conn(uid="J1")),  # 1: SQL
        json.dumps(_conn(uid="J2", ts="2026-01-02T04:00:00.250000+01:00", **{"id.orig_p": 40002})),  # 2: SQL, ISO
        json.dumps(_conn(uid="J3", ts=1767322800250, **{"id.orig_p": 40003})),  # 3: JSON::TS_MILLIS
        json.dumps({**nested, "uid": "J4", "id": ident}),  # 4: nested id: Python
        dup_key,  # 5: id.resp_p 80, then 5432: the first is read (jsonline, as DuckDB reads it)
        json.dumps(_conn(uid="J6", **{"id.orig_p": 40006}))[:-1] + ', "missed_bytes": NaN}',  # 6: Python reads NaN
        json.dumps(_conn(uid="J7"))[:-1] + ', "missed_bytes": nan}',  # 7: not JSON to Python
        json.dumps(_conn(uid="J8"))[:-1] + ",}",  # 8: a trailing comma, not JSON to Python
        "  " + json.dumps(_conn(uid="J9", **{"id.orig_p": 40009})) + " ",  # 9: blanks around: Python
        json.dumps(_conn(uid="J10", orig_pkts="3", **{"id.orig_p": "40010"})),  # 10: counts as strings
        json.dumps(_conn(uid="J11", duration="0.5", **{"id.orig_p": 40011})),  # 11: duration as a string
        json.dumps(_conn(uid="J1", **{"id.orig_p": 40012})),  # 12: uid J1 again: skipped
        json.dumps({**nested, "uid": "J3", "id": ident}),  # 13: uid J3 again, on a Python line: skipped
        json.dumps({**nested, "uid": "J14", "id": {**ident, "resp_p": 70000}}),  # 14: bad port, Python
        json.dumps(_conn(uid="J16", orig_ip_bytes=None, **{"id.resp_p": 5433})),  # 15: bytes unknown
        json.dumps(_conn(uid="J17", proto="unknown_transport", conn_state="OTH",
                         **{"id.resp_h": "10.0.0.9", "id.resp_p": 80})),  # 16: protocol unknown
        json.dumps(_conn(uid="J18", proto="unknown_transport", ip_proto=47, **{"id.resp_h": "10.0.0.3"})),  # 17
        "",  # 18
        "   ",  # 19
    ]
    path = write(tmp_path, lines, "conn.json")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, got = fast
    # written out by hand from the rules in zeek.py's docstring: 17 records, 12 read, 2 repeated uids, 3 bad
    assert report[:4] == (17, 12, 3, {"duplicate-uid": 2})
    assert [(line, field) for _, line, field, _, _ in report[4]] == [(7, "json"), (8, "json"), (14, "id.resp_p")]
    start, end = datetime(2026, 1, 2, 3, 0, 0, 250000), datetime(2026, 1, 2, 3, 0, 0, 750000)
    assert {(k[2], k[3], k[4]): v for k, v in got.items()} == {
        # lines 1-4, 6 and 9-11, every one 1200 bytes and 5 packets, client ports 40001-40011
        ("10.0.0.2", 5432, "TCP"): (8, 9600, 40, start, end, 40001, 40011),
        ("10.0.0.2", 80, "TCP"): (1, 1200, 5, start, end, 40005, 40005),  # line 5: its first id.resp_p
        ("10.0.0.2", 5433, "TCP"): (1, None, 5, start, end, 40001, 40001),
        ("10.0.0.9", 80, None): (1, 1200, 5, start, end, 40001, 40001),
        ("10.0.0.3", 0, "IP-47"): (1, 1200, 5, start, end, 0, 0),
    }


def test_json_line_that_fails_a_check_in_sql_sends_the_batch_to_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines of the flat grammar that SQL does not keep (exponent form, impossible dates, booleans, a
    backslash) are read - and reported - by the Python parser."""
    plans: list[Any] = []
    real = zeek._plan
    monkeypatch.setattr(zeek, "_plan", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    def line(duration: str = "0.5", **changes: Any) -> str:
        return json.dumps(_conn(uid="K1", **changes)).replace('"duration": 0.5', f'"duration": {duration}')

    cases = [
        (line("0.0000001"), "duration"),  # str(Decimal("0.0000001")) is "1E-7": not a number to _micros
        (line(ts="2026-02-30T00:00:00Z"), "ts"),  # no 30 February
        (line(**{"id.orig_p": True}), "id.orig_p"),  # a boolean is no count
        (line(ts="1969-12-31T23:59:59Z"), "ts"),  # before 1970
        (line(ts="0.0000000"), None),  # a string: _micros reads its digits, 0
        (line("1.50"), None),  # Decimal("1.50"): 1.5 s exactly
    ]
    for n, (text, field) in enumerate(cases):
        path = write(tmp_path, [json.dumps(_conn(uid="K0")), text], f"c{n}.json")
        with FlowStore(tmp_path / f"s{n}" / "flows.duckdb") as s:
            report = s.ingest([path], bad_threshold=1.0)
            assert [(b.line, b.field) for b in report.bad_samples] == ([(2, field)] if field else [])
            assert (report.lines, report.records) == (2, 1 if field else 2)
    # the escaped line: its uid is unknown to SQL (and it is valid JSON to Python: "J\u0031" is "J1")
    path = write(tmp_path, [json.dumps(_conn(uid="J1")), json.dumps(_conn(uid="J\\u0031")).replace("\\\\", "\\")],
                 "esc.json")
    with FlowStore(tmp_path / "esc" / "flows.duckdb") as s:
        report = s.ingest([path], bad_threshold=1.0)
        assert (report.lines, report.records, dict(report.skipped)) == (2, 1, {"duplicate-uid": 1})
    # The 0.0000000 string and the 1.50 duration are read in SQL; every other case sends its batch to Python.
    assert [p is None for p in plans] == [True, True, True, True, False, False, True]


def test_json_fast_path_on_a_clean_file_reads_nothing_in_python(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps({"_path": "conn", "ts": f"2026-01-02T03:{i // 60:02d}:{i % 60:02d}.5Z" if i % 2 else
                         1767322800 + i, "uid": f"U{i}", "id.orig_h": f"10.0.0.{i % 7}", "id.orig_p": 40000 + i,
                         "id.resp_h": f"10.0.1.{i % 5}", "id.resp_p": 443, "proto": "tcp", "duration": 0.25,
                         "conn_state": "REJ" if i % 10 == 0 else "SF", "orig_pkts": 1, "orig_ip_bytes": 100 + i,
                         "resp_pkts": 1, "resp_ip_bytes": 60, "tunnel_parents": []}) for i in range(200)]
    path = write(tmp_path, lines[:150], "conn.json")
    gz = tmp_path / "conn.json.gz"  # a rotated file, gzip: its own DuckDB scan
    with gzip.open(gz, "wt") as fh:
        fh.write("\n".join(lines[150:]) + "\n")
    calls: list[Any] = []
    real = zeek._stage_file
    monkeypatch.setattr(zeek, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path, gz])
        assert (report.lines, report.records, report.bad) == (200, 200, 0)
        assert sum(r["records"] for r in s.rows()) == 200
        assert sum(r["bytes"] for r in s.rows()) == sum(100 + i + 60 for i in range(200))
        assert {r["action"] for r in s.rows()} == {"accept", "reject"}
        # 03:00:00 (i = 0) to 03:03:19.5 (i = 199, ISO with .5)
        assert min(r["ts_start"] for r in s.rows()) == datetime(2026, 1, 2, 3, 0, 0)
        assert max(r["ts_start_last"] for r in s.rows()) == datetime(2026, 1, 2, 3, 3, 19, 500000)
    assert calls == []


# -- pathological lines: the fast path (one scan into a temp table, lean checks) against the Python reader --

PATHOLOGICAL_TSV = [
    "1767322800.000000\tP1\t10.0.0.1\t 5\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # blank before
    "1767322800.000000\tP2\t10.0.0.1\t+5\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # sign
    "1767322800.000000\tP3\t10.0.0.1\t5.0\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # fraction
    "1767322800.000000\tP4\t10.0.0.1\t0x10\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # hex
    "1767322800.000000\tP5\t10.0.0.1\t40005\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t1e2\t1\t60\t-",  # exponent
    "1767322800.000000\tP6\t10.0.0.1\t00080\t10.0.0.2\t0443\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # leading 0s
    "1767322800.000000\tP7\t10.0.0.1\t40007\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t1234567890123456789\t1\t60\t-",
    "1767322800.000000\tP8\t10.0.0.1\t40008\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t123456789012345678\t1\t60\t-",
    "0001767322800.000000\tP9\t10.0.0.1\t40009\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # zeros
    "1767322800.\tQ1\t10.0.0.1\t40010\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",  # no decimals
    ".5\tQ2\t10.0.0.1\t40011\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tQ3\t10.0.0.1\t40012\t10.0.0.2\t5432\ttcp\t-\t1e-3\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tQ4\t10.0.0.1\t40013\t10.0.0.2\t5432\ttcp\t-\t-0\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    # a non-ASCII uid
    "1767322800.000000\tQ\u00e95\t10.0.0.1\t40014\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "#comment in the middle",
    "1767322800.000000\tQ6\t10.0.0.1\t40015\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t\t60\t1\t60\t-",  # '' count
    "1767322800.000000\tQ7\t10.0.0.1\t40016\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tsf\t-\t1\t60\t1\t60\t-",  # lower case
    "1767322800.000000\tQ8\t10.0.0.1\t40017\t10.0.0.2\t5432\tTCP\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tQ9\t1.2.3.04\t40018\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tR1\t255.255.255.255\t40019\t256.1.1.1\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "999999999999.999999\tR2\t10.0.0.1\t40020\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tR3\t10.0.0.1\t40021\t10.0.0.2\t5432\ttcp\t-\t0.1234569\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    "1767322800.000000\tR4\t10.0.0.1\t40022\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-\r",  # CR
    "\u00a0",  # blank to Python (str.strip), not to an ASCII test
    "1767322800.000000\tR5\t10.0.0.1\t40023\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
]


def test_fast_path_tsv_pathological_lines_match_the_python_reader(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, tsv(*PATHOLOGICAL_TSV), "p.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, got = fast
    # by hand (records from line 9): 23 lines that are neither blank to Python nor "#"; DuckDB's casts would
    # read " 5", "+5", "5.0", "0x10", "1e2", "-0" - Python does not. Read: P6 (leading zeros: ports 80 and
    # 443), P7 (19 digits: Python reads them), P8, P9 (leading zeros: 1767322800), Q5, R3 (0.123456: cut), R4, R5
    assert report[:4] == (23, 8, 15, {})
    assert [(line, field) for _, line, field, _, _ in report[4]] == [
        (9, "id.orig_p"), (10, "id.orig_p"), (11, "id.orig_p"), (12, "id.orig_p"), (13, "orig_ip_bytes"),
        (18, "ts"), (19, "ts"), (20, "duration"), (21, "duration"), (24, "orig_pkts"), (25, "conn_state"),
        (26, "proto"), (27, "id.orig_h"), (28, "id.resp_h"), (29, "ts")]
    start = datetime(2026, 1, 2, 3, 0)
    assert {k[3]: v for k, v in got.items()} == {
        443: (1, 120, 2, start, start, 80, 80),
        5432: (7, 1234567890123456789 + 123456789012345678 + 60 * 12, 14, start,
               datetime(2026, 1, 2, 3, 0, 0, 123456), 40007, 40023),
    }


def _json_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[str], name: str,
                newline: str = "\n") -> tuple[Any, Any, list[Any]]:
    """(fast, python, plans) for a file of ``lines``; the fast path may hand the batch to Python."""
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass") + b"\n")
    plans: list[Any] = []
    real = zeek._plan
    out = []
    for sub, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            m.setattr(zeek, "_plan", (lambda *_a, **_k: None) if python_only
                      else (lambda *a, **k: plans.append(real(*a, **k)) or plans[-1]))
            with FlowStore(tmp_path / f"{name}-{sub}" / "flows.duckdb") as s:
                report = s.ingest([path], bad_threshold=1.0)
                out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                             [(b.line, b.field, b.message) for b in report.bad_samples]), merged(s.rows())))
    return out[0], out[1], plans


def test_json_fast_path_pathological_lines_read_in_sql_or_line_by_line(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines DuckDB's JSON reader is more lenient on, or reads differently, than Python's json module: each
    is read in SQL only when Python reads it as the same record, else by the Python parser (line by line)."""
    def compact(**changes: Any) -> str:  # as Zeek writes it: no blanks, UTF-8 text unescaped
        return json.dumps(_conn(**changes), separators=(",", ":"), ensure_ascii=False)

    lines = [
        compact(uid="A1", **{"id.orig_p": "40001"}),  # 1: "40001" (a string of digits) is a count
        compact(uid="A2", missed_bytes=10**30),  # 2: a huge number where nothing reads it
        compact(uid="A3", history="\u00dcn\u00efcode"),  # 3: non-ASCII text in a string
        compact(uid="A\u00e94"),  # 4: non-ASCII uid
        compact(uid="A5")[:-1] + ",}",  # 5: trailing comma: not JSON to Python
        compact(uid="A6", tunnel_parents=["x"]).replace('["x"]', '["x",]'),  # 6: trailing comma in an array
        compact(uid="A7")[:-1] + ',"missed_bytes":NaN}',  # 7: NaN: Python reads it
        compact(uid="A8")[:-1] + ',"missed_bytes":-Infinity}',  # 8: -Infinity: Python reads it
        compact(uid="A9")[:-1] + ',"missed_bytes":nan}',  # 9: not JSON to Python
        compact(uid="B1")[:-1] + ',"missed_bytes":Inf}',  # 10: not JSON to Python
        compact(uid="B2", **{"id.resp_p": 80})[:-1] + ',"id.resp_p":5432}',  # 11: repeated key: the first
        compact(uid="B3", duration=0.25)[:-1] + ',"duration":9.0}',  # 12: repeated duration: the first
        compact(uid="B4", **{"id.resp_p": 13}).replace('"duration":0.5', '"duration":0.1234569999999999999'),  # 13
        compact(uid="B5", **{"id.resp_p": 14}).replace('"ts":1767322800.25', '"ts":1767322800.9999999999999999'),
        compact(uid="B6", ts="2026-01-02T04:00:00.250000001+01:00"),  # 15: nanoseconds, an offset
        compact(uid="B7", ts="2026-01-02T03:00:00.25Z"),  # 16
        compact(uid="B8", **{"id.orig_p": -1}),  # 17: negative: bad
        "[1, 2]",  # 18: not an object
        '"just a string"',  # 19
        "  " + compact(uid="B9") + "  ",  # 20: blanks around
        "",  # 21
        compact(uid="C1", local_orig=True, orig_pkts=None),  # 22: true elsewhere; packets unknown
        compact(uid="C2", **{"id.orig_p": "0080"}),  # 23: leading zeros in a string of digits
        compact(uid="C3")[:30] + "\r" + compact(uid="C3")[30:],  # 24, 25: a lone CR splits the line for both
        compact(uid="C4", proto="icmp", **{"id.orig_p": 8, "id.resp_p": 0}),  # 26: ICMP: ports 0
        compact(uid="C5", duration=None),  # 27: duration null: no end
    ]
    fast, python, plans = _json_cases(tmp_path, monkeypatch, lines, "p.json")
    assert fast == python
    assert plans and plans[0] is not None  # read by the fast path, the doubtful lines one by one
    report, got = fast
    # by hand: 26 lines that are not blank; bad: 5, 6, 9, 10 (not JSON), 17 (port), 18, 19 (not objects),
    # 24, 25 (halves of a line)
    assert [(line, field) for line, field, _ in report[4]] == [
        (5, "json"), (6, "json"), (9, "json"), (10, "json"), (17, "id.orig_p"), (18, "json"), (19, "json"),
        (24, "json"), (25, "json")]
    assert report[:4] == (26, 17, 9, {})
    by_port = {(k[3], k[4]): v for k, v in got.items()}
    assert by_port[(80, "TCP")][0] == 1  # line 11's first id.resp_p
    # digits finer than microseconds are cut, not rounded (DuckDB's double would round them up)
    assert by_port[(13, "TCP")][3:5] == (datetime(2026, 1, 2, 3, 0, 0, 250000), datetime(2026, 1, 2, 3, 0, 0, 373456))
    assert by_port[(14, "TCP")][3:5] == (datetime(2026, 1, 2, 3, 0, 0, 999999), datetime(2026, 1, 2, 3, 0, 1, 499999))


def test_json_lines_that_send_the_batch_to_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat lines that fail a check, escapes, a "#" line and invalid UTF-8 send the batch to Python; the result
    is the Python reader's."""
    good = json.dumps(_conn(uid="G1"), separators=(",", ":"))
    cases = [
        json.dumps(_conn(uid="K1", **{"id.orig_p": 80.5}), separators=(",", ":")),  # a fraction for a port
        json.dumps(_conn(uid="K2", conn_state=True), separators=(",", ":")),  # true for a string
        json.dumps(_conn(uid="K3", orig_ip_bytes=10**19), separators=(",", ":")),  # beyond 18 digits
        json.dumps(_conn(uid="K4", ip_proto=300), separators=(",", ":")),
        json.dumps({k: v for k, v in _conn(uid="K5").items() if k != "id.orig_h"}, separators=(",", ":")),
        json.dumps(_conn(uid="K\u00e96", history='a"b')),  # escapes: \u00e9 and \"
        "#fields\tts",  # a header line in the middle: Python reads what follows as TSV
        json.dumps(_conn(uid="K7", **{"id.resp_h": "10.0.0.\ud800"})),  # a lone surrogate escape
    ]
    for n, case in enumerate(cases):
        fast, python, plans = _json_cases(tmp_path, monkeypatch, [good, case, good.replace("G1", "G2")], f"b{n}.json")
        assert fast == python, case
        assert plans == [None], case
    # invalid UTF-8: DuckDB rejects the line, Python replaces the byte
    path = tmp_path / "utf8.json"
    path.write_bytes(good.encode() + b"\n" + good.replace("G1", "G\xff").encode("latin-1") + b"\n")
    fast_plans: list[Any] = []
    real = zeek._plan
    monkeypatch.setattr(zeek, "_plan", lambda *a, **k: fast_plans.append(real(*a, **k)) or fast_plans[-1])
    with FlowStore(tmp_path / "utf8" / "flows.duckdb") as s:
        report = s.ingest([path], bad_threshold=1.0)
        assert (report.lines, report.records, report.bad) == (2, 2, 0)
    assert fast_plans == [None]


def test_truncated_gzip_json_is_an_input_error(store: FlowStore, tmp_path: Path) -> None:
    lines = [json.dumps(_conn(uid=f"T{i}", **{"id.orig_p": 40000 + i % 20000})) for i in range(20000)]
    whole = tmp_path / "whole.json.gz"
    with gzip.open(whole, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        store.ingest([cut], fmt="zeek")
    assert err.value.file == str(cut.resolve())
    assert store.rows() == []


def test_json_nulls_and_negative_numbers_are_read_in_sql_when_python_reads_them_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``null`` and negative numbers (log shippers write unset fields as null; enrichment adds signed values)
    are read in SQL where nothing reads them, or where Python reads them the same (``-0`` is 0); nan / inf in
    any spelling, a negative number where the record reads a value and integers past Python's 4300-digit
    limit are read by the Python parser, line by line. Both paths give the same rows and reports."""
    def compact(**changes: Any) -> str:
        return json.dumps(_conn(**changes), separators=(",", ":"))

    def extra(uid: str, tail: str, **changes: Any) -> str:  # ``tail`` appended as it is, raw JSON text
        return compact(uid=uid, **changes)[:-1] + "," + tail + "}"

    sql = [  # lines read in SQL
        extra("N1", '"service":null'),
        extra("N2", '"service":null,"local_orig":null,"tunnel_parents":null'),
        extra("N3", '"tunnel_parents":[null]'),
        extra("N4", '"tunnel_parents":[1,null,-2]'),
        extra("N5", '"resp_geo_lon":-73.985,"orig_tz_offset":-5'),
        extra("N6", '"a":-0,"b":-0.0,"c":-1e5,"d":-1E-7,"e":-1e999'),
        extra("N7", '"a": -5,"b":\t-6'),  # blanks before the sign
        extra("N8", '"missed_bytes":-' + "9" * 30),  # a huge negative number nothing reads
        compact(uid="N9", orig_pkts=None, resp_ip_bytes=None),  # packets and bytes unknown
        compact(uid="O1", duration=None, **{"id.resp_p": 5433}),  # no duration: no end
        compact(uid="O2")[:-1].replace('"orig_pkts":3', '"orig_pkts":-0') + "}",  # -0: 0 in both readers
        compact(uid="O3")[:-1].replace('"id.orig_p":40001', '"id.orig_p":-0') + "}",  # port 0 in both
        compact(uid=None, **{"id.orig_p": 40013}),  # uid null: no duplicate check, in both
    ]
    python = [  # (line, bad field or None when Python reads it)
        (extra("P1", '"missed_bytes":nan'), "json"),
        (extra("P2", '"missed_bytes":-nan'), "json"),
        (extra("P3", '"missed_bytes":-inf'), "json"),
        (extra("P4", '"missed_bytes":-Infinity', **{"id.orig_p": 40104}), None),  # Python reads it
        (extra("P5", '"missed_bytes":NaN', **{"id.orig_p": 40105}), None),
        (extra("P6", '"tunnel_parents":[1,-inf]'), "json"),
        (extra("P7", '"tunnel_parents":[nan]'), "json"),
        (extra("P8", '"missed_bytes": -INF'), "json"),
        (extra("P9", '"missed_bytes":' + "1" * 5000), "json"),  # past int()'s limit
        (extra("Q1", '"missed_bytes":-' + "1" * 5000), "json"),
        (compact(uid="Q2", duration=-0.5), "duration"),
        (compact(uid="Q3", orig_ip_bytes=-1), "orig_ip_bytes"),
        (compact(uid="Q4", ts=-1767322800), "ts"),
        (compact(uid="Q5", ip_proto=-6), "ip_proto"),
        (compact(uid="Q6", conn_state=-1), "conn_state"),
        (compact(uid="Q7", **{"id.resp_p": -5432}), "id.resp_p"),
        (compact(uid="Q8")[:-1].replace('"duration":0.5', '"duration":-0.0') + "}", "duration"),
        (compact(uid="Q9", ts=None), "ts"),
        (extra("R1", '"missed_bytes":1.' + "1" * 5000, **{"id.orig_p": 40201}), None),  # long: read by Python
        (compact(uid="R2", proto=None), "proto"),
        (extra("R3", '"missed_bytes":nUll'), "json"),  # not JSON to either reader
        (compact(uid="R4")[:-1].replace('"orig_ip_bytes":200', '"orig_ip_bytes":' + "9" * 5000) + "}", "json"),
    ]
    lines = [*sql, *(line for line, _ in python)]
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, lines, "n.json")
    assert fast == slow
    assert len(plans) == 1 and plans[0] is not None  # the fast path, the doubtful lines one by one
    assert plans[0].pending[0][0] == {line for line, _ in python}  # exactly these lines read in Python
    report, got = fast
    first = len(sql) + 1
    assert [(line, field) for line, field, _ in report[4]] == [
        (first + n, field) for n, (_, field) in enumerate(python) if field is not None]
    assert report[:4] == (len(lines), len(sql) + 3, len(python) - 3, {})
    start, end = datetime(2026, 1, 2, 3, 0, 0, 250000), datetime(2026, 1, 2, 3, 0, 0, 750000)
    assert {(k[2], k[3]): v for k, v in got.items()} == {
        # N1-N8, O3 (client port 0), the null uid, P4, P5, R1: 1200 bytes, 5 packets each; O2: 1200 bytes,
        # 0 + 2 packets; N9: neither known (the store sums the known ones)
        ("10.0.0.2", 5432): (15, 14 * 1200, 13 * 5 + 2, start, end, 0, 40201),
        ("10.0.0.2", 5433): (1, 1200, 5, start, start, 40001, 40001),  # O1: no duration
    }


def test_tsv_counts_python_cannot_convert_are_bad_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A digit int() does not read and integers past its 4300-digit limit are bad lines (not a crash), on
    both paths."""
    path = write(tmp_path, tsv(
        "1767322800.000000\tS1\t10.0.0.1\t40001\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t\u00b2\t60\t1\t60\t-",
        "1767322800.000000\tS2\t10.0.0.1\t40002\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t" + "1" * 5000
        + "\t1\t60\t-",
        "1767322800.000000\tS3\t10.0.0.1\t40003\t10.0.0.2\t5432\ttcp\t-\t" + "1" * 5000
        + ".5\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
        "1767322800.000000\tS4\t10.0.0.1\t40004\t10.0.0.2\t5432\ttcp\t-\t-\t-\t-\tSF\t-\t1\t60\t1\t60\t-",
    ), "big.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, _ = fast
    assert report[:4] == (4, 1, 3, {})
    assert [(line, field) for _, line, field, _, _ in report[4]] == [
        (9, "orig_pkts"), (10, "orig_ip_bytes"), (11, "duration")]


def test_json_keys_are_matched_exactly_and_the_first_of_a_repeated_key_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys that differ from the used ones only in case, or that contain them, are other keys; of a repeated
    key the first occurrence is read - in SQL as in Python (jsonline)."""
    def compact(**changes: Any) -> str:
        return json.dumps(_conn(**changes), separators=(",", ":"))

    lines = [
        compact(uid="E1")[:-1] + ',"TS":1,"Uid":"E1","ID.ORIG_P":7,"id.resp_p ":9,"conn_State":"REJ"}',
        '{"TS":"x","Conn_state":"REJ",' + compact(uid="E2", **{"id.orig_p": 40002})[1:],
        compact(uid="E3", **{"id.orig_p": 40003})[:-1] + ',"uid":"E1","conn_state":"REJ","orig_pkts":9}',
        compact(uid="E4", **{"id.orig_p": 40004})[:-1] + ',"proto":"udp","id.resp_p":53}',
    ]
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, lines, "k.json")
    assert fast == slow
    assert len(plans) == 1 and plans[0] is not None and plans[0].pending == {}  # all four read in SQL
    report, got = fast
    assert report[:4] == (4, 4, 0, {})
    start, end = datetime(2026, 1, 2, 3, 0, 0, 250000), datetime(2026, 1, 2, 3, 0, 0, 750000)
    assert {(k[3], k[4], k[5]): v for k, v in got.items()} == {
        (5432, "TCP", "accept"): (4, 4 * 1200, 4 * 5, start, end, 40001, 40004)}


def test_json_long_numbers_are_read_from_their_whole_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fraction's digits beyond microseconds are cut, however many there are; an exponent after a long
    mantissa is seen (Python reads 0.123...e5 as 12345.678901 s, not 0.123456 s)."""
    def compact(duration: str, ts: str = "1767322800.25", **changes: Any) -> str:
        return (json.dumps(_conn(**changes), separators=(",", ":"))
                .replace('"duration":0.5', f'"duration":{duration}').replace('"ts":1767322800.25', f'"ts":{ts}'))

    digits = "1234567890" * 5
    long_lines = [
        compact("0." + digits, uid="L1", **{"id.resp_p": 1}),
        compact("0.1234565" + "0" * 45 + "1", uid="L2", **{"id.resp_p": 2}),
        compact("0.5", ts="1767322800.999999" + "9" * 50, uid="L3", **{"id.resp_p": 3}),
    ]
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, long_lines, "long.json")
    assert fast == slow
    assert len(plans) == 1 and plans[0] is not None and plans[0].pending == {}  # read in SQL
    got = {k[3]: v[3:5] for k, v in fast[1].items()}
    base = datetime(2026, 1, 2, 3, 0, 0, 250000)
    assert got == {1: (base, datetime(2026, 1, 2, 3, 0, 0, 373456)), 2: (base, datetime(2026, 1, 2, 3, 0, 0, 373456)),
                   3: (datetime(2026, 1, 2, 3, 0, 0, 999999), datetime(2026, 1, 2, 3, 0, 1, 499999))}
    # an exponent 50 digits after the point: Python reads the line (the batch), as the fast path cannot
    exponent = [json.dumps(_conn(uid="X0"), separators=(",", ":")), compact("0." + digits + "e5", uid="X1")]
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, exponent, "exp.json")
    assert fast == slow
    assert fast[0][:3] == (2, 2, 0)
    assert max(v[4] for v in fast[1].values()) == datetime(2026, 1, 2, 6, 25, 45, 928901)  # 0.25 + 12345.678901 s


V6_SPELLINGS = ["2001:db8::1", "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:10.0.0.1",
                "fe80::1%eth0", "FE80::0:1%eth0", "::", "1:2:3:4:5:6:7::",
                # not addresses canonical_ip accepts: bad lines, read by the Python parser
                "1:::2", "12345::", "fe80::1%", "::ffff:10.0.0.256", "fe80::1%a/b"]


def test_ipv6_lines_are_read_in_sql_and_written_as_python_writes_them(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def tsv_line(i: int, src: str, proto: str = "tcp") -> str:
        return (f"{1767322800 + i}.25\tV{i}\t{src}\t{40000 + i}\tfd00::2\t443\t{proto}\t-\t0.5\t1\t2\tSF\t-\t0\t"
                f"{100 + i}\t1\t60\t(empty)")

    def json_line(i: int, src: str) -> str:
        return json.dumps({"ts": 1767322800 + i, "uid": f"J{i}", "id.orig_h": src, "id.orig_p": 40000 + i,
                           "id.resp_h": "FD00::2", "id.resp_p": 443, "proto": "tcp", "conn_state": "SF",
                           "orig_ip_bytes": 100 + i, "resp_ip_bytes": 60})

    good = V6_SPELLINGS[:8]
    a = write(tmp_path, tsv(*[tsv_line(i, s) for i, s in enumerate(V6_SPELLINGS)],
                           tsv_line(20, "2001:db8::9", "icmp")), "a.log")  # Zeek's one icmp: ICMPv6 here
    # (a bad JSON line SQL parsed sends its batch to Python, by design: the good spellings only here)
    b = write(tmp_path, [json_line(i, s) for i, s in enumerate(good)], "b.json")
    fast, python = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    report, rows = fast
    # by hand: 8 good spellings + the ICMP line in a.log, 8 in b.log; a.log's 5 bad ones name id.orig_h
    assert report[:3] == (13 + 1 + 8, 17, 5)
    assert [(b[1], b[2]) for b in report[4]] == [(8 + k, "id.orig_h") for k in range(9, 14)]
    sources = {k[1] for k in rows}
    assert sources == {"2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "::", "1:2:3:4:5:6:7:0", "2001:db8::9"}
    assert {k[2] for k in rows} == {"fd00::2"}
    assert {k[4] for k in rows if k[1] == "2001:db8::9"} == {"ICMP"}
    # the good spellings alone: nothing is read by the Python parser
    calls: list[Any] = []
    real = zeek._stage_file
    monkeypatch.setattr(zeek, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    c = write(tmp_path, tsv(*[tsv_line(i, s) for i, s in enumerate(good)]), "c.log")
    d = write(tmp_path, [json_line(i, s) for i, s in enumerate(good)], "d.json")
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        assert s.ingest([c, d]).records == 16
        assert {r["src_ip"] for r in s.rows()} == sources - {"2001:db8::9"}
    assert calls == []


# (raw duration, raw orig_pkts): numbers written as they are in the line; a string is written with its quotes.
JSON_NUMBER_FORMS = [
    ("4.827139", "3"), ("0.000000", "0"), ("0.000001", "3"), ("4.8271390", "3"), ("4827139e-6", "3"),
    ("1.5e3", "3"), ("1.5E+3", "3"), ('"1.500000"', "3"), ('"01.500000"', "3"), ('"1.5e3"', "3"),
    ("123456789012.000000", "3"), ("1234567890123.000000", "3"), ("0.9999999999999999999", "3"),
    ("0.5", "5.0"), ("0.5", "5e0"), ("0.5", "1E2"), ("0.5", '"007"'), ("0.5", "-0"), ("0.5", '"+5"'),
    ("0.5", '" 5"'), ("0.5", str(10**18 - 1)), ("0.5", str(10**18)), ("0.5", str(2**64 - 1)), ("0.5", str(2**64)),
]


@pytest.mark.parametrize(("duration", "pkts"), JSON_NUMBER_FORMS)
def test_json_number_forms_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   duration: str, pkts: str) -> None:
    """Each spelling of a duration or a count, alone in its file (a flat line that fails a check sends its
    batch to Python): the fast path gives the Python reader's result exactly, and reads in SQL the common
    forms (six decimals, integers of at most 18 digits)."""
    line = (json.dumps(_conn(uid="N1"), separators=(",", ":"))
            .replace('"duration":0.5', f'"duration":{duration}').replace('"orig_pkts":3', f'"orig_pkts":{pkts}'))
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, [line, json.dumps(_conn(uid="N2"))], "n.json")
    assert fast == slow
    common = (duration in ("4.827139", "0.000000", "0.000001", '"1.500000"', '"01.500000"', "123456789012.000000",
                           "0.5")
              and pkts in ("3", "0", '"007"', str(10**18 - 1)))
    if common:
        assert len(plans) == 1 and plans[0] is not None and plans[0].pending == {}  # read in SQL
        assert fast[0][:3] == (2, 2, 0)
    if pkts in (str(2**64 - 1), str(2**64)):  # with resp_pkts 2: past the store's UBIGINT, a bad line (no crash)
        assert fast[0][:3] == (2, 1, 1) and fast[0][4][0][:2] == (1, "orig_pkts")


# What DuckDB's casts (and a typed read_csv column) accept and Python's reader may not, and the other way round;
# each is put in one field of its own line: the fast path must give the Python reader's result exactly.
TSV_VALUE_FORMS = ["5", " 5", "5 ", "+5", "-5", "-0", "05", "5.0", "5.", ".5", "1e3", "1E3", "0x10", "0b1", "1_000",
                   "\u0663", "\u00b2", "-", "(empty)", "", "5\x0b", "1.0000005", "1767322800.1234567", "0.000000",
                   "65535", "65536", "255", "256", str(2**64 - 1), str(2**64), "99999999999999999999"]


# One good TSV record, by field name; the value-form tests below change one field of it.
TSV_BASE = dict(zip(FIELDS, "1767322800.250000\tC1\t10.0.0.1\t40001\t10.0.0.2\t5432\ttcp\t-\t0.500000\t-\t-\tSF\t-"
                         "\t3\t200\t2\t1000\t(empty)".split("\t"), strict=True))


@pytest.mark.parametrize("field", ["ts", "id.orig_p", "duration", "orig_pkts", "orig_ip_bytes"])
def test_tsv_value_forms_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    lines = ["\t".join({**TSV_BASE, "uid": f"V{i}", field: value}[f] for f in FIELDS)
             for i, value in enumerate(TSV_VALUE_FORMS)]
    path = write(tmp_path, tsv(*lines), "v.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, _ = fast
    assert report[0] == len(TSV_VALUE_FORMS)
    assert report[2] > 0  # some spellings are bad lines, named by the Python parser
    assert all(bad_field == field for _, _, bad_field, _, _ in report[4])


# Values of other JSON types where Python reads a string (state, protocol, addresses) or a count: SQL reads these
# keys as VARCHAR (a string's content, any other value's JSON text), so each must still be judged as Python does.
JSON_TYPE_FORMS = [(key, raw) for key in ("conn_state", "proto", "id.orig_h", "id.resp_p", "orig_pkts")
                   for raw in ("5", "-5", "5.0", "1e2", "true", "false", "null", '"null"', '"true"', "[1]", '["SF"]',
                               '{"a":1}', '"-5"', '" 5"', '"0080"', '""', '"SF"', '"tcp"', '"10.0.0.9"', '"5"')]


@pytest.mark.parametrize(("key", "raw"), JSON_TYPE_FORMS)
def test_json_value_types_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  key: str, raw: str) -> None:
    line = json.dumps(_conn(uid="T1"), separators=(",", ":"))
    old = f'"{key}":{json.dumps(CONN[key])}'
    assert old in line
    fast, slow, plans = _json_cases(tmp_path, monkeypatch, [line.replace(old, f'"{key}":{raw}'),
                                                             json.dumps(_conn(uid="T2"))], "t.json")
    assert fast == slow
    if (key, raw) in (("conn_state", '"SF"'), ("proto", '"tcp"'), ("id.orig_h", '"10.0.0.9"'), ("id.resp_p", "5"),
                      ("id.resp_p", '"5"'), ("id.resp_p", '"0080"'), ("orig_pkts", "5"), ("orig_pkts", '"5"'),
                      ("orig_pkts", '"0080"')):
        assert len(plans) == 1 and plans[0] is not None and plans[0].pending == {}  # read in SQL
        assert fast[0][:3] == (2, 2, 0)


# Address spellings in a TSV line. The fast path does not judge addresses line by line: the store judges each
# distinct one after aggregation (canonical_ip, the Python reader's rule) and writes IPv6 as Python writes it; a
# refused one makes its records bad lines, which the reader's locate_bad names as the Python parser does.
TSV_ADDRESS_FORMS = ["10.0.0.9", "0.0.0.0", "255.255.255.255", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5",
                     " 10.0.0.9", "10.0.0.9 ", "10.0.0.9\x0b", "", "-", "(empty)", "10.0.0.9%eth0", "10.0.0.9/32",
                     "0x0a.0.0.9", "localhost", "\u0661\u0660.0.0.9", "\uff11\uff10.0.0.9", "1.2.3.\u00b2",
                     *V6_SPELLINGS, "2001:DB8::A", "::FFFF:10.0.0.9", "fe80::1%eth0%", "fe80::1%\u00e9", ":", ""]


@pytest.mark.parametrize("field", ["id.orig_h", "id.resp_h"])
@pytest.mark.parametrize("proto", ["tcp", "icmp"])
def test_tsv_address_forms_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str,
                                                   proto: str) -> None:
    lines = ["\t".join({**TSV_BASE, "uid": f"A{i}", "proto": proto, field: value}[f] for f in FIELDS)
             for i, value in enumerate(TSV_ADDRESS_FORMS)]
    path = write(tmp_path, tsv(*lines), "a.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, got = fast
    assert report[0] == len(TSV_ADDRESS_FORMS)
    # the valid spellings, by hand: 3 IPv4 above, the 8 good V6_SPELLINGS and the 2 upper-case IPv6 ones
    assert report[1:3] == (13, len(TSV_ADDRESS_FORMS) - 13)
    assert all(bad_field == field for _, _, bad_field, _, _ in report[4])
    assert len(report[4]) == 20  # the first 20 (max_samples), in line order
    assert [line for _, line, _, _, _ in report[4]] == sorted(line for _, line, _, _, _ in report[4])
    column = 1 if field == "id.orig_h" else 2
    assert "2001:db8::a" in {k[column] for k in got} and "::ffff:10.0.0.9" in {k[column] for k in got}
    # ICMP (and ICMPv6 from an IPv6 originator, which the store also names ICMP): no service port
    assert {(k[4], k[3]) for k in got} == ({("ICMP", 0)} if proto == "icmp" else {("TCP", 5432)})


def test_tsv_bad_addresses_among_other_bad_lines_duplicates_and_files(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines with a refused address (judged by the store) interleaved with lines SQL leaves to Python (a bad port,
    leading zeros) and with a repeated uid, over two files: one report, samples cut at 20 in file and line order."""
    def line(i: int, src: str = "10.0.0.1", port: str = "40001", uid: str | None = None) -> str:
        return (f"1767322800.250000\t{uid or f'B{i}'}\t{src}\t{port}\t10.0.0.2\t5432\ttcp\t-\t0.500000\t-\t-\tSF\t-"
                f"\t3\t200\t2\t1000\t(empty)")

    a_lines, b_lines = [], []
    for i in range(30):
        kind = i % 4
        a_lines.append(line(i, src="10.0.0.256") if kind == 0 else line(i, port="+5") if kind == 1
                       else line(i, port="040001") if kind == 2 else line(i))
    a_lines.append(line(99, src="1.2.3.4.5", uid="B3"))  # a bad address whose uid repeats a good line's
    b_lines = [line(100, src="fe80::1%", uid="B7"), line(101, src="10.0.0.300"), line(102)]
    a = write(tmp_path, tsv(*a_lines), "a.log")
    b = write(tmp_path, tsv(*b_lines), "b.log")
    fast, python = both_paths(tmp_path, monkeypatch, a, b)
    assert fast == python
    report, _ = fast
    # by hand: a.log 31 lines - 8 bad addresses + the repeated-uid one, 8 "+5" ports; b.log 2 bad addresses, and
    # its B7 repeats a.log's good B7 (a bad line: no duplicate); B3 in a.log: the good line is first
    assert report[:4] == (34, 30 - 16 + 1, 19, {})
    assert len(report[4]) == 19
    assert [(path.rsplit("/", 1)[1], no, fld) for path, no, fld, _, _ in report[4]][:3] == [
        ("a.log", 9, "id.orig_h"), ("a.log", 10, "id.orig_p"), ("a.log", 13, "id.orig_h")]


def test_uids_are_first_compared_by_hash_and_a_repeated_hash_plans_again_with_the_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TSV batch compares uids by their hash first: without a repeated hash it is planned once; a repeated uid,
    or two uids of one hash (forced here by hashing the first letter only), plans it again with the uids' text:
    both give the Python reader's report and rows, and distinct uids of one hash are no duplicates."""
    def line(uid: str, port: int, state: str = "SF") -> str:
        return (f"1767322800.250000\t{uid}\t10.0.0.1\t{port}\t10.0.0.2\t5432\ttcp\t-\t0.500000\t-\t-\t{state}\t-"
                f"\t3\t200\t2\t1000\t(empty)")

    modes: list[bool] = []
    real_once = zeek._plan_once
    monkeypatch.setattr(zeek, "_plan_once", lambda *a, **k: modes.append(k["uid_text"]) or real_once(*a, **k))
    clean = write(tmp_path, tsv(*[line(f"C{i}", 40000 + i) for i in range(6)]), "clean.log")
    fast, python = both_paths(tmp_path / "1", monkeypatch, clean)
    assert fast == python and fast[0][:4] == (6, 6, 0, {})
    assert modes == [False]
    # a uid repeated in a second TSV file (a good line and a bad one) and in a JSON file
    modes.clear()
    again = write(tmp_path, tsv(line("C1", 41001), line("C2", 41002, "XX"), line("D1", 41003)), "again.log")
    streaming = write(tmp_path, [json.dumps(_conn(uid="C3")), json.dumps(_conn(uid="E1"))], "streaming.json")
    fast, python = both_paths(tmp_path / "2", monkeypatch, clean, again, streaming)
    assert fast == python
    # by hand: 11 lines; C2's copy is bad (conn_state); C1 and C3 are read once: 2 duplicates
    assert fast[0][:4] == (11, 8, 1, {"duplicate-uid": 2})
    assert modes == [False, True]
    # distinct uids, one hash: planned again, and every line is still read once
    modes.clear()
    real_sql = zeek._parsed_sql
    monkeypatch.setattr(zeek, "_parsed_sql",
                        lambda *a, **k: real_sql(*a, **k).replace("hash(uid)", "hash(left(uid, 1))"))
    fast, python = both_paths(tmp_path / "3", monkeypatch, clean)
    assert fast == python and fast[0][:4] == (6, 6, 0, {})
    assert modes == [False, True]


def test_tsv_bad_addresses_outside_the_window_and_few_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused address is a bad line whether or not the record is in the time window, and the samples are the
    first ones in line order however few are asked for: on the fast path as in the Python reader."""
    from datetime import UTC

    from microseg.engine.store import TimeWindow

    def line(i: int, day: int, src: str = "10.0.0.1", port: str = "40001") -> str:
        return (f"{1767322800 + day * 86400}.250000\tW{i}\t{src}\t{port}\t10.0.0.2\t5432\ttcp\t-\t0.500000\t-\t-"
                f"\tSF\t-\t3\t200\t2\t1000\t(empty)")

    lines = [line(0, 1, src="10.0.0.256"), line(1, 0, port="+5"), line(2, 0), line(3, 1),
             line(4, 0, src="::1::"), line(5, 1, port="0x10"), line(6, 0, src="10.0.0.1 ")]
    path = write(tmp_path, tsv(*lines), "w.log")
    window = TimeWindow(since=datetime(2026, 1, 2, tzinfo=UTC), until=datetime(2026, 1, 3, tzinfo=UTC))
    out = []
    for sub, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            if python_only:
                m.setattr(zeek, "_plan", lambda *_a, **_k: None)
            with FlowStore(tmp_path / sub / "flows.duckdb") as s:
                report = s.ingest([path], bad_threshold=1.0, max_samples=3, window=window)
                out.append(((report.lines, report.records, report.bad, report.outside),
                            [(b.line, b.field, b.message) for b in report.bad_samples], merged(s.rows())))
    assert out[0] == out[1]
    # by hand: 7 lines, 5 bad (3 addresses, 2 ports), W2 read, W3 outside the window; samples: lines 9, 10, 13
    assert out[0][0] == (7, 1, 5, 1)
    assert [(no, fld) for no, fld, _ in out[0][1]] == [(9, "id.orig_h"), (10, "id.orig_p"), (13, "id.orig_h")]


def test_a_refused_address_is_located_without_parsing_every_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses the address; locate_bad parses only the lines holding an address canonical_ip refuses
    (the others DuckDB kept cannot be bad), and names the line and field as the Python parser does."""
    lines = [f"{1767322800 + i}.250000\tL{i}\t{'10.0.0.999' if i == 30 else f'10.0.0.{i % 7}'}\t{40000 + i}"
             f"\t10.0.1.{i % 5}\t443\ttcp\t-\t0.500000\t1\t2\tSF\t-\t3\t100\t2\t60\t(empty)" for i in range(50)]
    path = write(tmp_path, tsv(*lines))
    parsed: list[Any] = []
    real = zeek._record
    monkeypatch.setattr(zeek, "_record", lambda *a, **k: parsed.append(a[0]) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (50, 49, 1)
    assert [(b.line, b.field, b.message) for b in report.bad_samples] == [
        (8 + 31, "id.orig_h", "'10.0.0.999' is not an IP address")]
    assert [rec["uid"] for rec in parsed] == ["L30"]


# A Zeek log's numbers are ASCII. Python's \d and int() also take other Unicode digits ("\u0661" is 1 to both):
# such a value is a bad line on both paths (SQL leaves a non-ASCII line to the Python parser, which refuses it).
ARABIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")


def test_tsv_non_ascii_digits_are_bad_lines_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def line(uid: str, field: str, value: str) -> str:
        return "\t".join({**TSV_BASE, "uid": uid, field: value}[f] for f in FIELDS)

    path = write(tmp_path, tsv(
        line("A1", "ts", "1767322800.250000".translate(ARABIC)),  # 9: epoch seconds, every digit Arabic-Indic
        line("A2", "ts", "1767322800.25\u0660"),  # 10: one digit of the fraction
        line("A3", "ts", "2026-01-02T03:00:00.25Z".translate(ARABIC)),  # 11: ISO
        line("A4", "ts", "2026-01-02T03:00:0\u0660Z"),  # 12: ISO, one digit
        line("A5", "duration", "0.5".translate(ARABIC)),  # 13
        line("A6", "duration", "\u0661"),  # 14: a whole number
        line("A7", "orig_pkts", "\u0663"),  # 15: a count (str.isdigit and int() take it too)
        line("A8", "id.orig_p", "4000\u0661"),  # 16: a port
        line("A9", "ts", "1767322800.250000"),  # 17: the same record in ASCII: read
    ), "digits.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, got = fast
    assert report[:4] == (9, 1, 8, {})
    assert [(line, field) for _, line, field, _, _ in report[4]] == [
        (9, "ts"), (10, "ts"), (11, "ts"), (12, "ts"), (13, "duration"), (14, "duration"), (15, "orig_pkts"),
        (16, "id.orig_p")]
    assert sum(v[0] for v in got.values()) == 1


def _nested(text: str) -> str:
    """The record of JSON line ``text`` with its ``id.*`` fields in a nested ``id`` object, as UTF-8."""
    rec = json.loads(text)
    ident = {k[3:]: rec.pop(k) for k in list(rec) if k.startswith("id.")}
    return json.dumps({**rec, "id": ident}, ensure_ascii=False)


def test_json_non_ascii_digits_are_bad_lines_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        json.dumps(_conn(uid="U1", ts="1767322800.25".translate(ARABIC))),  # 1: epoch seconds as a string
        json.dumps(_conn(uid="U2", ts="2026-01-02T03:00:00.25Z".translate(ARABIC))),  # 2: ISO
        json.dumps(_conn(uid="U3", ts="2026-01-02T03:00:00.2\u0665Z")),  # 3: ISO, one digit of the fraction
        json.dumps(_conn(uid="U4", duration="0.5".translate(ARABIC))),  # 4: duration as a string
        json.dumps(_conn(uid="U5", orig_pkts="\u0663")),  # 5: a count as a string
        json.dumps(_conn(uid="U6", **{"id.resp_p": "5432".translate(ARABIC)})),  # 6: a port as a string
        json.dumps(_conn(uid="U7", ts="2026-01-02T03:00:00.25Z", duration="0.5")),  # 7: ASCII: read
    ]
    # The digits escaped ("\u0661": a backslash) or as UTF-8 on a flat line: SQL hands the batch to Python; on
    # lines with a nested id (not flat), the fast path reads the file and Python those lines one by one.
    variants = {"escaped": lines, "utf8": [json.dumps(json.loads(t), ensure_ascii=False) for t in lines],
                "nested": [*map(_nested, lines[:6]), lines[6]]}
    for name, text in variants.items():
        fast, python, plans = _json_cases(tmp_path, monkeypatch, text, f"digits-{name}.json")
        assert len(plans) == 1 and (plans[0] is None) == (name != "nested")  # the fast path was taken
        assert fast == python
        assert fast[0][:4] == (7, 1, 6, {})
        assert [(line, field) for line, field, _ in fast[0][4]] == [
            (1, "ts"), (2, "ts"), (3, "ts"), (4, "duration"), (5, "orig_pkts"), (6, "id.resp_p")]
