"""Calico Enterprise flow log reader, through the flow store: every sample file, exact normalised rows."""

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
from microseg.ir.model import Inventory, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.flows import FORMATS, calico, detect, head_lines
from tests.sources.flows import _fastpath

SAMPLES = Path("samples/flows/calico")
ES_DOC = "enterprise-es-doc-example.json"
VERBATIM = "enterprise-es-doc-example.verbatim.txt"
FILE_FORM = "enterprise-file-legacy.txt"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, start, end, bytes, packets, is_reply, direction,
#  hints)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["ts_start"], r["ts_end"], r["bytes"], r["packets"], r["is_reply"], r["direction"], r["src_workload"],
             r["dst_workload"]) for r in store.rows()}


def ingest(store: FlowStore, *paths: Path, bad_threshold: float = 0.01) -> IngestReport:
    report = store.ingest(list(paths), bad_threshold=bad_threshold)
    assert all(f.format == "calico" for f in report.files)
    return report


ES_ROW = ("192.168.47.9", "192.168.138.79", 42106, 80, "TCP", "accept", 1, datetime(2020, 8, 11, 17, 14, 43),
          datetime(2020, 8, 11, 17, 19, 43), 388 + 1113, 6 + 5, False, "ingress", "policy-demo/access",
          "policy-demo/nginx")


def test_es_document_pretty_printed(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / ES_DOC)
    assert (report.lines, report.records, report.bad, report.skipped) == (1, 1, 0, {})
    # reporter dst -> ingress; the aggregated names lose "*" and the pod-template-hash
    assert rows(store) == {ES_ROW}


def test_verbatim_doc_trailing_comma_is_a_bad_record(store: FlowStore, shared: Path) -> None:
    path = shared / SAMPLES / VERBATIM
    with pytest.raises(TooManyBadLines):
        ingest(store, path)
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (1, 0, 1)
    (bad,) = report.bad_samples
    # the "]" after the trailing comma inside pending_policies: never guessed, reported where it is
    # the store records resolved paths, so a ../shared that is a symlink must not matter
    assert (bad.file, bad.line, bad.field, bad.text.strip()) == (str(path.resolve()), 44, "json", "]")
    assert rows(store) == set()


def test_file_form_aggregated_names_and_addresses(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / FILE_FORM)
    assert (report.lines, report.records, report.bad) == (1, 1, 0)  # the header is no record
    # srcIP/dstIP/srcPort "-" (aggregated): placeholders; reporter "out" -> egress; proto 6
    assert rows(store) == {
        ("0.0.0.0", "0.0.0.0", 0, 3000, "TCP", "accept", 1, datetime(2018, 6, 12, 22, 29, 11),
         datetime(2018, 6, 12, 22, 34, 11), 70111 + 49404, 154 + 61, False, "egress", "dev/rails", "dev/memcached"),
    }


def test_every_sample(store: FlowStore, shared: Path) -> None:
    files = sorted((shared / SAMPLES).glob("enterprise-*"))
    assert [f.name for f in files] == [ES_DOC, VERBATIM, FILE_FORM]
    report = ingest(store, *files, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (3, 2, 1, {})
    assert len(rows(store)) == 2 and ES_ROW in rows(store)


def test_every_sample_is_detected_and_only_as_calico(shared: Path) -> None:
    folder = shared / "samples" / "flows"
    mine = sorted((folder / "calico").glob("enterprise-*"))
    assert len(mine) == 3
    for path in mine:
        assert detect(path) == "calico"
        head = head_lines(path)
        assert [name for name, reader in FORMATS.items() if reader.sniff(head)] == ["calico"]
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.parent.name != "calico" and path.name != "README.txt":
            try:
                assert detect(path) != "calico", path
            except InputError:
                pass


@pytest.mark.parametrize(("namespace", "name", "kind", "hint"), [
    ("policy-demo", "access-6b687c8dcb-*", "wep", "policy-demo/access"),  # ReplicaSet prefix: hash stripped
    ("policy-demo", "access-6b687c8dcb-zn5s2", "wep", "policy-demo/access"),  # full pod name
    ("dev", "rails-81531*", "wep", "dev/rails"),  # pre-1.8 numeric hash, no dash before "*"
    ("default", "frontend-*", "wep", "default/frontend"),  # DaemonSet / Job prefix
    ("default", "web-0", "wep", "default/web-0"),  # StatefulSet pod: kept
    ("-", "frontend-*", "wep", None),  # not namespaced
    ("default", "pvt", "net", None),
    ("-", "pub", "net", None),
    ("default", "allowed-egress", "ns", None),  # a network set is no workload
    ("-", "node-1", "hep", None),
])
def test_workload_hint(namespace: str, name: str, kind: str, hint: str | None) -> None:
    assert calico.workload_hint(namespace, name, kind, "f") == hint


def doc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "start_time": 1767323045, "end_time": 1767323345, "source_ip": "10.0.0.1", "source_name": "-",
        "source_name_aggr": "api-7c9bf5d8f6-*", "source_namespace": "shop", "source_port": None,
        "source_type": "wep", "dest_ip": "10.0.0.2", "dest_name": "-", "dest_name_aggr": "db-*",
        "dest_namespace": "shop", "dest_port": 5432, "dest_type": "wep", "proto": "tcp", "action": "allow",
        "reporter": "src", "bytes_in": 10, "bytes_out": 20, "packets_in": 1, "packets_out": 2,
    }
    base.update(kw)
    return base


def write(tmp_path: Path, lines: list[str], name: str = "c.json") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


T0, T1 = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 9, 5)


def test_both_ends_pvt_pub_deny_icmp_and_arrays(store: FlowStore, tmp_path: Path) -> None:
    api, db = "shop/api", "shop/db"
    path = write(tmp_path, [
        "[",
        json.dumps(doc()) + ",",  # 2: source report of api -> db ...
        json.dumps(doc(reporter="dst")) + ",",  # 3: ... and its destination report: one connection
        json.dumps(doc(dest_ip=None, dest_name="pvt", dest_name_aggr="pvt", dest_type="net", dest_namespace="-",
                       dest_port=443)) + ",",  # 4: aggregated private network
        json.dumps(doc(dest_ip=None, dest_name="pub", dest_name_aggr="pub", dest_type="net", dest_namespace="-",
                       dest_port=443, action="deny")) + ",",  # 5: aggregated internet, denied
        json.dumps(doc(source_port=5555, dest_port=None, proto="icmp")) + ",",  # 6: ICMP: no ports
        json.dumps(doc(source_ip="10.0.0.9", proto=17, dest_port="53")),  # 7: numeric protocol
        "]",
    ])
    report = ingest(store, path)
    assert (report.lines, report.records, report.bad, report.skipped) == (6, 5, 0, {"reported-by-both-ends": 1})
    common = (T0, T1, 30, 3, False)
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 0, 5432, "TCP", "accept", 1, *common, "ingress", api, db),
        ("10.0.0.1", "0.0.0.0", 0, 443, "TCP", "accept", 1, *common, "egress", api, None),
        ("10.0.0.1", "64:ff9b::", 0, 443, "TCP", "drop", 1, *common, "egress", api, None),
        ("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "accept", 1, *common, "egress", api, db),
        ("10.0.0.9", "10.0.0.2", 0, 53, "UDP", "accept", 1, *common, "egress", api, db),
    }


