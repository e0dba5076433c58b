"""The dashboard's routes: the page, its script and style, its data, the pause switch."""

from __future__ import annotations

import hashlib
import hmac
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .._daemon import Daemon
from .._guards import read_json_body
from ..errors import InvalidRequest, Unauthorized
from ._board import PersonaBoard, PersonaSnapshot, RecentErrors

__all__ = ["Dashboard"]

# The web bridge's page sets the same owner cookie: one ``?key=`` serves both.
COOKIE = "personad_web"
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> str:
    return files("daemon._dashboard").joinpath(name).read_text(encoding="utf-8")


def _persona(p: PersonaSnapshot) -> dict[str, Any]:
    return {
        "name": p.name,
        "online": p.online,
        "reason": p.reason,
        "until": p.until.strftime("%a %H:%M") if p.until else None,
        "paused": p.paused,
        "upcoming": [{"at": at.strftime("%a %H:%M"), "what": what} for at, what in p.upcoming],
        "conversations": [
            {
                "where": f"{c.bridge} · {c.channel}",
                "at": c.last_at.strftime("%a %H:%M"),
                "author": c.last_author,
                "text": c.last_text[:120],
            }
            for c in p.conversations
        ],
        "messages_today": p.messages_today,
        "by_hour": [{"hour": at.strftime("%H"), "count": n} for at, n in p.by_hour],
    }


class Dashboard:
    """The dashboard of one daemon; ``board`` is set by whoever hosts personas."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.board: PersonaBoard | None = None
        self.errors = RecentErrors()
        server = daemon.settings.server
        key = server.api_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self._open = self._key is None and server.loopback

    # -- access --------------------------------------------------------------------------

    def _mark(self) -> str:
        if self._key is None:
            return "-"
        return hmac.new(self._key, b"personad-web-owner", hashlib.sha256).hexdigest()

    def _owner(self, request: Request) -> bool:
        if self._open:
            return True
        if self._key is None:
            return False
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key):
            return True
        kind, _, value = request.cookies.get(COOKIE, "").partition(".")
        return kind == "o" and hmac.compare_digest(value, self._mark())

    def _check(self, request: Request) -> None:
        if not self._owner(request):
            raise Unauthorized()

    # -- data ----------------------------------------------------------------------------

    def _kv(self, model: str) -> dict[str, Any]:
        registry = self.daemon.metrics.registry
        counts = {
            result: registry.get_sample_value(
                "personad_kv_cache_lookups_total", {"model": model, "result": result}
            )
            or 0
            for result in ("hit", "live", "miss")
        }
        total = sum(counts.values())
        # A prompt whose state was still live in a slot was served from KV state as well.
        reused = counts["hit"] + counts["live"]
        return {"hit_rate": reused / total if total else None, "lookups": int(total)}

    def data(self) -> dict[str, Any]:
        """Everything the page shows, as JSON."""
        manager = self.daemon.manager
        depths = manager.queue_depths()
        kv_bytes = manager.kv_bytes()
        models = []
        for slot in manager.slots():
            ram, disk = kv_bytes.get(slot.name, (0, 0))
            models.append(
                {
                    "name": slot.name,
                    "queued": sum(n for (m, _), n in depths.items() if m == slot.name),
                    "running": slot.queue.running is not None,
                    "kv_ram": ram,
                    "kv_disk": disk,
                    **self._kv(slot.name),
                }
            )
        personas = self.board.snapshots() if self.board is not None else []
        return {
            "models": models,
            "loading": manager.loading,
            "catalog": self.daemon.catalog.names,
            "queue": sum(depths.values()),
            "in_flight": sum(1 for s in manager.slots() if s.queue.running is not None),
            "accepting": self.daemon.service.accepting,
            "errors": [
                {"at": e.at.strftime("%H:%M:%S"), "where": e.where, "message": e.message}
                for e in reversed(self.errors.notes)
            ],
            "personas": [_persona(p) for p in personas],
        }

    # -- routes --------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if key and self._key is not None and hmac.compare_digest(key.encode(), self._key):
            response: Response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, "o." + self._mark(), httponly=True, samesite="lax")
            return response
        self._check(request)
        return HTMLResponse(_asset("page.html"), headers=_HEADERS)

    async def asset(self, name: str) -> Response:
        if name not in _ASSETS:
            raise InvalidRequest(f"no dashboard file {name!r}")
        return Response(_asset(name), media_type=_ASSETS[name], headers=_HEADERS)

    async def state(self, request: Request) -> JSONResponse:
        self._check(request)
        return JSONResponse(self.data(), headers={"Cache-Control": "no-store"})

    async def switch(self, request: Request, persona: str, action: str) -> JSONResponse:
        """Pause or resume a persona (JSON body, so a cross-site form cannot)."""
        self._check(request)
        await read_json_body(request, 1024)
        if action not in ("pause", "resume"):
            raise InvalidRequest(f"unknown action {action!r}; use pause or resume")
        if self.board is None or not await self.board.set_paused(persona, action == "pause"):
            raise InvalidRequest(f"no persona {persona!r} runs here", param="persona")
        return JSONResponse({"persona": persona, "paused": action == "pause"})

    def router(self) -> APIRouter:
        """The routes, under ``/dashboard``."""
        r = APIRouter()
        r.add_api_route("/dashboard", self.page, methods=["GET"], include_in_schema=False)
        r.add_api_route("/dashboard/data", self.state, methods=["GET"], include_in_schema=False)
        r.add_api_route(
            "/dashboard/static/{name}", self.asset, methods=["GET"], include_in_schema=False
        )
        r.add_api_route(
            "/dashboard/personas/{persona}/{action}",
            self.switch,
            methods=["POST"],
            include_in_schema=False,
        )
        return r
