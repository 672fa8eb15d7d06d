"""The flow store: a DuckDB file of normalised flow records, reused across runs.

What is stored. Each row of ``flows`` is a *flow aggregate*: the log records of one file that agree
on everything the mapping looks at - addresses, protocol, action, direction hints, workload hints,
UTC day (``bucket``) - and on their ports, except that a port at or above 32768 facing a port below
it (a client's ephemeral port) is folded into a range (``*_port_min``/``*_port_max``; the exact
port is kept whenever all folded records agree). ``records`` counts the log records, ``bytes`` and
``packets`` are sums, ``ts_start``/``ts_start_last`` are the earliest and latest record start and
``ts_end`` the latest end, ``hours`` is a bit set of the UTC hours the records started in.

Why aggregates rather than one row per record: writing ten million rows into DuckDB costs several
times a scan of the log itself, while an aggregate keeps every fact the mapping uses and is a few
per cent of the size. Where aggregation could change a mapping decision the mapping fails closed
instead of guessing (a binding that changes inside a bucket, a declared listening port inside a
folded range - see ``engine/mapping.py``).

Ingest is one DuckDB scan per group of files (``sources/flows``); normalisation and validation run
on the aggregates, and the whole ingest is one transaction, so a failed ingest leaves the store
as it was. Files are recorded with size and mtime: ingesting the same file again is a no-op, a
changed file replaces its earlier rows. The options that change what a file yields (the time window,
the zone of zone-less timestamps) are part of that key, and so is ``READERS_VERSION``: a file read under
other options, or by readers that read it differently, is read again.

A time window keeps the records that *started* in ``[since, until)``; the others are counted per file
(``outside``), never stored and never mixed with the bad lines. A record without a start time cannot
be placed in a window and is counted as outside it (fail closed: never a wider set of flows).
"""

from __future__ import annotations

import glob
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from microseg.errors import InputError, TooManyBadLines
from microseg.ir.model import Frozen
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    BadLine,
    IngestProgress,
    ProgressCallback,
    ReaderOptions,
    SourceFile,
    Staged,
    StagedRelation,
    canonical_ip,
    detect,
    get_format,
    head_lines,
    is_gzip,
    sql_str,
    zone_info,
)
from microseg.sources.flows.sqlpath import IPV4_PATTERN

SCHEMA_VERSION = "1"
# Part of every file's read key: raised when a reader's rows for the same bytes change (a value now read
# as a bad line, an address written another way), so that a store's files are read again by the new
# readers on the next ingest instead of keeping the old reading beside new rows. 2: IPv4-mapped IPv6
# written ::ffff:192.0.2.1 on every Python version (was str(), which 3.13 changed); Zeek numbers ASCII.
READERS_VERSION = 2
EMPTY = "empty"  # FileReport.format of a file without any non-blank line
DAY_SECONDS = 86_400
EPHEMERAL_START = 32_768  # Linux ip_local_port_range default start (32768-60999)
# Rows per row group of the store's tables (DuckDB's default is 122,880). A transaction inserting at
# least a row group's rows compresses and writes them during the INSERT, on every thread ("optimistic
# writes"); fewer rows are compressed by the COMMIT's checkpoint, on one thread. A million VPC lines make
# some 87k aggregates: under the default, one thread at COMMIT; under this size, both during the INSERT
# (measured: ~0.05 s less CPU and less wall time for that ingest).
_ROW_GROUP_ROWS = 65_536
_BIGINT_MAX = (1 << 63) - 1  # sums beyond it (absurd, but possible in hostile input) saturate

FLOWS_COLUMNS: dict[str, str] = {
    "ts_start": "TIMESTAMP",  # UTC, earliest record start
    "ts_end": "TIMESTAMP",  # UTC, latest record end
    "ts_start_last": "TIMESTAMP",  # UTC, latest record start
    "bucket": "TIMESTAMP",  # UTC start of the day (bucket) the records started in
    "hours": "INTEGER",  # bit h set = some record started in UTC hour h
    "src_ip": "VARCHAR",
    "dst_ip": "VARCHAR",
    "src_port": "INTEGER",  # exact port; NULL when several ephemeral ports were folded
    "dst_port": "INTEGER",
    "src_port_min": "INTEGER",
    "src_port_max": "INTEGER",
    "dst_port_min": "INTEGER",
    "dst_port_max": "INTEGER",
    "protocol": "VARCHAR",  # TCP, UDP, ICMP, SCTP, else IP-<n>; NULL when the log does not say
    "bytes": "BIGINT",
    "packets": "BIGINT",
    "action": "VARCHAR",  # accept / reject / drop / audit; NULL when the log does not say
    "tcp_flags": "INTEGER",  # OR of the records' flags; NULL if unknown
    "is_reply": "BOOLEAN",  # NULL if unknown
    "direction": "VARCHAR",  # ingress / egress as logged; NULL if unknown
    "src_workload": "VARCHAR",  # identity hint given by the log itself
    "dst_workload": "VARCHAR",
    "records": "BIGINT",
    "source_format": "VARCHAR",
    "source_file": "VARCHAR",
}

