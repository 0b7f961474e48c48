"""LoB Flows: durable, documented flows between line-of-business systems.

The public API for embedding: load flows, open a run store, and run an
engine with its worker. The ``lobflows`` command wraps the same pieces.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lobflows.engine import Engine, Worker
    from lobflows.runtime import Runtime
    from lobflows.settings import Settings
    from lobflows.spec.loader import load_flow_file, load_project
    from lobflows.store import RunStore

__version__ = "0.1.0"
__all__ = [
    "Engine",
    "RunStore",
    "Runtime",
    "Settings",
    "Worker",
    "load_flow_file",
    "load_project",
]

# Each public name and the module it comes from, imported on first use so
# that a command importing one part (lobflows.errors, the CLI) loads only
# what it needs.
_HOMES = {
    "Engine": "lobflows.engine",
    "Worker": "lobflows.engine",
    "Runtime": "lobflows.runtime",
    "Settings": "lobflows.settings",
    "load_flow_file": "lobflows.spec.loader",
    "load_project": "lobflows.spec.loader",
    "RunStore": "lobflows.store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lobflows' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
