"""Which devices llama.cpp sees, and how many layers of a model to offload to them.

:func:`plan_offload` is pure: it takes the devices as data, so it is tested with any GPU one
can describe. :func:`probe_devices` asks ggml's device registry (the same one llama.cpp
places layers with) through ``ctypes``; a build without GPU backends reports only the CPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Device",
    "DeviceProbe",
    "ModelShape",
    "OffloadPlan",
    "model_shape",
    "plan_offload",
    "probe_devices",
]

DeviceKind = Literal["cpu", "gpu", "igpu", "accel", "meta"]
_KINDS: tuple[DeviceKind, ...] = ("cpu", "gpu", "igpu", "accel", "meta")
MiB = 1 << 20
# Left free on each GPU for llama.cpp's compute buffers and the driver (llama.cpp's own
# fitting keeps about 1 GiB; a small model's compute buffer is tens of MB).
GPU_RESERVE = 512 * MiB


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


def _bind(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    func = getattr(lib, name)
    func.restype = restype
    func.argtypes = argtypes
    return func


def probe_devices(library: Path | None = None) -> list[Device]:
    """The devices of llama.cpp's ggml registry, with free and total memory.

    ``library`` is ggml's shared library; by default the one llama-cpp-python loaded.
    """
    if library is None:
        import llama_cpp  # noqa: F401  (loads libllama, which registers the backends)
        from llama_cpp import _ggml

        lib: ctypes.CDLL = _ggml.libggml
    else:
        lib = ctypes.CDLL(str(library))
    ptr = ctypes.c_void_p
    count = _bind(lib, "ggml_backend_dev_count", ctypes.c_size_t, [])
    get = _bind(lib, "ggml_backend_dev_get", ptr, [ctypes.c_size_t])
    name = _bind(lib, "ggml_backend_dev_name", ctypes.c_char_p, [ptr])
    desc = _bind(lib, "ggml_backend_dev_description", ctypes.c_char_p, [ptr])
    kind = _bind(lib, "ggml_backend_dev_type", ctypes.c_int, [ptr])
    memory = _bind(
        lib,
        "ggml_backend_dev_memory",
        None,
        [ptr, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
    )
    found = []
    for i in range(int(count())):
        dev = get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        k = int(kind(dev))
        found.append(
            Device(
                name=(name(dev) or b"?").decode("utf-8", "replace"),
                description=(desc(dev) or b"").decode("utf-8", "replace"),
                kind=_KINDS[k] if 0 <= k < len(_KINDS) else "accel",
                free=int(free.value),
                total=int(total.value),
            )
        )
    return found
