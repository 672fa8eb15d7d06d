"""The planning pipeline, end to end: the API behind the CLI's commands.

sources → flow store → mapping → IR → analyses → reports/back ends. This module only wires layers
together; each step lives in its own layer and only IR crosses between them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from microseg.analyses.drift import DriftReport
from microseg.analyses.posture import PostureResult
from microseg.analyses.revdiff import RevisionDiff
from microseg.analyses.rollout import plan_rollout
from microseg.analyses.synthesis import synthesize
from microseg.analyses.validate import ValidationResult, validate
from microseg.backends import Mode, get_backend, write_outputs
from microseg.config import PlanConfig
from microseg.engine.engines import map_engine_table, map_store, parse_engine
from microseg.engine.store import FlowStore, IngestReport, TimeWindow
from microseg.errors import InputError
from microseg.ir.model import Edge, Inventory, Policy, PolicyException, Protocol
from microseg.ir.semantics import Connections
from microseg.ir.serde import FILES, ExceptionsDoc, dump_policy, exception_from_entry, load_doc, load_policy
from microseg.reports.markdown import (
    CoverageView,
    FlowsView,
    IngestView,
    InventoryView,
    PlanView,
    report_md,
    rollout_md,
    validation_md,
)
from microseg.reports.tables import findings_json, matrix_csv, matrix_rows, zones_yaml
from microseg.sources.flows import ProgressCallback, zone_info
from microseg.sources.inventory import InventoryReport, LoadResult, read_inventory
from microseg.sources.inventory.kubernetes import KubernetesResult

if TYPE_CHECKING:
    from microseg.engine.mapping import MappingResult
    from microseg.sources.deployed.admin_netpol import PolicySet
    from microseg.sources.yamlpos import Document

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


def time_window(since: str | None, until: str | None) -> TimeWindow | None:
    """The ``--since``/``--until`` window (ISO 8601 with a zone, or dates meaning 00:00 UTC)."""
    return TimeWindow.parse(since, until)


NO_INGEST = IngestReport(files=(), lines=0, records=0, skipped={}, bad=0, bad_samples=(), formats={})


def map_observed(inventory: Inventory, flows: Sequence[str], store_path: Path, *, flow_format: str | None,
                 bad_threshold: float, flow_timezone: str = "UTC", window: TimeWindow | None = None,
                 ingest_progress: ProgressCallback | None = None,
                 engine: str | None = None) -> tuple[IngestReport, MappingResult]:
    """Ingest ``flows`` into the store and map them on ``engine`` (default: DuckDB over the store).

    An engine URL with ``?table=NAME`` maps the flows already on that engine instead: no ingest, so the
    ingest options (time window) do not apply there and are refused rather than silently ignored.
    """
    spec = parse_engine(engine)
    if spec.table is not None:
        if flows:
            raise InputError(f"--flows and a table on the engine ({spec.display}) exclude each other: the "
                             "table already holds the normalised flows", field="--flows")
        if window is not None:
            raise InputError(f"--since/--until filter flows while they are read; the flows of {spec.display} "
                             "are not read by microseg: narrow the table or view instead", field="--since")
        mapping = map_engine_table(spec, inventory)
        if not mapping.coverage.records:
            raise InputError(f"the table on the engine holds no flow record: {spec.display}", field="--engine")
        return NO_INGEST, mapping
    if not flows:
        raise InputError("no flow logs: give --flows, or --engine URL?table=NAME for flows on an engine",
                         field="--flows")
    store = FlowStore(store_path)
    try:
        report = store.ingest(list(flows), fmt=flow_format, bad_threshold=bad_threshold, timezone=flow_timezone,
                              window=window, progress=ingest_progress)
        read = _ingest_view(report, flow_timezone, window)
        if not read.records:
            # Nothing observed: a plan would deny everything, a check of observed flows would pass having
            # checked none. Refused, saying what the files held instead.
            raise InputError(f"the flow logs hold no record to use: {read.files} file(s), {read.lines} line(s), "
                             f"{read.skipped} skipped as no record of their own (NODATA, SKIPDATA, ...), "
                             f"{read.bad} bad" + (f", {read.outside} outside {read.window}" if read.window else ""),
                             file=", ".join(flows), field="--flows")
        mapping = map_store(spec, store, inventory)  # imports Ibis (seconds) only here
    finally:
        store.close()
    return report, mapping


def _coverage_view(m: MappingResult) -> CoverageView:
    c = m.coverage
    return CoverageView(records=c.records, resolved_records=c.resolved_records, total_bytes=c.bytes,
                        resolved_bytes=c.resolved_bytes, unoriented=c.unoriented_records,
                        top_unresolved=tuple((u.address, u.records, u.bytes) for u in c.top_unresolved))


def _ingest_view(r: IngestReport, timezone: str, window: TimeWindow | None) -> IngestView:
    # Totals over every file of this run, including files the store already held (reused), so the
    # report describes the data behind the plan, not what this particular run had to read.
    return IngestView(files=len(r.files), lines=sum(f.lines for f in r.files),
                      records=sum(f.records for f in r.files), skipped=sum(f.skipped for f in r.files),
                      bad=sum(f.bad for f in r.files),
                      bad_samples=tuple(f"{b.file}:{b.line} [{b.field}] {b.message}" for b in r.bad_samples),
                      formats=tuple(sorted(Counter(f.format for f in r.files).items())), timezone=timezone,
                      outside=sum(f.outside for f in r.files), window=window.describe() if window else None)


def plan(inventory_paths: Sequence[Path], flows: Sequence[str], out_dir: Path, *, config: PlanConfig = DEFAULT_CONFIG,
         flow_format: str | None = None, exceptions_file: Path | None = None, flow_timezone: str = "UTC",
         window: TimeWindow | None = None, progress: Progress = _quiet,
         ingest_progress: ProgressCallback | None = None, engine: str | None = None) -> PlanOutcome:
    zone_info(flow_timezone)  # a bad option fails before any input is read
    progress("reading inventory")
    loaded = _read_checked_inventory(inventory_paths)
    inventory, inv = loaded.inventory, loaded.report
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = parse_engine(engine)
    progress("ingesting flow logs" if spec.table is None else f"mapping the flows of {spec.display}")
    ingest, mapping = map_observed(inventory, flows, out_dir / STORE_NAME, flow_format=flow_format,
                                   bad_threshold=config.bad_line_threshold, flow_timezone=flow_timezone,
                                   window=window, ingest_progress=ingest_progress, engine=engine)
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
                    coverage=coverage, ingest=_ingest_view(ingest, flow_timezone, window),
                    inputs=tuple(sorted({str(p) for p in inventory_paths} | set(flows)
                                        | ({spec.display} if spec.table is not None else set()))),
                    targets=config.targets,
                    inventory=InventoryView(files=len(inv.files), unrecognized=inv.unrecognized,
                                            ignored_kinds=inv.ignored_kinds, notes=inv.notes))
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


def inventory_lines(report: InventoryReport, *, kinds: bool = True, limit: int | None = None) -> list[str]:
    """What reading the inventory noticed or read as nothing, one short line each (for stderr).

    The readers' notes (terminated instances, branch ENIs, ...), then each document read as nothing, then (with
    ``kinds``) each Kubernetes kind not read. ``limit`` caps the lines of each of these, the rest counted.
    """
    def capped(lines: list[str], what: str) -> list[str]:
        if limit is None or len(lines) <= limit:
            return lines
        return [*lines[:limit], f"inventory: and {len(lines) - limit} more {what}"]

    out = capped([f"inventory: {note}" for note in report.notes], "note(s)")
    out += capped([f"inventory: {doc} is no inventory document; read as nothing" for doc in report.unrecognized],
                  "document(s) read as nothing")
    if kinds:
        out += capped([f"inventory: skipped {n} {kind} object(s), a kind the inventory readers do not read"
                       for kind, n in report.ignored_kinds], "kind(s) not read")
    return out


def _flows_read(report: IngestReport, mapping: MappingResult, flow_timezone: str, window: TimeWindow | None,
                engine: str | None) -> FlowsView:
    spec = parse_engine(engine)
    return FlowsView(_ingest_view(report, flow_timezone, window), _coverage_view(mapping),
                     spec.display if spec.table is not None else None)


def flows_lines(flows: FlowsView, *, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(status lines, bad lines) of reading the flows, one short line each (for stderr).

    The status: what was read and how much of it resolved. The bad lines: each sampled unparseable line
    (file:line [field] message), ``limit`` of them at most, the rest counted; they are left out of every edge,
    so a check over the flows saw fewer of them.
    """
    i, c = flows.ingest, flows.coverage
    if flows.engine is not None:
        status = [f"flows: {c.records} records in {flows.engine}"]
    else:
        status = [f"flows: {i.files} file(s), {i.lines} lines, {i.records} records, {i.skipped} skipped, "
                  f"{i.bad} bad" + (f", {i.outside} outside the window {i.window}" if i.window is not None else "")
                  + (f"; times without a zone read in {i.timezone}" if i.timezone != "UTC" else "")]
    status.append(f"flows: {c.resolved_records} of {c.records} records ({c.record_share:.1%}) resolved to "
                  "workloads or named peers at both ends")
    bad = [f"flows: bad line {sample}" for sample in i.bad_samples[:limit]]
    if i.bad > len(bad):
        bad.append(f"flows: and {i.bad - len(bad)} more bad line(s)" if bad else f"flows: {i.bad} bad line(s)")
    return status, bad


