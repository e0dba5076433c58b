"""Everything that touches llama.cpp: loading and running models, and quantizing them.

This package is the only place in personad that imports ``llama_cpp``. The pure parts of
running a model (its options and offload plan, ``daemon._offload``) live outside it, so that
processes that must not load llama.cpp use them too; they are re-exported here.
"""

from .._offload import (
    Device,
    DeviceProbe,
    EngineOptions,
    ModelShape,
    OffloadPlan,
    model_shape,
    plan_offload,
)
from ._devices import build_info, probe_devices
from ._llama import DEFAULT_CONTEXT, KVSettings, LlamaModel, token_logits
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
