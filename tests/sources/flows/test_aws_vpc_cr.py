"""AWS VPC text: carriage returns and bytes that are not UTF-8, the fast path against the Python reader.

A CR LF among LF lines, or a lone CR, failed the whole ingest (DuckDB's "CSV Parser state machine reached
an invalid state"); such a file is now read by the Python reader, the others of the batch still by DuckDB.
Every test compares the fast path's full result (counts, every bad-line sample, rows) with the Python
reader's alone, through test_fuzz_lines' harness."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from ._mutate import mutate
from .test_fuzz_lines import CASES, SEEDS, VPC_LINE, Case, _files, _not_utf8, run

VPC = next(c for c in CASES if c.name == "aws-vpc")
VPC_GZ = next(c for c in CASES if c.name == "aws-vpc-gzip")
HEADER = VPC.header[0].encode()
LINE = VPC_LINE.encode()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def _with_clean_file(tmp_path: Path, data: bytes, gz: bool = False) -> list[Path]:
    """A file of ``data`` after a clean LF file in the same batch: the clean one is read by SQL (the
    harness asserts the fast path ran)."""
    ext = "log.gz" if gz else "log"
    clean = _write(tmp_path / f"a-clean.{ext}", HEADER + b"\n" + b"\n".join([LINE] * 3) + b"\n", gz)
    return [clean, _write(tmp_path / f"b-cr.{ext}", data, gz)]


@pytest.mark.parametrize("gz", [False, True], ids=["text", "gzip"])
def test_one_crlf_line_among_lf_lines_is_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    # The reproduction: DuckDB failed the whole ingest (InputError, invalid state). Python ends the line at
    # its CR LF: a record like the others.
    data = HEADER + b"\n" + LINE + b"\r\n" + LINE + b"\n"
    fast, python, python_rows = run(tmp_path, monkeypatch, VPC_GZ if gz else VPC, _with_clean_file(tmp_path, data, gz))
    assert fast == python
    assert fast[0][:3] == (5, 5, 0)
    assert python_rows == 2  # the CR file's records, read by Python; the clean file's by SQL


@pytest.mark.parametrize("gz", [False, True], ids=["text", "gzip"])
def test_a_lone_cr_ends_a_line_as_python_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    # A lone CR inside a line splits it in two (two bad lines, the lines after it numbered one further); one
    # at the end of a line, before the next, ends it (a record).
    cut = LINE.index(b" 23 ")
    data = b"\n".join([HEADER, LINE[:cut] + b"\r" + LINE[cut + 1:], LINE + b"\r" + LINE, b"2 bad"]) + b"\n"
    fast, python, _rows = run(tmp_path, monkeypatch, VPC_GZ if gz else VPC, _with_clean_file(tmp_path, data, gz))
    assert fast == python
    report = fast[0]
    assert report[:3] == (3 + 5, 3 + 2, 3)
    assert [(name, line, field) for name, line, field, _m, _t in report[4]] == [
        (f"b-cr.{'log.gz' if gz else 'log'}", n, "line") for n in (2, 3, 6)]


def test_a_lone_cr_at_the_end_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, python, _rows = run(tmp_path, monkeypatch, VPC, _with_clean_file(tmp_path, HEADER + b"\n" + LINE + b"\r"))
    assert fast == python
    assert fast[0][:3] == (4, 4, 0)


def _crlf(paths: list[Path], gz: bool) -> None:
    """Every LF of the files made a CR LF (gzip files rewritten)."""
    for p in paths:
        data = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
        assert b"\r" not in data
        _write(p, data.replace(b"\n", b"\r\n"), gz)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", [VPC, VPC_GZ], ids=["text", "gzip"])
def test_fuzz_with_carriage_returns_matches_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               case: Case, seed: int) -> None:
    # test_fuzz_lines' AWS VPC cases leave out the mutations that write a CR (mutate_no_cr): here they are in.
    paths, goods = _files(case, seed, tmp_path, mutate)
    cr_files = sum(b"\r" in (gzip.decompress(p.read_bytes()) if case.gz else p.read_bytes()) for p in paths)
    assert cr_files >= 5  # the mutations did write CRs
    fast, python, python_rows = run(tmp_path, monkeypatch, case, paths)
    assert fast == python
    assert (fast[0][1] - python_rows) * 2 > goods  # the files without a CR still read by SQL


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", [VPC, VPC_GZ], ids=["text", "gzip"])
def test_fuzz_crlf_files_are_read_by_sql_as_python_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               case: Case, seed: int) -> None:
    # A file whose every line ends in CR LF is DuckDB's (it detects the line break per file). The text of a
    # line it rejected began with the LF of the line before: a doubled space was a bad line there, a record
    # for Python, and bad lines were reported with that LF.
    paths, goods = _files(case, seed, tmp_path)
    _crlf(paths, case.gz)
    fast, python, python_rows = run(tmp_path, monkeypatch, case, paths)
    assert fast == python
    assert (fast[0][1] - python_rows) * 2 > goods


def test_crlf_file_with_a_doubled_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"\r\n".join([HEADER, LINE, LINE.replace(b" 6 ", b"  6 "), b"2 bad"]) + b"\r\n"
    fast, python, python_rows = run(tmp_path, monkeypatch, VPC, _with_clean_file(tmp_path, data))
    assert fast == python
    assert fast[0][:3] == (6, 5, 1) and fast[0][4][0][1:3] == (4, "line") and fast[0][4][0][4] == "2 bad"
    assert python_rows == 1  # the doubled-space line DuckDB rejected


@pytest.mark.parametrize("case", [VPC, VPC_GZ], ids=["text", "gzip"])
def test_a_line_not_utf8_is_reported_as_python_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        case: Case) -> None:
    # DuckDB's text of such a line has '?' for the bytes, Python's U+FFFD: the samples' texts and messages
    # are now Python's (test_fuzz_lines compares only their file, line and field).
    paths, _goods = _files(case, 1, tmp_path, _not_utf8, mutated=10)
    fast, python, _rows = run(tmp_path, monkeypatch, case, paths, fast=False)
    assert fast == python
    assert any("\ufffd" in text for *_, text in fast[0][4])


def test_a_line_not_utf8_in_a_used_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"\n".join([HEADER, LINE.replace(b"ACCEPT", b"ACC\xffEPT"), LINE.replace(b"eni-", b"en\xe2\x80")]) + b"\n"
    fast, python, _rows = run(tmp_path, monkeypatch, VPC, _with_clean_file(tmp_path, data))
    assert fast == python
    assert fast[0][:3] == (5, 4, 1)  # a byte that is not UTF-8 in an unused field: still a record
    assert fast[0][4][0][2:] == ("action", "unknown action 'ACC\ufffdEPT' (expected ACCEPT or REJECT)",
                                 VPC_LINE.replace("ACCEPT", "ACC\ufffdEPT"))


def test_line_breaks_kinds(tmp_path: Path) -> None:
    from microseg.sources.flows import SourceFile, aws_vpc

    def kind(data: bytes, gz: bool = False, chunk: int | None = None) -> str:
        path = _write(tmp_path / "k.log", data, gz)
        if chunk is not None:
            with pytest.MonkeyPatch.context() as m:
                m.setattr(aws_vpc, "_CHUNK", chunk)
                return aws_vpc._line_breaks(SourceFile(path, gz))
        return aws_vpc._line_breaks(SourceFile(path, gz))

    assert kind(b"") == kind(b"a") == kind(b"a\nb\n") == kind(b"a\nb", gz=True) == "lf"
    assert kind(b"a\r\nb\r\n") == kind(b"a\r\nb") == kind(b"a\r\nb\r\n", gz=True) == "crlf"
    for mixed in (b"a\r\nb\n", b"a\nb\r\n", b"a\rb\n", b"a\r", b"a\r\r\n", b"a\n\r\n", b"a\r\nb\rc\r\n"):
        assert kind(mixed) == kind(mixed, gz=True) == "mixed", mixed
    rng = random.Random(7)
    # Chunk boundaries anywhere, a CR LF cut between two chunks too
    for _ in range(200):
        data = b"".join(rng.choice([b"ab", b"\r\n", b"\n", b"\r", b" "]) for _ in range(rng.randrange(1, 12)))
        if b"\r" not in data:
            want = "lf"
        elif data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
            want = "crlf"
        else:
            want = "mixed"
        assert kind(data, chunk=rng.randrange(1, 5)) == want, data


def test_line_breaks_reads_gzip_as_gzip_open_does(tmp_path: Path) -> None:
    # _line_breaks decompresses with zlib itself: every member of a multi-member file (zero padding between
    # them skipped), and a truncated or corrupt file is an error, as with gzip.open.
    from microseg.errors import InputError
    from microseg.sources.flows import SourceFile, aws_vpc

    rng = random.Random(3)
    alphabet = bytes(b"ab \r\n"[i % 5] for i in range(256))  # random bytes -> these five

    def noise(n: int) -> bytes:
        return rng.randbytes(n).translate(alphabet)

    path = tmp_path / "m.log.gz"
    for _ in range(40):
        parts = [noise(rng.randrange(0, 300_000)) for _ in range(rng.randrange(1, 4))]
        path.write_bytes(b"".join(gzip.compress(x, compresslevel=1) + b"\0" * rng.randrange(3) for x in parts))
        assert b"".join(aws_vpc._raw_chunks(SourceFile(path, True))) == gzip.open(path).read() == b"".join(parts)
    packed = gzip.compress(noise(100_000).replace(b"\r", b"a"))  # no CR: read to the end
    for broken in (packed[: len(packed) // 2], packed + b"garbage"):
        path.write_bytes(broken)
        with pytest.raises(InputError, match="cannot read"):
            aws_vpc._line_breaks(SourceFile(path, True))


def test_gzip_files_are_decompressed_for_the_check_only_after_duckdb_refused_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common gzip log pays no Python decompression: it is checked only when DuckDB's scan of its batch
    failed, and then the batch is read again (the store's careful retry) with every file checked."""
    from microseg.engine.store import FlowStore
    from microseg.sources.flows import aws_vpc

    checked: list[str] = []
    real = aws_vpc._line_breaks

    def spy(src: aws_vpc.SourceFile) -> str:
        checked.append(src.path.name)
        return real(src)

    monkeypatch.setattr(aws_vpc, "_line_breaks", spy)
    clean, mixed = _with_clean_file(tmp_path, HEADER + b"\n" + LINE + b"\r\n" + LINE + b"\n", gz=True)
    with FlowStore(tmp_path / "one.duckdb") as store:
        assert store.ingest([clean], fmt="aws-vpc").records == 3
    assert checked == []
    with FlowStore(tmp_path / "two.duckdb") as store:
        report = store.ingest([clean, mixed], fmt="aws-vpc")
    assert (report.records, report.bad) == (5, 0)
    assert sorted(checked) == ["a-clean.log.gz", "b-cr.log.gz"]  # the second, careful, reading only
