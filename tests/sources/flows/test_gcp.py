"""GCP VPC Flow Logs reader, through the flow store: the sample file, exact normalised rows."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import (
    AddressBinding,
    Inventory,
    ListenPort,
    Protocol,
    Workload,
    WorkloadKind,
)
from microseg.sources.flows import FORMATS, detect, gcp

SAMPLES = Path("samples/flows/gcp")
FIXTURE = "vpcflow-elastic-fixture.ndjson"
KIBANA, ES = "10.87.40.76", "198.51.100.248"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, bytes, packets, start, end, direction, hints)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["direction"], r["src_workload"],
             r["dst_workload"])
            for r in store.rows()}


def ingest(store: FlowStore, *paths: Path, bad_threshold: float | None = None) -> IngestReport:
    report = (store.ingest(list(paths)) if bad_threshold is None
              else store.ingest(list(paths), bad_threshold=bad_threshold))
    assert all(f.format == "gcp" for f in report.files)
    return report


def test_elastic_fixture(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / FIXTURE)
    assert (report.lines, report.records, report.skipped, report.bad) == (4, 4, {}, 0)
    assert {(r["is_reply"], r["tcp_flags"]) for r in store.rows()} == {(None, None)}  # GCP logs neither
    assert rows(store) == {
        # kibana:5601 answering a client; SRC report with an RTT (the client ACKed): accepted
        (KIBANA, "203.0.113.12", 5601, 33478, "TCP", "accept", 1, 1776, 7, datetime(2019, 6, 14, 3, 45, 37, 186193),
         datetime(2019, 6, 14, 3, 45, 37, 301953), "egress", "kibana", None),
        # elasticsearch:9200 answering kibana, reported by kibana (DEST): ingress is logged after the firewall
        (ES, KIBANA, 9200, 33970, "TCP", "accept", 1, 173663, 68, datetime(2019, 6, 14, 3, 40, 8, 466657),
         datetime(2019, 6, 14, 3, 49, 51, 821302), "ingress", "elasticsearch", "kibana"),
        # one connection, both directions as kibana saw them: reversed 5-tuples, not duplicates
        (KIBANA, "192.0.2.117", 5601, 50646, "TCP", "accept", 1, 1784, 7, datetime(2019, 6, 14, 3, 40, 36, 895188),
         datetime(2019, 6, 14, 3, 40, 37, 48196), "egress", "kibana", None),
        ("192.0.2.117", KIBANA, 50646, 5601, "TCP", "accept", 1, 1464, 7, datetime(2019, 6, 14, 3, 40, 36, 895188),
         datetime(2019, 6, 14, 3, 40, 37, 48196), "ingress", None, "kibana"),
    }


def test_every_sample_is_detected_and_no_other_reader_claims_them(shared: Path) -> None:
    folder = shared / "samples" / "flows"
    files = sorted(p for p in (folder / "gcp").iterdir() if p.name != "README.txt")
    assert [p.name for p in files] == [FIXTURE]
    assert {detect(p) for p in files} == {"gcp"}
    for path in files:
        head = [line for line in path.read_text().splitlines() if line.strip()][:5]
        assert [name for name, reader in FORMATS.items() if reader.sniff(head)] == ["gcp"]
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.parent.name != "gcp" and path.name != "README.txt":
            try:
                assert detect(path) != "gcp", path
            except InputError:
                pass


def test_mapping_end_to_end(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / FIXTURE)
    inventory = Inventory(
        workloads=(Workload(name="kibana", kind=WorkloadKind.HOST, ports=(ListenPort(port=5601),)),
                   Workload(name="elasticsearch", kind=WorkloadKind.HOST, ports=(ListenPort(port=9200),)),
                   Workload(name="external:clients", kind=WorkloadKind.EXTERNAL,
                            addresses=("192.0.2.0/24", "203.0.113.0/24"))),
        # elasticsearch has no binding: the log's vm_name hint resolves it
        bindings=(AddressBinding(ip=KIBANA, workload="kibana"),),
    )
    result = map_flows(store, inventory)
    assert {(e.source, e.destination, e.protocol, e.port, e.flows, e.bytes) for e in result.edges} == {
        # request and replies of two client connections: one dependency on kibana's port
        ("external:clients", "kibana", Protocol.TCP, 5601, 1, 1464 + 1784 + 1776),
        # only elasticsearch's reply was logged: still kibana -> elasticsearch:9200
        ("kibana", "elasticsearch", Protocol.TCP, 9200, 1, 173663),
    }


def entry(src: str, dst: str, sport: int | None, dport: int | None, reporter: str, *, proto: int = 6,
          nbytes: Any = "100", start: str = "2026-01-02T03:04:05.123456789Z", **extra: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {"src_ip": src, "dest_ip": dst, "protocol": proto}
    if sport is not None:
        conn["src_port"] = sport
    if dport is not None:
        conn["dest_port"] = dport
    payload = {"connection": conn, "reporter": reporter, "bytes_sent": nbytes, "packets_sent": "2",
               "start_time": start, "end_time": "2026-01-02T03:04:06Z", **extra}
    return {"insertId": "x", "jsonPayload": payload,
            "logName": "projects/p/logs/compute.googleapis.com%2Fvpc_flows"}


def write(tmp_path: Path, entries: list[Any], name: str = "g.ndjson") -> Path:
    path = tmp_path / name
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def gke(ns: str, pod: str, workload: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"pod_name": pod, "pod_namespace": ns}
    if workload:
        details["pod_workload"] = {"workload_name": workload, "workload_type": "DEPLOYMENT"}
    return {"cluster": {"cluster_name": "c1", "cluster_location": "us-east1"}, "pod": details}


def test_both_ends_report_one_connection(store: FlowStore, tmp_path: Path) -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    lines = [
        entry(a, b, 40000, 5432, "SRC", src_instance={"vm_name": "app"}),  # same direction, logged twice
        entry(a, b, 40000, 5432, "DEST", nbytes=100, dest_instance={"vm_name": "db"}),
        entry(b, a, 5432, 40000, "SRC", nbytes=900),
        entry(b, a, 5432, 40000, "DEST", nbytes=900),
    ]
    # The duplicates may also sit in another file of the same batch.
    report = ingest(store, write(tmp_path, lines[:3]), write(tmp_path, lines[3:], "h.ndjson"))
    assert (report.lines, report.records, report.skipped) == (4, 2, {"duplicate-report": 2})
    assert {(r["src_ip"], r["src_port"], r["direction"], r["bytes"], r["src_workload"], r["dst_workload"])
            for r in store.rows()} == {(a, 40000, "ingress", 100, None, "db"), (b, 5432, "ingress", 900, None, None)}


def test_egress_without_evidence_has_no_action(store: FlowStore, tmp_path: Path) -> None:
    """Egress is sampled before egress firewall rules: a lone SRC report may have been denied."""
    lines = [
        entry("10.0.0.1", "10.0.0.9", 40001, 22, "SRC"),  # no RTT, no reply: unknown
        entry("10.0.0.1", "10.0.0.9", 40002, 443, "SRC", rtt_msec="3"),  # acknowledged: accepted
        entry("10.0.0.1", "10.0.0.9", 40003, 80, "SRC_GATEWAY"),  # the reply below is the evidence
        entry("10.0.0.9", "10.0.0.1", 80, 40003, "DEST_GATEWAY"),
    ]
    ingest(store, write(tmp_path, lines))
    assert {(r["dst_port"], r["action"], r["direction"]) for r in store.rows()} == {
        (22, None, "egress"), (443, "accept", "egress"), (80, "accept", None), (40003, "accept", None)}


def test_gke_hints_counters_and_icmp(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        # the instance of a pod's address is its node: the pod wins, never the node's VM name
        entry("10.4.0.5", "10.4.1.7", 41000, 8080, "DEST", nbytes=1234,
              src_gke_details=gke("shop", "frontend-7d4b9c6f5-x2x9z"), src_instance={"vm_name": "gke-node-1"},
              dest_gke_details=gke("shop", "carts-0", "carts"), dest_instance={"vm_name": "gke-node-2"}),
        # a GKE node itself (no pod): no hint from the node's VM name either
        entry("10.128.0.3", "10.4.1.7", 41001, 8080, "DEST", nbytes="5",
              src_gke_details={"cluster": {"cluster_name": "c1"}}, src_instance={"vm_name": "gke-node-3"}),
        # ICMP: proto3 JSON omits the zero ports
        entry("10.0.0.1", "10.0.0.2", None, None, "DEST", proto=1, nbytes="64"),
    ]
    ingest(store, write(tmp_path, lines))
    assert {(r["src_ip"], r["src_port"], r["dst_port"], r["protocol"], r["bytes"], r["packets"], r["src_workload"],
             r["dst_workload"]) for r in store.rows()} == {
        ("10.4.0.5", 41000, 8080, "TCP", 1234, 2, "shop/frontend", "shop/carts"),
        ("10.128.0.3", 41001, 8080, "TCP", 5, 2, None, None),
        ("10.0.0.1", 0, 0, "ICMP", 64, 2, None, None),
    }


def test_bad_lines_are_reported_with_line_and_field(store: FlowStore, tmp_path: Path) -> None:
    good = entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST")
    no_reporter = copy.deepcopy(good)
    del no_reporter["jsonPayload"]["reporter"]
    lines: list[Any] = [
        good,  # 1
        "{not json",  # 2
        entry("10.0.0.300", "10.0.0.2", 40000, 80, "DEST"),  # 3
        entry("10.0.0.1", "10.0.0.2", 70000, 80, "DEST"),  # 4
        entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST", nbytes="-5"),  # 5
        entry("10.0.0.1", "10.0.0.2", 40000, 80, "ELSEWHERE"),  # 6
        entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST", start="yesterday"),  # 7
        "",  # 8: blank, not counted
        no_reporter,  # 9
        entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST", dest_instance={"vm_name": "a b"}),  # 10
    ]
    report = ingest(store, write(tmp_path, lines), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (9, 1, 8)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (2, "json"), (3, "connection.src_ip"), (4, "connection.src_port"), (5, "bytes_sent"), (6, "reporter"),
        (7, "start_time"), (9, "jsonPayload"), (10, "dest_instance.vm_name")]
    assert all(b.file.endswith("g.ndjson") and b.text for b in report.bad_samples)


def test_gzip(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "flows.ndjson.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST")) + "\n")
    assert detect(path) == "gcp"
    assert ingest(store, path).records == 1


def test_sniff() -> None:
    assert gcp.sniff([json.dumps(entry("10.0.0.1", "10.0.0.2", 1, 2, "SRC"))])
    assert gcp.sniff([json.dumps(entry("10.0.0.1", "10.0.0.2", 1, 2, "SRC")["jsonPayload"])])  # a bare payload
    assert not gcp.sniff([json.dumps({"flow": {"verdict": "FORWARDED"}})])  # Hubble
    assert not gcp.sniff([json.dumps({"jsonPayload": {"message": "hello"}})])  # another Cloud Logging entry
    assert not gcp.sniff(["version account-id srcaddr dstaddr"])
    assert not gcp.sniff(["[1, 2]"])


def test_duplicates_and_evidence_count_lines_whose_other_fields_are_bad(store: FlowStore, tmp_path: Path) -> None:
    """The best reporter of a 5-tuple and the reverse 5-tuple (reply evidence) are judged over every line
    whose 5-tuple and reporter parse, even when its other fields are bad; a duplicate report is skipped
    before its fields are read."""
    a, b, c, d, e, f, g, h = (f"10.0.0.{i}" for i in range(1, 9))
    bad_dest = entry(a, b, 40000, 5432, "DEST", start="yesterday")
    bad_reply = entry(f, e, 443, 40002, "SRC", nbytes="-5")
    lines: list[Any] = [
        entry(a, b, 40000, 5432, "SRC"),  # 1: the DEST report of line 2 is better: skipped
        bad_dest,  # 2: bad start_time
        entry(c, d, 40001, 80, "SRC", start="yesterday"),  # 3: line 4 reports it better: skipped, not bad
        entry(c, d, 40001, 80, "DEST"),  # 4
        entry(e, f, 40002, 443, "SRC"),  # 5: no RTT, but the peer's reply (line 6, bad counters) was logged
        bad_reply,  # 6: bad bytes_sent
        "{not json",  # 7
        entry(g, h, 40003, 22, "SRC"),  # 8: the reply is in the other file
    ]
    other = [entry(h, g, 22, 40003, "DEST"), entry("10.0.1.1", "10.0.1.2", 40004, 53, "SRC", proto=17)]
    report = ingest(store, write(tmp_path, lines), write(tmp_path, other, "h.ndjson"), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (10, 5, 3, {"duplicate-report": 2})
    assert [(Path(x.file).name, x.line, x.field, x.text) for x in report.bad_samples] == [
        ("g.ndjson", 2, "start_time", json.dumps(bad_dest)), ("g.ndjson", 6, "bytes_sent", json.dumps(bad_reply)),
        ("g.ndjson", 7, "json", "{not json")]
    assert {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["direction"])
            for r in store.rows()} == {
        (c, d, 40001, 80, "TCP", "accept", "ingress"),
        (e, f, 40002, 443, "TCP", "accept", "egress"),
        (g, h, 40003, 22, "TCP", "accept", "egress"),
        (h, g, 22, 40003, "TCP", "accept", "ingress"),
        ("10.0.1.1", "10.0.1.2", 40004, 53, "UDP", None, "egress"),
    }


def test_repeated_bad_values_are_reported_on_every_line(store: FlowStore, tmp_path: Path) -> None:
    # Address and name checks are memoised: the verdict repeats, and so does the report.
    lines = [entry("10.0.0.300", "10.0.0.2", 40000, 80, "DEST"), entry("10.0.0.1", "10.0.0.2", 40000, 80, "DEST",
                                                                      dest_instance={"vm_name": "a b"})] * 2
    report = ingest(store, write(tmp_path, lines), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (4, 0, 4)
    assert [(x.line, x.field) for x in report.bad_samples] == [
        (1, "connection.src_ip"), (2, "dest_instance.vm_name"), (3, "connection.src_ip"), (4, "dest_instance.vm_name")]
