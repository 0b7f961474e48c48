"""Users, API tokens and the audit log of operator actions."""

from __future__ import annotations

from lobflows.store.base import StoreBase


class AccessOps(StoreBase):
    """Users, API tokens and the audit log of operator actions."""
