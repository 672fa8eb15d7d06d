"""Pieces the readers' DuckDB fast paths share (zeek, nfdump, generic_csv, calico, envoy).

Each of those readers parses what it can judge exactly in SQL and hands the rest to its Python parser;
what is the same in all of them lives here, so the rules cannot drift apart between readers:

* the address patterns of what ``ipaddress.ip_address`` accepts (:data:`IPV4_PATTERN`,
  :data:`IPV6_PATTERN`, :func:`address_sql`);
* turning a failed scan (a truncated gzip, an unreadable file) into an :class:`InputError` naming the
  files (:func:`scan_error`), and counting then dropping the rejects tables of ``read_csv``
  (:func:`count_rejects`);
* the "logged by both ends" rule of the Calico and Envoy readers in SQL (:func:`drop_both_ends`);
* dropping the fast path's temporary tables once the store has scanned them (:func:`drop_after_scan`);
* writing the IPv6 addresses SQL read as Python writes them (:func:`canonical_ipv6`);
* reading a text as an integer only in its plain form (:func:`exact_int_sql`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb

from microseg.errors import InputError
from microseg.sources.flows import (
    ZONE_ID,
    Scanned,
    SourceFile,
    Staged,
    StagedRelation,
    StagedRelationHook,
    canonical_ip,
    sql_str,
)

# A dotted quad without leading zeros, as ipaddress.IPv4Address accepts it.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
IPV4_PATTERN = rf"{_OCTET}(\.{_OCTET}){{3}}"


def _ipv6_pattern() -> str:
    """The IPv6 texts ``ipaddress.IPv6Address`` accepts (Python 3.11 ``_ip_int_from_string``): eight
    hextets of 1-4 hex digits, or fewer around one ``::`` that stands for at least one, the last two
    possibly written as an IPv4 address, and an optional ``%zone`` (RFC 4007) of the characters
    canonical_ip allows there (:data:`ZONE_ID`)."""
    h = "[0-9A-Fa-f]{1,4}"

    def run(k: int) -> str:
        return "" if k == 0 else f"{h}(:{h}){{{k - 1}}}"

    forms = [f"({h}:){{7}}{h}", f"({h}:){{6}}{IPV4_PATTERN}"]
    for left in range(8):
        for right in range(8 - left):
            forms.append(f"{run(left)}::{run(right)}")
            if left + right + 2 <= 7:
                forms.append(f"{run(left)}::{f'({h}:){{{right}}}' if right else ''}{IPV4_PATTERN}")
    return f"({'|'.join(forms)})(%{ZONE_ID})?"


IPV6_PATTERN = _ipv6_pattern()
# Either, in one pattern: the same verdict as address_sql (every IPv6 form holds ':', no IPv4 one does),
# one regexp call instead of a test and a call.
ADDRESS_PATTERN = f"({IPV4_PATTERN})|({IPV6_PATTERN})"

# What a scan raises on an unreadable input; the transaction is aborted, so there is no Python fallback.
SCAN_ERRORS = (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)


def address_sql(x: str) -> str:
    """SQL: ``x`` is an address ``ipaddress.ip_address`` accepts (the store writes IPv6 in RFC 5952 form,
    as ``str()`` does in Python)."""
    return (f"CASE WHEN contains({x}, ':') THEN regexp_full_match({x}, '{IPV6_PATTERN}') "
            f"ELSE regexp_full_match({x}, '{IPV4_PATTERN}') END")


def exact_int_sql(x: str, sql_type: str) -> str:
    """SQL: the text ``x`` as ``sql_type`` when it is that integer written plainly (digits, a '-' only before a
    negative one, no leading zero), else NULL. DuckDB's cast alone also reads blanks, '+5', '5.4', '1e2',
    '0x10' and '1_000'; the value written back is the text only for the plain form (cheaper than a pattern)."""
    n = f"TRY_CAST({x} AS {sql_type})"
    return f"CASE WHEN CAST({n} AS VARCHAR) = {x} THEN {n} END"


def scan_error(exc: Exception, files: Sequence[SourceFile], *, fallback: int = 3) -> InputError:
    """The error of a failed scan, naming the files DuckDB's message names (else the first ``fallback``)."""
    named = [str(f.path) for f in files if str(f.path) in str(exc)] or [str(f.path) for f in files[:fallback]]
    return InputError(f"cannot read: {exc}", file=", ".join(named))


