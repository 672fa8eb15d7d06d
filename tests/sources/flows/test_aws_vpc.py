"""AWS VPC Flow Logs reader, through the flow store: every sample file, exact normalised rows."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError, TooManyBadLines
from microseg.sources.flows import aws_vpc

SAMPLES = Path("samples/flows/aws-vpc")
V2_HEADER = " ".join(aws_vpc.DEFAULT_FIELDS)


def ts(epoch: int) -> datetime:
    """DuckDB TIMESTAMPs come back naive, in UTC."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "store" / "flows.duckdb") as s:
        yield s


# (src, dst, src ports, dst ports, protocol, action, records, bytes, packets, start, end, is_reply, flags, direction)
Row = tuple[Any, ...]


def rows(store: FlowStore) -> set[Row]:
    return {(r["src_ip"], r["dst_ip"], (r["src_port_min"], r["src_port_max"]), (r["dst_port_min"], r["dst_port_max"]),
             r["protocol"], r["action"], r["records"], r["bytes"], r["packets"], r["ts_start"], r["ts_end"],
             r["is_reply"], r["tcp_flags"], r["direction"]) for r in store.rows()}


def ingest(store: FlowStore, *paths: Path, **kw: Any) -> IngestReport:
    report = store.ingest(list(paths), **kw)
    assert all(f.format == "aws-vpc" for f in report.files)
    return report


def test_v2_default_with_nodata_and_skipdata(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "v2-default.log")
    assert (report.lines, report.records, report.bad, report.skipped) == (7, 5, 0, {"NODATA": 1, "SKIPDATA": 1})
    assert rows(store) == {
        ("172.31.16.139", "172.31.16.21", (20641, 20641), (22, 22), "TCP", "accept", 1, 4249, 20,
         ts(1418530010), ts(1418530070), None, None, None),
        ("172.31.9.69", "172.31.9.12", (49761, 49761), (3389, 3389), "TCP", "reject", 1, 4249, 20,
         ts(1418530010), ts(1418530070), None, None, None),
        ("203.0.113.12", "172.31.16.139", (0, 0), (0, 0), "ICMP", "accept", 1, 336, 4,
         ts(1432917027), ts(1432917142), None, None, None),
        ("172.31.16.139", "203.0.113.12", (0, 0), (0, 0), "ICMP", "reject", 1, 336, 4,
         ts(1432917094), ts(1432917142), None, None, None),
        ("2001:db8:1234:a100:8d6e:3477:df66:f105", "2001:db8:1234:a102:3304:8879:34cf:4071", (34892, 34892),
         (22, 22), "TCP", "accept", 1, 8855, 54, ts(1477913708), ts(1477913820), None, None, None),
    }


def test_v3_tcp_flags_including_the_double_space_line(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "v3-tcp-flags.log")
    # Line 9 has "43638  10.0.0.62": DuckDB rejects it, the reader re-reads it as a valid record.
    assert (report.lines, report.records, report.bad) == (8, 8, 0)
    server, client = "10.0.0.62", "52.213.180.42"
    t0, t1, t2, t3, t4 = 1566848875, 1566848933, 1566849113, 1566933133, 1566933193
    assert rows(store) == {
        # SYN (2) from the client and SYN-ACK (18) from the server: request / reply. The two
        # connections' ephemeral ports 43416 and 43418 fold into one range.
        (client, server, (43416, 43418), (5001, 5001), "TCP", "accept", 2, 568 + 100701, 8 + 70, ts(t0), ts(t1),
         False, 2, None),
        (server, client, (5001, 5001), (43416, 43418), "TCP", "accept", 2, 376 + 632, 7 + 12, ts(t0), ts(t1),
         True, 18, None),
        # FIN only: direction unknown.
        (server, client, (5001, 5001), (43418, 43418), "TCP", "accept", 1, 63388, 1219, ts(t1), ts(t2), None, 1, None),
        (client, server, (43418, 43418), (5001, 5001), "TCP", "accept", 1, 23294588, 15774, ts(t1), ts(t2), None, 1,
         None),
        (client, server, (43638, 43638), (5001, 5001), "TCP", "accept", 1, 1260, 17, ts(t3), ts(t4), False, 3, None),
        (server, client, (5001, 5001), (43638, 43638), "TCP", "accept", 1, 967, 14, ts(t3), ts(t4), True, 19, None),
    }


