"""AWS VPC Flow Logs (text delivery to S3, any version, default or custom format).

Format facts (AWS VPC User Guide, "Flow log records" and "Flow log record examples"):

- Fields are separated by single spaces; ``-`` marks a field that does not apply or is unknown.
- The default format is the v2 field list (``DEFAULT_FIELDS``); a custom format lists any fields in
  any order. S3 text delivery writes the field names as the first line of every file; other
  deliveries (CloudWatch export, Firehose) have no header, so the format string
  (``${version} ${srcaddr} ...``) must be given, unless the lines have the default format's shape.
- ``log-status`` NODATA / SKIPDATA records carry no traffic: they are counted as skipped.
- ``pkt-srcaddr`` / ``pkt-dstaddr`` are the packet's own addresses. Behind a NAT gateway or a transit
  gateway ``srcaddr`` / ``dstaddr`` are the gateway's ENI, so the packet addresses win when present.
- ``tcp-flags`` is the OR of the flags seen during the aggregation window; AWS reports only FIN (1),
  SYN (2), RST (4) and SYN-ACK (18), so ACK appears only as part of SYN-ACK. SYN without ACK marks
  the client's side of a connection, SYN-ACK the server's (the reply).
- ``start`` / ``end`` are Unix epoch seconds.
- Parquet delivery to S3 (AWS VPC User Guide, "Flow log files": log file format *Parquet*; the
  "Available fields" table gives each field's Parquet data type: ``version``, ``srcport``,
  ``dstport``, ``protocol``, ``tcp-flags`` INT_32; ``packets``, ``bytes``, ``start``, ``end`` INT_64;
  every other field STRING). A Parquet file is recognised by its magic bytes (``PAR1``, Apache
  Parquet file format) and read by DuckDB's Parquet reader; the compression AWS applies is inside the
  file (Parquet's own codec). Columns are found by name, spelt with hyphens as in the text format or
  with underscores as Athena/Glue tables name them (``log_status``); a missing field is NULL (Parquet's
  "not applicable"), a ``-`` string is read as NULL too. The same range and semantic checks apply as
  to text; a bad row is reported with its 1-based row number as the line.

Parsing is DuckDB's CSV reader, every column read as text; an integer field is plain ASCII digits
within its unsigned type (leading zeros allowed), as ``_Layout.typed`` reads it (DuckDB's typed
columns would also read '+5', '1.5', '1e3', '0x10', '1_000' and blanks around digits), and a line with
one that is not, or with an empty field (a doubled space where a field is missing), is a bad line.
Lines DuckDB rejects are re-read in Python: a line that only had a doubled space (it happens in AWS's
own examples) is a valid record; anything else is a bad line, reported with file:line and field.
Only a space separates fields: a tab or another blank is part of a field, on both paths.

Line breaks are read as Python reads them (``iter_lines``: LF, CR LF and a lone CR each end a line).
DuckDB reads a file whose every break is LF, or every break CR LF, alike (it detects the break per
file); any other carriage return (one CR LF among LF lines, a lone CR) fails DuckDB's whole scan
("the CSV Parser state machine reached an invalid state"; ``strict_mode=false`` would instead read
such a file unlike Python and take a line with a field too many). One pass over each text file's bytes
(``_line_breaks``: a search for CR, about 15 ms per 100 MB) finds those files before the scan, and the
Python reader reads them whole (``_read_python``). A gzip file is not decompressed for that check
(about 0.3 s of CPU per 100 MB decompressed, a quarter more on the ingest of every gzip log AWS
delivers): DuckDB's scan fails on such a file instead, and the store reads the batch again with
``ReaderOptions.careful``, under which gzip files are checked too (``StagedRelation.retry_careful``).
A line DuckDB rejects as not UTF-8 is reported as Python reads it (U+FFFD
for the bad bytes, where DuckDB writes '?').
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    MAX_EPOCH_SECONDS,
    TCP_ACK,
    TCP_SYN,
    BadLine,
    ReaderOptions,
    Scanned,
    SourceFile,
    Staged,
    StagedRelation,
    StagedRelationHook,
    StageRow,
    StageWriter,
    canonical_ip,
    head_lines,
    iter_lines,
    sql_list,
    sql_str,
)
from microseg.sources.flows.sqlpath import IPV4_PATTERN

NAME = "aws-vpc"

DEFAULT_FIELDS = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
                  "start end action log-status").split()

# Fields documented by AWS up to v8; unknown names are still accepted (AWS adds fields over time)
# and read as text, but sniffing asks for a majority of known names.
KNOWN_FIELDS = frozenset(DEFAULT_FIELDS + """vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr
    region az-id sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction
    traffic-path ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn ecs-container-instance-id
    ecs-container-id ecs-second-container-id ecs-service-name ecs-task-definition-arn ecs-task-arn
    ecs-task-id reject-reason resource-id encryption-status""".split())

# Typed columns; everything else is VARCHAR. Unsigned types make DuckDB reject negative values.
_TYPES = {"srcport": "USMALLINT", "dstport": "USMALLINT", "protocol": "UTINYINT", "packets": "UBIGINT",
          "bytes": "UBIGINT", "start": "UBIGINT", "end": "UBIGINT", "tcp-flags": "USMALLINT"}
_MAX = {"USMALLINT": 65535, "UTINYINT": 255, "UBIGINT": (1 << 64) - 1}
# The columns the staging query reads: each must be cast there, or DuckDB would not check it.
_USED = ("srcaddr", "dstaddr", "pkt-srcaddr", "pkt-dstaddr", "srcport", "dstport", "protocol", "packets",
         "bytes", "start", "end", "action", "tcp-flags", "log-status", "flow-direction")

ACTIONS = {"ACCEPT": "accept", "REJECT": "reject"}
OK_STATUS = "OK"
SKIP_STATUSES = frozenset({"NODATA", "SKIPDATA"})
STATUSES = SKIP_STATUSES | {OK_STATUS}

_FIELD_RE = re.compile(r"[a-z][a-z0-9-]*")
_UINT_RE = re.compile(r"[0-9]+")
_FORMAT_RE = re.compile(r"\$\{([a-z0-9-]+)\}")


def parse_format(log_format: str) -> list[str]:
    """``${version} ${srcaddr} ...`` -> field names; plain space-separated names are accepted too."""
    names = _FORMAT_RE.findall(log_format)
    if not names:
        names = log_format.split()
    if not names or not all(_FIELD_RE.fullmatch(n) for n in names):
        raise InputError(f"not a VPC flow log format string: {log_format!r}", field="log_format")
    return names


def _header_fields(line: str) -> list[str] | None:
    toks = line.split()
    if not toks or not all(_FIELD_RE.fullmatch(t) for t in toks):
        return None
    has_src = "srcaddr" in toks or "pkt-srcaddr" in toks
    has_dst = "dstaddr" in toks or "pkt-dstaddr" in toks
    if not (has_src and has_dst) or sum(t in KNOWN_FIELDS for t in toks) * 2 < len(toks):
        return None
    return toks


def _default_shape(line: str) -> bool:
    toks = line.split()
    return len(toks) == len(DEFAULT_FIELDS) and toks[0].isdigit() and toks[-1] in STATUSES


PARQUET_MAGIC = b"PAR1"  # the first (and last) four bytes of every Apache Parquet file


def is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == PARQUET_MAGIC


def sniff(head: list[str]) -> bool:
    # Parquet: only this reader accepts Parquet input; stage() checks the columns and fails clearly.
    if head and head[0].startswith(PARQUET_MAGIC.decode()):
        return True
    return bool(head) and (_header_fields(head[0]) is not None or all(_default_shape(x) for x in head))


def _layout(src: SourceFile, options: ReaderOptions) -> tuple[tuple[str, ...], bool]:
    """(field names, whether the first line is a header) of one file."""
    head = head_lines(src.path, n=1)
    if src.gzip and head and head[0].startswith(PARQUET_MAGIC.decode()):
        raise InputError("a Parquet file inside gzip: AWS compresses Parquet flow logs inside the file, "
                         "so decompress it first", file=str(src.path))
    if head and (fields := _header_fields(head[0])) is not None:
        result = tuple(fields)
        has_header = True
    elif options.log_format:
        result = tuple(parse_format(options.log_format))
        has_header = False
    elif not head or _default_shape(head[0]):
        result = tuple(DEFAULT_FIELDS)
        has_header = False
    else:
        raise InputError("no header line and not the default format: give the flow log's format string",
                         file=str(src.path), line=1, field="log_format")
    if len(set(result)) != len(result):
        raise InputError("a field name appears twice in the format", file=str(src.path), line=1)
    return result, has_header


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_sql(fields: Sequence[str], status: Callable[[str], str] | None = None) -> str:
    """The staging SELECT list over a relation whose columns are the typed ``fields``, plus ``file_index``.

    ``status`` wraps the log-status expression (Parquet marks the rows whose types failed)."""
    present = set(fields)

    def col(name: str, cast: str | None = None) -> str:
        if name not in present:  # a custom format without the field: a typed NULL
            return f"NULL::{cast or _TYPES.get(name, 'VARCHAR')}"
        return f"{_q(name)}::{cast}" if cast else _q(name)

    def addr(side: str) -> str:
        pkt, plain = f"pkt-{side}addr", f"{side}addr"
        if pkt in present and plain in present:
            return f"coalesce({_q(pkt)}, {_q(plain)})"
        return col(pkt if pkt in present else plain)

    src, dst = addr("src"), addr("dst")
    flags = col("tcp-flags", "INTEGER")
    return f"""
