"""What a set of deployed Kubernetes policies allows: per-pair connectivity between workloads and external ranges.

Input: the workloads of an inventory (IR), the NetworkPolicies, AdminNetworkPolicies and the
BaselineAdminNetworkPolicy read from the cluster's manifests. Output: every ordered pair with at least one
allowed connection, as :class:`ConnectionList` (rendered as text, JSON or CSV).

Peers. A Kubernetes workload is shown as ``namespace/name[Kind]``. Everything outside the cluster's pods is
shown as address ranges ``FIRST-LAST[External]``: the address space (IPv4 ``0.0.0.0/0``; IPv6 ``::/0`` too
when a policy names an IPv6 CIDR) is cut at every boundary of the CIDRs the policies name, *per direction*:
sources are cut by the ingress ``ipBlock``s, destinations by the egress ``ipBlock``s and ``networks``. Each
piece is wholly inside or outside every CIDR of its direction, so all its addresses have the same
connectivity, and two neighbouring pieces are kept apart even when their connectivity is equal (the form
of np-guard's netpol-analyzer, whose output the conformance corpus holds). Pieces with no connection are
not listed, nor is a workload's connection to itself.

Ordering: lines sorted by their text, so the output is byte-identical for the same input.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from microseg.analyses.conndiff import Kind, PairChange, render_connections, semantic_diff
from microseg.ir.intervals import address_text
from microseg.ir.model import PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections
from microseg.sources.deployed import admin_netpol, kubernetes

EXTERNAL_KIND = "External"
_V4 = ipaddress.ip_network("0.0.0.0/0")
_V6 = ipaddress.ip_network("::/0")


@dataclass(frozen=True)
class Peer:
    """One side of a connection: a workload (namespace, name, kind) or an external address range."""

    display: str
    kind: str  # the Kubernetes kind, or "External"
    namespace: str | None = None
    name: str | None = None
    first: str | None = None  # external ranges: first and last address
    last: str | None = None


@dataclass(frozen=True)
class ConnectionList:
    """Allowed connections keyed by (source display, destination display), plus the peers."""

    pairs: Mapping[tuple[str, str], Connections]
    peers: Mapping[str, Peer]
    workloads: tuple[str, ...]  # display names of the workloads (not the external ranges)
    focused: tuple[Protocol, int] | None = None  # set by :meth:`focus`

    def lines(self) -> list[str]:
        return sorted(f"{s} => {d} : {render_connections(c)}" for (s, d), c in self.pairs.items())

    def focus(self, protocol: Protocol, port: int) -> ConnectionList:
        """Only the pairs that allow ``protocol``/``port``, each reduced to that one port."""
        one = Connections.of([(protocol, PortRange(start=port, end=port))])
        return ConnectionList({k: one for k, c in self.pairs.items() if c.allows(protocol, port)}, self.peers,
                              self.workloads, (protocol, port))


def workload_display(w: Workload) -> str:
    return f"{w.name}[{w.k8s_kind or 'Pod'}]"


_KIND_DISPLAY = {WorkloadKind.HOST: "Host", WorkloadKind.SERVICE: "Service", WorkloadKind.EXTERNAL: "External"}


def from_pairs(pairs: Mapping[tuple[str, str], Connections], workloads: Sequence[Workload]) -> ConnectionList:
    """A connection list of per-pair connectivity between inventory workloads (hosts, VMs, external peers).

    For enforcement points read per workload rather than per address range (security groups): a peer is
    shown as ``name[Host]``, ``name[Service]``, ``name[External]`` (``namespace/name[Kind]`` for pods).
    """
    by_name = {w.name: w for w in workloads}

    def peer(w: Workload) -> Peer:
        if w.kind == WorkloadKind.KUBERNETES:
            return Peer(workload_display(w), w.k8s_kind or "Pod", w.namespace, w.name.split("/", 1)[-1])
        kind = _KIND_DISPLAY[w.kind]
        return Peer(f"{w.name}[{kind}]", kind, None, w.name)

    peers = {w.name: peer(w) for w in workloads}
    shown = {peers[s].display: peers[s] for pair in pairs for s in pair}
    return ConnectionList({(peers[s].display, peers[d].display): c for (s, d), c in pairs.items() if not c.empty},
                          {**{p.display: p for p in peers.values()}, **shown},
                          tuple(sorted(peers[n].display for n in by_name)))


def _ranges(points: set[tuple[int, int]], versions: set[int]) -> list[tuple[int, int, int]]:
    space = [(n.version, int(n.network_address), int(n.broadcast_address)) for n in (_V4, _V6)
             if n.version in versions]
    return list(kubernetes.atoms(space, points))


def _address(version: int, value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


Points = set[tuple[int, int]]


def policy_points(netpols: Sequence[kubernetes.NetPol], admin: Sequence[admin_netpol.AdminPolicy] = ()
                  ) -> tuple[Points, Points]:
    """Where the policies cut the address space: (for sources, by ingress rules; for destinations, by egress)."""
    ingress = kubernetes.cut_points(netpols, "Ingress")
    egress = kubernetes.cut_points(netpols, "Egress") | {
        p for a in admin for r in a.egress for peer in r.peers for p in kubernetes.set_points(peer.networks)}
    return ingress, egress


def connection_list(workloads: Sequence[Workload], netpols: Sequence[kubernetes.NetPol],
                    admin: Sequence[admin_netpol.AdminPolicy] = (), *,
                    label_variants: Mapping[str, Sequence[kubernetes.Labels]] | None = None,
                    extra_points: tuple[Points, Points] = (set(), set()),
                    networks: Mapping[str, str] | None = None) -> ConnectionList:
    """Evaluate the policies over the Kubernetes ``workloads`` and the external ranges (module docstring).

    ``extra_points`` cuts the ranges further (a diff cuts both sides at the points of both). ``networks``
    (workload -> primary network, from analyses/multinet.py) keeps workloads of different primary networks
    apart: no pair across networks is evaluated (OVN-Kubernetes isolates primary user-defined networks).
    """
    pods = [w for w in workloads if w.kind == WorkloadKind.KUBERNETES]
    ingress_points, egress_points = policy_points(netpols, admin)
    ingress_points, egress_points = ingress_points | extra_points[0], egress_points | extra_points[1]
    admin_nets = [n for a in admin for r in a.egress for peer in r.peers for n in peer.networks]
    block_nets = [n for p in netpols for r in (*p.ingress, *p.egress) for peer in r.peers or ()
                  if peer.ip_block is not None for n in (peer.ip_block.cidr, *peer.ip_block.excepts)]
    versions = {4} | {n.version for n in (*admin_nets, *block_nets)} | {v for v, _ in (*extra_points[0],
                                                                                           *extra_points[1])}
    peers: dict[str, Peer] = {}
    universe: list[Workload] = list(pods)
    internal_to_display: dict[str, str] = {}
    for w in pods:
        display = workload_display(w)
        peers[display] = Peer(display, w.k8s_kind or "Pod", w.namespace, w.name.split("/", 1)[-1])
        internal_to_display[w.name] = display
    sources: list[str] = []
    destinations: list[str] = []
    for role, points, into in (("from", ingress_points, sources), ("to", egress_points, destinations)):
        for v, lo, hi in _ranges(points, versions):
            first, last = _address(v, lo), _address(v, hi)
            display = f"{address_text(first)}-{address_text(last)}[{EXTERNAL_KIND}]"
            internal = f"{role}:{display}"
            universe.append(admin_netpol.external_workload(internal, first, last))
            peers[display] = Peer(display, EXTERNAL_KIND, first=address_text(first), last=address_text(last))
            internal_to_display[internal] = display
            into.append(internal)
    points = ingress_points | egress_points
    subjects, ns_labels = kubernetes.subjects(universe, points, label_variants or {})
    cluster = admin_netpol.Cluster(netpols, admin, subjects, ns_labels)
    pairs: dict[tuple[str, str], Connections] = {}
    names = sorted(w.name for w in pods)
    candidates = [(s, d) for s in names for d in names
                  if s != d and (networks is None or networks.get(s) == networks.get(d))]
    candidates += [(s, d) for s in sources for d in names] + [(s, d) for s in names for d in destinations]
    for s, d in candidates:
        allowed = cluster.decide(s, d)
        if not allowed.empty:
            pairs[(internal_to_display[s], internal_to_display[d])] = allowed.connections()
    return ConnectionList(pairs, peers, tuple(sorted(internal_to_display[n] for n in names)))


def connectivity_diff(before: PolicyInput, after: PolicyInput) -> tuple[PairChange, ...]:
    """Semantic diff of two deployments (``before`` and ``after``), external ranges on a common footing.

    Both sides are cut at the points of both, so every range means the same addresses on either side; then
    changes that differ only by adjacent ranges of one direction are joined back (same kind, same other
    end, same connections before and after, same note), which keeps the diff as short as the change.
    """
    b_in, b_out = policy_points(before.netpols, before.admin)
    a_in, a_out = policy_points(after.netpols, after.admin)
    cuts = (b_in | a_in, b_out | a_out)
    b = connection_list(before.workloads, before.netpols, before.admin, label_variants=before.label_variants,
                        extra_points=cuts, networks=before.networks)
    a = connection_list(after.workloads, after.netpols, after.admin, label_variants=after.label_variants,
                        extra_points=cuts, networks=after.networks)
    changes = semantic_diff(b.pairs, a.pairs, before_workloads=b.workloads, after_workloads=a.workloads)
    return merge_adjacent_ranges(changes, {**b.peers, **a.peers})


def merge_adjacent_ranges(changes: Sequence[PairChange], peers: Mapping[str, Peer]) -> tuple[PairChange, ...]:
    """Join changes whose external side is a run of adjacent ranges and that are otherwise equal."""
    groups: dict[tuple[Kind, str, str, Connections, Connections, str, int], list[tuple[int, int, int]]] = {}
    kept: list[PairChange] = []
    for c in changes:
        src, dst = peers.get(c.source), peers.get(c.destination)
        ext, side = (src, "source") if src is not None and src.kind == EXTERNAL_KIND else (dst, "destination")
        if ext is None or ext.kind != EXTERNAL_KIND or ext.first is None or ext.last is None:
            kept.append(c)
            continue
        first, last = ipaddress.ip_address(ext.first), ipaddress.ip_address(ext.last)
        other = c.destination if side == "source" else c.source
        key = (c.kind, side, other, c.before, c.after, c.workload_note, int(first.version))
        groups.setdefault(key, []).append((first.version, int(first), int(last)))
    for key, spans in groups.items():
        kind, side, other, before, after, note, _ = key
        merged: list[tuple[int, int, int]] = []
        for v, lo, hi in sorted(spans):
            if merged and lo == merged[-1][2] + 1:
                merged[-1] = (v, merged[-1][1], hi)
            else:
                merged.append((v, lo, hi))
        for v, lo, hi in merged:
            name = f"{address_text(_address(v, lo))}-{address_text(_address(v, hi))}[{EXTERNAL_KIND}]"
            pair = (name, other) if side == "source" else (other, name)
            kept.append(PairChange(kind, pair[0], pair[1], before, after, note))
    return tuple(sorted(kept, key=PairChange.sort_key))


@dataclass(frozen=True)
class PolicyInput:
    """What :func:`connection_list` evaluates: workloads, the three kinds of policies, pod label variants."""

    workloads: tuple[Workload, ...]
    netpols: tuple[kubernetes.NetPol, ...]
    admin: tuple[admin_netpol.AdminPolicy, ...] = ()
    label_variants: Mapping[str, Sequence[kubernetes.Labels]] | None = None
    networks: Mapping[str, str] | None = None  # workload -> primary network (multi-network inputs)


# -- rendering ------------------------------------------------------------------------------------------------


def render_text(cl: ConnectionList) -> str:
    """``SRC => DST : CONNECTIONS`` lines, sorted (the conformance corpus's form).

    Focused on one port: a ``Permitted connections on PROTO PORT:`` header, then ``SRC => DST`` lines.
    """
    if cl.focused is not None:
        proto, port = cl.focused
        lines = [f"Permitted connections on {proto.value} {port}:"] + sorted(f"{s} => {d}" for s, d in cl.pairs)
        return "\n".join(lines) + "\n"
    lines = cl.lines()
    return "\n".join(lines) + ("\n" if lines else "")


def _connections_json(c: Connections) -> object:
    if c.everything:
        return "all"
    return [{"protocol": p.value, "ports": [str(r) for r in rs]} for p, rs in c.ports]


def _peer_json(p: Peer) -> dict[str, object]:
    if p.kind == EXTERNAL_KIND and p.first is not None:
        return {"kind": EXTERNAL_KIND, "first": p.first, "last": p.last}
    return {"kind": p.kind, "namespace": p.namespace, "name": p.name}


def render_json(cl: ConnectionList) -> str:
    """``{"connections": [{"source": {...}, "destination": {...}, "connections": "all" | [...]}]}``."""
    rows = [{"source": _peer_json(cl.peers[s]), "destination": _peer_json(cl.peers[d]),
             "text": render_connections(c), "connections": _connections_json(c)}
            for (s, d), c in sorted(cl.pairs.items())]
    return json.dumps({"connections": rows}, indent=2, sort_keys=True) + "\n"


def render_csv(cl: ConnectionList) -> str:
    """Columns ``source,destination,protocol,ports``: one row per protocol; ``ALL`` for every connection."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source", "destination", "protocol", "ports"])
    for (s, d), c in sorted(cl.pairs.items()):
        if c.everything:
            writer.writerow([s, d, "ALL", "ALL"])
        for p, rs in c.ports:
            writer.writerow([s, d, p.value, ",".join(str(r) for r in rs)])
    return buf.getvalue()


RENDERERS = {"txt": render_text, "json": render_json, "csv": render_csv}

__all__ = ["ConnectionList", "EXTERNAL_KIND", "Peer", "PolicyInput", "RENDERERS", "connection_list",
           "connectivity_diff", "from_pairs", "merge_adjacent_ranges", "policy_points", "render_csv", "render_json",
           "render_text", "workload_display"]
