"""Differential fuzz test of the line formats' DuckDB fast paths against their Python readers.

For each format, seeded files hold good lines (real sample lines and the benchmark generators' shapes)
and mutated ones (``_mutate``: characters of trouble, pathological field values, CRLF, a lone CR, a
trailing blank field, a field more or fewer, header and comment lines). Each file set is ingested
through the fast path and through the Python reader alone: reports (counts and every bad-line sample)
and rows must be equal, or both ingests fail. One mutated line per file, after good ones: most readers
send a whole file (Zeek: the whole batch) to Python for some lines, and a file of 200 mutated lines
would always be read in Python. A fast path that sent everything to Python would pass trivially, so
each case also asserts that SQL alone read most of the good lines (the fast run's Python reader wrote
fewer rows than half the good lines). Lines that send the whole batch to Python (bytes that are not
UTF-8; for Zeek a '#' line in the body) are fuzzed in a test of their own.

AWS VPC has no Python reader of a whole file: DuckDB's CSV reader parses, and the lines it rejects are
re-read in Python (``_recover_rejects``). Its reference run puts every line in the rejects tables, i.e.
reads the whole file with that Python code. AWS VPC mutations here write no carriage return (mutate_no_cr):
test_aws_vpc_cr.py fuzzes the same cases with them, and checks what it takes to read such a file.

The seeds are fixed: the files are the same on every run. A divergence a seed found is kept at the end
as a one-line regression test."""

from __future__ import annotations

import gzip
import importlib.util
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from microseg.engine.store import FlowStore
from microseg.errors import InputError
from microseg.sources.flows import StageWriter, aws_vpc, calico, envoy, generic_csv, iter_lines, nfdump, zeek

from ._mutate import hash_line, invalid_utf8, mixed, mutate, mutate_no_cr, mutate_no_hash_lines

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "samples" / "flows"


