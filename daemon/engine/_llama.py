"""llama.cpp behind a small synchronous interface: one loaded model, :class:`LlamaModel`.

Everything here blocks and runs on a model's worker thread (see ``worker``). ``LlamaModel``
loads the model and puts its parts together: prompts (``_prompt``), generation one sequence
at a time on llama-cpp-python's context (``_single``) or several together in a batch context
(``_batchctx``), and the per-conversation KV store (``_kvcache``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from models import DEFAULT_CONTEXT, ModelManifest, read_gguf_info, served_context

from .._offload import DeviceProbe, EngineOptions, OffloadPlan, model_shape, plan_offload
from .._types import GenerationParams, Piece, Prompt
from ..errors import ModelUnavailable
from ._batch import Trace
from ._batchctx import BatchContext
from ._batchseq import BatchRequest
from ._devices import probe_devices
from ._kvcache import KVCache, file_identity, identity_of
from ._lora import load_adapters
from ._prompt import PromptBuilder
from ._single import SingleSequence, bias_processor

__all__ = [
    "DEFAULT_CONTEXT",
    "EngineOptions",
    "KVSettings",
    "LlamaModel",
    "token_logits",
]


@dataclass(frozen=True)
class KVSettings:
    """Where and how much of the per-conversation KV states to keep."""

    directory: Path | None
    ram_bytes: int
    disk_bytes: int
    # A stored state is restored only when it saves at least this many tokens of evaluation.
    min_gain: int = 16


def _llama_args(
    manifest: ModelManifest, opts: EngineOptions, n_ctx: int, plan: OffloadPlan, parallel: int
) -> dict[str, Any]:
    """llama-cpp-python's ``Llama`` arguments for the model."""
    args: dict[str, Any] = {
        "model_path": str(manifest.path),
        "n_ctx": n_ctx,
        "n_batch": min(manifest.n_batch, n_ctx),
        "n_gpu_layers": plan.layers,
        "main_gpu": manifest.main_gpu,
        "flash_attn": opts.flash_attn_for(plan),
        "verbose": False,
    }
    if opts.n_threads is not None:
        args["n_threads"] = opts.n_threads
    if opts.n_threads_batch is not None:
        args["n_threads_batch"] = opts.n_threads_batch
    if parallel > 1:
        # The batch context brings its own context with one sequence per slot; the Llama
        # object is kept for its model and tokenizer, with a token context of its own.
        args["n_ctx"] = args["n_batch"] = 256
    if manifest.adapter is not None:
        args["lora_path"] = str(manifest.adapter)
        args["lora_scale"] = manifest.adapter_scale
    return args


def _load(manifest: ModelManifest, args: dict[str, Any]) -> llama_cpp.Llama:
    try:
        return llama_cpp.Llama(**args)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelUnavailable(manifest.name, str(exc)) from exc


def _kv_cache(manifest: ModelManifest, kv: KVSettings | None, n_ctx: int) -> KVCache | None:
    """The model's store of conversation KV states, if any room is given for one."""
    if kv is None or (kv.ram_bytes <= 0 and kv.disk_bytes <= 0):
        return None
    identity = identity_of(
        file_identity(manifest.path),
        file_identity(manifest.adapter),
        manifest.adapter_scale,
        n_ctx,
        "f16",
    )
    return KVCache(kv.directory, identity, ram_bytes=kv.ram_bytes, disk_bytes=kv.disk_bytes)


