"""Seeded mutations of JSON flow records, for the differential fuzz test (test_fuzz_json.py).

A record is held as a tree whose objects are :class:`Obj` (a list of key/value pairs, so that a key
can be repeated) and whose leaves may be :class:`Raw` (JSON text written as is: ``-0``, ``1E+3``,
``2**64``, lone surrogates, ``NaN``...). :func:`dump` writes the tree back as one line of JSON text.
Everything is drawn from a ``random.Random`` the caller seeds: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any


class Raw(str):
    """JSON text written as it is."""


class Obj(list[list[Any]]):
    """A JSON object as [key, value] pairs, in order (a key may repeat)."""


def tree(v: Any) -> Any:
    if isinstance(v, dict):
        return Obj([[k, tree(x)] for k, x in v.items()])
    if isinstance(v, list):
        return [tree(x) for x in v]
    return v


def dump(v: Any, ascii_only: bool = True) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, Obj):
        return "{" + ",".join(f"{k if isinstance(k, Raw) else json.dumps(k, ensure_ascii=ascii_only)}:"
                              f"{dump(x, ascii_only)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump(x, ascii_only) for x in v) + "]"
    return json.dumps(v, ensure_ascii=ascii_only)


# JSON texts an attacker or a broken exporter could write where a reader expects a value.
TROUBLE: list[str] = [
    '""', '"-"', "null", "true", "false", "0", "-0", "-1", "1.5", "-0.0", "0.0", "1e3", "1E+3", "1e-7",
    str(2 ** 31), str(2 ** 32), str(2 ** 53 + 1), str(2 ** 62), str(2 ** 63 - 1), str(2 ** 63), str(2 ** 64 - 1),
    str(2 ** 64), "1" + "0" * 30, "-" + str(2 ** 63), "65535", "65536", "255", "256", "443", "6", "17", "58",
    "443.0", "6.0", "4.4e2",
    '"+5"', '"05"', '"1e3"', '"0x10"', '"1_000"', '"\u0663"', '"\\u0663"', '" 5"', '"5 "', '"5"', '"443"', '"-1"',
    '"6"', '"tcp"', '"TCP"', '"udp"', '"icmp"', '"NaN"', "NaN", "Infinity", "-Infinity", '"\\u0034\\u0034\\u0033"',
    str(2 ** 64 - 1).join('""'), str(2 ** 64).join('""'), '"' + "9" * 19 + '"', '"' + "7" * 5000 + '"',
    "[]", "{}", "[1]", '{"a":1}', '["10.0.0.1"]', '{"":null}',
    '"a\\u0041b"', '"\\u0000"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\udfff"', '"\U0001f600"', '"caf\u00e9"',
    '"caf\\u00e9"', '"a\\"b"', '"a\\\\b"', '"a\\/b"', '"a b"', '"a\\tb"', '"\\n"', '"a/b"', '"x"', '"\u3000"',
    '"10.0.0.1"', '"10.0.0.256"', '"10.0.0.01"', '"1.2.3.04"', '"1.2.3"', '"10.0.0.1 "', '" 10.0.0.1"',
    '"2001:DB8::1"', '"2001:db8::1"', '"2001:db8:0:0:0:0:0:1"', '"::ffff:1.2.3.4"', '"::FFFF:1.2.3.4"',
    '"fe80::1%eth0"', '"::"', '"::1"', '"2001:db8::g"', '"2001:db8:::1"', '"[2001:db8::1]"', '"1.2.3.4:80"',
    '"[2001:db8::1]:443"', '"[2001:DB8::1]:443"', '"10.0.0.1:443"', '"10.0.0.1:0"', '"10.0.0.1:65536"',
    '"10.0.0.1:+5"', '"10.0.0.1:05"', '"10.0.0.1:\u0663"', '"10.0.0.1:"', '"10.0.0.1:443:1"', '"::ffff:1.2.3.4:8"',
    '"0001-01-01T00:00:00Z"', '"1970-01-01T00:00:00Z"', '"1969-12-31T23:59:59.999999Z"',
    '"9999-12-31T23:59:59.999999Z"', '"9999-12-31T23:59:59.9999999Z"', '"10000-01-01T00:00:00Z"',
    '"2026-01-02T03:04:05Z"', '"2026-01-02T03:04:05.5Z"', '"2026-01-02T03:04:05.123456789012Z"',
    '"2026-01-02T03:04:05.Z"', '"2026-01-02T03:04:05,5Z"', '"2026-01-02T03:04:05+14:00"',
    '"2026-01-02T03:04:05-00:00"', '"2026-01-02T03:04:05+00:00"', '"2026-01-02T03:04:05+0100"',
    '"2026-01-02T03:04:05+01"', '"2026-01-02T03:04:05+24:00"', '"2026-01-02T03:04:05 Z"', '"2026-01-02 03:04:05Z"',
    '"2026-01-02T03:04:05"', '"2026-01-02t03:04:05z"', '"2026-02-29T00:00:00Z"', '"2024-02-29T00:00:00Z"',
    '"2026-01-02T03:04:60Z"', '"2026-1-2T3:4:5Z"', '"+2026-01-02T03:04:05Z"', '"2026-01-02T03:04:05.5\u0663Z"',
    "1521911721", "1521911721.255387", "1521911721.2553870001", "1.5219117212553870e9", "1521911721e0",
    "253402300799", "253402300800", "253402300799.999999", "-62135596800", "1663146003599", "1e10", "1e300",
    '"1521911721"', '"1521911721.255387"', '"2026-01-02T03:04:05.123Z"',
    '"ALLOWED"', '"allow"', '"deny"', '"Allow"', '"DROPPED"', '"FORWARDED"', '"AUDIT"', '"SRC"', '"DEST"', '"src"',
    '"dst"', '"INGRESS"', '"EGRESS"', "1", "2", "3", "5",
]


def _respell(rng: random.Random, v: Any) -> str | None:
    """The same value written another way (a \\u escape, a float, a digit string...), or None."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return rng.choice([f"{v}.0", f'"{v}"', f"{v}e0", f"-{v}" if v else "-0", f"0{v}", f"{v}.00", f"{v}E0"])
    if isinstance(v, float):
        return rng.choice([repr(v) + "0", f"{v:.20g}", f'"{v}"', f"{v:e}", str(int(v))])
    if isinstance(v, str) and v:
        i = rng.randrange(len(v))
        escaped = json.dumps(v[:i])[1:-1] + f"\\u{ord(v[i]):04x}" + json.dumps(v[i + 1:])[1:-1]
        return rng.choice(['"' + escaped + '"', json.dumps(v.upper()), json.dumps(v.lower()), json.dumps(v + " "),
                           json.dumps(" " + v), json.dumps(v + "\u0000"), json.dumps(v, ensure_ascii=False)
                           .replace("/", "\\/"), json.dumps(v[:-1]), json.dumps(v + v[-1])])
    return None


