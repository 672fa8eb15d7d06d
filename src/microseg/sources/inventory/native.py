"""The native microseg inventory file (``apiVersion: microseg/v1``, ``kind: Inventory``).

It declares what Kubernetes cannot tell us: VMs and bare-metal hosts, managed services, named
external peers, and overrides (zone, sensitivity, compliance, owner, declared dependencies ...) for
any workload from any source. The pydantic models below *are* the format's documentation; its JSON
Schema (``src/microseg/schemas/inventory.schema.json``, for editors) is generated from them::

    python -m microseg.sources.inventory.native --schema > src/microseg/schemas/inventory.schema.json

Every model forbids unknown fields, so a misspelt ``sensitivty:`` is an error rather than a silently
unclassified workload. Errors name the file, the line of the offending YAML node and the field path.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from microseg.errors import InputError
from microseg.ir.intervals import address_text, network_text
from microseg.ir.model import AddressBinding, Dependency, ListenPort, Workload, WorkloadKind, check_fqdn
from microseg.sources.yamlpos import Document, NodePath, format_path

API_VERSION = "microseg/v1"

Sensitivity = Literal["low", "medium", "high", "restricted"]
AiRole = Literal["model-endpoint", "vector-store", "feature-store", "embedding-pipeline",
                 "ingestion-pipeline", "agent", "tool-integration", "llm-gateway"]
Exposure = Literal["internet", "internal"]


def _canonical_ip(value: str) -> str:
    try:
        return address_text(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (hosts and services take single addresses; "
                         "use `external` for CIDRs)") from None


def _canonical_cidr(value: str) -> str:
    # strict=True: "10.0.0.5/24" has host bits set; whether the user meant the host or the subnet is
    # a guess, and guessing the subnet would widen every rule that names this peer.
    try:
        return network_text(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR: {exc}") from None


IPAddressText = Annotated[str, AfterValidator(_canonical_ip), Field(description="an IPv4 or IPv6 address")]
FQDNText = Annotated[str, AfterValidator(check_fqdn),
                     Field(description="a DNS name in lower case without trailing dot, e.g. api.example.com; "
                                       "'*.example.com' matches exactly one more label")]
CIDRText = Annotated[str, AfterValidator(_canonical_cidr),
                     Field(description="an IPv4 or IPv6 network in CIDR notation, host bits zero")]
# Host and service names share the namespace of Kubernetes "ns/name" workloads (a clash is an error);
# ":" is left out so that nothing can pose as an "external:<name>" peer.
WorkloadName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", max_length=253)]
ExternalName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=253)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostEntry(_Model):
    """A VM or bare-metal host. Each address also binds the host to that IP for all time."""

    name: WorkloadName
    addresses: list[IPAddressText] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[ListenPort] = Field(default_factory=list, description="ports the workload listens on")
    environment: str | None = None
    zone: str | None = Field(default=None, description="override of the proposed trust zone")
    owner: str | None = None
    sensitivity: Sensitivity | None = None
    compliance: list[str] = Field(default_factory=list, description="compliance scopes, e.g. pci, hipaa, sox")
    ai_role: AiRole | None = None
    identity: str | None = Field(default=None, description="host certificate subject, cloud role, SPIFFE ID")
    location: str | None = Field(default=None, description="VPC/subnet, VLAN, site")
    exposure: Exposure = "internal"
    depends_on: list[Dependency] = Field(default_factory=list, description="declared dependencies")


class ServiceEntry(HostEntry):
    """A managed service (RDS, a SaaS endpoint inside the estate, ...); same fields as a host."""


class ExternalEntry(_Model):
    """A named peer outside the estate, becoming workload ``external:<name>``."""

    name: ExternalName
    cidrs: list[CIDRText] = Field(default_factory=list)
    except_cidrs: list[CIDRText] = Field(default_factory=list)
    fqdns: list[FQDNText] = Field(
        default_factory=list, description="DNS names the peer is reached by; with cidrs, the peer is both. Only "
        "targets that match names (Cilium toFQDNs) use them; the others use the cidrs")
    ports: list[ListenPort] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = Field(default="", description="for humans; not carried into the IR")

    @model_validator(mode="after")
    def _addressed(self) -> ExternalEntry:
        if not self.cidrs and not self.fqdns:
            raise ValueError("an external peer needs cidrs, fqdns or both")
        return self


class OverrideEntry(_Model):
    """Changes to one workload of any source, applied after every file is read.

    A field that is present replaces the workload's value; ``labels`` are merged into the workload's
    labels (never into its selector) and ``depends_on`` adds declared dependencies.
    """

    workload: str = Field(description='"namespace/name" for Kubernetes, the host name, "external:<name>"')
    zone: str | None = None
    environment: str | None = None
    sensitivity: Sensitivity | None = None
    compliance: list[str] | None = None
    owner: str | None = None
    ai_role: AiRole | None = None
    exposure: Exposure | None = None
    depends_on: list[Dependency] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class NativeInventory(_Model):
    """A microseg inventory file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="microseg inventory (microseg/v1)")

    api_version: Literal["microseg/v1"] = Field(alias="apiVersion")
    kind: Literal["Inventory"]
    hosts: list[HostEntry] = Field(default_factory=list)
    services: list[ServiceEntry] = Field(default_factory=list)
    external: list[ExternalEntry] = Field(default_factory=list)
    overrides: list[OverrideEntry] = Field(default_factory=list)


