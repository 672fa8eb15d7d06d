"""Validate generated custom resources against the CRD schemas kept under tests/schemas/crds/.

kubernetes-validate only knows built-in kinds, so custom resources (Calico, Cilium, the network-policy
API) are checked here against the ``openAPIV3Schema`` of their CRD with ``jsonschema``, plus what the
API server adds on top of plain JSON Schema validation for a structural schema:

* unknown fields are an error (the API server would prune them silently: a field we emit and the
  server drops is a rule we think exists and does not);
* a subtree marked ``x-microseg-pruned`` (left out when the schema was transcribed, see
  tests/schemas/README.md) must never be reached: if it is, transcribe it instead of guessing;
* ``metadata.name`` is a DNS-1123 subdomain and, for namespaced kinds, ``metadata.namespace`` a label.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "schemas" / "crds"
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@cache
def _crds() -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
    out = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            out[key] = (version["schema"]["openAPIV3Schema"], spec["scope"])
    return out


def known(api_version: str, kind: str) -> bool:
    return (api_version, kind) in _crds()


def _strict(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    if schema.get("x-microseg-pruned"):
        return [f"{path}: reaches a subtree left out of the transcribed schema"]
    errors: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        for k, v in value.items():
            if k in props:
                errors += _strict(props[k], v, f"{path}.{k}")
            elif "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{k}: unknown field (the API server would prune it)")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for k, v in value.items():
            errors += _strict(schema["additionalProperties"], v, f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += _strict(schema["items"], v, f"{path}[{i}]")
    return errors


def validate(doc: dict[str, Any]) -> None:
    """Raise AssertionError with every problem of ``doc`` against its CRD."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in _crds():
        raise AssertionError(f"no CRD schema under {CRDS} for {key}")
    schema, scope = _crds()[key]  # type: ignore[index]
    problems = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    problems += _strict(schema, doc, "")
    meta = doc.get("metadata") or {}
    name = str(meta.get("name", ""))
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    if scope == "Namespaced" and not _LABEL.fullmatch(str(meta.get("namespace", ""))):
        problems.append("a namespaced object needs metadata.namespace (a DNS-1123 label)")
    if scope == "Cluster" and "namespace" in meta:
        problems.append("a cluster-scoped object has no metadata.namespace")
    if problems:
        raise AssertionError(f"{key[1]} {name}: " + "; ".join(problems))
