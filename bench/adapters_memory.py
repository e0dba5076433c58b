"""Resident memory of four personas as LoRA adapters on one base, against one persona.

Each case runs in a fresh subprocess that loads the demo model with its adapters, answers one
request per adapter, and reports its peak RSS. Target: four adapters <= 1.15 x one.

    python bench/adapters_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from convert._export import export_adapter
from convert.testing import SyntheticSpec, write_synthetic_adapter
from models import demo_model_path

SMOLLM2 = SyntheticSpec(hidden=576, ff=1536, layers=30, vocab=49152, heads=9, kv_heads=3)

RUN = """
import json, resource, sys, threading
from pathlib import Path
from daemon._types import GenerationParams
from daemon.engine import LlamaModel
from models import ModelManifest
adapters = {f"p{i}": Path(p) for i, p in enumerate(json.loads(sys.argv[2]))}
m = LlamaModel(ModelManifest(name="b", path=Path(sys.argv[1]), context_length=2048,
                             adapters=adapters))
for name in adapters:
    list(m.generate(m.text_prompt("Hello there, how"), GenerationParams(max_tokens=8),
                    threading.Event(), adapter=name))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of each persona")
    rank = parser.parse_args().rank
    base = demo_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(4):
            peft = write_synthetic_adapter(
                Path(tmp) / f"p{i}", SMOLLM2, seed=i, scale=0.05, r=rank, alpha=2 * rank
            )
            files.append(str(export_adapter(base, peft, Path(tmp) / f"p{i}.gguf").output))
        size = Path(files[0]).stat().st_size

        def peak(paths: list[str]) -> int:
            out = subprocess.run(
                [sys.executable, "-c", RUN, str(base), json.dumps(paths)],
                capture_output=True,
                text=True,
                check=True,
            )
            return int(out.stdout.strip().splitlines()[-1])

        one, four = peak(files[:1]), peak(files)
    mb = 1 << 20
    print(f"adapter file: {size / mb:.1f} MB each (r={rank}, all projections, F16)")
    print(f"one persona (base + 1 adapter):   peak RSS {one / mb:.0f} MB")
    print(f"four personas (base + 4 adapters): peak RSS {four / mb:.0f} MB")
    print(f"ratio: {four / one:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