def _read_checked_inventory(inventory_paths: Sequence[Path]) -> LoadResult:
    """The inventory that flows and rules resolve against, refused when it holds no workload at all.

    A file that is no inventory is read as nothing (and reported); if that leaves no workload, every flow
    would resolve to nothing: ``plan`` would plan nothing, and every check on observed flows or inventoried
    workloads (``validate``, ``drift``) would pass vacuously. That is an input error, not a result.
    """
    from microseg.sources.inventory.native import INTERNET_NAME

    loaded = read_inventory(list(inventory_paths))
    if all(w.name == INTERNET_NAME for w in loaded.inventory.workloads):
        inv = loaded.report
        why = [f"{len(inv.unrecognized)} document(s) not recognised and read as nothing, the first here"
               ] if inv.unrecognized else []
        why += ["kinds not read: " + ", ".join(f"{kind} × {n}" for kind, n in inv.ignored_kinds)
                ] if inv.ignored_kinds else []
        file, _, line = inv.unrecognized[0].rpartition(":") if inv.unrecognized else ("", "", "")
        raise InputError("the inventory holds no workload" + "".join(f"; {w}" for w in why)
                         + ". Every flow and rule would resolve to nothing: refusing rather than going on with nothing",
                         file=file or ", ".join(map(str, inventory_paths)),
                         line=int(line) if line.isdigit() else None, field="--inventory")
    return loaded


