"""The bundled "shop" example: committed data = a fresh generation, and the planted facts hold.

The facts are checked straight from the files with the standard library and PyYAML, never through
microseg's readers: the example is the ground truth those readers are measured against. The exact
values asserted here are the ones src/microseg/examples/shop/README.md documents.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from microseg.examples import example_dir

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "src" / "microseg" / "examples" / "shop"
GENERATOR = REPO / "scripts" / "gen_example.py"

EPHEMERAL = range(32768, 61000)
VPC_HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
              "action log-status vpc-id subnet-id instance-id tcp-flags type flow-direction")
DAYS = [f"2026-11-0{d}" for d in range(2, 9)]
SNAPSHOTS = ("pods-20261102T023000Z.json", "pods-20261105T023000Z.json", "pods-20261108T023000Z.json")

# Fact 1: IP reuse
REUSED_IP = "10.244.34.205"
CARTS_OLD_POD = "carts-rxvqgztdmp-v5kcr"
CARTS_NEW_POD, CARTS_NEW_IP = "carts-fpwtgrp5pn-bqcnr", "10.244.62.112"
CATALOGUE_NEW_POD = "catalogue-5zrvmt4pqf-ndnm5"
CARTS_OLD_DELETED = datetime(2026, 11, 4, 14, 12, 40, tzinfo=UTC)
SWITCH = datetime(2026, 11, 4, 14, 20, 5, tzinfo=UTC)
# Fact 2: lateral movement
FRONTEND_POD, FRONTEND_IP = "frontend-nsz6k8z75j-4585z", "10.244.38.45"
POSTGRES_IP, MODEL_SERVER_IP, BASTION_IP = "10.244.40.255", "10.244.33.98", "10.20.0.10"
SSH_SWEPT = {"10.244.62.112": "carts", "10.244.18.190": "orders", "10.244.42.124": "payment",
             "10.244.40.204": "queue-master"}
ATTACK_FROM = datetime(2026, 11, 7, 3, 12, tzinfo=UTC)
ATTACK_TO = datetime(2026, 11, 7, 3, 19, tzinfo=UTC)
# Fact 3: dev -> prod
DEV_FRONTEND_IPS = {"10.244.60.168", "10.244.27.136"}
ORDERS_IPS = {"10.244.18.190", "10.244.55.7"}
# Fact 4: the rare edge
REINDEX_POD, REINDEX_IP, VECTOR_STORE_IP = "embedding-reindex-29897400-kjprq", "10.244.18.19", "10.244.60.143"
UNKNOWN_HOST = "10.99.4.17"


# -- readers (deliberately independent of microseg) ------------------------------------------------


def when(epoch: str) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


@cache
def vpc(day: str) -> tuple[dict[str, str], ...]:
    with gzip.open(SHOP / "flows" / f"vpc-{day}.log.gz", "rt") as f:
        header = f.readline().split()
        return tuple(dict(zip(header, line.split(), strict=True)) for line in f)


def all_vpc() -> list[dict[str, str]]:
    return [r for d in DAYS for r in vpc(d)]


def traffic() -> list[dict[str, str]]:
    return [r for r in all_vpc() if r["log-status"] == "OK"]


@cache
def snapshot(name: str) -> tuple[dict[str, Any], ...]:
    doc = json.loads((SHOP / "snapshots" / name).read_text())
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    return tuple(doc["items"])


def pod(name: str, snap: str) -> dict[str, Any] | None:
    return next((p for p in snapshot(snap) if p["metadata"]["name"] == name), None)


def owner_workload(p: dict[str, Any]) -> str:
    """namespace/app from the pod's labels (every pod of the example carries app or k8s-app)."""
    labels = p["metadata"]["labels"]
    return f'{p["metadata"]["namespace"]}/{labels.get("app") or labels.get("k8s-app")}'


@cache
def hubble() -> tuple[dict[str, Any], ...]:
    lines = (SHOP / "flows" / "hubble-2026-11-07.jsonl").read_text().splitlines()
    return tuple(json.loads(line) for line in lines)


