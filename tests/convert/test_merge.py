"""Merging PEFT adapters into a GGUF, checked against PEFT's merge_and_unload and PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from convert._arch import unpermute_rows
from convert._gguf import BaseGGUF
from convert._merge import merge
from daemon.engine import token_logits
from tests.convert.tiny import VARIANTS, build_adapter, cycle_text, merged_reference

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

TOKENS = [int(t) for t in np.random.RandomState(7).randint(4, 512, size=96)]


def nmse(got: np.ndarray[Any, Any], ref: np.ndarray[Any, Any]) -> float:
    """Normalised mean squared error, as llama.cpp's check-nmse.py computes it.

    A constant reference (a norm initialised to ones) has no variance; its mean square
    normalises instead.
    """
    scale = ref.var() or (ref**2).mean()
    return float(((got - ref) ** 2).mean() / scale)


def gguf_weights(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of a float GGUF as float32 in Hugging Face layout (Q/K un-permuted)."""
    base = BaseGGUF(path)
    info = base.arch_info()
    out = {}
    for name in base.tensors:
        w = base.float32_rows(name, 0, base.rows(name)).reshape(base.shape(name))
        if name.endswith("attn_q.weight"):
            w = unpermute_rows(w, info.n_head)
        elif name.endswith("attn_k.weight"):
            w = unpermute_rows(w, info.n_head_kv)
        out[name] = w
    base.close()
    return out


def torch_logits(model: Any) -> np.ndarray[Any, Any]:
    import torch

    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits[0].numpy()


@pytest.fixture(scope="module")
def merged(
    base_f32: Path, adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Every variant merged into the F32 base."""
    root = tmp_path_factory.mktemp("merged")
    return {v: merge(base_f32, adapters[v], root / f"{v}.gguf").output for v in VARIANTS}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_weights_match_peft_merge(
    variant: str,
    merged: dict[str, Path],
    tiny_model: Path,
    adapters: dict[str, Path],
    base_f32: Path,
) -> None:
    """Each merged tensor equals PEFT's merge_and_unload (NMSE <= 1e-6), Q/K un-permuted."""
    reference = merged_reference(tiny_model, adapters[variant]).state_dict()
    info = BaseGGUF(base_f32).arch_info()
    got = gguf_weights(merged[variant])
    changed = 0
    for hf_name, tensor in reference.items():
        name = info.gguf_name(hf_name)
        assert name in got, hf_name
        ref = tensor.numpy()
        assert got[name].shape == ref.shape, name
        assert nmse(got[name], ref) <= 1e-6, name
        changed += not np.allclose(got[name], gguf_weights_cache(base_f32)[name])
    assert changed >= 2  # the adapter really changed something


_BASE_CACHE: dict[Path, dict[str, np.ndarray[Any, Any]]] = {}


def gguf_weights_cache(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """gguf_weights, read once per file."""
    if path not in _BASE_CACHE:
        _BASE_CACHE[path] = gguf_weights(path)
    return _BASE_CACHE[path]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llama_cpp_logits_match_pytorch(
    variant: str, merged: dict[str, Path], tiny_model: Path, adapters: dict[str, Path]
) -> None:
    """llama.cpp on the merged F32 GGUF gives PyTorch's logits (NMSE <= 1e-4)."""
    ref = torch_logits(merged_reference(tiny_model, adapters[variant]))
    got = token_logits(merged[variant], TOKENS)
    assert nmse(got, ref) <= 1e-4


def test_f16_output_logits(
    base_f32: Path, adapters: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """Quantizing the merge to F16 keeps the logits within NMSE 1e-4 of PyTorch's."""
    out = merge(base_f32, adapters["plain"], tmp_path / "m.gguf", quant="F16").output
    assert BaseGGUF(out).type_name("blk.0.attn_q.weight") == "F16"
    ref = torch_logits(merged_reference(tiny_model, adapters["plain"]))
    assert nmse(token_logits(out, TOKENS), ref) <= 1e-4


def test_q8_0_top1_agreement(base_f32: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A Q8_0 merge picks PyTorch's top token at >= 98 % of positions; file_type follows.

    Top-1 agreement only means something where the model has a preference, so this runs on
    text the tiny model was trained on, with an adapter that perturbs rather than replaces
    what it learned, as a real fine-tune does.
    """
    import sentencepiece as spm

    adapter = build_adapter(tiny_model, tmp_path / "adapter", "rslora", strength=0.5)
    out = merge(base_f32, adapter, tmp_path / "m.gguf", quant="Q8_0").output
    reader = gguf.GGUFReader(out)
    file_type = reader.fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == gguf.LlamaFileType.MOSTLY_Q8_0
    assert BaseGGUF(out).type_name("blk.0.attn_q.weight") == "Q8_0"
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model / "tokenizer.model"))
    tokens = [1, *sp.encode(cycle_text(3, 8))]
    model = merged_reference(tiny_model, adapter)
    import torch

    with torch.no_grad():
        ref = model(torch.tensor([tokens])).logits[0].numpy()
    got = token_logits(out, tokens)
    agreement = float((got.argmax(-1) == ref.argmax(-1)).mean())
    assert agreement >= 0.98, agreement


def _fields(path: Path) -> dict[str, tuple[Any, ...]]:
    reader = gguf.GGUFReader(path)
    return {
        name: (tuple(f.types), tuple(bytes(p) for p in f.parts[-1:]) if f.parts else ())
        for name, f in reader.fields.items()
        if not name.startswith("GGUF.")
    }


def test_metadata_is_preserved_with_types(merged: dict[str, Path], base_f32: Path) -> None:
    """Every key keeps its value type and value (file_type unchanged for a same-type merge)."""
    base = gguf.GGUFReader(base_f32)
    out = gguf.GGUFReader(merged["plain"])
    for name, field in base.fields.items():
        if name.startswith("GGUF."):
            continue
        other = out.fields[name]
        assert list(other.types) == list(field.types), name
        assert [bytes(p) for p in other.parts[1:]] == [bytes(p) for p in field.parts[1:]], name
    assert set(out.fields) == set(base.fields)


def test_custom_alignment_survives(
    base_f32: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """A base with alignment 64 is merged into a file that keeps 64 and reads back."""
    from convert._gguf import StreamWriter, copy_metadata

    src = BaseGGUF(base_f32)
    aligned = tmp_path / "aligned.gguf"
    stream = StreamWriter(aligned, src.arch)
    copy_metadata(src.reader, stream.writer)
    stream.writer.add_custom_alignment(64)
    for name in src.tensors:
        src.add_tensor_info(stream.writer, name)
    stream.begin()
    for name, t in src.tensors.items():
        stream.write_tensor([src.read_bytes(name, 0, src.rows(name))], int(t.n_bytes))
    stream.close()
    out = merge(aligned, adapters["plain"], tmp_path / "m.gguf").output
    reader = gguf.GGUFReader(out)
    assert reader.alignment == 64
    assert int(reader.fields["general.alignment"].parts[-1][0]) == 64
    np.testing.assert_allclose(
        gguf_weights(out)["blk.0.attn_q.weight"],
        gguf_weights(tmp_path / "m.gguf")["blk.0.attn_q.weight"],
    )
