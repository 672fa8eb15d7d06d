"""Ingest + mapping benchmark: microseg against DuckDB's bare scan and a plain pandas script.

    python benchmarks/bench_ingest.py                  # ~10 M lines (~1.1 GB), generated once
    python benchmarks/bench_ingest.py --lines 200000   # a quick try
    python benchmarks/bench_ingest.py --repeat 3       # median of 3 interleaved rounds

Stages, each in its own subprocess so that peak memory is measured per stage:

(a) floor    - DuckDB ``SELECT count(*) FROM read_csv(...)`` of the file: the cost of scanning it;
(b) microseg - a fresh FlowStore: ``ingest`` + ``map_flows`` against the generated inventory;
(c) pandas   - a straightforward chunked pandas script computing the same edges.

Wall seconds cover the work only (not interpreter start-up or imports), identically for all stages.
Targets: (b) <= 2.5 x (a); (b) at least 2 x faster than (c); peak RSS of (b) < 1 GB.
Results go to benchmarks/results/ (gitignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine_facts import machine_facts  # noqa: E402  (a sibling script, on the path above)

TARGET_FLOOR_RATIO = 2.5
TARGET_PANDAS_SPEEDUP = 2.0
TARGET_RSS_MB = 1024


def _peak_rss_mb() -> float:
    """This process's own peak RSS. Not getrusage's ru_maxrss: Linux carries that across fork+exec,
    so a child started by a parent that generated the data would report the parent's peak. VmHWM
    belongs to the address space, which exec replaces."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- stages (run in a child process) ------------------------------------------------------------