SELECT {col('start')} AS t_start, {col('end')} AS t_end, {src} AS src_ip, {dst} AS dst_ip,
  {col('srcport', 'INTEGER')} AS src_port, {col('dstport', 'INTEGER')} AS dst_port,
  {col('protocol', 'INTEGER')} AS proto, {col('bytes', 'UBIGINT')} AS bytes,
  {col('packets', 'UBIGINT')} AS packets, {col('action')} AS action, {flags} AS tcp_flags,
  CASE WHEN {col('protocol', 'INTEGER')} = 6 THEN CASE
    WHEN {flags} & {TCP_SYN | TCP_ACK} = {TCP_SYN | TCP_ACK} THEN true
    WHEN {flags} & {TCP_SYN} = {TCP_SYN} THEN false END END AS is_reply,
  lower({col('flow-direction')}) AS direction, NULL::VARCHAR AS src_workload, NULL::VARCHAR AS dst_workload,
  {status(col('log-status')) if status else col('log-status')} AS log_status, file_index::INTEGER AS file_index"""


def _plain_uint_sql(x: str, sql_type: str) -> str:
    """SQL: the text ``x`` as ``sql_type`` when _Layout.typed reads it (ASCII digits, leading zeros too, within
    the type), else NULL. DuckDB's typed CSV columns and casts also read '+5', '1.5' (as 2), '1e3', '0x10',
    '1_000' and blanks around the digits; the value written back is the text for the plain form, and the
    pattern is tried only on the rare rest."""
    n = f"TRY_CAST({x} AS {sql_type})"
    return f"CASE WHEN CAST({n} AS VARCHAR) = {x} THEN {n} WHEN regexp_full_match({x}, '[0-9]+') THEN {n} END"


def _staging_sql(fields: Sequence[str], files: Sequence[SourceFile], has_header: bool,
                 rejects: tuple[str, str]) -> str:
    # Every column is read as text (a typed column would accept what _Layout.typed refuses, see
    # _plain_uint_sql); the integer fields are converted below, and a line with one that does not convert
    # gets the log-status _TYPE_BAD, which the store counts as bad and locate_bad names.
    columns = "{" + ", ".join(f"{sql_str(f)}: 'VARCHAR'" for f in fields) + "}"
    compression = "gzip" if files[0].gzip else "none"
    ints = [(k, f) for k, f in enumerate(fields) if f in _TYPES]
    converted = "".join(f", {_plain_uint_sql(_q(f), _TYPES[f])} AS _n{k}" for k, f in ints)
    typed = ", ".join(f"_n{k} AS {_q(f)}" if f in _TYPES else _q(f) for k, f in enumerate(fields))
    # An empty field is a doubled space (the Python reader collapses it and finds a field missing)
    type_bad = " OR ".join([f"({_q(f)} IS NOT NULL AND _n{k} IS NULL)" for k, f in ints]
                           + [f"{_q(f)} = ''" for f in fields if f not in _TYPES])
    select = _select_sql(fields, lambda st: f"CASE WHEN _type_bad THEN {sql_str(_TYPE_BAD)} ELSE {st} END")
    return f"""{select}
