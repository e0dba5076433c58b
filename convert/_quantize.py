"""``convert quantize``: checks, temp file, then llama.cpp's quantizer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models import QUANT_TYPES, atomic_path

from ._gguf import BaseGGUF
from .errors import BadOption

__all__ = ["QuantizeResult", "check_quant", "llama_quantize", "quantize_file"]


def check_quant(qtype: str, option: str = "--type") -> None:
    """Refuse a type that is not in ``models.QUANT_TYPES``, listing the ones that are."""
    if qtype not in QUANT_TYPES:
        raise BadOption(
            option, f"unknown quantization {qtype!r}", f"choose one of {', '.join(QUANT_TYPES)}"
        )


def llama_quantize(src: Path, dst: Path, qtype: str, *, threads: int | None = None) -> None:
    """Run llama.cpp's quantizer (the caller handles temp files).

    The one place convert reaches into the daemon: daemon.engine is the only package allowed
    to load llama.cpp, and it is loaded only when a quantization actually runs.
    """
    check_quant(qtype)
    from daemon.engine import quantize

    quantize(src, dst, qtype, threads=threads)


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
    check_quant(qtype)
    BaseGGUF(src).close()  # a clear error for missing, truncated, split or non-GGUF input
    with atomic_path(out) as tmp:
        llama_quantize(src, tmp, qtype, threads=threads)
    return QuantizeResult(out, qtype, out.stat().st_size, time.monotonic() - started)
