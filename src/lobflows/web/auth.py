"""Who is asking: sessions, API tokens, roles, CSRF, and sign-in pages."""

from __future__ import annotations

from starlette.routing import BaseRoute

from lobflows.runtime import Runtime


def routes(runtime: Runtime) -> list[BaseRoute]:
    """Sign-in and sign-out pages, and the OpenID Connect callback."""
    return []
