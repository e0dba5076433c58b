"""Test helpers for code that talks to the daemon, shipped like ``bridges.testing``.

- :class:`ScriptedEngine`: a deterministic fake :class:`~daemon.Engine` that answers from a
  script, never imports llama.cpp and loads in no time, so the queue, the HTTP API, metrics and
  anything built on the daemon can be tested without a model.
- :func:`scripted_loader`: the loader to pass as ``Daemon(settings, loader=...)`` or
  ``daemon.serve(settings, loader=...)``; it keeps the engines it built in ``.engines``.

Example::

    from daemon import serve
    from daemon.testing import scripted_loader

    loader = scripted_loader(["Hello there!", "Bye."])
    async with serve(settings, loader=loader) as served:
        ...  # the first completion says "Hello there!", the second "Bye."
    assert loader.engines["smollm2"].calls[0].conversation is None

Use the real model where the model matters (tokenization, KV states, adapters, sampling).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from models import ModelManifest

from ._types import GenerationParams, Piece, Prompt, stop_holdback

__all__ = ["ScriptedCall", "ScriptedEngine", "ScriptedLoader", "scripted_loader"]

Replies = Sequence[str] | Callable[[str], str]
Tokenizer = Literal["word", "char"]

# A word token is a run of non-space characters with the spaces before it, so the tokens of a
# text always join back to the text.
_WORD = re.compile(r"\s*\S+|\s+")
# The turn markers chat_prompt writes; the end marker is the format's stop string.
TURN_END = "<|end|>"


def _turn(role: str) -> str:
    return f"<|{role}|>\n"


def _always_hello(prompt: str) -> str:
    return "Hello!"


class _Script:
    """The replies in order (shared by every engine of one loader), or a function of the
    prompt."""

    def __init__(self, replies: Replies) -> None:
        self._lock = threading.Lock()
        if callable(replies):
            self._fn: Callable[[str], str] | None = replies
            self._left: list[str] = []
        else:
            self._fn, self._left = None, list(replies)

    def next(self, prompt: str) -> str:
        if self._fn is not None:
            return self._fn(prompt)
        with self._lock:
            if not self._left:
                raise RuntimeError(
                    "the scripted engine has no reply left; give scripted_loader more replies "
                    "or a function of the prompt"
                )
            return self._left.pop(0)


@dataclass(frozen=True)
class ScriptedCall:
    """One generation the engine ran: the prompt text as rendered, and what came with it."""

    prompt: str
    params: GenerationParams
    conversation: str | None
    adapter: str | None


class ScriptedEngine:
    """A fake :class:`~daemon.Engine` whose replies come from a script.

    Replies are a list of strings consumed in order (an error once it runs out), or a function
    from the rendered prompt text to the reply; without either, every reply is ``"Hello!"``.
    Tokens are words (a run of non-space characters with the spaces before it) or single
    characters (``tokenizer="char"``), so ``max_tokens`` counts words or characters and usage
    counts the prompt the same way. Generation stops at the end of the reply (``"stop"``), at a
    stop string (``"stop"``, cut off and never leaked, as the real engine does), at
    ``max_tokens`` or the context (``"length"``), or when ``cancel`` is set (``"cancelled"``).
    Sampling parameters and ``logit_bias`` are accepted and ignored.

    Chat messages are rendered as ``<|role|>\\ncontent<|end|>\\n`` and end with
    ``<|assistant|>\\n``; ``<|end|>`` is the format's stop string.

    Knobs for tests:

    - ``on_token(i)`` is called on the worker thread before the ``i``-th token (from 0): make it
      sleep for a real delay, advance a fake clock, or raise to fail mid-generation. No delay
      unless asked.
    - ``gate``: a generation yields its first token, then waits for this event (or for its
      cancellation) before each further one; a request with ``max_tokens`` 1 never waits. One
      long generation then holds the worker until its client leaves or the test sets the gate,
      so requests queue behind it.

    It records :attr:`calls` (every generation, in order), :attr:`dropped` (conversations
    whose states the daemon dropped) and :attr:`closed`. A conversation's "KV state" is the
    prompt it last ran with: a follow-up reports the common prefix as ``cached_tokens``.
    """

    def __init__(
        self,
        replies: Replies | None = None,
        *,
        n_ctx: int = 2048,
        adapters: Iterable[str] = (),
        tokenizer: Tokenizer = "word",
        vocab_size: int = 49152,
        on_token: Callable[[int], None] | None = None,
        gate: threading.Event | None = None,
        script: _Script | None = None,
    ) -> None:
        if script is None:
            script = _Script(replies if replies is not None else _always_hello)
        self._script = script
        self.n_ctx = n_ctx
        self.adapter_names: Sequence[str] = sorted(adapters)
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.on_token = on_token
        self.gate = gate
        self.calls: list[ScriptedCall] = []
        self.dropped: list[str] = []
        self.closed = False
        self._lock = threading.Lock()
        self._words: dict[str, int] = {}
        self._texts: list[str] = []
        self._states: dict[tuple[str | None, str], list[int]] = {}

    # --- tokenizer -------------------------------------------------------------------------

    def _split(self, text: str) -> list[str]:
        return list(text) if self.tokenizer == "char" else _WORD.findall(text)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (characters: code points; words: ids given out as seen)."""
        if self.tokenizer == "char":
            return [ord(c) for c in text]
        with self._lock:
            ids = []
            for word in _WORD.findall(text):
                if word not in self._words:
                    self._words[word] = len(self._texts)
                    self._texts.append(word)
                ids.append(self._words[word])
            return ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``."""
        if self.tokenizer == "char":
            return "".join(map(chr, tokens))
        with self._lock:
            return "".join(self._texts[t] for t in tokens)

    # --- the Engine interface --------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render ``messages`` with the fake's turn markers and tokenize them."""
        text = "".join(
            f"{_turn(str(m.get('role', 'user')))}{m.get('content') or ''}{TURN_END}\n"
            for m in messages
        )
        if messages:
            text += _turn("assistant")
        return Prompt(tokens=self.tokenize(text), stop=(TURN_END,))

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize ``text`` as is."""
        return Prompt(tokens=self.tokenize(text))

    def token_id_ok(self, token: int) -> bool:
        """Whether ``token`` is below ``vocab_size``."""
        return 0 <= token < self.vocab_size

    def _cached(self, tokens: list[int], conversation: str | None, adapter: str | None) -> int:
        if conversation is None:
            return 0
        with self._lock:
            old = self._states.get((adapter, conversation), [])
            self._states[(adapter, conversation)] = list(tokens)
        n = 0
        for a, b in zip(old, tokens, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(tokens) - 1)

    def _wait(self, cancel: threading.Event) -> None:
        if self.gate is None:
            return
        while not cancel.is_set() and not self.gate.wait(0.01):
            pass

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event,
        conversation: str | None = None,
        adapter: str | None = None,
    ) -> Iterator[Piece]:
        """Yield the next scripted reply a token at a time (see the class docstring)."""
        text = self.detokenize(prompt.tokens)
        with self._lock:
            self.calls.append(ScriptedCall(text, params, conversation, adapter))
        reply = self._split(self._script.next(text))
        cached = self._cached(prompt.tokens, conversation, adapter)
        room = self.n_ctx - len(prompt.tokens)
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        stops = tuple(s for s in (*params.stop, *prompt.stop) if s)
        pending, produced, finish = "", 0, "stop"
        for i, token in enumerate(reply):
            if produced >= limit:
                finish = "length"
                break
            if i > 0:
                self._wait(cancel)
            if cancel.is_set():
                finish = "cancelled"
                break
            if self.on_token is not None:
                self.on_token(i)
            produced += 1
            pending += token
            hit = min((j for s in stops if (j := pending.find(s)) >= 0), default=-1)
            if hit >= 0:
                pending = pending[:hit]
                break
            keep = stop_holdback(pending, stops)
            if len(pending) > keep:
                yield Piece(pending[: len(pending) - keep])
                pending = pending[len(pending) - keep :]
        yield Piece(
            pending,
            finish_reason=finish,
            completion_tokens=produced,
            cached_tokens=cached,
            cache_hit=cached > 0,
        )

    def kv_bytes(self) -> tuple[int, int]:
        """No stored states take memory: ``(0, 0)``."""
        return (0, 0)

    def kv_discarded(self) -> Mapping[str, int]:
        """Nothing is ever discarded."""
        return {}

    def drop_conversation(self, conversation: str) -> int:
        """Record the drop; return how many adapters' states of it there were."""
        with self._lock:
            self.dropped.append(conversation)
            keys = [k for k in self._states if k[1] == conversation]
            for key in keys:
                del self._states[key]
        return len(keys)

    def close(self) -> None:
        """Record that the daemon unloaded the model."""
        self.closed = True


