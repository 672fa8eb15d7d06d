"""The human deliverables: report.md, rollout.md, validation.md.

Text is built from the plan's results only (no flow log is re-read here). Every value that came from
an inventory or a log is escaped for Markdown tables so a hostile name cannot forge a row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from microseg.analyses.rollout import (
    ENFORCE_ORDER,
    MIN_OBSERVATION_DAYS,
    SCHEDULE_MAX_HOURS,
    SCHEDULE_MIN_CAPTURE_HOURS,
    SCHEDULE_MIN_FLOWS,
    RolloutPlan,
    capture_text,
    hour_ranges,
)
from microseg.analyses.validate import ValidationResult
from microseg.ir.model import Edge, Finding, Policy
from microseg.reports.tables import MatrixRow


@dataclass(frozen=True)
class CoverageView:
    records: int
    resolved_records: int
    total_bytes: int
    resolved_bytes: int
    unoriented: int
    top_unresolved: tuple[tuple[str, int, int], ...]  # (address, records, bytes)

    @property
    def record_share(self) -> float:
        return self.resolved_records / self.records if self.records else 1.0

    @property
    def byte_share(self) -> float:
        return self.resolved_bytes / self.total_bytes if self.total_bytes else 1.0


@dataclass(frozen=True)
class InventoryView:
    """What the inventory readers read besides the inventory itself: documents they did not recognise
    (not read), Kubernetes kinds they do not read (counted), and notes a reviewer should see."""

    files: int = 0
    unrecognized: tuple[str, ...] = ()  # file:line of each document read as nothing
    ignored_kinds: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestView:
    files: int
    lines: int
    records: int
    skipped: int
    bad: int
    bad_samples: tuple[str, ...] = ()
    formats: tuple[tuple[str, int], ...] = ()  # format -> files
    timezone: str = "UTC"  # IANA zone of timestamps logged without one (nfdump)
    outside: int = 0  # records outside the time window
    window: str | None = None  # the --since/--until window, described; None = every record


@dataclass(frozen=True)
class FlowsView:
    """What reading the flows gave besides the edges (``validate``, ``drift``), as Coverage shows it for ``plan``:
    the ingest's counts (bad lines with samples, records outside the window) and how many records resolved."""

    ingest: IngestView
    coverage: CoverageView
    engine: str | None = None  # the engine whose table held the flows (nothing was ingested); None: --flows


@dataclass(frozen=True)
class PlanView:
    policy: Policy
    edges: tuple[Edge, ...]
    findings: tuple[Finding, ...]
    matrix: tuple[MatrixRow, ...]
    rollout: RolloutPlan
    validation: ValidationResult
    coverage: CoverageView
    ingest: IngestView
    inputs: tuple[str, ...] = field(default=())
    targets: tuple[str, ...] = field(default=())
    inventory: InventoryView = field(default=InventoryView())


def cell(value: object) -> str:
    """Escape a value for a Markdown table cell."""
    text = str(value)
    for ch in ("\\", "|", "`", "*", "_", "<", ">", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.split())


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _ts(t: object) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if hasattr(t, "strftime") else "-"


def zone_section(v: PlanView) -> str:
    wl = v.policy.workload_map()
    lines = ["## (a) Segment / trust-zone map\n",
             "Every workload is placed in a zone, with the reason. Override a zone with `zone:` in the inventory "
             "(`overrides:` section); `zones.yaml` has the same map for tools.\n"]
    for seg in v.policy.segments:
        lines.append(f"### {cell(seg.name)} (trust {seg.trust}) — {len(seg.members)} workload(s)\n")
        lines.append(f"{cell(seg.description)}\n")
        rows = []
        for a in sorted(v.policy.assignments, key=lambda a: a.workload):
            if a.zone != seg.name:
                continue
            w = wl.get(a.workload)
            rows.append([a.workload, w.kind.value if w else "?", (w.environment or "-") if w else "-",
                         ", ".join(w.compliance) if w and w.compliance else "-",
                         a.reason + (" (override)" if a.overridden else "")])
        lines.append(_table(["workload", "kind", "env", "compliance", "reason"], rows))
    lines.append("### Guardrails\n")
    lines.append(_table(["id", "statement"], [[g.id, g.description] for g in v.policy.guardrails]))
    return "\n".join(lines)


