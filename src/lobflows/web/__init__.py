"""The HTTP face of LoB Flows: webhooks, the REST API and health endpoints."""
