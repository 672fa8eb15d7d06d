"""Command line: a thin layer over :mod:`microseg.pipeline`.

Exit codes: 0 success; 1 other microseg error; 2 bad input (file, line and field are named);
3 a target cannot express a rule (unsupported feature); 4 a check failed (validate found a violation,
drift found findings at or above --fail-on, diff --fail-on-widen found an added connection);
70 internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console

from microseg import __version__
from microseg.errors import MicrosegError, ValidationFailed

if TYPE_CHECKING:
    from microseg.reports.markdown import FlowsView
    from microseg.sources.flows import ProgressCallback
    from microseg.sources.inventory import InventoryReport

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Plan zero-trust micro-segmentation from inventories and flow logs, and prove the plan "
                       "before it reaches production.")
ENGINE_HELP = ("Where the flow-to-edge mapping runs: duckdb (default, embedded), spark (local[*], or "
               "$MICROSEG_SPARK_MASTER), spark://HOST:PORT, or an Ibis URL such as trino://user@host:8080/hive/flows; "
               "add ?table=NAME to map a table of normalised flows already on the engine instead of --flows. "
               "See README, Engines.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
TIMEZONE_HELP = ("IANA time zone (e.g. Europe/Berlin) of flow timestamps logged without one, such as nfdump's "
                 "local times. Default: UTC.")
SINCE_HELP = ("Only count flow records that started at or after this time: ISO 8601 with a zone "
              "(2026-03-02T08:00:00Z, ...+01:00) or a date (00:00 UTC).")
UNTIL_HELP = "Only count flow records that started before this time (same forms as --since)."
# The readers of microseg.sources.flows.FORMATS (a test keeps the two alike; the CLI imports no reader to start).
FLOW_FORMAT_HELP = ("Force a flow format (aws-vpc, azure, calico, csv, envoy, gcp, hubble, nfdump, zeek); "
                    "default: detect per file.")
INVENTORY_HELP = ("Inventory file or directory: Kubernetes YAML/JSON (manifests, `kubectl get -o json` snapshots), "
                  "microseg inventory YAML, `aws ec2 describe-instances` / `describe-network-interfaces` JSON, or a "
                  "CMDB CSV (hostname, ip, ...). Repeatable.")
PROGRESS_HELP = "Show the ingest progress bar on stderr even when stderr is not a terminal."
QUIET_HELP = "Print no progress (no bar, no status lines) on stderr; errors are still printed."
CHECK_CONFIG_HELP = ("microseg.yaml, for its bad_line_threshold (the share of unparseable flow lines that "
                     "fails the run), as plan reads it.")

# The flow-reading options plan, validate and drift share, declared once (typer reads the aliases).
FlowFormatOpt = Annotated[str | None, typer.Option("--flow-format", help=FLOW_FORMAT_HELP)]
FlowTimezoneOpt = Annotated[str, typer.Option("--flow-timezone", help=TIMEZONE_HELP)]
SinceOpt = Annotated[str | None, typer.Option("--since", help=SINCE_HELP)]
UntilOpt = Annotated[str | None, typer.Option("--until", help=UNTIL_HELP)]
ProgressOpt = Annotated[bool, typer.Option("--progress", help=PROGRESS_HELP)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)]
EngineOpt = Annotated[str | None, typer.Option("--engine", help=ENGINE_HELP)]
CheckConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help=CHECK_CONFIG_HELP)]


@contextmanager
def _ingest_bar(force: bool, quiet: bool) -> Iterator[ProgressCallback | None]:
    """The progress bar on stderr: on a terminal or with --progress, never with --quiet; stdout stays clean."""
    if quiet or not (force or err.is_terminal):
        yield None
        return
    from microseg.reports.progress import IngestProgressBar

    with IngestProgressBar(err) as bar:
        yield bar


def _status(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            err.print(f"[dim]… {msg}[/dim]")
    return say


def _version(value: bool) -> None:
    if value:
        out.print(f"microseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


@app.command()
def plan(
    inventory: Annotated[list[Path], typer.Option("--inventory", "-i", help=INVENTORY_HELP)],
    flows: Annotated[list[str] | None, typer.Option("--flows", "-f", help="Flow log file, directory or glob "
                     "(quote globs). Plain or .gz. Repeatable. Required unless --engine names a table.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("plan"),
    flow_format: FlowFormatOpt = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="microseg.yaml with thresholds, "
                      "scope, guardrails and targets.")] = None,
    min_flows: Annotated[int | None, typer.Option(help="Minimum accepted flows before an edge is "
                         "codified (overrides the config).")] = None,
    min_days: Annotated[int | None, typer.Option(help="Minimum distinct days an edge must be seen "
                        "(overrides the config).")] = None,
    exceptions: Annotated[Path | None, typer.Option(help="Approved exceptions YAML to merge with "
                          "OUT/policy/exceptions.yaml.")] = None,
    flow_timezone: FlowTimezoneOpt = "UTC",
    since: SinceOpt = None,
    until: UntilOpt = None,
    show_progress: ProgressOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Read inventory + flow logs; write zones, flow-to-policy matrix, rollout and validation plans,
    policy-as-code (OUT/policy) and enforcement artifacts (OUT/enforce/<target>)."""
    from microseg.config import load_config
    from microseg.pipeline import plan as run_plan
    from microseg.pipeline import time_window

    window = time_window(since, until)
    cfg = load_config(config)
    updates = {k: v for k, v in (("min_flows", min_flows), ("min_days", min_days)) if v is not None}
    if updates:
        cfg = cfg.model_validate({**cfg.model_dump(), **updates})
    with _ingest_bar(show_progress, quiet) as bar:
        outcome = run_plan(inventory, flows or [], out_dir, config=cfg, flow_format=flow_format,
                           exceptions_file=exceptions, flow_timezone=flow_timezone, window=window,
                           progress=_status(quiet), ingest_progress=bar,
                           engine=engine)
    v = outcome.view
    high = sum(1 for f in v.findings if f.severity in ("critical", "high"))
    out.print(f"Planned {sum(1 for w in v.policy.workloads if w.kind.value != 'external')} workloads in "
              f"{len(v.policy.segments)} zones: {len(v.policy.all_rules())} allow rules, {len(v.findings)} findings "
              f"({high} high). Flows resolved: {v.coverage.record_share:.1%}.")
    if v.inventory.unrecognized:
        out.print(f"Inventory: {len(v.inventory.unrecognized)} document(s) not recognised and read as nothing "
                  f"(first: {v.inventory.unrecognized[0]}); listed in report.md, Coverage.")
    if v.ingest.bad:
        out.print(f"Flows: {v.ingest.bad} unparseable line(s) left out of every edge"
                  + (f" (first: {v.ingest.bad_samples[0]})" if v.ingest.bad_samples else "")
                  + "; listed in report.md, Coverage.", markup=False)
    out.print(f"Report: {outcome.out_dir / 'report.md'}")