class ScriptedLoader:
    """Builds a :class:`ScriptedEngine` per model, all answering from one script in order."""

    def __init__(self, replies: Replies, **engine: Any) -> None:
        self._script = _Script(replies)
        self._engine = engine
        # The engine last built for each model name.
        self.engines: dict[str, ScriptedEngine] = {}

    def __call__(self, manifest: ModelManifest) -> ScriptedEngine:
        options: dict[str, Any] = {"adapters": manifest.adapters}
        if manifest.context_length is not None:
            options["n_ctx"] = manifest.context_length
        engine = ScriptedEngine(script=self._script, **{**self._engine, **options})
        self.engines[manifest.name] = engine
        return engine


def scripted_loader(
    replies: Replies | None = None,
    *,
    n_ctx: int | None = None,
    tokenizer: Tokenizer = "word",
    on_token: Callable[[int], None] | None = None,
    gate: threading.Event | None = None,
) -> ScriptedLoader:
    """A loader of :class:`ScriptedEngine` s for ``Daemon``/``serve``, sharing ``replies``
    (consumed in order by whichever model answers next; default: always ``"Hello!"``).

    Each model takes its context from its manifest's ``context_length`` (else ``n_ctx``, else
    2048) and its adapter names from ``adapters``; its GGUF file is never opened.
    """
    engine: dict[str, Any] = {"tokenizer": tokenizer, "on_token": on_token, "gate": gate}
    if n_ctx is not None:
        engine["n_ctx"] = n_ctx
    return ScriptedLoader(replies if replies is not None else _always_hello, **engine)
