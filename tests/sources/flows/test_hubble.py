"""Cilium Hubble reader, through the flow store: every sample file, exact normalised rows."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import TooManyBadLines
from microseg.sources.flows import hubble

SAMPLES = Path("samples/flows/hubble")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, start, is_reply, tcp flags, direction, hints)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["ts_start"], r["is_reply"], r["tcp_flags"], r["direction"], r["src_workload"], r["dst_workload"])
            for r in store.rows()}


def ingest(store: FlowStore, *paths: Path) -> IngestReport:
    report = store.ingest(list(paths))
    assert all(f.format == "hubble" for f in report.files)
    return report


def test_aks_retina_workloads_and_is_reply(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "aks-retina-kapinger.jsonl")
    assert (report.lines, report.records, report.bad) == (3, 3, 0)
    good, bad = "default/kapinger-good", "default/kapinger-bad"
    assert rows(store) == {
        # two reply packets (PSH+ACK, FIN+ACK) of the server kapinger-good:8080
        ("10.0.1.13", "10.0.1.178", 8080, 60778, "TCP", "accept", 2, datetime(2025, 4, 16, 18, 49, 59, 450463),
         True, 8 | 16 | 1, "egress", good, bad),
        ("10.0.1.178", "10.0.1.13", 60778, 8080, "TCP", "accept", 1, datetime(2025, 4, 16, 18, 49, 59, 450549),
         False, 1 | 16, "egress", bad, good),
    }
    (late,) = [r for r in store.rows() if r["records"] == 2]
    assert late["ts_end"] == datetime(2025, 4, 16, 18, 49, 59, 450508)  # nanoseconds cut to microseconds


def test_cilium_docs_export_trimmed_fields(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "cilium-docs-export-sample.jsonl")
    assert rows(store) == {
        # ICMPv6 router solicitation, dropped; no endpoint data at all
        ("fe80::64d8:8aff:fe72:fc14", "ff02::2", 0, 0, "ICMP", "drop", 1, datetime(2023, 8, 21, 12, 12, 13, 517394),
         None, None, None, None, None),
        # no workloads[]: deathstar's ReplicaSet suffix is stripped, "xwing" is kept whole (it has vowels)
        ("10.244.1.60", "10.244.1.5", 44916, 80, "TCP", "drop", 1, datetime(2023, 8, 21, 12, 12, 18, 510175),
         False, 2, None, "default/xwing", "default/deathstar"),
    }


def test_printer_fixture_l7_kept_as_l4_and_reserved_identities(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "hubble-printer-jsonpb-fixture.jsonl")
    # The L3/L4 drop and the L7 Kafka record share their L4 tuple; identity 4 is reserved (health).
    assert rows(store) == {
        ("1.1.1.1", "2.2.2.2", 31793, 8080, "TCP", "drop", 2, datetime(1970, 1, 1, 0, 20, 34, 567800), False, None,
         None, None, None),
    }


def test_k3d_policy_denied(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "k3d-policy-denied.jsonl")
    assert rows(store) == {
        ("10.0.1.116", "10.0.1.117", 38160, 8080, "TCP", "drop", 1, datetime(2026, 9, 20, 14, 56, 45, 779111),
         False, 2, "egress", "agent-restricted/agent-probe", "corp-prod/corp-prod-target"),
    }


def test_l7_http_denied(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "l7-http-denied-fixture.jsonl")
    assert rows(store) == {
        ("10.0.1.50", "10.0.2.60", 45000, 8080, "TCP", "drop", 1, datetime(2026, 8, 3, 6, 0), None, None, "ingress",
         "demo/client-prod-1", "demo/service-abc"),
    }


def test_policy_verdict_deny(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "policy-verdict-deny.jsonl")
    assert rows(store) == {
        ("10.0.1.235", "10.0.0.21", 60524, 80, "TCP", "drop", 1, datetime(2026, 7, 31, 10, 41, 2, 202450), False, 2,
         "egress", "net-lab/traffic-generator", "net-lab/echo-server"),
    }


def test_tke_reserved_world_and_host_give_no_hint(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "tke-cilium-1.19-export.jsonl")
    assert rows(store) == {
        ("169.254.128.9", "10.20.0.4", 60002, 57706, "TCP", "accept", 1, datetime(2026, 2, 24, 8, 47, 58, 42012),
         True, 8 | 16, "egress", None, "kube-system/csi-cbs-controller"),
        ("10.10.21.241", "9.134.108.44", 58012, 9922, "TCP", "accept", 1, datetime(2026, 2, 24, 8, 43, 39, 70396),
         False, 2, "egress", None, None),
    }


def test_every_sample(store: FlowStore, shared: Path) -> None:
    files = sorted((shared / SAMPLES).glob("*.jsonl"))
    assert len(files) == 7
    report = ingest(store, *files)
    assert (report.lines, report.records, report.bad, report.skipped) == (12, 12, 0, {})
    assert all(r["bytes"] is None and r["packets"] is None for r in store.rows())


@pytest.mark.parametrize(("pod", "workload"), [
    ("kapinger-good-64cbf459c4-q4tr9", "kapinger-good"),  # Deployment: ReplicaSet hash + 5
    ("echo-server-65887564dc-jjw7k", "echo-server"),
    ("old-app-3286944133-x7k2p", "old-app"),  # pre-1.8 numeric pod-template-hash
    ("kube-proxy-x7k2p", "kube-proxy"),  # DaemonSet / Job: generated 5-character suffix
    ("xwing", "xwing"),
    ("agent-probe", "agent-probe"),  # "probe" has vowels: not a generated suffix
    ("web-0", "web-0"),  # StatefulSet ordinal: kept (the address decides)
    ("client-prod-1", "client-prod-1"),
])
def test_workload_from_pod(pod: str, workload: str) -> None:
    assert hubble.workload_from_pod(pod) == workload


FLOW: dict[str, Any] = {
    "time": "2026-01-02T03:04:05.123456789Z", "verdict": "FORWARDED",
    "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
    "l4": {"UDP": {"source_port": "5353", "destination_port": 53}},  # uint32 as a string is allowed
    "source": {"namespace": "a", "pod_name": "x-7c9bf5d8f6-bx9kz", "identity": "70000"},
    "destination": {"namespace": "kube-system", "labels": ["k8s:k8s-app=kube-dns"],
                    "workloads": [{"name": "coredns", "kind": "Deployment"}]},
}


def write(tmp_path: Path, lines: list[str], name: str = "h.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bare_flows_strings_for_numbers_skips_and_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        json.dumps(FLOW),  # 1: a bare Flow, no GetFlowsResponse wrapper
        json.dumps({"node_status": {"state": "NODE_CONNECTED"}, "node_name": "n1"}),  # 2: no traffic
        json.dumps({"flow": {**FLOW, "verdict": "TRACED"}}),  # 3: no verdict reached: skipped
        "{not json",  # 4
        json.dumps({"flow": {**FLOW, "verdict": "VERDICT_UNKNOWN"}}),  # 5: never guessed as accept
        json.dumps({"flow": {**FLOW, "IP": {"source": "10.0.0.300", "destination": "10.0.0.2"}}}),  # 6
        json.dumps({"flow": {**FLOW, "verdict": 4, "is_reply": True}}),  # 7: AUDIT as an enum number
        "",  # 8: blank
        json.dumps({"flow": {**FLOW, "IP": None, "verdict": "DROPPED"}}),  # 9: no IP layer (ARP etc.): skipped
        json.dumps({"flow": {**FLOW, "l4": {"TCP": {"source_port": 70000, "destination_port": 1}}}}),  # 10
    ]
    report = store.ingest([write(tmp_path, lines)], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (9, 2, 4)
    assert report.skipped == {"no-verdict": 1, "non-flow": 1, "non-ip": 1}
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (4, "json"), (5, "verdict"), (6, "IP.source"), (10, "l4.TCP.source_port")]
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 5353, 53, "UDP", "accept", 1, datetime(2026, 1, 2, 3, 4, 5, 123456), None, None,
         None, "a/x", "kube-system/coredns"),
        ("10.0.0.1", "10.0.0.2", 5353, 53, "UDP", "audit", 1, datetime(2026, 1, 2, 3, 4, 5, 123456), True, None,
         None, "a/x", "kube-system/coredns"),
    }


def test_reply_true_is_used_only_without_is_reply(store: FlowStore, tmp_path: Path) -> None:
    lines = [json.dumps({**FLOW, "reply": True}), json.dumps({**FLOW, "reply": False, "is_reply": True}),
             json.dumps({**FLOW, "reply": True, "is_reply": False})]
    store.ingest([write(tmp_path, lines)])
    assert sorted((r["is_reply"], r["records"]) for r in store.rows()) == [(False, 1), (True, 2)]


def test_gzip_and_threshold(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"flow": FLOW}) + "\n" + "garbage\n")
    with pytest.raises(TooManyBadLines) as err:
        store.ingest([path])
    assert (err.value.line, err.value.field) == (2, "json")
    assert store.rows() == []
    report = store.ingest([path], bad_threshold=0.5)
    assert (report.records, report.bad) == (1, 1)


def test_sniff() -> None:
    assert hubble.sniff([json.dumps({"flow": FLOW})])
    assert hubble.sniff([json.dumps(FLOW)])
    assert hubble.sniff([json.dumps({"lost_events": {}})])
    assert not hubble.sniff(['{"ts": 1, "uid": "C1", "id.orig_h": "10.0.0.1"}'])  # Zeek JSON
    assert not hubble.sniff(["version account-id srcaddr dstaddr"])
    assert not hubble.sniff(["[1, 2]"])


def test_repeated_values_are_judged_the_same_every_time(store: FlowStore, tmp_path: Path) -> None:
    # Addresses, pod names and hints are memoised: a repeated bad value stays bad on every line, and a
    # repeated good one keeps its canonical form and workload.
    bad_ip = {"flow": {**FLOW, "IP": {"source": "10.0.0.300", "destination": "10.0.0.2"}}}
    v6 = {"flow": {**FLOW, "IP": {"source": "FD00:0:0::1", "destination": "fd00::2"},
                   "source": {"namespace": "a", "pod_name": "web-7c9bf5d8f6-bx9kz"},
                   "destination": {"namespace": "b", "workloads": [{"name": "has space"}]}}}
    lines = [json.dumps(bad_ip), json.dumps(v6), json.dumps(bad_ip), json.dumps({**v6, "time": FLOW["time"]}),
             json.dumps({"flow": {**v6["flow"], "destination": {"namespace": "b", "pod_name": "db-0"}}})] * 2
    report = store.ingest([write(tmp_path, lines)], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (10, 2, 8)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (1, "IP.source"), (2, "destination"), (3, "IP.source"), (4, "destination"),
        (6, "IP.source"), (7, "destination"), (8, "IP.source"), (9, "destination")]
    assert rows(store) == {
        ("fd00::1", "fd00::2", 5353, 53, "UDP", "accept", 2, datetime(2026, 1, 2, 3, 4, 5, 123456), None, None,
         None, "a/web", "b/db-0"),
    }


def test_wrongly_typed_labels_and_direction_are_bad_lines_not_crashes(store: FlowStore, tmp_path: Path) -> None:
    """A number where Hubble writes a list of labels, or an object where it writes an enum, is a malformed
    line reported with its field, never an internal error and never a guessed hint."""
    lines = [
        json.dumps({"flow": {**FLOW, "source": {**FLOW["source"], "labels": 7}}}),  # 1
        json.dumps({"flow": {**FLOW, "traffic_direction": ["INGRESS"]}}),  # 2
        json.dumps({"flow": {**FLOW, "traffic_direction": True}}),  # 3: a boolean is not the enum number 1
        json.dumps({"flow": {**FLOW, "traffic_direction": 2}}),  # 4: EGRESS as its enum number: fine
    ]
    report = store.ingest([write(tmp_path, lines)], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (4, 1, 3)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (1, "source.labels"), (2, "flow.traffic_direction"), (3, "flow.traffic_direction")]
