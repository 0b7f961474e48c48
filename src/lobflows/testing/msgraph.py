"""In-memory stand-in for Microsoft Graph v1.0: users, group members, sendMail.

Speaks what the connector contracts describe: the Entra client-credentials
token endpoint (``POST /{tenant}/oauth2/v2.0/token``, scope must be
``https://graph.microsoft.com/.default``), ``/v1.0/users`` create and list
with absolute ``@odata.nextLink`` paging, ``/v1.0/groups/{id}/members/$ref``,
and ``/v1.0/users/{id}/sendMail`` (202, recorded). Errors use Graph's
``{"error": {"code", "message", "innerError"}}`` envelope.

Control endpoints live under ``/__standin__/`` and need no authentication;
see `create_msgraph_app`.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lobflows.testing.faults import Fault, FaultQueue, apply_faults, fault_routes, under
from lobflows.testing.oauth import IssuedTokens, client_credentials_problem
from lobflows.testing.servers import hide_simulated_disconnects

__all__ = ["GraphError", "MsGraphState", "create_msgraph_app"]

SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_PAGE_SIZE = 3
# Seeded groups, by id.
GROUPS = {
    "0b9a1f3c-0000-4000-8000-000000000001": "All Staff",
    "0b9a1f3c-0000-4000-8000-000000000002": "Finance",
}
_DEFAULT_ERRORS = {
    400: ("Request_BadRequest", "Bad request."),
    429: ("TooManyRequests", "Too many requests."),
    500: ("generalException", "General exception while processing."),
    503: ("serviceNotAvailable", "Service unavailable."),
    504: ("gatewayTimeout", "Gateway timeout."),
}
_REQUIRED_USER = (
    "accountEnabled",
    "displayName",
    "mailNickname",
    "userPrincipalName",
    "passwordProfile",
)


class GraphError(Exception):
    """An error answer in Graph's envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self, request_id: str | None = None) -> Response:
        return _error(self.status, self.code, self.message, request_id)


def _error(
    status: int,
    code: str,
    message: str,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id or str(uuid.uuid4()),
    }
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return JSONResponse(body, status, headers=headers)


