"""Policy cases for the back-end contract test (test_contract.py).

``CASES`` are run through every target: each either compiles or refuses with an
:class:`~microseg.errors.UnsupportedFeature` naming one of its rules. ``UNSUPPORTED_CASES`` holds, per
target, one small policy with a construct that target cannot express and the id of the rule that
carries it.

The estate is one mixed network, built once and cut down for the cases:

* Kubernetes: ``shop/web`` (internet-facing), ``shop/orders``, ``pay/api`` (another namespace), and
  ``kube-system/coredns``, in an excluded namespace (never under default deny), reached for DNS;
* hosts in two zones: ``bastion-01`` (management, IPv4 and IPv6), ``batch-01`` and ``erp-01`` (app);
* a managed service ``rds-orders`` (data);
* a named external CIDR ``external:partner`` (IPv4 and IPv6) and ``external:internet`` (0.0.0.0/0 minus
  the private ranges *and* the partner's range: address-based targets cannot tell overlapping peers
  apart, a documented caveat that these cases do not test for equality).

Rules cover a port range, UDP, cross-namespace, DNS to the excluded resolver, pods to a managed
service, the internet to a pod, a pod to an external CIDR, a host to a pod, host-to-host SSH and ICMP
across zones, host to service and to an external CIDR over UDP. The other cases: the estate without
the pod<->host rules (what the address-based targets compile), without service accounts (what
network-config-analyzer reads of Calico output), hosts only (with SCTP and UDP port sets), ICMP and SCTP
between pods, an approved exception with a shared service account, and the estate plus HTTP (L7) rules
or plus a peer known by DNS names only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from microseg.ir.model import (
    AllowRule,
    HttpMatch,
    Justification,
    JustificationKind,
    Policy,
    PolicyException,
    Protocol,
    Segment,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)

WHY = Justification(kind=JustificationKind.DECLARED, text="contract case")
INFRA = Justification(kind=JustificationKind.INFRASTRUCTURE, text="DNS to the cluster resolver")


def pod(name: str, *, sa: str | None = None, **labels: str) -> Workload:
    ns, short = name.split("/", 1)
    sel = labels or {"app": short}
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns, selector=sel, labels=sel,
                    service_account=short if sa is None else sa)


def host(name: str, *addresses: str, kind: WorkloadKind = WorkloadKind.HOST) -> Workload:
    return Workload(name=name, kind=kind, addresses=addresses)


def allow(rid: str, src: list[str], dst: list[str], proto: Protocol, *ports: str,
          why: Justification = WHY) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=ports or ("0",),
                     justification=why)


PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
PARTNER_V4 = "198.51.100.0/24"

WORKLOADS: tuple[Workload, ...] = (
    pod("shop/web"), pod("shop/orders"), pod("pay/api"),
    pod("kube-system/coredns", sa="coredns", **{"k8s-app": "kube-dns"}),
    host("bastion-01", "10.10.0.5/32", "2001:db8:10::5/128"),
    host("batch-01", "10.20.0.7/32"),
    host("erp-01", "10.20.0.8/32", "2001:db8:20::8/128"),
    host("rds-orders", "10.50.0.0/28", kind=WorkloadKind.SERVICE),
    Workload(name="external:partner", kind=WorkloadKind.EXTERNAL, addresses=(PARTNER_V4, "2001:db8:100::/48")),
    Workload(name="external:internet", kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0",),
             except_addresses=(*PRIVATE, PARTNER_V4)),
)

ZONES = {"shop/web": "internet-facing", "shop/orders": "app", "pay/api": "app", "kube-system/coredns": "platform",
         "bastion-01": "management", "batch-01": "app", "erp-01": "app", "rds-orders": "data",
         "external:partner": "external", "external:internet": "external", "external:payments-api": "external"}

# Rules between pods (and pods with external peers): the Kubernetes targets' business.
POD_RULES: tuple[AllowRule, ...] = (
    allow("AR-web-orders", ["shop/web"], ["shop/orders"], Protocol.TCP, "8080", "9000-9040"),
    allow("AR-orders-api", ["shop/orders"], ["pay/api"], Protocol.TCP, "8443"),
    allow("AR-dns", ["shop/web", "shop/orders", "pay/api"], ["kube-system/coredns"], Protocol.UDP, "53", why=INFRA),
    allow("AR-dns-tcp", ["shop/web", "shop/orders", "pay/api"], ["kube-system/coredns"], Protocol.TCP, "53",
          why=INFRA),
    allow("AR-internet-web", ["external:internet"], ["shop/web"], Protocol.TCP, "443"),
    allow("AR-api-partner", ["pay/api"], ["external:partner"], Protocol.TCP, "443"),
)
# Rules joining a pod and a host or managed service: address-based targets have no pod address.
POD_HOST_RULES: tuple[AllowRule, ...] = (
    allow("AR-orders-rds", ["shop/orders"], ["rds-orders"], Protocol.TCP, "5432"),
    allow("AR-batch-orders", ["batch-01"], ["shop/orders"], Protocol.TCP, "8080"),
)
# Rules between addresses: hosts, the managed service, external peers.
HOST_RULES: tuple[AllowRule, ...] = (
    allow("AR-bastion-ssh", ["bastion-01"], ["batch-01", "erp-01"], Protocol.TCP, "22"),
    allow("AR-bastion-ping", ["bastion-01"], ["batch-01", "erp-01"], Protocol.ICMP),
    allow("AR-batch-rds", ["batch-01"], ["rds-orders"], Protocol.TCP, "5432"),
    allow("AR-batch-erp", ["batch-01"], ["erp-01"], Protocol.TCP, "1521-1530"),
    allow("AR-erp-ntp", ["erp-01"], ["external:partner"], Protocol.UDP, "123"),
    allow("AR-internet-erp", ["external:internet"], ["erp-01"], Protocol.TCP, "443"),
)


def _policy(workloads: tuple[Workload, ...], rules: tuple[AllowRule, ...], **extra: Any) -> Policy:
    names = {w.name for w in workloads}
    zones = sorted({ZONES[n] for n in names})
    return Policy(workloads=workloads, rules=rules,
                  segments=tuple(Segment(name=z, trust=50) for z in zones),
                  assignments=tuple(ZoneAssignment(workload=n, zone=ZONES[n], reason="contract case")
                                    for n in sorted(names)),
                  dns_resolvers=("kube-system/coredns",) if "kube-system/coredns" in names else (), **extra)


def estate() -> Policy:
    """The whole mixed estate: compiles on the Kubernetes-side targets, refused by the address-based ones
    (a host-to-pod rule has no pod address to name)."""
    return _policy(WORKLOADS, POD_RULES + POD_HOST_RULES + HOST_RULES)


def estate_addressed() -> Policy:
    """The estate without the rules joining a pod and a host or service: every target compiles it."""
    return _policy(WORKLOADS, POD_RULES + HOST_RULES)


def estate_without_service_accounts() -> Policy:
    """The estate with no service account on any pod: what network-config-analyzer can read of Calico
    output (NCA 2.1.0 does not read serviceAccountSelector); Istio has no principal for such pods."""
    wl = tuple(w.model_copy(update={"service_account": None}) for w in WORKLOADS)
    return _policy(wl, POD_RULES + POD_HOST_RULES + HOST_RULES)


def hosts() -> Policy:
    """Hosts, the managed service and external peers only, plus SCTP and UDP port sets between hosts."""
    wl = tuple(w for w in WORKLOADS if w.kind != WorkloadKind.KUBERNETES)
    return _policy(wl, HOST_RULES + (allow("AR-batch-erp-sctp", ["batch-01"], ["erp-01"], Protocol.SCTP, "3868"),
                                     allow("AR-erp-batch-udp", ["erp-01"], ["batch-01"], Protocol.UDP, "5000-5010",
                                           "6000")))


def pods_icmp_sctp() -> Policy:
    """ICMP and SCTP between pods (Calico expresses both; NetworkPolicy only SCTP). No service accounts,
    so that network-config-analyzer can read the Calico output."""
    wl = tuple(pod(n).model_copy(update={"service_account": None}) for n in ("shop/web", "shop/orders", "pay/api"))
    return _policy(wl, (allow("AR-pod-ping", ["shop/web"], ["shop/orders", "pay/api"], Protocol.ICMP),
                        allow("AR-pod-sctp", ["pay/api"], ["shop/orders"], Protocol.SCTP, "3868-3870"),
                        allow("AR-pod-http", ["pay/api"], ["shop/web"], Protocol.TCP, "80")))


def exception_and_shared_identity() -> Policy:
    """An approved exception, and two workloads under one service account allowed alike."""
    wl = (pod("shop/web"), pod("shop/worker", sa="jobs"), pod("shop/report", sa="jobs"), pod("shop/db"))
    exc = PolicyException(rule=allow("AR-exc", ["shop/web"], ["shop/db"], Protocol.TCP, "5433"),
                          guardrail="GR-none", approver="jane", reason="migration",
                          expires="2030-01-01T00:00:00Z")
    zones = {"shop/web": "internet-facing", "shop/worker": "app", "shop/report": "app", "shop/db": "data"}
    return Policy(workloads=wl, exceptions=(exc,),
                  rules=(allow("AR-jobs-db", ["shop/worker", "shop/report"], ["shop/db"], Protocol.TCP, "5432"),
                         allow("AR-web-worker", ["shop/web"], ["shop/worker"], Protocol.TCP, "8080")),
                  segments=tuple(Segment(name=z, trust=50) for z in sorted(set(zones.values()))),
                  assignments=tuple(ZoneAssignment(workload=n, zone=z, reason="t") for n, z in sorted(zones.items())))


# Layer 7 and DNS names. An L7 rule (HTTP method/path) between pods and one between hosts: every target
# governs one of them, so a target without the "l7" capability must refuse one, never compile it at layer
# 4 (every request would pass). A peer known by DNS names only, reached from a pod and from a host: a
# target with the "fqdn" capability must compile it; one matching addresses only has nothing to match.
L7_RULES: tuple[AllowRule, ...] = (
    AllowRule(id="AR-l7-pods", sources=("shop/web",), destinations=("shop/orders",), protocol=Protocol.TCP,
              ports=("8080",), justification=WHY,
              http=(HttpMatch(method="GET", path="/api/.*"), HttpMatch(method="POST", path="/api/orders(\\?.*)?"))),
    AllowRule(id="AR-l7-hosts", sources=("batch-01",), destinations=("erp-01",), protocol=Protocol.TCP,
              ports=("8443",), justification=WHY, http=(HttpMatch(path="/rpc(\\?.*)?"),)),
)
FQDN_PEER = Workload(name="external:payments-api", kind=WorkloadKind.EXTERNAL, fqdns=("api.payments.example",
                                                                                   "*.cdn.payments.example"))
FQDN_RULES: tuple[AllowRule, ...] = (
    allow("AR-fqdn-pods", ["pay/api"], ["external:payments-api"], Protocol.TCP, "443"),
    allow("AR-fqdn-hosts", ["erp-01"], ["external:payments-api"], Protocol.TCP, "443"),
)


def l7() -> Policy:
    return _policy(WORKLOADS, POD_RULES + HOST_RULES + L7_RULES)


def fqdn() -> Policy:
    return _policy((*WORKLOADS, FQDN_PEER), POD_RULES + HOST_RULES + FQDN_RULES)


CASES: dict[str, Callable[[], Policy]] = {
    "estate": estate,
    "estate-addressed": estate_addressed,
    "estate-no-service-accounts": estate_without_service_accounts,
    "hosts": hosts,
    "pods-icmp-sctp": pods_icmp_sctp,
    "exception-shared-identity": exception_and_shared_identity,
    "l7": l7,
    "fqdn": fqdn,
}


# -- one construct per target that it cannot express ------------------------------------------------------------


def _two_pods(rule: AllowRule, *extra: Workload) -> Policy:
    return Policy(workloads=(pod("shop/web"), pod("shop/orders"), *extra), rules=(rule,))


def _host_and_pod(rid: str) -> Policy:
    """A host reaching a pod: the IR has no pod address, and a pod CIDR would be wider."""
    return Policy(workloads=(host("batch-01", "10.20.0.7/32"), pod("shop/orders")),
                  assignments=(ZoneAssignment(workload="batch-01", zone="app", reason="t"),
                               ZoneAssignment(workload="shop/orders", zone="app", reason="t")),
                  segments=(Segment(name="app", trust=50),),
                  rules=(allow(rid, ["batch-01"], ["shop/orders"], Protocol.TCP, "8080"),))


UNSUPPORTED_CASES: dict[str, Callable[[], tuple[Policy, str]]] = {
    # NetworkPolicy, AdminNetworkPolicy: ports are TCP, UDP and SCTP only.
    "kubernetes": lambda: (_two_pods(allow("AR-pod-ping", ["shop/web"], ["shop/orders"], Protocol.ICMP)),
                           "AR-pod-ping"),
    "kubernetes_admin": lambda: (_two_pods(allow("AR-pod-ping", ["shop/web"], ["shop/orders"], Protocol.ICMP)),
                                 "AR-pod-ping"),
    # Cilium's icmps match listed ICMP types; the IR's ICMP is every type.
    "cilium": lambda: (_two_pods(allow("AR-pod-ping", ["shop/web"], ["shop/orders"], Protocol.ICMP)), "AR-pod-ping"),
    # A workload without a selector would select its whole namespace.
    "calico": lambda: (Policy(workloads=(pod("shop/web"), Workload(name="shop/all", kind=WorkloadKind.KUBERNETES,
                                                                   namespace="shop")),
                              rules=(allow("AR-to-all", ["shop/web"], ["shop/all"], Protocol.TCP, "80"),)),
                       "AR-to-all"),
    # Istio proxies TCP only: UDP to a mesh workload can be neither allowed nor denied.
    "istio": lambda: (_two_pods(allow("AR-pod-udp", ["shop/web"], ["shop/orders"], Protocol.UDP, "53")),
                      "AR-pod-udp"),
    # A security group rule for SCTP covers every port.
    "aws_sg": lambda: (Policy(workloads=(host("a", "10.0.0.1/32"), host("b", "10.0.0.2/32")),
                              rules=(allow("AR-sctp", ["a"], ["b"], Protocol.SCTP, "3868"),)), "AR-sctp"),
    # A PDP decides per connection (neither input shape carries the HTTP request): an HTTP rule's connection,
    # allowed, would admit every request on it.
    "opa": lambda: (_two_pods(L7_RULES[0]), L7_RULES[0].id),
    "nftables": lambda: (_host_and_pod("AR-batch-orders"), "AR-batch-orders"),
    "panos": lambda: (_host_and_pod("AR-batch-orders"), "AR-batch-orders"),
    "fortigate": lambda: (_host_and_pod("AR-batch-orders"), "AR-batch-orders"),
}


# -- determinism --------------------------------------------------------------------------------------------------


def permuted(policy: Policy, seed: int) -> Policy:
    """The same policy with every order the IR does not give a meaning to shuffled."""
    rng = random.Random(seed)

    def shuffled(items: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    workloads = [w.model_copy(update={"labels": shuffled(w.labels), "selector": shuffled(w.selector),
                                      "addresses": shuffled(w.addresses),
                                      "except_addresses": shuffled(w.except_addresses)}) for w in policy.workloads]
    rules = [r.model_copy(update={"sources": shuffled(r.sources), "destinations": shuffled(r.destinations),
                                  "ports": shuffled(r.ports)}) for r in policy.rules]
    return policy.model_copy(update={"workloads": shuffled(tuple(workloads)), "rules": shuffled(tuple(rules)),
                                     "exceptions": shuffled(policy.exceptions),
                                     "assignments": shuffled(policy.assignments),
                                     "segments": shuffled(policy.segments),
                                     "dns_resolvers": shuffled(policy.dns_resolvers)})
