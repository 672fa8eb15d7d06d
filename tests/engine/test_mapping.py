"""Mapping stored flows to edges: resolution, orientation, aggregation, coverage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microseg.engine.mapping import (
    INTERNET,
    MappingResult,
    classify_addresses,
    map_flows,
    prepare_bindings,
)
from microseg.engine.store import FlowStore
from microseg.ir.model import (
    AddressBinding,
    Edge,
    Inventory,
    ListenPort,
    Protocol,
    Workload,
    WorkloadKind,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # Monday 00:00 UTC
HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")

WEB, APP, DB, GRPC = "10.0.0.10", "10.0.0.20", "10.0.0.30", "10.0.0.40"
FRONTEND, REUSED = "10.0.1.9", "10.0.1.5"
SWITCH_OUT, SWITCH_IN = T0 + timedelta(hours=12), T0 + timedelta(hours=13)


def host(name: str, *ports: int) -> Workload:
    return Workload(name=name, kind=WorkloadKind.HOST, ports=tuple(ListenPort(port=p) for p in ports))


def pod(name: str, *ports: int) -> Workload:
    ns, _ = name.split("/")
    return Workload(name=name, kind=WorkloadKind.KUBERNETES, namespace=ns,
                    ports=tuple(ListenPort(port=p) for p in ports))


def external(name: str, addresses: tuple[str, ...], excepts: tuple[str, ...] = ()) -> Workload:
    return Workload(name=name, kind=WorkloadKind.EXTERNAL, addresses=addresses, except_addresses=excepts)


INVENTORY = Inventory(
    workloads=(host("web"), host("app", 8080), host("db", 5432), host("grpc", 50051),
               pod("shop/frontend"), pod("shop/carts", 8080), pod("shop/catalogue", 80),
               external("external:psp", ("198.51.100.0/24",)),
               external("external:cloud", ("52.0.0.0/8",), ("52.10.0.0/16",)),
               external("external:s3", ("52.95.0.0/16",))),
    bindings=(AddressBinding(ip=WEB, workload="web"), AddressBinding(ip=APP, workload="app"),
              AddressBinding(ip=DB, workload="db"), AddressBinding(ip=GRPC, workload="grpc"),
              AddressBinding(ip=FRONTEND, workload="shop/frontend"),
              # the pod address is reused: carts until 12:00, catalogue from 13:00
              AddressBinding(ip=REUSED, workload="shop/carts", valid_to=SWITCH_OUT),
              AddressBinding(ip=REUSED, workload="shop/catalogue", valid_from=SWITCH_IN)),
)


def epoch(hours: float) -> int:
    return int((T0 + timedelta(hours=hours)).timestamp())


def rec(src: str, dst: str, sp: int, dp: int, hours: float = 1, *, proto: int = 6, action: str = "ACCEPT",
        nbytes: int = 100) -> str:
    t = epoch(hours)
    return f"2 123456789010 eni-1 {src} {dst} {sp} {dp} {proto} 1 {nbytes} {t} {t + 30} {action} OK"


def conn(client: str, server: str, cport: int, sport: int, hours: float = 1, *, req: int = 100,
         rep: int = 500) -> list[str]:
    """A connection as VPC logs it on both ENIs: the request and the reply."""
    return [rec(client, server, cport, sport, hours, nbytes=req), rec(server, client, sport, cport, hours, nbytes=rep)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore(tmp_path / "out" / "flows.duckdb") as s:
        yield s


def run(store: FlowStore, tmp_path: Path, lines: list[str], inventory: Inventory = INVENTORY) -> MappingResult:
    path = tmp_path / f"vpc-{len(list(tmp_path.glob('vpc-*')))}.log"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    report = store.ingest([path])
    assert report.bad == 0
    return map_flows(store, inventory)


def edge_map(result: MappingResult) -> dict[tuple[str, str, str, int], Edge]:
    return {e.key: e for e in result.edges}


def at(hours: float, seconds: int = 0) -> datetime:
    return T0 + timedelta(hours=hours, seconds=seconds)


def test_request_and_reply_are_one_edge_on_the_server_port(store: FlowStore, tmp_path: Path) -> None:
    result = run(store, tmp_path, conn(WEB, APP, 40001, 8080, 1) + conn(WEB, APP, 40002, 8080, 26))
    assert result.edges == (
        Edge(source="web", destination="app", protocol=Protocol.TCP, port=8080, flows=2, bytes=1200, denied_flows=0,
             first_seen=at(1), last_seen=at(26, 30), days=2, hours=(1, 2)),
    )
    c = result.coverage
    assert (c.records, c.resolved_records, c.edge_records, c.unoriented_records, c.unresolved_records) == (
        4, 4, 4, 0, 0)
    assert (c.bytes, c.resolved_bytes, c.resolved_share) == (1200, 1200, 1.0)


def test_only_replies_seen_count_as_flows(store: FlowStore, tmp_path: Path) -> None:
    result = run(store, tmp_path, [rec(DB, WEB, 5432, 40010), rec(DB, WEB, 5432, 40011)])
    (e,) = result.edges
    assert (e.source, e.destination, e.port, e.flows, e.bytes) == ("web", "db", 5432, 2, 200)


def test_orientation_rules(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        *conn(WEB, GRPC, 40000, 50051),  # both ports high: the declared listening port decides
        *conn(WEB, DB, 700, 5432),  # a privileged client port: the declared 5432 still wins
        rec(WEB, APP, 1500, 443, 2),  # nothing declared: well-known 443 against 1500
        rec(WEB, APP, 20000, 9000, 3),  # below the ephemeral range against... the lower port
        rec(APP, WEB, 9100, 41000, 4),  # below the ephemeral range against inside it: 9100 serves
        rec(WEB, APP, 0, 0, 5, proto=1),  # ICMP: as logged, port 0
        rec(APP, WEB, 0, 0, 5, proto=1),
    ]
    got = {(e.source, e.destination, e.protocol.value, e.port, e.flows) for e in run(store, tmp_path, lines).edges}
    assert got == {("web", "grpc", "TCP", 50051, 1), ("web", "db", "TCP", 5432, 1), ("web", "app", "TCP", 443, 1),
                   ("web", "app", "TCP", 9000, 1), ("web", "app", "TCP", 9100, 1), ("web", "app", "ICMP", 0, 1),
                   ("app", "web", "ICMP", 0, 1)}


def test_tcp_flags_and_is_reply_beat_port_heuristics(store: FlowStore, tmp_path: Path) -> None:
    # A v3 custom format with tcp-flags: the SYN-ACK (18) comes from app:8080 to web:3000, so app
    # serves even though 3000 is the lower port.
    v3 = tmp_path / "v3.log"
    v3.write_text("srcaddr dstaddr srcport dstport protocol action tcp-flags start\n"
                  f"{APP} {WEB} 8080 3000 6 ACCEPT 18 {epoch(1)}\n"
                  f"{WEB} {APP} 3000 8080 6 ACCEPT 2 {epoch(1)}\n")
    # Hubble says this is a request, from app:9000 to web:9001: web serves on 9001.
    hubble = tmp_path / "h.jsonl"
    hubble.write_text(json.dumps({"flow": {
        "time": "2026-03-02T01:00:00Z", "verdict": "FORWARDED", "IP": {"source": APP, "destination": WEB},
        "l4": {"TCP": {"source_port": 9000, "destination_port": 9001}}, "is_reply": False}}) + "\n")
    store.ingest([v3, hubble])
    got = {(e.source, e.destination, e.port, e.flows) for e in map_flows(store, INVENTORY).edges}
    assert got == {("web", "app", 8080, 1), ("app", "web", 9001, 1)}


def test_ephemeral_only_records_never_become_edges(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        *conn(WEB, APP, 40000, 45000),  # both ephemeral, nothing declared
        # grpc declares 50051; its folded source ports 50000..50100 contain it: cannot tell apart
        rec(GRPC, WEB, 50000, 9999), rec(GRPC, WEB, 50100, 9999),
    ]
    result = run(store, tmp_path, lines)
    assert result.edges == ()
    assert (result.coverage.unoriented_records, result.coverage.resolved_records) == (4, 4)


def test_ip_reuse_resolves_by_time(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        *conn(FRONTEND, REUSED, 40001, 8080, 2),  # 02:00: carts
        *conn(FRONTEND, REUSED, 40002, 80, 14),  # 14:00: catalogue
        *conn(REUSED, DB, 40003, 5432, 3),  # carts' own call
        # one aggregate (same day, same ports) spanning the switch: records of two holders
        rec(FRONTEND, REUSED, 40005, 9000, 11), rec(FRONTEND, REUSED, 40006, 9000, 14),
    ]
    result = run(store, tmp_path, lines)
    assert {(e.source, e.destination, e.port) for e in result.edges} == {
        ("shop/frontend", "shop/carts", 8080), ("shop/frontend", "shop/catalogue", 80), ("shop/carts", "db", 5432)}
    (top,) = result.coverage.top_unresolved
    assert (top.address, top.reason, top.records, top.bytes) == (REUSED, "time-ambiguous", 2, 200)


def test_external_and_internet_peers(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        *conn(WEB, "198.51.100.7", 40001, 443),  # a named CIDR (not globally routable, still named)
        *conn(WEB, "52.95.1.1", 40002, 443),  # longest prefix: s3 (/16) over cloud (/8)
        *conn(WEB, "52.1.1.1", 40003, 443),  # cloud
        *conn(WEB, "52.10.1.1", 40004, 443),  # cloud's except_addresses: the internet
        rec(WEB, "8.8.8.8", 40005, 53, proto=17),  # public: the internet
        *conn("1.2.3.4", WEB, 50000, 443),  # inbound from the internet
    ]
    got = {(e.source, e.destination, e.protocol.value, e.port) for e in run(store, tmp_path, lines).edges}
    assert got == {("web", "external:psp", "TCP", 443), ("web", "external:s3", "TCP", 443),
                   ("web", "external:cloud", "TCP", 443), ("web", INTERNET, "TCP", 443),
                   ("web", INTERNET, "UDP", 53), (INTERNET, "web", "TCP", 443)}


def test_unresolved_private_addresses_are_reported(store: FlowStore, tmp_path: Path) -> None:
    lines = [*conn("172.20.5.5", DB, 40001, 5432), rec("172.20.5.5", DB, 40002, 5432, 30),
             *conn("203.0.113.9", WEB, 40001, 443),  # documentation range: not routable, not named
             *conn(WEB, APP, 40001, 8080)]
    result = run(store, tmp_path, lines)
    assert {e.key for e in result.edges} == {("web", "app", "TCP", 8080)}
    c = result.coverage
    assert (c.records, c.resolved_records, c.unresolved_records, c.unresolved_addresses) == (7, 2, 5, 2)
    assert [(u.address, u.reason, u.records, u.bytes) for u in c.top_unresolved] == [
        ("172.20.5.5", "private", 3, 700), ("203.0.113.9", "private", 2, 600)]
    assert (c.resolved_share, c.resolved_bytes_share) == (round(2 / 7, 6), round(600 / 1900, 6))


def test_denied_only_edges_are_kept_and_evidence_prefers_accepted(store: FlowStore, tmp_path: Path) -> None:
    lines = [
        rec(WEB, DB, 40001, 22, 1, action="REJECT", nbytes=60),  # only denied
        rec(WEB, DB, 40002, 22, 30, action="REJECT", nbytes=60),
        rec(WEB, APP, 40003, 8080, 2, nbytes=100),  # accepted once ...
        rec(WEB, APP, 40004, 8080, 50, action="REJECT", nbytes=40),  # ... and denied two days later
    ]
    edges = edge_map(run(store, tmp_path, lines))
    ssh = edges[("web", "db", "TCP", 22)]
    assert (ssh.flows, ssh.denied_flows, ssh.bytes, ssh.days, ssh.first_seen, ssh.last_seen, ssh.hours) == (
        0, 2, 120, 2, at(1), at(30, 30), (1, 6))
    app = edges[("web", "app", "TCP", 8080)]
    assert (app.flows, app.denied_flows, app.bytes, app.days, app.first_seen, app.last_seen, app.hours) == (
        1, 1, 100, 1, at(2), at(2, 30), (2,))


def test_flows_without_time(store: FlowStore, tmp_path: Path) -> None:
    path = tmp_path / "nat.log"
    path.write_text("srcaddr dstaddr srcport dstport protocol action\n"
                    f"{WEB} {APP} 40001 8080 6 ACCEPT\n"
                    f"{FRONTEND} {REUSED} 40001 8080 6 ACCEPT\n")  # two bounded bindings: no holder without a time
    store.ingest([path])
    result = map_flows(store, INVENTORY)
    assert result.edges == (Edge(source="web", destination="app", protocol=Protocol.TCP, port=8080, flows=1),)
    assert [(u.address, u.reason) for u in result.coverage.top_unresolved] == [(REUSED, "no-time")]


def test_log_hints_win_when_they_name_an_inventory_workload(store: FlowStore, tmp_path: Path) -> None:
    def flow(src: str, dst: str, src_ns: str, src_pod: str) -> str:
        return json.dumps({"flow": {
            "time": "2026-03-02T01:00:00Z", "verdict": "FORWARDED", "IP": {"source": src, "destination": dst},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 8080}},
            "source": {"namespace": src_ns, "pod_name": src_pod}, "is_reply": False}})

    path = tmp_path / "h.jsonl"
    path.write_text("\n".join([
        flow("10.9.9.9", APP, "shop", "frontend-7c9bf5d8f6-bx9kz"),  # unbound address, inventory hint
        flow(WEB, APP, "other", "ghost-7c9bf5d8f6-bx9kz"),  # hint not in the inventory: the address decides
    ]) + "\n")
    store.ingest([path])
    got = {(e.source, e.destination, e.port) for e in map_flows(store, INVENTORY).edges}
    assert got == {("shop/frontend", "app", 8080), ("web", "app", 8080)}


def test_deterministic_and_independent_of_input_order(tmp_path: Path) -> None:
    a = [*conn(WEB, APP, 40001, 8080, 1), *conn(WEB, DB, 40002, 5432, 30), rec(WEB, DB, 40003, 22, action="REJECT")]
    b = [*conn("172.20.5.5", DB, 40001, 5432), *conn(WEB, "52.1.1.1", 40004, 443, 50)]
    results = []
    for n, order in enumerate(((a, b), (b, a))):
        d = tmp_path / str(n)
        d.mkdir()
        with FlowStore(d / "flows.duckdb") as s:
            for i, lines in enumerate(order):
                (d / f"{i}.log").write_text("\n".join([HEADER, *lines]) + "\n")
            s.ingest(sorted(d.glob("*.log")))
            first, second = map_flows(s, INVENTORY), map_flows(s, INVENTORY)
            assert first == second
            results.append(first)
    assert results[0] == results[1]
    assert [e.key for e in results[0].edges] == sorted(e.key for e in results[0].edges)


def test_prepare_bindings_cuts_overlaps() -> None:
    t = [T0 + timedelta(hours=h) for h in range(6)]
    naive = [x.replace(tzinfo=None) for x in t]
    b = prepare_bindings([
        AddressBinding(ip="10.0.0.1", workload="host"),
        AddressBinding(ip="10.0.0.2", workload="a", valid_from=t[0], valid_to=t[3]),
        AddressBinding(ip="10.0.0.2", workload="b", valid_from=t[2]),  # started later: holds the overlap
        AddressBinding(ip="10.0.0.3", workload="c", valid_from=t[1], valid_to=t[4]),
        AddressBinding(ip="10.0.0.3", workload="d", valid_from=t[1], valid_to=t[2]),  # same start: conflict
        AddressBinding(ip="2001:DB8::1", workload="e", valid_to=t[5]),
    ])
    assert b.static == [("10.0.0.1", "host")]
    assert b.segments == [
        ("10.0.0.2", "a", naive[0], naive[2]), ("10.0.0.2", "b", naive[2], None),
        ("10.0.0.3", None, naive[1], naive[2]), ("10.0.0.3", "c", naive[2], naive[4]),
        ("2001:db8::1", "e", None, naive[5]),
    ]
    assert b.no_time == [("10.0.0.2", None), ("10.0.0.3", None), ("2001:db8::1", "e")]


def test_classify_addresses() -> None:
    got = classify_addresses(["52.95.0.1", "52.10.0.1", "9.9.9.9", "10.1.2.3", "224.0.0.5", "100.64.1.1",
                              "2600::1", "ff02::2", "fe80::1", "010.0.0.1", "junk"], INVENTORY)
    assert got == [("52.95.0.1", "external:s3", "external"), ("52.10.0.1", INTERNET, "internet"),
                   ("9.9.9.9", INTERNET, "internet"), ("10.1.2.3", None, "private"), ("224.0.0.5", None, "private"),
                   ("100.64.1.1", None, "private"), ("2600::1", INTERNET, "internet"), ("ff02::2", None, "private"),
                   ("fe80::1", None, "private"), ("010.0.0.1", None, "invalid"), ("junk", None, "invalid")]


# -- unanswered TCP: accepted attempts that nobody answered are denied attempts, not flows ---------

V3_HEADER = HEADER + " tcp-flags"
FIN, SYN, RST, SYN_ACK = 1, 2, 4, 18  # as VPC logs them (ACK alone is not logged)


def frec(src: str, dst: str, sp: int, dp: int, flags: int, hours: float = 1, *, proto: int = 6,
         nbytes: int = 60) -> str:
    """A VPC v3+ record with tcp-flags (the OR of the flags over the capture interval)."""
    t = epoch(hours)
    return f"3 123456789010 eni-1 {src} {dst} {sp} {dp} {proto} 1 {nbytes} {t} {t + 30} ACCEPT OK {flags}"


def run_v3(store: FlowStore, tmp_path: Path, lines: list[str]) -> dict[tuple[str, str, str, int], Edge]:
    path = tmp_path / f"v3-{len(list(tmp_path.glob('v3-*')))}.log"
    path.write_text("\n".join([V3_HEADER, *lines]) + "\n")
    assert store.ingest([path]).bad == 0
    return edge_map(map_flows(store, INVENTORY))


def dead_host(client: str, server: str, sport: int, days: int = 3, per_day: int = 4) -> list[str]:
    """Attempts nobody answers, ``per_day`` a day at hours 1, 2, ...: the client's SYN and nothing else."""
    return [frec(client, server, 40000 + 10 * d + i, sport, SYN, 24 * d + 1 + i)
            for d in range(days) for i in range(per_day)]


