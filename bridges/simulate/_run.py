"""``personad simulate``: the persona's real behaviour code, a month on a fake clock.

The other participants' messages of the export's last 30 % are replayed at their times
(shifted by whole weeks only, so weekday and hour stay theirs); the person's own messages
are removed, and the persona engine (debounce, sleep, starts, latency, bursts, reactions)
answers them on a :class:`~bridges.testing.FakeClock`. Its profile is learned from the first
70 %, so the bot is compared with a part of the person it never saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from convert.dataset import BuildOptions, Cleaner, ProfileBuilder, merged_exports, zone
from models import BehaviourSettings, PersonaCard, PersonaManifest, SessionTracker

from .._api import User
from .._completer import Completer, CompletionCall
from .._store import Store
from ..persona import PersonaEngine
from ..testing import FakeClock, RecordingBridge
from ._stats import TimelineEvent, measure, statistics_of
from .errors import SimulationError

__all__ = [
    "Placeholder",
    "SimulationOptions",
    "SimulationResult",
    "simulate",
    "simulate_async",
    "write_outputs",
]

HOLDOUT = 0.3


@dataclass
class SimulationOptions:
    """What to simulate and how."""

    exports: list[Path]
    speaker: str
    days: float | None = None
    seed: int = 0
    replies: Literal["model", "profile"] = "profile"
    redact: bool = False
    pseudonymize_others: bool = False
    timezone: str = "UTC"
    use_profile: bool = True  # False: today's engine (no habits), the benchmark's baseline


@dataclass
class SimulationResult:
    """The simulated timeline and its comparison with the person."""

    events: list[TimelineEvent]
    realism: dict[str, Any]
    person: dict[str, list[float]]
    bot: dict[str, list[float]]
    behaviour: BehaviourSettings
    extra: dict[str, Any] = field(default_factory=dict)


class Placeholder:
    """``--replies profile``: no model, a placeholder line per request (instant)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def __call__(self, call: CompletionCall) -> str | None:
        self.calls += 1
        return f"{self.name}: …" if call.kind == "text" else "…"

    async def drop_conversation(self, conversation: str) -> int:
        return 0


@dataclass(frozen=True)
class _Msg:
    ts: datetime
    channel: str
    author: str
    author_id: str
    persona: bool
    text: str
    reacted: bool  # the person reacted to it (the export says so)


class _Options(BaseModel):
    pass


def _read(opts: SimulationOptions) -> list[_Msg]:
    tz = zone(opts.timezone)
    cleaner = Cleaner(
        BuildOptions(
            persona=opts.speaker,
            redact=opts.redact,
            pseudonymize_others=opts.pseudonymize_others,
            timezone=opts.timezone,
        )
    )
    out: list[_Msg] = []
    for m in merged_exports(opts.exports, tz):
        events, reason = cleaner.events(m)
        if reason or not events:
            continue
        said = [e for e, _ in events if e.kind != "react"]
        mine = cleaner.is_persona(m)
        reacted = any(e.kind == "react" and own for e, own in events)
        text = " ".join(e.text for e in said if e.text) or said[0].kind.upper()
        out.append(_Msg(m.ts, m.channel, said[0].author, m.author_id, mine, text, reacted))
    if not any(m.persona for m in out):
        raise SimulationError(
            "--speaker",
            f"nobody called {opts.speaker!r} wrote in these exports",
            "pass the name or id exactly as the export has it",
        )
    return out


def _explicit(persona: PersonaManifest | None) -> dict[str, Any]:
    """The manifest's own [behaviour] keys (its profile's are learned anew)."""
    if persona is None or persona.source is None:
        return {}
    raw = tomllib.loads(persona.source.read_text(encoding="utf-8"))
    return dict(raw.get("behaviour", {}))


def _learn(train: Sequence[_Msg], gap: float, tz: str) -> dict[str, Any]:
    from convert.dataset import ExportMessage, ExportReaction

    builder = ProfileBuilder("persona", zone(tz), gap)
    sessions: SessionTracker[str] = SessionTracker(timedelta(seconds=gap))
    for m in train:
        reactions = [ExportReaction("👍", "persona", "persona")] if m.reacted else []
        em = ExportMessage(m.channel, "", m.author_id, m.author, m.ts, m.text, reactions=reactions)
        builder.add(em, m.persona, new_session=sessions.observe(m.channel, m.ts))
    return dict(builder.data()["behaviour"])


def _behaviour(
    opts: SimulationOptions, persona: PersonaManifest | None, train: Sequence[_Msg]
) -> BehaviourSettings:
    explicit = _explicit(persona)
    gap = float(explicit.get("session_gap", 7200))
    tz = str(explicit.get("timezone", opts.timezone))
    # Without the profile (the benchmark's baseline): today's engine and its defaults.
    measured: dict[str, Any] = _learn(train, gap, tz) if opts.use_profile else {"timezone": tz}
    merged = {**measured, **explicit}
    merged.setdefault("channels", ["*"])
    return BehaviourSettings.model_validate(merged)


def _persona(
    opts: SimulationOptions, persona: PersonaManifest | None, b: BehaviourSettings, name: str
) -> PersonaManifest:
    if persona is None:
        persona = PersonaManifest(name=name[:64], card=PersonaCard(description=f"{name}."))
    fmt = persona.format
    if opts.replies == "profile":
        fmt = "chat"  # no model to decide: the person's own chance (``around``) does
    return persona.model_copy(update={"behaviour": b, "format": fmt})


