"""Everything that touches llama.cpp: loading and running models, and quantizing them.

This package is the only place in personad that imports ``llama_cpp``.
"""

from ._devices import (
    Device,
    DeviceProbe,
    ModelShape,
    OffloadPlan,
    model_shape,
    plan_offload,
    probe_devices,
)
from ._llama import DEFAULT_CONTEXT, EngineOptions, KVSettings, LlamaModel, build_info, token_logits
from ._quantize import quantize

__all__ = [
    "DEFAULT_CONTEXT",
    "Device",
    "DeviceProbe",
    "EngineOptions",
    "KVSettings",
    "LlamaModel",
    "ModelShape",
    "OffloadPlan",
    "build_info",
    "model_shape",
    "plan_offload",
    "probe_devices",
    "quantize",
    "token_logits",
]
