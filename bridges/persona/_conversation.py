"""The conversation: which messages ask for an answer, debounce, whose turn, catching up."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from models import split_by_gap, starts_session

from .._api import Bridge, MessageEvent, ReactionEvent, User
from .._store import PersonaStore, StoredMessage
from .._time import Clock
from ._current import Current
from ._habits import draw_burst, draw_emoji, draw_quantile, hour_of_week, typing_seconds
from ._speaker import Speaker
from ._state import StateBook
from ._voice import Voice

__all__ = ["Conversations"]

log = structlog.get_logger("personad.behaviour")


@dataclass
class _Plan:
    """What the persona decided when someone else started talking (profile habits).

    Drawn once per run of others' messages and kept until the persona speaks or the
    conversation ends, as a person decides once whether and how soon to answer: a friend
    who adds a line restarts the wait (``since``), not the decision.
    """

    since: datetime
    latency: float | None
    answer: bool | None


@dataclass
class _Turn:
    """A channel's turn-taking while running (not kept across restarts)."""

    waiting: asyncio.Task[None] | None = None
    speaking: bool = False
    pending: bool = False
    addressed: bool = False
    plan: _Plan | None = None


class Conversations:
    """Remembers what is said where the persona may speak and decides when it answers.

    ``may_speak(channel)`` says whether the persona may speak there now: online (its day)
    and not paused (the kill switch).
    """

    def __init__(
        self,
        current: Current,
        store: PersonaStore,
        book: StateBook,
        clock: Clock,
        voice: Voice,
        speaker: Speaker,
        bridges: Mapping[str, Bridge],
        may_speak: Callable[[str], bool],
        rng: random.Random,
    ) -> None:
        self._rng = rng
        self._reacting: set[asyncio.Task[None]] = set()
        self._current = current
        self._store = store
        self._book = book
        self._clock = clock
        self._voice = voice
        self._speaker = speaker
        self._bridges = bridges
        self._may_speak = may_speak
        self._turns: dict[tuple[str, str], _Turn] = {}

    async def stop(self) -> None:
        """Cancel the turns waiting or running."""
        tasks = [t.waiting for t in self._turns.values() if t.waiting]
        tasks += list(self._reacting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _turn_of(self, bridge: str, channel: str) -> _Turn:
        return self._turns.setdefault((bridge, channel), _Turn())

    def allowed(self, channel: str, name: str | None = None) -> bool:
        """Whether the persona may speak in ``channel`` (its name as last seen counts too)."""
        known = name or self._book.state.channel_names.get(channel)
        return self._current.allowed(channel, known)

    # -- events in ---------------------------------------------------------------------

    @staticmethod
    def _is_me(bridge: Bridge, user: User | None) -> bool:
        return user is not None and bridge.me is not None and user.id == bridge.me.id

    def _addressed(self, bridge: Bridge, event: MessageEvent) -> bool:
        name = re.compile(rf"(?<!\w){re.escape(self._current.name)}(?!\w)", re.IGNORECASE)
        return (
            any(self._is_me(bridge, u) for u in event.mentions)
            or self._is_me(bridge, event.reply_to_author)
            or bool(name.search(event.text))
        )

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> bool:
        """Remember the message and, when it calls for an answer, plan a turn. Returns
        whether it was a new message of someone else that the persona could not take now."""
        if not self._current.allowed(event.channel, event.channel_name):
            # Only what the persona may answer is kept: nobody else's words are stored.
            log.debug("message_not_allowed", persona=self._current.name, channel=event.channel)
            return False
        is_self = self._is_me(bridge, event.author)
        addressed = not is_self and self._addressed(bridge, event)
        if event.channel_name:
            names = self._book.state.channel_names
            if names.get(event.channel) != event.channel_name:
                self._book.update(channel_names={**names, event.channel: event.channel_name})
        message, rows = _rows_of(bridge, event, is_self=is_self, addressed=addressed)
        if self._store.has(bridge.name, event.channel, event.message_id):
            # Seen before: an edit updates the history, a replay after a reconnect keeps the
            # first copy; neither starts a second turn.
            if event.edited:
                self._store.edit(message)
            for row in rows:
                self._store.add(row)
            return False
        last = self._store.recent(bridge.name, event.channel, 1)
        previous = last[-1].ts if last else None
        if event.edited and not is_self:
            # An edit of a message never seen (edited while the bridge was away, or an old
            # message edited now). Past retention it is not taken back; outside the
            # conversation going on now it is history, not a reason to speak.
            now = self._clock.now()
            if event.timestamp < now - timedelta(days=self._current.b.history_days):
                log.info("old_edit_ignored", persona=self._current.name, channel=event.channel)
                return False
            if (previous is not None and previous > event.timestamp) or starts_session(
                event.timestamp, now, self._current.gap
            ):
                for row in rows:
                    self._store.add(row, handled=True)
                return False
        if not is_self and starts_session(previous, event.timestamp, self._current.gap):
            await bridge.notice(event.channel, "a new conversation begins")
            log.info("session_started", persona=self._current.name, channel=event.channel)
        for row in rows:
            self._store.add(row)
        if is_self:
            return False
        if not self._may_speak(event.channel):
            # It stays pending: answered when the persona is back, if still fitting.
            log.info("message_while_offline", persona=self._current.name, addressed=addressed)
            return True
        self._trigger(bridge, event.channel, addressed)
        self._maybe_react(bridge, event.channel, message)
        return False

    def _maybe_react(self, bridge: Bridge, channel: str, message: StoredMessage) -> None:
        """The person's reaction habit: at their rate, a favourite emoji, a moment later."""
        b = self._current.b
        if b.reaction_rate <= 0 or not bridge.can_react or self._rng.random() >= b.reaction_rate:
            return
        emoji = draw_emoji(b.reactions, self._rng)
        delay = draw_quantile(b.reply_latency, self._rng) if b.reply_latency else 5.0

        async def react() -> None:
            await self._clock.sleep(delay)
            if self._may_speak(channel):
                await bridge.react(channel, message.message_id, emoji)
                self._speaker.remember(bridge, channel, message.message_id, "react", emoji)

        task = asyncio.ensure_future(react())
        self._reacting.add(task)
        task.add_done_callback(self._reacting.discard)

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        """Remember others' reactions as REACT lines (they do not ask for an answer)."""
        if self._is_me(bridge, event.user) or not self.allowed(event.channel):
            return
        self._store.add(
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
            )
        )

    # -- turns -------------------------------------------------------------------------

    def _trigger(self, bridge: Bridge, channel: str, addressed: bool) -> None:
        turn = self._turn_of(bridge.name, channel)
        turn.addressed |= addressed
        self._plan(turn)
        if turn.speaking:
            turn.pending = True
            return
        if turn.waiting is not None and not turn.waiting.done():
            # A burst of messages gets one answer: restart the wait on every new message.
            turn.waiting.cancel()
        turn.waiting = asyncio.ensure_future(self._debounced(bridge, channel))

    def _plan(self, turn: _Turn) -> None:
        """Draw (or keep) the decision of this run of others' messages; restart its wait."""
        b = self._current.b
        if b.reply_latency is None and b.around is None:
            return
        now = self._clock.now()
        if turn.plan is None or starts_session(turn.plan.since, now, self._current.gap):
            latency = draw_quantile(b.reply_latency, self._rng) if b.reply_latency else None
            answer = None
            if b.around is not None:
                answer = self._rng.random() < b.around[hour_of_week(now, b.timezone)]
            turn.plan = _Plan(since=now, latency=latency, answer=answer)
        else:
            turn.plan = replace(turn.plan, since=now)

    async def _debounced(self, bridge: Bridge, channel: str) -> None:
        plan = self._turn_of(bridge.name, channel).plan
        wait = self._current.b.debounce
        if plan is not None and plan.latency is not None:
            wait = min(wait, plan.latency)
        await self._clock.sleep(wait)
        try:
            await self.respond(bridge, channel)
        except Exception:
            # A failed turn must not end the persona; the next message starts a new one.
            log.exception("turn_failed", persona=self._current.name, channel=channel)

    def session(self, bridge: str, channel: str) -> list[StoredMessage]:
        """The current conversation in a channel: events since the last long silence."""
        history = self._store.recent(bridge, channel, self._current.b.context_lines * 2)
        sessions = split_by_gap(history, self._current.gap, ts=lambda m: m.ts)
        return sessions[-1] if sessions else []

    async def respond(self, bridge: Bridge, channel: str, *, forced: bool = False) -> None:
        """Decide whether to speak after the latest messages, and do so."""
        turn = self._turn_of(bridge.name, channel)
        addressed = turn.addressed or forced
        turn.addressed = False
        session = self.session(bridge.name, channel)
        if not session or not self._may_speak(channel):
            return  # paused or gone meanwhile: the messages stay pending
        if await self._take_turn(bridge, channel, session, addressed):
            # Decided (answered, or chose to let it pass): no longer pending after a restart.
            self._store.mark_handled(bridge.name, channel, session[-1].ts)

    async def _take_turn(
        self, bridge: Bridge, channel: str, session: Sequence[StoredMessage], addressed: bool
    ) -> bool:
        """One turn; False when no answer could be had (the messages stay pending)."""
        if session[-1].is_self:
            return True  # never answer itself
        if session[-1].is_bot and _bot_run(session) > self._current.b.bot_budget:
            log.info("bot_budget_spent", persona=self._current.name, channel=channel)
            return True
        turn = self._turn_of(bridge.name, channel)
        plan = turn.plan
        answer = plan.answer if plan is not None else None
        actions = await self._voice.next_actions(
            bridge.name, channel, session, addressed, answer=answer
        )
        if actions is None:
            return False
        if not actions:
            return True
        b = self._current.b
        if b.burst_lengths is not None:
            actions = await self._voice.burst(
                bridge.name, channel, session, actions, draw_burst(b.burst_lengths, self._rng)
            )
        timed = plan is not None and plan.latency is not None
        if plan is not None and plan.latency is not None:
            # Generation started when the debounce ended: wait only what is left of the
            # drawn latency (less the typing, when the person's latency includes it).
            first = next((a.text for a in actions if a.kind in ("send", "reply")), "")
            typing = typing_seconds(first, b) if b.latency_typing == "included" else 0.0
            left = (plan.since - self._clock.now()).total_seconds() + plan.latency - typing
            await self._clock.sleep(left)
        turn.speaking = True
        try:
            await self._speaker.perform(
                bridge, channel, actions, trigger=session[-1], read=not timed
            )
            turn.plan = None  # the persona spoke: the next run is decided afresh
        finally:
            turn.speaking = False
            if turn.pending:
                turn.pending = False
                self._trigger(bridge, channel, False)
        return True

    def answer_pending(self) -> None:
        """Give each channel with messages still waiting for a decision its turn, when the
        persona would still answer: it was addressed, or the conversation is still going.

        Used after a restart (a message that arrived just before a crash) and when coming
        back online (the backlog of an absence). Others are let pass.
        """
        now = self._clock.now()
        for (bridge_name, channel), messages in self._store.pending().items():
            bridge = self._bridges.get(bridge_name)
            if bridge is None or not self.allowed(channel) or not self._may_speak(channel):
                continue
            addressed = any(m.addressed for m in messages)
            going = not starts_session(messages[-1].ts, now, self._current.gap)
            log.info(
                "catching_up",
                persona=self._current.name,
                channel=channel,
                backlog=len(messages),
                addressed=addressed,
                going=going,
            )
            if addressed or going:
                self._trigger(bridge, channel, addressed)
            else:
                self._store.mark_handled(bridge_name, channel, messages[-1].ts)


def _bot_run(session: Sequence[StoredMessage]) -> int:
    run = 0
    for m in reversed(session):
        if not m.is_bot:
            break
        run += 1
    return run


def _rows_of(
    bridge: Bridge, event: MessageEvent, *, is_self: bool, addressed: bool
) -> tuple[StoredMessage, list[StoredMessage]]:
    """The message's text line, and the lines to keep: the text if any, then one line per
    attachment."""
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
    rows = [message] if event.text.strip() else []
    for i, attachment in enumerate(event.attachments):
        rows.append(
            replace(
                message,
                message_id=f"{event.message_id}#{i}",
                kind=attachment.kind,
                text=attachment.description or "",
                reply_to=None,
            )
        )
    return message, rows
