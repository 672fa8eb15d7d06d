"""Azure NSG (v1/v2) and VNet (v4) flow log reader, through the flow store: every sample, exact rows."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, Protocol, Workload, WorkloadKind
from microseg.sources.flows import FORMATS, SourceFile, azure, canonical_ip, detect

SAMPLES = Path("samples/flows/azure")
NSG = "nsg-v2-elastic-fixture.json"
VNET = "vnet-flowlog-v4-msdocs.json"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, bytes, packets, start, end, direction)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["direction"])
            for r in store.rows()}


def ingest(store: FlowStore, *paths: Path, bad_threshold: float = 0.01) -> IngestReport:
    report = store.ingest(list(paths), bad_threshold=bad_threshold)
    assert all(f.format == "azure" for f in report.files)
    return report


def ms(n: int) -> datetime:
    return utc(n / 1000)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def test_nsg_v2_fixture(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / NSG)
    assert (report.lines, report.records, report.skipped, report.bad) == (1, 1, {}, 0)
    # seconds since the epoch; an E tuple whose B is not in the batch still counts as one connection
    t = datetime(2018, 11, 13, 11, 59, 39)
    assert rows(store) == {("1.128.0.0", "1.128.0.1", 59932, 443, "TCP", "accept", 1, 132, 2, t, t, "egress")}
    assert {(r["is_reply"], r["tcp_flags"], r["src_workload"]) for r in store.rows()} == {(None, None, None)}


def test_vnet_v4_msdocs(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / VNET)
    # 19 tuples: 5 connections (B ... E, the E folded into its B), 9 denied attempts
    assert (report.lines, report.records, report.skipped, report.bad) == (19, 14, {"connection-update": 5}, 0)
    src = "10.0.0.6"

    def conn(dst: str, sport: int, begin: int, end: int, nbytes: int, packets: int) -> tuple[Any, ...]:
        return (src, dst, sport, 443, "TCP", "accept", 1, nbytes, packets, ms(begin), ms(end), "egress")

    def denied(peer: str, sport: int, dport: int, t: int) -> tuple[Any, ...]:
        return (peer, src, sport, dport, "TCP", "drop", 1, 0, 0, ms(t), ms(t), "ingress")

    assert rows(store) == {
        conn("52.239.184.180", 23956, 1663146003599, 1663146003606, 767 + 1580, 3 + 2),
        conn("40.74.146.17", 22730, 1663146003637, 1663146003640, 705 + 4569, 3 + 4),
        conn("40.74.146.17", 22732, 1663146004251, 1663146004251, 705 + 4569, 3 + 4),
        conn("40.74.146.17", 22734, 1663146004622, 1663146004622, 134 + 108, 2 + 1),
        conn("104.16.218.84", 36776, 1663146017343, 1663146022793, 2217 + 32466, 22 + 33),
        denied("101.33.218.153", 55188, 22, 1663145998065),
        denied("192.241.200.164", 35276, 119, 1663146005503),
        denied("20.106.221.10", 50557, 44357, 1663145989563),
        denied("20.55.117.81", 62797, 35945, 1663145989679),
        denied("20.55.113.5", 51961, 65515, 1663145989709),
        denied("13.65.224.51", 40497, 40129, 1663145990049),
        denied("20.55.117.81", 62797, 30472, 1663145990145),
        denied("20.55.113.5", 51961, 28184, 1663145990175),
        denied("20.106.221.10", 50557, 31244, 1663146015545),
    }


def test_every_sample_is_detected_and_no_other_reader_claims_them(shared: Path) -> None:
    folder = shared / "samples" / "flows"
    files = sorted(p for p in (folder / "azure").iterdir() if p.name != "README.txt")
    assert [p.name for p in files] == [NSG, VNET]
    assert {detect(p) for p in files} == {"azure"}
    for path in files:
        head = [line for line in path.read_text().splitlines() if line.strip()][:5]
        assert [name for name, reader in FORMATS.items() if reader.sniff(head)] == ["azure"]
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.parent.name != "azure" and path.name != "README.txt":
            try:
                assert detect(path) != "azure", path
            except InputError:
                pass


def test_mapping_end_to_end(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / VNET)
    inventory = Inventory(
        workloads=(Workload(name="vm1", kind=WorkloadKind.HOST),
                   Workload(name="external:storage", kind=WorkloadKind.EXTERNAL, addresses=("52.239.0.0/16",))),
        bindings=(AddressBinding(ip="10.0.0.6", workload="vm1"),),
    )
    edges = {(e.source, e.destination, e.protocol, e.port): (e.flows, e.denied_flows, e.bytes)
             for e in map_flows(store, inventory).edges}
    # one connection (B + E tuples) is one flow on the server's port
    assert edges[("vm1", "external:storage", Protocol.TCP, 443)] == (1, 0, 2347)
    assert edges[("vm1", "external:internet", Protocol.TCP, 443)] == (4, 0, 5274 + 5274 + 242 + 34683)
    # denied probes are kept as denied-only edges, never as accepted flows
    assert edges[("external:internet", "vm1", Protocol.TCP, 22)] == (0, 1, 0)
    assert all(flows == 0 for (src, *_), (flows, _, _) in edges.items() if src == "external:internet")


def nsg(tuples: list[str], version: int = 2, mac: str = "000D3AF87856") -> dict[str, Any]:
    return {"time": "2026-01-02T03:00:00Z", "category": "NetworkSecurityGroupFlowEvent",
            "properties": {"Version": version, "flows": [{"rule": "r", "flows": [{"mac": mac, "flowTuples": tuples}]}]}}


def vnet(tuples: list[str]) -> dict[str, Any]:
    return {"time": "2026-01-02T03:00:00Z", "flowLogVersion": 4, "macAddress": "00224871C205",
            "category": "FlowLogFlowEvent",
            "flowRecords": {"flows": [{"aclID": "a", "flowGroups": [{"rule": "r", "flowTuples": tuples}]}]}}


T = 1767322800  # 2026-01-02T03:00:00Z


def test_nsg_connection_tracking_per_nic_and_versions(store: FlowStore, tmp_path: Path) -> None:
    blob = {"records": [
        nsg([f"{T},10.0.0.1,10.0.0.2,40000,5432,T,O,A,B,,,,",
             f"{T + 60},10.0.0.1,10.0.0.2,40000,5432,T,O,A,C,10,1000,8,8000",
             f"{T + 120},10.0.0.1,10.0.0.2,40000,5432,T,O,A,E,2,100,1,50",
             f"{T + 5},10.0.0.1,10.0.0.2,40001,5432,U,O,D,B,,,,"]),  # denied: one record
        # the same connection at the receiving NIC: the same connection, counted once
        nsg([f"{T},10.0.0.1,10.0.0.2,40000,5432,T,I,A,B,,,,"], mac="000D3AF80000"),
        nsg([f"{T + 7},10.0.0.3,10.0.0.2,40002,22,T,I,D"], version=1),  # version 1: no state, no counters
    ]}
    path = tmp_path / "PT1H.json"
    path.write_text(json.dumps(blob, indent=2))
    report = ingest(store, path)
    assert (report.lines, report.records, report.skipped, report.bad) == (
        6, 3, {"connection-update": 2, "peer-nic-duplicate": 1}, 0)
    t = utc
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 40000, 5432, "TCP", "accept", 1, 9150, 21, t(T), t(T + 120), "egress"),
        ("10.0.0.1", "10.0.0.2", 40001, 5432, "UDP", "drop", 1, None, None, t(T + 5), t(T + 5), "egress"),
        ("10.0.0.3", "10.0.0.2", 40002, 22, "TCP", "drop", 1, None, None, t(T + 7), t(T + 7), "ingress"),
    }


def test_line_per_record_and_bad_tuples(store: FlowStore, tmp_path: Path) -> None:
    ms0 = T * 1000
    lines = [
        json.dumps(vnet([f"{ms0},10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",  # line 1
                         f"{ms0 + 500},10.0.0.1,10.0.0.2,40000,443,6,O,E,X,1,60,1,40"])),
        "{not json",  # 2
        json.dumps(vnet([f"{ms0},10.0.0.300,10.0.0.2,1,2,6,O,B,NX,0,0,0,0"])),  # 3
        json.dumps(vnet([f"{ms0},10.0.0.1,10.0.0.2,1,2,6,O,Q,NX,0,0,0,0"])),  # 4
        json.dumps(nsg([f"{T},10.0.0.1,10.0.0.2,1,70000,T,O,A,B,,,,"])),  # 5
        json.dumps(nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,X,A,B,,,,"])),  # 6
        json.dumps(nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A,E,1,-5,1,1"])),  # 7
        json.dumps(nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A"])),  # 8: a version 2 tuple cut short
        "",  # 9: blank
        json.dumps({"records": [{"category": "something else"}]}),  # 10
    ]
    path = tmp_path / "flows.json.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    assert detect(path) == "azure"
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.records, report.skipped, report.bad) == (1, {"connection-update": 1}, 8)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (2, "json"), (3, "src"), (4, "state"), (5, "dst_port"), (6, "direction"), (7, "bytes_s2d"),
        (8, "flowTuples"), (10, "properties")]
    assert rows(store) == {("10.0.0.1", "10.0.0.2", 40000, 443, "TCP", "accept", 1, 100, 2, ms(ms0), ms(ms0 + 500),
                            "egress")}


def test_bad_tuple_line_in_a_pretty_printed_blob(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "PT1H.json"
    path.write_text(json.dumps({"records": [vnet([f"{T * 1000},10.0.0.1,10.0.0.2,1,2,6,O,B,NX,0,0,0,0",
                                                  f"{T * 1000},10.0.0.1,10.0.0.2,1,2,300,O,B,NX,0,0,0,0"])]},
                               indent=1))
    report = ingest(store, path, bad_threshold=1.0)
    (bad,) = report.bad_samples
    assert path.read_text().splitlines()[bad.line - 1].strip().startswith(f'"{T * 1000},10.0.0.1,10.0.0.2,1,2,300')
    assert bad.field == "protocol"


def test_sniff() -> None:
    assert azure.sniff([json.dumps(nsg([]))])
    assert azure.sniff(["{", '"records": [', "{", '"time": "x",', '"flowLogVersion": 4,'])
    assert not azure.sniff([json.dumps({"flow": {"verdict": "FORWARDED"}})])
    assert not azure.sniff(["version account-id srcaddr dstaddr"])


def vnet_nic(mac: str, tuples: list[str]) -> dict[str, Any]:
    return {**vnet(tuples), "macAddress": mac}


def test_connection_seen_at_both_nics_counts_once(store: FlowStore, tmp_path: Path) -> None:
    m = T * 1000
    client = vnet_nic("00224871AAAA", [  # the client VM's NIC, 10.0.0.1
        f"{m},10.0.0.1,10.0.0.2,40000,5432,6,O,B,NX,0,0,0,0",
        f"{m + 30000},10.0.0.1,10.0.0.2,40000,5432,6,O,E,NX,5,500,4,4000",
        f"{m + 1000},10.0.0.1,10.0.0.2,40001,22,6,O,B,NX,0,0,0,0",  # let out, denied at the server
        f"{m},10.0.0.1,10.0.0.2,40002,80,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40003,80,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,52.1.2.3,40004,443,6,O,B,NX,0,0,0,0",  # to the internet: one end only
    ])
    server = vnet_nic("00224871BBBB", [  # the server VM's NIC, 10.0.0.2
        f"{m + 400},10.0.0.1,10.0.0.2,40000,5432,6,I,B,NX,0,0,0,0",  # 0.4 s later: the same connection
        f"{m + 30200},10.0.0.1,10.0.0.2,40000,5432,6,I,E,NX,5,500,4,4000",
        f"{m + 1200},10.0.0.1,10.0.0.2,40001,22,6,I,D,NX,0,0,0,0",
        f"{m + 60000},10.0.0.1,10.0.0.2,40002,80,6,I,B,NX,0,0,0,0",  # 60 s: still the same
        f"{m + 60001},10.0.0.1,10.0.0.2,40003,80,6,I,B,NX,0,0,0,0",  # 60.001 s: another connection
        f"{m},198.51.100.7,10.0.0.2,50000,443,6,I,B,NX,0,0,0,0",  # from the internet: one end only
    ])
    # The two NICs' records in two blobs (two hours of one VNet, or two NSGs): found across files.
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"records": [client]}))
    b.write_text(json.dumps({"records": [server]}))
    report = ingest(store, a, b)
    assert (report.lines, report.records, report.bad) == (12, 7, 0)
    assert report.skipped == {"connection-update": 2, "peer-nic-duplicate": 3}
    assert [(Path(f.path).name, f.lines, f.records, f.skipped) for f in report.files] == [
        ("a.json", 6, 5, 1), ("b.json", 6, 2, 4)]
    src, dst = "10.0.0.1", "10.0.0.2"
    assert rows(store) == {
        (src, dst, 40000, 5432, "TCP", "accept", 1, 4500, 9, ms(m), ms(m + 30000), "egress"),
        (src, dst, 40001, 22, "TCP", "drop", 1, 0, 0, ms(m + 1000), ms(m + 1000), "egress"),
        (src, dst, None, 80, "TCP", "accept", 2, 0, 0, ms(m), ms(m), "egress"),  # 40002 and 40003, folded
        (src, dst, 40003, 80, "TCP", "accept", 1, 0, 0, ms(m + 60001), ms(m + 60001), "ingress"),
        (src, "52.1.2.3", 40004, 443, "TCP", "accept", 1, 0, 0, ms(m), ms(m), "egress"),
        ("198.51.100.7", dst, 50000, 443, "TCP", "accept", 1, 0, 0, ms(m), ms(m), "ingress"),
    }
    inventory = Inventory(workloads=(Workload(name="vm-a", kind=WorkloadKind.HOST),
                                     Workload(name="vm-b", kind=WorkloadKind.HOST)),
                          bindings=(AddressBinding(ip=src, workload="vm-a"), AddressBinding(ip=dst, workload="vm-b")))
    edges = {(e.source, e.destination, e.port): (e.flows, e.denied_flows) for e in map_flows(store, inventory).edges
             if e.source == "vm-a" and e.destination == "vm-b"}
    assert edges == {("vm-a", "vm-b", 5432): (1, 0), ("vm-a", "vm-b", 22): (0, 1), ("vm-a", "vm-b", 80): (3, 0)}


# -- streaming -----------------------------------------------------------------------------------------


def vnet_blob(n: int, mac: str = "00224871C205") -> str:
    """A pretty-printed VNet blob of ``n`` denied tuples (one record each), 100 tuples a record."""
    m = T * 1000
    tuples = [f"{m + i},198.51.100.{i % 200 + 1},10.0.0.2,{1024 + i % 60000},22,6,I,D,NX,0,0,0,0" for i in range(n)]
    records = [vnet_nic(mac, tuples[i:i + 100]) for i in range(0, n, 100)]
    return json.dumps({"records": records}, indent=2)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_read_in_chunks_of_any_size(store: FlowStore, shared: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    # Every refill path of the incremental parser (a chunk ends inside a string, a number, a
    # literal, between records): the sample's counts stay those of test_vnet_v4_msdocs.
    monkeypatch.setattr(azure, "_CHUNK_CHARS", chunk)
    report = ingest(store, shared / SAMPLES / VNET)
    assert (report.lines, report.records, report.skipped, report.bad) == (19, 14, {"connection-update": 5}, 0)
    assert len(rows(store)) == 14


def test_a_cut_blob_keeps_the_records_before_the_cut(store: FlowStore, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azure, "_CHUNK_CHARS", 64)
    text = vnet_blob(300)  # three records of 100 tuples
    lines = text.splitlines()
    third = max(i for i, ln in enumerate(lines) if ln == "    {")  # the third record's first line
    path = tmp_path / "PT1H.json"
    path.write_text("\n".join(lines[:third + 20]) + "\n")  # cut inside the third record
    report = ingest(store, path, bad_threshold=1.0)
    # the two whole records are read; each of the 20 lines of the cut one is a line that could not be read
    assert (report.records, report.bad) == (200, 20)
    assert [(b.line, b.field) for b in report.bad_samples] == [(third + 1 + i, "json") for i in range(20)]


def test_a_record_over_the_limit_is_refused(store: FlowStore, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azure, "MAX_RECORD_CHARS", 5000)
    monkeypatch.setattr(azure, "_CHUNK_CHARS", 1000)
    path = tmp_path / "PT1H.json"
    path.write_text(vnet_blob(300))  # records of about 9,000 characters
    with pytest.raises(InputError, match="longer than 5000 characters") as err:
        store.ingest([path])
    assert (err.value.file, err.value.line, err.value.field) == (str(path.resolve()), 3, "records")
    assert store.rows() == []


def test_text_after_a_value_on_a_json_lines_line(store: FlowStore, tmp_path: Path) -> None:
    good = json.dumps(vnet([f"{T * 1000},10.0.0.1,10.0.0.2,40000,443,6,O,D,NX,0,0,0,0"]))
    path = tmp_path / "export.json"
    path.write_text("\n".join(["{broken", good + " trailing", good, good]) + "\n")
    report = ingest(store, path, bad_threshold=1.0)
    assert [(b.line, b.field) for b in report.bad_samples] == [(1, "json"), (2, "json")]
    assert (report.records, report.bad) == (2, 2)


# -- the DuckDB fast path gives the Python reader's result, tuple for tuple -------------------------------


def outcome(store: FlowStore, paths: list[Path]) -> tuple[Any, ...]:
    report = store.ingest(paths, fmt="azure", bad_threshold=1.0)
    return (report.lines, report.records, report.skipped, report.bad,
            [(Path(b.file).name, b.line, b.field, b.message, b.text) for b in report.bad_samples],
            [(Path(f.path).name, f.lines, f.records, f.skipped, f.bad) for f in report.files],
            sorted(map(repr, store.rows())))


def spy_fast_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names of the files the DuckDB fast path reads from now on (the set fills as ingests run)."""
    read: set[str] = set()
    fast_path = azure._fast_path

    def spy(con: Any, files: Any, options: Any) -> Any:
        got = fast_path(con, files, options)
        read.update(files[i].path.name for i in got.read)
        return got

    monkeypatch.setattr(azure, "_fast_path", spy)
    return read


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[Path]) -> tuple[tuple[Any, ...], set[str]]:
    """The outcome of ``paths`` with the fast path, asserted equal to the Python reader's alone, and the
    names of the files the fast path read."""
    read = spy_fast_reads(monkeypatch)
    with FlowStore(tmp_path / "fast" / "flows.duckdb") as s:
        fast = outcome(s, paths)
    monkeypatch.setattr(azure, "_prescan", lambda src, options: None)
    with FlowStore(tmp_path / "python" / "flows.duckdb") as s:
        python = outcome(s, paths)
    assert fast == python
    return fast, read


