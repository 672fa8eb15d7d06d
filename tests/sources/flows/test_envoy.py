"""Envoy / Istio access log reader, through the flow store: every sample file, exact normalised rows."""

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


# -- the DuckDB fast path (default TEXT format) against the Python reader ---------------------------

def text_line(start: str = "2026-01-02T03:04:05.123Z", proto: str = "HTTP/1.1", flags: str = "-",
              details: str = "via_upstream", term: str = "-", received: str = "10", sent: str = "20",
              duration: str = "7", rid: str = "r-1", u_host: str = "127.0.0.1:8080",
              cluster: str = "inbound|8080||", u_local: str = "127.0.0.1:40000", d_local: str = "10.1.0.2:8080",
              d_remote: str = "10.1.0.1:45000", reason: str = "-", authority: str = "api:8080",
              agent: str = "curl/8.0 (x86_64)", request: str = "GET /api", code: str = "200") -> str:
    """One line of Istio's default TEXT format."""
    return (f'[{start}] "{request} {proto}" {code} {flags} {details} {term} "{reason}" {received} {sent} {duration} 5 '
            f'"-" "{agent}" "{rid}" "{authority}" "{u_host}" {cluster} {u_local} {d_local} {d_remote} '
            "outbound_.8080_._.api.shop.svc.cluster.local default")


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any]:
    """(report, rows, files read in Python) through the fast path, then through the Python path alone."""
    out = []
    real_scan, real_file = envoy._scan, envoy._stage_file
    for name, python_only in (("fast", False), ("python", True)):
        read: list[str] = []

        def spy(src: Any, index: int, batch: Any, read: list[str] = read) -> None:
            read.append(src.path.name)
            real_file(src, index, batch)

        with monkeypatch.context() as m:
            m.setattr(envoy, "_scan", (lambda *_a, **_k: None) if python_only else real_scan)
            m.setattr(envoy, "_stage_file", spy)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                # fmt: a file starting with a byte order mark is not detected
                report = s.ingest(list(paths), fmt="envoy", bad_threshold=1.0)
                got = rows(s)
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(Path(b.file).name, b.line, b.field, b.message, b.text) for b in report.bad_samples]),
                    got, read))
    return out[0], out[1]


def test_fast_path_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.log"  # every line in the fast shape: read by DuckDB
    a.write_text("\n".join([
        text_line(d_remote="10.1.0.1:45001"),  # 1
        # 2: the client's sidecar; the server's sidecar logged it too (b.log line 1): skipped
        text_line(rid="r-2", cluster="outbound|8080||api.shop.svc.cluster.local", u_host="10.1.0.2:8080",
                  u_local="10.1.0.22:45022", d_local="10.96.0.10:8080", d_remote="127.0.0.6:39000"),
        # 3: REGISTRY_ONLY, no upstream chosen: the original destination; no byte counts
        text_line(rid="-", cluster="BlackHoleCluster", u_host="-", u_local="-", d_local="93.184.216.34:443",
                  d_remote="10.1.0.3:45003", received="-", sent="-"),
        text_line(proto="HTTP/3", d_remote="10.1.0.4:45004"),  # 4: UDP
        text_line(flags="DC,UAEX", d_remote="10.1.0.5:45005"),  # 5: ext_authz denial
        text_line(term="rbac_access_denied_matched_policy[none]", d_remote="10.1.0.6:45006"),  # 6
        text_line(start="2026-01-02T03:04:05Z", duration="-", d_remote="10.1.0.7:45007"),  # 7: no fraction
        text_line(start="2026-01-02T03:04:05.123456789Z", d_remote="10.1.0.8:45008"),  # 8: cut to microseconds
        "",  # 9
        text_line(d_local="10.1.0.2:080", d_remote="10.1.0.10:45010"),  # 10: a port with a leading zero
        text_line(cluster="foo", d_remote="10.1.0.11:45011"),  # 11: unknown side
        text_line(rid="-", d_remote="10.1.0.12:45012"),  # 12: no request id (d.log.gz line 1 repeats it)
        # 13: outbound, no upstream local address: the downstream peer is the source
        text_line(rid="r-13", cluster="PassthroughCluster", u_host="10.2.0.5:9000", u_local="-",
                  d_local="10.2.0.5:9000", d_remote="10.1.0.13:45013"),
    ]) + "\n")
    b = tmp_path / "b.log"  # a bad line, a zone offset and IPv6: read in Python from start to end
    b.write_text("\n".join([
        text_line(rid="r-2", d_remote="10.1.0.22:45022"),
        text_line(d_remote="10.1.0.1:70000"),
        text_line(start="2026-01-02T04:04:05.123+01:00", d_remote="10.1.1.2:45102"),
        text_line(d_remote="[fd00::0001]:45103"),
    ]) + "\n")
    c = tmp_path / "c.log"  # a byte order mark: Python reads it into the first token, a bad time
    c.write_bytes(b"\xef\xbb\xbf" + (text_line(d_remote="10.1.2.1:45201") + "\n" +
                                     text_line(d_remote="10.1.2.2:45202") + "\n").encode())
    d = tmp_path / "d.log.gz"
    with gzip.open(d, "wt") as fh:
        fh.write(text_line(rid="-", cluster="outbound|8080||api", u_host="10.1.0.2:8080", u_local="10.1.0.12:45012",
                           d_local="10.96.0.10:8080", d_remote="127.0.0.6:39001") + "\n"
                 + text_line(d_remote="10.1.3.1:45301") + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, a, b, c, d)
    assert fast[2] == ["b.log", "c.log"]
    assert python[2] == ["a.log", "b.log", "c.log", "d.log.gz"]
    assert fast[:2] == python[:2]
    report, got = fast[0], fast[1]
    # by hand: 12 + 4 + 2 + 2 non-blank lines; a.log line 2 and d.log.gz line 1 skipped; 2 bad
    assert report[:4] == (20, 16, 2, {"logged-by-both-sidecars": 2})
    assert [sample[:3] for sample in report[4]] == [("b.log", 2, "downstream_remote_address"),
                                                    ("c.log", 1, "start_time")]
    t0, t1 = datetime(2026, 1, 2, 3, 4, 5, 123000), datetime(2026, 1, 2, 3, 4, 5, 130000)

    def row(sport: int, *, src: str = "", dst: str = "10.1.0.2", dport: int = 8080, proto: str = "TCP",
            action: str = "accept", start: datetime = t0, end: datetime = t1, nbytes: int | None = 30,
            direction: str | None = "ingress") -> tuple[Any, ...]:
        src = src or f"10.1.{sport // 100 % 10}.{sport % 100}"  # as the lines above spell it
        return (src, dst, sport, dport, proto, action, 1, start, end, nbytes, None, False, direction)

    assert got == {
        row(45001), row(45003, dst="93.184.216.34", dport=443, action="reject", nbytes=None, direction="egress"),
        row(45004, proto="UDP"), row(45005, action="reject"), row(45006, action="reject"),
        row(45007, start=datetime(2026, 1, 2, 3, 4, 5), end=datetime(2026, 1, 2, 3, 4, 5)),
        row(45008, start=datetime(2026, 1, 2, 3, 4, 5, 123456), end=datetime(2026, 1, 2, 3, 4, 5, 130456)),
        row(45010, dport=80), row(45011, direction=None), row(45012),
        row(45013, dst="10.2.0.5", dport=9000, direction="egress"),
        row(45022), row(45102), row(45103, src="fd00::1"), row(45202), row(45301),
    }


