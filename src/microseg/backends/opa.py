"""OPA/Rego back end: a policy decision point for the policy's allow rules.

A PDP answers "is this connection allowed?" for whatever enforcement point asks: Envoy's external
authorization filter (through the OPA-Envoy plugin), an API gateway, a host agent. It governs every
workload of the policy, on both sides: the decision is about the connection, and it is the same
whichever side's enforcement point asks. What it cannot do is enforce: a workload is protected only
where an enforcement point consults it.

Output (an OPA bundle under ``opa/``, plus examples and a README):

* ``opa/microseg.rego``: package ``microseg.authz``. Fixed text: nothing from the inventory is ever
  written into Rego, so no name can inject Rego. ``default allow := false``; ``allow`` holds when
  ``would_allow`` holds in enforce mode, and always in observe mode. ``would_allow`` is exactly
  :meth:`microseg.ir.semantics.Evaluator.decide`: an allow rule (or approved exception) names the
  source among its sources, the destination among its destinations, the protocol, and a port range
  containing the port (ICMP ignores the port); or neither side is under default deny (external peers,
  excluded namespaces). ``decision`` is an object with ``allowed`` (what the OPA-Envoy plugin reads),
  ``would_allow``, ``mode`` and the matching ``rule_ids``.
* ``opa/data.json``: ``{"microseg": {...}}`` (the bundle root is ``data``): ``mode``, ``workloads``
  (name -> ``enforced`` and ``identities``), ``identities`` (identity or workload name -> the workloads it
  may denote), ``rules`` (id -> sources, destinations, protocol, merged inclusive port ranges) and
  ``pairs`` (source -> destination -> rule ids, the index that keeps a decision a few lookups), all in
  canonical order. This is the canonical, reviewable form of the policy for the PDP.
* ``opa/.manifest``: ``roots: ["microseg"]`` (so the bundle coexists with others) and a ``revision``
  that is the SHA-256 of the policy and the data.
* ``examples/input-direct.json`` and ``examples/input-envoy.json``: the two input shapes.

Input. Either ``{"source": ID, "destination": ID, "protocol": "TCP"|"UDP"|"SCTP"|"ICMP", "port": N}``
(``port`` an integer 0-65535; ICMP callers pass 0), or an Envoy ``CheckRequest`` as the OPA-Envoy
plugin passes it: ``attributes.source.principal`` and ``attributes.destination.principal`` (the peers'
authenticated identities, from the certificates' URI SAN, e.g. ``spiffe://cluster.local/ns/shop/sa/web``;
``AttributeContext.Peer.principal`` in Envoy's ext_authz API) and
``attributes.destination.address.socketAddress.portValue`` (the destination port); the protocol is TCP,
the only one Envoy's ext_authz sees. An ID is a workload name, a SPIFFE ID or another identity of the
inventory (a host certificate subject, a cloud role). Kubernetes workloads without an explicit SPIFFE ID
also get ``spiffe://cluster.local/ns/<namespace>/sa/<service account>`` (``default`` when they have
none: their pods run as the namespace's default account), as Istio issues it.

Identities shared by several workloads (two Deployments under one service account) cannot be told
apart by the PDP, so an identity is allowed only what *every* workload it may denote is allowed:
never wider than the policy. An unknown identity, or a malformed input, is denied (``allow`` is
undefined -> ``false``); a peer without an authenticated principal cannot be identified and is
denied unless neither side is under default deny.

Observe mode. ``data.microseg.mode`` is ``"observe"``: ``allow`` (and ``decision.allowed``) is true for
every request, while ``would_allow`` and ``decision.rule_ids`` say what enforce mode would answer.
Point the enforcement point at ``microseg/authz/decision`` and enable OPA's decision logs: each logged
decision then carries the input and ``would_allow``, so the connections enforcement would deny can be
listed before anything is blocked. The Rego is identical in both modes; switching to enforce changes
only ``mode`` in ``data.json``.

Every protocol, port range, peer kind and exception is data here, and peers are named by workload or
identity, so DNS names of external peers change nothing. The one construct this target refuses is a
rule with HTTP matches (``AllowRule.http``): the decision is per connection (neither input shape
carries an HTTP request this policy reads), and allowing the connection would admit every request on
it, so such a rule raises :class:`~microseg.errors.UnsupportedFeature` ("L7 HTTP rules"); a rule naming an unknown
workload fails closed with :class:`~microseg.errors.MicrosegError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from microseg.backends.base import Mode, check_mode, reject_l7
from microseg.errors import MicrosegError
from microseg.ir.model import AllowRule, JustificationKind, Policy, Protocol, Workload, WorkloadKind
from microseg.ir.semantics import is_enforced, merge_ranges

TARGET = "opa"
PACKAGE = "microseg.authz"
DEFAULT_TRUST_DOMAIN = "cluster.local"
POLICY_FILE = "opa/microseg.rego"
DATA_FILE = "opa/data.json"
MANIFEST_FILE = "opa/.manifest"

_SPIFFE = "spiffe://"

# The policy. Fixed text: the inventory only ever reaches data.json, through the JSON serializer.
REGO = """\
# Generated by microseg: the policy decision point for the allow rules of a microseg policy.
# The rules and workloads are data (data.json, under data.microseg); this file never changes with them.
#
# Input, either shape:
#   {"source": ID, "destination": ID, "protocol": "TCP", "port": 443}
#   an Envoy ext_authz CheckRequest (OPA-Envoy plugin): attributes.source.principal,
#   attributes.destination.principal, attributes.destination.address.socketAddress.portValue (TCP)
# ID: a workload name, a SPIFFE ID or another identity of the inventory.
#
# Query allow (boolean) or decision (object; "allowed" is what the OPA-Envoy plugin reads).
package microseg.authz

