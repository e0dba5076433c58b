"""Everything that touches llama.cpp: loading and running models, and quantizing them.

This package is the only place in personad that imports ``llama_cpp``.
"""

from ._llama import DEFAULT_CONTEXT, KVSettings, LlamaModel, build_info, token_logits
from ._quantize import quantize

__all__ = [
    "DEFAULT_CONTEXT",
    "KVSettings",
    "LlamaModel",
    "build_info",
    "quantize",
    "token_logits",
]
