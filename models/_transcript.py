"""How a conversation is written for the model, and how the model's answer is read back.

One module owns the format, so the runtime (bridges/) and the training-set export (convert/)
produce exactly the same text for the same history.

Format ``transcript`` (models fine-tuned on chat logs): one line per event, ``name: text``.
Commands are ``name: COMMAND;`` or ``name: COMMAND: argument;``, except ``REPLY: <text>``,
which carries a message that answers the one before it::

    alice: INIT;
    alice: anyone up for lunch?
    bob: REPLY: only if it's pizza
    alice: REACT: 🍕;
    bob: PHOTO: a menu;

Format ``chat`` (instruct models): the persona card as the system message, the recent
transcript as context, and a request for the persona's next message(s); the daemon renders it
with the model's own chat template.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog

from ._sessions import split_by_gap

__all__ = [
    "COMMANDS",
    "Action",
    "Event",
    "Line",
    "attachment_kind",
    "chat_messages",
    "defuse",
    "event_line",
    "parse_line",
    "parse_output",
    "prompt_lines",
    "render_transcript",
    "split_sessions",
]

log = structlog.get_logger("personad.transcript")

COMMANDS = frozenset({"INIT", "REACT", "REPLY", "PHOTO", "VIDEO", "FILE"})
ATTACHMENTS = frozenset({"PHOTO", "VIDEO", "FILE"})

_LINE = re.compile(r"^(?P<speaker>[^:\n]{1,64}?):(?: (?P<rest>.*))?$")
_BARE = re.compile(r"^(?P<cmd>[A-Z]{2,16});$")
_ARG = re.compile(r"^(?P<cmd>[A-Z]{2,16}): (?P<arg>.*);$")
_REPLY = re.compile(r"^REPLY: (?P<arg>.*)$")


@dataclass(frozen=True)
class Line:
    """One transcript line: a plain message, or a command with an optional argument."""

    speaker: str
    text: str = ""
    command: str | None = None
    argument: str | None = None

    def render(self) -> str:
        """The line as the model sees it."""
        # The colon goes first: removed after defusing, it could rebuild a control token
        # (a display name like "<|im_end|:>").
        speaker = _clean(self.speaker.replace(":", ""))
        if self.command is None:
            return f"{speaker}: {_clean(self.text)}"
        if self.command == "REPLY":
            return f"{speaker}: REPLY: {_clean(self.argument or '')}"
        if self.argument is None:
            return f"{speaker}: {self.command};"
        return f"{speaker}: {self.command}: {_clean(self.argument)};"


# Text shaped like a model's control token: ``<|im_end|>``, ``<\uff5cUser\uff5c>``
# (DeepSeek's full-width bars), ``</s>``, ``<start_of_turn>``, ``[INST]``, ``[/INST]``.
# The lookahead keeps the match to the opening bracket, where the breaker goes.
_CONTROL = re.compile(
    r"<(?=/?[|\uff5c]?[\w\u2581][\w\u2581.-]{0,63}[|\uff5c]?>)|\[(?=/?[A-Z][A-Z_]{1,31}\])"
)
# ZERO WIDTH SPACE: invisible, so the line reads the same to people and nearly the same to a
# model, and no tokenizer's special-token matching (which looks for the exact text, before or
# after NFKC normalisation) sees ``<|im_end|>`` any more. A visible look-alike such as the
# full-width bar would not do: it *is* the bar in DeepSeek's control tokens, and NFKC maps it
# back to ``|``. Escaping (``&lt;``) would change what people read and what models learn.
_BREAK = "\u200b"


def defuse(text: str) -> str:
    """``text`` with anything shaped like a control token broken up, so it stays plain text.

    People's words reach servers that tokenize prompts with special parsing on (any
    /v1/completions prompt, and many chat templates): typed ``<|im_end|>`` must not end a turn.
    Idempotent; mentions (``<@123>``), emoji (``<:x:1>``) and ordinary brackets are untouched.
    """
    return _CONTROL.sub(lambda m: m.group(0) + _BREAK, text)


def _clean(text: str) -> str:
    # One event, one line: newlines inside a message would read as new speakers; and no
    # control tokens (see defuse).
    return defuse(" ".join(text.split()))


def parse_line(raw: str) -> Line | None:
    """Parse ``name: ...``; None if the text has no speaker."""
    m = _LINE.match(raw.strip())
    if m is None:
        return None
    speaker, rest = m["speaker"].strip(), (m["rest"] or "").strip()
    if not speaker:
        return None
    if reply := _REPLY.match(rest):
        return Line(speaker, command="REPLY", argument=reply["arg"].strip())
    if bare := _BARE.match(rest):
        return Line(speaker, command=bare["cmd"])
    if arg := _ARG.match(rest):
        return Line(speaker, command=arg["cmd"], argument=arg["arg"].strip())
    return Line(speaker, text=rest)


def render_transcript(lines: Iterable[Line]) -> str:
    """The lines joined, one per row, ending with a newline (the model continues from there)."""
    return "".join(line.render() + "\n" for line in lines)


def chat_messages(
    persona: str, card: str, lines: Sequence[Line], *, examples: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The ``chat`` format: system card, transcript as context, a request for the next line."""
    system = card.strip()
    if examples:
        said = (defuse(e) for e in examples)  # people's words, like the transcript
        system += f"\n\nThings {persona} has said:\n" + "\n".join(f"- {e}" for e in said)
    system += (
        f"\n\nYou are {persona} in a group chat. Answer with {persona}'s next message only: "
        "short, casual, in their voice, without a name prefix."
    )
    transcript = render_transcript(lines).strip() or "(nobody has said anything yet)"
    user = f"The chat so far:\n{transcript}\n\nWrite {persona}'s next message."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".heic")
