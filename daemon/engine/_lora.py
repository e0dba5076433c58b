"""LoRA adapters a request can switch to, on llama-cpp-python's context or the batch context."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from models import ModelManifest

from ..errors import ModelUnavailable

__all__ = ["load_adapters", "set_adapters"]


def load_adapters(llm: llama_cpp.Llama, manifest: ModelManifest) -> dict[str, Any]:
    """The handles of the manifest's switchable adapters, by name (they share the base weights)."""
    handles: dict[str, Any] = {}
    for name, path in manifest.adapters.items():
        handle = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
        if handle is None:
            raise ModelUnavailable(manifest.name, f"adapter {name!r} ({path}) failed to load")
        handles[name] = handle
    return handles


def set_adapters(ctx: Any, handle: Any, scale: float) -> None:
    """Make ``handle`` at ``scale`` the only adapter of ``ctx``; ``None`` removes them all."""
    if handle is None:
        llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        return
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
    scales = (ctypes.c_float * 1)(scale)
    llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