def blob(path: Path, records: list[Any], **kw: Any) -> Path:
    path.write_text(json.dumps({"records": records}, ensure_ascii=False, **kw), encoding="utf-8")
    return path


def test_fast_path_reads_regular_blobs_as_python_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      shared: Path) -> None:
    m = T * 1000
    client = vnet_nic("00224871AAAA", [
        f"{m},10.0.0.1,10.0.0.2,40000,5432,6,O,B,NX,0,0,0,0",
        f"{m + 30000},10.0.0.1,10.0.0.2,40000,5432,6,O,C,NX,5,500,4,4000",
        f"{m + 60000},10.0.0.1,10.0.0.2,40000,5432,6,O,E,X,1,10,1,20",
        f"{m + 70000},10.0.0.1,10.0.0.2,40000,5432,6,O,C,NX,1,1,1,1",  # after an E: a new connection
        f"{m + 1000},10.0.0.1,10.0.0.2,40001,22,6,O,B,NX_UNSUPPORTED,0,0,0,0",
        f"{m + 2000},10.0.0.1,10.0.0.2,040002,0080,006,O,D,NX,0,0,0,0"])  # leading zeros: still numbers
    server = vnet_nic("00224871BBBB", [
        f"{m + 400},10.0.0.1,10.0.0.2,40000,5432,6,I,B,NX,0,0,0,0",
        f"{m + 1200},10.0.0.1,10.0.0.2,40001,22,6,I,D,NX,0,0,0,0"])
    nsg_records = [
        nsg([f"{T},10.0.0.1,10.0.0.2,40000,5432,T,O,A,B,,,,",
             f"{T + 60},10.0.0.1,10.0.0.2,40000,5432,T,O,A,E,2,100,1,50",
             f"{T + 5},10.0.0.1,10.0.0.2,40001,53,U,O,D,B,,,,"]),
        nsg([f"{T},10.0.0.1,10.0.0.2,40000,5432,T,I,A,B,,,,"], mac="000D3AF80000"),
        nsg([f"{T + 7},10.0.0.3,10.0.0.2,40002,22,T,I,D"], version=1),
        nsg([f"{T + 8},10.0.0.3,10.0.0.2,40003,22,T,I,A"], version=1, mac=""),
        {**nsg([f"{T + 9},10.0.0.4,10.0.0.2,40004,22,T,I,A,B,,,,"]), "extra": {"k": [1, None, True, "é"]}},
    ]
    nsg_records[3]["properties"]["flows"][0]["flows"][0]["mac"] = None
    files = [blob(tmp_path / "vnet.json", [client, server], indent=2),
             blob(tmp_path / "nsg.json", nsg_records),
             tmp_path / "msdocs.json"]
    files[2].write_bytes((shared / SAMPLES / VNET).read_bytes())
    gz = tmp_path / "nsg2.json.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"records": nsg_records[:2]}, separators=(",\r\n", ": ")))  # CRLF between values
    files.append(gz)
    (lines, records, skipped, bad, *_), read = both_paths(tmp_path, monkeypatch, files)
    assert read == {"vnet.json", "nsg.json", "msdocs.json", "nsg2.json.gz"}
    assert (lines, bad) == (8 + 7 + 19 + 4, 0)
    assert skipped == {"connection-update": 2 + 1 + 1 + 5, "peer-nic-duplicate": 2 + 1 + 1}


