"""nfdump CSV reader, through the flow store: every sample file, exact normalised rows."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.mapping import map_flows
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError, TooManyBadLines
from microseg.ir.model import AddressBinding, Inventory, ListenPort, Protocol, Workload, WorkloadKind
from microseg.sources.flows import detect, nfdump

SAMPLES = Path("samples/flows/nfdump")
LEGACY = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,"
          "dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,"
          "exid,tr")
TAIL = (",0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
        "00:00:00:00:00:00" + ",0-0-0" * 10 + ",    0.000,    0.000,    0.000,0.0.0.0,0/0,1,1970-01-01 00:00:00.000")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src port, dst port, protocol, action, records, start, end, bytes, packets, tcp flags)
def rows(store: FlowStore) -> set[tuple[Any, ...]]:
    out = set()
    for r in store.rows():
        # NetFlow tells no reply, no usable direction and no workload identity
        assert (r["is_reply"], r["direction"], r["src_workload"], r["dst_workload"]) == (None, None, None, None)
        out.add((r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["protocol"], r["action"], r["records"],
                 r["ts_start"], r["ts_end"], r["bytes"], r["packets"], r["tcp_flags"]))
    return out


def ingest(store: FlowStore, *paths: Path, bad_threshold: float | None = None) -> IngestReport:
    report = (store.ingest(list(paths)) if bad_threshold is None
              else store.ingest(list(paths), bad_threshold=bad_threshold))
    assert all(f.format == "nfdump" for f in report.files)
    return report


def test_legacy_43_columns(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "legacy-43col-old-nfdump-1.6.csv")
    assert (report.lines, report.records, report.bad, report.skipped) == (1, 1, 0, {})
    start = datetime(2016, 4, 3, 21, 4, 58)  # local time without a zone, read as UTC
    assert rows(store) == {("84.88.72.48", "109.69.15.5", 80, 41401, "TCP", "accept", 1, start, start, 4905, 4, 16)}


def test_legacy_48_columns(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "legacy-48col-nfdump-1.6-1.7.4.csv")
    assert (report.lines, report.records, report.bad, report.skipped) == (3, 3, 0, {})
    assert rows(store) == {
        # ICMP time exceeded (dp 2816 = 11.0): no service port
        ("65.108.207.181", "88.99.162.34", 0, 0, "ICMP", "accept", 1, datetime(2022, 9, 3, 7, 10, 39),
         datetime(2022, 9, 3, 7, 11, 4), 1152, 2, None),
        # a bidirectional record: ibyt + obyt, ipkt + opkt; flags .AP...
        ("91.121.140.167", "172.16.1.2", 443, 57372, "TCP", "accept", 1, datetime(2023, 8, 31, 6, 50, 44),
         datetime(2023, 8, 31, 6, 51, 4), 816 + 104, 4, 16 | 8),
        ("fe80::60df:46cb:1382:b255", "ff02::1:3", 54347, 5355, "UDP", "accept", 1, datetime(2023, 1, 17, 7, 2, 25),
         datetime(2023, 1, 17, 7, 2, 26), 158, 2, None),
    }


def test_new_header_sample_has_no_records(store: FlowStore, shared: Path) -> None:
    # The 1.7.5+ sample documents the headers only: read as headers and comments, nothing bad.
    report = ingest(store, shared / SAMPLES / "new-predefined-csv-nfdump-1.7.5plus.txt")
    assert (report.lines, report.records, report.bad, report.skipped) == (0, 0, 0, {})
    assert rows(store) == set()


def test_every_sample_is_detected_and_claims_nothing_else(shared: Path) -> None:
    flows = shared / "samples" / "flows"
    mine = sorted(p for p in (flows / "nfdump").iterdir() if p.name != "README.txt")
    assert len(mine) == 3
    assert {f.name: detect(f) for f in mine} == {f.name: "nfdump" for f in mine}
    others = [p for p in sorted(flows.rglob("*"))
              if p.is_file() and p.parent.name != "nfdump" and p.name != "README.txt"]
    assert len(others) >= 10
    for path in others:
        try:
            assert detect(path) != "nfdump", path
        except InputError:
            continue


def write(tmp_path: Path, lines: list[str], name: str = "flows.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def legacy(ts: str, te: str, sa: str, da: str, sp: str, dp: str, pr: str, flg: str = "......", fwd: str = "0",
           ipkt: str = "1", ibyt: str = "60", opkt: str = "0", obyt: str = "0") -> str:
    return f"{ts},{te},1.000,{sa},{da},{sp},{dp},{pr},{flg},{fwd},0,{ipkt},{ibyt},{opkt},{obyt}{TAIL}"


def test_legacy_forwarding_status_protocol_names_summary_and_bad_lines(store: FlowStore, tmp_path: Path) -> None:
    t = "2026-01-02 03:00:00"
    lines = [
        "No matching flows",  # 1: an earlier empty query in the same capture file
        LEGACY,  # 2
        legacy(t, t, "10.0.0.1", "10.0.0.2", "40001", "5432", "TCP", "...A..S.", fwd="0"),  # 3: 8 flag columns
        legacy(t, t, "10.0.0.1", "10.0.0.2", "40002", "5432", "TCP", "....S.", fwd="128"),  # 4: dropped
        legacy(t, t, "10.0.0.1", "10.0.0.3", "0", "0", "GRE", fwd="64"),  # 5: forwarded, not TCP/UDP
        legacy(t, t, "fe80::1", "ff02::2", "0", "34560", "ICMP6"),  # 6: 135.0, neighbour solicitation
        legacy(t, t, "10.0.0.1", "10.0.0.2", "40003", "5432", "FOO"),  # 7
        legacy(t, "2026-01-02 02:00:00", "10.0.0.1", "10.0.0.2", "40004", "5432", "TCP"),  # 8
        legacy(t, t, "10.0.0.1", "10.0.0.2", "40005", "99999", "TCP"),  # 9
        legacy(t, t, "10.0.0.1", "10.0.0.2", "40006", "5432", "TCP", "..XP.."),  # 10
        "2026-01-02 03:00:00,2026-01-02 03:00:00,1.000,10.0.0.1",  # 11: cut short
        legacy("2026-13-02 03:00:00", t, "10.0.0.1", "10.0.0.2", "40007", "5432", "TCP"),  # 12
        legacy(t, t, "10.0.0.256", "10.0.0.2", "40008", "5432", "TCP"),  # 13
        "Summary",
        "flows,bytes,packets,avg_bps,avg_pps,avg_bpp",
        "9,540,9,0,0,60",
    ]
    report = ingest(store, write(tmp_path, lines), bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (13, 4, 7)
    assert report.skipped == {"no-flows": 1, "summary": 1}
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (7, "pr"), (8, "te"), (9, "dp"), (10, "flg"), (11, "header"), (12, "ts"), (13, "sa")]
    start = datetime(2026, 1, 2, 3)
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 40001, 5432, "TCP", "accept", 1, start, start, 60, 1, 16 | 2),
        ("10.0.0.1", "10.0.0.2", 40002, 5432, "TCP", "drop", 1, start, start, 60, 1, 2),
        ("10.0.0.1", "10.0.0.3", 0, 0, "IP-47", "accept", 1, start, start, 60, 1, None),
        ("fe80::1", "ff02::2", 0, 0, "ICMP", "accept", 1, start, start, 60, 1, None),
    }


def test_nfdump_175_predefined_fast_and_custom_csv(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        # -o csv (1.7.5+): numeric proto, type.code for ICMP, start + duration
        "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows",
        "2026-01-02 03:00:00.250,1.500,6,10.0.0.1,40001,10.0.0.2,443,10,5000,1",
        "2026-01-02 03:00:01.000,0.000,1,10.0.0.1,0,10.0.0.2,8.0,1,84,1",
        "Summary",
        "flows,bytes,packets,avg_bps,avg_pps,avg_bpp",
        "2,5084,11,0,0,0",
        # -o csv-fast: epoch milliseconds, numeric flags
        "cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,srcAS,dstAS,input,output,flags,srcTos,"
        "packets,bytes",
        "1,4,1767322802000,1767322803500,17,10.0.0.1,41000,10.0.0.5,53,0,0,0,0,0,0,2,150",
        "1,4,1767322802000,1767322803500,6,10.0.0.1,41001,10.0.0.5,53,0,0,0,0,18,0,2,120",
        # -o "csv:%ts,%te,%sa,%da,%sp,%dp,%pr,%ipkt,%ibyt,%opkt,%obyt,%flg"
        "firstSeen,lastSeen,srcAddr,dstAddr,srcPort,dstPort,proto,inPackets,inBytes,outPackets,outBytes,flags",
        "2026-01-02 03:00:04.000,2026-01-02 03:00:05.000,10.0.0.1,10.0.0.6,40002,8080,6,3,300,2,900,...AP.S.",
        "2026-01-02 03:00:04.000,2026-01-02 03:00:05.000,10.0.0.1,10.0.0.6,40003,8080,6,3,300,2,900,1.2",  # 12
    ]
    report = ingest(store, write(tmp_path, lines, "new.txt"), bad_threshold=1.0)
    assert (report.records, report.bad, report.skipped) == (5, 1, {"summary": 1})
    assert [(b.line, b.field) for b in report.bad_samples] == [(12, "flags")]
    assert rows(store) == {
        ("10.0.0.1", "10.0.0.2", 40001, 443, "TCP", "accept", 1, datetime(2026, 1, 2, 3, 0, 0, 250000),
         datetime(2026, 1, 2, 3, 0, 1, 750000), 5000, 10, None),
        ("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "accept", 1, datetime(2026, 1, 2, 3, 0, 1),
         datetime(2026, 1, 2, 3, 0, 1), 84, 1, None),
        ("10.0.0.1", "10.0.0.5", 41000, 53, "UDP", "accept", 1, datetime(2026, 1, 2, 3, 0, 2),
         datetime(2026, 1, 2, 3, 0, 3, 500000), 150, 2, None),
        ("10.0.0.1", "10.0.0.5", 41001, 53, "TCP", "accept", 1, datetime(2026, 1, 2, 3, 0, 2),
         datetime(2026, 1, 2, 3, 0, 3, 500000), 120, 2, 18),
        ("10.0.0.1", "10.0.0.6", 40002, 8080, "TCP", "accept", 1, datetime(2026, 1, 2, 3, 0, 4),
         datetime(2026, 1, 2, 3, 0, 5), 1200, 5, 16 | 8 | 2),
    }


def test_local_times_in_a_stated_zone_across_both_dst_changes(tmp_path: Path) -> None:
    # Europe/Berlin in 2026 (IANA tzdata; EU rule: last Sunday of March and of October, 01:00 UTC):
    # CET (+01:00) until 2026-03-29 02:00 local, which jumps to 03:00 CEST (+02:00); CEST until
    # 2026-10-25 03:00 local, which goes back to 02:00 CET, so 02:00-02:59 happens twice that day.
    lines = [
        "firstSeen,lastSeen,srcAddr,dstAddr,srcPort,dstPort,proto,inPackets,inBytes,outPackets,outBytes,flags",
        "2026-01-15 12:00:00.250,2026-01-15 12:00:01.000,10.0.0.1,10.0.0.2,40001,443,6,1,60,0,0,......",  # winter
        "2026-03-29 01:59:59,2026-03-29 03:00:00,10.0.0.1,10.0.0.2,40002,443,6,1,60,0,0,......",  # across the gap
        "2026-03-29 02:30:00,2026-03-29 03:00:00,10.0.0.1,10.0.0.2,40003,443,6,1,60,0,0,......",  # 4: no such time
        "2026-10-25 02:30:00,2026-10-25 03:00:00,10.0.0.1,10.0.0.2,40004,443,6,1,60,0,0,......",  # repeated hour
        "2026-07-01 10:00:00,2026-03-29 02:59:59,10.0.0.1,10.0.0.2,40005,443,6,1,60,0,0,......",  # 6: te in the gap
        "cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,flags,packets,bytes",
        "1,4,1767322802000,1767322803500,17,10.0.0.1,41000,10.0.0.5,53,0,2,150",  # epoch ms: UTC in any zone
    ]
    path = write(tmp_path, lines, "berlin.csv")
    with FlowStore(tmp_path / "berlin" / "flows.duckdb") as berlin:
        report = berlin.ingest([path], bad_threshold=1.0, timezone="Europe/Berlin")
        assert [(b.line, b.field) for b in report.bad_samples] == [(4, "firstSeen"), (6, "lastSeen")]
        got = {(r["src_port"], r["ts_start"], r["ts_end"]) for r in berlin.rows()}
    assert got == {
        (40001, datetime(2026, 1, 15, 11, 0, 0, 250000), datetime(2026, 1, 15, 11, 0, 1)),
        (40002, datetime(2026, 3, 29, 0, 59, 59), datetime(2026, 3, 29, 1, 0, 0)),
        # the earlier of the two 02:30s (CEST); 03:00 after the change is CET
        (40004, datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 25, 2, 0)),
        (41000, datetime(2026, 1, 2, 3, 0, 2), datetime(2026, 1, 2, 3, 0, 3, 500000)),
    }
    # The same file read as UTC (the default): local times taken as they are.
    with FlowStore(tmp_path / "utc" / "flows.duckdb") as utc:
        report = utc.ingest([path], bad_threshold=1.0)
        assert (report.records, report.bad) == (5, 1)  # only line 6 is bad: it now ends before it starts
        # lines 3 and 4 (02:30 exists in UTC) share one aggregate
        assert {(r["records"], r["ts_start"], r["ts_end"]) for r in utc.rows()
                if r["ts_start"].date() == datetime(2026, 3, 29).date()} == {
            (2, datetime(2026, 3, 29, 1, 59, 59), datetime(2026, 3, 29, 3, 0))}


def test_unknown_time_zone_is_an_input_error(store: FlowStore, tmp_path: Path) -> None:
    path = write(tmp_path, [LEGACY], "empty.csv")
    with pytest.raises(InputError) as err:
        store.ingest([path], timezone="Mars/Olympus_Mons")
    assert err.value.field == "--flow-timezone"


def test_gzip_and_threshold(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "flows.csv.gz"
    t = "2026-01-02 03:00:00"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([LEGACY, legacy(t, t, "10.0.0.1", "10.0.0.2", "40001", "80", "TCP"),
                            legacy(t, t, "nope", "10.0.0.2", "40001", "80", "TCP")]) + "\n")
    with pytest.raises(TooManyBadLines) as err:
        store.ingest([path])
    assert (err.value.line, err.value.field) == (3, "sa")
    assert store.rows() == []
    report = store.ingest([path], bad_threshold=0.5)
    assert (report.records, report.bad) == (1, 1)


def test_sniff() -> None:
    assert nfdump.sniff([LEGACY])
    assert nfdump.sniff(["No matching flows", LEGACY])
    assert nfdump.sniff(["# comment", "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows"])
    assert not nfdump.sniff(["version account-id srcaddr dstaddr"])
    assert not nfdump.sniff(["#separator \\x09", "#path\tconn"])
    assert not nfdump.sniff(['{"ts": 1, "id.orig_h": "10.0.0.1"}'])
    assert not nfdump.sniff(["src,dst,port"])
    assert not nfdump.sniff([])


def test_protocol_names_are_nfdumps() -> None:
    assert (nfdump._PROTOS["TCP"], nfdump._PROTOS["UDP"], nfdump._PROTOS["ICMP"], nfdump._PROTOS["ICMP6"],
            nfdump._PROTOS["GRE"], nfdump._PROTOS["ESP"], nfdump._PROTOS["SCTP"], nfdump._PROTOS["MPLS"]) == (
        6, 17, 1, 58, 47, 50, 132, 137)
    assert len(nfdump._PROTO_NAMES) == 138


def test_mapping_request_and_reply_are_one_edge(store: FlowStore, tmp_path: Path) -> None:
    """End to end: NetFlow logs each direction; both map to one dependency on the server's port."""
    t = "2026-01-02 03:00:00"
    path = write(tmp_path, [LEGACY,
                            legacy(t, t, "10.0.0.1", "10.0.0.2", "40001", "5432", "TCP", ".AP.S.", ibyt="300"),
                            legacy(t, t, "10.0.0.2", "10.0.0.1", "5432", "40001", "TCP", ".AP.S.", ibyt="900")])
    inventory = Inventory(
        workloads=(Workload(name="app", kind=WorkloadKind.HOST),
                   Workload(name="db", kind=WorkloadKind.HOST, ports=(ListenPort(port=5432),))),
        bindings=(AddressBinding(ip="10.0.0.1", workload="app"), AddressBinding(ip="10.0.0.2", workload="db")))
    ingest(store, path)
    edges = {(e.source, e.destination, e.protocol, e.port): (e.flows, e.denied_flows, e.bytes)
             for e in map_flows(store, inventory).edges}
    assert edges == {("app", "db", Protocol.TCP, 5432): (1, 0, 1200)}


