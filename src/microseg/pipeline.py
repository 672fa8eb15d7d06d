"""The planning pipeline, end to end: the API behind the CLI's commands.

sources → flow store → mapping → IR → analyses → reports/back ends. This module only wires layers
together; each step lives in its own layer and only IR crosses between them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from microseg.analyses.rollout import plan_rollout
from microseg.analyses.synthesis import synthesize
from microseg.analyses.validate import ValidationResult, validate
from microseg.backends import Mode, get_backend, write_outputs
from microseg.config import PlanConfig
from microseg.engine.engines import map_engine_table, map_store, parse_engine
from microseg.engine.store import FlowStore, IngestReport
from microseg.errors import InputError
from microseg.ir.model import Edge, Inventory, Policy, PolicyException
from microseg.ir.serde import FILES, ExceptionsDoc, dump_policy, exception_from_entry, load_doc, load_policy
from microseg.reports.markdown import CoverageView, IngestView, PlanView, report_md, rollout_md, validation_md
from microseg.reports.tables import findings_json, matrix_csv, matrix_rows, zones_yaml
from microseg.sources.inventory import load_inventory

if TYPE_CHECKING:
    from microseg.engine.mapping import MappingResult

STORE_NAME = "flows.duckdb"
DEFAULT_CONFIG = PlanConfig()  # frozen
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PlanOutcome:
    out_dir: Path
    view: PlanView
    files: tuple[str, ...]


def _quiet(_: str) -> None:
    return None


def read_policy_dir(path: Path) -> Policy:
    if not path.is_dir():
        raise InputError("policy directory not found (run `microseg plan` first)", file=str(path))
    texts = {}
    for name in FILES:
        f = path / name
        if f.is_file():
            texts[name] = f.read_text(encoding="utf-8")
    return load_policy(texts, where=str(path))


def read_exceptions(path: Path) -> tuple[PolicyException, ...]:
    """Approved exceptions a person wrote (kept across re-planning)."""
    if not path.is_file():
        return ()
    doc: ExceptionsDoc = load_doc(str(path), path.read_text(encoding="utf-8"), ExceptionsDoc)
    return tuple(exception_from_entry(e) for e in doc.exceptions)


NO_INGEST = IngestReport(files=(), lines=0, records=0, skipped={}, bad=0, bad_samples=(), formats={})


def map_observed(inventory: Inventory, flows: Sequence[str], store_path: Path, *, flow_format: str | None,
                 bad_threshold: float, engine: str | None = None) -> tuple[IngestReport, MappingResult]:
    """Ingest ``flows`` into the store and map them on ``engine`` (default: DuckDB over the store).

    An engine URL with ``?table=NAME`` maps the flows already on that engine instead: no ingest.
    """
    spec = parse_engine(engine)
    if spec.table is not None:
        if flows:
            raise InputError(f"--flows and a table on the engine ({spec.display}) exclude each other: the "
                             "table already holds the normalised flows", field="--flows")
        return NO_INGEST, map_engine_table(spec, inventory)
    if not flows:
        raise InputError("no flow logs: give --flows, or --engine URL?table=NAME for flows on an engine",
                         field="--flows")
    store = FlowStore(store_path)
    try:
        report = store.ingest(list(flows), fmt=flow_format, bad_threshold=bad_threshold)
        mapping = map_store(spec, store, inventory)  # imports Ibis (seconds) only here
    finally:
        store.close()
    return report, mapping


def _coverage_view(m: MappingResult) -> CoverageView:
    c = m.coverage
    return CoverageView(records=c.records, resolved_records=c.resolved_records, total_bytes=c.bytes,
                        resolved_bytes=c.resolved_bytes, unoriented=c.unoriented_records,
                        top_unresolved=tuple((u.address, u.records, u.bytes) for u in c.top_unresolved))


def _ingest_view(r: IngestReport) -> IngestView:
    # Totals over every file of this run, including files the store already held (reused), so the
    # report describes the data behind the plan, not what this particular run had to read.
    return IngestView(files=len(r.files), lines=sum(f.lines for f in r.files),
                      records=sum(f.records for f in r.files), skipped=sum(f.skipped for f in r.files),
                      bad=sum(f.bad for f in r.files),
                      bad_samples=tuple(f"{b.file}:{b.line} [{b.field}] {b.message}" for b in r.bad_samples),
                      formats=tuple(sorted(Counter(f.format for f in r.files).items())))


def plan(inventory_paths: Sequence[Path], flows: Sequence[str], out_dir: Path, *, config: PlanConfig = DEFAULT_CONFIG,
         flow_format: str | None = None, exceptions_file: Path | None = None,
         progress: Progress = _quiet, engine: str | None = None) -> PlanOutcome:
    progress("reading inventory")
    inventory = load_inventory(list(inventory_paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = parse_engine(engine)
    progress("ingesting flow logs" if spec.table is None else f"mapping the flows of {spec.display}")
    ingest, mapping = map_observed(inventory, flows, out_dir / STORE_NAME, flow_format=flow_format,
                                   bad_threshold=config.bad_line_threshold, engine=engine)
    edges = mapping.edges
    exceptions = read_exceptions(out_dir / "policy" / "exceptions.yaml")
    if exceptions_file is not None:
        exceptions = tuple({x.rule.id: x for x in exceptions + read_exceptions(exceptions_file)}.values())
    progress("proposing zones and synthesising rules")
    synth = synthesize(inventory, edges, guardrails=config.effective_guardrails(), settings=config.settings(),
                       exceptions=exceptions)
    policy = synth.policy
    # "Now" for exception expiry is the end of the observed data, not the wall clock, so the same
    # inputs always give the same plan.
    data_now = max((e.last_seen for e in edges if e.last_seen), default=None)
    result = validate(policy, edges, now=data_now)
    coverage = _coverage_view(mapping)
    rollout = plan_rollout(policy, edges, synth.findings, unresolved_share=1 - coverage.record_share)
    view = PlanView(policy=policy, edges=tuple(edges), findings=synth.findings,
                    matrix=tuple(matrix_rows(policy, edges)), rollout=rollout, validation=result,
                    coverage=coverage, ingest=_ingest_view(ingest),
                    inputs=tuple(sorted({str(p) for p in inventory_paths} | set(flows)
                                        | ({spec.display} if spec.table is not None else set()))),
                    targets=config.targets)
    files: dict[str, str] = {
        "report.md": report_md(view), "zones.yaml": zones_yaml(policy), "matrix.csv": matrix_csv(view.matrix),
        "findings.json": findings_json(synth.findings), "rollout.md": rollout_md(view),
        "validation.md": validation_md(view),
    }
    files.update({f"policy/{name}": text for name, text in dump_policy(policy).items()})
    for target in config.targets:
        progress(f"compiling for {target}")
        compiled = get_backend(target).compile(policy, mode="enforce")
        files.update({f"enforce/{target}/{name}": text for name, text in compiled.items()})
    write_outputs(files, out_dir)
    return PlanOutcome(out_dir=out_dir, view=view, files=tuple(sorted(files)))


def compile_policy(policy_dir: Path, target: str, out_dir: Path, *, mode: Mode = "enforce") -> tuple[str, ...]:
    policy = read_policy_dir(policy_dir)
    files = get_backend(target).compile(policy, mode=mode)
    write_outputs(files, out_dir)
    return tuple(sorted(files))


def validate_policy(policy_dir: Path, *, inventory_paths: Sequence[Path] = (), flows: Sequence[str] = (),
                    flow_format: str | None = None, store_path: Path | None = None, segment: str | None = None,
                    now: datetime | None = None, bad_threshold: float = 0.01,
                    engine: str | None = None) -> tuple[Policy, ValidationResult]:
    policy = read_policy_dir(policy_dir)
    edges: tuple[Edge, ...] | None = None
    if flows or parse_engine(engine).table is not None:
        if not inventory_paths:
            raise InputError("--flows needs --inventory to resolve addresses to workloads", field="--inventory")
        inventory = load_inventory(list(inventory_paths))
        import tempfile

        with tempfile.TemporaryDirectory(prefix="microseg-validate-") as tmp:
            _, mapping = map_observed(inventory, flows, store_path or Path(tmp) / STORE_NAME,
                                      flow_format=flow_format, bad_threshold=bad_threshold, engine=engine)
        edges = mapping.edges
    if segment is not None and segment not in {s.name for s in policy.segments}:
        raise InputError(f"unknown segment {segment!r}; known: {', '.join(s.name for s in policy.segments)}",
                         field="--segment")
    return policy, validate(policy, edges, now=now or datetime.now(UTC), segment=segment)
