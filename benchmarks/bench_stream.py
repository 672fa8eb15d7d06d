"""Streaming ingest benchmark: many small files, and the peak memory of one large Azure blob.

    python benchmarks/bench_stream.py                       # 2,000 files; a ~1 GB Azure blob
    python benchmarks/bench_stream.py --blob-mb 100         # a quick try
    python benchmarks/bench_stream.py --skip-blob           # only the many-files stage

Stages, each in its own subprocess so that peak memory (ru_maxrss) is measured per stage:

(a) many files   - ``FlowStore.ingest`` of N small VPC flow log files (1-3 records each, every tenth
                   gzip-compressed): wall seconds, files/s, and the same files' bare DuckDB scan
                   (``SELECT count(*) FROM read_csv([...])``) for the share of the time that is
                   DuckDB's own per-file cost;
(b) azure blob   - ``FlowStore.ingest`` of one generated VNet flow log blob (``{"records": [...]}``,
                   pretty-printed like the blobs Network Watcher writes): wall seconds, MB/s, peak RSS;
(c) whole parse  - for comparison, the peak RSS of ``json.load`` of the same blob, which is what
                   reading a blob whole costs before any record is looked at.

Generated data goes to benchmarks/data/ (gitignored, kept between runs); results are printed and
written to benchmarks/results/stream.json. Target: (b) peak RSS < 1 GB whatever the blob size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
T0 = 1767322800  # 2026-01-02T03:00:00Z
HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")


def make_files(folder: Path, n: int) -> Path:
    done = folder.parent / f"{folder.name}.complete"  # beside the folder: every file inside is a log
    if done.exists() and done.read_text() == str(n):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("f*"):
        old.unlink()
    for i in range(n):
        body = [f"2 123456789010 eni-1 10.0.{i // 250 % 250}.{i % 250} 10.1.0.1 {40000 + j} 443 6 2 100 "
                f"{T0 + i} {T0 + i + 30} ACCEPT OK" for j in range(i % 3 + 1)]
        text = "\n".join((HEADER, *body)) + "\n"
        if i % 10 == 3:
            with gzip.open(folder / f"f{i:05d}.log.gz", "wt") as fh:
                fh.write(text)
        else:
            (folder / f"f{i:05d}.log").write_text(text)
    done.write_text(str(n))
    return folder


def make_blob(path: Path, target_mb: int) -> tuple[Path, int]:
    """A VNet blob of about ``target_mb`` MB: records of 200 tuples, written record by record."""
    meta = path.with_suffix(".tuples")
    if path.exists() and meta.exists() and path.stat().st_size >= target_mb * 10**6 * 0.95:
        return path, int(meta.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    m = T0 * 1000
    tuples = 0
    with path.open("w") as fh:
        fh.write('{\n  "records": [\n')
        r = 0
        while fh.tell() < target_mb * 10**6:
            group = [f"{m + r * 1000 + k},10.0.{r % 200}.{k % 250 + 1},10.1.0.{k % 50 + 1},{1024 + k},443,6,O,"
                     f"{'B' if k % 2 else 'D'},NX,{0 if k % 2 else 1},{0 if k % 2 else 60},0,0" for k in range(200)]
            record = {"time": "2026-01-02T03:00:00Z", "flowLogVersion": 4, "macAddress": f"0022487{r % 100000:05d}",
                      "category": "FlowLogFlowEvent",
                      "flowRecords": {"flows": [{"aclID": "a", "flowGroups": [{"rule": "r", "flowTuples": group}]}]}}
            text = json.dumps(record, indent=2)
            fh.write(("    ,\n" if r else "") + "    " + text.replace("\n", "\n    ") + "\n")
            tuples += len(group)
            r += 1
        fh.write("  ]\n}\n")
    meta.write_text(str(tuples))
    return path, tuples


def child(stage: str, arg: str, work: str) -> dict[str, Any]:
    """Runs in the subprocess: one stage, timed; ``main`` adds the subprocess's own peak RSS."""
    if stage == "many":
        from microseg.engine.store import FlowStore

        with FlowStore(Path(work) / "flows.duckdb") as store:
            t = time.perf_counter()
            report = store.ingest([arg])
            seconds = time.perf_counter() - t
        return {"seconds": seconds, "files": len(report.files), "lines": report.lines, "records": report.records}
    if stage == "bare":
        import duckdb

        files = sorted(str(p) for p in Path(arg).glob("f*"))
        con = duckdb.connect()
        t = time.perf_counter()
        plain = [f for f in files if not f.endswith(".gz")]
        gz = [f for f in files if f.endswith(".gz")]
        lines = 0
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(14)) + "}"
        for group, comp in ((plain, "none"), (gz, "gzip")):
            lst = "[" + ", ".join("'" + f + "'" for f in group) + "]"
            lines += con.execute(f"SELECT count(*) FROM read_csv({lst}, delim=' ', header=true, quote='', "
                                 f"escape='', compression='{comp}', auto_detect=false, columns={columns})"
                                 ).fetchone()[0]
        return {"seconds": time.perf_counter() - t, "lines": lines}
    if stage == "blob":
        from microseg.engine.store import FlowStore

        with FlowStore(Path(work) / "flows.duckdb") as store:
            t = time.perf_counter()
            report = store.ingest([arg])
            seconds = time.perf_counter() - t
        return {"seconds": seconds, "lines": report.lines, "records": report.records, "skipped": report.skipped}
    if stage == "whole":
        t = time.perf_counter()
        with open(arg, encoding="utf-8") as fh:
            doc = json.load(fh)
        return {"seconds": time.perf_counter() - t, "records": len(doc["records"])}
    raise SystemExit(f"unknown stage {stage}")


def run_stage(stage: str, arg: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("flows.duckdb*"):
        old.unlink()
    proc = subprocess.run([sys.executable, __file__, "--child", stage, str(arg), str(work)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        out = child(sys.argv[2], sys.argv[3], sys.argv[4])
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--blob-mb", type=int, default=1000)
    ap.add_argument("--skip-blob", action="store_true")
    ap.add_argument("--skip-whole", action="store_true", help="skip the json.load comparison (it needs RAM)")
    args = ap.parse_args()
    work = DATA / "stream-work"
    res: dict[str, Any] = {"machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                                       "platform": platform.platform()}}
    folder = make_files(DATA / f"many-{args.files}", args.files)
    res["many_files"] = run_stage("many", folder, work)
    res["many_files"]["files_per_s"] = round(args.files / res["many_files"]["seconds"], 1)
    res["many_files_bare_duckdb"] = run_stage("bare", folder, work)
    print(json.dumps({k: res[k] for k in ("many_files", "many_files_bare_duckdb")}, indent=2))
    if not args.skip_blob:
        blob, tuples = make_blob(DATA / f"azure-{args.blob_mb}mb.json", args.blob_mb)
        size_mb = blob.stat().st_size / 1e6
        res["azure_blob"] = {"size_mb": round(size_mb, 1), "tuples": tuples, **run_stage("blob", blob, work)}
        res["azure_blob"]["mb_per_s"] = round(size_mb / res["azure_blob"]["seconds"], 2)
        print(json.dumps(res["azure_blob"], indent=2))
        if not args.skip_whole:
            res["whole_json_load"] = run_stage("whole", blob, work)
            print(json.dumps(res["whole_json_load"], indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