# The aggregation's output. Raw action / log-status strings are replaced by their index in the
# reader's lists before grouping (-1 = a value the format does not define): integer keys group
# faster than strings, and the bad value itself is recovered by the reader's ``locate_bad``.
# ``cls`` (a _CLASS_* code, see ``_class_sql``) and ``norm_code`` (the index of the normalised action
# in the ingest's list of them) are computed by the aggregation query itself, once per aggregate:
# integers rather than strings, as every later step reads them.
_GROUPS_COLUMNS: dict[str, str] = {
    "fid": "INTEGER", "unit": "BIGINT", "status_code": "INTEGER", "action_code": "INTEGER",
    "src_ip": "VARCHAR", "dst_ip": "VARCHAR", "proto": "INTEGER", "is_reply": "BOOLEAN", "direction": "VARCHAR",
    "src_workload": "VARCHAR", "dst_workload": "VARCHAR", "k_sp": "INTEGER", "k_dp": "INTEGER",
    "k_bucket": "UBIGINT", "records": "BIGINT", "bytes": "HUGEINT", "packets": "HUGEINT", "t_min": "UBIGINT",
    "t_max": "UBIGINT", "t_end_max": "UBIGINT", "hours": "INTEGER", "tcp_flags": "INTEGER",
    "fold_min": "INTEGER", "fold_max": "INTEGER", "k_out": "BOOLEAN",
    "norm_code": "INTEGER", "cls": "TINYINT",
}
# How two aggregates of the same keys combine (_merge_groups); every other column of _GROUPS_COLUMNS is a key.
_MERGE = {"records": "sum", "bytes": "sum", "packets": "sum", "t_min": "min", "t_max": "max", "t_end_max": "max",
          "hours": "bit_or", "tcp_flags": "bit_or", "fold_min": "min", "fold_max": "max"}
_CLASS_OK, _CLASS_SKIP, _CLASS_OUTSIDE = 0, 1, 2
# Bad aggregates, by the first check that failed (bad:<column>); all count as bad lines.
_CLASS_BAD = {"log_status": 10, "src_ip": 11, "dst_ip": 12, "action": 13, "t_start": 14, "t_end": 15}
_KEY_COLUMNS = ("src_ip", "dst_ip", "proto", "is_reply", "direction", "src_workload", "dst_workload")


class FileReport(Frozen):
    path: str
    format: str
    lines: int
    records: int
    skipped: int
    bad: int
    reused: bool = False  # already in the store with the same size, mtime and read options: not read again
    outside: int = 0  # records outside the time window (not stored)


class IngestReport(Frozen):
    """What an ingest read. Totals cover the files read by this call (not the reused ones)."""

    files: tuple[FileReport, ...]
    lines: int
    records: int
    skipped: dict[str, int]  # reason (NODATA, SKIPDATA, non-flow, ...) -> lines
    bad: int
    bad_samples: tuple[BadLine, ...]
    formats: dict[str, int]  # format -> records
    reused: int = 0
    outside: int = 0  # records outside the time window

    @property
    def bad_share(self) -> float:
        return self.bad / self.lines if self.lines else 0.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class TimeWindow:
    """Records that started at or after ``since`` and before ``until`` (either end may be open)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name, t in (("--since", self.since), ("--until", self.until)):
            if t is not None and t.utcoffset() is None:
                raise InputError("the time needs a zone (e.g. Z or +02:00)", field=name)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InputError(f"the window is empty: --until {self.until.isoformat()} is not after --since "
                             f"{self.since.isoformat()}", field="--until")

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> TimeWindow | None:
        """From ISO 8601 text; ``None`` when neither end is given."""
        if since is None and until is None:
            return None
        return cls(since=parse_instant(since, "--since") if since is not None else None,
                   until=parse_instant(until, "--until") if until is not None else None)

    def bounds_us(self) -> tuple[int | None, int | None]:
        """The ends in microseconds since the epoch."""
        return (None if self.since is None else (self.since - _EPOCH) // _US,
                None if self.until is None else (self.until - _EPOCH) // _US)

    def describe(self) -> str:
        def text(t: datetime | None) -> str:
            return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "open"
        return f"{text(self.since)} to {text(self.until)} (UTC; start included, end excluded)"

    @property
    def key(self) -> str:
        lo, hi = self.bounds_us()
        return f"{'' if lo is None else lo}..{'' if hi is None else hi}"


def parse_instant(text: str, field: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-03-02T08:00:00+01:00``, ``...Z``), or a date meaning 00:00 UTC.

    A time without a zone is refused: guessing the zone would silently shift the window."""
    value = text.strip()
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{text!r} is not an ISO 8601 date or time (e.g. 2026-03-02 or 2026-03-02T08:00:00Z)",
                         field=field) from None
    if t.utcoffset() is None:
        raise InputError(f"{text!r} has no zone: add Z or an offset such as +02:00 (a bare date means 00:00 UTC)",
                         field=field)
    try:
        return t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
        raise InputError(f"{text!r} is out of range", field=field) from None