def _paths(t: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the tree a value sits: (index of pair in an Obj | index in a list, ...)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(t, Obj):
        for i, (_k, x) in enumerate(t):
            out.append((*prefix, i))
            out.extend(_paths(x, (*prefix, i)))
    elif isinstance(t, list):
        for i, x in enumerate(t):
            out.append((*prefix, i))
            out.extend(_paths(x, (*prefix, i)))
    return out


def _parent(t: Any, path: tuple[Any, ...]) -> Any:
    for i in path[:-1]:
        t = t[i][1] if isinstance(t, Obj) else t[i]
    return t


def _get(t: Any, path: tuple[Any, ...]) -> Any:
    p = _parent(t, path)
    return p[path[-1]][1] if isinstance(p, Obj) else p[path[-1]]


def _set(t: Any, path: tuple[Any, ...], v: Any) -> None:
    p = _parent(t, path)
    if isinstance(p, Obj):
        p[path[-1]][1] = v
    else:
        p[path[-1]] = v


def _copy(t: Any) -> Any:
    if isinstance(t, Obj):
        return Obj([[k, _copy(x)] for k, x in t])
    if isinstance(t, list):
        return [_copy(x) for x in t]
    return t


def _escaped_key(k: str, rng: random.Random) -> Raw:
    i = rng.randrange(len(k)) if k else 0
    return Raw('"' + json.dumps(k[:i])[1:-1] + (f"\\u{ord(k[i]):04x}" if k else "") + json.dumps(k[i + 1:])[1:-1]
               + '"')


def mutate_tree(rng: random.Random, t: Any, *, prefer: Callable[[tuple[Any, ...]], bool] | None = None) -> Any:
    """One value- or key-level mutation of a copy of ``t``."""
    t = _copy(t)
    paths = _paths(t)
    if prefer is not None and rng.random() < 0.5:
        paths = [p for p in paths if prefer(p)] or paths
    path = rng.choice(paths)
    parent = _parent(t, path)
    kind = rng.random()
    if kind < 0.55 or not isinstance(parent, Obj):  # value level
        old = _get(t, path)
        again = _respell(rng, old) if rng.random() < 0.3 else None
        _set(t, path, Raw(again if again is not None else rng.choice(TROUBLE)))
        return t
    i = path[-1]
    key, value = parent[i]
    op = rng.randrange(6)
    if op == 0:  # delete the key
        del parent[i]
    elif op == 1:  # repeat it, the trouble first (it wins)
        parent.insert(i, [key, Raw(rng.choice(TROUBLE))])
    elif op == 2:  # repeat it, the trouble after (the first still wins)
        parent.insert(i + 1, [key, Raw(rng.choice(TROUBLE))])
    elif op == 3:  # another case
        parent[i][0] = rng.choice([key.upper(), key.lower(), key.capitalize(), key.swapcase()]) if key else "X"
    elif op == 4:  # an unknown key
        parent.insert(rng.randrange(len(parent) + 1), [rng.choice(["zz", "Ts", "x" * 40, ""]),
                                                        Raw(rng.choice(TROUBLE))])
    else:  # the key written with a \\u escape (the same key for a JSON parser)
        parent[i][0] = _escaped_key(key, rng)
    return t


def mutate_text(rng: random.Random, text: str, *, poison: bool = False) -> bytes:
    """One text-level mutation of a line (``poison``: also those that may send a whole file to Python)."""
    ops: list[Callable[[], str | bytes]] = [
        lambda: text[:-1] + ",}",  # trailing comma
        lambda: text[:-1] + rng.choice([',"n":nan}', ',"n":inf}', ',"n":-inf}', ',"n":NaN}', ',"n":Infinity}',
                                        ',"n":INF}', ',"n":[1,]}', ',"n":{"a":1,}}', ',"n":+1}', ',"n":.5}',
                                        ',"n":01}', ',"n":1.}', ',"n":0x10}', ",}"]),
        lambda: rng.choice(["/* c */", "// c "]) + text if rng.random() < 0.3 else text[:-1] + "/* c */}",
        lambda: text.replace('"', "'", 2),  # single quotes
        lambda: "\ufeff" + text,  # a BOM inside the file
        lambda: _between(rng, text, rng.choice([" ", "\t", "  \t ", "\u2028", "\u00a0", "\u3000", "\x0c", "\x0b",
                                                "\r"])),
        lambda: text[:rng.randrange(1, len(text))],  # truncated
        lambda: text + rng.choice(["", " ", "\t"]) + text,  # two objects on one line
        lambda: rng.choice([" ", "\t", "\u3000", "\ufeff", "\r"]) + text + rng.choice(["", " ", "\t", "\r"]),
        lambda: _in_string(rng, text, rng.choice(["\t", "\x1f", "\x7f", "\u2028"])),
        lambda: "[" + text + "]",
        lambda: rng.choice(['"x"', "1", "null", "[]", "{}", "{", "}", "", "   ", "#", "nul", "true"]),
    ]
    if poison:
        ops += [
            lambda: _in_string(rng, text, rng.choice(["\x00", "\ud800", "\x01"])),  # NUL; a lone surrogate in UTF-8
            lambda: _in_string_bytes(rng, text, rng.choice([b"\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\xc0\xaf",
                                                            b"\xf4\x90\x80\x80"])),
        ]
    out = rng.choice(ops)()
    if isinstance(out, bytes):
        return out
    return out.encode("utf-8", "surrogatepass")


def _between(rng: random.Random, text: str, ws: str) -> str:
    """``ws`` after a structural character (outside strings)."""
    spots = [i + 1 for i, c in enumerate(text) if c in ",:{[" and _outside(text, i)]
    i = rng.choice(spots) if spots else 0
    return text[:i] + ws + text[i:]


def _outside(text: str, i: int) -> bool:
    quote = False
    esc = False
    for c in text[:i]:
        if esc:
            esc = False
        elif c == "\\":
            esc = True
        elif c == '"':
            quote = not quote
    return not quote


def _string_spots(text: str) -> list[int]:
    return [i + 1 for i, c in enumerate(text) if c == '"' and _outside(text, i) and i + 1 < len(text)
            and text[i + 1] not in '"\\']


def _in_string(rng: random.Random, text: str, raw: str) -> str:
    spots = _string_spots(text)
    i = rng.choice(spots) if spots else 0
    return text[:i] + raw + text[i:]


def _in_string_bytes(rng: random.Random, text: str, raw: bytes) -> bytes:
    spots = _string_spots(text)
    i = rng.choice(spots) if spots else 0
    return text[:i].encode() + raw + text[i:].encode()


def lines(rng: random.Random, bases: list[Any], n: int, *, poison: bool = False, good: float = 0.5,
          prefer: Callable[[tuple[Any, ...]], bool] | None = None,
          fresh: Callable[[dict[str, Any], int], dict[str, Any]] | None = None) -> tuple[list[bytes], int]:
    """``n`` lines: about ``good`` of them unmutated bases, the rest mutated; and the number of good ones.
    ``fresh`` makes line ``i`` of a base its own record (a new uid, request id, port...)."""
    out: list[bytes] = []
    kept = 0
    for i in range(n):
        choice = json.loads(json.dumps(rng.choice(bases)))
        base = tree(fresh(choice, i) if fresh else choice)
        r = rng.random()
        if r < good:
            out.append(dump(base).encode())
            kept += 1
        elif r < good + (1 - good) * 0.7:
            t = mutate_tree(rng, base, prefer=prefer)
            if rng.random() < 0.2:
                t = mutate_tree(rng, t, prefer=prefer)
            out.append(dump(t, ascii_only=rng.random() < 0.7).encode("utf-8", "surrogatepass"))
        else:
            out.append(mutate_text(rng, dump(base), poison=poison))
    # a line with a CR or LF in it is more than one line to a reader: last, so that the others keep their numbers
    return sorted(out, key=lambda t: b"\r" in t or b"\n" in t), kept