def stage_floor(path: Path, workloads: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    # ignore_errors: the generated file has a few truncated lines, as real logs do.
    row = con.execute("SELECT count(*) FROM read_csv(?, delim=' ', header=true, ignore_errors=true)",
                      [str(path)]).fetchone()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": int(row[0]) if row else 0}


def stage_microseg(path: Path, workloads: int) -> dict[str, Any]:
    from gen_vpc import build_inventory

    from microseg.engine.mapping import map_flows
    from microseg.engine.store import FlowStore

    inventory = build_inventory(workloads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=HERE / "data"))
    try:
        t0 = time.perf_counter()
        with FlowStore(tmp / "flows.duckdb") as store:
            report = store.ingest([path])
            t1 = time.perf_counter()
            result = map_flows(store, inventory)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "ingest_seconds": t1 - t0, "map_seconds": seconds - (t1 - t0),
                "lines": report.lines, "records": report.records, "bad": report.bad, "edges": len(result.edges),
                "edge_records": result.coverage.edge_records, "resolved_share": result.coverage.resolved_share}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stage_pandas(path: Path, workloads: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]
    from gen_vpc import build_inventory

    inventory = build_inventory(workloads)
    ip_to_w = {b.ip: b.workload for b in inventory.bindings}
    listen = {(w.name, p.port) for w in inventory.workloads for p in w.ports}
    t0 = time.perf_counter()
    parts = []
    lines = 0
    reader = pd.read_csv(path, sep=" ", header=0, chunksize=1_000_000, on_bad_lines="skip", na_values=["-"],
                         usecols=["srcaddr", "dstaddr", "srcport", "dstport", "protocol", "bytes", "start", "action",
                                  "log-status"],
                         dtype={"srcaddr": "string", "dstaddr": "string", "action": "string", "log-status": "string"})
    for chunk in reader:
        lines += len(chunk)
        c = chunk[chunk["log-status"] == "OK"]
        sw = c["srcaddr"].map(ip_to_w)
        dw = c["dstaddr"].map(ip_to_w)
        ok = sw.notna() & dw.notna()
        c, sw, dw = c[ok], sw[ok], dw[ok]
        sp, dp = c["srcport"].to_numpy(), c["dstport"].to_numpy()
        d_listen = np.fromiter(((w, p) in listen for w, p in zip(dw, dp, strict=True)), bool, len(c))
        s_listen = np.fromiter(((w, p) in listen for w, p in zip(sw, sp, strict=True)), bool, len(c))
        to_dst = np.where(d_listen, True, np.where(s_listen, False, np.where(
            (dp < 1024) & (sp >= 1024), True, np.where((sp < 1024) & (dp >= 1024), False, np.where(
                (dp < 32768) & (sp >= 32768), True, np.where((sp < 32768) & (dp >= 32768), False, dp <= sp))))))
        port = np.where(to_dst, dp, sp)
        keep = (port < 32768) | np.where(to_dst, d_listen, s_listen)
        accepted = (c["action"] == "ACCEPT").to_numpy()
        frame = pd.DataFrame({
            "client": np.where(to_dst, sw, dw), "server": np.where(to_dst, dw, sw),
            "protocol": c["protocol"].to_numpy(),
            "port": port, "req": accepted & to_dst, "rep": accepted & ~to_dst, "denied": ~accepted,
            "bytes": c["bytes"].to_numpy(), "day": c["start"].to_numpy() // 86400})[keep]
        parts.append(frame.groupby(["client", "server", "protocol", "port", "day"], sort=False)
                     .agg(req=("req", "sum"), rep=("rep", "sum"), denied=("denied", "sum"), bytes=("bytes", "sum"))
                     .reset_index())
    allp = pd.concat(parts)
    edges = allp.groupby(["client", "server", "protocol", "port"]).agg(
        req=("req", "sum"), rep=("rep", "sum"), denied=("denied", "sum"), bytes=("bytes", "sum"),
        days=("day", "nunique"))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "lines": lines, "edges": len(edges)}


STAGES = {"floor": stage_floor, "microseg": stage_microseg, "pandas": stage_pandas}


def _child(stage: str, path: Path, workloads: int) -> None:
    result = STAGES[stage](path, workloads)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


# -- driver ------------------------------------------------------------------------------------

def _run_stage(stage: str, path: Path, workloads: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--stage", stage, "--data", str(path),
                          "--workloads", str(workloads)], check=True, capture_output=True, text=True, env=env)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    import duckdb
    import pandas as pd

    return machine_facts(duckdb=duckdb.__version__, pandas=pd.__version__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--workloads", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the median of each stage is reported")
    ap.add_argument("--data", type=Path, help="use this VPC flow log instead of generating one")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        _child(args.stage, args.data, args.workloads)
        return

    from gen_vpc import generate

    path = args.data or HERE / "data" / f"vpc-{args.lines}.log"
    (HERE / "data").mkdir(exist_ok=True)
    if not path.exists():
        t0 = time.perf_counter()
        n = generate(path, args.lines, args.workloads)
        print(f"generated {n} lines ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")
    stages = ["floor", "microseg"] + ([] if args.skip_pandas else ["pandas"])
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in stages}
    for r in range(args.repeat):
        for s in stages:  # interleaved, so that a noisy neighbour hits every stage alike
            runs[s].append(_run_stage(s, path, args.workloads))
            print(f"round {r + 1}: {s:8s} {runs[s][-1]['seconds']:.2f}s", flush=True)
    med = {s: _median_run(v) for s, v in runs.items()}
    lines = med["microseg"]["lines"]
    rows = []
    for s in stages:
        m = med[s]
        rows.append({"stage": s, "seconds": round(m["seconds"], 2), "lines_per_s": round(lines / m["seconds"]),
                     "peak_rss_mb": round(m["peak_rss_mb"])})
    # Rounds are interleaved, so each round's ratio compares runs made under the same machine load;
    # their median is the headline figure (the medians' ratio is reported too).
    round_ratios = [m["seconds"] / f["seconds"] for m, f in zip(runs["microseg"], runs["floor"], strict=True)]
    floor_ratio = statistics.median(round_ratios)
    result: dict[str, Any] = {
        "file": str(path), "bytes": path.stat().st_size, "lines": lines, "repeat": args.repeat,
        "machine": machine(), "stages": rows, "runs": runs,
        "microseg": {k: v for k, v in med["microseg"].items() if k not in ("seconds", "peak_rss_mb")},
        "ratio_microseg_to_floor": round(floor_ratio, 2),
        "ratio_per_round": [round(r, 2) for r in round_ratios],
        "ratio_of_medians": round(med["microseg"]["seconds"] / med["floor"]["seconds"], 2),
        "targets": {"microseg_le_2.5x_floor": floor_ratio <= TARGET_FLOOR_RATIO,
                    "rss_below_1gb": med["microseg"]["peak_rss_mb"] < TARGET_RSS_MB},
    }
    if "pandas" in med:
        speedup = med["pandas"]["seconds"] / med["microseg"]["seconds"]
        result["speedup_vs_pandas"] = round(speedup, 2)
        result["targets"]["2x_faster_than_pandas"] = speedup >= TARGET_PANDAS_SPEEDUP
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "bench_ingest.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = _markdown(result)
    (out_dir / "bench_ingest.md").write_text(md, encoding="utf-8")
    print(md)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2] if len(runs) % 2 else {
        **runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"# Ingest benchmark: {r['lines']:,} lines, {r['bytes'] / 1e6:,.0f} MB "
           f"(median of {r['repeat']})", "",
           f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM; Python {m['python']}, "
           f"DuckDB {m['duckdb']}, pandas {m['pandas']}", "",
           "| stage | seconds | lines/s | peak RSS MB |", "| --- | ---: | ---: | ---: |"]
    out += [f"| {s['stage']} | {s['seconds']} | {s['lines_per_s']:,} | {s['peak_rss_mb']} |" for s in r["stages"]]
    ms = r["microseg"]
    out += ["", f"microseg / floor: **{r['ratio_microseg_to_floor']}x** (target <= {TARGET_FLOOR_RATIO}x; "
            f"median of the rounds' ratios {r['ratio_per_round']}, ratio of medians {r['ratio_of_medians']})"]
    if "speedup_vs_pandas" in r:
        out.append(f"pandas / microseg: **{r['speedup_vs_pandas']}x** (target >= {TARGET_PANDAS_SPEEDUP}x)")
    out += [f"microseg: ingest {ms['ingest_seconds']:.2f}s + map {ms['map_seconds']:.2f}s; "
            f"{ms['edges']} edges, {ms['bad']} bad lines, resolved share {ms['resolved_share']}",
            "", "Targets met: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in r["targets"].items()), ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
