"""A request as the batcher sees it, and the sequence it holds while it has a slot."""

from __future__ import annotations

import codecs
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._types import GenerationParams, Piece

__all__ = ["BatchRequest", "Seq"]


@dataclass(eq=False)
class BatchRequest:
    """One generation as the batcher sees it."""

    tokens: list[int]
    params: GenerationParams
    stops: tuple[str, ...]
    cancel: threading.Event
    conversation: str | None = None
    adapter: str | None = None
    drops: int = 0
    tag: object = None
    # Set when the consumer stops reading (the generator was closed).
    abandoned: threading.Event = field(default_factory=threading.Event)
    # Pieces until one with a finish reason, or the exception that ended the request.
    out: queue.SimpleQueue[Piece | BaseException] = field(default_factory=queue.SimpleQueue)

    def pieces(self) -> Iterator[Piece]:
        """What the batcher produces for this request, until it is done."""
        try:
            while True:
                item = self.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:  # done; its state may still be saving
                    return
        finally:
            self.abandoned.set()


@dataclass(eq=False)
class Seq:
    """A request holding a slot."""

    req: BatchRequest
    seq_id: int
    sampler: Any
    limit: int
    held: list[int]  # tokens whose KV the sequence holds
    todo: list[int]  # prompt tokens still to evaluate
    cached: int
    from_store: bool
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    text: str = ""
    produced: int = 0
    row: int = -1  # its logits row in the current batch, -1 if none
    steps: int = 0
