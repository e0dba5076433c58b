"""Plain data passed between the API, the service and the engine (no llama.cpp import)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["GenerationParams", "Piece", "Prompt", "stop_holdback"]


@dataclass(frozen=True)
class Prompt:
    """Tokens ready to evaluate, plus stop strings the prompt format implies."""

    tokens: list[int]
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    """Sampling and stopping, already merged with the model's defaults."""

    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Piece:
    """A slice of generated text; the last one carries ``finish_reason`` and token counts."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    # On the last piece: prompt tokens taken from a stored or live KV state, not evaluated.
    cached_tokens: int = 0
    cache_hit: bool = False


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
