"""Fixtures shared by the back-end tests: the real ``nft`` and a scratch network namespace for it
(used by test_nftables.py and test_contract.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def nft() -> str:
    """The nft binary; missing is a failure, not a skip: CI installs it."""
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("nft not found: run scripts/install-system-deps.sh (as root) to install Debian's nftables")
    return found


@pytest.fixture(scope="session")
def kernel(nft: str) -> None:
    """nft -c and the read-back need a scratch network namespace (root, or user namespaces)."""
    prefix = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
    r = subprocess.run([*prefix, nft, "list", "ruleset"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace for nft ({r.stderr.strip()}): nft -c needs CAP_NET_ADMIN; "
                    "run as root (CI does)")
