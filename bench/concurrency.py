"""Many conversations at once: personad's continuous batching against llama.cpp's llama-server.

K conversations (K = 1, 4, 8) of ~1,350 tokens each (--lines 42) are primed one by one (so
both servers hold their KV state), then K follow-ups are sent at once, --rounds times (each
round's follow-up is new text). Measured per K and server: aggregate completion tok/s (all
tokens / wall time) and time to first token median and max of each burst, and the cold time
to first token of each priming request (a ~1,350-token prompt never seen). Every server gets
the same slots, threads, flash attention and per-slot context (printed).

personad runs as users run it (`python -m daemon serve`, the model preloaded, queue_size 64).
The servers of a repeat are all up at once, each on a fresh data dir: "personad" (now:
--slots slots, the runner process on), "single" (1 slot, runner on, K = 1: the single stream
the largest K is compared to), "before" (1 slot, the model inside the daemon, K = 1: the state
before the change) and llama-server. Primings and bursts alternate between the servers, in an
order that rotates, so every ratio pairs two measurements taken a few seconds apart on this
noisy machine. llama-server is built once from the llama.cpp that llama-cpp-python vendors,
into ~/.cache/personad/bench (the build time is printed); it is never part of the test
command.

Prints each burst, then per K and server the median and spread (min-max) of every measure,
and the ratios (medians of the paired ratios, with their spread and count):
K = 1 now/before (tok/s >= 1.0 and TTFT <= 1.0: no worse than before the runner and
batching) and now/single (the same for batching alone; K = 1 bursts run 3 x --rounds times,
as these are small differences), K = 8 aggregate / llama-server's (>= 1.0), K = 8 aggregate /
personad single stream (>= 1.4), K = 8 TTFT max / (2 x llama-server's) (<= 1.0), cold TTFT /
llama-server's (<= 1.05: within 5 %). K = 8 stands for the largest K given.

    python bench/concurrency.py [--ks 1,4,8] [--slots 8] [--repeats 2] [--rounds 3]
                                [--lines 42] [--no-llama-server]
                                [--flash-attn/--no-flash-attn] [--threads N] [--threads-batch N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Knobs,
    free_port,
    history,
    personad_serve,
    rotated,
    spread,
    stream_chat,
    wait_ready,
)

from models import demo_model_path

N_CTX = 4096
MAX_TOKENS = 64
# Seconds between two measurements: a server's work after a reply (personad copies KV states
# to its store once the loop is idle) must not fall into the next server's measurement.
SETTLE = 1.0
# K = 1 bursts per --rounds.
K1_ROUNDS = 3
NO_EOS = {"0": -100, "2": -100, "4": -100}
LL_EXTRA = {"ignore_eos": True, "cache_prompt": True}
CACHE = Path.home() / ".cache" / "personad" / "bench"
# One row of results: aggregate tok/s, TTFT median and max, cold TTFT.
Row = dict[str, float]
METRICS = (("tok_s", ".1f"), ("ttft_median", ".3f"), ("ttft_max", ".3f"))


def stream(url: str, messages: list[dict[str, str]], extra: dict[str, Any]) -> float:
    """Seconds to the first content of one streamed chat completion."""
    body = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.0, **extra}
    with httpx.Client(base_url=url, timeout=900) as client:
        return stream_chat(client, body)[0]


def prime(url: str, k: int, i: int, extra: dict[str, Any], lines: int) -> float:
    """Seconds to the first token of the i-th of k conversations' history, never seen before
    (every K has chats of its own)."""
    return stream(
        url, history(100 * k + i, lines), {**extra, "conversation": f"k{k}-{i}", "max_tokens": 8}
    )


def burst(url: str, k: int, extra: dict[str, Any], lines: int, turn: int) -> Row:
    """Send a follow-up to each of k primed conversations at once; ``turn`` makes each
    round's follow-up new text, so every round evaluates it afresh."""
    results: dict[int, float] = {}

    def one(i: int) -> None:
        ask = {"role": "user", "content": f"And what else, take {turn + 1}?"}
        chat = [*history(100 * k + i, lines), ask]
        results[i] = stream(url, chat, {**extra, "conversation": f"k{k}-{i}"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts = [results[i] for i in range(k)]
    return {
        "tok_s": k * MAX_TOKENS / wall,
        "ttft_median": statistics.median(ttfts),
        "ttft_max": max(ttfts),
    }


def personad_env(slots: int, runner: bool) -> dict[str, str]:
    """`personad serve` settings for ``slots`` slots, the runner on or off."""
    return {
        "PERSONAD_RUNNER__ENABLED": str(runner).lower(),
        "PERSONAD_MODELS__PARALLEL": str(slots),
        "PERSONAD_MODELS__QUEUE_SIZE": "64",
    }


def build_llama_server() -> Path:
    """llama-server from llama-cpp-python's vendored llama.cpp, built once (CPU)."""
    binary = CACHE / "llama-server-build" / "bin" / "llama-server"
    if binary.exists():
        print(f"llama-server: cached build {binary}")
        return binary
    src = CACHE / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    if not src.exists():
        found = sorted(Path(tempfile.gettempdir()).glob("pip-*/llama_cpp_python-*.tar.gz"))
        found += sorted((Path.home() / ".cache" / "pip").rglob("llama_cpp_python-*.tar.gz"))
        if not found:
            raise SystemExit("no llama-cpp-python sdist found: pip download llama-cpp-python")
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(found[-1]) as tar:
            tar.extractall(CACHE, filter="data")
    start = time.perf_counter()
    build = CACHE / "llama-server-build"
    subprocess.run(
        ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"],
        check=True,
    )  # fmt: skip
    jobs = str(os.cpu_count() or 1)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True
    )
    print(f"llama-server: built in {time.perf_counter() - start:.0f} s")
    return binary


@contextmanager
def llama_server(binary: Path, slots: int, knobs: Knobs) -> Iterator[str]:
    """llama-server with the same slots, threads, flash attention and per-slot context."""
    port = free_port()
    args = [str(binary), "-m", str(demo_model_path()), "-c", str(knobs.n_ctx * slots)]
    args += ["-np", str(slots), "-t", str(knobs.n_threads), "-tb", str(knobs.n_threads_batch)]
    args += ["-fa", "on" if knobs.flash_attn else "off"]
    args += ["--port", str(port), "--host", "127.0.0.1", "--no-webui"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "/health")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


# Rows as (server, K); "single" and "before" run K = 1 only.
Rows = dict[tuple[str, int], list[Row]]


@dataclass(frozen=True)
class Setup:
    """What every repeat runs with."""

    ks: list[int]
    slots: int
    knobs: Knobs
    lines: int
    rounds: int
    binary: Path | None


@dataclass
class Results:
    """Bursts (one row per round) and cold primings (one row per conversation), appended in
    the same order for every server, so the n-th rows of two servers at one K ran side by
    side."""

    bursts: Rows = field(default_factory=dict)
    colds: Rows = field(default_factory=dict)


def one_repeat(rep: int, setup: Setup, results: Results) -> None:
    """Every server up at once, each on a fresh data dir; per K, the primings and then the
    bursts alternate between them, in an order that rotates, so that a slow minute of the
    machine falls on all of them."""
    knobs, slots, binary = setup.knobs, setup.slots, setup.binary
    servers: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
        "personad": lambda d: personad_serve(d, knobs, personad_env(slots, runner=True)),
        "single": lambda d: personad_serve(d, knobs, personad_env(1, runner=True)),
        "before": lambda d: personad_serve(d, knobs, personad_env(1, runner=False)),
    }
    if binary is not None:
        servers["llama-server"] = lambda _: llama_server(binary, slots, knobs)
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                start(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            )
            for name, start in servers.items()
        }
        for k in setup.ks:
            names = [n for n in urls if k == 1 or n not in ("single", "before")]
            for i in range(k):
                for name in rotated(names, rep + i):
                    cold = prime(urls[name], k, i, extra_for(name), setup.lines)
                    time.sleep(SETTLE)
                    results.colds.setdefault((name, k), []).append({"cold_ttft": cold})
                    print(f"  {name} K={k} cold: {cold:.3f}")
            # A K = 1 burst is short and its ratios are small differences: more of them.
            for turn in range(setup.rounds * (K1_ROUNDS if k == 1 else 1)):
                for name in rotated(names, rep + turn):
                    r = burst(urls[name], k, extra_for(name), setup.lines, turn)
                    results.bursts.setdefault((name, k), []).append(r)
                    print(f"  {name} K={k}: " + ", ".join(f"{m} {v:.3f}" for m, v in r.items()))
                    time.sleep(SETTLE)


