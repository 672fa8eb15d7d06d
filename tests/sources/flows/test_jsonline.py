"""The JSON readers' repeated-key rule is DuckDB's own: checked against DuckDB, not restated."""

from __future__ import annotations

import duckdb
import pytest

from microseg.sources.flows import jsonline

LINES = [
    '{"a": 1, "a": 2}',
    '{"x": {"port": 80, "port": "443"}, "y": 1}',
    '{"x": {"a": 1}, "x": {"a": 2, "b": 3}}',
]


@pytest.mark.parametrize("line", LINES)
def test_a_repeated_key_reads_as_duckdb_reads_it(line: str) -> None:
    ours = jsonline.loads(line)
    con = duckdb.connect()
    for key, value in ours.items():
        theirs = con.execute("SELECT json_extract(?, ?)::VARCHAR", [line, f'$."{key}"']).fetchone()
        assert theirs is not None
        assert jsonline.loads(theirs[0]) == value


def test_without_repeats_it_is_json_loads() -> None:
    line = '{"a": [1, 2.5, null, true], "b": {"c": "d\\u00e9"}, "e": NaN}'
    got = jsonline.loads(line)
    assert got["a"] == [1, 2.5, None, True] and got["b"] == {"c": "dé"}
    assert got["e"] != got["e"]  # NaN, as json.loads reads it


def test_malformed_json_still_fails() -> None:
    with pytest.raises(ValueError):
        jsonline.loads('{"a": 1,}')


def test_nesting_too_deep_is_a_value_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonline.loads('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