def test_fast_path_bad_tuples_are_counted_and_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = T * 1000
    good4 = f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0"
    bad4 = [
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0",  # 12 fields
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0,",  # 14
        f"{m},10.0.0.01,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",  # a leading zero in an address
        f"{m},256.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,host,40000,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,65536,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2, 4000,443,6,O,B,NX,0,0,0,0",  # int() would take " 4000"
        f"{m},10.0.0.1,10.0.0.2,+4000,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,4_000,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,\u0664\u0660,443,6,O,B,NX,0,0,0,0",  # Arabic-Indic digits: isdigit(), not ASCII
        f"{m},10.0.0.1,10.0.0.2,40000,443,256,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,T,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,X,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,A,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,b,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,E,NX,1,,1,1",  # counters partly empty
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,E,NX,1,-1,1,1",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,E,NX,1,18446744073709551616,1,1",  # > UINT64
        "18446744073709552,10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",  # ms past UINT64 us
        "99999999999999999999999,10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",
        f"{m}.5,10.0.0.1,10.0.0.2,40000,443,6,O,B,NX,0,0,0,0",
        f"{m},10.0.0.1,10.0.0.2,40000,443,6,O,B,NXé,0,0,0,0é",
        "", ",,,,,,,,,,,,", "NaN",
    ]
    bad2 = [f"{T},10.0.0.1,10.0.0.2,1,2,6,O,A,B,,,,", f"{T},10.0.0.1,10.0.0.2,1,2,T,O,X,B,,,,",
            f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,Q,,,,", f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A",
            f"{T * 1000000},10.0.0.1,10.0.0.2,1,2,T,O,A,B,,,,", "18446744073710,10.0.0.1,10.0.0.2,1,2,T,O,A,B,,,,"]
    bad1 = [f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A,B,,,,", f"{T},10.0.0.1,10.0.0.2,1,2,T,O,Q"]
    vnet_blob_ = blob(tmp_path / "vnet.json", [vnet([good4, *bad4, 5, None, True, 1.5, {"a": good4}, [good4]])],
                      indent=1)
    nsg_blob = blob(tmp_path / "nsg.json", [nsg(bad2), nsg(bad1, version=1)], indent=1)
    (lines, records_n, _, bad, samples, *_), read = both_paths(tmp_path, monkeypatch, [vnet_blob_, nsg_blob])
    assert read == {"vnet.json", "nsg.json"}
    # every tuple a line; one good tuple (VNet), and two of the NSG tuples are read but their times lie
    # past 9999: the store counts those bad, without a sample
    assert (lines, records_n) == (1 + len(bad4) + 6 + len(bad2) + len(bad1), 1)
    assert bad == lines - 1
    assert len(samples) == 20  # max_samples: the first 20 of the VNet blob, each at its own line
    vnet_lines = vnet_blob_.read_text().splitlines()
    assert {s[4] for s in samples} <= set(bad4)
    for name, line, _field, _message, sample in samples:
        assert name == "vnet.json"
        if sample.isascii():  # (the Python reader looks for a tuple's text JSON-escaped)
            assert vnet_lines[line - 1].strip().rstrip(",") == json.dumps(sample)
    assert [s[2] for s in samples[:6]] == ["flowTuples", "flowTuples", "src", "src", "dst", "src_port"]


@pytest.mark.parametrize("name, text, fast", [
    ("escape", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}).replace(
        "10.0.0.1", "10.0.0.\\u0031"), False),
    ("trailing-comma", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})[:-2]
     + ",]}", False),
    ("trailing-comma-in-tuples", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})
     .replace('0,0,0"]', '0,0,0", ]'), False),
    ("version-nan", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"Version": 2', '"Version": NaN'), False),
    ("version-string", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"Version": 2', '"Version": "2"'), False),
    ("version-float", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"Version": 2', '"Version": 2.0'), False),
    ("version-true", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"Version": 2', '"Version": true'), False),
    ("version-missing", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D"])]}).replace(
        '"Version": 2, ', ""), False),
    ("version-3", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D"], version=3)]}), False),
    ("repeated-key", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"Version": 2', '"Version": 2, "Version": 1'), False),
    ("mac-number", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A,B,,,,"], mac=7)]}), False),  # type: ignore[arg-type]
    ("null-flowlogversion", json.dumps({"records": [{**nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,A,B,,,,"]),
                                                     "flowLogVersion": None}]}), False),
    ("flows-null", json.dumps({"records": [{**vnet([]), "flowRecords": {"flows": None}}]}), False),
    ("group-no-list", json.dumps({"records": [{**vnet([]), "flowRecords": {"flows": [{"flowGroups": "x"}]}}]}), False),
    ("record-number", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"]), 5]}), False),
    ("records-null", '{"records": null}', False),
    ("top-level-array", json.dumps([{"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}]), False),
    ("two-documents", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,B,NX,0,0,0,0"])]}) + "\n"
     + json.dumps({"records": [vnet([f"{T}001,10.0.0.1,10.0.0.2,1,2,6,O,E,NX,1,1,1,1"])]}), False),
    ("json-lines", json.dumps(vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])), False),
    ("records-not-first", json.dumps({"x": 1, "records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}),
     False),
    ("records-repeated", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])],
                                     "x": [1, {"y": "]}"}]})[:-1] + ', "records": []}', False),
    ("a-member-after-records", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])],
                                           "x": [1, {"y": "]}"}]}), True),
    ("comment", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})[:-1] + "/* c */}",
     False),
    ("control-character", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})
     .replace('"r"', '"r\tule"'), False),
    ("bom", "\ufeff" + json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}), False),
    ("ipv6", json.dumps({"records": [vnet([f"{T}000,2001:DB8::1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0",
                                          f"{T}001,2001:db8:0::1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}), True),
    ("counter-sum-overflow", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,"
                                                          "18446744073709551615,0,1,0"])]}), False),
    ("non-ascii-rule", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]},
                                  ensure_ascii=False).replace('"r"', '"règle"'), True),
    ("blank-lines-crlf", "\r\n\r\n" + json.dumps(
        {"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]}, indent=1).replace("\n", "\r\n")
     + "\r\n\r\n", True),
    ("empty", "", False),
    # json_transform_strict refuses a record that lacks a member of its kind: the Python reader reads it
    ("vnet-no-mac", json.dumps({"records": [{k: v for k, v in vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])
                                             .items() if k != "macAddress"}]}), False),
    ("vnet-group-no-tuples", json.dumps({"records": [{**vnet([]), "flowRecords": {"flows": [{"flowGroups": [
        {"rule": "r"}]}]}}]}), False),
    ("vnet-flow-no-groups", json.dumps({"records": [{**vnet([]), "flowRecords": {"flows": [{"aclID": "a"}]}}]}), False),
    ("vnet-no-flowrecords", json.dumps({"records": [{k: v for k, v in vnet([]).items() if k != "flowRecords"}]}),
     False),
    ("nsg-no-mac", json.dumps({"records": [nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}).replace(
        '"mac": "000D3AF87856", ', ""), False),
    ("nsg-no-properties", json.dumps({"records": [{"category": "NetworkSecurityGroupFlowEvent"}]}), False),
    ("nsg-in-a-vnet-file", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"]),
                                                   nsg([f"{T},10.0.0.1,10.0.0.2,1,2,T,O,D,B,,,,"])]}), False),
    ("vnet-mac-null", json.dumps({"records": [{**vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"]),
                                               "macAddress": None}]}), True),
    ("vnet-mac-object", json.dumps({"records": [{**vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"]),
                                                 "macAddress": {"a": 1}}]}), False),
    ("vnet-tuples-object", json.dumps({"records": [{**vnet([]), "flowRecords": {"flows": [{"flowGroups": [
        {"flowTuples": {"a": 1}}]}]}}]}), False),
    ("vnet-flowrecords-list", json.dumps({"records": [{**vnet([]), "flowRecords": [1]}]}), False),
    ("vnet-repeated-nested-key", json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})
     .replace('"rule": "r", ', '"flowTuples": [], '), False),
])
def test_fast_path_or_python_same_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str,
                                          fast: bool) -> None:
    path = tmp_path / f"{name}.json"
    path.write_bytes(text.encode())
    if name == "counter-sum-overflow":  # the staging file cannot hold the sum: an error either way
        with pytest.raises(InputError):
            both_paths(tmp_path, monkeypatch, [path])
        return
    _, read = both_paths(tmp_path, monkeypatch, [path])
    assert read == ({path.name} if fast else set())