def matrix_section(v: PlanView) -> str:
    rows = [[r.rule_id, r.source, r.source_segment, r.destination, r.destination_segment, r.protocol.value,
             str(r.port), r.flows, r.days, r.justification] for r in v.matrix]
    head = ("## (b) Flow-to-policy matrix\n\n"
            f"{len(v.matrix)} allowed row(s) from {len(v.policy.all_rules())} rule(s). **Everything else is denied "
            "east-west (default deny).** Infrastructure allowances are listed, not hidden: they are the rows "
            "whose justification says so. `matrix.csv` has the same rows with bytes and first/last seen.\n\n")
    return head + _table(["rule", "source", "src zone", "destination", "dst zone", "proto", "port", "flows",
                          "days", "justification"], rows)


def coverage_section(v: PlanView) -> str:
    c, i = v.coverage, v.ingest
    out = ["## Coverage\n",
           f"- Flow files read: {i.files} ({', '.join(f'{n} {fmt}' for fmt, n in i.formats)}); lines: {i.lines}; "
           f"records: {i.records}; skipped lines that are no record of their own (NODATA/SKIPDATA, "
           f"connection updates, a connection's report from its other end): "
           f"{i.skipped}; unparseable lines: {i.bad}"
           + (f" (e.g. {cell(i.bad_samples[0])})" if i.bad_samples else ""),
           f"- Time zone of timestamps logged without one (nfdump local times): {cell(i.timezone)}",
           (f"- Time window: {cell(i.window)}; {i.outside} records outside the window (not in any edge)"
            if i.window is not None else "- Time window: none (every record counts)"),
           f"- Records with both ends resolved to workloads or named peers: {c.resolved_records}/{c.records} "
           f"({c.record_share:.1%}); bytes: {c.byte_share:.1%}",
           f"- Records whose server side could not be told from ports (ephemeral on both ends, no edge made): "
           f"{c.unoriented}",
           f"- Dependencies (edges) found: {len(v.edges)} "
           f"({sum(1 for e in v.edges if e.flows > 0)} with accepted traffic)\n"]
    if c.top_unresolved:
        out.append("Top unresolved addresses (no inventory entry explains them at the flow's time):\n")
        out.append(_table(["address", "records", "bytes"], [list(t) for t in c.top_unresolved]))
    out.append(inventory_section(v.inventory))
    return "\n".join(out)


def inventory_section(inv: InventoryView, limit: int = 50) -> str:
    """The inventory's part of Coverage: what was read as nothing must be seen, since a host missing from
    the inventory leaves its flows unresolved."""
    out = ["### Inventory\n", f"- Inventory files read: {inv.files}",
           "- Documents not recognised as inventory (read as nothing): "
           + (f"{len(inv.unrecognized)}: " + ", ".join(cell(u) for u in inv.unrecognized[:limit])
              + (f" and {len(inv.unrecognized) - limit} more" if len(inv.unrecognized) > limit else "")
              if inv.unrecognized else "none"),
           "- Kubernetes kinds not read: "
           + (", ".join(f"{cell(k)} × {n}" for k, n in inv.ignored_kinds) if inv.ignored_kinds else "none")]
    if inv.notes:
        out.append(f"- Notes ({len(inv.notes)}):")
        out += [f"  - {cell(n)}" for n in inv.notes[:limit]]
        if len(inv.notes) > limit:
            out.append(f"  - and {len(inv.notes) - limit} more")
    return "\n".join(out) + "\n"


def findings_section(findings: Sequence[Finding], limit: int = 200) -> str:
    counts = Counter(f.id for f in findings)
    out = ["## Findings\n", "By id: " + (", ".join(f"{k} × {n}" for k, n in sorted(counts.items())) or "none")
           + ". Full list in `findings.json`.\n"]
    rows = [[f.id, f.severity, f.source or "-", f.destination or "-",
             f"{f.protocol.value if f.protocol else ''} {f.port if f.port is not None else ''}".strip() or "-",
             f.message] for f in findings[:limit]]
    out.append(_table(["id", "severity", "source", "destination", "port", "message"], rows))
    if len(findings) > limit:
        out.append(f"\n({len(findings) - limit} more in findings.json)\n")
    sugg = [f for f in findings if f.id == "MS101"]
    if sugg:
        out.append("\n### Suggested exceptions (only if the flow is legitimate)\n")
        out += [f"- `{cell(f.source)} -> {cell(f.destination)}`: {cell(f.suggestion)}" for f in sugg]
        out.append("")
    return "\n".join(out)