FROM (SELECT {typed}, {type_bad} AS _type_bad, file_index FROM (SELECT *, file_index{converted}
FROM read_csv({sql_list(files)}, delim=' ', header={'true' if has_header else 'false'}, nullstr='-',
  quote='', escape='', auto_detect=false, compression='{compression}', columns={columns},
  store_rejects=true, rejects_table={sql_str(rejects[0])}, rejects_scan={sql_str(rejects[1])})))
"""


def _null_columns(fields: Sequence[str]) -> frozenset[str]:
    """Staging columns the field list cannot fill."""
    present = set(fields)
    sources = {"t_start": ("start",), "t_end": ("end",), "proto": ("protocol",), "bytes": ("bytes",),
               "packets": ("packets",), "tcp_flags": ("tcp-flags",), "is_reply": ("tcp-flags",),
               "direction": ("flow-direction",), "src_workload": (), "dst_workload": ()}
    return frozenset(col for col, need in sources.items() if not present.intersection(need))


class _Layout:
    """Per field list: Python parsing of single lines, mirroring the DuckDB typing and checks."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)
        self.index = {f: i for i, f in enumerate(fields)}

    def _get(self, values: list[str], name: str) -> str | None:
        i = self.index.get(name)
        if i is None or values[i] == "-":
            return None
        return values[i]

    def typed(self, values: list[str]) -> tuple[dict[str, int | str | None], str | None, str]:
        """Typed values of the used fields, or (…, field, message) for the first that fails."""
        out: dict[str, int | str | None] = {}
        for name in _USED:
            raw = self._get(values, name)
            kind = _TYPES.get(name)
            if raw is None or kind is None:
                out[name] = raw
                continue
            if not _UINT_RE.fullmatch(raw) or int(raw) > _MAX[kind]:
                return out, name, f"{raw!r} is not an unsigned integer of type {kind}"
            out[name] = int(raw)
        return out, None, ""

    @staticmethod
    def check(v: dict[str, int | str | None]) -> tuple[str | None, str]:
        """The semantic checks the store applies after aggregation; (field, message) of the first failure."""
        status = v.get("log-status") or OK_STATUS
        if status not in STATUSES:
            return "log-status", f"unknown log-status {status!r}"
        if status != OK_STATUS:
            return None, ""
        for side in ("src", "dst"):
            pkt, plain = v.get(f"pkt-{side}addr"), v.get(f"{side}addr")
            addr = pkt if pkt is not None else plain
            name = f"pkt-{side}addr" if pkt is not None else f"{side}addr"
            if addr is None:
                return f"{side}addr", "no address in an OK record"
            if canonical_ip(str(addr)) is None:  # the store's rule: what ipaddress accepts
                return name, f"{addr!r} is not an IP address"
        action = v.get("action")
        if action is not None and action not in ACTIONS:
            return "action", f"unknown action {action!r} (expected ACCEPT or REJECT)"
        for name in ("start", "end"):
            t = v.get(name)
            if isinstance(t, int) and t > MAX_EPOCH_SECONDS:
                return name, f"{t} is not an epoch time in seconds"
        return None, ""

    def stage_row(self, v: dict[str, int | str | None], file_index: int) -> StageRow:
        def num(name: str) -> int | None:
            x = v.get(name)
            return x if isinstance(x, int) else None

        def text(name: str) -> str | None:
            x = v.get(name)
            return x if isinstance(x, str) else None

        proto, flags = num("protocol"), num("tcp-flags")
        is_reply: bool | None = None
        if proto == 6 and flags is not None:
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                is_reply = True
            elif flags & TCP_SYN:
                is_reply = False
        direction = text("flow-direction")
        return StageRow(
            t_start=num("start"), t_end=num("end"),
            src_ip=text("pkt-srcaddr") or text("srcaddr"), dst_ip=text("pkt-dstaddr") or text("dstaddr"),
            src_port=num("srcport"), dst_port=num("dstport"), proto=proto, bytes=num("bytes"),
            packets=num("packets"), action=text("action"), tcp_flags=flags, is_reply=is_reply,
            direction=direction.lower() if direction else None, src_workload=None, dst_workload=None,
            log_status=text("log-status"), file_index=file_index)