def test_bad_records_are_reported_with_line_and_field(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, [
        json.dumps(doc()),  # 1: good
        json.dumps(doc(action="pass")),  # 2
        json.dumps(doc(reporter=None)),  # 3
        json.dumps(doc(source_ip="10.0.0.300")),  # 4
        json.dumps(doc(proto="gre?")),  # 5
        json.dumps(doc(dest_port=70000)),  # 6
        json.dumps(doc(start_time="yesterday")),  # 7
        json.dumps(doc(action=["allow"])),  # 8: values of the wrong type
        json.dumps(doc(dest_type={"wep": 1})),  # 9
        '{"start_time": 1, "source_type": "wep",',  # 10: never closed
    ])
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (10, 1, 9)
    assert {(b.file, b.line, b.field) for b in report.bad_samples} == {
        (str(path), 2, "action"), (str(path), 3, "reporter"), (str(path), 4, "source_ip"), (str(path), 5, "proto"),
        (str(path), 6, "dest_port"), (str(path), 7, "start_time"), (str(path), 8, "action"),
        (str(path), 9, "dest_type"), (str(path), 10, "json"),
    }


def test_json_python_cannot_hold_is_a_bad_line_not_a_crash(store: FlowStore, tmp_path: Path) -> None:
    # Valid JSON that Python's parser cannot hold; the escape (\u00e9) sends each line to the Python reader.
    good = json.dumps(doc())
    python = good[:-1] + ', "note": "caf\\u00e9"'
    path = write(tmp_path, [
        good,  # 1
        python + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",  # 2: deeper than Python's parser goes
        python + ', "big": ' + "9" * 5000 + "}",  # 3: past Python's int digit limit
    ])
    report = store.ingest([path], fmt="calico", bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (3, 1, 2)
    assert {(b.line, b.field) for b in report.bad_samples} == {(2, "json"), (3, "json")}


def test_file_form_bad_lines_and_headerless(store: FlowStore, tmp_path: Path) -> None:
    line = ("1528842551 1528842851 wep dev rails-81531* - wep dev memcached-38456* - 10.1.0.5 10.1.0.6 6 - 3000 "
            "7 3 4 in 154 61 70111 49404 allow")
    path = write(tmp_path, [
        line,  # 1: no header: the documented field order
        line.replace(" in ", " out "),  # 2: the source's report of the same connection
        line.replace(" 6 - 3000", " 6 - 3000 x"),  # 3: a field too many
        line.replace(" allow", " maybe"),  # 4
        line.replace(" allow", " deny").replace(" in ", " out ").replace(" 3000 ", " 3001 "),  # 5
    ], name="flows.log")
    assert detect(path) == "calico"
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (5, 2, 2, {"reported-by-both-ends": 1})
    assert {(b.line, b.field) for b in report.bad_samples} == {(3, "fields"), (4, "action")}
    common = (datetime(2018, 6, 12, 22, 29, 11), datetime(2018, 6, 12, 22, 34, 11), 119515, 215, False)
    assert rows(store) == {
        ("10.1.0.5", "10.1.0.6", 0, 3000, "TCP", "accept", 1, *common, "ingress", "dev/rails", "dev/memcached"),
        ("10.1.0.5", "10.1.0.6", 0, 3001, "TCP", "drop", 1, *common, "egress", "dev/rails", "dev/memcached"),
    }


def test_mapping_end_to_end(store: FlowStore, shared: Path, tmp_path: Path) -> None:
    ingest(store, shared / SAMPLES / ES_DOC, shared / SAMPLES / FILE_FORM)
    ingest(store, write(tmp_path, [
        json.dumps(doc(source_ip=None, dest_ip=None, dest_name_aggr="pub", dest_type="net", dest_namespace="-",
                       dest_port=443)),
        json.dumps(doc(source_ip=None, dest_ip=None, dest_name_aggr="pvt", dest_type="net", dest_namespace="-",
                       dest_port=8443)),
    ]))

    def k8s(ns: str, name: str, port: int) -> Workload:
        return Workload(name=f"{ns}/{name}", kind=WorkloadKind.KUBERNETES, namespace=ns, ports=(ListenPort(port=port),))

    inventory = Inventory(workloads=(k8s("policy-demo", "access", 8080), k8s("policy-demo", "nginx", 80),
                                     k8s("dev", "rails", 8080), k8s("dev", "memcached", 3000),
                                     k8s("shop", "api", 8080)))
    result = map_flows(store, inventory)
    # No address bindings at all: the logs' workload hints resolve every pod; the aggregated "pub"
    # peer is the internet, the aggregated "pvt" one stays unresolved (no edge).
    assert {(e.source, e.destination, e.protocol, e.port, e.flows, e.bytes) for e in result.edges} == {
        ("policy-demo/access", "policy-demo/nginx", Protocol.TCP, 80, 1, 1501),
        ("dev/rails", "dev/memcached", Protocol.TCP, 3000, 1, 119515),
        ("shop/api", "external:internet", Protocol.TCP, 443, 1, 30),
    }
    assert result.coverage.unresolved_records == 1


# -- the DuckDB fast path against the Python reader ------------------------------------------------

def line(**kw: Any) -> str:
    return json.dumps(doc(**kw))  # ", " and ": " separators: the trailing-comma check sees blanks


TRICKY = [
    line(),  # 1: source report ...
    line(reporter="dst"),  # 2: ... and the destination's: the source report is skipped
    line(proto="TCP", source_port=40001),  # 3
    line(proto=17, dest_port="0053", source_port="40002"),  # 4: digits in strings are numbers
    line(source_ip="FE80::0001"),  # 5: IPv6, canonicalised by Python
    line(action="deny")[:-1] + ', "action": "allow"}',  # 6: repeated key: the first wins (jsonline), deny
    line()[:-1] + ", }",  # 7: trailing comma: bad JSON
    line(source_labels={"q": 'a"b'}, source_port=40003),  # 8: an escape in an unused value
    line(num_flows=float("nan"), source_port=40004),  # 9: NaN in an unused field (Python reads it)
    line(start_time=1767323045.0),  # 10: a float time is no integer
    line(start_time=True),  # 11
    line(bytes_in="-", bytes_out=5, source_port=40005),  # 12: one counter aggregated away
    line(bytes_in=None, bytes_out=None, packets_in=None, packets_out=None, source_port=40006),  # 13
    line(proto="icmp", dest_port=None, source_port="x"),  # 14: ICMP: ports not read at all
    line(dest_ip=None, dest_name_aggr="pub", dest_type="net", dest_namespace="-", dest_port=443),  # 15
    line(source_namespace="Shop"),  # 16: not a Kubernetes name
    json.dumps({k: v for k, v in doc(source_port=40007).items() if k != "source_type"}),  # 17: key missing
    "",
    "   ",
    line(start_time=-0, end_time=300, source_port=40008),  # 20: -0 is 0
    '{"a": 1}',  # 21: no action
    line(source_port=40009) + ",",  # 22: an array member's comma
    line(source_labels={"x": "\u00e9"}, source_port=40010).replace("\\u00e9", "\u00e9"),  # 23: non-ASCII
    line(dest_port="\u0663"),  # 24: an Arabic-Indic digit is no port
    line(source_name_aggr="web-0", dest_name_aggr="nginx-6799fc88d8-zn5s2", source_port=40011),  # 25
    line(bytes_in=1 << 63),  # 26: past the counter limit
    line(dest_type="pod"),  # 27
    line(source_port=40012).replace('"proto": "tcp"', '"proto":\t"udp"'),  # 28: a tab between tokens
    line(dest_ip="10.0.0.02"),  # 29: leading zero: not an address Python reads
    line(source_ip=None, source_name_aggr="pub", source_type="net", source_namespace="-", dest_port=80,
         reporter="dst"),  # 30
]


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any]:
    return _fastpath.both_paths(tmp_path, monkeypatch, calico, "_scan", paths, lambda s: sorted(rows(s), key=repr))


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, TRICKY, "a.json")
    # b.json: pretty-printed (read in Python from start to end); its source report of a.json line 30
    # is skipped across files
    pretty = json.dumps(doc(source_ip=None, source_name_aggr="pub", source_type="net", source_namespace="-",
                            dest_port=80), indent=2)
    b = write(tmp_path, [pretty, line(source_port=41000)], "b.json")
    c = tmp_path / "c.json.gz"
    with gzip.open(c, "wt") as fh:
        fh.write("\n".join([line(source_port=42000, reporter="dst"), line(source_port=42000), TRICKY[6]]) + "\n")
    # d.json: only lines SQL reads, or reads as "pending" one by one in Python (6: repeated key, 8: an
    # escape, 17: a key missing, 22: an array member's comma); a.json and c.json.gz have a line that
    # parses but fails a check, and are read in Python from start to end, as b.json is
    clean = [1, 2, 3, 4, 6, 8, 9, 12, 13, 14, 15, 17, 18, 20, 22, 23, 25, 28, 30]
    d = write(tmp_path, [TRICKY[i - 1] for i in clean], "d.json")
    calls: list[tuple[str, frozenset[str] | None]] = []
    real = calico._stage_json

    def spy(src: Any, index: int, batch: Any, only: frozenset[str] | None = None) -> None:
        calls.append((src.path.name, only))
        real(src, index, batch, only)

    monkeypatch.setattr(calico, "_stage_json", spy)
    fast, python = both_paths(tmp_path, monkeypatch, a, b, c, d)
    assert calls[:4] == [("a.json", None), ("b.json", None), ("c.json.gz", None),
                         ("d.json", frozenset(TRICKY[i - 1] for i in (6, 8, 17, 22)))]
    assert fast == python
    report, got = fast
    # written out by hand from calico.py's rules, independent of either path:
    # a.json: 28 documents (2 blank lines), 9 bad, lines 1 and 6 skipped (line 2 is their destination
    # report: line 6 is line 1 but for its action, which the both-ends key leaves out);
    # b.json: 2 documents, the pretty one skipped; c.json.gz: 3 documents, 1 skipped, 1 bad;
    # d.json: 18 documents, the two of a.json skipped again.
    assert report[:4] == (28 + 2 + 3 + 18, 17 + 1 + 1 + 16, 9 + 1, {"reported-by-both-ends": 2 + 1 + 1 + 2})
    assert [(path.rsplit("/", 1)[1], no, field) for path, no, field, _, _ in report[4]] == [
        ("a.json", 7, "json"), ("a.json", 10, "start_time"), ("a.json", 11, "start_time"),
        ("a.json", 16, "source_name_aggr"), ("a.json", 21, "action"), ("a.json", 24, "dest_port"),
        ("a.json", 26, "bytes_in"), ("a.json", 27, "dest_type"), ("a.json", 29, "dest_ip"),
        ("c.json.gz", 3, "json")]
    common = (T0, T1, 30, 3, False)
    for row in [
        ("fe80::1", "10.0.0.2", 0, 5432, "TCP", "accept", 1, *common, "egress", "shop/api", "shop/db"),  # 5
        ("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "accept", 1, *common, "egress", "shop/api", "shop/db"),  # 14
        # 3, 8, 9, 12, 13, 22, 23: one aggregate (client ports folded); 30 bytes and 3 packets each, but
        # line 12 has 5 bytes and line 13 no counters
        ("10.0.0.1", "10.0.0.2", None, 5432, "TCP", "accept", 7, T0, T1, 5 * 30 + 5, 6 * 3, False, "egress",
         "shop/api", "shop/db"),
        ("10.0.0.1", "10.0.0.2", 40008, 5432, "TCP", "accept", 1, datetime(1970, 1, 1), datetime(1970, 1, 1, 0, 5),
         30, 3, False, "egress", "shop/api", "shop/db"),  # 20
        ("10.0.0.1", "10.0.0.2", 40011, 5432, "TCP", "accept", 1, *common, "egress", "shop/web-0",
         "shop/nginx"),  # 25
        ("10.0.0.1", "10.0.0.2", 40007, 5432, "TCP", "accept", 1, *common, "egress", None, "shop/db"),  # 17
        ("64:ff9b::", "10.0.0.2", 0, 80, "TCP", "accept", 1, *common, "ingress", None, "shop/db"),  # 30
        ("10.0.0.1", "10.0.0.2", 40012, 5432, "UDP", "accept", 1, *common, "egress", "shop/api", "shop/db"),  # 28
    ]:
        assert row in got, row


def test_fast_path_on_a_clean_file_reads_nothing_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps(doc(source_port=40000 + i, dest_port=443 + i % 3, reporter="src" if i % 4 else "dst",
                            action="deny" if i % 10 == 0 else "allow", bytes_in=i), separators=(",", ":"))
             for i in range(200)]
    path = write(tmp_path, lines)
    calls: list[Any] = []
    real = calico._stage_json
    monkeypatch.setattr(calico, "_stage_json", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path])
        assert (report.lines, report.records, report.bad) == (200, 200, 0)
        assert sum(r["records"] for r in s.rows()) == 200
        assert sum(r["bytes"] for r in s.rows()) == sum(i + 20 for i in range(200))
        assert {r["action"] for r in s.rows()} == {"accept", "drop"}
    assert calls == []


