"""The batch context: a llama.cpp context with one sequence per slot, and its step loop.

It sits beside llama-cpp-python's ``Llama`` object, whose model weights, vocabulary and
detokenizer it shares (``models.parallel`` > 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import llama_cpp

from ..errors import ModelUnavailable
from ._batch import Batcher, Trace
from ._batchseq import BatchRequest
from ._kvcache import KVCache
from ._lora import set_adapters

__all__ = ["BatchContext"]


def _new_context(llm: llama_cpp.Llama, parallel: int, n_ctx: int, n_batch: int) -> Any:
    """A context of ``parallel`` sequences of ``n_ctx`` tokens, or ``None`` without memory."""
    base = llm.context_params
    params = type(base).from_buffer_copy(base)
    params.n_ctx = n_ctx * parallel
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = parallel
    # A KV buffer per slot: with one shared buffer every token attends over all slots'
    # cells (masked), which at 8 slots cost more than the weights (bench/concurrency.py:
    # 55 against 83 tok/s). llama.cpp then keeps a micro-batch to consecutive sequence
    # ids, so the batcher feeds sequences in id order and fills the lowest free slot.
    params.kv_unified = False
    return llama_cpp.llama_init_from_model(llm._model.model, params)


class BatchContext:
    """The slots' context with its :class:`Batcher`; requests go in through :meth:`submit`."""

    def __init__(
        self,
        llm: llama_cpp.Llama,
        *,
        model: str,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        prefill_chunk: int,
        adapters: Mapping[str, Any],
        adapter_scale: float,
        kv: KVCache | None,
        min_gain: int,
        trace: Trace | None,
    ) -> None:
        self._ctx = _new_context(llm, parallel, n_ctx, n_batch)
        if self._ctx is None:
            raise ModelUnavailable(
                model, f"no memory for {parallel} slots of {n_ctx} tokens; lower models.parallel"
            )
        # The manifest's own adapter (loaded by llama-cpp-python) is the base the slots use.
        self._base = llm._lora_adapter
        self._base_scale = adapter_scale
        self._adapters = adapters
        self._adapter: str | None = None
        if self._base is not None:
            set_adapters(self._ctx, self._base, adapter_scale)
        self._batcher = Batcher(
            self._ctx,
            vocab=llm._model.vocab,
            n_vocab=llm.n_vocab(),
            n_ctx=n_ctx,
            parallel=parallel,
            n_batch=n_batch,
            prefill_chunk=prefill_chunk,
            detokenize=llm.detokenize,
            set_adapter=self._use_adapter,
            kv=kv,
            min_gain=min_gain,
            trace=trace,
        )

    def submit(self, request: BatchRequest) -> None:
        """Queue ``request`` for a slot; its pieces arrive through ``request.pieces()``."""
        self._batcher.submit(request)

    def _use_adapter(self, name: str | None) -> None:
        """Switch the context's adapter (on the batcher's thread, between steps)."""
        if name == self._adapter:
            return
        if name is None:
            set_adapters(self._ctx, self._base, self._base_scale)
        else:
            set_adapters(self._ctx, self._adapters[name], 1.0)
        self._adapter = name

    def close(self) -> None:
        """Stop the step loop, then free the context."""
        self._batcher.close()
        llama_cpp.llama_free(self._ctx)
