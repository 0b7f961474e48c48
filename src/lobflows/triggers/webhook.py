"""Webhook triggers: an HTTP POST to a flow's path starts a run.

A request is answered only after its run is stored, so an acknowledged
delivery is never lost. Checks come in order of cost: path, size,
signature, JSON, dedupe key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lobflows import errors
from lobflows.runtime import Runtime
from lobflows.spec import models
from lobflows.transform import templates

log = logging.getLogger(__name__)
# Never copied into the run: they authenticate the delivery, not describe it.
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class WebhookRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class WebhookRoutes:
    """Dispatches POSTs to the flow that listens on the path."""

    def __init__(self, runtime: Runtime, *, has_local_worker: bool) -> None:
        self.runtime = runtime
        self.has_local_worker = has_local_worker
        self.by_path: dict[str, tuple[str, models.WebhookTrigger]] = {}
        for loaded in runtime.engine.project.flows.values():
            hook = loaded.spec.trigger.webhook
            if hook is not None:
                self.by_path[hook.path.rstrip("/") or "/"] = (loaded.name, hook)
                if hook.signature is None:
                    log.warning(
                        "Webhook accepts unsigned deliveries",
                        extra={
                            "event": "webhook_unsigned",
                            "flow": loaded.name,
                            "path": hook.path,
                        },
                    )

    async def handle(self, request: Request) -> Response:
        # The scope's path: building request.url parses the whole URL again.
        path = request.scope["path"].rstrip("/") or "/"
        target = self.by_path.get(path)
        if target is None:
            return _error(404, f"no flow listens on {path}")
        flow, hook = target
        try:
            body, raw = await self._read(request, hook, flow)
            dedupe_key = _dedupe_key(hook, body, request)
        except WebhookRejected as rejected:
            log.info(
                "Webhook delivery rejected",
                extra={
                    "event": "webhook_rejected",
                    "flow": flow,
                    "status": rejected.status,
                    "reason": rejected.message,
                },
            )
            return _error(rejected.status, rejected.message, flow=flow)
        trigger_data = {"path": path, "headers": _public_headers(request)}
        run, created = await self.runtime.engine.start_run(
            flow,
            input=body,
            trigger="webhook",
            trigger_data=trigger_data,
            dedupe_key=dedupe_key,
            claim=self.has_local_worker,
        )
        waiter = None
        if created and self.has_local_worker:
            if hook.mode == "sync":
                waiter = self.runtime.engine.expect_response(run.id)
            self.runtime.worker.submit(run, fresh=True)
        if hook.mode == "sync":
            return await self._reply_when_ready(run.id, hook, waiter)
        status = 202 if created else 200
        return JSONResponse(
            {"run_id": run.id, "flow": flow, "duplicate": not created},
            status_code=status,
        )

    async def _read(
        self, request: Request, hook: models.WebhookTrigger, flow: str
    ) -> tuple[Any, bytes]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > hook.max_body_bytes:
            raise WebhookRejected(
                413,
                f"body of {declared} bytes is larger than the limit of {hook.max_body_bytes}",
            )
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > hook.max_body_bytes:
                raise WebhookRejected(
                    413, f"body is larger than the limit of {hook.max_body_bytes} bytes"
                )
        if hook.signature is not None:
            self._verify(hook.signature, request, bytes(raw))
        try:
            # orjson refuses what would break later: lone surrogates, NaN,
            # numbers out of range and nesting deeper than 1024 levels.
            return orjson.loads(raw), bytes(raw)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(400, f"body is not valid JSON: {exc}") from None

    def _verify(
        self, signature: models.Signature, request: Request, raw: bytes
    ) -> None:
        given = request.headers.get(signature.header)
        if not given:
            raise WebhookRejected(
                401, f"signature header {signature.header} is missing"
            )
        # Hex digests are compared without regard to case; base64 is exact.
        fold = str.lower if signature.encoding == "hex" else str
        # After a rotation, senders may still sign with the earlier key
        # until its grace period ends.
        keys = self.runtime.secrets.candidates(signature.secret)
        matches = [
            hmac.compare_digest(
                fold(given.strip()).encode(),
                fold(
                    sign(raw, key, prefix=signature.prefix, encoding=signature.encoding)
                ).encode(),
            )
            for key in keys
        ]
        if not any(matches):
            raise WebhookRejected(
                401, f"signature in {signature.header} does not match the body"
            )

    async def _reply_when_ready(
        self,
        run_id: str,
        hook: models.WebhookTrigger,
        waiter: asyncio.Future[Any] | None,
    ) -> Response:
        try:
            if waiter is not None:
                response = await asyncio.wait_for(
                    waiter, timeout=hook.sync_timeout_seconds
                )
            else:
                response = await self._poll_response(run_id, hook.sync_timeout_seconds)
        except TimeoutError:
            self.runtime.engine.forget_response(run_id)
            return JSONResponse(
                {
                    "run_id": run_id,
                    "status": "running",
                    "detail": "no reply within the timeout; the run goes on",
                },
                status_code=202,
            )
        if response is None:
            run = await self.runtime.store.get_run(run_id)
            if run.status == "failed":
                return JSONResponse(
                    {"run_id": run_id, "status": "failed", "error": run.error},
                    status_code=502,
                )
            return JSONResponse(
                {"run_id": run_id, "status": run.status}, status_code=200
            )
        headers = {"X-Lobflows-Run": run_id, **(response.get("headers") or {})}
        return JSONResponse(
            response.get("body"),
            status_code=response.get("status", 200),
            headers=headers,
        )

    async def _poll_response(self, run_id: str, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                run = await self.runtime.store.get_run(run_id)
                if run.response is not None or run.is_terminal:
                    return run.response
                await asyncio.sleep(0.05)


def sign(
    raw: bytes, key: str, *, prefix: str = "sha256=", encoding: str = "hex"
) -> str:
    """The signature header value a sender computes: prefix + HMAC-SHA256 of
    the body, in hex or base64."""
    digest = hmac.new(key.encode(), raw, hashlib.sha256)
    if encoding == "base64":
        return prefix + base64.b64encode(digest.digest()).decode()
    return prefix + digest.hexdigest()


def _dedupe_key(hook: models.WebhookTrigger, body: Any, request: Request) -> str | None:
    if hook.dedupe is None:
        return None
    context = {
        "body": body,
        "headers": {k.lower(): v for k, v in request.headers.items()},
    }
    try:
        value = templates.compile_key_template(hook.dedupe).render(context)
    except errors.TemplateError as exc:
        raise WebhookRejected(
            400, f"cannot compute the dedupe key {hook.dedupe!r}: {exc}"
        ) from None
    if value is None or value == "":
        raise WebhookRejected(
            400, f"dedupe key {hook.dedupe!r} is empty for this delivery"
        )
    return str(value)[:500]


def _public_headers(request: Request) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in request.headers.items()
        if k.lower() not in _PRIVATE_HEADERS and "signature" not in k.lower()
    }


def _error(status: int, message: str, **fields: Any) -> JSONResponse:
    return JSONResponse({"error": message, **fields}, status_code=status)
