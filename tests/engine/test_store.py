"""The DuckDB flow store: schema, aggregation, re-runs, transactions, file expansion."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import (
    _CLASS_BAD,
    FLOWS_COLUMNS,
    READERS_VERSION,
    FlowStore,
    TimeWindow,
    expand_paths,
    parse_instant,
)
from microseg.errors import InputError, TooManyBadLines
from microseg.sources import flows
from microseg.sources.flows import BadLine, ReaderOptions, SourceFile, Staged, StagedRelation

HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")
DAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC


def line(src: str, dst: str, sp: int, dp: int, start: int, *, proto: int = 6, action: str = "ACCEPT",
         nbytes: int = 100, packets: int = 2) -> str:
    return f"2 123456789010 eni-1 {src} {dst} {sp} {dp} {proto} {packets} {nbytes} {start} {start + 30} {action} OK"


def vpc(path: Path, *lines: str) -> Path:
    path.write_text("\n".join((HEADER, *lines)) + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "out" / "flows.duckdb") as s:
        yield s


def test_schema(store: FlowStore) -> None:
    cols = store.con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'flows' ORDER BY ordinal_position").fetchall()
    assert dict(cols) == FLOWS_COLUMNS
    for name in ("ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "bytes", "packets",
                 "action", "tcp_flags", "is_reply", "src_workload", "dst_workload", "source_format", "source_file"):
        assert name in FLOWS_COLUMNS


def test_ephemeral_ports_fold_and_days_split(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log",
               line("10.0.0.1", "10.0.0.2", 40001, 443, DAY + 3600),  # 01:00
               line("10.0.0.1", "10.0.0.2", 40002, 443, DAY + 5 * 3600),  # 05:00
               line("10.0.0.1", "10.0.0.2", 40003, 443, DAY + 86400 + 60),  # next day
               line("10.0.0.1", "10.0.0.2", 1025, 443, DAY + 7200),  # a low client port is kept exactly
               line("10.0.0.1", "10.0.0.2", 40000, 50051, DAY + 60))  # both high: both kept exactly
    store.ingest([path])
    got = {(r["src_port"], r["src_port_min"], r["src_port_max"], r["dst_port"], r["records"], r["bucket"], r["hours"],
            r["ts_start"], r["ts_start_last"], r["bytes"], r["packets"]) for r in store.rows()}
    d0, d1 = datetime(2026, 3, 2), datetime(2026, 3, 3)
    assert got == {
        (None, 40001, 40002, 443, 2, d0, 1 << 1 | 1 << 5, datetime(2026, 3, 2, 1), datetime(2026, 3, 2, 5), 200, 4),
        (40003, 40003, 40003, 443, 1, d1, 1 << 0, datetime(2026, 3, 3, 0, 1), datetime(2026, 3, 3, 0, 1), 100, 2),
        (1025, 1025, 1025, 443, 1, d0, 1 << 2, datetime(2026, 3, 2, 2), datetime(2026, 3, 2, 2), 100, 2),
        (40000, 40000, 40000, 50051, 1, d0, 1 << 0, datetime(2026, 3, 2, 0, 1), datetime(2026, 3, 2, 0, 1), 100, 2),
    }
    assert {r["source_file"] for r in store.rows()} == {str(path.resolve())}
    assert {r["source_format"] for r in store.rows()} == {"aws-vpc"}


def test_same_file_twice_is_not_ingested_twice(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    first = store.ingest([path])
    before = store.rows()
    again = store.ingest([path, str(tmp_path / "*.log")])  # the glob names it a second time
    assert (first.records, first.reused) == (1, 0)
    assert (again.records, again.lines, again.reused) == (0, 0, 1)
    assert [f.reused for f in again.files] == [True] and again.files[0].records == 1
    assert store.rows() == before


def test_changed_file_replaces_its_rows(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    other = vpc(tmp_path / "b.log", line("10.0.0.3", "10.0.0.4", 40001, 80, DAY))
    store.ingest([path, other])
    vpc(path, line("10.0.0.1", "10.0.0.2", 40001, 443, DAY), line("10.0.0.1", "10.0.0.9", 40001, 443, DAY))
    os.utime(path, ns=(1, 1))  # make sure the mtime differs even on coarse clocks
    report = store.ingest([path, other])
    assert (report.records, report.reused) == (2, 1)
    assert sorted((r["src_ip"], r["dst_ip"]) for r in store.rows()) == [
        ("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.9"), ("10.0.0.3", "10.0.0.4")]
    assert [f.path for f in store.files()] == [str(path.resolve()), str(other.resolve())]


def test_store_is_reopened_across_runs(tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    db = tmp_path / "out" / "flows.duckdb"
    with FlowStore(db) as s:
        s.ingest([path])
        rows = s.rows()
    with FlowStore(db) as s:
        assert s.ingest([path]).reused == 1
        assert s.rows() == rows
    with pytest.raises(InputError, match="remove it"):
        FlowStore(db, bucket_seconds=3600)


def test_failed_ingest_leaves_the_store_unchanged(store: FlowStore, tmp_path: Path) -> None:
    good = vpc(tmp_path / "good.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    store.ingest([good])
    before = (store.rows(), store.files())
    bad = vpc(tmp_path / "bad.log", "garbage", line("10.0.0.5", "10.0.0.6", 40001, 443, DAY))
    with pytest.raises(TooManyBadLines) as err:
        store.ingest([good, bad])
    assert (err.value.file, err.value.line) == (str(bad.resolve()), 2)
    assert (store.rows(), store.files()) == before


def test_mixed_formats_report(store: FlowStore, tmp_path: Path, shared: Path) -> None:
    v = shared / "samples/flows/aws-vpc/v2-default.log"
    h = shared / "samples/flows/hubble/aks-retina-kapinger.jsonl"
    report = store.ingest([h, v])
    assert [f.format for f in report.files] == ["hubble", "aws-vpc"]
    assert report.formats == {"aws-vpc": 5, "hubble": 3}
    assert (report.lines, report.records, report.bad, report.skipped) == (10, 8, 0, {"NODATA": 1, "SKIPDATA": 1})
    assert sum(r["records"] for r in store.rows()) == 8


def test_mixed_formats_keep_each_formats_actions_and_skips(tmp_path: Path, shared: Path) -> None:
    """One ingest of several formats (each with its own action and skip vocabulary) stores and counts
    exactly what ingesting each file alone does."""
    files = [shared / "samples/flows/hubble/aks-retina-kapinger.jsonl",
             shared / "samples/flows/aws-vpc/v2-default.log",
             shared / "samples/flows/calico/enterprise-file-legacy.txt",
             shared / "samples/flows/aws-vpc/v3-tcp-flags.log"]
    alone_rows: list[dict[str, object]] = []
    alone_skipped: dict[str, int] = {}
    for i, f in enumerate(files):
        with FlowStore(tmp_path / f"alone{i}.duckdb") as s:
            rep = s.ingest([f])
            alone_rows += s.rows()
            for reason, n in rep.skipped.items():
                alone_skipped[reason] = alone_skipped.get(reason, 0) + n
    with FlowStore(tmp_path / "mixed.duckdb") as s:
        mixed = s.ingest(files)
        rows = s.rows()
    assert {r["action"] for r in rows} >= {"accept", "reject"}
    assert len({r["source_format"] for r in rows}) == 3
    def order(r: dict[str, object]) -> list[str]:
        return [str(r[k]) for k in sorted(FLOWS_COLUMNS)]
    assert sorted(rows, key=order) == sorted(alone_rows, key=order)
    assert mixed.skipped == alone_skipped and alone_skipped.get("NODATA", 0) > 0


def test_ipv6_is_stored_in_canonical_form(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "v6.log", line("2001:DB8:0:0::1", "2001:db8::2", 40001, 443, DAY))
    store.ingest([path])
    (row,) = store.rows()
    assert (row["src_ip"], row["dst_ip"]) == ("2001:db8::1", "2001:db8::2")


def test_two_spellings_of_one_address_are_one_flow(tmp_path: Path) -> None:
    """A log that spells one IPv6 address two ways gives the rows of a log that spells it one way: the
    aggregates the canonical rewrite makes equal are merged (sums, minima, maxima, bit ORs)."""
    mixed = vpc(tmp_path / "mixed.log",
                line("2001:DB8::1", "2001:db8::2", 40001, 443, DAY + 3600, nbytes=100, packets=2),
                line("2001:db8:0:0::1", "2001:db8::2", 40002, 443, DAY + 7 * 3600, nbytes=250, packets=5),
                line("2001:db8::1", "2001:DB8::2", 40003, 443, DAY + 5 * 3600, nbytes=7, packets=1),
                line("2001:db8::1", "2001:db8::2", 40004, 443, DAY + 86400, nbytes=1, packets=1))  # another day
    plain = vpc(tmp_path / "plain.log", *(t.replace("DB8", "db8").replace("db8:0:0::1", "db8::1")
                                          for t in mixed.read_text().splitlines()[1:]))
    got = {}
    for name, path in (("mixed", mixed), ("plain", plain)):
        with FlowStore(tmp_path / f"{name}.duckdb") as s:
            report = s.ingest([path])
            assert (report.records, report.bad) == (4, 0)
            got[name] = [{k: v for k, v in r.items() if k != "source_file"} for r in s.rows()]
    assert got["mixed"] == got["plain"]
    first, second = got["mixed"]
    assert (first["src_ip"], first["dst_ip"], first["records"], first["bytes"], first["packets"]) == (
        "2001:db8::1", "2001:db8::2", 3, 357, 8)
    assert (first["src_port_min"], first["src_port_max"], first["hours"]) == (40001, 40003, 2 | 1 << 5 | 1 << 7)
    assert first["ts_start"] == datetime.fromtimestamp(DAY + 3600, UTC).replace(tzinfo=None)
    assert first["ts_end"] == datetime.fromtimestamp(DAY + 7 * 3600 + 30, UTC).replace(tzinfo=None)
    assert second["records"] == 1


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.log", "d/a.log", "d/sub/c.log"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_paths([tmp_path / "d"])] == ["a.log", "b.log", "c.log"]
    assert [p.name for p in expand_paths([str(tmp_path / "d" / "*.log"), tmp_path / "d" / "a.log"])] == [
        "a.log", "b.log"]
    with pytest.raises(InputError, match="no such file"):
        expand_paths([tmp_path / "missing.log"])
    with pytest.raises(InputError, match="matches no file"):
        expand_paths([str(tmp_path / "*.nothing")])


def test_unknown_file_is_an_input_error(store: FlowStore, tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("hello world\n")
    with pytest.raises(InputError, match="known formats"):
        store.ingest([odd])
    with pytest.raises(InputError, match="unknown flow log format"):
        store.ingest([odd], fmt="netflow")


def test_empty_files_are_reported_not_refused(store: FlowStore, tmp_path: Path) -> None:
    empty = tmp_path / "quiet.log"
    empty.write_text("")
    blank = tmp_path / "blank.log"
    blank.write_text("\n\n")
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    report = store.ingest([empty, path, blank])
    assert [(f.format, f.lines, f.records) for f in report.files] == [("empty", 0, 0), ("aws-vpc", 1, 1),
                                                                       ("empty", 0, 0)]
    assert (report.records, report.reused) == (1, 0)
    assert store.ingest([empty, path, blank]).reused == 3


def test_many_files_in_one_scan_keep_their_line_numbers(store: FlowStore, tmp_path: Path) -> None:
    good = line("10.0.0.1", "10.0.0.2", 40001, 443, DAY)
    files = [vpc(tmp_path / f"f{i}.log", *([good] * i), "broken line", good) for i in range(1, 6)]
    report = store.ingest(files, bad_threshold=1.0)
    assert [(Path(b.file).name, b.line, b.field) for b in report.bad_samples] == [
        (f"f{i}.log", i + 2, "line") for i in range(1, 6)]
    assert [(f.lines, f.records, f.bad) for f in report.files] == [(i + 2, i + 1, 1) for i in range(1, 6)]


@pytest.mark.parametrize("name", ["bad.log.gz", "bad.jsonl.gz"])
def test_corrupt_gzip_is_an_input_error(store: FlowStore, tmp_path: Path, name: str) -> None:
    good = (HEADER + "\n" + line("10.0.0.1", "10.0.0.2", 40001, 443, DAY) + "\n") * 2000
    if name.endswith(".jsonl.gz"):
        good = '{"flow": {"verdict": "FORWARDED", "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"}}}\n' * 2000
    packed = gzip.compress(good.encode())
    path = tmp_path / name
    path.write_bytes(packed[: len(packed) // 2])  # truncated
    with pytest.raises(InputError) as err:
        store.ingest([path])
    assert str(path.resolve()) in str(err.value)
    assert store.rows() == [] and not list(tmp_path.glob("out/microseg-*"))


def test_flow_timezone_is_an_iana_zone(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    for bad in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(InputError) as err:
            store.ingest([path], timezone=bad)
        assert err.value.field == "--flow-timezone"
    assert store.rows() == []
    assert ReaderOptions(timezone="Europe/Berlin").zone.key == "Europe/Berlin"
    assert ReaderOptions().timezone == "UTC"


# -- time windows ------------------------------------------------------------------------------------


def test_window_keeps_records_started_inside(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log",
               line("10.0.0.1", "10.0.0.2", 40001, 443, DAY - 1),  # a second before: outside
               line("10.0.0.1", "10.0.0.2", 40002, 443, DAY),  # the start is included
               line("10.0.0.1", "10.0.0.3", 40003, 443, DAY + 86399),  # the last second inside
               "not a flow record",  # bad, wherever it is: never counted as outside
               line("10.0.0.1", "10.0.0.4", 40004, 443, DAY + 86400),  # the end is excluded
               line("10.0.0.1", "10.0.0.5", 40005, 443, DAY + 3 * 86400))
    window = TimeWindow.parse("2026-03-02", "2026-03-03")
    report = store.ingest([path], window=window, bad_threshold=1.0)
    assert (report.lines, report.records, report.outside, report.bad, report.skipped) == (6, 2, 3, 1, {})
    assert [(f.lines, f.records, f.outside, f.bad) for f in report.files] == [(6, 2, 3, 1)]
    assert sorted((r["dst_ip"], r["src_port"], r["ts_start"]) for r in store.rows()) == [
        ("10.0.0.2", 40002, datetime(2026, 3, 2)), ("10.0.0.3", 40003, datetime(2026, 3, 2, 23, 59, 59))]


def test_window_ends_are_exact_below_the_log_unit(store: FlowStore, tmp_path: Path) -> None:
    # VPC start times are whole seconds: 00:00:00.5 excludes 00:00:00 and includes 00:00:01.
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY),
               line("10.0.0.1", "10.0.0.3", 40001, 443, DAY + 1), line("10.0.0.1", "10.0.0.4", 40001, 443, DAY + 2))
    report = store.ingest([path], window=TimeWindow.parse("2026-03-02T01:00:00.5+01:00", "2026-03-02T00:00:01.5Z"))
    assert (report.records, report.outside) == (1, 2)
    assert [r["dst_ip"] for r in store.rows()] == ["10.0.0.3"]


def test_open_ended_windows(tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY - 60),
               line("10.0.0.1", "10.0.0.3", 40001, 443, DAY + 60))
    with FlowStore(tmp_path / "s1" / "flows.duckdb") as s:
        assert (s.ingest([path], window=TimeWindow.parse("2026-03-02", None)).records, s.rows()[0]["dst_ip"]) == (
            1, "10.0.0.3")
    with FlowStore(tmp_path / "s2" / "flows.duckdb") as s:
        assert (s.ingest([path], window=TimeWindow.parse(None, "2026-03-02")).records, s.rows()[0]["dst_ip"]) == (
            1, "10.0.0.2")
    assert TimeWindow.parse(None, None) is None


def test_a_store_read_for_another_window_is_read_again(store: FlowStore, tmp_path: Path) -> None:
    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY),
               line("10.0.0.1", "10.0.0.3", 40001, 443, DAY + 86400))
    monday, tuesday = TimeWindow.parse("2026-03-02", "2026-03-03"), TimeWindow.parse("2026-03-03", "2026-03-04")
    assert store.ingest([path], window=monday).records == 1
    second = store.ingest([path], window=tuesday)
    assert (second.reused, second.records, second.outside) == (0, 1, 1)
    assert [r["dst_ip"] for r in store.rows()] == ["10.0.0.3"]
    third = store.ingest([path], window=tuesday)
    assert (third.reused, third.files[0].outside, third.files[0].records) == (1, 1, 1)
    everything = store.ingest([path])  # no window is a window of its own
    assert (everything.reused, everything.records) == (0, 2)
    assert store.ingest([path], timezone="Europe/Berlin").reused == 0  # so is another time zone


def test_a_store_from_before_read_keys_reads_its_files_again(tmp_path: Path) -> None:
    import duckdb

    path = vpc(tmp_path / "a.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    db = tmp_path / "old" / "flows.duckdb"
    db.parent.mkdir()
    st = path.resolve().stat()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('bucket_seconds', '86400'), ('schema_version', '1')")
    con.execute("""CREATE TABLE files (path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, format VARCHAR,
                   lines BIGINT, records BIGINT, skipped BIGINT, bad BIGINT)""")
    con.execute("INSERT INTO files VALUES (?, ?, ?, 'aws-vpc', 1, 1, 0, 0)", [str(path.resolve()), st.st_size,
                                                                              st.st_mtime_ns])
    con.close()
    with FlowStore(db) as s:
        report = s.ingest([path])
        assert (report.reused, report.records) == (0, 1)


def test_files_read_by_earlier_readers_are_read_again(store: FlowStore, tmp_path: Path) -> None:
    """A file recorded under an older READERS_VERSION (readers that wrote, say, an IPv4-mapped address
    another way) is read again, its old rows replaced; under the current one it is reused."""
    path = vpc(tmp_path / "a.log", line("::ffff:10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    assert store.ingest([path]).records == 1
    store.con.execute("UPDATE flows SET src_ip = '::ffff:a00:1'")  # the old readers' spelling (Python 3.11)
    store.con.execute("UPDATE files SET read_key = replace(read_key, ?, ?)",
                      [f"readers={READERS_VERSION}", f"readers={READERS_VERSION - 1}"])
    again = store.ingest([path])
    assert (again.reused, again.records) == (0, 1)
    assert [r["src_ip"] for r in store.rows()] == ["::ffff:10.0.0.1"]
    assert store.ingest([path]).reused == 1


@pytest.mark.parametrize(("since", "until", "field", "message"), [
    ("2026-03-02T08:00:00", None, "--since", "no zone"),
    (None, "yesterday", "--until", "not an ISO 8601"),
    ("2026-03-03", "2026-03-02T23:00:00Z", "--until", "the window is empty"),
    ("2026-03-02", "2026-03-02", "--until", "the window is empty"),
    ("0001-01-01T00:00:00+01:00", None, "--since", "out of range"),
])
def test_bad_windows_are_input_errors(since: str | None, until: str | None, field: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        TimeWindow.parse(since, until)
    assert err.value.field == field


def test_window_text_forms() -> None:
    assert parse_instant("2026-03-02", "x") == datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_instant("2026-03-02T08:00:00+02:00", "x") == datetime(2026, 3, 2, 6, tzinfo=UTC)
    assert parse_instant("2026-03-02T08:00Z", "x") == datetime(2026, 3, 2, 8, tzinfo=UTC)
    w = TimeWindow.parse("2026-03-02T08:00:00+02:00", "2026-03-03")
    assert w is not None and w.describe() == "2026-03-02T06:00:00Z to 2026-03-03T00:00:00Z (UTC; start included, " \
                                              "end excluded)"


# -- many files ----------------------------------------------------------------------------------------


def test_two_thousand_small_files_in_one_process_and_connection(store: FlowStore, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import duckdb

    logs = tmp_path / "logs"
    logs.mkdir()
    expected_lines = expected_records = 0
    for i in range(2000):
        n = i % 3 + 1  # 1, 2 or 3 records
        body = [line(f"10.0.{i // 250}.{i % 250}", "10.1.0.1", 40000 + j, 443, DAY + i) for j in range(n)]
        if i % 100 == 7:
            (logs / f"f{i:04d}.log").write_text("")  # an empty object: no lines, no format
            continue
        if i % 10 == 3:
            with gzip.open(logs / f"f{i:04d}.log.gz", "wt") as fh:
                fh.write("\n".join((HEADER, *body)) + "\n")
        else:
            vpc(logs / f"f{i:04d}.log", *body)
        expected_lines += n
        expected_records += n

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("ingest started a process or opened another connection")

    monkeypatch.setattr(duckdb, "connect", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    report = store.ingest([logs])
    assert len(report.files) == 2000
    assert (report.lines, report.records, report.bad) == (expected_lines, expected_records, 0)
    assert sum(1 for f in report.files if f.format == "empty") == 20
    by_name = {Path(f.path).name: (f.format, f.lines, f.records) for f in report.files}
    assert by_name["f0000.log"] == ("aws-vpc", 1, 1) and by_name["f0013.log.gz"] == ("aws-vpc", 2, 2)
    assert by_name["f1999.log"] == ("aws-vpc", 2, 2) and by_name["f0107.log"] == ("empty", 0, 0)
    assert sum(r["records"] for r in store.rows()) == expected_records
    assert len({r["source_file"] for r in store.rows()}) == 1980
    again = store.ingest([logs])
    assert (again.reused, again.lines) == (2000, 0)


class _SqlRows:
    """A reader that stages SQL rows exactly as written, with no address check of its own: what the store
    alone accepts or refuses. Each row's ``file_index`` is 0; the row number is in ``tcp_flags``."""

    NAME = "sql-rows"

    def __init__(self, rows: list[tuple[str | None, str | None, str | None, str]]) -> None:
        self.rows = rows  # (src_ip, dst_ip, action, log_status)
        self.located: list[Path] = []

    def sniff(self, head: list[str]) -> bool:
        return False

    def stage(self, con: object, files: list[SourceFile], options: ReaderOptions) -> Staged:
        def lit(v: str | None) -> str:
            return "NULL" if v is None else "'" + v.replace("'", "''") + "'"

        values = ", ".join(f"({lit(s)}, {lit(d)}, {lit(a)}, {lit(st)}, {n})" for n, (s, d, a, st) in
                           enumerate(self.rows, 1))
        sql = (f"SELECT {DAY}::UBIGINT AS t_start, {DAY + 1}::UBIGINT AS t_end, src_ip, dst_ip, 40000 AS src_port, "
               "443 AS dst_port, 6 AS proto, 1::UBIGINT AS bytes, 1::UBIGINT AS packets, action, n AS tcp_flags, "
               "NULL::BOOLEAN AS is_reply, NULL::VARCHAR AS direction, NULL::VARCHAR AS src_workload, "
               "NULL::VARCHAR AS dst_workload, log_status, 0 AS file_index "
               f"FROM (VALUES {values}) AS t(src_ip, dst_ip, action, log_status, n)")

        def locate(src: SourceFile) -> list[BadLine]:
            self.located.append(src.path)
            return []

        return Staged(relations=[StagedRelation(sql=sql, files=list(files), time_unit=1)],
                      actions={"ACCEPT": "accept"}, skip_statuses=frozenset({"NODATA"}), locate_bad=locate)


