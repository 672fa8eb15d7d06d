"""Generic CSV reader: the pieces of its DuckDB fast path that are shared with the nfdump reader, and
the reports of files read wholly in Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from microseg.engine.store import FlowStore
from microseg.sources.flows import canonical_ip, generic_csv
from microseg.sources.flows.sqlpath import ADDRESS_PATTERN, address_sql
from tests.sources.flows.test_generic_csv import HEADER, all_in_python, write

SPELLINGS = [
    "10.0.0.1", "255.255.255.255", "0.0.0.0", "10.0.0.256", "010.0.0.1", "10.0.0", "10.0.0.1.", " 10.0.0.1",
    "1.2.3.4/32", "", "::", "::1", "1::", "FD00::0001", "fd00::2", "2001:DB8:0:0:0:0:0:1", "2001:db8::0:1",
    "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::ffff:10.0.0.1", "::ffff:10.0.0.256",
    "64:ff9b::192.0.2.33", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "fe80::1%eth0", "fe80::1%", "fe80::1%%1",
    "fe80::1%1%2", "fd00:::1", "fd00::1::2", "12345::1", "g::1", ":1::", "1::1:", "10.0.0.1%eth0", "::%1",
    "\u0661.2.3.4", "1:2:3:4:5:6:7:8%x", "fe80::1%a b", "fe80::1%a\tb", "fe80::1%en0/1", "fe80::1%\x01",
    "fe80::1%\u00e9", "fe80::1%vlan.10_a-b", "fe80::1%]",
]


def test_one_address_pattern_is_address_sql_and_ipaddress() -> None:
    # The fast paths judge the raw address with one pattern (a ':' test and two patterns before): the
    # same verdict as address_sql, and as canonical_ip (every Python reader and the store).
    con = duckdb.connect()
    got = con.execute(f"SELECT a, regexp_full_match(a, '{ADDRESS_PATTERN}'), {address_sql('a')} "
                      "FROM (SELECT unnest(?::VARCHAR[]) AS a)", [SPELLINGS]).fetchall()
    for text, one, two in got:
        assert one == two == (canonical_ip(text) is not None), text


def test_a_file_read_in_python_reports_each_bad_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Invalid UTF-8 sends the file to Python, which reports its bad lines. A record the reader read as good
    # but the store then refused (once: an IPv6 address with a scope id) used to make the store ask for the
    # bad lines again, and they were reported twice. Reader and store now share one address rule
    # (canonical_ip), so the scope id is a record on both.
    lines = [HEADER, "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,a",
             "1767323045,,fe80::1%eth0,10.0.0.2,1,2,tcp,,,allow,,,b",
             "1767323045,,10.0.0.256,10.0.0.2,1,2,tcp,,,allow,,,c",
             "1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,,\udcff"]
    path = tmp_path / "flows.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    calls: list[Any] = []
    real = generic_csv._stage_file
    monkeypatch.setattr(generic_csv, "_stage_file", lambda *a, **k: calls.append(a[6:]) or real(*a, **k))
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path], bad_threshold=1.0)
    assert calls == [()]  # the whole file, in Python
    assert (report.lines, report.records, report.bad) == (4, 3, 1)
    assert [(b.line, b.field) for b in report.bad_samples] == [(4, "src_ip")]


def test_blank_lines_between_uncertain_lines_match_the_python_reader(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The first scan leaves blank lines out after its test (they have no field, so they are uncertain):
    # blank lines of every kind next to quoted and ISO-time lines, read by both paths alike.
    lines = [" ", HEADER, "", "\t", '1767323045,,10.0.0.1,10.0.0.2,1,2,tcp,,,allow,,"a",x', " \x1c ",
             "2026-01-02T03:04:05Z,,10.0.0.1,10.0.0.3,1,2,tcp,,,allow,,,y",
             "1767323045,,10.0.0.1,10.0.0.4,1,2,tcp,,,allow,,,z", "\x0b\x0c", " ,", ","]  # 8-11
    path = write(tmp_path, lines, "blank.csv")
    out = []
    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            if python_only:
                m.setattr(generic_csv, "_plan", all_in_python)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest([path], bad_threshold=1.0)
                rows = sorted((r["dst_ip"], r["records"], r["src_workload"]) for r in s.rows())
        out.append(((report.lines, report.records, report.bad,
                     [(b.line, b.field) for b in report.bad_samples]), rows))
    assert out[0] == out[1]
    assert out[0][0] == (5, 3, 2, [(10, "columns"), (11, "columns")])
    assert out[0][1] == [("10.0.0.2", 1, "a"), ("10.0.0.3", 1, None), ("10.0.0.4", 1, None)]


def test_a_zone_id_no_interface_has_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    # ipaddress takes any zone text without '%' or '/', a tab included; such a value once reached the
    # staging file and failed the whole ingest. canonical_ip refuses it, so it is a bad line on both paths.
    assert canonical_ip("fe80::1%a\tb") is None and canonical_ip("fe80::1%a b") is None
    assert canonical_ip("FE80::0:1%eth0") == "fe80::1%eth0"
    lines = [HEADER, '1767323045,,"fe80::1%a\tb",10.0.0.2,1,2,tcp,,,allow,,,a',
             "1767323045,,fe80::1%eth0,10.0.0.2,1,2,tcp,,,allow,,,b"]
    path = write(tmp_path, lines, "zone.csv")
    with FlowStore(tmp_path / "s" / "flows.duckdb") as s:
        report = s.ingest([path], bad_threshold=1.0)
        rows = s.rows()
    assert (report.lines, report.records, report.bad) == (2, 1, 1)
    assert [(b.line, b.field) for b in report.bad_samples] == [(2, "src_ip")]
    assert [r["src_ip"] for r in rows] == ["fe80::1%eth0"]