# -- the DuckDB fast path reads exactly what the Python reader reads ---------------------------

T = "2026-01-02 03:00:00"
TRICKY = [
    "# a comment",  # 1
    "   ",  # 2: blank
    LEGACY,  # 3
    legacy(T, "2026-01-02 03:00:01.5", "10.0.0.1", "10.0.0.2", "40001", "5432", "TCP", ".AP.SF"),  # 4
    legacy("2026-02-30 00:00:00", T, "10.0.0.1", "10.0.0.2", "40002", "5432", "TCP"),  # 5: no such day
    legacy("2026-01-02 24:00:00", T, "10.0.0.1", "10.0.0.2", "40003", "5432", "TCP"),  # 6: hour 24
    legacy("2026-01-02 02:59:60", T, "10.0.0.1", "10.0.0.2", "40004", "5432", "TCP"),  # 7: second 60
    legacy("1767322800123", "1767322801000", "10.0.0.1", "10.0.0.2", "40005", "5432", "TCP"),  # 8: epoch ms
    legacy("1969-12-31 23:59:59", T, "10.0.0.1", "10.0.0.2", "40006", "5432", "TCP"),  # 9: before 1970
    legacy(T, "9999-12-31 23:59:59.5", "10.0.0.1", "10.0.0.2", "40007", "5432", "TCP"),  # 10: after 9999
    legacy(T, T, "10.0.0.1", "10.0.0.2", "0", "2816", "ICMP"),  # 11
    legacy(T, T, "10.0.0.1", "10.0.0.3", "0", "11.0", "ICMP"),  # 12
    legacy(T, T, "10.0.0.1", "10.0.0.4", "0", "1234.5", "ICMP"),  # 13: not type.code
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40008", "53", "udp", "garbage"),  # 14: name in lower case, flags unread
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40009", "53", "300"),  # 15
    legacy(T, T, "10.0.0.1", "10.0.0.5", "40010", "53", "0047"),  # 16: GRE
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40011", "5432", "TCP", fwd=""),  # 17
    legacy(T, T, "10.0.0.1", "10.0.0.6", "40012", "5432", "TCP", "300", fwd="130"),  # 18: dropped; 300 & 255
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40013", "5432", "TCP", ipkt="abc"),  # 19
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40014", "5432", "TCP", opkt=""),  # 20
    legacy(T, T, " 10.0.0.1 ", "10.0.0.7", " 40015", "5432 ", "TCP"),  # 21: padded fields
    legacy(T, T, "\u00a010.0.0.1", "10.0.0.8", "40016", "5432", "TCP"),  # 22: NBSP, stripped by Python
    legacy(T, T, "10.0.0.1", "10.0.0.2", "\u0664\u0660\u0660\u0661\u0667", "5432", "TCP"),  # 23: 40017 to isdigit
    legacy(T, T, "10.0.0.1", "10.0.0.9", "40018", "5432", "TCP", ibyt="1234567890123456789"),  # 24: 19 digits
    legacy(T, T, "FE80::0001", "ff02::2", "40019", "547", "UDP"),  # 25: IPv6
    legacy(T, T, "fe80:::1", "ff02::2", "40020", "547", "UDP"),  # 26
    legacy(T, T, "010.0.0.1", "10.0.0.2", "40021", "5432", "TCP"),  # 27: leading zero
    "2026-01-02 03:00:00,2026-01-02 03:00:00,1.000,10.0.0.1",  # 28: cut short
    legacy(T, T, "10.0.0.1", "10.0.0.2", "40022", "65536", "TCP"),  # 29
    "No matching flows",  # 30
    LEGACY,  # 31: the same header again
    "9,540,9,0,0,60",  # 32: the totals line's text, before the Summary: a bad record
    legacy(T, T, "10.0.0.1", "10.0.0.10", "40023", "5432", "TCP") + "\r",  # 33: CRLF
    legacy(T, T, "10.0.0.1", "10.0.0.11", "40024", "5432", "TCP", "..XP.."),  # 34
    "Summary",  # 35
    "flows,bytes,packets,avg_bps,avg_pps,avg_bpp",  # 36
    "9,540,9,0,0,60",  # 37
]
CURRENT = [
    "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows",  # 1
    "2026-01-02 03:00:00.250,1.5,6,10.0.0.1,40001,10.0.0.2,443,10,5000,1",  # 2
    "2026-01-02 03:00:00,abc,6,10.0.0.1,40002,10.0.0.2,443,10,5000,1",  # 3
    "2026-01-02 03:00:00,0.0000019,17,10.0.0.1,40003,10.0.0.2,53,1,x,1",  # 4: bytes x
    "2026-01-02 03:00:00,0.0000019,17,10.0.0.1,40004,10.0.0.3,53,1,70,1",  # 5: cut to 1 us
    "2026-01-02 03:00:00,2,58,fe80::1,0,ff02::1,135.0,1,70,1",  # 6
]


