"""Istio AuthorizationPolicy/PeerAuthentication back end and its read-back.

Golden files under golden/istio/<case>/ were written by hand from the Istio semantics (allow-nothing
per namespace, ALLOW per workload, principals from service accounts, ipBlocks for peers without mesh
identity, STRICT mTLS with plaintext only where such a peer is allowed, dry-run for observe) and are
compared byte for byte; a test never regenerates them. Generated objects are validated against the
openAPIV3Schema of Istio's own CRDs (tests/schemas/crds/istio/, see tests/schemas/README-istio.md),
with unknown fields refused, plus the CRDs' CEL validation rules, which jsonschema cannot run, checked
by hand. Semantics: read_back(compiled) equals connectivity(policy) at mesh destinations, and
network-config-analyzer, an independent evaluator of Istio AuthorizationPolicies, agrees.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.backends import CAPABILITIES, TARGETS, Backend, get_backend
from microseg.backends.istio import BACKEND
from microseg.errors import InputError, MicrosegError, UnsupportedFeature
from microseg.examples import example_dir
from microseg.ir.model import (
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    PortRange,
    Protocol,
    Workload,
    WorkloadKind,
)
from microseg.ir.semantics import Connections, is_enforced
from microseg.pipeline import PlanOutcome, plan, read_policy_dir
from microseg.sources.deployed.istio import read_back
from microseg.sources.inventory import load_inventory
from tests.backends._istio import ALL_TCP, at_mesh, expected_at_mesh
from tests.oracle import nca

GOLDEN = Path(__file__).parent / "golden" / "istio"
CRDS = Path(__file__).parents[1] / "schemas" / "crds" / "istio"
CASES = sorted((case.name, expected.name.removeprefix("expected-"))
               for case in GOLDEN.iterdir() for expected in case.glob("expected-*"))
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
OBS = Justification(kind=JustificationKind.OBSERVED, text="observed")


def load_case(case: str) -> Policy:
    return Policy.model_validate(yaml.safe_load((GOLDEN / case / "policy.yaml").read_text(encoding="utf-8")))


def k8s(name: str, sa: str | None = None, selector: dict[str, str] | None = None, **kw: Any) -> Workload:
    ns, short = name.split("/", 1)
    sel = {"app": short} if selector is None else selector
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector=sel, labels=sel,
                    service_account=short if sa is None else sa, **kw)


def host(name: str, *addresses: str) -> Workload:
    return Workload(name=name, kind=WorkloadKind.HOST, addresses=addresses)


def rule(rid: str, src: list[str], dst: list[str], proto: Protocol = Protocol.TCP,
         ports: tuple[str, ...] = ("80",)) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=ports,
                     justification=OBS)


def documents(files: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d is not None]
    return docs


# -- CRD schemas ------------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists properties (kubectl --validate=strict)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _spec_validator(kind: str, plural: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / f"{plural}.security.istio.io.yaml").read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]["properties"]["spec"]))


VALIDATORS = {"AuthorizationPolicy": _spec_validator("AuthorizationPolicy", "authorizationpolicies"),
              "PeerAuthentication": _spec_validator("PeerAuthentication", "peerauthentications")}


def _cel_violations(kind: str, spec: dict[str, Any]) -> Iterator[str]:
    """The CRDs' x-kubernetes-validations rules, which only the API server evaluates, checked by hand."""
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    for k, v in labels.items():
        if not k:
            yield "key must not be empty"
        if "*" in k:
            yield "wildcard not allowed in label key match"
        if "*" in v:
            yield "wildcard not allowed in label value match"
    if kind == "AuthorizationPolicy":
        if sum(1 for f in ("selector", "targetRef", "targetRefs") if f in spec) > 1:
            yield "only one of targetRefs or selector can be set"
        for r in spec.get("rules") or []:
            for f in r.get("from") or []:
                src = f.get("source") or {}
                if ({"serviceAccounts", "notServiceAccounts"} & set(src)
                        and {"principals", "notPrincipals", "namespaces", "notNamespaces"} & set(src)):
                    yield "Cannot set serviceAccounts with namespaces or principals"
    else:
        ports = spec.get("portLevelMtls")
        if ports is not None:
            if not all(str(p).isdigit() and 0 < int(p) <= 65535 for p in ports):
                yield "port must be between 1-65535"
            if not labels:
                yield "portLevelMtls requires selector"


