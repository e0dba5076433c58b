"""The quantization types personad offers, and the GGUF file type each one is.

The numbers are GGUF's ``general.file_type`` values (``llama_ftype`` in llama.cpp,
``gguf.LlamaFileType`` in the gguf package): a property of the file format, so they live
here, beside the GGUF reader, for convert (which checks ``--quant``) and the engine (which
passes the number to ``llama_model_quantize``) alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["QUANT_TYPES"]

# Most used first: the order is the one help texts list them in.
QUANT_TYPES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "Q4_K_M": 15,  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        "Q5_K_M": 17,  # LLAMA_FTYPE_MOSTLY_Q5_K_M
        "Q6_K": 18,  # LLAMA_FTYPE_MOSTLY_Q6_K
        "Q8_0": 7,  # LLAMA_FTYPE_MOSTLY_Q8_0
        "F16": 1,  # LLAMA_FTYPE_MOSTLY_F16
        "BF16": 32,  # LLAMA_FTYPE_MOSTLY_BF16
        "F32": 0,  # LLAMA_FTYPE_ALL_F32
    }
)
