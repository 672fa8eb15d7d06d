"""Azure NSG (v1/v2) and VNet (v4) flow log reader, through the flow store: every sample, exact rows."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, Protocol, Workload, WorkloadKind
from microseg.sources.flows import FORMATS, azure, detect

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
        # the same connection at the receiving NIC: another record of its own (another vantage point)
        nsg([f"{T},10.0.0.1,10.0.0.2,40000,5432,T,I,A,B,,,,"], mac="000D3AF80000"),
        nsg([f"{T + 7},10.0.0.3,10.0.0.2,40002,22,T,I,D"], version=1),  # version 1: no state, no counters
    ]}
    path = tmp_path / "PT1H.json"
    path.write_text(json.dumps(blob, indent=2))
    report = ingest(store, path)
    assert (report.lines, report.records, report.skipped, report.bad) == (6, 4, {"connection-update": 2}, 0)
    t = utc
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 40000, 5432, "TCP", "accept", 1, 9150, 21, t(T), t(T + 120), "egress"),
        ("10.0.0.1", "10.0.0.2", 40001, 5432, "UDP", "drop", 1, None, None, t(T + 5), t(T + 5), "egress"),
        ("10.0.0.1", "10.0.0.2", 40000, 5432, "TCP", "accept", 1, None, None, t(T), t(T), "ingress"),
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