def check_istio_object(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "security.istio.io/v1", doc
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, doc
    meta = doc["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}
    assert len(meta["name"]) <= 63 and DNS1123_LABEL.fullmatch(meta["name"]), meta["name"]
    assert DNS1123_LABEL.fullmatch(meta["namespace"]), meta["namespace"]
    assert all(isinstance(v, str) for v in meta.get("annotations", {}).values())
    errors = [e.message for e in VALIDATORS[doc["kind"]].iter_errors(doc["spec"])]
    assert not errors, (doc, errors)
    assert not list(_cel_violations(doc["kind"], doc["spec"])), doc


def check_never_any(docs: list[dict[str, Any]]) -> None:
    """No generated field reads as Istio's "any": empty from/to/ports/principals, wildcards, empty rules."""
    for d in docs:
        if d["kind"] != "AuthorizationPolicy":
            continue
        spec = d["spec"]
        if d["metadata"]["name"] == "microseg-allow-nothing":
            assert spec == {}, d
            continue
        assert spec["action"] == "ALLOW" and spec["selector"]["matchLabels"] and spec["rules"], d
        for r in spec["rules"]:
            assert r["from"], d
            for f in r["from"]:
                src = f["source"]
                assert set(src) in ({"principals"}, {"ipBlocks"}, {"ipBlocks", "notIpBlocks"}), src
                assert all(v and "*" not in v for vs in src.values() for v in vs), src
            for t in r.get("to", []):
                assert t["operation"]["ports"] and all(p.isdigit() and p != "0" for p in t["operation"]["ports"]), t


def test_crd_schemas_are_not_vacuous() -> None:
    v = VALIDATORS["AuthorizationPolicy"]
    assert not list(v.iter_errors({"selector": {"matchLabels": {"app": "x"}}, "rules": [{"to": [{"operation": {
        "ports": ["80"]}}]}]}))
    assert list(v.iter_errors({"rulez": []}))  # unknown field
    assert list(v.iter_errors({"rules": [{"from": [{"source": {"principals": "x"}}]}]}))  # wrong type
    assert list(v.iter_errors({"action": "MAYBE"}))
    p = VALIDATORS["PeerAuthentication"]
    assert list(p.iter_errors({"mtls": {"mode": "SOMETIMES"}}))
    assert list(_cel_violations("PeerAuthentication", {"portLevelMtls": {"80": {"mode": "STRICT"}}}))


@pytest.mark.parametrize("sample", ["ambient-l4-productpage.yaml", "authz-http-bookinfo.yaml",
                                    "authz-tcp-tcp-echo.yaml"])
def test_crd_schemas_accept_the_istio_docs_samples(shared: Path, sample: str) -> None:
    # Transcribed from istio.io; some are security.istio.io/v1beta1, whose schema is the same as v1's.
    text = (shared / "samples/apps/bookinfo/authz-from-istio.io" / sample).read_text(encoding="utf-8")
    for doc in yaml.safe_load_all(text):
        assert doc["kind"] == "AuthorizationPolicy"
        assert not [e.message for e in VALIDATORS["AuthorizationPolicy"].iter_errors(doc["spec"] or {})]


# -- golden cases -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_golden(case: str, mode: str) -> None:
    out = BACKEND.compile(load_case(case), mode="observe" if mode == "observe" else "enforce")
    expected_dir = GOLDEN / case / f"expected-{mode}"
    assert sorted(out) == sorted(p.name for p in expected_dir.iterdir())
    for name, text in out.items():
        assert text == (expected_dir / name).read_text(encoding="utf-8"), f"{case}/{mode}/{name} differs"


def test_golden_cases_exist() -> None:
    assert {("shop", "enforce"), ("shop", "observe"), ("edge-cases", "enforce")} <= set(CASES)


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_output_is_valid_for_the_istio_crds(case: str, mode: str) -> None:
    out = BACKEND.compile(load_case(case), mode="observe" if mode == "observe" else "enforce")
    docs = documents(out)
    assert docs
    assert not any(re.search(r"[&*]id\d", text) for text in out.values())  # no YAML aliases
    seen = set()
    for doc in docs:
        check_istio_object(doc)
        key = (doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
    check_never_any(docs)


# -- determinism --------------------------------------------------------------------------------------------------


def _permuted(policy: Policy, rng: random.Random) -> Policy:
    def shuffled(items: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    workloads = [w.model_copy(update={"labels": shuffled(w.labels), "selector": shuffled(w.selector),
                                      "addresses": shuffled(w.addresses),
                                      "except_addresses": shuffled(w.except_addresses)})
                 for w in policy.workloads]
    rules = [r.model_copy(update={"sources": shuffled(r.sources), "destinations": shuffled(r.destinations),
                                  "ports": shuffled(r.ports)}) for r in policy.rules]
    return policy.model_copy(update={"workloads": shuffled(tuple(workloads)), "rules": shuffled(tuple(rules)),
                                     "exceptions": shuffled(policy.exceptions),
                                     "dns_resolvers": shuffled(policy.dns_resolvers)})


@pytest.mark.parametrize("case", sorted({c for c, _ in CASES}))
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_deterministic_under_permutation(case: str, mode: str) -> None:
    policy = load_case(case)
    m = "observe" if mode == "observe" else "enforce"
    first = BACKEND.compile(policy, mode=m)
    assert BACKEND.compile(policy, mode=m) == first
    for seed in range(10):
        assert BACKEND.compile(_permuted(policy, random.Random(seed)), mode=m) == first, seed


# -- semantics: read-back and the independent oracle ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted({c for c, _ in CASES}))
def test_read_back_equals_connectivity(case: str) -> None:
    policy = load_case(case)
    assert at_mesh(policy, read_back(BACKEND.compile(policy), policy)) == expected_at_mesh(policy)


def test_read_back_shop_exact() -> None:
    # Who reaches the mesh workloads of the golden case, spelled out. The partner subnet is part of the
    # internet (0.0.0.0/0 minus private ranges), so the internet's rule lets it reach shop/web too: ipBlocks
    # see addresses, not the policy's names.
    got = read_back(BACKEND.compile(load_case("shop")), load_case("shop"))
    assert {k: str(v) for k, v in got.items() if k[1] in ("shop/db", "payments/api", "shop/web")} == {
        ("batch-01", "shop/db"): "TCP 5432",
        ("shop/web", "shop/db"): "TCP 5432",
        ("shop/worker", "shop/db"): "TCP 5432",
        ("shop/report", "shop/db"): "TCP 5432",
        ("shop/web", "payments/api"): "TCP 8443-8444",
        ("external:partner", "payments/api"): "TCP 8443",
        ("external:internet", "shop/web"): "TCP 443",
        ("external:partner", "shop/web"): "TCP 443",
    }


@pytest.mark.parametrize("mutation", ["drop-to", "drop-notIpBlocks", "drop-allow-nothing", "extra-port",
                                      "other-principal", "drop-port-level-mtls"])
def test_read_back_sees_a_hand_edited_output(mutation: str) -> None:
    """The read-back is not a mirror of the compiler: an edited output reads back differently."""
    policy = load_case("shop")
    out = BACKEND.compile(policy)
    docs = [d for d in yaml.safe_load_all(out["shop.yaml"]) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    db_rules = by_name["AuthorizationPolicy", "microseg-db"]["spec"]["rules"]
    if mutation == "drop-to":  # AR-jobs-db on every port
        del db_rules[1]["to"]
    elif mutation == "drop-notIpBlocks":  # the internet block now covers batch-01 (10.20.0.7)
        del by_name["AuthorizationPolicy", "microseg-web"]["spec"]["rules"][0]["from"][0]["source"]["notIpBlocks"]
    elif mutation == "drop-allow-nothing":  # shop/worker has no ALLOW policy of its own
        docs.remove(by_name["AuthorizationPolicy", "microseg-allow-nothing"])
    elif mutation == "extra-port":
        db_rules[2]["to"][0]["operation"]["ports"].append("22")
    elif mutation == "other-principal":
        db_rules[2]["from"][0]["source"]["principals"] = ["cluster.local/ns/payments/sa/payments-api"]
    else:  # STRICT on every port: batch-01, which has no mesh identity, can no longer reach shop/db (narrower)
        del by_name["PeerAuthentication", "microseg-db"]["spec"]["portLevelMtls"]
    out["shop.yaml"] = yaml.safe_dump_all(docs, sort_keys=False)
    assert at_mesh(policy, read_back(out, policy)) != expected_at_mesh(policy)


def test_observe_mode_blocks_nothing_and_shadows_enforce() -> None:
    policy = load_case("shop")
    enforce, observe = BACKEND.compile(policy), BACKEND.compile(policy, mode="observe")
    e_docs, o_docs = documents(enforce), documents(observe)
    key = [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in e_docs]
    assert key == [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in o_docs]  # in place
    for e, o in zip(e_docs, o_docs, strict=True):
        notes = o["metadata"]["annotations"]
        assert notes["microseg.io/mode"] == "observe"
        if o["kind"] == "AuthorizationPolicy":
            assert notes["istio.io/dry-run"] == "true" and o["spec"] == e["spec"]
        else:
            assert "istio.io/dry-run" not in notes
            assert o["spec"]["mtls"] == {"mode": "UNSET"} and "portLevelMtls" not in o["spec"]
    # Nothing is enforced: every TCP connection to a mesh workload is allowed...
    excluded = policy.settings.excluded_namespaces
    mesh = [w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)]
    expected = {(s.name, d): Connections.of([(Protocol.TCP, ALL_TCP)]) for d in mesh for s in policy.workloads
                if s.name != d}
    assert at_mesh(policy, read_back(observe, policy)) == expected
    # ...while the shadow decisions of the dry-run policies are the enforce decisions (mTLS is not
    # required in observe mode, and the ALLOW rules restrict plaintext peers to their own ports anyway).
    assert at_mesh(policy, read_back(observe, policy, dry_run_as_enforced=True)) == expected_at_mesh(policy)
    assert "Mode: **observe**" in observe["README.md"]


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_network_config_analyzer_agrees(case: str, mode: str, tmp_path: Path) -> None:
    policy = load_case(case)
    nca.assert_nca_agrees_istio(policy, BACKEND.compile(policy, mode="observe" if mode == "observe" else "enforce"),
                                tmp_path)


# -- the bundled example and the real bookinfo sample -------------------------------------------------------------


@pytest.fixture(scope="module")
def example_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    ex = example_dir()
    outcome: PlanOutcome = plan([ex / "k8s", ex / "snapshots", ex / "inventory"], [str(ex / "flows")],
                                tmp_path_factory.mktemp("plan") / "out")
    return read_policy_dir(outcome.out_dir / "policy")


def test_example_compiles_reads_back_and_agrees_with_nca(example_policy: Policy, tmp_path: Path) -> None:
    out = BACKEND.compile(example_policy)
    docs = documents(out)
    for doc in docs:
        check_istio_object(doc)
    check_never_any(docs)
    assert at_mesh(example_policy, read_back(out, example_policy)) == expected_at_mesh(example_policy)
    nca.assert_nca_agrees_istio(example_policy, out, tmp_path)


def bookinfo_policy(shared: Path, reviews: tuple[str, ...]) -> Policy:
    """The bookinfo sample's real workloads (reviews-v1..v3 share the service account bookinfo-reviews)."""
    inv = load_inventory([shared / "samples/apps/bookinfo/platform/kube/bookinfo.yaml"])
    why = Justification(kind=JustificationKind.DECLARED, text="bookinfo architecture")
    rules = [AllowRule(id="AR-pp-details", sources=("default/productpage-v1",), destinations=("default/details-v1",),
                       protocol=Protocol.TCP, ports=("9080",), justification=why),
             AllowRule(id="AR-pp-reviews", sources=("default/productpage-v1",),
                       destinations=("default/reviews-v1", "default/reviews-v2", "default/reviews-v3"),
                       protocol=Protocol.TCP, ports=("9080",), justification=why),
             AllowRule(id="AR-reviews-ratings", sources=reviews, destinations=("default/ratings-v1",),
                       protocol=Protocol.TCP, ports=("9080",), justification=why),
             AllowRule(id="AR-internet-pp", sources=("external:internet",), destinations=("default/productpage-v1",),
                       protocol=Protocol.TCP, ports=("9080",), justification=why)]
    return Policy(workloads=inv.workloads, rules=tuple(rules))


def test_bookinfo_compiles_reads_back_and_agrees_with_nca(shared: Path, tmp_path: Path) -> None:
    policy = bookinfo_policy(shared, ("default/reviews-v1", "default/reviews-v2", "default/reviews-v3"))
    out = BACKEND.compile(policy)
    ratings = next(d for d in documents(out) if d["metadata"]["name"] == "microseg-ratings-v1"
                   and d["kind"] == "AuthorizationPolicy")
    assert ratings["spec"]["rules"] == [{"from": [{"source": {"principals": [
        "cluster.local/ns/default/sa/bookinfo-reviews"]}}], "to": [{"operation": {"ports": ["9080"]}}]}]
    assert at_mesh(policy, read_back(out, policy)) == expected_at_mesh(policy)
    nca.assert_nca_agrees_istio(policy, out, tmp_path)


def test_bookinfo_shared_service_account_cannot_be_split(shared: Path) -> None:
    # In the real sample reviews-v1 does not call ratings, but its pods present the same principal as
    # v2 and v3: allowing "v2 and v3" by principal would allow v1 too.
    policy = bookinfo_policy(shared, ("default/reviews-v2", "default/reviews-v3"))
    with pytest.raises(UnsupportedFeature, match="default/reviews-v1") as err:
        BACKEND.compile(policy)
    assert err.value.rule_id == "AR-reviews-ratings"


def test_read_back_istio_docs_l4_sample(shared: Path) -> None:
    # productpage-viewer (ambient getting-started): only the gateway's identity may reach productpage.
    # bookinfo.yaml has no gateway, so nothing reaches productpage; every other workload has no policy.
    text = (shared / "samples/apps/bookinfo/authz-from-istio.io/ambient-l4-productpage.yaml").read_text()
    inv = load_inventory([shared / "samples/apps/bookinfo/platform/kube/bookinfo.yaml"])
    gateway = Workload(name="default/bookinfo-gateway-istio", kind=WorkloadKind.KUBERNETES, namespace="default",
                       labels={"gateway.networking.k8s.io/gateway-name": "bookinfo-gateway"},
                       selector={"gateway.networking.k8s.io/gateway-name": "bookinfo-gateway"},
                       service_account="bookinfo-gateway-istio")
    policy = Policy(workloads=(*inv.workloads, gateway))
    got = read_back({"productpage.yaml": text}, policy)
    names = sorted(w.name for w in policy.workloads)
    k8s_names = [n for n in names if n.startswith("default/")]
    everything = Connections.of([(Protocol.TCP, ALL_TCP)])
    expected = {(s, d): everything for d in k8s_names if d != "default/productpage-v1" for s in names if s != d}
    expected[("default/bookinfo-gateway-istio", "default/productpage-v1")] = everything
    assert got == expected


def test_read_back_istio_docs_tcp_sample(shared: Path) -> None:
    text = (shared / "samples/apps/bookinfo/authz-from-istio.io/authz-tcp-tcp-echo.yaml").read_text()
    echo = Workload(name="foo/tcp-echo", kind=WorkloadKind.KUBERNETES, namespace="foo", labels={"app": "tcp-echo"},
                    selector={"app": "tcp-echo"}, service_account="tcp-echo")
    sleep = Workload(name="foo/sleep", kind=WorkloadKind.KUBERNETES, namespace="foo", labels={"app": "sleep"},
                     selector={"app": "sleep"}, service_account="sleep")
    vm = host("vm", "192.0.2.10")
    policy = Policy(workloads=(echo, sleep, vm))
    got = {k: str(v) for k, v in read_back({"tcp-policy.yaml": text}, policy).items()}
    # The documented result: 9000 and 9001 allowed, 9002 rejected, from anyone (no `from`); no
    # PeerAuthentication in the files, so plaintext (the VM) is accepted.
    assert got == {("foo/sleep", "foo/tcp-echo"): "TCP 9000-9001", ("vm", "foo/tcp-echo"): "TCP 9000-9001",
                   ("foo/tcp-echo", "foo/sleep"): "TCP 1-65535", ("vm", "foo/sleep"): "TCP 1-65535"}


def test_read_back_refuses_what_it_cannot_evaluate(shared: Path) -> None:
    text = (shared / "samples/apps/bookinfo/authz-from-istio.io/authz-http-bookinfo.yaml").read_text()
    policy = Policy(workloads=(k8s("default/details", selector={"app": "details"}),))
    with pytest.raises(InputError, match="methods") as err:
        read_back({"authz-http.yaml": text}, policy)
    assert err.value.file == "authz-http.yaml"
    for bad in ["kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {namespace: a}\n",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace: a}\n"
                "spec: {action: DENY}\n",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace: a}\n"
                "spec: {rules: [{from: [{source: {principals: ['cluster.local/ns/a/*']}}]}]}\n",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace: a}\n"
                "spec: {rules: [{}]}\n",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace: a}\n"
                "spec: {rules: [{when: [{key: source.ip, values: [10.0.0.1]}]}]}\n",
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {namespace: a}\n"
                "spec: {portLevelMtls: {'80': {mode: DISABLE}}}\n"]:
        with pytest.raises(InputError):
            read_back({"x.yaml": bad}, policy)