def test_fast_path_file_form_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = " ".join(calico.FILE_FIELDS)
    x = ("1528842551 1528842851 wep dev rails-81531* - wep dev memcached-38456* - 10.1.0.5 10.1.0.6 6 - 3000 "
         "7 3 4 in 154 61 70111 49404 allow")
    e = write(tmp_path, [
        header,
        x,  # 2
        x.replace(" in ", " out "),  # 3: the source's report of line 2: skipped
        x.replace(" 3000 ", " 3002 ").replace("1528842551 ", "1528842551  "),  # 4: two blanks: Python reads it
        "",
        x.replace(" 3000 ", " 3003 ").replace(" wep ", "\twep\t"),  # 6: tabs
        x + " x",  # 7: a field too many
        x.replace(" 6 - 3000 ", " tcp - 3004 "),  # 8: the protocol by name
        x.replace(" - 3000 ", " 40001 3005 ").replace(" in ", " out ").replace(" allow", " deny"),  # 9
        header,  # 10: the same header again
        x.replace(" 10.1.0.5 ", " - ").replace(" 3000 ", " 3006 "),  # 11: address aggregated away
    ], "e.log")
    f = write(tmp_path, [x.replace(" 3000 ", " 4000 "), x.replace(" allow", " maybe")], "f.log")
    order = ["startTime", "action", *[c for c in calico.FILE_FIELDS if c not in ("startTime", "action")]]
    values = dict(zip(calico.FILE_FIELDS, x.replace(" 3000 ", " 5000 ").split(), strict=True))
    g = write(tmp_path, [" ".join(order), " ".join(values[c] for c in order)], "g.log")
    calls: list[tuple[str, frozenset[str] | None]] = []
    real = calico._stage_file_form

    def spy(src: Any, index: int, batch: Any, only: frozenset[str] | None = None) -> None:
        calls.append((src.path.name, only))
        real(src, index, batch, only)

    monkeypatch.setattr(calico, "_stage_file_form", spy)
    fast, python = both_paths(tmp_path, monkeypatch, e, f, g)
    # e.log: 3 lines left to Python one by one; f.log has a record that fails a check: all in Python
    assert calls[:2] == [("e.log", frozenset([x.replace(" 3000 ", " 3002 ").replace("1528842551 ", "1528842551  "),
                                              x.replace(" 3000 ", " 3003 ").replace(" wep ", "\twep\t"), x + " x"])),
                         ("f.log", None)]
    assert calls[2] == ("e.log", None)  # the Python-only run: g.log was read by SQL alone before
    assert fast == python
    report, got = fast
    # by hand: e.log 8 records lines (6 records, 1 bad, 1 skipped), f.log 2 (1 bad), g.log 1
    assert report[:4] == (8 + 2 + 1, 6 + 1 + 1, 1 + 1, {"reported-by-both-ends": 1})
    assert [(path.rsplit("/", 1)[1], no, field) for path, no, field, _, _ in report[4]] == [
        ("e.log", 7, "fields"), ("f.log", 2, "action")]
    common = (datetime(2018, 6, 12, 22, 29, 11), datetime(2018, 6, 12, 22, 34, 11), 119515, 215, False)
    for port, direction in ((3000, "ingress"), (3002, "ingress"), (3003, "ingress"), (3004, "ingress"),
                            (4000, "ingress"), (5000, "ingress")):
        assert ("10.1.0.5", "10.1.0.6", 0, port, "TCP", "accept", 1, *common, direction, "dev/rails",
                "dev/memcached") in got, port
    assert ("10.1.0.5", "10.1.0.6", 40001, 3005, "TCP", "drop", 1, *common, "egress", "dev/rails",
            "dev/memcached") in got
    assert ("0.0.0.0", "10.1.0.6", 0, 3006, "TCP", "accept", 1, *common, "ingress", "dev/rails",
            "dev/memcached") in got


