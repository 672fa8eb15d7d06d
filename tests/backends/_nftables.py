"""nftables test support: the pairs the nftables target governs (shared by test_nftables.py and
test_contract.py). The ``nft`` and ``kernel`` fixtures are in tests/backends/conftest.py."""

from __future__ import annotations

import json

from microseg.ir.model import Policy
from microseg.ir.semantics import Connections, connectivity
from microseg.sources.deployed import nftables as reader


def nft_files(files: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in files.items() if k.endswith(".nft")}


def hosts_of(files: dict[str, str]) -> list[str]:
    return [h["workload"] for h in json.loads(files["index.json"])["hosts"]]


def expected_connectivity(policy: Policy, files: dict[str, str]) -> dict[tuple[str, str], Connections]:
    governed = reader.governed_pairs(policy, hosts_of(files), router=True)
    return {k: v for k, v in connectivity(policy).items() if k in governed}
