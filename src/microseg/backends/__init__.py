"""Enforcement back ends: one IR, many targets.

The registry key is the module name and the CLI's ``--target`` value: ``microseg.backends.<name>``
exposes its back end as the module attribute ``BACKEND``. Every public module of this package is a
target; shared helpers live in :mod:`microseg.backends.base` or in private (``_``-prefixed) modules.
Targets are discovered from the package directory and imported lazily, so adding a back end is adding
one module (and its test file), and ``microseg --help`` does not import every target.
"""

from __future__ import annotations

import importlib
import pkgutil

from microseg.backends.base import CAPABILITIES, MANIFEST, MODES, Backend, Mode, write_outputs
from microseg.errors import MicrosegError

__all__ = ["CAPABILITIES", "MANIFEST", "MODES", "TARGETS", "Backend", "Mode", "get_backend", "write_outputs"]

_NOT_TARGETS = frozenset({"base"})

TARGETS: tuple[str, ...] = tuple(sorted(
    m.name for m in pkgutil.iter_modules(__path__)
    if not m.name.startswith("_") and m.name not in _NOT_TARGETS
))


def get_backend(name: str) -> Backend:
    """The back end registered as ``name``; a :class:`MicrosegError` lists the known targets otherwise."""
    # Only names found in the package are imported: a --target value never reaches importlib unchecked.
    if name not in TARGETS:
        raise MicrosegError(f"unknown target {name!r}; known targets: {', '.join(TARGETS) or '(none)'}")
    module = importlib.import_module(f"{__name__}.{name}")
    backend = getattr(module, "BACKEND", None)
    if not isinstance(backend, Backend) or backend.name != name:
        raise MicrosegError(f"module {module.__name__} does not define BACKEND with name {name!r}")
    return backend
