"""GGUF adapters that llama.cpp applies at load time agree with the merged model."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from convert._export import export_adapter
from convert._merge import merge
from convert._quantize import quantize_file
from convert.errors import DoraNotExportable, InputError
from daemon.engine import token_logits
from tests.convert.test_merge import TOKENS, nmse
from tests.convert.tiny import build_adapter

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.mark.parametrize("variant", ["plain", "rslora", "patterns", "embed", "gqa_k"])
def test_runtime_adapter_matches_merge(
    variant: str, base_f32: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """Base + GGUF adapter gives the merged model's logits (NMSE <= 1e-4)."""
    adapter = export_adapter(base_f32, adapters[variant], tmp_path / "a.gguf").output
    merged = merge(base_f32, adapters[variant], tmp_path / "m.gguf").output
    assert (
        nmse(token_logits(base_f32, TOKENS, adapter=adapter), token_logits(merged, TOKENS)) <= 1e-4
    )
    # ...and differs from the bare base, so the adapter was really applied.
    assert nmse(token_logits(base_f32, TOKENS), token_logits(merged, TOKENS)) > 1e-3


def test_adapter_metadata(base_f32: Path, adapters: dict[str, Path], tmp_path: Path) -> None:
    """The file says it is a LoRA adapter for the base's architecture, with A/B pairs."""
    out = export_adapter(base_f32, adapters["plain"], tmp_path / "a.gguf").output
    reader = gguf.GGUFReader(out)

    def text(key: str) -> str:
        f = reader.fields[key]
        return bytes(f.parts[f.data[0]]).decode()

    assert text("general.type") == "adapter"
    assert text("adapter.type") == "lora"
    assert text("general.architecture") == "llama"
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"} <= names


def test_adapter_on_a_quantized_base(base_f32: Path, tiny_model: Path, tmp_path: Path) -> None:
    """One adapter serves a quantized base too (the point of not merging)."""
    adapter_dir = build_adapter(tiny_model, tmp_path / "ad", "plain", strength=0.5)
    q8 = quantize_file(base_f32, tmp_path / "q8.gguf", "Q8_0").output
    adapter = export_adapter(q8, adapter_dir, tmp_path / "a.gguf").output
    merged = merge(base_f32, adapter_dir, tmp_path / "m.gguf").output
    got = token_logits(q8, TOKENS, adapter=adapter)
    assert nmse(got, token_logits(merged, TOKENS)) <= 1e-2


def test_dora_is_refused_with_a_pointer_to_merge(
    base_f32: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """DoRA cannot be a runtime adapter: the message says to merge; nothing is written."""
    with pytest.raises(DoraNotExportable, match="personad convert merge"):
        export_adapter(base_f32, adapters["dora"], tmp_path / "a.gguf")
    assert list(tmp_path.iterdir()) == []


def test_modules_to_save_is_refused(base_f32: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Whole replaced tensors cannot be applied at run time; merge is suggested."""
    adapter = build_adapter(tiny_model, tmp_path / "ad", "plain", modules_to_save=["lm_head"])
    with pytest.raises(InputError, match=r"modules_to_save.*lm_head.*merge"):
        export_adapter(base_f32, adapter, tmp_path / "a.gguf")
    out = merge(base_f32, adapter, tmp_path / "m.gguf")
    assert out.replaced == 1