@dataclass(frozen=True)
class ValidateOutcome:
    policy: Policy
    result: ValidationResult
    inventory: InventoryReport | None  # what reading --inventory noticed or read as nothing; None: not read
    flows: FlowsView | None = None  # what reading the flows counted (bad lines, resolution); None: not read


def _reads_flows(flows: Sequence[str], window: TimeWindow | None, engine: str | None) -> bool:
    """Whether flows are read (``--flows``, or a table on ``--engine``); a flow option given without them is
    refused rather than ignored: a window or an engine that selected nothing would read as checked."""
    spec = parse_engine(engine)
    if flows or spec.table is not None:
        return True
    if window is not None:
        raise InputError("--since/--until select among the flows read, and no flows are given: add --flows, "
                         "or leave the window out", field="--since")
    if engine is not None:
        raise InputError(f"--engine {spec.display} maps the flows read, and no flows are given: add --flows, "
                         "or name a table of flows on the engine (URL?table=NAME)", field="--engine")
    return False


def validate_policy(policy_dir: Path, *, inventory_paths: Sequence[Path] = (), flows: Sequence[str] = (),
                    flow_format: str | None = None, store_path: Path | None = None, segment: str | None = None,
                    now: datetime | None = None, bad_threshold: float = 0.01,
                    flow_timezone: str = "UTC", window: TimeWindow | None = None,
                    ingest_progress: ProgressCallback | None = None,
                    engine: str | None = None) -> ValidateOutcome:
    zone_info(flow_timezone)
    reads_flows = _reads_flows(flows, window, engine)
    policy = read_policy_dir(policy_dir)
    edges: tuple[Edge, ...] | None = None
    inventory_report: InventoryReport | None = None
    flows_read: FlowsView | None = None
    if reads_flows:
        if not inventory_paths:
            raise InputError("--flows needs --inventory to resolve addresses to workloads", field="--inventory")
        loaded = _read_checked_inventory(inventory_paths)
        inventory, inventory_report = loaded.inventory, loaded.report
        import tempfile

        with tempfile.TemporaryDirectory(prefix="microseg-validate-") as tmp:
            ingest, mapping = map_observed(inventory, flows, store_path or Path(tmp) / STORE_NAME,
                                           flow_format=flow_format, bad_threshold=bad_threshold,
                                           flow_timezone=flow_timezone, window=window,
                                           ingest_progress=ingest_progress, engine=engine)
        edges = mapping.edges
        flows_read = _flows_read(ingest, mapping, flow_timezone, window, engine)
    if segment is not None and segment not in {s.name for s in policy.segments}:
        raise InputError(f"unknown segment {segment!r}; known: {', '.join(s.name for s in policy.segments)}",
                         field="--segment")
    return ValidateOutcome(policy, validate(policy, edges, now=now or datetime.now(UTC), segment=segment),
                           inventory_report, flows_read)