@app.command(name="compile")
def compile_cmd(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy directory (OUT/policy from plan).")],
    target: Annotated[str, typer.Option("--target", "-t", help="Enforcement target, e.g. kubernetes.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the compiled files.")],
    mode: Annotated[str, typer.Option(help="enforce, or observe (deploy without blocking).")] = "enforce",
) -> None:
    """Compile policy-as-code to one enforcement target."""
    from microseg.backends import MODES
    from microseg.errors import InputError
    from microseg.pipeline import compile_policy

    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", field="--mode")
    files = compile_policy(policy, target, out_dir, mode=mode)
    out.print(f"Wrote {len(files)} file(s) for {target} ({mode}) to {out_dir}")


# Lines of each kind said on stderr (inventory notes, documents read as nothing, kinds not read, bad flow lines);
# the rest are counted.
REPORT_LINES = 20


def _say_inventory(report: InventoryReport | None) -> None:
    """What reading --inventory noticed or read as nothing, on stderr, one line each (stdout stays the result).

    A document read as nothing leaves its hosts out: their flows resolve to no workload and the checks see
    fewer of them, so this is said even with --quiet.
    """
    if report is None:
        return
    from microseg.pipeline import inventory_lines

    for line in inventory_lines(report, limit=REPORT_LINES):
        err.print(f"microseg: {line}", markup=False)


def _say_flows(flows: FlowsView | None, quiet: bool) -> None:
    """What reading the flows counted, on stderr: the status (lines, records, resolved share) unless --quiet,
    and the bad lines always (left out of every edge, so the checks saw fewer flows than the files hold)."""
    if flows is None:
        return
    from microseg.pipeline import flows_lines

    status, bad = flows_lines(flows, limit=REPORT_LINES)
    for line in ([] if quiet else status) + bad:
        err.print(f"microseg: {line}", markup=False)