def test_the_store_refuses_what_ipaddress_refuses_once_per_address(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    reader = _SqlRows([
        ("10.0.0.1", "10.0.0.2", "ACCEPT", "OK"),  # 1: ok
        ("999.1.1.1", "10.0.0.2", "ACCEPT", "OK"),  # 2: bad src
        ("10.0.0.1", "1:::2", "ACCEPT", "OK"),  # 3: bad dst
        ("010.0.0.1", "1:::2", "ACCEPT", "OK"),  # 4: both bad: the source is named
        ("999.1.1.1", "10.0.0.2", "ACCEPT", "NODATA"),  # 5: skipped: addresses are not looked at
        ("999.1.1.1", "10.0.0.2", "ACCEPT", "WEIRD"),  # 6: the log-status is checked first
        ("999.1.1.1", "10.0.0.2", "ALLOW", "OK"),  # 7: the address is checked before the action
        ("999.1.1.1", None, "ACCEPT", "OK"),  # 8: a bad source before a missing destination
        ("10.0.0.1", None, "ACCEPT", "OK"),  # 9: a missing destination
        (None, "1:::2", "ACCEPT", "OK"),  # 10: a missing source first
        ("10.0.0.1", "10.0.0.2", "ALLOW", "OK"),  # 11: bad action
        ("2001:DB8:0::1", "FE80::1%eth0", "ACCEPT", "OK"),  # 12: ok, RFC 5952
        ("1.2.3.4%eth0", "10.0.0.2", "ACCEPT", "OK"),  # 13: IPv4 has no zone
        ("10.0.0.1 ", "10.0.0.2", "ACCEPT", "OK"),  # 14: a trailing space
    ])
    monkeypatch.setitem(flows.FORMATS, reader.NAME, reader)
    # Each bad row's class (bad:<column>) decides which field its reader reports: look at the classes the
    # aggregates have when the store counts them.
    classes: dict[int, int] = {}
    real = FlowStore._tally

    def spy(self: FlowStore, *a: Any) -> list[BadLine]:
        classes.update(self.con.execute("SELECT tcp_flags, cls FROM _ms_groups").fetchall())
        return real(self, *a)

    monkeypatch.setattr(FlowStore, "_tally", spy)
    path = tmp_path / "rows.txt"
    path.write_text("x\n")
    with FlowStore(tmp_path / "s.duckdb") as s:
        report = s.ingest([path], fmt=reader.NAME, bad_threshold=1.0)
        got = s.con.execute("SELECT tcp_flags, src_ip, dst_ip FROM flows ORDER BY 1").fetchall()
    assert (report.lines, report.records, report.bad, report.skipped) == (14, 2, 11, {"NODATA": 1})
    assert reader.located == [path.resolve()]
    assert got == [(1, "10.0.0.1", "10.0.0.2"), (12, "2001:db8::1", "fe80::1%eth0")]
    src, dst, log_status, action = (_CLASS_BAD[k] for k in ("src_ip", "dst_ip", "log_status", "action"))
    assert classes == {1: 0, 2: src, 3: dst, 4: src, 5: 1, 6: log_status, 7: src, 8: src, 9: dst, 10: src,
                       11: action, 12: 0, 13: src, 14: src}


def test_dotted_quads_the_store_skips_in_python_are_exactly_canonical_ipv4() -> None:
    """The store leaves addresses matching IPV4_PATTERN to SQL alone: each must be one ipaddress accepts and
    writes unchanged (the converse - every other string is judged in Python - needs no proof)."""
    import random

    import duckdb

    from microseg.sources.flows import canonical_ip
    from microseg.sources.flows.sqlpath import IPV4_PATTERN

    rng = random.Random(7)
    octets = ["0", "00", "01", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256", "299", "300",
              "999", "1000", "\u0661", "+1", "-1", " 1", "1 ", "0x1", ""]
    texts = {".".join(rng.choice(octets) for _ in range(rng.choice((3, 4, 4, 4, 5)))) for _ in range(20000)}
    texts |= {"1.2.3.4\n", "1.2.3.4%eth0", "::1.2.3.4", "1.2.3.4/32", "1.2.3", "1..2.3"}
    con = duckdb.connect()
    matched = [t for (t,) in con.execute("SELECT t FROM unnest(?) AS u(t) WHERE regexp_full_match(t, ?)",
                                         [sorted(texts), IPV4_PATTERN]).fetchall()]
    assert len(matched) > 200
    assert all(canonical_ip(t) == t for t in matched)
    assert {t for t in texts if canonical_ip(t) == t and ":" not in t} == set(matched)


def test_more_aggregates_than_a_row_group_are_stored_whole_and_reopened(tmp_path: Path) -> None:
    """An ingest of more flows rows than one row group takes the parallel-insert path (a smaller one
    the single-thread one); both keep every row, restore the thread count and survive a reopen."""
    import duckdb

    from microseg.engine.store import _ROW_GROUP_ROWS

    n = _ROW_GROUP_ROWS + 1500
    # Ports below 32768 never fold: each line is an aggregate of its own.
    big = vpc(tmp_path / "big.log", *(line(f"10.1.{i // 30000}.{1 + i % 200}", "10.2.0.1", 1 + i % 30000, 443,
                                           DAY + i % 86400) for i in range(n)))
    small = vpc(tmp_path / "small.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY),
                line("10.0.0.1", "10.0.0.3", 40001, 443, DAY))
    db = tmp_path / "out" / "flows.duckdb"
    with FlowStore(db, threads=2) as s:
        threads = s.con.execute("SELECT current_setting('threads')").fetchone()
        assert threads == (2,)
        report = s.ingest([big])
        assert (report.records, report.bad) == (n, 0)
        assert s.con.execute("SELECT current_setting('threads')").fetchone() == threads
        assert s.con.execute("SELECT count(*), sum(records), count(DISTINCT (src_ip, src_port)) FROM flows"
                             ).fetchone() == (n, n, n)
        assert s.ingest([small]).records == 2
        assert s.con.execute("SELECT current_setting('threads')").fetchone() == threads
        assert s.con.execute("SELECT current_setting('temp_directory')").fetchone() == (str(db) + ".tmp",)
        rows = s.rows()
        if s.con.execute("SELECT current_database()").fetchone() == ("flowstore",):  # DuckDB with ROW_GROUP_SIZE
            groups = s.con.execute("SELECT row_group_id, max(count) FROM pragma_storage_info('flows') "
                                   "GROUP BY ALL").fetchall()
            assert len(groups) >= 2 and max(c for _, c in groups) <= _ROW_GROUP_ROWS
    assert len(rows) == n + 2
    assert not Path(str(db) + ".wal").exists()  # closed cleanly: everything is in the file
    with FlowStore(db) as s:
        assert s.rows() == rows
        assert s.ingest([big, small]).reused == 2
    con = duckdb.connect(str(db), read_only=True)  # a plain DuckDB connection reads the store as it is
    try:
        assert con.execute("SELECT count(*) FROM flows").fetchone() == (n + 2,)
    finally:
        con.close()


def test_a_file_that_is_no_duckdb_database_is_refused_by_duckdb(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "flows.duckdb"
    db.write_bytes(b"not a database\n" * 1000)
    with pytest.raises(duckdb.Error):
        FlowStore(db)
    assert db.read_bytes() == b"not a database\n" * 1000  # left as it was


def test_a_failure_while_the_thread_count_is_lowered_surfaces_and_restores_it(
        store: FlowStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    good = vpc(tmp_path / "good.log", line("10.0.0.1", "10.0.0.2", 40001, 443, DAY))
    store.ingest([good])
    before = (store.rows(), store.files())
    threads = store.con.execute("SELECT current_setting('threads')").fetchone()

    def fail(self: FlowStore, bucket_us: int, action: str) -> None:
        assert self.con.execute("SELECT current_setting('threads')").fetchone() == (1,)  # the small-insert path
        self.con.execute("SELECT error('disk full')")

    monkeypatch.setattr(FlowStore, "_insert_flows", fail)
    other = vpc(tmp_path / "other.log", line("10.0.0.5", "10.0.0.6", 40001, 443, DAY))
    with pytest.raises(duckdb.Error, match="disk full"):  # the failure itself, not the aborted transaction's
        store.ingest([other])
    assert store.con.execute("SELECT current_setting('threads')").fetchone() == threads
    assert (store.rows(), store.files()) == before