def _ddl(name: str, columns: dict[str, str], temp: bool = False) -> str:
    cols = ", ".join(f"{k} {v}" for k, v in columns.items())
    return f"CREATE {'TEMP ' if temp else ''}TABLE {'' if temp else 'IF NOT EXISTS '}{name} ({cols})"


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files named by ``paths`` (files, globs, directories - searched recursively), sorted, unique."""
    out: dict[Path, None] = {}
    for item in paths:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise InputError("the pattern matches no file", file=text)
        else:
            matches = [Path(text)]
        for m in matches:
            if m.is_dir():
                out.update((f.resolve(), None) for f in sorted(m.rglob("*")) if f.is_file())
            elif m.is_file():
                out[m.resolve()] = None
            else:
                raise InputError("no such file", file=text)
    return list(out)


class FlowStore:
    """A DuckDB flow store at ``path`` (created when missing)."""

    def __init__(self, path: Path, *, memory_limit: str = "600MB", threads: int | None = None,
                 bucket_seconds: int = DAY_SECONDS) -> None:
        if bucket_seconds <= 0 or DAY_SECONDS % bucket_seconds:
            raise InputError(f"bucket of {bucket_seconds}s does not divide a day", field="bucket_seconds")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bucket_seconds = bucket_seconds
        self.con = _connect(self.path)
        # A bounded memory footprint (DuckDB spills to <store>.tmp beyond it) and all the CPUs we
        # may run on; insertion order is never relied upon (every read sorts explicitly).
        # Capped: each thread keeps its own aggregation hash tables within memory_limit.
        self.threads = int(threads or min(len(os.sched_getaffinity(0)), 8))
        self.con.execute(f"SET memory_limit = {sql_str(memory_limit)}; SET threads = {self.threads}; "
                         "SET preserve_insertion_order = false")
        self._init_schema()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        # One transaction: each statement on its own would be a commit (a WAL write and sync) of its own.
        with self._transaction():
            # One round trip: the statements that create what is missing, then the meta rows (~1 ms each
            # on its own). A store of another version is refused below, and the rollback undoes them.
            meta = dict(self.con.execute(";\n".join([
                "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
                _ddl("flows", FLOWS_COLUMNS),
                """CREATE TABLE IF NOT EXISTS files (path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT,
                format VARCHAR, lines BIGINT, records BIGINT, skipped BIGINT, bad BIGINT)""",
                # Added later: a store made before has NULL keys there, so its files are simply read again.
                "ALTER TABLE files ADD COLUMN IF NOT EXISTS read_key VARCHAR",
                "ALTER TABLE files ADD COLUMN IF NOT EXISTS outside BIGINT DEFAULT 0",
                "SELECT key, value FROM meta"])).fetchall())
            want = {"schema_version": SCHEMA_VERSION, "bucket_seconds": str(self.bucket_seconds)}
            if meta and meta != want:
                raise InputError(f"the flow store was made with {meta}, this version needs {want}: "
                                 "remove it to rebuild it", file=str(self.path))
            if not meta:
                _insert_rows(self.con, "meta", sorted(want.items()))

    # -- reading -------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Every flows row, in a canonical order (tests, debugging, exports)."""
        cols = list(FLOWS_COLUMNS)
        order = ", ".join(f"{c} NULLS FIRST" for c in cols)
        result = self.con.execute(f"SELECT {', '.join(cols)} FROM flows ORDER BY {order}").fetchall()
        return [dict(zip(cols, r, strict=True)) for r in result]

    def files(self) -> list[FileReport]:
        rows = self.con.execute("SELECT path, format, lines, records, skipped, bad, coalesce(outside, 0) FROM files "
                                "ORDER BY path")
        return [FileReport(path=p, format=f, lines=n, records=r, skipped=s, bad=b, reused=True, outside=o)
                for p, f, n, r, s, b, o in rows.fetchall()]

    # -- ingest --------------------------------------------------------------------------------

    def ingest(self, paths: Sequence[str | Path], fmt: str | None = None, bad_threshold: float = 0.01, *,
               log_format: str | None = None, max_samples: int = 20, timezone: str = "UTC",
               window: TimeWindow | None = None, progress: ProgressCallback | None = None) -> IngestReport:
        """Read flow logs into the store; see the module docstring.

        ``fmt`` forces a format (else each file is detected); ``log_format`` is the VPC format
        string of headerless files; ``timezone`` the IANA zone of timestamps logged without one
        (nfdump); ``window`` keeps the records that started inside it; ``progress`` is called with the
        counters as files are read (from this thread and, during a long scan, from a polling thread).
        Raises :class:`TooManyBadLines`
        when more than ``bad_threshold`` of the lines read cannot be parsed, naming the first bad line;
        the store is then unchanged.
        """
        if fmt is not None:
            get_format(fmt)
        zone_info(timezone)
        files = expand_paths(paths)
        read_key = f"tz={timezone};window={window.key if window else '..'};readers={READERS_VERSION}"
        known = {p: (s, m, k) for p, s, m, k in
                 self.con.execute("SELECT path, size, mtime_ns, read_key FROM files").fetchall()}
        reused = {f.path: f for f in self.files()}
        new: list[tuple[Path, os.stat_result, str]] = []
        reports: dict[Path, FileReport] = {}
        empty: list[tuple[Path, os.stat_result]] = []
        for p in files:
            st = p.stat()
            if known.get(str(p)) == (st.st_size, st.st_mtime_ns, read_key):
                reports[p] = reused[str(p)]
                continue
            head = head_lines(p) if fmt is None else head_lines(p, n=1)
            if not head:
                # An empty log (a quiet interval, an empty S3 object) is no error and has no format.
                empty.append((p, st))
                reports[p] = FileReport(path=str(p), format=EMPTY, lines=0, records=0, skipped=0, bad=0)
            else:
                new.append((p, st, detect(p, fmt, head)))
        if progress is not None:
            # DuckDB's own progress estimate of a running scan (polled below); its console bar stays off.
            self.con.execute("SET enable_progress_bar = true")
            self.con.execute("SET enable_progress_bar_print = false")
            self.con.execute("SET progress_bar_time = 0")

        def attempt(careful: bool) -> tuple[_Tracker, _Result]:
            tracker = _Tracker(progress, {p: st.st_size for p, st, _ in new}, len(files), len(files) - len(new))
            options = ReaderOptions(log_format=log_format, tmp_dir=self.path.parent, max_samples=max_samples,
                                    timezone=timezone, on_read=tracker.on_read if progress else None,
                                    careful=careful)
            tracker.emit()
            with self._transaction():
                replacing = any(str(p) in known for p, _, _ in new)
                result = self._ingest_new(new, options, bad_threshold, max_samples, window, read_key, tracker,
                                          replacing)
                if empty:
                    names = [str(p) for p, _ in empty]
                    self.con.execute("DELETE FROM flows WHERE list_contains(?, source_file)", [names])
                    self.con.execute("DELETE FROM files WHERE list_contains(?, path)", [names])
                    _insert_rows(self.con, "files", [(str(p), st.st_size, st.st_mtime_ns, EMPTY, 0, 0, 0, 0,
                                                      read_key, 0) for p, st in empty])
            return tracker, result

        try:
            tracker, result = attempt(careful=False)
        except _ReadCarefully:  # rolled back; see StagedRelation.retry_careful
            tracker, result = attempt(careful=True)
        reports.update(result.files_by_path)
        tracker.finish(result.lines)
        return IngestReport(
            files=tuple(reports[p] for p in files), lines=result.lines, records=result.records,
            skipped=dict(sorted(result.skipped.items())), bad=result.bad, bad_samples=tuple(result.samples),
            formats=dict(sorted(result.formats.items())), reused=len(files) - len(new) - len(empty),
            outside=result.outside)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        done = False
        try:
            yield
            done = True
        finally:
            self.con.execute("COMMIT" if done else "ROLLBACK")
            if not done:  # a failure inside _threads left its count (an aborted transaction refuses SET)
                self.con.execute(f"SET threads = {self.threads}")

    def _ingest_new(self, new: list[tuple[Path, os.stat_result, str]], options: ReaderOptions,
                    bad_threshold: float, max_samples: int, window: TimeWindow | None, read_key: str,
                    tracker: _Tracker, replacing: bool) -> _Result:
        con = self.con
        res = _Result()
        if not new:
            return res
        fids = {p: i for i, (p, _, _) in enumerate(new)}
        norms: dict[str, int] = {}  # normalised action -> norm_code, over all formats of this ingest
        con.execute(_ddl("_ms_groups", _GROUPS_COLUMNS, temp=True))
        con.execute("CREATE TEMP TABLE _ms_files (fid INTEGER, path VARCHAR, fmt VARCHAR)")
        _insert_rows(con, "_ms_files", [(fids[p], str(p), f) for p, _, f in new])
        staged_all: list[tuple[str, Staged, list[SourceFile]]] = []
        cleanup: list[Path] = []
        try:
            by_format: dict[str, list[SourceFile]] = {}
            for p, _, f in new:
                by_format.setdefault(f, []).append(SourceFile(p, is_gzip(p)))
            for name, srcs in by_format.items():
                staged = get_format(name).stage(con, srcs, options)
                cleanup.extend(staged.cleanup)
                staged_all.append((name, staged, srcs))
                skips = sorted(staged.skip_statuses)
                codes = {raw: norms.setdefault(norm, len(norms)) for raw, norm in sorted(staged.actions.items())}
                pending = list(staged.relations)
                while pending:
                    rel = pending.pop(0)
                    with tracker.scanning(con, rel.files):
                        try:
                            self._scan(rel, name, fids, codes, skips, window)
                        except InputError as exc:
                            if rel.retry_careful and not options.careful:
                                raise _ReadCarefully from exc
                            raise
                    if rel.after_scan is not None:
                        pending.extend(rel.after_scan(con, _Scanned(con, rel, fids, skips)))
                        cleanup.extend(staged.cleanup)
            self._check_addresses()
            samples = self._tally(new, staged_all, res)
            res.samples = sorted(samples, key=lambda b: (fids[Path(b.file)], b.line))[:max_samples]
            if res.lines and res.bad / res.lines > bad_threshold:
                first = res.samples[0] if res.samples else None
                raise TooManyBadLines(
                    f"{res.bad} of {res.lines} lines ({res.bad / res.lines:.2%}) could not be read, more than "
                    f"the {bad_threshold:.2%} allowed; first: {first.message if first else '?'}",
                    file=first.file if first else None, line=first.line if first else None,
                    field=first.field if first else None)
            self._commit_rows(new, res, read_key, replacing, list(norms))
            # On failure the rollback drops these temporary tables with everything else.
            for t in ("_ms_groups", "_ms_files"):
                con.execute(f"DROP TABLE IF EXISTS {t}")
        finally:
            for p in set(cleanup):
                p.unlink(missing_ok=True)
        return res

    def _scan(self, rel: StagedRelation, fmt: str, fids: dict[Path, int], actions: dict[str, int],
              skips: list[str], window: TimeWindow | None) -> None:
        try:
            self.con.execute(self._aggregate_sql(rel, fmt, fids, actions, skips, window))
        except (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException) as exc:
            # Unreadable or corrupt input (a truncated gzip, ...): DuckDB's message names the file.
            names = ", ".join(str(f.path) for f in rel.files[:3]) + (" ..." if len(rel.files) > 3 else "")
            raise InputError(f"cannot read {fmt} flow log: {exc}", file=names) from exc

    def _aggregate_sql(self, rel: StagedRelation, fmt: str, fids: dict[Path, int], codes: dict[str, int],
                       skips: list[str], window: TimeWindow | None) -> str:
        """``codes``: the format's raw action values -> norm_code; ``skips``: its skip statuses (status_code
        i + 1 is ``skips[i]``)."""
        unit, nulls = rel.time_unit, rel.null_columns
        actions = sorted(codes)
        bucket, hour = self.bucket_seconds * unit, 3600 * unit
        mapping = ", ".join(f"({i}, {fids[f.path]})" for i, f in enumerate(rel.files))
        action_code = ("CASE WHEN action IS NULL THEN NULL "
                       + " ".join(f"WHEN action = {sql_str(a)} THEN {i}" for i, a in enumerate(actions))
                       + " ELSE -1 END")
        status_code = ("CASE WHEN log_status IS NULL OR log_status = 'OK' THEN 0 "
                       + " ".join(f"WHEN log_status = {sql_str(x)} THEN {i}" for i, x in enumerate(skips, 1))
                       + " ELSE -1 END")
        keys = [f"{action_code} AS action_code", f"{status_code} AS status_code"]
        keys += [c for c in _KEY_COLUMNS if c not in nulls]
        # Ports: a port >= 32768 facing one below it is a client's ephemeral port in all but the
        # rarest cases; folding it (-1 in the key, range kept) is what keeps the aggregate small.
        # At most one side of a record folds, and it is the greater port: one min/max pair suffices.
        keys += [f"CASE WHEN src_port >= {EPHEMERAL_START} AND dst_port < {EPHEMERAL_START} THEN -1 "
                 "ELSE src_port END AS k_sp",
                 f"CASE WHEN dst_port >= {EPHEMERAL_START} AND src_port < {EPHEMERAL_START} THEN -1 "
                 "ELSE dst_port END AS k_dp"]
        aggs = ["count(*) AS records",
                "sum(bytes) AS bytes" if "bytes" not in nulls else None,
                "sum(packets) AS packets" if "packets" not in nulls else None,
                "bit_or(tcp_flags) AS tcp_flags" if "tcp_flags" not in nulls else None,
                "min(greatest(src_port, dst_port)) AS fold_min, max(greatest(src_port, dst_port)) AS fold_max"]
        if "t_start" not in nulls:
            keys.append(f"t_start // {bucket} AS k_bucket")
            aggs += ["min(t_start) AS t_min", "max(t_start) AS t_max",
                     f"bit_or(CAST(1 AS INTEGER) << CAST(t_start // {hour} % 24 AS INTEGER)) AS hours"]
        if "t_end" not in nulls:
            aggs.append("max(t_end) AS t_end_max")
        if window is not None:
            keys.append(f"{_outside_sql(window, unit) if 't_start' not in nulls else 'true'} AS k_out")
        # Columns absent from the select stay NULL in _ms_groups (INSERT ... BY NAME).
        present = {c for c in _KEY_COLUMNS if c not in nulls}
        if "t_start" not in nulls:
            present.add("t_max")
        if "t_end" not in nulls:
            present.add("t_end_max")
        if window is not None:
            present.add("k_out")
        norm_sql = ("CASE a.action_code " + " ".join(f"WHEN {i} THEN {codes[a]}" for i, a in enumerate(actions))
                    + " END" if actions else "NULL")
        aggregate = f"{', '.join(keys)}, {', '.join(a for a in aggs if a)}\nFROM ({rel.sql}) AS s"
        outer = f"{unit} AS unit, {norm_sql} AS norm_code, {_class_sql(present, unit)} AS cls"
        if len(rel.files) == 1:
            # One file: ``file_index`` is 0 on every row (any other value matches no file, as in the join below),
            # so it is filtered rather than grouped by - a key fewer is measurably faster.
            return (f"INSERT INTO _ms_groups BY NAME\nSELECT {fids[rel.files[0].path]} AS fid, a.*, {outer}\n"
                    f"FROM (\nSELECT {aggregate}\nWHERE s.file_index = 0\nGROUP BY ALL\n) AS a\n")
        return (f"INSERT INTO _ms_groups BY NAME\nSELECT m.fid, a.* EXCLUDE (file_index), {outer}\n"
                f"FROM (\nSELECT file_index, {aggregate}\nGROUP BY ALL\n"
                f") AS a JOIN (VALUES {mapping}) AS m(idx, fid) ON a.file_index = m.idx\n")

    def _check_addresses(self) -> None:
        """Validate and canonicalise the aggregates' addresses, each distinct one once, in Python.

        One rule for every reader: an address is what ``ipaddress.ip_address`` accepts, written as
        ``canonical_ip`` writes it (RFC 5952 for IPv6, so that ``2001:DB8:0::1`` in a log matches
        ``2001:db8::1`` in a binding; IPv4-mapped as ``::ffff:192.0.2.1`` on every Python version) - the
        rule of the readers' Python paths.
        An aggregate holding an address it refuses becomes bad:src_ip / bad:dst_ip, in the order of
        ``_class_sql`` (after the log-status checks and the NULL-address checks, before the others).
        A dotted quad matching IPV4_PATTERN is exactly one ipaddress accepts and writes unchanged, so only
        the others (IPv6, malformed) go to Python: a log naming a million IPv4 addresses costs one regexp
        per distinct address, not seconds of Python."""
        rows = self.con.execute(f"""SELECT DISTINCT ip FROM (SELECT src_ip AS ip FROM _ms_groups
            UNION ALL SELECT dst_ip FROM _ms_groups)
            WHERE ip IS NOT NULL AND NOT regexp_full_match(ip, {sql_str(IPV4_PATTERN)})""").fetchall()
        bad: list[tuple[str]] = []
        changes: list[tuple[str, str]] = []
        for (ip,) in rows:
            canon = canonical_ip(ip)
            if canon is None:
                bad.append((ip,))
            elif canon != ip:
                changes.append((ip, canon))
        if bad:
            self.con.execute("CREATE TEMP TABLE _ms_bad_ip (ip VARCHAR)")
            _insert_rows(self.con, "_ms_bad_ip", bad)
            bad_src, bad_dst = _CLASS_BAD["src_ip"], _CLASS_BAD["dst_ip"]
            earlier = (_CLASS_SKIP, _CLASS_BAD["log_status"], bad_src)  # checks that come first keep their class
            self.con.execute(f"""UPDATE _ms_groups SET cls = CASE WHEN src_ip IN (SELECT ip FROM _ms_bad_ip)
                THEN {bad_src} ELSE {bad_dst} END
                WHERE cls NOT IN {earlier} AND (src_ip IN (SELECT ip FROM _ms_bad_ip)
                    OR (cls <> {bad_dst} AND dst_ip IN (SELECT ip FROM _ms_bad_ip)))""")
            self.con.execute("DROP TABLE _ms_bad_ip")
        if changes:
            self.con.execute("CREATE TEMP TABLE _ms_v6 (raw VARCHAR, canon VARCHAR)")
            _insert_rows(self.con, "_ms_v6", changes)
            for col in ("src_ip", "dst_ip"):
                self.con.execute(f"UPDATE _ms_groups SET {col} = m.canon FROM _ms_v6 m WHERE _ms_groups.{col} = m.raw")
            self.con.execute("DROP TABLE _ms_v6")
            self._merge_groups()

    def _merge_groups(self) -> None:
        """Aggregates that the rewrite above made equal in every key (``2001:DB8::1`` and ``2001:db8::1`` in
        one log) merged into one, as if the log had spelt the address one way: every aggregate of the
        grouping is a sum, a minimum, a maximum or a bit OR, so merging partial aggregates gives what one
        aggregation would. The class stays a key: each aggregate was judged on its own values."""
        keys = ", ".join(c for c in _GROUPS_COLUMNS if c not in _MERGE)
        merged = ", ".join(f"{fn}({c}) AS {c}" for c, fn in _MERGE.items())
        self.con.execute(f"CREATE TEMP TABLE _ms_merged AS SELECT {keys}, {merged} FROM _ms_groups GROUP BY ALL")
        self.con.execute("DELETE FROM _ms_groups")
        self.con.execute("INSERT INTO _ms_groups BY NAME SELECT * FROM _ms_merged")
        self.con.execute("DROP TABLE _ms_merged")

    def _tally(self, new: list[tuple[Path, os.stat_result, str]], staged_all: list[tuple[str, Staged,
               list[SourceFile]]], res: _Result) -> list[BadLine]:
        paths = [p for p, _, _ in new]
        lines: Counter[Path] = Counter()
        records: Counter[Path] = Counter()
        skipped: Counter[Path] = Counter()
        bad: Counter[Path] = Counter()
        outside: Counter[Path] = Counter()
        bad_sql: set[Path] = set()
        skips = {name: sorted(staged.skip_statuses) for name, staged, _ in staged_all}
        counts = self.con.execute(f"SELECT fid, cls, CASE WHEN cls = {_CLASS_SKIP} THEN status_code END, "
                                  "sum(records)::BIGINT, count(*) FROM _ms_groups GROUP BY ALL ORDER BY ALL").fetchall()
        for fid, cls, status, n, aggregates in counts:
            p = paths[fid]
            lines[p] += n
            if cls == _CLASS_OK:
                records[p] += n
                res.ok_aggregates += aggregates
            elif cls == _CLASS_SKIP:
                skipped[p] += n
                res.skipped[skips[new[fid][2]][status - 1]] += n
            elif cls == _CLASS_OUTSIDE:
                outside[p] += n
            else:
                bad[p] += n
                bad_sql.add(p)
        samples: list[BadLine] = []
        for _name, staged, srcs in staged_all:
            samples.extend(staged.bad)
            for p, n in staged.bad_counts.items():
                lines[p] += n
                bad[p] += n
            for (p, reason), n in staged.skipped.items():
                lines[p] += n
                skipped[p] += n
                res.skipped[reason] += n
            if staged.locate_bad is not None:
                for src in srcs:
                    if src.path in bad_sql:
                        samples.extend(staged.locate_bad(src))
        for p, _, f in new:
            rep = FileReport(path=str(p), format=f, lines=lines[p], records=records[p], skipped=skipped[p],
                             bad=bad[p], outside=outside[p])
            res.files_by_path[p] = rep
            res.formats[f] += rep.records
        res.lines = sum(lines.values())
        res.records = sum(records.values())
        res.bad = sum(bad.values())
        res.outside = sum(outside.values())
        return samples

    def _commit_rows(self, new: list[tuple[Path, os.stat_result, str]], res: _Result, read_key: str,
                     replacing: bool, norms: list[str]) -> None:
        con = self.con
        if replacing:  # files read again (changed, or read under other options): their earlier rows go
            con.execute("DELETE FROM flows WHERE source_file IN (SELECT path FROM _ms_files)")
            con.execute("DELETE FROM files WHERE path IN (SELECT path FROM _ms_files)")
        bucket_us = self.bucket_seconds * 1_000_000
        action = ("CASE norm_code " + " ".join(f"WHEN {i} THEN {sql_str(n)}" for i, n in enumerate(norms)) + " END"
                  if norms else "NULL::VARCHAR")
        # Fewer rows than one row group: DuckDB compresses them at COMMIT, and a parallel INSERT only adds
        # the merging of per-thread buffers (measured: 87k rows into default row groups, 0.036 s on one
        # thread, 0.067 s on two). More: the INSERT compresses and writes full row groups, in parallel.
        with self._threads(1 if res.ok_aggregates < _ROW_GROUP_ROWS else self.threads):
            self._insert_flows(bucket_us, action)
        _insert_rows(con, "files", [
            (str(p), st.st_size, st.st_mtime_ns, f, res.files_by_path[p].lines, res.files_by_path[p].records,
             res.files_by_path[p].skipped, res.files_by_path[p].bad, read_key, res.files_by_path[p].outside)
            for p, st, f in new])

    @contextmanager
    def _threads(self, n: int) -> Iterator[None]:
        """DuckDB's thread count set to ``n`` for the statements inside, then back. Inside a transaction
        only: on failure the transaction is aborted and refuses SET, so ``_transaction`` restores it."""
        if n == self.threads:
            yield
            return
        self.con.execute(f"SET threads = {int(n)}")
        yield
        self.con.execute(f"SET threads = {self.threads}")

    def _insert_flows(self, bucket_us: int, action: str) -> None:
        def ts(col: str) -> str:
            return f"make_timestamp(CAST({col} AS BIGINT) * (1000000 // unit))"

        self.con.execute(f"""
INSERT INTO flows BY NAME
SELECT {ts('t_min')} AS ts_start, {ts('t_end_max')} AS ts_end, {ts('t_max')} AS ts_start_last,
  make_timestamp(CAST(k_bucket AS BIGINT) * {bucket_us}) AS bucket, hours, src_ip, dst_ip,
  CASE WHEN k_sp = -1 THEN CASE WHEN fold_min = fold_max THEN fold_min END ELSE k_sp END AS src_port,
  CASE WHEN k_dp = -1 THEN CASE WHEN fold_min = fold_max THEN fold_min END ELSE k_dp END AS dst_port,
  CASE WHEN k_sp = -1 THEN fold_min ELSE k_sp END AS src_port_min,
  CASE WHEN k_sp = -1 THEN fold_max ELSE k_sp END AS src_port_max,
  CASE WHEN k_dp = -1 THEN fold_min ELSE k_dp END AS dst_port_min,
  CASE WHEN k_dp = -1 THEN fold_max ELSE k_dp END AS dst_port_max,
  CASE proto WHEN 6 THEN 'TCP' WHEN 17 THEN 'UDP' WHEN 1 THEN 'ICMP' WHEN 58 THEN 'ICMP' WHEN 132 THEN 'SCTP'
    ELSE 'IP-' || proto END AS protocol,
  CAST(CASE WHEN bytes > {_BIGINT_MAX} THEN {_BIGINT_MAX} ELSE bytes END AS BIGINT) AS bytes,
  CAST(CASE WHEN packets > {_BIGINT_MAX} THEN {_BIGINT_MAX} ELSE packets END AS BIGINT) AS packets,
  {action} AS action, tcp_flags, is_reply, direction, src_workload, dst_workload, records,
  f.fmt AS source_format, f.path AS source_file
FROM _ms_groups c JOIN _ms_files f USING (fid)
WHERE cls = {_CLASS_OK}""")


