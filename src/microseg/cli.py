"""Command line: a thin layer over :mod:`microseg.pipeline`.

Exit codes: 0 success; 1 other microseg error; 2 bad input (file, line and field are named);
3 a target cannot express a rule (unsupported feature); 4 validation found a violation;
70 internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from microseg import __version__
from microseg.errors import MicrosegError, ValidationFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Plan zero-trust micro-segmentation from inventories and flow logs, and prove the plan "
                       "before it reaches production.")
ENGINE_HELP = ("Where the flow-to-edge mapping runs: duckdb (default, embedded), spark (local[*], or "
               "$MICROSEG_SPARK_MASTER), spark://HOST:PORT, or an Ibis URL such as trino://user@host:8080/hive/flows; "
               "add ?table=NAME to map a table of normalised flows already on the engine instead of --flows. "
               "See README, Engines.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


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
    inventory: Annotated[list[Path], typer.Option("--inventory", "-i", help="Inventory file or directory: "
                         "Kubernetes YAML/JSON (manifests, `kubectl get -o json` snapshots) or microseg inventory "
                         "YAML. Repeatable.")],
    flows: Annotated[list[str] | None, typer.Option("--flows", "-f", help="Flow log file, directory or glob "
                     "(quote globs). Plain or .gz. Repeatable. Required unless --engine names a table.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("plan"),
    flow_format: Annotated[str | None, typer.Option("--flow-format", help="Force a flow format "
                           "(aws-vpc, hubble, zeek, calico, envoy, gcp, azure, nfdump); "
                           "default: detect per file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="microseg.yaml with thresholds, "
                      "scope, guardrails and targets.")] = None,
    min_flows: Annotated[int | None, typer.Option(help="Minimum accepted flows before an edge is "
                         "codified (overrides the config).")] = None,
    min_days: Annotated[int | None, typer.Option(help="Minimum distinct days an edge must be seen "
                        "(overrides the config).")] = None,
    exceptions: Annotated[Path | None, typer.Option(help="Approved exceptions YAML to merge with "
                          "OUT/policy/exceptions.yaml.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help=ENGINE_HELP)] = None,
) -> None:
    """Read inventory + flow logs; write zones, flow-to-policy matrix, rollout and validation plans,
    policy-as-code (OUT/policy) and enforcement artifacts (OUT/enforce/<target>)."""
    from microseg.config import load_config
    from microseg.pipeline import plan as run_plan

    cfg = load_config(config)
    updates = {k: v for k, v in (("min_flows", min_flows), ("min_days", min_days)) if v is not None}
    if updates:
        cfg = cfg.model_validate({**cfg.model_dump(), **updates})
    outcome = run_plan(inventory, flows or [], out_dir, config=cfg, flow_format=flow_format,
                       exceptions_file=exceptions, progress=lambda msg: err.print(f"[dim]… {msg}[/dim]"),
                       engine=engine)
    v = outcome.view
    high = sum(1 for f in v.findings if f.severity in ("critical", "high"))
    out.print(f"Planned {sum(1 for w in v.policy.workloads if w.kind.value != 'external')} workloads in "
              f"{len(v.policy.segments)} zones: {len(v.policy.all_rules())} allow rules, {len(v.findings)} findings "
              f"({high} high). Flows resolved: {v.coverage.record_share:.1%}.")
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


@app.command(name="validate")
def validate_cmd(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy directory (OUT/policy from plan).")],
    inventory: Annotated[list[Path] | None, typer.Option("--inventory", "-i", help="Inventory, needed "
                         "with --flows to resolve addresses.")] = None,
    flows: Annotated[list[str] | None, typer.Option("--flows", "-f", help="Flow logs to check against "
                     "the policy (drift: would enforcement break an observed flow?).")] = None,
    flow_format: Annotated[str | None, typer.Option("--flow-format")] = None,
    segment: Annotated[str | None, typer.Option(help="Only check observed flows into this segment "
                       "(a rollout phase's exit criterion).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write the result as JSON here.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help=ENGINE_HELP)] = None,
) -> None:
    """Prove the policy: matrix rows allowed, everything else denied, guardrails hold, observed flows
    still work; print blast radius flat vs plan. Exit 4 on a violation."""
    import json

    from microseg.pipeline import validate_policy

    pol, result = validate_policy(policy, inventory_paths=inventory or [], flows=flows or [],
                                  flow_format=flow_format, segment=segment, engine=engine)
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
               "blast_radius": [b.__dict__ for b in result.blast]}
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