def replies_shown(client: str) -> list[str]:
    """One answered connection from ``client`` to shop/frontend:443: the log shows the client's replies."""
    return [frec(client, FRONTEND, 40900, 443, SYN | FIN, 0.5), frec(FRONTEND, client, 443, 40900, SYN_ACK | FIN, 0.5)]


def test_attempts_to_a_dead_host_are_denied_attempts_not_flows(store: FlowStore, tmp_path: Path) -> None:
    # 12 accepted SYNs over 3 days: enough for any min_flows/min_days, yet nothing ever answered.
    edges = run_v3(store, tmp_path, dead_host(WEB, APP, 8080) + replies_shown(WEB))
    e = edges[("web", "app", "TCP", 8080)]
    assert (e.flows, e.denied_flows, e.unanswered, e.bytes, e.days) == (0, 12, 12, 720, 3)
    assert (e.first_seen, e.last_seen, e.hours) == (at(1), at(52, 30), (1, 2, 3, 4))
    c = map_flows(store, INVENTORY).coverage  # counted, just not as accepted
    assert (c.records, c.edge_records) == (14, 14)


def test_a_log_without_the_clients_replies_is_not_judged(store: FlowStore, tmp_path: Path) -> None:
    # A log of requests only (Hubble policy-verdict events, an exporter seeing one direction) shows
    # every connection as a lone SYN: web has no SYN-ACK anywhere, so its SYNs are not judged.
    edges = run_v3(store, tmp_path, dead_host(WEB, APP, 8080))
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (12, 0)
    # Once one of web's connections shows a reply, the log shows web's replies: the SYNs are judged.
    edges = run_v3(store, tmp_path, replies_shown(WEB))
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (0, 12)


