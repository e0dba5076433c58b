"""Measure flash attention and thread counts on this machine, to pick the engine's defaults.

For every combination of flash attention (off/on), ``n_threads`` and ``n_threads_batch``
(1..cores), a cold request is timed: a ~1,350-token chat never seen before (prompt
evaluation), then 48 greedy tokens (decoding); then a follow-up in the same conversation
(its state live: a persona's usual request), timed to its first token. The combinations run
interleaved, round after round, so machine noise spreads over all of them; medians and
spread are printed. ``--threads 1,2`` measures only that thread pair.

    python bench/defaults.py [--rounds 5] [--threads N,M]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import threading
import time

from daemon._types import GenerationParams
from daemon.engine import EngineOptions, LlamaModel
from models import ModelManifest, demo_model_path

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "people",
    "talk",
    "about",
    "hiking",
    "and",
    "coffee",
]


def chat(seed: int, n_lines: int = 60) -> list[dict[str, str]]:
    """A distinct chat of about 1,350 tokens."""
    msgs = [{"role": "system", "content": f"You are Robin, chatting with friend {seed}."}]
    for j in range(n_lines):
        words = [WORDS[(seed * 7 + j * 3 + k) % len(WORDS)] for k in range(16)]
        msgs.append({"role": "user" if j % 2 == 0 else "assistant", "content": " ".join(words)})
    msgs.append({"role": "user", "content": f"What do you think, friend {seed}?"})
    return msgs


def timed(
    model: LlamaModel, messages: list[dict[str, str]], n_tokens: int
) -> tuple[float, float, str]:
    """(seconds to first token, decode tok/s, text) of one greedy request."""
    prompt = model.chat_prompt(messages)
    params = GenerationParams(max_tokens=n_tokens, temperature=0.0, stop=("\x00",))
    start = time.perf_counter()
    first = None
    produced = 0
    text = ""
    for piece in model.generate(prompt, params, threading.Event(), conversation="c"):
        if first is None:
            first = time.perf_counter()
        text += piece.text
        if piece.finish_reason is not None:
            produced = piece.completion_tokens
    end = time.perf_counter()
    assert first is not None
    return first - start, max(produced - 1, 1) / max(end - first, 1e-9), text


def run_once(model: LlamaModel, seed: int, n_tokens: int) -> tuple[float, float, float]:
    """(cold seconds to first token, decode tok/s, follow-up seconds to first token)."""
    messages = chat(seed)
    cold, tps, text = timed(model, messages, n_tokens)
    reply = [{"role": "assistant", "content": text}, {"role": "user", "content": "and?"}]
    follow = [*messages, *reply]
    return cold, tps, timed(model, follow, 8)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", help="only this n_threads,n_threads_batch pair")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = sorted({1, cores})
    pairs = list(itertools.product(threads, threads))
    if args.threads:
        n, nb = (int(x) for x in args.threads.split(","))
        pairs = [(n, nb)]
    combos = [(fa, n, nb) for fa in (False, True) for n, nb in pairs]
    manifest = ModelManifest(name="demo", path=demo_model_path(), context_length=4096)
    models = {
        c: LlamaModel(
            manifest,
            options=EngineOptions(flash_attn=c[0], n_threads=c[1], n_threads_batch=c[2]),
        )
        for c in combos
    }
    runs: dict[tuple[bool, int, int], list[tuple[float, float, float]]] = {c: [] for c in combos}
    seed = 0
    for r in range(args.rounds + 1):
        for c in combos:
            seed += 1  # never the same prompt twice: every request is cold
            result = run_once(models[c], seed, args.tokens)
            if r > 0:  # round 0 warms caches and the page cache
                runs[c].append(result)
    n_prompt = len(next(iter(models.values())).chat_prompt(chat(0)).tokens)
    print(f"cores={cores} prompt_tokens={n_prompt} rounds={args.rounds}")
    print("flash_attn threads/batch | cold TTFT s        | decode tok/s     | follow-up TTFT s")
    for c in combos:
        cols = []
        for i, fmt in ((0, "{:.3f}"), (1, "{:.1f}"), (2, "{:.3f}")):
            xs = [run[i] for run in runs[c]]
            cols.append(
                f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"
            )
        print(f"{'on ' if c[0] else 'off'}        {c[1]}/{c[2]}      | " + " | ".join(cols))
    for model in models.values():
        model.close()


if __name__ == "__main__":
    main()
