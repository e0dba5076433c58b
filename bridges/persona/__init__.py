"""The persona's runtime: one :class:`PersonaEngine` per persona and its collaborators."""

from ._engine import PersonaEngine
from ._pause import pause, resume
from ._state import Away, PersonaState, StateBook

__all__ = ["Away", "PersonaEngine", "PersonaState", "StateBook", "pause", "resume"]
