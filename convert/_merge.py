"""Merge a PEFT LoRA/DoRA adapter into an F16/BF16/F32 GGUF, chunk by chunk, then quantize."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models import atomic_path, scratch_path

from ._arch import ArchInfo
from ._gguf import FLOAT_TYPES, BaseGGUF, StreamWriter, copy_metadata
from ._peft import LoraModule, PeftAdapter, SavedTensor
from ._quantize import check_quant, llama_quantize
from .errors import ArchitectureMismatch, InputError, QuantizedBase, ShapeMismatch, VocabResized

__all__ = [
    "MergePlan",
    "MergeResult",
    "Progress",
    "find_target",
    "merge",
    "plan_merge",
]

# Rows are processed in blocks of about this many float32 bytes.
_CHUNK_BYTES = 32 << 20

Progress = Callable[[str, int], None]
F32 = npt.NDArray[np.float32]


@dataclass
class MergePlan:
    """Which base tensors change, and how; checked completely before anything is written."""

    info: ArchInfo
    updates: dict[str, LoraModule] = field(default_factory=dict)
    replacements: dict[str, SavedTensor] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeResult:
    """What a merge did."""

    output: Path
    tensors: int
    merged: int
    replaced: int
    bytes_written: int
    seconds: float
    quant: str | None


def find_target(base: BaseGGUF, info: ArchInfo, hf_weight: str, module: str) -> str:
    name = info.gguf_name(hf_weight)
    if name is None or name not in base.tensors:
        detail = ""
        if module.endswith("lm_head") and "output.weight" not in base.tensors:
            detail = "the base ties its output layer to the token embeddings"
        raise ArchitectureMismatch(
            module, name or f"(no GGUF name for {hf_weight})", base.path, detail
        )
    return name


def _require_float(base: BaseGGUF, name: str) -> None:
    kind = base.type_name(name)
    if kind not in FLOAT_TYPES:
        raise QuantizedBase(base.path, name, kind)


def plan_merge(base: BaseGGUF, adapter: PeftAdapter) -> MergePlan:
    """Map every adapter tensor to a base tensor and check types and shapes, in file order."""
    plan = MergePlan(info=base.arch_info())
    for module in adapter.modules:
        name = find_target(base, plan.info, module.weight_name, module.name)
        _require_float(base, name)
        update, have = adapter.update_shape(module), base.shape(name)
        if update != have:
            raise ShapeMismatch(name, update, have)
        if module.keys.get("m") and module.kind == "embedding":
            raise InputError(adapter.path, f"DoRA on the embedding {module.name} is not supported")
        plan.updates[name] = module
    for saved in adapter.saved:
        name = find_target(base, plan.info, saved.weight_name, saved.weight_name)
        want, have = adapter.weights.shape(saved.key), base.shape(name)
        if want != have:
            if len(want) == 2 and len(have) == 2 and want[1:] == have[1:]:
                raise VocabResized(saved.weight_name, want[0], have[0])
            raise ShapeMismatch(name, want, have)
        if saved.replaces:
            _require_float(base, name)
            plan.replacements[name] = saved
    return plan


def _blocks(rows: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for lo in range(0, rows, step):
        yield lo, min(rows, lo + step)


class _Update:
    """A module's update prepared for row blocks (factors permuted once, up front)."""

    def __init__(self, adapter: PeftAdapter, module: LoraModule, info: ArchInfo, name: str):
        a, b = adapter.factors(module)
        self.scale = np.float32(module.scaling)
        self.transposed = module.kind == "embedding" or adapter.fan_in_fan_out
        permute = info.row_transform(name)
        magnitude = adapter.magnitude(module)
        if permute is not None and not self.transposed:
            # P(BA) = (PB)A: permuting B's rows permutes the update's rows.
            b = permute(b)
            if magnitude is not None:
                magnitude = permute(magnitude)
        self.a, self.b, self.magnitude = a, b, magnitude

    def rows(self, lo: int, hi: int) -> F32:
        if self.transposed:
            out: F32 = self.a[:, lo:hi].T @ self.b.T
        else:
            out = self.b[lo:hi] @ self.a
        out *= self.scale
        return out

    def apply(self, weight: F32, lo: int, hi: int) -> F32:
        weight += self.rows(lo, hi)
        if self.magnitude is not None:
            # DoRA: rescale each output row to the learned magnitude after adding the update.
            norm = np.linalg.norm(weight, axis=1)
            weight *= (self.magnitude[lo:hi] / norm)[:, None]
        return weight


def _chunks(
    base: BaseGGUF,
    name: str,
    update: _Update | None,
    replacement: F32 | None,
    progress: Progress | None,
) -> Iterator[bytes]:
    rows = base.rows(name)
    row_bytes = int(base.tensors[name].n_bytes) // rows
    shape = base.shape(name)
    for lo, hi in _blocks(rows, max(row_bytes, 4 * shape[-1])):
        if update is not None:
            data = base.encode(name, update.apply(base.float32_rows(name, lo, hi), lo, hi))
        elif replacement is not None:
            data = base.encode(name, np.ascontiguousarray(replacement[lo:hi]))
        else:
            data = base.read_bytes(name, lo, hi)
        if progress is not None:
            progress(name, len(data))
        yield data


def write_merged(
    base: BaseGGUF,
    adapter: PeftAdapter,
    plan: MergePlan,
    out: Path,
    progress: Progress | None = None,
) -> int:
    """Write the merged GGUF to ``out``; return the bytes of tensor data written."""
    stream = StreamWriter(out, base.arch)
    copy_metadata(base.reader, stream.writer)
    for name in base.tensors:
        base.add_tensor_info(stream.writer, name)
    stream.begin()
    total = 0
    try:
        for name, tensor in base.tensors.items():
            module = plan.updates.get(name)
            update = _Update(adapter, module, plan.info, name) if module else None
            saved = plan.replacements.get(name)
            replacement = adapter.weights.float32(saved.key) if saved else None
            nbytes = int(tensor.n_bytes)
            stream.write_tensor(_chunks(base, name, update, replacement, progress), nbytes)
            total += nbytes
    finally:
        stream.close()
    return total


def merge(
    base_path: Path,
    adapter_dir: Path,
    out: Path,
    *,
    quant: str | None = None,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    threads: int | None = None,
) -> MergeResult:
    """Merge ``adapter_dir`` into ``base_path`` and write ``out`` (optionally quantized).

    Nothing is written until every tensor has been checked, and ``out`` only appears once it
    is complete: an error or Ctrl-C leaves no file behind.
    """
    started = time.monotonic()
    if quant is not None:
        check_quant(quant, "--quant")
    base = BaseGGUF(base_path)
    try:
        adapter = PeftAdapter.load(adapter_dir, allow_pickle=allow_pickle)
        plan = plan_merge(base, adapter)
        with atomic_path(out) as final:
            if quant is None:
                written = write_merged(base, adapter, plan, final, progress)
            else:
                with scratch_path(out) as scratch:
                    written = write_merged(base, adapter, plan, scratch, progress)
                    llama_quantize(scratch, final, quant, threads=threads)
    finally:
        base.close()
    return MergeResult(
        output=out,
        tensors=len(base.tensors),
        merged=len(plan.updates),
        replaced=len(plan.replacements),
        bytes_written=written,
        seconds=time.monotonic() - started,
        quant=quant,
    )
