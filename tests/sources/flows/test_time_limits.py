"""A time after 9999-12-31T23:59:59Z is one bad line in every flow reader, on its fast path and its Python path.

The store refuses such a time per *aggregate* (the records of a file that agree on addresses, ports,
protocol, action and day), after the reader staged them: a reader that staged a far-future time unchecked
would make a good line of the same aggregate bad with it, and the bad-line sample might name neither. So
each reader checks per line. Each case here is a file of two lines that would aggregate together (the
first starts on 9999-12-31), the second's start or end written past the limit in the format's own
notation (epoch seconds, milliseconds, ISO 8601 with an offset or a fraction, a duration pushing the end
past), or exactly at the limit (a record). The lines follow the shapes of benchmarks/bench_formats.py's
generators (the readers' benchmark data) and ../shared/samples/flows/. Azure (checked per tuple in
test_azure.py), AWS VPC and the generic CSV (test_aws_vpc.py, test_generic_csv_range.py) are not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from microseg.sources.flows import MAX_EPOCH_SECONDS, calico, envoy, gcp, hubble, nfdump, zeek
from tests.sources.flows.test_fuzz_lines import BENCH, NF43_HEADER, NF_CURRENT_HEADER, NF_TAIL

LIMIT = MAX_EPOCH_SECONDS  # 9999-12-31T23:59:59Z
BASE = LIMIT - 3599  # 9999-12-31T23:00:00Z: the first line's start, the same day as the limit


@dataclass(frozen=True)
class Form:
    """One format: how to write a line of it with a start and an end token, and how to read it in Python
    only (``attr`` of ``module`` builds the fast path; ``python_only`` replaces it)."""

    name: str
    module: ModuleType
    attr: str
    python_only: Callable[..., Any]
    fmt: str
    ext: str
    line: Callable[[int, str, str], str]  # (line index, start token, end token) -> the line
    base: tuple[str, str]  # the first line's tokens (a good record starting on 9999-12-31)
    header: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)


def _none(*_a: Any, **_k: Any) -> None:
    return None


def _nfdump_python(_con: Any, files: Any, *_a: Any) -> Any:
    return nfdump._Plan(python=set(range(len(files))))


def _zeek_tsv(i: int, ts: str, duration: str) -> str:
    return "\t".join((ts, f"CTIMELIMIT{i:08d}", "10.2.25.10", "34835", "10.1.177.10", "27017", "tcp", "-", duration,
                      "62720", "125440", "SF", "T", "T", "0", "ShADadfF", "98", "66640", "98", "129360", "(empty)"))


def _zeek_json(i: int, ts: str, duration: str) -> str:
    return _json({"_path": "conn", "ts": START, "uid": f"CTIMELIMIT{i:08d}", "id.orig_h": "10.2.25.10",
                  "id.orig_p": 34835, "id.resp_h": "10.1.177.10", "id.resp_p": 27017, "proto": "tcp", "duration": END,
                  "orig_bytes": 62720, "resp_bytes": 125440, "conn_state": "SF", "missed_bytes": 0,
                  "history": "ShADadfF", "orig_pkts": 99, "orig_ip_bytes": 94080, "resp_pkts": 98,
                  "resp_ip_bytes": 94080}, ts, duration)


def _nf48(_i: int, ts: str, te: str) -> str:
    return (f"{ts},{te},0.000,10.2.25.10,10.1.177.10,34835,27017,TCP,.AP.SF,0,0,196,188160,98,62720{NF_TAIL}"
            ",    0.000,    0.000,    0.000,10.32.0.1,0/0,1,2026-01-02 18:51:25.000")


def _nf43(_i: int, ts: str, te: str) -> str:
    return f"{ts},{te},0.000,10.2.25.10,10.1.177.10,34835,27017,TCP,.AP.SF,0,0,196,188160,0,0{NF_TAIL},0.0.0.0,0/0"


def _nf_current(_i: int, first_seen: str, duration: str) -> str:
    return f"{first_seen},{duration},6,10.2.25.10,34835,10.1.177.10,27017,196,188160,1"


def _calico_json(_i: int, start: str, end: str) -> str:
    return _json({
        "start_time": START, "end_time": END, "source_ip": "10.2.25.10", "source_name": "app-81-7d9f8c6b5-00275",
        "source_name_aggr": "app-81-7d9f8c6b5-*", "source_namespace": "ns-0", "source_port": 34835,
        "source_type": "wep", "source_labels": {"labels": ["app=app-81"]}, "dest_ip": "10.1.177.10",
        "dest_name": "app-80-7d9f8c6b5-00177", "dest_name_aggr": "app-80-7d9f8c6b5-*", "dest_namespace": "ns-1",
        "dest_port": 27017, "dest_type": "wep", "dest_labels": {"labels": ["app=app-80"]}, "proto": "tcp",
        "action": "allow", "reporter": "dst",
        "policies": {"all_policies": ["0|default|prod/default.allow-app|allow|0"]},
        "bytes_in": 62720, "bytes_out": 125440, "num_flows": 1, "num_flows_started": 1, "num_flows_completed": 1,
        "packets_in": 98, "packets_out": 98, "http_requests_allowed_in": 0, "http_requests_denied_in": 0,
        "original_source_ips": None, "num_original_source_ips": 0, "host": "node-1", "@timestamp": 1767380100},
        start, end)


def _calico_legacy(_i: int, start: str, end: str) -> str:
    return (f"{start} {end} wep ns-0 app-81-7d9f8c6b5-00275 - wep ns-1 app-80-7d9f8c6b5-00177 - 10.2.25.10 "
            "10.1.177.10 6 34835 27017 1 1 1 in 98 98 62720 125440 allow")


def _envoy_text(i: int, start: str, duration: str) -> str:
    return (f'[{start}] "GET /api/v1/items HTTP/1.1" 200 - via_upstream - "-" 0 188160 {duration} 13376 "-" '
            f'"Go-http-client/1.1" "d95bafc8-f2a4-d27b-dcf4-{i:012d}" "svc-177:27017" "127.0.0.1:27017" '
            "inbound|27017|| 127.0.0.1:34834 10.1.177.10:27017 10.2.25.10:34835 "
            "outbound_.27017_._.svc-177.prod.svc.cluster.local default")


def _envoy_json(i: int, start: str, duration: str) -> str:
    return _json({
        "start_time": START, "method": "GET", "path": "/api/v1/items", "protocol": "HTTP/1.1", "response_code": 200,
        "response_flags": "-", "response_code_details": "via_upstream", "connection_termination_details": None,
        "upstream_transport_failure_reason": None, "bytes_received": 0, "bytes_sent": 188160, "duration": END,
        "upstream_service_time": None, "x_forwarded_for": None, "user_agent": "Go-http-client/1.1",
        "request_id": f"req-{i}", "authority": "svc-177:27017", "upstream_host": "127.0.0.1:27017",
        "upstream_cluster": "inbound|27017||", "upstream_local_address": "127.0.0.1:34834",
        "downstream_local_address": "10.1.177.10:27017", "downstream_remote_address": "10.2.25.10:34835",
        "requested_server_name": "outbound_.27017_._.svc-177.prod.svc.cluster.local", "route_name": "default"},
        start, duration)


def _gcp(i: int, start: str, end: str) -> str:
    vm = {"project_id": "prod-project", "region": "europe-west1", "zone": "europe-west1-b"}
    return _json({
        "insertId": f"timelimit{i}",
        "jsonPayload": {"bytes_sent": "188160", "connection": {"dest_ip": "10.1.177.10", "dest_port": 27017,
                                                               "protocol": 6, "src_ip": "10.2.25.10",
                                                               "src_port": 34835},
                        "dest_instance": vm | {"vm_name": "vm-177"}, "end_time": END, "packets_sent": "196",
                        "reporter": "SRC", "rtt_msec": "3", "src_instance": vm | {"vm_name": "vm-275"},
                        "start_time": START},
        "logName": "projects/prod-project/logs/compute.googleapis.com%2Fvpc_flows",
        "resource": {"labels": {"project_id": "prod-project"}, "type": "gce_subnetwork"},
        "timestamp": "2026-01-02T18:56:05.746767282Z"}, start, end)


def _hubble(i: int, time: str, _end: str) -> str:
    def pod(n: int, app: int, ns: int) -> dict[str, Any]:
        return {"ID": 100 + n, "identity": 20000 + app, "cluster_name": "prod", "namespace": f"ns-{ns}",
                "labels": [f"k8s:app=app-{app}"], "pod_name": f"app-{app}-7d9f8c6b5-{n:05d}",
                "workloads": [{"name": f"app-{app}", "kind": "Deployment"}]}

    flow = {"time": START, "uuid": f"timelimit-{i}", "verdict": "FORWARDED",
            "IP": {"source": "10.2.25.10", "destination": "10.1.177.10", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 34835, "destination_port": 27017, "flags": {"SYN": True}}},
            "source": pod(275, 81, 0), "destination": pod(177, 80, 1), "Type": "L3_L4", "node_name": "prod/node-1",
            "event_type": {"type": 4}, "traffic_direction": "EGRESS", "is_reply": False}
    return _json({"flow": flow, "node_name": "prod/node-1", "time": START}, time, time)


# Placeholders of a JSON line's time values, replaced by the raw JSON tokens of a case (a number's exact
# text: 253402300799.000001 is no float)
START, END = "@START@", "@END@"


def _json(doc: dict[str, Any], start: str, end: str) -> str:
    return json.dumps(doc, separators=(",", ":")).replace(_q(START), start).replace(_q(END), end)


def _q(text: str) -> str:
    return json.dumps(text)


ZEEK_TSV = list(BENCH.BY_NAME["zeek-tsv"].header)
FORMS = {f.name: f for f in (
    Form("zeek-tsv", zeek, "_plan", _none, "zeek", "log", _zeek_tsv, (f"{BASE}.000000", "1.000000"),
         ZEEK_TSV, list(BENCH.BY_NAME["zeek-tsv"].footer)),
    Form("zeek-json", zeek, "_plan", _none, "zeek", "ndjson", _zeek_json, (_q("9999-12-31T23:00:00.000000Z"), "1.0")),
    Form("nfdump-48", nfdump, "_plan", _nfdump_python, "nfdump", "csv", _nf48,
         ("9999-12-31 23:00:00", "9999-12-31 23:00:01"), [BENCH.NFDUMP_HEADER]),
    Form("nfdump-43", nfdump, "_plan", _nfdump_python, "nfdump", "csv", _nf43,
         ("9999-12-31 23:00:00", "9999-12-31 23:00:01"), NF43_HEADER),
    Form("nfdump-current", nfdump, "_plan", _nfdump_python, "nfdump", "txt", _nf_current,
         ("9999-12-31 23:00:00.000", "1.000"), [NF_CURRENT_HEADER]),
    Form("calico-json", calico, "_scan", _none, "calico", "json", _calico_json, (str(BASE), str(BASE + 300))),
    Form("calico-legacy", calico, "_scan", _none, "calico", "txt", _calico_legacy, (str(BASE), str(BASE + 300)),
         [BENCH.CALICO_LEGACY_HEADER]),
    Form("envoy-text", envoy, "_scan", _none, "envoy", "log", _envoy_text, ("9999-12-31T23:00:00.000Z", "1000")),
    Form("envoy-json", envoy, "_scan", _none, "envoy", "json", _envoy_json,
         (_q("9999-12-31T23:00:00.000Z"), "1000")),
    Form("gcp", gcp, "_scan", _none, "gcp", "ndjson", _gcp,
         (_q("9999-12-31T23:00:00.000000000Z"), _q("9999-12-31T23:00:01.000000000Z"))),
    Form("hubble", hubble, "_scan", _none, "hubble", "jsonl", _hubble, (_q("9999-12-31T23:00:00.000000000Z"), "")),
)}

# (form, case id, start token, end token, the field the bad line names; None: a record, at the limit)
CASES: list[tuple[str, str, str, str, str | None]] = [
    # Zeek TSV: ts in epoch seconds, the end is ts + duration
    ("zeek-tsv", "at-limit", f"{LIMIT}.000000", "0.000000", None),
    ("zeek-tsv", "start-1us-past", f"{LIMIT}.000001", "0.000000", "ts"),
    ("zeek-tsv", "start-past", f"{LIMIT + 1}.000000", "0.000000", "ts"),
    ("zeek-tsv", "start-14-digits", "99999999999999", "0", "ts"),
    ("zeek-tsv", "end-at-limit", f"{BASE}.000000", "3599.000000", None),
    ("zeek-tsv", "end-1us-past", f"{BASE}.000000", "3599.000001", "duration"),
    ("zeek-tsv", "end-far", f"{BASE}.000000", "99999999999.500000", "duration"),
    # Zeek JSON: ISO 8601, epoch seconds, epoch milliseconds (JSON::TS_MILLIS)
    ("zeek-json", "iso-at-limit", _q("9999-12-31T23:59:59Z"), "0", None),
    ("zeek-json", "iso-fraction-cut", _q("9999-12-31T23:59:59.0000009Z"), "0", None),
    ("zeek-json", "iso-offset-at-limit", _q("9999-12-31T22:59:59-01:00"), "0", None),
    ("zeek-json", "iso-1us-past", _q("9999-12-31T23:59:59.000001Z"), "0", "ts"),
    ("zeek-json", "iso-offset-past", _q("9999-12-31T23:59:59-01:00"), "0", "ts"),
    ("zeek-json", "seconds-past", f"{LIMIT}.5", "0", "ts"),
    ("zeek-json", "seconds-text-past", _q(f"{LIMIT + 1}.000000"), "0", "ts"),
    ("zeek-json", "millis-at-limit", str(LIMIT * 1000), "0", None),
    ("zeek-json", "millis-past", str(LIMIT * 1000 + 1), "0", "ts"),
    ("zeek-json", "millis-far", str(10 ** 18), "0", "ts"),
    ("zeek-json", "end-past", _q("9999-12-31T23:00:00Z"), "3599.000001", "duration"),
    ("zeek-json", "end-past-millis-start", str(BASE * 1000), "3600", "duration"),
    # nfdump: local times (UTC here), or epoch milliseconds (csv-fast); the end is te, or start + duration
    ("nfdump-48", "at-limit", "9999-12-31 23:59:59", "9999-12-31 23:59:59", None),
    ("nfdump-48", "millis-at-limit", str(LIMIT * 1000), str(LIMIT * 1000), None),
    ("nfdump-48", "start-fraction-past", "9999-12-31 23:59:59.5", "9999-12-31 23:59:59.5", "ts"),
    ("nfdump-48", "start-millis-past", str(LIMIT * 1000 + 1), str(LIMIT * 1000 + 1), "ts"),
    ("nfdump-48", "start-millis-far", str(10 ** 19), str(10 ** 19), "ts"),
    ("nfdump-48", "end-fraction-past", "9999-12-31 23:00:00", "9999-12-31 23:59:59.000001", "te"),
    ("nfdump-48", "end-millis-past", str(BASE * 1000), str(LIMIT * 1000 + 1), "te"),
    ("nfdump-43", "at-limit", "9999-12-31 23:59:59", "9999-12-31 23:59:59", None),
    ("nfdump-43", "start-millis-past", str(LIMIT * 1000 + 1), str(LIMIT * 1000 + 1), "ts"),
    ("nfdump-43", "end-fraction-past", "9999-12-31 23:00:00", "9999-12-31 23:59:59.5", "te"),
    ("nfdump-current", "at-limit", "9999-12-31 23:59:59.000", "0.000", None),
    ("nfdump-current", "start-fraction-past", "9999-12-31 23:59:59.001", "0.000", "firstSeen"),
    ("nfdump-current", "end-at-limit", "9999-12-31 23:00:00.000", "3599.000", None),
    ("nfdump-current", "end-past", "9999-12-31 23:00:00.000", "3599.001", "duration"),
    ("nfdump-current", "end-far", "9999-12-31 23:00:00.000", "99999999999999.000", "duration"),
    # Calico: epoch seconds
    ("calico-json", "at-limit", str(LIMIT), str(LIMIT), None),
    ("calico-json", "start-past", str(LIMIT + 1), str(LIMIT + 1), "start_time"),
    ("calico-json", "start-millis", str(BASE * 1000), str(BASE * 1000), "start_time"),
    ("calico-json", "end-past", str(BASE), str(LIMIT + 1), "end_time"),
    ("calico-json", "end-far", str(BASE), str(10 ** 19), "end_time"),
    ("calico-legacy", "at-limit", str(LIMIT), str(LIMIT), None),
    ("calico-legacy", "start-past", str(LIMIT + 1), str(LIMIT + 1), "start_time"),
    ("calico-legacy", "end-past", str(BASE), str(LIMIT + 1), "end_time"),
    ("calico-legacy", "end-far", str(BASE), str(10 ** 19), "end_time"),
    # Envoy: an RFC 3339 start and a duration in milliseconds
    ("envoy-text", "at-limit", "9999-12-31T23:59:59.000Z", "0", None),
    ("envoy-text", "fraction-cut", "9999-12-31T23:59:59.0000009Z", "0", None),
    ("envoy-text", "start-1ms-past", "9999-12-31T23:59:59.001Z", "0", "start_time"),
    ("envoy-text", "start-offset-past", "9999-12-31T23:59:59.000-0100", "0", "start_time"),
    ("envoy-text", "end-at-limit", "9999-12-31T23:00:00.000Z", "3599000", None),
    ("envoy-text", "end-past", "9999-12-31T23:00:00.000Z", "3599001", "duration"),
    ("envoy-text", "end-far", "9999-12-31T23:00:00.000Z", "999999999999999", "duration"),
    ("envoy-json", "at-limit", _q("9999-12-31T23:59:59.000Z"), "0", None),
    ("envoy-json", "start-1ms-past", _q("9999-12-31T23:59:59.001Z"), "0", "start_time"),
    ("envoy-json", "start-offset-past", _q("9999-12-31T23:59:59-01:00"), "0", "start_time"),
    ("envoy-json", "end-at-limit", _q("9999-12-31T23:00:00.000Z"), "3599000", None),
    ("envoy-json", "end-past", _q("9999-12-31T23:00:00.000Z"), "3599001", "duration"),
    ("envoy-json", "end-far", _q("9999-12-31T23:00:00.000Z"), "999999999999999", "duration"),
    # GCP: RFC 3339 start and end, nanoseconds
    ("gcp", "at-limit", _q("9999-12-31T23:59:59Z"), _q("9999-12-31T23:59:59.000000999Z"), None),
    ("gcp", "offset-at-limit", _q("9999-12-31T22:59:59-01:00"), _q("9999-12-31T22:59:59-01:00"), None),
    ("gcp", "start-1us-past", _q("9999-12-31T23:59:59.000001Z"), _q("9999-12-31T23:59:59.000001Z"), "start_time"),
    ("gcp", "start-offset-past", _q("9999-12-31T23:59:59-01:00"), _q("9999-12-31T23:59:59-01:00"), "start_time"),
    ("gcp", "end-fraction-past", _q("9999-12-31T23:00:00.000000000Z"), _q("9999-12-31T23:59:59.999999999Z"),
     "end_time"),
    ("gcp", "end-offset-past", _q("9999-12-31T23:00:00Z"), _q("9999-12-31T23:30:00-01:00"), "end_time"),
    # Hubble: one RFC 3339 time, nanoseconds
    ("hubble", "at-limit", _q("9999-12-31T23:59:59.000000999Z"), "", None),
    ("hubble", "offset-at-limit", _q("9999-12-31T23:59:59+01:00"), "", None),
    ("hubble", "1us-past", _q("9999-12-31T23:59:59.000001Z"), "", "time"),
    ("hubble", "offset-past", _q("9999-12-31T23:59:59-01:00"), "", "time"),
]


def _ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: Form, path: Path, python_only: bool
            ) -> tuple[Any, list[tuple[Any, ...]]]:
    """(lines, records, bad, skipped, bad samples) and the rows' (records, packets, start) of one run."""
    real = getattr(form.module, form.attr)
    used: list[Any] = []

    def spy(*a: Any, **k: Any) -> Any:
        used.append(real(*a, **k))
        return used[-1]

    with monkeypatch.context() as m:
        m.setattr(form.module, form.attr, form.python_only if python_only else spy)
        with FlowStore(tmp_path / ("python" if python_only else "fast") / "flows.duckdb") as s:
            report = s.ingest([path], fmt=form.fmt, bad_threshold=1.0)
            rows = sorted((r["records"], r["packets"], r["ts_start"]) for r in s.rows())
    if not python_only:
        # Tried; a reader may hand a batch with a bad line to Python (Zeek JSON does), but not a good one
        assert used and (used[0] is not None or report.bad), "the fast path was not taken"
    return (report.lines, report.records, report.bad, dict(report.skipped),
            [(b.line, b.field, b.message, b.text) for b in report.bad_samples]), rows