async def _replay(
    engine_persona: PersonaManifest,
    completer: Completer,
    replay: Sequence[_Msg],
    start: datetime,
    end: datetime,
    seed: int,
    progress: Callable[[int, int], None],
) -> list[TimelineEvent]:
    clock = FakeClock(start)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "sim.db")
        try:
            engine = PersonaEngine(
                engine_persona, completer, store, clock, clock, random.Random(seed)
            )
            bridge = RecordingBridge(_Options(), engine, persona=engine_persona.name, clock=clock)
            engine.attach(bridge)
            await engine.start()
            users: dict[str, User] = {}
            ids: dict[str, str] = {}
            events: list[TimelineEvent] = []
            for i, m in enumerate(replay):
                await clock.advance_to(m.ts)
                user = users.setdefault(m.author_id, User(f"u-{m.author_id}", m.author))
                ids[await bridge.say(user, m.text, channel=m.channel)] = m.channel
                events.append(TimelineEvent(m.ts, m.channel, m.author, False, "message", m.text))
                if i % 200 == 0:
                    progress(i, len(replay))
            await clock.advance_to(end)
            await engine.stop()
            progress(len(replay), len(replay))
        finally:
            store.close()
    name = engine_persona.name
    for action in bridge.actions:
        kind, channel, text, at = action[0], action[1], action[2], action[3]
        if kind in ("send", "reply"):
            events.append(TimelineEvent(at, channel, name, True, "message", text))
        elif kind == "react":
            events.append(TimelineEvent(at, channel, name, True, "react", text))
    events.sort(key=lambda e: (e.ts, not e.persona))
    return events


def _weeks(days: float) -> timedelta:
    return timedelta(weeks=max(1, round(days / 7)))


def simulate(
    opts: SimulationOptions,
    persona: PersonaManifest | None = None,
    completer: Completer | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> SimulationResult:
    """:func:`simulate_async` in its own event loop."""
    return asyncio.run(simulate_async(opts, persona, completer, progress))


async def simulate_async(
    opts: SimulationOptions,
    persona: PersonaManifest | None = None,
    completer: Completer | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> SimulationResult:
    """Learn on the first 70 %, replay the last 30 % with the bot, compare with the person."""
    messages = _read(opts)
    first, last = messages[0].ts, messages[-1].ts
    if last - first < timedelta(days=1):
        raise SimulationError(
            "--export", "the exports span less than a day", "export a longer history"
        )
    cut = first + (last - first) * (1 - HOLDOUT)
    train = [m for m in messages if m.ts < cut]
    held = [m for m in messages if m.ts >= cut]
    b = _behaviour(opts, persona, train)
    name = persona.name if persona is not None else next(m.author for m in messages if m.persona)
    engine_persona = _persona(opts, persona, b, name)
    held_days = (last - cut).total_seconds() / 86400
    days = opts.days if opts.days is not None else held_days
    if days <= 0:
        raise SimulationError("--days", f"{days} is not a positive number of days", "e.g. 30")
    start = cut
    end = start + timedelta(days=days)
    others = [m for m in held if not m.persona]
    replay: list[_Msg] = []
    shift = timedelta()
    while others and start + shift < end:  # longer than the held-out part: whole weeks on
        replay += [
            _Msg(m.ts + shift, m.channel, m.author, m.author_id, False, m.text, False)
            for m in others
            if m.ts + shift < end
        ]
        shift += _weeks(held_days)
    completer = completer or Placeholder(name)
    events = await _replay(engine_persona, completer, replay, start, end, opts.seed, progress)
    gap = timedelta(seconds=b.session_gap)
    person_events = [
        ev
        for m in held
        for ev in (
            [TimelineEvent(m.ts, m.channel, m.author, m.persona, "message", m.text)]
            + ([TimelineEvent(m.ts, m.channel, name, True, "react", "")] if m.reacted else [])
        )
    ]
    whole_events = [
        TimelineEvent(m.ts, m.channel, m.author, m.persona, "message", "") for m in messages
    ]
    person = statistics_of(person_events, gap, b.timezone)
    bot = statistics_of(events, gap, b.timezone)
    whole = statistics_of(whole_events, gap, b.timezone)
    all_days = (last - first).total_seconds() / 86400
    realism = measure(person, bot, whole, (held_days, days, all_days))
    realism["settings"] = {
        "seed": opts.seed,
        "replies": opts.replies,
        "days": round(days, 3),
        "holdout_days": round(held_days, 3),
        "profile": opts.use_profile,
        "persona": name,
    }
    return SimulationResult(events, realism, person, bot, b)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (it holds other people's messages)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_outputs(result: SimulationResult, out: Path) -> dict[str, Path]:
    """``events.jsonl``, ``realism.json`` and ``report.html`` in ``out``, mode 0600."""
    from ._report import report_html

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("events.jsonl", "realism.json", "report.html")}
    lines = "".join(json.dumps(e.as_json(), ensure_ascii=False) + "\n" for e in result.events)
    write_private(paths["events.jsonl"], lines)
    write_private(paths["realism.json"], json.dumps(result.realism, indent=2, ensure_ascii=False))
    write_private(paths["report.html"], report_html(result))
    return paths