def test_fast_path_invalid_utf8_and_truncated_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = json.dumps({"records": [vnet([f"{T}000,10.0.0.1,10.0.0.2,1,2,6,O,D,NX,0,0,0,0"])]})
    bad_utf8 = tmp_path / "utf8.json"
    bad_utf8.write_bytes(good.replace('"r"', '"r\xff"').encode("latin-1"))
    ok = tmp_path / "ok.json"
    ok.write_text(good)
    _, read = both_paths(tmp_path, monkeypatch, [bad_utf8, ok])
    assert read == {"ok.json"}  # the other file of the batch is still read by DuckDB
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(good.encode())[:-12])
    for sub in ("fast", "python"):
        if sub == "python":
            monkeypatch.setattr(azure, "_prescan", lambda src, options: None)
        with FlowStore(tmp_path / f"cut-{sub}" / "flows.duckdb") as s, pytest.raises(InputError, match="cannot read"):
            s.ingest([cut], fmt="azure")


def test_fast_path_proves_no_record_is_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azure, "MAX_RECORD_CHARS", 20_000)
    m = T * 1000
    tuples = [f"{m + i},198.51.100.{i % 200 + 1},10.0.0.2,{1024 + i},22,6,I,D,NX,0,0,0,0" for i in range(600)]
    small = blob(tmp_path / "small.json", [vnet_nic("00224871C205", tuples[i:i + 20]) for i in range(0, 600, 20)])
    assert small.stat().st_size > 20_000  # larger than the limit: only the proof lets DuckDB read it
    (lines, records, *_), read = both_paths(tmp_path, monkeypatch, [small])
    assert read == {"small.json"}
    assert (lines, records) == (600, 600)
    monkeypatch.setattr(azure, "_CHUNK_CHARS", 1000)  # the streaming reader holds little: it refuses
    big = blob(tmp_path / "big.json", [vnet_nic("00224871C205", tuples[:20]), vnet_nic("00224871C205", tuples)])
    with FlowStore(tmp_path / "big" / "flows.duckdb") as s, pytest.raises(InputError, match="longer than 20000"):
        s.ingest([big], fmt="azure")


