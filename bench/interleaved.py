"""Time to first token for follow-ups in many interleaved conversations, now against before.

N conversations of ~1,900 tokens each (--lines 60) go through the chat template; then a
follow-up to each is asked round-robin, and the median time to the first streamed token of
that second round is measured; then the daemon is restarted on the same data dir (KV states
found on disk) and the follow-ups are asked again. That is done for two personad variants,
both run as users run it (`python -m daemon serve`) with the same flash attention, threads
and context (printed):

- now: the runner process on, 4 batching slots (the defaults);
- before: the model inside the daemon, 1 slot (the single-sequence path).

--variants may also name runner-only (runner on, 1 slot) and batching-only (runner off, 4
slots): one of the two changes each, to tell which one a difference comes from.

Each of --repeats repeats runs every variant on a fresh data dir (a fresh conversation set),
in an order that rotates (alternates, with two) from one repeat to the next. Prints per
variant the median over repeats of each repeat's median follow-up TTFT, its spread (min-max),
the same after the restart, and now/before (the repeats' paired ratios: median and spread),
with the targets: now <= 0.16 s (runner in between; before and after the restart) and
now/before <= 1.0 (no worse than before).

With --baselines, llama-cpp-python's own server (without and with its prompt cache, same
knobs) is measured once after the repeats, for reference; it takes long, so it is off by
default (it needs llama-cpp-python's "server" extra).

    python bench/interleaved.py [--conversations 8] [--lines 60] [--repeats 3]
                                [--variants now,before] [--baselines]
                                [--flash-attn/--no-flash-attn] [--threads N] [--threads-batch N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _common import (
    VARIANTS,
    VARIANTS_HELP,
    Knobs,
    describe_variants,
    free_port,
    history,
    parse_variants,
    personad_serve,
    rotated,
    spread,
    stream_chat,
    wait_ready,
)

from models import demo_model_path

N_CTX = 4096
TARGET_S = 0.16


def two_rounds(
    url: str, n: int, lines: int, keyed: bool, replies: dict[int, str] | None = None
) -> tuple[list[float], dict[int, str]]:
    """Round one builds each conversation's state (unless ``replies`` are given: a restart);
    round two measures the follow-ups."""
    body: dict[str, Any] = {"max_tokens": 16, "temperature": 0.0}

    def extra(i: int) -> dict[str, str]:
        return {"conversation": f"chat-{i}", "model": "bench"} if keyed else {}

    with httpx.Client(base_url=url, timeout=900) as client:
        if replies is None:
            replies = {
                i: stream_chat(client, {**body, **extra(i), "messages": history(i, lines)})[1]
                for i in range(n)
            }
        times = []
        for i in range(n):
            follow = [
                *history(i, lines),
                {"role": "assistant", "content": replies[i]},
                {"role": "user", "content": "and what else?"},
            ]
            times.append(stream_chat(client, {**body, **extra(i), "messages": follow})[0])
    return times, replies


@contextmanager
def llama_cpp_server(knobs: Knobs, cache: bool) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server on the same model and knobs."""
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(demo_model_path())]
    args += ["--n_ctx", str(knobs.n_ctx), "--flash_attn", str(knobs.flash_attn)]
    args += ["--n_threads", str(knobs.n_threads), "--n_threads_batch", str(knobs.n_threads_batch)]
    args += ["--port", str(port), "--host", "127.0.0.1"]
    if cache:
        args += ["--cache", "true"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "/v1/models")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def one_variant(workdir: Path, knobs: Knobs, name: str, n: int, lines: int) -> tuple[float, float]:
    """(median follow-up TTFT, the same after a restart) of one variant on a fresh data dir."""
    with personad_serve(workdir, knobs, VARIANTS[name]) as url:
        times, replies = two_rounds(url, n, lines, keyed=True)
    with personad_serve(workdir, knobs, VARIANTS[name]) as url:  # a restart: same data dir
        again, _ = two_rounds(url, n, lines, keyed=True, replies=replies)
    print(
        f"  {name}: median TTFT {statistics.median(times):.3f} s "
        f"(all: {', '.join(f'{t:.2f}' for t in times)}), "
        f"after restart {statistics.median(again):.3f} s",
        flush=True,
    )
    return statistics.median(times), statistics.median(again)


def report(runs: dict[str, list[tuple[float, float]]], baselines: dict[str, float]) -> None:
    """Per variant the medians over repeats with their spread; the ratios and the targets."""
    print(f"{'variant':14s} follow-up TTFT s median (min-max)  after restart s median (min-max)")
    for name, pairs in runs.items():
        print(f"{name:14s} {spread([p[0] for p in pairs]):33s} {spread([p[1] for p in pairs])}")
    ref = statistics.median(p[0] for p in runs["now"]) if "now" in runs else None
    for name, value in baselines.items():
        vs = f"   ratio to now {value / ref:5.1f}x" if ref else ""
        print(f"{name:40s} {value:7.3f} s{vs}")
    if "now" in runs:
        now = statistics.median(p[0] for p in runs["now"])
        again = statistics.median(p[1] for p in runs["now"])
        ok = max(now, again) <= TARGET_S
        print(
            f"target: now <= {TARGET_S} s (runner in between), follow-up {now:.3f} s, "
            f"after restart {again:.3f} s -> {'OK' if ok else 'MISSED'}"
        )
    if "now" in runs and "before" in runs:
        paired = [n[0] / b[0] for n, b in zip(runs["now"], runs["before"], strict=True)]
        restart = [n[1] / b[1] for n, b in zip(runs["now"], runs["before"], strict=True)]
        med = statistics.median(paired)
        print(
            f"target: now/before <= 1.0 (no worse than before): {spread(paired)} "
            f"(after restart {spread(restart)}) -> "
            + ("OK" if med <= 1.0 else "MISSED (look at the spread: within noise?)")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--lines", type=int, default=60, help="chat lines, ~32 tokens each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="now,before", help=VARIANTS_HELP)
    parser.add_argument(
        "--baselines", action="store_true", help="also llama-cpp-python's server (slow)"
    )
    Knobs.add_arguments(parser, N_CTX)
    args = parser.parse_args()
    variants, knobs = parse_variants(args.variants), Knobs.from_args(args)
    n, lines = args.conversations, args.lines
    print(f"every side: {knobs.describe()}; {n} conversations of {lines} lines")
    print(describe_variants(variants))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for rep in range(args.repeats):
        for name in rotated(variants, rep):
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(one_variant(Path(tmp), knobs, name, n, lines))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    baselines: dict[str, float] = {}
    for cache in (False, True) if args.baselines else ():
        name = f"llama-cpp-python server{' --cache true' if cache else ''}"
        with llama_cpp_server(knobs, cache) as url:
            times, _ = two_rounds(url, n, lines, keyed=False)
        baselines[name] = statistics.median(times)
        print(f"{name}: median TTFT {baselines[name]:.3f} s", flush=True)
    report(runs, baselines)


if __name__ == "__main__":
    main()
