"""Istio test support: the pairs the istio target governs and what it must allow there.

Shared by test_istio.py and test_contract.py. Istio enforces at the destination, for TCP only, so the
governed pairs are those whose destination is a Kubernetes workload in the mesh (outside the excluded
namespaces); :func:`expected_at_mesh` is ``connectivity(policy)`` on those pairs with Istio's address
semantics for peers without mesh identity.
"""

from __future__ import annotations

from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections, Evaluator, is_enforced
from tests.oracle import nca

ALL_TCP = PortRange(start=1, end=65535)


def _ranges(w: Workload) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for r in nca._address_set(w):
        out[r.version].append((r.lo, r.hi))
    return out


def _covered(inner: list[tuple[int, int]], outer: list[tuple[int, int]]) -> bool:
    return all(any(lo <= a and b <= hi for lo, hi in outer) for a, b in inner)


def _tcp(c: Connections) -> list[PortRange]:
    if c.everything:
        return [ALL_TCP]
    return [PortRange(start=max(r.start, 1), end=r.end) for p, rs in c.ports if p == Protocol.TCP for r in rs
            if r.end >= 1]


def expected_at_mesh(policy: Policy) -> dict[tuple[str, str], Connections]:
    """What Istio must allow: ``connectivity(policy)`` at mesh destinations, TCP only (nothing else is
    proxied), ports 1-65535. ``ipBlocks`` match addresses, not names: a peer without mesh identity whose
    addresses all lie inside another's is allowed what that one is allowed too, and one whose every
    address is excepted stands for no traffic at all."""
    ev = Evaluator(policy)
    excluded = policy.settings.excluded_namespaces
    mesh = [w for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)]
    peers = [w for w in policy.workloads if w.kind != WorkloadKind.KUBERNETES]
    out = {}
    for d in mesh:
        for s in policy.workloads:
            if s.name == d.name:
                continue
            if s.kind != WorkloadKind.KUBERNETES and not any(_ranges(s).values()):
                continue  # every address excepted: the peer stands for no address at all
            ranges = _tcp(ev.pair(s.name, d.name))
            if s.kind != WorkloadKind.KUBERNETES:
                for t in peers:
                    if t.name != s.name and all(_covered(_ranges(s)[v], _ranges(t)[v]) for v in (4, 6)):
                        ranges += _tcp(ev.pair(t.name, d.name))
            conns = Connections.of((Protocol.TCP, r) for r in ranges)
            if not conns.empty:
                out[(s.name, d.name)] = conns
    return out


def at_mesh(policy: Policy, read: dict[tuple[str, str], Connections]) -> dict[tuple[str, str], Connections]:
    """The read-back restricted to the pairs Istio governs: destinations in the mesh."""
    excluded = policy.settings.excluded_namespaces
    mesh = {w.name for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES and is_enforced(w, excluded)}
    return {k: v for k, v in read.items() if k[1] in mesh}