# -- pieces, IPv6, locating bad tuples, cleaning up ------------------------------------------------------


def _records_one_per_line(path: Path, records: list[Any], sep: str = ",\n", head: str = '{"records":[\n',
                          end: str = "\n]}\n") -> Path:
    path.write_text(head + sep.join(json.dumps(r, separators=(",", ":")) for r in records) + end, encoding="utf-8")
    return path


def _many_records(n: int, v6: bool = False) -> list[dict[str, Any]]:
    m = T * 1000
    out = []
    for i in range(n):
        a = f"2001:DB8::{i % 7:x}" if v6 and i % 2 else f"10.0.{i % 7}.1"
        out.append(vnet_nic(f"00224871{i % 3:04X}", [
            f"{m + i},{a},10.0.0.2,{40000 + i % 11},443,6,O,B,NX,0,0,0,0",
            f"{m + i + 5},10.0.0.2,{a},443,{40000 + i % 11},6,I,D,NX,0,0,0,0",
            f"{m + i + 9},{a},10.0.0.2,{40000 + i % 11},443,6,O,E,NX,1,{i},2,{2 * i}"]))
    return out


@pytest.mark.parametrize("name, sep, head, end, fast", [
    ("one-per-line", ",\n", '{"records":[\n', "\n]}\n", True),
    ("comma-first", "\r\n,", '{"records":[', "]}", True),  # a line starting with ",{"
    ("crlf", ",\r\n", '{ "records" : [\r\n', "\r\n] }\r\n\r\n", True),
    ("one-line", ",", '{"records":[', "]}", True),  # no cut: one document
    ("member-after-records", ",\n", '{"records":[\n', '\n],"x":1}\n', False),  # pieces must end the array
    ("second-document", ",\n", '{"records":[\n', '\n]}\n{"records":[]}\n', False),
])
def test_fast_path_pieces_read_as_python_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, sep: str,
                                              head: str, end: str, fast: bool) -> None:
    monkeypatch.setattr(azure, "_PIECE_BYTES", 700)  # a few records a piece
    path = _records_one_per_line(tmp_path / f"{name}.json", _many_records(40), sep, head, end)
    (lines, records, _, bad, *_), read = both_paths(tmp_path, monkeypatch, [path])
    assert read == ({path.name} if fast else set())
    assert (lines, bad) == (120, 0) if fast else lines >= 120
    assert not list(tmp_path.rglob("microseg-*"))  # no piece, staging or Parquet file is left


