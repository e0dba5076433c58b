"""The persona's voice: what the model says next, in the persona's prompt format."""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from typing import Any, Literal

import structlog

from models import Action, Line, chat_messages, parse_output, prompt_lines, render_transcript

from .._completer import Completer, CompletionCall
from .._store import Conversation, StoredMessage
from ._current import Current

__all__ = ["Voice", "own_lines", "same_speaker"]

log = structlog.get_logger("personad.behaviour")

# A label the model put inside the persona's own line ("Robin: Sammy: ..."): a capitalised
# word and a colon. Commands (REPLY:, REACT:) are upper case and never match.
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NESTED = re.compile(r"^(?P<who>[A-Z][a-z][\w'.-]{0,30}):\s")


def own_lines(text: str, name: str, others: Collection[str]) -> str:
    """``text`` up to the first line in which the model speaks for someone else.

    A line opening with another speaker's name (``Sammy: ...``), also behind the persona's
    own label (``Robin: Sammy: ...``), is the model predicting someone else's turn: the
    persona's turn ends before it. ``others`` are the names seen in the conversation; behind
    the persona's label any capitalised ``Word:`` counts, as no one writes that in a message.
    """
    known = {o.strip().casefold() for o in others if o.strip()} - {name.casefold()}
    kept: list[str] = []
    for raw in text.splitlines():
        rest = raw.strip()
        mine = same_speaker(rest, name)
        if mine:
            rest = rest.split(":", 1)[1].strip()
            if rest.startswith("REPLY:"):
                rest = rest[len("REPLY:") :].strip()
        label = rest.split(":", 1)[0].strip().casefold() if ":" in rest else None
        nested = _NESTED.match(rest)
        if (label is not None and label in known) or (mine and nested is not None):
            log.info("foreign_line_cut", persona=name, speaker=label)
            break
        kept.append(raw)
    return "\n".join(kept)


def same_speaker(text: str, name: str) -> bool:
    """Whether ``text`` already starts with ``name:`` (a model repeating the prompt's label)."""
    return text.lstrip().casefold().startswith(f"{name.casefold()}:")