# -- hostile names and labels ----------------------------------------------------------------------------------------

_FRAGMENTS = ['"', "'", "\n", "\r\n", "\t", ";", "{", "}", "[", "]", "#", ": ", "- ", "---", "...", "&a", "*a",
              "!!python/object:os.system", "|", ">", "%", "@", "`", ",", "?", "\\", "\x00", "\x85", "\u2028",
              " ", "  trailing ", "ipBlocks", "principals: ['*']", "\n- from: []\n", "$", "${x}"]
hostile = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), min_size=1, max_size=5).map(
    "".join).filter(bool)
label_text = hostile.filter(lambda s: "*" not in s and len(s) <= 63)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile, min_size=4, max_size=4, unique=True),
       keys=st.lists(label_text, min_size=3, max_size=3), values=st.lists(label_text, min_size=3, max_size=3),
       ids=st.lists(hostile, min_size=3, max_size=3, unique=True), why=hostile)
def test_hostile_text_round_trips_and_changes_no_meaning(names: list[str], keys: list[str], values: list[str],
                                                          ids: list[str], why: str) -> None:
    sel = [{keys[i]: values[i], "test/id": str(i)} for i in range(3)]
    a = Workload(name=f"shop/{names[0]}", kind=WorkloadKind.KUBERNETES, namespace="shop", selector=sel[0],
                 service_account="sa-a")
    b = Workload(name=f"shop/{names[1]}", kind=WorkloadKind.KUBERNETES, namespace="shop", selector=sel[1],
                 service_account="sa-b")
    c = Workload(name=f"other/{names[2]}", kind=WorkloadKind.KUBERNETES, namespace="other", selector=sel[2],
                 identity="spiffe://cluster.local/ns/other/sa/sa-c")
    e = Workload(name=f"external:{names[3]}", kind=WorkloadKind.EXTERNAL, addresses=("192.0.2.0/24",))
    j = Justification(kind=JustificationKind.DECLARED, text=why)
    r1, r2, r3 = (AllowRule(id=ids[0], sources=(a.name, e.name), destinations=(b.name,), protocol=Protocol.TCP,
                            ports=("80",), justification=j),
                  AllowRule(id=ids[1], sources=(a.name,), destinations=(c.name, e.name), protocol=Protocol.TCP,
                            ports=("8443-8444",), justification=j),
                  AllowRule(id=ids[2], sources=(c.name,), destinations=(a.name,), protocol=Protocol.TCP,
                            ports=("443",), justification=j))
    policy = Policy(workloads=(a, b, c, e), rules=(r1, r2, r3))
    out = BACKEND.compile(policy)
    assert sorted(out) == ["README.md", "other.yaml", "shop.yaml"]
    docs = documents(out)
    # 2 x (mTLS + allow-nothing) + an ALLOW policy for a, b, c + b's PeerAuthentication (e is plaintext)
    assert len(docs) == 8
    by_workload = {(d["kind"], d["metadata"]["annotations"]["microseg.io/workload"]): d for d in docs
                   if "microseg.io/workload" in d["metadata"]["annotations"]}
    assert set(by_workload) == {("AuthorizationPolicy", a.name), ("AuthorizationPolicy", b.name),
                                ("AuthorizationPolicy", c.name), ("PeerAuthentication", b.name)}
    for (kind, name), d in by_workload.items():
        w = policy.workload_map()[name]
        check_istio_object(d)
        assert d["spec"]["selector"]["matchLabels"] == w.selector_map
        if kind == "AuthorizationPolicy":
            expected_rules = sorted((r for r in (r1, r2, r3) if name in r.destinations), key=lambda r: r.id)
            assert d["metadata"]["annotations"]["microseg.io/rules"] == ",".join(r.id for r in expected_rules)
            assert d["metadata"]["annotations"]["microseg.io/justification"] == "\n".join(
                f"{r.id} [declared] {why}" for r in expected_rules)
    assert by_workload["AuthorizationPolicy", b.name]["spec"]["rules"] == [{"from": [
        {"source": {"principals": ["cluster.local/ns/shop/sa/sa-a"]}}, {"source": {"ipBlocks": ["192.0.2.0/24"]}}],
        "to": [{"operation": {"ports": ["80"]}}]}]
    assert by_workload["AuthorizationPolicy", a.name]["spec"]["rules"] == [{"from": [
        {"source": {"principals": ["cluster.local/ns/other/sa/sa-c"]}}], "to": [{"operation": {"ports": ["443"]}}]}]
    check_never_any(docs)
    # And the meaning is exactly the policy's.
    assert at_mesh(policy, read_back(out, policy)) == expected_at_mesh(policy)