def test_a_closed_port_answered_by_rst_is_unanswered(store: FlowStore, tmp_path: Path) -> None:
    lines = [line for d in range(3) for line in (frec(WEB, DB, 40001 + d, 5432, SYN, 24 * d + 1),
                                                 frec(DB, WEB, 5432, 40001 + d, RST, 24 * d + 1))]
    e = run_v3(store, tmp_path, lines + replies_shown(WEB))[("web", "db", "TCP", 5432)]
    assert (e.flows, e.denied_flows, e.unanswered, e.days) == (0, 6, 6, 3)


def test_a_normal_connection_is_answered(store: FlowStore, tmp_path: Path) -> None:
    # The client's record SYN+FIN, the server's SYN-ACK+FIN; beside it, the same attempts unanswered.
    lines = [line for d in range(3) for line in (frec(WEB, APP, 40001 + d, 8080, SYN | FIN, 24 * d + 1),
                                                 frec(APP, WEB, 8080, 40001 + d, SYN_ACK | FIN, 24 * d + 1))]
    # Only the client's record, SYN+FIN: a FIN is only sent on an established connection.
    lines += [frec(WEB, GRPC, 40100, 50051, SYN | FIN, 2)]
    edges = run_v3(store, tmp_path, lines + dead_host(WEB, DB, 5432))
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (3, 0)
    assert (edges[("web", "grpc", "TCP", 50051)].flows, edges[("web", "grpc", "TCP", 50051)].denied_flows) == (1, 0)
    assert edges[("web", "db", "TCP", 5432)].flows == 0


