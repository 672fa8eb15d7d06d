"""Policy-as-code: the Policy IR as a set of YAML documents, and back.

Text in, text out (no file I/O here). Output is canonical — fixed key order, sorted lists, no
timestamps of the run — so that the same policy always gives byte-identical files and a review
diff shows only what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from microseg.errors import InputError
from microseg.ir.model import (
    AllowRule,
    Guardrail,
    HttpMatch,
    Justification,
    JustificationKind,
    Policy,
    PolicyException,
    PortRange,
    Protocol,
    Segment,
    Settings,
    Workload,
    ZoneAssignment,
)

FILES = ("policy.yaml", "workloads.yaml", "segments.yaml", "guardrails.yaml", "rules.yaml", "exceptions.yaml")
API_VERSION = "microseg/v1"

_HEADERS = {
    "policy.yaml": "microseg policy-as-code. Review changes to these files like code; `microseg diff` shows them "
                   "as connections.",
    "workloads.yaml": "The universe: every workload the policy names, with the identity back ends select it by.",
    "segments.yaml": "Trust zones and why each workload is in its zone. Override a zone in the inventory.",
    "guardrails.yaml": "Zone-to-zone statements that hold whatever flows were observed.",
    "rules.yaml": "Allow rules. Everything else is denied east-west (default deny).",
    "exceptions.yaml": "Approved exceptions to the guardrails: each needs an approver, a reason and an expiry.",
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PolicyHeader(_Strict):
    api_version: Literal["microseg/v1"] = Field(alias="apiVersion")
    kind: Literal["Policy"]
    settings: Settings = Settings()
    dns_resolvers: tuple[str, ...] = ()


class WorkloadsDoc(_Strict):
    workloads: tuple[Workload, ...] = ()


class SegmentsDoc(_Strict):
    segments: tuple[Segment, ...] = ()
    assignments: tuple[ZoneAssignment, ...] = ()


class GuardrailsDoc(_Strict):
    guardrails: tuple[Guardrail, ...] = ()


class RulesDoc(_Strict):
    rules: tuple[AllowRule, ...] = ()


class ExceptionEntry(_Strict):
    """An exception as a person writes it: flat, with approver, reason and expiry."""

    guardrail: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocol: Protocol
    ports: tuple[str, ...]
    approver: str
    reason: str
    expires: date | datetime
    id: str | None = None
    http: tuple[HttpMatch, ...] = ()  # optional L7 constraint, as on an allow rule


class ExceptionsDoc(_Strict):
    exceptions: tuple[ExceptionEntry, ...] = ()


def exception_from_entry(e: ExceptionEntry) -> PolicyException:
    expires = e.expires if isinstance(e.expires, datetime) else datetime.combine(e.expires, time.max)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    ports = tuple(PortRange.parse(p) for p in e.ports)
    # The L7 part joins the hash only when present, so that the ids of existing exceptions never change.
    l7 = "|" + repr([m.model_dump(mode="json") for m in e.http]) if e.http else ""
    rid = e.id or "EX-" + hashlib.sha256(
        f"{e.guardrail}|{sorted(e.sources)}|{sorted(e.destinations)}|{e.protocol}|{e.ports}{l7}".encode()
    ).hexdigest()[:10]
    rule = AllowRule(id=rid, sources=tuple(sorted(e.sources)), destinations=tuple(sorted(e.destinations)),
                     protocol=e.protocol, ports=ports, http=e.http, justification=Justification(
                         kind=JustificationKind.EXCEPTION,
                         text=f"exception to {e.guardrail} approved by {e.approver} until "
                              f"{expires.date().isoformat()}: {e.reason}"))
    return PolicyException(rule=rule, guardrail=e.guardrail, approver=e.approver, reason=e.reason, expires=expires)


def _entry_from_exception(x: PolicyException) -> dict[str, Any]:
    out = {"id": x.rule.id, "guardrail": x.guardrail, "sources": list(x.rule.sources),
           "destinations": list(x.rule.destinations), "protocol": x.rule.protocol.value,
           "ports": [str(p) for p in x.rule.ports], "approver": x.approver, "reason": x.reason,
           "expires": x.expires.date().isoformat()}
    if x.rule.http:  # dropping it would turn the exception into a wider, L4-only one on the next load
        out["http"] = [_plain(m) for m in x.rule.http]
    return out


class _Dumper(yaml.SafeDumper):
    """Block style; strings that look like other YAML types are quoted by the safe emitter itself."""


def _dump(header: str, body: Mapping[str, Any]) -> str:
    text = yaml.dump(dict(body), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120,
                     default_flow_style=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def _plain(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def dump_policy(policy: Policy) -> dict[str, str]:
    """Policy → {file name: YAML text}; deterministic."""
    p = canonical(policy)
    return {
        "policy.yaml": _dump(_HEADERS["policy.yaml"], {
            "apiVersion": API_VERSION, "kind": "Policy",
            "settings": p.settings.model_dump(mode="json"), "dns_resolvers": list(p.dns_resolvers)}),
        "workloads.yaml": _dump(_HEADERS["workloads.yaml"], {"workloads": [_plain(w) for w in p.workloads]}),
        "segments.yaml": _dump(_HEADERS["segments.yaml"], {
            "segments": [_plain(s) for s in p.segments], "assignments": [_plain(a) for a in p.assignments]}),
        "guardrails.yaml": _dump(_HEADERS["guardrails.yaml"], {"guardrails": [_plain(g) for g in p.guardrails]}),
        "rules.yaml": _dump(_HEADERS["rules.yaml"], {"rules": [
            {**_plain(r), "ports": [str(x) for x in r.ports]} for r in p.rules]}),
        "exceptions.yaml": _dump(_HEADERS["exceptions.yaml"], {
            "exceptions": [_entry_from_exception(x) for x in p.exceptions]}),
    }


def canonical(policy: Policy) -> Policy:
    """Sort every collection so output never depends on input order."""
    return policy.model_copy(update={
        "workloads": tuple(sorted(policy.workloads, key=lambda w: w.name)),
        "segments": tuple(sorted(policy.segments, key=lambda s: (-s.trust, s.name))),
        "assignments": tuple(sorted(policy.assignments, key=lambda a: a.workload)),
        "guardrails": tuple(sorted(policy.guardrails, key=lambda g: g.id)),
        "rules": tuple(sorted(policy.rules, key=lambda r: r.id)),
        "exceptions": tuple(sorted(policy.exceptions, key=lambda x: x.rule.id)),
        "dns_resolvers": tuple(sorted(policy.dns_resolvers)),
    })


def load_doc(name: str, text: str, model: type[BaseModel]) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=name,
                         line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", file=name, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise InputError(err["msg"], file=name, line=line_of(text, err["loc"]), field=loc) from exc


def line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (pydantic's error path), or of its nearest parent."""
    try:
        node: yaml.Node | None = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
            if nxt is None:
                nxt_key = next((k for k, _ in node.value if isinstance(k, yaml.ScalarNode)
                                and k.value == str(key)), None)
                return nxt_key.start_mark.line + 1 if nxt_key else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_policy(texts: Mapping[str, str], *, where: str = "") -> Policy:
    """{file name: YAML text} → Policy. Every file except exceptions.yaml is required."""
    def path(name: str) -> str:
        return f"{where.rstrip('/')}/{name}" if where else name

    for name in FILES:
        if name not in texts and name != "exceptions.yaml":
            raise InputError("missing policy file", file=path(name))
    header: PolicyHeader = load_doc(path("policy.yaml"), texts["policy.yaml"], PolicyHeader)
    wl: WorkloadsDoc = load_doc(path("workloads.yaml"), texts["workloads.yaml"], WorkloadsDoc)
    seg: SegmentsDoc = load_doc(path("segments.yaml"), texts["segments.yaml"], SegmentsDoc)
    gr: GuardrailsDoc = load_doc(path("guardrails.yaml"), texts["guardrails.yaml"], GuardrailsDoc)
    rules: RulesDoc = load_doc(path("rules.yaml"), texts["rules.yaml"], RulesDoc)
    exc: ExceptionsDoc = load_doc(path("exceptions.yaml"), texts.get("exceptions.yaml", ""), ExceptionsDoc)
    policy = Policy(workloads=wl.workloads, segments=seg.segments, assignments=seg.assignments,
                    guardrails=gr.guardrails, rules=rules.rules,
                    exceptions=tuple(exception_from_entry(e) for e in exc.exceptions),
                    dns_resolvers=header.dns_resolvers, settings=header.settings)
    check_references(policy, where=where)
    return canonical(policy)


def check_references(policy: Policy, *, where: str = "") -> None:
    """Fail closed on a rule that names an unknown workload or a duplicate id."""
    names = {w.name for w in policy.workloads}
    seen: set[str] = set()
    for r in policy.all_rules():
        if r.id in seen:
            raise InputError(f"duplicate rule id {r.id}", file=f"{where}/rules.yaml" if where else "rules.yaml",
                             field="id")
        seen.add(r.id)
        for n in r.sources + r.destinations:
            if n not in names:
                raise InputError(f"rule {r.id} names workload {n!r}, which is not in workloads.yaml",
                                 file=f"{where}/rules.yaml" if where else "rules.yaml", field="sources/destinations")
    if len(names) != len(policy.workloads):
        raise InputError("duplicate workload names", file=f"{where}/workloads.yaml" if where else "workloads.yaml")
