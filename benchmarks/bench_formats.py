"""Per-format ingest benchmark: microseg's reader against DuckDB's bare scan of the same file.

    python benchmarks/bench_formats.py                         # 1 M lines per format, generated once
    python benchmarks/bench_formats.py --lines 100000          # a quick try
    python benchmarks/bench_formats.py --repeat 3 --formats zeek-tsv,nfdump
    make bench BENCH_ARGS="--lines 200000 --repeat 3"

For every format a seeded, realistic file (the shape of the samples in ../shared/samples/flows/) is
generated into benchmarks/data/formats/ and kept for the next run. Two stages per format, each in
its own subprocess so that peak memory is per format and per stage:

(a) scan     - DuckDB's bare scan of the file: ``count(*)`` over ``read_csv`` / ``read_json`` with the
               format's dialect (Parquet: every value of every column is read and hashed, as
               ``count(*)`` alone reads only the footer);
(b) microseg - a fresh ``FlowStore.ingest`` of the file with the format given (no detection).

Wall seconds cover the work only (not interpreter start-up or imports). Rounds are interleaved: each
round runs every format, scan then microseg, so a noisy neighbour or the VM's drift hits the runs compared
alike; the median of the per-round ratios is the headline figure (for Parquet, of VPC text's ingest over
Parquet's in the same round).
Targets (issue 3, "Speed"): every text format within 3x of its bare scan; VPC Parquet at least 3x
faster than the same data as plain text. Results: benchmarks/results/bench_formats.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machine_facts import machine_facts  # a sibling script: benchmarks/ is sys.path[0]

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "formats"
TARGET_RATIO = 3.0
TARGET_PARQUET_SPEEDUP = 3.0
SEED = 20260102
BASE_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z; a week of traffic from here
SPAN = 7 * 86_400
HOSTS = 2000
SERVERS = 300
SERVER_PORTS = (443, 5432, 6379, 8080, 9092, 3306, 8443, 27017, 9200, 11211)


# -- generated estate --------------------------------------------------------------------------

def host_ip(i: int) -> str:
    return f"10.{1 + i // 250}.{i % 250}.10"


@dataclass
class Conn:
    """One connection drawn from the estate: a client talking to one of a few fixed servers."""

    client: int
    server: int
    sport: int
    dport: int
    start: float
    duration: float
    pkts: int
    bytes: int
    denied: bool

    @property
    def src(self) -> str:
        return host_ip(self.client)

    @property
    def dst(self) -> str:
        return host_ip(self.server)


def draw(rng: random.Random) -> Conn:
    client = rng.randrange(HOSTS)
    server = (client * 7 + rng.randrange(5) * 13) % SERVERS
    pkts = rng.randint(1, 200)
    return Conn(client=client, server=server, sport=rng.randint(32768, 60999), dport=SERVER_PORTS[server % 10],
                start=BASE_EPOCH + rng.random() * SPAN, duration=rng.random() * 30, pkts=pkts,
                bytes=pkts * rng.randint(40, 1500), denied=rng.random() < 0.02)


def iso(t: float, digits: int = 6) -> str:
    whole = int(t)
    frac = f"{t - whole:.9f}"[2:2 + digits]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (f".{frac}" if digits else "") + "Z"


def local(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(t)))


# -- one line per format (shapes follow ../shared/samples/flows/<format>/) -----------------------

ZEEK_FIELDS = ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes resp_bytes "
               "conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes resp_pkts "
               "resp_ip_bytes tunnel_parents").split()


def _uid(rng: random.Random) -> str:
    return "C" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=17))


def zeek_tsv(rng: random.Random, c: Conn) -> str:
    state, hist = ("REJ", "Sr") if c.denied else ("SF", "ShADadfF")
    ob, rb = c.bytes // 3, c.bytes - c.bytes // 3
    op, rp = max(1, c.pkts // 2), c.pkts - c.pkts // 2
    return "\t".join(map(str, (f"{c.start:.6f}", _uid(rng), c.src, c.sport, c.dst, c.dport, "tcp", "-",
                               f"{c.duration:.6f}", ob, rb, state, "T", "T", 0, hist, op, ob + 40 * op, rp,
                               rb + 40 * rp, "(empty)")))


def zeek_json(rng: random.Random, c: Conn) -> str:
    state = "REJ" if c.denied else "SF"
    return json.dumps({"_path": "conn", "_write_ts": iso(c.start + c.duration), "ts": iso(c.start),
                       "uid": _uid(rng), "id.orig_h": c.src, "id.orig_p": c.sport, "id.resp_h": c.dst,
                       "id.resp_p": c.dport, "proto": "tcp", "duration": round(c.duration, 6),
                       "orig_bytes": c.bytes // 3, "resp_bytes": c.bytes - c.bytes // 3, "conn_state": state,
                       "missed_bytes": 0, "history": "ShADadfF", "orig_pkts": c.pkts // 2 + 1,
                       "orig_ip_bytes": c.bytes // 2, "resp_pkts": c.pkts // 2, "resp_ip_bytes": c.bytes // 2},
                      separators=(",", ":"))


NFDUMP_HEADER = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,"
                 "svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,"
                 "al,ra,eng,exid,tr")
_NF_TAIL = (",0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
            "00:00:00:00:00:00" + ",0-0-0" * 10 + ",    0.000,    0.000,    0.000,10.32.0.1,0/0,1,")


def nfdump(rng: random.Random, c: Conn) -> str:
    flags = "...RS." if c.denied else ".AP.SF"
    return (f"{local(c.start)},{local(c.start + c.duration)},{c.duration:.3f},{c.src},{c.dst},{c.sport},{c.dport},"
            f"TCP,{flags},0,0,{c.pkts},{c.bytes},{c.pkts // 2},{c.bytes // 3}{_NF_TAIL}"
            f"{local(c.start + c.duration + 5)}.000")


def _pod(i: int) -> dict[str, Any]:
    app = f"app-{i % 97}"
    return {"ID": 100 + i, "identity": 20000 + i % 97, "cluster_name": "prod", "namespace": f"ns-{i % 11}",
            "labels": [f"k8s:app={app}", f"k8s:io.kubernetes.pod.namespace=ns-{i % 11}"],
            "pod_name": f"{app}-7d9f8c6b5-{i:05d}", "workloads": [{"name": app, "kind": "Deployment"}]}


def hubble(rng: random.Random, c: Conn) -> str:
    t = iso(c.start, 9)
    flow: dict[str, Any] = {
        "time": t, "uuid": f"{rng.getrandbits(128):032x}", "verdict": "DROPPED" if c.denied else "FORWARDED",
        "ethernet": {"source": "62:6b:d0:a4:c5:63", "destination": "6e:d0:ea:78:fc:0a"},
        "IP": {"source": c.src, "destination": c.dst, "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": c.sport, "destination_port": c.dport, "flags": {"SYN": True}}},
        "source": _pod(c.client), "destination": _pod(c.server), "Type": "L3_L4", "node_name": "prod/node-1",
        "event_type": {"type": 5 if c.denied else 4}, "traffic_direction": "EGRESS", "is_reply": False,
        "Summary": "TCP Flags: SYN"}
    if c.denied:
        flow |= {"drop_reason": 181, "drop_reason_desc": "POLICY_DENY"}
    return json.dumps({"flow": flow, "node_name": "prod/node-1", "time": t}, separators=(",", ":"))


def gcp(rng: random.Random, c: Conn) -> str:
    vm = {"project_id": "prod-project", "region": "europe-west1", "zone": "europe-west1-b"}
    vpc = {"project_id": "prod-project", "subnetwork_name": "default", "vpc_name": "default"}
    return json.dumps({
        "insertId": f"{rng.getrandbits(64):x}",
        "jsonPayload": {"bytes_sent": str(c.bytes),
                        "connection": {"dest_ip": c.dst, "dest_port": c.dport, "protocol": 6, "src_ip": c.src,
                                       "src_port": c.sport},
                        "dest_instance": vm | {"vm_name": f"vm-{c.server}"}, "dest_vpc": vpc,
                        "end_time": iso(c.start + c.duration, 9), "packets_sent": str(c.pkts),
                        "reporter": "SRC" if c.client % 2 else "DEST", "rtt_msec": "3",
                        "src_instance": vm | {"vm_name": f"vm-{c.client}"}, "src_vpc": vpc,
                        "start_time": iso(c.start, 9)},
        "logName": "projects/prod-project/logs/compute.googleapis.com%2Fvpc_flows",
        "receiveTimestamp": iso(c.start + 300, 9),
        "resource": {"labels": {"location": "europe-west1-b", "project_id": "prod-project",
                                "subnetwork_id": "758019854043528829", "subnetwork_name": "default"},
                     "type": "gce_subnetwork"},
        "timestamp": iso(c.start + 300, 9)}, separators=(",", ":"))


def calico_json(rng: random.Random, c: Conn) -> str:
    src, dst = _pod(c.client), _pod(c.server)
    start = int(c.start) // 300 * 300
    return json.dumps({
        "start_time": start, "end_time": start + 300, "source_ip": c.src, "source_name": src["pod_name"],
        "source_name_aggr": src["pod_name"][:-5] + "*", "source_namespace": src["namespace"],
        "source_port": c.sport, "source_type": "wep", "source_labels": {"labels": [f"app=app-{c.client % 97}"]},
        "dest_ip": c.dst, "dest_name": dst["pod_name"], "dest_name_aggr": dst["pod_name"][:-5] + "*",
        "dest_namespace": dst["namespace"], "dest_port": c.dport, "dest_type": "wep",
        "dest_labels": {"labels": [f"app=app-{c.server % 97}"]}, "proto": "tcp",
        "action": "deny" if c.denied else "allow", "reporter": "dst",
        "policies": {"all_policies": ["0|default|prod/default.allow-app|allow|0"]},
        "bytes_in": c.bytes // 3, "bytes_out": c.bytes - c.bytes // 3, "num_flows": 1, "num_flows_started": 1,
        "num_flows_completed": 1, "packets_in": c.pkts // 2, "packets_out": c.pkts - c.pkts // 2,
        "http_requests_allowed_in": 0, "http_requests_denied_in": 0, "original_source_ips": None,
        "num_original_source_ips": 0, "host": "node-1", "@timestamp": start + 300}, separators=(",", ":"))


CALICO_LEGACY_HEADER = ("startTime endTime srcType srcNamespace srcName srcLabels dstType dstNamespace dstName "
                        "dstLabels srcIP dstIP proto srcPort dstPort numFlows numFlowsStarted numFlowsCompleted "
                        "reporter packetsIn packetsOut bytesIn bytesOut action")


def calico_legacy(rng: random.Random, c: Conn) -> str:
    src, dst = _pod(c.client), _pod(c.server)
    start = int(c.start) // 300 * 300
    return (f"{start} {start + 300} wep {src['namespace']} {src['pod_name']} - wep {dst['namespace']} "
            f"{dst['pod_name']} - {c.src} {c.dst} 6 {c.sport} {c.dport} 1 1 1 in {c.pkts // 2} "
            f"{c.pkts - c.pkts // 2} {c.bytes // 3} {c.bytes - c.bytes // 3} {'deny' if c.denied else 'allow'}")


def envoy_text(rng: random.Random, c: Conn) -> str:
    code, details = (403, "rbac_access_denied_matched_policy[none]") if c.denied else (200, "via_upstream")
    rid = f"{rng.getrandbits(128):032x}"
    rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
    return (f'[{iso(c.start, 3)}] "GET /api/v1/items HTTP/1.1" {code} - {details} - "-" 0 {c.bytes} '
            f'{int(c.duration * 1000)} {int(c.duration * 900)} "-" "Go-http-client/1.1" "{rid}" '
            f'"svc-{c.server}:{c.dport}" "127.0.0.1:{c.dport}" inbound|{c.dport}|| 127.0.0.1:{c.sport - 1} '
            f"{c.dst}:{c.dport} {c.src}:{c.sport} outbound_.{c.dport}_._.svc-{c.server}.prod.svc.cluster.local "
            "default")


def envoy_json(rng: random.Random, c: Conn) -> str:
    code, details = (403, "rbac_access_denied_matched_policy[none]") if c.denied else (200, "via_upstream")
    return json.dumps({
        "start_time": iso(c.start, 3), "method": "GET", "path": "/api/v1/items", "protocol": "HTTP/1.1",
        "response_code": code, "response_flags": "-", "response_code_details": details,
        "connection_termination_details": None, "upstream_transport_failure_reason": None, "bytes_received": 0,
        "bytes_sent": c.bytes, "duration": int(c.duration * 1000), "upstream_service_time": None,
        "x_forwarded_for": None, "user_agent": "Go-http-client/1.1", "request_id": f"{rng.getrandbits(64):x}",
        "authority": f"svc-{c.server}:{c.dport}", "upstream_host": f"127.0.0.1:{c.dport}",
        "upstream_cluster": f"inbound|{c.dport}||", "upstream_local_address": f"127.0.0.1:{c.sport - 1}",
        "downstream_local_address": f"{c.dst}:{c.dport}", "downstream_remote_address": f"{c.src}:{c.sport}",
        "requested_server_name": f"outbound_.{c.dport}_._.svc-{c.server}.prod.svc.cluster.local",
        "route_name": "default"}, separators=(",", ":"))


GENERIC_HEADER = "start,end,src_ip,src_port,dst_ip,dst_port,protocol,bytes,packets,action,x_exporter"


def generic_csv(rng: random.Random, c: Conn) -> str:
    return (f"{c.start:.3f},{c.start + c.duration:.3f},{c.src},{c.sport},{c.dst},{c.dport},tcp,{c.bytes},{c.pkts},"
            f"{'deny' if c.denied else 'allow'},probe-{c.client % 7}")


VPC_HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
              "action log-status")


def vpc(rng: random.Random, c: Conn) -> str:
    start = int(c.start)
    return (f"2 123456789010 eni-0a1b2c3d4e5f60718 {c.src} {c.dst} {c.sport} {c.dport} 6 {c.pkts} {c.bytes} "
            f"{start} {start + 60} {'REJECT' if c.denied else 'ACCEPT'} OK")


# Azure flow logs are blobs, not lines: one ``{"records": [...]}`` document (PT1H.json), one record per
# NIC and minute holding a few hundred flow tuples; "lines" counts tuples here. Written one record per
# line, compact, as the shape of ../shared/samples/flows/azure/ (NSG version 2: seconds, T/U, decision
# letters, empty counters in a B tuple; VNet version 4: milliseconds, IANA protocol, state D for a
# denied flow, encryption, zero counters in a B tuple). About a fifth of the client records are
# followed by the server NIC's record of the same connections (direction I), as a VNet logs them.
AZURE_TUPLES_PER_RECORD = 300


def _mac(i: int) -> str:
    return f"000D3A{i:06X}"


def _azure_conn_tuples(rng: random.Random, c: Conn, v4: bool, inbound: bool) -> list[tuple[float, str]]:
    """(time, tuple) of one connection as one NIC logs it: B, maybe a C, then E (one D/deny tuple when denied)."""
    d = "I" if inbound else "O"
    t0 = c.start + (rng.random() * 0.5 if inbound else 0.0)

    def stamp(t: float) -> str:
        return str(int(t * 1000)) if v4 else str(int(t))

    head = f"{c.src},{c.dst},{c.sport},{c.dport}," + ("6" if v4 else "T") + f",{d},"
    if c.denied:
        return [(t0, f"{stamp(t0)},{head}D,NX,0,0,0,0" if v4 else f"{stamp(t0)},{head}D,B,,,,")]
    op, rp = max(1, c.pkts // 2), c.pkts - c.pkts // 2
    ob = c.bytes // 3
    out = [(t0, f"{stamp(t0)},{head}B,NX,0,0,0,0" if v4 else f"{stamp(t0)},{head}A,B,,,,")]
    if c.duration > 20:
        mid = t0 + c.duration / 2
        out.append((mid, f"{stamp(mid)},{head}C,NX,{op // 2},{ob // 2},{rp // 2},{(c.bytes - ob) // 2}" if v4
                    else f"{stamp(mid)},{head}A,C,{op // 2},{ob // 2},{rp // 2},{(c.bytes - ob) // 2}"))
    end = t0 + c.duration
    out.append((end, f"{stamp(end)},{head}E,NX,{op},{ob},{rp},{c.bytes - ob}" if v4
                else f"{stamp(end)},{head}A,E,{op},{ob},{rp},{c.bytes - ob}"))
    return out


def _azure_record(rng: random.Random, v4: bool, mac: str, minute: int, rules: list[tuple[str, list[str]]]
                  ) -> dict[str, Any]:
    when = iso(minute + 59.5, 7)
    sub = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/PROD-RG/PROVIDERS/MICROSOFT.NETWORK"
    if v4:
        return {"time": when, "flowLogVersion": 4, "flowLogGUID": "66aa66aa-6a6a-4a6a-9a6a-66aa66aa66aa",
                "macAddress": mac, "category": "FlowLogFlowEvent",
                "flowLogResourceID": f"{sub}/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/VNETFLOWLOG",
                "targetResourceID": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/prod-rg/"
                                    "providers/Microsoft.Network/virtualNetworks/prod-vnet",
                "operationName": "FlowLogFlowEvent",
                "flowRecords": {"flows": [{"aclID": f"{rng.getrandbits(128):032x}",
                                           "flowGroups": [{"rule": r, "flowTuples": t}]} for r, t in rules]}}
    return {"time": when, "systemId": f"{rng.getrandbits(128):032x}", "macAddress": mac,
            "category": "NetworkSecurityGroupFlowEvent", "resourceId": f"{sub}/NETWORKSECURITYGROUPS/PROD-NSG",
            "operationName": "NetworkSecurityGroupFlowEvents",
            "properties": {"Version": 2, "flows": [{"rule": r, "flows": [{"mac": mac, "flowTuples": t}]}
                                                   for r, t in rules]}}


def azure_blob(v4: bool) -> Callable[[Path, int], None]:
    def write(path: Path, tuples: int) -> None:
        rng = random.Random(f"{SEED}-azure-{'v4' if v4 else 'v2'}")
        written = 0
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            fh.write('{"records":[')
            first = True

            def emit(rec: dict[str, Any]) -> None:
                nonlocal first
                fh.write(("\n" if first else ",\n") + json.dumps(rec, separators=(",", ":")))
                first = False

            while written < tuples:
                client = rng.randrange(HOSTS)
                minute = BASE_EPOCH + rng.randrange(SPAN // 60) * 60
                want = min(tuples - written,
                           rng.randint(AZURE_TUPLES_PER_RECORD // 2, AZURE_TUPLES_PER_RECORD * 3 // 2))
                conns, out = [], []
                while len(out) < want:
                    c = draw(rng)
                    c.client, c.start = client, minute + rng.random() * 30
                    c.server = (client * 7 + rng.randrange(5) * 13) % SERVERS
                    c.dport = SERVER_PORTS[c.server % 10]
                    conns.append(c)
                    out.extend(_azure_conn_tuples(rng, c, v4, False)[:want - len(out)])
                ordered = [t for _, t in sorted(out)]
                allowed = [t for t in ordered if (",D," not in t if v4 else ",A," in t)]
                denied = [t for t in ordered if (",D," in t if v4 else ",A," not in t)]
                rules = [(r, t) for r, t in (("DefaultRule_AllowVnetOutBound", allowed),
                                             ("UserRule_DenyAppOutBound", denied)) if t]
                emit(_azure_record(rng, v4, _mac(client), minute, rules))
                written += len(out)
                if rng.random() < 0.2 and written < tuples:  # the server NICs' view of the same connections
                    for server in sorted({c.server for c in conns}):
                        if written >= tuples:
                            break
                        seen = [x for c in conns if c.server == server
                                for x in _azure_conn_tuples(rng, c, v4, True)][:tuples - written]
                        emit(_azure_record(rng, v4, _mac(HOSTS + server), minute,
                                           [("DefaultRule_AllowVnetInBound", [t for _, t in sorted(seen)])]))
                        written += len(seen)
            fh.write("\n]}\n")
    return write


def _no_line(rng: random.Random, c: Conn) -> str:
    raise AssertionError("generated by Case.writer")


@dataclass(frozen=True)
class Case:
    name: str  # benchmark row
    fmt: str  # microseg reader
    ext: str
    line: Callable[[random.Random, Conn], str]
    header: tuple[str, ...] = ()
    footer: tuple[str, ...] = ()
    scan: str = ""  # DuckDB table function call with ? for the path
    derived: str | None = None  # built from another case's file (gzip / parquet) instead of generated
    writer: Callable[[Path, int], None] | None = None  # writes the whole file itself (Azure blobs)


_CSV = "ignore_errors=true, strict_mode=false"
_JSON = "read_json(?, format='newline_delimited', maximum_object_size=1048576)"
_AZURE_JSON = "read_json(?, maximum_object_size=1073741824)"
_AZURE_NSG = ("(SELECT unnest(n.flowTuples) FROM (SELECT unnest(f.flows) AS n FROM (SELECT unnest(r.properties.flows) "
              f"AS f FROM (SELECT unnest(records) AS r FROM {_AZURE_JSON}))))")
_AZURE_VNET = ("(SELECT unnest(g.flowTuples) FROM (SELECT unnest(f.flowGroups) AS g FROM (SELECT "
               f"unnest(r.flowRecords.flows) AS f FROM (SELECT unnest(records) AS r FROM {_AZURE_JSON}))))")
CASES = [
    Case("aws-vpc-text", "aws-vpc", "log", vpc, (VPC_HEADER,), scan=f"read_csv(?, delim=' ', header=true, {_CSV})"),
    Case("aws-vpc-gzip", "aws-vpc", "log.gz", vpc, scan=f"read_csv(?, delim=' ', header=true, {_CSV})",
         derived="aws-vpc-text"),
    Case("aws-vpc-parquet", "aws-vpc", "parquet", vpc, scan="read_parquet(?)", derived="aws-vpc-text"),
    Case("zeek-tsv", "zeek", "log", zeek_tsv,
         ("#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn",
          "#open\t2026-01-01-00-00-00", "#fields\t" + "\t".join(ZEEK_FIELDS),
          "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool"
          "\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]"), ("#close\t2026-01-08-00-00-00",),
         scan=f"read_csv(?, delim='\\t', header=false, comment='#', quote='', escape='', {_CSV})"),
    Case("zeek-json", "zeek", "ndjson", zeek_json, scan=_JSON),
    Case("nfdump", "nfdump", "csv", nfdump, (NFDUMP_HEADER,),
         ("Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", "1,1,1,0,0,0"),
         scan=f"read_csv(?, header=true, {_CSV})"),
    Case("hubble", "hubble", "jsonl", hubble, scan=_JSON),
    Case("gcp", "gcp", "ndjson", gcp, scan=_JSON),
    Case("calico-json", "calico", "json", calico_json, scan=_JSON),
    Case("calico-legacy", "calico", "txt", calico_legacy, (CALICO_LEGACY_HEADER,),
         scan=f"read_csv(?, delim=' ', header=true, quote='', escape='', {_CSV})"),
    Case("envoy-text", "envoy", "log", envoy_text,
         scan=f"read_csv(?, delim=' ', quote='\"', escape='', header=false, {_CSV})"),
    Case("envoy-json", "envoy", "json", envoy_json, scan=_JSON),
    Case("csv", "csv", "csv", generic_csv, (GENERIC_HEADER,), scan=f"read_csv(?, header=true, {_CSV})"),
    # Azure: the blob is one JSON document, so maximum_object_size must hold all of it, and count(*)
    # over read_json alone would count one row (the document) without reading a tuple; unnesting the
    # records down to their flowTuples makes DuckDB materialise every tuple string, what a reader reads.
    Case("azure-nsg-v2", "azure", "json", _no_line, writer=azure_blob(v4=False), scan=_AZURE_NSG),
    Case("azure-vnet-v4", "azure", "json", _no_line, writer=azure_blob(v4=True), scan=_AZURE_VNET),
]
BY_NAME = {c.name: c for c in CASES}


def data_path(case: Case, lines: int) -> Path:
    return DATA / f"{case.name}-{lines}.{case.ext}"


def generate(case: Case, lines: int) -> Path:
    path = data_path(case, lines)
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    if case.derived == "aws-vpc-text" and case.ext == "log.gz":
        with generate(BY_NAME["aws-vpc-text"], lines).open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    elif case.derived == "aws-vpc-text":
        import duckdb

        text = generate(BY_NAME["aws-vpc-text"], lines)
        # AWS's Parquet delivery: INT_32 version/ports/protocol, INT_64 counters and times, STRING
        # otherwise (AWS VPC User Guide, "Available fields"); columns named with underscores.
        ints = {"version": "INTEGER", "srcport": "INTEGER", "dstport": "INTEGER", "protocol": "INTEGER",
                "packets": "BIGINT", "bytes": "BIGINT", "start": "BIGINT", "end": "BIGINT"}
        fields = VPC_HEADER.split()
        cols = ", ".join(f"'{f}': 'VARCHAR'" for f in fields)
        sel = ", ".join(f'CAST("{f}" AS {ints.get(f, "VARCHAR")}) AS "{f.replace("-", "_")}"' for f in fields)
        duckdb.connect().execute(
            f"COPY (SELECT {sel} FROM read_csv('{text}', delim=' ', header=true, nullstr='-', quote='', escape='', "
            f"auto_detect=false, columns={{{cols}}})) TO '{tmp}' (FORMAT parquet, COMPRESSION gzip)")
    elif case.writer is not None:
        case.writer(tmp, lines)
    else:
        rng = random.Random(f"{SEED}-{case.name}")
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for h in case.header:
                fh.write(h + "\n")
            buf = []
            for i in range(lines):
                buf.append(case.line(rng, draw(rng)))
                if len(buf) == 10_000 or i == lines - 1:
                    fh.write("\n".join(buf) + "\n")
                    buf = []
            for f in case.footer:
                fh.write(f + "\n")
    tmp.rename(path)
    return path


# -- stages (run in a child process) ------------------------------------------------------------

def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): Linux carries getrusage's ru_maxrss across fork+exec, so a
    child of a parent that generated the data would report the parent's peak; VmHWM belongs to the
    address space, which exec replaces."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stage_scan(case: Case, path: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    # Parquet: count(*) alone is answered from the footer, and min/max from the row-group statistics;
    # hashing every value of every column is the scan.
    query = (f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {case.scan}" if case.ext == "parquet"
             else f"SELECT count(*) FROM {case.scan}")
    t0 = time.perf_counter()
    row = con.execute(query, [str(path)]).fetchone()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": int(row[0]) if row else 0}


def stage_microseg(case: Case, path: Path) -> dict[str, Any]:
    from microseg.engine.store import FlowStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=DATA))
    try:
        t0 = time.perf_counter()
        with FlowStore(tmp / "flows.duckdb") as store:
            report = store.ingest([path], fmt=case.fmt, bad_threshold=1.0)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "lines": report.lines, "records": report.records, "bad": report.bad,
                "skipped": sum(report.skipped.values())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STAGES = {"scan": stage_scan, "microseg": stage_microseg}


def _run_stage(stage: str, case: Case, path: Path) -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH")]))
    proc = psutil.Popen([sys.executable, __file__, "--stage", stage, "--case", case.name, "--data", str(path)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    polled = [0]

    def poll() -> None:  # psutil's view from outside, a cross-check of the child's own VmHWM
        while proc.poll() is None:
            try:
                polled[0] = max(polled[0], proc.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} {case.name} failed:\n{err}")
    result = dict(json.loads(out.strip().splitlines()[-1]))
    result["polled_rss_mb"] = round(polled[0] / 2**20)
    return result


def machine() -> dict[str, Any]:
    import duckdb

    return machine_facts(duckdb=duckdb.__version__) | {
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians are reported")
    ap.add_argument("--formats", default=",".join(BY_NAME), help="comma-separated rows (default: all)")
    ap.add_argument("--out", default="bench_formats", help="results file name (benchmarks/results/NAME.json/.md)")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        stage_result = STAGES[args.stage](BY_NAME[args.case], args.data)
        stage_result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(stage_result))
        return

    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown formats {unknown}; known: {', '.join(BY_NAME)}")
    info = machine()
    paths: dict[str, Path] = {}
    for name in names:
        t0 = time.perf_counter()
        paths[name] = generate(BY_NAME[name], args.lines)
        gen = time.perf_counter() - t0
        if gen > 0.5:
            print(f"{name}: generated {paths[name].name} ({paths[name].stat().st_size / 1e6:.0f} MB) in {gen:.1f}s",
                  flush=True)
    # Every round runs every format, scan then microseg: the VM's speed drifts over minutes (the same ingest has
    # taken 0.9 s and 1.4 s ten minutes apart), so the runs compared with each other - a format's scan and
    # ingest, VPC text and Parquet - are seconds apart in each round, and each comparison is a median of
    # per-round ratios.
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"scan": [], "microseg": []} for n in names}
    for _ in range(args.repeat):
        for name in names:
            for stage in ("scan", "microseg"):
                runs[name][stage].append(_run_stage(stage, BY_NAME[name], paths[name]))
    rows = []
    for name in names:
        case, path = BY_NAME[name], paths[name]
        ratios = [m["seconds"] / s["seconds"]
                  for m, s in zip(runs[name]["microseg"], runs[name]["scan"], strict=True)]
        scan_s = statistics.median(r["seconds"] for r in runs[name]["scan"])
        ms_s = statistics.median(r["seconds"] for r in runs[name]["microseg"])
        last = runs[name]["microseg"][-1]
        size = path.stat().st_size
        row = {"format": name, "reader": case.fmt, "file_mb": round(size / 1e6, 1), "lines": last["lines"],
               "records": last["records"], "bad": last["bad"], "skipped": last["skipped"],
               "scan_seconds": round(scan_s, 3), "microseg_seconds": round(ms_s, 3),
               "lines_per_s": round(last["lines"] / ms_s), "mb_per_s": round(size / 1e6 / ms_s, 1),
               "ratio": round(statistics.median(ratios), 2), "ratios": [round(r, 2) for r in ratios],
               "scan_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs[name]["scan"])),
               "microseg_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs[name]["microseg"])),
               "microseg_polled_rss_mb": max(r["polled_rss_mb"] for r in runs[name]["microseg"])}
        row["target_met"] = row["ratio"] <= TARGET_RATIO
        rows.append(row)
        print(f"{name:16s} scan {scan_s:7.2f}s  microseg {ms_s:7.2f}s  ratio {row['ratio']:6.2f}  "
              f"{row['lines_per_s']:>9,} lines/s  {row['microseg_peak_rss_mb']:>5} MB", flush=True)
    result: dict[str, Any] = {"lines_requested": args.lines, "repeat": args.repeat, "machine": info, "rows": rows,
                              "targets": {"text_ratio_max": TARGET_RATIO,
                                          "parquet_speedup_min": TARGET_PARQUET_SPEEDUP}}
    if "aws-vpc-text" in runs and "aws-vpc-parquet" in runs:
        speedups = [t["seconds"] / q["seconds"] for t, q in zip(runs["aws-vpc-text"]["microseg"],
                                                                 runs["aws-vpc-parquet"]["microseg"], strict=True)]
        result["parquet_speedup_vs_text"] = round(statistics.median(speedups), 2)
        result["parquet_speedups"] = [round(s, 2) for s in speedups]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = markdown(result)
    (out_dir / f"{args.out}.md").write_text(md, encoding="utf-8")
    print(md)


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"# Per-format ingest: {r['lines_requested']:,} generated lines per format (median of {r['repeat']})", "",
           f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM; Python {m['python']}, DuckDB "
           f"{m['duckdb']}; load average at start {m['loadavg_at_start']}", "",
           "| format | reader | MB | lines | bad | DuckDB scan s | microseg s | lines/s | MB/s | ratio | "
           "peak RSS MB | target <= 3x |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for x in r["rows"]:
        target = "yes" if x["target_met"] else "NO"
        if x["format"] == "aws-vpc-parquet":
            target = "n/a (binary)"
        out.append(f"| {x['format']} | {x['reader']} | {x['file_mb']} | {x['lines']:,} | {x['bad']} | "
                   f"{x['scan_seconds']} | {x['microseg_seconds']} | {x['lines_per_s']:,} | {x['mb_per_s']} | "
                   f"{x['ratio']} | {x['microseg_peak_rss_mb']} | {target} |")
    if "parquet_speedup_vs_text" in r:
        s = r["parquet_speedup_vs_text"]
        rounds = r.get("parquet_speedups", [])
        out += ["", f"VPC Parquet vs plain text (microseg ingest): **{s}x** faster, median of the rounds "
                f"({', '.join(f'{x}x' for x in rounds)}) (target >= {TARGET_PARQUET_SPEEDUP}x: "
                f"{'met' if s >= TARGET_PARQUET_SPEEDUP else 'NOT met'})"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
