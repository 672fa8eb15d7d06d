"""Generic header-mapped CSV reader, through the flow store: exact rows, detection, bad lines, mapping.

No shared sample exists for this format (it is our own documented layout): the files are written here.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.flows import detect, generic_csv


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


def write(tmp_path: Path, lines: list[str], name: str = "flows.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def ingest(store: FlowStore, *paths: Path, **kw: Any) -> IngestReport:
    report = store.ingest(list(paths), **kw)
    assert all(f.format == "csv" for f in report.files)
    return report


# (src, dst, src port, dst port, protocol, action, records, start, end, bytes, packets, direction, hints)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    return {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
             r["ts_start"], r["ts_end"], r["bytes"], r["packets"], r["direction"], r["src_workload"],
             r["dst_workload"]) for r in store.rows()}


def all_in_python(_con: Any, files: Any, *_a: Any) -> Any:
    """A ``generic_csv._plan`` that leaves every file to the Python reader."""
    return generic_csv._Plan(python=set(range(len(files))))


def ingest_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[Path], **kw: Any
                ) -> tuple[list[tuple[IngestReport, list[dict[str, Any]]]], list[Any]]:
    """``paths`` ingested by the fast path (its plans spied on), then by the Python reader alone: each run's
    (report, rows), and the plans the fast path made."""
    real = generic_csv._plan
    used: list[Any] = []

    def spy(*args: Any) -> Any:
        used.append(real(*args))
        return used[-1]

    runs = []
    for name, plan in (("fast", spy), ("python", all_in_python)):
        with monkeypatch.context() as m:
            m.setattr(generic_csv, "_plan", plan)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                runs.append((s.ingest(paths, bad_threshold=1.0, **kw), s.rows()))
    return runs, used


def test_canonical_header_exact_rows(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, [
        "start,end,src_ip,dst_ip,src_port,dst_port,protocol,bytes,packets,action",
        "1767323045,1767323050,10.0.0.1,10.0.0.2,40001,5432,tcp,1200,10,allow",  # epoch seconds
        "1767323045500,1767323046000,10.0.0.1,10.0.0.3,40002,53,17,80,1,DENY",  # epoch ms; number; deny -> drop
        "2026-01-02T03:04:05Z,2026-01-02T03:04:06.25+00:00,10.0.0.4,10.0.0.2,40003,5432,TCP,0,1,reject",
        "2026-01-02 03:04:05,,fd00::0001,fd00::2,,,icmpv6,64,1,block",  # naive ISO = UTC; no ports (ICMP)
    ])
    report = ingest(store, path)
    assert (report.lines, report.records, report.bad) == (4, 4, 0)  # the header is not a record line
    t0 = datetime(2026, 1, 2, 3, 4, 5)
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 40001, 5432, "TCP", "accept", 1, t0, datetime(2026, 1, 2, 3, 4, 10), 1200, 10,
         None, None, None),
        ("10.0.0.1", "10.0.0.3", 40002, 53, "UDP", "drop", 1, datetime(2026, 1, 2, 3, 4, 5, 500000),
         datetime(2026, 1, 2, 3, 4, 6), 80, 1, None, None, None),
        ("10.0.0.4", "10.0.0.2", 40003, 5432, "TCP", "reject", 1, t0, datetime(2026, 1, 2, 3, 4, 6, 250000), 0, 1,
         None, None, None),
        ("fd00::1", "fd00::2", 0, 0, "ICMP", "drop", 1, t0, t0, 64, 1, None, None, None),
    }


def test_aliases_any_order_quoting_hints_and_ignored_columns(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, [
        'Proto,DstPort,"srcaddr",dstaddr,Timestamp,direction,src-workload,dst_workload,x_note,ACTION',
        '6,443,10.1.0.1,10.1.0.2,1767323045,inbound,shop/web,shop/api,"a, quoted ""note""",Permit',
        '17,53,10.1.0.1,10.1.0.3,1767323045.75,out,shop/web,,,accept',
    ])
    assert detect(path) == "csv"
    ingest(store, path)
    t0 = datetime(2026, 1, 2, 3, 4, 5)
    assert rows(store) == {
        ("10.1.0.1", "10.1.0.2", None, 443, "TCP", "accept", 1, t0, t0, None, None, "ingress", "shop/web",
         "shop/api"),
        ("10.1.0.1", "10.1.0.3", None, 53, "UDP", "accept", 1, datetime(2026, 1, 2, 3, 4, 5, 750000),
         datetime(2026, 1, 2, 3, 4, 5, 750000), None, None, "egress", "shop/web", None),
    }


