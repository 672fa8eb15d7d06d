"""The evaluator's laws, on small hand-checked policies and as hypothesis properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.ir.model import AllowRule, Justification, Policy, PortRange, Protocol, Workload
from microseg.ir.semantics import Connections, Evaluator, connectivity, merge_ranges

J = Justification(kind="observed", text="test")


def wl(name: str, kind: str = "kubernetes") -> Workload:
    ns = name.split("/")[0] if "/" in name else None
    return Workload(name=name, kind=kind, namespace=ns if kind == "kubernetes" else None,
                    selector={"app": name.rsplit("/", 1)[-1]} if kind == "kubernetes" else {})


WORKLOADS = (wl("shop/a"), wl("shop/b"), wl("shop/c"), wl("kube-system/dns"), wl("kube-system/proxy"),
             wl("external:internet", "external"), wl("vm1", "host"))


def rule(rid: str, s: str, d: str, proto: str = "TCP", ports: tuple[str, ...] = ("80",)) -> AllowRule:
    return AllowRule(id=rid, sources=(s,), destinations=(d,), protocol=proto, ports=ports, justification=J)


def test_default_deny_and_rule_match() -> None:
    p = Policy(workloads=WORKLOADS, rules=(rule("R1", "shop/a", "shop/b", ports=("80", "8080-8090")),))
    ev = Evaluator(p)
    assert ev.decide("shop/a", "shop/b", Protocol.TCP, 8085).rule_ids == ("R1",)
    assert not ev.decide("shop/a", "shop/b", Protocol.TCP, 81).allowed
    assert not ev.decide("shop/a", "shop/b", Protocol.UDP, 80).allowed
    assert not ev.decide("shop/b", "shop/a", Protocol.TCP, 80).allowed  # rules are directional
    assert not ev.decide("shop/a", "vm1", Protocol.TCP, 22).allowed
    # Excluded namespaces and the internet are not under default deny on their own side...
    assert ev.decide("kube-system/dns", "kube-system/proxy", Protocol.TCP, 1).allowed
    assert ev.decide("external:internet", "kube-system/dns", Protocol.UDP, 53).allowed
    # ...but an enforced side still needs a rule.
    assert not ev.decide("external:internet", "shop/a", Protocol.TCP, 443).allowed
    assert not ev.decide("shop/a", "kube-system/dns", Protocol.UDP, 53).allowed


def test_unknown_workload_is_enforced() -> None:
    ev = Evaluator(Policy(workloads=WORKLOADS))
    assert ev.enforced("nobody/knows")


def test_connectivity_strings_match_conformance_form() -> None:
    p = Policy(workloads=WORKLOADS, rules=(rule("R1", "shop/a", "shop/b", ports=("9090", "80", "9091-9092")),
                                           rule("R2", "shop/a", "shop/b", "UDP", ("53",))))
    conns = connectivity(p, ["shop/a", "shop/b", "kube-system/dns", "kube-system/proxy"])
    assert str(conns[("shop/a", "shop/b")]) == "TCP 80,9090-9092,UDP 53"
    assert str(conns[("kube-system/dns", "kube-system/proxy")]) == "All Connections"
    assert ("shop/b", "shop/a") not in conns
    assert ("shop/a", "kube-system/dns") not in conns


def test_merge_ranges() -> None:
    rs = [PortRange.parse(x) for x in ("10-20", "21", "30-40", "35-50", "5")]
    assert [str(r) for r in merge_ranges(rs)] == ["5", "10-21", "30-50"]
    assert Connections.of([]).empty


names = st.sampled_from([w.name for w in WORKLOADS])
rules_st = st.lists(st.builds(lambda s, d, p, a, b: rule(f"R{s}{d}{p}{a}{b}", s, d, p, (f"{min(a, b)}-{max(a, b)}",)),
                              names, names, st.sampled_from(["TCP", "UDP"]), st.integers(1, 200),
                              st.integers(1, 200)), max_size=8, unique_by=lambda r: r.id)


@settings(max_examples=60, deadline=None)
@given(rules_st, rules_st.map(lambda rs: rs[:1]))
def test_adding_a_rule_never_shrinks_reachability(base: list[AllowRule], extra: list[AllowRule]) -> None:
    ids = {r.id for r in base}
    extra = [r for r in extra if r.id not in ids]
    before = Evaluator(Policy(workloads=WORKLOADS, rules=tuple(base)))
    after = Evaluator(Policy(workloads=WORKLOADS, rules=tuple(base + extra)))
    for s in (w.name for w in WORKLOADS):
        for d in (w.name for w in WORKLOADS):
            for proto in (Protocol.TCP, Protocol.UDP):
                for port in (1, 53, 80, 150, 200):
                    if before.decide(s, d, proto, port).allowed:
                        assert after.decide(s, d, proto, port).allowed


@settings(max_examples=40, deadline=None)
@given(rules_st, st.randoms(use_true_random=False))
def test_rule_order_does_not_matter(rules: list[AllowRule], rnd: object) -> None:
    shuffled = list(rules)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = connectivity(Policy(workloads=WORKLOADS, rules=tuple(rules)))
    b = connectivity(Policy(workloads=tuple(reversed(WORKLOADS)), rules=tuple(shuffled)))
    assert a == b
