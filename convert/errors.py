"""Errors raised by convert/. Each names the problem and the way out.

ConvertError
├── InputError(ValueError)                 an input is missing, truncated or malformed
│   ├── PickleRefused                      adapter weights are a pickle (.bin)
│   ├── SplitGGUF                          the base is split over several files
│   ├── ExportFormatError                  a chat export of no known format, or malformed
│   │   └── MixedTimestamps                some timestamps have a UTC offset, some not
│   └── BadOption                          a command-line option that cannot be used
├── IncompatibleBase(ValueError)           the base cannot take this adapter
│   ├── QuantizedBase                      merge needs F16/BF16/F32 weights
│   ├── ArchitectureMismatch               the adapter targets tensors the base lacks
│   ├── ShapeMismatch                      first tensor whose shapes differ
│   ├── VocabResized                       modules_to_save changes the vocabulary size
│   └── UnsupportedArchitecture            no known tensor transforms for this arch
├── DoraNotExportable(ValueError)          DoRA cannot be a runtime adapter
├── MissingExtra(ImportError)              an optional extra is not installed
└── ConverterFailed(RuntimeError)          llama.cpp's converter script failed
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ArchitectureMismatch",
    "BadOption",
    "ConvertError",
    "ConverterFailed",
    "DoraNotExportable",
    "ExportFormatError",
    "IncompatibleBase",
    "InputError",
    "MissingExtra",
    "MixedTimestamps",
    "PickleRefused",
    "QuantizedBase",
    "ShapeMismatch",
    "SplitGGUF",
    "UnsupportedArchitecture",
    "VocabResized",
]


class ConvertError(Exception):
    """Base class of every convert/ error."""


class InputError(ConvertError, ValueError):
    """An input file or directory is missing, truncated or malformed."""

    def __init__(self, path: Path | str, problem: str, fix: str = "") -> None:
        self.path = path  # a file, or the option that names one
        self.problem = problem
        message = f"{path}: {problem}" + (f"; {fix}" if fix else "")
        # One line, always: paths and quoted export content may hold line breaks.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class PickleRefused(InputError):
    """Adapter weights stored as a pickle, which executes code when loaded."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "adapter weights are a pickle (.bin), and loading a pickle runs arbitrary code",
            "re-save the adapter with safetensors, or pass --allow-pickle if you trust it",
        )


class ExportFormatError(InputError):
    """A chat export that is not a known format, or is malformed at some point."""

    def __init__(self, path: Path, where: str, expected: str) -> None:
        self.where = where
        super().__init__(path, f"unexpected content at {where}", f"expected {expected}")


class MixedTimestamps(ExportFormatError):
    """An export whose timestamps are partly with, partly without a UTC offset."""

    def __init__(self, path: Path, where: str, *, has_offset: bool) -> None:
        self.where = where
        self.has_offset = has_offset
        this, earlier = ("has a", "do not") if has_offset else ("has no", "do")
        InputError.__init__(
            self,
            path,
            f"the timestamp of {where} {this} UTC offset but the earlier ones {earlier}, "
            "so their order is unknown",
            "export the chat again so every timestamp carries its offset",
        )


class BadOption(InputError):
    """An option value that cannot be used (an unknown time zone, an unusable --out)."""

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.option = option
        super().__init__(option, problem, fix)


class SplitGGUF(InputError):
    """A base model split into several GGUF files."""

    def __init__(self, path: Path, count: int) -> None:
        super().__init__(
            path,
            f"the model is split into {count} files",
            "merge the parts first (llama-gguf-split --merge) and pass the single file",
        )


class IncompatibleBase(ConvertError, ValueError):
    """The base model cannot take this adapter."""


class QuantizedBase(IncompatibleBase):
    """Merging needs unquantized weights."""

    def __init__(self, path: Path, tensor: str, qtype: str) -> None:
        self.path = path
        self.tensor = tensor
        self.qtype = qtype
        super().__init__(
            f"{path}: tensor {tensor} is {qtype}; merge needs an F16, BF16 or F32 base "
            "(quantize after merging with --quant). To use this quantized base as it is, "
            "export a runtime adapter instead: personad convert adapter"
        )


class ArchitectureMismatch(IncompatibleBase):
    """The adapter targets a module the base does not have."""

    def __init__(self, module: str, expected: str, base: Path, detail: str = "") -> None:
        self.module = module
        self.expected = expected
        super().__init__(
            f"the adapter targets {module}, but {base} has no tensor {expected}"
            + (f" ({detail})" if detail else "")
            + "; the adapter was trained on a different base model"
        )


class ShapeMismatch(IncompatibleBase):
    """Adapter and base disagree on a tensor's shape."""

    def __init__(
        self, tensor: str, adapter_shape: Sequence[int], base_shape: Sequence[int]
    ) -> None:
        self.tensor = tensor
        self.adapter_shape = tuple(adapter_shape)
        self.base_shape = tuple(base_shape)
        super().__init__(
            f"shape mismatch at {tensor}: the adapter's update is {self.adapter_shape} but "
            f"the base tensor is {self.base_shape}; the adapter was trained on a different "
            "base model (or a different size of it)"
        )


class VocabResized(IncompatibleBase):
    """A saved embedding or output layer with a different number of rows."""

    def __init__(self, module: str, adapter_rows: int, base_rows: int) -> None:
        self.module = module
        super().__init__(
            f"{module} in the adapter has {adapter_rows} rows but the base vocabulary has "
            f"{base_rows}: training added tokens. Merge in Hugging Face space "
            "(merge_and_unload, save with the new tokenizer) and convert that with "
            "personad convert hf"
        )


class UnsupportedArchitecture(IncompatibleBase):
    """An architecture whose converter transforms are not known here."""

    def __init__(self, arch: str, supported: Sequence[str]) -> None:
        self.arch = arch
        super().__init__(
            f"architecture {arch!r} is not supported for merging (supported: "
            f"{', '.join(supported)}); merge in Hugging Face space and use personad convert hf"
        )


class DoraNotExportable(ConvertError, ValueError):
    """DoRA's magnitude rescale cannot be expressed as a runtime LoRA."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is a DoRA adapter: its per-row magnitude rescale cannot be applied by "
            "llama.cpp at run time; merge it into the base instead: personad convert merge"
        )


class MissingExtra(ConvertError, ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"this needs {module}, from the optional extra {extra!r}: "
            f"pip install 'personad[{extra}]'"
        )


class ConverterFailed(ConvertError, RuntimeError):
    """llama.cpp's conversion script exited with an error."""

    def __init__(self, code: int, tail: str) -> None:
        self.code = code
        super().__init__(f"llama.cpp's convert_hf_to_gguf.py failed (exit {code}):\n{tail}")