import rego.v1

default allow := false

default would_allow := false

mode := data.microseg.mode

# Enforce mode allows exactly what the policy allows; observe mode allows everything and reports in
# would_allow (and in the decision log) what enforce mode would answer.
allow if {
	mode == "observe"
}

allow if {
	mode == "enforce"
	would_allow
}

# The request as (source, destination, protocol, port), from either input shape.
request := {
	"source": input.source,
	"destination": input.destination,
	"protocol": upper(input.protocol),
	"port": input.port,
} if {
	not input.attributes
	is_string(input.source)
	is_string(input.destination)
	is_string(input.protocol)
	valid_port(input.port)
}

# Envoy's ext_authz sees TCP only; the principals are the peers' authenticated identities.
request := {
	"source": input.attributes.source.principal,
	"destination": input.attributes.destination.principal,
	"protocol": "TCP",
	"port": input.attributes.destination.address.socketAddress.portValue,
} if {
	is_object(input.attributes)
	is_string(input.attributes.source.principal)
	is_string(input.attributes.destination.principal)
	valid_port(input.attributes.destination.address.socketAddress.portValue)
}

valid_port(p) if {
	is_number(p)
	floor(p) == p
	p >= 0
	p <= 65535
}

# Every workload an identity may denote. An identity shared by several workloads is allowed only what
# every one of them is allowed: the decision point cannot tell them apart.
sources := {w | some w in data.microseg.identities[request.source]}

destinations := {w | some w in data.microseg.identities[request.destination]}

would_allow if {
	count(sources) > 0
	count(destinations) > 0
	every s in sources {
		every d in destinations {
			pair_allowed(s, d)
		}
	}
}

# Neither side is under default deny (external peers, excluded namespaces): nothing of ours is in the way.
pair_allowed(s, d) if {
	data.microseg.workloads[s].enforced == false
	data.microseg.workloads[d].enforced == false
}

pair_allowed(s, d) if {
	some id in data.microseg.pairs[s][d]
	rule_matches(data.microseg.rules[id])
}

rule_matches(rule) if {
	rule.protocol == request.protocol
	port_matches(rule)
}

# ICMP has no ports: an ICMP rule allows every type.
port_matches(rule) if rule.protocol == "ICMP"

port_matches(rule) if {
	rule.protocol != "ICMP"
	some r in rule.ports
	r[0] <= request.port
	request.port <= r[1]
}

rule_ids contains id if {
	some s in sources
	some d in destinations
	some id in data.microseg.pairs[s][d]
	rule_matches(data.microseg.rules[id])
}