def stage(con: duckdb.DuckDBPyConnection, files: Sequence[SourceFile], options: ReaderOptions) -> Staged:
    staged = Staged(relations=[], actions=dict(ACTIONS), skip_statuses=SKIP_STATUSES)
    parquet = [f for f in files if not f.gzip and is_parquet(f.path)]
    groups: dict[tuple[tuple[str, ...], bool, bool, str], list[SourceFile]] = {}
    for f in files:
        if f not in parquet:
            fields, has_header = _layout(f, options)
            # A gzip file is decompressed for the check only when told to (options.careful): DuckDB fails
            # its scan on what the check would find, and the store then reads the batch again carefully.
            breaks = _line_breaks(f) if not f.gzip or options.careful else _UNCHECKED
            groups.setdefault((fields, has_header, f.gzip, breaks), []).append(f)
    layouts: dict[Path, _Layout] = {}
    rejected: dict[Path, set[int]] = {}  # the lines DuckDB rejected (reported by _recover_rejects)
    python: set[Path] = set()  # the files _read_python read (and reported) whole
    for n, ((fields, has_header, _gz, breaks), members) in enumerate(groups.items()):
        layout = _Layout(fields)
        for m in members:
            layouts[m.path] = layout
        if breaks == _MIXED:  # DuckDB would fail the whole scan
            python.update(m.path for m in members)
            if (read := _read_python(layout, members, staged, options)) is not None:
                staged.relations.append(read)
            continue
        rejects = (f"_ms_rej_err_{n}", f"_ms_rej_scan_{n}")
        relation = StagedRelation(sql=_staging_sql(fields, members, has_header, rejects), files=members,
                                  time_unit=1, null_columns=_null_columns(fields), retry_careful=breaks == _UNCHECKED)
        relation.after_scan = _recover_rejects(layout, relation, rejects, staged, options, rejected)
        staged.relations.append(relation)
    parquet_schemas = {f.path: _parquet_schema(con, f) for f in parquet}
    by_schema: dict[tuple[tuple[str, str, str], ...], list[SourceFile]] = {}
    for f in parquet:
        by_schema.setdefault(parquet_schemas[f.path], []).append(f)
    for schema, members in by_schema.items():
        names = [field for field, _, _ in schema]
        select = _select_sql(names, lambda st: f"CASE WHEN _type_bad THEN {sql_str(_TYPE_BAD)} ELSE {st} END")
        staged.relations.append(StagedRelation(sql=f"{select}\nFROM ({_parquet_sql(schema, members)})",
                                               files=members, time_unit=1, null_columns=_null_columns(names)))

    def locate_bad(src: SourceFile) -> list[BadLine]:
        if src.path in parquet_schemas:
            return _locate_bad_parquet(con, src, parquet_schemas[src.path], options.max_samples)
        if src.path in python:
            return []  # _read_python reported every bad line and staged valid records only
        return _locate_bad(src, layouts[src.path], options.max_samples, rejected.get(src.path, set()))

    staged.locate_bad = locate_bad
    return staged


