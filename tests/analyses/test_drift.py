"""Drift: desired vs deployed per pair, orphaned and dangling rules, unexplained flows, expiry, segments.

Expected findings are written by hand from the semantics in the module docstring of
``microseg.analyses.drift``; deployed output comes from the back ends (compiled from a *different*
policy where drift is wanted) and is read back by the target's reader.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from microseg.analyses.drift import (
    DriftFinding,
    canonical,
    compare_deployed,
    dangling_rules,
    desired_for_target,
    detect_drift,
    expired_exceptions,
    orphaned_rules,
    policy_locations,
    subtract,
    target_scope,
    unexplained_flows,
    unsegmented,
)
from microseg.backends import get_backend
from microseg.errors import InputError
from microseg.ir.model import (
    AllowRule,
    Edge,
    Guardrail,
    Inventory,
    Justification,
    JustificationKind,
    Policy,
    PolicyException,
    PortRange,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
    ZoneMatch,
)
from microseg.ir.semantics import Connections
from microseg.ir.serde import dump_policy
from microseg.sources.deployed import calico as calico_reader
from microseg.sources.deployed import istio as istio_reader
from microseg.sources.deployed import kubernetes as k8s_reader

NOW = datetime(2026, 11, 9, tzinfo=UTC)
TCP, UDP = Protocol.TCP, Protocol.UDP


def pod(name: str) -> Workload:
    ns, app = name.split("/")
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, k8s_kind="Deployment",
                    labels=(("app", app),), selector=(("app", app),), service_account=app,
                    namespace_labels=(("kubernetes.io/metadata.name", ns),))


def rule(rid: str, src: str, dst: str, protocol: Protocol, *ports: str,
         kind: JustificationKind = JustificationKind.OBSERVED) -> AllowRule:
    return AllowRule(id=rid, sources=(src,), destinations=(dst,), protocol=protocol,
                     ports=tuple(PortRange.parse(p) for p in ports), justification=Justification(kind=kind, text="t"))


WORKLOADS = (
    pod("shop/web"), pod("shop/orders"), pod("shop/db"),
    Workload(name="legacy", kind=WorkloadKind.HOST, addresses=("10.0.0.5/32",)),
    Workload(name="backup", kind=WorkloadKind.HOST, addresses=("10.0.0.6/32",)),
    Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",),
             except_addresses=("10.0.0.0/8",)),
    Workload(name="external:psp", kind=WorkloadKind.EXTERNAL, addresses=("203.0.113.0/24",)),
)
RULES = (
    rule("AR-web-orders", "shop/web", "shop/orders", TCP, "8080"),
    rule("AR-orders-db", "shop/orders", "shop/db", TCP, "5432"),
    rule("AR-inet-web", "external:internet", "shop/web", TCP, "443"),
    rule("AR-infra", "shop/orders", "legacy", TCP, "9100", kind=JustificationKind.INFRASTRUCTURE),
)
EXCEPTION = PolicyException(
    rule=AllowRule(id="EX-1", sources=("legacy",), destinations=("shop/db",), protocol=TCP,
                   ports=(PortRange.parse("5432"),),
                   justification=Justification(kind=JustificationKind.EXCEPTION, text="approved")),
    guardrail="GR-app-to-data-admin", approver="ciso", reason="migration",
    expires=datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC))


def make_policy(rules: tuple[AllowRule, ...] = RULES, **changes: object) -> Policy:
    base = Policy(
        workloads=WORKLOADS,
        segments=(Segment(name="edge", trust=30), Segment(name="app", trust=50), Segment(name="data", trust=90)),
        assignments=(ZoneAssignment(workload="shop/web", zone="edge", reason="r"),
                     ZoneAssignment(workload="shop/orders", zone="app", reason="r"),
                     ZoneAssignment(workload="shop/db", zone="data", reason="r"),
                     ZoneAssignment(workload="legacy", zone="app", reason="r"),
                     ZoneAssignment(workload="backup", zone="app", reason="r")),
        guardrails=(Guardrail(id="GR-edge-to-data", description="edge never reaches data",
                              source=ZoneMatch(zones=("edge",)), destination=ZoneMatch(zones=("data",))),),
        rules=rules, exceptions=(EXCEPTION,))
    return base.model_copy(update=changes)


def pair_findings(findings: list[DriftFinding]) -> set[tuple[str, str, str | None, str | None, str]]:
    return {(f.id, f.severity, f.source, f.destination, f.message) for f in findings}


# -- connections as sets --------------------------------------------------------------------------------------


def test_subtract_everything_minus_one_port() -> None:
    rest = subtract(Connections(everything=True), Connections.of([(TCP, PortRange(start=80, end=80))]))
    assert not rest.everything
    assert not rest.allows(TCP, 80) and rest.allows(TCP, 79) and rest.allows(TCP, 81)
    assert rest.allows(UDP, 80) and rest.allows(Protocol.ICMP, 0) and rest.allows(Protocol.SCTP, 9)
    assert str(subtract(Connections.of([(TCP, PortRange(start=1, end=10))]),
                        Connections.of([(TCP, PortRange(start=3, end=4)), (TCP, PortRange(start=10, end=10))]))
               ) == "TCP 1-2,5-9"
    assert subtract(Connections.of([(TCP, PortRange(start=5, end=5))]), Connections(everything=True)).empty


def test_canonical_writes_every_port_of_every_protocol_as_everything() -> None:
    full = Connections.of([(p, PortRange(start=0, end=65535)) for p in Protocol])
    assert full != Connections(everything=True) and canonical(full) == Connections(everything=True)


# -- desired as the target can express it -------------------------------------------------------------------


def test_desired_for_kubernetes_gives_a_peer_inside_another_peers_cidr_its_allowances() -> None:
    # external:psp (203.0.113.0/24) lies inside external:internet (0/0 minus 10/8), which may reach
    # shop/web on TCP 443: an ipBlock for the internet matches psp's addresses too.
    policy = make_policy()
    governed = target_scope("kubernetes", policy, {}).governed
    desired = desired_for_target("kubernetes", policy, governed)
    assert str(desired[("external:psp", "shop/web")]) == "TCP 443"
    assert ("external:psp", "shop/web") not in {k for k, v in desired.items() if v.empty}
    # The internet itself is not inside psp: it gets nothing of psp's (psp has no rule anyway).
    assert str(desired[("external:internet", "shop/web")]) == "TCP 443"
    # Host-to-host pairs are nobody's business for NetworkPolicy.
    assert ("legacy", "backup") not in governed and ("legacy", "shop/db") in governed


def test_desired_for_istio_is_tcp_from_port_1_and_for_kubernetes_drops_port_0() -> None:
    policy = make_policy(RULES + (rule("AR-dns", "shop/web", "shop/orders", UDP, "53"),
                                  rule("AR-low", "shop/web", "shop/db", TCP, "0-100")))
    istio = desired_for_target("istio", policy, target_scope("istio", policy, {}).governed)
    assert str(istio[("shop/web", "shop/orders")]) == "TCP 8080"
    assert str(istio[("shop/web", "shop/db")]) == "TCP 1-100"
    k8s = desired_for_target("kubernetes", policy, target_scope("kubernetes", policy, {}).governed)
    assert str(k8s[("shop/web", "shop/orders")]) == "TCP 8080,UDP 53"
    assert str(k8s[("shop/web", "shop/db")]) == "TCP 1-100"
    # istio governs pairs by their destination only: a pod calling a host is not its business.
    assert ("shop/orders", "legacy") not in target_scope("istio", policy, {}).governed


# -- desired vs deployed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "read_back"), [("kubernetes", k8s_reader.read_back),
                                                   ("calico", calico_reader.read_back),
                                                   ("istio", istio_reader.read_back)])
def test_a_faithful_deployment_shows_no_pair_drift(target: str, read_back: object) -> None:
    policy = make_policy()
    files = get_backend(target).compile(policy, mode="enforce")
    deployed = read_back(files, policy)  # type: ignore[operator]
    assert compare_deployed(policy, target, deployed, target_scope(target, policy, files)) == []


def test_kubernetes_deployed_wider_narrower_and_changed_on_exactly_the_edited_pairs() -> None:
    desired = make_policy()
    # What is deployed was compiled from an edited policy: web -> db added, orders -> db widened to
    # 5432-5433, web -> orders dropped.
    edited = make_policy((rule("AR-web-db", "shop/web", "shop/db", TCP, "5432"),
                          rule("AR-orders-db", "shop/orders", "shop/db", TCP, "5432-5433"),
                          *(r for r in RULES if r.id not in ("AR-web-orders", "AR-orders-db"))))
    files = get_backend("kubernetes").compile(edited, mode="enforce")
    found = compare_deployed(desired, "kubernetes", k8s_reader.read_back(files, desired),
                             target_scope("kubernetes", desired, files))
    assert pair_findings(found) == {
        ("MS401", "high", "shop/web", "shop/db", "deployed allows TCP 5432; the reviewed policy allows nothing"),
        ("MS402", "medium", "shop/web", "shop/orders",
         "deployed allows nothing; the reviewed policy allows TCP 8080 (it would break)"),
        ("MS403", "high", "shop/orders", "shop/db", "deployed also allows TCP 5433"),
    }
    by_pair = {(f.source, f.destination): f for f in found}
    assert by_pair[("shop/orders", "shop/db")].rule == "AR-orders-db"
    assert by_pair[("shop/web", "shop/db")].rule is None  # no reviewed rule stands behind the pair


def test_no_network_policy_at_all_means_every_governed_pair_is_open() -> None:
    # An empty deployment isolates nothing: every pod allows everything, which is wider than the review
    # on every governed pair.
    policy = make_policy()
    found = compare_deployed(policy, "kubernetes", k8s_reader.read_back({}, policy),
                             target_scope("kubernetes", policy, {}))
    assert {f.id for f in found} == {"MS401", "MS403"}
    assert all(f.severity == "high" for f in found)
    assert len(found) == len(target_scope("kubernetes", policy, {}).governed)


def test_nftables_scope_names_hosts_without_a_ruleset() -> None:
    policy = make_policy()
    scope = target_scope("nftables", policy, {"index.json": '{"hosts": [{"workload": "legacy", "file": "l.nft"}]}'})
    assert scope.unenforced == ("backup",)
    found = compare_deployed(policy, "nftables", {}, scope)
    assert [f for f in found if f.id == "MS409"] == [DriftFinding(
        "MS409", "high", "backup is under default deny in the reviewed policy but the deployed nftables output does "
        "not enforce it", source="backup")]


def test_nftables_scope_refuses_a_malformed_index() -> None:
    with pytest.raises(InputError) as e:
        target_scope("nftables", make_policy(), {"index.json": '{"hosts": [{"file": "x"}]}'})
    assert e.value.file == "index.json"
    with pytest.raises(InputError):
        target_scope("nftables", make_policy(), {})


def test_an_unknown_target_is_refused() -> None:
    with pytest.raises(InputError) as e:
        target_scope("cilium", make_policy(), {})
    assert e.value.field == "--target"


# -- flows ----------------------------------------------------------------------------------------------------


def edge(src: str, dst: str, port: int, flows: int, last: datetime, denied: int = 0) -> Edge:
    return Edge(source=src, destination=dst, protocol=TCP, port=port, flows=flows, denied_flows=denied,
                last_seen=last, first_seen=last, days=1)


def test_orphaned_rules_are_judged_against_the_end_of_the_flow_data() -> None:
    end = datetime(2026, 11, 8, tzinfo=UTC)
    edges = [edge("shop/web", "shop/orders", 8080, 10, end),
             edge("shop/orders", "shop/db", 5432, 5, datetime(2026, 10, 20, tzinfo=UTC)),
             edge("shop/orders", "shop/db", 5433, 9, end)]  # another port: no hit for AR-orders-db
    found = orphaned_rules(make_policy(), edges, 7)
    assert {f.rule: f.message for f in found} == {
        "AR-orders-db": "rule AR-orders-db had no flow hit in the last 7 day(s) of flow data "
                        "(last hit 2026-10-20T00:00:00+00:00)",
        "AR-inet-web": "rule AR-inet-web had no flow hit in the last 7 day(s) of flow data "
                       "(never hit by an observed flow)",
        "EX-1": "rule EX-1 had no flow hit in the last 7 day(s) of flow data (never hit by an observed flow)",
    }  # AR-infra is an infrastructure allowance: not judged
    assert {f.rule for f in orphaned_rules(make_policy(), edges, 30)} == {"AR-inet-web", "EX-1"}


def test_unexplained_flows() -> None:
    t = datetime(2026, 11, 8, tzinfo=UTC)
    edges = [edge("shop/web", "shop/orders", 8080, 10, t),  # allowed
             edge("shop/web", "shop/db", 5432, 3, t),  # edge -> data: breaks GR-edge-to-data
             edge("shop/orders", "legacy", 22, 2, t),  # app -> app, no rule
             edge("shop/orders", "shop/db", 6379, 0, t, denied=4)]  # only ever denied: nothing to break
    found = unexplained_flows(make_policy(), edges)
    assert [(f.severity, f.source, f.destination, f.message) for f in found] == [
        ("high", "shop/orders", "legacy", "observed TCP 22 is not allowed by the reviewed policy: it would break at "
                                          "enforcement"),
        ("medium", "shop/web", "shop/db", "observed TCP 5432 breaks guardrail GR-edge-to-data and is denied by the "
                                          "reviewed policy: review it (lateral movement or an undeclared dependency)"),
    ]
    assert found[0].evidence == "2 flow(s) on 1 day(s), last seen 2026-11-08T00:00:00+00:00"


# -- inventory, expiry, segments ------------------------------------------------------------------------------


def test_rules_naming_workloads_gone_from_the_inventory() -> None:
    inventory = Inventory(workloads=tuple(w for w in WORKLOADS if w.name != "shop/db"))
    found = dangling_rules(make_policy(), inventory)
    assert {(f.rule, f.message) for f in found} == {
        ("AR-orders-db", "rule AR-orders-db names shop/db, not in the current inventory: that side selects no "
                         "workload"),
        ("EX-1", "rule EX-1 names shop/db, not in the current inventory: that side selects no workload"),
    }


def test_exceptions_expire_at_the_end_of_their_day() -> None:
    policy = make_policy()
    assert expired_exceptions(policy, datetime(2026, 6, 30, 12, tzinfo=UTC)) == []
    found = expired_exceptions(policy, datetime(2026, 7, 1, tzinfo=UTC))
    assert [(f.id, f.severity, f.rule, f.message) for f in found] == [
        ("MS407", "high", "EX-1", "exception EX-1 to GR-app-to-data-admin expired on 2026-06-30 (approver ciso)")]


def test_workloads_in_no_segment() -> None:
    policy = make_policy(assignments=(ZoneAssignment(workload="shop/web", zone="edge", reason="r"),
                                      ZoneAssignment(workload="shop/orders", zone="ghost", reason="r"),
                                      ZoneAssignment(workload="shop/db", zone="data", reason="r"),
                                      ZoneAssignment(workload="backup", zone="app", reason="r")))
    inventory = Inventory(workloads=(*WORKLOADS, pod("shop/new"),
                                     Workload(name="external:new", kind=WorkloadKind.EXTERNAL)))
    assert {(f.source, f.message) for f in unsegmented(policy, inventory)} == {
        ("legacy", "legacy has no zone assignment"),
        ("shop/orders", "shop/orders is assigned to zone 'ghost', which is not a segment"),
        ("shop/new", "shop/new is in the current inventory but not in the policy: it is in no segment (re-plan to "
                     "place it)"),
    }  # external peers without a zone are not ours to place
    assert unsegmented(make_policy()) == []


# -- the whole report and where findings point --------------------------------------------------------------


def test_policy_locations_point_at_the_entry_line() -> None:
    policy = make_policy()
    texts = dump_policy(policy)
    texts["exceptions.yaml"] = ("exceptions:\n- guardrail: GR-app-to-data-admin\n  sources: [legacy]\n"
                                "  destinations: [shop/db]\n  protocol: TCP\n  ports: ['5432']\n  approver: ciso\n"
                                "  reason: migration\n  expires: 2026-06-30\n- id: EX-named\n  guardrail: g\n"
                                "  sources: [legacy]\n  destinations: [shop/db]\n  protocol: TCP\n  ports: ['1']\n"
                                "  approver: a\n  reason: r\n  expires: 2026-06-30\n")
    loc = policy_locations(texts, where="pol")
    lines = texts["rules.yaml"].splitlines()
    # rules.yaml: one header comment line, "rules:", then the rules sorted by id ("AR-inet-web" < "AR-infra").
    assert loc["rule:AR-inet-web"].file == "pol/rules.yaml" and loc["rule:AR-inet-web"].line == 3
    for rid in ("AR-infra", "AR-orders-db", "AR-web-orders"):
        line = loc[f"rule:{rid}"].line
        assert line is not None and lines[line - 1] == f"- id: {rid}"
    assert loc["exception:EX-named"].line == 10
    generated = [k for k in loc if k.startswith("exception:") and k != "exception:EX-named"]
    assert len(generated) == 1 and loc[generated[0]].line == 2
    wl_lines = texts["workloads.yaml"].splitlines()
    wl_line = loc["workload:legacy"].line
    assert wl_line is not None and "legacy" in wl_lines[wl_line - 1]


def test_detect_drift_sorts_and_only_runs_the_checks_it_has_inputs_for() -> None:
    report = detect_drift(make_policy(), now=datetime(2026, 7, 1, tzinfo=UTC))
    assert [f.id for f in report.findings] == ["MS407"] and report.target is None
    assert report.failing("high") and not report.failing("critical")
    with pytest.raises(InputError):
        detect_drift(make_policy(), now=NOW, orphan_days=0)


def test_aws_sg_a_removed_ingress_rule_narrows_the_pair_and_a_new_host_is_unenforced() -> None:
    import json

    from microseg.sources.deployed import aws_sg as aws_sg_reader
    from tests.backends.contract_cases import CASES

    policy = CASES["estate-addressed"]()
    files = get_backend("aws_sg").compile(policy, mode="enforce")
    scope = target_scope("aws_sg", policy, files)
    assert compare_deployed(policy, "aws_sg", aws_sg_reader.read_back(files, policy), scope) == []
    # Someone deletes erp-01's ingress rule for SSH from the bastion; ICMP from it stays.
    doc = json.loads(files["main.tf.json"])
    del doc["resource"]["aws_vpc_security_group_ingress_rule"]["sg-erp-01--in--tcp-22--sg-bastion-01"]
    edited = {**files, "main.tf.json": json.dumps(doc)}
    found = compare_deployed(policy, "aws_sg", aws_sg_reader.read_back(edited, policy), scope)
    assert pair_findings(found) == {
        ("MS403", "medium", "bastion-01", "erp-01", "deployed does not allow TCP 22 (it would break)")}
    # A host the review now puts under default deny, for which no group was deployed.
    grown = policy.model_copy(update={"workloads": (*policy.workloads, Workload(
        name="new-host", kind=WorkloadKind.HOST, addresses=("10.9.9.9/32",)))})
    assert target_scope("aws_sg", grown, files).unenforced == ("new-host",)


def test_the_report_does_not_depend_on_input_order() -> None:
    from microseg.reports.drift import render_json, render_sarif

    t = datetime(2026, 11, 8, tzinfo=UTC)
    edges = [edge("shop/orders", "legacy", 22, 2, t), edge("shop/web", "shop/db", 5432, 3, t),
             edge("shop/web", "shop/orders", 8080, 10, t)]
    inventory = Inventory(workloads=tuple(w for w in WORKLOADS if w.name != "shop/db"))

    def report(policy: Policy, edges: list[Edge]) -> tuple[str, str]:
        files = get_backend("kubernetes").compile(policy, mode="enforce")
        r = detect_drift(policy, now=datetime(2026, 7, 1, tzinfo=UTC), target="kubernetes",
                         deployed=k8s_reader.read_back({}, policy), scope=target_scope("kubernetes", policy, files),
                         edges=edges, inventory=inventory, orphan_days=7)
        return render_json(r), render_sarif(r, version="test")

    policy = make_policy()
    shuffled = policy.model_copy(update={"workloads": policy.workloads[::-1], "rules": policy.rules[::-1],
                                         "assignments": policy.assignments[::-1]})
    first = report(policy, edges)
    assert report(shuffled, edges[::-1]) == first
    assert {"MS401", "MS404", "MS405", "MS406", "MS407"} <= {f["id"] for f in json.loads(first[0])["findings"]}
