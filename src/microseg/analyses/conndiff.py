"""Pairwise semantic diff of two connectivity maps: which ordered pairs gained, lost or changed connections.

The input is what an evaluator returns (``(source, destination) -> Connections``; a missing pair, like an
empty :class:`~microseg.ir.semantics.Connections`, means no connection), so the same diff serves deployed
NetworkPolicies, a desired policy against what is deployed (drift), and two git revisions of the policy.

Classification follows the connectivity diff of np-guard's netpol-analyzer (the independent source of
``../shared/conformance/netpol/expected/diff``): a pair allowed only after is ``added``, only before is
``removed``, allowed on both sides with different connections is ``changed``; equal pairs are not
reported. When a side of the pair is a workload that exists in only one of the two universes, the change
says so (``workload X added`` / ``workload X and Y removed``), so that a reviewer can tell a policy change
from a topology change.

Order is deterministic: ``changed``, then ``added``, then ``removed`` (the corpus's order, which puts the
edits to existing connectivity first), each sorted by (source, destination).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from microseg.ir.semantics import Connections

Kind = Literal["added", "removed", "changed"]
_KIND_ORDER: dict[str, int] = {"changed": 0, "added": 1, "removed": 2}
NO_CONNECTIONS = Connections()


@dataclass(frozen=True)
class PairChange:
    """One ordered pair whose allowed connections differ between ``before`` and ``after``."""

    kind: Kind
    source: str
    destination: str
    before: Connections  # Connections() (empty) = no connections
    after: Connections
    workload_note: str = ""  # e.g. "workload payments/x[Deployment] added"

    def sort_key(self) -> tuple[int, str, str]:
        return (_KIND_ORDER[self.kind], self.source, self.destination)


def render_connections(c: Connections) -> str:
    """``All Connections``, ``No Connections`` or ``TCP 8080,9090-9092,UDP 53`` (protocols in name order)."""
    return str(c)


def _note(source: str, destination: str, before: Collection[str], after: Collection[str]) -> str:
    # A workload counts as added/removed only when both universes are given; without them no note is made.
    if not before and not after:
        return ""
    for verb, present, absent in (("added", after, before), ("removed", before, after)):
        names = [n for n in (source, destination) if n in present and n not in absent]
        if names:
            return f"workload {' and '.join(names)} {verb}"
    return ""


def semantic_diff(before: Mapping[tuple[str, str], Connections], after: Mapping[tuple[str, str], Connections], *,
                  before_workloads: Collection[str] = (), after_workloads: Collection[str] = ()
                  ) -> tuple[PairChange, ...]:
    """Every ordered pair whose connections differ, classified and sorted (see the module docstring).

    ``before_workloads``/``after_workloads`` are the two universes (workload names); when given, a change
    on a pair with a workload present on one side only carries a ``workload_note``.
    """
    before_set, after_set = set(before_workloads), set(after_workloads)
    out: list[PairChange] = []
    for pair in set(before) | set(after):
        b = before.get(pair, NO_CONNECTIONS)
        a = after.get(pair, NO_CONNECTIONS)
        if b == a or (b.empty and a.empty):
            continue
        kind: Kind = "added" if b.empty else "removed" if a.empty else "changed"
        out.append(PairChange(kind, pair[0], pair[1], b, a, _note(pair[0], pair[1], before_set, after_set)))
    return tuple(sorted(out, key=PairChange.sort_key))


def render_diff(changes: Collection[PairChange]) -> str:
    """The corpus's text form: a header, then one ``diff-type: ...`` line per change."""
    lines = ["Connectivity diff:"]
    for c in sorted(changes, key=PairChange.sort_key):
        line = (f"diff-type: {c.kind}, source: {c.source}, destination: {c.destination}, "
                f"ref1: {render_connections(c.before)}, ref2: {render_connections(c.after)}")
        if c.workload_note:
            line += f", workloads-diff-info: {c.workload_note}"
        lines.append(line)
    return "\n".join(lines) + "\n"


__all__ = ["NO_CONNECTIONS", "PairChange", "render_connections", "render_diff", "semantic_diff"]