def _bench() -> ModuleType:
    """benchmarks/bench_formats.py, for its line generators (it imports a sibling script)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("_bench_formats_for_fuzz",
                                                      ROOT / "benchmarks" / "bench_formats.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look the module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


BENCH = _bench()


def _sample_lines(*parts: str, skip: int = 0) -> list[str]:
    """Data lines of a sample file (none if the shared samples are not there)."""
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        return []
    return [x for x in path.read_text().splitlines()[skip:] if x.strip() and not x.startswith("#")]


def _generator(line: Callable[[random.Random, Any], str], samples: Sequence[str] = ()
               ) -> Callable[[random.Random], Callable[[], str]]:
    """A source of good lines: mostly fresh benchmark lines (unique ids), now and then a sample line."""
    def make(rng: random.Random) -> Callable[[], str]:
        def good() -> str:
            if samples and rng.random() < 0.05:
                return rng.choice(list(samples))
            return line(rng, BENCH.draw(rng))
        return good
    return make


def _fixed(lines: Sequence[str]) -> Callable[[random.Random], Callable[[], str]]:
    return lambda rng: lambda: rng.choice(list(lines))


# -- nfdump's three column forms ---------------------------------------------------------------------

NF_TAIL = (",0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
           "00:00:00:00:00:00" + ",0-0-0" * 10)
NF43_HEADER = _sample_lines("nfdump", "legacy-43col-old-nfdump-1.6.csv")[:1] or [
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,"
    "dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,ra,eng"]
NF_CURRENT_HEADER = "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows"


def _nf43(rng: random.Random, c: Any) -> str:
    t = BENCH.local(c.start)
    return (f"{t},{BENCH.local(c.start + c.duration)},{c.duration:.3f},{c.src},{c.dst},{c.sport},{c.dport},"
            f"{rng.choice(('TCP', 'UDP', 'ICMP'))},.AP.SF,0,0,{c.pkts},{c.bytes},0,0{NF_TAIL},0.0.0.0,0/0")


def _nf_current(rng: random.Random, c: Any) -> str:
    proto, dport = rng.choice(((6, c.dport), (17, 53), (1, "8.0"), (58, "135.0")))
    return (f"{BENCH.local(c.start)}.{rng.randrange(1000):03d},{c.duration:.3f},{proto},{c.src},{c.sport},{c.dst},"
            f"{dport},{c.pkts},{c.bytes},1")


# -- generic CSV: every documented column ------------------------------------------------------------

CSV_FULL_HEADER = ("Source-IP,dst_addr,dport,proto,sport,start_time,end_time,octets,pkts,action,direction,"
                   "src_workload,dst_workload,x_note")


def _csv_full(rng: random.Random, c: Any) -> str:
    start = rng.choice((f"{c.start:.3f}", str(int(c.start * 1000)), BENCH.iso(c.start, 3)))
    return (f"{c.src},{c.dst},{c.dport},{rng.choice(('tcp', '6', 'UDP', 'icmp'))},{c.sport},{start},"
            f"{c.start + c.duration:.3f},{c.bytes},{c.pkts},{rng.choice(('allow', 'deny', 'reject', 'audit'))},"
            f"{rng.choice(('ingress', 'out', ''))},ns-{c.client % 5}/app-{c.client},,note {c.client}")


# -- calico legacy ---------------------------------------------------------------------------------

CALICO_HEADER = BENCH.CALICO_LEGACY_HEADER
CALICO_SAMPLE = _sample_lines("calico", "enterprise-file-legacy.txt", skip=1)


def _calico(rng: random.Random, c: Any) -> str:
    line: str = BENCH.calico_legacy(rng, c)
    return line if rng.random() < 0.7 else line.replace(" in ", " out ", 1)


# -- envoy -----------------------------------------------------------------------------------------

ENVOY_SAMPLES = (_sample_lines("istio-envoy", "istio-docs-sleep-httpbin.log")
                 + _sample_lines("istio-envoy", "rbac-denied.log"))
# Response flags, some of them of no upstream connection (drop on a line that is not inbound)
ENVOY_FLAGS = ("-", "UF", "UF,URX", "URX", "UH", "NR", "UO", "NC", "DF", "RL", "DI,FI", "UC", "UT", "DC", "UH,UAEX")


def _envoy(rng: random.Random, c: Any) -> str:
    """The benchmark's inbound line, now and then with a response flag, from the client's sidecar (or
    no side), over TCP."""
    line: str = BENCH.envoy_text(rng, c)
    if rng.random() < 0.6:
        line = line.replace(" 200 - ", f" 503 {rng.choice(ENVOY_FLAGS)} ", 1)
        side = rng.random()
        if side < 0.5:
            line = line.replace(" inbound|", " outbound|", 1)
        elif side < 0.6:
            line = re.sub(r" inbound\|\d+\|\| ", " - ", line, count=1)
        if rng.random() < 0.3:
            line = line.replace(' "GET /api/v1/items HTTP/1.1" ', ' "- - -" ', 1)
    return line


# -- zeek ------------------------------------------------------------------------------------------

ZEEK_HEADER = list(BENCH.BY_NAME["zeek-tsv"].header)
ZEEK_FOOTER = list(BENCH.BY_NAME["zeek-tsv"].footer)
ZEEK_SAMPLE_HEADER = [x for x in (SAMPLES / "zeek" / "conn-tsv-zed-sample.log").read_text().splitlines()
                      if x.startswith("#")] if (SAMPLES / "zeek").exists() else ZEEK_HEADER
ZEEK_SAMPLE = _sample_lines("zeek", "conn-tsv-zed-sample.log")


def _zeek_sample_shape(rng: random.Random, c: Any) -> str:
    """The zed sample's 21 columns (no ip_proto), with fresh values."""
    uid = "C" + "".join(rng.choice("abcdefghijkLMNOP0123456789") for _ in range(17))
    return (f"{c.start:.6f}\t{uid}\t{c.src}\t{c.sport}\t{c.dst}\t{c.dport}\t{rng.choice(('tcp', 'udp', 'icmp'))}"
            f"\t-\t{c.duration:.6f}\t{c.bytes}\t{c.bytes // 2}\t{rng.choice(('SF', 'S0', 'REJ', 'OTH', 'RSTR'))}"
            f"\t-\t-\t0\tShADTdtr\t{c.pkts}\t730\t{c.pkts // 2}\t342\t-")


# -- the cases -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    module: ModuleType
    attr: str  # the function building the fast path; python_only replaces it
    python_only: Callable[..., Any]
    fmt: str
    ext: str
    header: list[str]
    good: Callable[[random.Random], Callable[[], str]]
    sep: str
    footer: list[str] = field(default_factory=list)
    # Mutated lines per file, each after 3 good ones: most readers send a whole file to Python for some
    # lines (an Envoy line out of the fast shape, a CSV line with too many fields, ...)
    per_file: int = 1
    gz: bool = False
    mutated: int = 150
    how: Callable[[random.Random, str, str, str | None], bytes] = mutate
    also: tuple[tuple[str, Callable[..., Any]], ...] = ()  # more of the module replaced in the Python run
    clean: int = 0  # files of good lines only, in the same batch


def _nfdump_python(_con: Any, files: Any, *_a: Any) -> Any:
    return nfdump._Plan(python=set(range(len(files))))


