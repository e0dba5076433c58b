"""The model catalogue: manifests, GGUF metadata and the embedded demo model."""

from ._atomic import atomic_path, scratch_path
from ._catalog import DEMO_MODEL_NAME, Catalog, CatalogEntry, demo_manifest, demo_model_path
from ._gguf import GGUFInfo, read_gguf_info
from ._manifest import ModelManifest, SamplingDefaults, load_manifest, write_manifest
from .errors import CatalogError, DemoModelMissing, GGUFError, ManifestError, UnknownModel

__all__ = [
    "DEMO_MODEL_NAME",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "DemoModelMissing",
    "GGUFError",
    "GGUFInfo",
    "ManifestError",
    "ModelManifest",
    "SamplingDefaults",
    "UnknownModel",
    "atomic_path",
    "demo_manifest",
    "demo_model_path",
    "load_manifest",
    "read_gguf_info",
    "scratch_path",
    "write_manifest",
]
