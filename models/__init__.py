"""The model catalogue: manifests, GGUF metadata and the embedded demo model."""

from ._atomic import atomic_path, scratch_path
from ._catalog import DEMO_MODEL_NAME, Catalog, CatalogEntry, demo_manifest, demo_model_path
from ._gguf import GGUFInfo, read_gguf_info
from ._manifest import ModelManifest, SamplingDefaults, load_manifest, write_manifest
from ._persona import (
    BehaviourSettings,
    PersonaCard,
    PersonaManifest,
    demo_persona,
    load_persona,
    load_personas,
)
from ._transcript import (
    COMMANDS,
    Action,
    Event,
    Line,
    attachment_kind,
    chat_messages,
    event_line,
    parse_line,
    parse_output,
    prompt_lines,
    render_transcript,
    split_sessions,
)
from .errors import CatalogError, DemoModelMissing, GGUFError, ManifestError, UnknownModel

__all__ = [
    "COMMANDS",
    "DEMO_MODEL_NAME",
    "Action",
    "BehaviourSettings",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "DemoModelMissing",
    "Event",
    "GGUFError",
    "GGUFInfo",
    "Line",
    "ManifestError",
    "ModelManifest",
    "PersonaCard",
    "PersonaManifest",
    "SamplingDefaults",
    "UnknownModel",
    "atomic_path",
    "attachment_kind",
    "chat_messages",
    "demo_manifest",
    "demo_model_path",
    "demo_persona",
    "event_line",
    "load_manifest",
    "load_persona",
    "load_personas",
    "parse_line",
    "parse_output",
    "prompt_lines",
    "read_gguf_info",
    "render_transcript",
    "scratch_path",
    "split_sessions",
    "write_manifest",
]
