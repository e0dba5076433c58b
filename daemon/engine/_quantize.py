"""Quantization through llama.cpp's own ``llama_model_quantize``."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp
from llama_cpp._logger import set_verbose

from ..errors import QuantizeError

__all__ = ["QUANT_TYPES", "quantize"]

# Output types offered by `personad convert` and the llama_ftype each maps to.
QUANT_TYPES: dict[str, int] = {
    "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}


def quantize(src: Path, dst: Path, qtype: str, *, threads: int | None = None) -> None:
    """Write ``src`` quantized to ``qtype`` at ``dst`` (the caller handles temp files)."""
    # llama.cpp reports every tensor through its log callback; keep that out of our output.
    set_verbose(False)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = threads or os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if code != 0:
        raise QuantizeError(src, qtype, int(code))
