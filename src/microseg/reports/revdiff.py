"""A policy diff between two revisions as text, Markdown and JSON (the diff itself: analyses/revdiff.py)."""

from __future__ import annotations

import json

from microseg.analyses.revdiff import RevisionDiff


def _counts(d: RevisionDiff) -> str:
    widened = sum(1 for c in d.changes if c.widens)
    narrowed = sum(1 for c in d.changes if not c.removed.empty)
    return f"{len(d.changes)} pair(s) changed: {widened} with connections added, {narrowed} with connections removed"


def render_text(d: RevisionDiff) -> str:
    lines = [f"Connectivity diff {d.rev1} -> {d.rev2}:"]
    for e in d.changes:
        c = e.change
        lines.append(f"{c.kind}: {c.source} -> {c.destination}: {c.before} => {c.after}")
        if not e.added.empty:
            lines.append(f"    + {e.added}" + (f" by {', '.join(e.added_by)}" if e.added_by else ""))
        if not e.removed.empty:
            lines.append(f"    - {e.removed}" + (f" was {', '.join(e.removed_by)}" if e.removed_by else ""))
        if e.note:
            lines.append(f"    ({e.note})")
    lines.append(_counts(d) + "." if d.changes else "No change in connectivity.")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    # Names come from the inventory: keep them from breaking the table or opening markup.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(d: RevisionDiff) -> str:
    title = f"## microseg policy diff `{_md(d.rev1)}` → `{_md(d.rev2)}`"
    if not d.changes:
        return f"{title}\n\nNo change in connectivity.\n"
    verdict = ("**This change widens reachability.**" if d.widens else "This change adds no connection.")
    lines = [title, "", f"{verdict} {_counts(d)}.", "",
             "| change | source | destination | before | after | added by | removed (was allowed by) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in d.changes:
        c = e.change
        added = f"+ {e.added}: {', '.join(e.added_by) or '—'}" if not e.added.empty else ""
        removed = f"− {e.removed}: {', '.join(e.removed_by) or '—'}" if not e.removed.empty else ""
        note = f" ({e.note})" if e.note else ""
        lines.append(f"| {c.kind} | {_md(c.source)} | {_md(c.destination)} | {_md(str(c.before))} | "
                     f"{_md(str(c.after))} | {_md(added)} | {_md(removed)}{_md(note)} |")
    return "\n".join(lines) + "\n"


def render_json(d: RevisionDiff) -> str:
    doc = {"from": {"rev": d.rev1, "commit": d.commit1}, "to": {"rev": d.rev2, "commit": d.commit2},
           "widens": d.widens, "changes": [{
               "kind": e.change.kind, "source": e.change.source, "destination": e.change.destination,
               "before": str(e.change.before), "after": str(e.change.after), "added": str(e.added),
               "removed": str(e.removed), "added_by": list(e.added_by), "removed_by": list(e.removed_by),
               "note": e.note} for e in d.changes]}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


__all__ = ["render_json", "render_markdown", "render_text"]
