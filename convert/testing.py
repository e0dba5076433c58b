"""Synthetic GGUF bases and PEFT adapters of any size, for tests and benchmarks.

The base is a llama-architecture GGUF with random F16 (or F32/BF16) weights; the adapter is a
PEFT directory whose shapes match it. Both are written tensor by tensor, so a multi-gigabyte
base costs little memory to make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._gguf import StreamWriter
from ._safetensors import f32_to_bf16

__all__ = ["SyntheticSpec", "write_synthetic_adapter", "write_synthetic_base"]


@dataclass(frozen=True)
class SyntheticSpec:
    """Dimensions of a synthetic llama model."""

    hidden: int = 256
    ff: int = 512
    layers: int = 2
    vocab: int = 512
    heads: int = 4
    kv_heads: int = 2
    dtype: str = "F16"

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(GGUF name, numpy shape) of every tensor, in file order."""
        kv = self.hidden // self.heads * self.kv_heads
        out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (self.vocab, self.hidden))]
        for i in range(self.layers):
            out += [
                (f"blk.{i}.attn_norm.weight", (self.hidden,)),
                (f"blk.{i}.attn_q.weight", (self.hidden, self.hidden)),
                (f"blk.{i}.attn_k.weight", (kv, self.hidden)),
                (f"blk.{i}.attn_v.weight", (kv, self.hidden)),
                (f"blk.{i}.attn_output.weight", (self.hidden, self.hidden)),
                (f"blk.{i}.ffn_norm.weight", (self.hidden,)),
                (f"blk.{i}.ffn_gate.weight", (self.ff, self.hidden)),
                (f"blk.{i}.ffn_up.weight", (self.ff, self.hidden)),
                (f"blk.{i}.ffn_down.weight", (self.hidden, self.ff)),
            ]
        out += [
            ("output_norm.weight", (self.hidden,)),
            ("output.weight", (self.vocab, self.hidden)),
        ]
        return out


def _encode(values: npt.NDArray[Any], dtype: str) -> bytes:
    if dtype == "BF16":
        return f32_to_bf16(values.astype(np.float32)).tobytes()
    return values.astype(np.float16 if dtype == "F16" else np.float32).tobytes()


def write_synthetic_base(
    path: Path,
    spec: SyntheticSpec,
    *,
    seed: int = 0,
    arch: str = "llama",
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> Path:
    """Write a random GGUF with ``spec``'s shapes; norms are F32 as converters write.

    ``extra`` adds metadata keys as ``{name: (value, GGUFValueType)}``.
    """
    import gguf

    rng = np.random.default_rng(seed)
    stream = StreamWriter(path, arch)
    w = stream.writer
    w.add_name("synthetic")
    w.add_block_count(spec.layers)
    w.add_context_length(2048)
    w.add_embedding_length(spec.hidden)
    w.add_feed_forward_length(spec.ff)
    w.add_head_count(spec.heads)
    w.add_head_count_kv(spec.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({"F32": 0, "F16": 1, "BF16": 32}[spec.dtype])
    for key, (value, vtype) in (extra or {}).items():
        w.add_key_value(key, value, vtype)
    sizes = []
    for name, shape in spec.tensors():
        kind = "F32" if len(shape) == 1 else spec.dtype
        qtype = gguf.GGMLQuantizationType[kind]
        itemsize = 4 if kind == "F32" else 2
        nbytes = int(np.prod(shape)) * itemsize
        if kind == "BF16":
            w.add_tensor_info(
                name, (*shape[:-1], shape[-1] * 2), np.dtype(np.uint8), nbytes, raw_dtype=qtype
            )
        else:
            dtype = np.float32 if kind == "F32" else np.float16
            w.add_tensor_info(name, shape, np.dtype(dtype), nbytes, raw_dtype=qtype)
        sizes.append((name, shape, kind, nbytes))
    stream.begin()
    for _name, shape, kind, nbytes in sizes:
        rows = shape[0] if len(shape) > 1 else 1
        cols = shape[-1]
        step = max(1, (16 << 20) // (cols * 4))

        def chunks(
            rows: int = rows,
            cols: int = cols,
            step: int = step,
            kind: str = kind,
            vector: bool = len(shape) == 1,
        ) -> Iterator[bytes]:
            for lo in range(0, rows, step):
                n = min(step, rows - lo)
                values = (
                    np.ones((cols,))
                    if vector
                    else rng.standard_normal((n, cols), dtype=np.float32) * 0.02
                )
                yield _encode(values, kind)

        stream.write_tensor(chunks(), nbytes)
    stream.close()
    return path


def write_synthetic_adapter(
    directory: Path,
    spec: SyntheticSpec,
    *,
    r: int = 16,
    alpha: int = 32,
    seed: int = 1,
    scale: float = 0.01,
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ),
) -> Path:
    """Write a random PEFT LoRA directory matching ``spec`` (safetensors, float32)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    kv = spec.hidden // spec.heads * spec.kv_heads
    dims = {
        "q_proj": ("self_attn", spec.hidden, spec.hidden),
        "k_proj": ("self_attn", spec.hidden, kv),
        "v_proj": ("self_attn", spec.hidden, kv),
        "o_proj": ("self_attn", spec.hidden, spec.hidden),
        "gate_proj": ("mlp", spec.hidden, spec.ff),
        "up_proj": ("mlp", spec.hidden, spec.ff),
        "down_proj": ("mlp", spec.ff, spec.hidden),
    }
    tensors = {}
    for i in range(spec.layers):
        for t in targets:
            block, fan_in, fan_out = dims[t]
            prefix = f"base_model.model.model.layers.{i}.{block}.{t}"
            tensors[f"{prefix}.lora_A.weight"] = (
                rng.standard_normal((r, fan_in), dtype=np.float32) * scale
            )
            tensors[f"{prefix}.lora_B.weight"] = (
                rng.standard_normal((fan_out, r), dtype=np.float32) * scale
            )
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": r,
                "lora_alpha": alpha,
                "target_modules": list(targets),
                "use_rslora": False,
                "use_dora": False,
                "fan_in_fan_out": False,
            }
        )
    )
    return directory
