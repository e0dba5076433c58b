"""Persona manifests: a model, a prompt format, a persona card and how the persona behaves."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ._manifest import read_toml_model
from .errors import CatalogError

__all__ = [
    "BehaviourSettings",
    "PersonaCard",
    "PersonaManifest",
    "UnknownPersona",
    "demo_persona",
    "load_persona",
    "load_personas",
]


class UnknownPersona(CatalogError, LookupError):
    """No manifest defines the persona that the configuration asks for (``run.personas``)."""

    def __init__(self, name: str, known: list[str], directory: Path | None) -> None:
        self.name = name
        self.known = known
        self.directory = directory
        where = f"add {directory / (name + '.toml')} or " if directory is not None else ""
        super().__init__(
            f"unknown persona {name!r}; known personas: {', '.join(known) or 'none'}; "
            f"{where}fix run.personas"
        )


class PersonaCard(BaseModel):
    """Who the persona is, for the ``chat`` format's system message."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="A few sentences: who they are and how they write.")
    examples: list[str] = Field(default_factory=list, description="Lines they might say.")


class BehaviourSettings(BaseModel):
    """How the persona acts like a person. Times are in seconds unless named otherwise."""

    model_config = ConfigDict(extra="forbid")

    session_gap: float = Field(7200, gt=0, description="Silence that starts a new conversation.")
    context_lines: int = Field(30, ge=1, description="Transcript lines given to the model.")
    debounce: float = Field(4.0, ge=0, description="Wait for a burst of messages to end.")
    talkativeness: float = Field(
        0.3, ge=0, le=1, description="chat format: chance to answer when not addressed."
    )
    reading_delay: float = Field(1.5, ge=0, description="Base delay before starting to type.")
    reading_speed: float = Field(30.0, gt=0, description="Characters read per second.")
    typing_speed: float = Field(6.0, gt=0, description="Characters typed per second.")
    typing_refresh: float = Field(8.0, gt=0, description="Re-send the typing indicator this often.")
    message_pause: float = Field(1.2, ge=0, description="Pause between several messages.")
    quiet_before_start: float = Field(
        6 * 3600, gt=0, description="Silence in a channel before the persona may open a topic."
    )
    starts_per_day: float = Field(1.0, ge=0, description="Average conversation starts per day.")
    max_starts_per_day: int = Field(2, ge=0, description="Hard cap on conversation starts.")
    active_hours: tuple[int, int] = Field(
        (9, 23), description="Local hours [from, to) in which the persona may open topics."
    )
    sleep_hours: tuple[int, int] | None = Field(
        (1, 8), description="Local hours [from, to) the persona is offline, or none."
    )
    timezone: str = Field("UTC", description="The persona's time zone (IANA name).")
    away_per_day: float = Field(1.5, ge=0, description="Average random away periods per day.")
    away_minutes: tuple[float, float] = Field(
        (10, 90), description="Shortest and longest random away period, in minutes."
    )
    bot_budget: int = Field(
        6, ge=0, description="Bot messages in a row (no human between) it will still answer."
    )
    min_interval: float = Field(1.0, ge=0, description="Least time between its messages.")
    max_per_minute: int = Field(10, ge=1, description="Most messages per channel per minute.")
    channels: list[str] = Field(
        default_factory=list, description="Channel ids or names it may speak in; none else."
    )
    history_days: float = Field(30, gt=0, description="Days of messages kept for context.")
    max_tokens: int = Field(80, ge=1, description="Longest turn generated.")
    # The person's habits, measured by `personad dataset build` (profile.toml); unset means
    # the fixed rules above (debounce, reading and typing time, talkativeness, active_hours).
    reply_latency: list[float] | None = Field(
        None,
        min_length=2,
        description="Quantiles (seconds, ascending) of the delay from the latest message by "
        "someone else to the persona's answer; replaces debounce + reading + typing time.",
    )
    latency_typing: Literal["included", "on_top"] = Field(
        "included",
        description="Whether the measured latency already holds the typing time (the "
        "indicator shows during its last part) or typing comes on top of it.",
    )
    around: list[float] | None = Field(
        None,
        min_length=168,
        max_length=168,
        description="Chance (0..1) per hour of week (Monday 00:00 local = 0) that the "
        "persona takes up a conversation then; replaces talkativeness in chat format.",
    )
    burst_lengths: list[float] | None = Field(
        None, min_length=1, description="Weights of sending 1, 2, 3... messages in a row."
    )
    burst_gaps: list[float] | None = Field(
        None, min_length=2, description="Quantiles (seconds) of the gap inside a burst."
    )
    start_hours: list[float] | None = Field(
        None,
        min_length=168,
        max_length=168,
        description="Weights per hour of week of when the person opened conversations; "
        "proactive starts follow them instead of active_hours.",
    )
    reaction_rate: float = Field(
        0.0, ge=0, le=1, description="Chance to react to a message by someone else."
    )
    reactions: dict[str, float] = Field(
        default_factory=dict, description="Favourite reaction emoji and their weights."
    )
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature.")

    @field_validator("sleep_hours", mode="before")
    @classmethod
    def _no_sleep(cls, value: object) -> object:
        # TOML has no null: an empty list means "never asleep".
        return None if value == [] else value

    @model_validator(mode="after")
    def _check(self) -> BehaviourSettings:
        for name in ("active_hours", "sleep_hours"):
            hours = getattr(self, name)
            if hours is not None and not all(0 <= h <= 24 for h in hours):
                raise ValueError(f"{name} must be hours between 0 and 24")
        if self.away_minutes[0] > self.away_minutes[1]:
            raise ValueError("away_minutes must be (shortest, longest)")
        for name in ("reply_latency", "burst_gaps"):
            qs = getattr(self, name)
            if qs is not None and (any(q < 0 for q in qs) or qs != sorted(qs)):
                raise ValueError(f"{name} must be ascending quantiles in seconds, none below 0")
        for name in ("around", "burst_lengths", "start_hours"):
            ws = getattr(self, name)
            if ws is not None and (any(w < 0 for w in ws) or not sum(ws) > 0):
                raise ValueError(f"{name} must be weights of at least 0, not all 0")
        if self.around is not None and any(w > 1 for w in self.around):
            raise ValueError("around must be chances between 0 and 1")
        return self