class Voice:
    """Asks the completer for the persona's next actions or for an opener."""

    def __init__(self, current: Current, completer: Completer, rng: random.Random) -> None:
        self._current = current
        self._completer = completer
        self._rng = rng

    def lines(self, session: Sequence[StoredMessage]) -> list[Line]:
        """Transcript lines for a session, cut as the training export cuts them."""
        return prompt_lines([m.event() for m in session], self._current.b.context_lines)

    async def next_actions(
        self,
        bridge: str,
        channel: str,
        session: Sequence[StoredMessage],
        addressed: bool,
        *,
        answer: bool | None = None,
    ) -> list[Action] | None:
        """What the persona does next ([] for nothing); None when the model gave no answer.

        ``answer``: in chat format, whether the person's habit (``around``) takes this turn,
        instead of a roll against ``talkativeness``; transcript models decide themselves.
        """
        persona, name = self._current.persona, self._current.name
        lines = self.lines(session)
        conversation = Conversation(name, bridge, channel).key
        others = {m.author_name for m in session if not m.is_self}
        if persona.format == "chat":
            if not addressed and answer is None:
                answer = self._rng.random() < self._current.b.talkativeness
            if not (addressed or answer):
                return []
            messages = chat_messages(
                name, persona.card.description, lines, examples=persona.card.examples
            )
            text = await self._ask("chat", conversation, messages=messages)
            if text is None:
                return None
            return parse_output(own_lines(text, name, others), name, fmt="chat", others=others)
        # transcript: the model predicts who speaks next; when addressed, the persona does.
        prompt = render_transcript(lines) + (f"{name}:" if addressed else "")
        text = await self._ask("text", conversation, prompt=prompt)
        if text is None:
            return None
        if addressed and not same_speaker(text, name):
            # The prompt ended with "Name:"; the completion is the rest of that line.
            text = f"{name}: {text.lstrip()}"
        return parse_output(own_lines(text, name, others), name, fmt="transcript")

    async def burst(
        self,
        bridge: str,
        channel: str,
        session: Sequence[StoredMessage],
        actions: list[Action],
        length: int,
    ) -> list[Action]:
        """``actions`` shaped to ``length`` messages in a row, as the person sends them:
        extra lines dropped, too few split at sentence ends, then asked for more."""
        texts = [a for a in actions if a.kind in ("send", "reply")]
        if not texts:
            return actions
        if len(texts) > length:
            keep = {id(a) for a in texts[:length]}
            return [a for a in actions if a.kind not in ("send", "reply") or id(a) in keep]
        out = list(actions)
        while len(texts) < length:
            longest = max(texts, key=lambda a: len(_SENTENCE.split(a.text)))
            parts = [p for p in _SENTENCE.split(longest.text) if p.strip()]
            if len(parts) < 2:
                break
            i = out.index(longest)
            head, tail = Action(longest.kind, parts[0]), Action("send", " ".join(parts[1:]))
            out[i : i + 1] = [head, tail]
            texts = [a for a in out if a.kind in ("send", "reply")]
        for _ in range(length - len(texts)):
            said = [a.text for a in out if a.kind in ("send", "reply")]
            more = await self._more(bridge, channel, session, said)
            if more is None:
                break
            out.append(Action("send", more))
        return out

    async def _more(
        self, bridge: str, channel: str, session: Sequence[StoredMessage], said: list[str]
    ) -> str | None:
        """One more line of the persona after what it has just said."""
        persona, name = self._current.persona, self._current.name
        lines = [*self.lines(session), *(Line(name, text=t) for t in said)]
        conversation = Conversation(name, bridge, channel).key
        others = {m.author_name for m in session if not m.is_self}
        if persona.format == "chat":
            messages = chat_messages(
                name, persona.card.description, lines, examples=persona.card.examples
            )
            text = await self._ask("chat", conversation, messages=messages)
            fmt: Literal["chat", "transcript"] = "chat"
        else:
            text = await self._ask(
                "text", conversation, prompt=render_transcript(lines) + f"{name}:"
            )
            if text is not None and not same_speaker(text, name):
                text = f"{name}: {text.lstrip()}"
            fmt = "transcript"
        actions = parse_output(own_lines(text or "", name, others), name, fmt=fmt, others=others)
        more = [a.text for a in actions if a.kind in ("send", "reply") and a.text]
        return more[0] if more else None

    async def opener(self, bridge: str, channel: str) -> str | None:
        """The first message of a conversation the persona starts; None if none came."""
        persona, name = self._current.persona, self._current.name
        conversation = Conversation(name, bridge, channel).key
        if persona.format == "chat":
            messages = chat_messages(
                name, persona.card.description, [], examples=persona.card.examples
            )
            messages[-1]["content"] = (
                f"The chat has been quiet for a while. Write {name}'s message that starts "
                "a new conversation."
            )
            text = await self._ask("chat", conversation, messages=messages, priority="background")
            actions = parse_output(text or "", name, fmt="chat")
        else:
            prompt = render_transcript([Line(name, command="INIT")]) + f"{name}:"
            text = await self._ask("text", conversation, prompt=prompt, priority="background")
            opener = text or ""
            if not same_speaker(opener, name):
                opener = f"{name}: {opener.lstrip()}"
            actions = parse_output(own_lines(opener, name, ()), name)
        said = [a.text for a in actions if a.kind in ("send", "reply") and a.text]
        return said[0] if said else None

    async def _ask(
        self,
        kind: Literal["chat", "text"],
        conversation: str,
        *,
        priority: Literal["interactive", "background"] = "interactive",
        **fields: Any,
    ) -> str | None:
        b = self._current.b
        text = await self._completer(
            CompletionCall(
                kind=kind,
                conversation=conversation,
                max_tokens=b.max_tokens,
                temperature=b.temperature,
                priority=priority,
                **fields,
            )
        )
        log.debug("model_output", persona=self._current.name, text=text)
        return text