def extra_for(name: str) -> dict[str, Any]:
    """What each server needs to generate MAX_TOKENS tokens and keep its prompt cache."""
    return LL_EXTRA if name == "llama-server" else {"logit_bias": NO_EOS}


def check(
    rows: Rows,
    label: str,
    pair: tuple[tuple[str, int], tuple[str, int]],
    key: str,
    goal: str,
    scale: float = 1.0,
) -> None:
    """Print the paired ratios a / (scale x b) of ``key`` (median and spread) against
    ``goal`` (">= 1.4", "<= 1.0"). Pairs are the n-th rows of each: side by side at one K;
    across Ks, where K = 1 has more rounds, a row of a and the median of as many of b's
    rows (of the same repeat)."""
    a, b = pair
    if a not in rows or b not in rows:
        print(f"{label}: n/a ({a[0] if a not in rows else b[0]} K={b[1]} not run)")
        return
    per = len(rows[b]) // len(rows[a])
    base = [
        statistics.median(y[key] for y in rows[b][i * per : (i + 1) * per])
        for i in range(len(rows[a]))
    ]
    paired = [x[key] / (scale * y) for x, y in zip(rows[a], base, strict=True)]
    med, (op, bound) = statistics.median(paired), goal.split()
    ok = med >= float(bound) if op == ">=" else med <= float(bound)
    print(
        f"{label}: {spread(paired)} over {len(paired)} (goal {goal}) -> {'OK' if ok else 'MISSED'}"
    )