@pytest.mark.parametrize(("form_name", "start", "end", "bad_field"), [c[:1] + c[2:] for c in CASES],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_time_after_9999_is_one_bad_line_and_the_good_line_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form_name: str, start: str, end: str,
        bad_field: str | None) -> None:
    form = FORMS[form_name]
    lines = [form.line(1, *form.base), form.line(2, start, end)]
    path = tmp_path / f"{form.name}.{form.ext}"
    path.write_text("\n".join([*form.header, *lines, *form.footer]) + "\n")
    first = len(form.header) + 1
    fast = _ingest(tmp_path, monkeypatch, form, path, python_only=False)
    python = _ingest(tmp_path, monkeypatch, form, path, python_only=True)
    for (lines_read, records, bad, _skipped, samples), rows in (fast, python):
        assert sum(r[0] for r in rows) == records
        if bad_field is None:
            assert (records, bad, samples) == (2, 0, [])
        else:
            # The first line is a record of its own: never counted bad with the second
            assert (records, bad) == (1, 1)
            assert [(no, f) for no, f, _m, _t in samples] == [(first + 1, bad_field)]
            assert samples[0][3] == lines[1][:500]  # a sample keeps 500 characters
            assert len(rows) == 1 and rows[0][0] == 1
        assert lines_read >= 2
    assert fast == python