def test_a_long_connection_seen_as_flags_0_intervals_is_answered(store: FlowStore, tmp_path: Path) -> None:
    # Only the client's records: the SYN interval, then intervals with flags 0 (an established
    # connection still sending). The same SYNs without the later intervals are unanswered.
    lines = [frec(WEB, APP, 40001, 8080, SYN, 1), frec(WEB, APP, 40001, 8080, 0, 1.5),
             frec(WEB, APP, 40001, 8080, 0, 2), frec(WEB, DB, 40002, 5432, SYN, 1), *replies_shown(WEB)]
    edges = run_v3(store, tmp_path, lines)
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (3, 0)
    assert (edges[("web", "db", "TCP", 5432)].flows, edges[("web", "db", "TCP", 5432)].denied_flows) == (0, 1)


def test_records_without_flags_leave_the_edge_as_it_was(store: FlowStore, tmp_path: Path) -> None:
    # v2 lines (no tcp-flags) for web -> app: unknown, so flows; the v3 twin for web -> db is judged.
    edges = edge_map(run(store, tmp_path, [rec(WEB, APP, 40000 + i, 8080, 1 + i) for i in range(4)]))
    assert edges[("web", "app", "TCP", 8080)].flows == 4
    edges = run_v3(store, tmp_path, dead_host(WEB, DB, 5432, days=1) + replies_shown(WEB))
    assert edges[("web", "app", "TCP", 8080)].flows == 4
    assert (edges[("web", "db", "TCP", 5432)].flows, edges[("web", "db", "TCP", 5432)].denied_flows) == (0, 4)
    # One record without flags on an otherwise unanswered edge: not every record is known, not judged.
    edges = edge_map(run(store, tmp_path, [rec(WEB, DB, 40100, 5432, 30)]))
    assert (edges[("web", "db", "TCP", 5432)].flows, edges[("web", "db", "TCP", 5432)].denied_flows) == (5, 0)