def rollout_md(v: PlanView) -> str:
    out = ["# (c) Phased rollout plan\n",
           "Observe → codify → enforce, segment by segment, most sensitive first. microseg evaluates the exit "
           "criteria itself; the status column is today's evaluation from the flows given to `plan`.\n",
           "## Phase 1 — Observe (log only)\n",
           "- Deploy the generated policies in observe mode: `microseg compile --policy policy --target "
           "kubernetes --mode observe --out enforce/kubernetes-observe` (NetworkPolicy has no audit mode: "
           "observe mode applies the allow policies without the default deny, so nothing is blocked yet).",
           f"- Keep collecting flow logs for at least {MIN_OBSERVATION_DAYS} days so weekly jobs are seen.",
           "- Exit criteria: flows resolved ≥ 95 % (see Coverage in report.md); every segment observed for "
           f"≥ {MIN_OBSERVATION_DAYS} days; flow records in every hour of the day, so nightly jobs are seen; "
           "`microseg validate --policy policy --inventory … --flows <new week>` reports no MS203 (observed flow "
           "that enforcement would break).",
           f"  - Today: records in every hour of the day (UTC): {capture_text(v.rollout.capture_hours)}.\n",
           "## Phase 2 — Codify\n",
           "- Review `policy/` as a pull request: zones (`segments.yaml`), rules (`rules.yaml`), guardrails.",
           "- Resolve every MS101 finding: fix the caller, or add an exception with approver, reason and expiry "
           "to `policy/exceptions.yaml` (kept when `plan` runs again).",
           "- Exit criteria: no open critical/high finding; `microseg validate --policy policy` exits 0.\n",
           "## Phase 3 — Enforce, segment by segment\n",
           "Order: " + " → ".join(z for z in ENFORCE_ORDER if any(s.segment == z for s in v.rollout.order))
           + ". For each segment: apply the default deny for its workloads, watch deny logs for 48 h, then the "
           "next. Roll back by removing the default-deny object only (allows stay).\n",
           "Exit criteria per segment, evaluated with `microseg validate --policy policy --inventory … --flows "
           "<last 7 days> --segment <segment>`: no MS203 for destinations in the segment; no denied flow in "
           "the deny logs that the matrix should have allowed.\n"]
    rows = [[s.segment, s.trust, s.members, s.inbound_rules, s.observed_days, s.open_findings,
             hour_ranges(s.watch_hours) or "-", "ready" if s.ready else "not ready: " + "; ".join(s.blockers)]
            for s in v.rollout.order]
    out.append(_table(["segment", "trust", "workloads", "inbound rules", "days observed", "open findings",
                       "watch (UTC)", "status today"], rows))
    out.append(scheduled_section(v.rollout))
    return "\n".join(out)


def scheduled_section(plan: RolloutPlan) -> str:
    """The inbound dependencies that only run at one or two hours of the day, per segment (not blockers)."""
    segments = [s for s in plan.order if s.scheduled]
    out = ["## Scheduled-looking dependencies\n"]
    if not segments:
        return "\n".join([*out, f"None: no edge the plan allows had {SCHEDULE_MIN_FLOWS} or more records all "
                               f"in at most {SCHEDULE_MAX_HOURS} hours of the day (looked for only when the flow "
                               f"logs cover at least {SCHEDULE_MIN_CAPTURE_HOURS} hours of it).\n"])
    out.append(f"Inbound edges the plan allows whose records ({SCHEDULE_MIN_FLOWS} or more) all started in at "
               f"most {SCHEDULE_MAX_HOURS} hours of the day: cron, backup, ETL, weekly jobs. After enforcing a "
               "segment, keep the deny-log watch open across these hours (the \"watch\" column). An edge seen on "
               "fewer days than the observation window (e.g. 1 of 7: a weekly job) may not run again within the "
               "48 h watch: watch until its next run, or confirm the schedule with its owner.\n")
    for s in segments:
        out.append(f"- **{cell(s.segment)}** (watch UTC {hour_ranges(s.watch_hours)}, observed for "
                   f"{s.observed_days} day(s)):")
        out += [f"  - {cell(x)}" for x in s.scheduled]
    return "\n".join(out) + "\n"


