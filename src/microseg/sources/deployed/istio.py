"""Read Istio security policies back into per-pair connectivity (the istio back end's read-back).

``read_back(files, policy)`` parses every ``*.yaml``/``*.yml`` file of ``files`` (the istio back end's
output, or a hand-edited variant of it) and evaluates the AuthorizationPolicies and
PeerAuthentications for the policy's universe of workloads, the way an Istio sidecar evaluates them at
the destination (https://istio.io/latest/docs/reference/config/security/authorization-policy/):

* The policies that apply to a Kubernetes workload are those of its namespace whose
  ``selector.matchLabels`` is contained in its pod labels (labels and selector), or that have no
  selector. Policies annotated ``istio.io/dry-run: "true"`` enforce nothing and are ignored, unless
  ``dry_run_as_enforced`` asks for the shadow result Istio reports for them.
* No ALLOW policy applies: every TCP connection is allowed. Otherwise a connection is allowed when
  some rule of some applicable ALLOW policy matches: one ``from`` source (all its fields ANDed) and one
  ``to`` operation; an absent ``from`` or ``to`` matches anything. A rule with no fields at all is
  refused rather than guessed.
* A Kubernetes source matches ``principals`` by the principal its certificate carries: its SPIFFE ID
  without ``spiffe://``, else ``cluster.local/ns/<namespace>/sa/<service account>``, and the
  namespace's ``default`` service account when it has none (the pod's account then). Pod addresses
  are not part of the IR, so a Kubernetes source never matches ``ipBlocks``.
* A host, managed service or external peer has no mesh identity: it never matches ``principals``,
  it matches ``ipBlocks``/``notIpBlocks`` when *all* of its addresses (``addresses`` minus
  ``except_addresses``) are inside the blocks and outside the exceptions, and it connects in plaintext,
  so only on the ports where the destination's effective PeerAuthentication mode is not STRICT
  (workload policy, with its ``portLevelMtls``, over the namespace policy; ``UNSET`` inherits, and a
  mesh without any policy is PERMISSIVE).

The result has, for every ordered pair (source, destination) of distinct workloads of the universe
whose destination is a Kubernetes workload, the TCP connections Istio allows; pairs with none are
omitted. Only TCP is reported: Istio proxies nothing else, so it neither allows nor denies it. Port 0
is never reported (it is no destination port); "every port" reads back as 1-65535.

Fail closed: a kind, field, action, wildcard (``*`` prefix/suffix matching), condition (``when``) or L7
attribute this reader does not evaluate exactly raises :class:`~microseg.errors.InputError` naming the
file and the field; it never guesses a verdict.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from microseg.errors import InputError
from microseg.ir import intervals
from microseg.ir.model import Policy, PortRange, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import Connections, merge_ranges

API_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
DRY_RUN_ANNOTATION = "istio.io/dry-run"
DEFAULT_TRUST_DOMAIN = "cluster.local"
ALL_TCP = PortRange(start=1, end=65535)

_SPIFFE = "spiffe://"
_AP_SPEC_KEYS = {"selector", "action", "rules"}
_PA_SPEC_KEYS = {"selector", "mtls", "portLevelMtls"}
_RULE_KEYS = {"from", "to"}
_SOURCE_KEYS = {"principals", "ipBlocks", "notIpBlocks"}
_OPERATION_KEYS = {"ports"}
_MODES = {"UNSET", "DISABLE", "PERMISSIVE", "STRICT"}

Interval = intervals.Interval


@dataclass(frozen=True)
class _Source:
    principals: frozenset[str] | None
    ip: tuple[tuple[int, tuple[Interval, ...]], ...] | None  # per IP version: allowed address intervals


@dataclass(frozen=True)
class _Rule:
    sources: tuple[_Source, ...] | None  # None: any source
    ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class _Authz:
    file: str
    namespace: str
    selector: dict[str, str] | None
    dry_run: bool
    rules: tuple[_Rule, ...]


@dataclass(frozen=True)
class _PeerAuthn:
    file: str
    namespace: str
    selector: dict[str, str] | None
    mode: str
    ports: dict[int, str]


def read_back(files: Mapping[str, str], policy: Policy, *,
              dry_run_as_enforced: bool = False) -> dict[tuple[str, str], Connections]:
    """Allowed TCP connections per ordered pair whose destination is a Kubernetes workload of ``policy``."""
    authz: list[_Authz] = []
    peer_authn: list[_PeerAuthn] = []
    for path in sorted(files):
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            docs = list(yaml.safe_load_all(files[path]))
        except yaml.YAMLError as exc:
            raise InputError(f"not YAML: {exc}", file=path) from None
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            _parse(path, index, doc, authz, peer_authn)
    out: dict[tuple[str, str], Connections] = {}
    workloads = sorted(policy.workloads, key=lambda w: w.name)
    for d in workloads:
        if d.kind != WorkloadKind.KUBERNETES:
            continue
        ns = _namespace_of(d)
        labels = {**dict(d.labels), **dict(d.selector)}
        applicable = [a for a in authz if a.namespace == ns and _selects(a.selector, labels)
                      and (dry_run_as_enforced or not a.dry_run)]
        plaintext = _plaintext_ports(peer_authn, ns, labels, d.name)
        for s in workloads:
            if s.name == d.name:
                continue
            if not applicable:
                ranges: list[PortRange] = [ALL_TCP]
            else:
                ranges = [p for a in applicable for r in a.rules if _matches(r, s) for p in r.ports]
            if s.kind != WorkloadKind.KUBERNETES:
                ranges = _intersect(ranges, plaintext)
            conns = Connections.of((Protocol.TCP, r) for r in ranges)
            if not conns.empty:
                out[(s.name, d.name)] = conns
    return out


# -- parsing ---------------------------------------------------------------------------------------------


def _parse(path: str, index: int, doc: Any, authz: list[_Authz], peer_authn: list[_PeerAuthn]) -> None:
    where = f"document {index + 1}"
    if not isinstance(doc, dict):
        raise InputError(f"{where} is not a mapping", file=path)
    kind = doc.get("kind")
    if doc.get("apiVersion") not in API_VERSIONS or kind not in ("AuthorizationPolicy", "PeerAuthentication"):
        raise InputError(f"{where}: {doc.get('apiVersion')!r}/{kind!r} is not an Istio security policy this reader "
                         "evaluates", file=path, field="kind")
    meta = _mapping(doc.get("metadata"), path, "metadata")
    ns = meta.get("namespace")
    if not isinstance(ns, str) or not ns:
        raise InputError(f"{where} has no namespace", file=path, field="metadata.namespace")
    notes = _mapping(meta.get("annotations") or {}, path, "metadata.annotations")
    spec = _mapping(doc.get("spec") or {}, path, "spec")
    selector = _selector(spec.get("selector"), path)
    if kind == "AuthorizationPolicy":
        _known(spec, _AP_SPEC_KEYS, path, "spec")
        if spec.get("action", "ALLOW") != "ALLOW":
            raise InputError(f"action {spec.get('action')!r} is not evaluated by this reader", file=path,
                             field="spec.action")
        dry = notes.get(DRY_RUN_ANNOTATION)
        if dry not in (None, "true", "false"):
            raise InputError(f"annotation {DRY_RUN_ANNOTATION} must be \"true\" or \"false\"", file=path,
                             field="metadata.annotations")
        rules = tuple(_rule(r, path, f"spec.rules[{i}]") for i, r in enumerate(_list(spec.get("rules", []), path,
                                                                                        "spec.rules")))
        authz.append(_Authz(path, ns, selector, dry == "true", rules))
    else:
        _known(spec, _PA_SPEC_KEYS, path, "spec")
        mode = _mode(spec.get("mtls"), path, "spec.mtls")
        ports: dict[int, str] = {}
        for key, value in _mapping(spec.get("portLevelMtls") or {}, path, "spec.portLevelMtls").items():
            port = _port(key, path, "spec.portLevelMtls")
            ports[port] = _mode(value, path, f"spec.portLevelMtls.{port}")
        if ports and selector is None:
            raise InputError("portLevelMtls requires a selector", file=path, field="spec.portLevelMtls")
        peer_authn.append(_PeerAuthn(path, ns, selector, mode, ports))


def _rule(raw: Any, path: str, field: str) -> _Rule:
    rule = _mapping(raw, path, field)
    _known(rule, _RULE_KEYS, path, field)
    if not rule:
        raise InputError("an empty rule matches every request; this reader refuses it", file=path, field=field)
    sources: tuple[_Source, ...] | None = None
    if "from" in rule:
        sources = tuple(_source(f, path, f"{field}.from[{i}]") for i, f in enumerate(_list(rule["from"], path,
                                                                                          f"{field}.from")))
    ports: list[PortRange] = []
    if "to" not in rule:
        ports = [ALL_TCP]
    for i, to in enumerate(_list(rule.get("to", []), path, f"{field}.to")):
        where = f"{field}.to[{i}]"
        to = _mapping(to, path, where)
        _known(to, {"operation"}, path, where)
        op = _mapping(to.get("operation"), path, f"{where}.operation")
        _known(op, _OPERATION_KEYS, path, f"{where}.operation")
        if "ports" not in op:
            ports.append(ALL_TCP)
        for p in _list(op["ports"] if "ports" in op else [], path, f"{where}.operation.ports"):
            n = _port(p, path, f"{where}.operation.ports")
            ports.append(PortRange(start=n, end=n))
    return _Rule(sources, tuple(ports))


def _source(raw: Any, path: str, field: str) -> _Source:
    entry = _mapping(raw, path, field)
    _known(entry, {"source"}, path, field)
    src = _mapping(entry.get("source"), path, f"{field}.source")
    _known(src, _SOURCE_KEYS, path, f"{field}.source")
    if not src:
        raise InputError("an empty source matches every peer; this reader refuses it", file=path, field=field)
    principals = None
    if "principals" in src:
        principals = frozenset(_strings(src["principals"], path, f"{field}.source.principals"))
    ip = None
    if "ipBlocks" in src or "notIpBlocks" in src:
        blocks = _networks(src.get("ipBlocks"), path, f"{field}.source.ipBlocks")
        if blocks is None:  # only notIpBlocks: every address but those
            blocks = _everything()
        excepts = _networks(src.get("notIpBlocks", []), path, f"{field}.source.notIpBlocks") or []
        ip = tuple((v, _minus(_intervals(n for n in blocks if n.version == v),
                              _intervals(n for n in excepts if n.version == v))) for v in (4, 6))
    return _Source(principals, ip)


def _selector(raw: Any, path: str) -> dict[str, str] | None:
    if raw is None:
        return None
    sel = _mapping(raw, path, "spec.selector")
    _known(sel, {"matchLabels"}, path, "spec.selector")
    labels = _mapping(sel.get("matchLabels") or {}, path, "spec.selector.matchLabels")
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or "*" in k or "*" in v or not k:
            raise InputError(f"selector label {k!r}={v!r} is not an exact label", file=path,
                             field="spec.selector.matchLabels")
        out[k] = v
    return out


def _mode(raw: Any, path: str, field: str) -> str:
    if raw is None:
        return "UNSET"
    mtls = _mapping(raw, path, field)
    _known(mtls, {"mode"}, path, field)
    mode = mtls.get("mode", "UNSET")
    if mode not in _MODES:
        raise InputError(f"unknown mTLS mode {mode!r}", file=path, field=field)
    return str(mode)


def _port(raw: Any, path: str, field: str) -> int:
    text = str(raw) if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InputError(f"{raw!r} is not an exact port 1-65535", file=path, field=field)
    return int(text)


def _strings(raw: Any, path: str, field: str) -> list[str]:
    items = _list(raw, path, field)
    for s in items:
        if not isinstance(s, str) or not s or "*" in s:
            raise InputError(f"{s!r} is not an exact value (wildcards are not evaluated)", file=path, field=field)
    return [str(s) for s in items]


def _networks(raw: Any, path: str, field: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    if raw is None:
        return None
    out = []
    for s in _strings(raw, path, field):
        try:
            out.append(ipaddress.ip_network(s, strict=True))
        except ValueError:
            raise InputError(f"{s!r} is not an address or CIDR", file=path, field=field) from None
    return out


def _everything() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]


def _mapping(raw: Any, path: str, field: str) -> dict[Any, Any]:
    if not isinstance(raw, dict):
        raise InputError("expected a mapping", file=path, field=field)
    return raw


def _list(raw: Any, path: str, field: str) -> list[Any]:
    if not isinstance(raw, list):
        raise InputError("expected a list", file=path, field=field)
    return raw


def _known(mapping: Mapping[Any, Any], keys: set[str], path: str, field: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in keys)
    if unknown:
        raise InputError(f"field(s) {', '.join(unknown)} not evaluated by this reader", file=path, field=field)


# -- evaluation --------------------------------------------------------------------------------------------


def _namespace_of(w: Workload) -> str:
    if w.namespace:
        return w.namespace
    return w.name.split("/", 1)[0]


def _selects(selector: dict[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is None or all(labels.get(k) == v for k, v in selector.items())


def principal_of(w: Workload) -> str:
    """The principal a Kubernetes workload's proxy presents (see the module docstring)."""
    if w.identity and w.identity.startswith(_SPIFFE):
        return w.identity[len(_SPIFFE):]
    return f"{DEFAULT_TRUST_DOMAIN}/ns/{_namespace_of(w)}/sa/{w.service_account or 'default'}"