def _class_sql(present: set[str], unit: int) -> str:
    """SQL sorting an aggregate (``a``) into ok / skip / outside / bad:<column> (as _CLASS_* codes), the
    checks readers mirror in Python. ``present`` names the aggregate's columns that the query computes;
    the others are NULL.

    Computed once per aggregate as it is written. A missing address is bad here; whether a present one
    is an address is decided afterwards, once per distinct address (``FlowStore._check_addresses``),
    which moves the aggregates holding a bad one to bad:src_ip / bad:dst_ip as if checked here."""
    def col(name: str) -> str:
        return f"a.{name}" if name in present else "NULL"

    limit = MAX_EPOCH_SECONDS
    bad = _CLASS_BAD
    whens = [f"WHEN a.status_code > 0 THEN {_CLASS_SKIP}", f"WHEN a.status_code < 0 THEN {bad['log_status']}"]
    for side in ("src_ip", "dst_ip"):
        whens.append(f"WHEN {col(side)} IS NULL THEN {bad[side]}" if side in present
                     else f"WHEN true THEN {bad[side]}")
    whens.append(f"WHEN a.action_code < 0 THEN {bad['action']}")
    if "t_max" in present:
        whens.append(f"WHEN a.t_max > {limit * unit} THEN {bad['t_start']}")
    if "t_end_max" in present:
        whens.append(f"WHEN a.t_end_max > {limit * unit} THEN {bad['t_end']}")
    if "k_out" in present:
        whens.append(f"WHEN a.k_out THEN {_CLASS_OUTSIDE}")
    return f"CAST(CASE {' '.join(whens)} ELSE {_CLASS_OK} END AS TINYINT)"


