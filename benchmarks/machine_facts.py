"""What every benchmark prints about the machine it ran on (CPU model, cores, RAM, Python, load)."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_facts(**versions: str) -> dict[str, Any]:
    """CPU model, usable cores, RAM, Python version and load average, plus the given tool ``versions``."""
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), **versions}
