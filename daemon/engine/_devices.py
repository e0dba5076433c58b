"""What llama.cpp was built with, and which devices it sees.

:func:`probe_devices` asks ggml's device registry (the same one llama.cpp places layers with)
through ``ctypes``; a build without GPU backends reports only the CPU. Planning what to do with
the devices is pure and lives outside this package (``daemon._offload``), so that
``personad doctor`` plans without loading llama.cpp: it runs these two in a probe process
(``daemon.engine.probe``).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import llama_cpp

from .._offload import DEVICE_KINDS, Device

__all__ = ["build_info", "probe_devices"]


def build_info() -> dict[str, Any]:
    """What llama.cpp was built with (version, GPU offload support)."""
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
    }


def _bind(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    func = getattr(lib, name)
    func.restype = restype
    func.argtypes = argtypes
    return func


def probe_devices(library: Path | None = None) -> list[Device]:
    """The devices of llama.cpp's ggml registry, with free and total memory.

    ``library`` is ggml's shared library; by default the one llama-cpp-python loaded.
    """
    if library is None:
        from llama_cpp import _ggml  # loaded with libllama, which registers the backends

        lib: ctypes.CDLL = _ggml.libggml
    else:
        lib = ctypes.CDLL(str(library))
    ptr = ctypes.c_void_p
    count = _bind(lib, "ggml_backend_dev_count", ctypes.c_size_t, [])
    get = _bind(lib, "ggml_backend_dev_get", ptr, [ctypes.c_size_t])
    name = _bind(lib, "ggml_backend_dev_name", ctypes.c_char_p, [ptr])
    desc = _bind(lib, "ggml_backend_dev_description", ctypes.c_char_p, [ptr])
    kind = _bind(lib, "ggml_backend_dev_type", ctypes.c_int, [ptr])
    memory = _bind(
        lib,
        "ggml_backend_dev_memory",
        None,
        [ptr, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
    )
    found = []
    for i in range(int(count())):
        dev = get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        k = int(kind(dev))
        found.append(
            Device(
                name=(name(dev) or b"?").decode("utf-8", "replace"),
                description=(desc(dev) or b"").decode("utf-8", "replace"),
                kind=DEVICE_KINDS[k] if 0 <= k < len(DEVICE_KINDS) else "accel",
                free=int(free.value),
                total=int(total.value),
            )
        )
    return found
