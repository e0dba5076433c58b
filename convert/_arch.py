"""What llama.cpp's converter did to each architecture's tensors, so an update can follow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import UnsupportedArchitecture

__all__ = ["SUPPORTED", "ArchInfo", "permute_rows", "unpermute_rows"]

# Architecture -> whether convert_hf_to_gguf.py permuted the Q and K rows (llama's
# interleaved RoPE layout). Others are copied unchanged for the projections LoRA targets.
SUPPORTED: dict[str, bool] = {
    "llama": True,
    "qwen2": False,
    "qwen3": False,
    "gemma": False,
    "gemma2": False,
    "gemma3": False,
}

F32Array = npt.NDArray[np.float32]


def permute_rows(x: F32Array, n_head: int) -> F32Array:
    """The converter's Q/K row permutation, applied to rows of a matrix or a vector."""
    rows = x.shape[0]
    out = x.reshape(n_head, 2, rows // n_head // 2, *x.shape[1:]).swapaxes(1, 2)
    return np.ascontiguousarray(out.reshape(x.shape))


def unpermute_rows(x: F32Array, n_head: int) -> F32Array:
    """Inverse of :func:`permute_rows` (for reading a GGUF back in Hugging Face layout)."""
    rows = x.shape[0]
    out = x.reshape(n_head, rows // n_head // 2, 2, *x.shape[1:]).swapaxes(1, 2)
    return np.ascontiguousarray(out.reshape(x.shape))


@dataclass(frozen=True)
class ArchInfo:
    """Name mapping and row transforms for one base model."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED:
            raise UnsupportedArchitecture(self.arch, sorted(SUPPORTED))

    def gguf_name(self, hf_weight: str) -> str | None:
        """The GGUF tensor name of a Hugging Face parameter (``None`` if it has none)."""
        import gguf

        archs = {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}
        mapping = gguf.get_tensor_name_map(archs[self.arch], self.n_blocks)
        name: str | None = mapping.get_name(hf_weight, try_suffixes=(".weight", ".bias"))
        return name

    def row_transform(self, gguf_name: str) -> Callable[[F32Array], F32Array] | None:
        """The permutation the converter applied to this tensor's rows, if any."""
        if not SUPPORTED[self.arch]:
            return None
        if gguf_name.endswith(".attn_q.weight"):
            return lambda x: permute_rows(x, self.n_head)
        if gguf_name.endswith(".attn_k.weight"):
            return lambda x: permute_rows(x, self.n_head_kv)
        return None
