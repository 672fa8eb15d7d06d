"""Text and JSON renderings of a posture assessment (:mod:`microseg.analyses.posture`).

Both are deterministic: findings in the analysis's canonical order, namespaces sorted, shares rounded
to four decimals in JSON, keys sorted.
"""

from __future__ import annotations

import json
from typing import Any

from microseg.analyses.posture import PostureFinding, PostureResult, Reach

FORMATS = ("text", "json")


def _reach(r: Reach) -> dict[str, Any]:
    return {"pairs": r.pairs, "reachable": r.reachable, "reachable_share": round(r.reachable_share, 4),
            "unrestricted": r.unrestricted, "unrestricted_share": round(r.unrestricted_share, 4)}


def _finding(f: PostureFinding) -> dict[str, Any]:
    o = f.object
    return {"id": f.id, "severity": f.severity, "ref": str(o), "message": f.message, "file": f.file,
            "related": f.related,
            "object": {"kind": o.kind, "namespace": o.namespace, "name": o.name, "direction": o.direction,
                       "rule": o.rule, "peer": o.peer}}


def posture_json(result: PostureResult) -> str:
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.id] = counts.get(f.id, 0) + 1
    doc = {
        "workloads": result.workloads, "policies": result.policies, "reach": _reach(result.overall),
        "namespaces": [{"namespace": n.namespace, "workloads": n.workloads, "intra": _reach(n.intra),
                        "inbound": _reach(n.inbound)} for n in result.namespaces],
        "findings": [_finding(f) for f in result.findings], "counts": dict(sorted(counts.items())),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else "0/0"


def posture_text(result: PostureResult) -> str:
    r = result.overall
    lines = [f"Posture of {result.policies} NetworkPolicies over {result.workloads} workloads",
             f"Reachable pairs: {_share(r.reachable, r.pairs)}; on every port and protocol: "
             f"{_share(r.unrestricted, r.pairs)}", "", "Per namespace (reachable, every port):"]
    width = max((len(n.namespace) for n in result.namespaces), default=0)
    for n in result.namespaces:
        inside = f"{_share(n.intra.reachable, n.intra.pairs)}, {_share(n.intra.unrestricted, n.intra.pairs)}"
        inbound = f"{_share(n.inbound.reachable, n.inbound.pairs)}, {_share(n.inbound.unrestricted, n.inbound.pairs)}"
        lines.append(f"  {n.namespace:<{width}}  {n.workloads:>4} workloads  inside {inside}  "
                     f"from other namespaces {inbound}")
    lines += ["", f"Findings: {len(result.findings)}"]
    for f in result.findings:
        extra = f" [{f.file}]" if f.file else ""
        lines.append(f"  {f.id} {f.severity:<6} {f.object}: {f.message}{extra}")
    return "\n".join(lines) + "\n"


def render(result: PostureResult, fmt: str) -> str:
    if fmt == "json":
        return posture_json(result)
    return posture_text(result)


__all__ = ["FORMATS", "posture_json", "posture_text", "render"]
