"""A PEFT LoRA adapter directory (adapter_config.json + weights), read lazily."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ._safetensors import SafetensorsFile
from .errors import InputError, MissingExtra, PickleRefused

__all__ = ["LoraModule", "PeftAdapter", "SavedTensor"]

_PREFIX = "base_model.model."
_SUFFIXES: dict[str, tuple[str, str]] = {
    ".lora_A.weight": ("linear", "a"),
    ".lora_B.weight": ("linear", "b"),
    ".lora_embedding_A": ("embedding", "a"),
    ".lora_embedding_B": ("embedding", "b"),
    ".lora_magnitude_vector": ("linear", "m"),
    ".lora_magnitude_vector.weight": ("linear", "m"),
}


class _Weights(Protocol):
    def names(self) -> Iterator[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def nbytes(self, name: str) -> int: ...
    def float32(self, name: str) -> npt.NDArray[np.float32]: ...


class _PickledWeights:
    """adapter_model.bin, loaded with torch (only with --allow-pickle)."""

    def __init__(self, path: Path) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingExtra("convert-hf", "torch") from exc
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            raise InputError(path, f"cannot be loaded ({exc})") from exc
        self._arrays = {k: v.float().numpy() for k, v in state.items()}

    def names(self) -> Iterator[str]:
        return iter(self._arrays)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._arrays[name].shape)

    def nbytes(self, name: str) -> int:
        return int(self._arrays[name].nbytes)

    def float32(self, name: str) -> npt.NDArray[np.float32]:
        return np.asarray(self._arrays[name], dtype=np.float32)


@dataclass
class LoraModule:
    """One adapted module: its factors, rank, alpha and the resulting scale."""

    name: str
    kind: Literal["linear", "embedding"]
    keys: dict[str, str] = field(default_factory=dict)
    rank: int = 0
    alpha: float = 0.0
    scaling: float = 0.0

    @property
    def weight_name(self) -> str:
        """The Hugging Face parameter this module updates."""
        return f"{self.name}.weight"


@dataclass(frozen=True)
class SavedTensor:
    """A full tensor stored in the adapter (``modules_to_save`` or a saved base layer)."""

    key: str
    weight_name: str
    replaces: bool


def _pattern_value(patterns: Mapping[str, Any], module: str) -> Any | None:
    """PEFT's rule: a pattern key applies when it matches the end of the module's name."""
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?(?:{key})$", module):
                return value
        except re.error:
            if module == key or module.endswith("." + key):
                return value
    return None


class PeftAdapter:
    """A LoRA/DoRA adapter as PEFT saves it, with lazily loaded weights."""

    def __init__(self, path: Path, config: dict[str, Any], weights: _Weights) -> None:
        self.path = path
        self.config = config
        self.weights = weights
        self.use_dora = bool(config.get("use_dora"))
        self.use_rslora = bool(config.get("use_rslora"))
        self.fan_in_fan_out = bool(config.get("fan_in_fan_out"))
        self.modules: list[LoraModule] = []
        self.saved: list[SavedTensor] = []
        self._index()

    @classmethod
    def load(cls, path: Path, *, allow_pickle: bool = False) -> PeftAdapter:
        """Read ``adapter_config.json`` and open the weights (safetensors preferred)."""
        if not path.is_dir():
            raise InputError(path, "not a directory", "pass the PEFT adapter directory")
        cfg_path = path / "adapter_config.json"
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(cfg_path, "missing", "a PEFT adapter directory has one") from exc
        except json.JSONDecodeError as exc:
            raise InputError(cfg_path, f"invalid JSON ({exc})") from exc
        kind = str(config.get("peft_type", "LORA")).upper()
        if kind != "LORA":
            raise InputError(cfg_path, f"peft_type {kind} is not LoRA", "only LoRA/DoRA merge")
        for key in ("r", "lora_alpha"):
            if not isinstance(config.get(key), int | float):
                raise InputError(cfg_path, f"{key} is missing or not a number")
        st = path / "adapter_model.safetensors"
        pickle = path / "adapter_model.bin"
        weights: _Weights
        if st.exists():
            weights = SafetensorsFile(st)
        elif pickle.exists():
            if not allow_pickle:
                raise PickleRefused(pickle)
            weights = _PickledWeights(pickle)
        else:
            raise InputError(path, "no adapter_model.safetensors (or .bin) in the directory")
        return cls(path, config, weights)

    def _index(self) -> None:
        modules: dict[str, LoraModule] = {}
        for key in self.weights.names():
            name = key.removeprefix(_PREFIX).replace(".modules_to_save.default", "")
            for suffix, (kind, part) in _SUFFIXES.items():
                if name.endswith(suffix):
                    path = name.removesuffix(suffix)
                    entry = modules.setdefault(path, LoraModule(path, kind))  # type: ignore[arg-type]
                    entry.keys[part] = key
                    break
            else:
                if ".lora_" in name:
                    raise InputError(
                        self.path,
                        f"unsupported adapter tensor {key} (LoRA biases are not supported)",
                    )
                base = name.endswith(".base_layer.weight")
                weight = name.replace(".base_layer.weight", ".weight")
                self.saved.append(SavedTensor(key, weight, replaces=not base))
        alpha_default = float(self.config["lora_alpha"])
        patterns = self.config.get("alpha_pattern") or {}
        for module in modules.values():
            if "a" not in module.keys or "b" not in module.keys:
                raise InputError(self.path, f"{module.name} lacks its lora_A or lora_B tensor")
            module.rank = self.weights.shape(module.keys["a"])[0]
            alpha = _pattern_value(patterns, module.name)
            module.alpha = float(alpha) if alpha is not None else alpha_default
            root = math.sqrt(module.rank) if self.use_rslora else module.rank
            module.scaling = module.alpha / root
        self.modules = list(modules.values())

    def update_shape(self, module: LoraModule) -> tuple[int, int]:
        """Shape of the module's weight update, in the base weight's (rows, columns) layout."""
        a = self.weights.shape(module.keys["a"])
        b = self.weights.shape(module.keys["b"])
        if module.kind == "embedding":
            return (a[1], b[0])
        if self.fan_in_fan_out:
            return (a[1], b[0])
        return (b[0], a[1])

    def factors(
        self, module: LoraModule
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(A, B) as float32, A (r, in) and B (out, r) as PEFT stores them."""
        return self.weights.float32(module.keys["a"]), self.weights.float32(module.keys["b"])

    def delta(self, module: LoraModule) -> npt.NDArray[np.float32]:
        """``scaling * B @ A`` in the base weight's layout (rows = output features)."""
        a, b = self.factors(module)
        product = b @ a
        if module.kind == "embedding" or self.fan_in_fan_out:
            product = product.T
        product *= np.float32(module.scaling)
        return np.ascontiguousarray(product, dtype=np.float32)

    def magnitude(self, module: LoraModule) -> npt.NDArray[np.float32] | None:
        """DoRA's per-row magnitude vector, if the module has one."""
        key = module.keys.get("m")
        return self.weights.float32(key).reshape(-1) if key else None

    def nbytes(self) -> int:
        """Stored size of all adapter weights."""
        return sum(self.weights.nbytes(k) for k in self.weights.names())
