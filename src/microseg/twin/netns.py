"""A small network lab in Linux network namespaces: hosts on segment switches, joined by a router.

Topology (everything lives in namespaces this module creates; nothing is added to the caller's own
network namespace, so no interface, route or address of the machine changes)::

    host ns (eth0) ── veth ── switch ns (bridge br0) ── veth ── router ns (seg<i>) ── ... other segments

Hosts of one segment share a bridge, so traffic between them never crosses the router, as on a real
VLAN; traffic between segments is routed by the router namespace (IPv4 and IPv6 forwarding on).
Each segment's first address is the router's, and the hosts' default gateway.

Built with iproute2 ``ip`` (``ip netns add``, ``ip -n NS link add ... type veth peer name X netns
OTHER``, ``ip -n NS -batch -``), rulesets loaded with ``ip netns exec NS nft -f -``. Real sockets: a
small agent process runs in each host namespace (``ip netns exec NS python ...``), serves TCP and UDP
ports (answering ``microseg-twin <host>``) and runs batches of probes concurrently, each with a
bounded timeout.

Teardown is reliable: :class:`Lab` is a context manager that stops its agents (they also exit when
their stdin closes, i.e. when the test process dies) and deletes its namespaces, which destroys their
veth pairs; namespaces are named ``mstwin-<pid>-<random>-<role>``, and a new :class:`Lab` first
deletes the namespaces of runs whose process no longer exists (a run killed with SIGKILL).

Also here, because they need a namespace too: :func:`nft_check` (``nft -c -f``) and
:func:`nft_json` (the kernel's own reading of a ruleset, as ``nft -j list ruleset``), both in a
throwaway namespace so that the machine's ruleset is never read nor touched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import microseg
from microseg.errors import MicrosegError

INSTALL_HINT = "run scripts/install-system-deps.sh (as root) to install the Debian packages nftables and iproute2"
ROUTER = "router"
NS_PREFIX = "mstwin"
GREETING = "microseg-twin"
_STALE = re.compile(rf"{NS_PREFIX}-(\d+)-[0-9a-f]{{6}}-")
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_CMD_TIMEOUT = 30.0


class TwinError(MicrosegError):
    """The lab could not be built or driven (a missing tool, a failing command)."""


def tool(name: str) -> str:
    """Path of a system command; sbin directories are searched too (they are not on every PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        raise TwinError(f"`{name}` not found: {INSTALL_HINT}")
    return found


def _run(args: Sequence[str], *, stdin: str | None = None, timeout: float = _CMD_TIMEOUT) -> str:
    try:
        r = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TwinError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from None
    if r.returncode != 0:
        raise TwinError(f"`{' '.join(args)}` failed (exit {r.returncode}): {r.stderr.strip()}")
    return r.stdout


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be created here, or ``None`` when they can.

    A missing ``ip`` is not such a reason: it raises :class:`TwinError` (install it, don't skip).
    """
    ip = tool("ip")
    name = f"{NS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-check"
    r = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return (f"cannot create a network namespace (`ip netns add` said: {r.stderr.strip() or r.returncode}); "
                "the live test needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN")
    subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
    return None


def _scratch() -> list[str]:
    """Prefix that runs a command in a new, empty network namespace living as long as the command."""
    unshare = tool("unshare")
    if os.geteuid() == 0:
        return [unshare, "--net"]
    # Unprivileged: a user namespace gives CAP_NET_ADMIN over the new network namespace only.
    return [unshare, "--user", "--map-root-user", "--net"]


def nft_check(text: str, *, name: str = "<ruleset>") -> None:
    """``nft -c -f``: the kernel checks the ruleset and applies nothing.

    Run in an empty throwaway namespace: nft 1.0.6 needs CAP_NET_ADMIN even for ``-c`` (it reads the
    kernel's ruleset cache first), and the result must not depend on what this machine has loaded.
    """
    nft = tool("nft")
    r = subprocess.run([*_scratch(), nft, "-c", "-f", "-"], input=text, capture_output=True, text=True,
                       timeout=_CMD_TIMEOUT, check=False)
    if r.returncode != 0:
        raise TwinError(f"nft -c rejected {name}: {r.stderr.strip() or r.returncode}")


def nft_json(text: str, *, name: str = "<ruleset>") -> str:
    """The kernel's reading of a ruleset: load it into a throwaway namespace, return ``nft -j list ruleset``."""
    nft = tool("nft")
    r = subprocess.run([*_scratch(), "sh", "-c", '"$0" -f - && exec "$0" -j list ruleset', nft], input=text,
                       capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False)
    if r.returncode != 0:
        raise TwinError(f"nft could not load {name}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def log_counters(ruleset_json: str) -> dict[str, int]:
    """Packets counted by each rule that logs, by log prefix (``counter ... log prefix "..."`` rules)."""
    out: dict[str, int] = {}
    for obj in json.loads(ruleset_json).get("nftables", []):
        rule = obj.get("rule") if isinstance(obj, dict) else None
        if not isinstance(rule, dict):
            continue
        prefix, packets = None, None
        for expr in rule.get("expr", []):
            if "log" in expr and isinstance(expr["log"], dict):
                prefix = expr["log"].get("prefix")
            if "counter" in expr and isinstance(expr["counter"], dict):
                packets = expr["counter"].get("packets")
        if isinstance(prefix, str) and isinstance(packets, int):
            out[prefix] = out.get(prefix, 0) + packets
    return out


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier labs whose process is gone; returns their names."""
    ip = tool("ip")
    removed = []
    for line in _run([ip, "netns", "list"]).splitlines():
        name = line.split(" ", 1)[0]
        m = _STALE.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- probes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One connection attempt from a lab host to an address of another, with a real socket."""

    source: str
    destination: str
    protocol: str  # "tcp" or "udp"
    port: int
    version: int = 4

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination} {self.protocol}/{self.port} (IPv{self.version})"


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    ok: bool  # connected (TCP) or got an answer (UDP) from the destination's agent
    answered_by: str | None
    detail: str


# -- the lab ----------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    index: int
    switch_ns: str
    v4_prefix: int
    v4_gateway: str
    v6_prefix: int | None
    v6_gateway: str | None
    ports: int = 0


@dataclass
class _Host:
    name: str
    ns: str
    segment: str
    v4: str
    v6: str | None


@dataclass
class _Agent:
    proc: subprocess.Popen[bytes]
    buffer: bytes = b""

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TwinError("a lab agent did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TwinError(f"a lab agent exited (status {self.proc.poll()})")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise TwinError(f"lab agent: {reply['error']}")
        return reply


@dataclass
class Lab:
    """Hosts, segment switches and one router as network namespaces; see the module docstring.

    Use as a context manager; :meth:`close` is idempotent and runs even when building fails halfway.
    """

    timeout: float = 1.0  # per probe: TCP connect / UDP answer
    tag: str = field(default_factory=lambda: f"{NS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
    hosts: dict[str, _Host] = field(default_factory=dict)
    segments: dict[str, _Segment] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _agents: dict[str, _Agent] = field(default_factory=dict)
    _router: str | None = None
    _links: list[tuple[str, str]] = field(default_factory=list)  # (namespace, interface) with an address
    _settled: bool = True

    def __post_init__(self) -> None:
        self.ip = tool("ip")
        self.nft = tool("nft")
        remove_stale()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ----------------------------------------------------------------------------------------

    def _add_ns(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        _run([self.ip, "netns", "add", name])
        self._namespaces.append(name)
        # No duplicate address detection: addresses are usable at once (the lab assigns them uniquely).
        self._sysctl(name, {"net/ipv6/conf/all/accept_dad": 0, "net/ipv6/conf/default/accept_dad": 0})
        self._batch(name, ["link set lo up"])
        return name

    def _sysctl(self, ns: str, values: dict[str, int]) -> None:
        # Per-namespace sysctls, written from inside the namespace; a kernel without IPv6 has no
        # net/ipv6 entries, and the lab then runs IPv4 only.
        script = "; ".join(f"if [ -e /proc/sys/{k} ]; then echo {v} > /proc/sys/{k}; fi" for k, v in values.items())
        _run([self.ip, "netns", "exec", ns, "sh", "-c", script])

    def _batch(self, ns: str, commands: Iterable[str]) -> None:
        _run([self.ip, "-n", ns, "-batch", "-"], stdin="".join(c + "\n" for c in commands))

    def _router_ns(self) -> str:
        if self._router is None:
            self._router = self._add_ns("r")
            self._sysctl(self._router, {"net/ipv4/ip_forward": 1, "net/ipv6/conf/all/forwarding": 1})
        return self._router

    def add_segment(self, name: str, v4: str, v6: str | None = None) -> None:
        """A switch for ``v4`` (and ``v6``) with the router on the first address of each."""
        router = self._router_ns()
        index = len(self.segments)
        switch = self._add_ns(f"s{index}")
        net4 = ipaddress.IPv4Network(v4)
        gw4 = str(next(net4.hosts()))
        gw6, pfx6 = None, None
        if v6 is not None:
            net6 = ipaddress.IPv6Network(v6)
            gw6, pfx6 = str(net6.network_address + 1), net6.prefixlen
        # Snooping off: with no MLD querier on the link the bridge must flood neighbour discovery.
        self._batch(switch, ["link add br0 type bridge mcast_snooping 0", "link set br0 up"])
        _run([self.ip, "-n", router, "link", "add", f"seg{index}", "type", "veth", "peer", "name",
              "uplink", "netns", switch])
        self._batch(switch, ["link set uplink master br0", "link set uplink up"])
        cmds = [f"addr add {gw4}/{net4.prefixlen} dev seg{index}", f"link set seg{index} up"]
        if gw6 is not None:
            cmds.insert(1, f"addr add {gw6}/{pfx6} dev seg{index} nodad")
        self._batch(router, cmds)
        self._links.append((router, f"seg{index}"))
        self._settled = False
        self.segments[name] = _Segment(index, switch, net4.prefixlen, gw4, pfx6, gw6)

    def add_host(self, name: str, segment: str, v4: str, v6: str | None = None) -> None:
        seg = self.segments[segment]
        ns = self._add_ns(f"h{len(self.hosts)}")
        port = f"p{seg.ports}"
        seg.ports += 1
        _run([self.ip, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", seg.switch_ns])
        self._batch(seg.switch_ns, [f"link set {port} master br0", f"link set {port} up"])
        cmds = [f"addr add {v4}/{seg.v4_prefix} dev eth0", "link set eth0 up",
                f"route add default via {seg.v4_gateway}"]
        if v6 is not None:
            if seg.v6_gateway is None:
                raise TwinError(f"segment {segment} has no IPv6 prefix for host {name}")
            cmds += [f"addr add {v6}/{seg.v6_prefix} dev eth0 nodad", f"route add default via {seg.v6_gateway}"]
        self._batch(ns, cmds)
        self._links.append((ns, "eth0"))
        self._settled = False
        self.hosts[name] = _Host(name, ns, segment, v4, v6)
        self._start_agent(name, ns)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every lab interface has its IPv6 link-local address.

        The kernel configures it only once the link's carrier change has gone through linkwatch, which
        can take about a second after ``link set up``; until then neighbour discovery cannot run and
        the first IPv6 connections time out. IPv4 (ARP) does not wait for it.
        """
        if self._settled or not Path("/proc/sys/net/ipv6").is_dir():
            self._settled = True
            return
        deadline = time.monotonic() + timeout
        pending = list(self._links)
        while pending:
            ns, dev = pending[0]
            out = _run([self.ip, "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"])
            if "inet6" in out and "tentative" not in out:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TwinError(f"{ns}/{dev} has no usable IPv6 link-local address after {timeout:g} s")
            time.sleep(0.05)
        self._settled = True

    def _start_agent(self, name: str, ns: str) -> None:
        env = dict(os.environ)
        src = str(Path(microseg.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        boot = "import sys; from microseg.twin.netns import agent_main; sys.exit(agent_main(sys.argv[1]))"
        proc = subprocess.Popen([self.ip, "netns", "exec", ns, sys.executable, "-c", boot, name],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._agents[name] = _Agent(proc)

    # -- rulesets ----------------------------------------------------------------------------------------

    def _ns_of(self, where: str) -> str:
        if where == ROUTER:
            return self._router_ns()
        return self.hosts[where].ns

    def load(self, where: str, ruleset: str) -> None:
        """``nft -f`` a ruleset in a host's namespace, or the router's (``where=ROUTER``)."""
        _run([self.ip, "netns", "exec", self._ns_of(where), self.nft, "-f", "-"], stdin=ruleset)

    def flush(self, where: str) -> None:
        _run([self.ip, "netns", "exec", self._ns_of(where), self.nft, "flush", "ruleset"])

    def ruleset_json(self, where: str) -> str:
        return _run([self.ip, "netns", "exec", self._ns_of(where), self.nft, "-j", "list", "ruleset"])

    # -- traffic -----------------------------------------------------------------------------------------

    def serve(self, host: str, *, tcp: Iterable[int] = (), udp: Iterable[int] = ()) -> None:
        agent = self._agents[host]
        agent.send({"op": "serve", "tcp": sorted(set(tcp)), "udp": sorted(set(udp))})
        agent.recv(time.monotonic() + 10)

    def address(self, host: str, version: int) -> str:
        h = self.hosts[host]
        addr = h.v4 if version == 4 else h.v6
        if addr is None:
            raise TwinError(f"host {host} has no IPv{version} address")
        return addr

    def probe(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        """Run every probe, all at once (each source's agent runs its batch concurrently)."""
        self.settle()
        batches: dict[str, list[int]] = {}
        for i, p in enumerate(probes):
            batches.setdefault(p.source, []).append(i)
        for source, indices in batches.items():
            items = [{"protocol": probes[i].protocol, "address": self.address(probes[i].destination, probes[i].version),
                      "port": probes[i].port, "version": probes[i].version, "timeout": self.timeout}
                     for i in indices]
            self._agents[source].send({"op": "probe", "items": items})
        deadline = time.monotonic() + self.timeout * 2 + 10
        results: list[ProbeResult | None] = [None] * len(probes)
        for source, indices in batches.items():
            reply = self._agents[source].recv(deadline)
            for i, r in zip(indices, reply["results"], strict=True):
                results[i] = ProbeResult(probes[i], bool(r["ok"]), r.get("answered_by"), str(r.get("detail", "")))
        return [r for r in results if r is not None]

    # -- teardown ----------------------------------------------------------------------------------------

    def close(self) -> None:
        for agent in self._agents.values():
            try:
                agent.send({"op": "quit"})
                if agent.proc.stdin is not None:
                    agent.proc.stdin.close()
            except OSError:
                pass
        for agent in self._agents.values():
            try:
                agent.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(timeout=3)
            if agent.proc.stdout is not None:
                agent.proc.stdout.close()
        self._agents.clear()
        failures = []
        for ns in reversed(self._namespaces):
            r = subprocess.run([self.ip, "netns", "del", ns], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                failures.append(f"{ns}: {r.stderr.strip()}")
        self._namespaces.clear()
        self._router = None
        if failures:
            raise TwinError("could not delete namespaces: " + "; ".join(failures))


# -- the agent (runs inside a host namespace) ---------------------------------------------------------


def agent_main(name: str) -> int:
    """Serve and probe on behalf of :class:`Lab`: one JSON command per stdin line, one reply per line."""
    greeting = f"{GREETING} {name}\n".encode()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "serve":
                for port in cmd["tcp"]:
                    threading.Thread(target=_serve_tcp, args=(_listen(socket.SOCK_STREAM, port), greeting),
                                     daemon=True).start()
                for port in cmd["udp"]:
                    threading.Thread(target=_serve_udp, args=(_listen(socket.SOCK_DGRAM, port), greeting),
                                     daemon=True).start()
                reply: dict[str, Any] = {"ok": True}
            elif cmd["op"] == "probe":
                with ThreadPoolExecutor(max_workers=max(1, len(cmd["items"]))) as pool:
                    reply = {"results": list(pool.map(_probe_one, cmd["items"]))}
            else:
                reply = {"error": f"unknown op {cmd['op']!r}"}
        except (OSError, ValueError, KeyError) as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


def _listen(kind: socket.SocketKind, port: int) -> socket.socket:
    if socket.has_ipv6:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # one socket for IPv4 and IPv6
        address: tuple[str, int] = ("::", port)
    else:
        s = socket.socket(socket.AF_INET, kind)
        address = ("0.0.0.0", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(address)
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    return s


def _serve_tcp(server: socket.socket, greeting: bytes) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                conn.sendall(greeting)
            except OSError:
                pass


def _serve_udp(server: socket.socket, greeting: bytes) -> None:
    while True:
        _, peer = server.recvfrom(2048)
        try:
            server.sendto(greeting, peer)
        except OSError:
            pass


def _probe_one(item: dict[str, Any]) -> dict[str, Any]:
    family = socket.AF_INET if item["version"] == 4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if item["protocol"] == "tcp" else socket.SOCK_DGRAM
    timeout = float(item["timeout"])
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(timeout)
            if kind == socket.SOCK_STREAM:
                s.connect((item["address"], item["port"]))
                data = s.recv(256)
            else:
                s.sendto(b"probe", (item["address"], item["port"]))
                data, _ = s.recvfrom(256)
    except OSError as e:  # socket.timeout is an OSError
        return {"ok": False, "answered_by": None, "detail": f"{type(e).__name__}: {e}"}
    words = data.decode(errors="replace").split()
    if len(words) == 2 and words[0] == GREETING:
        return {"ok": True, "answered_by": words[1], "detail": "answered"}
    return {"ok": False, "answered_by": None, "detail": f"unexpected answer {data[:40]!r}"}
