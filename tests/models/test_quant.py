"""The quantization names are one table of GGUF file types, matching llama.cpp's own."""

from __future__ import annotations

import gguf
import llama_cpp

from models import QUANT_TYPES


def test_numbers_are_the_gguf_file_types() -> None:
    """Each name maps to the gguf package's LlamaFileType of the same name."""
    for name, number in QUANT_TYPES.items():
        prefix = "ALL_" if name == "F32" else "MOSTLY_"
        assert gguf.LlamaFileType[prefix + name] == number


def test_numbers_are_llama_cpps_ftypes() -> None:
    """Each number is the llama_ftype constant llama.cpp's quantizer expects."""
    for name, number in QUANT_TYPES.items():
        prefix = "LLAMA_FTYPE_ALL_" if name == "F32" else "LLAMA_FTYPE_MOSTLY_"
        assert getattr(llama_cpp, prefix + name) == number