def test_fast_path_a_cut_inside_a_record_sends_the_file_to_python(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azure, "_PIECE_BYTES", 100)
    # indent=0: every "}, {" of the records' inside is at a line start too, so some cuts fall inside records
    records = _many_records(12)
    for r in records:  # two rule groups a record: "},{" between them
        groups = r["flowRecords"]["flows"][0]["flowGroups"]
        groups.append({"rule": "r2", "flowTuples": groups[0]["flowTuples"][1:]})
        groups[0]["flowTuples"] = groups[0]["flowTuples"][:1]
    path = blob(tmp_path / "indent0.json", records, indent=0)
    cuts = azure._prescan(SourceFile(path, False), azure.ReaderOptions(tmp_dir=tmp_path))
    assert cuts is not None and cuts.pieces is not None and len(cuts.pieces) > 2

    def parses(piece: Path) -> bool:
        try:
            json.loads(piece.read_bytes())
        except ValueError:
            return False
        return True

    assert not all(parses(piece) for piece, _ in cuts.pieces)  # some cut is inside a record
    azure._remove_pieces(cuts.pieces)
    (lines, _, _, bad, *_), read = both_paths(tmp_path, monkeypatch, [path])
    assert read == set() and (lines, bad) == (36, 0)


def test_fast_path_pieces_gzip_bad_tuples_and_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azure, "_PIECE_BYTES", 500)
    records = _many_records(30)
    m = T * 1000
    for i in (4, 17, 29):  # bad tuples in records of different pieces
        records[i]["flowRecords"]["flows"][0]["flowGroups"][0]["flowTuples"].insert(
            1, f"{m},10.0.0.1,10.0.0.2,1,2,{256 + i},O,B,NX,0,0,0,0")
    plain = _records_one_per_line(tmp_path / "bad.json", records)
    gz = tmp_path / "bad.json.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    (lines, _, _, bad, samples, *_), read = both_paths(tmp_path, monkeypatch, [plain, gz])
    assert read == {"bad.json", "bad.json.gz"}
    assert (lines, bad) == (2 * 93, 6)
    assert [(s[0], s[1], s[2]) for s in samples] == [(n, line, "protocol") for n in ("bad.json", "bad.json.gz")
                                                     for line in (6, 19, 31)]


def test_fast_path_locates_bad_tuples_from_their_records_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    records = _many_records(50)
    m = T * 1000
    records[30]["flowRecords"]["flows"][0]["flowGroups"][0]["flowTuples"].append(f"{m},10.0.0.1,host,1,2,6,O,B,NX,,,,")
    path = _records_one_per_line(tmp_path / "PT1H.json", records)
    calls: list[str] = []
    parse = azure.parse_tuple

    def spy(text: str, version: int) -> Any:
        calls.append(text)
        return parse(text, version)

    monkeypatch.setattr(azure, "parse_tuple", spy)
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path], fmt="azure", bad_threshold=1.0)
    assert [(b.line, b.field) for b in report.bad_samples] == [(32, "dst")]
    assert len(calls) == 4  # the tuples of the one record that holds a bad one, not the file's 151
    calls.clear()
    (_, _, _, bad, samples, *_), read = both_paths(tmp_path, monkeypatch, [path])
    assert read == {"PT1H.json"} and bad == 1 and len(calls) > 151


