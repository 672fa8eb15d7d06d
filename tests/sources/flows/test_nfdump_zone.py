"""nfdump local times in a zone other than UTC: the DuckDB fast path reads exactly what the Python reader
reads, across DST gaps (spring forward: bad lines) and folds (fall back: the earlier instant)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from microseg.engine.store import FlowStore
from microseg.sources.flows import nfdump
from microseg.sources.flows.nfdump import _Bad, _time_us, _zone_sql, zone_info, zone_pieces
from tests.sources.flows.test_nfdump import LEGACY, legacy, merged, write

# The hours the clocks change in 2026 (IANA tzdata): Europe/Berlin 2026-03-29 02:00 -> 03:00 and
# 2026-10-25 03:00 -> 02:00; America/New_York 2026-03-08 02:00 -> 03:00 and 2026-11-01 02:00 -> 01:00.
CHANGES = {
    "Europe/Berlin": ("2026-03-29 02", "2026-10-25 02"),
    "America/New_York": ("2026-03-08 02", "2026-11-01 01"),
}


def zone_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str, *paths: Path,
               python_reads: int = 0) -> tuple[Any, Any]:
    """(report, rows) through the fast path, then through the Python path alone, both in ``zone``;
    ``python_reads``: how many lines the fast path's run may leave to the Python reader."""
    out = []
    real_plan, real_stage = nfdump._plan, nfdump._stage_file
    plans: list[Any] = []
    read: list[str] = []

    def spy(*a: Any, **k: Any) -> Any:
        plans.append(real_plan(*a, **k))
        return plans[-1]

    def stage_file(*a: Any, **k: Any) -> Any:
        only = a[6] if len(a) > 6 else None
        read.extend(["<all>"] if only is None else sorted(t for t in only if t != LEGACY))  # the header: the state
        return real_stage(*a, **k)

    def python_only(_con: Any, files: Any, *_a: Any) -> Any:
        return nfdump._Plan(python=set(range(len(files))))

    for name, plan in (("fast", spy), ("python", python_only)):
        with monkeypatch.context() as m:
            m.setattr(nfdump, "_plan", plan)
            if plan is spy:
                m.setattr(nfdump, "_stage_file", stage_file)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                report = s.ingest(list(paths), bad_threshold=1.0, timezone=zone)
                got = merged(s.rows())
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(b.file, b.line, b.field, b.message, b.text) for b in report.bad_samples]), got))
    assert plans and plans[0].relations, "the fast path was not taken"
    assert "<all>" not in read and len(read) <= python_reads, read
    return out[0], out[1]


