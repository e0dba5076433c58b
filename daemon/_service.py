"""Completions independent of HTTP: model, prompt, queue, worker, streamed pieces."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from ._manager import ModelManager, ModelSlot
from ._metrics import Metrics
from ._queue import Job, Priority
from ._types import GenerationParams, Piece, Prompt
from .errors import (
    InvalidRequest,
    PromptTooLarge,
    PromptTooLong,
    QueueTimeout,
    ShuttingDown,
    clip,
)

__all__ = ["CompletionJob", "CompletionRequest", "CompletionService"]

log = structlog.get_logger("personad.service")


def _lookup(piece: Piece) -> str:
    """The KV lookup result a finished request counts as, for /metrics."""
    if piece.cache_hit:
        return "hit"
    return "live" if piece.cached_tokens > 0 else "miss"


# A prompt of more than context x this many UTF-8 bytes cannot fit, so it is refused before the
# tokenizer spends seconds and hundreds of MB on it. The bound is the longest token a
# vocabulary may have, with a wide margin: SmolLM2's longest are 32 bytes (runs of spaces,
# "=" or "_"), and 256 leaves a factor of 8 for vocabularies with longer runs, since it must
# never refuse a prompt that fits; the tokenizer still sees at most 256 x context bytes.
MAX_BYTES_PER_TOKEN = 256


@dataclass(frozen=True)
class CompletionRequest:
    """A chat or raw completion, already validated."""

    model: str
    kind: Literal["chat", "text"]
    params: GenerationParams
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    priority: Priority = "interactive"
    conversation: str | None = None
    supersede: bool = False
    queue_timeout: float | None = None
    adapter: str | None = None


@dataclass
class CompletionJob:
    """A queued or running completion; iterate it for its pieces."""

    model: str
    job: Job
    prompt_tokens: int
    finish_reason: str | None = None
    completion_tokens: int = 0

    async def wait_started(self, clock_now: float) -> None:
        """Wait until the worker takes the job; :class:`QueueTimeout` past its deadline."""
        try:
            await asyncio.wait_for(
                asyncio.shield(self.job.started), timeout=max(0.0, self.job.deadline - clock_now)
            )
        except TimeoutError:
            err = QueueTimeout(
                self.model, self.job.deadline - self.job.enqueued_at, self.job.priority
            )
            self.job.cancel(err)
            raise err from None

    async def pieces(self) -> AsyncIterator[Piece]:
        """The generated text as it comes; raises the reason if the job was superseded."""
        await self.job.started
        while True:
            item = await self.job.output.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if item.finish_reason is not None:
                self.finish_reason = item.finish_reason
                self.completion_tokens = item.completion_tokens
            yield item
        if self.job.reason is not None:
            raise self.job.reason


class CompletionService:
    """Turns a :class:`CompletionRequest` into a queued job on the right model."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        *,
        default_model: str,
        queue_timeout: float,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.default_model = default_model
        self.queue_timeout = queue_timeout
        self.accepting = True

    @staticmethod
    def _refuse_oversized(n_ctx: int, request: CompletionRequest) -> None:
        """Refuse a prompt whose bytes alone prove it cannot fit, before tokenizing it."""
        if request.kind == "chat":
            size = sum(len(str(m.get("content") or "").encode()) for m in request.messages)
            param = "messages"
        else:
            size, param = len(request.prompt.encode()), "prompt"
        if size > n_ctx * MAX_BYTES_PER_TOKEN:
            raise PromptTooLarge(size, n_ctx, MAX_BYTES_PER_TOKEN, param)

    def _prompt(self, slot: ModelSlot, request: CompletionRequest) -> Prompt:
        self._refuse_oversized(slot.model.n_ctx, request)
        if request.kind == "chat":
            prompt: Prompt = slot.model.chat_prompt(request.messages)
        else:
            prompt = slot.model.text_prompt(request.prompt)
        if request.adapter is not None and request.adapter not in slot.model.adapter_names:
            known = ", ".join(slot.model.adapter_names) or "none"
            raise InvalidRequest(
                f"model {slot.name!r} has no adapter {clip(request.adapter)!r}; its adapters: "
                f"{known}",
                param="adapter",
            )
        for token in request.params.logit_bias:
            if not slot.model.token_id_ok(token):
                raise InvalidRequest(
                    f"logit_bias names token {token}, not in the vocabulary", param="logit_bias"
                )
        return prompt

    def _generate(
        self,
        slot: ModelSlot,
        prompt: Prompt,
        params: GenerationParams,
        conversation: str | None,
        adapter: str | None,
        drops: int,
        cancel: threading.Event,
    ) -> Iterator[Piece]:
        """The job's work, on the worker thread; counts tokens even if nobody reads the end."""
        try:
            yield from self._pieces(slot, prompt, params, conversation, adapter, cancel)
        finally:
            if conversation is not None and self.manager.drops_of(conversation) != drops:
                # Forgotten while this request waited: its prompt held the forgotten words,
                # and the state it just saved must go too.
                slot.model.drop_conversation(conversation)

    def _pieces(
        self,
        slot: ModelSlot,
        prompt: Prompt,
        params: GenerationParams,
        conversation: str | None,
        adapter: str | None,
        cancel: threading.Event,
    ) -> Iterator[Piece]:
        m = self.metrics
        pieces = slot.model.generate(
            prompt, params, cancel, conversation=conversation, adapter=adapter
        )
        for piece in pieces:
            if piece.finish_reason is not None:
                m.prompt_tokens.labels(slot.name).inc(len(prompt.tokens))
                m.generated_tokens.labels(slot.name).inc(piece.completion_tokens)
                m.requests.labels(slot.name, piece.finish_reason).inc()
                m.kv_lookups.labels(slot.name, _lookup(piece)).inc()
                m.kv_tokens.labels(slot.name, "restored").inc(piece.cached_tokens)
                m.kv_tokens.labels(slot.name, "evaluated").inc(
                    len(prompt.tokens) - piece.cached_tokens
                )
            yield piece

    @contextlib.asynccontextmanager
    async def open(self, request: CompletionRequest) -> AsyncIterator[CompletionJob]:
        """Queue ``request``; leaving the context cancels it if it has not finished."""
        if not self.accepting:
            raise ShuttingDown()
        name = request.model or self.default_model
        slot = await self.manager.acquire(name)
        try:
            prompt = await asyncio.to_thread(self._prompt, slot, request)
            n_ctx: int = slot.model.n_ctx
            param = "messages" if request.kind == "chat" else "prompt"
            if not prompt.tokens:  # llama.cpp asserts on an empty batch
                raise InvalidRequest(f"the {param} is empty; send some text", param=param)
            if len(prompt.tokens) >= n_ctx:
                raise PromptTooLong(len(prompt.tokens), n_ctx, param)
            now = self.manager.clock()
            timeout = request.queue_timeout or self.queue_timeout
            job = Job(
                priority=request.priority,
                enqueued_at=now,
                deadline=now + timeout,
                conversation=request.conversation,
                work=functools.partial(
                    self._generate,
                    slot,
                    prompt,
                    request.params,
                    request.conversation,
                    request.adapter,
                    self.manager.drops_of(request.conversation) if request.conversation else 0,
                ),
            )
            if request.supersede and request.conversation is not None:
                for old in slot.queue.supersede(request.conversation, job):
                    log.info("request_superseded", model=name, conversation=old.conversation)
            slot.queue.put(job)
            handle = CompletionJob(model=name, job=job, prompt_tokens=len(prompt.tokens))
            try:
                yield handle
            finally:
                job.cancel()
        finally:
            self.manager.release(slot)