@app.command(name="validate")
def validate_cmd(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy directory (OUT/policy from plan).")],
    inventory: Annotated[list[Path] | None, typer.Option("--inventory", "-i", help="Inventory, needed "
                         "with --flows to resolve addresses.")] = None,
    flows: Annotated[list[str] | None, typer.Option("--flows", "-f", help="Flow logs to check against "
                     "the policy (drift: would enforcement break an observed flow?).")] = None,
    flow_format: FlowFormatOpt = None,
    segment: Annotated[str | None, typer.Option(help="Only check observed flows into this segment "
                       "(a rollout phase's exit criterion).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write the result as JSON here.")] = None,
    flow_timezone: FlowTimezoneOpt = "UTC",
    since: SinceOpt = None,
    until: UntilOpt = None,
    show_progress: ProgressOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
    config: CheckConfigOpt = None,
) -> None:
    """Prove the policy: matrix rows allowed, everything else denied, guardrails hold, observed flows
    still work; print blast radius flat vs plan. Exit 4 on a violation."""
    import json

    from microseg.config import load_config
    from microseg.pipeline import time_window, validate_policy
    from microseg.reports.tables import flows_doc, inventory_doc

    window = time_window(since, until)
    cfg = load_config(config)
    with _ingest_bar(show_progress, quiet or not flows) as bar:  # no flows: nothing to show
        outcome = validate_policy(policy, inventory_paths=inventory or [], flows=flows or [],
                                  flow_format=flow_format, segment=segment, flow_timezone=flow_timezone,
                                  window=window, ingest_progress=bar, engine=engine,
                                  bad_threshold=cfg.bad_line_threshold)
    result = outcome.result
    _say_inventory(outcome.inventory)
    _say_flows(outcome.flows, quiet)
    flat = sum(b.flat for b in result.blast)
    direct = sum(b.direct for b in result.blast)
    out.print(f"Checked {result.rows_checked} matrix rows, {result.pairs_checked} reachable pairs, "
              f"{result.edges_checked} observed dependencies.")
    out.print(f"Blast radius: {flat} reachable pairs in a flat network → {direct} under the plan.")
    for f in result.violations:
        out.print(f"VIOLATION {f.id} {f.source} -> {f.destination} {f.protocol or ''} {f.port or ''}: {f.message}",
                  markup=False)
    for f in result.warnings:
        out.print(f"warning {f.id} {f.source} -> {f.destination} {f.protocol or ''} {f.port or ''}: {f.message}",
                  markup=False)
    for f in result.info:
        out.print(f"ok {f.id} {f.source} -> {f.destination} {f.protocol or ''} {f.port or ''}: {f.message}",
                  markup=False)
    if output is not None:
        doc = {"ok": result.ok, "violations": [f.model_dump(mode="json") for f in result.violations],
               "warnings": [f.model_dump(mode="json") for f in result.warnings],
               "info": [f.model_dump(mode="json") for f in result.info],
               "blast_radius": [b.__dict__ for b in result.blast], "inventory": inventory_doc(outcome.inventory),
               "flows": flows_doc(outcome.flows)}
        output.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not result.ok:
        raise ValidationFailed(f"{len(result.violations)} violation(s)")
    out.print("PASS")


@app.command()
def demo(out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("out/demo")
         ) -> None:
    """Run the whole path on the bundled example (a Kubernetes shop, an AI assistant and a few VMs)."""
    from microseg.examples import example_dir
    from microseg.pipeline import plan as run_plan

    ex = example_dir()
    outcome = run_plan([ex / "k8s", ex / "snapshots", ex / "inventory"], [str(ex / "flows")], out_dir,
                       progress=lambda msg: err.print(f"[dim]… {msg}[/dim]"))
    v = outcome.view
    out.print(f"Example planned: {len(v.policy.all_rules())} allow rules, {len(v.findings)} findings, "
              f"validation {'PASS' if v.validation.ok else 'FAIL'}.")
    out.print(f"Report: {outcome.out_dir / 'report.md'}")
    out.print(f"Check it: microseg validate --policy {outcome.out_dir / 'policy'}")


def _write_atomic(path: Path, text: str) -> None:
    from microseg.errors import InputError

    if not path.parent.is_dir():
        raise InputError("the output's directory does not exist", file=str(path), field="--output")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # an interrupted run never leaves half a report