def test_transit_gateway_uses_packet_addresses(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "v3-transit-gateway.log")
    # Lines 3 and 4 were logged on the transit gateway's ENIs (srcaddr 10.40.1.175, dstaddr 10.40.2.31);
    # pkt-srcaddr / pkt-dstaddr are the real endpoints, so they join lines 1 and 2. No time fields.
    assert rows(store) == {
        ("10.20.33.164", "10.40.2.236", (39812, 39812), (80, 80), "TCP", "accept", 2, None, None, None, None,
         False, 3, None),
        ("10.40.2.236", "10.20.33.164", (80, 80), (39812, 39812), "TCP", "accept", 2, None, None, None, None,
         True, 19, None),
    }


def test_nat_gateway_custom_format_without_ports_or_times(store: FlowStore, shared: Path) -> None:
    report = ingest(store, shared / SAMPLES / "custom-nat-gateway.log")
    assert (report.lines, report.records, report.bad) == (6, 6, 0)
    got = {(r["src_ip"], r["dst_ip"], r["records"], r["protocol"], r["action"], r["ts_start"], r["src_port_min"])
           for r in store.rows()}
    assert got == {
        ("10.0.1.5", "203.0.113.5", 2, None, None, None, None),  # lines 2 and 6 (NAT ENI and instance ENI)
        ("10.0.0.220", "203.0.113.5", 1, None, None, None, None),  # line 3: the NAT gateway's own address
        ("203.0.113.5", "10.0.0.220", 1, None, None, None, None),
        ("203.0.113.5", "10.0.1.5", 2, None, None, None, None),  # line 5: dstaddr is the NAT ENI, pkt-dstaddr not
    }


def test_v5_all_fields_and_traffic_path(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "v5-all-fields-synthetic.log", shared / SAMPLES / "v5-traffic-path.log")
    t0, t1 = ts(1616729292), ts(1616729349)
    assert rows(store) == {
        # pkt-dstaddr 10.200.0.80 wins over dstaddr 10.200.0.0; flow-direction is kept.
        ("89.160.20.156", "10.200.0.80", (50041, 50041), (33004, 33004), "UDP", "reject", 1, 1, 52, t0, t1, None, 1,
         "ingress"),
        ("52.95.128.179", "10.0.0.71", (80, 80), (34210, 34210), "TCP", "accept", 1, 15044, 14, t0, t1, True, 19,
         "ingress"),
        ("10.0.0.71", "52.95.128.179", (34210, 34210), (80, 80), "TCP", "accept", 1, 471, 7, t0, t1, False, 3,
         "egress"),
    }


def test_v7_ecs_fields(store: FlowStore, shared: Path) -> None:
    ingest(store, shared / SAMPLES / "v7-ecs-synthetic.log")
    assert rows(store) == {
        ("89.160.20.156", "10.200.0.0", (50041, 50041), (33004, 33004), "UDP", "reject", 1, 1, 52, ts(1616729292),
         ts(1616729349), None, None, None),
    }


def test_every_sample_parses_without_bad_lines(store: FlowStore, shared: Path) -> None:
    files = sorted((shared / SAMPLES).glob("*.log"))
    assert len(files) == 7
    report = ingest(store, *files)
    assert report.bad == 0 and report.lines == 29 and report.records == 27
    assert report.formats == {"aws-vpc": 27}


def test_gzip_gives_the_same_rows(tmp_path: Path, shared: Path) -> None:
    plain = shared / SAMPLES / "v3-tcp-flags.log"
    packed = tmp_path / "v3.log.gz"
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with FlowStore(tmp_path / "a.duckdb") as a, FlowStore(tmp_path / "b.duckdb") as b:
        ingest(a, plain)
        report = ingest(b, packed)
        assert report.bad == 0 and report.records == 8
        assert {r[:-1] for r in rows(a)} == {r[:-1] for r in rows(b)}


def test_headerless_file_with_a_format_string(store: FlowStore, tmp_path: Path, shared: Path) -> None:
    lines = (shared / SAMPLES / "v3-tcp-flags.log").read_text().splitlines()
    log_format = " ".join("${" + f + "}" for f in lines[0].split())
    headerless = tmp_path / "cloudwatch-export.log"
    headerless.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(InputError, match="format string"):
        store.ingest([headerless], fmt="aws-vpc")
    report = store.ingest([headerless], fmt="aws-vpc", log_format=log_format)
    assert (report.lines, report.records, report.bad) == (8, 8, 0)
    with FlowStore(tmp_path / "ref.duckdb") as ref:
        ingest(ref, shared / SAMPLES / "v3-tcp-flags.log")
        assert rows(ref) == rows(store)