def test_only_tcp_is_judged(store: FlowStore, tmp_path: Path) -> None:
    # The same flag bits on UDP records (VPC logs 0 there; 2 here to show the protocol decides).
    lines = [frec(WEB, APP, 40000 + i, 8080, SYN, 1 + i, proto=17) for i in range(3)] + dead_host(WEB, APP, 8080, 1)
    edges = run_v3(store, tmp_path, lines + replies_shown(WEB))
    assert (edges[("web", "app", "UDP", 8080)].flows, edges[("web", "app", "UDP", 8080)].denied_flows) == (3, 0)
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (0, 4)


def test_one_answered_connection_makes_the_edge_answered(store: FlowStore, tmp_path: Path) -> None:
    # Four unanswered attempts and one connection the server answered (its SYN-ACK) on web -> app;
    # only the unanswered attempts on web -> db.
    lines = [*dead_host(WEB, APP, 8080, days=1), frec(WEB, APP, 40100, 8080, SYN | FIN, 9),
             frec(APP, WEB, 8080, 40100, SYN_ACK | FIN, 9), *dead_host(WEB, DB, 5432, days=1)]
    edges = run_v3(store, tmp_path, lines)
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (5, 0)
    assert (edges[("web", "db", "TCP", 5432)].flows, edges[("web", "db", "TCP", 5432)].denied_flows) == (0, 4)


