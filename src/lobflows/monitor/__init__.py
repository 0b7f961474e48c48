"""Health of flows and connections, Prometheus metrics, and alert routing."""