def _outside_sql(window: TimeWindow, unit: int) -> str:
    """True when ``t_start`` (in ``unit`` per second) is outside the window or unknown.

    The ends are converted to the relation's unit rounding up, so an integer start compares exactly:
    t * 1e6 / unit >= since_us  <=>  t >= ceil(since_us * unit / 1e6). Ends before the epoch clamp to 0
    (``t_start`` is unsigned)."""
    lo_us, hi_us = window.bounds_us()
    terms = ["t_start IS NULL"]
    if lo_us is not None:
        terms.append(f"t_start < {max(0, -(-lo_us * unit // 1_000_000))}")
    if hi_us is not None:
        terms.append(f"t_start >= {max(0, -(-hi_us * unit // 1_000_000))}")
    return "(" + " OR ".join(terms) + ")"


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection to the store file at ``path``, its row groups of ``_ROW_GROUP_ROWS`` rows.

    The row group size is an option of ATTACH, so the file is attached to an in-memory connection and
    made the default catalog; the spill directory stays ``<store>.tmp``, as for ``duckdb.connect(path)``.
    A DuckDB without the option (before 1.2) opens the file as before, with its default row groups."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(str(path))} AS flowstore (ROW_GROUP_SIZE {_ROW_GROUP_ROWS})")
    except duckdb.Error:
        con.close()
        return duckdb.connect(str(path))  # raises DuckDB's own error when the file is no store
    con.execute("USE flowstore")
    con.execute(f"SET temp_directory = {sql_str(str(path) + '.tmp')}")
    return con


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Sequence[object]]) -> None:
    """Multi-row INSERTs in chunks: DuckDB's executemany costs ~1 ms a row (thousands of files)."""
    for i in range(0, len(rows), 500):
        chunk = rows[i:i + 500]
        one = "(" + ", ".join("?" * len(chunk[0])) + ")"
        con.execute(f"INSERT INTO {table} VALUES {', '.join([one] * len(chunk))}",
                    [v for row in chunk for v in row])


