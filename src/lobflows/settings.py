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
        default=None,
        description="Shared bearer token for the REST API, acting as an admin; "
        "users' own API tokens work beside it.",
    )
    session_hours: float = pydantic.Field(
        default=12.0, gt=0, description="How long a dashboard sign-in lasts, in hours."
    )
    oidc_issuer: str | None = pydantic.Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="OpenID Connect issuer URL; set, the sign-in page offers "
        "single sign-on.",
    )
    oidc_client_id: str | None = pydantic.Field(
        default=None, description="Client id registered at the OpenID Connect issuer."
    )
    oidc_roles_claim: str = pydantic.Field(
        default="groups",
        description="ID token claim whose values map to roles (oidc_role_map).",
    )
    oidc_role_map: dict[str, Literal["viewer", "approver", "operator", "admin"]] = (
        pydantic.Field(
            default_factory=dict,
            description="Claim value to role; an unknown user whose claim maps to "
            "a role is added at first sign-in.",
        )
    )
    public_url: str = pydantic.Field(
        default="http://127.0.0.1:8700",
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