def merged(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Aggregates keyed by flow: lines read in Python form their own aggregate next to DuckDB's (the
    store aggregates each staged relation by itself), so the two paths are compared on the sums."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        key = (r["source_file"], r["src_ip"], r["dst_ip"], r["dst_port"], r["protocol"], r["action"], r["bucket"])
        new = (r["records"], r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["src_port_min"],
               r["src_port_max"], r["tcp_flags"])
        if key in out:
            old = out[key]
            new = (old[0] + new[0], old[1] + new[1], old[2] + new[2], min(old[3], new[3]), max(old[4], new[4]),
                   min(old[5], new[5]), max(old[6], new[6]), None if old[7] is None else old[7] | new[7])
        out[key] = new
    return out


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> tuple[Any, Any]:
    """(report, rows) through the fast path, then through the Python path alone."""
    out = []
    real = nfdump._plan
    used: list[Any] = []

    def spy(*a: Any, **k: Any) -> Any:
        used.append(real(*a, **k))
        return used[-1]

    def python_only(_con: Any, files: Any, *_a: Any) -> Any:
        plan = nfdump._Plan()
        plan.python.update(range(len(files)))
        return plan

    for name, plan in (("fast", spy), ("python", python_only)):
        with monkeypatch.context() as m:
            m.setattr(nfdump, "_plan", plan)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest(list(paths), bad_threshold=1.0)
                got = merged(s.rows())
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(b.file, b.line, b.field, b.message, b.text) for b in report.bad_samples]), got))
    assert used and used[0].relations, "the fast path was not taken"
    return out[0], out[1]