def _csv_python(_con: Any, files: Any, *_a: Any) -> Any:
    return generic_csv._Plan(python=set(range(len(files))))


def _none(*_a: Any, **_k: Any) -> None:
    return None


_REAL_RECOVER = aws_vpc._recover_rejects


def _vpc_no_rows(fields: Sequence[str], *_a: Any, **_k: Any) -> str:
    """The AWS VPC staging relation of the reference run: it reads no file (see _vpc_all_rejected)."""
    columns = ", ".join(f"NULL::{aws_vpc._TYPES.get(f, 'VARCHAR')} AS {aws_vpc._q(f)}" for f in fields)
    return f"{aws_vpc._select_sql(fields)} FROM (SELECT {columns}, 0 AS file_index) WHERE false"


def _vpc_all_rejected(layout: Any, relation: Any, rejects: tuple[str, str], staged: Any, options: Any,
                      *rest: Any) -> Any:
    """The reference run of AWS VPC: every line of the files, but a header on line 1 and empty lines, is
    put in the rejects tables, so that _recover_rejects reads the whole file in Python."""
    hook = _REAL_RECOVER(layout, relation, rejects, staged, options, *rest)

    def all_rejected(con: Any, scanned: Any) -> Any:
        for table in rejects:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"CREATE TEMP TABLE {rejects[1]} (scan_id BIGINT, file_id BIGINT, file_path VARCHAR)")
        con.execute(f"CREATE TEMP TABLE {rejects[0]} (scan_id BIGINT, file_id BIGINT, line BIGINT, csv_line VARCHAR, "
                    "column_name VARCHAR, column_idx BIGINT, error_message VARCHAR)")
        for k, src in enumerate(relation.files):
            con.execute(f"INSERT INTO {rejects[1]} VALUES (0, ?, ?)", [k, str(src.path)])
            for no, text in iter_lines(src):
                if text and not (no == 1 and aws_vpc._header_fields(text) is not None):
                    con.execute(f"INSERT INTO {rejects[0]} VALUES (0, ?, ?, ?, NULL, 0, '')", [k, no, text])
        return hook(con, scanned)
    return all_rejected


CASES = [
    Case("aws-vpc", aws_vpc, "_staging_sql", _vpc_no_rows, "aws-vpc", "log", [BENCH.VPC_HEADER],
         _generator(BENCH.vpc, _sample_lines("aws-vpc", "v2-default.log", skip=1)), " ",
         also=(("_recover_rejects", _vpc_all_rejected),), how=mutate_no_cr),
    Case("aws-vpc-gzip", aws_vpc, "_staging_sql", _vpc_no_rows, "aws-vpc", "log.gz", [BENCH.VPC_HEADER],
         _generator(BENCH.vpc), " ", gz=True, mutated=100, also=(("_recover_rejects", _vpc_all_rejected),),
         how=mutate_no_cr),
    Case("nfdump-48", nfdump, "_plan", _nfdump_python, "nfdump", "csv", [BENCH.NFDUMP_HEADER],
         _generator(BENCH.nfdump, _sample_lines("nfdump", "legacy-48col-nfdump-1.6-1.7.4.csv", skip=1)), ",",
         footer=["Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", "1,1,1,0,0,0"]),
    Case("nfdump-43", nfdump, "_plan", _nfdump_python, "nfdump", "csv", NF43_HEADER,
         _generator(_nf43, _sample_lines("nfdump", "legacy-43col-old-nfdump-1.6.csv", skip=1)), ","),
    Case("nfdump-current", nfdump, "_plan", _nfdump_python, "nfdump", "txt", [NF_CURRENT_HEADER],
         _generator(_nf_current), ","),
    Case("csv-bench", generic_csv, "_plan", _csv_python, "csv", "csv", [BENCH.GENERIC_HEADER],
         _generator(BENCH.generic_csv), ","),
    Case("csv-full", generic_csv, "_plan", _csv_python, "csv", "csv", [CSV_FULL_HEADER], _generator(_csv_full), ","),
    # A '#' line in the body, or the batch's header changing, sends the whole batch to Python (see
    # test_lines_read_by_batch_match_the_python_reader)
    Case("zeek-tsv", zeek, "_plan", _none, "zeek", "log", ZEEK_HEADER, _generator(BENCH.zeek_tsv), "\t",
         footer=ZEEK_FOOTER, how=mutate_no_hash_lines),
    Case("zeek-tsv-zed", zeek, "_plan", _none, "zeek", "log", ZEEK_SAMPLE_HEADER,
         _generator(_zeek_sample_shape, ZEEK_SAMPLE), "\t", how=mutate_no_hash_lines),
    Case("calico-legacy", calico, "_scan", _none, "calico", "txt", [CALICO_HEADER],
         _generator(_calico, CALICO_SAMPLE), " "),
    # A line out of the fast shape sends its file to Python: clean files in the batch stay in SQL
    Case("envoy-text", envoy, "_scan", _none, "envoy", "log", [], _generator(_envoy, ENVOY_SAMPLES), " ",
         mutated=120, clean=60),
]
SEEDS = (1, 2, 3)


