"""The persona's manifest as of the last (re)load, shared by the engine's collaborators."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from models import BehaviourSettings, PersonaManifest

__all__ = ["Current"]


class Current:
    """Holds the manifest; ``PersonaEngine.reload`` swaps it for all collaborators at once."""

    def __init__(self, persona: PersonaManifest) -> None:
        self.persona = persona

    @property
    def name(self) -> str:
        """The persona's name."""
        return self.persona.name

    @property
    def b(self) -> BehaviourSettings:
        """Its behaviour settings."""
        return self.persona.behaviour

    @property
    def gap(self) -> timedelta:
        """The silence that starts a new conversation."""
        return timedelta(seconds=self.b.session_gap)

    def local(self, when: datetime) -> datetime:
        """``when`` in the persona's time zone."""
        return when.astimezone(ZoneInfo(self.b.timezone))

    def allowed(self, channel: str, name: str | None = None) -> bool:
        """Whether the persona may speak in this channel (configured; nothing else)."""
        allowed = self.b.channels
        return "*" in allowed or channel in allowed or (name is not None and name in allowed)