@pytest.mark.parametrize("identity", ["spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/a\nb",
                                      "spiffe://cluster.local/ns/shop/sa/", "spiffe://Cluster.Local/ns/shop/sa/a",
                                      "spiffe://cluster.local/ns/shop/sa/a/extra", "spiffe://cluster.local/ns/other/sa/a",
                                      "spiffe://x/ns/shop/sa/a b"])
def test_identity_that_is_no_exact_principal_is_unsupported(identity: str) -> None:
    a = Workload(name="shop/a", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "a"},
                 identity=identity)
    policy = Policy(workloads=(a, k8s("shop/db")), rules=(rule("AR-1", ["shop/a"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature) as err:
        BACKEND.compile(policy)
    assert err.value.rule_id == "AR-1" and err.value.target == "istio"


@pytest.mark.parametrize(("key", "value"), [("", "x"), ("a*", "x"), ("app", "*"), ("app", "we*b")])
def test_wildcard_or_empty_selector_label_is_unsupported(key: str, value: str) -> None:
    policy = Policy(workloads=(k8s("shop/web"), k8s("shop/db", selector={key: value})),
                    rules=(rule("AR-1", ["shop/web"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature, match="selector label"):
        BACKEND.compile(policy)


# -- what the target cannot express --------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", [Protocol.UDP, Protocol.ICMP, Protocol.SCTP])
def test_non_tcp_to_a_mesh_workload_is_unsupported(proto: Protocol) -> None:
    policy = Policy(workloads=(k8s("shop/web"), k8s("shop/db")),
                    rules=(rule("AR-x", ["shop/web"], ["shop/db"], proto, ("53",)),))
    with pytest.raises(UnsupportedFeature, match=proto.value) as err:
        BACKEND.compile(policy)
    assert err.value.rule_id == "AR-x"


def test_non_tcp_without_mesh_destination_is_skipped_and_listed() -> None:
    policy = Policy(workloads=(k8s("shop/web"), k8s("kube-system/dns"), host("h", "10.0.0.1/32")),
                    rules=(rule("AR-dns", ["shop/web"], ["kube-system/dns"], Protocol.UDP, ("53",)),
                           rule("AR-ping", ["h"], ["kube-system/dns"], Protocol.ICMP, ("0",))))
    out = BACKEND.compile(policy)
    assert [d["metadata"]["name"] for d in documents(out)] == ["microseg-mtls", "microseg-allow-nothing"]
    assert "| AR-dns | shop/web | kube-system/dns | UDP | 53 |" in out["README.md"]
    assert "AR-ping" not in out["README.md"]


def test_wide_port_range_is_unsupported() -> None:
    ok = Policy(workloads=(k8s("shop/web"), k8s("shop/db")), rules=(rule("AR-1", ["shop/web"], ["shop/db"],
                                                                       ports=("9000-9063",)),))
    spec = next(d for d in documents(BACKEND.compile(ok)) if d["metadata"]["name"] == "microseg-db")["spec"]
    assert spec["rules"][0]["to"][0]["operation"]["ports"] == [str(p) for p in range(9000, 9064)]
    wide = ok.model_copy(update={"rules": (rule("AR-1", ["shop/web"], ["shop/db"], ports=("9000-9064",)),)})
    with pytest.raises(UnsupportedFeature, match="9000-9064") as err:
        BACKEND.compile(wide)
    assert err.value.rule_id == "AR-1"


def test_source_without_mesh_identity_is_unsupported() -> None:
    anon = Workload(name="shop/anon", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "anon"})
    policy = Policy(workloads=(anon, k8s("shop/db")), rules=(rule("AR-1", ["shop/anon"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature, match="without a mesh identity"):
        BACKEND.compile(policy)


def test_identity_disagreeing_with_service_account_is_unsupported() -> None:
    policy = Policy(workloads=(k8s("shop/web", identity="spiffe://cluster.local/ns/shop/sa/other"), k8s("shop/db")),
                    rules=(rule("AR-1", ["shop/web"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature, match="disagrees"):
        BACKEND.compile(policy)


def test_shared_service_account_is_allowed_only_when_allowed_alike() -> None:
    a, b, db = k8s("shop/a", sa="shared"), k8s("shop/b", sa="shared"), k8s("shop/db")
    both = Policy(workloads=(a, b, db), rules=(rule("AR-1", ["shop/a", "shop/b"], ["shop/db"]),))
    BACKEND.compile(both)
    split = Policy(workloads=(a, b, db), rules=(rule("AR-1", ["shop/a"], ["shop/db"]),
                                                rule("AR-2", ["shop/b"], ["shop/db"], ports=("81",))))
    with pytest.raises(UnsupportedFeature, match="same service account") as err:
        BACKEND.compile(split)
    assert err.value.rule_id == "AR-1"
    # A workload with no known service account runs as `default`: it shares that principal.
    anon = Workload(name="shop/anon", kind=WorkloadKind.KUBERNETES, namespace="shop", selector={"app": "anon"})
    default = Policy(workloads=(k8s("shop/a", sa="default"), anon, db), rules=(rule("AR-1", ["shop/a"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature, match="shop/anon"):
        BACKEND.compile(default)


def test_empty_selector_of_a_destination_is_unsupported() -> None:
    policy = Policy(workloads=(k8s("shop/web"), k8s("shop/db", selector={}), k8s("kube-system/dns")),
                    rules=(rule("AR-1", ["shop/web"], ["shop/db"]),))
    with pytest.raises(UnsupportedFeature, match="empty selector"):
        BACKEND.compile(policy)


def test_selector_matching_another_workload_is_unsupported() -> None:
    web = k8s("shop/web", selector={"app": "web"})
    canary = k8s("shop/web-canary", selector={"app": "web", "track": "canary"})
    policy = Policy(workloads=(web, canary, k8s("shop/db")), rules=(rule("AR-1", ["shop/db"], ["shop/web"]),))
    with pytest.raises(UnsupportedFeature, match="also matches the pods of 'shop/web-canary'"):
        BACKEND.compile(policy)


def test_host_bits_and_missing_addresses_are_unsupported() -> None:
    for peer in (host("h", "10.0.0.5/24"), host("h")):
        policy = Policy(workloads=(k8s("shop/db"), peer), rules=(rule("AR-1", ["h"], ["shop/db"]),))
        with pytest.raises(UnsupportedFeature):
            BACKEND.compile(policy)


@pytest.mark.parametrize("ns", ["Shop", "a" * 64, "shop.prod", "-x"])
def test_namespace_that_is_no_dns_label_is_unsupported(ns: str) -> None:
    policy = Policy(workloads=(Workload(name=f"{ns}/web", kind=WorkloadKind.KUBERNETES, namespace=ns,
                                        selector={"app": "web"}, service_account="web"),))
    with pytest.raises(UnsupportedFeature, match="DNS-1123"):
        BACKEND.compile(policy)


def test_unknown_workload_in_a_rule_fails_closed() -> None:
    policy = Policy(workloads=(k8s("shop/db"),), rules=(rule("AR-1", ["shop/ghost"], ["shop/db"]),))
    with pytest.raises(MicrosegError, match="unknown workload 'shop/ghost'"):
        BACKEND.compile(policy)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(MicrosegError, match="unknown mode"):
        BACKEND.compile(load_case("shop"), mode="audit")  # type: ignore[arg-type]


def test_registry() -> None:
    assert "istio" in TARGETS
    backend = get_backend("istio")
    assert backend is BACKEND and isinstance(backend, Backend) and backend.name == "istio"
    assert backend.capabilities <= set(CAPABILITIES)
    assert {"udp", "icmp", "egress", "port-range"}.isdisjoint(backend.capabilities)


def test_hostile_text_is_escaped_in_the_readme() -> None:
    infra = Justification(kind=JustificationKind.INFRASTRUCTURE, text="x | y\n## injected <script>")
    policy = Policy(workloads=(k8s("shop/web"), k8s("kube-system/dns")),
                    rules=(AllowRule(id="AR-|x", sources=("shop/web",), destinations=("kube-system/dns",),
                                     protocol=Protocol.UDP, ports=("53",), justification=infra),))
    readme = BACKEND.compile(policy)["README.md"]
    row = next(line for line in readme.splitlines() if "AR-" in line)
    assert row.count(" | ") == 5
    assert "<script>" not in readme and "\n## injected" not in readme


# -- random policies: compile -> read back == connectivity ----------------------------------------------------------


@st.composite
def mesh_policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(min_value=2, max_value=5))
    workloads: list[Workload] = []
    for i in range(n):
        ns = draw(st.sampled_from(["a", "b", "kube-system"]))
        workloads.append(k8s(f"{ns}/w{i}", sa=f"sa{i}"))
    peers = [host("h1", "10.1.0.1/32"), Workload(name="external:net", kind=WorkloadKind.EXTERNAL,
                                                   addresses=("198.51.100.0/24",),
                                                   except_addresses=("198.51.100.128/26",))]
    names = [w.name for w in workloads] + [p.name for p in peers]
    mesh = [w.name for w in workloads if not w.name.startswith("kube-system/")]
    rules = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        src = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        dst = draw(st.lists(st.sampled_from(mesh or names), min_size=1, max_size=2, unique=True))
        start = draw(st.integers(min_value=0, max_value=70))
        ports = draw(st.sampled_from([(str(start),), (f"{start}-{start + 3}",), ("0-65535",), (str(start), "443")]))
        rules.append(rule(f"AR-{i}", src, dst, ports=ports))
    return Policy(workloads=(*workloads, *peers), rules=tuple(rules))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=mesh_policies())
def test_random_policies_read_back_exactly(policy: Policy) -> None:
    out = BACKEND.compile(policy)
    assert at_mesh(policy, read_back(out, policy)) == expected_at_mesh(policy)
    check_never_any(documents(out))


def test_adding_a_rule_never_shrinks_reachability() -> None:
    policy = load_case("shop")
    before = read_back(BACKEND.compile(policy), policy)
    more = policy.model_copy(update={"rules": (*policy.rules, rule("AR-more", ["shop/db"], ["shop/web"], ports=(
        "8080",)))})
    after = read_back(BACKEND.compile(more), more)
    for key, conns in before.items():
        for proto, ranges in conns.ports:
            assert all(after[key].allows(proto, r.start) and after[key].allows(proto, r.end) for r in ranges)
    assert after[("shop/db", "shop/web")] == Connections.of([(Protocol.TCP, PortRange(start=8080, end=8080))])


def test_exceptions_outside_the_blocks_are_left_out() -> None:
    # notIpBlocks only carries exceptions that overlap a block (the others change nothing).
    peer = Workload(name="external:x", kind=WorkloadKind.EXTERNAL, addresses=("203.0.113.0/24",),
                    except_addresses=("203.0.113.0/25", "198.51.100.0/24"))
    policy = Policy(workloads=(k8s("shop/db"), peer), rules=(rule("AR-1", ["external:x"], ["shop/db"]),))
    spec = next(d for d in documents(BACKEND.compile(policy)) if d["metadata"]["name"] == "microseg-db")["spec"]
    assert spec["rules"][0]["from"] == [{"source": {"ipBlocks": ["203.0.113.0/24"], "notIpBlocks": ["203.0.113.0/25"]}}]
    assert ipaddress.ip_network("203.0.113.0/25").subnet_of(ipaddress.ip_network("203.0.113.0/24"))

