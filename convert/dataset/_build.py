"""`personad dataset build`: exports in, training files and a persona profile out.

Messages stream through: cleaned one by one, grouped per channel into conversations by the
runtime's ``session_gap``, and written as examples whose prompts are cut exactly as the
runtime cuts them (``models.prompt_lines``). Memory holds one window per channel plus
counters, whatever the export's size.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, Any

from models import Event, atomic_path, chat_messages, prompt_lines, render_transcript

from ._profile import ProfileBuilder
from ._readers import read_export
from ._records import ExportMessage

__all__ = ["BuildOptions", "BuildSummary", "build_dataset"]

_LINK = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d ()-]{7,}\d(?!\w)")
_MENTION = re.compile(r"<@!?(\d+)>")

OUTPUTS = {"transcript": "transcript.jsonl", "chat": "chat.jsonl", "alpaca": "alpaca.jsonl"}


@dataclass
class BuildOptions:
    """What to build and how to clean it."""

    persona: str
    session_gap: float = 7200
    context_lines: int = 30
    names: dict[str, str] = field(default_factory=dict)
    include_channels: list[str] = field(default_factory=list)
    exclude_channels: list[str] = field(default_factory=list)
    redact: bool = False
    pseudonymize_others: bool = False
    card: str = ""
    timezone: str = "UTC"


@dataclass
class ChannelStats:
    """Per-channel accounting for the privacy summary."""

    kept: int = 0
    targets: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass
class BuildSummary:
    """Messages used and dropped (and why), per channel; the files written."""

    channels: dict[str, ChannelStats] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    persona_found: bool = False

    @property
    def messages(self) -> int:
        """Messages read in total."""
        return sum(c.kept + sum(c.dropped.values()) for c in self.channels.values())

    @property
    def targets(self) -> int:
        """Training examples (the persona's lines)."""
        return sum(c.targets for c in self.channels.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "messages": self.messages,
            "examples": self.targets,
            "channels": {
                name: {"kept": c.kept, "examples": c.targets, "dropped": dict(c.dropped)}
                for name, c in sorted(self.channels.items())
            },
            "files": {k: str(v) for k, v in self.files.items()},
        }


class _Cleaner:
    """Turns an export message into events, or a reason to drop it."""

    def __init__(self, opts: BuildOptions) -> None:
        self.opts = opts
        self.names = {k.casefold(): v for k, v in opts.names.items()}
        self.pseudonyms: dict[str, str] = {}

    def is_persona(self, m: ExportMessage) -> bool:
        who = self.opts.persona.casefold()
        return m.author_id.casefold() == who or m.author.casefold() == who

    def name(self, user_id: str, shown: str, persona: bool) -> str:
        real = self.names.get(user_id.casefold()) or self.names.get(shown.casefold()) or shown
        if persona or not self.opts.pseudonymize_others:
            return real
        if user_id not in self.pseudonyms:
            self.pseudonyms[user_id] = f"Friend {len(self.pseudonyms) + 1}"
        return self.pseudonyms[user_id]

    def drop_reason(self, m: ExportMessage) -> str | None:
        channel = m.channel
        if self.opts.include_channels and channel not in self.opts.include_channels:
            return "channel not included"
        if channel in self.opts.exclude_channels:
            return "channel excluded"
        if m.is_system:
            return "system message"
        if m.is_bot:
            return "bot"
        if m.forwarded:
            return "forwarded"
        return None

    def text(self, m: ExportMessage) -> str:
        text = _MENTION.sub(
            lambda g: "@" + self.name(g[1], m.mentions.get(g[1], "someone"), False), m.text
        )
        for uid, shown in m.mentions.items():
            # Exports that render mentions as @name: map those names too.
            mapped = self.name(uid, shown, self.opts.persona.casefold() in (uid, shown.casefold()))
            if mapped != shown:
                text = text.replace(f"@{shown}", f"@{mapped}")
        text = _LINK.sub("", text)
        if self.opts.redact:
            text = _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))
        return " ".join(text.split())

    def events(self, m: ExportMessage) -> tuple[list[tuple[Event, bool]], str | None]:
        """The message's events, each flagged when the persona is its author."""
        reason = self.drop_reason(m)
        if reason:
            return [], reason
        persona = self.is_persona(m)
        author = self.name(m.author_id, m.author, persona)
        text = self.text(m)
        out: list[tuple[Event, bool]] = []
        if text:
            out.append((Event(author, "reply" if m.reply_to else "message", text, m.ts), persona))
        for kind, description in m.attachments:
            out.append((Event(author, kind, description or "", m.ts), persona))
        if not out:
            return [], "link only" if _LINK.search(m.text) else "empty"
        who = self.opts.persona.casefold()
        for r in m.reactions:
            mine = who in (r.author_id.casefold(), r.author.casefold())
            out.append(
                (Event(self.name(r.author_id, r.author, mine), "react", r.emoji, m.ts), mine)
            )
        return out, None


