"""The OpenAI-compatible HTTP API (FastAPI), with /health and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ._daemon import Daemon
from ._schemas import ChatCompletionBody, CompletionBody, _Body
from ._service import CompletionJob, CompletionRequest
from .errors import InvalidRequest, RequestError, Unauthorized

__all__ = ["create_app"]

log = structlog.get_logger("personad.api")
T = TypeVar("T")


class _ClientGone(Exception):
    """The client closed the connection before the response was ready."""


def _error_body(message: str, etype: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def _error_response(exc: RequestError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after))
    return JSONResponse(
        _error_body(str(exc), exc.error_type, exc.param, exc.code),
        status_code=exc.status,
        headers=headers,
    )


async def _until_disconnect(request: Request) -> None:
    # The body has been read already, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` but cancel it (and raise :class:`_ClientGone`) if the client goes away."""
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _ClientGone()


class _CleanupStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``cleanup``, even if the body never started."""

    def __init__(self, content: AsyncIterator[str], cleanup: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


B = TypeVar("B", bound=_Body)


async def _parse(request: Request, model: type[B]) -> B:
    """Validate a JSON body whatever its Content-Type (curl -d sends a form type)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ())) or None
        if err.get("type") == "json_invalid":
            raise InvalidRequest(f"the body is not valid JSON: {err.get('msg')}") from None
        message = f"{param}: {err.get('msg')}" if param else str(err.get("msg"))
        raise InvalidRequest(message, param=param) from None


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


class _Api:
    """Route handlers bound to one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def health(self) -> JSONResponse:
        manager = self.daemon.manager
        body: dict[str, Any] = {
            "status": "ok",
            "loaded": manager.loaded,
            "loading": manager.loading,
            "running": {s.name: s.queue.running is not None for s in manager.slots()},
            "queued": {s.name: s.queue.depth() for s in manager.slots()},
        }
        if not self.daemon.service.accepting:
            body["status"] = "stopping"
            return JSONResponse(body, status_code=503)
        if manager.loading:
            body["status"] = "loading"
            body["reason"] = f"loading model {', '.join(manager.loading)}"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    async def metrics(self) -> Response:
        return Response(
            generate_latest(self.daemon.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def list_models(self) -> dict[str, Any]:
        data = []
        for name in self.daemon.catalog.names:
            manifest = self.daemon.catalog.get(name)
            try:
                created = int(manifest.path.stat().st_mtime)
            except OSError:
                created = 0
            data.append({"id": name, "object": "model", "created": created, "owned_by": "personad"})
        return {"object": "list", "data": data}

    def _request(self, body: _Body, kind: str, **extra: Any) -> CompletionRequest:
        name = body.model or self.daemon.settings.models.default
        manifest = self.daemon.manager.manifest(name)
        max_tokens = extra.pop("max_tokens")
        return CompletionRequest(
            model=name,
            kind="chat" if kind == "chat" else "text",
            params=body.params(manifest.sampling, max_tokens),
            priority=body.priority,
            conversation=body.conversation,
            supersede=body.supersede,
            queue_timeout=body.queue_timeout,
            adapter=body.adapter,
            **extra,
        )

    async def chat(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionBody)
        creq = self._request(
            body,
            "chat",
            messages=[m.plain() for m in body.messages],
            max_tokens=body.max_completion_tokens or body.max_tokens,
        )
        return await self._respond(request, body, creq, chat=True)

    async def complete(self, request: Request) -> Response:
        body = await _parse(request, CompletionBody)
        creq = self._request(body, "text", prompt=body.text(), max_tokens=body.max_tokens)
        return await self._respond(request, body, creq, chat=False)

    async def _respond(
        self, request: Request, body: _Body, creq: CompletionRequest, *, chat: bool
    ) -> Response:
        stack = AsyncExitStack()
        service = self.daemon.service
        try:
            handle = await _unless_disconnected(
                request, stack.enter_async_context(service.open(creq))
            )
            await _unless_disconnected(request, handle.wait_started(self.daemon.manager.clock()))
            if body.stream:
                return _CleanupStreamingResponse(
                    self._stream(handle, chat=chat, usage=body.include_usage()), stack.aclose
                )
            text = await _unless_disconnected(request, self._collect(handle))
        except _ClientGone:
            await stack.aclose()
            log.info("client_disconnected", model=creq.model)
            return Response(status_code=499)
        except BaseException:
            await stack.aclose()
            raise
        await stack.aclose()
        return JSONResponse(self._final(handle, text, chat=chat))

    @staticmethod
    async def _collect(handle: CompletionJob) -> str:
        return "".join([piece.text async for piece in handle.pieces()])

    @staticmethod
    def _usage(handle: CompletionJob) -> dict[str, int]:
        return {
            "prompt_tokens": handle.prompt_tokens,
            "completion_tokens": handle.completion_tokens,
            "total_tokens": handle.prompt_tokens + handle.completion_tokens,
        }

    def _final(self, handle: CompletionJob, text: str, *, chat: bool) -> dict[str, Any]:
        created = int(time.time())
        finish = handle.finish_reason or "stop"
        if chat:
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": handle.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": self._usage(handle),
            }
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": created,
            "model": handle.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": self._usage(handle),
        }

    async def _stream(
        self, handle: CompletionJob, *, chat: bool, usage: bool
    ) -> AsyncIterator[str]:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            choice["logprobs"] = None
            return _sse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": handle.model,
                    "choices": [choice],
                }
            )

        try:
            if chat:
                yield chunk("", None, role=True)
            async for piece in handle.pieces():
                if piece.text:
                    yield chunk(piece.text, None)
            yield chunk(None if chat else "", handle.finish_reason or "stop")
            if usage:
                yield _sse(
                    {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": handle.model,
                        "choices": [],
                        "usage": self._usage(handle),
                    }
                )
            yield "data: [DONE]\n\n"
        except RequestError as exc:
            # Headers are gone already: report the error in the stream, as OpenAI does.
            yield _sse(_error_body(str(exc), exc.error_type, exc.param, exc.code))


def create_app(daemon: Daemon) -> FastAPI:
    """The ASGI app; its lifespan starts and stops ``daemon``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await daemon.start()
        try:
            yield
        finally:
            await daemon.aclose()

    app = FastAPI(
        title="personad", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    api = _Api(daemon)
    key = daemon.settings.server.api_key

    async def require_key(request: Request) -> None:
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.get_secret_value().encode()
        ):
            raise Unauthorized()

    app.add_api_route("/health", api.health, methods=["GET"])
    guarded = APIRouter(dependencies=[Depends(require_key)])
    guarded.add_api_route("/metrics", api.metrics, methods=["GET"])
    guarded.add_api_route("/v1/models", api.list_models, methods=["GET"])
    guarded.add_api_route("/v1/chat/completions", api.chat, methods=["POST"])
    guarded.add_api_route("/v1/completions", api.complete, methods=["POST"])
    app.include_router(guarded)

    @app.middleware("http")
    async def bind_request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12])
        try:
            return await call_next(request)
        finally:
            structlog.contextvars.clear_contextvars()

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        log.info("request_failed", status=exc.status, code=exc.code, error=str(exc))
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _error_body(str(exc.detail), "invalid_request_error", None, None),
            status_code=exc.status_code,
        )

    return app