# -- drift and revision diff (issue 5) ----------------------------------------------------------------------


def read_tree(path: Path, *, field: str) -> dict[str, str]:
    """Every regular file under ``path`` (hidden ones skipped) as {relative POSIX path: UTF-8 text}."""
    if not path.is_dir():
        raise InputError("directory not found", file=str(path), field=field)
    out: dict[str, str] = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        try:
            out[rel.as_posix()] = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", file=str(f), field=field) from None
    return out


def _nft_json_as_is(text: str, name: str) -> str:
    # A deployed host's ruleset is taken as `nft -j list ruleset` output (JSON) when it is JSON; compiled nft
    # text is loaded into a throwaway namespace by the kernel instead (needs root or user namespaces).
    if text.lstrip().startswith("{"):
        return text
    from microseg.twin.netns import nft_json

    return nft_json(text, name=name)


def read_deployed(deployed_dir: Path, target: str,
                  policy: Policy) -> tuple[dict[str, str], dict[tuple[str, str], Connections]]:
    """The deployed output of ``target`` under ``deployed_dir``, read back into per-pair connections."""
    files = read_tree(deployed_dir, field="--deployed")
    if target == "kubernetes":
        from microseg.sources.deployed import kubernetes as reader
        return files, reader.read_back(files, policy)
    if target == "calico":
        from microseg.sources.deployed import calico
        return files, calico.read_back(files, policy)
    if target == "istio":
        from microseg.sources.deployed import istio
        return files, istio.read_back(files, policy)
    if target == "nftables":
        from microseg.sources.deployed import nftables
        return files, nftables.read_back(files, policy, to_json=_nft_json_as_is)
    if target == "aws_sg":
        from microseg.sources.deployed import aws_sg
        return files, aws_sg.read_back(files, policy)
    from microseg.analyses.drift import TARGETS
    raise InputError(f"drift cannot read deployed {target!r}; use one of {', '.join(TARGETS)}", field="--target")


@dataclass(frozen=True)
class DriftOutcome:
    report: DriftReport
    inventory: InventoryReport | None  # what reading --inventory noticed or read as nothing; None: not given
    flows: FlowsView | None = None  # what reading the flows counted (bad lines, resolution); None: not read


