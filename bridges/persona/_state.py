"""The persona's state between restarts, typed, with one place that loads and saves it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._store import PersonaStore

__all__ = ["Away", "PersonaState", "StateBook"]


class Away(BaseModel):
    """A planned absence: offline from ``start`` to ``end``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: datetime
    end: datetime


class PersonaState(BaseModel):
    """Everything the persona's day must carry over a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    online: bool = Field(True, description="Shown online and allowed to speak (its day).")
    presence_shown: bool = Field(False, description="Every bridge took the last presence.")
    offline_reason: str | None = Field(None, description="Why offline: asleep, away, paused.")
    away: Away | None = Field(None, description="The next (or current) planned absence.")
    next_start: datetime | None = Field(None, description="The next proactive-start attempt.")
    starts_day: date | None = Field(None, description="The persona's day starts were counted.")
    starts_count: int = Field(0, ge=0, description="Conversations started on that day.")
    channel_names: dict[str, str] = Field(
        default_factory=dict, description="Channel id to its name, as last seen."
    )
    paused: bool = Field(False, description="Kill switch: silent everywhere until resumed.")
    paused_channels: frozenset[str] = Field(
        frozenset(), description="Kill switch for single channels (ids)."
    )
    pending_drops: frozenset[str] = Field(
        frozenset(),
        description="Conversations whose cached model state could not be dropped yet (the "
        "model server was unreachable): tried again at every purge.",
    )

    def is_paused(self, channel: str | None = None) -> bool:
        """Whether the persona must stay silent (everywhere, or in ``channel``)."""
        return self.paused or (channel is not None and channel in self.paused_channels)

    def starts_on(self, day: date) -> int:
        """Conversations started on ``day`` (the persona's local date)."""
        return self.starts_count if self.starts_day == day else 0


class StateBook:
    """Loads and saves one persona's :class:`PersonaState` (nothing else touches it).

    Every read goes to the database: another process (``personad pause``) may have changed
    it, and the persona must notice at once. A read is one primary-key lookup.
    """

    def __init__(self, store: PersonaStore) -> None:
        self._store = store

    @property
    def state(self) -> PersonaState:
        """The current state."""
        return PersonaState.model_validate(self._store.load_state())

    def update(self, **changes: Any) -> PersonaState:
        """Change some fields (validated) and save, atomically against other writers."""

        def apply(raw: dict[str, Any]) -> dict[str, Any]:
            current = PersonaState.model_validate(raw).model_dump()
            return PersonaState.model_validate({**current, **changes}).model_dump(mode="json")

        return PersonaState.model_validate(self._store.update_state(apply))
