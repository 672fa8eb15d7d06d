"""One JSON reading rule for every JSON flow reader, in Python and in DuckDB alike.

RFC 8259 leaves an object with a repeated key undefined. Python's ``json`` keeps the last value,
DuckDB's JSON functions (yyjson) the first. The readers' DuckDB fast paths and their Python
fallback must read a line as the same record, and detecting a repeated key in SQL costs a second
parse of every line, so the Python side follows DuckDB: the first occurrence of a key is the one
read. No repeated key occurs in what Cilium, GCP, Zeek, Calico or Envoy write; the rule only has
to be the same on both paths.
"""

from __future__ import annotations

import json
from typing import Any


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` where a repeated key reads as its first occurrence (DuckDB's rule).

    Raises ValueError for anything it cannot read, including nesting too deep for Python's parser
    (which raises RecursionError), so that a reader reports such a line as bad instead of crashing."""
    try:
        return json.loads(text, object_pairs_hook=_first_wins, **kwargs)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


__all__ = ["loads"]
