"""Seeded mutations of log lines, for the differential fuzz tests of the line formats' fast paths.

Every function takes a ``random.Random``: a fixed seed gives the same lines on every run. Lines are
bytes, so that a mutation may write bytes that are not UTF-8."""

from __future__ import annotations

import random
from collections.abc import Callable

# Characters that parsers disagree on: signs, separators, quotes, blanks of every kind (ASCII control,
# Unicode spaces and line separators), non-ASCII digits and letters, the byte order mark.
TROUBLE = ["0", "1", "5", "9", "+", "-", ".", "_", "e", "x", ":", "[", "]", "%", '"', ",", " ", "\t", "\r",
           "\x00", "\x0b", "\x1c", "\u00a0", "é", "٣", "\ufeff", "\u2028"]

# Values a broken exporter or an attacker could put in any field.
PATHOLOGICAL = [
    "", "-", "(empty)", "+5", "05", "1e3", "0x10", "1_000", "٣", " 5", "5 ", "-1", "1.5", "-0", "0", "00",
    str(2**63), str(2**63 - 1), str(2**64 - 1), "NaN", "nan", "inf", "Infinity",
    "1.2.3.04", "1.2.3.256", "1.2.3.4", " 1.2.3.4", "::ffff:1.2.3.4", "2001:DB8::1", "2001:db8:0:0:0:0:0:1",
    "fe80::1%eth0", "[::1]", "::", "::1%", "1.2.3.4:80", "[::1]:80", "10.0.0.1:065535", "10.0.0.1:65536",
    "TCP", "tcp", "Tcp", "UDP", "udp", "ICMP", "icmp", "icmpv6", "ICMPV6", "sctp", "6", "17", "1", "58", "256",
    "0001-01-01 00:00:00", "9999-12-31 23:59:59", "10000-01-01 00:00:00", "2026-02-30 00:00:00",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "10000-01-01T00:00:00Z", "2026-01-02T03:04:05+01:00",
    "2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05", "253402300800", "253402300799",
    "253402300799999", "1767548102.5", "1767548102.", ".5", "1767548102000",
    "ACCEPT", "accept", "REJECT", "Reject", "allow", "ALLOW", "deny", "OK", "ok", "NODATA", "SKIPDATA",
    "in", "out", "IN", "src", "dst", "ingress", "Egress", "wep", "hep", "ns", "net", "*",
    '"', '""', '"a"', "a b", "é", "\t", "inbound|80||", "outbound|80||h", "PassthroughCluster",
    "BlackHoleCluster", "......", ".AP.SF", "UAPRSF", "0x12", "SF", "S0", "OTH", "REJ", "T", "F",
    # blanks str.strip() removes but ASCII-minded SQL may not: around digits, names and addresses
    "5\u00a0", "\u00a05", "\u20285", "80\u3000", "\x1c443", "443\x1f", "\u00a0tcp", "tcp\u2028", "allow\u00a0",
    "\u00a010.0.0.1", "10.0.0.1\u2029", "\u00851767548102", "1767548102\u00a0",
]

# Beyond UBIGINT: as a byte or packet count such a value fails the whole ingest (on both paths, see
# test_nfdump), so these go in files of their own.
HUGE = [str(2**64), str(10**30), "9" * 40]


def _random_char(rng: random.Random) -> str:
    return rng.choice(TROUBLE)


def char_level(rng: random.Random, line: str) -> str:
    """One or two characters inserted, deleted or replaced at random positions."""
    for _ in range(rng.choice((1, 2))):
        i = rng.randrange(len(line) + 1)
        op = rng.choice(("insert", "delete", "replace"))
        if op == "insert" or not line:
            line = line[:i] + _random_char(rng) + line[i:]
        elif op == "delete":
            i = min(i, len(line) - 1)
            line = line[:i] + line[i + 1:]
        else:
            i = min(i, len(line) - 1)
            line = line[:i] + _random_char(rng) + line[i + 1:]
    return line


def field_level(rng: random.Random, line: str, sep: str) -> str:
    """One field replaced by a pathological value."""
    fields = line.split(sep)
    fields[rng.randrange(len(fields))] = rng.choice(PATHOLOGICAL)
    return sep.join(fields)


def line_level(rng: random.Random, line: str, sep: str, header: str | None, hash_lines: bool = True) -> bytes:
    """CRLF, a lone CR, a trailing blank field, one field more or fewer, and with ``hash_lines`` a header
    or comment line."""
    fields = line.split(sep)
    kind = rng.randrange(7 if hash_lines else 5)
    if kind == 0:
        return (line + "\r").encode()
    if kind == 1:
        i = rng.randrange(len(line) + 1)
        return (line[:i] + "\r" + line[i:]).encode()
    if kind == 2:
        return (line + sep).encode()
    if kind == 3:
        i = rng.randrange(len(fields))
        return sep.join(fields[:i] + [fields[i]] + fields[i:]).encode()
    if kind == 4:
        i = rng.randrange(len(fields))
        return sep.join(fields[:i] + fields[i + 1:]).encode()
    return hash_line(rng, line, sep, header)


def invalid_utf8(rng: random.Random, line: str) -> bytes:
    """The line with bytes that are not UTF-8 somewhere (a file holding such a line is read in Python
    by every reader: DuckDB rejects it, and Python replaces the bytes)."""
    raw = line.encode()
    i = rng.randrange(len(raw) + 1)
    return raw[:i] + rng.choice((b"\xff", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"\xc0\xaf")) + raw[i:]


def mutate(rng: random.Random, line: str, sep: str, header: str | None, hash_lines: bool = True) -> bytes:
    """One mutation of ``line``, of a kind drawn at random (character, field or line level)."""
    kind = rng.randrange(3)
    if kind == 0:
        return char_level(rng, line).encode()
    if kind == 1:
        return field_level(rng, line, sep).encode()
    return line_level(rng, line, sep, header, hash_lines)


def mutate_no_hash_lines(rng: random.Random, line: str, sep: str, header: str | None) -> bytes:
    """``mutate`` without header or comment lines (for a reader that sends the whole batch to Python
    for such a line in the body of a file)."""
    return mutate(rng, line, sep, header, hash_lines=False)


def mutate_no_cr(rng: random.Random, line: str, sep: str, header: str | None) -> bytes:
    """``mutate`` without a carriage return anywhere (AWS VPC: see test_fuzz_lines)."""
    while True:
        out = mutate(rng, line, sep, header)
        if b"\r" not in out:
            return out


def hash_line(rng: random.Random, line: str, sep: str, header: str | None) -> bytes:
    """A header or comment line in the body of a file."""
    if header is not None and rng.random() < 0.5:
        return header.encode()
    return ("#" + rng.choice(("", " ", "fields\t", "close\t")) + line[:20]).encode()


def mixed(rng: random.Random, good: Callable[[], str], mutated: int, sep: str, header: str | None,
          mutate: Callable[[random.Random, str, str, str | None], bytes] = mutate) -> tuple[list[bytes], int]:
    """``mutated`` mutated lines in random order among as many good ones (each a new ``good()``); the
    lines and the number of good lines among them."""
    out: list[bytes] = []
    goods = 0
    for _ in range(mutated):
        out.append(mutate(rng, good(), sep, header))
        out.append(good().encode())
        goods += 1
    rng.shuffle(out)
    return out, goods