def test_no_action_column_is_observed_traffic(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, ["src_ip,dst_ip,dst_port,protocol", "10.0.0.1,10.0.0.2,22,tcp"])
    ingest(store, path)
    assert rows(store) == {("10.0.0.1", "10.0.0.2", None, 22, "TCP", "accept", 1, None, None, None, None, None,
                            None, None)}


def test_bad_lines_are_reported_with_line_and_column(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, [
        "start,src_ip,dst_ip,src_port,dst_port,protocol,action",  # 1
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,tcp,accept",  # 2: good
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,tcp,maybe",  # 3: unknown action, never guessed
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,tcp,",  # 4: empty action
        "1767323045,10.0.0.300,10.0.0.2,40001,5432,tcp,accept",  # 5
        "1767323045,10.0.0.1,10.0.0.2,40001,70000,tcp,accept",  # 6
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,carrier-pigeon,accept",  # 7
        "yesterday,10.0.0.1,10.0.0.2,40001,5432,tcp,accept",  # 8
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,tcp",  # 9: a field short
        '1767323045,10.0.0.1,"10.0.0.2,40001,5432,tcp,accept',  # 10: unterminated quote
        "1767323045,10.0.0.1,10.0.0.2,40001,,tcp,accept",  # 11: TCP without a destination port
        "",  # 12: blank
    ])
    report = ingest(store, path, bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (10, 1, 9)
    assert [(b.file, b.line, b.field) for b in report.bad_samples] == [
        (str(path), 3, "action"), (str(path), 4, "action"), (str(path), 5, "src_ip"), (str(path), 6, "dst_port"),
        (str(path), 7, "protocol"), (str(path), 8, "start"), (str(path), 9, "columns"), (str(path), 10, "csv"),
        (str(path), 11, "dst_port")]
    assert len(rows(store)) == 1


@pytest.mark.parametrize(("header", "problem"), [
    ("src_ip,dst_ip,dst_port", "missing required column(s): protocol"),
    ("src_ip,dst_ip,dst_port,protocol,vpc_id", "unknown column 'vpc_id'"),
    ("src_ip,srcaddr,dst_ip,dst_port,protocol", "repeats 'src_ip'"),
])
def test_explicit_format_with_a_bad_header_fails_closed(store: FlowStore, tmp_path: Path, header: str,
                                                        problem: str) -> None:
    path = write(tmp_path, [header, "10.0.0.1,10.0.0.2,22,tcp"])
    with pytest.raises(InputError) as err:
        store.ingest([path], fmt="csv")
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1, "header")
    assert problem in str(err.value)
    assert store.rows() == []


def test_sniff_is_conservative() -> None:
    assert generic_csv.sniff(["src_ip,dst_ip,dst_port,protocol"])
    assert generic_csv.sniff(["SADDR,DADDR,DPORT,PROTO,x_vlan"])
    assert not generic_csv.sniff(["src_ip,dst_ip,dst_port"])  # required column missing
    assert not generic_csv.sniff(["src_ip,dst_ip,dst_port,protocol,vlan"])  # unknown column
    assert not generic_csv.sniff(["10.0.0.1,10.0.0.2,22,6"])  # data, not a header
    assert not generic_csv.sniff(["src_ip dst_ip dst_port protocol"])  # not comma-separated
    assert not generic_csv.sniff(["firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows"])
    assert not generic_csv.sniff(["ts,te,td,sa,da,sp,dp,pr,flg,fwd"])  # nfdump legacy
    assert not generic_csv.sniff([])


def test_no_shared_sample_is_claimed(shared: Path) -> None:
    files = [p for p in sorted((shared / "samples" / "flows").rglob("*")) if p.is_file()]
    assert len(files) >= 20
    for path in files:
        try:
            fmt = detect(path)
        except InputError:
            continue
        assert fmt != "csv", path


