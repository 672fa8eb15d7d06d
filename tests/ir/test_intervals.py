"""Integer interval sets (ports, addresses as integers): worked by hand."""

from __future__ import annotations

from microseg.ir.intervals import address_spans, intersect, merge, subtract


def test_merge_joins_overlapping_and_adjacent_and_sorts() -> None:
    assert merge([(10, 20), (0, 4), (5, 7), (15, 30), (40, 40)]) == [(0, 7), (10, 30), (40, 40)]
    assert merge([]) == []


def test_subtract_cuts_holes_and_ends() -> None:
    assert subtract([(0, 65535)], [(80, 80), (443, 443)]) == [(0, 79), (81, 442), (444, 65535)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(5, 10)], [(0, 5), (10, 20)]) == [(6, 9)]
    assert subtract([(0, 3), (8, 9)], []) == [(0, 3), (8, 9)]


def test_subtract_takes_what_to_remove_in_any_order() -> None:
    # Unsorted and overlapping: the range 0-2 lies before 5-6 and must still be cut.
    assert subtract([(0, 10)], [(5, 6), (0, 2), (1, 3)]) == [(4, 4), (7, 10)]


def test_intersect() -> None:
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert intersect([(0, 4)], [(5, 9)]) == []
    assert intersect([(0, 4)], [(5, 9), (0, 0)]) == [(0, 0)]


def test_address_spans_per_version_minus_exceptions() -> None:
    import ipaddress

    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/24", "10.0.1.0/24", "2001:db8::/127")]
    holes = [ipaddress.ip_network(n) for n in ("10.0.0.128/25", "2001:db8::1/128")]
    v6 = int(ipaddress.ip_address("2001:db8::"))
    ten = int(ipaddress.ip_address("10.0.0.0"))
    assert address_spans(nets, holes) == [(4, ten, ten + 127), (4, ten + 256, ten + 511), (6, v6, v6)]
