"""The ASGI app of one room: the page, its assets and the WebSocket, with the access rules.

The page is one self-contained HTML file with its script and style next to it (no CDN, no
build step). Everything a visitor or the model wrote reaches the page as JSON and is put in
with ``textContent``: nothing anyone types ever runs. The socket checks the Origin (a page
elsewhere must not talk as the visitor), the visitor (a revoked invite ends the session),
and each visitor's rate and message size.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import secrets
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._access import COOKIE, Access, Visitor
from ._invites import InviteBook
from ._room import Session
from .errors import BadName

if TYPE_CHECKING:
    from daemon.settings import Settings

    from ._bridge import WebBridge

__all__ = ["build_app"]

log = structlog.get_logger("personad.web")

_TAB = "personad_tab"
_ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css"}
# What the page may load and connect to: itself, nothing else.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Close codes the page understands: refused (origin or access), and too big.
_REFUSED, _TOO_BIG = 4403, 1009
_HELLO_SECONDS = 30.0


def _asset(name: str) -> str:
    return files("bridges.web").joinpath("static", name).read_text(encoding="utf-8")


def _refusal() -> HTMLResponse:
    return HTMLResponse(_asset("refused.html"), status_code=401, headers=_HEADERS)


class _RoomApp:
    """Handlers bound to one bridge and its access rules."""

    def __init__(self, bridge: WebBridge, access: Access, allowed_origins: list[str]) -> None:
        self.bridge = bridge
        self.access = access
        self.origins = {o.strip().lower().rstrip("/") for o in allowed_origins}

    def _visitor(self, request: Request | WebSocket) -> Visitor | None:
        return self.access.who(request.cookies.get(COOKIE), request.headers.get("authorization"))

    async def page(self, request: Request) -> Response:
        cookie = self.access.login(request.query_params)
        if cookie is not None:
            # The secret leaves the address bar (and history) at once.
            response: Response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax", path="/")
            return response
        if self._visitor(request) is None:
            return _refusal()
        title = html.escape(self.bridge.opts.title or self.bridge.persona)
        response = HTMLResponse(_asset("chat.html").replace("{{title}}", title), headers=_HEADERS)
        if _TAB not in request.cookies:
            response.set_cookie(
                _TAB, secrets.token_urlsafe(12), httponly=True, samesite="lax", path="/"
            )
        return response

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(_asset(name), media_type=_ASSETS[name], headers=_HEADERS)

    def _origin_ok(self, ws: WebSocket) -> bool:
        origin = ws.headers.get("origin")
        if origin is None:
            return True  # not a browser: the cookie or key still decides
        origin = origin.strip().lower().rstrip("/")
        host = ws.headers.get("host", "").strip().lower()
        return origin in {f"http://{host}", f"https://{host}"} or bool(self.origins & {origin, "*"})

    async def socket(self, ws: WebSocket) -> None:
        if not self._origin_ok(ws):
            log.warning("web_origin_refused", origin=ws.headers.get("origin"))
            await ws.close(code=_REFUSED)
            return
        visitor = self._visitor(ws)
        if visitor is None:
            await ws.close(code=_REFUSED)
            return
        await ws.accept()
        session = await self._join(ws, visitor)
        if session is None:
            return
        room = self.bridge.room
        room.deliver(session, self.bridge.hello(session))
        tasks = [
            asyncio.create_task(self._read(ws, session)),
            asyncio.create_task(self._write(ws, session)),
            asyncio.create_task(self._watch(session)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            room.leave(session)
            with contextlib.suppress(Exception):
                await ws.close()

    async def _join(self, ws: WebSocket, visitor: Visitor) -> Session | None:
        """Wait for the page's ``hello`` with a name; refuse names until one is fine."""
        tab = ws.cookies.get(_TAB, secrets.token_urlsafe(12))
        try:
            while True:
                frame = await asyncio.wait_for(self._frame(ws), _HELLO_SECONDS)
                if frame is None:
                    return None
                if frame.get("type") != "hello":
                    continue
                try:
                    return self.bridge.room.join(visitor, str(frame.get("name", "")), tab)
                except BadName as exc:
                    await ws.send_json({"type": "name_refused", "text": str(exc)})
        except (TimeoutError, WebSocketDisconnect):
            return None

    async def _frame(self, ws: WebSocket) -> dict[str, Any] | None:
        """The next JSON object from the page; None when it is gone or sent too much."""
        raw = await ws.receive_text()
        if len(raw) > self.bridge.opts.max_chars * 4 + 1024:
            await ws.close(code=_TOO_BIG)
            return None
        try:
            frame = json.loads(raw)
        except ValueError:
            return {}
        return frame if isinstance(frame, dict) else {}

    def _refuse(self, text: str) -> dict[str, Any] | None:
        """Why a visitor's text is not sent (too long), or None."""
        limit = self.bridge.opts.max_chars
        if len(text) > limit:
            return {
                "type": "error",
                "text": f"that message is {len(text)} characters; the limit is {limit}: split it",
            }
        return None

    async def _read(self, ws: WebSocket, session: Session) -> None:
        room = self.bridge.room
        rate = self.bridge.opts.rate_per_minute
        with contextlib.suppress(WebSocketDisconnect):
            while (frame := await self._frame(ws)) is not None:
                text = str(frame.get("text", "")).strip()
                if frame.get("type") != "say" or not text:
                    continue
                if not self.access.still_valid(session.visitor):
                    room.close(session, "your invite was revoked")
                    return
                refusal = self._refuse(text)
                if refusal is None and not room.allow(session):
                    refusal = {
                        "type": "error",
                        "text": f"slow down: at most {rate} messages a minute; "
                        "wait a little and send it again",
                    }
                if refusal is not None:
                    room.deliver(session, refusal)
                    continue
                reply_to = frame.get("reply_to")
                await self.bridge.post(session, text, str(reply_to) if reply_to else None)

    async def _write(self, ws: WebSocket, session: Session) -> None:
        while (frame := await session.outbox.get()) is not None:
            await ws.send_json(frame)

    async def _watch(self, session: Session) -> None:
        """Close the session once its invite is revoked (from another process too)."""
        while True:
            await asyncio.sleep(self.bridge.opts.invite_check_seconds)
            if not self.access.still_valid(session.visitor):
                log.info("web_invite_revoked", visitor=session.user_id)
                self.bridge.room.close(session, "your invite was revoked")
                # The writer sends the closing frame and ends the session.
                await asyncio.Event().wait()


def build_app(bridge: WebBridge, settings: Settings, invites: InviteBook) -> Starlette:
    """The room's app, guarded by ``settings``' server key and ``invites``."""
    access = Access(settings.server, invites)
    handlers = _RoomApp(bridge, access, settings.server.allowed_origins)
    return Starlette(
        routes=[
            Route("/", handlers.page, methods=["GET"]),
            Route("/static/{name}", handlers.asset, methods=["GET"]),
            WebSocketRoute("/ws", handlers.socket),
        ]
    )
