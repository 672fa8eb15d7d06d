"""Generic CSV reader: values beyond the store's range (a time after 9999-12-31, a counter beyond UBIGINT)
are one bad line each on both paths, never a failed ingest, and never make good lines bad."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from microseg.sources.flows import generic_csv
from tests.sources.flows.test_generic_csv import ingest_both, write

HEADER = "start,end,src_ip,src_port,dst_ip,dst_port,protocol,bytes,packets,action"
AFTER = "is after 9999-12-31T23:59:59Z"
UBIGINT_MAX = (1 << 64) - 1


def both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: Path) -> list[tuple[Any, ...]]:
    """(lines, records, bad, samples, rows by destination) of ``path`` read by the fast path, then by the
    Python reader alone; asserts the fast path was taken and left no file wholly to Python."""
    runs, used = ingest_both(tmp_path, monkeypatch, [path], fmt="csv")
    out = [(report.lines, report.records, report.bad,
            [(b.file, b.line, b.field, b.message, b.text) for b in report.bad_samples],
            {r["dst_ip"]: (r["records"], r["ts_start"], r["ts_end"], r["bytes"], r["packets"]) for r in rows})
           for report, rows in runs]
    assert used and used[0].relations and not used[0].python, "the fast path was not taken"
    return out


def test_one_far_future_end_is_one_bad_line_and_the_rest_is_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The reported case: one good line and two ends far beyond 9999 (ms: 2^63 / 1000, and 10^20). Line 3
    # is within UBIGINT microseconds and shares line 2's aggregate: the store's per-aggregate check made
    # both bad, unnamed; line 4 is beyond UBIGINT: error() (fast) or the staging file's read (Python)
    # failed the whole ingest.
    path = write(tmp_path, [
        HEADER,
        "1767763291,1767763313,10.0.0.1,40000,10.0.0.2,443,tcp,10,1,allow",
        "1767763291,9223372036854775,10.0.0.1,40000,10.0.0.2,443,tcp,10,1,allow",
        "1767763291,99999999999999999999,10.0.0.1,40000,10.0.0.2,443,tcp,10,1,allow",
    ], "a.csv")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    lines, records, bad, samples, rows = fast
    assert (lines, records, bad) == (3, 1, 2)
    assert [(line, fld, msg) for _, line, fld, msg, _ in samples] == [
        (3, "end", f"'9223372036854775' {AFTER}"), (4, "end", f"'99999999999999999999' {AFTER}")]
    assert all(f == str(path) for f, *_ in samples)
    assert rows == {"10.0.0.2": (1, datetime(2026, 1, 7, 5, 21, 31), datetime(2026, 1, 7, 5, 21, 53), 10, 1)}


HUGE = "9" * 5000  # int() refuses more than 4300 digits
ZEROS = "0" * 30  # leading zeros: the value is what follows (the fast path read 31+ characters as too big)
LIMITS = [
    HEADER,  # 1
    "253402300799000,,10.0.0.1,40001,10.0.2.1,443,tcp,1,1,allow",  # 2: ms, exactly the limit
    "253402300799001,,10.0.0.1,40001,10.0.2.2,443,tcp,1,1,allow",  # 3: a ms later
    "1767323045,253402300799001,10.0.0.1,40001,10.0.2.3,443,tcp,1,1,allow",  # 4
    "1767323045,9223372036854775,10.0.0.1,40001,10.0.2.4,443,tcp,1,1,allow",  # 5: 2^63 us, in UBIGINT
    "1767323045,99999999999999999999,10.0.0.1,40001,10.0.2.5,443,tcp,1,1,allow",  # 6: beyond UBIGINT us
    f"{HUGE},,10.0.0.1,40001,10.0.2.6,443,tcp,1,1,allow",  # 7
    f"{ZEROS}1767323045,,10.0.0.1,40001,10.0.2.7,443,tcp,{ZEROS}10,1,allow",  # 8: seconds; 10 bytes
    "1767323045,,10.0.0.1,40001,10.0.2.8,443,tcp,18446744073709551616,1,allow",  # 9: UBIGINT + 1
    "1767323045,,10.0.0.1,40001,10.0.2.9,443,tcp,1,99999999999999999999999,allow",  # 10
    f"1767323045,,10.0.0.1,40001,10.0.2.10,443,tcp,{HUGE},1,allow",  # 11
    "1767323045,9999-12-31T23:59:59Z,10.0.0.1,40001,10.0.2.11,443,tcp,1,1,allow",  # 12: ISO, the limit
    "1767323045,9999-12-31T23:59:59.5Z,10.0.0.1,40001,10.0.2.12,443,tcp,1,1,allow",  # 13: half a second on
    "1767323045,9999-12-31T20:00:00-05:00,10.0.0.1,40001,10.0.2.13,443,tcp,1,1,allow",  # 14: 01:00 next day
    f"{HUGE}.5,,10.0.0.1,40001,10.0.2.14,443,tcp,1,1,allow",  # 15: ms with a fraction
    # 16, 17: two UBIGINT counters in one aggregate: read, the sum saturates in the store (as before)
    f"1767323045,,10.0.0.1,40001,10.0.2.16,443,tcp,{UBIGINT_MAX},{UBIGINT_MAX},allow",
    f"1767323045,,10.0.0.1,40001,10.0.2.16,443,tcp,{UBIGINT_MAX},{UBIGINT_MAX},allow",
]


def test_values_beyond_the_stores_range_are_bad_lines_on_both_paths(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, LIMITS, "limits.csv")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    lines, records, bad, samples, rows = fast
    expected = [(3, "start"), (4, "end"), (5, "end"), (6, "end"), (7, "start"), (9, "bytes"), (10, "packets"),
                (11, "bytes"), (13, "end"), (14, "end"), (15, "start")]
    assert (lines, records, bad) == (16, 16 - len(expected), len(expected))
    assert [(line, fld) for _, line, fld, _, _ in samples] == expected
    messages = {line: msg for _, line, _, msg, _ in samples}
    assert messages[3] == f"'253402300799001' {AFTER}"
    assert messages[7] == f"'{HUGE[:30]}'... (5000 characters) {AFTER}"
    assert messages[9] == f"18446744073709551616 is out of range (0-{UBIGINT_MAX})"
    assert messages[11] == f"'{HUGE[:30]}'... (5000 characters) is out of range (0-{UBIGINT_MAX})"
    assert messages[15] == f"'{HUGE[:30]}'... (5002 characters): milliseconds with a fraction"
    limit = datetime(9999, 12, 31, 23, 59, 59)
    start = datetime(2026, 1, 2, 3, 4, 5)
    assert rows == {
        "10.0.2.1": (1, limit, limit, 1, 1),
        "10.0.2.7": (1, start, start, 10, 1),
        "10.0.2.11": (1, start, limit, 1, 1),
        "10.0.2.16": (2, start, start, (1 << 63) - 1, (1 << 63) - 1),
    }


def test_a_far_future_end_does_not_make_its_aggregates_good_lines_bad(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Within UBIGINT microseconds the store alone judged the time, per aggregate: the good line 2 shares
    # line 3's aggregate, and both were counted bad, with no line named (3, 0, 2, []) on both paths.
    path = write(tmp_path, LIMITS[:1] + [
        "1767323045,1767323046,10.0.0.1,40001,10.0.3.1,443,tcp,1,1,allow",
        "1767323045,9223372036854775,10.0.0.1,40001,10.0.3.1,443,tcp,1,1,allow",
    ], "agg.csv")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    lines, records, bad, samples, rows = fast
    assert (lines, records, bad, [(line, fld) for _, line, fld, _, _ in samples]) == (2, 1, 1, [(3, "end")])
    assert rows == {"10.0.3.1": (1, datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 4, 6), 1, 1)}


def test_leading_zeros_are_read_alike_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # int() reads '000...01767323045' as seconds; the fast path took more than 30 characters as too big
    # (a bad line it could not name, where Python read a record).
    path = write(tmp_path, LIMITS[:1] + [f"{ZEROS}1767323045,,10.0.0.1,40001,10.0.3.2,443,tcp,{ZEROS}10,1,allow"],
                 "zeros.csv")
    fast, python = both_paths(tmp_path, monkeypatch, path)
    assert fast == python
    start = datetime(2026, 1, 2, 3, 4, 5)
    assert fast == (1, 1, 0, [], {"10.0.3.2": (1, start, start, 10, 1)})


@pytest.mark.parametrize("value", [
    "253402300799001", "9223372036854775", "99999999999999999999", pytest.param(HUGE, id="5000-digits"),
    "9999-12-31T23:59:59.000001Z", "9999-12-31T23:59:59-00:01",
])
def test_time_after_9999_is_bad(value: str) -> None:
    with pytest.raises(generic_csv._Bad) as err:
        generic_csv.time_us(value, "end")
    assert err.value.field == "end"
    assert err.value.message.endswith(AFTER)
