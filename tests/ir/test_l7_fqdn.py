"""The IR's L7 (HTTP) constraint and DNS names of external peers: validation, semantics, policy-as-code."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from microseg.errors import InputError
from microseg.ir.model import (
    AllowRule,
    HttpMatch,
    Justification,
    Policy,
    PolicyException,
    Protocol,
    Workload,
    WorkloadKind,
    fqdn_matches,
)
from microseg.ir.semantics import Evaluator, connectivity
from microseg.ir.serde import dump_policy, load_policy

J = Justification(kind="declared", text="test")
GET_API = HttpMatch(method="GET", path="/api/.*")
HEALTH = HttpMatch(path="/healthz(\\?.*)?")


def pod(name: str) -> Workload:
    ns, short = name.split("/")
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector={"app": short})


def rule(rid: str, *http: HttpMatch, ports: tuple[str, ...] = ("8080",), src: str = "shop/a",
         dst: str = "shop/b") -> AllowRule:
    return AllowRule(id=rid, sources=(src,), destinations=(dst,), protocol=Protocol.TCP, ports=ports,
                     justification=J, http=http)


PODS = (pod("shop/a"), pod("shop/b"), pod("kube-system/x"), pod("kube-system/y"))


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},  # neither method nor path
    {"path": ""},
    {"path": "/a(?i)"},  # Perl/Python extensions are not POSIX
    {"path": "/a/\\d+"},
    {"path": "/a[\\d]"},
    {"path": "/a[[:digit:]]"},
    {"path": "/a.*?"},
    {"path": "/a)("},
    {"method": "GET\n"},
])
def test_http_match_fails_closed_on_ambiguous_or_empty_patterns(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        HttpMatch(**kwargs)


def test_http_needs_tcp_and_is_canonical() -> None:
    with pytest.raises(ValidationError, match="need protocol TCP"):
        AllowRule(id="R", sources=("a",), destinations=("b",), protocol=Protocol.UDP, ports=("53",),
                  justification=J, http=(GET_API,))
    assert rule("R", HEALTH, GET_API, GET_API).http == (HEALTH, GET_API)  # sorted, deduplicated


def test_patterns_match_the_whole_method_and_path() -> None:
    assert GET_API.matches("GET", "/api/orders?x=1")
    assert not GET_API.matches("GETX", "/api/x") and not GET_API.matches("GET", "/v1/api/x")
    assert HEALTH.matches("PUT", "/healthz") and HEALTH.matches("GET", "/healthz?full=1")
    assert not HttpMatch(path="/healthz").matches("GET", "/healthz?full=1")


@pytest.mark.parametrize("name", ["Example.com", "example.com.", "a..b", "-a.example", "*.", "a.*.example",
                                  "**.example.com", "a b.example", "x" * 64 + ".example"])
def test_bad_dns_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        Workload(name="external:x", kind=WorkloadKind.EXTERNAL, fqdns=(name,))


def test_dns_names_are_for_external_peers_and_wildcards_take_one_label() -> None:
    with pytest.raises(ValidationError, match="only external peers"):
        Workload(name="vm1", kind=WorkloadKind.HOST, fqdns=("vm1.example",))
    w = Workload(name="external:x", kind=WorkloadKind.EXTERNAL, fqdns=("b.example", "*.a.example", "b.example"))
    assert w.fqdns == ("*.a.example", "b.example")
    assert fqdn_matches("*.a.example", "www.a.example")
    assert not fqdn_matches("*.a.example", "a.example") and not fqdn_matches("*.a.example", "x.www.a.example")


# -- semantics ------------------------------------------------------------------------------------------------


def test_connectivity_is_layer_4_and_decide_reports_the_l7_constraint() -> None:
    l7 = Policy(workloads=PODS, rules=(rule("R1", GET_API),))
    l4 = Policy(workloads=PODS, rules=(rule("R1"),))
    assert connectivity(l7) == connectivity(l4)
    d = Evaluator(l7).decide("shop/a", "shop/b", Protocol.TCP, 8080)
    assert d.allowed and d.rule_ids == ("R1",) and d.http == (GET_API,) and d.l7_constrained
    plain = Evaluator(l4).decide("shop/a", "shop/b", Protocol.TCP, 8080)
    assert plain.allowed and plain.http is None and not plain.l7_constrained
    assert not Evaluator(l7).decide("shop/a", "shop/b", Protocol.TCP, 8081).allowed


def test_l7_constraints_combine_as_a_union() -> None:
    both = Policy(workloads=PODS, rules=(rule("R1", GET_API), rule("R2", HEALTH)))
    assert Evaluator(both).decide("shop/a", "shop/b", Protocol.TCP, 8080).http == (HEALTH, GET_API)
    # A rule without L7 constraints on the same connection admits any traffic.
    mixed = Policy(workloads=PODS, rules=(rule("R1", GET_API), rule("R2", ports=("8000-9000",))))
    d = Evaluator(mixed).decide("shop/a", "shop/b", Protocol.TCP, 8080)
    assert d.rule_ids == ("R1", "R2") and d.http is None
    # Only where the L4-only rule applies.
    narrow = Policy(workloads=PODS, rules=(rule("R1", GET_API, ports=("8080-8081",)), rule("R2", ports=("8081",))))
    assert Evaluator(narrow).decide("shop/a", "shop/b", Protocol.TCP, 8080).http == (GET_API,)
    assert Evaluator(narrow).decide("shop/a", "shop/b", Protocol.TCP, 8081).http is None


def test_nothing_of_ours_enforces_l7_between_workloads_outside_default_deny() -> None:
    p = Policy(workloads=PODS, rules=(rule("R1", GET_API, src="kube-system/x", dst="kube-system/y"),))
    d = Evaluator(p).decide("kube-system/x", "kube-system/y", Protocol.TCP, 8080)
    assert d.allowed and d.http is None


# -- policy-as-code -------------------------------------------------------------------------------------------


def test_l7_and_dns_names_round_trip_and_are_omitted_when_empty() -> None:
    ext = Workload(name="external:pay", kind=WorkloadKind.EXTERNAL, addresses=("203.0.113.0/24",),
                   fqdns=("api.pay.example",))
    exc = PolicyException(rule=rule("EX-1", GET_API, dst="external:pay"), guardrail="G1", approver="alice",
                          reason="vendor API", expires=datetime(2031, 1, 1, 23, 59, 59, 999999, tzinfo=UTC))
    policy = Policy(workloads=(*PODS, ext), rules=(rule("R1", GET_API, HEALTH), rule("R2")), exceptions=(exc,))
    texts = dump_policy(policy)
    again = load_policy(texts)
    assert again.rules == policy.rules and again.workload_map()["external:pay"].fqdns == ("api.pay.example",)
    assert again.exceptions[0].rule.http == (GET_API,)  # an exception never loses its L7 constraint
    assert dump_policy(again) == texts
    r2 = texts["rules.yaml"].split("- id: R2", 1)[1]
    assert "http" not in r2 and "fqdns" not in texts["workloads.yaml"].split("name: external:pay", 1)[0]


def test_a_malformed_http_match_in_rules_yaml_fails_with_file_and_field() -> None:
    texts = dump_policy(Policy(workloads=PODS, rules=(rule("R1", GET_API),)))
    texts["rules.yaml"] = texts["rules.yaml"].replace("path: /api/.*", "path: /api/(?i).*")
    with pytest.raises(InputError) as err:
        load_policy(texts)
    assert err.value.file == "rules.yaml" and "http" in (err.value.field or "")


# -- where DNS names come from: the inventory's external peers (a person writes them) -------------------------


def test_the_native_inventory_carries_dns_names_of_external_peers(tmp_path: Path) -> None:
    from microseg.sources.inventory import load_inventory

    (tmp_path / "inv.yaml").write_text(
        "apiVersion: microseg/v1\nkind: Inventory\nexternal:\n"
        "- name: payments\n  fqdns: [api.payments.example, '*.cdn.payments.example']\n"
        "- name: partner\n  cidrs: [198.51.100.0/24]\n  fqdns: [api.partner.example]\n", encoding="utf-8")
    wl = load_inventory([tmp_path]).by_name()
    assert wl["external:payments"].fqdns == ("*.cdn.payments.example", "api.payments.example")
    assert wl["external:payments"].addresses == ()
    assert wl["external:partner"].addresses == ("198.51.100.0/24",)


@pytest.mark.parametrize(("entry", "line"), [("- name: nothing\n", 4), ("- name: bad\n  fqdns: [Bad.Example]\n", 5)])
def test_an_external_peer_needs_valid_addresses_or_names(tmp_path: Path, entry: str, line: int) -> None:
    from microseg.sources.inventory import load_inventory

    (tmp_path / "inv.yaml").write_text("apiVersion: microseg/v1\nkind: Inventory\nexternal:\n" + entry,
                                       encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_inventory([tmp_path])
    assert err.value.line == line


def test_synthesis_never_creates_l7_or_dns_names_from_flows() -> None:
    """Flow logs carry no reliable L7 in our readers: HTTP matches and names come from a person only."""
    from microseg.analyses.synthesis import synthesize
    from microseg.analyses.zones import default_guardrails

    from ..analyses.test_synthesis import EDGES, INV

    policy = synthesize(INV, EDGES, guardrails=default_guardrails()).policy
    assert policy.rules and not any(r.http for r in policy.all_rules())
    assert not any(w.fqdns for w in policy.workloads)
