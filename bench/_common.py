"""What the benchmarks share: the engine settings every side gets, `personad serve` in a
subprocess ("now" and "before" variants), the long chats, a streamed chat request, medians
with their spread.

The daemon runs exactly as users run it (`python -m daemon serve`) with its settings in
``PERSONAD_*`` variables; inherited ``PERSONAD_*`` variables and the user's config file are
left out, so that only what the benchmark prints is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from models import demo_model_path

__all__ = [
    "VARIANTS",
    "VARIANTS_HELP",
    "Knobs",
    "describe_variants",
    "free_port",
    "history",
    "parse_variants",
    "personad_serve",
    "rotated",
    "spread",
    "stream_chat",
    "wait_ready",
]

# The two sides of the change being measured: continuous batching and the runner process.
VARIANTS: dict[str, dict[str, str]] = {
    "now": {"PERSONAD_RUNNER__ENABLED": "true", "PERSONAD_MODELS__PARALLEL": "4"},
    "before": {"PERSONAD_RUNNER__ENABLED": "false", "PERSONAD_MODELS__PARALLEL": "1"},
    # One change at a time, to tell which of the two a difference comes from.
    "runner-only": {"PERSONAD_RUNNER__ENABLED": "true", "PERSONAD_MODELS__PARALLEL": "1"},
    "batching-only": {"PERSONAD_RUNNER__ENABLED": "false", "PERSONAD_MODELS__PARALLEL": "4"},
}
VARIANTS_HELP = (
    "comma-separated personad variants: now = runner on, parallel 4 (the defaults); "
    "before = runner off (model inside the daemon), parallel 1 (single-sequence path); "
    "runner-only and batching-only change one of the two"
)
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


@dataclass(frozen=True)
class Knobs:
    """Engine settings given explicitly to every side, so none runs on other defaults."""

    flash_attn: bool
    n_threads: int
    n_threads_batch: int
    n_ctx: int

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, n_ctx: int) -> None:
        """``--flash-attn/--no-flash-attn``, ``--threads``, ``--threads-batch``, ``--ctx``."""
        # The defaults are personad's on a CPU (flash attention "auto" is off there).
        cores = os.cpu_count() or 1
        flash = argparse.BooleanOptionalAction
        parser.add_argument("--flash-attn", action=flash, default=False, help="default: off")
        parser.add_argument(
            "--threads", type=int, default=max(cores // 2, 1), help="default: half the cores"
        )
        parser.add_argument(
            "--threads-batch", type=int, default=cores, help="default: all the cores"
        )
        parser.add_argument("--ctx", type=int, default=n_ctx, help="context per sequence")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Knobs:
        """The knobs given on the command line."""
        return cls(args.flash_attn, args.threads, args.threads_batch, args.ctx)

    def env(self) -> dict[str, str]:
        """The same settings for `personad serve`."""
        return {
            "PERSONAD_MODELS__FLASH_ATTN": str(self.flash_attn).lower(),
            "PERSONAD_MODELS__N_THREADS": str(self.n_threads),
            "PERSONAD_MODELS__N_THREADS_BATCH": str(self.n_threads_batch),
        }

    def llama_kwargs(self) -> dict[str, Any]:
        """The same settings for ``llama_cpp.Llama``."""
        return {
            "n_ctx": self.n_ctx,
            "flash_attn": self.flash_attn,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch,
        }

    def describe(self) -> str:
        """One line for the output."""
        return (
            f"flash_attn={'on' if self.flash_attn else 'off'} n_threads={self.n_threads} "
            f"n_threads_batch={self.n_threads_batch} n_ctx={self.n_ctx}"
        )


def parse_variants(text: str) -> list[str]:
    """Variant names from ``--variants``; exits naming the known ones on a typo."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    return names


def describe_variants(names: Sequence[str]) -> str:
    """The variants' settings, a line each, for the output."""
    return "\n".join(
        f"  {name}: {' '.join(f'{k}={v}' for k, v in VARIANTS[name].items())}" for name in names
    )


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], path: str = "/health", model: str | None = None
) -> None:
    """Poll ``url + path`` until it answers 200 (and lists ``model`` as loaded, if given)."""
    for _ in range(6000):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(url + path, timeout=2)
            if r.status_code == 200 and (model is None or model in r.json().get("loaded", [])):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def personad_serve(workdir: Path, knobs: Knobs, env: Mapping[str, str]) -> Iterator[str]:
    """`python -m daemon serve` with the demo model as "bench", preloaded, its data (KV
    states) in ``workdir``; yields the URL once the model is loaded. Starting it again on
    the same ``workdir`` is a restart."""
    (workdir / "models").mkdir(parents=True, exist_ok=True)
    (workdir / "models" / "bench.toml").write_text(
        f'path = "{demo_model_path()}"\ncontext_length = {knobs.n_ctx}\n'
    )
    (workdir / "personad.toml").touch()
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAD_")}
    full |= {
        "PERSONAD_CONFIG": str(workdir / "personad.toml"),
        "PERSONAD_DATA_DIR": str(workdir / "data"),
        "PERSONAD_MODELS__DIR": str(workdir / "models"),
        "PERSONAD_MODELS__INCLUDE_DEMO": "false",
        "PERSONAD_MODELS__DEFAULT": "bench",
        "PERSONAD_MODELS__KEEP_ALIVE": "-1",
        "PERSONAD_LOG__LEVEL": "warning",
        **knobs.env(),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--port", str(port), "-p", "bench"],
        env=full,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "/health", "bench")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def history(i: int, lines: int = 60) -> list[dict[str, str]]:
    """A distinct long chat for conversation i: ~32 tokens a line (~1,350 at 42, ~1,900 at 60)."""
    topic = TOPICS[i % len(TOPICS)]
    msgs = [{"role": "system", "content": f"You are Robin, chatting with friend number {i}."}]
    for j in range(lines):
        msgs.append(
            {
                "role": "user" if j % 2 == 0 else "assistant",
                "content": f"Message {j} in chat {i}: more thoughts about "
                f"{topic}, and what we could do on day {j}.",
            }
        )
    msgs.append({"role": "user", "content": f"So what do you think about {topic}?"})
    return msgs


def stream_chat(client: httpx.Client, body: Mapping[str, Any]) -> tuple[float, str, int]:
    """(seconds to the first content chunk, the text, content chunks) of a streamed chat."""
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first if first is not None else time.perf_counter() - start
                    text.append(piece)
    return (first if first is not None else time.perf_counter() - start), "".join(text), len(text)


def rotated(items: Sequence[str], i: int) -> list[str]:
    """``items`` starting at position ``i``, so each goes first in turn."""
    k = i % len(items) if items else 0
    return [*items[k:], *items[:k]]


def spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """'median (min-max)'."""
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
