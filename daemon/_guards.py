"""Checks every HTTP request passes before a handler runs: key, Host, Origin and body.

A daemon without a key on loopback is still reachable by any web page the user opens: a page
can POST a form without a CORS preflight, and DNS rebinding lets it read the answers under its
own name. So bodies must be declared JSON (a form cannot), the Host must be one of ours, and a
browser request from another origin is refused.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import (
    ForeignOrigin,
    HostNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from .settings import ServerSettings, is_loopback

__all__ = ["KeyCheck", "MountGuard", "OriginCheck", "read_json_body"]

_WILDCARDS = {"", "0.0.0.0", "::", "*"}


def _hostname(host: str) -> str:
    """The name in a Host header, without the port (``[::1]:80`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


class KeyCheck:
    """The bearer-token check: a dependency of every route but /health."""

    def __init__(self, server: ServerSettings) -> None:
        key = server.api_key
        self._key = key.get_secret_value().encode() if key is not None else None

    async def __call__(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not tell an attacker how much of a guess is right.
        ok = hmac.compare_digest(token.strip().encode(), self._key)
        if scheme.lower() != "bearer" or not ok:
            raise Unauthorized()


class OriginCheck:
    """Refuse foreign Host names (DNS rebinding) and foreign Origins (cross-site pages)."""

    def __init__(self, server: ServerSettings) -> None:
        names = {n.strip().lower() for n in server.allowed_hosts}
        if server.host.strip().lower() not in _WILDCARDS:
            names.add(_hostname(server.host))
        self._hosts = names
        # With a key, a page cannot use the API anyway: any name is fine unless some are set.
        self._any_host = "*" in names or (server.api_key is not None and not server.allowed_hosts)
        self._origins = {o.strip().lower().rstrip("/") for o in server.allowed_origins}

    def host_ok(self, host: str) -> bool:
        """Whether ``host`` (a Host header) names this daemon."""
        name = _hostname(host)
        return self._any_host or is_loopback(name) or name in self._hosts

    def origin_ok(self, origin: str, scheme: str, host: str) -> bool:
        """Whether a browser page at ``origin`` may call the daemon reached as ``host``."""
        origin = origin.strip().lower().rstrip("/")
        return origin == f"{scheme}://{host.strip().lower()}" or bool(self._origins & {origin, "*"})

    async def __call__(self, request: Request) -> None:
        host = request.headers.get("host")
        if host is not None and not self.host_ok(host):
            raise HostNotAllowed(host)
        origin = request.headers.get("origin")
        if origin is not None and not self.origin_ok(origin, request.url.scheme, host or ""):
            raise ForeignOrigin(origin)


class MountGuard:
    """The Host and Origin checks for an app mounted on the daemon (a bridge's page).

    A foreign Host is refused (DNS rebinding); so is a foreign Origin on a WebSocket
    upgrade or on anything but GET/HEAD (another site's page acting as the visitor).
    """

    def __init__(self, app: ASGIApp, origins: OriginCheck) -> None:
        self.app = app
        self.origins = origins

    def _problem(self, scope: Scope) -> str | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if host is not None and not self.origins.host_ok(host):
            return f"the Host {host!r} is not this daemon's; add it to server.allowed_hosts"
        origin = headers.get("origin")
        checked = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if (
            checked
            and origin is not None
            and not self.origins.origin_ok(origin, scheme, host or "")
        ):
            return f"pages of {origin!r} may not use this daemon; see server.allowed_origins"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self._problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": problem[:120]})
        else:
            await PlainTextResponse(problem, status_code=403)(scope, receive, send)


async def read_json_body(request: Request, limit: int) -> bytes:
    """The body of a JSON request, at most ``limit`` bytes (413), declared as JSON (415)."""
    ctype = request.headers.get("content-type")
    media = (ctype or "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(ctype)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    # Counted as it arrives too: a chunked body declares no length, a lying one another.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
