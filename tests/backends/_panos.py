"""PAN-OS test support: a strict reader of the set commands the panos target writes, and its rules as
input to the zone-firewall evaluator of :mod:`tests.backends._addressed` (shared by test_panos.py and
test_contract.py).

No PAN-OS validator exists outside a firewall (pan-os-python and pan-python talk to a device's API;
nothing offline parses set commands), so :func:`parse` accepts only the CLI syntax this back end
writes (whitespace-separated tokens, double-quoted strings, ``[ ]`` lists) and fails on anything else.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from microseg.backends.panos import DENY_RULE, OBSERVE_RULE, zone_name
from microseg.ir.model import Policy, PortRange
from tests.backends._addressed import FwRule

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
TOKEN = re.compile(r'"([^"\\\x00-\x1f\x7f]*)"|([^\s"]+)')
SAFE_TEXT = re.compile(r"[A-Za-z0-9 ._:/,@()+=#-]*")


def tokens(line: str) -> list[str]:
    """Tokens of one CLI line; the whole line must be consumed (no stray quote, no control character)."""
    assert not re.search(r"[\x00-\x1f\x7f]", line), line
    out, pos = [], 0
    for m in re.finditer(r"\s*(?:" + TOKEN.pattern + r")", line):
        assert m.start() == pos, line
        pos = m.end()
        quoted, bare = m.group(1), m.group(2)
        if quoted is not None:
            assert SAFE_TEXT.fullmatch(quoted), quoted
            out.append(quoted)
        else:
            out.append(bare)
    assert pos == len(line), line
    return out


def attributes(toks: list[str]) -> dict[str, Any]:
    """``key value`` and ``key [ a b ]`` pairs."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(toks):
        key = toks[i]
        assert key not in out, toks
        if toks[i + 1] == "[":
            end = toks.index("]", i + 2)
            out[key] = toks[i + 2:end]
            i = end + 1
        else:
            out[key] = toks[i + 1]
            i += 2
    return out


RULE_KEYS = {"from", "to", "source", "destination", "source-user", "category", "application", "service", "action",
             "log-end", "tag", "description"}


def parse(text: str) -> tuple[dict[str, Any], list[str]]:
    """The objects and rules of a microseg.set file; every line must be one this back end writes."""
    objs: dict[str, Any] = {"tag": {}, "zone": set(), "address": {}, "address-group": {}, "service": {}, "rules": {}}
    moves = []
    for line in text.splitlines():
        toks = tokens(line)
        if toks[:1] == ["move"]:
            assert toks[:4] == ["move", "rulebase", "security", "rules"] and toks[5:] == ["bottom"], toks
            moves.append(toks[4])
            continue
        assert toks[0] == "set", toks
        if toks[1] == "rulebase":
            assert toks[2:4] == ["security", "rules"] and NAME.fullmatch(toks[4]), toks
            attrs = attributes(toks[5:])
            assert set(attrs) == RULE_KEYS, attrs
            objs["rules"][toks[4]] = attrs
            continue
        kind, name, attrs = toks[1], toks[2], attributes(toks[3:])
        assert NAME.fullmatch(name), name
        if kind == "tag":
            assert set(attrs) == {"comments"}
            objs["tag"][name] = attrs
        elif kind == "zone":
            assert toks[3:] == ["network", "layer3", "[", "]"] and len(name) <= 31, toks
            objs["zone"].add(name)
        elif kind == "address":
            assert set(attrs) == {"ip-netmask", "tag", "description"}, attrs
            objs["address"][name] = ipaddress.ip_network(attrs["ip-netmask"], strict=True)
        elif kind == "address-group":
            assert set(attrs) == {"static", "tag", "description"}, attrs
            objs["address-group"][name] = attrs["static"]
        elif kind == "service":
            assert toks[3] == "protocol" and toks[4] in ("tcp", "udp", "sctp") and toks[5] == "port", toks
            assert len(toks) == 7
            objs["service"][name] = (toks[4], [PortRange.parse(p) for p in toks[6].split(",")])
        else:
            raise AssertionError(toks)
    assert len(moves) == 1 and moves[0] == list(objs["rules"])[-1]
    return objs, moves


def fw_rules(objs: dict[str, Any]) -> list[FwRule]:
    def nets(names: list[str]) -> list[Any] | None:
        if names == ["any"]:
            return None
        out = []
        for n in names:
            out += [objs["address"][m] for m in objs["address-group"][n]] if n in objs["address-group"] \
                else [objs["address"][n]]
        return out

    rules = []
    for name, r in objs["rules"].items():
        services: dict[str, list[PortRange]] | None
        if r["application"] == ["any"] and r["service"] == ["any"]:
            services = None
        elif r["application"] == ["icmp", "ipv6-icmp", "ping"]:
            assert r["service"] == ["application-default"]
            services = {"icmp4": [], "icmp6": []}
        else:
            assert r["application"] == ["any"] and len(r["service"]) == 1, r
            proto, ranges = objs["service"][r["service"][0]]
            services = {proto.upper(): ranges}
        zones = (None if r["from"] == ["any"] else set(r["from"]), None if r["to"] == ["any"] else set(r["to"]))
        assert r["log-end"] == "yes" and (name in (DENY_RULE, OBSERVE_RULE)) == (r["from"] == ["any"])
        rules.append(FwRule(r["action"], zones[0], zones[1], nets(r["source"]), nets(r["destination"]), services))
    return rules


def zones_of(policy: Policy) -> dict[str, str]:
    return {z: zone_name(z) for z in {a.zone for a in policy.assignments} | {s.name for s in policy.segments}}
