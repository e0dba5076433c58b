"""Quantization through llama.cpp's own ``llama_model_quantize``."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp
from llama_cpp._logger import set_verbose

from models import QUANT_TYPES

from ..errors import QuantizeError

__all__ = ["quantize"]


def quantize(src: Path, dst: Path, qtype: str, *, threads: int | None = None) -> None:
    """Write ``src`` quantized to ``qtype`` at ``dst`` (the caller handles temp files)."""
    # llama.cpp reports every tensor through its log callback; keep that out of our output.
    set_verbose(False)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    ftype = QUANT_TYPES.get(qtype)
    if ftype is None:
        raise ValueError(f"unknown quantization {qtype!r}; choose one of {', '.join(QUANT_TYPES)}")
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if code != 0:
        raise QuantizeError(src, qtype, int(code))
