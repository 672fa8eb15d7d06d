"""L7 (HTTP) rules and DNS-named external peers on every back end that cannot express them.

One test per back end for each refusal (parametrised by target): a rule with HTTP matches that the
target would compile raises ``UnsupportedFeature(target, "L7 HTTP rules", rule_id)``, and a peer known
by DNS names only raises where the target matches addresses. A peer with addresses *and* names is
compiled from its addresses: the output is byte-identical to the same policy without the names (the
IR's meaning of such a peer is the union, so this is never wider; see microseg.ir.semantics).

Cilium and Istio express L7 (and Cilium DNS names); their tests are in test_cilium.py and here at the end
(Istio: the HTTP matches it can translate exactly, and the ones it must refuse).

These tests live in their own file so that the per-target test files, which other work was changing at
the same time, stay untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from microseg.backends import MODES, Mode, get_backend
from microseg.backends.base import L7_FEATURE
from microseg.errors import UnsupportedFeature
from microseg.ir.model import (
    AllowRule,
    HttpMatch,
    Justification,
    JustificationKind,
    Policy,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)

WHY = Justification(kind=JustificationKind.DECLARED, text="test")
NO_L7 = ("kubernetes", "kubernetes_admin", "calico", "aws_sg", "nftables", "panos", "fortigate", "opa")
ADDRESS_ONLY = ("kubernetes", "kubernetes_admin", "calico", "aws_sg", "nftables", "panos", "fortigate")


def pod(name: str, sa: str) -> Workload:
    ns, short = name.split("/", 1)
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector={"app": short},
                    labels={"app": short}, service_account=sa)


def host(name: str, address: str) -> Workload:
    return Workload(name=name, kind=WorkloadKind.HOST, addresses=(address,))


WORKLOADS = (pod("shop/web", "web"), pod("shop/api", "api"), host("batch-01", "10.0.1.10/32"),
             host("erp-01", "10.0.2.20/32"))
ZONES = {"shop/web": "app", "shop/api": "app", "batch-01": "app", "erp-01": "data", "external:payments": "external"}


def rule(rid: str, src: str, dst: str, port: str, http: tuple[HttpMatch, ...] = ()) -> AllowRule:
    return AllowRule(id=rid, sources=(src,), destinations=(dst,), protocol=Protocol.TCP, ports=(port,),
                     justification=WHY, http=http)


def policy(workloads: tuple[Workload, ...], rules: tuple[AllowRule, ...]) -> Policy:
    zones = {w.name: ZONES.get(w.name, "app") for w in workloads}
    return Policy(workloads=workloads, rules=rules,
                  segments=tuple(Segment(name=z, trust=50) for z in sorted(set(zones.values()))),
                  assignments=tuple(ZoneAssignment(workload=n, zone=z, reason="t") for n, z in sorted(zones.items())))


GET_API = (HttpMatch(method="GET", path="/api/.*"),)
# A pod-to-pod and a host-to-host rule: every target governs one of them.
L7_POLICY = policy(WORKLOADS, (rule("R-l7-pods", "shop/web", "shop/api", "8080", GET_API),
                               rule("R-l7-hosts", "batch-01", "erp-01", "8443", GET_API),
                               rule("R-plain", "shop/web", "shop/api", "9090")))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", NO_L7)
def test_l7_rules_are_refused_naming_the_rule(target: str, mode: Mode) -> None:
    backend = get_backend(target)
    assert "l7" not in backend.capabilities
    with pytest.raises(UnsupportedFeature) as err:
        backend.compile(L7_POLICY, mode=mode)
    assert err.value.target == target
    assert err.value.feature == L7_FEATURE
    assert err.value.rule_id in {"R-l7-pods", "R-l7-hosts"}


@pytest.mark.parametrize("target", NO_L7)
def test_the_same_rules_without_http_compile(target: str) -> None:
    plain = L7_POLICY.model_copy(update={"rules": tuple(r.model_copy(update={"http": ()}) for r in L7_POLICY.rules)})
    assert get_backend(target).compile(plain)


NAMES_ONLY = Workload(name="external:payments", kind=WorkloadKind.EXTERNAL,
                      fqdns=("api.payments.example", "*.cdn.payments.example"))
FQDN_RULES = (rule("R-fqdn-pod", "shop/web", "external:payments", "443"),
              rule("R-fqdn-host", "erp-01", "external:payments", "443"))


@pytest.mark.parametrize("target", ADDRESS_ONLY)
def test_a_peer_known_by_dns_names_only_is_refused(target: str) -> None:
    backend = get_backend(target)
    assert "fqdn" not in backend.capabilities
    with pytest.raises(UnsupportedFeature, match="FQDN peer 'external:payments'") as err:
        backend.compile(policy((*WORKLOADS, NAMES_ONLY), FQDN_RULES))
    assert err.value.target == target and err.value.rule_id in {"R-fqdn-pod", "R-fqdn-host"}


def test_istio_refuses_a_names_only_source_and_skips_egress_to_it() -> None:
    backend = get_backend("istio")
    # Egress is not Istio's to enforce (listed in the README); the names change nothing.
    assert backend.compile(policy((*WORKLOADS, NAMES_ONLY), FQDN_RULES[:1]))
    inbound = policy((*WORKLOADS, NAMES_ONLY), (rule("R-from-names", "external:payments", "shop/web", "443"),))
    with pytest.raises(UnsupportedFeature, match="FQDN peer") as err:
        backend.compile(inbound)
    assert err.value.rule_id == "R-from-names"


def test_opa_decides_by_name_so_dns_names_change_nothing() -> None:
    with_names = policy((*WORKLOADS, NAMES_ONLY), FQDN_RULES)
    without = policy((*WORKLOADS, NAMES_ONLY.model_copy(update={"fqdns": ()})), FQDN_RULES)
    assert get_backend("opa").compile(with_names) == get_backend("opa").compile(without)


ADDRESSED = Workload(name="external:payments", kind=WorkloadKind.EXTERNAL, addresses=("203.0.113.0/24",),
                     except_addresses=("203.0.113.128/25",), fqdns=("api.payments.example",))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", [*ADDRESS_ONLY, "istio", "opa"])
def test_a_peer_with_addresses_and_names_compiles_from_its_addresses(target: str, mode: Mode) -> None:
    rules = (*FQDN_RULES, rule("R-fqdn-in", "external:payments", "shop/web", "8443"),
             rule("R-fqdn-in-host", "external:payments", "batch-01", "8443"))
    with_names = policy((*WORKLOADS, ADDRESSED), rules)
    without = policy((*WORKLOADS, ADDRESSED.model_copy(update={"fqdns": ()})), rules)
    backend = get_backend(target)
    assert backend.compile(with_names, mode=mode) == backend.compile(without, mode=mode)


# -- Istio: HTTP methods and paths --------------------------------------------------------------------------


def istio_policy(*matches: HttpMatch, rules: tuple[AllowRule, ...] = ()) -> Policy:
    return policy(WORKLOADS, (rule("R-l7", "shop/web", "shop/api", "8080", tuple(matches)), *rules))


ISTIO_CRDS = Path(__file__).parents[1] / "schemas" / "crds" / "istio"


def _no_unknown_fields(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _no_unknown_fields(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    return [_no_unknown_fields(v) for v in schema] if isinstance(schema, list) else schema


def istio_docs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The documents by kind/name, each ``spec`` validated against the Istio CRD (unknown fields refused)."""
    specs = {}
    for plural in ("authorizationpolicies", "peerauthentications"):
        doc = yaml.safe_load((ISTIO_CRDS / f"{plural}.security.istio.io.yaml").read_text(encoding="utf-8"))
        version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
        specs[doc["spec"]["names"]["kind"]] = _no_unknown_fields(version["schema"]["openAPIV3Schema"]["properties"]
                                                                 ["spec"])
    out = {}
    for path, text in files.items():
        if path.endswith(".yaml"):
            for d in yaml.safe_load_all(text):
                if d is not None:
                    jsonschema.validate(d["spec"], specs[d["kind"]])
                    out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


