"""Calico test support: the pairs the calico target governs and what it must allow there.

Shared by test_calico.py and test_contract.py. Calico endpoints are pods (no HostEndpoints are
generated), and ports are 1-65535, so the IR's port 0 is dropped, never widened.
"""

from __future__ import annotations

from microseg.ir.model import Policy, PortRange, Protocol, WorkloadKind
from microseg.ir.semantics import Connections, connectivity, is_enforced
from microseg.sources.deployed.calico import read_back


def k8s_names(policy: Policy) -> list[str]:
    return sorted(w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES)


def without_port_zero(c: Connections) -> Connections:
    """Ports are 1-65535 in Calico (port 0 is not a destination port): the IR's 0 is dropped, not widened."""
    if c.everything:
        return c
    pairs: list[tuple[Protocol, PortRange]] = []
    for proto, ranges in c.ports:
        for r in ranges:
            if proto == Protocol.ICMP:
                pairs.append((proto, PortRange(start=0, end=65535)))
            elif r.end >= 1:
                pairs.append((proto, PortRange(start=max(r.start, 1), end=r.end)))
    return Connections.of(pairs)


def expected_k8s(policy: Policy) -> dict[tuple[str, str], Connections]:
    return {k: without_port_zero(v) for k, v in connectivity(policy, k8s_names(policy)).items()}


def read_k8s(files: dict[str, str], policy: Policy) -> dict[tuple[str, str], Connections]:
    names = set(k8s_names(policy))
    return {k: v for k, v in read_back(files, policy).items() if k[0] in names and k[1] in names}




def governed_pairs(policy: Policy) -> set[tuple[str, str]]:
    """Ordered pairs with at least one side a Kubernetes workload under default deny: the pairs the
    calico target enforces. (A pod in an excluded namespace and a host are nobody's business here:
    Calico allows them, the host targets decide.)"""
    excluded = policy.settings.excluded_namespaces
    pods = {w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)}
    names = sorted(w.name for w in policy.workloads)
    return {(s, d) for s in names for d in names if s != d and (s in pods or d in pods)}


def expected_governed(policy: Policy) -> dict[tuple[str, str], Connections]:
    """``connectivity(policy)`` on :func:`governed_pairs`, without port 0."""
    pairs = governed_pairs(policy)
    return {k: without_port_zero(v) for k, v in connectivity(policy).items() if k in pairs}


def read_governed(files: dict[str, str], policy: Policy) -> dict[tuple[str, str], Connections]:
    pairs = governed_pairs(policy)
    return {k: v for k, v in read_back(files, policy).items() if k in pairs}