def _merged(paths: Iterable[Path], tz: tzinfo) -> Iterator[ExportMessage]:
    """All exports, per channel in time order (each file is already ordered per channel)."""
    streams = [read_export(p, tz) for p in paths]
    yield from heapq.merge(*streams, key=lambda m: m.ts)


class _Writers:
    def __init__(self, stack: ExitStack, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {k: out / v for k, v in OUTPUTS.items()}
        self.files: dict[str, IO[str]] = {}
        for key, path in self.paths.items():
            tmp = stack.enter_context(atomic_path(path))
            self.files[key] = stack.enter_context(tmp.open("w", encoding="utf-8"))

    def write(self, key: str, record: dict[str, Any]) -> None:
        self.files[key].write(json.dumps(record, ensure_ascii=False) + "\n")


def build_dataset(exports: list[Path], out: Path, opts: BuildOptions) -> BuildSummary:
    """Read ``exports``, write the three JSONL files and ``profile.toml`` into ``out``."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(opts.timezone)
    cleaner = _Cleaner(opts)
    summary = BuildSummary()
    gap = timedelta(seconds=opts.session_gap)
    windows: dict[str, deque[Event]] = defaultdict(lambda: deque(maxlen=opts.context_lines))
    last_ts: dict[str, datetime] = {}
    profile = ProfileBuilder(opts.persona, tz, gap)
    with ExitStack() as stack:
        writers = _Writers(stack, out)
        for message in _merged(exports, tz):
            stats = summary.channels.setdefault(message.channel, ChannelStats())
            events, reason = cleaner.events(message)
            if reason:
                stats.dropped[reason] += 1
                continue
            stats.kept += 1
            window = windows[message.channel]
            previous = last_ts.get(message.channel)
            if previous is not None and message.ts - previous >= gap:
                window.clear()  # a new conversation: the runtime would start at INIT
            last_ts[message.channel] = message.ts
            persona = cleaner.is_persona(message)
            summary.persona_found |= persona
            profile.add(message, persona, new_session=not window)
            for event, mine in events:
                # Only the persona's own lines become targets (its reactions included).
                if mine and window:
                    _examples(writers, window, event, opts)
                    stats.targets += 1
                window.append(event)
        if not summary.persona_found:
            raise ValueError(
                f"nobody called {opts.persona!r} wrote in these exports; pass the name or id "
                "exactly as the export has it (see the summary of authors with --json)"
            )
        summary.files = dict(writers.paths)
        profile_path = out / "profile.toml"
        with atomic_path(profile_path) as tmp:
            tmp.write_text(profile.toml(), encoding="utf-8")
        summary.files["profile"] = profile_path
    return summary


def _examples(writers: _Writers, window: deque[Event], event: Event, opts: BuildOptions) -> None:
    persona = event.author
    instruction = f"You are {persona} in a group chat with friends. Write {persona}'s next message."
    lines = prompt_lines(list(window), opts.context_lines)
    prompt = render_transcript(lines)
    target = prompt_lines([*window, event], opts.context_lines)[-1]
    writers.write("transcript", {"prompt": prompt, "completion": target.render() + "\n"})
    # The chat and instruction formats want the persona's words without the name prefix.
    said = target.render().split(": ", 1)[1]
    messages = chat_messages(
        persona, opts.card or f"{persona} is one of the friends in this chat.", lines
    )
    writers.write("chat", {"messages": [*messages, {"role": "assistant", "content": said}]})
    writers.write(
        "alpaca", {"instruction": instruction, "input": prompt.rstrip("\n"), "output": said}
    )