def _parse_now(text: str | None) -> datetime | None:
    from microseg.errors import InputError

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"not an ISO date or date-time: {text!r}", field="--now") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command(name="drift")
def drift_cmd(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Desired policy directory (OUT/policy).")],
    deployed: Annotated[Path | None, typer.Option("--deployed", "-d", help="Directory with what is deployed for "
                        "--target (manifests, Terraform JSON, nft -j rulesets with index.json).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="kubernetes, calico, istio, nftables or "
                      "aws_sg.")] = "kubernetes",
    inventory: Annotated[list[Path] | None, typer.Option("--inventory", "-i", help="Current inventory: rules "
                         "naming workloads it lacks, workloads the policy lacks. Needed with --flows.")] = None,
    flows: Annotated[list[str] | None, typer.Option("--flows", "-f", help="Flow logs: orphaned rules and "
                     "unexplained flows. Repeatable.")] = None,
    flow_format: FlowFormatOpt = None,
    orphan_days: Annotated[int, typer.Option("--orphan-days", help="A rule no flow hit in the last N days of "
                           "the flow data (with --since/--until: of the flow data in that window) is "
                           "orphaned.")] = 30,
    now: Annotated[str | None, typer.Option("--now", help="Date (ISO) against which exceptions expire; "
                   "default: the current time.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json or sarif.")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here instead of "
                      "standard output.")] = None,
    fail_on: Annotated[str, typer.Option("--fail-on", help="Exit 4 when a finding of this severity or worse "
                       "exists: critical, high, medium, low, info, or never.")] = "high",
    flow_timezone: FlowTimezoneOpt = "UTC",
    since: SinceOpt = None,
    until: UntilOpt = None,
    show_progress: ProgressOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
    config: CheckConfigOpt = None,
) -> None:
    """Compare the reviewed policy with what is deployed, observed and inventoried: drift per pair,
    orphaned rules, unexplained flows, expired exceptions, workloads in no segment. Exit 4 on findings
    at or above --fail-on."""
    from microseg.analyses.drift import SEVERITIES
    from microseg.errors import InputError
    from microseg.ir.model import Severity
    from microseg.pipeline import drift_report, time_window
    from microseg.reports.drift import render_json, render_sarif, render_text

    if fmt not in ("text", "json", "sarif"):
        raise InputError(f"unknown format {fmt!r}; use text, json or sarif", field="--format")
    if fail_on != "never" and fail_on not in SEVERITIES:
        raise InputError(f"unknown severity {fail_on!r}; use {', '.join(SEVERITIES)} or never", field="--fail-on")
    from microseg.config import load_config

    window = time_window(since, until)
    cfg = load_config(config)
    with _ingest_bar(show_progress, quiet or not flows) as bar:  # no flows (or a table on the engine): no bar
        outcome = drift_report(policy, deployed_dir=deployed, target=target, inventory_paths=inventory or [],
                               flows=flows or [], flow_format=flow_format, orphan_days=orphan_days,
                               now=_parse_now(now), flow_timezone=flow_timezone, window=window,
                               ingest_progress=bar, engine=engine, bad_threshold=cfg.bad_line_threshold)
    report = outcome.report
    _say_inventory(outcome.inventory)
    _say_flows(outcome.flows, quiet)
    text = (render_text(report) if fmt == "text"
            else render_json(report, inventory=outcome.inventory, flows=outcome.flows) if fmt == "json"
            else render_sarif(report, version=__version__, inventory=outcome.inventory, flows=outcome.flows))
    if output is not None:
        _write_atomic(output, text)
        out.print(f"Wrote {len(report.findings)} finding(s) to {output}", markup=False)
    else:
        sys.stdout.write(text)
    failing = () if fail_on == "never" else report.failing(cast(Severity, fail_on))
    if failing:
        raise ValidationFailed(f"{len(failing)} drift finding(s) at or above {fail_on}")