class MsGraphState(IssuedTokens):
    """Users, groups, sent mail, tokens, faults and counters of one tenant."""

    token_prefix = "eyJ0"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        token_lifetime_seconds: int = 3599,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.token_lifetime_seconds = token_lifetime_seconds
        self.lock = threading.RLock()
        self.faults = FaultQueue(under("/v1.0"))
        self.reset()

    def reset(self) -> None:
        """Forget users, memberships, mail, tokens, faults and counters."""
        with self.lock:
            self.users: dict[str, dict[str, Any]] = {}
            self.members: dict[str, list[str]] = {g: [] for g in GROUPS}
            self.mail: list[dict[str, Any]] = []
            self.forget_tokens()
            # Users without an Exchange Online mailbox, by id.
            self.mailboxless: set[str] = set()
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Return JSON-ready counters."""
        with self.lock:
            return {
                "requests": dict(self.requests),
                "tokens_issued": self.tokens_issued,
                "users": len(self.users),
                "mail": len(self.mail),
                "faults": self.faults.describe(),
            }

    def create_user(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise GraphError(400, "Request_BadRequest", "Invalid request body.")
        missing = [k for k in _REQUIRED_USER if body.get(k) in (None, "")]
        if missing:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Property '{missing[0]}' is required and must not be empty.",
            )
        upn = str(body["userPrincipalName"])
        if upn.count("@") != 1 or " " in upn:
            raise GraphError(
                400, "Request_BadRequest", "Property userPrincipalName is invalid."
            )
        with self.lock:
            if self.find_user(upn) is not None:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    "Another object with the same value for property "
                    "userPrincipalName already exists.",
                )
            user = {
                "id": str(uuid.uuid4()),
                "businessPhones": [],
                "mail": None,
                **{k: v for k, v in body.items() if k != "passwordProfile"},
            }
            self.users[user["id"]] = user
        return user

    def find_user(self, key: str) -> dict[str, Any] | None:
        """A user by id or user principal name (case-insensitive)."""
        with self.lock:
            if key in self.users:
                return self.users[key]
            for user in self.users.values():
                if str(user["userPrincipalName"]).lower() == key.lower():
                    return user
        return None

    def add_member(self, group_id: str, user_id: str) -> None:
        with self.lock:
            members = self.members.get(group_id)
            if members is None:
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{group_id}' does not exist or one of its queried "
                    "reference-property objects are not present.",
                )
            if user_id not in self.users:
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{user_id}' does not exist or one of its queried "
                    "reference-property objects are not present.",
                )
            if user_id in members:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    "One or more added object references already exist for the "
                    "following modified properties: 'members'.",
                )
            members.append(user_id)

    def send_mail(self, sender: str, body: Any) -> None:
        user = self.find_user(sender)
        if user is None:
            raise GraphError(
                404, "ErrorInvalidUser", f"The requested user '{sender}' is invalid."
            )
        if user["id"] in self.mailboxless:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not message.get("toRecipients"):
            raise GraphError(
                400, "ErrorInvalidRecipients", "At least one recipient is not valid."
            )
        with self.lock:
            self.mail.append({"from": user["userPrincipalName"], **body})


class _Api:
    """HTTP handlers bound to one `MsGraphState`."""

    def __init__(self, state: MsGraphState) -> None:
        self.state = state

    async def token(self, request: Request) -> Response:
        self.state.count_request(request.method, request.url.path)
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        problem = self._token_problem(form)
        if problem is not None:
            error, description, status = problem
            return JSONResponse(
                {"error": error, "error_description": description}, status
            )
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.state.token_lifetime_seconds,
                "ext_expires_in": self.state.token_lifetime_seconds,
                "access_token": self.state.issue_token(),
            }
        )

    def _token_problem(self, form: dict[str, str]) -> tuple[str, str, int] | None:
        problem = client_credentials_problem(
            form,
            client_id=self.state.client_id,
            client_secret=self.state.client_secret,
        )
        if problem == "unsupported_grant_type":
            return problem, "AADSTS70003: unsupported grant", 400
        if problem == "invalid_client":
            return problem, "AADSTS7000215: Invalid client secret provided.", 401
        if form.get("scope") != SCOPE:
            return (
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid.",
                400,
            )
        return None

    async def handle(self, request: Request) -> Response:
        """Count, apply faults, then serve one Graph request."""
        self.state.count_request(request.method, request.url.path)
        return await apply_faults(
            self.state.faults, request, lambda: self._serve(request), _forced
        )

    async def _serve(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.state.lock:
            known = token in self.state.tokens
        if not known:
            return _error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
                request_id,
            )
        try:
            response = await self._route(request)
        except GraphError as error:
            response = error.response(request_id)
        response.headers["request-id"] = request_id
        return response

    async def _route(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")[1:]
        method = request.method
        if parts == ["users"] and method == "POST":
            return JSONResponse(self.state.create_user(await _body(request)), 201)
        if parts == ["users"] and method == "GET":
            with self.state.lock:
                users = list(self.state.users.values())
            return self._page(request, users)
        if len(parts) == 2 and parts[0] == "users" and method == "GET":
            user = self.state.find_user(parts[1])
            if user is None:
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{parts[1]}' does not exist.",
                )
            return JSONResponse(user)
        if len(parts) == 3 and parts[::2] == ["users", "sendMail"] and method == "POST":
            self.state.send_mail(parts[1], await _body(request))
            return Response(status_code=202)
        if parts == ["groups"] and method == "GET":
            groups = [{"id": g, "displayName": n} for g, n in GROUPS.items()]
            return self._page(request, groups)
        if (
            len(parts) == 4
            and parts[::2] == ["groups", "members"]
            and parts[3] == "$ref"
        ):
            if method == "POST":
                self.state.add_member(parts[1], _reference(await _body(request)))
                return Response(status_code=204)
        if len(parts) == 3 and parts[::2] == ["groups", "members"] and method == "GET":
            with self.state.lock:
                ids = list(self.state.members.get(parts[1], []))
                found = [self.state.users[i] for i in ids if i in self.state.users]
            return self._page(request, found)
        raise GraphError(
            400, "BadRequest", f"Resource not found for the segment '{parts[-1]}'."
        )

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        query = dict(request.query_params)
        size = min(int(query.get("$top") or self.state.page_size), 999)
        start = int(query.pop("$skiptoken", "0") or 0)
        body: dict[str, Any] = {
            "@odata.context": f"{request.base_url}v1.0/$metadata",
            "value": items[start : start + size],
        }
        if start + size < len(items):
            following = urlencode({**query, "$skiptoken": str(start + size)})
            body["@odata.nextLink"] = f"{request.url.replace(query=following)}"
        return JSONResponse(body)


def _reference(body: Any) -> str:
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    if not isinstance(ref, str) or "/directoryObjects/" not in ref:
        raise GraphError(
            400, "Request_BadRequest", "Invalid URL format specified in payload."
        )
    return ref.rsplit("/", 1)[1]


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise GraphError(
            400, "BadRequest", "Unable to read JSON request payload."
        ) from None


def _forced(fault: Fault) -> Response:
    assert fault.status is not None
    headers = fault.response_headers()
    if fault.status in (503, 504):
        headers.setdefault("Retry-After", "1")
    if fault.body is not None:
        return JSONResponse(fault.body, fault.status, headers=headers)
    code, message = _DEFAULT_ERRORS.get(fault.status, ("generalException", "Error."))
    return _error(fault.status, code, message, headers=headers)


def _control_routes(state: MsGraphState) -> list[Route]:
    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def users(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.users.values()))

    async def members(request: Request) -> Response:
        with state.lock:
            found = state.members.get(request.path_params["group_id"])
        if found is None:
            return JSONResponse({"error": "unknown group"}, 404)
        return JSONResponse(found)

    async def mail(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.mail))

    async def expire_tokens(request: Request) -> Response:
        state.expire_tokens()
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return [
        *fault_routes(state.faults),
        Route("/__standin__/stats", stats, methods=["GET"]),
        Route("/__standin__/users", users, methods=["GET"]),
        Route("/__standin__/groups/{group_id}/members", members, methods=["GET"]),
        Route("/__standin__/mail", mail, methods=["GET"]),
        Route("/__standin__/expire-tokens", expire_tokens, methods=["POST"]),
        Route("/__standin__/reset", reset, methods=["POST"]),
    ]


def create_msgraph_app(
    *,
    client_id: str,
    client_secret: str,
    page_size: int = DEFAULT_PAGE_SIZE,
    token_lifetime_seconds: int = 3599,
) -> Starlette:
    """Build a Microsoft Graph stand-in accepting one app registration's credentials.

    The token endpoint is ``POST /{tenant}/oauth2/v2.0/token`` (any tenant);
    Graph routes live under ``/v1.0``. Control endpoints (no auth):
    ``POST /__standin__/faults`` and ``/__standin__/drop`` queue faults
    (default scope ``/v1.0``; a forced 429, 503 or 504 carries
    ``Retry-After``), ``GET /__standin__/stats``, ``/__standin__/users``,
    ``/__standin__/groups/{id}/members``, ``/__standin__/mail``, and
    ``POST /__standin__/expire-tokens`` and ``/__standin__/reset``. The state
    is on ``app.state.msgraph``.
    """
    hide_simulated_disconnects()
    state = MsGraphState(
        client_id=client_id,
        client_secret=client_secret,
        page_size=page_size,
        token_lifetime_seconds=token_lifetime_seconds,
    )
    api = _Api(state)
    routes = [
        *_control_routes(state),
        Route("/{tenant}/oauth2/v2.0/token", api.token, methods=["POST"]),
        Route(
            "/v1.0/{rest:path}", api.handle, methods=["GET", "POST", "PATCH", "DELETE"]
        ),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    app.state.msgraph = state
    return app