def test_headerless_default_format_is_recognised(store: FlowStore, tmp_path: Path, shared: Path) -> None:
    lines = (shared / SAMPLES / "v2-default.log").read_text().splitlines()
    headerless = tmp_path / "default.log"
    headerless.write_text("\n".join(lines[1:]) + "\n")
    report = ingest(store, headerless)
    assert (report.lines, report.records, report.skipped) == (7, 5, {"NODATA": 1, "SKIPDATA": 1})


def test_parse_format() -> None:
    assert aws_vpc.parse_format("${version} ${srcaddr} ${pkt-dstaddr}") == ["version", "srcaddr", "pkt-dstaddr"]
    assert aws_vpc.parse_format("version srcaddr") == ["version", "srcaddr"]
    with pytest.raises(InputError):
        aws_vpc.parse_format("${Version} $srcaddr!")


GOOD = "2 123456789010 eni-1 10.0.0.1 10.0.0.2 40000 443 6 10 1000 1700000000 1700000060 ACCEPT OK"


def bad_file(tmp_path: Path) -> Path:
    body = [
        V2_HEADER,  # line 1
        GOOD,  # 2
        "2 123456789010 eni-1 10.0.0.1 10.0.0.2 40000 443 6 10",  # 3: truncated
        GOOD.replace(" 443 ", " https "),  # 4: port not a number
        GOOD.replace(" 1000 ", " -5 "),  # 5: negative bytes
        GOOD.replace("ACCEPT", "ALLOW"),  # 6: unknown action (found after aggregation)
        GOOD.replace("10.0.0.2", "10.0.0.x"),  # 7: not an address
        GOOD.replace(" OK", " WEIRD"),  # 8: unknown log-status
        GOOD.replace(" 443 ", "  443 "),  # 9: doubled space: a valid record
        "",  # 10: blank, not a record
        GOOD,  # 11
    ]
    path = tmp_path / "bad.log"
    path.write_text("\n".join(body) + "\n")
    return path


def test_bad_lines_are_counted_with_line_numbers_and_fields(store: FlowStore, tmp_path: Path) -> None:
    path = bad_file(tmp_path)
    report = store.ingest([path], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (9, 3, 6)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (3, "line"), (4, "dstport"), (5, "bytes"), (6, "action"), (7, "dstaddr"), (8, "log-status")]
    assert all(b.file == str(path.resolve()) for b in report.bad_samples)
    assert report.bad_samples[0].text.endswith("40000 443 6 10")
    assert "ALLOW" in report.bad_samples[3].message
    # The re-read line 9 is aggregated on its own: two rows of the same flow, 3 records in all.
    got = store.rows()
    assert {(r["src_ip"], r["dst_ip"], r["dst_port"], r["action"]) for r in got} == {("10.0.0.1", "10.0.0.2", 443,
                                                                                      "accept")}
    assert (sum(r["records"] for r in got), sum(r["bytes"] for r in got)) == (3, 3000)


def test_bad_lines_in_gzip_have_the_same_line_numbers(store: FlowStore, tmp_path: Path) -> None:
    plain = bad_file(tmp_path)
    packed = tmp_path / "bad.log.gz"
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    report = store.ingest([packed], bad_threshold=1.0)
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (3, "line"), (4, "dstport"), (5, "bytes"), (6, "action"), (7, "dstaddr"), (8, "log-status")]


def test_too_many_bad_lines_names_the_first_and_changes_nothing(store: FlowStore, tmp_path: Path) -> None:
    path = bad_file(tmp_path)
    with pytest.raises(TooManyBadLines) as err:
        store.ingest([path])
    assert (err.value.file, err.value.line, err.value.field) == (str(path.resolve()), 3, "line")
    assert f"{path.resolve()}:3" in str(err.value)
    assert store.rows() == [] and store.files() == []


