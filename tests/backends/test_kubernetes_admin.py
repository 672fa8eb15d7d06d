"""AdminNetworkPolicy / BaselineAdminNetworkPolicy back end (target ``kubernetes_admin``).

Output is validated against the network-policy-api CRD schemas in tests/schemas/crds/network-policy-api/
(the BANP one is derived, see tests/schemas/README.md); the layering (exceptions, guardrails, plan,
default deny, baseline) is checked rule by rule.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from microseg.backends import CAPABILITIES, TARGETS, Mode, get_backend
from microseg.backends.kubernetes_admin import BACKEND
from microseg.errors import MicrosegError, UnsupportedFeature
from microseg.ir.model import (
    AllowRule,
    Guardrail,
    Justification,
    JustificationKind,
    Policy,
    PolicyException,
    Protocol,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)
from tests.oracle import crd

GOLDEN = Path(__file__).parent / "golden"
WHY = Justification(kind=JustificationKind.DECLARED, text="test")


def pod(name: str, **labels: str) -> Workload:
    ns, short = name.split("/", 1)
    sel = labels or {"app": short}
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector=sel, labels=sel)


def allow(rid: str, src: list[str], dst: list[str], proto: Protocol = Protocol.TCP, *ports: str) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=ports or ("80",),
                     justification=WHY)


def documents(files: dict[str, str]) -> list[dict[str, Any]]:
    return [d for path, text in sorted(files.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d is not None]


def zoned() -> Policy:
    """web (internet-facing) -> api (app) -> db (data); a guardrail internet-facing -/-> data, and an
    approved exception web -> db on 9000."""
    web, api, db = pod("shop/web"), pod("shop/api"), pod("data/db")
    internet = Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",),
                        except_addresses=("10.0.0.0/8",))
    gr = Guardrail.model_validate({"id": "GR-edge-data", "description": "edge never reaches data",
                                   "from": {"zones": ["internet-facing"]}, "to": {"zones": ["data"]}})
    exc = PolicyException(rule=allow("AR-exc", ["shop/web"], ["data/db"], Protocol.TCP, "9000"), guardrail=gr.id,
                          approver="jane", reason="migration", expires=datetime(2030, 1, 1, tzinfo=UTC))
    return Policy(workloads=(web, api, db, internet),
                  assignments=(ZoneAssignment(workload="shop/web", zone="internet-facing", reason="t"),
                               ZoneAssignment(workload="shop/api", zone="app", reason="t"),
                               ZoneAssignment(workload="data/db", zone="data", reason="t")),
                  guardrails=(gr,),
                  rules=(allow("AR-web-api", ["shop/web"], ["shop/api"], Protocol.TCP, "8080"),
                         allow("AR-api-db", ["shop/api"], ["data/db"], Protocol.TCP, "5432"),
                         allow("AR-api-out", ["shop/api"], ["external:internet"], Protocol.TCP, "443"),
                         allow("AR-in-web", ["external:internet"], ["shop/web"], Protocol.TCP, "443")),
                  exceptions=(exc,))


def by_name(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents(files)}


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("policy", [zoned, lambda: Policy.model_validate(yaml.safe_load(
    (GOLDEN / "kubernetes" / "shop" / "policy.yaml").read_text()))])
def test_output_matches_the_network_policy_api_crds(policy: Any, mode: Mode) -> None:
    docs = documents(BACKEND.compile(policy(), mode=mode))
    assert docs
    for d in docs:
        crd.validate(d)


def test_layers_of_the_zoned_policy() -> None:
    docs = by_name(BACKEND.compile(zoned()))
    assert len(docs) == 5 and {"default", "microseg-default-deny"} <= set(docs)
    web = next(d for d in docs.values() if d["metadata"]["annotations"].get("microseg.io/workload") == "shop/web")
    assert web["spec"]["priority"] == 50
    egress = web["spec"]["egress"]
    # the exception passes first, then the guardrail denies web -> data, then the plan passes web -> api
    assert [(r["name"], r["action"]) for r in egress] == [("pass AR-exc", "Pass"), ("guardrail GR-edge-data", "Deny"),
                                                          ("pass AR-web-api", "Pass")]
    assert egress[1]["to"] == [{"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}},
                                         "podSelector": {"matchLabels": {"app": "db"}}}}]
    assert egress[0]["ports"] == [{"portNumber": {"port": 9000, "protocol": "TCP"}}]
    api = next(d for d in docs.values() if d["metadata"]["annotations"].get("microseg.io/workload") == "shop/api")
    out = [r for r in api["spec"]["egress"] if r["name"] == "pass AR-api-out"][0]
    nets = [n for peer in out["to"] for n in peer.get("networks", [])]
    assert "10.0.0.0/8" not in nets and "11.0.0.0/8" in nets and "0.0.0.0/5" in nets  # 0/0 minus 10/8
    deny = docs["microseg-default-deny"]["spec"]
    assert deny["priority"] == 100 and deny["ingress"][0]["action"] == "Deny"
    assert deny["egress"][0]["to"] == [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}]
    banp = docs["default"]
    assert banp["kind"] == "BaselineAdminNetworkPolicy" and banp["spec"]["egress"][0]["action"] == "Deny"
    readme = BACKEND.compile(zoned())["README.md"]
    assert "AR-in-web" in readme.split("## Not governed")[1].split("##")[0]


def test_observe_mode_denies_nothing() -> None:
    files = BACKEND.compile(zoned(), mode="observe")
    text = files["admin.yaml"]
    assert "action: Deny" not in text
    docs = by_name(files)
    assert docs["default"]["spec"]["ingress"][0]["action"] == "Allow"
    assert sorted(docs) == sorted(by_name(BACKEND.compile(zoned())))  # same names: enforce replaces in place


def test_a_plan_rule_breaking_a_guardrail_without_exception_is_refused() -> None:
    policy = zoned()
    policy = policy.model_copy(update={"rules": (*policy.rules, allow("AR-bad", ["shop/web"], ["data/db"],
                                                                        Protocol.TCP, "5432"))})
    with pytest.raises(MicrosegError, match="AR-bad .* breaks guardrail GR-edge-data"):
        BACKEND.compile(policy)


def test_icmp_is_unsupported() -> None:
    with pytest.raises(UnsupportedFeature, match="ICMP") as err:
        BACKEND.compile(Policy(workloads=(pod("a/x"), pod("a/y")),
                               rules=(allow("AR-1", ["a/x"], ["a/y"], Protocol.ICMP, "0"),)))
    assert err.value.target == "kubernetes_admin"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_deterministic_under_permutation(mode: Mode) -> None:
    policy = zoned()
    first = BACKEND.compile(policy, mode=mode)
    for seed in range(6):
        rng = random.Random(seed)
        workloads, rules = list(policy.workloads), list(policy.rules)
        rng.shuffle(workloads)
        rng.shuffle(rules)
        assert BACKEND.compile(policy.model_copy(update={"workloads": tuple(workloads), "rules": tuple(rules)}),
                               mode=mode) == first


@pytest.mark.parametrize("name", ["shop/Web Server\n- from: []", "shop/{{x}}#$;\\\"'"])
def test_hostile_names_stay_data(name: str) -> None:
    policy = Policy(workloads=(pod("shop/api"), Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace="shop",
                                                         selector={"app": "web"})),
                    rules=(allow("AR-1\n---\nkind: X", [name], ["shop/api"]),))
    docs = documents(BACKEND.compile(policy))
    assert {d["kind"] for d in docs} == {"AdminNetworkPolicy", "BaselineAdminNetworkPolicy"}
    for d in docs:
        crd.validate(d)
    web = next(d for d in docs if d["metadata"]["annotations"].get("microseg.io/workload") == name)
    assert web["spec"]["egress"][0]["name"] == "pass AR-1\n---\nkind: X"


def test_registry() -> None:
    assert "kubernetes_admin" in TARGETS
    backend = get_backend("kubernetes_admin")
    assert backend is BACKEND and backend.capabilities <= set(CAPABILITIES)
    assert "ipblock-except" not in backend.capabilities and "audit-log" not in backend.capabilities
