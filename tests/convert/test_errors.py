"""Bad input gets a clear error naming the problem and the fix, and no output file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from convert._merge import merge
from convert._quantize import quantize_file
from convert.errors import (
    ArchitectureMismatch,
    InputError,
    PickleRefused,
    QuantizedBase,
    ShapeMismatch,
    SplitGGUF,
    UnsupportedArchitecture,
    VocabResized,
)
from convert.testing import SyntheticSpec, write_synthetic_adapter, write_synthetic_base
from tests.convert.tiny import build_adapter

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
SPEC = SyntheticSpec()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with a synthetic base and a matching adapter."""
    write_synthetic_base(tmp_path / "base.gguf", SPEC)
    write_synthetic_adapter(tmp_path / "adapter", SPEC)
    return tmp_path


def _only_inputs(work: Path) -> None:
    leftovers = sorted(
        p.name
        for p in work.iterdir()
        if p.suffix in (".gguf", ".partial") and p.name not in ("base.gguf", "part.gguf", "q8.gguf")
    )
    assert leftovers == [], leftovers


def test_quantized_base_is_refused(work: Path) -> None:
    """A quantized base names the tensor and type and points to convert adapter."""
    quantize_file(work / "base.gguf", work / "q8.gguf", "Q8_0")
    with pytest.raises(QuantizedBase, match=r"blk\.0\.ffn_down\.weight is Q8_0.*convert adapter"):
        merge(work / "q8.gguf", work / "adapter", work / "out.gguf")
    assert not (work / "out.gguf").exists()


def test_split_gguf_is_refused(tmp_path: Path) -> None:
    """A split model says how to join it first."""
    write_synthetic_base(
        tmp_path / "part.gguf", SPEC, extra={"split.count": (2, gguf.GGUFValueType.UINT16)}
    )
    write_synthetic_adapter(tmp_path / "adapter", SPEC)
    with pytest.raises(SplitGGUF, match=r"split into 2 files.*--merge"):
        merge(tmp_path / "part.gguf", tmp_path / "adapter", tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_shape_mismatch_names_first_tensor_and_shapes(work: Path) -> None:
    """An adapter for a wider model names the first tensor and both shapes."""
    write_synthetic_adapter(work / "wide", SyntheticSpec(hidden=512, ff=1024))
    with pytest.raises(ShapeMismatch) as info:
        merge(work / "base.gguf", work / "wide", work / "out.gguf")
    # The adapter file lists mlp.down_proj first (safetensors sorts its keys).
    assert info.value.tensor == "blk.0.ffn_down.weight"
    assert "(512, 1024)" in str(info.value) and "(256, 512)" in str(info.value)
    _only_inputs(work)


def test_adapter_for_a_deeper_model(work: Path) -> None:
    """Targeting layers the base does not have is named as a different base model."""
    write_synthetic_adapter(work / "deep", SyntheticSpec(layers=4))
    with pytest.raises(ArchitectureMismatch, match=r"layers\.2\..*different base model"):
        merge(work / "base.gguf", work / "deep", work / "out.gguf")
    _only_inputs(work)


def test_resized_vocabulary_is_refused(work: Path) -> None:
    """modules_to_save with more rows than the base vocabulary points to convert hf."""
    tensors = load_file(str(work / "adapter" / "adapter_model.safetensors"))
    tensors["base_model.model.lm_head.weight"] = np.zeros(
        (SPEC.vocab + 8, SPEC.hidden), dtype=np.float32
    )
    save_file(tensors, str(work / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(VocabResized, match=r"520 rows.*512.*convert hf"):
        merge(work / "base.gguf", work / "adapter", work / "out.gguf")
    _only_inputs(work)


def test_pickle_is_refused_unless_allowed(
    tiny_model: Path, base_f32: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """adapter_model.bin is refused; --allow-pickle merges it like the safetensors one."""
    pickled = build_adapter(tiny_model, tmp_path / "pickled", "plain", safe=False)
    assert (pickled / "adapter_model.bin").exists()
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        merge(base_f32, pickled, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    merge(base_f32, pickled, tmp_path / "a.gguf", allow_pickle=True)
    merge(base_f32, adapters["plain"], tmp_path / "b.gguf")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_missing_and_truncated_inputs(work: Path) -> None:
    """Missing or cut files are named; nothing is written."""
    with pytest.raises(InputError, match="file not found"):
        merge(work / "nope.gguf", work / "adapter", work / "out.gguf")
    with pytest.raises(InputError, match="not a directory"):
        merge(work / "base.gguf", work / "nope", work / "out.gguf")
    data = (work / "base.gguf").read_bytes()
    (work / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        merge(work / "cut.gguf", work / "adapter", work / "out.gguf")
    (work / "cut.gguf").unlink()
    weights = work / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        merge(work / "base.gguf", work / "adapter", work / "out.gguf")
    (work / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(InputError, match=r"adapter_config\.json: missing"):
        merge(work / "base.gguf", work / "adapter", work / "out.gguf")
    _only_inputs(work)


def test_unsupported_architecture(tmp_path: Path) -> None:
    """An architecture without known transforms is refused, listing the supported ones."""
    write_synthetic_base(tmp_path / "base.gguf", SPEC, arch="phi3")
    write_synthetic_adapter(tmp_path / "adapter", SPEC)
    with pytest.raises(UnsupportedArchitecture, match=r"'phi3'.*supported: gemma"):
        merge(tmp_path / "base.gguf", tmp_path / "adapter", tmp_path / "out.gguf")
    _only_inputs(tmp_path)


def test_bad_adapter_config(work: Path) -> None:
    """A config without r names the field."""
    cfg = work / "adapter" / "adapter_config.json"
    cfg.write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 8}))
    with pytest.raises(InputError, match="r is missing"):
        merge(work / "base.gguf", work / "adapter", work / "out.gguf")


def test_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    """Interrupting a merge mid-write exits 130 and removes the partial file."""
    big = SyntheticSpec(hidden=1024, ff=4096, layers=8, vocab=32000)
    write_synthetic_base(tmp_path / "base.gguf", big)
    write_synthetic_adapter(tmp_path / "adapter", big)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "convert",
            "merge",
            "--base",
            str(tmp_path / "base.gguf"),
            "--adapter",
            str(tmp_path / "adapter"),
            "--out",
            str(tmp_path / "out.gguf"),
            "--quant",
            "Q8_0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    _only_inputs(tmp_path)
