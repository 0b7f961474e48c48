"""LoB Flows: durable, documented flows between line-of-business systems.

The public API for embedding: load flows, open a run store, and run an
engine with its worker. The ``lobflows`` command wraps the same pieces.
"""

from __future__ import annotations

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
