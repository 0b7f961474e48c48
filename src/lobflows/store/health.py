"""Connection health checks and the state of alerts."""

from __future__ import annotations

from lobflows.store.base import StoreBase


class HealthOps(StoreBase):
    """Connection health checks and the state of alerts."""
