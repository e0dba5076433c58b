"""GGUF metadata is read with the gguf package, and bad files are named with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import GGUFError, read_gguf_info


def test_reads_the_demo_model_metadata(demo_path: Path) -> None:
    """Architecture, parameters, quantization, context and size come from the GGUF header."""
    info = read_gguf_info(demo_path)
    assert info.architecture == "llama"
    assert info.parameters == 134_515_008
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.size_bytes == demo_path.stat().st_size
    assert info.tensor_count == 272
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.metadata["general.architecture"] == "llama"
    # Long arrays (the vocabulary) are summarised rather than copied.
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert tokens["length"] == 49152 and len(tokens["first"]) == 8


def test_truncated_file_is_reported(tmp_path: Path, demo_path: Path) -> None:
    """A file cut short names the bytes missing and suggests fetching it again."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[:20_000_000])
    with pytest.raises(GGUFError, match=r"truncated.*fetch the file again"):
        read_gguf_info(cut)


def test_header_cut_short_is_reported(tmp_path: Path, demo_path: Path) -> None:
    """A file cut inside its header is reported as damaged, not as a crash."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[:1000])
    with pytest.raises(GGUFError, match="truncated or damaged"):
        read_gguf_info(cut)


def test_non_gguf_file_is_reported(tmp_path: Path) -> None:
    """A file without the GGUF magic is refused with a hint."""
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_info(bad)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A missing file is named."""
    with pytest.raises(GGUFError, match="file not found") as info:
        read_gguf_info(tmp_path / "nope.gguf")
    assert info.value.path == tmp_path / "nope.gguf"
