"""llama.cpp behind a small synchronous interface; the only module that imports ``llama_cpp``.

Everything here blocks and runs on a model's worker thread (see ``_worker``). Generation is a
token loop of our own over ``Llama.generate`` rather than ``create_completion``: it stops within
one token when cancelled, counts tokens exactly, and leaves room for restoring a conversation's
KV state (``llama_state_seq_*``) and switching LoRA adapters per request before the loop starts.
"""

from __future__ import annotations

import codecs
import ctypes
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import llama_cpp
import numpy as np
import numpy.typing as npt
import structlog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from models import DEFAULT_CONTEXT, ModelManifest, read_gguf_info, served_context

from .._types import GenerationParams, Piece, Prompt, stop_holdback
from ..errors import InvalidRequest, ModelUnavailable
from ..settings import ModelsSettings
from ._batch import Batcher, BatchRequest, Trace
from ._chat import (
    ControlToken,
    Segment,
    mark_messages,
    partition,
    split_marked,
    tokenize_parts,
)
from ._devices import DeviceProbe, model_shape, plan_offload, probe_devices
from ._kvcache import KVCache, SavedState, common_prefix, file_identity, identity_of

log = structlog.get_logger("personad.engine")

__all__ = [
    "DEFAULT_CONTEXT",
    "EngineOptions",
    "KVSettings",
    "LlamaModel",
    "build_info",
    "token_logits",
]


def build_info() -> dict[str, Any]:
    """What llama.cpp was built with (version, GPU offload support)."""
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
    }


@dataclass(frozen=True)
class EngineOptions:
    """How a model runs; [models] settings, overridden by what a manifest sets explicitly.

    The defaults were measured on a 2-core CPU with the demo model (``bench/defaults.py``);
    ``None`` threads mean llama-cpp-python's choice (half the cores for decoding, all for
    batches).
    """

    flash_attn: bool = True
    n_threads: int | None = None
    n_threads_batch: int | None = None
    # Sequences decoded together (slots); 1 keeps the single-sequence path.
    parallel: int = 4
    n_gpu_layers: int | Literal["auto"] = "auto"
    # Most prompt tokens a newcomer evaluates per step while others are decoding.
    prefill_chunk: int = 256

    @classmethod
    def from_settings(cls, models: ModelsSettings) -> EngineOptions:
        """The options the [models] settings give."""
        return cls(
            flash_attn=models.flash_attn,
            n_threads=models.n_threads,
            n_threads_batch=models.n_threads_batch,
            parallel=models.parallel,
            n_gpu_layers=models.n_gpu_layers,
            prefill_chunk=models.prefill_chunk,
        )

    def for_manifest(self, manifest: ModelManifest) -> EngineOptions:
        """These options with the manifest's explicitly set fields taking precedence."""
        given = manifest.model_fields_set
        return replace(
            self,
            flash_attn=manifest.flash_attn if "flash_attn" in given else self.flash_attn,
            n_threads=manifest.n_threads if "n_threads" in given else self.n_threads,
            n_gpu_layers=manifest.n_gpu_layers if "n_gpu_layers" in given else self.n_gpu_layers,
        )


