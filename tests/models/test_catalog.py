"""Manifests are found in the models directory; bad ones are reported one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import (
    DEMO_MODEL_NAME,
    Catalog,
    ManifestError,
    ModelManifest,
    UnknownModel,
    load_manifest,
    write_manifest,
)
from tests.conftest import write_model


def test_manifest_fields_and_relative_paths(tmp_path: Path) -> None:
    """Paths in a manifest are resolved against its own directory."""
    (tmp_path / "m.toml").write_text(
        'path = "weights/m.gguf"\nadapter = "a.gguf"\ncontext_length = 1024\n'
        'n_gpu_layers = -1\nflash_attn = true\nprompt_format = "transcript"\n'
        "[sampling]\ntemperature = 0.2\n"
    )
    m = load_manifest(tmp_path / "m.toml")
    assert m.name == "m"
    assert m.path == tmp_path / "weights/m.gguf"
    assert m.adapter == tmp_path / "a.gguf"
    assert (m.context_length, m.n_gpu_layers, m.flash_attn) == (1024, -1, True)
    assert m.prompt_format == "transcript"
    assert m.sampling.temperature == 0.2 and m.sampling.top_k == 40


def test_invalid_manifest_names_field(tmp_path: Path) -> None:
    """A wrong value is reported with the file and the field."""
    (tmp_path / "bad.toml").write_text('path = "x.gguf"\nn_gpu_layers = "many"\n')
    with pytest.raises(ManifestError, match=r"bad\.toml: field n_gpu_layers"):
        load_manifest(tmp_path / "bad.toml")


def test_unknown_manifest_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key is an error rather than silently ignored."""
    (tmp_path / "bad.toml").write_text('path = "x.gguf"\ncontext_lenght = 4\n')
    with pytest.raises(ManifestError, match="context_lenght"):
        load_manifest(tmp_path / "bad.toml")


def test_catalog_lists_good_and_reports_bad(tmp_path: Path, demo_path: Path) -> None:
    """Each bad model is reported on its own while the others still list."""
    models = tmp_path / "models"
    write_model(models, "good", demo_path)
    write_model(models, "missing", tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    write_model(models, "junk", junk)
    (models / "broken.toml").write_text("path = ")
    entries = {e.name: e for e in Catalog.load(models).entries()}
    assert set(entries) == {"good", "missing", "junk", "broken", DEMO_MODEL_NAME}
    assert entries["good"].info is not None and entries["good"].info.architecture == "llama"
    assert entries[DEMO_MODEL_NAME].info is not None
    assert "file not found" in str(entries["missing"].error)
    assert "not a GGUF file" in str(entries["junk"].error)
    assert "invalid TOML" in str(entries["broken"].error)


def test_unknown_model_lists_known_names(tmp_path: Path, demo_path: Path) -> None:
    """Asking for an unknown name lists the names that exist."""
    write_model(tmp_path, "alpha", demo_path)
    catalog = Catalog.load(tmp_path, include_demo=False)
    with pytest.raises(UnknownModel, match="known models: alpha"):
        catalog.get("beta")


def test_write_manifest_round_trips_atomically(tmp_path: Path, demo_path: Path) -> None:
    """A written manifest loads back equal, and no temp file is left behind."""
    m = ModelManifest(name="persona", path=demo_path, context_length=512)
    target = write_manifest(m, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["persona.toml"]
    back = load_manifest(target)
    assert back.model_dump(exclude={"source"}) == m.model_dump(exclude={"source"})
