"""The OpenAI-compatible HTTP API (FastAPI), with /health and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from ._daemon import Daemon
from ._dashboard import Dashboard
from ._guards import KeyCheck, MountGuard, OriginCheck, read_json_body
from ._schemas import ChatCompletionBody, CompletionBody, _Body
from ._service import CompletionJob, CompletionRequest
from .errors import ConfigError, InvalidRequest, RequestError, clip

__all__ = ["add_mount", "create_app"]

log = structlog.get_logger("personad.api")
T = TypeVar("T")


class _ClientGone(Exception):
    """The client closed the connection before the response was ready."""


class _SendTimeout(Exception):
    """The client stopped reading a streamed response for longer than the send timeout."""


def _error_body(message: str, etype: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def _error_response(exc: RequestError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
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
    """A streaming response that always runs ``cleanup``, even if the body never started.

    Each send may take at most ``send_timeout`` seconds: a client that stops reading would
    otherwise hold its model slot (and its connection) for as long as it likes.
    """

    def __init__(
        self,
        content: AsyncIterator[str],
        cleanup: Callable[[], Awaitable[Any]],
        send_timeout: float,
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._cleanup = cleanup
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), self._send_timeout)
            except TimeoutError:
                raise _SendTimeout() from None

        try:
            await super().__call__(scope, receive, timed_send)
        except* _SendTimeout:
            # Ending without completing the response makes the server close the connection.
            log.warning("stream_send_timeout", seconds=self._send_timeout)
        finally:
            await self._cleanup()


B = TypeVar("B", bound=_Body)


async def _parse(request: Request, model: type[B], limit: int) -> B:
    """Validate a JSON body (declared as JSON: a cross-site form cannot be) of at most ``limit``."""
    raw = await read_json_body(request, limit)
    try:
        body = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ())) or None
        if err.get("type") == "json_invalid":
            raise InvalidRequest(f"the body is not valid JSON: {err.get('msg')}") from None
        message = f"{param}: {err.get('msg')}" if param else str(err.get("msg"))
        raise InvalidRequest(message, param=param) from None
    body.refuse_unsupported()
    return body


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
        runners = self.daemon.runners.snapshot()
        if runners:
            body["runners"] = {
                name: {
                    "state": s.state,
                    "pid": s.pid,
                    "restarts": s.restarts,
                    "crashes": s.crashes,
                    "reason": s.reason,
                }
                for name, s in runners.items()
                if s.state != "stopped" or s.restarts or s.crashes
            }
        degraded = self.daemon.degraded()
        failed = self.daemon.preload_problems()
        if not self.daemon.service.accepting:
            body["status"] = "stopping"
        elif failed:
            # Not ready until everything asked for at start-up is, as llama-server says.
            body["status"] = "error"
            body["reason"] = "; ".join(
                f"model {n!r} failed to load: {r}" for n, r in failed.items()
            )
            body["failed"] = failed
        elif manager.loading or self.daemon.preloading:
            body["status"] = "loading"
            body["reason"] = f"loading model {', '.join(manager.loading) or 'preloads'}"
        elif degraded:
            # One model's trouble is not the daemon's: it still serves the others (200).
            body["status"] = "degraded"
            body["reason"] = "; ".join(f"model {n!r} {r}" for n, r in degraded.items())
            body["degraded"] = degraded
        ok = body["status"] in ("ok", "degraded")
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(self) -> Response:
        return Response(
            generate_latest(self.daemon.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def drop_conversation(self, conversation: str) -> dict[str, Any]:
        """Forget a conversation's KV states in every model and adapter (privacy)."""
        if len(conversation) > 256:
            raise InvalidRequest("conversation: at most 256 characters", param="conversation")
        dropped = self.daemon.manager.drop_conversation(conversation)
        if inspect.isawaitable(dropped):
            dropped = await dropped
        log.info("conversation_dropped", conversation=clip(conversation), states=dropped)
        return {"conversation": conversation, "dropped": dropped}

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
        body = await _parse(request, ChatCompletionBody, self.daemon.settings.server.max_body_bytes)
        creq = self._request(
            body,
            "chat",
            messages=[m.plain() for m in body.messages],
            max_tokens=body.max_completion_tokens or body.max_tokens,
        )
        return await self._respond(request, body, creq, chat=True)

    async def complete(self, request: Request) -> Response:
        body = await _parse(request, CompletionBody, self.daemon.settings.server.max_body_bytes)
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
                    self._stream(handle, chat=chat, usage=body.include_usage()),
                    stack.aclose,
                    self.daemon.settings.server.send_timeout,
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
        except Exception as exc:  # anything else ends the stream with an event, never a reset
            log.exception("stream_failed", model=handle.model, error=clip(str(exc), 300))
            yield _sse(_error_body(f"generation failed: {exc}", "server_error", None, None))


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR_STATUSES = {
    "400": "Invalid parameters (the message names the parameter and the fix).",
    "401": "Missing or wrong API key.",
    "403": "A browser page of another origin.",
    "404": "Unknown model (or no such path).",
    "409": "Superseded by a newer request of the same conversation.",
    "413": "The body is larger than server.max_body_bytes.",
    "415": "The body is not sent as application/json.",
    "500": "The model could not be loaded.",
    "503": "The queue is full, the daemon is stopping, or the model's runner crashed or failed.",
    "504": "The request waited in the queue past its deadline.",
}
_REPLY_SCHEMA = {"type": "object", "required": ["id", "object", "choices"]}


