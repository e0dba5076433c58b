"""What bridges may use of the daemon: an async client of its API (or of any OpenAI-compatible
server), and the offline removal of a conversation's KV state files.

Public, and light on purpose: importing it never loads the engine, FastAPI or llama.cpp
(import-linter checks that bridges reach the daemon only through here and ``daemon.settings``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from ._kvfiles import drop_conversation_files

__all__ = ["DEFAULT_URL", "DaemonClient", "DaemonClientError", "drop_conversation_files"]

DEFAULT_URL = "http://127.0.0.1:8765"

log = structlog.get_logger("personad.client")


class DaemonClientError(RuntimeError):
    """The server answered with an error object, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


def _error_from(response_status: int, payload: Any) -> DaemonClientError:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return DaemonClientError(str(err.get("message")), response_status, err.get("code"))
    return DaemonClientError(f"HTTP {response_status}", response_status)


class DaemonClient:
    """``async with DaemonClient(url) as c: async for text in c.stream_chat(messages): ...``"""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 600
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    async def __aenter__(self) -> DaemonClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def health(self) -> dict[str, Any]:
        """GET /health (any status)."""
        try:
            response = await self._http.get("/health")
        except httpx.TransportError as exc:
            raise DaemonClientError(f"cannot reach {self._http.base_url}: {exc}") from exc
        data: dict[str, Any] = response.json()
        data["http_status"] = response.status_code
        return data

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise DaemonClientError(
                f"cannot reach {self._http.base_url}: {exc}; is the daemon running?"
            ) from exc
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as exc:
            raise DaemonClientError(
                f"HTTP {response.status_code}: not JSON", response.status_code
            ) from exc
        if response.status_code != 200:
            raise _error_from(response.status_code, payload)
        return payload

    async def drop_conversation(self, conversation: str) -> int:
        """DELETE /v1/conversations/{conversation}: drop its cached KV states; how many.

        A server without the route (llama-server, another OpenAI-compatible server) keeps
        no such states under our names: that is 0, not an error.
        """
        path = f"/v1/conversations/{quote(conversation, safe='')}"
        try:
            response = await self._http.delete(path)
        except httpx.TransportError as exc:
            raise DaemonClientError(
                f"cannot reach {self._http.base_url}: {exc}; is the daemon running?"
            ) from exc
        if response.status_code in (404, 405):
            log.debug("drop_conversation_unsupported", status=response.status_code)
            return 0
        try:
            payload: Any = response.json()
        except ValueError as exc:
            raise DaemonClientError(
                f"HTTP {response.status_code}: not JSON", response.status_code
            ) from exc
        if response.status_code != 200:
            raise _error_from(response.status_code, payload)
        return int(payload.get("dropped", 0)) if isinstance(payload, dict) else 0

    async def chat(
        self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any
    ) -> str:
        """POST /v1/chat/completions; the reply's text."""
        body: dict[str, Any] = {"messages": messages, **params}
        if model:
            body["model"] = model
        payload = await self._post("/v1/chat/completions", body)
        return str(payload["choices"][0]["message"].get("content") or "")

    async def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> str:
        """POST /v1/completions; the completion's text."""
        body: dict[str, Any] = {"prompt": prompt, **params}
        if model:
            body["model"] = model
        payload = await self._post("/v1/completions", body)
        return str(payload["choices"][0].get("text") or "")

    async def stream_chat(
        self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any
    ) -> AsyncIterator[str]:
        """POST /v1/chat/completions with ``stream: true``; yield the text as it arrives."""
        body: dict[str, Any] = {"messages": messages, "stream": True, **params}
        if model:
            body["model"] = model
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_from(response.status_code, response.json())
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        return
                    payload = json.loads(data)
                    if "error" in payload:
                        raise _error_from(200, payload)
                    for choice in payload.get("choices", []):
                        text = choice.get("delta", {}).get("content")
                        if text:
                            yield text
        except httpx.TransportError as exc:
            raise DaemonClientError(
                f"cannot reach {self._http.base_url}: {exc}; is the daemon running "
                "('personad serve')?"
            ) from exc