@pytest.mark.parametrize("mode", MODES)
def test_istio_l7_rule_by_hand(mode: Mode) -> None:
    """Written from the AuthorizationPolicy reference: `to` entries are ORed, an operation's fields ANDed."""
    files = get_backend("istio").compile(istio_policy(
        HttpMatch(method="GET|HEAD", path="/api/.*"), HttpMatch(method="POST", path="/api/orders(\\?.*)?"),
        HttpMatch(path="/healthz(\\?.*)?"), HttpMatch(method=".*")), mode=mode)
    spec = istio_docs(files)["AuthorizationPolicy/microseg-api"]["spec"]
    assert spec["rules"] == [{
        "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
        "to": [{"operation": {"ports": ["8080"], "methods": ["GET", "HEAD"], "paths": ["/api/*"]}},
               {"operation": {"ports": ["8080"], "methods": ["POST"], "paths": ["/api/orders"]}},
               {"operation": {"ports": ["8080"], "paths": ["*"]}},
               {"operation": {"ports": ["8080"], "paths": ["/healthz"]}}],
    }]
    assert "## Layer 7 (HTTP) rules" in files["README.md"]


@pytest.mark.parametrize(("match", "what"), [
    (HttpMatch(path="/healthz"), "path"),  # Istio would also admit /healthz?x, which the IR does not
    (HttpMatch(path="/api/[0-9]+"), "path"),
    (HttpMatch(path="/a\\*(\\?.*)?"), "path"),  # a literal * is Istio's wildcard
    (HttpMatch(path="api/.*"), "path"),
    (HttpMatch(method="G.T"), "method"),
])
def test_istio_refuses_patterns_it_cannot_match_exactly(match: HttpMatch, what: str) -> None:
    with pytest.raises(UnsupportedFeature, match=f"HTTP {what} pattern") as err:
        get_backend("istio").compile(istio_policy(match))
    assert err.value.target == "istio" and err.value.rule_id == "R-l7"


def test_istio_shared_principal_must_be_allowed_the_same_requests() -> None:
    # shop/web and shop/job run under one service account: the principal cannot tell them apart.
    job = pod("shop/job", "web")
    narrower = policy((*WORKLOADS, job), (rule("R-l7", "shop/web", "shop/api", "8080", GET_API),
                                          rule("R-job", "shop/job", "shop/api", "8080",
                                               (HttpMatch(method="GET", path="/api/status(\\?.*)?"),))))
    with pytest.raises(UnsupportedFeature, match="same HTTP requests"):
        get_backend("istio").compile(narrower)
    same = policy((*WORKLOADS, job), (rule("R-l7", "shop/web", "shop/api", "8080", GET_API),
                                      rule("R-job", "shop/job", "shop/api", "8080")))  # L4: every request
    assert get_backend("istio").compile(same)


def test_istio_l7_output_does_not_depend_on_the_order_of_matches() -> None:
    matches = (HttpMatch(method="GET|HEAD", path="/api/.*"), HttpMatch(path="/healthz(\\?.*)?"))
    first = get_backend("istio").compile(istio_policy(*matches))
    shuffled = istio_policy(*matches)
    shuffled = shuffled.model_copy(update={"rules": tuple(  # model_copy skips the IR's canonical sort on purpose
        r.model_copy(update={"http": tuple(reversed(r.http))}) for r in reversed(shuffled.rules))})
    assert get_backend("istio").compile(shuffled) == first
