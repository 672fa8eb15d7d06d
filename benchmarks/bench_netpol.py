"""NetworkPolicy benchmark: microseg's evaluator against network-config-analyzer (NCA) on the same input.

    python benchmarks/bench_netpol.py                  # 1,000 pods, 20 namespaces, 200 NetworkPolicies
    python benchmarks/bench_netpol.py --pods 200 --policies 40 --repeat 2   # a quick try
    python benchmarks/bench_netpol.py --skip-nca       # microseg only

The estate is generated once, seeded (``gen_netpol.py``), under ``benchmarks/data/``. Stages, each in its
own subprocess so that peak memory is measured per stage:

(a) microseg - parse the NetworkPolicies and evaluate every ordered pair of workloads into per-pair
    connections (``sources.deployed.kubernetes.parse`` + ``connectivity``); the inventory is read once
    before the clock starts. One warm-up run, then the best of ``--repeat`` runs.
(b) NCA      - ``nca --connectivity -r DIR -o txt_no_fw_rules``, network-config-analyzer's own full
    connectivity map of the same files, timed as one command (it reads the same YAML and evaluates
    the same pairs; its start-up, about a second, is part of it). Run ``--nca-repeat`` times, best kept.

Both matrices are then compared pair by pair (pods only; NCA's IP-range peers are left out, microseg is
not given any) and the result says whether they agree. Target: (a) under 10 s at 1,000 pods / 200
policies. Results go to benchmarks/results/ (gitignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from machine_facts import machine_facts  # noqa: E402  (a sibling script, on the path above)

TARGET_SECONDS = 10.0
NCA = REPO / ".nca-venv" / "bin" / "nca"


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; see bench_ingest.py for why not ru_maxrss)."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- stages (each in a child process) -----------------------------------------------------------------------


def stage_microseg(data: Path, repeat: int, matrix_out: Path) -> dict[str, Any]:
    from microseg.sources.deployed.kubernetes import connectivity, parse
    from microseg.sources.inventory import load_inventory

    inventory = load_inventory([data / "namespaces.yaml", data / "workloads.yaml"])
    pods = [w for w in inventory.workloads if w.kind.value == "kubernetes"]
    files = {str(data / "netpols.yaml"): (data / "netpols.yaml").read_text(encoding="utf-8")}
    runs = []
    result: dict[tuple[str, str], Any] = {}
    for i in range(repeat + 1):  # the first run warms caches and imports and is not counted
        t0 = time.perf_counter()
        netpols = parse(files)
        t1 = time.perf_counter()
        result = connectivity(netpols, pods)
        t2 = time.perf_counter()
        if i:
            runs.append({"parse": t1 - t0, "evaluate": t2 - t1, "total": t2 - t0})
    from tests.oracle.nca import canonical

    matrix_out.write_text(json.dumps({f"{s} => {d}": canonical(c) for (s, d), c in sorted(result.items())},
                                     indent=0, sort_keys=True), encoding="utf-8")
    best = min(runs, key=lambda r: r["total"])
    return {"seconds": best["total"], "parse": best["parse"], "evaluate": best["evaluate"],
            "runs": [round(r["total"], 3) for r in runs], "workloads": len(pods), "policies": len(netpols),
            "pairs": len(pods) * (len(pods) - 1), "connected_pairs": len(result), "peak_rss_mb": _peak_rss_mb()}


def stage_nca(data: Path, repeat: int, matrix_out: Path) -> dict[str, Any]:
    import resource

    from tests.oracle.nca import parse_connectivity

    out = matrix_out.with_suffix(".txt")
    cmd = [str(NCA), "--connectivity", "-r", str(data), "-o", "txt_no_fw_rules", "-f", str(out)]
    runs = []
    for _ in range(repeat):
        # NCA appends to an existing -f file (a previous run's output, without a final newline, would be glued
        # to the first line of this one): start from none.
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        runs.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"NCA failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    # Children's peak RSS: the largest NCA run (this child process starts nothing else).
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    pairs: dict[str, Any] = {}
    for line in parse_connectivity(out.read_text(encoding="utf-8")):
        if isinstance(line.src, str) and isinstance(line.dst, str):
            key = f"{line.src} => {line.dst}"
            pairs[key] = pairs[key] | line.conns if key in pairs else line.conns
    matrix_out.write_text(json.dumps({k: str(v) for k, v in sorted(pairs.items())}, indent=0, sort_keys=True),
                          encoding="utf-8")
    return {"seconds": min(runs), "runs": [round(r, 3) for r in runs], "connected_pairs": len(pairs),
            "peak_rss_mb": rss}


def _child(stage: str, data: Path, repeat: int, matrix_out: Path) -> None:
    fn = stage_microseg if stage == "microseg" else stage_nca
    print(json.dumps(fn(data, repeat, matrix_out)))


def _run_stage(stage: str, data: Path, repeat: int, matrix_out: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", stage, "--data", str(data), "--repeat", str(repeat),
                           "--matrix-out", str(matrix_out)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    nca = subprocess.run([str(NCA), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return machine_facts(nca=nca or "?") | {"load_average": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="timed microseg runs after one warm-up (best kept)")
    ap.add_argument("--nca-repeat", type=int, default=1, help="NCA runs (best kept); each takes minutes at full size")
    ap.add_argument("--skip-nca", action="store_true")
    ap.add_argument("--child", choices=("microseg", "nca"), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--matrix-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.data, args.repeat, args.matrix_out)
        return

    from gen_netpol import generate, write

    data = HERE / "data" / f"netpol-{args.pods}p-{args.namespaces}ns-{args.policies}np-s{args.seed}"
    if not (data / "netpols.yaml").is_file():
        write(data, generate(args.pods, args.namespaces, args.policies, args.seed))
    results_dir = HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    mach = machine()
    ms = _run_stage("microseg", data, args.repeat, results_dir / "bench_netpol.microseg.json")
    nca: dict[str, Any] | None = None
    agree: bool | None = None
    if not args.skip_nca:
        if not NCA.is_file():
            raise SystemExit(f"{NCA} is missing: run `make nca` (or pass --skip-nca)")
        nca = _run_stage("nca", data, args.nca_repeat, results_dir / "bench_netpol.nca.json")
        ours = json.loads((results_dir / "bench_netpol.microseg.json").read_text())
        theirs = json.loads((results_dir / "bench_netpol.nca.json").read_text())
        agree = ours == theirs
        if not agree:
            diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            print(f"microseg and NCA disagree on {len(diff)} pair(s), e.g. " + "; ".join(
                f"{k}: microseg {ours.get(k)}, NCA {theirs.get(k)}" for k in diff[:5]), file=sys.stderr)
    report = {"machine": mach, "input": {"pods": args.pods, "namespaces": args.namespaces,
                                         "policies": args.policies, "seed": args.seed, "dir": str(data)},
              "microseg": ms, "nca": nca, "agree": agree,
              "ratio_nca_over_microseg": round(nca["seconds"] / ms["seconds"], 1) if nca else None,
              "target_met": ms["seconds"] < TARGET_SECONDS}
    (results_dir / "bench_netpol.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"# NetworkPolicy benchmark: {ms['workloads']} workloads, {ms['policies']} NetworkPolicies, "
             f"{ms['pairs']:,} ordered pairs",
             "",
             f"Machine: {mach['nproc']} CPUs, {mach['cpu']}, {mach['ram_gb']} GB RAM; Python {mach['python']}, "
             f"{mach['nca']}; load average at start {', '.join(f'{x:.2f}' for x in mach['load_average'])}",
             "",
             "| stage | seconds | connected pairs | peak RSS MB |", "| --- | ---: | ---: | ---: |",
             f"| microseg (parse + evaluate, best of {len(ms['runs'])} warm) | {ms['seconds']:.2f} | "
             f"{ms['connected_pairs']:,} | {ms['peak_rss_mb']:.0f} |"]
    if nca:
        lines.append(f"| NCA --connectivity (best of {len(nca['runs'])}) | {nca['seconds']:.2f} | "
                     f"{nca['connected_pairs']:,} | {nca['peak_rss_mb']:.0f} |")
    lines += ["", f"microseg: parse {ms['parse']:.2f}s + evaluate {ms['evaluate']:.2f}s; runs {ms['runs']}"]
    if nca:
        lines.append(f"NCA / microseg: **{report['ratio_nca_over_microseg']}x**; matrices agree: "
                     f"{'yes' if agree else 'NO'}")
    lines.append(f"Target microseg < {TARGET_SECONDS:.0f} s: {'met' if report['target_met'] else 'NOT met'}")
    text = "\n".join(lines) + "\n"
    (results_dir / "bench_netpol.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