# -- Parquet -------------------------------------------------------------------------------------

# A log-status no record has: marks the rows whose integer fields failed their range check, so that
# the store counts them as bad; locate_bad names the field.
_TYPE_BAD = "(bad type)"
_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                            "UINTEGER", "UBIGINT", "UHUGEINT"})


def _parquet_schema(con: duckdb.DuckDBPyConnection, src: SourceFile) -> tuple[tuple[str, str, str], ...]:
    """(field name, Parquet column, DuckDB type) of every column, fields named as in the text format."""
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_str(str(src.path))})").fetchall()
    except duckdb.Error as exc:
        raise InputError(f"cannot read Parquet file: {exc}", file=str(src.path)) from exc
    out: list[tuple[str, str, str]] = []
    for column, kind, *_ in described:
        field = str(column).replace("_", "-")  # Athena/Glue tables spell log-status as log_status
        kind = str(kind)
        if field in _TYPES and kind not in _INTEGER_TYPES and kind != "VARCHAR":
            raise InputError(f"Parquet column {column!r} has type {kind}; AWS writes it as an integer",
                             file=str(src.path), field=field)
        if field in _USED and field not in _TYPES and kind != "VARCHAR":
            raise InputError(f"Parquet column {column!r} has type {kind}; AWS writes it as a string",
                             file=str(src.path), field=field)
        out.append((field, str(column), kind))
    fields = [f for f, _, _ in out]
    if len(set(fields)) != len(fields):
        raise InputError("a field appears twice (with a hyphen and with an underscore)", file=str(src.path))
    if _header_fields(" ".join(fields)) is None:
        raise InputError("a Parquet file without the columns of a VPC flow log (srcaddr, dstaddr, ...)",
                         file=str(src.path))
    return tuple(out)


def _parquet_raw(column: str, kind: str) -> str:
    return f"NULLIF({_q(column)}, '-')" if kind == "VARCHAR" else _q(column)


def _parquet_sql(schema: Sequence[tuple[str, str, str]], files: Sequence[SourceFile]) -> str:
    """The Parquet columns as typed fields (typed as the text reader types them), ``_type_bad``, ``file_index``."""
    parts: list[str] = []
    bad: list[str] = []
    for field, column, kind in schema:
        raw = _parquet_raw(column, kind)
        target = _TYPES.get(field)
        if target is not None:
            parts.append(f"TRY_CAST({raw} AS {target}) AS {_q(field)}")
            bad.append(f"({raw} IS NOT NULL AND TRY_CAST({raw} AS {target}) IS NULL)")
        else:
            parts.append(f"CAST({raw} AS VARCHAR) AS {_q(field)}")
    type_bad = " OR ".join(bad) or "false"
    return (f"SELECT {', '.join(parts)}, coalesce({type_bad}, false) AS _type_bad, file_index "
            f"FROM read_parquet({sql_list(files)})")


