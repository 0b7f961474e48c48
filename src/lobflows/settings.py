"""The one settings object of a LoB Flows process.

Every value can come from a command-line option or an environment variable
with the ``LOBFLOWS_`` prefix; the CLI builds this object once and hands it
down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

DEFAULT_DATABASE_URL = "sqlite:///lobflows.db"


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    database_url: str = pydantic.Field(
        default=DEFAULT_DATABASE_URL, description="Run store URL (LOBFLOWS_DB)."
    )
    secrets_file: Path | None = pydantic.Field(
        default=None, description="YAML mapping of secret name to value."
    )
    api_token: str | None = pydantic.Field(
        default=None, description="Bearer token for the REST API; unset disables it."
    )
    public_url: str = pydantic.Field(
        default="http://127.0.0.1:8080",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Base URL people reach the server at, for links in task messages.",
    )
    lease_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="How long a claimed run stays with its worker without a heartbeat.",
    )
    poll_interval_seconds: float = pydantic.Field(default=0.5, gt=0)
    concurrency: int = pydantic.Field(
        default=64, ge=1, description="Runs in progress per worker process."
    )
    step_data_budget_bytes: int = pydantic.Field(
        default=65_536,
        ge=1024,
        description="Stored data per step; larger is cut with a marker.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
