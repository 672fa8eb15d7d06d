"""network-config-analyzer (NCA) as an independent oracle for compiled Kubernetes NetworkPolicies.

NCA is IBM's np-guard evaluator of NetworkPolicy connectivity. It runs from its own virtual
environment (``.nca-venv``, made by ``scripts/setup-nca.sh`` / ``make nca``) and only as a subprocess:
it is never imported, so its dependencies and global state stay out of microseg's process.

The command line used (discovered with ``nca --help`` and by running it on small examples)::

    .nca-venv/bin/nca --connectivity -r DIR -o txt_no_fw_rules --print_ipv6 -f OUT

``-r DIR`` reads every resource in DIR (Namespaces, Deployments, NetworkPolicies); ``--connectivity``
with no value analyses those policies instead of a live cluster. ``txt_no_fw_rules`` writes one line
per connected pair and connection cube, without NCA's firewall-rule minimisation::

    shop/web[Deployment] => shop/db[Deployment] : {protocols:TCP,dst_ports:80,5432-5440}
    shop/web[Deployment] => shop/db[Deployment] : {protocols:UDP,dst_ports:53}
    shop/web[Deployment] => 0.0.0.0-9.255.255.255 : {protocols:TCP,dst_ports:443}
    kube-system/coredns[Deployment] => 0.0.0.0-255.255.255.255 : All connections

A pair may span several lines (one per cube), and a connection string may also read
``All but {...}`` (NCA prints the complement when it is shorter) or list protocols as
``TCP, UDP`` / ``all but TCP``. Pairs with no connection are not printed, nor self-loops. IP peers are
address ranges, split wherever the connectivity changes; ``--print_ipv6`` makes IPv6 ranges appear
even when no policy names one.

Both NCA's and microseg's connections are normalised to :class:`ConnSet` (protocol number -> port
intervals, port 0 dropped because NetworkPolicy ports are 1-65535) and compared as canonical strings:
``All Connections`` or e.g. ``TCP 80,5432-5440,UDP 53``.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from microseg.ir.model import Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections, Evaluator, is_enforced
from microseg.ir.semantics import connectivity as microseg_connectivity

REPO = Path(__file__).resolve().parents[2]
NCA_VENV = REPO / ".nca-venv"
NCA_VERSION = "2.1.0"
SETUP_HINT = ("network-config-analyzer is a required test component: run `make nca` "
              "(or scripts/setup-nca.sh) to create .nca-venv with network-config-analyzer " + NCA_VERSION)
NCA_TIMEOUT_S = 600

Interval = tuple[int, int]
Intervals = tuple[Interval, ...]
PORTS: Intervals = ((1, 65535),)
PORT_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}
# The few IANA names NCA can print for our policies; anything else is reported, never guessed.
PROTOCOL_NUMBERS = {"ICMP": 1, "TCP": 6, "UDP": 17, "ICMPv6": 58, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items()}
_IR_PROTOCOLS = {Protocol.TCP: (6,), Protocol.UDP: (17,), Protocol.SCTP: (132,), Protocol.ICMP: (1, 58)}
_CUBE_KEYS = ("protocols", "src_ports", "dst_ports", "icmp_type", "icmp_code", "methods", "paths", "hosts")
_CUBE_SPLIT = re.compile(r",(?=(?:" + "|".join(_CUBE_KEYS) + r"):)")
_LINE = re.compile(r"^(?P<src>\S.*?) => (?P<dst>\S.*?) : (?P<conn>\S.*)$")
_POD = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<kind>[A-Za-z]+)\]$")


class NcaOutputError(AssertionError):
    """NCA printed something this parser does not understand: fail loudly, never guess."""


# -- intervals -----------------------------------------------------------------------------------------


def _merge(intervals: Iterable[Interval]) -> Intervals:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _minus(a: Intervals, b: Intervals) -> Intervals:
    out: list[Interval] = []
    for lo, hi in a:
        cur = lo
        for blo, bhi in b:
            if bhi < cur or blo > hi:
                continue
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
        if cur <= hi:
            out.append((cur, hi))
    return _merge(out)


# -- connection sets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnSet:
    """Allowed connections: protocol number (0-255) -> destination-port intervals (1-65535).

    Protocols without ports (ICMP, ...) are present with the full interval or absent.
    """

    by_proto: tuple[tuple[int, Intervals], ...] = ()

    @staticmethod
    def of(mapping: Mapping[int, Iterable[Interval]]) -> ConnSet:
        items = ((p, _merge(ivs)) for p, ivs in mapping.items())
        return ConnSet(tuple(sorted((p, ivs) for p, ivs in items if ivs)))

    @staticmethod
    def everything() -> ConnSet:
        return ConnSet.of({p: PORTS for p in range(256)})

    @staticmethod
    def from_connections(c: Connections) -> ConnSet:
        if c.everything:
            return ConnSet.everything()
        acc: dict[int, list[Interval]] = {}
        for proto, ranges in c.ports:
            for number in _IR_PROTOCOLS[proto]:
                if number not in PORT_PROTOCOLS:
                    acc.setdefault(number, []).extend(PORTS)
                    continue
                # NetworkPolicy (and NCA) ports are 1-65535: port 0 is not a destination port.
                acc.setdefault(number, []).extend((max(r.start, 1), r.end) for r in ranges if r.end >= 1)
        return ConnSet.of(acc)

    def as_dict(self) -> dict[int, Intervals]:
        return dict(self.by_proto)

    def __or__(self, other: ConnSet) -> ConnSet:
        acc: dict[int, list[Interval]] = {}
        for p, ivs in self.by_proto + other.by_proto:
            acc.setdefault(p, []).extend(ivs)
        return ConnSet.of(acc)

    def __sub__(self, other: ConnSet) -> ConnSet:
        theirs = other.as_dict()
        return ConnSet.of({p: _minus(ivs, theirs.get(p, ())) for p, ivs in self.by_proto})

    def __bool__(self) -> bool:
        return bool(self.by_proto)

    def __str__(self) -> str:
        if self == ConnSet.everything():
            return "All Connections"
        if not self.by_proto:
            return "No Connections"
        parts = []
        for p, ivs in sorted(self.by_proto, key=lambda item: (_proto_name(item[0]), item[0])):
            if p not in PORT_PROTOCOLS and ivs == PORTS:
                parts.append(_proto_name(p))
            else:
                parts.append(_proto_name(p) + " " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ivs))
        return ",".join(parts)


def _proto_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, f"proto-{number}")


def canonical(c: Connections) -> str:
    """microseg's connections in the canonical form NCA's output is normalised to."""
    return str(ConnSet.from_connections(c))


# -- parsing NCA's txt_no_fw_rules output ------------------------------------------------------------------


def _protocols(text: str) -> set[int]:
    text = text.strip()
    negate = text.startswith("all but ")
    names = text[len("all but "):] if negate else text
    numbers = set()
    for name in (n.strip() for n in names.split(",")):
        if name.isdigit():
            numbers.add(int(name))
        elif name in PROTOCOL_NUMBERS:
            numbers.add(PROTOCOL_NUMBERS[name])
        else:
            raise NcaOutputError(f"unknown protocol name in NCA output: {name!r}")
    return set(range(256)) - numbers if negate else numbers


def _ports(text: str) -> Intervals:
    out = []
    for item in text.split(","):
        lo, _, hi = item.strip().partition("-")
        out.append((int(lo), int(hi or lo)))
    return _merge(out)


def _cube(text: str) -> ConnSet:
    protocols: set[int] = set(range(256))
    ports: Intervals = PORTS
    for field in _CUBE_SPLIT.split(text):
        key, sep, value = field.partition(":")
        if not sep:
            raise NcaOutputError(f"cannot read NCA connection cube {{{text}}}")
        if key == "protocols":
            protocols = _protocols(value)
        elif key == "dst_ports":
            ports = _ports(value)
        else:  # src_ports, ICMP types, HTTP methods: nothing a microseg NetworkPolicy produces
            raise NcaOutputError(f"unexpected dimension {key!r} in NCA connection cube {{{text}}}")
    return ConnSet.of({p: ports for p in protocols})


def parse_connections(text: str) -> ConnSet:
    """One NCA connection string (``All connections``, ``{...},{...}``, ``All but {...}``) as a ConnSet."""
    text = text.strip()
    if text == "All connections":
        return ConnSet.everything()
    if text == "No connections":
        return ConnSet()
    negate = text.startswith("All but ")
    body = text[len("All but "):] if negate else text
    if not (body.startswith("{") and body.endswith("}")):
        raise NcaOutputError(f"cannot read NCA connections {text!r}")
    result = ConnSet()
    for cube in body[1:-1].split("},{"):
        result = result | _cube(cube)
    return ConnSet.everything() - result if negate else result


@dataclass(frozen=True)
class IpRange:
    version: int
    lo: int
    hi: int

    def __str__(self) -> str:
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        lo, hi = cls(self.lo), cls(self.hi)
        return str(lo) if self.lo == self.hi else f"{lo}-{hi}"


Endpoint = str | tuple[IpRange, ...]  # a pod's "ns/name", or the address ranges of an IP peer


def _ip_ranges(text: str) -> tuple[IpRange, ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "/" in item:
                net = ipaddress.ip_network(item, strict=False)
                out.append(IpRange(net.version, int(net.network_address), int(net.broadcast_address)))
            else:
                a, _, b = item.partition("-")
                lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b or a)
                out.append(IpRange(lo.version, int(lo), int(hi)))
        except ValueError:
            raise NcaOutputError(f"cannot read NCA peer {text!r}") from None
    return tuple(out)


def _endpoint(text: str) -> Endpoint:
    m = _POD.match(text)
    if m:
        return m["name"]
    return _ip_ranges(text)


@dataclass(frozen=True)
class NcaLine:
    src: Endpoint
    dst: Endpoint
    conns: ConnSet


def parse_connectivity(text: str) -> list[NcaLine]:
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        m = _LINE.match(raw)
        if not m:
            raise NcaOutputError(f"cannot read NCA output line {raw!r}")
        lines.append(NcaLine(_endpoint(m["src"]), _endpoint(m["dst"]), parse_connections(m["conn"])))
    return lines


# -- running NCA ---------------------------------------------------------------------------------------------


def nca_executable() -> Path:
    exe = NCA_VENV / "bin" / "nca"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing. {SETUP_HINT}", pytrace=False)
    return exe


def run_nca(manifest_dir: Path) -> str:
    """NCA's connectivity map of every resource in ``manifest_dir``, in txt_no_fw_rules format."""
    out = manifest_dir.parent / (manifest_dir.name + ".nca.txt")
    cmd = [str(nca_executable()), "--connectivity", "-r", str(manifest_dir), "-o", "txt_no_fw_rules",
           "--print_ipv6", "-f", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=NCA_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise AssertionError(f"NCA failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return out.read_text(encoding="utf-8")


def connectivity(manifest_dir: Path) -> dict[tuple[str, str], str]:
    """NCA's verdict: (source, destination) -> canonical connections.

    Pods are ``ns/name`` of their Deployment; IP peers are their address ranges as NCA split them
    (``10.0.0.0-10.255.255.255``, ``10.0.0.5``). Lines of the same pair are united.
    """
    acc: dict[tuple[str, str], ConnSet] = {}
    for line in parse_connectivity(run_nca(manifest_dir)):
        key = (_endpoint_str(line.src), _endpoint_str(line.dst))
        acc[key] = acc.get(key, ConnSet()) | line.conns
    return {k: str(v) for k, v in sorted(acc.items())}


def _endpoint_str(e: Endpoint) -> str:
    return e if isinstance(e, str) else ",".join(str(r) for r in e)


# -- the pods NCA needs ------------------------------------------------------------------------------------------

_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _deployment_name(w: Workload, ns: str, index: int) -> str:
    short = w.name[len(ns) + 1:] if w.name.startswith(ns + "/") else w.name
    if len(short) <= 63 and _DNS1123.fullmatch(short):
        return short
    return f"workload-{index}"  # unique within this manifest set; mapped back by the caller


def _namespace(w: Workload) -> str:
    ns = w.namespace or (w.name.split("/", 1)[0] if "/" in w.name else None)
    if not ns:
        raise ValueError(f"Kubernetes workload {w.name!r} has no namespace")
    return ns


def workload_manifests(policy: Policy) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Namespace and Deployment objects for the policy's Kubernetes workloads.

    Returns the documents and the map ``"ns/deployment"`` -> workload name. Pod template labels are
    the workload's labels plus its selector (a Deployment's selector must match its template), and
    namespaces carry ``kubernetes.io/metadata.name`` as the API server sets it.
    """
    namespaces: dict[str, dict[str, str]] = {}
    deployments: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    k8s = sorted((w for w in policy.workloads if w.kind == WorkloadKind.KUBERNETES), key=lambda w: w.name)
    for index, w in enumerate(k8s):
        ns = _namespace(w)
        labels = namespaces.setdefault(ns, {})
        labels.update(dict(w.namespace_labels))
        labels["kubernetes.io/metadata.name"] = ns
        dep = _deployment_name(w, ns, index)
        if f"{ns}/{dep}" in names:
            raise ValueError(f"workloads {names[f'{ns}/{dep}']!r} and {w.name!r} map to one Deployment {ns}/{dep}")
        names[f"{ns}/{dep}"] = w.name
        pod_labels = {**dict(w.labels), **dict(w.selector)} or {"microseg.io/oracle-workload": dep}
        container: dict[str, Any] = {"name": "main", "image": "registry.invalid/microseg-oracle:0"}
        ports = [{"containerPort": p.port, "protocol": p.protocol.value} for p in w.ports
                 if p.protocol in (Protocol.TCP, Protocol.UDP, Protocol.SCTP) and p.port > 0]
        if ports:
            container["ports"] = ports
        deployments.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": dep, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": dict(w.selector) or pod_labels},
                     "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [container]}}},
        })
    ns_docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns, "labels": dict(sorted(labels.items()))}}
                                     for ns, labels in sorted(namespaces.items())]
    return ns_docs + deployments, names


# -- the comparison --------------------------------------------------------------------------------------------


def _address_set(w: Workload) -> list[IpRange]:
    """The addresses a non-Kubernetes workload stands for: its CIDRs minus its exceptions."""
    out = []
    for version in (4, 6):
        nets = [ipaddress.ip_network(a, strict=False) for a in w.addresses]
        excepts = [ipaddress.ip_network(a, strict=False) for a in w.except_addresses]
        inc = _merge((int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version)
        exc = _merge((int(n.network_address), int(n.broadcast_address)) for n in excepts if n.version == version)
        out += [IpRange(version, lo, hi) for lo, hi in _minus(inc, exc)]
    return out


def _whole_space() -> list[IpRange]:
    return [IpRange(4, 0, 2**32 - 1), IpRange(6, 0, 2**128 - 1)]


def _ip_mismatches(expected: Sequence[tuple[IpRange, ConnSet]],
                   actual: Sequence[tuple[IpRange, ConnSet]]) -> list[tuple[IpRange, ConnSet, ConnSet]]:
    """Split the address space where either side changes; report the pieces where they differ."""
    out: list[tuple[IpRange, ConnSet, ConnSet]] = []
    for version in (4, 6):
        exp = [(r, c) for r, c in expected if r.version == version]
        act = [(r, c) for r, c in actual if r.version == version]
        points = sorted({p for r, _ in exp + act for p in (r.lo, r.hi + 1)})
        for lo, nxt in zip(points, points[1:], strict=False):
            e, a = ConnSet(), ConnSet()
            for r, c in exp:
                if r.lo <= lo <= r.hi:
                    e = e | c
            for r, c in act:
                if r.lo <= lo <= r.hi:
                    a = a | c
            if e != a:
                if out and out[-1][0].version == version and out[-1][0].hi + 1 == lo and out[-1][1:] == (e, a):
                    out[-1] = (IpRange(version, out[-1][0].lo, nxt - 1), e, a)
                else:
                    out.append((IpRange(version, lo, nxt - 1), e, a))
    return out


def assert_nca_agrees(policy: Policy, compiled_files: Mapping[str, str], tmp_path: Path, *,
                      mode: Literal["enforce", "observe"] = "enforce") -> None:
    """NCA's connectivity of the compiled NetworkPolicies equals microseg's own evaluation.

    Compared pair by pair:

    * every ordered pair of distinct Kubernetes workloads of the policy (``enforce``: the
      evaluator's verdict; ``observe``: everything, since observe mode must block nothing);
    * between each *enforced* Kubernetes workload and the address space, in both directions: the
      union of the evaluator's verdicts for the hosts, managed services and external peers whose
      addresses (minus exceptions) cover an address, against NCA's verdict for that address.
      Addresses no workload stands for must be unreachable. Pods in excluded namespaces are left out
      on this side: NetworkPolicy does not restrict them, and their traffic to hosts is the business
      of the host back ends.
    """
    manifest_dir = tmp_path / "nca-input"
    manifest_dir.mkdir(parents=True)
    docs, names = workload_manifests(policy)
    (manifest_dir / "00-workloads.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    for rel, text in sorted(compiled_files.items()):
        if rel.endswith((".yaml", ".yml")):
            target = manifest_dir / "compiled" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    raw = run_nca(manifest_dir)
    lines = parse_connectivity(raw)

    workloads = {w.name: w for w in policy.workloads}
    k8s = sorted(workloads[n].name for n in names.values())
    excluded = policy.settings.excluded_namespaces
    enforced = [n for n in k8s if mode == "enforce" and is_enforced(workloads[n], excluded)]
    everything = ConnSet.everything()

    def pod(e: Endpoint) -> str | None:
        if not isinstance(e, str):
            return None
        if e not in names:
            raise NcaOutputError(f"NCA reports a pod of unknown Deployment {e!r}")
        return names[e]

    actual_pairs: dict[tuple[str, str], ConnSet] = {}
    actual_ip: dict[tuple[str, str], list[tuple[IpRange, ConnSet]]] = {}
    for line in lines:
        s, d = pod(line.src), pod(line.dst)
        if s is not None and d is not None:
            actual_pairs[s, d] = actual_pairs.get((s, d), ConnSet()) | line.conns
        elif s is not None and not isinstance(line.dst, str):
            actual_ip.setdefault((s, "egress"), []).extend((r, line.conns) for r in line.dst)
        elif d is not None and not isinstance(line.src, str):
            actual_ip.setdefault((d, "ingress"), []).extend((r, line.conns) for r in line.src)

    if mode == "enforce":
        expected_pairs = {k: ConnSet.from_connections(c) for k, c in microseg_connectivity(policy, k8s).items()}
    else:
        expected_pairs = {(s, d): everything for s in k8s for d in k8s if s != d}
    problems = []
    for key in sorted(set(expected_pairs) | set(actual_pairs)):
        e, a = expected_pairs.get(key, ConnSet()), actual_pairs.get(key, ConnSet())
        if e != a:
            problems.append(f"{key[0]} -> {key[1]}: microseg {e}, NCA {a}")

    ev = Evaluator(policy)
    peers = [w for w in policy.workloads if w.kind != WorkloadKind.KUBERNETES]
    ip_pods = enforced if mode == "enforce" else k8s
    for name in ip_pods:
        for direction in ("egress", "ingress"):
            expected: list[tuple[IpRange, ConnSet]] = []
            if mode == "observe":
                expected = [(r, everything) for r in _whole_space()]
            else:
                for w in peers:
                    c = ev.pair(name, w.name) if direction == "egress" else ev.pair(w.name, name)
                    conns = ConnSet.from_connections(c)
                    if conns:
                        expected += [(r, conns) for r in _address_set(w)]
            for r, e, a in _ip_mismatches(expected, actual_ip.get((name, direction), [])):
                arrow = f"{name} -> {r}" if direction == "egress" else f"{r} -> {name}"
                problems.append(f"{arrow}: microseg {e}, NCA {a}")

    if problems:
        raise AssertionError("NCA disagrees with microseg's evaluation of the compiled NetworkPolicies "
                             f"({len(problems)} difference(s)):\n  " + "\n  ".join(problems)
                             + f"\nNCA output ({manifest_dir}):\n{raw}")


# -- Calico (additions; the NetworkPolicy functions above are unchanged) -----------------------------------------


def calico_files_for_nca(files: Mapping[str, str]) -> dict[str, str]:
    """The Calico back end's output in the form NCA 2.1.0 reads.

    NCA's Calico parser knows ``NetworkPolicy``/``GlobalNetworkPolicy``/``Profile`` of
    ``projectcalico.org/v3`` with ``order`` but no tiers: ``spec.tier`` is rejected as an unknown key and
    ``Tier`` objects are not read. With every policy in one tier and no other policies present, one
    ordered list is the same evaluation (a tier that selects an endpoint and does not act denies, as
    NCA's end of list does for captured endpoints), so ``Tier`` objects are dropped and ``spec.tier``
    removed. Anything that would make that equivalence false (two tiers, a ``Pass`` rule, NCA-unsupported
    ``serviceAccountSelector``) is refused rather than silently translated.
    """
    out: dict[str, str] = {}
    tiers: set[str] = set()
    for rel, text in sorted(files.items()):
        if not rel.endswith((".yaml", ".yml")):
            continue
        docs = []
        for doc in yaml.safe_load_all(text):
            if doc is None or doc.get("kind") == "Tier":
                continue
            spec = doc.get("spec") or {}
            tiers.add(str(spec.pop("tier", "default")))
            if "serviceAccountSelector" in spec:
                raise ValueError("NCA 2.1.0 does not read serviceAccountSelector: use workloads without service "
                                 "accounts for the NCA comparison")
            if any(r.get("action") == "Pass" for r in (spec.get("ingress") or []) + (spec.get("egress") or [])):
                raise ValueError("a Pass rule means something else without tiers")
            docs.append(doc)
        if docs:
            out[rel] = yaml.safe_dump_all(docs, sort_keys=False)
    if len(tiers) > 1:
        raise ValueError(f"policies in several tiers ({sorted(tiers)}): NCA has no tiers")
    return out


def assert_nca_agrees_calico(policy: Policy, compiled_files: Mapping[str, str], tmp_path: Path, *,
                             mode: Literal["enforce", "observe"] = "enforce") -> None:
    """NCA's connectivity of compiled Calico policies equals microseg's evaluation (see assert_nca_agrees)."""
    assert_nca_agrees(policy, calico_files_for_nca(compiled_files), tmp_path, mode=mode)


# -- Istio AuthorizationPolicy (additions; the functions above are unchanged) -----------------------------------


def istio_workload_manifests(policy: Policy) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """:func:`workload_manifests` with each Deployment running under its workload's service account.

    NCA matches ``principals`` against ``cluster.local/ns/<namespace>/sa/<serviceAccountName>`` of the pods
    (only that trust domain, and only ``[\\w-]`` names); a pod without ``serviceAccountName`` runs as
    ``default``, as in Kubernetes. The account is the one of the workload's SPIFFE ID, else its
    ``service_account``.
    """
    docs, names = workload_manifests(policy)
    workloads = policy.workload_map()
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        w = workloads[names[f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"]]
        account = w.service_account
        if w.identity and w.identity.startswith("spiffe://"):
            account = w.identity.rsplit("/sa/", 1)[-1]
        if account:
            doc["spec"]["template"]["spec"]["serviceAccountName"] = account
    return docs, names


def run_nca_istio(manifest_dir: Path) -> tuple[dict[str, list[NcaLine]], str]:
    """NCA's connectivity of Istio policies: its output has a ``TCP Connections:`` and a
    ``non-TCP Connections:`` section (Istio governs TCP only); returns the lines per section and the raw text."""
    raw = run_nca(manifest_dir)
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in raw.splitlines():
        if line.strip() in ("TCP Connections:", "non-TCP Connections:"):
            current = line.strip()[:-1]
            sections[current] = []
        elif line.strip():
            if current is None:
                raise NcaOutputError(f"NCA output line outside a section: {line!r}")
            sections[current].append(line)
    return {k: parse_connectivity("\n".join(v)) for k, v in sections.items()}, raw


def _tcp_only(c: ConnSet) -> ConnSet:
    return ConnSet.of({6: c.as_dict().get(6, ())})


def assert_nca_agrees_istio(policy: Policy, compiled_files: Mapping[str, str], tmp_path: Path) -> None:
    """NCA's TCP connectivity of compiled Istio policies equals microseg's evaluation at mesh destinations.

    A mesh destination is a Kubernetes workload outside the excluded namespaces (AuthorizationPolicy is
    enforced at the destination, for TCP). Compared:

    * every (Kubernetes source, mesh destination) pair: the evaluator's TCP connections (ports 1-65535);
    * address space -> each mesh destination: the union of the evaluator's TCP verdicts for the hosts,
      managed services and external peers whose addresses (minus exceptions) cover an address, against
      NCA's verdict for that address; addresses no workload stands for must be denied.

    NCA 2.1.0 models neither PeerAuthentication (mTLS) nor the ``istio.io/dry-run`` annotation: it
    evaluates every AuthorizationPolicy as enforced, so for observe-mode output this checks the shadow
    decisions the dry-run policies report.
    """
    manifest_dir = tmp_path / "nca-istio-input"
    manifest_dir.mkdir(parents=True)
    docs, names = istio_workload_manifests(policy)
    (manifest_dir / "00-workloads.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    for rel, text in sorted(compiled_files.items()):
        if rel.endswith((".yaml", ".yml")):
            target = manifest_dir / "compiled" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    sections, raw = run_nca_istio(manifest_dir)
    if "TCP Connections" not in sections:
        raise NcaOutputError(f"NCA printed no TCP section (did it read the AuthorizationPolicies?):\n{raw}")

    workloads = {w.name: w for w in policy.workloads}
    excluded = policy.settings.excluded_namespaces
    k8s = sorted(names.values())
    mesh = [n for n in k8s if is_enforced(workloads[n], excluded)]

    def pod(e: Endpoint) -> str | None:
        if not isinstance(e, str):
            return None
        if e not in names:
            raise NcaOutputError(f"NCA reports a pod of unknown Deployment {e!r}")
        return names[e]

    actual_pairs: dict[tuple[str, str], ConnSet] = {}
    actual_ip: dict[str, list[tuple[IpRange, ConnSet]]] = {}
    for line in sections["TCP Connections"]:
        s, d = pod(line.src), pod(line.dst)
        if d is None or d not in mesh:
            continue
        conns = _tcp_only(line.conns)
        if s is not None:
            actual_pairs[s, d] = actual_pairs.get((s, d), ConnSet()) | conns
        elif not isinstance(line.src, str):
            actual_ip.setdefault(d, []).extend((r, conns) for r in line.src)

    ev = Evaluator(policy)
    problems = []
    for d in mesh:
        for s in k8s:
            if s == d:
                continue
            e, a = _tcp_only(ConnSet.from_connections(ev.pair(s, d))), actual_pairs.get((s, d), ConnSet())
            if e != a:
                problems.append(f"{s} -> {d}: microseg {e}, NCA {a}")
        expected: list[tuple[IpRange, ConnSet]] = []
        for w in policy.workloads:
            if w.kind == WorkloadKind.KUBERNETES:
                continue
            conns = _tcp_only(ConnSet.from_connections(ev.pair(w.name, d)))
            if conns:
                expected += [(r, conns) for r in _address_set(w)]
        for r, e, a in _ip_mismatches(expected, actual_ip.get(d, [])):
            problems.append(f"{r} -> {d}: microseg {e}, NCA {a}")
    if problems:
        raise AssertionError("NCA disagrees with microseg's evaluation of the compiled Istio policies "
                             f"({len(problems)} difference(s)):\n  " + "\n  ".join(problems)
                             + f"\nNCA output ({manifest_dir}):\n{raw}")