def _quoted(sql: str) -> str:
    """SQL for the value of ``sql`` in single quotes, as Python's repr() shows a string."""
    return f"'''' || {sql} || ''''"


def _locate_bad_parquet(con: duckdb.DuckDBPyConnection, src: SourceFile, schema: Sequence[tuple[str, str, str]],
                        max_samples: int) -> list[BadLine]:
    """The rows the store counted as bad, with the first failing field (in the order of _Layout.typed/check)."""
    present = {field: (column, kind) for field, column, kind in schema}
    scan = f"read_parquet({sql_str(str(src.path))}, file_row_number=true)"

    def text(name: str) -> str:
        return f"CAST({_parquet_raw(*present[name])} AS VARCHAR)" if name in present else "NULL::VARCHAR"

    checks: list[tuple[str, str, str]] = []  # (condition, field, message), first match wins
    for name in _USED:
        target = _TYPES.get(name)
        if target is None or name not in present:
            continue
        raw = _parquet_raw(*present[name])
        checks.append((f"{raw} IS NOT NULL AND TRY_CAST({raw} AS {target}) IS NULL", sql_str(name),
                       f"{_quoted(text(name))} || ' is not an unsigned integer of type {target}'"))
    status = f"coalesce({text('log-status')}, {sql_str(OK_STATUS)})"
    statuses = ", ".join(sql_str(x) for x in sorted(STATUSES))
    checks.append((f"{status} NOT IN ({statuses})", "'log-status'", f"'unknown log-status ' || {_quoted(status)}"))
    ok = f"{status} = {sql_str(OK_STATUS)}"
    # Addresses are judged as the store judges them: each distinct one once, by ipaddress (canonical_ip).
    addrs = {side: f"coalesce({text(f'pkt-{side}addr')}, {text(f'{side}addr')})" for side in ("src", "dst")}
    distinct = con.execute(f"""SELECT DISTINCT ip FROM (SELECT {addrs['src']} AS ip FROM {scan}
        UNION ALL SELECT {addrs['dst']} FROM {scan})
        WHERE ip IS NOT NULL AND NOT regexp_full_match(ip, {sql_str(IPV4_PATTERN)})""").fetchall()
    # A table, not a list literal: a hash join whatever the number of bad addresses.
    con.execute("CREATE OR REPLACE TEMP TABLE _ms_vpc_bad_ip (ip VARCHAR)")
    bad_ips = sorted(ip for (ip,) in distinct if canonical_ip(ip) is None)
    for i in range(0, len(bad_ips), 1000):
        con.execute("INSERT INTO _ms_vpc_bad_ip SELECT unnest(?::VARCHAR[])", [bad_ips[i:i + 1000]])
    for side in ("src", "dst"):
        pkt, plain = text(f"pkt-{side}addr"), text(f"{side}addr")
        checks.append((f"{ok} AND {pkt} IS NULL AND {plain} IS NULL", sql_str(f"{side}addr"),
                       "'no address in an OK record'"))
        addr = addrs[side]
        checks.append((f"{ok} AND {addr} IN (SELECT ip FROM _ms_vpc_bad_ip)",
                       f"CASE WHEN {pkt} IS NOT NULL THEN 'pkt-{side}addr' ELSE '{side}addr' END",
                       f"{_quoted(addr)} || ' is not an IP address'"))
    actions = ", ".join(sql_str(a) for a in sorted(ACTIONS))
    checks.append((f"{ok} AND {text('action')} NOT IN ({actions})", "'action'",
                   f"'unknown action ' || {_quoted(text('action'))} || ' (expected ACCEPT or REJECT)'"))
    for name in ("start", "end"):
        if name in present:
            checks.append((f"{ok} AND TRY_CAST({text(name)} AS UBIGINT) > {MAX_EPOCH_SECONDS}", sql_str(name),
                           f"{text(name)} || ' is not an epoch time in seconds'"))
    field_sql = "CASE " + " ".join(f"WHEN {c} THEN {f}" for c, f, _ in checks) + " END"
    message_sql = "CASE " + " ".join(f"WHEN {c} THEN {m}" for c, _, m in checks) + " END"
    line_sql = "concat_ws(' ', " + ", ".join(f"coalesce(CAST({_q(c)} AS VARCHAR), '-')" for _, c, _ in schema) + ")"
    rows = con.execute(f"""
        SELECT file_row_number + 1, field, message, line FROM (
          SELECT file_row_number, {field_sql} AS field, {message_sql} AS message, {line_sql} AS line
          FROM {scan})
        WHERE field IS NOT NULL ORDER BY 1 LIMIT {int(max_samples)}""").fetchall()
    con.execute("DROP TABLE _ms_vpc_bad_ip")
    return [BadLine(file=str(src.path), line=int(no), field=str(field), message=str(message), text=str(line)[:500])
            for no, field, message, line in rows]