def test_fast_path_matches_the_python_reader_line_for_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, TRICKY, "a.csv")
    b = write(tmp_path, CURRENT, "b.txt")
    c = tmp_path / "c.csv.gz"  # the plain nfdump shape, gzip: header, records, the Summary trailer
    with gzip.open(c, "wt") as fh:
        fh.write("\n".join([LEGACY, TRICKY[3], TRICKY[10], *TRICKY[34:]]) + "\n")
    d = write(tmp_path, [LEGACY, TRICKY[3], *TRICKY[34:], LEGACY, TRICKY[4], *TRICKY[34:]], "d.csv")  # two outputs
    # e.csv: its header on line 3 as in a.csv (one DuckDB scan for both); f.csv: invalid UTF-8 (Python)
    e = write(tmp_path, ["# e", "", LEGACY, TRICKY[3].replace("40001", "41001"), TRICKY[4]], "e.csv")
    f = tmp_path / "f.csv"
    f.write_bytes(f"{LEGACY}\n{TRICKY[3]}\n".replace(",0/0,", ",0/\udcff,").encode("utf-8", "surrogateescape"))
    fast, python = both_paths(tmp_path, monkeypatch, a, b, c, d, e, f)
    assert fast == python
    report, rows = fast
    # Written out by hand from the comments on TRICKY and CURRENT, independent of either path:
    # a.csv: 13 records (4, 8, 11, 12, 14, 16, 18, 21-25, 33), 16 bad, "No matching flows", one summary line;
    # b.txt: 3 records, 2 bad; c.csv.gz: 2 records, one summary line; d.csv: 1 record, 1 bad, 2 summary lines;
    # e.csv: 1 record, 1 bad; f.csv: 1 record (the byte 0xff is in the unread "eng" column).
    assert report[:4] == (31 + 5 + 3 + 4 + 2 + 1, 13 + 3 + 2 + 1 + 1 + 1, 16 + 2 + 1 + 1,
                          {"no-flows": 1, "summary": 1 + 1 + 2})
    assert [(path.rsplit("/", 1)[1], line, field) for path, line, field, _, _ in report[4]] == [
        ("a.csv", 5, "ts"), ("a.csv", 6, "ts"), ("a.csv", 7, "ts"), ("a.csv", 9, "ts"), ("a.csv", 10, "te"),
        ("a.csv", 13, "dp"), ("a.csv", 15, "pr"), ("a.csv", 17, "fwd"), ("a.csv", 19, "ipkt"),
        ("a.csv", 20, "opkt"), ("a.csv", 26, "sa"), ("a.csv", 27, "sa"), ("a.csv", 28, "header"),
        ("a.csv", 29, "dp"), ("a.csv", 32, "header"), ("a.csv", 34, "flg"),
        ("b.txt", 3, "duration"), ("b.txt", 4, "bytes"), ("d.csv", 7, "ts"), ("e.csv", 5, "ts")]
    got = {(k[1], k[2], k[3], k[4], k[5]): (v[0], v[1], v[7]) for k, v in rows.items() if k[0] == str(a)}
    assert got == {  # (records, bytes, flags)
        # 4 (.AP.SF), 8 (epoch ms) and 23 (Arabic-Indic digits: isdigit) to 10.0.0.2; 21 (padded), 22 (NBSP)
        # and 33 (CRLF): 60 + 0 bytes each
        ("10.0.0.1", "10.0.0.2", 5432, "TCP", "accept"): (3, 180, 0b011011),
        ("10.0.0.1", "10.0.0.7", 5432, "TCP", "accept"): (1, 60, 0),
        ("10.0.0.1", "10.0.0.8", 5432, "TCP", "accept"): (1, 60, 0),
        ("10.0.0.1", "10.0.0.10", 5432, "TCP", "accept"): (1, 60, 0),
        ("10.0.0.1", "10.0.0.2", 0, "ICMP", "accept"): (1, 60, None),  # 11: dp 2816 is type 11 code 0
        ("10.0.0.1", "10.0.0.3", 0, "ICMP", "accept"): (1, 60, None),
        ("10.0.0.1", "10.0.0.2", 53, "UDP", "accept"): (1, 60, None),  # 14
        ("10.0.0.1", "10.0.0.5", 0, "IP-47", "accept"): (1, 60, None),  # 16
        ("10.0.0.1", "10.0.0.6", 5432, "TCP", "drop"): (1, 60, 300 & 255),  # 18: fwd 130 = 0b10 000010
        ("10.0.0.1", "10.0.0.9", 5432, "TCP", "accept"): (1, 1234567890123456789, 0),  # 24
        ("fe80::1", "ff02::2", 547, "UDP", "accept"): (1, 60, None),  # 25, in RFC 5952 form
    }


