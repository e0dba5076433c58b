"""The persona's voice: what the model says next, in the persona's prompt format."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

import structlog

from models import Action, Line, chat_messages, parse_output, prompt_lines, render_transcript

from .._completer import Completer, CompletionCall
from .._store import Conversation, StoredMessage
from ._current import Current

__all__ = ["Voice", "same_speaker"]

log = structlog.get_logger("personad.behaviour")


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
        self, bridge: str, channel: str, session: Sequence[StoredMessage], addressed: bool
    ) -> list[Action] | None:
        """What the persona does next ([] for nothing); None when the model gave no answer."""
        persona, name = self._current.persona, self._current.name
        lines = self.lines(session)
        conversation = Conversation(name, bridge, channel).key
        if persona.format == "chat":
            if not addressed and self._rng.random() >= self._current.b.talkativeness:
                return []
            messages = chat_messages(
                name, persona.card.description, lines, examples=persona.card.examples
            )
            text = await self._ask("chat", conversation, messages=messages)
            if text is None:
                return None
            others = {m.author_name for m in session if not m.is_self}
            return parse_output(text, name, fmt="chat", others=others)
        # transcript: the model predicts who speaks next; when addressed, the persona does.
        prompt = render_transcript(lines) + (f"{name}:" if addressed else "")
        text = await self._ask("text", conversation, prompt=prompt)
        if text is None:
            return None
        if addressed and not same_speaker(text, name):
            # The prompt ended with "Name:"; the completion is the rest of that line.
            text = f"{name}: {text.lstrip()}"
        return parse_output(text, name, fmt="transcript")

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
            actions = parse_output(opener, name)
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
