"""Generate a seeded, realistic Kubernetes estate with NetworkPolicies for the NetworkPolicy benchmark.

    python benchmarks/gen_netpol.py --pods 1000 --namespaces 20 --policies 200 --out benchmarks/data/netpol-1000

Writes three files into the output directory: ``namespaces.yaml`` (Namespaces with team/environment
labels), ``workloads.yaml`` (one Deployment per workload, ``replicas: 1``, with app/tier/team/version
labels and named container ports) and ``netpols.yaml`` (the NetworkPolicies). The same seed gives
byte-identical files.

The policy mix follows what real clusters carry: per-namespace default deny (both directions, or
ingress only), a DNS egress allowance to ``kube-system`` (``namespaceSelector`` AND ``podSelector``),
tier-to-tier ingress inside a namespace (numeric and named ports), cross-namespace ingress selected by
namespace labels and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist), egress to ``ipBlock``s
with ``except``, port ranges (``endPort``), UDP and SCTP ports, and a few broad rules (no ports, no
peers, ``namespaceSelector: {}``).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import yaml

NAME_LABEL = "kubernetes.io/metadata.name"  # set on every Namespace by the API server
TIERS = ("frontend", "backend", "data", "cache", "queue", "batch")
TEAMS = ("payments", "search", "identity", "catalog", "checkout", "ml", "platform", "growth")
ENVIRONMENTS = ("prod", "staging", "dev")
# Container ports per tier: (name, port, protocol). Names follow IANA_SVC_NAME (<= 15 characters).
TIER_PORTS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "frontend": (("http", 8080, "TCP"), ("metrics", 9090, "TCP")),
    "backend": (("grpc", 50051, "TCP"), ("http", 8080, "TCP"), ("metrics", 9090, "TCP")),
    "data": (("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")),
    "cache": (("redis", 6379, "TCP"),),
    "queue": (("amqp", 5672, "TCP"), ("sctp-feed", 3868, "SCTP"), ("metrics", 9419, "TCP")),
    "batch": (("statsd", 8125, "UDP"),),
}
TIER_CALLS = {"frontend": ("backend", "cache"), "backend": ("data", "cache", "queue"), "batch": ("data", "queue"),
              "queue": ("backend",)}
BLOCKS = (  # (cidr, excepts) for egress to addresses outside the cluster
    ("0.0.0.0/0", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("10.0.0.0/8", ("10.1.0.0/16", "10.2.0.0/16")),
    ("172.20.0.0/16", ("172.20.5.0/24",)),
    ("192.168.10.0/24", ()),
    ("203.0.113.0/24", ("203.0.113.128/25",)),
    ("2001:db8::/32", ("2001:db8:1::/48",)),
)


def _doc_dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def generate(pods: int = 1000, namespaces: int = 20, policies: int = 200, seed: int = 7) -> dict[str, str]:
    """The estate as ``{file name: YAML text}``; deterministic for a seed."""
    rng = random.Random(seed)
    ns_names = ["kube-system"] + [f"{TEAMS[i % len(TEAMS)]}-{ENVIRONMENTS[i % len(ENVIRONMENTS)]}-{i:02d}"
                                  for i in range(namespaces - 1)]
    ns_labels: dict[str, dict[str, str]] = {}
    ns_docs = []
    for i, ns in enumerate(ns_names):
        labels = {"kubernetes.io/metadata.name": ns}
        if ns != "kube-system":
            labels |= {"team": TEAMS[(i - 1) % len(TEAMS)], "environment": ENVIRONMENTS[(i - 1) % len(ENVIRONMENTS)]}
            if i % 4 == 0:
                labels["pci"] = "true"
        ns_labels[ns] = labels
        ns_docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})

    workloads: list[tuple[str, str, dict[str, str]]] = []  # (namespace, name, labels)
    deployments = []
    for i in range(pods):
        if i < 2:
            ns, tier, app = "kube-system", "dns", f"coredns-{i}"
            labels = {"k8s-app": "kube-dns", "app": app}
            ports: tuple[tuple[str, int, str], ...] = (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))
        else:
            ns = ns_names[1 + rng.randrange(namespaces - 1)]
            tier = rng.choice(TIERS)
            app = f"{tier}-{i:04d}"
            labels = {"app": app, "tier": tier, "team": ns_labels[ns]["team"],
                      "version": rng.choice(("v1", "v2", "v3"))}
            if rng.random() < 0.3:
                labels["canary"] = "true"
            if rng.random() < 0.2:
                labels["exposed"] = "internet"
            ports = TIER_PORTS[tier]
        workloads.append((ns, app, labels))
        container: dict[str, Any] = {"name": "main", "image": f"registry.example/{tier}:1"}
        container["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]
        deployments.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})

    netpols: list[dict[str, Any]] = []

    def add(ns: str, name: str, spec: dict[str, Any]) -> None:
        if len(netpols) < policies:
            netpols.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": name, "namespace": ns}, "spec": spec})

    app_ns = ns_names[1:]
    # Default deny: both directions in two namespaces of three, ingress only in the rest.
    for i, ns in enumerate(app_ns):
        types = ["Ingress", "Egress"] if i % 3 else ["Ingress"]
        add(ns, "default-deny", {"podSelector": {}, "policyTypes": types})
        if "Egress" in types:
            add(ns, "allow-dns", {
                "podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: "kube-system"}},
                                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})
    by_ns: dict[str, list[tuple[str, str, dict[str, str]]]] = {}
    for w in workloads:
        by_ns.setdefault(w[0], []).append(w)
    kinds = ("tier-ingress", "named-port", "cross-ns", "expressions", "egress-ip", "end-port", "udp-sctp",
             "broad", "egress-tier")
    k = 0
    while len(netpols) < policies:
        kind = kinds[k % len(kinds)]
        k += 1
        ns = rng.choice(app_ns)
        members = by_ns.get(ns, [])
        if not members:
            continue
        target = rng.choice(members)
        tier = target[2]["tier"]
        callers = [t for t, callees in TIER_CALLS.items() if tier in callees] or ["frontend"]
        port_name, port, proto = TIER_PORTS[tier][0]
        name = f"{kind}-{len(netpols):03d}"
        select_app = {"matchLabels": {"app": target[1]}}
        select_tier = {"matchLabels": {"tier": tier}}
        if kind == "tier-ingress":
            add(ns, name, {"podSelector": select_tier, "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": c}}} for c in callers],
                 "ports": [{"protocol": proto, "port": port}]}]})
        elif kind == "named-port":
            add(ns, name, {"podSelector": select_app, "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                 "values": sorted(callers)}]}}],
                 "ports": [{"protocol": proto, "port": port_name}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "platform"}},
                           "podSelector": {"matchLabels": {"app": "prometheus"}}}],
                 "ports": [{"port": "metrics"}]}]})
        elif kind == "cross-ns":
            team = rng.choice(TEAMS)
            add(ns, name, {"podSelector": select_tier, "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": team}},
                           "podSelector": {"matchLabels": {"tier": rng.choice(callers)}}},
                          {"namespaceSelector": {"matchExpressions": [
                              {"key": "environment", "operator": "In", "values": ["prod", "staging"]},
                              {"key": "pci", "operator": "DoesNotExist"}]}}],
                 "ports": [{"protocol": proto, "port": port}]}]})
        elif kind == "expressions":
            add(ns, name, {"podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": [tier]},
                {"key": "canary", "operator": "DoesNotExist"}]},
                "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [
                    {"key": "version", "operator": "NotIn", "values": ["v1"]},
                    {"key": "team", "operator": "Exists"}]}}],
                 "ports": [{"protocol": proto, "port": port}]}]})
        elif kind == "egress-ip":
            cidr, excepts = rng.choice(BLOCKS)
            block: dict[str, Any] = {"cidr": cidr}
            if excepts:
                block["except"] = list(excepts)
            add(ns, name, {"podSelector": select_app, "policyTypes": ["Egress"], "egress": [
                {"to": [{"ipBlock": block}], "ports": [{"protocol": "TCP", "port": 443}]}]})
        elif kind == "end-port":
            add(ns, name, {"podSelector": select_tier, "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"team": target[2]["team"]}}}],
                 "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100},
                           {"protocol": "TCP", "port": port}]}]})
        elif kind == "udp-sctp":
            add(ns, name, {"podSelector": {"matchLabels": {"tier": "queue"}}, "policyTypes": ["Ingress", "Egress"],
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "backend"}}}],
                                        "ports": [{"protocol": "SCTP", "port": 3868},
                                                  {"protocol": "TCP", "port": 5672}]}],
                           "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "batch"}}}],
                                       "ports": [{"protocol": "UDP", "port": 8125}]}]})
        elif kind == "broad":
            variant = rng.randrange(3)
            rule: dict[str, Any]
            if variant == 0:
                rule = {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": proto, "port": port}]}
            elif variant == 1:
                rule = {"from": [{"podSelector": {"matchLabels": {"exposed": "internet"}}}]}
            else:
                rule = {"ports": [{"protocol": "TCP", "port": 443}]}
            add(ns, name, {"podSelector": select_app, "policyTypes": ["Ingress"], "ingress": [rule]})
        else:  # egress-tier
            callees = TIER_CALLS.get(tier, ("backend",))
            add(ns, name, {"podSelector": select_tier, "policyTypes": ["Egress"], "egress": [
                {"to": [{"podSelector": {"matchLabels": {"tier": c}}} for c in callees]
                 + [{"namespaceSelector": {"matchLabels": {"team": target[2]["team"]}}}],
                 "ports": [{"protocol": "TCP", "port": p} for c in callees for _, p, pr in TIER_PORTS[c]
                           if pr == "TCP"][:4]}]})
    return {"namespaces.yaml": _doc_dump(ns_docs), "workloads.yaml": _doc_dump(deployments),
            "netpols.yaml": _doc_dump(netpols)}


def write(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    write(args.out, generate(args.pods, args.namespaces, args.policies, args.seed))


if __name__ == "__main__":
    main()