class PersonaManifest(BaseModel):
    """A persona: which model speaks for it, in which format, and how it behaves."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="The name others use.")
    model: str = Field("smollm2", description="Model name in the catalogue.")
    adapter: str | None = Field(
        None, description="A LoRA adapter of the model's manifest that speaks for this persona."
    )
    format: Literal["chat", "transcript"] = Field(
        "chat", description="chat: instruct model with a card; transcript: a fine-tuned model."
    )
    card: PersonaCard
    behaviour: BehaviourSettings = Field(default_factory=BehaviourSettings)
    profile: Path | None = Field(
        None, description="A profile from `personad dataset build`; [behaviour] fills defaults."
    )
    source: Path | None = Field(None, exclude=True, description="Manifest file it came from.")


def load_persona(path: Path) -> PersonaManifest:
    """Read and validate a persona manifest; errors name the file and the field.

    With ``profile = "profile.toml"``, the measured schedule, typing speed and start rate
    become the behaviour's defaults; what the manifest sets itself still wins.
    """
    persona = read_toml_model(path, PersonaManifest)
    if persona.profile is not None:
        profile_path = (
            persona.profile if persona.profile.is_absolute() else (path.parent / persona.profile)
        )
        measured = read_toml_model(profile_path, _Profile).behaviour
        explicit = persona.behaviour.model_dump(exclude_unset=True)
        merged = BehaviourSettings.model_validate({**measured, **explicit})
        persona = persona.model_copy(update={"behaviour": merged, "profile": profile_path})
    return persona.model_copy(update={"source": path})


class _Profile(BaseModel):
    """The parts of a profile file the runtime uses."""

    behaviour: dict[str, object] = Field(default_factory=dict)
    stats: dict[str, object] = Field(default_factory=dict)


def demo_persona() -> PersonaManifest:
    """The persona that ships with personad, on the demo model."""
    return load_persona(Path(__file__).with_name("personas") / "demo.toml")


def load_personas(directory: Path | None, names: list[str]) -> list[PersonaManifest]:
    """The personas called ``names``: files ``NAME.toml`` in ``directory``, or ``demo``."""
    found = []
    for name in names:
        path = directory / f"{name}.toml" if directory is not None else None
        if path is not None and path.is_file():
            found.append(load_persona(path))
        elif name == "demo":
            found.append(demo_persona())
        else:
            known = sorted(p.stem for p in directory.glob("*.toml")) if directory else []
            raise UnknownPersona(name, sorted({*known, "demo"}), directory)
    return found
