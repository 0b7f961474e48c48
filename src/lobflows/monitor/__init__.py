"""Health of flows and connections, Prometheus metrics, and alert routing."""

from __future__ import annotations

from lobflows.monitor.config import MonitorConfig
from lobflows.monitor.health import Health, RecentError, Snapshot
from lobflows.monitor.monitor import Monitor

__all__ = ["Health", "Monitor", "MonitorConfig", "RecentError", "Snapshot"]