class LlamaModel:
    """One loaded GGUF model with its context. Not thread-safe: use from one worker thread."""

    def __init__(
        self,
        manifest: ModelManifest,
        kv: KVSettings | None = None,
        options: EngineOptions | None = None,
        *,
        probe: DeviceProbe = probe_devices,
        trace: Trace | None = None,
    ) -> None:
        self.manifest = manifest
        opts = (options or EngineOptions()).for_manifest(manifest)
        self.options = opts
        info = read_gguf_info(manifest.path)
        # One rule with `personad models list`, which shows the same number without loading.
        n_ctx = served_context(manifest, info.context_length)
        self.parallel = max(1, opts.parallel)
        self.offload = plan_offload(
            model_shape(info.metadata, info.size_bytes),
            probe() if opts.n_gpu_layers == "auto" else (),
            kv_tokens=n_ctx * self.parallel,
            requested=opts.n_gpu_layers,
        )
        self._llm = _load(manifest, _llama_args(manifest, opts, n_ctx, self.offload, self.parallel))
        # llama.cpp may pad the context (to 256), but llama-cpp-python sizes its token buffer
        # by the requested value: the smaller of the two is the real limit.
        self.n_ctx: int = n_ctx if self.parallel > 1 else min(n_ctx, self._llm.n_ctx())
        # Adapters a request can switch to (the base model's weights are shared).
        self._adapters = load_adapters(self._llm, manifest)
        self.kv = _kv_cache(manifest, kv, self.n_ctx)
        self._prompts = PromptBuilder(
            self._llm, manifest.name, manifest.chat_template or info.chat_template
        )
        self._formatter = self._prompts.formatter  # what tests render a template with
        min_gain = kv.min_gain if kv is not None else KVSettings.min_gain
        self._single = SingleSequence(
            self._llm,
            model=manifest.name,
            n_ctx=self.n_ctx,
            adapters=self._adapters,
            kv=self.kv,
            min_gain=min_gain,
            adapter_scale=manifest.adapter_scale,
        )
        self._batch = self._start_batch(n_ctx, min_gain, trace) if self.parallel > 1 else None

    def _start_batch(self, n_ctx: int, min_gain: int, trace: Trace | None) -> BatchContext:
        manifest = self.manifest
        return BatchContext(
            self._llm,
            model=manifest.name,
            parallel=self.parallel,
            n_ctx=n_ctx,
            n_batch=min(manifest.n_batch, n_ctx),
            prefill_chunk=self.options.prefill_chunk,
            adapters=self._adapters,
            adapter_scale=manifest.adapter_scale,
            kv=self.kv,
            min_gain=min_gain,
            trace=trace,
        )

    @property
    def adapter_names(self) -> list[str]:
        """Adapters a request may name."""
        return sorted(self._adapters)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render ``messages`` with the model's chat template and tokenize the result.

        Only the template's own text may hold control tokens (see ``_prompt``). Safe beside a
        running decode: it reads only the vocabulary.
        """
        return self._prompts.chat_prompt(messages)

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize a raw prompt as is (with BOS, special tokens recognised)."""
        return self._prompts.text_prompt(text)

    def token_id_ok(self, token: int) -> bool:
        """Whether ``token`` is a valid id (for logit_bias)."""
        return 0 <= token < self._llm.n_vocab()

    def _logits_processor(self, bias: dict[int, float]) -> llama_cpp.LogitsProcessorList | None:
        # A method so that a test can watch the single-sequence path's logits.
        return bias_processor(bias)

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event,
        conversation: str | None = None,
        adapter: str | None = None,
    ) -> Iterator[Piece]:
        """Yield text as it is generated; stop on EOG, a stop string, max_tokens or ``cancel``.

        With a ``conversation`` key, the KV state is restored from (and afterwards saved to)
        the per-conversation cache, so only what follows the common prefix is evaluated.
        """
        # A conversation dropped while this runs (forgotten) must not be saved again after it.
        drops = (
            self.kv.drops(conversation) if self.kv is not None and conversation is not None else 0
        )
        if self._batch is not None:
            request = BatchRequest(
                tokens=list(prompt.tokens),
                params=params,
                stops=tuple(s for s in (*params.stop, *prompt.stop) if s),
                cancel=cancel,
                conversation=conversation,
                adapter=adapter,
                drops=drops,
                tag=conversation,
            )
            self._batch.submit(request)
            yield from request.pieces()
            return
        yield from self._single.generate(
            prompt,
            params,
            cancel,
            conversation=conversation,
            adapter=adapter,
            drops=drops,
            processor=self._logits_processor(params.logit_bias),
        )

    def kv_bytes(self) -> tuple[int, int]:
        """Bytes of stored KV states in RAM and on disk."""
        return (self.kv.ram_used, self.kv.disk_used) if self.kv is not None else (0, 0)

    def kv_discarded(self) -> dict[str, int]:
        """Unusable state files thrown away since load, by reason."""
        return self.kv.discard_counts() if self.kv is not None else {}

    def drop_conversation(self, conversation: str) -> int:
        """Drop every stored state of ``conversation`` (RAM and disk) and the message text
        kept for tokenizing; how many states there were.

        Safe from any thread: the store has its own lock, and a generation of the same
        conversation that is running now does not save its state afterwards.
        """
        self._prompts.forget_text()  # the words go from memory too
        return self.kv.drop_conversation(conversation) if self.kv is not None else 0

    def close(self) -> None:
        """Free the model and context memory now; RAM states go to disk for the next start."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self.kv is not None:
            self.kv.flush()
        self._llm.close()


def token_logits(
    model: Path, tokens: Sequence[int], *, adapter: Path | None = None, n_ctx: int = 512
) -> npt.NDArray[np.float32]:
    """Logits for every position of ``tokens`` (for checking a conversion against a reference)."""
    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "logits_all": True, "verbose": False}
    if adapter is not None:
        kwargs["lora_path"] = str(adapter)
    llm = llama_cpp.Llama(str(model), **kwargs)
    try:
        llm.eval(list(tokens))
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()
