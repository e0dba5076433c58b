"""F16 and BF16 bases are merged in float32 and stored back in their own type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert._arch import permute_rows
from convert._gguf import BaseGGUF
from convert._merge import merge
from convert._peft import PeftAdapter
from convert.testing import SyntheticSpec, write_synthetic_adapter, write_synthetic_base


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32"])
def test_merge_keeps_the_storage_type(dtype: str, tmp_path: Path) -> None:
    """Each merged tensor equals (base + permuted scaled BA) rounded once to the base's type."""
    spec = SyntheticSpec(dtype=dtype)
    write_synthetic_base(tmp_path / "base.gguf", spec)
    write_synthetic_adapter(tmp_path / "adapter", spec, r=4, alpha=12)
    merge(tmp_path / "base.gguf", tmp_path / "adapter", tmp_path / "out.gguf")
    base, out = BaseGGUF(tmp_path / "base.gguf"), BaseGGUF(tmp_path / "out.gguf")
    adapter = PeftAdapter.load(tmp_path / "adapter")
    modules = {m.name: m for m in adapter.modules}
    for name, hf, heads in (
        ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj", 2),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj", 0),
    ):
        assert out.type_name(name) == dtype
        delta = adapter.delta(modules[hf])
        if heads:
            delta = permute_rows(delta, heads)
        rows = base.rows(name)
        expected = base.encode(name, base.float32_rows(name, 0, rows) + delta)
        assert out.read_bytes(name, 0, rows) == expected
        assert adapter.modules[0].scaling == 3.0
    # Untouched tensors are copied byte for byte.
    assert out.read_bytes("token_embd.weight", 0, spec.vocab) == base.read_bytes(
        "token_embd.weight", 0, spec.vocab
    )
    assert np.isfinite(out.float32_rows("blk.0.attn_q.weight", 0, 4)).all()
