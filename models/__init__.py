"""The model catalogue: manifests, GGUF metadata and the embedded demo model.

Also the rules the other packages share, written once here at the bottom of the layering:
how a GGUF file is validated, which quantization types exist, where a conversation ends,
and how TOML is written.
"""

from ._atomic import atomic_path, scratch_path
from ._catalog import (
    DEFAULT_CONTEXT,
    DEMO_MODEL_NAME,
    Catalog,
    CatalogEntry,
    demo_manifest,
    demo_model_path,
    served_context,
)
from ._gguf import GGUFHeader, GGUFInfo, open_gguf, read_gguf_header, read_gguf_info
from ._manifest import ModelManifest, SamplingDefaults, load_manifest, write_manifest
from ._persona import (
    BehaviourSettings,
    PersonaCard,
    PersonaManifest,
    UnknownPersona,
    demo_persona,
    load_persona,
    load_personas,
)
from ._quant import QUANT_TYPES
from ._sessions import SessionTracker, split_by_gap, starts_session
from ._toml import dump_toml, write_toml
from ._transcript import (
    COMMANDS,
    Action,
    Event,
    Line,
    attachment_kind,
    chat_messages,
    defuse,
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
    "DEFAULT_CONTEXT",
    "DEMO_MODEL_NAME",
    "QUANT_TYPES",
    "Action",
    "BehaviourSettings",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "DemoModelMissing",
    "Event",
    "GGUFError",
    "GGUFHeader",
    "GGUFInfo",
    "Line",
    "ManifestError",
    "ModelManifest",
    "PersonaCard",
    "PersonaManifest",
    "SamplingDefaults",
    "SessionTracker",
    "UnknownModel",
    "UnknownPersona",
    "atomic_path",
    "attachment_kind",
    "chat_messages",
    "defuse",
    "demo_manifest",
    "demo_model_path",
    "demo_persona",
    "dump_toml",
    "event_line",
    "load_manifest",
    "load_persona",
    "load_personas",
    "open_gguf",
    "parse_line",
    "parse_output",
    "prompt_lines",
    "read_gguf_header",
    "read_gguf_info",
    "render_transcript",
    "scratch_path",
    "served_context",
    "split_by_gap",
    "split_sessions",
    "starts_session",
    "write_manifest",
    "write_toml",
]