def test_mapping_to_one_edge(store: FlowStore, tmp_path: Path) -> None:
    """End to end: both directions of one connection map to one dependency on the server's port."""
    path = write(tmp_path, [
        "start,src_ip,dst_ip,src_port,dst_port,protocol,bytes,action",
        "1767323045,10.0.0.1,10.0.0.2,40001,5432,tcp,300,accept",
        "1767323045,10.0.0.2,10.0.0.1,5432,40001,tcp,900,accept",
    ])
    inventory = Inventory(
        workloads=(Workload(name="app", kind=WorkloadKind.HOST),
                   Workload(name="db", kind=WorkloadKind.HOST, ports=(ListenPort(port=5432),))),
        bindings=(AddressBinding(ip="10.0.0.1", workload="app"), AddressBinding(ip="10.0.0.2", workload="db")))
    ingest(store, path)
    edges = {(e.source, e.destination, e.protocol, e.port): (e.flows, e.denied_flows, e.bytes)
             for e in map_flows(store, inventory).edges}
    assert edges == {("app", "db", Protocol.TCP, 5432): (1, 0, 1200)}


@pytest.mark.parametrize(("value", "us"), [
    ("0", 0), ("1767323045", 1767323045_000000), ("1767323045.5", 1767323045_500000),
    ("1767323045123", 1767323045_123000), ("2026-01-02T03:04:05+01:00", 1767319445_000000),
])
def test_time_forms(value: str, us: int) -> None:
    assert generic_csv.time_us(value, "start") == us


# -- the DuckDB fast path reads exactly what the Python reader reads ---------------------------