def test_json_fast_path_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_request_id = json.loads(istio_json(downstream_remote_address="10.1.5.7:45507"))
    del no_request_id["request_id"]
    no_request_id["x_request_id"] = "r-7"
    j1 = tmp_path / "j1.json"  # every line read by DuckDB
    j1.write_text("\n".join([
        istio_json(downstream_remote_address="10.1.5.1:45501"),  # 1
        istio_json(bytes_received="5", bytes_sent="-", duration=None, downstream_remote_address="10.1.5.2:45502"),
        istio_json(response_flags="UAEX", downstream_remote_address="10.1.5.3:45503"),  # 3: denied
        istio_json(upstream_cluster=None, downstream_remote_address="10.1.5.4:45504"),  # 4: unknown side
        # 5: the client's sidecar, and 6: the server's sidecar, on the same request: 5 is skipped
        istio_json(request_id="r-9", upstream_cluster="outbound|8080||api", upstream_host="10.1.0.2:8080",
                   upstream_local_address="10.1.5.6:45506", downstream_local_address="10.96.0.1:8080",
                   downstream_remote_address="127.0.0.6:1"),
        istio_json(request_id="r-9", downstream_remote_address="10.1.5.6:45506"),  # 6
        json.dumps(no_request_id),  # 7
        json.dumps(json.loads(istio_json(downstream_remote_address="10.1.5.8:45508")), separators=(",", ":")),
    ]) + "\n")
    j2 = tmp_path / "j2.json"  # read in Python from start to end
    j2.write_text("\n".join([
        istio_json(bytes_sent=1.0),  # 1: not an integer
        istio_json(response_flags=5, downstream_remote_address="10.1.6.3:45603"),  # 2: str(5) in Python
        istio_json()[:-1] + ", }",  # 3: a trailing comma
        istio_json(bytes_sent=float("nan")),  # 4: json.loads reads NaN as a float
    ]) + "\n")
    j3 = tmp_path / "j3.json"  # a repeated key: the first wins (jsonline, DuckDB's rule): read by DuckDB
    j3.write_text(istio_json(downstream_remote_address="10.1.6.1:45601")[:-1]
                  + ', "downstream_remote_address": "10.1.6.1:1"}\n')
    fast, python = both_paths(tmp_path, monkeypatch, j1, j2, j3)
    assert fast[2] == ["j2.json"]
    assert python[2] == ["j1.json", "j2.json", "j3.json"]
    assert fast[:2] == python[:2]
    report, got = fast[0], fast[1]
    assert report[:4] == (13, 9, 3, {"logged-by-both-sidecars": 1})
    assert [sample[:3] for sample in report[4]] == [("j2.json", 1, "bytes_sent"), ("j2.json", 3, "json"),
                                                    ("j2.json", 4, "bytes_sent")]
    t0, t1 = datetime(2026, 1, 2, 3, 4, 5, 123000), datetime(2026, 1, 2, 3, 4, 5, 130000)

    def row(sport: int, *, action: str = "accept", end: datetime = t1, nbytes: int = 30,
            direction: str | None = "ingress") -> tuple[Any, ...]:
        src = f"10.1.{sport // 100 % 10}.{sport % 100}"  # as the lines above spell it
        return (src, "10.1.0.2", sport, 8080, "TCP", action, 1, t0, end, nbytes, None, False, direction)

    assert got == {row(45501), row(45502, end=t0, nbytes=5), row(45503, action="reject"),
                   row(45504, direction=None), row(45506), row(45507), row(45508), row(45601), row(45603)}