# -- the data is what the generator writes ---------------------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    """File contents, .gz files decompressed: another zlib build may compress the same bytes differently,
    and what must not drift is the data (the header is checked on its own below)."""
    def content(p: Path) -> bytes:
        return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()

    return {p.relative_to(root).as_posix(): content(p) for p in sorted(root.rglob("*")) if p.is_file()}


def generate(out: Path) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True)
    return tree(out)


def test_example_dir_points_at_the_committed_data() -> None:
    assert example_dir() == SHOP
    assert example_dir("shop") == SHOP
    with pytest.raises(FileNotFoundError):
        example_dir("no-such-example")


def test_committed_data_equals_a_fresh_generation(tmp_path: Path) -> None:
    fresh = generate(tmp_path / "shop")
    committed = tree(SHOP)
    assert sorted(committed) == sorted(fresh), "files differ: rerun python scripts/gen_example.py"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"stale committed files (rerun python scripts/gen_example.py): {changed}"


def test_generation_is_reproducible(tmp_path: Path) -> None:
    assert generate(tmp_path / "a") == generate(tmp_path / "b")


# -- formats -----------------------------------------------------------------------------------------


def test_files_are_small_and_gzip_headers_fixed() -> None:
    assert sum(p.stat().st_size for p in SHOP.rglob("*") if p.is_file()) < 2_000_000  # bytes on disk
    for day in DAYS:
        raw = (SHOP / "flows" / f"vpc-{day}.log.gz").read_bytes()
        assert raw[:3] == b"\x1f\x8b\x08"
        assert raw[3] == 0, "no FNAME/FEXTRA in the gzip header"
        assert raw[4:8] == b"\0\0\0\0", "gzip mtime must be 0"


def test_vpc_records_are_well_formed() -> None:
    for day in DAYS:
        with gzip.open(SHOP / "flows" / f"vpc-{day}.log.gz", "rt") as f:
            assert f.readline().rstrip("\n") == VPC_HEADER
        records = vpc(day)
        assert 1500 < len(records) < 5000
        nodata = [r for r in records if r["log-status"] == "NODATA"]
        assert nodata and all(r["srcaddr"] == "-" and r["action"] == "-" for r in nodata)
        for r in records:
            assert r["version"] == "5" and r["account-id"] == "111122223333"
            assert when(r["start"]).strftime("%Y-%m-%d") == day
            if r["log-status"] == "NODATA":
                continue
            assert r["action"] in ("ACCEPT", "REJECT") and r["flow-direction"] in ("ingress", "egress")
            assert int(r["start"]) <= int(r["end"])
            s, d = int(r["srcport"]), int(r["dstport"])
            if r["protocol"] == "1":
                assert s == d == 0
            else:  # exactly one side is a client's ephemeral port
                assert (s in EPHEMERAL) != (d in EPHEMERAL), r


def test_every_request_has_its_reply_except_rejects() -> None:
    recs = {(r["srcaddr"], r["srcport"], r["dstaddr"], r["dstport"], r["protocol"], r["start"])
            for r in traffic()}
    for r in traffic():
        reply = (r["dstaddr"], r["dstport"], r["srcaddr"], r["srcport"], r["protocol"], r["start"])
        if r["action"] == "REJECT":
            assert reply not in recs
        else:
            assert reply in recs, r


def test_manifests_parse_and_name_every_workload() -> None:
    kinds: dict[str, set[str]] = defaultdict(set)
    for f in sorted((SHOP / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            kinds[doc["kind"]].add(f'{doc["metadata"].get("namespace", "")}/{doc["metadata"]["name"]}')
    assert {"shop/postgres", "shop/rabbitmq", "shop/catalogue-db", "ai/vector-store"} <= kinds["StatefulSet"]
    assert "ai/embedding-reindex" in kinds["CronJob"] and "ops/node-exporter" in kinds["DaemonSet"]
    assert "kube-system/kube-dns" in kinds["Service"] and "shop/shop" in kinds["Ingress"]
    assert {"shop", "shop-dev", "ai", "ops", "kube-system", "ingress-nginx"} == {n.strip("/") for n in
                                                                                kinds["Namespace"]}


def test_every_pod_resolves_through_coredns() -> None:
    pods = {p["metadata"]["uid"]: p for s in SNAPSHOTS for p in snapshot(s)}
    coredns = {p["status"]["podIP"] for p in pods.values() if p["metadata"]["labels"].get("k8s-app") == "kube-dns"}
    assert len(coredns) == 2
    asked = {r["srcaddr"] for r in traffic() if r["dstaddr"] in coredns and r["dstport"] == "53"
             and r["protocol"] == "17"}
    for p in pods.values():
        if p["spec"].get("hostNetwork") or p["status"]["podIP"] in coredns:
            continue
        assert p["status"]["podIP"] in asked, p["metadata"]["name"]


# -- planted fact 1: pod churn with IP reuse ---------------------------------------------------------


def test_fact1_ip_reuse_in_the_snapshots() -> None:
    old = pod(CARTS_OLD_POD, SNAPSHOTS[0])
    assert old is not None and old["status"]["podIP"] == REUSED_IP and owner_workload(old) == "shop/carts"
    assert old["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert pod(CARTS_OLD_POD, SNAPSHOTS[1]) is None
    for snap in SNAPSHOTS[1:]:
        new = pod(CATALOGUE_NEW_POD, snap)
        assert new is not None and new["status"]["podIP"] == REUSED_IP
        assert owner_workload(new) == "shop/catalogue"
        assert new["metadata"]["creationTimestamp"] == "2026-11-04T14:20:05Z"
        carts = pod(CARTS_NEW_POD, snap)
        assert carts is not None and carts["status"]["podIP"] == CARTS_NEW_IP
    holders = {(s, p["metadata"]["name"]) for s in SNAPSHOTS for p in snapshot(s)
               if p["status"]["podIP"] == REUSED_IP}
    assert holders == {(SNAPSHOTS[0], CARTS_OLD_POD), (SNAPSHOTS[1], CATALOGUE_NEW_POD),
                       (SNAPSHOTS[2], CATALOGUE_NEW_POD)}


def test_fact1_ip_reuse_in_the_flows() -> None:
    served = [r for r in traffic() if r["srcaddr"] == REUSED_IP and int(r["srcport"]) not in EPHEMERAL]
    before = {r["srcport"] for r in served if when(r["start"]) < CARTS_OLD_DELETED}
    after = {r["srcport"] for r in served if when(r["start"]) >= SWITCH}
    assert before == {"8080"} and after == {"80"}
    assert not [r for r in traffic() if REUSED_IP in (r["srcaddr"], r["dstaddr"])
                and CARTS_OLD_DELETED <= when(r["start"]) < SWITCH]
    # on day 3 itself both owners are seen
    day3 = [r for r in served if when(r["start"]).day == 4]
    assert {r["srcport"] for r in day3} == {"8080", "80"}
    # as a client: carts talks to redis before, catalogue to catalogue-db after
    dst_ports = {(when(r["start"]) >= SWITCH, r["dstport"]) for r in traffic()
                 if r["srcaddr"] == REUSED_IP and int(r["dstport"]) not in EPHEMERAL}
    assert (False, "6379") in dst_ports and (True, "3306") in dst_ports
    assert (True, "6379") not in dst_ports and (False, "3306") not in dst_ports


# -- planted fact 2: lateral movement from the compromised frontend -----------------------------------


def test_fact2_lateral_movement() -> None:
    fe = pod(FRONTEND_POD, SNAPSHOTS[2])
    assert fe is not None and fe["status"]["podIP"] == FRONTEND_IP and owner_workload(fe) == "shop/frontend"
    requests = [r for r in traffic() if r["srcaddr"] == FRONTEND_IP and int(r["srcport"]) in EPHEMERAL]
    odd = [r for r in requests if r["dstport"] in ("22", "5432", "8265")]
    assert odd and all(ATTACK_FROM <= when(r["start"]) < ATTACK_TO for r in odd)
    by = defaultdict(list)
    for r in odd:
        by[(r["dstaddr"], r["dstport"])].append(r)
    assert set(by) == {(ip, "22") for ip in SSH_SWEPT} | {(BASTION_IP, "22"), (POSTGRES_IP, "5432"),
                                                          (MODEL_SERVER_IP, "8265")}
    # postgres: accepted (flat network), 8 attempts, each answered
    pg = by[(POSTGRES_IP, "5432")]
    assert len(pg) == 8 and all(r["action"] == "ACCEPT" for r in pg)
    # SSH on pods: accepted, answered with RST (tcp-flags 4); on the bastion: REJECT and no reply
    for ip in SSH_SWEPT:
        (req,) = by[(ip, "22")]
        assert req["action"] == "ACCEPT" and req["tcp-flags"] == "2"
        (rep,) = [r for r in traffic() if r["srcaddr"] == ip and r["srcport"] == "22"]
        assert rep["dstaddr"] == FRONTEND_IP and rep["tcp-flags"] == "4"
    (b,) = by[(BASTION_IP, "22")]
    assert b["action"] == "REJECT" and b["flow-direction"] == "ingress"
    assert not [r for r in traffic() if r["srcaddr"] == BASTION_IP and r["dstaddr"] == FRONTEND_IP]
    assert len(by[(MODEL_SERVER_IP, "8265")]) == 2
    # nobody else ever touches the Ray dashboard, and the VPN is the bastion's only other SSH client
    assert {r["srcaddr"] for r in traffic() if r["dstport"] == "8265"} == {FRONTEND_IP}
    ssh_clients = {r["srcaddr"] for r in traffic() if r["dstaddr"] == BASTION_IP and r["dstport"] == "22"}
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.50.0.0/16") for a in ssh_clients - {FRONTEND_IP})
    # postgres' legitimate clients: orders, user (pods) and backup-1
    pg_clients = {r["srcaddr"] for r in traffic() if r["dstaddr"] == POSTGRES_IP and r["dstport"] == "5432"}
    names = {owner_workload(p) for s in SNAPSHOTS for p in snapshot(s) if p["status"]["podIP"] in pg_clients}
    assert names - {"shop/frontend"} == {"shop/orders", "shop/user"}
    assert "10.20.2.30" in pg_clients


def test_fact2_attack_is_in_hubble_with_workload_names() -> None:
    hits = [e["flow"] for e in hubble() if e["flow"]["l4"].get("TCP", {}).get("destination_port") == 8265]
    assert len(hits) == 2
    for f in hits:
        assert f["is_reply"] is False and f["verdict"] == "FORWARDED"
        assert f["IP"] == {"source": FRONTEND_IP, "destination": MODEL_SERVER_IP, "ipVersion": "IPv4"}
        assert f["source"]["pod_name"] == FRONTEND_POD and f["source"]["namespace"] == "shop"
        assert f["source"]["workloads"] == [{"kind": "Deployment", "name": "frontend"}]
        assert f["destination"]["workloads"] == [{"kind": "Deployment", "name": "model-server"}]


# -- planted fact 3: dev reaches prod ------------------------------------------------------------------


def test_fact3_dev_calls_prod_orders() -> None:
    snaps = [p for s in SNAPSHOTS for p in snapshot(s)]
    dev_fe = {p["status"]["podIP"] for p in snaps if owner_workload(p) == "shop-dev/frontend"}
    orders = {p["status"]["podIP"] for p in snaps if owner_workload(p) == "shop/orders"}
    assert dev_fe == DEV_FRONTEND_IPS and orders == ORDERS_IPS
    hits = [r for r in traffic() if r["srcaddr"] in dev_fe and r["dstaddr"] in orders and r["dstport"] == "8080"]
    assert len(hits) >= 10 and {r["srcaddr"] for r in hits} == DEV_FRONTEND_IPS
    docs = list(yaml.safe_load_all((SHOP / "k8s" / "shop-dev.yaml").read_text()))
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["env"] == "dev"
    fe = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "frontend")
    env = {e["name"]: e["value"] for e in fe["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORDERS_URL"] == "http://orders.shop.svc.cluster.local"


# -- planted fact 4: a rare but legitimate edge ------------------------------------------------------


def test_fact4_weekly_reindex_seen_on_one_day() -> None:
    running = pod(REINDEX_POD, SNAPSHOTS[1])
    done = pod(REINDEX_POD, SNAPSHOTS[2])
    assert running is not None and running["status"]["phase"] == "Running"
    assert done is not None and done["status"]["phase"] == "Succeeded" and done["status"]["podIP"] == REINDEX_IP
    assert running["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod(REINDEX_POD, SNAPSHOTS[0]) is None
    to_vs = [r for r in traffic() if r["srcaddr"] == REINDEX_IP and r["dstaddr"] == VECTOR_STORE_IP
             and r["dstport"] == "6333"]
    assert to_vs and {when(r["start"]).date().isoformat() for r in to_vs} == {"2026-11-05"}
    involving = [r for r in traffic() if REINDEX_IP in (r["srcaddr"], r["dstaddr"])]
    assert {when(r["start"]).date().isoformat() for r in involving} == {"2026-11-05"}
    finished = datetime(2026, 11, 5, 2, 47, 12, tzinfo=UTC)
    assert all(datetime(2026, 11, 5, 2, 0, 3, tzinfo=UTC) <= when(r["start"]) < finished for r in involving)
    cron = next(d for d in yaml.safe_load_all((SHOP / "k8s" / "ai.yaml").read_text()) if d["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "0 2 * * 4"
    # by contrast the nightly backup is seen every day
    backup_days = {when(r["start"]).date() for r in traffic() if r["srcaddr"] == "10.20.2.30"
                   and r["dstaddr"] == POSTGRES_IP}
    assert len(backup_days) == 7


# -- the rest of the documented environment -----------------------------------------------------------


def test_unknown_address_is_explained_by_nothing() -> None:
    seen = [r for r in traffic() if r["srcaddr"] == UNKNOWN_HOST]
    assert seen and {r["dstaddr"] for r in seen} <= ORDERS_IPS and {r["dstport"] for r in seen} == {"8080"}
    inv = yaml.safe_load((SHOP / "inventory" / "hosts.yaml").read_text())
    nets = [ipaddress.ip_network(a) for h in inv["hosts"] for a in h["addresses"]]
    nets += [ipaddress.ip_network(c) for e in inv["external"] for c in e["cidrs"]]
    assert not any(ipaddress.ip_address(UNKNOWN_HOST) in n for n in nets)
    assert all(p["status"]["podIP"] != UNKNOWN_HOST for s in SNAPSHOTS for p in snapshot(s))


def test_external_peers_and_internet_clients() -> None:
    psp = ipaddress.ip_network("198.51.100.0/24")
    to_psp = [r for r in traffic() if ipaddress.ip_address(r["dstaddr"]) in psp]
    assert to_psp and {r["dstport"] for r in to_psp} == {"443"}
    assert all(r["flow-direction"] == "egress" for r in to_psp)
    payment = {p["status"]["podIP"] for s in SNAPSHOTS for p in snapshot(s) if owner_workload(p) == "shop/payment"}
    assert {r["srcaddr"] for r in to_psp} == payment
    ingress = {p["status"]["podIP"] for s in SNAPSHOTS for p in snapshot(s)
               if p["metadata"]["namespace"] == "ingress-nginx"}
    rfc1918 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    public = {r["srcaddr"] for r in traffic() if ipaddress.ip_address(r["srcaddr"]) not in psp
              and not any(ipaddress.ip_address(r["srcaddr"]) in n for n in rfc1918)}
    docs = [ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("192.0.2.0/24")]
    assert public and all(any(ipaddress.ip_address(a) in n for n in docs) for a in public)
    assert {r["dstaddr"] for r in traffic() if r["srcaddr"] in public} <= ingress


def test_hubble_file_matches_the_vpc_records() -> None:
    events = hubble()
    assert events and all(set(e) == {"flow", "node_name", "time"} for e in events)
    vpc_day = {(r["srcaddr"], r["srcport"], r["dstaddr"], r["dstport"], r["start"]) for r in vpc("2026-11-07")
               if r["log-status"] == "OK"}
    for e in events:
        f = e["flow"]
        assert f["time"].startswith("2026-11-07T") and "ai" in (f["source"]["namespace"],
                                                                 f["destination"]["namespace"])
        (proto, l4), = f["l4"].items()
        t = datetime.strptime(f["time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        key = (f["IP"]["source"], str(l4["source_port"]), f["IP"]["destination"], str(l4["destination_port"]),
               str(int(t.timestamp())))
        assert key in vpc_day, f
    assert {e["flow"]["is_reply"] for e in events} == {True, False}


def test_readme_documents_the_planted_facts() -> None:
    text = (SHOP / "README.md").read_text()
    for needle in (REUSED_IP, CARTS_OLD_POD, CATALOGUE_NEW_POD, CARTS_NEW_IP, "2026-11-04 14:20:05",
                   "2026-11-04 14:12:40", FRONTEND_POD, FRONTEND_IP, POSTGRES_IP, MODEL_SERVER_IP, BASTION_IP,
                   *DEV_FRONTEND_IPS, REINDEX_POD, REINDEX_IP, "0 2 * * 4", UNKNOWN_HOST):
        assert needle in text, needle