def _merged(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Aggregates keyed by flow: the rows Python read form their own aggregates next to SQL's (the store
    aggregates each staged relation by itself), so the two runs are compared on the sums."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = (r["source_file"], r["src_ip"], r["dst_ip"], r["dst_port"], r["protocol"], r["action"], r["is_reply"],
               r["direction"], r["src_workload"], r["dst_workload"], r["bucket"])
        new = [r["records"], r["bytes"], r["packets"], r["ts_start"], r["ts_end"], r["ts_start_last"], r["hours"],
               r["tcp_flags"], r["src_port_min"], r["src_port_max"]]
        old = out.get(key)
        if old is not None:
            add = [lambda a, b: a + b] * 3 + [min, max, max, lambda a, b: a | b, lambda a, b: a | b, min, max]
            new = [None if a is None or b is None else f(a, b) for f, a, b in zip(add, old, new, strict=True)]
        out[key] = new
    return {k: tuple(v) for k, v in out.items()}


def _files(case: Case, seed: int, tmp_path: Path, how: Callable[..., bytes] | None = None,
           mutated: int | None = None) -> tuple[list[Path], int]:
    """The case's files for ``seed``, and the number of good lines in them."""
    how = case.how if how is None else how
    rng = random.Random(f"{case.name}-{seed}-{how.__name__}")
    good = case.good(rng)
    header = case.header[-1] if case.header else None
    mutated = case.mutated if mutated is None else mutated
    groups: list[tuple[list[bytes], int]] = []
    if True:
        for _ in range(mutated // case.per_file):
            lines, goods = mixed(rng, good, case.per_file, case.sep, header, how)
            extra = [good().encode() for _ in range(3)]
            groups.append((extra + lines, goods + 3))
        for _ in range(case.clean):
            groups.append(([good().encode() for _ in range(5)], 5))
    paths = []
    total = 0
    for n, (lines, goods) in enumerate(groups):
        data = b"\n".join([h.encode() for h in case.header] + lines + [f.encode() for f in case.footer]) + b"\n"
        path = tmp_path / "in" / f"{case.name}-{seed}-{n:03d}.{case.ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data, mtime=0) if case.gz else data)
        paths.append(path)
        total += goods
    return paths, total


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case, paths: Sequence[Path], *, fast: bool = True
        ) -> tuple[Any, Any, int]:
    """(report, rows) through the fast path, then through the Python reader alone, and the number of
    rows the Python reader wrote during the fast run."""
    out = []
    real = getattr(case.module, case.attr)
    used: list[Any] = []
    python_rows = 0
    real_write = StageWriter.write

    def spy(*a: Any, **k: Any) -> Any:
        used.append(real(*a, **k))
        return used[-1]

    def counting(self: StageWriter, *a: Any) -> None:
        nonlocal python_rows
        python_rows += 1
        real_write(self, *a)

    for name, python_only in (("fast", False), ("python", True)):
        with monkeypatch.context() as m:
            m.setattr(case.module, case.attr, case.python_only if python_only else spy)
            for attr, replacement in case.also if python_only else ():
                m.setattr(case.module, attr, replacement)
            if not python_only:
                m.setattr(StageWriter, "write", counting)
            with FlowStore(tmp_path / name / "flows.duckdb") as s:
                try:
                    report = s.ingest(list(paths), fmt=case.fmt, bad_threshold=1.0, max_samples=1000)
                except InputError:  # e.g. a count beyond UBIGINT: the whole ingest fails, nothing is stored
                    assert s.rows() == []
                    out.append((("InputError",), {}))
                    continue
                got = _merged(s.rows())
        out.append(((report.lines, report.records, report.bad, dict(report.skipped),
                     [(Path(b.file).name, b.line, b.field, b.message, b.text) for b in report.bad_samples]), got))
    assert used, "the fast path was not tried"
    if fast:
        assert used[0] is not None, "the fast path was not taken"
    return out[0], out[1], python_rows


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fast_path_matches_the_python_reader_on_mutated_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              case: Case, seed: int) -> None:
    paths, goods = _files(case, seed, tmp_path)
    fast, python, python_rows = run(tmp_path, monkeypatch, case, paths)
    assert fast[0] == python[0]
    assert fast[1] == python[1]
    # SQL alone read most good lines: the fast run's Python reader wrote at most half as many rows
    sql_records = fast[0][1] - python_rows
    assert sql_records * 2 > goods, (sql_records, goods)