@dataclass(frozen=True)
class KVSettings:
    """Where and how much of the per-conversation KV states to keep."""

    directory: Path | None
    ram_bytes: int
    disk_bytes: int
    # A stored state is restored only when it saves at least this many tokens of evaluation.
    min_gain: int = 16


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
        kwargs: dict[str, Any] = {
            "model_path": str(manifest.path),
            "n_ctx": n_ctx,
            "n_batch": min(manifest.n_batch, n_ctx),
            "n_gpu_layers": self.offload.layers,
            "main_gpu": manifest.main_gpu,
            "flash_attn": opts.flash_attn,
            "verbose": False,
        }
        if opts.n_threads is not None:
            kwargs["n_threads"] = opts.n_threads
        if opts.n_threads_batch is not None:
            kwargs["n_threads_batch"] = opts.n_threads_batch
        if self.parallel > 1:
            # The batcher brings its own context with one sequence per slot; the Llama object
            # is kept for its model and tokenizer, with a token context of its own.
            kwargs["n_ctx"] = kwargs["n_batch"] = 256
        if manifest.adapter is not None:
            kwargs["lora_path"] = str(manifest.adapter)
            kwargs["lora_scale"] = manifest.adapter_scale
        try:
            self._llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(manifest.name, str(exc)) from exc
        # llama.cpp may pad the context (to 256), but llama-cpp-python sizes its token buffer
        # by the requested value: the smaller of the two is the real limit.
        self.n_ctx: int = n_ctx if self.parallel > 1 else min(n_ctx, self._llm.n_ctx())
        # Adapters a request can switch to (the base model's weights are shared).
        self._adapters: dict[str, Any] = {}
        for name, path in manifest.adapters.items():
            handle = llama_cpp.llama_adapter_lora_init(
                self._llm._model.model, str(path).encode("utf-8")
            )
            if handle is None:
                raise ModelUnavailable(manifest.name, f"adapter {name!r} ({path}) failed to load")
            self._adapters[name] = handle
        self._active_adapter: str | None = None
        self.kv: KVCache | None = None
        self._kv_settings = kv
        if kv is not None and (kv.ram_bytes > 0 or kv.disk_bytes > 0):
            identity = identity_of(
                file_identity(manifest.path),
                file_identity(manifest.adapter),
                manifest.adapter_scale,
                self.n_ctx,
                "f16",
            )
            self.kv = KVCache(
                kv.directory, identity, ram_bytes=kv.ram_bytes, disk_bytes=kv.disk_bytes
            )
        self._template = manifest.chat_template or info.chat_template
        self._formatter: Jinja2ChatFormatter | None = None
        if self._template:
            vocab = self._llm._model
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=self._template,
                eos_token=vocab.token_get_text(eos) if eos != -1 else "",
                bos_token=vocab.token_get_text(bos) if bos != -1 else "",
            )
        self._controls = self._control_tokens() if self._formatter is not None else []
        self._bctx: Any = None
        self._batch_adapter: str | None = None
        self._batcher: Batcher | None = None
        if self.parallel > 1:
            self._start_batcher(n_ctx, min(manifest.n_batch, n_ctx), trace)

    def _start_batcher(self, n_ctx: int, n_batch: int, trace: Trace | None) -> None:
        """A context with one sequence per slot, and the step loop that decodes them."""
        base = self._llm.context_params
        params = type(base).from_buffer_copy(base)
        params.n_ctx = n_ctx * self.parallel
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = self.parallel
        # A KV buffer per slot: with one shared buffer every token attends over all slots'
        # cells (masked), which at 8 slots cost more than the weights (bench/concurrency.py:
        # 55 against 83 tok/s). llama.cpp then keeps a micro-batch to consecutive sequence
        # ids, so the batcher feeds sequences in id order and fills the lowest free slot.
        params.kv_unified = False
        self._bctx = llama_cpp.llama_init_from_model(self._llm._model.model, params)
        if self._bctx is None:
            raise ModelUnavailable(
                self.manifest.name,
                f"no memory for {self.parallel} slots of {n_ctx} tokens; lower models.parallel",
            )
        self._batch_adapter = None
        if self._llm._lora_adapter is not None:  # the manifest's own adapter is the base
            self._set_adapters(self._bctx, self._llm._lora_adapter, self.manifest.adapter_scale)
        self._batcher = Batcher(
            self._bctx,
            vocab=self._llm._model.vocab,
            n_vocab=self._llm.n_vocab(),
            n_ctx=n_ctx,
            parallel=self.parallel,
            n_batch=n_batch,
            prefill_chunk=self.options.prefill_chunk,
            detokenize=self._llm.detokenize,
            set_adapter=self._use_batch_adapter,
            kv=self.kv,
            min_gain=self._kv_settings.min_gain if self._kv_settings is not None else 16,
            trace=trace,
        )

    @staticmethod
    def _set_adapters(ctx: Any, handle: Any, scale: float) -> None:
        if handle is None:
            llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
            return
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(scale)
        llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)

    def _use_batch_adapter(self, name: str | None) -> None:
        """Switch the batch context's adapter (on the batcher's thread, between steps)."""
        if name == self._batch_adapter:
            return
        if name is None:
            base = self._llm._lora_adapter
            self._set_adapters(self._bctx, base, self.manifest.adapter_scale)
        else:
            self._set_adapters(self._bctx, self._adapters[name], 1.0)
        self._batch_adapter = name

    def _control_tokens(self) -> list[ControlToken]:
        """The tokens special parsing recognises, longest text first (llama.cpp's order)."""
        vocab = self._llm._model.vocab
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        found = []
        for token in range(self._llm.n_vocab()):
            attr = llama_cpp.llama_vocab_get_attr(vocab, token)
            if not attr & special:
                continue
            try:
                text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8")
            except UnicodeDecodeError:
                continue  # no text a template could write
            if text:
                found.append(
                    ControlToken(
                        token,
                        text,
                        lstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP),
                        rstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP),
                    )
                )
        return sorted(found, key=lambda t: -len(t.text.encode("utf-8")))

    def _render(self, messages: list[dict[str, Any]]) -> Any:
        if self._formatter is None:
            raise InvalidRequest(
                f"model {self.manifest.name!r} has no chat template: use /v1/completions, or "
                "set chat_template in its manifest",
                param="messages",
            )
        try:
            return self._formatter(messages=messages)  # type: ignore[arg-type]
        except Exception as exc:  # the template is user data: any Jinja error is a bad request
            raise InvalidRequest(f"the chat template failed: {exc}", param="messages") from exc

    # Tokenizing only reads the vocabulary, so it is safe beside a running decode (llama.cpp's
    # own server tokenizes on its HTTP threads too); the request handler calls these directly.
    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render ``messages`` with the model's chat template and tokenize the result.

        Only the template's own text may hold control tokens: message text is tokenized with
        special parsing off, so a user typing ``<|im_end|>`` gets those characters, not a turn
        end (see ``_chat`` for how the two are told apart without changing the tokens).
        """
        rendered = self._render(messages)
        marked_messages, marks = mark_messages(messages)
        marked = self._render(marked_messages)
        segments = split_marked(marked.prompt, marks, rendered.prompt)
        if any(
            isinstance(m.get("content"), str)
            and any(c.text in m["content"] for c in self._controls)
            for m in messages
        ):
            # A template may re-slice a message outside the markers (Qwen3 moves an assistant's
            # reasoning): template text that the same template does not write for empty
            # messages came from people, so it is never searched for control tokens.
            blank = self._render([{**m, "content": ""} for m in messages]).prompt
            segments = [
                s if s.person or s.text in blank else Segment(s.text, True) for s in segments
            ]
        parts = partition(segments, self._controls)
        bos = self._llm.token_bos()
        # The formatter writes BOS as text itself (added_special); otherwise add it here.
        prefix = [bos] if not rendered.added_special and bos != -1 else []
        tokens = tokenize_parts(
            parts,
            lambda text: self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
            prefix,
        )
        stop = rendered.stop
        return Prompt(tokens=tokens, stop=(stop,) if isinstance(stop, str) else tuple(stop or ()))

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize a raw prompt as is (with BOS, special tokens recognised).

        The caller of /v1/completions writes the whole prompt, control tokens included, as
        with llama-server: nobody else's text is in it.
        """
        return Prompt(tokens=self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def token_id_ok(self, token: int) -> bool:
        """Whether ``token`` is a valid id (for logit_bias)."""
        return 0 <= token < self._llm.n_vocab()

    def _logits_processor(self, bias: dict[int, float]) -> llama_cpp.LogitsProcessorList | None:
        if not bias:
            return None
        ids = np.fromiter(bias.keys(), dtype=np.intc)
        values = np.fromiter(bias.values(), dtype=np.single)

        def apply(
            _ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
        ) -> npt.NDArray[np.single]:
            # OpenAI's -100/100 mean "ban"/"force": make them absolute.
            scores[ids] += np.where(np.abs(values) >= 100, np.sign(values) * np.inf, values)
            return scores

        return llama_cpp.LogitsProcessorList([apply])

    def _restore(self, state: SavedState) -> bool:
        llm = self._llm
        ctx = llm._ctx.ctx
        mem = llama_cpp.llama_get_memory(ctx)
        if mem is not None:
            llama_cpp.llama_memory_clear(mem, True)
        buf = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if not llama_cpp.llama_state_seq_set_data(ctx, buf, len(state.data), 0):
            llm.n_tokens = 0  # the context is empty now: evaluate from scratch
            return False
        n = len(state.tokens)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        return True

    @property
    def adapter_names(self) -> list[str]:
        """Adapters a request may name."""
        return sorted(self._adapters)

    def _use_adapter(self, name: str | None) -> None:
        if name == self._active_adapter:
            return
        ctx = self._llm._ctx.ctx
        if name is None:
            llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
            scales = (ctypes.c_float * 1)(1.0)
            llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
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
        if self.kv is None or self._kv_settings is None:
            return live, False
        scope = f"{adapter or ''}\x1f"  # states are only valid under the same adapter
        best: tuple[SavedState, int] | None = None
        if conversation is not None:
            state = self.kv.get(scope + conversation)
            if state is not None:
                best = (state, common_prefix(state.tokens, tokens))
        found = self.kv.best_prefix(tokens, scope)
        if (
            found is not None
            and (best is None or found[1] > best[1])
            and (best is None or found[0] != best[0].key)
        ):
            state = self.kv.get(found[0])
            if state is not None:
                best = (state, found[1])
        if best is not None and best[1] >= live + self._kv_settings.min_gain:
            if self._restore(best[0]):
                return min(best[1], len(tokens) - 1), True
            log.warning("kv_restore_failed", model=self.manifest.name)
        return min(live, max(len(tokens) - 1, 0)), False

    def _save(self, conversation: str | None, drops: int) -> None:
        if self.kv is None or conversation is None:
            return
        key = f"{self._active_adapter or ''}\x1f{conversation}"
        llm = self._llm
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        tokens = np.array(llm.input_ids[: llm.n_tokens], dtype=np.intc)
        self.kv.put(SavedState(key, tokens, ctypes.string_at(buf, written)), drops=drops)

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
        llm = self._llm
        # A conversation dropped while this runs (forgotten) must not be saved again after it.
        drops = (
            self.kv.drops(conversation) if self.kv is not None and conversation is not None else 0
        )
        if self._batcher is not None:
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
            self._batcher.submit(request)
            yield from request.pieces()
            return
        cached, from_store = self._prepare(prompt.tokens, conversation, adapter)
        room = self.n_ctx - len(prompt.tokens)
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        stops = tuple(s for s in (*params.stop, *prompt.stop) if s)
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        pending = ""
        produced = 0
        finish = "length"
        tokens = llm.generate(
            prompt.tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logits_processor=self._logits_processor(params.logit_bias),
        )
        try:
            while produced < limit:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                token = next(tokens)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                produced += 1
                pending += decoder.decode(llm.detokenize([token]))
                hit = min((i for s in stops if (i := pending.find(s)) >= 0), default=-1)
                if hit >= 0:
                    pending = pending[:hit]
                    finish = "stop"
                    break
                keep = stop_holdback(pending, stops)
                if len(pending) > keep:
                    out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                    yield Piece(out)
        finally:
            tokens.close()
            try:
                self._save(conversation, drops)
            except (OSError, MemoryError) as exc:  # a cache failure never fails a request
                log.warning("kv_save_failed", model=self.manifest.name, error=str(exc))
        if finish != "stop":
            pending += decoder.decode(b"", final=True)
        yield Piece(
            pending,
            finish_reason=finish,
            completion_tokens=produced,
            cached_tokens=cached,
            cache_hit=from_store,
        )

    def kv_bytes(self) -> tuple[int, int]:
        """Bytes of stored KV states in RAM and on disk."""
        return (self.kv.ram_used, self.kv.disk_used) if self.kv is not None else (0, 0)

    def kv_discarded(self) -> dict[str, int]:
        """Unusable state files thrown away since load, by reason."""
        return self.kv.discard_counts() if self.kv is not None else {}

    def drop_conversation(self, conversation: str) -> int:
        """Drop every stored state of ``conversation`` (RAM and disk); how many there were.

        Safe from any thread: the store has its own lock, and a generation of the same
        conversation that is running now does not save its state afterwards.
        """
        return self.kv.drop_conversation(conversation) if self.kv is not None else 0

    def close(self) -> None:
        """Free the model and context memory now; RAM states go to disk for the next start."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self._bctx is not None:
            llama_cpp.llama_free(self._bctx)
            self._bctx = None
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
