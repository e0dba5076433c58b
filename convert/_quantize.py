"""``convert quantize``: checks, temp file, then llama.cpp's quantizer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models import atomic_path

from ._gguf import BaseGGUF
from ._merge import QUANT_CHOICES

__all__ = ["QuantizeResult", "quantize_file"]


@dataclass(frozen=True)
class QuantizeResult:
    """What a quantization wrote."""

    output: Path
    qtype: str
    size_bytes: int
    seconds: float


def quantize_file(
    src: Path, out: Path, qtype: str, *, threads: int | None = None
) -> QuantizeResult:
    """Quantize ``src`` to ``qtype`` at ``out``; the file appears only when complete."""
    started = time.monotonic()
    if qtype not in QUANT_CHOICES:
        raise ValueError(f"unknown type {qtype!r}; choose one of {', '.join(QUANT_CHOICES)}")
    BaseGGUF(src).close()  # a clear error for missing, truncated, split or non-GGUF input
    from daemon.engine import quantize

    with atomic_path(out) as tmp:
        quantize(src, tmp, qtype, threads=threads)
    return QuantizeResult(out, qtype, out.stat().st_size, time.monotonic() - started)