def test_fast_path_on_plain_nfdump_output_reads_no_line_in_python(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    t = "2026-01-02 03:00:00"
    lines = [LEGACY] + [legacy(t, t, f"10.0.0.{i % 7}", f"10.0.1.{i % 5}", str(40000 + i), "443", "TCP", ".AP.SF",
                               fwd="128" if i % 10 == 0 else "0", ibyt=str(100 + i)) for i in range(200)]
    lines += ["Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", "200,39900,200,0,0,199"]
    path = tmp_path / "flows.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    calls: list[Any] = []
    real = nfdump._stage_file
    monkeypatch.setattr(nfdump, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path])
        assert (report.lines, report.records, report.bad, report.skipped) == (201, 200, 0, {"summary": 1})
        assert sum(r["bytes"] for r in s.rows()) == sum(100 + i for i in range(200))
        assert sum(r["records"] for r in s.rows() if r["action"] == "drop") == 20
    assert calls == []


def test_a_counter_beyond_ubigint_fails_the_ingest_on_both_paths(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # 2^64 = 18446744073709551616 does not fit the store's UBIGINT: the Python path fails reading its
    # staging file, the fast path in the scan; either way an InputError naming the file, nothing stored.
    t = "2026-01-02 03:00:00"
    path = write(tmp_path, [LEGACY, legacy(t, t, "10.0.0.1", "10.0.0.2", "40001", "443", "TCP",
                                           ibyt="18446744073709551616")], "big.csv")
    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            if python_only:
                m.setattr(nfdump, "_plan", lambda _con, files, *_a: nfdump._Plan(python=set(range(len(files)))))
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                with pytest.raises(InputError) as err:
                    s.ingest([path], bad_threshold=1.0)
                assert str(path) in str(err.value)
                assert s.rows() == []


# Values DuckDB's casts read more leniently than Python (signs, underscores, hex, exponents, blanks,
# leading zeros), in a file without any special line: every line is judged by the fast path's SQL alone.
RAW_FIRST = [
    LEGACY,  # 1
    legacy(T, T, "10.0.0.1", "10.0.1.1", "40001", "0443", "TCP"),  # 2: leading zero: port 443
    legacy(T, T, "10.0.0.1", "10.0.1.2", "+40002", "443", "TCP"),  # 3: sign
    legacy(T, T, "10.0.0.1", "10.0.1.3", "40003", "443.0", "TCP"),  # 4
    legacy(T, T, "10.0.0.1", "10.0.1.4", "40004", "1e2", "TCP"),  # 5
    legacy(T, T, "10.0.0.1", "10.0.1.5", "40005", "0x1BB", "TCP"),  # 6
    legacy(T, T, "10.0.0.1", "10.0.1.6", "40006", "-0", "TCP"),  # 7
    legacy(T, T, "10.0.0.1", "10.0.1.7", "40007", "443", "TCP", ibyt="6_0"),  # 8
    legacy(T, T, "10.0.0.1", "10.0.1.8", "40008", "443", "TCP", ibyt=" 0060 ", opkt="\t2"),  # 9: padded, zeros
    legacy(T, T, "10.0.0.1", "10.0.1.9", "40009", "443", "TCP", ipkt="+1"),  # 10
    legacy(T, T, "10.0.0.1", "10.0.1.10", "40010", "443", "TCP", fwd="+128"),  # 11
    legacy(T, T, "10.0.0.1", "10.0.1.11", "40011", "443", "TCP", fwd="0128"),  # 12: dropped
    legacy(T, T, "10.0.0.1", "10.0.1.12", "40012", "443", "TCP", "CE.A..S."),  # 13: 8-letter flags
    legacy(T, T, "10.0.0.1", "10.0.1.13", "40013", "443", "TCP", " .AP.SF "),  # 14: padded flags
    legacy(T, T, "10.0.0.1", "10.0.1.14", "40014", "443", "TCP", ".ap.sf"),  # 15: lower case: bad
    legacy(T, T, "10.0.0.1", "10.0.1.15", "40015", "443", "TCP", "+27"),  # 16
    legacy(T, T, "10.0.0.1", "10.0.1.16", "40016", "443", "TCP", "0027"),  # 17: flags 27
    legacy(T, T, "10.0.0.1", "10.0.1.17", "40017", "443", " tcp "),  # 18: padded name
    legacy(T, T, "10.0.0.1", "10.0.1.18", "40018", "443", "006"),  # 19: TCP by number
    legacy(" " + T, T + "\x1f", "10.0.0.1", "10.0.1.19", "40019", "443", "TCP"),  # 20: blanks Python strips
    legacy(T.replace(" ", "T"), T, "10.0.0.1", "10.0.1.20", "40020", "443", "TCP"),  # 21
    legacy(T, T + ".1234567", "10.0.0.1", "10.0.1.21", "40021", "443", "TCP"),  # 22: 7 fraction digits
    legacy(T, T.replace(" 03", " 3"), "10.0.0.1", "10.0.1.22", "40022", "443", "TCP"),  # 23
    legacy(T, T, " 10.0.0.1\x1c", "10.0.1.23 ", "40023", "443", "TCP"),  # 24: padded addresses
    legacy(T, T, "10.0.0.1", "10.0.1.256", "40024", "443", "TCP"),  # 25
    legacy(T, T, "10.0.0.1", "10.0.1.24", "40025", "443", "ICMP"),  # 26: ICMP: the ports are not read
    legacy(T, T, "10.0.0.1", "10.0.1.25", "0", "8.0", "ICMP"),  # 27: type.code
    legacy(T, T, "10.0.0.1", "10.0.1.26", "0", "+8", "ICMP"),  # 28
    legacy(T, T, "10.0.0.1", "10.0.1.27", "40026", "443", "TCP", ibyt="18446744073709551615", obyt="0"),  # 29
    legacy("0999-01-02 03:00:00", T, "10.0.0.1", "10.0.1.28", "40027", "443", "TCP"),  # 30: before 1970
    legacy(T + ".5", T + ".50", "10.0.0.1", "10.0.1.29", "40028", "443", "TCP"),  # 31: fractions
    legacy("10000-01-02 03:00:00", T, "10.0.0.1", "10.0.1.30", "40029", "443", "TCP"),  # 32: year 10000
]


def test_fast_path_raw_values_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, RAW_FIRST, "raw.csv")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, rows = fast
    bad = [3, 4, 5, 6, 7, 8, 10, 11, 15, 16, 21, 22, 23, 25, 28, 30, 32]
    assert report[:4] == (len(RAW_FIRST) - 1, len(RAW_FIRST) - 1 - len(bad), len(bad), {})
    assert [line for _path, line, _field, _message, _text in report[4]] == bad
    got = {k[2]: (v[0], v[1], v[2], v[7], k[3], k[4], k[5]) for k, v in rows.items()}  # by destination
    assert got["10.0.1.1"] == (1, 60, 1, 0, 443, "TCP", "accept")
    assert got["10.0.1.8"] == (1, 60, 3, 0, 443, "TCP", "accept")
    assert got["10.0.1.11"] == (1, 60, 1, 0, 443, "TCP", "drop")
    assert got["10.0.1.12"][3] == 0b11010010
    assert got["10.0.1.13"][3] == 0b011011
    assert got["10.0.1.16"][3] == 27
    assert got["10.0.1.17"][5] == got["10.0.1.18"][5] == got["10.0.1.19"][5] == got["10.0.1.23"][5] == "TCP"
    assert got["10.0.1.24"][4:6] == got["10.0.1.25"][4:6] == (0, "ICMP")
    times = {k[2]: (v[3], v[4]) for k, v in rows.items()}
    assert times["10.0.1.29"] == (datetime(2026, 1, 2, 3, 0, 0, 500000), datetime(2026, 1, 2, 3, 0, 0, 500000))
    assert got["10.0.1.27"][1] == (1 << 63) - 1  # read whole on both paths; the store saturates the sum