def _hubble(src: str, dst: str, sp: int, dp: int, flags: dict[str, bool], is_reply: bool) -> str:
    return json.dumps({"flow": {
        "time": "2026-03-02T01:00:00Z", "verdict": "FORWARDED", "IP": {"source": src, "destination": dst},
        "l4": {"TCP": {"source_port": sp, "destination_port": dp, "flags": flags}}, "is_reply": is_reply}})


def test_hubble_rst_ack_from_a_closed_port_is_unanswered_and_syn_ack_is_answered(store: FlowStore,
                                                                                 tmp_path: Path) -> None:
    # Hubble (and nfdump) log the ACK bit: a closed port answers RST+ACK, which is no answer.
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join([
        _hubble(WEB, DB, 40001, 5432, {"SYN": True}, False),
        _hubble(DB, WEB, 5432, 40001, {"RST": True, "ACK": True}, True),
        _hubble(WEB, APP, 40002, 8080, {"SYN": True}, False),
        _hubble(APP, WEB, 8080, 40002, {"SYN": True, "ACK": True}, True),
        # the server's SYN-ACK event lost, its later ACK seen: an established connection
        _hubble(WEB, GRPC, 40003, 50051, {"SYN": True}, False), _hubble(GRPC, WEB, 50051, 40003, {"ACK": True}, True),
    ]) + "\n")
    assert store.ingest([path]).bad == 0
    edges = edge_map(map_flows(store, INVENTORY))
    assert (edges[("web", "db", "TCP", 5432)].flows, edges[("web", "db", "TCP", 5432)].denied_flows) == (0, 2)
    assert (edges[("web", "app", "TCP", 8080)].flows, edges[("web", "app", "TCP", 8080)].denied_flows) == (1, 0)
    assert (edges[("web", "grpc", "TCP", 50051)].flows, edges[("web", "grpc", "TCP", 50051)].denied_flows) == (1, 0)


