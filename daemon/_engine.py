"""The engine interface: what the daemon needs of a loaded model (no llama.cpp import)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from models import ModelManifest

from ._types import GenerationParams, Piece, Prompt

__all__ = ["Engine", "Loader"]


@runtime_checkable
class Engine(Protocol):
    """A loaded model, as the model manager and the completion service use it.

    This is the daemon's one extension point below HTTP: ``daemon.engine.LlamaModel`` (llama.cpp)
    implements it, and so does :class:`daemon.testing.ScriptedEngine`, the deterministic fake for
    tests that do not need a real model. A *loader* (``Callable[[ModelManifest], Engine]``, see
    :data:`Loader`) builds one per model; pass it as ``Daemon(settings, loader=...)`` or
    ``daemon.serve(settings, loader=...)``.

    Threading, which is what makes an engine simple to write: the manager gives each model one
    worker thread, and :meth:`generate` and :meth:`close` only ever run on it, one call at a
    time. :meth:`chat_prompt`, :meth:`text_prompt` and :meth:`token_id_ok` run on other threads
    while a generation may be running, so they must only read (a tokenizer's vocabulary).
    :meth:`drop_conversation`, :meth:`kv_bytes` and :meth:`kv_discarded` may be called from the
    event loop at any time: guard whatever they share with :meth:`generate`.

    Batching (optional): an engine with an int attribute ``parallel`` greater than 1 gets up to
    that many :meth:`generate` calls at once, each on a thread of its own, and decodes them
    together (``LlamaModel`` with ``models.parallel`` slots does, see docs/batching.md). The
    queue still decides which requests run: a request waits for a free slot in priority order.

    Errors: raise :class:`daemon.errors.InvalidRequest` for a request the model cannot serve
    (no chat template, say): the client gets a 400 naming it. Any other exception from
    :meth:`generate` ends the request with a 500 (or an SSE error event once streaming).

    An engine with no KV state store returns ``(0, 0)``, ``{}`` and ``0`` from the three KV
    methods. A minimal engine that echoes the prompt back, one character per token::

        class EchoEngine:
            n_ctx = 512
            adapter_names: Sequence[str] = ()

            def chat_prompt(self, messages):
                return self.text_prompt("".join(m["content"] for m in messages))

            def text_prompt(self, text):
                return Prompt(tokens=[ord(c) for c in text])

            def token_id_ok(self, token):
                return 0 <= token < 0x110000

            def generate(self, prompt, params, cancel, conversation=None, adapter=None):
                text = "".join(map(chr, prompt.tokens))[: params.max_tokens]
                n = 0
                for n, char in enumerate(text, 1):
                    if cancel.is_set():
                        yield Piece("", finish_reason="cancelled", completion_tokens=n - 1)
                        return
                    yield Piece(char)
                yield Piece("", finish_reason="length", completion_tokens=n)

            def kv_bytes(self): return (0, 0)
            def kv_discarded(self): return {}
            def drop_conversation(self, conversation): return 0
            def close(self): pass

        async with daemon.serve(settings, loader=lambda manifest: EchoEngine()) as served:
            ...
    """

    @property
    def n_ctx(self) -> int:
        """Context size in tokens: a prompt must be shorter, prompt plus reply must fit."""
        ...

    @property
    def adapter_names(self) -> Sequence[str]:
        """Names a request may pass as ``adapter`` (empty when the model has none)."""
        ...

    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render chat ``messages`` (``role``/``content`` dicts) and tokenize them.

        Return the stop strings the format implies (the turn end) in :attr:`Prompt.stop`.
        Message text must not become control tokens: a user typing a turn marker gets text.
        """
        ...

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize a raw prompt as the caller wrote it (for ``/v1/completions``)."""
        ...

    def token_id_ok(self, token: int) -> bool:
        """Whether ``token`` is in the vocabulary (``logit_bias`` keys are checked with it)."""
        ...

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event,
        conversation: str | None = None,
        adapter: str | None = None,
    ) -> Iterator[Piece]:
        """Yield the reply to ``prompt`` as it is generated, on the model's worker thread.

        Stop at the end of generation (``finish_reason="stop"``), at the first of
        ``params.stop`` or ``prompt.stop`` (``"stop"``; the stop string and what follows are not
        returned, and no piece may leak the start of one), at ``params.max_tokens`` or the end
        of the context (``"length"``), or soon after ``cancel`` is set (``"cancelled"``: check
        it before each token, since a client that left is waiting for the worker).

        The last piece, and only it, carries ``finish_reason``, ``completion_tokens`` and,
        with a KV state store, ``cached_tokens``/``cache_hit``. ``conversation`` keys that
        store; ``adapter`` is one of :attr:`adapter_names` or ``None`` for the base weights.
        """
        ...

    def kv_bytes(self) -> tuple[int, int]:
        """Bytes of stored KV states in RAM and on disk (a gauge in /metrics)."""
        ...

    def kv_discarded(self) -> Mapping[str, int]:
        """Unusable KV state files thrown away since load, per reason (a counter in /metrics)."""
        ...

    def drop_conversation(self, conversation: str) -> int:
        """Forget every stored state of ``conversation``; return how many there were.

        Called when people's words are deleted: a generation of the same conversation running
        now must not store its state again afterwards.
        """
        ...

    def close(self) -> None:
        """Free the model's memory; called once, on the worker thread, when it is unloaded."""
        ...


Loader = Callable[[ModelManifest], Engine]
"""Builds the engine of one model; runs on that model's worker thread, may block for long."""