def _values(text: str) -> list[str]:
    """The fields of a line as the Python reader splits it: at spaces, doubled spaces (as in AWS's own
    examples) collapsed. Only a space separates fields (a tab or another blank is part of a field)."""
    return [v for v in text.split(" ") if v]


def _judge(layout: _Layout, text: str) -> tuple[dict[str, int | str | None], str | None, str]:
    """The Python reader's verdict on one line: (typed values, None, "") of a record (or of a NODATA /
    SKIPDATA line), else (…, field, message) of the first failure."""
    values = _values(text)
    if len(values) != len(layout.fields):  # an empty field of DuckDB's: a doubled space
        return {}, "line", f"expected {len(layout.fields)} fields, found {len(values)}"
    typed, field, why = layout.typed(values)
    if field is None:
        field, why = layout.check(typed)
    return typed, field, why


# How a file's lines end (_line_breaks): DuckDB reads _LF and _CRLF files as Python does, _MIXED ones not at all.
_LF, _CRLF, _MIXED = "lf", "crlf", "mixed"
_UNCHECKED = "unchecked"  # a gzip file not decompressed for the check (see stage)
_CHUNK = 1 << 20


def _line_breaks(src: SourceFile) -> str:
    """_LF when ``src`` (decompressed) has no carriage return, _CRLF when every CR and every LF in it is
    part of a CR LF, else _MIXED. DuckDB's CSV reader detects a file's line break and reads the first two
    kinds; any other CR fails its whole scan (see the module docstring). One pass over the bytes."""
    state: str | None = None  # None: no line break seen yet
    carry = b""  # a CR that ended the previous chunk: its LF, if any, starts this one
    try:
        for data in _raw_chunks(src):
            if state == _LF:  # the common case: one memchr a chunk
                if b"\r" in data:
                    return _MIXED
                continue
            chunk = carry + data
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            cr = chunk.count(b"\r")
            if cr == 0:
                if b"\n" in chunk:
                    if state == _CRLF:
                        return _MIXED
                    state = _LF
                continue
            if state == _LF or not cr == chunk.count(b"\n") == chunk.count(b"\r\n"):
                return _MIXED
            state = _CRLF
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a truncated / corrupt gzip
        raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
    if carry:  # a CR at the end of the file, after CR LF lines
        return _MIXED
    return state or _LF


def _raw_chunks(src: SourceFile) -> Iterator[bytes]:
    """The bytes of ``src`` in chunks, decompressed when gzip (every member of a multi-member file, as
    gzip.open reads it; zlib directly, a third less CPU than gzip.open)."""
    with src.path.open("rb", buffering=0) as fh:
        if not src.gzip:
            while chunk := fh.read(_CHUNK):
                yield chunk
            return
        member = zlib.decompressobj(wbits=31)
        fed = False  # whether the current member has had input
        while data := fh.read(1 << 18):  # compressed: a chunk decompresses to a few MB at most in logs
            while data:
                if member.eof:  # the next member, after any zero padding (gzip.open skips it too)
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    member, fed = zlib.decompressobj(wbits=31), False
                fed = True
                yield member.decompress(data)
                data = member.unused_data if member.eof else b""
        if fed and not member.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _read_python(layout: _Layout, files: Sequence[SourceFile], staged: Staged, options: ReaderOptions
                 ) -> StagedRelation | None:
    """The Python reader of whole files (every line as iter_lines splits it; a header on line 1 and empty
    lines skipped): records are staged, bad lines reported. The reference the fast path is tested against
    reads every line this way (test_fuzz_lines)."""
    writer = StageWriter(options.tmp_dir)
    staged.cleanup.append(writer.path)
    try:
        for index, src in enumerate(files):
            try:
                lines = _line_texts(src)
                for no, text in lines:
                    typed, field, why = _judge(layout, text)
                    if field is None:
                        writer.write(layout.stage_row(typed, index))
                    else:
                        staged.add_bad(src.path, no, field, why, text, options.max_samples)
            except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a truncated / corrupt gzip
                raise InputError(f"cannot read: {exc}", file=str(src.path)) from exc
    finally:
        writer.close()
    return writer.relation(list(files), time_unit=1) if writer.rows else None


