"""Drift findings as text, JSON and SARIF 2.1.0 (the findings themselves: analyses/drift.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote

from microseg.analyses.drift import RULES, SEVERITIES, DriftFinding, DriftReport
from microseg.reports.tables import flows_doc, inventory_doc

if TYPE_CHECKING:
    from microseg.reports.markdown import FlowsView
    from microseg.sources.inventory import InventoryReport


def _where(f: DriftFinding) -> str:
    if f.location is None:
        return ""
    return f" ({f.location.file}{'' if f.location.line is None else f':{f.location.line}'})"


def render_text(report: DriftReport) -> str:
    lines = []
    for f in report.findings:
        pair = f" {f.source} -> {f.destination}:" if f.source and f.destination else ""
        lines.append(f"{f.severity.upper()} {f.id}{pair} {f.message}{_where(f)}")
        if f.evidence:
            lines.append(f"    {f.evidence}")
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    scope = f" against deployed {report.target} ({report.pairs_compared} governed pairs)" if report.target else ""
    lines.append(f"Drift{scope}, {report.edges_checked} observed dependencies: {summary}.")
    return "\n".join(lines) + "\n"


def render_json(report: DriftReport, *, inventory: InventoryReport | None = None,
                flows: FlowsView | None = None) -> str:
    doc = {"target": report.target, "pairs_compared": report.pairs_compared, "edges_checked": report.edges_checked,
           "summary": {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES},
           "findings": [f.as_json() for f in report.findings], "inventory": inventory_doc(inventory),
           "flows": flows_doc(flows)}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# SARIF 2.1.0 (OASIS standard, https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html): one run;
# result.level is one of "error", "warning", "note" (section 3.27.10), so our five severities fold onto it.
_LEVEL: dict[str, str] = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def render_sarif(report: DriftReport, *, version: str, inventory: InventoryReport | None = None,
                 flows: FlowsView | None = None) -> str:
    rules = [{"id": rid, "name": name, "shortDescription": {"text": text},
              "defaultConfiguration": {"level": _LEVEL[severity]}, "properties": {"severity": severity}}
             for rid, (name, text, severity) in sorted(RULES.items())]
    index = {rid: i for i, rid in enumerate(sorted(RULES))}
    results = []
    for f in report.findings:
        result: dict[str, object] = {"ruleId": f.id, "ruleIndex": index[f.id], "level": _LEVEL[f.severity],
                                     "message": {"text": f.message + (f" ({f.evidence})" if f.evidence else "")},
                                     "properties": {"severity": f.severity}}
        location: dict[str, object] = {}
        if f.location is not None:
            # artifactLocation.uri is a URI reference (format uri-reference in the SARIF 2.1.0 schema): a relative path
            # stays relative (resolved against the checkout), and characters such as spaces are percent-encoded.
            physical: dict[str, object] = {"artifactLocation": {"uri": quote(f.location.file)}}
            if f.location.line is not None:
                physical["region"] = {"startLine": f.location.line}
            location["physicalLocation"] = physical
        # A pair, a rule or a workload is a logical location: it has a name but maybe no line of its own.
        if f.source and f.destination:
            location["logicalLocations"] = [{"name": f"{f.source} -> {f.destination}",
                                             "fullyQualifiedName": f"{f.source} -> {f.destination}",
                                             "kind": "resource"}]
        elif f.rule or f.source:
            name = f.rule or f.source or ""
            location["logicalLocations"] = [{"name": name, "fullyQualifiedName": name, "kind": "resource"}]
        if location:
            result["locations"] = [location]
        results.append(result)
    run: dict[str, object] = {"tool": {"driver": {"name": "microseg", "version": version, "rules": rules}},
                              "results": results}
    # Facts about the run's input, not findings about the policy: in the run's property bag (section 3.8), the
    # same objects as the JSON report's. (SARIF's own place would be invocations[].toolExecutionNotifications,
    # which tests/schemas/sarif does not transcribe yet.)
    properties = {k: v for k, v in (("inventory", inventory_doc(inventory)), ("flows", flows_doc(flows)))
                  if v is not None}
    if properties:
        run["properties"] = properties
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


__all__ = ["SARIF_SCHEMA", "render_json", "render_sarif", "render_text"]
