"""Streaming tokens/s through personad's HTTP API against raw llama-cpp-python, interleaved.

Both sides load the same GGUF with the same context, threads and sampling (greedy, end of
generation banned so each run makes exactly --tokens tokens). The daemon runs as a subprocess
(`personad serve`), the baseline in this process; rounds alternate so that machine noise hits
both. Prints the median of each and their ratio (target >= 0.95).

    python bench/overhead.py [--tokens 256] [--rounds 5]
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
from pathlib import Path

import httpx
import llama_cpp

from models import demo_model_path

PROMPT = "Write a long story about a lighthouse keeper and the sea."
EOG = (0, 2, 4)  # SmolLM2's end-of-generation tokens
N_CTX = 2048


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model = demo_model_path()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "models").mkdir()
    (tmp / "models" / "bench.toml").write_text(f'path = "{model}"\ncontext_length = {N_CTX}\n')
    port = _free_port()
    env = {
        **os.environ,
        "PERSONAD_MODELS__DIR": str(tmp / "models"),
        "PERSONAD_MODELS__KEEP_ALIVE": "-1",
        "PERSONAD_LOG__LEVEL": "warning",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--port", str(port), "-p", "bench"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        llm = llama_cpp.Llama(str(model), n_ctx=N_CTX, verbose=False)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            while True:
                try:
                    if client.get("/health").json()["loaded"] == ["bench"]:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            raw_run(llm, 16)  # warm-up both
            http_run(client, 16)
            raws, https = [], []
            for i in range(args.rounds):
                # Alternate which goes first so neither always follows the other.
                if i % 2:
                    https.append(http_run(client, args.tokens))
                    raws.append(raw_run(llm, args.tokens))
                else:
                    raws.append(raw_run(llm, args.tokens))
                    https.append(http_run(client, args.tokens))
                print(
                    f"round {i + 1}: raw {raws[-1]:.1f} tok/s, http {https[-1]:.1f} tok/s",
                    flush=True,
                )
        raw, http = statistics.median(raws), statistics.median(https)
        print(f"raw llama-cpp-python (create_completion, stream): {raw:.1f} tok/s (median)")
        print(f"personad HTTP API (SSE stream):                   {http:.1f} tok/s (median)")
        print(f"ratio http/raw: {http / raw:.3f} (target >= 0.95)")
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