# The internet peer: everything except what is never reachable across the internet. Private and
# special-use ranges are carved out so that a rule "from the internet" never matches east-west traffic:
# RFC 1918 private space, loopback, link-local (RFC 3927 / RFC 4291), CGNAT shared space (RFC 6598,
# also used for pod and service CIDRs), IPv6 unique-local (RFC 4193) and multicast (both families).
INTERNET_NAME = "external:internet"
INTERNET_EXCEPT = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "127.0.0.0/8", "::1/128",  # loopback
    "169.254.0.0/16", "fe80::/10",  # link-local
    "100.64.0.0/10",  # CGNAT
    "fc00::/7",  # ULA
    "224.0.0.0/4", "ff00::/8",  # multicast
)


def internet_workload() -> Workload:
    return Workload(name=INTERNET_NAME, kind=WorkloadKind.EXTERNAL, addresses=("0.0.0.0/0", "::/0"),
                    except_addresses=sort_networks(INTERNET_EXCEPT))


@dataclass(frozen=True)
class Located:
    """Where something was declared, for error messages."""

    file: str
    line: int
    field: str

    def error(self, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line, field=self.field)


@dataclass(frozen=True)
class LocatedOverride:
    entry: OverrideEntry
    at: Located  # the override's `workload` field


@dataclass(frozen=True)
class NativeResult:
    """What one native file declares, with the location of every name for later checks."""

    workloads: tuple[tuple[Workload, Located], ...]
    bindings: tuple[AddressBinding, ...]
    overrides: tuple[LocatedOverride, ...]
    dependencies: tuple[tuple[str, Located], ...]  # (destination, where declared)


def is_native(data: object) -> bool:
    """A document is meant for this reader when its apiVersion is in the microseg group."""
    if not isinstance(data, dict):
        return False
    api = data.get("apiVersion")
    return isinstance(api, str) and api.split("/", 1)[0] == "microseg"


def parse(doc: Document) -> NativeResult:
    try:
        model = NativeInventory.model_validate(doc.data)
    except ValidationError as exc:
        raise _located_error(doc, exc) from None
    return _convert(model, doc)


def _located_error(doc: Document, exc: ValidationError) -> InputError:
    """Map pydantic's error locations to YAML lines; report the first error and count the rest."""
    found: list[tuple[int, str, str]] = []
    for err in exc.errors():
        path: NodePath = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        if err["type"] == "extra_forbidden":
            message = f"unknown field {path[-1]!r}" if path else "unknown field"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        found.append((doc.line_of(path), format_path(path), message))
    found.sort()
    line, field, message = found[0]
    if len(found) > 1:
        rest = "; ".join(f"line {ln} [{fd}]: {msg}" for ln, fd, msg in found[1:6])
        message += f" (and {len(found) - 1} more: {rest})"
    return InputError(message, file=doc.file, line=line, field=field or None)


def _convert(model: NativeInventory, doc: Document) -> NativeResult:
    workloads: list[tuple[Workload, Located]] = []
    bindings: list[AddressBinding] = []
    deps: list[tuple[str, Located]] = []

    def at(*path: str | int) -> Located:
        return Located(doc.file, doc.line_of(path), format_path(path))

    sections: tuple[tuple[str, Sequence[HostEntry], WorkloadKind], ...] = (
        ("hosts", model.hosts, WorkloadKind.HOST), ("services", model.services, WorkloadKind.SERVICE))
    for section, entries, kind in sections:
        for i, entry in enumerate(entries):
            workloads.append((_host_workload(entry, kind, doc.file), at(section, i, "name")))
            what = "host" if kind is WorkloadKind.HOST else "service"
            source = f"{doc.file}#{what} {entry.name}"
            bindings.extend(AddressBinding(ip=ip, workload=entry.name, source=source)
                            for ip in dict.fromkeys(entry.addresses))
            deps.extend((d.destination, at(section, i, "depends_on", j, "destination"))
                        for j, d in enumerate(entry.depends_on))
    for i, ext in enumerate(model.external):
        workloads.append((Workload(
            name=f"external:{ext.name}", kind=WorkloadKind.EXTERNAL, labels=ext.labels,
            addresses=sort_networks(ext.cidrs), except_addresses=sort_networks(ext.except_cidrs),
            fqdns=tuple(ext.fqdns), ports=sort_ports(ext.ports)), at("external", i, "name")))
    overrides = tuple(LocatedOverride(o, at("overrides", i, "workload"))
                      for i, o in enumerate(model.overrides))
    for i, o in enumerate(model.overrides):
        deps.extend((d.destination, at("overrides", i, "depends_on", j, "destination"))
                    for j, d in enumerate(o.depends_on))
    return NativeResult(tuple(workloads), tuple(bindings), overrides, tuple(deps))


