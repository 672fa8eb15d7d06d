"""Inventory readers: files and directories -> one canonical :class:`~microseg.ir.model.Inventory`.

Each YAML document (or JSON file) is dispatched by content: ``apiVersion: microseg/...`` goes to the
native reader, anything else with ``apiVersion`` and ``kind`` to the Kubernetes reader, JSON with a
top-level ``Reservations`` or ``NetworkInterfaces`` list to the AWS EC2 reader. Any other file whose
first line is a CSV header naming ``hostname`` and ``ip`` columns is a CMDB export (``cmdb_csv``). Files are read
in sorted order and every output collection is sorted, so the same files given in any order produce
an identical inventory. After all files are read: workload names must be unique across sources, the
``external:internet`` peer is added unless a file defines it, overrides are applied, declared
dependencies must name existing workloads, and no IP may be bound to two workloads at overlapping
times (a flow to it could not be attributed).
"""

from __future__ import annotations

import ipaddress
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from microseg.errors import InputError
from microseg.ir.model import AddressBinding, Inventory, Workload
from microseg.sources.yamlpos import load_documents

__all__ = ["InventoryReport", "LoadResult", "discover", "load_inventory", "read_inventory"]

INVENTORY_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class InventoryReport:
    """What was read besides the inventory itself, for the user's report."""

    files: tuple[str, ...]
    ignored_kinds: tuple[tuple[str, int], ...]  # Kubernetes kinds not read (NetworkPolicy, ...), counted
    unrecognized: tuple[str, ...]  # documents that are neither Kubernetes objects nor microseg files
    notes: tuple[str, ...]  # things a reviewer should know: unbound IPs, ambiguous selectors, ...


@dataclass(frozen=True)
class LoadResult:
    inventory: Inventory
    report: InventoryReport


def load_inventory(paths: Sequence[Path]) -> Inventory:
    """Read inventory files and directories (recursively) into one canonical inventory."""
    return read_inventory(paths).inventory


