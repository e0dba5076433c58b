"""`personad dataset build`: exports in, training files and a persona profile out.

Messages stream through: cleaned one by one, grouped per channel into conversations by the
runtime's rule and ``session_gap`` (``models.SessionTracker``), and written as examples whose
prompts are cut exactly as the runtime cuts them (``models.prompt_lines``). Memory holds one
window per channel plus counters, whatever the export's size.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import IO, Any

from models import (
    Event,
    SessionTracker,
    atomic_path,
    chat_messages,
    prompt_lines,
    render_transcript,
    write_toml,
)

from ..errors import BadOption
from ._profile import ProfileBuilder
from ._readers import read_export
from ._records import ExportMessage

__all__ = ["BuildOptions", "BuildSummary", "Cleaner", "build_dataset", "merged_exports", "zone"]

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
    persona_name: str = ""

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


class Cleaner:
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


def merged_exports(paths: Iterable[Path], tz: tzinfo) -> Iterator[ExportMessage]:
    """All exports, per channel in time order (each file is already ordered per channel)."""
    streams = [read_export(p, tz) for p in paths]
    yield from heapq.merge(*streams, key=lambda m: m.ts)


def zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise BadOption(
            "--timezone",
            f"{name!r} is not a known time zone",
            "use an IANA name such as Europe/Berlin or UTC",
        ) from exc


def _gap(opts: BuildOptions) -> timedelta:
    if opts.context_lines < 1:
        raise BadOption("--context-lines", f"{opts.context_lines} is below 1", "e.g. 30")
    try:
        if opts.session_gap > 0:
            return timedelta(seconds=opts.session_gap)
    except OverflowError:
        pass
    raise BadOption(
        "--session-gap", f"{opts.session_gap} is not a usable number of seconds", "e.g. 7200"
    )


def _out_dir(out: Path) -> Path:
    try:
        # Everyone's messages are in there: the owner's alone, whatever the umask.
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOption(
            "--out",
            f"{out} cannot be the output directory ({exc.strerror or exc})",
            "pass a new directory, or an existing one you can write to",
        ) from exc
    return out


class _Writers:
    def __init__(self, stack: ExitStack, out: Path) -> None:
        self.paths = {k: out / v for k, v in OUTPUTS.items()}
        self.files: dict[str, IO[str]] = {}
        for key, path in self.paths.items():
            tmp = stack.enter_context(atomic_path(path))
            try:
                # Text from exports may hold lone surrogates, which UTF-8 cannot encode.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                fh = open(fd, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                raise BadOption(
                    "--out",
                    f"cannot write in {out} ({exc.strerror or exc})",
                    "pass a directory you can write to",
                ) from exc
            self.files[key] = stack.enter_context(fh)

    def write(self, key: str, record: dict[str, Any]) -> None:
        self.files[key].write(json.dumps(record, ensure_ascii=False) + "\n")


def build_dataset(exports: list[Path], out: Path, opts: BuildOptions) -> BuildSummary:
    """Read ``exports``, write the three JSONL files and ``profile.toml`` into ``out``.

    Bad input raises :class:`~convert.errors.InputError`; whatever fails, no file in ``out`` is
    left half-written: each is written beside its place and renamed at the end.
    """
    gap = _gap(opts)
    tz = zone(opts.timezone)
    cleaner = Cleaner(opts)
    summary = BuildSummary()
    windows: dict[str, deque[Event]] = defaultdict(lambda: deque(maxlen=opts.context_lines))
    sessions: SessionTracker[str] = SessionTracker(gap)
    profile = ProfileBuilder(opts.persona, tz, gap.total_seconds())
    authors: Counter[str] = Counter()
    with ExitStack() as stack:
        writers = _Writers(stack, _out_dir(out))
        for message in merged_exports(exports, tz):
            if len(authors) < 1000 or message.author in authors:  # bounded, for the error
                authors[message.author] += 1
            stats = summary.channels.setdefault(message.channel, ChannelStats())
            events, reason = cleaner.events(message)
            if reason:
                stats.dropped[reason] += 1
                continue
            stats.kept += 1
            window = windows[message.channel]
            new_session = sessions.observe(message.channel, message.ts)
            if new_session:
                window.clear()  # a new conversation: the runtime would start at INIT
            persona = cleaner.is_persona(message)
            summary.persona_found |= persona
            profile.add(message, persona, new_session=new_session)
            for event, mine in events:
                if mine and not summary.persona_name:
                    summary.persona_name = event.author
                # Only the persona's own lines become targets (its reactions included), each
                # exactly once: an opener (empty window) is learned from its INIT line alone,
                # which is the prompt the runtime gives when the persona starts a talk.
                if mine:
                    _examples(writers, window, event, opts)
                    stats.targets += 1
                window.append(event)
        if not summary.persona_found:
            seen = ", ".join(repr(a) for a, _ in authors.most_common(5) if a)
            raise BadOption(
                "--persona",
                f"nobody called {opts.persona!r} wrote in these exports",
                "pass the name or id exactly as the export has it"
                + (f" (the most active: {seen})" if seen else ""),
            )
        summary.files = dict(writers.paths)
        profile_path = out / "profile.toml"
        profile.write(profile_path)
        summary.files["profile"] = profile_path
        summary.files["manifest"] = write_skeleton(out / "persona.toml", opts, summary)
    return summary


def write_skeleton(path: Path, opts: BuildOptions, summary: BuildSummary) -> Path:
    """A persona manifest to edit (model, card) rather than write from nothing."""
    name = summary.persona_name or opts.persona
    channels = sorted(n for n, c in summary.channels.items() if c.targets)
    data = {
        "name": name[:64],
        "model": "smollm2",
        "format": "transcript",
        "profile": "profile.toml",
        "card": {"description": opts.card or f"{name} is one of the friends in this chat."},
        "behaviour": {"channels": channels},
    }
    write_toml(
        path,
        data,
        comment=(
            "personad persona manifest skeleton: set `model` to the fine-tuned model "
            "(personad convert ... --register NAME); [behaviour] overrides the profile"
        ),
    )
    return path


def _examples(writers: _Writers, window: deque[Event], event: Event, opts: BuildOptions) -> None:
    persona = event.author
    if not window:
        window = deque([Event(persona, "init", "", event.ts)])
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
