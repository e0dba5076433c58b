"""The behaviour engine: turns chat events into a persona that acts like a person.

One :class:`PersonaEngine` per persona. It is the :class:`~bridges.BridgeHost` of the bridges
the persona runs on: they report events, it decides whether, when and what to say, and tells
them to type, send, reply, react or change presence. It never calls llama.cpp: text comes
from a :class:`~bridges._completer.Completer` (the daemon's HTTP API).

Time, scheduling and randomness are injected, so every rule runs on a fake clock in tests.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from models import (
    Action,
    Line,
    PersonaManifest,
    chat_messages,
    parse_output,
    prompt_lines,
    render_transcript,
)

from ._api import Bridge, MessageEvent, PresenceEvent, ReactionEvent, User
from ._completer import Completer, CompletionCall
from ._rhythm import DailyRhythm, same_speaker
from ._store import Store, StoredMessage
from ._time import Clock, Scheduler

__all__ = ["PersonaEngine"]

log = structlog.get_logger("personad.behaviour")


@dataclass
class _Channel:
    """What the engine tracks per (bridge, channel) while running."""

    waiting: asyncio.Task[None] | None = None
    speaking: bool = False
    pending: bool = False
    addressed: bool = False
    sent: deque[datetime] = field(default_factory=lambda: deque(maxlen=64))


class PersonaEngine:
    """One persona's behaviour across the bridges it is attached to."""

    def __init__(
        self,
        persona: PersonaManifest,
        completer: Completer,
        store: Store,
        clock: Clock,
        scheduler: Scheduler,
        rng: random.Random,
    ) -> None:
        self.persona = persona
        self.b = persona.behaviour
        self.name = persona.name
        self.completer = completer
        self.store = store
        self.clock = clock
        self.scheduler = scheduler
        self.rng = rng
        self.bridges: dict[str, Bridge] = {}
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._name_re = re.compile(rf"(?<!\w){re.escape(self.name)}(?!\w)", re.IGNORECASE)
        self._jobs = f"{self.name}:{uuid.uuid4().hex[:6]}"
        self.rhythm = DailyRhythm(self)

    # -- lifecycle ---------------------------------------------------------------------

    def attach(self, bridge: Bridge) -> None:
        """Speak through ``bridge`` (its host must be this engine)."""
        self.bridges[bridge.name] = bridge

    async def start(self) -> None:
        """Restore plans from the database and schedule what comes next."""
        await self.rhythm.start()

    async def stop(self) -> None:
        """Cancel running turns and pending jobs."""
        for job in ("presence", "start", "retention"):
            self.scheduler.cancel(f"{self._jobs}:{job}")
        tasks = list(self._tasks) + [c.waiting for c in self._channels.values() if c.waiting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channel(self, bridge: str, channel: str) -> _Channel:
        return self._channels.setdefault((bridge, channel), _Channel())

    def allowed(self, channel: str, name: str | None = None) -> bool:
        """Whether the persona may speak in this channel (configured; nothing else)."""
        allowed = self.b.channels
        return "*" in allowed or channel in allowed or (name is not None and name in allowed)

    # -- events in (BridgeHost) --------------------------------------------------------

    def _is_me(self, bridge: Bridge, user: User | None) -> bool:
        return user is not None and bridge.me is not None and user.id == bridge.me.id

    def _addressed(self, bridge: Bridge, event: MessageEvent) -> bool:
        return (
            any(self._is_me(bridge, u) for u in event.mentions)
            or self._is_me(bridge, event.reply_to_author)
            or bool(self._name_re.search(event.text))
        )

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> None:
        """Remember the message and, when it calls for an answer, plan a turn."""
        is_self = self._is_me(bridge, event.author)
        addressed = not is_self and self._addressed(bridge, event)
        # A message seen before (an edit, or a replay after a reconnect) updates the history
        # but never starts a second turn.
        replay = event.edited or self.store.has(
            self.name, bridge.name, event.channel, event.message_id
        )
        if event.channel_name:
            names = self.store.get(self.name, "channel_names", {})
            if names.get(event.channel) != event.channel_name:
                names[event.channel] = event.channel_name
                self.store.put(self.name, "channel_names", names)
        last = self.store.recent(self.name, bridge.name, event.channel, 1)
        if not is_self and not replay and (not last or event.timestamp - last[-1].ts >= self._gap):
            await bridge.notice(event.channel, "a new conversation begins")
            log.info("session_started", persona=self.name, channel=event.channel)
        message = StoredMessage(
            bridge=bridge.name,
            channel=event.channel,
            message_id=event.message_id,
            author_id=event.author.id,
            author_name=event.author.name,
            is_bot=event.author.is_bot or is_self,
            is_self=is_self,
            kind="reply" if event.reply_to else "message",
            text=event.text,
            ts=event.timestamp,
            reply_to=event.reply_to,
            addressed=addressed,
        )
        if event.text.strip():
            self.store.add(self.name, message)
        for i, attachment in enumerate(event.attachments):
            self.store.add(
                self.name,
                replace(
                    message,
                    message_id=f"{event.message_id}#{i}",
                    kind=attachment.kind,
                    text=attachment.description or "",
                    reply_to=None,
                ),
            )
        if is_self or replay or not self.allowed(event.channel, event.channel_name):
            return
        if not self.online:
            log.info("message_while_offline", persona=self.name, addressed=addressed)
            return
        self._trigger(bridge, event.channel, addressed)

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        """Remember others' reactions as REACT lines (they do not ask for an answer)."""
        if self._is_me(bridge, event.user):
            return
        self.store.add(
            self.name,
            StoredMessage(
                bridge=bridge.name,
                channel=event.channel,
                message_id=event.message_id,
                author_id=event.user.id,
                author_name=event.user.name,
                is_bot=event.user.is_bot,
                is_self=False,
                kind="react",
                text=event.emoji,
                ts=event.timestamp,
            ),
        )

    async def on_presence(self, bridge: Bridge, event: PresenceEvent) -> None:
        """Others' presence is not used yet; logged for debugging."""
        log.debug("presence_seen", user=event.user.name, status=event.status)

    async def on_delete(self, bridge: Bridge, channel: str, message_id: str) -> None:
        """A deleted message leaves the history."""
        self.store.delete(self.name, bridge.name, channel, message_id)

    # -- turns -------------------------------------------------------------------------

    @property
    def _gap(self) -> timedelta:
        return timedelta(seconds=self.b.session_gap)

    def _trigger(self, bridge: Bridge, channel: str, addressed: bool) -> None:
        state = self._channel(bridge.name, channel)
        state.addressed |= addressed
        if state.speaking:
            state.pending = True
            return
        if state.waiting is not None and not state.waiting.done():
            # A burst of messages gets one answer: restart the wait on every new message.
            state.waiting.cancel()
        state.waiting = asyncio.ensure_future(self._debounced(bridge, channel))

    async def _debounced(self, bridge: Bridge, channel: str) -> None:
        await self.clock.sleep(self.b.debounce)
        try:
            await self.respond(bridge, channel)
        except Exception:
            # A failed turn must not end the persona; the next message starts a new one.
            log.exception("turn_failed", persona=self.name, channel=channel)

    def session(self, bridge: str, channel: str) -> list[StoredMessage]:
        """The current conversation in a channel: events since the last long silence."""
        history = self.store.recent(self.name, bridge, channel, self.b.context_lines * 2)
        start = 0
        for i in range(1, len(history)):
            if history[i].ts - history[i - 1].ts >= self._gap:
                start = i
        return history[start:]

    def lines(self, session: Sequence[StoredMessage]) -> list[Line]:
        """Transcript lines for a session, cut as the training export cuts them."""
        return prompt_lines([m.event() for m in session], self.b.context_lines)

    def _bot_run(self, session: Sequence[StoredMessage]) -> int:
        run = 0
        for m in reversed(session):
            if not m.is_bot:
                break
            run += 1
        return run

    async def respond(self, bridge: Bridge, channel: str, *, forced: bool = False) -> None:
        """Decide whether to speak after the latest messages, and do so."""
        state = self._channel(bridge.name, channel)
        addressed = state.addressed or forced
        state.addressed = False
        session = self.session(bridge.name, channel)
        if not session or session[-1].is_self:
            return  # never answer itself
        if session[-1].is_bot and self._bot_run(session) > self.b.bot_budget:
            log.info("bot_budget_spent", persona=self.name, channel=channel)
            return
        actions = await self._generate(bridge, channel, session, addressed)
        if not actions:
            return
        state.speaking = True
        try:
            await self._perform(bridge, channel, actions, trigger=session[-1])
        finally:
            state.speaking = False
            if state.pending:
                state.pending = False
                self._trigger(bridge, channel, False)

    def _others(self, session: Sequence[StoredMessage]) -> set[str]:
        return {m.author_name for m in session if not m.is_self}

    async def _generate(
        self, bridge: Bridge, channel: str, session: Sequence[StoredMessage], addressed: bool
    ) -> list[Action]:
        lines = self.lines(session)
        conversation = f"{self.name}/{bridge.name}/{channel}"
        if self.persona.format == "chat":
            if not addressed and self.rng.random() >= self.b.talkativeness:
                return []
            messages = chat_messages(
                self.name, self.persona.card.description, lines, examples=self.persona.card.examples
            )
            text = await self._ask("chat", conversation, messages=messages)
            if text is None:
                return []
            return parse_output(text, self.name, fmt="chat", others=self._others(session))
        # transcript: the model predicts who speaks next; when addressed, the persona does.
        prompt = render_transcript(lines) + (f"{self.name}:" if addressed else "")
        text = await self._ask("text", conversation, prompt=prompt)
        if text is None:
            return []
        if addressed and not same_speaker(text, self.name):
            # The prompt ended with "Name:"; the completion is the rest of that line.
            text = f"{self.name}: {text.lstrip()}"
        return parse_output(text, self.name, fmt="transcript")

    async def _ask(
        self,
        kind: Literal["chat", "text"],
        conversation: str,
        *,
        priority: Literal["interactive", "background"] = "interactive",
        **fields: Any,
    ) -> str | None:
        text = await self.completer(
            CompletionCall(
                kind=kind,
                conversation=conversation,
                max_tokens=self.b.max_tokens,
                temperature=self.b.temperature,
                priority=priority,
                **fields,
            )
        )
        log.debug("model_output", persona=self.name, text=text)
        return text

    async def _perform(
        self,
        bridge: Bridge,
        channel: str,
        actions: Sequence[Action],
        trigger: StoredMessage | None,
    ) -> None:
        if trigger is not None:
            await self.clock.sleep(self.b.reading_delay + len(trigger.text) / self.b.reading_speed)
        for i, action in enumerate(actions):
            if not self.online:
                break
            if i:
                await self.clock.sleep(self.b.message_pause)
            if action.kind == "react":
                if bridge.can_react and trigger is not None:
                    await bridge.react(channel, trigger.message_id, action.text)
                    self._remember_own(bridge, channel, trigger.message_id, "react", action.text)
                continue
            if action.kind == "attach":
                if bridge.can_attach:
                    await bridge.attach(channel, action.attachment or "FILE", action.text)
                else:
                    log.info("attachment_skipped", persona=self.name, kind=action.attachment)
                continue
            await self._type(bridge, channel, action.text)
            if not self._rate_ok(bridge.name, channel):
                log.info("rate_limited", persona=self.name, channel=channel)
                break
            reply = action.kind == "reply" and bridge.can_reply and trigger is not None
            for part in _split(action.text, bridge.max_message_length):
                if reply and trigger is not None:
                    mid = await bridge.reply(channel, trigger.message_id, part)
                else:
                    mid = await bridge.send(channel, part)
                self._remember_own(bridge, channel, mid, "reply" if reply else "message", part)

    def _remember_own(
        self,
        bridge: Bridge,
        channel: str,
        message_id: str,
        kind: str,
        text: str,
        *,
        opener: bool = False,
    ) -> None:
        me = bridge.me
        self.store.add(
            self.name,
            StoredMessage(
                bridge=bridge.name,
                channel=channel,
                message_id=message_id,
                author_id=me.id if me else f"persona:{self.name}",
                author_name=self.name,
                is_bot=True,
                is_self=True,
                kind=kind,
                text=text,
                ts=self.clock.now(),
                opener=opener,
            ),
        )
        if kind in ("message", "reply"):
            self._channel(bridge.name, channel).sent.append(self.clock.now())

    def _rate_ok(self, bridge: str, channel: str) -> bool:
        sent = self._channel(bridge, channel).sent
        now = self.clock.now()
        recent = [t for t in sent if now - t < timedelta(minutes=1)]
        return len(recent) < self.b.max_per_minute

    async def _type(self, bridge: Bridge, channel: str, text: str) -> None:
        sent = self._channel(bridge.name, channel).sent
        if sent:
            wait = self.b.min_interval - (self.clock.now() - sent[-1]).total_seconds()
            if wait > 0:
                await self.clock.sleep(wait)
        remaining = len(text) / self.b.typing_speed
        while remaining > 0:
            if bridge.can_type:
                # Platforms expire the indicator after a few seconds: refresh it.
                await bridge.typing(channel)
            step = min(self.b.typing_refresh, remaining)
            await self.clock.sleep(step)
            remaining -= step

    # -- the day: presence and proactive starts live in DailyRhythm ---------------------

    @property
    def online(self) -> bool:
        """Whether the persona is shown online and may speak."""
        return self.rhythm.online

    async def try_start(self) -> bool:
        """Open a new conversation in a quiet channel, if the rules allow it now."""
        return await self.rhythm.try_start()


def _split(text: str, limit: int) -> list[str]:
    """Split text over ``limit`` characters at sentence ends, else at spaces."""
    parts: list[str] = []
    while len(text) > limit:
        cut = max(
            text.rfind(". ", 0, limit), text.rfind("! ", 0, limit), text.rfind("? ", 0, limit)
        )
        cut = cut + 1 if cut > 0 else text.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return parts