@dataclass
class _Scanned:
    """The :class:`~microseg.sources.flows.Scanned` a relation's after_scan hook gets: this ingest's
    aggregates (``_ms_groups``) of the relation's files, by the relation's file indexes."""

    con: duckdb.DuckDBPyConnection
    rel: StagedRelation
    fids: dict[Path, int]
    skips: list[str]  # status_code i + 1 is skips[i]

    def _pairs(self, file_indexes: Sequence[int]) -> str:
        """(file_index, fid) of each file as SQL VALUES rows; '' for none."""
        return ", ".join(f"({i}, {self.fids[self.rel.files[i].path]})" for i in sorted(set(file_indexes)))

    def aggregates(self, file_indexes: Sequence[int]) -> str:
        status = ("CASE g.status_code WHEN 0 THEN NULL "
                  + " ".join(f"WHEN {i} THEN {sql_str(x)}" for i, x in enumerate(self.skips, 1))
                  + " ELSE '(unknown)' END")
        pairs = self._pairs(file_indexes) or "(NULL, NULL)"
        return (f"(SELECT m.file_index::INTEGER AS file_index, {status} AS status, g.src_ip, g.dst_ip "
                f"FROM _ms_groups g JOIN (VALUES {pairs}) AS m(file_index, fid) USING (fid))")

    def discard(self, file_indexes: Sequence[int], status: str | None = None) -> None:
        pairs = self._pairs(file_indexes)
        if not pairs:
            return
        only = "" if status is None else f" AND status_code = {self.skips.index(status) + 1}"
        self.con.execute(f"DELETE FROM _ms_groups WHERE fid IN "
                         f"(SELECT fid FROM (VALUES {pairs}) AS m(file_index, fid)){only}")


