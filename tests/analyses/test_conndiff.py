"""Hand-written cases for the pairwise semantic diff (expected values from the definitions, not the code)."""

from __future__ import annotations

from microseg.analyses.conndiff import PairChange, render_connections, render_diff, semantic_diff
from microseg.ir.model import PortRange, Protocol
from microseg.ir.semantics import Connections

ALL = Connections(everything=True)
NONE = Connections()


def tcp(*ports: int) -> Connections:
    return Connections.of((Protocol.TCP, PortRange(start=p, end=p)) for p in ports)


def test_render_connections_in_corpus_style() -> None:
    c = Connections.of([(Protocol.UDP, PortRange(start=53, end=53)), (Protocol.TCP, PortRange(start=9090, end=9092)),
                        (Protocol.TCP, PortRange(start=8080, end=8080))])
    assert render_connections(c) == "TCP 8080,9090-9092,UDP 53"
    assert render_connections(ALL) == "All Connections"
    assert render_connections(NONE) == "No Connections"


def test_classifies_added_removed_changed_and_skips_equal() -> None:
    before = {("a", "b"): tcp(80), ("a", "c"): ALL, ("b", "c"): tcp(443)}
    after = {("a", "b"): tcp(80, 8080), ("c", "a"): tcp(22), ("b", "c"): tcp(443)}
    assert semantic_diff(before, after) == (
        PairChange("changed", "a", "b", tcp(80), tcp(80, 8080)),
        PairChange("added", "c", "a", NONE, tcp(22)),
        PairChange("removed", "a", "c", ALL, NONE),
    )


def test_empty_connections_are_the_same_as_a_missing_pair() -> None:
    assert semantic_diff({("a", "b"): NONE}, {}) == ()
    assert semantic_diff({}, {("a", "b"): NONE}) == ()


def test_kinds_are_ordered_then_pairs_sorted() -> None:
    before = {("z", "a"): ALL, ("b", "a"): ALL, ("m", "n"): tcp(1)}
    after = {("y", "a"): ALL, ("c", "a"): ALL, ("m", "n"): tcp(2)}
    assert [(c.kind, c.source) for c in semantic_diff(before, after)] == [
        ("changed", "m"), ("added", "c"), ("added", "y"), ("removed", "b"), ("removed", "z")]


def test_workload_notes_name_the_workloads_that_exist_on_one_side_only() -> None:
    before = {("a", "old"): tcp(80)}
    after = {("a", "new"): tcp(80), ("new", "new2"): ALL, ("a", "b"): ALL}
    changes = semantic_diff(before, after, before_workloads={"a", "b", "old"},
                            after_workloads={"a", "b", "new", "new2"})
    assert changes == (
        PairChange("added", "a", "b", NONE, ALL),
        PairChange("added", "a", "new", NONE, tcp(80), "workload new added"),
        PairChange("added", "new", "new2", NONE, ALL, "workload new and new2 added"),
        PairChange("removed", "a", "old", tcp(80), NONE, "workload old removed"),
    )


def test_render_diff_lines() -> None:
    text = render_diff([PairChange("removed", "a", "old", tcp(80), NONE, "workload old removed"),
                        PairChange("changed", "x", "y", ALL, tcp(443))])
    assert text == ("Connectivity diff:\n"
                    "diff-type: changed, source: x, destination: y, ref1: All Connections, ref2: TCP 443\n"
                    "diff-type: removed, source: a, destination: old, ref1: TCP 80, ref2: No Connections, "
                    "workloads-diff-info: workload old removed\n")
