"""Generic CSV reader: one read of the file. The split scan marks the uncertain lines, a line the checks
accept being tested only in the fields they do not check, and the store's aggregates of those lines are
replaced by the Python reader's. Every line form this reads differently from a whole-line test, through
the fast path and the Python reader alone: the same report (lines, bad lines, fields, messages) and rows."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from microseg.sources.flows import generic_csv
from tests.sources.flows.test_generic_csv import all_in_python, write

HEADER = "start,end,src_ip,dst_ip,src_port,dst_port,protocol,bytes,packets,action,direction,src_workload,x_note"


def line(dst: str, *, start: str = "1767323045", end: str = "", src: str = "10.0.0.1", sport: str = "40001",
         dport: str = "443", proto: str = "tcp", action: str = "allow", direction: str = "", hint: str = "",
         note: str = "n") -> str:
    return ",".join([start, end, src, dst, sport, dport, proto, "100", "1", action, direction, hint, note])


# (line, read in Python): each with its own destination address, so that its row can be told apart.
FORMS: list[tuple[str, bool]] = [
    (line("10.1.0.1"), False),
    # times: only the plain epoch number, as the DECIMAL cast writes it back or by the pattern, is SQL's
    (line("10.1.0.2", start="+1767323045"), True),
    (line("10.1.0.3", start="1e9"), True),
    (line("10.1.0.4", start="1_767_323_045"), True),
    (line("10.1.0.5", start="1767323045."), True),
    (line("10.1.0.6", start=".5"), True),
    (line("10.1.0.7", start="-0"), True),
    (line("10.1.0.8", start="-0.5"), True),
    (line("10.1.0.9", start="05"), False),
    (line("10.1.0.10", start="0"), False),
    (line("10.1.0.11", start="1767323045.123456"), False),
    (line("10.1.0.12", start="1767323045.1234567"), False),
    (line("10.1.0.13", start=" 1767323045 "), False),
    (line("10.1.0.14", start="1767323045500"), False),
    (line("10.1.0.15", start="1767323045500.0"), False),
    (line("10.1.0.16", start="\u0661\u0667\u0666\u0667"), True),
    (line("10.1.0.17", start="1767323045.5e0"), True),
    (line("10.1.0.18", start="1767323045", end="1767323046.100"), False),
    (line("10.1.0.19", start="1767323045", end="2026-01-02T03:04:06Z"), True),
    (line("10.1.0.20", start="", end="1767323046.0"), False),
    (line("10.1.0.21", start="1767323045.50", end="1767323045.5"), False),
    (line("10.1.0.22", start="1767323045.000000", end="1767323045.0000000"), False),
    # what only the unchecked fields (x_ columns, workload hints) can hold on a line the checks accept
    (line("10.1.1.1", note="caf\u00e9"), False),  # non-ASCII in an ignored column: SQL reads it exactly
    (line("10.1.1.2", note='say "hi"'), True),
    (line("10.1.1.4", note="a\x00b"), True),
    (line("10.1.1.5", hint='"ns/a"'), True),
    (line("10.1.1.6", hint="ns/caf\u00e9"), True),
    (line("10.1.1.7", hint="web\u2003"), True),  # a non-ASCII blank: stripped by Python
    (line("10.1.1.8", hint="w\u00a0b"), True),  # ... and a blank inside a name for Python
    (line("10.1.1.9", note="\x01\x02"), False),  # once DuckDB's NULL string: a value like any other
    (line("10.1.1.10", hint="\x01\x02"), False),
    # names: lower() beyond ASCII is not Python's
    (line("10.1.2.1", proto="TCP"), False),
    (line("10.1.2.2", proto="\u0130cmp"), True),
    (line("10.1.2.3", proto="\u0131cmp"), True),
    (line("10.1.2.4", action="ALLOW"), False),
    (line("10.1.2.5", action="perm\u0130t"), True),
    (line("10.1.2.6", action="allow\u00a0"), True),
    (line("10.1.2.7", direction="\u0130n"), True),
    (line("10.1.2.8", direction="IN"), False),
    (line("10.1.2.9", direction="\u00a0"), True),
    (line("10.1.2.10", dport="\u0664\u0664\u0663"), True),
    (line("10.1.2.11", dport="443\u00a0"), True),
    (line("\u00a010.1.2.12"), True),
    # more fields than the header names: what the split cut is not tested, and the line is bad on both paths
    (line("10.1.3.1", note='n,x,"y,z"'), False),
    (line("10.1.3.2", note="n,x,caf\u00e9"), False),
    (line("10.1.3.4", note="\x01\x02,x"), False),
    # fewer fields, blank-looking lines
    ("1767323045,,10.0.0.1,10.1.4.1,1,2,tcp", False),
    ("1767323045,,10.0.0.1,10.1.4.2,1,2,tcp,\u00e9", True),
    ("\u00a0", True),  # blank for Python (str.strip): no line at all
    ("\u00a0,", True),
    (" ,", False),
    ("\x00", True),
]


def outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[Path], name: str, python_only: bool,
            plans: list[Any]) -> tuple[Any, Any]:
    real = generic_csv._plan
    with monkeypatch.context() as m:
        m.setattr(generic_csv, "_plan", all_in_python if python_only else
                  (lambda *a: plans.append(real(*a)) or plans[-1]))
        with FlowStore(tmp_path / name / "flows.duckdb") as s:
            report = s.ingest(paths, bad_threshold=1.0)
            rows: dict[tuple[Any, ...], list[int]] = {}
            for r in s.rows():  # lines read in Python form their own aggregates: compare the sums
                key = (r["source_file"], r["src_ip"], r["dst_ip"], r["src_port_min"], r["dst_port"], r["protocol"],
                       r["action"], r["direction"], r["src_workload"], r["ts_start"], r["ts_end"], r["ts_start_last"])
                sums = rows.setdefault(key, [0, 0, 0])
                sums[0] += r["records"]
                sums[1] += r["bytes"] or 0
                sums[2] += r["packets"] or 0
    return ((report.lines, report.records, report.bad, dict(report.skipped),
             [(b.file, b.line, b.field, b.message, b.text) for b in report.bad_samples],
             [(f.path, f.lines, f.records, f.bad, f.skipped) for f in report.files]), rows)


def test_every_line_form_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [HEADER] + [text for text, _ in FORMS]
    a = tmp_path / "a.csv"
    a.write_bytes(("\n".join(texts) + "\n").encode())
    b = tmp_path / "b.csv.gz"  # the same lines, gzip, CRLF, a scan of its own
    with gzip.open(b, "wb") as fh:
        fh.write(("\r\n".join(texts) + "\r\n").encode())
    c = write(tmp_path, [HEADER, FORMS[0][0], FORMS[0][0].replace("10.1.0.1", "10.9.0.1")], "c.csv")  # all SQL
    plans: list[Any] = []
    fast = outcome(tmp_path, monkeypatch, [a, b, c], "fast", False, plans)
    python = outcome(tmp_path, monkeypatch, [a, b, c], "python", True, [])
    assert fast == python
    plan = plans[0]
    assert not plan.python, "a file went wholly to Python"
    assert set(plan.pending) == {0, 1}  # c.csv: all in SQL
    assert plan.pending[0] == plan.pending[1] == {text for text, python_read in FORMS if python_read}
    (lines, records, bad, skipped, samples, _), rows = fast
    assert skipped == {}
    blank = sum(1 for text, _ in FORMS if not text.strip())
    assert lines == 2 * (len(FORMS) - blank) + 2
    assert bad > 0 and records > 0
    assert [s[1] for s in samples if s[0] == str(a)][:1] == [3]  # +1767323045: bad, named by Python
    dsts = {k[2] for k in rows if k[0] == str(a)}
    assert {"10.1.0.1", "10.1.0.9", "10.1.0.12", "10.1.0.19", "10.1.1.1", "10.1.1.5", "10.1.1.9", "10.1.1.10"} <= dsts


def test_repeated_uncertain_lines_are_each_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The scan's aggregates group equal lines; Python reads every line of the text, each counted once.
    quoted = line("10.2.0.1", hint='"ns/a"')
    iso = line("10.2.0.2", start="2026-01-02T03:04:05Z")
    bad = line("10.2.0.3", start="2026-13-02T03:04:05Z")
    path = write(tmp_path, [HEADER, quoted, iso, quoted, line("10.2.0.4"), bad, iso, quoted, bad])
    plans: list[Any] = []
    fast = outcome(tmp_path, monkeypatch, [path], "fast", False, plans)
    assert fast == outcome(tmp_path, monkeypatch, [path], "python", True, [])
    assert plans[0].pending == {0: {quoted, iso, bad}}
    (lines, records, nbad, _, samples, _), rows = fast
    assert (lines, records, nbad) == (8, 6, 2)
    assert [(s[1], s[2]) for s in samples] == [(6, "start"), (9, "start")]
    assert {k[2]: v[0] for k, v in rows.items()} == {"10.2.0.1": 3, "10.2.0.2": 2, "10.2.0.4": 1}


@pytest.mark.parametrize(("odd", "bad", "whole"), [
    (line("10.3.0.1", note='n,"x'), "csv", {0}),  # a quote in the field after the header's: the split may cut
    (line("10.3.0.2", note='"a,b"'), None, {0}),  # a quoted comma: one field for Python, two for the split
    (line("10.3.0.3", note="n,x\u00e9,y"), "columns", {0}),  # non-ASCII there: the same
    (line("10.3.0.4", note="x") + "\xff", None, {0, 1}),  # invalid UTF-8: DuckDB rejects the line (its scan's files)
    (line("10.3.0.5", note="n,x,y") + "\xff", "columns", set()),  # ... not where the split cut it: bad on both paths
])
def test_a_file_the_split_cannot_give_back_is_read_wholly_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     odd: str, bad: str | None,
                                                                     whole: set[int]) -> None:
    a = tmp_path / "a.csv"
    a.write_bytes(("\n".join([HEADER, line("10.3.1.1"), odd, line("10.3.1.2", hint='"q"')]) + "\n")
                  .encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff"))
    b = write(tmp_path, [HEADER, line("10.3.2.1"), line("10.3.2.2", start="2026-01-02T03:04:05Z")], "b.csv")
    plans: list[Any] = []
    fast = outcome(tmp_path, monkeypatch, [a, b], "fast", False, plans)
    assert fast == outcome(tmp_path, monkeypatch, [a, b], "python", True, [])
    assert plans[0].python == whole
    assert set(plans[0].pending) == {0, 1} - whole  # a.csv line 4 (a quoted hint), b.csv line 3 (ISO)
    (_, _, _, skipped, samples, files), _ = fast
    assert skipped == {}
    assert [(Path(f).name, n, r, b) for f, n, r, b, _ in files] == [
        ("a.csv", 3, 3 - (bad is not None), bad is not None), ("b.csv", 2, 2, 0)]
    assert [(Path(s[0]).name, s[1], s[2]) for s in samples] == ([("a.csv", 3, bad)] if bad else [])


@pytest.mark.parametrize(("odd", "fallback"), [
    (None, False),
    (line("fd00::0001"), False),  # an address as it stands (the store writes it in RFC 5952 form)
    (line("FE80::1%eth0"), False),
    (line(" 10.4.0.1"), True),  # padded: Python strips it, the scan must too
    (line("10.4.0.2\x1f"), True),
    (line("10.4.0.256"), True),  # bad: named by Python
    (line("10.4.0.3", src="fd00:::1"), True),
    (line("10.4.0.256", hint='"q"'), False),  # bad, on an uncertain line: Python reads it either way
    (line("10.4.0.256", start="2026-01-02T03:04:05Z"), False),
    (line("10.4.0.256", dport="x"), True),  # bad twice: the first check Python makes names it
    ("1767323045,,10.0.0.1", False),  # too few fields: no address to judge
])
def test_addresses_taken_as_they_stand_unless_one_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         odd: str | None, fallback: bool) -> None:
    # The scan takes every address as it stands; when one of its aggregates holds one that is not an address
    # as it stands, the scan that checks each line's addresses replaces it: the same report either way.
    lines = [HEADER, line("10.4.1.1"), line("10.4.1.2", hint='"ns/a"'), line("10.4.1.3", note="caf\u00e9")]
    a = write(tmp_path, lines + ([odd] if odd else []) + [line("10.4.1.4", start="1767323045.5")], "a.csv")
    b = write(tmp_path, [HEADER, line("10.4.2.1")], "b.csv")  # one scan with a.csv
    plans: list[Any] = []
    fast = outcome(tmp_path, monkeypatch, [a, b], "fast", False, plans)
    assert fast == outcome(tmp_path, monkeypatch, [a, b], "python", True, [])
    ((relation, _, _, exact),) = plans[0].scans
    assert (exact.after_scan is not None) == fallback
    assert "regexp_full_match(r_src_ip" in exact.sql and "regexp_full_match(r_src_ip" not in relation.sql
    assert not plans[0].python and set(plans[0].pending) == {0}
    (lines_, records, bad, skipped, samples, _), rows = fast
    assert skipped == {} and lines_ == len(lines) + (odd is not None) + 1
    if odd is not None and "10.4.0.256" in odd:
        assert (bad, [(Path(s[0]).name, s[1], s[2]) for s in samples]) == (1, [("a.csv", 5, "dst_ip")])
    assert records == lines_ - bad
    assert {k[2] for k in rows} >= {"10.4.1.1", "10.4.1.2", "10.4.1.3", "10.4.1.4", "10.4.2.1"}
