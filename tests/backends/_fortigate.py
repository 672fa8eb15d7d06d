"""FortiGate test support: a strict reader of the FortiOS CLI script the fortigate target writes, and its
policies as input to the zone-firewall evaluator of :mod:`tests.backends._addressed` (shared by
test_fortigate.py and test_contract.py).

No offline FortiOS validator is used (the PyPI parsers of FortiOS configuration accept more than
FortiOS does), so :func:`parse` accepts only the ``config``/``edit``/``set``/``next``/``end`` structure
this back end writes, with exact nesting and indentation, and fails on anything else.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from microseg.backends.fortigate import DENY_POLICY, OBSERVE_POLICY, POLICY_ID_BASE, zone_name
from microseg.ir.model import Policy, PortRange
from tests.backends._addressed import FwRule

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SAFE_TEXT = re.compile(r"[A-Za-z0-9 ._:/,@()+=#-]*")
POLICY_KEYS = {"name", "srcintf", "dstintf", "srcaddr", "dstaddr", "srcaddr6", "dstaddr6", "action", "schedule",
               "service", "logtraffic", "comments"}


def tokens(line: str) -> list[str]:
    """Tokens of one CLI line: bare words or double-quoted strings of inert characters, nothing else."""
    assert not re.search(r"[\x00-\x1f\x7f]", line), line
    out, pos = [], 0
    for m in re.finditer(r'\s*(?:"([^"\\]*)"|([^\s"\\]+))', line):
        assert m.start() == pos, line
        pos = m.end()
        if m.group(1) is not None:
            assert SAFE_TEXT.fullmatch(m.group(1)), m.group(1)
            out.append(m.group(1))
        else:
            out.append(m.group(2))
    assert pos == len(line), line
    return out


def parse(text: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    """``config`` table -> entry -> ``set`` key -> values; the nesting and indentation must be exact."""
    tables: dict[str, dict[str, dict[str, list[str]]]] = {}
    table: str | None = None
    entry: str | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        toks = tokens(line)
        if toks[0] == "config":
            assert table is None and indent == 0, line
            table = " ".join(toks[1:])
            assert table not in tables, table
            tables[table] = {}
        elif toks[0] == "end":
            assert table is not None and entry is None and indent == 0 and len(toks) == 1, line
            table = None
        elif toks[0] == "edit":
            assert table is not None and entry is None and indent == 4 and len(toks) == 2, line
            entry = toks[1]
            assert entry not in tables[table], entry
            tables[table][entry] = {}
        elif toks[0] == "next":
            assert entry is not None and indent == 4 and len(toks) == 1, line
            entry = None
        elif toks[0] == "delete":
            assert table is not None and entry is None and indent == 4 and len(toks) == 2, line
            tables[table][toks[1]] = {}
        else:
            assert toks[0] == "set" and table is not None and entry is not None and indent == 8, line
            assert toks[1] not in tables[table][entry], line
            tables[table][entry][toks[1]] = toks[2:]
    assert table is None and entry is None
    return tables


def fw_rules(tables: dict[str, dict[str, dict[str, list[str]]]]) -> list[FwRule]:
    nets: dict[str, Any] = {}
    for name, e in tables.get("firewall address", {}).items():
        assert NAME.fullmatch(name) and set(e) == {"subnet", "comment"}, e
        ip, mask = e["subnet"]
        nets[name] = [ipaddress.ip_network(f"{ip}/{mask}", strict=True)]
    for name, e in tables.get("firewall address6", {}).items():
        assert NAME.fullmatch(name) and set(e) == {"ip6", "comment"}, e
        nets[name] = [ipaddress.ip_network(e["ip6"][0], strict=True)]
    for table in ("firewall addrgrp", "firewall addrgrp6"):
        for name, e in tables.get(table, {}).items():
            assert NAME.fullmatch(name) and set(e) == {"member", "comment"}, e
            nets[name] = [n for m in e["member"] for n in nets[m]]
    services: dict[str, tuple[str, list[PortRange]]] = {}
    for name, e in tables.get("firewall service custom", {}).items():
        if e["protocol"] in (["ICMP"], ["ICMP6"]):
            assert set(e) == {"protocol", "comment"}
            services[name] = ("icmp4" if e["protocol"] == ["ICMP"] else "icmp6", [])
        else:
            assert e["protocol"] == ["TCP/UDP/SCTP"] and len(e) == 3, e
            (key,) = set(e) - {"protocol", "comment"}
            services[name] = (key.removesuffix("-portrange").upper(), [PortRange.parse(p) for p in e[key]])
            assert all(p.start >= 1 for p in services[name][1])
    rules = []
    for pid, e in tables["firewall policy"].items():
        assert int(pid) > POLICY_ID_BASE and set(e) <= POLICY_KEYS, e
        assert e["logtraffic"] == ["all"] and e["schedule"] == ["always"]
        if e["srcintf"] == ["any"]:
            assert e["name"][0] in (DENY_POLICY, OBSERVE_POLICY) and e["service"] == ["ALL"]
            assert all(e[k] == ["all"] for k in ("srcaddr", "dstaddr", "srcaddr6", "dstaddr6"))
            rules.append(FwRule("allow" if e["action"] == ["accept"] else "deny", None, None, None, None, None))
            continue
        src = [n for k in ("srcaddr", "srcaddr6") for a in e.get(k, []) for n in nets[a]]
        dst = [n for k in ("dstaddr", "dstaddr6") for a in e.get(k, []) for n in nets[a]]
        svc: dict[str, list[PortRange]] = {}
        for s in e["service"]:
            proto, ranges = services[s]
            svc.setdefault(proto, []).extend(ranges)
        assert e["action"] == ["accept"]
        rules.append(FwRule("allow", set(e["srcintf"]), set(e["dstintf"]), src, dst, svc))
    return rules


def zones_of(policy: Policy) -> dict[str, str]:
    return {z: zone_name(z) for z in {a.zone for a in policy.assignments} | {s.name for s in policy.segments}}


def check(out: dict[str, str], policy: Policy) -> dict[str, Any]:
    tables = parse(out["microseg.conf"])
    assert all(NAME.fullmatch(z) and len(z) <= 35 for z in tables["system zone"])
    assert all(e == {"intrazone": ["deny"]} for e in tables["system zone"].values())
    policies = list(tables["firewall policy"].values())
    assert policies[-1]["name"][0] in (DENY_POLICY, OBSERVE_POLICY)
    assert all(len(p["name"][0]) <= 35 for p in policies)
    # remove.conf deletes exactly what microseg.conf creates, zones excepted.
    removed = parse(out["remove.conf"])
    assert {t: set(e) for t, e in removed.items()} == {t: set(e) for t, e in tables.items() if t != "system zone"}
    return tables