def drift_report(policy_dir: Path, *, deployed_dir: Path | None = None, target: str = "kubernetes",
                 inventory_paths: Sequence[Path] = (), flows: Sequence[str] = (), flow_format: str | None = None,
                 orphan_days: int = 30, now: datetime | None = None, bad_threshold: float = 0.01,
                 flow_timezone: str = "UTC", window: TimeWindow | None = None,
                 ingest_progress: ProgressCallback | None = None, engine: str | None = None) -> DriftOutcome:
    """`microseg drift`: desired policy vs deployed output, observed flows and the current inventory.

    The flows are read as ``plan`` and ``validate`` read them (``flow_timezone``, ``window``, ``engine``), so
    the three commands see the same edges. With a ``window`` the "last ``orphan_days`` days" count back from the
    end of the flow data inside it (the latest end of a flow that started in the window).
    """
    from microseg.analyses.drift import TARGETS, detect_drift, policy_locations, target_scope

    if target not in TARGETS:  # before reading anything, so the error names the real mistake
        raise InputError(f"drift cannot read deployed {target!r}; use one of {', '.join(TARGETS)}", field="--target")
    zone_info(flow_timezone)
    reads_flows = _reads_flows(flows, window, engine)
    policy = read_policy_dir(policy_dir)
    texts = {name: (policy_dir / name).read_text(encoding="utf-8") for name in FILES if (policy_dir / name).is_file()}
    locations = policy_locations(texts, where=str(policy_dir))
    deployed = scope = None
    if deployed_dir is not None:
        files, deployed = read_deployed(deployed_dir, target, policy)
        scope = target_scope(target, policy, files)
    loaded = _read_checked_inventory(inventory_paths) if inventory_paths else None
    inventory = loaded.inventory if loaded is not None else None
    edges: tuple[Edge, ...] | None = None
    flows_read: FlowsView | None = None
    if reads_flows:
        if inventory is None:
            raise InputError("--flows needs --inventory to resolve addresses to workloads", field="--inventory")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="microseg-drift-") as tmp:
            ingest, mapping = map_observed(inventory, flows, Path(tmp) / STORE_NAME, flow_format=flow_format,
                                           bad_threshold=bad_threshold, flow_timezone=flow_timezone, window=window,
                                           ingest_progress=ingest_progress, engine=engine)
        edges = mapping.edges
        flows_read = _flows_read(ingest, mapping, flow_timezone, window, engine)
    report = detect_drift(policy, now=now or datetime.now(UTC), target=target, deployed=deployed, scope=scope,
                          edges=edges, inventory=inventory, orphan_days=orphan_days, locations=locations)
    return DriftOutcome(report, loaded.report if loaded is not None else None, flows_read)


def diff_revisions(repo: Path, rev1: str, rev2: str, *, policy_dir: str = "policy") -> RevisionDiff:
    """`microseg diff`: the policy directory at two git revisions, compared as connections."""
    from microseg.analyses.revdiff import diff_revisions as run

    return run(repo, rev1, rev2, policy_dir)


@dataclass(frozen=True)
class ConnectivityOutcome:
    text: str  # the rendered connection list
    report: tuple[str, ...]  # what was skipped or noticed, one line each (for stderr)


def _read_deployed_inventory(inventory_paths: Sequence[Path], keep: list[Document] | None = None
                             ) -> tuple[KubernetesResult, list[str]]:
    """The workloads of a cluster's objects for evaluating its deployed policies (``connectivity``, ``posture``).

    Read leniently, the way the cluster holds them (:class:`KubernetesReader` with ``lenient=True``: pods
    grouped by the owners they name, port entries the API server would drop left out and listed in
    ``rejected``), not with the planning reader, which refuses what a live cluster can contain. Also returns
    the documents skipped as not Kubernetes objects, one line each. ``keep`` collects the documents read.
    """
    from microseg.sources.inventory import discover
    from microseg.sources.inventory.kubernetes import KubernetesReader
    from microseg.sources.yamlpos import load_documents

    reader = KubernetesReader(lenient=True)
    skipped_docs: list[str] = []
    for path, display in discover(inventory_paths):
        for doc in load_documents(path, display):
            if keep is not None:
                keep.append(doc)
            if isinstance(doc.data, dict):
                reader.add(doc)
            elif doc.data is not None:
                skipped_docs.append(f"{doc.file}:{doc.line}: skipped, not a Kubernetes object")
    found = reader.build()
    if not found.workloads:
        # Nothing to evaluate: an empty connection list or posture would read as "nothing is reachable".
        raise InputError("the inventory holds no workload (no pods, workload controllers or VMs); nothing to "
                         "evaluate the policies over: check the --inventory paths",
                         file=", ".join(map(str, inventory_paths)), field="--inventory")
    return found, skipped_docs


