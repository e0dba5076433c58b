"""How a model will run, decided without llama.cpp: its engine options and its GPU offload.

Everything here is data and arithmetic, so two processes reach the same plan: a runner, from
the devices it asks llama.cpp for itself (``daemon.engine.probe_devices``), and
``personad doctor``, from the devices a short-lived probe process reported
(``daemon._devicequery``) while the CLI itself never loads llama.cpp. ``daemon.engine``
re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from models import ModelManifest

from .settings import ModelsSettings

__all__ = [
    "DEVICE_KINDS",
    "GPU_RESERVE",
    "Device",
    "DeviceKind",
    "DeviceProbe",
    "EngineOptions",
    "ModelShape",
    "OffloadPlan",
    "model_shape",
    "plan_offload",
]

DeviceKind = Literal["cpu", "gpu", "igpu", "accel", "meta"]
# In the order of ggml's enum ggml_backend_dev_type.
DEVICE_KINDS: tuple[DeviceKind, ...] = ("cpu", "gpu", "igpu", "accel", "meta")
MiB = 1 << 20
# Left free on each GPU for llama.cpp's compute buffers and the driver (llama.cpp's own
# fitting keeps about 1 GiB; a small model's compute buffer is tens of MB).
GPU_RESERVE = 512 * MiB


@dataclass(frozen=True)
class EngineOptions:
    """How a model runs; [models] settings, overridden by what a manifest sets explicitly.

    The defaults were measured on a 2-core CPU with the demo model (``bench/defaults.py``);
    ``None`` threads mean llama-cpp-python's choice (half the cores for decoding, all for
    batches).
    """

    # "auto": on when layers go to a GPU, off on the CPU, where it made a follow-up's first
    # token 50 % slower (bench/interleaved.py) and cold prompts 5-10 % faster.
    flash_attn: bool | Literal["auto"] = "auto"
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

    def flash_attn_for(self, plan: OffloadPlan) -> bool:
        """Whether flash attention is on for a model placed as ``plan`` says."""
        if self.flash_attn == "auto":
            return plan.layers > 0
        return self.flash_attn

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
class Device:
    """One ggml device with its memory in bytes."""

    name: str
    description: str
    kind: DeviceKind
    free: int
    total: int

    @property
    def offloads(self) -> bool:
        """Whether layers can be placed on it (a GPU with memory of its own or shared)."""
        return self.kind in ("gpu", "igpu")


DeviceProbe = Callable[[], Sequence[Device]]


@dataclass(frozen=True)
class ModelShape:
    """What sizing an offload needs to know of a model."""

    size_bytes: int
    n_layer: int
    # K and V of one token in one layer (f16 cache).
    kv_bytes_per_token_layer: int


@dataclass(frozen=True)
class OffloadPlan:
    """How many layers go to the GPU(s), and why."""

    layers: int
    n_layer: int
    reason: str
    # Bytes of GPU memory the plan uses (weights and KV of the offloaded layers).
    gpu_bytes: int = 0

    def describe(self) -> str:
        """One line for ``personad doctor``."""
        return f"{self.layers}/{self.n_layer} layers on GPU ({self.reason})"


def model_shape(metadata: Mapping[str, Any], size_bytes: int) -> ModelShape:
    """A model's shape from its GGUF metadata (``{arch}.block_count`` and attention sizes)."""
    arch = str(metadata.get("general.architecture", "llama"))

    def num(key: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        return int(value[0] if isinstance(value, list) else value)

    n_layer = num("block_count", 1)
    n_embd = num("embedding_length")
    n_head = num("attention.head_count", 1) or 1
    n_head_kv = num("attention.head_count_kv", n_head) or n_head
    k_len = num("attention.key_length", n_embd // n_head)
    v_len = num("attention.value_length", k_len)
    return ModelShape(size_bytes, max(n_layer, 1), 2 * n_head_kv * (k_len + v_len))


def plan_offload(
    shape: ModelShape,
    devices: Sequence[Device],
    *,
    kv_tokens: int,
    requested: int | Literal["auto"] = "auto",
    reserve: int = GPU_RESERVE,
) -> OffloadPlan:
    """Layers to offload: as many as fit in free GPU memory with room for their KV cache.

    ``kv_tokens`` is slots x context: every offloaded layer holds its KV cache for all of
    them. A number in ``requested`` is kept as given (``-1`` means all layers).
    """
    n = shape.n_layer
    if requested != "auto":
        layers = n if requested < 0 else min(requested, n)
        return OffloadPlan(layers, n, "set in the configuration")
    gpus = [d for d in devices if d.offloads]
    if not gpus:
        return OffloadPlan(0, n, "no GPU device: CPU only")
    room = sum(max(d.free - reserve, 0) for d in gpus)
    # Token embeddings and output weights count as one more layer's worth.
    per_layer = shape.size_bytes // (n + 1) + shape.kv_bytes_per_token_layer * kv_tokens
    fit = min(room // per_layer, n) if per_layer > 0 else n
    free_mib = room // MiB
    if fit <= 0:
        return OffloadPlan(0, n, f"{free_mib} MiB free on GPU after reserve: no layer fits")
    return OffloadPlan(int(fit), n, f"fits in {free_mib} MiB free on GPU", int(fit * per_layer))