# Pathological JSON lines, one per file next to a good line: a file the fast path keeps must give
# exactly the Python reader's rows; the doubtful ones are read whole in Python.
_FAST = "fast"
_PY = "python"
PATHOLOGICAL_JSON = [
    (_FAST, istio_json(bytes_sent="80")),  # a number as a string: int("80") in Python
    (_PY, istio_json(bytes_sent=80.5)),  # a float: a bad line
    (_PY, istio_json(bytes_sent=True)),  # a bool is no number
    (_PY, istio_json(protocol=True)),  # str(True) in Python: not a string, so Python decides
    (_PY, istio_json(upstream_cluster=0)),  # falsy: "-" in Python
    (_PY, istio_json(bytes_received=123456789012345678901234567890)),  # out of range
    (_PY, istio_json(duration=-5)),
    (_FAST, istio_json(bytes_received=None, duration=None, protocol=None, response_flags=None)),  # null fields
    (_FAST, json.dumps({k: v for k, v in json.loads(istio_json()).items()
                        if k not in ("bytes_sent", "upstream_host", "connection_termination_details")})),  # missing
    (_FAST, istio_json(user_agent="caf\u00e9 \"quoted\" \\ back")),  # escapes in a field nobody reads
    (_FAST, istio_json(response_code_details="via\u00e9upstream", response_flags="\u00dc")),  # non-ASCII, read
    (_FAST, json.dumps(json.loads(istio_json()), ensure_ascii=False) .replace("via_upstream", "via\\u005fupstream")),
    (_PY, istio_json(response_code_details='rbac_access_denied "x"')),  # an escape in a value read
    (_PY, istio_json(request_id="r\tid")),  # an escaped tab in the request id
    (_PY, istio_json()[:-1] + ",}"),  # trailing commas
    (_PY, istio_json()[:-1] + ', "x": [1, 2 ,] }'),
    (_PY, istio_json()[:-1] + ', "x": NaN}'),  # json.loads reads NaN, DuckDB too: a superset to Python
    (_PY, istio_json()[:-1] + ', "x": nan}'),  # only DuckDB reads these
    (_PY, istio_json()[:-1] + ', "x": -Infinity}'),
    (_PY, istio_json()[:-1] + ', "x": INF}'),
    (_PY, istio_json(bytes_sent=float("inf"))),
    (_PY, istio_json()[:-1] + ', "x": "\\ud800"}'),  # a lone surrogate: json.loads reads it, DuckDB does not
    (_PY, istio_json()[:-1] + '} {"a": 1}'),  # extra data
    (_PY, "[1, 2]"),
    (_PY, "null"),
    (_PY, "# a comment"),
    (_PY, '[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS%'),  # a format line midway
    (_PY, istio_json(start_time="2026-01-02T04:04:05.123+01:00")),
    (_FAST, istio_json(start_time="2026-01-02T03:04:05.9999999Z")),  # cut to 05.999999 on both
    (_FAST, istio_json(start_time="2026-01-02T03:04:05Z")),
    (_PY, istio_json(start_time="2026-02-29T03:04:05Z")),  # no such day in 2026
    (_PY, istio_json(start_time=1767323045)),
    (_PY, istio_json(downstream_remote_address=" 10.1.0.1:45000")),
    (_FAST, istio_json(downstream_local_address="10.1.0.2:080")),  # a port with a leading zero: 80 on both
    (_FAST, istio_json(request_id=None, x_request_id="r-x")),  # request_id null: no id (not x_request_id)
    (_FAST, istio_json(upstream_cluster="")),
    (_FAST, istio_json(downstream_remote_address="[FD00:0::0001]:45000")),  # IPv6: fd00::1 on both
    (_FAST, istio_json(downstream_local_address="[::ffff:10.1.0.2]:8080")),
    (_FAST, istio_json(downstream_remote_address="[fe80::1%eth0]:45000")),
    (_FAST, istio_json(upstream_cluster="outbound|8080||api", upstream_host="[fd00::2]:8080",
                       upstream_local_address="[FD00::1]:40000", downstream_remote_address="127.0.0.6:1")),
    (_PY, istio_json(downstream_remote_address="[fd00::1::2]:45000")),
    (_PY, istio_json(downstream_remote_address="[10.1.0.1]:45000")),
    (_PY, istio_json(upstream_host="[fd00::1]:70000")),
    (_PY, istio_json(upstream_local_address="[fe80::1%]:1")),
    (_FAST, istio_json(bytes_sent="999999999999999999", duration="007")),
    (_PY, istio_json(bytes_sent=1000000000000000000)),  # 19 digits: Python reads it
    (_PY, istio_json(upstream_local_address=5)),
    (_FAST, istio_json(upstream_cluster="outbound|8080||api", upstream_host="-")),  # no upstream chosen
    (_FAST, istio_json(protocol="http/3", response_flags="UAEX,DC")),
    (_FAST, istio_json(response_flags="XUAEX", response_code_details="UAEX")),
    # response flags of no upstream connection: drop on a line that is not inbound (unique addresses)
    (_FAST, istio_json(response_flags="UF,URX", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.1:40001")),
    (_FAST, istio_json(protocol=None, response_flags="URX", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.2:40002")),  # TCP
    (_FAST, istio_json(protocol="-", response_flags="URX", upstream_cluster="PassthroughCluster",
                       upstream_local_address="-", downstream_remote_address="10.6.0.3:40003")),
    (_FAST, istio_json(protocol="", response_flags="URX", upstream_cluster=None,
                       upstream_local_address="-", downstream_remote_address="10.6.0.4:40004")),
    (_FAST, istio_json(protocol="HTTP/2", response_flags="URX", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.5:40005")),  # HTTP URX: accept
    (_FAST, istio_json(protocol=None, response_flags="URX",
                       upstream_local_address="-", downstream_remote_address="10.6.0.6:40006")),  # inbound: accept
    (_FAST, istio_json(response_flags="NR", upstream_cluster="-", upstream_host="-",
                       upstream_local_address="-", downstream_remote_address="10.6.0.7:40007")),  # no side
    (_FAST, istio_json(response_flags="\u00e9,UH", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.8:40008")),  # non-ASCII first
    (_FAST, istio_json(response_flags="UF",
                       upstream_local_address="-", downstream_remote_address="10.6.0.9:40009")),  # inbound: accept
    (_FAST, istio_json(response_flags="RL,UAEX", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.10:40010")),  # the denial wins
    (_FAST, istio_json(response_flags="XUF,UFX,uf", upstream_cluster="outbound|8080||api",
                       upstream_local_address="-", downstream_remote_address="10.6.0.11:40011")),
    (_PY, istio_json(response_flags=["UF"], upstream_cluster="outbound|8080||api",
                     upstream_local_address="-", downstream_remote_address="10.6.0.12:40012")),  # str() of a list
    (_PY, istio_json(response_flags="U\"F", upstream_cluster="outbound|8080||api",
                     upstream_local_address="-", downstream_remote_address="10.6.0.13:40013")),  # an escape
    (_FAST, json.dumps({k: v for k, v in json.loads(istio_json(
        response_flags="URX", upstream_cluster="-", downstream_remote_address="10.6.0.14:40014")).items()
        if k != "protocol"})),  # no protocol key: TCP
    (_FAST, istio_json(request_id="-")),
    (_FAST, istio_json()[:-1] + ', "x": 1e999}'),  # infinity to both readers, in a field nobody reads
    (_PY, istio_json()[:-1] + ', "x": [1, nan]}'),
    (_PY, istio_json()[:-1] + ', "x":\t-NaN}'),
    (_PY, istio_json()[:-1] + ', "x": [ Infinity ]}'),
    (_PY, istio_json()[:-1] + ', "x": [1 , ]}'),
    (_PY, istio_json(user_agent="banana, nan]")),  # in a string: a superset is fine
    (_FAST, ""),  # a blank line
]


def test_json_fast_path_on_pathological_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i, (_, line) in enumerate(PATHOLOGICAL_JSON):
        path = tmp_path / f"p{i:02d}.json"
        good = istio_json(downstream_remote_address=f"10.2.0.{i}:{40000 + i}", request_id=f"g-{i}")
        path.write_bytes((good + "\r\n" + line + "\r\n").encode())  # CRLF line ends
        paths.append(path)
    fast, python = both_paths(tmp_path, monkeypatch, *paths)
    assert fast[:2] == python[:2]
    assert fast[2] == [f"p{i:02d}.json" for i, (where, _) in enumerate(PATHOLOGICAL_JSON) if where == _PY]
    assert python[0][1] > len(paths)  # the good lines and the pathological lines read as records


def test_json_request_id_matches_across_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's line read in Python drops the client's line read by DuckDB: one spelling of the id."""
    client = tmp_path / "client.json"  # read by DuckDB
    client.write_text(istio_json(request_id="r\u00e9-1", upstream_cluster="outbound|8080||api",
                                 upstream_host="10.1.0.2:8080", upstream_local_address="10.1.0.1:45000",
                                 downstream_local_address="10.96.0.1:8080", downstream_remote_address="127.0.0.6:1")
                      + "\n")
    server = tmp_path / "server.json"  # a bad line: read in Python
    server.write_text(istio_json(request_id="r\u00e9-1") + "\n" + istio_json(start_time="x") + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, client, server)
    assert fast[2] == ["server.json"]
    assert fast[:2] == python[:2]
    assert fast[0][:4] == (3, 1, 1, {"logged-by-both-sidecars": 1})


def test_ipv6_spellings_match_across_sidecars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sidecars log one IPv6 request, spelt differently; both files are read by DuckDB, which
    writes the addresses as Python does, so the client's line is dropped on both paths."""
    client = tmp_path / "client.log"
    client.write_text(text_line(rid="r-6", cluster="outbound|8080||api", u_host="[FD00::0:2]:8080",
                                u_local="[fd00:0::1]:45000", d_local="[fd00::10]:8080", d_remote="[::1]:1") + "\n")
    server = tmp_path / "server.json"
    server.write_text(istio_json(request_id="r-6", downstream_remote_address="[fd00::1]:45000",
                                 downstream_local_address="[fd00::2]:8080") + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, client, server)
    assert fast[2] == []
    assert fast[:2] == python[:2]
    assert fast[0][:4] == (2, 1, 0, {"logged-by-both-sidecars": 1})
    assert {(r[0], r[1], r[2], r[3]) for r in fast[1]} == {("fd00::1", "fd00::2", 45000, 8080)}


def test_text_request_id_with_spaces_matches_across_sidecars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Request ids next to an authority with spaces, or with spaces themselves: read from the parts
    between '"' on the fast path, the same ids as Python's, so both clients' lines are dropped."""
    out = {"cluster": "outbound|8080||api", "u_host": "10.1.0.2:8080", "d_local": "10.96.0.1:8080",
           "d_remote": "127.0.0.6:1"}
    client = tmp_path / "client.log"  # read by DuckDB
    client.write_text(text_line(rid="r7", authority="a b", u_local="10.1.0.1:45000", **out) + "\n"
                      + text_line(rid="r 8", u_local="10.1.0.3:45003", **out) + "\n")
    server = tmp_path / "server.log"  # read by DuckDB
    server.write_text(text_line(rid="r7", d_remote="10.1.0.1:45000") + "\n")
    server2 = tmp_path / "server2.log"  # a bad line: read in Python
    server2.write_text(text_line(rid="r 8", reason="x y", d_remote="10.1.0.3:45003") + "\n"
                       + text_line(start="x") + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, client, server, server2)
    assert fast[2] == ["server2.log"]
    assert fast[:2] == python[:2]
    assert fast[0][:4] == (5, 2, 1, {"logged-by-both-sidecars": 2})


def test_json_invalid_utf8_and_truncated_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.json"  # invalid UTF-8: Python replaces it; the whole batch is read in Python
    bad.write_bytes(istio_json().encode() + b"\n" + istio_json(user_agent="x").encode().replace(b'"x"', b'"\xff"')
                    + b"\n")
    other = tmp_path / "other.json"
    other.write_text(istio_json(downstream_remote_address="10.1.0.9:45009") + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, bad, other)
    assert fast == python
    assert fast[0][:3] == (3, 3, 0)
    gz = tmp_path / "cut.json.gz"
    gz.write_bytes(gzip.compress(((istio_json() + "\n") * 200).encode())[:-30])
    for fmt_path in ((gz,), (gz, other)):
        with FlowStore(tmp_path / f"s{len(fmt_path)}" / "flows.duckdb") as s, pytest.raises(InputError):
            s.ingest(list(fmt_path), fmt="envoy")


PATHOLOGICAL_TEXT = [
    (_PY, text_line(received="0", sent="18446744073709551615")),  # beyond 1 << 62: a bad line
    (_PY, text_line(received="99999999999999999999999")),  # beyond 1 << 62: a bad line
    (_FAST, text_line(received="007")),  # leading zeros: int("007") in Python
    (_PY, text_line(flags="caf\u00e9")),  # non-ASCII
    (_PY, text_line(rid="r\tid")),  # a tab inside a quoted token: one token for Python
    (_PY, text_line(rid='r\\"id')),  # an escaped quote
    (_PY, text_line(details="a  b")),  # two spaces: an empty token
    (_PY, text_line(details="[x]")),  # a bracketed bare token
    (_FAST, text_line(d_remote="[fd00::1]:45000")),  # IPv6: written canonical on both paths
    (_FAST, text_line(d_remote="[FD00:0:0::0001]:45000")),  # upper case, zeros: fd00::1 on both
    (_FAST, text_line(d_local="[::ffff:10.1.0.2]:8080")),  # an embedded IPv4 address
    (_FAST, text_line(d_remote="[fe80::1%eth0]:45000")),  # a zone id
    (_FAST, text_line(d_remote="[::]:45000", d_local="[1:2:3:4:5:6:7:8]:8080")),
    (_FAST, text_line(cluster="outbound|8080||api", u_host="[FD00::2]:8080", u_local="[fd00::0:1]:40000",
                      d_local="10.96.0.1:8080", d_remote="127.0.0.6:1")),  # outbound: the upstream pair
    (_PY, text_line(d_remote="[fd00::1::2]:45000")),  # two '::': a bad line
    (_PY, text_line(d_remote="[fd00:1:2:3:4:5:6:7:8]:45000")),  # nine groups
    (_PY, text_line(d_remote="[12345::1]:45000")),  # five hex digits
    (_PY, text_line(d_remote="[fd00::g]:45000")),
    (_PY, text_line(d_remote="[fe80::1%]:45000")),  # an empty zone
    (_PY, text_line(d_remote="[fe80::1%a%b]:45000")),
    (_PY, text_line(u_host="[fd00::1]:8080]")),
    (_PY, text_line(d_remote="[fd00::1]:65536")),
    (_PY, text_line(d_remote="[fd00::1]")),  # no port
    (_PY, text_line(d_remote="fd00::1:45000")),  # no brackets: Python reads port 45000
    (_PY, text_line(d_remote="[10.1.0.1]:45000")),  # IPv4 in brackets: Python reads it
    (_PY, text_line(d_local="10.1.0.2:65536")),
    (_FAST, text_line(d_local="10.1.0.2:65535")),
    (_FAST, text_line(d_local="10.1.0.2:0000065535")),  # leading zeros: 65535 on both
    (_PY, text_line(d_local="10.1.0.2:0065536")),
    (_FAST, text_line(received="0", sent="999999999999999999")),  # 18 digits: the longest the fast path reads
    (_PY, text_line(received="0000000000000000007")),  # 19 digits: Python reads 7
    (_FAST, text_line(duration="100000000000000")),  # 15 digits (ends in 5196)
    (_PY, text_line(duration="999999999999999")),  # 15 digits that end after 9999: a bad line
    (_PY, text_line(duration="1000000000000000")),  # 16: Python decides
    (_FAST, text_line(proto="http/3")),  # UDP on both
    (_FAST, text_line(proto="HTTP/2", details="x/3")),
    (_FAST, text_line(flags="UAEX,DC")),
    (_FAST, text_line(flags="XUAEX", details="UAEX", term="RBAC")),  # no flag of its own: accepted
    (_FAST, text_line(details="rbac_access_denied_matched_policy[ns[x]-policy[y]-rule[0]]")),
    (_FAST, text_line(cluster="BlackHoleCluster")),
    # response flags of no upstream connection: drop on a line that is not inbound (unique addresses:
    # the rows are compared as sets)
    (_FAST, text_line(flags="UF,URX", cluster="outbound|5432||db", u_host="10.0.0.9:5432",
                      u_local="-", d_remote="10.5.0.1:40001")),
    (_FAST, text_line(request="- -", proto="-", flags="URX", cluster="outbound|5432||db", u_host="10.0.0.9:5432",
                      u_local="-", d_remote="10.5.0.2:40002")),  # TCP
    (_FAST, text_line(request="- -", proto="", flags="URX", cluster="PassthroughCluster",
                      u_local="-", d_remote="10.5.0.3:40003")),  # protocol '': TCP
    (_FAST, text_line(proto="HTTP/2", flags="URX", cluster="outbound|8080||api",
                      u_local="-", d_remote="10.5.0.4:40004")),  # HTTP URX: accept
    (_FAST, text_line(request="- -", proto="-", flags="URX",
                      u_local="-", d_remote="10.5.0.5:40005")),  # inbound: accept
    (_FAST, text_line(flags="NR", cluster="-", u_host="-",
                      u_local="-", d_remote="10.5.0.6:40006")),  # no side
    (_FAST, text_line(flags="UF",
                      u_local="-", d_remote="10.5.0.7:40007")),  # inbound: accept
    (_FAST, text_line(flags="UH,UAEX", cluster="outbound|8080||api",
                      u_local="-", d_remote="10.5.0.8:40008")),  # the denial wins
    (_FAST, text_line(flags="UH", cluster="BlackHoleCluster", u_host="-",
                      u_local="-", d_remote="10.5.0.9:40009")),
    (_FAST, text_line(flags="XUF,UFX,uf,URXX", cluster="outbound|8080||api",
                      u_local="-", d_remote="10.5.0.10:40010")),  # no such flag: accept
    (_FAST, text_line(flags="DC,UO", cluster="foo",
                      u_local="-", d_remote="10.5.0.11:40011")),
    # spaces in quoted tokens: the numbers and the request id are then read from the parts between '"'
    (_FAST, text_line(reason="delayed connect error: 111", received="11", sent="22", duration="33")),
    (_FAST, text_line(authority="a b:8080", rid="r-a")),
    (_FAST, text_line(rid="r 1 2")),
    (_FAST, text_line(reason=" ", authority=" ", rid=" x ", received="-")),
    (_FAST, text_line(reason="", authority="", rid="")),
    (_FAST, text_line(agent="Mozilla/5.0 (X11; Linux x86_64) Gecko", rid="-")),
    (_PY, text_line(start="2026-02-30T03:04:05.123Z")),  # no such day
    (_FAST, text_line(start="2026-01-02T03:04:05.9999999Z")),  # cut to 05.999999 on both, not rounded
    (_FAST, text_line(start="2026-01-02T03:04:05.1234567891234567891234Z")),
    (_FAST, text_line(start="1970-01-01T00:00:00Z")),
    (_PY, text_line(start="1969-12-31T23:59:59.999Z")),  # before the epoch: a bad line
    (_FAST, text_line(start="9999-12-31T23:59:59Z", duration="0")),  # the last second the store keeps
    (_PY, text_line(start="9999-12-31T23:59:59Z")),  # 7 ms later: ends past it, a bad line
    (_PY, text_line(start="9999-12-31T23:59:59.5Z")),  # past it: a bad line
    (_PY, text_line(start="2026-01-02T03:04:05.Z")),
    (_PY, text_line(start="2026-01-02T24:00:00Z")),
    (_PY, "# a comment"),
    (_PY, '[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS%'),  # a format line midway
    (_PY, istio_json()),  # a JSON line in a TEXT file
    (_FAST, ""),
]


def test_text_fast_path_on_pathological_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i, (_, line) in enumerate(PATHOLOGICAL_TEXT):
        path = tmp_path / f"t{i:02d}.log"
        good = text_line(d_remote=f"10.3.0.{i}:{41000 + i}", rid=f"g-{i}")
        path.write_bytes((good + "\r\n" + line + "\r\n").encode())  # CRLF line ends
        paths.append(path)
    fast, python = both_paths(tmp_path, monkeypatch, *paths)
    assert fast[:2] == python[:2]
    assert fast[2] == [f"t{i:02d}.log" for i, (where, _) in enumerate(PATHOLOGICAL_TEXT) if where == _PY]


# Every JSON form of every value the fast path reads (json_transform's leaves, _JSON_LEAVES), one line
# per file: the fast path keeps a file only if its rows are exactly the Python reader's.
_FORMS = {  # name -> the value's JSON text (None: the key is missing)
    "int": "80", "str_int": '"80"', "zeros": '"007"', "frac": "80.5", "exp": "1e3",
    "big": "123456789012345678901234567890", "neg": "-5", "negzero": "-0", "null": "null", "true": "true",
    "false": "false", "obj": '{"a": "UAEX"}',
    "arr": '["rbac_access_denied", "UAEX", 1]', "empty": '""', "dash": '"-"', "nonascii": '"\u00e9"',
    "quote": '"a\\"b"', "tab": '"a\\tb"', "plus": '"+7"', "space": '" 7"', "hex": '"0x10"', "under": '"1_000"',
    "arabic": '"\u0661"', "missing": None, "surrogate": '"\\ud83d\\ude00"',
}
_VALID = {"start_time": "2026-01-02T03:04:05.123Z", "protocol": "HTTP/3", "response_flags": "\u00e9,UAEX",
          "response_code_details": "rbac_access_denied_matched_policy[none]",
          "connection_termination_details": "rbac_access_denied", "bytes_received": "12", "bytes_sent": "34",
          "duration": "56", "request_id": "r-v", "x_request_id": "x-v", "upstream_host": "10.9.0.1:8080",
          "upstream_cluster": "BlackHoleCluster", "upstream_local_address": "[FD00::1]:40000",
          "downstream_local_address": "10.1.0.2:8080", "downstream_remote_address": "10.1.0.1:45000",
          "downstream_peer_uri_san": "-"}


def _escaped(value: str) -> str:
    """``value`` as a JSON string whose first character is written as a \\u escape."""
    return '"' + f"\\u{ord(value[0]):04x}" + json.dumps(value, ensure_ascii=False)[2:]


def _fast_forms(key: str) -> set[str]:
    """The forms of ``key`` the fast path must read itself (the others may go either way)."""
    absent = {"null", "missing", "empty", "dash"}
    if key in ("bytes_received", "bytes_sent", "duration"):
        return {"int", "str_int", "zeros", "valid", "escaped", "repeat_valid_first"} | absent
    if key in ("upstream_host", "upstream_local_address", "downstream_peer_uri_san"):
        return {"valid", "escaped", "repeat_valid_first"} | absent
    if key in ("start_time", "downstream_local_address", "downstream_remote_address"):
        return {"valid", "escaped", "repeat_valid_first"}
    if key == "x_request_id":  # read only when request_id is missing
        return {"valid", "escaped", "repeat_valid_first", "null", "missing", "empty", "dash", "nonascii", "surrogate"}
    return {"valid", "escaped", "repeat_valid_first", "null", "missing", "empty", "dash", "nonascii", "surrogate",
            "str_int", "zeros", "plus", "space", "hex", "under", "arabic"}


def test_json_every_value_form_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, must_be_fast = [], []
    for key in envoy._JSON_LEAVES:
        forms = dict(_FORMS, valid=json.dumps(_VALID[key]), escaped=_escaped(_VALID[key]))
        forms.update(repeat_valid_first=f"{json.dumps(_VALID[key])}, \"{key}\": 5",
                     repeat_valid_second=f"5, \"{key}\": {json.dumps(_VALID[key])}")
        for name, text in forms.items():
            n = len(paths)
            rec = json.loads(istio_json(request_id=f"g-{n}", downstream_remote_address=f"10.4.{n // 200}.{n % 200}:"
                                        f"{42000 + n}", downstream_peer_uri_san="-"))
            if key == "x_request_id":
                del rec["request_id"]
            rec[key] = "@@"
            line = json.dumps(rec, ensure_ascii=False)
            line = line.replace(f', "{key}": "@@"', "") if text is None else line.replace('"@@"', text)
            path = tmp_path / f"v{n:03d}-{key}-{name}.json"
            path.write_bytes((line + "\n").encode())
            paths.append(path)
            if name in _fast_forms(key):
                must_be_fast.append(path.name)
    fast, python = both_paths(tmp_path, monkeypatch, *paths)
    assert fast[:2] == python[:2]
    assert set(must_be_fast).isdisjoint(fast[2])
    assert len(fast[2]) > len(paths) // 3  # and many forms are left to Python
    assert python[0][1] > len(paths) // 2  # most lines are records


# -- lines whose upstream connection never happened (response flags) --------------------------------

OUT_DB = {"cluster": "outbound|5432||db.shop.svc.cluster.local", "u_host": "10.0.0.9:5432", "u_local": "-",
          "d_local": "10.96.0.20:5432"}  # the client's sidecar towards the database pod it picked
OUT_API = {"cluster": "outbound|8080||api.shop.svc.cluster.local", "u_host": "10.1.0.2:8080", "u_local": "-",
           "d_local": "10.96.0.10:8080"}
NO_UPSTREAM = {"u_host": "-", "u_local": "-"}  # no host chosen: the original destination (a ClusterIP)
TCP = {"request": "- -", "proto": "-", "code": "0", "details": "-"}
# (fields of the line, the row's source, destination, destination port, action, direction), the source
# port being 47000 + the line's number; text_line's names, turned into Istio's JSON keys by _flag_lines.
FLAG_CASES: list[tuple[dict[str, str], str, str, int, str, str | None]] = [
    ({**TCP, **OUT_DB, "flags": "UF"}, "10.1.7.1", "10.0.0.9", 5432, "drop", "egress"),  # 1: TCP, refused
    ({**OUT_DB, "code": "503", "flags": "UF,URX"}, "10.1.7.2", "10.0.0.9", 5432, "drop", "egress"),  # 2: HTTP
    ({**TCP, **OUT_DB, "flags": "URX"}, "10.1.7.3", "10.0.0.9", 5432, "drop", "egress"),  # 3: TCP connect attempts
    # 4: HTTP retries exhausted over a connection that existed (5xx answers): accept
    ({**OUT_API, "u_local": "10.1.7.4:47004", "d_remote": "127.0.0.6:47004", "code": "503", "flags": "URX"},
     "10.1.7.4", "10.1.0.2", 8080, "accept", "egress"),
    ({**OUT_API, **NO_UPSTREAM, "code": "503", "flags": "UH", "details": "no_healthy_upstream"},
     "10.1.7.5", "10.96.0.10", 8080, "drop", "egress"),  # 5: to the ClusterIP
    # 6: no route: Istio logs no upstream cluster (no side)
    ({**NO_UPSTREAM, "cluster": "-", "d_local": "10.96.0.11:80", "code": "404", "flags": "NR",
      "details": "route_not_found"}, "10.1.7.6", "10.96.0.11", 80, "drop", None),
    ({**OUT_API, **NO_UPSTREAM, "code": "503", "flags": "UO", "details": "upstream_reset_before_response_started"
      "{overflow}"}, "10.1.7.7", "10.96.0.10", 8080, "drop", "egress"),  # 7: circuit breaking
    ({**OUT_API, **NO_UPSTREAM, "code": "503", "flags": "NC", "details": "cluster_not_found"},
     "10.1.7.8", "10.96.0.10", 8080, "drop", "egress"),  # 8
    ({**OUT_API, **NO_UPSTREAM, "code": "503", "flags": "DF", "details": "dns_resolution_failure"},
     "10.1.7.9", "10.96.0.10", 8080, "drop", "egress"),  # 9
    ({**OUT_API, **NO_UPSTREAM, "code": "429", "flags": "RL", "details": "local_rate_limited"},
     "10.1.7.10", "10.96.0.10", 8080, "drop", "egress"),  # 10: answered by the client's sidecar
    ({**OUT_API, "code": "503", "flags": "DI,FI", "details": "fault_filter_abort"},
     "10.1.7.11", "10.1.0.2", 8080, "drop", "egress"),  # 11: fault injection
    # 12, 13: a connection existed, then broke or timed out: accept
    ({**OUT_API, "code": "503", "flags": "UC", "details": "upstream_reset_before_response_started"
      "{connection_termination}"}, "10.1.7.12", "10.1.0.2", 8080, "accept", "egress"),
    ({**OUT_API, "code": "504", "flags": "UT", "details": "response_timeout"},
     "10.1.7.13", "10.1.0.2", 8080, "accept", "egress"),
    # 14: the server's sidecar, its app's port closed: the peer reached the pod
    ({"code": "503", "flags": "UF", "details": "upstream_reset_before_response_started{connection_failure}"},
     "10.1.7.14", "10.1.0.2", 8080, "accept", "ingress"),
    # 15: an RBAC denial, and 16: REGISTRY_ONLY over TCP (Envoy flags it UH, no endpoints): still reject
    ({"code": "403", "flags": "-", "details": "rbac_access_denied_matched_policy[none]"},
     "10.1.7.15", "10.1.0.2", 8080, "reject", "ingress"),
    ({**TCP, **NO_UPSTREAM, "cluster": "BlackHoleCluster", "d_local": "93.184.216.34:443", "flags": "UH"},
     "10.1.7.16", "93.184.216.34", 443, "reject", "egress"),
]
_JSON_KEYS = {"proto": "protocol", "code": "response_code", "flags": "response_flags",
              "details": "response_code_details", "cluster": "upstream_cluster", "u_host": "upstream_host",
              "u_local": "upstream_local_address", "d_local": "downstream_local_address",
              "d_remote": "downstream_remote_address", "rid": "request_id"}


def _flag_lines() -> tuple[list[str], list[str]]:
    text, js = [], []
    for n, (fields, *_rest) in enumerate(FLAG_CASES, 1):
        kw = {"d_remote": f"10.1.7.{n}:{47000 + n}", "rid": f"f-{n}", **fields}
        text.append(text_line(**kw))
        kw.pop("request", None)
        values: dict[str, Any] = {_JSON_KEYS[k]: v for k, v in kw.items()}
        values["response_code"] = int(values.get("response_code", 200))
        if values.get("protocol") == "-":
            values["protocol"] = None  # a TCP line in Istio's JSON: no protocol
        js.append(istio_json(**values))
    return text, js


def _flag_rows() -> set[tuple[Any, ...]]:
    t0, t1 = datetime(2026, 1, 2, 3, 4, 5, 123000), datetime(2026, 1, 2, 3, 4, 5, 130000)
    return {(src, dst, 47000 + n, dport, "TCP", action, 1, t0, t1, 30, None, False, direction)
            for n, (_f, src, dst, dport, action, direction) in enumerate(FLAG_CASES, 1)}


@pytest.mark.parametrize("kind", ["text", "json"])
def test_no_upstream_connection_is_not_an_accepted_connection(kind: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """UF, UF,URX, TCP URX, UH, NR, UO, NC, DF, RL, FI on a line that is not the server's sidecar's: drop,
    on both paths (every line in the fast shape: DuckDB reads the file); a connection that existed (HTTP
    URX, UC, UT), an inbound UF and the denials stay as they were."""
    text, js = _flag_lines()
    path = tmp_path / f"flags.{'log' if kind == 'text' else 'json'}"
    path.write_text("\n".join(text if kind == "text" else js) + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast[2] == []  # the fast path read every line
    assert fast[:2] == python[:2]
    assert fast[0][:4] == (len(FLAG_CASES), len(FLAG_CASES), 0, {})
    assert fast[1] == _flag_rows()


def test_no_upstream_connection_in_python_only_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same lines in files the fast path leaves to Python (a bad line each), and in a custom format
    (no protocol: URX is read as TCP's)."""
    text, js = _flag_lines()
    a, b = tmp_path / "a.log", tmp_path / "b.json"
    a.write_text("\n".join([*text, text_line(start="x")]) + "\n")
    b.write_text("\n".join([*js, istio_json(start_time="x")]) + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, a)
    assert fast[2] == ["a.log"]
    assert fast[:2] == python[:2]
    assert fast[1] == _flag_rows()
    fast, python = both_paths(tmp_path / "j", monkeypatch, b)
    assert fast[2] == ["b.json"]
    assert fast[1] == python[1] == _flag_rows()
    custom = tmp_path / "custom.log"
    custom.write_text("[%START_TIME%] %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_LOCAL_ADDRESS% "
                      "%DOWNSTREAM_REMOTE_ADDRESS%\n"
                      "[2026-01-02T03:04:05.123Z] URX outbound|8080||api 10.1.0.2:8080 10.96.0.10:8080 "
                      "10.1.7.1:47001\n"
                      "[2026-01-02T03:04:05.123Z] UC outbound|8080||api 10.1.0.2:8080 10.96.0.10:8080 "
                      "10.1.7.2:47002\n")
    with FlowStore(tmp_path / "c" / "flows.duckdb") as s:
        s.ingest([custom], fmt="envoy")
        assert {(r["src_port"], r["action"]) for r in s.rows()} == {(47001, "drop"), (47002, "accept")}


@pytest.mark.parametrize("kind", ["text", "json"])
def test_no_upstream_connection_and_an_inbound_twin(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    """An outbound UF line has no inbound twin and is kept as drop; should the server's sidecar have
    logged the same request and connection all the same, its inbound line (accept: the server was
    reached) is kept and the outbound one skipped as logged by both, on both paths."""
    out = {"cluster": "outbound|8080||api", "u_host": "10.1.0.2:8080", "d_local": "10.96.0.10:8080",
           "code": "503", "flags": "UF"}
    lines = [  # the twin: the client's sidecar names the connection the server's sidecar saw
        text_line(rid="t-1", u_local="10.1.8.1:48001", d_remote="127.0.0.6:1", **out),
        text_line(rid="t-1", d_remote="10.1.8.1:48001"),
        text_line(rid="t-2", u_local="-", d_remote="10.1.8.2:48002", **out),
    ]
    if kind == "json":
        lines = [istio_json(request_id="t-1", upstream_cluster=out["cluster"], upstream_host=out["u_host"],
                            upstream_local_address="10.1.8.1:48001", downstream_local_address=out["d_local"],
                            downstream_remote_address="127.0.0.6:1", response_code=503, response_flags="UF"),
                 istio_json(request_id="t-1", downstream_remote_address="10.1.8.1:48001"),
                 istio_json(request_id="t-2", upstream_cluster=out["cluster"], upstream_host=out["u_host"],
                            upstream_local_address="-", downstream_local_address=out["d_local"],
                            downstream_remote_address="10.1.8.2:48002", response_code=503, response_flags="UF")]
    path = tmp_path / "twin.log"
    path.write_text("\n".join(lines) + "\n")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast[2] == []
    assert fast[:2] == python[:2]
    assert fast[0][:4] == (3, 2, 0, {"logged-by-both-sidecars": 1})
    assert {(r[0], r[1], r[2], r[5], r[12]) for r in fast[1]} == {
        ("10.1.8.1", "10.1.0.2", 48001, "accept", "ingress"), ("10.1.8.2", "10.1.0.2", 48002, "drop", "egress")}
