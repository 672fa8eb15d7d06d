"""Live proof of the nftables back end: real kernels, real sockets, in network namespaces.

Five hosts in four segments (web, app, data, management) behind a router namespace, addressed from
the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 split in two, 2001:db8::/32):
no other network is ever touched, and every probe goes between namespaces this test creates. The
compiled rulesets are loaded with ``nft -f`` into the hosts and the router; every host serves every
probed port, so a failed probe is the firewall's doing, not a missing server (the baseline proves it).

Phases: no rulesets (everything connects); the router alone (it blocks lateral movement between
segments, not inside one); the host firewalls alone (they block all of it); both, read back from the
kernels; observe mode (everything connects, and each would-be-denied flow is counted by the log rule
of exactly the chains on its path). The kernel does not log from network namespaces other than the
initial one unless ``net.netfilter.nf_log_all_netns`` is set, which this test must not change on the
machine: the log rules' counters are asserted instead of log lines.

Skipped, saying why, only where network namespaces cannot be created (not root, no CAP_SYS_ADMIN);
as root it runs. Missing ``ip``/``nft`` is a failure: scripts/install-system-deps.sh installs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from microseg.backends.nftables import BACKEND, LOG_PREFIX
from microseg.ir.model import (
    AllowRule,
    Justification,
    JustificationKind,
    Policy,
    Protocol,
    Workload,
    WorkloadKind,
    ZoneAssignment,
)
from microseg.ir.semantics import connectivity
from microseg.sources.deployed import nftables as reader
from microseg.twin import netns
from microseg.twin.netns import ROUTER, Lab, Probe, ProbeResult

SEGMENTS = {  # zone -> (IPv4 prefix, IPv6 prefix); the router takes the first address of each
    "web": ("192.0.2.0/24", "2001:db8:a::/64"),
    "app": ("198.51.100.0/24", "2001:db8:b::/64"),
    "data": ("203.0.113.0/25", "2001:db8:c::/64"),
    "management": ("203.0.113.128/25", "2001:db8:d::/64"),
}
HOSTS = {  # name -> (zone, IPv4, IPv6)
    "web1": ("web", "192.0.2.10", "2001:db8:a::10"),
    "web2": ("web", "192.0.2.11", "2001:db8:a::11"),
    "app": ("app", "198.51.100.20", "2001:db8:b::20"),
    "db": ("data", "203.0.113.30", "2001:db8:c::30"),
    "bastion": ("management", "203.0.113.140", "2001:db8:d::140"),
}
TCP_PORTS, UDP_PORTS = (22, 5432, 8080), (11211,)
WHY = Justification(kind=JustificationKind.DECLARED, text="live twin")


def _rule(rid: str, src: list[str], dst: list[str], proto: Protocol, port: int) -> AllowRule:
    return AllowRule(id=rid, sources=tuple(src), destinations=tuple(dst), protocol=proto, ports=(str(port),),
                     justification=WHY)


POLICY = Policy(
    workloads=tuple(Workload(name=n, kind=WorkloadKind.HOST, addresses=(f"{v4}/32", f"{v6}/128"))
                    for n, (_, v4, v6) in HOSTS.items()),
    assignments=tuple(ZoneAssignment(workload=n, zone=z, reason="live twin") for n, (z, _, _) in HOSTS.items()),
    rules=(
        _rule("R-web-app", ["web1", "web2"], ["app"], Protocol.TCP, 8080),
        _rule("R-app-db", ["app"], ["db"], Protocol.TCP, 5432),
        _rule("R-app-cache", ["app"], ["db"], Protocol.UDP, 11211),
        _rule("R-bastion-ssh", ["bastion"], ["web1", "web2", "app", "db"], Protocol.TCP, 22),
    ),
)

# (source, destination, protocol, port) that the policy allows ...
INTENDED = [("web1", "app", "tcp", 8080), ("web2", "app", "tcp", 8080), ("app", "db", "tcp", 5432),
            ("app", "db", "udp", 11211)] + [("bastion", d, "tcp", 22) for d in ("web1", "web2", "app", "db")]
# ... and lateral movement it must stop.
LATERAL = [
    ("web1", "db", "tcp", 5432),  # the web tier skipping the app tier
    ("web1", "web2", "tcp", 22),  # inside one segment: only the host firewalls are on the path
    ("app", "bastion", "tcp", 22),  # towards the management segment
    ("db", "app", "tcp", 8080),  # the data tier initiating
    ("db", "web1", "tcp", 22),
    ("app", "web1", "tcp", 22),  # ssh is the bastion's only
    ("app", "db", "tcp", 22),
    ("web1", "app", "udp", 11211),  # right peer, wrong protocol and port
    ("web2", "db", "udp", 11211),
]


def probes(flows: list[tuple[str, str, str, int]]) -> list[Probe]:
    return [Probe(s, d, proto, port, version) for s, d, proto, port in flows for version in (4, 6)]


def crosses(p: Probe) -> bool:
    return HOSTS[p.source][0] != HOSTS[p.destination][0]


def failures(results: list[ProbeResult], *, expect: bool) -> list[str]:
    bad = []
    for r in results:
        if r.ok != expect or (expect and r.answered_by != r.probe.destination):
            bad.append(f"{r.probe}: {'connected' if r.ok else 'failed'} ({r.detail}, answered by {r.answered_by})")
    return bad


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    try:
        reason = netns.netns_unavailable()
    except netns.TwinError as e:
        pytest.fail(str(e))
    if reason is not None:
        pytest.skip(reason)
    with Lab(timeout=1.0) as built:
        for zone, (v4, v6) in SEGMENTS.items():
            built.add_segment(zone, v4, v6)
        for name, (zone, v4, v6) in HOSTS.items():
            built.add_host(name, zone, v4, v6)
            built.serve(name, tcp=TCP_PORTS, udp=UDP_PORTS)
        yield built


def load(lab: Lab, files: dict[str, str], *, hosts: bool, router: bool) -> None:
    index = json.loads(files["index.json"])
    for h in index["hosts"]:
        if hosts:
            lab.load(h["workload"], files[h["file"]])
        else:
            lab.flush(h["workload"])
    if router:
        lab.load(ROUTER, files[index["router"]["file"]])
    else:
        lab.flush(ROUTER)


def counters(lab: Lab) -> dict[str, int]:
    out: dict[str, int] = {}
    for where in [*HOSTS, ROUTER]:
        out.update(netns.log_counters(lab.ruleset_json(where)))
    return out


def test_live_enforce_and_observe(lab: Lab) -> None:
    started = time.monotonic()
    enforce, observe = BACKEND.compile(POLICY), BACKEND.compile(POLICY, mode="observe")
    intended, lateral = probes(INTENDED), probes(LATERAL)

    # 0. No ruleset anywhere: every probe connects, so every later failure is a firewall's doing.
    load(lab, enforce, hosts=False, router=False)
    assert failures(lab.probe(intended + lateral), expect=True) == []

    # 1. The router alone: lateral movement between segments stops, inside a segment it does not.
    load(lab, enforce, hosts=False, router=True)
    results = lab.probe(intended + lateral)
    assert failures(results[:len(intended)], expect=True) == []
    across = [r for r in results[len(intended):] if crosses(r.probe)]
    within = [r for r in results[len(intended):] if not crosses(r.probe)]
    assert across and within
    assert failures(across, expect=False) == []
    assert failures(within, expect=True) == []

    # 2. The host firewalls alone stop all of it, the same-segment flow included.
    load(lab, enforce, hosts=True, router=False)
    results = lab.probe(intended + lateral)
    assert failures(results[:len(intended)], expect=True) == []
    assert failures(results[len(intended):], expect=False) == []

    # 3. Both; and what the kernels hold reads back as exactly the policy.
    load(lab, enforce, hosts=True, router=True)
    results = lab.probe(intended + lateral)
    assert failures(results[:len(intended)], expect=True) == []
    assert failures(results[len(intended):], expect=False) == []
    deployed = reader.read_back_deployed({h: lab.ruleset_json(h) for h in HOSTS}, POLICY,
                                         router=lab.ruleset_json(ROUTER))
    assert deployed == connectivity(POLICY)

    # 4. Observe mode: nothing is blocked; allowed flows are not counted as would-be drops, and each
    # lateral flow is counted once by the log rule of every chain on its path and by no other.
    load(lab, observe, hosts=True, router=True)
    before = counters(lab)
    assert all(LOG_PREFIX.fullmatch(prefix) for prefix in before), before
    assert failures(lab.probe(intended), expect=True) == []
    assert counters(lab) == before
    for p in lateral:
        before = counters(lab)
        assert failures(lab.probe([p]), expect=True) == []
        after = counters(lab)
        grew = {prefix for prefix in after if after[prefix] != before.get(prefix, 0)}
        expected = {f"microseg-would-drop host={p.source} chain=output ",
                    f"microseg-would-drop host={p.destination} chain=input "}
        if crosses(p):
            expected.add("microseg-would-drop router chain=forward ")
        assert grew == expected, p
        assert all(after[prefix] - before.get(prefix, 0) == 1 for prefix in grew), (p, after, before)

    assert time.monotonic() - started < 30


def test_lab_leaves_nothing_behind() -> None:
    try:
        reason = netns.netns_unavailable()
    except netns.TwinError as e:
        pytest.fail(str(e))
    if reason is not None:
        pytest.skip(reason)
    lab = Lab()
    names: list[str] = []
    try:
        lab.add_segment("a", "192.0.2.0/28")
        lab.add_host("h", "a", "192.0.2.2")
        names = list(lab._namespaces)
        raise RuntimeError("a test failing halfway")
    except RuntimeError:
        pass
    finally:
        lab.close()
    listed = netns._run([netns.tool("ip"), "netns", "list"])
    assert names and not any(n in listed for n in names)


def test_namespaces_of_dead_runs_are_removed() -> None:
    try:
        reason = netns.netns_unavailable()
    except netns.TwinError as e:
        pytest.fail(str(e))
    if reason is not None:
        pytest.skip(reason)
    ip = netns.tool("ip")
    dead = f"{netns.NS_PREFIX}-{2**22 + 12345}-abcdef-h0"  # above pid_max's default: no such process
    mine = f"{netns.NS_PREFIX}-{os.getpid()}-abcdef-h0"  # a live run's namespace is left alone
    for name in (dead, mine):
        netns._run([ip, "netns", "add", name])
    try:
        assert dead in netns.remove_stale()
        listed = netns._run([ip, "netns", "list"])
        assert dead not in listed and mine in listed
    finally:
        for name in (dead, mine):
            subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
