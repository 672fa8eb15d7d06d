"""Flow log readers: one module per format, a registry, and auto-detection.

A reader turns log files into a *staging relation* in DuckDB: one row per log record with the
columns of :data:`STAGE_COLUMNS`, still close to the log (raw action and log-status strings,
times as integers in the reader's unit). The flow store aggregates that relation, validates the
aggregates and keeps them (``engine/store.py``); doing the normalisation after aggregation is what
lets a 10 M-line file be ingested in little more than the time DuckDB needs to scan it.

Adding a format (Zeek, Calico, Envoy, GCP, Azure, nfdump) means one module here that provides
:class:`FlowFormat` and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import functools
import gzip
import io
import ipaddress
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from microseg.errors import InputError
from microseg.ir.intervals import address_text
from microseg.ir.model import Frozen

# The staging contract: name -> DuckDB type, in this order.
STAGE_COLUMNS: dict[str, str] = {
    "t_start": "UBIGINT",  # since the epoch, in StagedRelation.time_unit per second (1 or 1_000_000)
    "t_end": "UBIGINT",
    "src_ip": "VARCHAR",
    "dst_ip": "VARCHAR",
    "src_port": "INTEGER",
    "dst_port": "INTEGER",
    "proto": "INTEGER",  # IANA protocol number
    "bytes": "UBIGINT",
    "packets": "UBIGINT",
    "action": "VARCHAR",  # raw; checked against Staged.actions after aggregation
    "tcp_flags": "INTEGER",
    "is_reply": "BOOLEAN",  # from the log, or derived from TCP flags; NULL = unknown
    "direction": "VARCHAR",  # ingress / egress as the log states it; NULL = unknown
    "src_workload": "VARCHAR",  # identity hint given by the log itself (namespace/name)
    "dst_workload": "VARCHAR",
    "log_status": "VARCHAR",  # "OK" for a record; a skip status (NODATA, ...) otherwise
    "file_index": "INTEGER",  # index into Staged.files of the relation's file list
}

# VPC Flow Logs tcp-flags / Hubble TCPFlags bits (RFC 793 order, as AWS documents them).
TCP_SYN = 2
TCP_RST = 4
TCP_ACK = 16

# The store's checks after aggregation (readers that parse in Python apply them too). An address is
# what :func:`canonical_ip` accepts, checked once per distinct address.
MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


class BadLine(Frozen):
    """A line that could not be turned into a record, with where and why."""

    file: str
    line: int
    field: str
    message: str
    text: str


@dataclass(frozen=True)
class SourceFile:
    path: Path
    gzip: bool


@dataclass
class StagedRelation:
    """One SQL relation producing :data:`STAGE_COLUMNS`; ``files[i]`` is ``file_index`` i.

    ``after_scan`` runs once the store has scanned the relation (e.g. to re-read the lines DuckDB
    rejected), with what the store aggregated from it (:class:`Scanned`); the relations it returns are
    scanned too.
    """

    sql: str
    files: list[SourceFile]
    time_unit: int
    after_scan: StagedRelationHook | None = None
    # Staging columns that are NULL in every row (fields the log format lacks): the store leaves
    # them out of the aggregation, which is measurably faster on large files.
    null_columns: frozenset[str] = frozenset()
    # True when the reader trusted DuckDB to refuse, by failing the scan, input that a careful staging
    # (ReaderOptions.careful) would have given to its Python reader: on such a failure the store reads the
    # whole batch again, once, with ``careful`` set (a check that is dear on the common path, such as
    # decompressing a gzip file in Python before DuckDB does, is then paid only where it is needed).
    retry_careful: bool = False


class Scanned(Protocol):
    """What the store has aggregated so far of a batch's files, as an ``after_scan`` hook may see and
    change it: nothing of it is counted before the hook returns."""

    def aggregates(self, file_indexes: Sequence[int]) -> str:
        """SQL relation: (file_index, status, src_ip, dst_ip) of each aggregate of the files
        ``file_indexes`` (indexes of the relation's file list); status NULL for records, else the skip
        status (a value of Staged.skip_statuses)."""
        ...

    def discard(self, file_indexes: Sequence[int], status: str | None = None) -> None:
        """Drops the aggregates of the files ``file_indexes`` (only those of skip status ``status`` when
        one is given), e.g. before those files are read again another way."""
        ...


StagedRelationHook = Callable[[duckdb.DuckDBPyConnection, Scanned], list[StagedRelation]]


@dataclass
class Staged:
    """What a reader hands to the flow store for a batch of files of its format."""

    relations: list[StagedRelation]
    # Values of the raw ``action`` column the format may carry, with their normalised names.
    actions: dict[str, str]
    # Statuses meaning "no record, counted as skipped" (VPC NODATA/SKIPDATA); "OK" or NULL is a record.
    skip_statuses: frozenset[str]
    # Lines the reader handled itself (bad or skipped before staging), per file path.
    bad: list[BadLine] = field(default_factory=list)
    bad_counts: Counter[Path] = field(default_factory=Counter)
    skipped: Counter[tuple[Path, str]] = field(default_factory=Counter)
    # Finds the lines behind records that failed validation after aggregation (rare): re-reads
    # the file in Python and returns those lines.
    locate_bad: Callable[[SourceFile], list[BadLine]] | None = None
    cleanup: list[Path] = field(default_factory=list)

    def add_bad(self, path: Path, line: int, field: str, message: str, text: str, max_samples: int) -> None:
        """Count one bad line of ``path``; the first ``max_samples`` of each file are kept as samples."""
        self.bad_counts[path] += 1
        if self.bad_counts[path] <= max_samples:
            self.bad.append(BadLine(file=str(path), line=line, field=field, message=message, text=text[:500]))


@dataclass
class IngestProgress:
    """Counters of a running ingest, handed to a progress callback (the store and the readers stay UI-free).

    ``bytes_*`` are on-disk sizes (compressed for .gz) of the files this ingest reads; files the store
    already holds count as done at once. ``lines`` are the log lines read so far, exact once ``final``."""

    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    lines: int = 0
    final: bool = False


ProgressCallback = Callable[[IngestProgress], None]
# A reader parsing in Python reports how far it got in a file: (path, bytes read, lines read).
ReadCallback = Callable[[Path, int, int], None]


@dataclass(frozen=True)
class ReaderOptions:
    # AWS VPC: the ``${field} ${field}`` format string of headerless files.
    log_format: str | None = None
    # Where readers may write temporary files (next to the store, not /tmp: it can be large).
    tmp_dir: Path | None = None
    max_samples: int = 20
    # The IANA zone of timestamps written without an offset (nfdump's local times): the logs do not
    # say which zone the exporter's clock was in, so the user states it; UTC unless told otherwise.
    timezone: str = "UTC"
    # Progress of readers that parse in Python (called every few MB, not per line); None = nobody listens.
    on_read: ReadCallback | None = None
    # Set by the store when a scan of this ingest failed on a relation marked ``retry_careful``: readers
    # then check every file for what their DuckDB path cannot read, whatever it costs.
    careful: bool = False

    def __post_init__(self) -> None:
        zone_info(self.timezone)

    def report_read(self, path: Path, bytes_read: int, lines_read: int) -> None:
        if self.on_read is not None:
            self.on_read(path, bytes_read, lines_read)

    @property
    def zone(self) -> ZoneInfo:
        return zone_info(self.timezone)


def zone_info(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Europe/Berlin``); :class:`InputError` when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # ValueError: a path-like or non-TZif key
        raise InputError(f"unknown time zone {name!r}: use an IANA zone name such as UTC or Europe/Berlin",
                         field="--flow-timezone") from exc


class FlowFormat(Protocol):
    """What a reader module provides (modules implement this protocol structurally)."""

    NAME: str

    def sniff(self, head_lines: list[str]) -> bool: ...

    def stage(self, con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile],
              options: ReaderOptions) -> Staged: ...


class StageRow(NamedTuple):
    """One staging row built in Python (Hubble records, recovered VPC lines); STAGE_COLUMNS order."""

    t_start: int | None
    t_end: int | None
    src_ip: str | None
    dst_ip: str | None
    src_port: int | None
    dst_port: int | None
    proto: int | None
    bytes: int | None
    packets: int | None
    action: str | None
    tcp_flags: int | None
    is_reply: bool | None
    direction: str | None
    src_workload: str | None
    dst_workload: str | None
    log_status: str | None
    file_index: int


class StageWriter:
    """Bulk-loads Python-built rows: a tab-separated file that DuckDB's CSV reader scans in one go
    (row-by-row INSERTs would be orders of magnitude slower).

    ``extra`` names columns a reader adds after :data:`STAGE_COLUMNS` for its own relation SQL (which
    must then select the staging columns from :meth:`relation`'s output)."""

    def __init__(self, tmp_dir: Path | None, extra: dict[str, str] | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="microseg-stage-", suffix=".tsv", dir=tmp_dir)
        self.path = Path(name)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self.rows = 0
        self.extra = dict(extra or {})
        self._width = len(STAGE_COLUMNS) + len(self.extra)

    def write(self, row: StageRow, *extra: object) -> None:
        values = (*row, *extra) if extra else row
        line = "\t".join(["" if v is None else "true" if v is True else "false" if v is False else str(v)
                          for v in values])  # None is read back as NULL
        # Callers pass only validated values; an empty or multi-line value would be misread. Checked
        # once per line rather than per value: this is the hot loop of every Python-parsed format.
        if "" in values or len(values) != self._width or line.count("\t") != self._width - 1 \
                or "\n" in line or "\r" in line:
            raise ValueError(f"row {values!r} cannot be staged")
        self._fh.write(line + "\n")
        self.rows += 1

    def close(self) -> None:
        self._fh.close()

    def relation(self, files: list[SourceFile], time_unit: int) -> StagedRelation:
        typed = {**STAGE_COLUMNS, **self.extra}
        columns = "{" + ", ".join(f"{sql_str(k)}: {sql_str(v)}" for k, v in typed.items()) + "}"
        sql = (f"SELECT * FROM read_csv({sql_str(str(self.path))}, delim='\\t', header=false, quote='', "
               f"escape='', nullstr='', auto_detect=false, columns={columns})")
        return StagedRelation(sql=sql, files=files, time_unit=time_unit)


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_text(src: SourceFile) -> IO[str]:
    """The file as text, decompressed when gzip; bad UTF-8 is replaced, never fatal here."""
    if src.gzip:
        return io.TextIOWrapper(gzip.open(src.path, "rb"), encoding="utf-8", errors="replace", newline="")
    return io.TextIOWrapper(src.path.open("rb"), encoding="utf-8", errors="replace", newline="")


def iter_lines(src: SourceFile) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line ending) for every physical line."""
    with open_text(src) as fh:
        for no, line in enumerate(fh, 1):
            yield no, line.rstrip("\r\n")


def missing_lines(srcs: Iterable[SourceFile], texts: Iterable[str]) -> set[str]:
    """The texts of ``texts`` that are no line of any of ``srcs`` as Python reads them (iter_lines). A
    fast path hands lines to Python by their text, and DuckDB splits some line endings (CR CR LF, CR LF
    CR) unlike Python: a text Python cannot find means a record would be lost, uncounted."""
    missing = set(texts)
    for src in srcs:
        if not missing:
            break
        for _no, text in iter_lines(src):
            missing.discard(text)
            if not missing:
                break
    return missing


def head_lines(path: Path, n: int = 5, max_bytes: int = 1 << 16) -> list[str]:
    """The first ``n`` non-empty lines (decompressed), each cut at ``max_bytes`` characters."""
    src = SourceFile(path, is_gzip(path))
    out: list[str] = []
    try:
        with open_text(src) as fh:
            while len(out) < n:
                line = fh.readline(max_bytes)
                if not line:
                    break
                if line.strip():
                    out.append(line.rstrip("\r\n"))
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip
        raise InputError(f"cannot read: {exc}", file=str(path)) from exc
    return out


# The zone of a scoped IPv6 address ("fe80::1%eth0", RFC 4007): an interface name or index. ipaddress
# takes any text without "%" or "/" there (tabs, spaces, control characters), which no interface is
# called and which no stage or report could carry: one rule for every reader and the store.
ZONE_ID = r"[0-9A-Za-z_.-]+"
_ZONE_ID = re.compile(ZONE_ID)


@functools.lru_cache(maxsize=1 << 16)  # a log names the same few thousand addresses millions of times
def canonical_ip(text: str) -> str | None:
    """``text`` as ``ipaddress`` writes it (RFC 5952 for IPv6), IPv4-mapped IPv6 as ``::ffff:192.0.2.1`` on
    every Python version (:func:`~microseg.ir.intervals.address_text`); None when it is not an address (or
    names a zone that is not :data:`ZONE_ID`). The one address rule of every reader and of the store."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    zone = getattr(ip, "scope_id", None)
    if zone is not None and not _ZONE_ID.fullmatch(zone):
        return None
    return address_text(ip)


def sql_str(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_list(paths: Sequence[SourceFile]) -> str:
    return "[" + ", ".join(sql_str(str(p.path)) for p in paths) + "]"


# The registry. Imported at the end because the reader modules import the contract above.
from microseg.sources.flows import aws_vpc, azure, calico, envoy, gcp, generic_csv, hubble, nfdump, zeek  # noqa: E402

FORMATS: dict[str, FlowFormat] = {
    calico.NAME: calico,
    envoy.NAME: envoy,
    aws_vpc.NAME: aws_vpc,
    hubble.NAME: hubble,
    gcp.NAME: gcp,
    azure.NAME: azure,
    zeek.NAME: zeek,
    nfdump.NAME: nfdump,
    generic_csv.NAME: generic_csv,  # last: dedicated readers win on their own files
}


def get_format(name: str) -> FlowFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise InputError(f"unknown flow log format {name!r}; known formats: {', '.join(sorted(FORMATS))}",
                         field="format") from None


def detect(path: Path, fmt: str | None = None, head: list[str] | None = None) -> str:
    """The format name of ``path``: ``fmt`` when given (checked), else the first reader that sniffs it.

    ``head`` is the file's :func:`head_lines` when the caller has read them already (one open fewer
    per file when thousands of small objects are ingested)."""
    if fmt is not None:
        return get_format(fmt).NAME
    if head is None:
        head = head_lines(path)
    for name, reader in FORMATS.items():
        if head and reader.sniff(head):
            return name
    what = "is empty" if not head else "is not in a known flow log format"
    raise InputError(f"{what}; known formats: {', '.join(sorted(FORMATS))} (pass the format explicitly "
                     f"if the file is one of them)", file=str(path), line=1 if head else None)


__all__ = [
    "FORMATS", "STAGE_COLUMNS", "BadLine", "FlowFormat", "IngestProgress", "ProgressCallback", "ReadCallback",
    "ReaderOptions", "SourceFile", "StageRow", "canonical_ip",
    "StageWriter", "Staged", "StagedRelation", "StagedRelationHook", "detect", "get_format", "head_lines",
    "is_gzip", "iter_lines", "open_text", "zone_info",
]