def test_an_unanswered_dependency_is_no_allow_rule_but_a_finding(store: FlowStore, tmp_path: Path) -> None:
    from microseg.analyses.synthesis import synthesize
    from microseg.analyses.zones import default_guardrails
    from microseg.ir.model import Settings

    lines = [line for d in range(3) for line in (frec(WEB, APP, 40101 + d, 8080, SYN | FIN, 24 * d + 5),
                                                 frec(APP, WEB, 8080, 40101 + d, SYN_ACK | FIN, 24 * d + 5))]
    # ... and SSH attempts from web to db that db refuses (RST): an admin port outside the management zone.
    ssh = [line for i in range(2) for line in (frec(WEB, DB, 40201 + i, 22, SYN, 7 + i),
                                               frec(DB, WEB, 22, 40201 + i, RST, 7 + i))]
    edges = run_v3(store, tmp_path, dead_host(WEB, DB, 5432) + lines + ssh)
    res = synthesize(INVENTORY, list(edges.values()), guardrails=default_guardrails(),
                     settings=Settings(min_flows=3, min_days=2))
    allowed = {(s, d, r.protocol, p.start) for r in res.policy.rules for s in r.sources for d in r.destinations
               for p in r.ports}
    assert ("web", "app", "TCP", 8080) in allowed  # the answered dependency is codified ...
    assert not any(s == "web" and d == "db" for s, d, _, _ in allowed)  # ... the dead one is not
    (finding,) = [f for f in res.findings if (f.source, f.destination, f.port) == ("web", "db", 5432)]
    assert (finding.id, finding.severity) == ("MS102", "high")  # 12 attempts
    assert finding.message.startswith("12 connection attempt(s) let through by the current controls but never "
                                      "answered")
    (finding,) = [f for f in res.findings if (f.source, f.destination, f.port) == ("web", "db", 22)]
    assert (finding.id, finding.severity) == ("MS102", "high")  # 4 attempts, but a guardrail breach
    assert "GR-admin-from-management" in finding.message and "lateral movement" in finding.message