def test_fast_path_blank_lines_invalid_utf8_and_truncated_gzip(store: FlowStore, tmp_path: Path) -> None:
    lines = [line(source_port=40000 + i) for i in range(5)]
    path = write(tmp_path, [lines[0], "", "   ", *lines[1:]], "blank.json")
    report = ingest(store, path)
    assert (report.lines, report.records, report.bad) == (5, 5, 0)  # blank lines are no records
    # invalid UTF-8 in an unused value: DuckDB rejects the line, Python reads it (replaced)
    raw = tmp_path / "latin1.json"
    raw.write_bytes(("\n".join([line(source_port=41000), line(source_port=41001, source_labels={"x": "\u00e9"})])
                     + "\n").encode().replace("\u00e9".encode(), b"\xe9"))
    report = store.ingest([raw], fmt="calico")  # (the label's key "x" is no Calico key: not sniffed)
    assert (report.lines, report.records, report.bad) == (2, 2, 0)
    whole = tmp_path / "whole.json.gz"
    with gzip.open(whole, "wt") as fh:
        fh.write("\n".join(line(source_port=30000 + i % 30000, end_time=1767323345 + i) for i in range(5000)) + "\n")
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        store.ingest([cut], fmt="calico")
    assert err.value.file == str(cut.resolve())


# -- the direct path (read_json / read_csv of whole files) against the Python reader ------------------

def _good(i: int) -> str:
    return json.dumps(doc(source_port=43000 + i, reporter="dst"), separators=(",", ":"))


def _compact(**kw: Any) -> str:
    return json.dumps(doc(**kw), separators=(",", ":"))


def _with(extra: str, **kw: Any) -> str:
    """A compact document with ``extra`` (raw JSON text: "key":value) added at its end."""
    return _compact(**kw)[:-1] + "," + extra + "}"