def _not_utf8(rng: random.Random, line: str, _sep: str, _header: str | None) -> bytes:
    return invalid_utf8(rng, line)


@pytest.mark.parametrize("how", [_not_utf8, hash_line], ids=["not-utf8", "hash-line"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lines_read_by_batch_match_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case,
                                                     how: Callable[..., bytes]) -> None:
    # Bytes that are not UTF-8 (DuckDB rejects them), and for Zeek a '#' line in the body, send the whole
    # batch to Python: the runs must still agree, line numbers too.
    paths, _goods = _files(case, 1, tmp_path, how, mutated=10)
    fast, python, _python_rows = run(tmp_path, monkeypatch, case, paths, fast=False)
    assert fast == python


# -- divergences the seeds found, one line each ------------------------------------------------------

VPC_LINE = ("2 123456789010 eni-0a1b2c3d4e5f60718 10.4.42.10 10.1.196.10 40001 8443 6 23 5750 1767356051 1767356111 "
            "ACCEPT OK")


def _one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case_name: str, line: bytes) -> tuple[Any, Any]:
    case = next(c for c in CASES if c.name == case_name)
    path = tmp_path / f"one.{case.ext}"
    path.write_bytes(b"\n".join([h.encode() for h in case.header] + [line]) + b"\n")
    fast, python, _rows = run(tmp_path, monkeypatch, case, [path])
    assert fast == python
    return fast[0], fast[1]


@pytest.mark.parametrize(("field", "index", "value"), [
    ("srcport", 5, "+5"), ("srcport", 5, "1.5"), ("dstport", 6, "0x10"), ("dstport", 6, "1_000"),
    ("protocol", 7, "1e1"), ("packets", 8, "0b11"), ("bytes", 9, "5\x0b"), ("start", 10, "\x0b1767356051"),
    ("end", 11, "-0"), ("packets", 8, "23\u00a0"), ("srcport", 5, ""),
])
def test_vpc_an_integer_written_otherwise_than_in_digits_is_a_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       field: str, index: int, value: str) -> None:
    # DuckDB's typed CSV columns read '+5' as 5, '1.5' as 2, '0x10' as 16, '1_000' as 1000, '1e1' as 10,
    # '0b11' as 3 and skip blanks around the digits: the fast path made records of lines the Python
    # reader refuses (_UINT_RE). An empty field is a doubled space: a field is missing.
    values = VPC_LINE.split(" ")
    values[index] = value
    report, rows = _one_line(tmp_path, monkeypatch, "aws-vpc", " ".join(values).encode())
    assert report[:3] == (1, 0, 1) and rows == {}
    assert report[4][0][2] == ("line" if value == "" else field)


def test_vpc_a_leading_zero_is_still_a_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report, rows = _one_line(tmp_path, monkeypatch, "aws-vpc", VPC_LINE.replace(" 8443 ", " 08443 ").encode())
    assert report[:3] == (1, 1, 0) and [k[3] for k in rows] == [8443]


@pytest.mark.parametrize("line", [
    VPC_LINE.replace("eni-0a1b2c3d4e5f60718 ", ""),  # a field missing
    VPC_LINE.replace("eni-0a1b2c3d4e5f60718", ""),  # the same, with its doubled space
    " " + VPC_LINE.split(" ", 1)[1],  # the version missing, the line starting with a space
    VPC_LINE.replace("123456789010 ", "123456789010\t"),  # a tab is not a separator
    VPC_LINE.replace("123456789010 ", "123456789010\u00a0"),
])
def test_vpc_a_missing_field_is_a_bad_line_however_the_spaces_fall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   line: str) -> None:
    # DuckDB read a doubled space as an empty field (a record of a line missing its interface id); the
    # Python reader split at any blank (a tab or a no-break space separated fields there).
    report, rows = _one_line(tmp_path, monkeypatch, "aws-vpc", line.encode())
    assert report[:3] == (1, 0, 1) and rows == {}
    assert report[4][0][2] == "line"


def test_vpc_a_doubled_space_alone_is_still_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report, rows = _one_line(tmp_path, monkeypatch, "aws-vpc", VPC_LINE.replace(" 6 ", "  6 ").encode())
    assert report[:3] == (1, 1, 0) and len(rows) == 1