HEADER = "start,end,src_ip,dst_ip,src_port,dst_port,protocol,bytes,packets,action,direction,src_workload,x_note"
TRICKY = [
    "",  # 1: blank before the header
    HEADER,  # 2
    "1767323045.1234567,1767323046,10.0.0.1,10.0.0.2,40001,5432,tcp,100,1,allow,,web,a",  # 3: fraction cut
    "1767323045500,,10.0.0.1,10.0.0.3,40002,53,UDP,80,1,Deny,out,,b",  # 4: ms, start only; drop
    "1767323045500.5,,10.0.0.1,10.0.0.3,40003,53,udp,80,1,deny,,,c",  # 5: ms with a fraction: bad start
    "000000000001767323045,,10.0.0.1,10.0.0.4,40004,53,17,80,1,deny,,,d",  # 6: seconds with leading zeros
    "1767323050,1767323049,10.0.0.1,10.0.0.2,40005,5432,tcp,100,1,allow,,,e",  # 7: ends before it starts
    " 1767323045 , , 10.0.0.5 ,10.0.0.2, 40006,5432 , tcp ,100,1, allow ,,,f",  # 8: padded fields
    "1767323045,,10.0.0.1,10.0.0.2,,,icmp,,,allow,,,g",  # 9: ICMP, no ports, no counters
    "1767323045,,10.0.0.1,10.0.0.2,,5432,tcp,,,allow,,,h",  # 10: TCP without a source port: unknown
    "1767323045,,10.0.0.1,10.0.0.2,1,2,256,,,allow,,,i",  # 11: protocol out of range
    "1767323045,,10.0.0.1,10.0.0.2,1,2,gre,,,allow,sideways,,j",  # 12: unknown direction
    "1767323045,,10.0.0.1,10.0.0.2,1,2,gre,,,allow,,my pod,k",  # 13: a space in a workload name
    "1767323045,,10.0.0.1,10.0.0.2,1,2,gre,-5,,allow,,,l",  # 14: bytes
    "1767323045,,10.0.0.1,10.0.0.2,1,2,gre,,1.5,allow,,,m",  # 15: packets
    "1767323045,,FD00::0001,fd00::2,1,2,tcp,,,allow,,,n",  # 16: IPv6, RFC 5952 form in the store
    "1767323045,,fd00:::1,fd00::2,1,2,tcp,,,allow,,,o",  # 17
    '1767323045,,10.0.0.1,10.0.0.6,1,2,tcp,,,allow,,"ns/a",p',  # 18: quoted
    '1767323045,,10.0.0.1,10.0.0.6,1,2,tcp,,,allow,,"ns/a,q',  # 19: unterminated quote
    "2026-01-02T03:04:05Z,,10.0.0.1,10.0.0.7,1,2,tcp,,,allow,,,r",  # 20: ISO
    "2026-W01-5T03:04:05,,10.0.0.1,10.0.0.7,1,2,tcp,,,allow,,,s",  # 21: ISO week date (Python 3.11)
    "1767323045,,10.0.0.1,10.0.0.2,\u0664\u0660\u0660\u0660\u0667,5432,tcp,,,allow,,,t",  # 22: not ASCII digits
    "1767323045,,10.0.0.1,10.0.0.8,1,2,tcp,,,allow,,web\u00a0,u",  # 23: NBSP stripped
    "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,v,extra",  # 24: a field too many
    "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp",  # 25: fields missing
    "# not a comment here,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,w",  # 26: bad start
    "   ",  # 27: blank
    "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,,,,x",  # 28: empty action
]


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, TRICKY, "a.csv")
    b = write(tmp_path, [HEADER, TRICKY[2].replace("40001", "41001")], "b.csv")  # a scan of its own (line 1)
    c = write(tmp_path, ["", HEADER, TRICKY[5]], "c.csv")  # one scan with a.csv
    d = tmp_path / "d.csv.gz"  # gzip: a scan of its own
    with gzip.open(d, "wt") as fh:
        fh.write("\n".join(["", HEADER, TRICKY[3], TRICKY[4], TRICKY[19]]) + "\n")
    out = []
    runs, used = ingest_both(tmp_path, monkeypatch, [a, b, c, d])
    for report, rows in runs:
        got: dict[tuple[Any, ...], list[int]] = {}
        for r in rows:  # lines read in Python form their own aggregates: compare the sums
            key = (r["source_file"], r["src_ip"], r["dst_ip"], r["dst_port"], r["protocol"], r["action"],
                   r["direction"], r["src_workload"], r["ts_start"], r["ts_end"])
            sums = got.setdefault(key, [0, 0, 0])
            sums[0] += r["records"]
            sums[1] += r["bytes"] or 0
            sums[2] += r["packets"] or 0
        out.append(((report.lines, report.records, report.bad, [(b.file, b.line, b.field, b.message, b.text)
                                                                  for b in report.bad_samples]), got))
    assert used and used[0].relations and used[0].pending, "the fast path was not taken"
    assert out[0] == out[1]
    (lines, records, bad, samples), rows_ = out[0]
    # By hand from the comments: a.csv has 25 record lines (1, 27 blank; 2 the header): bad are 5, 7, 11-15,
    # 17, 19, 22, 24-26 and 28; b.csv and c.csv one record each.
    assert (lines, records, bad) == (25 + 1 + 1 + 3, 25 - 14 + 2 + 2, 14 + 1)
    assert [(Path(f).name, line, fld) for f, line, fld, _, _ in samples] == [
        ("a.csv", 5, "start"), ("a.csv", 7, "end"), ("a.csv", 11, "protocol"), ("a.csv", 12, "direction"),
        ("a.csv", 13, "src_workload"), ("a.csv", 14, "bytes"), ("a.csv", 15, "packets"), ("a.csv", 17, "src_ip"),
        ("a.csv", 19, "csv"), ("a.csv", 22, "src_port"), ("a.csv", 24, "columns"), ("a.csv", 25, "columns"),
        ("a.csv", 26, "start"), ("a.csv", 28, "action"), ("d.csv.gz", 4, "start")]
    mine = {(k[1], k[2], k[3], k[4], k[5], k[6], k[7]): v[0] for k, v in rows_.items() if k[0] == str(a)}
    assert mine[("fd00::1", "fd00::2", 2, "TCP", "accept", None, None)] == 1
    assert mine[("10.0.0.1", "10.0.0.3", 53, "UDP", "drop", "egress", None)] == 1
    assert mine[("10.0.0.1", "10.0.0.6", 2, "TCP", "accept", None, "ns/a")] == 1  # 18; 19 is bad
    assert mine[("10.0.0.1", "10.0.0.7", 2, "TCP", "accept", None, None)] == 2  # 20, 21
    assert mine[("10.0.0.1", "10.0.0.8", 2, "TCP", "accept", None, "web")] == 1  # 23