# Lines the direct path may meet in an otherwise clean file; each must give what Python gives.
DIRECT_JSON = {
    "nan-lower": _with('"num_flows":nan'),  # yyjson reads it, Python does not: a bad line
    "inf": _with('"num_flows":inf'),
    "neg-nan": _with('"num_flows":-NaN'),
    "infinity-lower": _with('"tcp_mean_mss":[1,infinity]'),
    "nan-python": _with('"num_flows":NaN'),  # Python reads these three
    "infinity-python": _with('"num_flows":-Infinity'),
    "huge-float": _with('"num_flows":1e999'),
    "trailing-comma-object": _compact()[:-1] + ",}",
    "trailing-comma-array": _with('"policies":{"all_policies":["a",]}'),
    "repeated-key": _with('"action":"deny"'),  # first wins: allow, on both paths
    "repeated-key-first-bad": _compact(action="pass")[:-1] + ',"action":"allow"}',
    "namespace-number": _compact(source_namespace=123),  # no hint from a number
    "name-number": _compact(dest_name_aggr=4567),
    "kind-upper": _compact(source_type="WEP"),
    "aggr-null-name-pub": _compact(source_ip=None, source_name_aggr=None, source_name="pub", source_type="net"),
    "aggr-missing-name-pub": json.dumps({k: v for k, v in doc(source_ip=None, source_name="pub",
                                                              source_type="net").items()
                                         if k != "source_name_aggr"}, separators=(",", ":")),
    "port-leading-zeros": _compact(dest_port="0053"),
    "counters-leading-zeros": _compact(bytes_in="007", packets_out="0", start_time="01767323045"),
    "port-zeros-only": _compact(dest_port="000"),
    "port-leading-zeros-past-limit": _compact(dest_port="065536"),
    "port-many-leading-zeros": _compact(dest_port="0" * 40 + "80"),
    "proto-leading-zeros": _compact(proto="006"),
    "port-string": _compact(dest_port="80", source_port="41000"),
    "port-float": _compact(dest_port=80.0),
    "port-negative": _compact(source_port=-1),
    "port-minus-zero": _compact(source_port=0)[:-1].replace('"source_port":0', '"source_port":-0') + "}",
    "bytes-huge": _compact(bytes_in=18446744073709551616),
    "bytes-past-limit": _compact(bytes_in=(1 << 62) + 1),
    "bytes-at-limit": _compact(bytes_in=1 << 62, bytes_out=0),
    "time-bool": _compact(start_time=True),
    "time-string": _compact(end_time="1767323345"),
    "action-bool": _compact(action=True),
    "action-list": _compact(action=["allow"]),
    "proto-mixed-case": _compact(proto="Tcp"),
    "proto-string-number": _compact(proto="17"),
    "proto-float": _compact(proto=6.0),
    "proto-big": _compact(proto=256),
    "escape-unused": _compact(source_labels={"labels": 'a"b'}),
    "escape-used": _compact(action="\u0061llow").replace("allow", "\\u0061llow"),
    "non-ascii-unused": _compact(source_labels={"labels": "\u00e9"}).replace("\\u00e9", "\u00e9"),
    "non-ascii-namespace": _compact(source_namespace="sh\u00f6p").replace("\\u00f6", "\u00f6"),
    "two-documents": _compact() + _compact(),
    "comment": "# a comment line",
    "array-line": "[" + _compact() + "]",
    "scalar": "42",
    "ipv6": _compact(source_ip="FE80::1"),
    "ipv6-full": _compact(source_ip="2001:0DB8:0000:0000:0000:ff00:0042:8329"),
    "ipv6-embedded-ipv4": _compact(dest_ip="::ffff:10.0.0.2"),
    "ipv6-unspecified": _compact(source_ip="::"),
    "ipv6-zone": _compact(source_ip="fe80::1%eth0"),  # Python keeps the zone: the store finds it bad
    "ipv6-zone-empty": _compact(source_ip="fe80::1%"),
    "ipv6-two-gaps": _compact(source_ip="2001:db8::1::2"),
    "ipv6-nine-groups": _compact(source_ip="1:2:3:4:5:6:7:8:9"),
    "ipv6-bad-digit": _compact(source_ip="fe80::g"),
    "ipv6-with-port": _compact(source_ip="[fe80::1]:80"),
    "ipv6-leading-zero-ipv4": _compact(dest_ip="::ffff:10.0.0.02"),
    "ipv6-non-ascii": _compact(source_ip="fe80::\u0661").replace("\\u0661", "\u0661"),
    "ipv6-in-object": _compact(source_ip={"labels": "::1"}),
    "ipv6-in-list": _compact(source_ip=["::1"]),
    "ipv6-pub-placeholder-spelled": _compact(source_ip="64:FF9B::", source_name_aggr="pub", source_type="net"),
    "ip-leading-zero": _compact(dest_ip="10.0.0.02"),
    "ip-number": _compact(dest_ip=167772162),
    "blank-tabs": " \t ",
    "empty-name": _compact(source_name_aggr=""),
}


def _raw(key: str, raw: str, **kw: Any) -> str:
    """A compact document whose ``key`` holds ``raw`` (JSON text as it is: exponents, -0, ...)."""
    return _compact(**{key: "\x00"}, **kw).replace(f'"{key}":"\\u0000"', f'"{key}":{raw}')


# Every JSON form of a number or protocol, as _Values reads them (a cast only where the text starts
# with an ASCII digit; a protocol name as written first, then lower-cased): each read as Python reads it.
NUMBER_FORMS = {
    **{f"proto-name-{x}": _compact(proto=x) for x in ("tcp", "udp", "icmp", "icmp6", "icmpv6", "sctp", "udplite")},
    **{f"proto-upper-{x}": _compact(proto=x.upper()) for x in ("udp", "icmp6", "udplite")},
    "proto-mixed-udplite": _compact(proto="UdpLite"),
    "proto-dotted-i": _compact(proto="\u0130cmp").replace("\\u0130", "\u0130"),  # lower() gives 2 characters
    "proto-long-s": _compact(proto="\u017fctp").replace("\\u017f", "\u017f"),  # no ASCII lower case
    "proto-escaped-name": _compact(proto="tcp").replace('"tcp"', '"\\u0074cp"'),
    "proto-padded-left": _compact(proto=" tcp"),
    "proto-padded-right": _compact(proto="tcp "),
    "proto-unknown-name": _compact(proto="gre"),
    "proto-empty": _compact(proto=""),
    "proto-dash": _compact(proto="-"),
    "proto-null": _compact(proto=None),
    "proto-bool": _compact(proto=True),
    "proto-object": _compact(proto={"labels": "tcp"}),
    "proto-list": _compact(proto=["tcp"]),
    "proto-number": _compact(proto=17),
    "proto-string-255": _compact(proto="255"),
    "proto-string-256": _compact(proto="256"),
    "proto-negative": _compact(proto=-6),
    "proto-string-negative": _compact(proto="-6"),
    "proto-string-plus": _compact(proto="+6"),
    "proto-string-space": _compact(proto=" 6"),
    "proto-string-trailing-space": _compact(proto="6 "),
    "proto-exponent": _raw("proto", "6e0"),
    "proto-fraction": _raw("proto", "6.5"),
    "proto-string-exponent": _compact(proto="6e0"),
    "proto-string-hex": _compact(proto="0x6"),
    "proto-full-width-digit": _compact(proto="\uff16").replace("\\uff16", "\uff16"),
    "proto-repeated": _compact(proto="udp")[:-1] + ',"proto":"tcp"}',
    "port-exponent": _raw("dest_port", "8e1"),
    "port-big-exponent": _raw("dest_port", "1e30"),
    "port-fraction": _raw("dest_port", "80.5"),
    "port-negative-zero-fraction": _raw("dest_port", "-0.0"),
    "port-huge": _raw("dest_port", "123456789012345678901234567890"),
    "port-string-plus": _compact(dest_port="+80"),
    "port-string-space": _compact(dest_port=" 80"),
    "port-string-trailing-space": _compact(dest_port="80 "),
    "port-string-dot": _compact(dest_port=".8"),
    "port-string-letter-first": _compact(dest_port="a80"),
    "port-string-letter-last": _compact(dest_port="80a"),
    "port-string-underscore": _compact(dest_port="8_0"),
    "port-string-exponent": _compact(dest_port="8e1"),
    "port-string-hex": _compact(dest_port="0x50"),
    "port-string-fraction": _compact(dest_port="80.0"),
    "port-string-colon": _compact(dest_port="8:0"),
    "port-string-empty": _compact(dest_port=""),
    "port-string-dash": _compact(dest_port="-"),
    "port-null": _compact(dest_port=None),
    "port-bool": _compact(dest_port=False),
    "port-object": _compact(dest_port={"labels": 80}),
    "port-list": _compact(dest_port=[80]),
    "port-escaped-digits": _compact(dest_port="80").replace('"80"', '"\\u0038\\u0030"'),
    "port-non-ascii-digits": _compact(dest_port="\u0668\u0660").replace("\\u0668\\u0660", "\u0668\u0660"),
    "port-repeated": _compact(dest_port=80)[:-1] + ',"dest_port":"x"}',
    "source-port-string-letter": _compact(source_port="x1"),
    "source-port-dash": _compact(source_port="-"),
    "time-string-padded": _compact(start_time=" 1767323045"),
    "time-string-exponent": _compact(end_time="1.767323345e9"),
    "time-exponent": _raw("end_time", "1767323345e0"),
    "time-string-max": _compact(start_time="253402300799", end_time="253402300799"),
    "time-string-past-max": _compact(end_time="253402300800"),
    "bytes-string-past-u64": _compact(bytes_in="18446744073709551616"),
    "bytes-string-u64-max": _compact(bytes_in="18446744073709551615"),
    "bytes-string-minus": _compact(bytes_out="-5"),
    "packets-string-non-ascii": _compact(packets_in="1\u00b2").replace("\\u00b2", "\u00b2"),
    "packets-fraction": _raw("packets_out", "2.0"),
}