def _host_workload(entry: HostEntry, kind: WorkloadKind, file: str) -> Workload:
    return Workload(
        name=entry.name, kind=kind, labels=entry.labels, addresses=sort_networks(entry.addresses),
        ports=sort_ports(entry.ports), environment=entry.environment, zone=entry.zone, owner=entry.owner,
        sensitivity=entry.sensitivity, compliance=tuple(sorted(set(entry.compliance))), ai_role=entry.ai_role,
        identity=entry.identity, location=entry.location, exposure=entry.exposure,
        exposure_reason=f"declared internet-facing in {file}" if entry.exposure == "internet" else "",
        declared=sort_dependencies(entry.depends_on))


def apply_overrides(workloads: Mapping[str, Workload],
                    overrides: Sequence[LocatedOverride]) -> dict[str, Workload]:
    """Apply every override; two overrides that set one field of one workload differently conflict.

    Conflicts are errors rather than "last file wins" so that the result does not depend on the order
    in which files were given.
    """
    out = dict(workloads)
    setters: dict[tuple[str, str], tuple[object, Located]] = {}
    for ov in overrides:
        name = ov.entry.workload
        if name not in out:
            raise ov.at.error(f"override names workload {name!r}, which no inventory source defines")
        changes: dict[str, Any] = {}
        for field in sorted(ov.entry.model_fields_set - {"workload", "labels", "depends_on"}):
            value = getattr(ov.entry, field)
            if field == "compliance":
                value = tuple(sorted(set(value or ())))
            prior = setters.get((name, field))
            if prior is not None and prior[0] != value:
                raise ov.at.error(f"override sets {field} of {name!r} to {value!r}, but "
                                  f"{prior[1].file}:{prior[1].line} sets it to {prior[0]!r}")
            setters[(name, field)] = (value, ov.at)
            changes[field] = value
        for key, value in sorted(ov.entry.labels.items()):
            prior = setters.get((name, f"labels.{key}"))
            if prior is not None and prior[0] != value:
                raise ov.at.error(f"override sets label {key} of {name!r} to {value!r}, but "
                                  f"{prior[1].file}:{prior[1].line} sets it to {prior[0]!r}")
            setters[(name, f"labels.{key}")] = (value, ov.at)
        current = out[name]
        if changes.get("exposure") is None:
            changes.pop("exposure", None)  # `exposure: null` leaves the derived exposure alone
        else:
            changes["exposure_reason"] = f"override in {ov.at.file}:{ov.at.line}"
        if ov.entry.labels:
            changes["labels"] = tuple(sorted({**current.label_map, **ov.entry.labels}.items()))
        if ov.entry.depends_on:
            changes["declared"] = sort_dependencies((*current.declared, *ov.entry.depends_on))
        # model_copy skips validation; re-validating keeps the frozen IR's invariants.
        out[name] = Workload.model_validate({**current.model_dump(), **changes})
    return out


def sort_networks(values: Sequence[str]) -> tuple[str, ...]:
    nets = {ipaddress.ip_network(v, strict=False): v for v in values}
    return tuple(nets[n] for n in sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


def sort_ports(ports: Sequence[ListenPort]) -> tuple[ListenPort, ...]:
    return tuple(sorted(set(ports), key=lambda p: (p.port, p.protocol.value, p.name or "")))


def sort_dependencies(deps: Sequence[Dependency]) -> tuple[Dependency, ...]:
    return tuple(sorted(set(deps), key=lambda d: (d.destination, d.protocol.value, d.port, d.reason)))


def json_schema() -> dict[str, Any]:
    schema = NativeInventory.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """The committed schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg.sources.inventory.native",
                                     description="Native microseg inventory format tools.")
    parser.add_argument("--schema", action="store_true", help="print the JSON Schema of the format")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_help()
        return 2
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