def connectivity(inventory_paths: Sequence[Path], policy_paths: Sequence[Path], *, fmt: str = "txt",
                 port: str | None = None) -> ConnectivityOutcome:
    """`microseg connectivity`: what the deployed NetworkPolicies / ANPs / BANP allow between the workloads.

    The same file may hold inventory and policies (and be given to both options): workload kinds are read
    from ``inventory_paths``, policy kinds from ``policy_paths``, everything else is skipped and counted.
    ``port`` (``PROTO/PORT``, e.g. ``udp/53``) keeps only the pairs that allow that one port.
    """
    from microseg.analyses.connlist import RENDERERS, connection_list
    from microseg.sources.deployed.admin_netpol import read_policies, same_priority
    from microseg.sources.inventory import discover
    from microseg.sources.yamlpos import load_documents

    if fmt not in RENDERERS:
        raise InputError(f"unknown format {fmt!r} (txt, json or csv)", field="--format")
    focus = None
    if port is not None:
        proto_text, _, number = port.partition("/")
        if proto_text.upper() not in ("TCP", "UDP", "SCTP") or not number.isdigit() or not 1 <= int(number) <= 65535:
            raise InputError(f"--port {port!r}: expected PROTOCOL/PORT, e.g. tcp/8080 (TCP, UDP or SCTP; 1-65535)",
                             field="--port")
        focus = (Protocol(proto_text.upper()), int(number))
    from microseg.sources.deployed.aws_sg import describe_files

    sg_files = describe_files(policy_paths)
    if sg_files:
        return _security_group_connectivity(inventory_paths, sg_files, fmt=fmt, focus=focus)
    inventory_docs: list[Document] = []
    found, skipped_docs = _read_deployed_inventory(inventory_paths, inventory_docs)
    policy_docs = [doc for path, display in discover(policy_paths) for doc in load_documents(path, display)]
    policies = read_policies(policy_docs)
    variants = {name: [dict(v) for v in sets] for name, sets in found.label_variants.items()}
    report = _reading_notes(found, policies, skipped_docs)
    report += [f"AdminNetworkPolicies {a} and {b} share priority {p}: their order is undefined (evaluated by name)"
               for a, b, p in same_priority(policies.admin)]
    multi = _multinet_connectivity(inventory_docs, policy_docs, found, policies, variants, fmt=fmt, focus=focus)
    if multi is not None:
        from microseg.analyses.multinet import KINDS

        # The network kinds were read after all (by analyses/multinet.py): not "skipped".
        report = [line for line in report if not any(line.startswith("skipped ") and f" {kind} object(s) " in line
                                                     for kind in KINDS)]
        return ConnectivityOutcome(multi, tuple(report))
    result = connection_list(found.workloads, policies.netpols, policies.admin, label_variants=variants)
    if focus is not None:
        result = result.focus(*focus)
    return ConnectivityOutcome(RENDERERS[fmt](result), tuple(report))


def _multinet_connectivity(inventory_docs: Sequence[Document], policy_docs: Sequence[Document], found: KubernetesResult,
                           policies: PolicySet, variants: Mapping[str, Sequence[Mapping[str, str]]], *, fmt: str,
                           focus: tuple[Protocol, int] | None) -> str | None:
    """The per-network text of `connectivity` (analyses/multinet.py) when the input has secondary networks,
    user-defined networks or KubeVirt VMs; None otherwise (the ordinary single-network list)."""
    from microseg.analyses import multinet
    from microseg.errors import UnsupportedFeature

    objects = multinet.read_objects([*inventory_docs, *policy_docs])
    namespaces = {name: dict(labels) for name, labels in found.namespaces}
    if not multinet.applies(objects, found.workloads, namespaces):
        return None
    if fmt != "txt":
        raise UnsupportedFeature(f"connectivity --format {fmt}", "the per-network sections of a multi-network input")
    return multinet.render(objects, found.workloads, policies.netpols, policies.admin, namespaces=namespaces,
                           secondary=found.secondary_networks, label_variants=variants, focus=focus)


def _security_group_connectivity(inventory_paths: Sequence[Path], files: Mapping[str, str], *, fmt: str,
                                 focus: tuple[Protocol, int] | None) -> ConnectivityOutcome:
    """`connectivity` for deployed AWS security groups: workloads (and the groups each carries, from
    describe-instances / describe-network-interfaces) from the inventory, rules from the groups."""
    from microseg.analyses.connlist import RENDERERS, from_pairs
    from microseg.sources.deployed.aws_sg import read_describe

    loaded = read_inventory(list(inventory_paths))
    inventory = loaded.inventory
    reading = read_describe(files, inventory.workloads)
    result = from_pairs(reading.connections, inventory.workloads)
    if focus is not None:
        result = result.focus(*focus)
    report = [f"read {len(inventory.workloads)} workloads, {len(reading.governed)} with security groups"]
    report += inventory_lines(loaded.report, kinds=False)  # terminated instances, branch ENIs, ..., read as nothing
    report += [f"{name}: carries no security group in the inventory; nothing filters it (not governed)"
               for name in reading.ungoverned]
    report += [f"group {g} is referenced by a rule but carried by no workload of the inventory"
               for g in reading.unmatched_references]
    return ConnectivityOutcome(RENDERERS[fmt](result), tuple(report))