def test_a_time_beyond_ubigint_is_one_bad_line_on_both_paths(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # 10^17 ms = 10^20 us does not fit the store's UBIGINT (nor is it before 9999-12-31): one bad line
    # naming the column on both paths, not a failed ingest (see test_generic_csv_range.py).
    path = write(tmp_path, ["start,src_ip,dst_ip,dst_port,protocol", "100000000000000000,10.0.0.1,10.0.0.2,22,tcp"])
    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            if python_only:
                m.setattr(generic_csv, "_plan", all_in_python)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest([path], bad_threshold=1.0)
                assert (report.lines, report.records, report.bad) == (1, 0, 1)
                assert [(b.file, b.line, b.field) for b in report.bad_samples] == [(str(path), 2, "start")]
                assert s.rows() == []


# Values DuckDB's casts read more leniently than Python (signs, underscores, hex, exponents, blanks,
# leading zeros, long fractions), in files without an uncertain line: the staging SQL alone judges them.
RAW_HEADER = "start,end,src_ip,dst_ip,src_port,dst_port,protocol,bytes,packets,action,direction,src_workload"
RAW_FIRST = [
    RAW_HEADER,  # 1
    "1767323045,,10.0.0.1,10.0.1.1,40001,0443,tcp,100,1,allow,,",  # 2: leading zero: port 443
    "1767323045,,10.0.0.1,10.0.1.2,40002,+443,tcp,100,1,allow,,",  # 3
    "1767323045,,10.0.0.1,10.0.1.3,40003,443.0,tcp,100,1,allow,,",  # 4
    "1767323045,,10.0.0.1,10.0.1.4,40004,1e2,tcp,100,1,allow,,",  # 5
    "1767323045,,10.0.0.1,10.0.1.5,40005,0x1BB,tcp,100,1,allow,,",  # 6
    "1767323045,,10.0.0.1,10.0.1.6,-0,443,tcp,100,1,allow,,",  # 7
    "1767323045,,10.0.0.1,10.0.1.7,40007,443,tcp,5_0,1,allow,,",  # 8
    "1767323045,,10.0.0.1,10.0.1.8,40008,443,tcp, 0060 ,\t007,allow,,",  # 9: padded, leading zeros
    "1767323045,,10.0.0.1,10.0.1.9,40009,443,tcp,18446744073709551615,1,allow,,",  # 10: UBIGINT's limit
    " 1767323045.25 ,\t1767323046\x1f,10.0.0.1,10.0.1.10,40010,443,tcp,100,1,allow,,",  # 11: blanks
    "1767323045.000001,1767323045.0000019,10.0.0.1,10.0.1.11,40011,443,tcp,100,1,allow,,",  # 12: cut to 1 us
    "99999999999.5,,10.0.0.1,10.0.1.12,40012,443,tcp,100,1,allow,,",  # 13: seconds, just below ms
    "100000000000.5,,10.0.0.1,10.0.1.13,40013,443,tcp,100,1,allow,,",  # 14: ms with a fraction
    "0001767323045.5,,10.0.0.1,10.0.1.14,40014,443,tcp,100,1,allow,,",  # 15: leading zeros
    "1767323045,,\t10.0.0.1 ,10.0.1.15\x1c,40015,443, Tcp ,100,1, ALLOW ,In, web ",  # 16: padded everywhere
    "1767323045,,10.0.0.1,010.0.1.16,40016,443,tcp,100,1,allow,,",  # 17
    "1767323045,,10.0.0.1,10.0.1.17,40017,443,006,100,1,Deny,,",  # 18: TCP by number
    "1767323045,,10.0.0.1,10.0.1.18,40018,443,tcp6,100,1,allow,,",  # 19
    "1767323045,,10.0.0.1,10.0.1.19,40019,443,tcp,100,1,accept\x1f,OUT,",  # 20
    "1767323045,,10.0.0.1,10.0.1.20,40020,443,tcp,100,1,allow,,a\tb",  # 21: a blank inside a name
    "1767323045,,10.0.0.1,10.0.1.21, ,443,tcp,100,1,allow,,",  # 22: TCP, source port unknown
    "1767323045,,10.0.0.1,10.0.1.22,, ,icmp,100,1,allow,,",  # 23: ICMP without ports
    "1767323045,,10.0.0.1,10.0.1.23,1, ,tcp,100,1,allow,,",  # 24: TCP without a destination port
    "1767323045,,10.0.0.1,10.0.1.24,1,2,tcp,100,+1,allow,,",  # 25
    "1767323045,,10.0.0.1,10.0.1.25,1,2,tcp,100,1,allow,sideways ,",  # 26
]


def test_fast_path_raw_values_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, RAW_FIRST, "a.csv")
    b = tmp_path / "b.csv.gz"
    with gzip.open(b, "wt") as fh:
        fh.write("\n".join(RAW_FIRST) + "\n")
    out = []
    real = generic_csv._plan
    used: list[Any] = []

    def spy(*args: Any) -> Any:
        used.append(real(*args))
        return used[-1]

    for name, plan in (("fast", spy), ("python", all_in_python)):
        with monkeypatch.context() as m:
            m.setattr(generic_csv, "_plan", plan)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest([a, b], bad_threshold=1.0)
                got = {(Path(r["source_file"]).name, r["dst_ip"]): (
                    r["records"], r["src_port_min"], r["dst_port"], r["protocol"], r["action"], r["direction"],
                    r["src_workload"], r["ts_start"], r["ts_end"], r["bytes"], r["packets"]) for r in s.rows()}
        out.append(((report.lines, report.records, report.bad,
                     [(Path(b.file).name, b.line, b.field) for b in report.bad_samples]), got))
    assert used and used[0].relations and not used[0].pending and not used[0].python, "not all in SQL"
    assert out[0] == out[1]
    (lines, records, bad, samples), got = out[0]
    bad_lines = [3, 4, 5, 6, 7, 8, 14, 17, 19, 21, 24, 25, 26]
    assert (lines, records, bad) == (2 * 25, 2 * (25 - len(bad_lines)), 2 * len(bad_lines))
    assert [line for name, line, _ in samples if name == "a.csv"] == bad_lines
    assert got[("a.csv", "10.0.1.1")][2] == 443
    assert got[("a.csv", "10.0.1.8")][9:] == (60, 7)
    assert got[("a.csv", "10.0.1.9")][9] == (1 << 63) - 1  # read whole on both paths; the store saturates
    assert got[("a.csv", "10.0.1.10")][7:9] == (datetime(2026, 1, 2, 3, 4, 5, 250000), datetime(2026, 1, 2, 3, 4, 6))
    assert got[("a.csv", "10.0.1.11")][7:9] == (datetime(2026, 1, 2, 3, 4, 5, 1), datetime(2026, 1, 2, 3, 4, 5, 1))
    assert got[("a.csv", "10.0.1.12")][7] == datetime(5138, 11, 16, 9, 46, 39, 500000)
    assert got[("a.csv", "10.0.1.14")][7] == datetime(2026, 1, 2, 3, 4, 5, 500000)
    assert got[("a.csv", "10.0.1.15")][3:7] == ("TCP", "accept", "ingress", "web")
    assert got[("a.csv", "10.0.1.17")][3:5] == ("TCP", "drop")
    assert got[("a.csv", "10.0.1.19")][4:6] == ("accept", "egress")
    assert got[("a.csv", "10.0.1.21")][1] is None
    assert got[("a.csv", "10.0.1.22")][1:4] == (0, 0, "ICMP")


