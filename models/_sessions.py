"""Where one conversation ends and the next begins: a silence of at least the session gap.

The runtime (a new conversation in a channel, the history it prompts with, catching up after
an absence) and the training-set export (where a training window restarts at INIT) must cut
history at the same places, or a model is trained on prompts it never sees. This module is
that rule, once; everything else calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["SessionTracker", "split_by_gap", "starts_session"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def starts_session(previous: datetime | None, ts: datetime, gap: timedelta) -> bool:
    """Whether an event at ``ts`` opens a conversation: nothing came before it, or the
    silence since ``previous`` lasted at least ``gap``."""
    return previous is None or ts - previous >= gap


def split_by_gap(
    items: Iterable[T], gap: timedelta, *, ts: Callable[[T], datetime]
) -> list[list[T]]:
    """``items`` (in time order) cut into conversations wherever :func:`starts_session` says."""
    sessions: list[list[T]] = []
    previous: datetime | None = None
    for item in items:
        when = ts(item)
        if starts_session(previous, when, gap):
            sessions.append([])
        sessions[-1].append(item)
        previous = when
    return sessions


class SessionTracker(Generic[K]):
    """The same rule for a stream: one last timestamp per key (a channel), nothing else.

    Memory is one timestamp per key, so a million-message export splits in constant space.
    """

    def __init__(self, gap: timedelta) -> None:
        self.gap = gap
        self._last: dict[K, datetime] = {}

    def observe(self, key: K, ts: datetime) -> bool:
        """Record an event at ``ts`` under ``key``; True when it opens a new conversation."""
        new = starts_session(self._last.get(key), ts, self.gap)
        self._last[key] = ts
        return new
