"""Many conversations at once: personad's continuous batching against llama.cpp's llama-server.

K conversations (K = 1, 4, 8) of ~1,350 tokens each are primed one by one (so both servers
hold their KV state), then K follow-ups are sent at once. Printed per K and server: aggregate
completion tok/s (all tokens / wall time), time to first token median and max, and the
cold time to first token of the priming requests (a ~1,350-token prompt never seen). Both servers
get the same slots, threads, flash attention and per-slot context (printed). The base is
personad's single-stream rate (one slot, one request). llama-server is built once from the
llama.cpp that llama-cpp-python vendors, into ~/.cache/personad/bench (the build time is
printed); it is never part of the test command.

    python bench/concurrency.py [--ks 1,4,8] [--slots 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from models import demo_model_path

N_CTX = 4096
MAX_TOKENS = 64
NO_EOS = {"0": -100, "2": -100, "4": -100}
CACHE = Path.home() / ".cache" / "personad" / "bench"
SERVE = """
import asyncio, sys
from daemon import Settings, serve
from daemon.engine import EngineOptions, KVSettings, LlamaModel
settings = Settings.model_validate_json(sys.argv[1])
def loader(manifest):
    kv = KVSettings(settings.data_dir / "kv", settings.models.kv_cache_ram_bytes,
                    settings.models.kv_cache_disk_bytes)
    return LlamaModel(manifest, kv, EngineOptions.from_settings(settings.models))
async def main():
    async with serve(settings, wait_preload=True, loader=loader):
        await asyncio.Event().wait()
asyncio.run(main())
"""


def history(i: int, lines: int = 60) -> list[dict[str, str]]:
    """A distinct chat of ~1,350 tokens for conversation ``i``."""
    msgs = [{"role": "system", "content": f"You are Robin, chatting with friend number {i}."}]
    for j in range(lines):
        msgs.append(
            {
                "role": "user" if j % 2 == 0 else "assistant",
                "content": f"Message {j} in chat {i}: more thoughts about topic {i % 7}, "
                f"and what we could do on day {j}.",
            }
        )
    msgs.append({"role": "user", "content": "So what do you think?"})
    return msgs


def stream(url: str, messages: list[dict[str, str]], extra: dict[str, Any]) -> tuple[float, int]:
    """(seconds to first content, content chunks) of one streamed chat completion."""
    body = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True}
    start = time.perf_counter()
    first, chunks = None, 0
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**body, **extra}, timeout=900
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                if choice.get("delta", {}).get("content"):
                    first = first if first is not None else time.perf_counter() - start
                    chunks += 1
    return (first if first is not None else time.perf_counter() - start), chunks


def round_at_once(url: str, k: int, extra: dict[str, Any], tag: str) -> dict[str, float]:
    """Prime k conversations one by one, then send k follow-ups together."""
    cold = [
        stream(url, history(i), {**extra, "conversation": f"{tag}-{i}", "max_tokens": 8})[0]
        for i in range(k)
    ]
    results: dict[int, tuple[float, int]] = {}

    def one(i: int) -> None:
        follow = [*history(i), {"role": "user", "content": "And what else?"}]
        results[i] = stream(url, follow, {**extra, "conversation": f"{tag}-{i}"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts = [results[i][0] for i in range(k)]
    return {
        "tok_s": k * MAX_TOKENS / wall,
        "ttft_median": statistics.median(ttfts),
        "ttft_max": max(ttfts),
        "cold_ttft": statistics.median(cold),
    }


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, path: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(3000):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def personad(root: Path, slots: int, threads: int, threads_batch: int) -> Iterator[str]:
    """personad with the demo model, ``slots`` batching slots, in a subprocess."""
    port = _port()
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "bench.toml").write_text(
        f'path = "{demo_model_path()}"\ncontext_length = {N_CTX}\n'
    )
    settings = {
        "server": {"port": port},
        "models": {
            "dir": str(root / "models"),
            "include_demo": False,
            "default": "bench",
            "preload": ["bench"],
            "parallel": slots,
            "flash_attn": True,
            "n_threads": threads,
            "n_threads_batch": threads_batch,
            "queue_size": 64,
        },
        "data_dir": str(root / "data"),
        "log": {"level": "warning"},
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, json.dumps(settings)], stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, "/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


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
def llama_server(binary: Path, slots: int, threads: int, threads_batch: int) -> Iterator[str]:
    """llama-server with the same slots, threads, flash attention and per-slot context."""
    port = _port()
    args = [str(binary), "-m", str(demo_model_path()), "-c", str(N_CTX * slots)]
    args += ["-np", str(slots), "-t", str(threads), "-tb", str(threads_batch), "-fa", "on"]
    args += ["--port", str(port), "--host", "127.0.0.1", "--no-webui"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, "/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ks", default="1,4,8")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    parser.add_argument("--threads-batch", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-llama-server", action="store_true", help="personad only")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    binary = None if args.no_llama_server else build_llama_server()
    t, tb, slots = args.threads, args.threads_batch, args.slots
    print(f"slots={slots} n_threads={t} n_threads_batch={tb} flash_attn=on ctx/slot={N_CTX}")
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    single: list[float] = []
    for rep in range(args.repeats):  # interleaved: noise spreads over every server
        with tempfile.TemporaryDirectory() as tmp:
            with personad(Path(tmp) / "one", 1, t, tb) as url:
                single.append(round_at_once(url, 1, {"logit_bias": NO_EOS}, "s")["tok_s"])
                print(f"  personad single stream: {single[-1]:.1f} tok/s", flush=True)
            with personad(Path(tmp) / "batch", slots, t, tb) as url:
                for k in ks:
                    r = round_at_once(url, k, {"logit_bias": NO_EOS}, f"k{k}")
                    rows.setdefault(("personad", k), []).append(r)
                    print(f"  personad K={k}: {r}", flush=True)
            shutil.rmtree(Path(tmp) / "batch", ignore_errors=True)
        if binary is None:
            continue
        with llama_server(binary, slots, t, tb) as url:
            for k in ks:
                r = round_at_once(url, k, {"ignore_eos": True, "cache_prompt": True}, f"k{k}")
                rows.setdefault(("llama-server", k), []).append(r)
                print(f"  llama-server K={k}: {r}", flush=True)
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    base = statistics.median(single)
    print(f"personad single stream (1 slot): {base:.1f} tok/s (runs: {single})")
    print("K  server        agg tok/s (runs)          TTFT median s  TTFT max s  x single  cold s")
    for k in ks:
        for name in ("personad", "llama-server"):
            runs = rows.get((name, k), [])
            if not runs:
                continue
            tps = statistics.median(r["tok_s"] for r in runs)
            med = statistics.median(r["ttft_median"] for r in runs)
            mx = statistics.median(r["ttft_max"] for r in runs)
            cold = statistics.median(r["cold_ttft"] for r in runs)
            spread = ", ".join(f"{r['tok_s']:.1f}" for r in runs)
            print(
                f"{k}  {name:12s}  {tps:6.1f} ({spread:16s})  {med:12.3f}  {mx:10.3f}  "
                f"{tps / base:5.2f}     {cold:.3f}"
            )


if __name__ == "__main__":
    main()