ADDRESSES = [
    HEADER,  # 1
    "1767323045,,999.1.1.1,10.0.0.2,1,2,tcp,,,allow,,,a",  # 2: an octet out of range
    "1767323045,,1:::2,10.0.0.2,1,2,tcp,,,allow,,,b",  # 3
    "1767323045,,10.0.0.1,010.0.0.2,1,2,tcp,,,allow,,,c",  # 4: a leading zero
    "1767323045,,FE80:0::1%eth0,10.0.0.2,1,2,tcp,,,allow,,,d",  # 5: a zone id: an address
    "1767323045,,::FFFF:10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,e",  # 6: IPv4-mapped
    "1767323045,,1.2.3.4%eth0,10.0.0.2,1,2,tcp,,,allow,,,f",  # 7: IPv4 has no zone
    "1767323045,,10.0.0.1,1:2:3:4:5:6:7:8:9,1,2,tcp,,,allow,,,g",  # 8: nine hextets
    "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,h",  # 9
]


def test_malformed_addresses_are_bad_lines_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, ADDRESSES)
    out = []
    for name in ("fast", "python"):
        with monkeypatch.context() as m:
            if name == "python":
                m.setattr(generic_csv, "_plan", all_in_python)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = ingest(s, path, bad_threshold=1.0)
                out.append((report.lines, report.records, report.bad,
                            [(b.line, b.field, b.message) for b in report.bad_samples],
                            sorted((r["src_ip"], r["dst_ip"], r["records"]) for r in s.rows())))
    assert out[0] == out[1]
    lines, records, bad, samples, got = out[0]
    assert (lines, records, bad) == (8, 3, 5)
    assert [(line, fld) for line, fld, _ in samples] == [
        (2, "src_ip"), (3, "src_ip"), (4, "dst_ip"), (7, "src_ip"), (8, "dst_ip")]
    assert samples[2][2] == "'010.0.0.2' is not an IP address"
    assert got == sorted([("10.0.0.1", "10.0.0.2", 1), ("fe80::1%eth0", "10.0.0.2", 1),
                          ("::ffff:10.0.0.1", "10.0.0.2", 1)])