@app.command(name="diff")
def diff_cmd(
    rev1: Annotated[str, typer.Argument(help="Older revision (commit, branch, tag), e.g. origin/main.")],
    rev2: Annotated[str, typer.Argument(help="Newer revision, e.g. HEAD.")],
    policy_dir: Annotated[str, typer.Option("--policy-dir", help="Policy directory, relative to --repo.")] = "policy",
    repo: Annotated[Path, typer.Option("--repo", help="Git work tree to read the revisions from.")] = Path("."),
    fmt: Annotated[str, typer.Option("--format", help="text, json or markdown.")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the diff here instead of "
                      "standard output.")] = None,
    fail_on_widen: Annotated[bool, typer.Option("--fail-on-widen", help="Exit 4 when a connection is "
                             "added.")] = False,
) -> None:
    """Semantic diff of the policy-as-code between two git revisions: connections added, removed or
    changed per pair, with the rules responsible. Exit 4 with --fail-on-widen when a connection is added."""
    from microseg.errors import InputError
    from microseg.pipeline import diff_revisions
    from microseg.reports.revdiff import render_json, render_markdown, render_text

    if fmt not in ("text", "json", "markdown"):
        raise InputError(f"unknown format {fmt!r}; use text, json or markdown", field="--format")
    d = diff_revisions(repo, rev1, rev2, policy_dir=policy_dir)
    text = render_text(d) if fmt == "text" else render_json(d) if fmt == "json" else render_markdown(d)
    if output is not None:
        _write_atomic(output, text)
        out.print(f"Wrote the diff of {len(d.changes)} changed pair(s) to {output}", markup=False)
    else:
        sys.stdout.write(text)
    if fail_on_widen and d.widens:
        raise ValidationFailed(f"{sum(1 for c in d.changes if c.widens)} pair(s) gain connections")


@app.command(name="posture")
def posture_cmd(
    inventory: Annotated[list[Path], typer.Option("--inventory", "-i", help="Inventory file or directory "
                         "(Kubernetes manifests or `kubectl get -o yaml|json` dumps). Repeatable.")],
    policies: Annotated[list[Path], typer.Option("--policies", "-p", help="File or directory with the deployed "
                        "NetworkPolicies; other kinds are skipped, so the inventory path may be given again. "
                        "Repeatable.")],
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here instead of "
                      "standard output.")] = None,
    broad_prefix: Annotated[int, typer.Option("--broad-prefix", help="An IPv4 ipBlock of this prefix length "
                            "or shorter is overly broad (MS508).")] = 8,
    broad_prefix6: Annotated[int, typer.Option("--broad-prefix6", help="The same for IPv6.")] = 32,
) -> None:
    """What the deployed NetworkPolicies let through today: share of workload pairs that can connect,
    unprotected workloads, policies and peers selecting nothing, redundant and shadowed rules, broad
    CIDRs and wildcard ports, each a finding with a stable id (MS5xx)."""
    from microseg.errors import InputError
    from microseg.pipeline import posture
    from microseg.reports.posture import FORMATS, render

    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use {' or '.join(FORMATS)}", field="--format")
    result = posture(inventory, policies, broad_prefix=broad_prefix, broad_prefix6=broad_prefix6,
                     notes=lambda line: err.print(f"microseg: {line}", markup=False))
    text = render(result, fmt)
    if output is not None:
        _write_atomic(output, text)
        out.print(f"Wrote the posture of {result.policies} NetworkPolicies over {result.workloads} workloads "
                  f"({len(result.findings)} findings) to {output}", markup=False)
    else:
        sys.stdout.write(text)


@app.command(name="connectivity")
def connectivity_cmd(
    inventory: Annotated[list[Path], typer.Option("--inventory", "-i", help="Kubernetes manifests or kubectl "
                                                  "dumps with the workloads (file or directory; repeatable).")],
    policies: Annotated[list[Path], typer.Option("--policies", "-p", help="NetworkPolicy / AdminNetworkPolicy / "
                                                 "BaselineAdminNetworkPolicy files or directories (repeatable; "
                                                 "may be the same paths as --inventory).")],
    fmt: Annotated[str, typer.Option("--format", help="txt, json or csv.")] = "txt",
    port: Annotated[str | None, typer.Option("--port", help="Only pairs that allow this port, e.g. tcp/8080.")
                    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result here instead of "
                                                "standard output.")] = None,
) -> None:
    """What the deployed Kubernetes policies allow: SRC => DST : CONNECTIONS for every allowed pair."""
    from microseg.pipeline import connectivity

    result = connectivity(inventory, policies, fmt=fmt, port=port)
    for line in result.report:
        err.print(f"microseg: {line}", markup=False)
    if output is not None:
        _write_atomic(output, result.text)
    else:
        sys.stdout.write(result.text)


def main() -> None:
    try:
        app(prog_name="microseg")  # usage errors are Typer's own (exit 2, with the usage line)
    except MicrosegError as exc:
        err.print(f"microseg: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception:  # the CLI entry point is the one place that catches broadly
        traceback.print_exc()
        err.print("microseg: internal error (a bug); please report it with the traceback above", markup=False)
        sys.exit(70)


if __name__ == "__main__":
    main()
