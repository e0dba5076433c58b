"""One sequence at a time on llama-cpp-python's own context (``models.parallel`` = 1).

Generation is a token loop of our own over ``Llama.generate`` rather than
``create_completion``: it stops within one token when cancelled, counts tokens exactly, and
leaves room for restoring a conversation's KV state (``llama_state_seq_*``) and switching LoRA
adapters per request before the loop starts.
"""

from __future__ import annotations

import codecs
import random
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
import structlog

from .._kvfiles import state_key
from .._types import GenerationParams, Piece, Prompt, stop_holdback
from ._kvcache import KVCache, SavedState, common_prefix
from ._lora import set_adapters
from ._seqstate import copy_in, copy_out

log = structlog.get_logger("personad.engine")

__all__ = ["SingleSequence", "bias_processor"]


def bias_processor(bias: dict[int, float]) -> llama_cpp.LogitsProcessorList | None:
    """A logits processor adding ``bias`` (OpenAI's logit_bias), or ``None`` without any."""
    if not bias:
        return None
    ids = np.fromiter(bias.keys(), dtype=np.intc)
    values = np.fromiter(bias.values(), dtype=np.single)

    def apply(_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        # OpenAI's -100/100 mean "ban"/"force": make them absolute.
        scores[ids] += np.where(np.abs(values) >= 100, np.sign(values) * np.inf, values)
        return scores

    return llama_cpp.LogitsProcessorList([apply])


class _Text:
    """Decoded text, held back while its end may still become a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, data: bytes) -> tuple[str, bool]:
        """Text that is safe to send now, and whether a stop string was reached."""
        self.pending += self._decoder.decode(data)
        hit = min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)
        if hit >= 0:
            self.pending = self.pending[:hit]
            return "", True
        cut = len(self.pending) - stop_holdback(self.pending, self.stops)
        if cut <= 0:
            return "", False
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def rest(self, finish: str) -> str:
        """What is left to send; a stop leaves an incomplete character undecoded."""
        if finish != "stop":
            self.pending += self._decoder.decode(b"", final=True)
        return self.pending


class SingleSequence:
    """Generation on the Llama object's own context, one request at a time."""

    def __init__(
        self,
        llm: llama_cpp.Llama,
        *,
        model: str,
        n_ctx: int,
        adapters: Mapping[str, Any],
        kv: KVCache | None,
        min_gain: int,
        adapter_scale: float = 1.0,
    ) -> None:
        self._llm = llm
        # The manifest's own adapter (loaded by llama-cpp-python) is what "no adapter" means.
        self._base = llm._lora_adapter
        self._base_scale = adapter_scale
        self._model = model
        self._n_ctx = n_ctx
        self._adapters = adapters
        self._kv = kv
        self._min_gain = min_gain
        self._active_adapter: str | None = None

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event,
        *,
        conversation: str | None,
        adapter: str | None,
        drops: int,
        processor: llama_cpp.LogitsProcessorList | None,
    ) -> Iterator[Piece]:
        """Yield text as it is generated; see ``LlamaModel.generate``."""
        llm = self._llm
        cached, from_store = self._prepare(prompt.tokens, conversation, adapter)
        room = self._n_ctx - len(prompt.tokens)
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        text = _Text(tuple(s for s in (*params.stop, *prompt.stop) if s))
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        tokens = llm.generate(
            prompt.tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logits_processor=processor,
        )
        try:
            finish, produced = yield from self._loop(tokens, text, limit, cancel)
        finally:
            tokens.close()
            try:
                self._save(conversation, drops)
            except (OSError, MemoryError) as exc:  # a cache failure never fails a request
                log.warning("kv_save_failed", model=self._model, error=str(exc))
        yield Piece(
            text.rest(finish),
            finish_reason=finish,
            completion_tokens=produced,
            cached_tokens=cached,
            cache_hit=from_store,
        )

    def _loop(
        self, tokens: Generator[int, Any, None], text: _Text, limit: int, cancel: threading.Event
    ) -> Generator[Piece, None, tuple[str, int]]:
        """Sample until a stop; return the finish reason and the tokens produced."""
        vocab = self._llm._model.vocab
        produced = 0
        while produced < limit:
            if cancel.is_set():
                return "cancelled", produced
            token = next(tokens)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return "stop", produced
            produced += 1
            out, stopped = text.add(self._llm.detokenize([token]))
            if stopped:
                return "stop", produced
            if out:
                yield Piece(out)
        return "length", produced

    def _use_adapter(self, name: str | None) -> None:
        if name == self._active_adapter:
            return
        if name is None:
            set_adapters(self._llm._ctx.ctx, self._base, self._base_scale)
        else:
            set_adapters(self._llm._ctx.ctx, self._adapters[name], 1.0)
        self._active_adapter = name
        # The live KV cache was computed with other weights: it is no prefix of anything now.
        self._llm.n_tokens = 0

    def _prepare(
        self, tokens: list[int], conversation: str | None, adapter: str | None
    ) -> tuple[int, bool]:
        """Put the best known KV state in place; return (prompt tokens cached, from store)."""
        self._use_adapter(adapter)
        llm = self._llm
        live = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
        if self._kv is None:
            return live, False
        best = self._kv.lookup(tokens, conversation, adapter)
        if best is not None and best[1] >= live + self._min_gain:
            if self._restore(best[0]):
                return min(best[1], len(tokens) - 1), True
            log.warning("kv_restore_failed", model=self._model)
        return min(live, max(len(tokens) - 1, 0)), False

    def _restore(self, state: SavedState) -> bool:
        llm = self._llm
        ctx = llm._ctx.ctx
        mem = llama_cpp.llama_get_memory(ctx)
        if mem is not None:
            llama_cpp.llama_memory_clear(mem, True)
        if not copy_in(ctx, state.data, 0):
            llm.n_tokens = 0  # the context is empty now: evaluate from scratch
            return False
        n = len(state.tokens)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        return True

    def _save(self, conversation: str | None, drops: int) -> None:
        if self._kv is None or conversation is None:
            return
        key = state_key(conversation, self._active_adapter)
        llm = self._llm
        ctx = llm._ctx.ctx
        tokens = np.array(llm.input_ids[: llm.n_tokens], dtype=np.intc)
        self._kv.put(SavedState(key, tokens, copy_out(ctx, 0)), drops=drops)
