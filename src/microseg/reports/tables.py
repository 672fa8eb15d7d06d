"""Machine-readable plan outputs: matrix.csv, zones.yaml, findings.json (a documented contract)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import yaml

from microseg.ir.model import Edge, Finding, Policy, PortRange, Protocol

if TYPE_CHECKING:
    from microseg.reports.markdown import FlowsView
    from microseg.sources.inventory import InventoryReport

MATRIX_COLUMNS = ("rule_id", "source", "source_segment", "destination", "destination_segment", "protocol", "port",
                  "justification", "flows", "bytes", "days", "first_seen", "last_seen", "rule_kind")


@dataclass(frozen=True)
class MatrixRow:
    rule_id: str
    source: str
    source_segment: str
    destination: str
    destination_segment: str
    protocol: Protocol
    port: PortRange
    justification: str
    flows: int
    bytes: int
    days: int
    first_seen: datetime | None
    last_seen: datetime | None
    rule_kind: str


def _ts(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else ""


def matrix_rows(policy: Policy, edges: Sequence[Edge]) -> list[MatrixRow]:
    """One row per (rule, source, destination, port range), with the evidence from the edges."""
    zones = policy.zone_of()
    by_pair: dict[tuple[str, str, Protocol], list[Edge]] = {}
    for e in edges:
        by_pair.setdefault((e.source, e.destination, e.protocol), []).append(e)
    rows = []
    for rule in sorted(policy.all_rules(), key=lambda r: r.id):
        for s in rule.sources:
            for d in rule.destinations:
                for rng in rule.ports:
                    hits = [e for e in by_pair.get((s, d, rule.protocol), ())
                            if rule.protocol == Protocol.ICMP or rng.contains(e.port)]
                    firsts = [e.first_seen for e in hits if e.first_seen]
                    lasts = [e.last_seen for e in hits if e.last_seen]
                    rows.append(MatrixRow(
                        rule_id=rule.id, source=s, source_segment=zones.get(s, ""), destination=d,
                        destination_segment=zones.get(d, ""), protocol=rule.protocol, port=rng,
                        justification=rule.justification.text, flows=sum(e.flows for e in hits),
                        bytes=sum(e.bytes for e in hits), days=max((e.days for e in hits), default=0),
                        first_seen=min(firsts) if firsts else None, last_seen=max(lasts) if lasts else None,
                        rule_kind=rule.justification.kind.value))
    rows.sort(key=lambda r: (r.source, r.destination, r.protocol.value, r.port.start, r.rule_id))
    return rows


def matrix_csv(rows: Sequence[MatrixRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MATRIX_COLUMNS)
    for r in rows:
        w.writerow([r.rule_id, r.source, r.source_segment, r.destination, r.destination_segment, r.protocol.value,
                    str(r.port), r.justification, r.flows, r.bytes, r.days, _ts(r.first_seen), _ts(r.last_seen),
                    r.rule_kind])
    return buf.getvalue()


def zones_yaml(policy: Policy) -> str:
    seg_info = {s.name: s for s in policy.segments}
    wl = policy.workload_map()
    doc = {"zones": [{"name": s.name, "trust": s.trust, "description": s.description,
                      "members": [{"workload": a.workload, "reason": a.reason,
                                   **({"overridden": True} if a.overridden else {}),
                                   **({"environment": wl[a.workload].environment}
                                      if a.workload in wl and wl[a.workload].environment else {})}
                                  for a in sorted(policy.assignments, key=lambda a: a.workload)
                                  if a.zone == s.name]}
                     for s in sorted(seg_info.values(), key=lambda s: (-s.trust, s.name))]}
    return "# Segment / trust-zone map proposed by microseg (override zones in the inventory)\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, width=120)


def findings_json(findings: Sequence[Finding]) -> str:
    return json.dumps([f.model_dump(mode="json") for f in findings], indent=2, sort_keys=True) + "\n"


def inventory_doc(inventory: InventoryReport | None) -> dict[str, object] | None:
    """What reading the inventory read (files), read as nothing (unrecognized: file:line of each document),
    did not read (ignored_kinds: Kubernetes kind -> objects) and noticed (notes), as JSON; None: none was read."""
    if inventory is None:
        return None
    return {"files": list(inventory.files), "unrecognized": list(inventory.unrecognized),
            "ignored_kinds": dict(inventory.ignored_kinds), "notes": list(inventory.notes)}


def flows_doc(flows: FlowsView | None) -> dict[str, object] | None:
    """What reading the flows counted, as JSON: files, lines, records, skipped, bad (with ``bad_samples``, each
    ``file:line [field] message``), outside the window, the zone and window used, and how many records resolved
    (``engine``: the engine table that held them, nothing ingested); None: no flows were read."""
    if flows is None:
        return None
    i, c = flows.ingest, flows.coverage
    return {"engine": flows.engine, "files": i.files, "lines": i.lines, "records": i.records, "skipped": i.skipped,
            "bad": i.bad, "bad_samples": list(i.bad_samples), "outside": i.outside, "timezone": i.timezone,
            "window": i.window, "mapped_records": c.records, "resolved_records": c.resolved_records,
            "resolved_share": round(c.record_share, 6)}