IPV6_SPELLINGS = ["2001:DB8::1", "2001:db8:0::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:10.0.0.1",
                  "::FFFF:a00:1", "fe80::1%eth0", "fe80::1%1", "::", "::1", "1::", "2001:db8::1:0:0:1",
                  "1:2:3:4:5:6:7:8",
                  # bad ones
                  "2001:db8::g", "1:2:3:4:5:6:7:8:9", ":::", "2001:db8:::1", "fe80::1%", "10.0.0.1:80",
                  "::ffff:10.0.0.01", "1::2::3", "12345::1", "::ffff:256.0.0.1", "2001:db8::1/64"]


def test_fast_path_ipv6_spellings_are_canonical_as_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = T * 1000
    tuples = []
    for i, a in enumerate(IPV6_SPELLINGS):
        tuples += [f"{m + i},{a},10.0.0.2,{40000 + i},443,6,O,B,NX,0,0,0,0",
                   f"{m + i + 1},10.0.0.2,{a},443,{40000 + i},6,I,D,NX,0,0,0,0"]
    # one connection, its B and E written in two spellings; and both ends of another, in two spellings
    tuples += [f"{m},2001:DB8::5,10.0.0.2,50000,443,6,O,B,NX,0,0,0,0",
               f"{m + 9},2001:db8:0:0::5,10.0.0.2,50000,443,6,O,E,NX,1,10,1,20"]
    server = [f"{m + 3},2001:0DB8::5,10.0.0.2,50000,443,6,I,B,NX,0,0,0,0"]
    nsg_tuples = [f"{T},{a},{b},1,2,T,O,A,B,,,," for a, b in zip(IPV6_SPELLINGS, reversed(IPV6_SPELLINGS), strict=True)]
    path = blob(tmp_path / "v6.json", [vnet_nic("00224871AAAA", tuples), vnet_nic("00224871BBBB", server)])
    nsg_path = blob(tmp_path / "nsg6.json", [nsg(nsg_tuples)])
    (lines, records, skipped, bad, samples, *_), read = both_paths(tmp_path, monkeypatch, [path, nsg_path])
    assert read == {"v6.json", "nsg6.json"}
    assert skipped == {"connection-update": 1, "peer-nic-duplicate": 1}
    # 11 spellings are no address: 2 VNet tuples each, and 22 of the 23 NSG pairs (zone ids such as
    # fe80::1%eth0 are addresses, for the reader and the store alike: canonical_ip)
    assert bad == 2 * 11 + 22 and {s[2] for s in samples} == {"src", "dst"}
    with FlowStore(tmp_path / "again" / "flows.duckdb") as s:
        s.ingest([path], fmt="azure", bad_threshold=1.0)
        addresses = {r["src_ip"] for r in s.rows()} | {r["dst_ip"] for r in s.rows()}
    assert {"2001:db8::1", "::ffff:10.0.0.1", "2001:db8::5", "1::", "::", "fe80::1%eth0", "fe80::1%1"} <= addresses
    assert all(canonical_ip(a) == a for a in addresses)