decision := {
	"allowed": allow,
	"would_allow": would_allow,
	"mode": mode,
	"rule_ids": sort(rule_ids),
}
"""

_README_ENFORCE = (
    "Mode: **enforce**. `allow` is true exactly for the connections the policy allows; everything else is "
    "denied (`default allow := false`).")
_README_OBSERVE = (
    "Mode: **observe**. `allow` (and `decision.allowed`) is true for every request: nothing is blocked. "
    "`would_allow` and `decision.rule_ids` say what enforce mode would answer. Query `microseg/authz/decision` "
    "and enable OPA's decision logs: every logged decision carries the input and `would_allow`, so the "
    "connections that enforcement would deny can be reviewed first. Switching to enforce changes only `mode` in "
    "`opa/data.json`.")


class OpaBackend:
    """Compiles a policy to an OPA bundle; see the module docstring for the exact mapping."""

    name = TARGET
    # A PDP decides for the connection, whichever side's enforcement point asks: "ingress" and "egress".
    capabilities = frozenset({"l4", "tcp", "udp", "sctp", "icmp", "port-range", "ingress", "egress",
                              "cross-namespace", "identity", "observe-mode", "audit-log"})

    def compile(self, policy: Policy, *, mode: Mode = "enforce") -> dict[str, str]:
        check_mode(mode)
        data = policy_data(policy, mode)
        data_text = _json(data)
        revision = hashlib.sha256((REGO + "\0" + data_text).encode("utf-8")).hexdigest()
        return {
            POLICY_FILE: REGO,
            DATA_FILE: data_text,
            MANIFEST_FILE: _json({"revision": revision, "roots": ["microseg"]}),
            "examples/input-direct.json": _json(_direct_example(policy)),
            "examples/input-envoy.json": _json(_envoy_example(policy)),
            "README.md": _readme(policy, mode, revision),
        }


BACKEND = OpaBackend()


def identities_of(w: Workload) -> list[str]:
    """The identities a workload may present to a PDP, besides its name (see the module docstring)."""
    out = set()
    if w.identity:
        out.add(w.identity)
    if w.kind == WorkloadKind.KUBERNETES and not (w.identity and w.identity.startswith(_SPIFFE)):
        ns = w.namespace or w.name.split("/", 1)[0]
        out.add(f"{_SPIFFE}{DEFAULT_TRUST_DOMAIN}/ns/{ns}/sa/{w.service_account or 'default'}")
    return sorted(out)


def policy_data(policy: Policy, mode: Mode) -> dict[str, Any]:
    """The ``data.json`` document (before serialisation)."""
    workloads = sorted(policy.workloads, key=lambda w: w.name)
    names = {w.name for w in workloads}
    excluded = policy.settings.excluded_namespaces
    index: dict[str, set[str]] = {}
    table: dict[str, Any] = {}
    for w in workloads:
        ids = identities_of(w)
        table[w.name] = {"enforced": is_enforced(w, excluded), "identities": ids}
        for key in [w.name, *ids]:
            index.setdefault(key, set()).add(w.name)
    rules: dict[str, Any] = {}
    pairs: dict[str, dict[str, set[str]]] = {}
    for rule in policy.all_rules():
        # The decision is per connection (the direct input and Envoy's network-level check carry no HTTP
        # request): deciding an L7 rule's connection would admit every request on it.
        reject_l7(TARGET, rule)
        for n in (*rule.sources, *rule.destinations):
            if n not in names:  # fail closed: an unresolvable name never compiles to something
                raise MicrosegError(f"rule {rule.id} names unknown workload {n!r}")
        sources, destinations = sorted(set(rule.sources)), sorted(set(rule.destinations))
        entry = {"sources": sources, "destinations": destinations, "protocol": rule.protocol.value,
                 "ports": [[r.start, r.end] for r in merge_ranges(rule.ports)]}
        if rules.setdefault(rule.id, entry) != entry:
            raise MicrosegError(f"two different rules have the id {rule.id!r}")
        for s in sources:
            for d in destinations:
                pairs.setdefault(s, {}).setdefault(d, set()).add(rule.id)
    pair_index = {s: {d: sorted(ids) for d, ids in sorted(ds.items())} for s, ds in sorted(pairs.items())}
    return {"microseg": {"mode": mode, "workloads": table,
                         "identities": {k: sorted(v) for k, v in sorted(index.items())},
                         "rules": dict(sorted(rules.items())), "pairs": pair_index}}


def _json(value: Any) -> str:
    # ensure_ascii: every non-ASCII or control character is escaped, so the file reads as it parses.
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def _example_rule(policy: Policy) -> tuple[AllowRule, str, str] | None:
    """The first TCP rule (by id) with a port, between workloads with SPIFFE IDs, for the examples."""
    wl = policy.workload_map()
    for rule in sorted(policy.all_rules(), key=lambda r: r.id):
        if rule.protocol != Protocol.TCP or not any(r.end >= 1 for r in rule.ports):
            continue
        for s in sorted(rule.sources):
            for d in sorted(rule.destinations):
                sid = [i for i in identities_of(wl[s]) if i.startswith(_SPIFFE)] if s in wl else []
                did = [i for i in identities_of(wl[d]) if i.startswith(_SPIFFE)] if d in wl else []
                if sid and did:
                    return rule, sid[0], did[0]
    return None


def _port_of(rule: AllowRule) -> int:
    return next(max(r.start, 1) for r in merge_ranges(rule.ports) if r.end >= 1)


def _direct_example(policy: Policy) -> dict[str, Any]:
    found = _example_rule(policy)
    if found is None:
        return {"source": "shop/web", "destination": "shop/db", "protocol": "TCP", "port": 5432}
    rule, _, _ = found
    return {"source": sorted(rule.sources)[0], "destination": sorted(rule.destinations)[0], "protocol": "TCP",
            "port": _port_of(rule)}


def _envoy_example(policy: Policy) -> dict[str, Any]:
    found = _example_rule(policy)
    if found is None:
        src, dst, port = ("spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/db", 5432)
    else:
        rule, src, dst = found
        port = _port_of(rule)
    # The fields of Envoy's CheckRequest (envoy.service.auth.v3) that the policy reads; the rest of a real
    # request (addresses, HTTP attributes) is ignored by it.
    return {"attributes": {"source": {"principal": src},
                           "destination": {"principal": dst, "address": {"socketAddress": {"portValue": port}}}}}


def _readme(policy: Policy, mode: Mode, revision: str) -> str:
    lines = ["# OPA policy decision point generated by microseg", "",
             _README_ENFORCE if mode == "enforce" else _README_OBSERVE, "",
             f"Bundle revision: `{revision}`.", "",
             "| file | what |", "| --- | --- |",
             "| opa/microseg.rego | package `microseg.authz`: `allow`, `would_allow`, `decision` |",
             "| opa/data.json | the workloads, their identities and the allow rules (`data.microseg`) |",
             "| opa/.manifest | bundle roots (`microseg`) and revision |",
             "| examples/input-direct.json | input by identity: source, destination, protocol, port |",
             "| examples/input-envoy.json | input as the OPA-Envoy plugin passes an Envoy CheckRequest |",
             "",
             "Try it: `opa eval -b opa/ -i examples/input-direct.json 'data.microseg.authz.decision'`. "
             "With the OPA-Envoy plugin, set `path: microseg/authz/decision` (or `microseg/authz/allow`).",
             "",
             "## Input", "",
             "- Direct: `source` and `destination` are a workload name, a SPIFFE ID or another identity of the "
             "inventory; `protocol` TCP, UDP, SCTP or ICMP; `port` an integer 0-65535 (ICMP: 0).",
             "- Envoy ext_authz: `attributes.source.principal` and `attributes.destination.principal` (the peers' "
             "authenticated identities, e.g. `spiffe://cluster.local/ns/shop/sa/web`), "
             "`attributes.destination.address.socketAddress.portValue` (the destination port); protocol TCP.",
             "- An identity shared by several workloads is allowed only what all of them are allowed. Unknown "
             "identities and malformed input are denied. A peer without an authenticated principal (plaintext, "
             "outside the mesh) cannot be identified by Envoy and is denied.",
             ""]
    wl = policy.workload_map()
    shared = [(k, v) for k, v in policy_data(policy, mode)["microseg"]["identities"].items() if len(v) > 1]
    lines += ["## Shared identities", ""]
    if shared:
        lines += ["| identity | workloads |", "| --- | --- |"]
        lines += [f"| {_md(k)} | {_md(', '.join(v))} |" for k, v in shared]
    else:
        lines.append("None.")
    lines += ["", "## Infrastructure allowances", ""]
    infra = sorted((r for r in policy.all_rules() if r.justification.kind == JustificationKind.INFRASTRUCTURE),
                   key=lambda r: r.id)
    lines += _rule_table(infra) if infra else ["None."]
    lines += ["", "## Approved exceptions", ""]
    if policy.exceptions:
        lines += ["| rule | guardrail | approver | expires | reason |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_md(e.rule.id)} | {_md(e.guardrail)} | {_md(e.approver)} | {e.expires.isoformat()} | "
                  f"{_md(e.reason)} |" for e in sorted(policy.exceptions, key=lambda e: e.rule.id)]
    else:
        lines.append("None.")
    enforced = sum(1 for w in wl.values() if is_enforced(w, policy.settings.excluded_namespaces))
    lines += ["", "## Caveats", "",
              f"- {enforced} of {len(wl)} workloads are under default deny; the others (external peers, excluded "
              "namespaces) are allowed to each other.",
              "- A decision point enforces nothing by itself: a workload is protected only where an enforcement "
              "point (Envoy ext_authz, a gateway, an agent) consults it for every connection.",
              "- Envoy's ext_authz sees TCP (and HTTP over it) only: UDP, SCTP and ICMP decisions need another "
              "enforcement point.", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    """Escape free text for a Markdown table cell: no HTML, no links, no new rows."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)


def _rule_table(rules: Sequence[AllowRule]) -> list[str]:
    lines = ["| rule | from | to | protocol | ports | justification |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        ports = ",".join(str(p) for p in merge_ranges(r.ports))
        lines.append(f"| {_md(r.id)} | {_md(', '.join(sorted(r.sources)))} | {_md(', '.join(sorted(r.destinations)))}"
                     f" | {r.protocol.value} | {ports} | {_md(r.justification.text)} |")
    return lines
