"""The dashboard's data: persona snapshots (from the composition root) and recent errors."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["ConversationSummary", "ErrorNote", "PersonaBoard", "PersonaSnapshot", "RecentErrors"]


@dataclass(frozen=True)
class ConversationSummary:
    """One channel's latest activity."""

    bridge: str
    channel: str
    last_at: datetime
    last_author: str
    last_text: str


@dataclass(frozen=True)
class PersonaSnapshot:
    """One persona as the dashboard shows it."""

    name: str
    online: bool
    reason: str | None
    paused: bool
    upcoming: Sequence[tuple[datetime, str]] = ()
    conversations: Sequence[ConversationSummary] = ()
    messages_today: int = 0
    # Messages in each of the last 24 hours, oldest first, and the hour each starts at.
    by_hour: Sequence[tuple[datetime, int]] = ()
    until: datetime | None = None


class PersonaBoard(Protocol):
    """What the dashboard needs of the personas; ``personad run`` implements it.

    Example::

        class Board:
            def snapshots(self) -> list[PersonaSnapshot]:
                return [PersonaSnapshot("Robin", online=True, reason=None, paused=False)]

            async def set_paused(self, persona: str, paused: bool) -> bool:
                return persona == "Robin"    # False: no such persona
    """

    def snapshots(self) -> list[PersonaSnapshot]:
        """Every persona, now."""
        ...

    async def set_paused(self, persona: str, paused: bool) -> bool:
        """The kill switch; False when there is no such persona."""
        ...


@dataclass(frozen=True)
class ErrorNote:
    """One error worth the owner's attention."""

    at: datetime
    where: str
    message: str


@dataclass
class RecentErrors:
    """The last errors, newest last (bounded)."""

    limit: int = 20
    notes: deque[ErrorNote] = field(default_factory=deque)

    def add(self, where: str, message: str) -> None:
        """Remember one error."""
        self.notes.append(ErrorNote(datetime.now(UTC), where, message[:300]))
        while len(self.notes) > self.limit:
            self.notes.popleft()
