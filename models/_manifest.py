"""Model manifests: one TOML file per model in the models directory."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._toml import write_toml
from .errors import ManifestError

__all__ = [
    "ModelManifest",
    "SamplingDefaults",
    "load_manifest",
    "read_toml_model",
    "write_manifest",
]


class SamplingDefaults(BaseModel):
    """Sampling used when a request does not say otherwise."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0, description="Softmax temperature; 0 is greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(40, ge=0, description="Sample among the k most likely tokens; 0 = all.")
    min_p: float = Field(0.05, ge=0, le=1, description="Drop tokens below min_p x the top prob.")
    repeat_penalty: float = Field(1.1, ge=0, description="Penalty for repeated tokens.")


class ModelManifest(BaseModel):
    """A model the daemon can serve: a GGUF file and how to run it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", description="Name clients use.")
    path: Path = Field(description="GGUF model file; relative paths are against the manifest.")
    adapter: Path | None = Field(None, description="Optional GGUF LoRA adapter applied at load.")
    adapter_scale: float = Field(1.0, description="Scale of the LoRA adapter.")
    adapters: dict[str, Path] = Field(
        default_factory=dict,
        description="Named GGUF LoRA adapters a request (or persona) can pick per request.",
    )
    context_length: int | None = Field(
        None, gt=0, description="Context size (n_ctx); default: min(model's trained size, 4096)."
    )
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1 = all.")
    main_gpu: int = Field(0, ge=0, description="GPU used for the model when offloading.")
    flash_attn: bool = Field(False, description="Use flash attention (GPU builds).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads; default: llama.cpp's.")
    n_batch: int = Field(512, gt=0, description="Prompt evaluation batch size.")
    prompt_format: Literal["chat", "transcript"] = Field(
        "chat", description="chat: the GGUF chat template; transcript: raw 'name: text' lines."
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the one stored in the GGUF."
    )
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    source: Path | None = Field(None, exclude=True, description="Manifest file it came from.")


def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    return p if p.is_absolute() else (base / p)


M = TypeVar("M", bound=BaseModel)


def read_toml_model(path: Path, model: type[M], defaults: dict[str, Any] | None = None) -> M:
    """Read a TOML file into ``model``; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(path, f"cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, f"invalid TOML: {exc}") from exc
    try:
        return model.model_validate({**(defaults or {}), **data})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ManifestError(path, f"field {where}: {err['msg']}") from exc


def load_manifest(path: Path) -> ModelManifest:
    """Read and validate one manifest; paths in it are resolved against its directory."""
    manifest = read_toml_model(path, ModelManifest, {"name": path.stem})
    base = path.parent
    if manifest.adapter is not None and manifest.adapters:
        raise ManifestError(path, "use either adapter (fixed) or adapters (per request), not both")
    return manifest.model_copy(
        update={
            "path": _resolve(base, manifest.path),
            "adapter": _resolve(base, manifest.adapter),
            "adapters": {k: _resolve(base, v) for k, v in manifest.adapters.items()},
            "source": path,
        }
    )


def write_manifest(manifest: ModelManifest, directory: Path) -> Path:
    """Write ``manifest`` as ``NAME.toml`` in ``directory`` atomically (temp file, then rename)."""
    target = directory / f"{manifest.name}.toml"
    # Not private data, and a service user may need to read it: the umask decides, as for
    # any file the user creates.
    write_toml(target, manifest.model_dump(mode="json", exclude_none=True), mode=0o644)
    return target
