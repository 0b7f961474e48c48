"""HTTP plumbing shared by HTTP-based connectors: one pooled client per
connection, an address guard against server-side request forgery, error
classification and ``Retry-After``."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from lobflows import errors

MAX_RETRY_AFTER_SECONDS = 3600.0
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Link-local ranges hold cloud metadata services (169.254.169.254,
# fd00:ec2::254); Alibaba's sits at 100.100.100.200. Loopback and private
# ranges stay allowed: LoB systems live on intranets.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "224.0.0.0/4",
        "fe80::/10",
        "fd00:ec2::254/128",
        "ff00::/8",
    )
)
_RESOLVE_CACHE_SECONDS = 60.0


class AddressGuard:
    """Refuses hosts that resolve to link-local, metadata or multicast addresses."""

    def __init__(self, allowed: list[str] | None = None) -> None:
        self.allowed = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed or []
        )
        self._checked: dict[str, float] = {}

    async def check(self, host: str, port: int) -> None:
        checked_at = self._checked.get(host)
        if (
            checked_at is not None
            and time.monotonic() - checked_at < _RESOLVE_CACHE_SECONDS
        ):
            return
        for address in await _resolve(host, port):
            if self._is_blocked(address):
                raise errors.BlockedAddressError(
                    f"refused to call {host}: it resolves to {address}, a link-local or metadata "
                    "address; list the network under allow_networks of the connection to permit it",
                    retryable=False,
                )
        self._checked[host] = time.monotonic()

    def _is_blocked(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool:
        if any(address in network for network in self.allowed):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in BLOCKED_NETWORKS)


async def _resolve(
    host: str, port: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise errors.TransportError(f"cannot resolve {host}: {exc.strerror}") from exc
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


async def reach(
    url: str, *, guard: AddressGuard, timeout_seconds: float, connection: str
) -> str:
    """Open a TCP connection to the host of `url` (and a TLS session for
    https), send nothing and close. For URLs that are credentials: the host
    and port are named, never the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    is_tls = parts.scheme == "https"
    port = parts.port or (443 if is_tls else 80)
    where = f"{host}:{port}"
    await guard.check(host, port)
    context = ssl.create_default_context() if is_tls else None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if is_tls else None
            ),
            timeout_seconds,
        )
    except ssl.SSLCertVerificationError as exc:
        raise errors.ConnectorError(
            f"{connection}: the TLS certificate of {where} was refused: "
            f"{exc.verify_message}",
            retryable=False,
            connection=connection,
        ) from exc
    except ssl.SSLError as exc:
        raise errors.ConnectorError(
            f"{connection}: the TLS handshake with {where} failed: {exc.reason}",
            retryable=False,
            connection=connection,
        ) from exc
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise errors.TransportError(
            f"{connection}: cannot reach {where}: {reason}", connection=connection
        ) from exc
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return f"{where} accepts {'TCP and TLS' if is_tls else 'TCP'} connections"


class GuardedClient:
    """An httpx client whose every request passes the address guard first."""

    def __init__(
        self,
        *,
        connection: str,
        base_url: str = "",
        headers: dict[str, str] | None = None,
        timeout_seconds: float = 30.0,
        allow_networks: list[str] | None = None,
        path_is_secret: bool = False,
    ) -> None:
        self.connection = connection
        # Some URLs are credentials (chat webhooks); errors then name the host only.
        self.path_is_secret = path_is_secret
        self.guard = AddressGuard(allow_networks)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_seconds: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        request = self.client.build_request(method, url, **kwargs)
        if timeout_seconds is not None:
            request.extensions["timeout"] = httpx.Timeout(timeout_seconds).as_dict()
        await self.guard.check(
            request.url.host,
            request.url.port or (443 if request.url.scheme == "https" else 80),
        )
        target = request.url.host if self.path_is_secret else request.url.path
        try:
            return await self.client.send(request)
        except httpx.TimeoutException as exc:
            raise errors.TransportError(
                f"{self.connection}: {method} {target} timed out",
                connection=self.connection,
            ) from exc
        except httpx.TransportError as exc:
            reason = (
                type(exc).__name__
                if self.path_is_secret
                else (str(exc) or type(exc).__name__)
            )
            raise errors.TransportError(
                f"{self.connection}: {method} {target} failed: {reason}",
                connection=self.connection,
            ) from exc

    async def close(self) -> None:
        await self.client.aclose()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def status_error(
    message: str, response: httpx.Response, *, connection: str
) -> errors.RemoteStatusError:
    """An error for a failed response, classified by status."""
    return errors.RemoteStatusError(
        message,
        status=response.status_code,
        retryable=response.status_code in RETRYABLE_STATUSES,
        retry_after_seconds=retry_after_seconds(response),
        connection=connection,
    )


def response_body(response: httpx.Response) -> Any:
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text