def discover(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Files to read as ``(path, display name)``, sorted by display name.

    A named file is read whatever its suffix; inside directories only ``.yaml``, ``.yml`` and ``.json``
    files, and ``.csv`` files whose header names ``hostname`` and ``ip`` (a CMDB export), are read and
    hidden entries (``.git``) are skipped. Symbolic links to directories are not
    followed, so a link cycle cannot make the walk endless.
    """
    found: dict[Path, str] = {}

    def add(path: Path, display: str) -> None:
        key = path.resolve()
        found[key] = min(found.get(key, display), display)

    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    if name.lower().endswith(INVENTORY_SUFFIXES) or (
                            name.lower().endswith(".csv") and _is_cmdb_csv(Path(root) / name)):
                        add(Path(root) / name, str(Path(root) / name))
        elif path.is_file():
            add(path, str(path))
        else:
            raise InputError("no such file or directory", file=str(path))
    return sorted(((p, d) for p, d in found.items()), key=lambda item: item[1])


def _is_cmdb_csv(path: Path) -> bool:
    from microseg.sources.inventory import cmdb_csv

    return cmdb_csv.is_cmdb_csv(path)


def read_inventory(paths: Sequence[Path]) -> LoadResult:
    """Like :func:`load_inventory`, also returning the report of what was ignored or noticed."""
    # Imported here, not at the top: `python -m microseg.sources.inventory.native --schema` would
    # otherwise find its own module already imported by this package and warn.
    from microseg.sources.inventory import aws_ec2, cmdb_csv, kubernetes, native

    files = discover(paths)
    if not files:
        given = ", ".join(map(str, paths)) or "(nothing)"
        raise InputError(f"no inventory files (.yaml, .yml, .json, or a .csv naming hostname and ip) under {given}")
    k8s = kubernetes.KubernetesReader()
    natives: list[native.NativeResult] = []
    unrecognized: list[str] = []
    notes: list[str] = []
    for path, display in files:
        if not path.name.lower().endswith(INVENTORY_SUFFIXES) and cmdb_csv.is_cmdb_csv(path):
            natives.append(cmdb_csv.parse(path, display))
            continue
        for doc in load_documents(path, display):
            if doc.data is None:
                continue
            if native.is_native(doc.data):
                natives.append(native.parse(doc))
            elif aws_ec2.is_aws_ec2(doc.data):
                aws = aws_ec2.parse(doc)
                natives.append(aws.result)
                notes.extend(aws.notes)
            elif kubernetes.is_kubernetes_object(doc.data):
                k8s.add(doc)
            else:
                unrecognized.append(f"{display}:{doc.line}")
    k8s_result = k8s.build()

    workloads: dict[str, Workload] = {w.name: w for w in k8s_result.workloads}
    where: dict[str, native.Located | kubernetes.Origin] = dict(k8s_result.origins)
    for result in natives:
        for w, at in result.workloads:
            if w.name in workloads:
                prior = where[w.name]
                raise at.error(f"workload {w.name!r} is already defined at {prior.file}:{prior.line}")
            workloads[w.name], where[w.name] = w, at
    if native.INTERNET_NAME not in workloads:
        workloads[native.INTERNET_NAME] = native.internet_workload()
    workloads = native.apply_overrides(workloads, [o for r in natives for o in r.overrides])
    for result in natives:
        for destination, at in result.dependencies:
            if destination not in workloads:
                raise at.error(f"declared dependency on {destination!r}, which no inventory source defines")

    bindings = _canonical_bindings([*k8s_result.bindings, *(b for r in natives for b in r.bindings)])
    inventory = Inventory(
        workloads=tuple(workloads[n] for n in sorted(workloads)), bindings=bindings,
        namespaces=k8s_result.namespaces, dns_resolvers=k8s_result.dns_resolvers,
        sources=tuple(display for _, display in files))
    report = InventoryReport(
        files=inventory.sources, ignored_kinds=tuple(sorted(k8s_result.ignored_kinds.items())),
        unrecognized=tuple(unrecognized), notes=(*k8s_result.notes, *notes))
    return LoadResult(inventory, report)


def _time_key(t: datetime | None, open_value: int) -> tuple[int, float]:
    return (open_value, 0.0) if t is None else (0, t.timestamp())


def _canonical_bindings(bindings: Sequence[AddressBinding]) -> tuple[AddressBinding, ...]:
    """Sort and de-duplicate; refuse an IP held by two workloads at overlapping times."""
    # Identical bindings from several files collapse into one, keeping the first source by name.
    unique = {(b.ip, b.workload, b.valid_from, b.valid_to): b
              for b in sorted(bindings, key=lambda b: b.source, reverse=True)}
    ordered = sorted(unique.values(), key=lambda b: (
        ipaddress.ip_address(b.ip).version, int(ipaddress.ip_address(b.ip)), _time_key(b.valid_from, -1),
        _time_key(b.valid_to, 1), b.workload))
    by_ip: dict[str, list[AddressBinding]] = defaultdict(list)
    for b in ordered:
        by_ip[b.ip].append(b)
    for ip, held in by_ip.items():
        for i, a in enumerate(held):
            for b in held[i + 1:]:
                if a.workload != b.workload and _overlap(a, b):
                    raise InputError(
                        f"IP {ip} is bound to {a.workload} ({_span(a)}, from {a.source}) and to {b.workload} "
                        f"({_span(b)}, from {b.source}) at overlapping times; flows to it could not be "
                        "attributed",
                        file=b.source.split("#", 1)[0])
    return tuple(ordered)


def _overlap(a: AddressBinding, b: AddressBinding) -> bool:
    # Half-open intervals [from, to); a missing bound is open.
    a_starts_before_b_ends = b.valid_to is None or a.valid_from is None or a.valid_from < b.valid_to
    b_starts_before_a_ends = a.valid_to is None or b.valid_from is None or b.valid_from < a.valid_to
    return a_starts_before_b_ends and b_starts_before_a_ends


def _span(b: AddressBinding) -> str:
    start = b.valid_from.isoformat() if b.valid_from else "always"
    end = b.valid_to.isoformat() if b.valid_to else "open"
    return f"{start} .. {end}"
