"""How the behaviour engine asks a model for text (and forgets a conversation's cached state):
through the daemon's HTTP API only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from daemon.client import DaemonClient, DaemonClientError

__all__ = ["Completer", "CompletionCall", "DaemonCompleter"]

log = structlog.get_logger("personad.completer")


@dataclass(frozen=True)
class CompletionCall:
    """One request for the persona's next words."""

    kind: Literal["chat", "text"]
    conversation: str
    prompt: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    max_tokens: int = 80
    temperature: float = 0.8
    stop: tuple[str, ...] = ()
    priority: Literal["interactive", "background"] = "interactive"


class Completer(Protocol):
    """The engine's model: text for a :class:`CompletionCall`, and forgetting conversations.

    A server may keep a conversation's processed prompt (its KV state) to answer the next
    turn faster; that state holds people's words, so when their messages are deleted or
    forgotten the engine asks for it to be dropped. A server that keeps nothing returns 0.

    Example, a completer that always says the same::

        class Parrot:
            async def __call__(self, call: CompletionCall) -> str | None:
                return "Robin: squawk"

            async def drop_conversation(self, conversation: str) -> int:
                return 0
    """

    async def __call__(self, call: CompletionCall) -> str | None:
        """The model's text; None when it was superseded or failed."""
        ...

    async def drop_conversation(self, conversation: str) -> int:
        """Drop the cached state of ``conversation``; how many states were dropped (0 when
        the server keeps none). Raise when the server cannot be asked: the persona retries."""
        ...


class DaemonCompleter:
    """A completer on personad's API, or any OpenAI-compatible server (extensions ignored)."""

    def __init__(self, client: DaemonClient, model: str, adapter: str | None = None) -> None:
        self.client = client
        self.model = model
        self.adapter = adapter

    async def __call__(self, call: CompletionCall) -> str | None:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "conversation": call.conversation,
            # A newer message in the same channel makes an older answer pointless.
            "supersede": True,
            "priority": call.priority,
        }
        if call.stop:
            params["stop"] = list(call.stop)
        if self.adapter is not None:
            # Several personas as adapters on one base: each request picks its own.
            params["adapter"] = self.adapter
        try:
            if call.kind == "chat":
                return await self.client.chat(call.messages, **params)
            return await self.client.complete(call.prompt, **params)
        except DaemonClientError as exc:
            if exc.code == "superseded":
                return None
            log.warning("completion_failed", conversation=call.conversation, error=str(exc))
            return None

    async def drop_conversation(self, conversation: str) -> int:
        # Errors propagate: the persona remembers the drop and tries again (privacy).
        return await self.client.drop_conversation(conversation)
