"""GGUF metadata is read with the gguf package, and bad files are named with a fix."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from models import GGUFError, open_gguf, read_gguf_header, read_gguf_info


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


def _header(version: int, tensors: int, kvs: int, order: str = "<") -> bytes:
    return b"GGUF" + struct.pack(order + "IQQ", version, tensors, kvs)


def test_unsupported_version_is_named(tmp_path: Path) -> None:
    """A GGUF of a version the reader cannot parse says which version, and what to do."""
    old = tmp_path / "old.gguf"
    old.write_bytes(_header(1, 0, 0) + b"\x00" * 64)
    with pytest.raises(GGUFError, match=r"GGUF version 1 is not supported.*convert"):
        read_gguf_info(old)


def test_absurd_counts_are_refused_before_parsing(tmp_path: Path) -> None:
    """A damaged count (billions of tensors in a small file) is refused at once."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_header(3, 2**40, 2**40) + b"\x00" * 64)
    with pytest.raises(GGUFError, match=r"truncated or damaged: the header promises"):
        read_gguf_header(bad)


def test_header_shorter_than_24_bytes_is_truncated(tmp_path: Path) -> None:
    """A file holding only part of the fixed header is reported as cut short."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_header(3, 0, 0)[:10])
    with pytest.raises(GGUFError, match=r"truncated: the header is cut at 10 bytes"):
        read_gguf_info(cut)


def test_big_endian_header_is_read(tmp_path: Path) -> None:
    """A header written on a big-endian machine is recognised, not called damaged."""
    be = tmp_path / "be.gguf"
    be.write_bytes(_header(3, 0, 0, ">"))
    assert read_gguf_header(be).byte_order == ">"


def test_a_directory_is_named(tmp_path: Path) -> None:
    """A directory instead of a file is said to be one."""
    with pytest.raises(GGUFError, match="is a directory"):
        read_gguf_info(tmp_path)


def test_open_gguf_checks_what_read_gguf_info_checks(tmp_path: Path, demo_path: Path) -> None:
    """The shared opener refuses a truncated file and opens the demo model."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[:20_000_000])
    with pytest.raises(GGUFError, match="truncated"):
        open_gguf(cut)
    assert len(open_gguf(demo_path).tensors) == 272
