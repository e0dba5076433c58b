"""Time to first token for follow-ups in many interleaved conversations.

N conversations of ~1,350 tokens each go through the chat template; then a follow-up to each
is asked round-robin, and the median time to the first streamed token of that second round is
measured: for personad (per-conversation KV states), again for personad after a restart
(states found on disk), and in the same run for llama-cpp-python's own server without and
with its prompt cache. Prints each median and the ratios. Target here: <= 0.25 s for
personad, before and after the restart.

    python bench/interleaved.py [--conversations 8] [--lines 60]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from models import demo_model_path

N_CTX = 4096
TOPICS = [
    "hiking",
    "coffee",
    "a new game",
    "the weather",
    "a concert",
    "cooking",
    "a trip",
    "a movie",
    "work",
    "the cat",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def history(i: int, lines: int) -> list[dict[str, str]]:
    """A distinct long chat (about 22 tokens a line) for conversation ``i``."""
    topic = TOPICS[i % len(TOPICS)]
    msgs = [{"role": "system", "content": f"You are Robin, chatting with friend number {i}."}]
    for j in range(lines):
        role = "user" if j % 2 == 0 else "assistant"
        msgs.append(
            {
                "role": role,
                "content": f"Message {j} in chat {i}: more thoughts about "
                f"{topic}, and what we could do on day {j}.",
            }
        )
    msgs.append({"role": "user", "content": f"So what do you think about {topic}?"})
    return msgs


def ttft(
    client: httpx.Client, messages: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[float, str]:
    """Seconds to the first content chunk of a streamed chat completion, and the full text."""
    body = {"messages": messages, "max_tokens": 16, "temperature": 0.0, "stream": True, **extra}
    start = time.perf_counter()
    first = None
    text = []
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter() - start
                    text.append(piece)
    return (first if first is not None else time.perf_counter() - start), "".join(text)


def two_rounds(
    url: str, n: int, lines: int, keyed: bool, replies: dict[int, str] | None = None
) -> tuple[list[float], dict[int, str]]:
    """Round one builds each conversation's state; round two measures follow-ups."""
    with httpx.Client(base_url=url, timeout=900) as client:
        if replies is None:
            replies = {}
            for i in range(n):
                extra = {"conversation": f"chat-{i}", "model": "bench"} if keyed else {}
                replies[i] = ttft(client, history(i, lines), extra)[1]
        times = []
        for i in range(n):
            follow = [
                *history(i, lines),
                {"role": "assistant", "content": replies[i]},
                {"role": "user", "content": "and what else?"},
            ]
            extra = {"conversation": f"chat-{i}", "model": "bench"} if keyed else {}
            times.append(ttft(client, follow, extra)[0])
    return times, replies


def _wait(url: str, path: str = "/v1/models") -> None:
    for _ in range(1200):
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def personad(data: Path, models: Path) -> Iterator[str]:
    """`personad serve` with the demo model preloaded and KV states in ``data``."""
    port = _port()
    env = {
        **os.environ,
        "PERSONAD_DATA_DIR": str(data),
        "PERSONAD_MODELS__DIR": str(models),
        "PERSONAD_MODELS__INCLUDE_DEMO": "false",
        "PERSONAD_LOG__LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--port", str(port), "-p", "bench"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, "/health")  # 200 once the preloaded model is in memory
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


@contextmanager
def llama_cpp_server(cache: bool) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server on the same model."""
    port = _port()
    args = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(demo_model_path()),
        "--n_ctx",
        str(N_CTX),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    if cache:
        args += ["--cache", "true"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--lines", type=int, default=60, help="~22 tokens each")
    args = parser.parse_args()
    n, lines = args.conversations, args.lines
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        (root / "models" / "bench.toml").write_text(
            f'path = "{demo_model_path()}"\ncontext_length = {N_CTX}\n'
        )
        with personad(root / "data", root / "models") as url:
            times, replies = two_rounds(url, n, lines, keyed=True)
            results["personad"] = statistics.median(times)
            print(
                f"personad: median TTFT {results['personad']:.3f} s "
                f"(all: {', '.join(f'{t:.2f}' for t in times)})",
                flush=True,
            )
        with personad(root / "data", root / "models") as url:  # a restart: same data dir
            times, _ = two_rounds(url, n, lines, keyed=True, replies=replies)
            results["personad after restart"] = statistics.median(times)
            print(
                f"personad after restart: median TTFT {results['personad after restart']:.3f} s",
                flush=True,
            )
    for cache in (False, True):
        name = f"llama-cpp-python server{' --cache true' if cache else ''}"
        with llama_cpp_server(cache) as url:
            times, _ = two_rounds(url, n, lines, keyed=False)
            results[name] = statistics.median(times)
            print(f"{name}: median TTFT {results[name]:.3f} s", flush=True)
    ours = results["personad"]
    for name, value in results.items():
        print(f"{name:40s} {value:7.3f} s   ratio to personad {value / ours:6.1f}x")
    print(
        "target: personad <= 0.25 s before and after restart -> "
        + ("OK" if max(ours, results["personad after restart"]) <= 0.25 else "MISSED")
    )


if __name__ == "__main__":
    main()
