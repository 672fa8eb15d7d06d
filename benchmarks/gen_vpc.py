"""Generate a seeded, realistic AWS VPC Flow Logs v2 file (and its inventory) for the ingest benchmark.

    python benchmarks/gen_vpc.py --lines 10000000 --out benchmarks/data/vpc-10m.log

The estate is ``--workloads`` hosts (``host-0000`` …) with static addresses ``10.<a>.<b>.10``; the
first 15 % are servers, each listening on one port. Every connection is logged twice, as on a real
ENI pair: the request (client ephemeral port → server port) and the reply. A little noise is mixed
in the way real logs carry it: internet clients, rejected probes, an unexplained private network,
NODATA records and a handful of truncated lines.

Random numbers come from numpy (seeded) and the text is written by DuckDB ``COPY`` in chunks, so
10 M lines (~1 GB) take seconds, not the minutes a Python loop would.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from microseg.ir.model import AddressBinding, Inventory, ListenPort, Protocol, Workload, WorkloadKind

HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")
SERVER_SHARE = 0.15
SERVER_PORTS = (443, 5432, 6379, 8080, 9092, 3306, 8443, 27017, 9200, 11211)
PEERS_PER_CLIENT = 5
BASE_EPOCH = 1_700_000_000  # 2023-11-14, a week of traffic from here
SPAN_SECONDS = 7 * 86_400
CHUNK = 1_000_000  # connections per generated chunk


def host_ip(i: int) -> str:
    return f"10.{1 + i // 250}.{i % 250}.10"


def server_count(workloads: int) -> int:
    return max(1, int(workloads * SERVER_SHARE))


def server_port(i: int) -> int:
    return SERVER_PORTS[i % len(SERVER_PORTS)]


def build_inventory(workloads: int) -> Inventory:
    """The benchmark estate: hosts with static bindings; servers declare their listening port."""
    n_servers = server_count(workloads)
    ws = []
    bs = []
    for i in range(workloads):
        name = f"host-{i:04d}"
        ports = (ListenPort(port=server_port(i), protocol=Protocol.TCP),) if i < n_servers else ()
        ws.append(Workload(name=name, kind=WorkloadKind.HOST, addresses=(host_ip(i),), ports=ports))
        bs.append(AddressBinding(ip=host_ip(i), workload=name, source="gen_vpc"))
    return Inventory(workloads=tuple(ws), bindings=tuple(bs))


def _chunk_frame(rng: np.random.Generator, first: int, n_conn: int, workloads: int) -> pd.DataFrame:
    """One chunk of connections as columns; request and reply rows are derived in SQL."""
    n_servers = server_count(workloads)
    client = rng.integers(0, workloads, n_conn)
    # Each client talks to a few fixed servers (a realistic, sparse dependency graph).
    server = (client * 7 + rng.integers(0, PEERS_PER_CLIENT, n_conn) * 13) % n_servers
    kind = rng.random(n_conn)
    start = BASE_EPOCH + rng.integers(0, SPAN_SECONDS, n_conn)
    return pd.DataFrame({
        "o": np.arange(first, first + n_conn, dtype=np.int64),
        "client": client.astype(np.int32),
        "server": server.astype(np.int32),
        "eph": rng.integers(32768, 61000, n_conn).astype(np.int32),
        "pkts": rng.integers(1, 200, n_conn).astype(np.int32),
        "bytes_per": rng.integers(40, 1500, n_conn).astype(np.int32),
        "start": start.astype(np.int64),
        "dur": rng.integers(1, 60, n_conn).astype(np.int32),
        "kind": kind.astype(np.float32),
        "rnd": rng.integers(0, 1 << 30, n_conn).astype(np.int64),
    })


# kind < 0.985: normal request+reply; < 0.990: internet client; < 0.995: rejected probe to port 22
# (request only); < 0.998: unexplained private peer (172.20/16); else a NODATA record.
_CHUNK_SQL = """
WITH c AS (
  SELECT *,
    '10.' || (1 + client // 250) || '.' || (client % 250) || '.10' AS cip,
    '10.' || (1 + server // 250) || '.' || (server % 250) || '.10' AS sip,
    [443, 5432, 6379, 8080, 9092, 3306, 8443, 27017, 9200, 11211][server % 10 + 1] AS sport,
    '52.' || (rnd % 200) || '.' || (rnd // 200 % 250) || '.' || (rnd // 50000 % 250) AS pub,
    '172.20.' || (rnd % 250) || '.' || (rnd // 250 % 250) AS priv,
    CASE WHEN kind < 0.985 THEN cip WHEN kind < 0.990 THEN pub WHEN kind < 0.995 THEN cip ELSE priv END
      AS peer
  FROM frame
), recs AS (
  SELECT o, 0 AS side, peer AS src, sip AS dst, eph AS sp,
    CASE WHEN kind >= 0.990 AND kind < 0.995 THEN 22 ELSE sport END AS dp,
    pkts, pkts * bytes_per AS b, start, dur, kind,
    CASE WHEN kind >= 0.990 AND kind < 0.995 THEN 'REJECT' ELSE 'ACCEPT' END AS act
  FROM c
  UNION ALL
  SELECT o, 1, sip, peer, sport, eph, pkts, pkts * 120, start, dur, kind, 'ACCEPT'
  FROM c WHERE kind < 0.990 OR kind >= 0.995 AND kind < 0.998
), lines AS (
  SELECT o, side, CASE
    WHEN kind >= 0.998 THEN
      '2 123456789010 eni-0a1b2c3d4e5f60718 - - - - - - - ' || start || ' ' || (start + 60) || ' - NODATA'
    ELSE '2 123456789010 eni-0a1b2c3d4e5f60718 ' || src || ' ' || dst || ' ' || sp || ' ' || dp || ' 6 '
         || pkts || ' ' || b || ' ' || start || ' ' || (start + dur) || ' ' || act || ' OK'
    END AS line
  FROM recs
)
-- One truncated line per ~million connections, as a crashed collector leaves them.
SELECT CASE WHEN side = 0 AND o % 999983 = 0 THEN left(line, length(line) // 2) ELSE line END AS line
FROM lines
ORDER BY o, side
"""


def generate(out: Path, lines: int, workloads: int = 2000, seed: int = 20240601) -> int:
    """Write about ``lines`` lines (header included) to ``out``; return the number of lines written."""
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    written = 1
    remaining_conn = max(1, lines // 2)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, out.open("wb") as sink:
        sink.write((HEADER + "\n").encode())
        part_no = 0
        first = 1
        while remaining_conn > 0:
            n = min(CHUNK, remaining_conn)
            remaining_conn -= n
            con.register("frame", _chunk_frame(rng, first, n, workloads))
            first += n
            part = Path(tmp) / f"part-{part_no}.log"
            copy = f"COPY ({_CHUNK_SQL}) TO '{part}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '')"
            row = con.execute(copy).fetchone()
            written += int(row[0]) if row else 0
            con.unregister("frame")
            with part.open("rb") as src:
                shutil.copyfileobj(src, sink, 1 << 20)
            part.unlink()
            part_no += 1
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--workloads", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "vpc.log")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = generate(args.out, args.lines, args.workloads, args.seed)
    size = args.out.stat().st_size
    print(f"wrote {n} lines, {size / 1e6:.0f} MB to {args.out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
