"""A stand-in for HashiCorp Vault's KV version 2 secrets engine.

Follows the HTTP contract of the KV v2 API for what the secrets backend
uses: ``GET /v1/{mount}/data/{path}`` reads the newest version (``?version=``
an older one), ``POST``/``PUT`` there writes a new version from
``{"data": {...}}``, and ``GET /v1/{mount}/metadata/{path}?list=true`` (or
the ``LIST`` method) lists the keys under a path, sub-folders ending in
``/``. Every request needs the ``X-Vault-Token`` header; a wrong one gets
403 ``{"errors": ["permission denied"]}``, a missing path 404 ``{"errors": []}``.
The state is on ``app.state.vault``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class KvState:
    """Secrets by mount and path; each path keeps its versions in order."""

    token: str
    mount: str = "secret"
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, path: str, data: dict[str, Any]) -> int:
        """Write a new version at a path; returns its number."""
        with self.lock:
            versions = self.entries.setdefault(path.strip("/"), [])
            versions.append({"data": dict(data), "created_time": _now()})
            return len(versions)

    def keys_under(self, path: str) -> list[str]:
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        keys: set[str] = set()
        with self.lock:
            for name in self.entries:
                if name.startswith(prefix):
                    rest = name[len(prefix) :]
                    head, sep, _ = rest.partition("/")
                    keys.add(head + sep)
        return sorted(keys)


def create_hashicorp_vault_app(*, token: str, mount: str = "secret") -> Starlette:
    """The stand-in; its state is on ``app.state.vault``."""
    state = KvState(token=token, mount=mount)

    def authorised(request: Request) -> bool:
        state.requests += 1
        return request.headers.get("x-vault-token") == state.token

    async def data(request: Request) -> JSONResponse:
        if not authorised(request) or request.path_params["mount"] != state.mount:
            return _denied()
        path = request.path_params["path"].strip("/")
        if request.method in ("POST", "PUT"):
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
                return JSONResponse({"errors": ["no data provided"]}, status_code=400)
            version = state.put(path, body["data"])
            return JSONResponse({"data": _metadata(version)})
        versions = state.entries.get(path)
        if not versions:
            return JSONResponse({"errors": []}, status_code=404)
        wanted = int(request.query_params.get("version") or len(versions))
        if not 1 <= wanted <= len(versions):
            return JSONResponse({"errors": []}, status_code=404)
        entry = versions[wanted - 1]
        return JSONResponse(
            {
                "request_id": f"standin-{time.monotonic_ns()}",
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": {
                    "data": entry["data"],
                    "metadata": {
                        **_metadata(wanted),
                        "created_time": entry["created_time"],
                    },
                },
                "wrap_info": None,
                "warnings": None,
                "auth": None,
            }
        )

    async def metadata(request: Request) -> JSONResponse:
        if not authorised(request) or request.path_params["mount"] != state.mount:
            return _denied()
        listing = request.method == "LIST" or request.query_params.get("list") == "true"
        if not listing:
            return JSONResponse({"errors": ["only listing is supported"]}, 405)
        keys = state.keys_under(request.path_params["path"])
        if not keys:
            return JSONResponse({"errors": []}, status_code=404)
        return JSONResponse({"data": {"keys": keys}})

    app = Starlette(
        routes=[
            Route("/v1/{mount}/data/{path:path}", data, methods=["GET", "POST", "PUT"]),
            Route(
                "/v1/{mount}/metadata/{path:path}", metadata, methods=["GET", "LIST"]
            ),
        ]
    )
    app.state.vault = state
    return app


def _denied() -> JSONResponse:
    return JSONResponse({"errors": ["permission denied"]}, status_code=403)


def _metadata(version: int) -> dict[str, Any]:
    return {
        "created_time": _now(),
        "custom_metadata": None,
        "deletion_time": "",
        "destroyed": False,
        "version": version,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
