"""Policy-as-code round trip, determinism and fail-closed loading."""

from __future__ import annotations

import pytest

from microseg.analyses.synthesis import synthesize
from microseg.analyses.zones import default_guardrails
from microseg.errors import InputError
from microseg.ir.serde import dump_policy, load_policy

from ..analyses.test_synthesis import EDGES, INV


def files() -> dict[str, str]:
    return dump_policy(synthesize(INV, EDGES, guardrails=default_guardrails()).policy)


def test_round_trip_is_byte_identical() -> None:
    f = files()
    assert dump_policy(load_policy(f)) == f
    assert files() == f


def test_unknown_field_fails_with_line_and_field() -> None:
    f = files()
    f["rules.yaml"] = f["rules.yaml"].replace("  protocol: TCP\n", "  protocol: TCP\n  portz: [1]\n", 1)
    line = f["rules.yaml"].splitlines().index("  portz: [1]") + 1
    with pytest.raises(InputError) as e:
        load_policy(f, where="pol")
    assert e.value.file == "pol/rules.yaml" and e.value.line == line and e.value.field == "rules.0.portz"


def test_rule_naming_unknown_workload_fails_closed() -> None:
    f = files()
    f["rules.yaml"] = f["rules.yaml"].replace("  - shop/api\n", "  - shop/apii\n", 1)
    with pytest.raises(InputError, match="shop/apii"):
        load_policy(f)


def test_bad_port_range_fails() -> None:
    f = files()
    f["rules.yaml"] = f["rules.yaml"].replace("- '5432'", "- 5432-80", 1)
    with pytest.raises(InputError):
        load_policy(f)


def test_missing_file() -> None:
    f = files()
    del f["rules.yaml"]
    with pytest.raises(InputError, match="missing policy file"):
        load_policy(f)