_VIDEO_EXT = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".3gp")


def attachment_kind(filename: str, mime: str | None = None) -> Literal["photo", "video", "file"]:
    """Which transcript command (PHOTO, VIDEO, FILE) an attached file becomes."""
    major = (mime or "").split("/")[0]
    name = filename.lower()
    if major == "image" or name.endswith(_IMAGE_EXT):
        return "photo"
    if major == "video" or name.endswith(_VIDEO_EXT):
        return "video"
    return "file"


@dataclass(frozen=True)
class Event:
    """One history entry, from a live platform or a chat export alike.

    ``kind`` is ``message``, ``reply``, ``react`` (text = the emoji), ``photo``, ``video``,
    ``file`` (text = a description, may be empty) or ``init`` (a conversation opened).
    """

    author: str
    kind: str
    text: str
    ts: datetime


_EVENT_COMMANDS = {
    "reply": "REPLY",
    "react": "REACT",
    "photo": "PHOTO",
    "video": "VIDEO",
    "file": "FILE",
    "init": "INIT",
}


def event_line(event: Event) -> Line:
    """The transcript line of one event."""
    command = _EVENT_COMMANDS.get(event.kind)
    if command is None:
        return Line(event.author, text=event.text)
    if command == "INIT":
        return Line(event.author, command="INIT")
    return Line(event.author, command=command, argument=event.text or None)


def split_sessions(events: Sequence[Event], gap: timedelta) -> list[list[Event]]:
    """Split a channel's events wherever a silence of at least ``gap`` falls."""
    return split_by_gap(events, gap, ts=lambda e: e.ts)


def prompt_lines(session: Sequence[Event], limit: int) -> list[Line]:
    """The last ``limit`` events of a session as lines, always starting with an INIT line.

    The runtime's prompts and the training examples are both cut this way, so a model is
    trained on exactly the text it will see.
    """
    kept = list(session)[-limit:]
    lines = [event_line(e) for e in kept]
    if not kept or kept[0].kind != "init":
        lines.insert(0, Line(kept[0].author if kept else "", command="INIT"))
    return lines


@dataclass(frozen=True)
class Action:
    """What the persona does: send or reply with text, react with an emoji, or attach."""

    kind: Literal["send", "reply", "react", "attach"]
    text: str = ""
    attachment: str | None = None


def _action(line: Line) -> Action | None:
    if line.command is None:
        text = line.text.strip()
        return Action("send", text) if text else None
    if line.command == "REPLY":
        return Action("reply", line.argument or "") if line.argument else None
    if line.command == "REACT":
        return Action("react", line.argument) if line.argument else None
    if line.command in ATTACHMENTS:
        return Action("attach", line.argument or "", attachment=line.command)
    if line.command != "INIT":
        log.info("unknown_command_ignored", command=line.command)
    return None


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def parse_output(
    output: str,
    persona: str,
    *,
    fmt: Literal["transcript", "chat"] = "transcript",
    others: Collection[str] = (),
) -> list[Action]:
    """Turn a completion into actions; total: any text gives a list, never an exception.

    ``transcript``: the leading lines spoken by ``persona`` are its turn; a first line by
    anyone else means the model predicts someone else speaks next, so the persona is silent.
    ``chat``: the output is the persona's message; a speaker label on its first line is
    dropped, and the turn ends where the model starts writing for one of ``others``.
    """
    known = {o.strip().casefold() for o in others}
    actions: list[Action] = []
    for raw in output.splitlines():
        if not raw.strip():
            continue
        line = parse_line(raw)
        if fmt == "chat":
            if line is None:
                action: Action | None = Action("send", " ".join(raw.split()))
            elif not actions or _same(line.speaker, persona):
                # Small models often label the persona's first line with some name
                # ("You:", "Me:"): whatever the label, the first line is the persona's.
                action = _action(line)
            elif line.speaker.casefold() in known:
                break  # the model started writing the others' lines
            else:
                action = Action("send", " ".join(raw.split()))
        else:
            if line is None or not _same(line.speaker, persona):
                break
            action = _action(line)
        if action is not None:
            actions.append(action)
    return actions
