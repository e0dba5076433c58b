"""Session fixtures: a tiny Llama, its F32 GGUF (via llama.cpp's converter) and adapters."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from convert._hf import convert_hf
from tests.convert.tiny import VARIANTS, build_adapter, build_model

# Third-party warnings inside PEFT/transformers are not ours to fix; the suite otherwise
# turns every warning into an error.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="session")
def converter_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's cache for llama.cpp's converter, shared across runs like a real user's."""
    from daemon import load_settings

    return load_settings(environ={}).cache_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random GQA Llama (hidden 256, 2 layers) with a SentencePiece tokenizer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def base_f32(
    tiny_model: Path, converter_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model as an F32 GGUF, made by llama.cpp's own converter."""
    out = tmp_path_factory.mktemp("base") / "tiny-f32.gguf"
    convert_hf(tiny_model, out, outtype="f32", cache_root=converter_cache)
    return out


@pytest.fixture(scope="session")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random PEFT adapter per variant."""
    root = tmp_path_factory.mktemp("adapters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {v: build_adapter(tiny_model, root / v, v) for v in VARIANTS}
