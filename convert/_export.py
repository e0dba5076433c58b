"""Export a PEFT LoRA as a GGUF adapter that llama.cpp applies at load time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import atomic_path

from ._gguf import BaseGGUF
from ._merge import find_target
from ._peft import PeftAdapter
from .errors import DoraNotExportable, InputError, ShapeMismatch

__all__ = ["ExportResult", "export_adapter"]


@dataclass(frozen=True)
class ExportResult:
    """What an adapter export wrote."""

    output: Path
    modules: int
    bytes_written: int
    seconds: float


def export_adapter(
    base_path: Path, adapter_dir: Path, out: Path, *, allow_pickle: bool = False
) -> ExportResult:
    """Write ``out`` as a GGUF LoRA for ``base_path`` (which may itself be quantized).

    llama.cpp scales each update by ``alpha / rank`` from one global alpha, or by the user
    scale alone when alpha is 0. We store alpha 0 and fold each module's own scale (rsLoRA,
    alpha_pattern, rank_pattern) into B, so every module gets exactly PEFT's scaling.
    """
    import gguf

    started = time.monotonic()
    base = BaseGGUF(base_path)
    try:
        adapter = PeftAdapter.load(adapter_dir, allow_pickle=allow_pickle)
        if adapter.use_dora or any("m" in m.keys for m in adapter.modules):
            raise DoraNotExportable(adapter_dir)
        if adapter.fan_in_fan_out:
            raise InputError(adapter_dir, "fan_in_fan_out adapters cannot be exported; use merge")
        replacing = [s.weight_name for s in adapter.saved if s.replaces]
        if replacing:
            raise InputError(
                adapter_dir,
                f"modules_to_save ({', '.join(replacing)}) replace whole tensors, which a "
                "runtime adapter cannot do",
                "merge it instead: personad convert merge",
            )
        info = base.arch_info()
        writer = gguf.GGUFWriter(None, base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
        total = 0
        for module in adapter.modules:
            name = find_target(base, info, module.weight_name, module.name)
            update, have = adapter.update_shape(module), base.shape(name)
            if update != have:
                raise ShapeMismatch(name, update, have)
            a, b = adapter.factors(module)
            b = b * np.float32(module.scaling)
            if module.kind == "embedding":
                # llama.cpp gathers rows of A by token id: it wants A as (vocab, r).
                a = np.ascontiguousarray(a.T)
            else:
                permute = info.row_transform(name)
                if permute is not None:
                    b = permute(b)
            # F16 halves the adapter's memory; per persona on a shared base that is what counts.
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float16))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float16))
            total += a.nbytes + b.nbytes
        with atomic_path(out) as tmp:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
    finally:
        base.close()
    return ExportResult(out, len(adapter.modules), total, time.monotonic() - started)
