"""Streaming tokens/s through personad's HTTP API against raw llama-cpp-python, interleaved.

Every side loads the same GGUF (the demo model) with the same flash attention, threads,
batch threads and context, given explicitly (printed first), and the same sampling (greedy,
end of generation banned so each run makes exactly --tokens tokens). The baseline is
llama-cpp-python's own streaming ``create_completion`` in this process; personad runs as
users run it (`python -m daemon serve`, a subprocess per variant, all started before the
first round):

- now: the runner process on, 4 batching slots (the defaults);
- before: the model inside the daemon, 1 slot (the single-sequence path).

--variants may also name runner-only (runner on, 1 slot) and batching-only (runner off, 4
slots): one of the two changes each, to tell which one a difference comes from.

Each round runs raw and every variant once, the order rotating by one each round so that
none always follows another. Prints per round the tok/s of each; then per side the median
and spread (min-max) over rounds, each variant's median / raw's median (target >= 0.95),
and now/before (median of the rounds' ratios, with their spread; no worse than before:
>= 1.0 within noise).

    python bench/overhead.py [--tokens 256] [--rounds 5] [--variants now,before]
                             [--flash-attn/--no-flash-attn] [--threads N] [--threads-batch N]
                             [--ctx 2048]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import httpx
import llama_cpp
from _common import (
    VARIANTS,
    VARIANTS_HELP,
    Knobs,
    describe_variants,
    parse_variants,
    personad_serve,
    rotated,
    spread,
)

from models import demo_model_path

PROMPT = "Write a long story about a lighthouse keeper and the sea."
EOG = (0, 2, 4)  # SmolLM2's end-of-generation tokens
N_CTX = 2048


def raw_run(llm: llama_cpp.Llama, tokens: int) -> float:
    """Tokens/s of llama-cpp-python's own streaming completion."""
    start = time.perf_counter()
    for _ in llm.create_completion(
        PROMPT, max_tokens=tokens, temperature=0.0, stream=True, logit_bias={t: -100.0 for t in EOG}
    ):
        pass
    # End of generation is banned, so exactly max_tokens tokens were generated.
    return tokens / (time.perf_counter() - start)


def http_run(client: httpx.Client, tokens: int) -> float:
    """Tokens/s streamed from the daemon, counted from its usage report."""
    body = {
        "model": "bench",
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in EOG},
    }
    start = time.perf_counter()
    generated = 0
    with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    generated = usage["completion_tokens"]
    elapsed = time.perf_counter() - start
    return generated / elapsed


def report(runs: dict[str, list[float]], variants: list[str]) -> None:
    """Medians, spreads and the ratios."""
    raw = statistics.median(runs["raw"])
    print(f"{'side':14s} tok/s median (min-max)  / raw median")
    for side, values in runs.items():
        to_raw = "" if side == "raw" else f"{statistics.median(values) / raw:.3f}"
        print(f"{side:14s} {spread(values, '.1f'):23s} {to_raw}")
    for name in variants:
        ratio = statistics.median(runs[name]) / raw
        print(f"target {name}/raw >= 0.95: {ratio:.3f} -> {'OK' if ratio >= 0.95 else 'MISSED'}")
    if "now" in runs and "before" in runs:
        paired = [n / b for n, b in zip(runs["now"], runs["before"], strict=True)]
        med = statistics.median(paired)
        print(
            f"now/before (per round): {spread(paired)}; no worse than before (>= 1.0) -> "
            + ("OK" if med >= 1.0 else "MISSED (look at the spread: within noise?)")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="now,before", help=VARIANTS_HELP)
    Knobs.add_arguments(parser, N_CTX)
    args = parser.parse_args()
    variants = parse_variants(args.variants)
    knobs = Knobs.from_args(args)
    print(f"every side: {knobs.describe()}; {args.tokens} tokens, greedy")
    print(describe_variants(variants))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        clients = {}
        for name in variants:
            url = stack.enter_context(personad_serve(Path(tmp) / name, knobs, VARIANTS[name]))
            clients[name] = stack.enter_context(httpx.Client(base_url=url, timeout=600))
        llm = llama_cpp.Llama(str(demo_model_path()), verbose=False, **knobs.llama_kwargs())
        measure: dict[str, Callable[[int], float]] = {"raw": partial(raw_run, llm)}
        measure |= {name: partial(http_run, client) for name, client in clients.items()}
        for run in measure.values():
            run(16)  # warm-up
        runs: dict[str, list[float]] = {side: [] for side in measure}
        for i in range(args.rounds):
            for side in rotated(list(measure), i):
                runs[side].append(measure[side](args.tokens))
            print(
                f"round {i + 1}: " + ", ".join(f"{s} {v[-1]:.1f}" for s, v in runs.items()),
                flush=True,
            )
    report(runs, variants)


if __name__ == "__main__":
    main()
