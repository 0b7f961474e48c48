"""The secrets vault: encrypted values, their versions and use."""

from __future__ import annotations

from lobflows.store.base import StoreBase


class SecretOps(StoreBase):
    """The secrets vault: encrypted values, their versions and use."""
