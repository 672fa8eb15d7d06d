"""Sets of integers as sorted closed intervals: ports, and IP addresses as integers; and IP addresses and
networks as text.

One implementation for the readers, analyses and back ends that compute with such sets (deployed
nftables and Istio policies, drift, the nftables back end). Every result is canonical: sorted, with
overlapping and adjacent intervals joined.

:func:`address_text` and :func:`network_text` are how every layer writes an address or a network (flow
store, inventory, mapping, analyses, back ends): ``str()`` but for IPv4-mapped IPv6 addresses
(``::ffff:0:0/96``, RFC 4291 section 2.5.5.2), which ``str()`` writes differently by Python version -
``::ffff:c000:201`` up to 3.12, ``::ffff:192.0.2.1`` from 3.13 (CPython gh-87799) - while the same input
must give byte-identical output on every version. They are written as RFC 5952 section 5 recommends,
``::ffff:192.0.2.1``, on every version. Here because the IR is the lowest layer that every writer imports
(the back ends import the IR, not the sources)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Interval = tuple[int, int]  # closed: (first, last)
Span = tuple[int, int, int]  # (IP version, first address, last address)
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def address_text(ip: Address) -> str:
    """``ip`` as text, the same on every Python version: ``str(ip)`` (RFC 5952 for IPv6), but an IPv4-mapped
    address is ``::ffff:`` and the dotted quad (RFC 5952 section 5), with its zone (``%eth0``) if it has one."""
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := ip.ipv4_mapped) is not None:
        return f"::ffff:{v4}%{ip.scope_id}" if ip.scope_id else f"::ffff:{v4}"
    return str(ip)


def network_text(net: Net) -> str:
    """``net`` as text (``address/prefix``), the same on every Python version: ``str(net)`` but for the network
    address, written by :func:`address_text` (``::ffff:10.0.0.0/104``)."""
    return f"{address_text(net.network_address)}/{net.prefixlen}"


__all__ = ["Address", "Interval", "Net", "Span", "address_spans", "address_text", "intersect", "merge",
           "network_text", "subtract"]
