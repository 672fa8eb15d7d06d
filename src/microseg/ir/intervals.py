"""Sets of integers as sorted closed intervals: ports, and IP addresses as integers.

One implementation for the readers, analyses and back ends that compute with such sets (deployed
nftables and Istio policies, drift, the nftables back end). Every result is canonical: sorted, with
overlapping and adjacent intervals joined."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Interval = tuple[int, int]  # closed: (first, last)
Span = tuple[int, int, int]  # (IP version, first address, last address)
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The canonical form of the union of ``intervals``."""
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def subtract(keep: Iterable[Interval], remove: Iterable[Interval]) -> list[Interval]:
    """What ``keep`` holds and ``remove`` does not."""
    cut = merge(remove)
    out: list[Interval] = []
    for lo, hi in merge(keep):
        cur = lo
        for rlo, rhi in cut:
            if rhi < cur or rlo > hi:
                continue
            if rlo > cur:
                out.append((cur, rlo - 1))
            cur = max(cur, rhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return out


def intersect(x: Sequence[Interval], y: Sequence[Interval]) -> list[Interval]:
    """What both ``x`` and ``y`` hold."""
    return merge((max(a, c), min(b, d)) for a, b in x for c, d in y if max(a, c) <= min(b, d))


def address_spans(include: Iterable[Net], exclude: Iterable[Net] = ()) -> list[Span]:
    """The addresses of ``include`` minus those of ``exclude``, as sorted disjoint spans."""
    inc, exc = list(include), list(exclude)
    out: list[Span] = []
    for v in (4, 6):
        rest = subtract(((int(n.network_address), int(n.broadcast_address)) for n in inc if n.version == v),
                        ((int(n.network_address), int(n.broadcast_address)) for n in exc if n.version == v))
        out.extend((v, lo, hi) for lo, hi in rest)
    return out


__all__ = ["Interval", "Net", "Span", "address_spans", "intersect", "merge", "subtract"]
