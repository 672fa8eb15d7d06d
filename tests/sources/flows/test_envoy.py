"""Envoy / Istio access log reader, through the flow store: every sample file, exact normalised rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.flows import FORMATS, detect, envoy, head_lines

SAMPLES = Path("samples/flows/istio-envoy")
FORMAT = "default-format.txt"
DOCS = "istio-docs-sleep-httpbin.log"
RBAC = "rbac-denied.log"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, start, end, bytes, packets, is_reply, direction)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["ts_start"], r["ts_end"], r["bytes"], r["packets"], r["is_reply"], r["direction"])
            for r in store.rows()}


def ingest(store: FlowStore, *paths: Path, bad_threshold: float = 0.01) -> IngestReport:
    report = store.ingest(list(paths), bad_threshold=bad_threshold)
    assert all(f.format == "envoy" for f in report.files)
    return report


T_DOCS = datetime(2020, 11, 25, 21, 26, 18, 409000)
# sleep (10.44.1.23, sidecar port 37652) -> httpbin pod 10.44.1.27:80, as the server's sidecar saw it
DOCS_ROW = ("10.44.1.23", "10.44.1.27", 37652, 80, "TCP", "accept", 1, T_DOCS, datetime(2020, 11, 25, 21, 26, 18,
            412000), 135, None, False, "ingress")
RBAC_ROWS = {
    ("10.244.1.1", "10.244.1.9", 0, 80, "TCP", "reject", 1, datetime(2025, 7, 22, 17, 55, 49, 74000),
     datetime(2025, 7, 22, 17, 55, 49, 74000), 19, None, False, "ingress"),
    ("10.244.1.59", "10.244.0.206", 57930, 8080, "TCP", "reject", 1, datetime(2025, 3, 20, 16, 6, 11, 636000),
     datetime(2025, 3, 20, 16, 6, 11, 636000), 19, None, False, "ingress"),
}


def test_docs_request_logged_by_both_sidecars_is_one_record(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / DOCS)
    assert (report.lines, report.records, report.bad, report.skipped) == (2, 1, 0, {"logged-by-both-sidecars": 1})
    assert rows(store) == {DOCS_ROW}


def test_outbound_line_alone(store: FlowStore, shared: Path, tmp_path: Path) -> None:
    outbound = (shared / SAMPLES / DOCS).read_text().splitlines()[0]
    path = tmp_path / "out.log"
    path.write_text(outbound + "\n")
    ingest(store, path)
    # the client sidecar's connection to the pod it picked (not the ClusterIP 10.0.45.184:8000)
    assert rows(store) == {("10.44.1.23", "10.44.1.27", 37652, 80, "TCP", "accept", 1, T_DOCS,
                            datetime(2020, 11, 25, 21, 26, 18, 413000), 135, None, False, "egress")}


def test_rbac_denied(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / RBAC)
    assert (report.lines, report.records, report.bad) == (2, 2, 0)
    assert rows(store) == RBAC_ROWS


def test_format_line_is_counted_not_a_record(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / FORMAT)
    assert (report.lines, report.records, report.bad, report.skipped) == (1, 0, 0, {"format-line": 1})


def test_every_sample(store: FlowStore, shared: Path) -> None:
    files = sorted(p for p in (shared / SAMPLES).iterdir() if p.name != "README.txt")
    assert [f.name for f in files] == [FORMAT, DOCS, RBAC]
    report = ingest(store, *files)
    assert (report.lines, report.records, report.bad) == (5, 3, 0)
    assert rows(store) == {DOCS_ROW} | RBAC_ROWS


def test_every_sample_is_detected_and_only_as_envoy(shared: Path) -> None:
    folder = shared / "samples" / "flows"
    mine = sorted(p for p in (folder / "istio-envoy").iterdir() if p.name != "README.txt")
    assert len(mine) == 3
    for path in mine:
        assert detect(path) == "envoy"
        assert [name for name, reader in FORMATS.items() if reader.sniff(head_lines(path))] == ["envoy"]
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.parent.name != "istio-envoy" and path.name != "README.txt":
            try:
                assert detect(path) != "envoy", path
            except InputError:
                pass


def istio_json(**kw: Any) -> str:
    rec: dict[str, Any] = {
        "start_time": "2026-01-02T03:04:05.123Z", "method": "GET", "path": "/", "protocol": "HTTP/1.1",
        "response_code": 200, "response_flags": "-", "response_code_details": "via_upstream",
        "connection_termination_details": None, "bytes_received": 10, "bytes_sent": 20, "duration": 7,
        "request_id": "r-1", "upstream_host": "127.0.0.1:8080", "upstream_cluster": "inbound|8080||",
        "upstream_local_address": "127.0.0.1:40000", "downstream_local_address": "10.1.0.2:8080",
        "downstream_remote_address": "10.1.0.1:45000", "requested_server_name": "outbound_.8080_._.api",
    }
    rec.update(kw)
    return json.dumps(rec)


def test_json_custom_format_spiffe_and_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    t0, t1 = datetime(2026, 1, 2, 3, 4, 5, 123000), datetime(2026, 1, 2, 3, 4, 5, 130000)
    path = tmp_path / "access.log"
    path.write_text("\n".join([
        istio_json(),  # 1
        istio_json(response_code=403, response_flags="UAEX", request_id="r-2",
                   downstream_peer_uri_san="spiffe://cluster.local/ns/shop/sa/web"),  # 2: ext_authz denial
        istio_json(protocol=None, method=None, response_code=0, request_id=None, upstream_cluster="BlackHoleCluster",
                   upstream_host=None, upstream_local_address=None, downstream_local_address="93.184.216.34:443"),
        istio_json(downstream_remote_address="10.1.0.1"),  # 4: no port
        istio_json(start_time="yesterday"),  # 5
        istio_json(downstream_peer_uri_san="web"),  # 6
        '{"start_time": ',  # 7
        # 8: a custom text format: its lines follow (only the operators the reader needs)
        '[%START_TIME%] %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% "%DOWNSTREAM_PEER_URI_SAN%" %UPSTREAM_CLUSTER% '
        '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %BYTES_SENT%',
        '[2026-01-02T03:04:05.123Z] 403 rbac_access_denied_matched_policy[ns[shop]-policy[deny]-rule[0]] '
        '"spiffe://cluster.local/ns/shop/sa/web" inbound|5432|| 10.1.0.3:5432 [fd00::1]:41000 7',  # 9
        "[2026-01-02T03:04:05.123Z] 200 via_upstream", "",  # 10: too few fields
    ]) + "\n")
    assert detect(path) == "envoy"
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (10, 4, 5, {"format-line": 1})
    assert {(b.line, b.field) for b in report.bad_samples} == {
        (4, "downstream_remote_address"), (5, "start_time"), (6, "downstream_peer_uri_san"), (7, "json"),
        (10, "fields")}
    assert rows(store) == {
        ("10.1.0.1", "10.1.0.2", 45000, 8080, "TCP", "accept", 1, t0, t1, 30, None, False, "ingress"),
        ("10.1.0.1", "10.1.0.2", 45000, 8080, "TCP", "reject", 1, t0, t1, 30, None, False, "ingress"),
        # REGISTRY_ONLY: no upstream was chosen, the original destination is the peer
        ("10.1.0.1", "93.184.216.34", 45000, 443, "TCP", "reject", 1, t0, t1, 30, None, False, "egress"),
        ("fd00::1", "10.1.0.3", 41000, 5432, "TCP", "reject", 1, t0, t0, 7, None, False, "ingress"),
    }


def test_mapping_end_to_end(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / DOCS, shared / SAMPLES / RBAC)

    def k8s(ns: str, name: str, ip: str, port: int) -> tuple[Workload, AddressBinding]:
        w = Workload(name=f"{ns}/{name}", kind=WorkloadKind.KUBERNETES, namespace=ns, ports=(ListenPort(port=port),))
        return w, AddressBinding(ip=ip, workload=w.name)

    pairs = [k8s("foo", "sleep", "10.44.1.23", 8080), k8s("foo", "httpbin", "10.44.1.27", 80),
             k8s("cnp-nginx", "client", "10.244.1.59", 8080), k8s("cnp-nginx", "svc-d", "10.244.0.206", 8080)]
    inventory = Inventory(workloads=tuple(w for w, _ in pairs), bindings=tuple(b for _, b in pairs))
    result = map_flows(store, inventory)
    assert {(e.source, e.destination, e.protocol, e.port, e.flows, e.denied_flows, e.bytes)
            for e in result.edges} == {
        # one request, logged by both sidecars: one flow on the pod's port (not the Service's 8000)
        ("foo/sleep", "foo/httpbin", Protocol.TCP, 80, 1, 0, 135),
        # the AuthorizationPolicy denial: a denied-only edge, never codified
        ("cnp-nginx/client", "cnp-nginx/svc-d", Protocol.TCP, 8080, 0, 1, 19),
    }


@pytest.mark.parametrize("line", [
    "[2020-11-25T21:26:18.409Z] not an envoy line",
    '{"start_time": "2026-01-02T03:04:05Z", "verdict": "FORWARDED"}',
])
def test_sniff_rejects(line: str) -> None:
    assert not envoy.sniff([line])


def test_json_values_of_the_wrong_type_are_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("\n".join([
        istio_json(),
        istio_json(downstream_remote_address=["10.1.0.1:45000"]),  # 2
        istio_json(bytes_sent="many"),  # 3
        '{"start_time": "2026-01-02T03:04:05Z", "downstream_remote_address": "10.1.0.1:1"}',  # 4
    ]) + "\n")
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (4, 1, 3)
    assert {(b.line, b.field) for b in report.bad_samples} == {
        (2, "downstream_remote_address"), (3, "bytes_sent"), (4, "downstream_local_address")}
