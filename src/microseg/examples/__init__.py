"""Bundled example environments.

``shop`` is a small EKS estate (web shop, AI assistant, monitoring, a dev namespace, three VMs) with one
week of VPC Flow Logs and a day of Hubble flows in which known facts were planted; its README lists
them. The data is written by ``scripts/gen_example.py`` and must not be edited by hand.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def example_dir(name: str = "shop") -> Path:
    """The folder of the bundled example ``name`` (installed as package data)."""
    path = _HERE / name
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"no bundled example {name!r} under {_HERE}")
    return path