def around(hour: str) -> list[str]:
    """Local times just before, inside and just after the clock change in ``hour`` (YYYY-MM-DD HH)."""
    start = datetime.strptime(hour, "%Y-%m-%d %H")
    offsets = [-3601, -1, 0, 1, 900, 1800, 3599, 3600, 3601, 7200]
    return [(start + timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S") for s in offsets]


@pytest.mark.parametrize("zone", sorted(CHANGES))
def test_fast_path_matches_the_python_reader_in_a_zone_with_dst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  zone: str) -> None:
    spring, fall = CHANGES[zone]
    times = around(spring) + around(fall)
    lines = [LEGACY]
    for k, t in enumerate(times):  # each time as the start and, from a fixed start, as the end
        lines.append(legacy(t, t, "10.0.0.1", f"10.0.{k}.1", str(40000 + k), "443", "TCP"))
        lines.append(legacy(f"{spring[:10]} 00:00:00", t + ".25", "10.0.0.1", f"10.0.{k}.2", str(41000 + k),
                            "443", "TCP"))
    lines += [
        legacy("2026-01-15 12:00:00.5", "2026-07-15 12:00:00.75", "10.0.0.1", "10.1.0.1", "42001", "443", "TCP"),
        legacy("1767322800123", "1767322801000", "10.0.0.1", "10.1.0.2", "42002", "443", "TCP"),  # epoch ms: UTC
        legacy("1969-12-31 23:59:59", "1970-01-01 12:00:00", "10.0.0.1", "10.1.0.3", "42003", "443", "TCP"),
        legacy("1969-12-29 23:59:59", "1970-01-01 12:00:00", "10.0.0.1", "10.1.0.4", "42004", "443", "TCP"),
        legacy("0001-01-01 00:00:00", "1970-01-01 12:00:00", "10.0.0.1", "10.1.0.5", "42005", "443", "TCP"),
        legacy("2099-12-31 23:59:59", "2099-12-31 23:59:59", "10.0.0.1", "10.1.0.6", "42006", "443", "TCP"),
        legacy("2100-01-15 12:00:00", "2100-01-15 12:00:00", "10.0.0.1", "10.1.0.7", "42007", "443", "TCP"),  # Python
        legacy(" 2200-07-01 12:00:00", "2200-07-01 12:00:00", "10.0.0.1", "10.1.0.8", "42008", "443", "TCP"),  # Python
        legacy("9999-12-31 23:59:59", "9999-12-31 23:59:59", "10.0.0.1", "10.1.0.9", "42009", "443", "TCP"),  # Python
        legacy("2026-01-02 24:00:00", "2026-01-02 23:00:00", "10.0.0.1", "10.1.0.10", "42010", "443", "TCP"),
        legacy(f"{spring}:30:00 ", f"{fall}:30:00\t", "10.0.0.1", "10.1.0.11", "42011", "443", "TCP"),  # padded
        legacy(f"{fall}:30:00", f"{fall}:15:00", "10.0.0.1", "10.1.0.12", "42012", "443", "TCP"),  # ends earlier
        legacy("1970-04-26 02:30:00", "1970-04-26 02:30:00", "10.0.0.1", "10.1.0.13", "42013", "443", "TCP"),
    ]
    path = write(tmp_path, lines, "zone.csv")
    fast, python = zone_paths(tmp_path, monkeypatch, zone, path, python_reads=3)
    assert fast == python
    report, rows = fast
    # Written out by hand, independent of either path. Lines 2-41: the 20 times above, each as a start (even
    # line) and as an end (odd); the spring hour's 02:00:00, 02:00:01, 02:15, 02:30 and 02:59:59 (5-9th)
    # do not exist. The tail from line 42: 1969-12-31 23:59:59 is still 1969 in UTC in Berlin but 1970 in
    # New York; 9999-12-31 23:59:59 in New York is past 9999 in UTC; hour 24; the padded spring 02:30;
    # the repeated hour's 02:15 after its 02:30 (both the earlier instant: the flow ends before it starts);
    # 1970-04-26 02:30 was skipped in New York (its first DST of the epoch), not in Berlin.
    tail = {"Europe/Berlin": [44, 45, 46, 51, 52, 53], "America/New_York": [45, 46, 50, 51, 52, 53, 54]}[zone]
    assert [line for _path, line, _field, _message, _text in report[4]] == list(range(6, 16)) + tail
    assert report[:3] == (len(lines) - 1, len(lines) - 1 - 10 - len(tail), 10 + len(tail))
    by_port = {v[5]: (v[3], v[4]) for v in rows.values()}  # src port -> (start, end) in UTC
    summer = {"Europe/Berlin": 2, "America/New_York": -4}[zone]  # the UTC offset before the fall change
    in_fold = datetime.strptime(fall, "%Y-%m-%d %H") + timedelta(minutes=30) - timedelta(hours=summer)
    assert by_port[40015] == (in_fold, in_fold)  # 30 minutes into the repeated hour: the earlier instant
    assert by_port[42002] == (datetime(2026, 1, 2, 3, 0, 0, 123000), datetime(2026, 1, 2, 3, 0, 1))
    assert by_port[42007] == (datetime(2100, 1, 15, 12 - summer + 1), datetime(2100, 1, 15, 12 - summer + 1))

def test_zone_pieces_give_the_python_readers_instant_for_every_second_near_the_changes() -> None:
    con = duckdb.connect()
    for name in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Africa/Casablanca",
                 "Antarctica/Casey", "Pacific/Apia", "Etc/GMT+5"):
        pieces = zone_pieces(name)
        assert pieces is not None, name
        zone = zone_info(name)
        rng = random.Random(name)
        locals_: list[int] = []
        for start, _off in pieces[1:]:  # every second of the two hours around each piece's start
            locals_ += [start + d for d in range(-3600, 3600, 1 if rng.random() < 0.01 else 331)]
        locals_ += [rng.randrange(0, 4_102_444_800) for _ in range(1000)]  # 1970-2100
        got = dict(con.execute(f"SELECT s, ({_zone_sql('s * 1000000', pieces)}) // 1000000 "
                               "FROM (SELECT unnest(?::BIGINT[]) AS s)", [locals_]).fetchall())
        for s in locals_:
            text = (datetime(1970, 1, 1) + timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S")
            try:
                want: int | None = _time_us("ts", text, zone) // 1_000_000
            except _Bad:
                want = None
            if want is None and got[s] is not None:
                assert got[s] < 0, (name, text)  # bad for being before 1970, on both paths
            else:
                assert got[s] == want, (name, text)


def test_fixed_offset_and_utc_like_zones_table_as_one_piece() -> None:
    assert zone_pieces("Asia/Tokyo") == ((-(1 << 62), 9 * 3600),)
    assert zone_pieces("Etc/UTC") == ((-(1 << 62), 0),)
    berlin = zone_pieces("Europe/Berlin")
    assert berlin is not None
    # 2026-03-29 01:00 UTC: 02:00-02:59 local is skipped, 03:00 is summer time (+02:00); 2026-10-25
    # 01:00 UTC: from 03:00 local (the end of the repeated hour) it is winter time (+01:00) again.
    spring = int(datetime(2026, 3, 29, 2, tzinfo=UTC).timestamp())
    fall = int(datetime(2026, 10, 25, 3, tzinfo=UTC).timestamp())
    assert (spring, None) in berlin and (spring + 3600, 7200) in berlin and (fall, 3600) in berlin


def test_a_zone_with_two_changes_within_a_day_is_left_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    # Daily sampling would miss an offset change undone the same day; such a zone (none exists in
    # today's tzdata, checked against the zone's own transition list) must not be tabled.
    from microseg.sources.flows import nfdump

    assert nfdump._explicit_changes_apart("Europe/Berlin")
    assert nfdump._explicit_changes_apart("Etc/UTC")
    day = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())

    class Listed:
        _trans_utc = (day, day + 3 * 3600)

    import zoneinfo._zoneinfo as pyzone
    monkeypatch.setattr(pyzone.ZoneInfo, "no_cache", classmethod(lambda cls, key: Listed()))
    nfdump.zone_pieces.cache_clear()  # Berlin was tabled above with the real transition list
    try:
        assert not nfdump._explicit_changes_apart("Europe/Berlin")
        assert zone_pieces("Europe/Berlin") is None
    finally:
        nfdump.zone_pieces.cache_clear()  # not left cached for the tests that follow
