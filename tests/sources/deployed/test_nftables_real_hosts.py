"""nftables rulesets of real hosts (not microseg's output), read as the kernel lists them.

Each hand-written ruleset of tests/fixtures/deployed/nftables/ is loaded into a throwaway network
namespace with the real ``nft`` and read back from ``nft -j list ruleset``; the expected connectivity
is derived by hand from nft(8) (VERDICT STATEMENT: accept ends a base chain, drop is final, jump
returns after the called chain, goto does not, return in a base chain applies its policy; every base
chain of a hook must accept). Those tests need root (or unprivileged user namespaces) and skip,
saying so, only where a namespace cannot be made; a missing ``nft`` is a failure (CI installs it).
The refusals and the evaluator's corner cases are checked on hand-written JSON, without a kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.deployed import nftables as reader
from microseg.twin import netns

RULESETS = Path(__file__).parents[2] / "fixtures/deployed/nftables"
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def host(name: str, *addresses: str) -> Workload:
    return Workload(name=name, kind=WorkloadKind.HOST, addresses=addresses)


INTERNET = Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0", "::/0"),
                    except_addresses=PRIVATE)
BASTION = host("bastion", "10.20.0.5")
PROM = host("prom", "10.0.0.50")
APP = host("app", "10.0.1.20", "fd00:1::20")


def conns(*parts: tuple[Protocol, int] | Protocol) -> Connections:
    pairs: list[tuple[Protocol, PortRange]] = []
    for p in parts:
        if isinstance(p, tuple):
            pairs.append((p[0], PortRange(start=p[1], end=p[1])))
        else:
            pairs.append((p, PortRange(start=0, end=65535)))
    return Connections.of(pairs)


def tcp(*ports: int) -> list[tuple[Protocol, int]]:
    return [(Protocol.TCP, p) for p in ports]


EVERYTHING = Connections(everything=True)
ICMP = Protocol.ICMP


def kernel_json(name: str) -> str:
    netns.tool("nft")  # missing nft: a failure, not a skip
    text = (RULESETS / name).read_text(encoding="utf-8")
    try:
        return netns.nft_json(text, name=name)
    except netns.TwinError as e:
        if os.geteuid() != 0:
            pytest.skip(f"loading a ruleset into a scratch network namespace needs root or user namespaces ({e})")
        raise


def read(name: str, on: Workload, *others: Workload) -> dict[tuple[str, str], Connections]:
    policy = Policy(workloads=(on, *others))
    return reader.read_back_deployed({on.name: kernel_json(name)}, policy)


def test_debian_default_allows_everything() -> None:
    web = host("web", "10.0.0.10")
    got = read("debian-default.nft", web, BASTION, INTERNET)
    names = ("bastion", "external:internet")
    assert got == {**{("web", n): EVERYTHING for n in names}, **{(n, "web"): EVERYTHING for n in names}}


def test_web_server() -> None:
    web = host("web", "10.0.0.10", "fd00::10")
    got = read("web-server.nft", web, BASTION, PROM, APP, INTERNET)
    assert got == {
        # output: policy accept
        **{("web", n): EVERYTHING for n in ("bastion", "prom", "app", "external:internet")},
        # SSH from the management set only; ping is rate limited, so read as allowed (never as denied)
        ("bastion", "web"): conns(*tcp(22, 80, 443), ICMP),
        # the regular chain "monitoring" (jump, then return) adds the exporters for prom only
        ("prom", "web"): conns(*tcp(80, 443, 9100, 9113), ICMP),
        ("app", "web"): conns(*tcp(80, 443), ICMP),
        ("external:internet", "web"): conns(*tcp(80, 443), ICMP),
    }


def test_docker_host() -> None:
    dock = host("dock", "10.0.2.30")
    got = read("docker-host.nft", dock, BASTION, PROM, APP, INTERNET)
    # input: ct state vmap (nothing for new connections), ICMP, SSH, then goto input_services: 8080 from
    # 10.0.0.0/8 (DNS only from the container bridge); what falls off the end gets the policy (drop).
    # output: DNS, web, ICMP to 10.0.0.0/8. Docker's ip filter has no input/output chain; its ip nat
    # masquerades the bridge only (a nat chain: no filtering).
    inside = conns(*tcp(22, 8080), ICMP)
    out_inside = conns(*tcp(80, 443), (Protocol.UDP, 53), ICMP)
    assert got == {
        ("bastion", "dock"): inside, ("prom", "dock"): inside, ("app", "dock"): inside,
        ("external:internet", "dock"): conns(*tcp(22), ICMP),
        ("dock", "bastion"): out_inside, ("dock", "prom"): out_inside, ("dock", "app"): out_inside,
        ("dock", "external:internet"): conns(*tcp(80, 443), (Protocol.UDP, 53)),
    }


def test_db_with_one_table_per_family_and_a_prerouting_blocklist() -> None:
    db = host("db", "10.0.3.40", "fd00:3::40")
    legacy = host("legacy", "10.0.1.66")
    got = read("db-split-tables.nft", db, APP, legacy, BASTION, INTERNET)
    assert got == {
        **{("db", n): EVERYTHING for n in ("app", "legacy", "bastion", "external:internet")},
        ("app", "db"): conns(*tcp(5432), ICMP),  # the ip table for IPv4, the ip6 table for IPv6
        ("bastion", "db"): conns(*tcp(5432), ICMP),
        ("external:internet", "db"): conns(ICMP),
        # legacy: the ip table would accept 5432 and ICMP, the prerouting chain drops it first
    }


def test_a_published_docker_port_is_refused() -> None:
    text = (RULESETS / "docker-host.nft").read_text(encoding="utf-8").replace(
        '\t\tiifname "docker0" return\n',
        '\t\tiifname "docker0" return\n\t\tiifname != "docker0" tcp dport 8081 dnat to 172.17.0.2:80\n')
    assert "dnat" in text
    try:
        js = netns.nft_json(text, name="docker-published")
    except netns.TwinError as e:
        if os.geteuid() != 0:
            pytest.skip(f"needs root or user namespaces ({e})")
        raise
    with pytest.raises(InputError, match="destination NAT"):
        reader.parse_ruleset(js, source="dock")


# -- the evaluator on hand-written JSON -----------------------------------------------------------------------


def _ruleset(*objects: dict[str, Any]) -> str:
    return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *objects]})


def _chain(name: str, hook: str | None = None, policy: str = "drop", kind: str = "filter",
           table: str = "t") -> dict[str, Any]:
    body: dict[str, Any] = {"family": "inet", "table": table, "name": name}
    if hook:
        body.update({"type": kind, "hook": hook, "prio": 0, "policy": policy})
    return {"chain": body}


def _rule(chain: str, *expr: dict[str, Any], table: str = "t") -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": table, "chain": chain, "expr": list(expr)}}


def _m(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
L4 = {"meta": {"key": "l4proto"}}
ACCEPT: dict[str, Any] = {"accept": None}
TWO = Policy(workloads=(host("a", "192.0.2.1"), host("b", "192.0.2.2")))


def _read(*objects: dict[str, Any]) -> Connections | None:
    return reader.read_back_deployed({"b": _ruleset(*objects)}, TWO).get(("a", "b"))


@pytest.mark.parametrize(("verdict", "expected"), [("jump", "TCP 22,80"), ("goto", "TCP 80")])
def test_jump_returns_goto_does_not(verdict: str, expected: str) -> None:
    got = _read(_chain("input", "input"), _chain("c"),
                _rule("input", {verdict: {"target": "c"}}), _rule("input", _m(DPORT, 22), ACCEPT),
                _rule("c", _m(DPORT, 80), ACCEPT))
    assert str(got) == expected


@pytest.mark.parametrize(("policy", "expected"), [("accept", "TCP 22"), ("drop", None)])
def test_return_in_a_base_chain_applies_its_policy(policy: str, expected: str | None) -> None:
    got = _read(_chain("input", "input", policy=policy), _rule("input", _m(DPORT, 22), {"return": None}),
                _rule("input", {"drop": None}))
    assert (str(got) if got else None) == expected


def test_named_verdict_map_and_port_set() -> None:
    vmap = {"vmap": {"key": L4, "data": "@by_proto"}}
    got = _read(_chain("input", "input"), _chain("tcp_in"),
                {"map": {"family": "inet", "table": "t", "name": "by_proto", "type": "inet_proto", "map": "verdict",
                         "elem": [["tcp", {"jump": {"target": "tcp_in"}}], ["udp", {"drop": None}]]}},
                {"set": {"family": "inet", "table": "t", "name": "ports", "type": "inet_service",
                         "flags": ["interval"], "elem": [{"range": [8000, 8010]}, 443]}},
                _rule("input", vmap), _rule("tcp_in", _m(DPORT, "@ports"), ACCEPT))
    assert str(got) == "TCP 443,8000-8010"


def test_source_port_match_reads_as_some_connections() -> None:
    sport = {"payload": {"protocol": "udp", "field": "sport"}}
    dport = {"payload": {"protocol": "udp", "field": "dport"}}
    got = _read(_chain("input", "input"), _rule("input", _m(sport, 67), _m(dport, 68), ACCEPT),
                _rule("input", _m(sport, 67), {"drop": None}), _rule("input", _m(dport, 68), ACCEPT))
    assert str(got) == "UDP 68"  # the partial drop never hides the later accept


@pytest.mark.parametrize(("objects", "message"), [
    ((_chain("input", "input"), _chain("c"), _chain("d"), _rule("input", {"jump": {"target": "c"}}),
      _rule("c", {"jump": {"target": "d"}}), _rule("d", {"goto": {"target": "c"}})), "loop"),
    ((_chain("input", "input"), _rule("input", {"jump": {"target": "nowhere"}})), "table inet t does not have"),
    ((_chain("input", "input"), _rule("input", _m({"payload": {"protocol": "th", "field": "dport"}}, 53), ACCEPT)),
     "without an earlier meta l4proto"),
    ((_chain("pre", "prerouting", kind="nat", policy="accept"),
      _rule("pre", {"dnat": {"addr": "10.0.0.1", "port": 80}})), "destination NAT"),
    ((_chain("pre", "prerouting", kind="nat", policy="accept"), _rule("pre", {"drop": None})),
     "in a nat chain not evaluated"),
    ((_chain("pre", "prerouting", kind="nat", policy="accept"), _chain("c"), _rule("pre", {"jump": {"target": "c"}}),
      _rule("c", {"redirect": {"port": 3128}})), "destination NAT"),
    ((_chain("raw", "prerouting", policy="accept"), _rule("raw", {"notrack": None})), "'notrack' not evaluated"),
    ((_chain("in", "ingress"),), "hook 'ingress'"),
    ((_chain("input", "input"), _rule("input", _m({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), ACCEPT)),
     "not evaluated"),
    ((_chain("input", "input"), {"set": {"family": "inet", "table": "t", "name": "s",
                                         "type": "ipv4_addr . inet_service", "elem": []}},
      _rule("input", _m(DPORT, "@s"), ACCEPT)), "not inet_service"),
])
def test_refused_clearly(objects: tuple[dict[str, Any], ...], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _read(*objects)


def test_nat_chains_that_translate_sources_only_are_ignored() -> None:
    got = _read(_chain("input", "input"), _rule("input", _m(DPORT, 22), ACCEPT),
                _chain("post", "postrouting", kind="nat", policy="accept"),
                _rule("post", _m({"meta": {"key": "oifname"}}, "eth0"), {"masquerade": None}))
    assert str(got) == "TCP 22"


def test_reverse_path_filter_passes_the_pairs_own_addresses() -> None:
    rpf = {"fib": {"result": "oif", "flags": ["saddr", "mark", "iif"]}}
    got = _read(_chain("pre", "prerouting", policy="accept"), _rule("pre", _m(rpf, False), {"drop": None}),
                _chain("input", "input"), _rule("input", _m(DPORT, 22), ACCEPT))
    assert str(got) == "TCP 22"


def test_ct_status_dnat_never_matches_when_no_destination_nat_is_loaded() -> None:
    status = {"ct": {"key": "status"}}
    assert str(_read(_chain("input", "input"), _rule("input", _m(status, "dnat", "in"), ACCEPT),
                     _rule("input", _m(DPORT, 22), ACCEPT))) == "TCP 22"