@pytest.mark.parametrize("name", sorted(NUMBER_FORMS))
def test_number_and_protocol_forms_match_the_python_reader(name: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # direct path: the form among clean lines; per-line path: the same with a line only Python reads
    # (an escape) in the file, so that DuckDB reads the others line by line
    lines = [_good(0), NUMBER_FORMS[name], _good(1), _compact(reporter="src")]
    direct = write(tmp_path, lines, "x.json")
    per_line = write(tmp_path, [*lines, DIRECT_JSON["escape-unused"]], "y.json")
    for path in (direct, per_line):
        fast, python = both_paths(tmp_path, monkeypatch, path)
        assert fast == python
        assert fast[0][0] == len(lines) + (path == per_line)


def test_direct_path_reads_every_protocol_name_and_leading_digit_alone(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # every protocol name in any case, numbers starting with each digit (as numbers and as strings):
    # all of them SQL reads exactly, so no line of either file goes to Python
    names = sorted(calico._PROTOCOLS)
    lines = [_compact(proto=p, source_port=46000 + i, reporter="dst") for i, p in enumerate(
        [*names, *(x.upper() for x in names), "Tcp", "006", 17, "255", 0])]
    lines += [_compact(dest_port=int(f"{d}9"), source_port=f"{d}1", bytes_in=d, packets_out=f"{d}", reporter="dst")
              for d in range(10)]
    path = write(tmp_path, lines, "digits.json")
    form = write(tmp_path, [" ".join(calico.FILE_FIELDS)] + [
        LEGACY.replace(" 6 - 3000 ", f" {p} - {d}9 ").replace(" 154 ", f" {d} ")
        for d, p in zip(range(10), ["tcp", "UDP", "Sctp", "icmp6", "17", "06", "6", "udplite", "icmpv6", "132"],
                        strict=True)], "digits.log")
    calls: list[str] = []
    for reader in ("_stage_json", "_stage_file_form"):
        real = getattr(calico, reader)
        monkeypatch.setattr(calico, reader, lambda *a, _r=real, **k: calls.append(a[0].path.name) or _r(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, path, form)
    assert fast == python
    assert calls == ["digits.json", "digits.log"]  # only the Python-only run read them in Python
    report, got = fast
    assert report[:4] == (len(lines) + 10, len(lines) + 10, 0, {})
    assert len({row[4] for row in got}) == 7  # tcp, udp, icmp, icmpv6, sctp, udplite, 0
    assert {row[3] for row in got} >= {d * 10 + 9 for d in range(10)}


@pytest.mark.parametrize("name", sorted(DIRECT_JSON))
def test_direct_path_json_matches_the_python_reader(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [_good(0), DIRECT_JSON[name], _good(1), _compact(reporter="src")]
    path = write(tmp_path, lines, "x.json")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, got = fast
    assert report[0] == sum(1 for x in lines if x.strip())  # every line read once, blank ones skipped


def test_direct_path_reads_a_clean_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CRLF endings, a blank line, a repeated key and non-ASCII text in an unused value: still one
    # document per line that both readers read alike, so DuckDB reads the whole file
    lines = [_good(i) for i in range(20)] + ["", DIRECT_JSON["repeated-key"], DIRECT_JSON["non-ascii-unused"],
                                             DIRECT_JSON["huge-float"], DIRECT_JSON["port-string"],
                                             DIRECT_JSON["proto-mixed-case"]]
    path = tmp_path / "crlf.json"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    direct: list[Any] = []
    real = calico._direct_sql
    monkeypatch.setattr(calico, "_direct_sql", lambda *a, **k: direct.append(list(a[1])) or real(*a, **k))
    calls: list[Any] = []
    real_json = calico._stage_json
    monkeypatch.setattr(calico, "_stage_json", lambda *a, **k: calls.append(a) or real_json(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    assert direct == [[0]]
    assert [c[0].path.name for c in calls] == ["crlf.json"]  # only the Python-only run read it in Python
    report, got = fast
    assert report[:3] == (25, 25, 0)
    # the repeated "action" reads as its first value (allow) on both paths: no drop at all
    assert {row[5] for row in got} == {"accept"}
    assert ("10.0.0.1", "10.0.0.2", 41000, 80, "TCP", "accept", 1, T0, T1, 30, 3, False, "egress", "shop/api",
            "shop/db") in got


def test_direct_path_stays_off_a_file_with_a_doubtful_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = write(tmp_path, [_good(i) for i in range(5)], "clean.json")
    doubtful = write(tmp_path, [_good(i) for i in range(5)] + [DIRECT_JSON["nan-lower"]], "doubtful.json")
    direct: list[Any] = []
    real = calico._direct_sql
    monkeypatch.setattr(calico, "_direct_sql", lambda *a, **k: direct.append(list(a[1])) or real(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, clean, doubtful)
    assert fast == python
    assert direct == [[0]]  # the census kept doubtful.json off the direct path
    report, _ = fast
    assert report[:3] == (11, 10, 1)
    assert [(p.rsplit("/", 1)[1], no, field) for p, no, field, _, _ in report[4]] == [("doubtful.json", 6, "json")]


LEGACY = ("1528842551 1528842851 wep dev rails-81531* - wep dev memcached-38456* - 10.1.0.5 10.1.0.6 6 - 3000 "
          "7 3 4 in 154 61 70111 49404 allow")
DIRECT_FILE = {
    "tab": LEGACY.replace(" wep ", "\twep ", 1),
    "vertical-tab": LEGACY.replace(" 7 3 4 ", " 7\x0b3 4 "),
    "file-separator": LEGACY.replace(" 7 3 4 ", " 7\x1c3 4 "),
    "nbsp-in-unused": LEGACY.replace(" 7 3 4 ", " 7\u00a03 4 "),  # Python splits there: 25 fields
    "non-ascii-unused": LEGACY.replace(" 7 3 4 ", " 7\u00e9 3 4 "),
    "double-space": LEGACY.replace(" 6 ", "  6 "),
    "leading-space": " " + LEGACY,
    "trailing-space": LEGACY + " ",
    "fields-25": LEGACY + " x",
    "fields-23": LEGACY.rsplit(" ", 1)[0],
    "port-leading-zeros": LEGACY.replace(" 3000 ", " 03000 "),
    "port-plus": LEGACY.replace(" 3000 ", " +3000 "),
    "port-underscore": LEGACY.replace(" 3000 ", " 3_000 "),
    "port-exponent": LEGACY.replace(" 3000 ", " 3e3 "),
    "port-hex": LEGACY.replace(" 3000 ", " 0xbb8 "),
    "src-port-aggregated": LEGACY.replace(" 6 - 3000 ", " 6 - 3000 "),
    "src-port-set": LEGACY.replace(" 6 - 3000 ", " 6 40000 3000 "),
    "proto-name": LEGACY.replace(" 6 - ", " TCP - "),
    "proto-float": LEGACY.replace(" 6 - ", " 6.0 - "),
    "icmp-bad-ports": LEGACY.replace(" 6 - 3000 ", " 1 x y "),
    "ip-aggregated-pub": LEGACY.replace(" 10.1.0.6 ", " - ").replace("memcached-38456*", "pub"),
    "ipv6": LEGACY.replace(" 10.1.0.5 ", " fe80::1 "),
    "ipv6-upper": LEGACY.replace(" 10.1.0.5 ", " FE80:0:0::0001 "),
    "ipv6-embedded-ipv4": LEGACY.replace(" 10.1.0.6 ", " ::FFFF:10.1.0.6 "),
    "ipv6-zone": LEGACY.replace(" 10.1.0.5 ", " fe80::1%eth0 "),
    "ipv6-bad": LEGACY.replace(" 10.1.0.5 ", " fe80:::1 "),
    "ipv6-too-long": LEGACY.replace(" 10.1.0.5 ", " 1:2:3:4:5:6:7:8:9 "),
    "times-leading-zeros": LEGACY.replace("1528842551 1528842851 ", "01528842551 001528842851 "),
    "counters-leading-zeros": LEGACY.replace(" 154 61 70111 49404 ", " 0154 061 070111 00 "),
    "proto-leading-zeros": LEGACY.replace(" 6 - ", " 06 - "),
    "port-leading-zeros-past-limit": LEGACY.replace(" 3000 ", " 065536 "),
    "header-again": " ".join(calico.FILE_FIELDS),
    "header-reordered": " ".join(["action", *calico.FILE_FIELDS[:-1]]),
    "start-time-token": "startTimeX " + LEGACY.split(" ", 1)[1],
    "namespace-upper": LEGACY.replace(" dev rails", " Dev rails"),
    "reporter-out": LEGACY.replace(" in ", " out "),
    "null-word": LEGACY.replace(" - wep ", " null wep "),
    **{f"proto-name-{x}": LEGACY.replace(" 6 - ", f" {x} - ") for x in ("tcp", "udp", "icmp6", "icmpv6",
                                                                          "sctp", "udplite", "Udp", "SCTP")},
    "proto-unknown-name": LEGACY.replace(" 6 - ", " gre - "),
    "proto-dash": LEGACY.replace(" 6 - ", " - - "),
    "proto-negative": LEGACY.replace(" 6 - ", " -6 - "),
    "proto-non-ascii": LEGACY.replace(" 6 - ", " \u0130cmp - "),
    "proto-256": LEGACY.replace(" 6 - ", " 256 - "),
    "port-letter-last": LEGACY.replace(" 3000 ", " 3000a "),
    "port-negative": LEGACY.replace(" 3000 ", " -3000 "),
    "port-fraction": LEGACY.replace(" 3000 ", " 3000.0 "),
    "port-colon": LEGACY.replace(" 3000 ", " 30:00 "),
    "port-full-width": LEGACY.replace(" 3000 ", " \uff13000 "),
    "bytes-past-u64": LEGACY.replace(" 70111 ", " 18446744073709551616 "),
    "time-letter-first": LEGACY.replace("1528842551 ", "x1528842551 ", 1),
    # a token that is read_csv's null string elsewhere (Python reads it as it is: a bad value)
    "null-string-type": LEGACY.replace(" wep dev rails", " \x02\x03 dev rails"),
    "null-string-src-port": LEGACY.replace(" 6 - 3000 ", " 6 \x02\x03 3000 "),
    "null-string-bytes": LEGACY.replace(" 70111 ", " \x02\x03 "),
    "null-string-ip": LEGACY.replace(" 10.1.0.5 ", " \x02\x03 "),
    "null-string-unused": LEGACY.replace(" 7 3 4 ", " \x02\x03 3 4 "),
    "control-in-unused": LEGACY.replace(" 7 3 4 ", " 7\x01\x00 3 4 "),
    "lone-cr": LEGACY.replace(" 7 3 4 ", " 7\r3 4 "),
    "empty-field-unused": LEGACY.replace(" - wep ", "  wep "),
}


@pytest.mark.parametrize("name", sorted(DIRECT_FILE))
def test_direct_path_file_form_matches_the_python_reader(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good = [LEGACY.replace(" 3000 ", f" {3100 + i} ") for i in range(3)]
    path = write(tmp_path, [" ".join(calico.FILE_FIELDS), good[0], DIRECT_FILE[name], *good[1:]], "x.log")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python


def test_file_form_byte_order_mark_is_read_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB drops a UTF-8 byte order mark at the start of a file; Python keeps it in the first token
    # (a bad start_time, or no header): such a file is read in Python, the other one by SQL
    good = [LEGACY.replace(" 3000 ", f" {3100 + i} ") for i in range(3)]
    header = " ".join(calico.FILE_FIELDS)
    bom_data = tmp_path / "bom-data.log"
    bom_data.write_bytes(("\ufeff" + "\n".join(good) + "\n").encode())
    bom_header = tmp_path / "bom-header.log"
    bom_header.write_bytes(("\ufeff" + "\n".join([header, *good]) + "\n").encode())
    clean = write(tmp_path, [header, *good], "clean.log")
    fast, python = _fastpath.both_paths(tmp_path, monkeypatch, calico, "_scan", [bom_data, bom_header, clean],
                                        lambda s: sorted(rows(s), key=repr), fmt="calico")
    assert fast == python
    report, _ = fast
    assert [(p.rsplit("/", 1)[1], no, field) for p, no, field, _, _ in report[4]] == [
        ("bom-data.log", 1, "start_time"), ("bom-header.log", 1, "action")]


def test_direct_path_file_form_reads_a_clean_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [" ".join(calico.FILE_FIELDS)] + [LEGACY.replace(" 3000 ", f" {3100 + i} ") for i in range(10)]
    path = tmp_path / "crlf.log"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    direct: list[Any] = []
    real = calico._direct_sql
    monkeypatch.setattr(calico, "_direct_sql", lambda *a, **k: direct.append(list(a[1])) or real(*a, **k))
    calls: list[Any] = []
    real_form = calico._stage_file_form
    monkeypatch.setattr(calico, "_stage_file_form", lambda *a, **k: calls.append(a) or real_form(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    assert direct == [[0]]
    assert [c[0].path.name for c in calls] == ["crlf.log"]  # only the Python-only run read it in Python
    assert fast[0][:3] == (10, 10, 0)


def test_direct_path_reads_gzip_and_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gz = tmp_path / "a.json.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("\n".join(_good(i) for i in range(30)) + "\n")
    plain = write(tmp_path, [_compact(source_port=44000 + i) for i in range(30)], "b.json")
    direct: list[Any] = []
    real = calico._direct_sql
    monkeypatch.setattr(calico, "_direct_sql", lambda *a, **k: direct.append(list(a[1])) or real(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, gz, plain)
    assert fast == python
    assert sorted(direct) == [[0], [1]]  # one read per compression
    assert fast[0][:4] == (60, 60, 0, {})


def test_direct_path_reads_ipv6_and_leading_zeros_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # IPv6 in any spelling ipaddress reads, and numbers with leading zeros (Python's int() reads
    # them): the direct path reads them exactly, no line goes to Python
    spellings = ["FE80::1", "fe80:0:0:0:0:0:0:1", "2001:DB8::", "::ffff:10.0.0.1", "::FFFF:A00:1", "::"]
    lines = [_compact(source_ip=ip, source_port=45000 + i, reporter="dst") for i, ip in enumerate(spellings)]
    lines += [_compact(dest_port="0053", bytes_in="0010", start_time="001767323045", reporter="dst"),
              _compact(dest_ip="2001:db8::1", dest_port="00", proto="017", reporter="dst")]
    path = write(tmp_path, lines, "v6.json")
    legacy = write(tmp_path, [" ".join(calico.FILE_FIELDS),
                              LEGACY.replace(" 10.1.0.5 ", " FE80::0001 ").replace(" 3000 ", " 03000 "),
                              LEGACY.replace(" 10.1.0.6 ", " 2001:db8:0::6 ").replace(" 6 - ", " 006 - ")], "v6.log")
    direct: list[Any] = []
    real = calico._direct_sql
    monkeypatch.setattr(calico, "_direct_sql", lambda *a, **k: direct.append(list(a[1])) or real(*a, **k))
    calls: list[str] = []
    for name in ("_stage_json", "_stage_file_form"):
        reader = getattr(calico, name)
        monkeypatch.setattr(calico, name, lambda *a, _r=reader, **k: calls.append(a[0].path.name) or _r(*a, **k))
    fast, python = both_paths(tmp_path, monkeypatch, path, legacy)
    assert fast == python
    assert sorted(direct) == [[0], [1]]
    assert calls == ["v6.json", "v6.log"]  # only the Python-only run read them in Python
    report, got = fast
    assert report[:4] == (10, 10, 0, {})
    sources = {row[0] for row in got}
    assert {"fe80::1", "2001:db8::", "::ffff:10.0.0.1", "::"} <= sources
    assert ("10.0.0.1", "10.0.0.2", 0, 53, "TCP", "accept", 1, T0, T1, 30, 3, False, "ingress", "shop/api",
            "shop/db") in got
    assert ("10.0.0.1", "2001:db8::1", 0, 0, "UDP", "accept", 1, T0, T1, 30, 3, False, "ingress", "shop/api",
            "shop/db") in got
    assert ("fe80::1", "10.1.0.6", 0, 3000, "TCP", "accept", 1) == next(r for r in got if r[0] == "fe80::1"
                                                                        and r[3] == 3000)[:7]
    assert any(r[1] == "2001:db8::6" and r[4] == "TCP" for r in got)


def test_fast_path_source_reports_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no destination report: no row can be dropped as reported by both ends; every source report stays
    lines = [_compact(source_port=46000 + i, dest_port=443 + i % 2, reporter="src") for i in range(6)]
    fast, python = both_paths(tmp_path, monkeypatch, write(tmp_path, lines, "src.json"))
    assert fast == python
    assert fast[0][:4] == (6, 6, 0, {})
    assert sum(row[6] for row in fast[1]) == 6 and {row[12] for row in fast[1]} == {"egress"}


def _legacy(src: tuple[str, str, str], dst: tuple[str, str, str], port: int) -> str:
    """A file-form line from (namespace, name, address) of each side."""
    return (f"1528842551 1528842851 wep {src[0]} {src[1]} - wep {dst[0]} {dst[1]} - {src[2]} {dst[2]} 6 - {port} "
            "1 1 1 in 1 1 10 20 allow")


@pytest.mark.parametrize(("ends", "key"), [
    # every address names one endpoint: rows find their endpoints by address alone
    ([("dev", "web-*", "10.1.0.1"), ("dev", "db-*", "10.1.0.2"), ("ops", "web-*", "10.1.0.3")], ("ip",)),
    # "-" (aggregated) for two endpoints, told apart by name: pub and pvt get different placeholders
    ([("dev", "pub", "-"), ("dev", "pvt", "-"), ("dev", "db-*", "10.1.0.2")], ("name",)),
    # one name in two namespaces behind one aggregated address
    ([("dev", "web-*", "-"), ("ops", "web-*", "-"), ("dev", "db-*", "10.1.0.2")], ("ns", "name")),
    # no column but all four tells them apart
    ([("dev", "web-*", "10.1.0.1"), ("ops", "web-*", "10.1.0.1"), ("dev", "web-*", "10.1.0.2")],
     ("kind", "ns", "name", "ip")),
])
def test_endpoints_joined_on_the_fewest_columns_that_tell_them_apart(ends: list[tuple[str, str, str]],
                                                                     key: tuple[str, ...], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = ends
    lines = [" ".join(calico.FILE_FIELDS), _legacy(a, b, 3000), _legacy(b, c, 3001), _legacy(c, a, 3002),
             _legacy(a, c, 3003)]
    path = write(tmp_path, lines, "x.log")
    keys: list[tuple[str, ...]] = []
    real = calico._join_key
    monkeypatch.setattr(calico, "_join_key", lambda *x: keys.append(real(*x)) or keys[-1])
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert keys == [key]
    assert fast == python
    report, got = fast
    assert report[:3] == (4, 4, 0)

    def staged(end: tuple[str, str, str]) -> tuple[str, str | None]:
        ns, name, ip = end
        address = {"pub": "64:ff9b::"}.get(name, "0.0.0.0") if ip == "-" else ip
        return address, None if name in ("pub", "pvt") else f"{ns}/{name[:-2]}"

    assert {(r[3], r[0], r[13], r[1], r[14]) for r in got} == {
        (port, *staged(s)[:1], staged(s)[1], *staged(d)[:1], staged(d)[1])
        for port, s, d in ((3000, a, b), (3001, b, c), (3002, c, a), (3003, a, c))}