def _matches(rule: _Rule, s: Workload) -> bool:
    if rule.sources is None:
        return True
    return any(_source_matches(src, s) for src in rule.sources)


def _source_matches(src: _Source, s: Workload) -> bool:
    if s.kind == WorkloadKind.KUBERNETES:
        return src.ip is None and src.principals is not None and principal_of(s) in src.principals
    if src.principals is not None or src.ip is None:
        return False
    own = _address_intervals(s)
    if not any(own.values()):
        return False
    allowed = dict(src.ip)
    return all(_contained(own[v], allowed[v]) for v in (4, 6))


def _address_intervals(w: Workload) -> dict[int, tuple[Interval, ...]]:
    nets = [ipaddress.ip_network(a, strict=False) for a in w.addresses]
    excepts = [ipaddress.ip_network(a, strict=False) for a in w.except_addresses]
    return {v: _minus(_intervals(n for n in nets if n.version == v), _intervals(n for n in excepts if n.version == v))
            for v in (4, 6)}


def _intervals(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> tuple[Interval, ...]:
    return tuple(intervals.merge((int(n.network_address), int(n.broadcast_address)) for n in nets))


def _minus(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> tuple[Interval, ...]:
    return tuple(intervals.subtract(a, b))


def _contained(inner: tuple[Interval, ...], outer: tuple[Interval, ...]) -> bool:
    return not _minus(inner, outer)


def _plaintext_ports(policies: list[_PeerAuthn], ns: str, labels: Mapping[str, str], name: str) -> list[PortRange]:
    """The ports of a workload that accept plaintext, from its effective PeerAuthentication."""
    mine = [p for p in policies if p.namespace == ns and p.selector is not None and _selects(p.selector, labels)]
    namespace_wide = [p for p in policies if p.namespace == ns and p.selector is None]
    if len(mine) > 1 or len(namespace_wide) > 1:
        # Istio then picks the oldest policy, which files do not tell: refuse instead of guessing.
        which = mine if len(mine) > 1 else namespace_wide
        raise InputError(f"{len(which)} PeerAuthentications apply to {name!r}; the effective one is undecidable "
                         "from files", file=which[0].file, field="spec.selector")
    base = namespace_wide[0].mode if namespace_wide else "UNSET"
    if base == "UNSET":
        base = "PERMISSIVE"  # no parent in the files: "Otherwise treated as PERMISSIVE"
    port_modes: dict[int, str] = {}
    if mine:
        if mine[0].mode != "UNSET":
            base = mine[0].mode
        port_modes = {p: m for p, m in mine[0].ports.items() if m != "UNSET"}
    if base == "STRICT":
        return [PortRange(start=p, end=p) for p, m in sorted(port_modes.items()) if m != "STRICT"]
    strict = [PortRange(start=p, end=p) for p, m in sorted(port_modes.items()) if m == "STRICT"]
    return _subtract([ALL_TCP], strict)


def _intersect(a: list[PortRange], b: list[PortRange]) -> list[PortRange]:
    out = []
    for x in merge_ranges(a):
        for y in merge_ranges(b):
            lo, hi = max(x.start, y.start), min(x.end, y.end)
            if lo <= hi:
                out.append(PortRange(start=lo, end=hi))
    return out


def _subtract(a: list[PortRange], b: list[PortRange]) -> list[PortRange]:
    left = _minus(tuple((r.start, r.end) for r in merge_ranges(a)), tuple((r.start, r.end) for r in merge_ranges(b)))
    return [PortRange(start=lo, end=hi) for lo, hi in left]
