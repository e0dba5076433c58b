"""The kill switch, as stored: a paused persona stays silent, across restarts, until resumed.

These functions only write the persona's state; a running persona reads it before every
turn, every action and every start (see ``PersonaEngine.may_speak``), so it goes quiet at
once, even when the switch is thrown from another process (``personad pause``).
"""

from __future__ import annotations

from .._store import PersonaStore
from ._state import PersonaState, StateBook

__all__ = ["pause", "resume"]


def pause(store: PersonaStore, channel: str | None = None) -> PersonaState:
    """Silence the persona everywhere, or only in ``channel`` (an id)."""
    book = StateBook(store)
    if channel is None:
        return book.update(paused=True)
    return book.update(paused_channels=sorted({*book.state.paused_channels, channel}))


def resume(store: PersonaStore, channel: str | None = None) -> PersonaState:
    """Undo :func:`pause` (everywhere, or for ``channel``)."""
    book = StateBook(store)
    if channel is None:
        return book.update(paused=False)
    return book.update(paused_channels=sorted(book.state.paused_channels - {channel}))