def test_ipv6_lines_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # IPv6 addresses in any spelling ipaddress accepts are judged in SQL (the shared pattern); none of
    # these lines is special, so the Python reader reads none of them, and both paths agree.
    t = "2026-01-02 03:00:00"
    pairs = [("2001:db8::1", "2001:DB8::2"), ("2001:0db8:0000:0000:0000:0000:0000:0001", "::"), ("::1", "1::"),
             ("::ffff:10.0.0.1", "64:ff9b::192.0.2.33"), ("fe80::1%eth0", "ff02::1"), ("2001:db8::g", "::1"),
             ("2001:db8:::1", "::1"), ("1:2:3:4:5:6:7:8:9", "::1"), ("::ffff:10.0.0.256", "::1"), ("::1%", "::1")]
    lines = [LEGACY] + [legacy(t, t, a, b, str(40001 + k), "443", "TCP") for k, (a, b) in enumerate(pairs)]
    path = write(tmp_path, lines, "v6.csv")
    calls: list[Any] = []
    real = nfdump._stage_file
    with monkeypatch.context() as m:
        m.setattr(nfdump, "_stage_file", lambda *a, **k: calls.append(a) or real(*a, **k))
        with FlowStore(tmp_path / "spy" / "flows.duckdb") as s:
            assert s.ingest([path], bad_threshold=1.0).records == 5
    assert calls == []
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    report, rows = fast
    # 6-10 are not addresses; 5 has a scope id, which ipaddress accepts: a record, as in every reader
    assert report[:3] == (10, 5, 5)
    assert [line for _path, line, _field, _message, _text in report[4]] == [7, 8, 9, 10, 11]
    assert {(k[1], k[2]) for k in rows} >= {("2001:db8::1", "2001:db8::2"), ("2001:db8::1", "::"), ("::1", "1::"),
                                           ("::ffff:10.0.0.1", "64:ff9b::c000:221"), ("fe80::1%eth0", "ff02::1")}