def test_side_connection_closed_when_the_store_fails_after_staging(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _records_one_per_line(tmp_path / "PT1H.json", _many_records(10))
    opened: list[Any] = []
    connect = duckdb.connect

    def spy(*args: Any, **kwargs: Any) -> Any:
        con = connect(*args, **kwargs)
        opened.append(con)
        return con

    monkeypatch.setattr(azure.duckdb, "connect", spy)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("interrupted before the scan")

    monkeypatch.setattr(FlowStore, "_scan", fail)
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        side = [c for c in opened]
        with pytest.raises(RuntimeError, match="interrupted"):
            s.ingest([path], fmt="azure")
        side = [c for c in opened if c not in side]
        assert len(side) == 1  # the fast path's own connection ...
        with pytest.raises(duckdb.ConnectionException):
            side[0].execute("SELECT 1")  # ... is closed
    assert not list(tmp_path.rglob("microseg-*"))


def test_fast_path_connections_across_files_and_repeated_5_tuples(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    m = T * 1000
    a = "10.0.0.1,10.0.0.2,40000,443,6,O"
    first = blob(tmp_path / "a.json", [vnet_nic("00224871AAAA", [
        f"{m},{a},B,NX,0,0,0,0", f"{m + 10},{a},C,NX,1,1,1,1",  # continued in the next file
        f"{m + 1},10.0.0.1,10.0.0.3,1,2,6,O,C,NX,1,1,1,1",  # began before the batch: C, E, then a new B
        f"{m + 2},10.0.0.1,10.0.0.3,1,2,6,O,E,NX,1,1,1,1", f"{m + 3},10.0.0.1,10.0.0.3,1,2,6,O,B,NX,0,0,0,0",
        f"{m + 4},10.0.0.1,10.0.0.4,1,2,6,O,B,NX,0,0,0,0", f"{m + 5},10.0.0.1,10.0.0.4,1,2,6,O,B,NX,0,0,0,0",
        f"{m + 6},10.0.0.1,10.0.0.5,1,2,6,O,E,NX,1,1,1,1", f"{m + 7},10.0.0.1,10.0.0.5,1,2,6,O,E,NX,1,1,1,1",
        f"{m + 8},10.0.0.1,10.0.0.6,1,2,6,O,C,NX,1,1,1,1", f"{m + 9},10.0.0.1,10.0.0.6,1,2,6,O,C,NX,2,2,2,2"])])
    second = blob(tmp_path / "b.json", [vnet_nic("00224871AAAA", [f"{m + 60000},{a},E,NX,5,50,5,500"])])
    (lines, records, skipped, bad, *_), read = both_paths(tmp_path, monkeypatch, [first, second])
    assert read == {"a.json", "b.json"}
    assert (lines, records, bad) == (12, 8, 0)
    assert skipped == {"connection-update": 4}


@pytest.mark.parametrize("v6", [False, True])
def test_fast_path_large_input_staged_through_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      v6: bool) -> None:
    monkeypatch.setattr(azure, "FAST_MAX_BYTES", 4000)  # "large": the judged tuples go to Parquet files
    monkeypatch.setattr(azure, "_PIECED_MAX_BYTES", 4000)  # as if big.json were over the limit for pieces
    monkeypatch.setattr(azure, "_PIECE_BYTES", 500)
    records = _many_records(40, v6=v6)
    records[21]["flowRecords"]["flows"][0]["flowGroups"][0]["flowTuples"].append(
        f"{T * 1000},2001:db8::zz,10.0.0.2,1,2,6,O,B,NX,0,0,0,0")
    paths = [_records_one_per_line(tmp_path / f"{name}.json", records[i:i + 8]) for i, name in
             zip(range(0, 40, 8), "abcde", strict=True)]
    assert all(p.stat().st_size < 4000 for p in paths) and sum(p.stat().st_size for p in paths) > 4000
    big = _records_one_per_line(tmp_path / "big.json", records)  # over _PIECED_MAX_BYTES: Python
    (lines, _, skipped, bad, samples, *_), read = both_paths(tmp_path, monkeypatch, [*paths, big])
    assert read == {p.name for p in paths}
    assert (lines, bad) == (2 * (3 * 40 + 1), 2)
    assert [(s[0], s[1], s[2]) for s in samples] == [("c.json", 7, "src"), ("big.json", 23, "src")]
    assert skipped["connection-update"] > 0
    assert not list(tmp_path.rglob("microseg-*"))


def test_fast_path_both_kinds_in_one_ingest_and_member_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NSG and VNet blobs (plain, gzip, cut into pieces) are read in batches of one record type each; members
    # in any order, unknown members of any type
    monkeypatch.setattr(azure, "_PIECE_BYTES", 600)
    m = T * 1000
    v = [vnet_nic(f"00224871{i:04X}", [f"{m + i},10.0.0.{i % 5 + 1},10.0.0.9,{40000 + i},443,6,O,B,NX,0,0,0,0",
                                       f"{m + i + 9},10.0.0.{i % 5 + 1},10.0.0.9,{40000 + i},443,6,O,E,NX,1,2,3,4"])
         for i in range(12)]
    v[3] = dict(reversed(list(v[3].items())))
    n = [nsg([f"{T + i},10.0.0.{i % 5 + 1},10.0.0.9,{40000 + i},443,T,I,A,B,,,,",
              f"{T + i + 30},10.0.0.{i % 5 + 1},10.0.0.9,{40000 + i},443,T,I,A,E,1,2,3,4"]) for i in range(12)]
    n[4]["properties"] = {"flows": n[4]["properties"]["flows"], "x": [{"y": None}], "Version": 2}
    files = [_records_one_per_line(tmp_path / "v.json", v), _records_one_per_line(tmp_path / "n.json", n),
             blob(tmp_path / "v-small.json", v[:2]), blob(tmp_path / "n-small.json", n[:2])]
    for name, records in (("v.json.gz", v[:3]), ("n.json.gz", n[:3])):
        with gzip.open(tmp_path / name, "wt") as fh:
            fh.write(json.dumps({"records": records}))
        files.append(tmp_path / name)
    (lines, records_n, skipped, bad, *_), read = both_paths(tmp_path, monkeypatch, files)
    assert read == {f.name for f in files}
    assert (lines, bad) == (2 * 2 * (12 + 2 + 3), 0)
    assert skipped["connection-update"] == 2 * (12 + 2 + 3)
    assert skipped["peer-nic-duplicate"] > 0  # the VNet egress and NSG ingress of the same 5-tuples


def test_fast_path_both_ends_rule_and_skips_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 5-tuples seen in one direction only (never sorted), at both ends within and past the window, a tie,
    # an ingress denial turning the egress record into a drop; connection updates counted in their files
    m = T * 1000
    k = "10.0.0.1,10.0.0.2,{},443,6"
    client = [f"{m},{k.format(1)},O,B,NX,0,0,0,0", f"{m + 5},{k.format(1)},O,E,NX,1,1,1,1",  # both ends
              f"{m},{k.format(2)},O,B,NX,0,0,0,0",  # egress only
              f"{m},{k.format(3)},O,B,NX,0,0,0,0",  # both ends, the ingress 61 s later: not a duplicate
              f"{m},{k.format(4)},O,B,NX,0,0,0,0",  # the server denies it
              f"{m},{k.format(5)},O,B,NX,0,0,0,0",  # a tie: same start at both ends
              f"{m + 100},{k.format(6)},O,C,NX,1,1,1,1", f"{m + 200},{k.format(6)},O,C,NX,1,1,1,1"]
    server = [f"{m + 400},{k.format(1)},I,B,NX,0,0,0,0", f"{m + 900},{k.format(1)},I,C,NX,2,2,2,2",
              f"{m + 61001},{k.format(3)},I,B,NX,0,0,0,0", f"{m + 50},{k.format(4)},I,D,NX,0,0,0,0",
              f"{m},{k.format(5)},I,B,NX,0,0,0,0", f"{m + 3},{k.format(7)},I,B,NX,0,0,0,0",  # ingress only
              f"{m + 4},{k.format(7)},I,E,NX,1,1,1,1"]
    a = blob(tmp_path / "a.json", [vnet_nic("00224871AAAA", client[:5]), vnet_nic("00224871BBBB", server[:3])])
    b = blob(tmp_path / "b.json", [vnet_nic("00224871AAAA", client[5:]), vnet_nic("00224871BBBB", server[3:])])
    (lines, records_n, skipped, bad, _, per_file, _), read = both_paths(tmp_path, monkeypatch, [a, b])
    assert read == {"a.json", "b.json"}
    assert (lines, bad) == (15, 0)
    assert skipped == {"connection-update": 4, "peer-nic-duplicate": 3}
    assert [f[0] for f in per_file] == ["a.json", "b.json"]
    # a: one update at each end of port 1, its ingress; b: the updates of ports 6 and 7, the ingress of 4 and 5
    assert [f[3] for f in per_file] == [2 + 1, 2 + 2]
    assert records_n == 15 - 4 - 3
    with FlowStore(tmp_path / "fast" / "flows.duckdb") as s:
        kept = {(r["src_port"], r["direction"], r["action"]) for r in s.rows()}
    assert kept == {(1, "egress", "accept"), (2, "egress", "accept"), (3, "egress", "accept"),
                    (3, "ingress", "accept"), (4, "egress", "drop"), (5, "egress", "accept"), (6, "egress", "accept"),
                    (7, "ingress", "accept")}
