"""``convert quantize``: checks, temp file, then llama.cpp's quantizer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models import QUANT_TYPES, atomic_path

from ._gguf import BaseGGUF
from .errors import BadOption

__all__ = ["QuantizeResult", "check_quant", "quantize_file"]


def check_quant(qtype: str, option: str = "--type") -> None:
    """Refuse a type that is not in ``models.QUANT_TYPES``, listing the ones that are."""
    if qtype not in QUANT_TYPES:
        raise BadOption(
            option, f"unknown quantization {qtype!r}", f"choose one of {', '.join(QUANT_TYPES)}"
        )


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
    from daemon.engine import quantize

    with atomic_path(out) as tmp:
        quantize(src, tmp, qtype, threads=threads)
    return QuantizeResult(out, qtype, out.stat().st_size, time.monotonic() - started)