def _reading_notes(found: KubernetesResult, policies: PolicySet, skipped_docs: Sequence[str]) -> list[str]:
    """What reading a cluster's objects counted, skipped or left out, one line each (for stderr).

    Shown by every command that evaluates deployed policies, so a port entry the lenient reader dropped
    (which can make a result narrower than the cluster) is never silent.
    """
    report = [f"read {len(found.workloads)} workloads, {len(policies.netpols)} NetworkPolicies, "
              f"{sum(a.priority is not None for a in policies.admin)} AdminNetworkPolicies, "
              f"{sum(a.priority is None for a in policies.admin)} BaselineAdminNetworkPolicy"]
    report += [f"skipped {n} {kind} object(s) in the policy files" for kind, n in policies.skipped
               if kind not in found.ignored_kinds and kind not in _WORKLOAD_KINDS]
    report += [f"skipped {n} {kind} object(s) in the inventory files" for kind, n in found.ignored_kinds.items()
               if kind not in ("NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy")]
    report += sorted({*found.rejected, *found.notes, *policies.notes, *skipped_docs})
    return report


_WORKLOAD_KINDS = frozenset({"Namespace", "Pod", "Service", "ServiceAccount", "Deployment", "ReplicaSet", "DaemonSet",
                             "StatefulSet", "Job", "CronJob", "Ingress", "List", "VirtualMachine",
                             "VirtualMachineInstance"})


# -- posture (issue 5) ----------------------------------------------------------------------------------------------

# Policy kinds next to NetworkPolicies that change what they mean; posture refuses them rather than ignore an allow.
_POSTURE_REFUSED = frozenset({"GlobalNetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"})


def posture(inventory_paths: Sequence[Path], policy_paths: Sequence[Path], *, broad_prefix: int = 8,
            broad_prefix6: int = 32, notes: Progress = _quiet) -> PostureResult:
    """`microseg posture`: what the deployed NetworkPolicies let through, and the findings about them.

    Workloads come from the inventory, read as ``connectivity`` reads them (:func:`_read_deployed_inventory`:
    the cluster's objects as it holds them), NetworkPolicies from ``policy_paths`` (other kinds there are
    skipped, so the same path may be given to both). AdminNetworkPolicies and CNI-specific policies are refused
    (UnsupportedFeature): posture evaluates NetworkPolicy only, and ignoring their allows would understate
    what is reachable.
    """
    from microseg.analyses.posture import PostureConfig, assess
    from microseg.errors import UnsupportedFeature
    from microseg.sources.deployed.admin_netpol import read_policies
    from microseg.sources.inventory import discover
    from microseg.sources.yamlpos import load_documents

    try:
        config = PostureConfig(broad_prefix=broad_prefix, broad_prefix6=broad_prefix6)
    except ValueError as exc:
        raise InputError(str(exc), field="--broad-prefix") from None
    from microseg.analyses import multinet

    inventory_docs: list[Document] = []
    found, skipped_docs = _read_deployed_inventory(inventory_paths, inventory_docs)
    policy_docs = [doc for path, display in discover(policy_paths) for doc in load_documents(path, display)]
    policies = read_policies(policy_docs)
    for line in _reading_notes(found, policies, skipped_docs):
        notes(line)
    refused = sorted({a.kind for a in policies.admin} | {k for k, _ in policies.skipped if k in _POSTURE_REFUSED})
    if refused:
        raise UnsupportedFeature("posture", f"{', '.join(refused)} (only NetworkPolicy is evaluated)")
    # Network isolation (user-defined networks, secondary networks, VMs) is modelled by `connectivity` only;
    # posture would count pairs on different networks as reachable, so it refuses rather than mislead.
    if multinet.applies(multinet.read_objects([*inventory_docs, *policy_docs]), found.workloads,
                        {name: dict(labels) for name, labels in found.namespaces}):
        raise UnsupportedFeature("posture", "user-defined or secondary networks and KubeVirt VMs (use "
                                 "`microseg connectivity`, which evaluates each network)")
    variants = {name: [dict(v) for v in sets] for name, sets in found.label_variants.items()}
    return assess(policies.netpols, found.workloads, config, label_variants=variants)