def _line_texts(src: SourceFile) -> Iterable[tuple[int, str]]:
    """(line number, text) of the lines of ``src`` that are records or bad lines: iter_lines without empty
    lines and without a header on line 1."""
    for no, text in iter_lines(src):
        if text and not (no == 1 and _header_fields(text) is not None):
            yield no, text


def _python_texts(src: SourceFile, wanted: set[int]) -> dict[int, str]:
    """The texts of lines ``wanted`` of ``src`` as iter_lines reads them (read up to the last one)."""
    out: dict[int, str] = {}
    last = max(wanted, default=0)
    for no, text in iter_lines(src):
        if no in wanted:
            out[no] = text
        if no >= last:
            break
    return out


def _recover_rejects(layout: _Layout, relation: StagedRelation, rejects: tuple[str, str], staged: Staged,
                     options: ReaderOptions, rejected: dict[Path, set[int]] | None = None) -> StagedRelationHook:
    def hook(con: duckdb.DuckDBPyConnection, _scanned: Scanned) -> list[StagedRelation]:
        # One row per rejected line: DuckDB may log several errors for one line.
        rows = con.execute(f"""
            SELECT s.file_path, e.line, any_value(e.csv_line), min_by(e.column_name, e.column_idx),
                   min_by(e.error_message, e.column_idx)
            FROM {rejects[0]} e JOIN {rejects[1]} s USING (scan_id, file_id)
            GROUP BY s.file_path, e.line ORDER BY s.file_path, e.line""").fetchall()
        con.execute(f"DROP TABLE IF EXISTS {rejects[0]}")
        con.execute(f"DROP TABLE IF EXISTS {rejects[1]}")
        if not rows:
            return []
        index = {str(f.path): i for i, f in enumerate(relation.files)}
        # DuckDB writes a byte that is not UTF-8 as '?' (it rejects the line): a rejected line with a '?' is
        # judged on Python's text of it (U+FFFD for such bytes), read from its file (only files with such a
        # line pay that read, up to the line).
        encoding: dict[str, set[int]] = {}
        for file_path, line, raw, *_ in rows:
            if raw and "?" in raw:
                encoding.setdefault(file_path, set()).add(int(line))
        python_text = {(file_path, no): text for file_path, wanted in encoding.items()
                       for no, text in _python_texts(relation.files[index[file_path]], wanted).items()}
        writer = StageWriter(options.tmp_dir)
        staged.cleanup.append(writer.path)
        for file_path, line, raw, column, message in rows:
            path = relation.files[index[file_path]].path
            if rejected is not None:
                rejected.setdefault(path, set()).add(int(line))
            text = python_text.get((file_path, int(line)))
            if text is None:
                # DuckDB's text of a line of a CR LF file starts with the LF of the line before; a line as
                # Python reads it has no CR or LF (_line_breaks: no other CR reaches DuckDB)
                text = (raw or "").replace("\r", "").replace("\n", "")
            typed, field, why = _judge(layout, text)
            if field is None:
                writer.write(layout.stage_row(typed, index[file_path]))
                continue
            staged.add_bad(path, int(line), field or str(column or "line"), why or str(message), text,
                           options.max_samples)
        writer.close()
        if writer.rows == 0:
            return []
        return [writer.relation(relation.files, time_unit=1)]

    return hook


def _locate_bad(src: SourceFile, layout: _Layout, max_samples: int, rejected: set[int] | frozenset[int] = frozenset()
                ) -> list[BadLine]:
    """Lines DuckDB parsed but the store's checks refused (an integer field _Layout.typed refuses, unknown
    action, bad address, ...); ``rejected``: the lines DuckDB rejected, which _recover_rejects reported."""
    out: list[BadLine] = []
    first = True
    for no, text in iter_lines(src):
        if first:
            first = False
            if _header_fields(text) is not None:
                continue
        if not text.strip():
            continue
        if no in rejected:
            continue  # DuckDB rejected it: _recover_rejects reported it
        _typed, field, why = _judge(layout, text)
        if field is not None:
            out.append(BadLine(file=str(src.path), line=no, field=field, message=why, text=text[:500]))
            if len(out) >= max_samples:
                break
    return out