def test_threshold_allows_a_small_share(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "mostly-good.log"
    path.write_text(V2_HEADER + "\n" + (GOOD + "\n") * 99 + "garbage\n")
    report = store.ingest([path], bad_threshold=0.01)  # 1 of 100 lines: at the threshold, not above it
    assert (report.lines, report.records, report.bad) == (100, 99, 1)
    assert report.bad_samples[0].line == 101


def test_unknown_header_fields_are_accepted(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "future.log"
    path.write_text(V2_HEADER + " some-new-field\n" + GOOD + " whatever\n")
    report = store.ingest([path], fmt="aws-vpc")
    assert (report.records, report.bad) == (1, 0)


def test_sniff() -> None:
    assert aws_vpc.sniff([V2_HEADER])
    assert aws_vpc.sniff([GOOD])
    assert not aws_vpc.sniff(["#separator \\x09"])
    assert not aws_vpc.sniff(['{"flow": {}}'])
    assert not aws_vpc.sniff(["instance-id interface-id"])  # no addresses


# -- Parquet delivery --------------------------------------------------------------------------

# Parquet data types of the fields, from the "Available fields" table of the AWS VPC User Guide
# (INT_32 / INT_64; every other field is STRING).
PARQUET_TYPES = {"version": "INTEGER", "srcport": "INTEGER", "dstport": "INTEGER", "protocol": "INTEGER",
                 "tcp-flags": "INTEGER", "packets": "BIGINT", "bytes": "BIGINT", "start": "BIGINT", "end": "BIGINT"}


def to_parquet(text_log: Path, out: Path, underscores: bool = True) -> Path:
    """The text log as AWS's Parquet delivery: typed columns, NULL where the text has '-'."""
    import duckdb

    fields = text_log.read_text().splitlines()[0].split()
    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in fields)
    name = {f: f.replace("-", "_") if underscores else f for f in fields}
    select = ", ".join(f'CAST("{f}" AS {PARQUET_TYPES.get(f, "VARCHAR")}) AS "{name[f]}"' for f in fields)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT {select} FROM read_csv('{text_log}', delim=' ', header=true, nullstr='-',
                    quote='', escape='', auto_detect=false, columns={{{columns}}}, strict_mode=false))
                    TO '{out}' (FORMAT parquet, COMPRESSION gzip)""")
    con.close()
    return out


@pytest.mark.parametrize("sample", ["v2-default.log", "v5-all-fields-synthetic.log", "custom-nat-gateway.log",
                                    "v3-transit-gateway.log", "v7-ecs-synthetic.log"])
def test_parquet_gives_the_same_rows_as_text(tmp_path: Path, shared: Path, sample: str) -> None:
    text = shared / SAMPLES / sample
    parquet = to_parquet(text, tmp_path / "flows.log.parquet", underscores=sample != "custom-nat-gateway.log")
    assert parquet.read_bytes()[:4] == b"PAR1"
    with FlowStore(tmp_path / "a.duckdb") as a, FlowStore(tmp_path / "b.duckdb") as b:
        want = ingest(a, text)
        got = ingest(b, parquet)  # detected by its magic bytes
        assert (got.lines, got.records, got.bad, got.skipped) == (want.lines, want.records, 0, want.skipped)
        assert {r[:-1] for r in rows(b)} == {r[:-1] for r in rows(a)}
        assert len(rows(b)) >= 1


def test_parquet_bad_rows_are_reported_by_row_number_and_field(store: FlowStore, tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "bad.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM (VALUES
        (2, '10.0.0.1', '10.0.0.2', 40000, 443, 6, 10::BIGINT, 1000::BIGINT, 1700000000::BIGINT, 'ACCEPT', 'OK'),
        (2, '10.0.0.1', '10.0.0.2', 40000, -443, 6, 10, 1000, 1700000000, 'ACCEPT', 'OK'),
        (2, '10.0.0.1', '10.0.0.2', 40000, 443, 300, 10, 1000, 1700000000, 'ACCEPT', 'OK'),
        (2, '10.0.0.1', '10.0.0.2', 40000, 443, 6, 10, 1000, 1700000000, 'ALLOW', 'OK'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1700000000, NULL, 'NODATA'),
        (2, '10.0.0.1', 'nohost', 40000, 443, 6, 10, 1000, 1700000000, 'ACCEPT', 'OK'),
        (2, '10.0.0.1', '10.0.0.2', 40000, 443, 6, 10, -5, 1700000000, 'ACCEPT', 'OK'),
        (2, '10.0.0.1', '10.0.0.2', 40001, 443, 6, 10, 1000, 1700000000, 'REJECT', 'MAYBE'),
        (2, '10.0.0.1', '10.0.0.2', 40002, 443, 6, 10, 1000, 1700000000, 'REJECT', 'OK'))
        AS t(version, srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, start, action, log_status))
        TO '{path}' (FORMAT parquet)""")
    con.close()
    report = store.ingest([path], bad_threshold=1.0)
    assert report.files[0].format == "aws-vpc"
    assert (report.lines, report.records, report.bad, report.skipped) == (9, 2, 6, {"NODATA": 1})
    assert [(b.line, b.field) for b in report.bad_samples] == [
        (2, "dstport"), (3, "protocol"), (4, "action"), (6, "dstaddr"), (7, "bytes"), (8, "log-status")]
    assert report.bad_samples[0].message == "'-443' is not an unsigned integer of type USMALLINT"
    assert report.bad_samples[0].text == "2 10.0.0.1 10.0.0.2 40000 -443 6 10 1000 1700000000 ACCEPT OK"
    assert {(r["src_port"], r["action"]) for r in store.rows()} == {(40000, "accept"), (40002, "reject")}