def validation_md(v: PlanView) -> str:
    r = v.validation
    status = "PASS" if r.ok else f"FAIL ({len(r.violations)} violation(s))"
    out = ["# (d) Validation and drift-detection plan\n",
           "## What is checked, and how to run it\n",
           "- **Intended flows are allowed**: every matrix row is evaluated against the policy "
           f"({r.rows_checked} rows checked now).",
           "- **Lateral movement is blocked**: every workload pair outside the matrix is denied "
           f"({r.pairs_checked} reachable pairs checked against the matrix); observed flows that break a "
           "guardrail are confirmed denied (MS204).",
           "- **Nothing breaks at enforcement**: every observed accepted flow is allowed or deliberately denied "
           f"(MS203/MS205; {r.edges_checked} observed dependencies checked).",
           "- **Guardrails hold**: no allow rule breaks a guardrail without an unexpired exception (MS201/MS202).",
           "- **Compiled policies mean the same**: the test-suite cross-checks the Kubernetes output with "
           "network-config-analyzer, an independent evaluator.",
           "- **Drift** (run daily in CI on new flow logs): `microseg validate --policy policy --inventory <today's "
           "snapshot> --flows '<last 24h>'` — exit 0 pass, 4 violation; a new MS203 is an unexplained flow, an "
           "MS206 a connection the plan allows that today's controls deny.\n",
           f"## Result at plan time: {status}\n"]
    if r.violations:
        out.append(findings_section(list(r.violations)))
    if r.warnings:
        out.append("### Warnings\n")
        out.append(_table(["id", "source", "destination", "port", "message"],
                          [[f.id, f.source, f.destination, f.port, f.message] for f in r.warnings]))
    if r.info:
        out.append("### Blocked as intended\n")
        out.append(_table(["id", "source", "destination", "port", "message"],
                          [[f.id, f.source, f.destination, f.port, f.message] for f in r.info]))
    out.append("## Blast radius (workloads reachable from each workload)\n")
    out.append("Flat = today's flat network; direct = workloads it can open a connection to under the plan; "
               "transitive = what an attacker who compromises it can reach by hopping.\n")
    out.append(_table(["workload", "zone", "flat", "direct", "transitive"],
                      [[b.workload, b.zone, b.flat, b.direct, b.transitive] for b in r.blast]))
    return "\n".join(out)


def report_md(v: PlanView) -> str:
    n_wl = sum(1 for w in v.policy.workloads if w.kind.value != "external")
    flat = sum(b.flat for b in v.validation.blast)
    planned = sum(b.direct for b in v.validation.blast)
    head = ["# microseg plan\n",
            f"Inputs: {', '.join(cell(i) for i in v.inputs) or '-'}\n",
            f"{n_wl} workloads in {len(v.policy.segments)} zones; {len(v.policy.all_rules())} allow rules "
            f"({len(v.matrix)} matrix rows); {len(v.findings)} findings "
            f"({sum(1 for f in v.findings if f.severity in ('critical', 'high'))} high or critical). "
            f"Reachable workload pairs: {flat} in a flat network → {planned} under the plan "
            f"({(1 - planned / flat) if flat else 0:.1%} fewer).\n",
            "Outputs: `zones.yaml`, `matrix.csv`, `findings.json`, `rollout.md`, `validation.md`, `policy/` "
            "(policy-as-code, what `compile` and `validate` read)"
            + (", " + ", ".join(f"`enforce/{t}/`" for t in v.targets) if v.targets else "") + ".\n"]
    return "\n".join([*head, zone_section(v), matrix_section(v), rollout_md(v).replace("# (c)", "## (c)", 1)
                      .replace("\n## ", "\n### "), validation_md(v).replace("# (d)", "## (d)", 1)
                      .replace("\n## ", "\n### "), coverage_section(v), findings_section(list(v.findings))])