class _Tracker:
    """Turns the ingest loop's events into :class:`IngestProgress` for a callback (no-op without one).

    Files are done when the scan of their relation ends; meanwhile their bytes are estimated from what
    a Python reader reported (``on_read``) or from DuckDB's progress of the running scan."""

    def __init__(self, callback: ProgressCallback | None, sizes: dict[Path, int], files_total: int,
                 files_done: int) -> None:
        self.callback = callback
        self.sizes = sizes
        self.lock = threading.Lock()
        self.state = IngestProgress(files_total=files_total, files_done=files_done, bytes_total=sum(sizes.values()))
        self.done: set[Path] = set()
        self.partial: dict[Path, tuple[int, int]] = {}  # path -> (bytes, lines) before its scan ends
        self.lines_done = 0
        self.lines_seen = 0  # sum(records) of the aggregates so far: new lines = its growth

    def emit(self) -> None:
        if self.callback is None:
            return
        with self.lock:
            pending = [v for p, v in self.partial.items() if p not in self.done]
            self.state.bytes_done = sum(self.sizes[p] for p in self.done) + sum(b for b, _ in pending)
            self.state.lines = self.lines_done + sum(n for _, n in pending)
            snapshot = IngestProgress(**self.state.__dict__)
        self.callback(snapshot)

    def on_read(self, path: Path, bytes_read: int, lines_read: int) -> None:
        with self.lock:
            self.partial[path] = (min(bytes_read, self.sizes.get(path, bytes_read)), lines_read)
        self.emit()

    @contextmanager
    def scanning(self, con: duckdb.DuckDBPyConnection, files: list[SourceFile]) -> Iterator[None]:
        """Polls DuckDB's progress of the scan of ``files`` while it runs, then marks them done."""
        if self.callback is None:
            yield
            return
        paths = [f.path for f in files if f.path in self.sizes]
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.2):
                pct = con.query_progress()  # -1 when DuckDB cannot tell
                if pct < 0:
                    continue
                with self.lock:
                    for p in paths:
                        if p not in self.done:
                            old = self.partial.get(p, (0, 0))
                            self.partial[p] = (max(old[0], int(self.sizes[p] * min(pct, 100.0) / 100)), old[1])
                self.emit()

        poller = threading.Thread(target=poll, name="microseg-ingest-progress", daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join()
        seen = int(con.execute("SELECT coalesce(sum(records), 0) FROM _ms_groups").fetchone()[0])  # type: ignore[index]
        with self.lock:
            new = [p for p in paths if p not in self.done]
            self.done.update(new)
            self.state.files_done += len(new)
            self.lines_done += seen - self.lines_seen
            self.lines_seen = seen
            for p in new:
                self.partial.pop(p, None)
        self.emit()

    def finish(self, lines: int) -> None:
        """Every file done; ``lines`` is the exact count of lines read (bad and skipped ones too)."""
        with self.lock:
            self.done.update(self.sizes)
            self.state.files_done = self.state.files_total
            self.lines_done = lines
            self.partial.clear()
            self.state.final = True
        self.emit()


class _ReadCarefully(Exception):
    """A scan failed on a relation whose reader may have staged it carefully (StagedRelation.retry_careful)."""


class _Result:
    def __init__(self) -> None:
        self.files_by_path: dict[Path, FileReport] = {}
        self.lines = 0
        self.records = 0
        self.bad = 0
        self.outside = 0
        self.skipped: Counter[str] = Counter()
        self.formats: Counter[str] = Counter()
        self.samples: list[BadLine] = []
        self.ok_aggregates = 0  # flows rows this ingest writes