def test_parquet_without_vpc_columns_or_inside_gzip_is_an_input_error(store: FlowStore, tmp_path: Path,
                                                                      shared: Path) -> None:
    import duckdb

    other = tmp_path / "other.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a, 'x' AS b) TO '{other}' (FORMAT parquet)")
    con.close()
    with pytest.raises(InputError, match="columns of a VPC flow log"):
        store.ingest([other], fmt="aws-vpc")
    packed = tmp_path / "flows.parquet.gz"
    with gzip.open(packed, "wb") as fh:
        fh.write(to_parquet(shared / SAMPLES / "v2-default.log", tmp_path / "v2.parquet").read_bytes())
    with pytest.raises(InputError, match="inside gzip"):
        store.ingest([packed])


# -- addresses: one rule with the other readers (what ipaddress.ip_address accepts) ----------------

ADDRESS_LINES = [
    V2_HEADER,  # 1
    GOOD.replace("10.0.0.1", "999.1.1.1"),  # 2: an octet out of range
    GOOD.replace("10.0.0.1", "1:::2"),  # 3: a triple colon
    GOOD.replace("10.0.0.2", "010.0.0.2"),  # 4: a leading zero (ipaddress refuses it: octal or decimal?)
    GOOD.replace("10.0.0.1", "1.2.3.4%eth0"),  # 5: IPv4 has no zone
    GOOD.replace("10.0.0.1", "FE80:0:0::1%eth0"),  # 6: a zone id: an address, RFC 5952 before the zone
    GOOD.replace("10.0.0.1", "::FFFF:10.0.0.1"),  # 7: IPv4-mapped IPv6
    GOOD.replace("10.0.0.1", "999.1.1.1").replace("ACCEPT", "ALLOW"),  # 8: the address is checked first
    GOOD.replace("10.0.0.2", "1:2:3:4:5:6:7:8:9"),  # 9: nine hextets
    GOOD.replace("10.0.0.1", "10.0.0.9").replace(" OK", " NODATA"),  # 10: skipped: no address check
    GOOD.replace("10.0.0.1", "-").replace("10.0.0.2", "-").replace(" OK", " NODATA"),  # 11: skipped
    GOOD,  # 12
]


@pytest.mark.parametrize("kind", ["text", "gzip", "parquet"])
def test_malformed_addresses_are_bad_lines_with_line_and_field(store: FlowStore, tmp_path: Path, kind: str) -> None:
    text = tmp_path / "addr.log"
    text.write_text("\n".join(ADDRESS_LINES) + "\n")
    path = text
    if kind == "gzip":
        path = tmp_path / "addr.log.gz"
        with text.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif kind == "parquet":
        path = to_parquet(text, tmp_path / "addr.parquet")
    report = store.ingest([path], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad, report.skipped) == (11, 3, 6, {"NODATA": 2})
    # Parquet rows are numbered from 1 without the header line.
    first = 1 if kind == "parquet" else 0
    assert [(b.line + first, b.field) for b in report.bad_samples] == [
        (2, "srcaddr"), (3, "srcaddr"), (4, "dstaddr"), (5, "srcaddr"), (8, "srcaddr"), (9, "dstaddr")]
    assert all(b.file == str(path.resolve()) for b in report.bad_samples)
    assert report.bad_samples[0].message == "'999.1.1.1' is not an IP address"
    assert report.bad_samples[2].message == "'010.0.0.2' is not an IP address"
    assert {(r["src_ip"], r["dst_ip"]) for r in store.rows()} == {
        ("fe80::1%eth0", "10.0.0.2"), ("::ffff:10.0.0.1", "10.0.0.2"),
        ("10.0.0.1", "10.0.0.2")}


def test_a_malformed_address_recovered_from_a_rejected_line_is_bad_too(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "spaced.log"  # doubled spaces: DuckDB rejects the lines, Python reads them
    path.write_text("\n".join([V2_HEADER, GOOD.replace(" 443 ", "  443 ").replace("10.0.0.1", "10.0.0.01"),
                               GOOD.replace(" 443 ", "  443 ").replace("10.0.0.1", "2001:DB8::1"), GOOD]) + "\n")
    report = store.ingest([path], bad_threshold=1.0)
    assert (report.lines, report.records, report.bad) == (3, 2, 1)
    assert [(b.line, b.field) for b in report.bad_samples] == [(2, "srcaddr")]
    assert {r["src_ip"] for r in store.rows()} == {"2001:db8::1", "10.0.0.1"}