def drop_tables(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> None:
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def count_rejects(con: duckdb.DuckDBPyConnection, rejects: Iterable[tuple[str, str]]) -> int:
    """Rows in the rejects tables of ``read_csv(store_rejects=...)`` (invalid UTF-8, an over-long line:
    lines only Python can read); both tables of each pair are dropped."""
    rejected = 0
    for errors, scans in rejects:
        got = con.execute(f"SELECT count(*) FROM {errors}").fetchone()
        rejected += int(got[0]) if got else 0
        drop_tables(con, (errors, scans))
    return rejected


def drop_both_ends(con: duckdb.DuckDBPyConnection, table: str, key: Sequence[str], files: Sequence[SourceFile],
                   staged: Staged, reason: str) -> None:
    """Delete the egress rows of ``table`` whose connection the other end logged too (an ingress row with
    the same ``key``, NULL matching NULL as in a Python set), counting them as skipped (``reason``) per file.
    One connection is one dependency: the server side's record is kept."""
    same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM i.{c}" for c in key)
    dups = (f"FROM {table} e WHERE e.direction = 'egress' AND EXISTS (SELECT 1 FROM {table} i "
            f"WHERE i.direction = 'ingress' AND {same})")
    for fi, n in con.execute(f"SELECT e.file_index, count(*) {dups} GROUP BY ALL").fetchall():
        staged.skipped[(files[int(fi)].path, reason)] += int(n)
    con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT e.rowid {dups})")


def drop_after_scan(tables: Sequence[str]) -> StagedRelationHook:
    """An ``after_scan`` hook that drops the fast path's temporary tables once the store has read them."""
    def drop(con: duckdb.DuckDBPyConnection, _scanned: Scanned) -> list[StagedRelation]:
        drop_tables(con, tables)
        return []
    return drop


def canonical_ipv6(con: duckdb.DuckDBPyConnection, table: str, where: str = "true",
                   columns: Sequence[str] = ("src_ip", "dst_ip"), index: str = "file_index") -> set[int]:
    """Rewrites the IPv6 addresses in ``columns`` of the rows ``where`` of ``table`` as canonical_ip writes
    them (RFC 5952: "2001:DB8:0::1" -> "2001:db8::1"), so that rows SQL read and rows Python read fold into
    the same aggregates and compare equal, before a reader's both-ends rule compares them. Python judges
    every distinct value once (a log names few addresses).

    Returns the file index (column ``index``) of the rows holding a value canonical_ip refuses: none are
    expected (the SQL patterns are canonical_ip's), but should the two ever disagree the caller reads those
    files in Python."""
    union = " UNION ".join(f"SELECT {c} AS ip FROM {table} WHERE ({where}) AND contains({c}, ':')" for c in columns)
    raw: list[str] = []
    canon: list[str] = []
    refused: list[str] = []
    for (ip,) in con.execute(f"SELECT DISTINCT ip FROM ({union})").fetchall():
        written = canonical_ip(str(ip))
        if written is None:
            refused.append(str(ip))
        elif written != ip:
            raw.append(str(ip))
            canon.append(written)
    files: set[int] = set()
    if refused:
        values = ", ".join(sql_str(ip) for ip in sorted(refused))
        found = " OR ".join(f"{c} IN ({values})" for c in columns)
        files = {int(fi) for (fi,) in con.execute(f"SELECT DISTINCT {index} FROM {table} "
                                                   f"WHERE ({where}) AND ({found})").fetchall()}
    if raw:
        mapping = f"{table}_v6"
        # One statement whatever the number of values (executemany costs about 1 ms a row).
        con.execute(f"CREATE TEMP TABLE {mapping} AS SELECT unnest(?::VARCHAR[]) AS raw, "
                    "unnest(?::VARCHAR[]) AS canon", [raw, canon])
        try:
            for c in columns:
                con.execute(f"UPDATE {table} AS t SET {c} = m.canon FROM {mapping} AS m WHERE t.{c} = m.raw")
        finally:
            drop_tables(con, [mapping])
    return files
