"""Peak memory of `personad convert merge` on a >= 1 GB F16 base, against PyTorch's merge.

Target: the merge's peak RSS above the interpreter's baseline stays under
1.5 x (largest tensor + adapter). Also prints MB/s, and the peak RSS of PyTorch loading the
same shapes in fp16 and running PEFT's merge_and_unload, measured in the same run.

Each measurement runs in a fresh subprocess and reads its peak RSS (ru_maxrss); the baseline
is the same interpreter importing the same modules and doing nothing.

    python bench/convert_memory.py [--layers 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert.testing import SyntheticSpec, write_synthetic_adapter, write_synthetic_base

PEAK = (
    "import resource, json; "
    "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))"
)

MERGE = (
    """
import sys
from pathlib import Path
from convert._merge import merge
{action}
"""
    + PEAK
)

TORCH = (
    """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import PeftModel
spec = {spec}
{action}
"""
    + PEAK
)

TORCH_ACTION = """
config = LlamaConfig(vocab_size=spec["vocab"], hidden_size=spec["hidden"],
    intermediate_size=spec["ff"], num_hidden_layers=spec["layers"],
    num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"],
    tie_word_embeddings=False)
torch.set_default_dtype(torch.float16)
model = LlamaForCausalLM(config)
merged = PeftModel.from_pretrained(model, sys.argv[1]).merge_and_unload()
"""


def _peak(code: str, *args: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=10)
    args = parser.parse_args()
    spec = SyntheticSpec(
        hidden=2048, ff=5632, layers=args.layers, vocab=32000, heads=16, kv_heads=4, dtype="F16"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, adapter, out = root / "base.gguf", root / "adapter", root / "out.gguf"
        write_synthetic_base(base, spec)
        write_synthetic_adapter(adapter, spec)
        base_size = base.stat().st_size
        adapter_size = (adapter / "adapter_model.safetensors").stat().st_size
        largest = max(
            (2 if len(shape) > 1 else 4) * int(__import__("math").prod(shape))
            for _, shape in spec.tensors()
        )
        baseline = _peak(MERGE.format(action=""))
        started = time.perf_counter()
        merged = _peak(
            MERGE.format(action="merge(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"),
            str(base),
            str(adapter),
            str(out),
        )
        seconds = time.perf_counter() - started
        torch_base = _peak(TORCH.format(spec=json.dumps(spec.__dict__), action=""))
        torch_peak = _peak(
            TORCH.format(spec=json.dumps(spec.__dict__), action=TORCH_ACTION), str(adapter)
        )
    mb = 1 << 20
    ours, theirs = merged - baseline, torch_peak - torch_base
    bound = 1.5 * (largest + adapter_size)
    print(
        f"base: {base_size / mb:.0f} MB F16, largest tensor {largest / mb:.0f} MB, "
        f"adapter {adapter_size / mb:.1f} MB"
    )
    print(
        f"personad merge: peak RSS {ours / mb:.0f} MB above baseline "
        f"({baseline / mb:.0f} MB); bound 1.5 x (largest + adapter) = {bound / mb:.0f} MB "
        f"-> {'OK' if ours <= bound else 'OVER'}"
    )
    print(f"personad merge: {base_size / mb / seconds:.0f} MB/s ({seconds:.1f} s incl. start-up)")
    print(f"PyTorch merge_and_unload: peak RSS {theirs / mb:.0f} MB above its baseline")
    print(f"ratio personad/PyTorch peak RSS: {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