def _errors(*codes: str) -> dict[str, Any]:
    return {
        code: {
            "description": _ERROR_STATUSES[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _body_route(model: type[_Body]) -> dict[str, Any]:
    """What FastAPI cannot see of a route that reads its body itself (for the size and media
    type guards): the body's schema, and the responses."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "responses": {
            "200": {
                "description": "The completion; with stream = true, server-sent events.",
                "content": {
                    "application/json": {"schema": _REPLY_SCHEMA},
                    # Each event, as an SSE parser sees it: a JSON chunk or [DONE] in data.
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "required": ["data"],
                            "properties": {"data": {"type": "string"}},
                        }
                    },
                },
            },
            **_errors("400", "401", "403", "404", "409", "413", "415", "500", "503", "504"),
        },
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the request bodies' schemas from ``_schemas``."""
    if app.openapi_schema is None:
        doc = app.openapi()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = _ERROR_SCHEMA
        for model in (ChatCompletionBody, CompletionBody):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        # A POST's 422 is FastAPI's guess; these routes answer 400 for bad bodies.
        for methods in doc.get("paths", {}).values():
            for operation in methods.values():
                operation.get("responses", {}).pop("422", None)
    return app.openapi_schema or {}


def add_mount(app: FastAPI, mount: Mount) -> None:
    """Serve another ASGI app (a bridge's page) under ``mount.path``, behind the Host and
    Origin checks; may be called while serving. Its own access rules are its business."""
    origins: OriginCheck = app.state.origins
    app.router.routes.append(Mount(mount.path, app=MountGuard(mount.app, origins)))


def create_app(
    daemon: Daemon, *, mounts: Sequence[Mount] = (), dashboard: Dashboard | None = None
) -> FastAPI:
    """The ASGI app; its lifespan starts and stops ``daemon``.

    ``mounts`` are other apps served under their paths (the web bridge's page); the
    ``dashboard`` (made here unless given) is at ``/dashboard``.
    """
    server = daemon.settings.server
    key = server.api_key
    if key is not None and not key.get_secret_value().strip():
        # Settings refuse it already; settings copied without validation must not slip by.
        raise ConfigError("server.api_key", "the API key is empty; set a real key or remove it")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await daemon.start()
        try:
            yield
        finally:
            await daemon.aclose()

    origins = OriginCheck(server)
    app = FastAPI(
        title="personad",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the key
        dependencies=[Depends(origins)],
    )
    api = _Api(daemon)

    async def openapi() -> dict[str, Any]:
        return _openapi(app)

    health_responses = {
        "200": {"description": "Serving (status ok, or degraded: a model's runner is down)."},
        "503": {"description": "Loading, stopping, or a model asked for at start-up failed."},
    }
    app.add_api_route(
        "/health", api.health, methods=["GET"], openapi_extra={"responses": health_responses}
    )
    guarded = APIRouter(dependencies=[Depends(KeyCheck(server))])
    guarded.add_api_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
    guarded.add_api_route(
        "/metrics", api.metrics, methods=["GET"], response_class=PlainTextResponse
    )
    guarded.add_api_route("/v1/models", api.list_models, methods=["GET"])
    guarded.add_api_route(
        "/v1/chat/completions",
        api.chat,
        methods=["POST"],
        openapi_extra=_body_route(ChatCompletionBody),
    )
    guarded.add_api_route(
        "/v1/completions", api.complete, methods=["POST"], openapi_extra=_body_route(CompletionBody)
    )
    guarded.add_api_route(
        "/v1/conversations/{conversation:path}",
        api.drop_conversation,
        methods=["DELETE"],
        openapi_extra={"responses": _errors("400", "401", "403", "404")},
    )
    app.include_router(guarded)
    board = dashboard or Dashboard(daemon)
    app.state.dashboard = board
    app.state.origins = origins
    app.include_router(board.router())
    for mount in mounts:
        add_mount(app, mount)
    if server.allowed_origins:
        # Pages of the configured origins may also read the answers (CORS preflight).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

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
        # The message may quote what the client sent: a log line stays short whatever it sent.
        log.info("request_failed", status=exc.status, code=exc.code, error=clip(str(exc), 300))
        if exc.status >= 500:
            board.errors.add(request.url.path, str(exc))
        return _error_response(exc)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        # Starlette still logs the traceback; the client gets the error object, not plain text.
        board.errors.add(request.url.path, f"internal error: {exc}")
        return JSONResponse(
            _error_body(f"internal error: {clip(str(exc), 300)}", "server_error", None, None),
            status_code=500,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # exc.headers carries Allow on a 405.
        return JSONResponse(
            _error_body(str(exc.detail), "invalid_request_error", None, None),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return app