def report(results: Results, ks: list[int]) -> None:
    """Medians and spreads of every row; the ratios with their goals."""
    rows, colds = results.bursts, results.colds
    print("personad = --slots slots, runner on (now); single = 1 slot, runner on; "
          "before = 1 slot, runner off")  # fmt: skip
    print("K  server        agg tok/s med (min-max)  TTFT med s (min-max)  TTFT max s (min-max)  "
          "cold s (min-max)")  # fmt: skip
    for (name, k), runs in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0])):
        cols = [spread([r[m] for r in runs], f) for m, f in METRICS]
        cols.append(spread([r["cold_ttft"] for r in colds[name, k]]))
        print(f"{k}  {name:12s}  " + "  ".join(f"{c:20s}" for c in cols).rstrip())
    top = max(ks)
    k1 = (("personad", 1), ("before", 1))
    batching = (("personad", 1), ("single", 1))
    ll = (("personad", top), ("llama-server", top))
    check(rows, "K=1 tok/s now/before", k1, "tok_s", ">= 1.0")
    check(rows, "K=1 TTFT median now/before", k1, "ttft_median", "<= 1.0")
    check(rows, "K=1 tok/s now/single (batching alone)", batching, "tok_s", ">= 1.0")
    check(rows, "K=1 TTFT median now/single (batching alone)", batching, "ttft_median", "<= 1.0")
    check(rows, f"K={top} agg tok/s / llama-server's", ll, "tok_s", ">= 1.0")
    single = (("personad", top), ("single", 1))
    check(rows, f"K={top} agg tok/s / personad single stream", single, "tok_s", ">= 1.4")
    check(rows, f"K={top} TTFT max / (2 x llama-server's)", ll, "ttft_max", "<= 1.0", scale=2.0)
    check(colds, f"K={top} cold TTFT / llama-server's", ll, "cold_ttft", "<= 1.05")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ks", default="1,4,8")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="fresh servers each")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per K and repeat")
    parser.add_argument("--lines", type=int, default=42, help="chat lines, ~32 tokens each")
    parser.add_argument("--no-llama-server", action="store_true", help="personad only")
    Knobs.add_arguments(parser, N_CTX)
    args = parser.parse_args()
    binary = None if args.no_llama_server else build_llama_server()
    ks = [int(k) for k in args.ks.split(",")]
    setup = Setup(ks, args.slots, Knobs.from_args(args), args.lines, args.rounds, binary)
    print(f"slots={setup.slots} {setup.knobs.describe()} (n_ctx per slot), {args.lines} lines")
    results = Results()
    for rep in range(args.repeats):
        one_repeat(rep, setup, results)
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    report(results, ks)


if __name__ == "__main__":
    main()
