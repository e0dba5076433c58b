"""The orchestrator: one persona's behaviour across the bridges it is attached to."""

from __future__ import annotations

import random
import uuid

import structlog

from models import Line, PersonaManifest

from .._api import Bridge, MessageEvent, PersonaEvent, PresenceEvent, ReactionEvent, Upcoming
from .._completer import Completer
from .._store import Conversation, Removed, Store, StoredMessage
from .._time import Clock, Scheduler
from ._conversation import Conversations
from ._current import Current
from ._day import Day
from ._pause import pause, resume
from ._retention import Retention
from ._speaker import Speaker
from ._starts import Starts
from ._state import PersonaState, StateBook
from ._voice import Voice

__all__ = ["PersonaEngine"]

log = structlog.get_logger("personad.behaviour")


class PersonaEngine:
    """One persona: the :class:`~bridges.BridgeHost` of its bridges.

    Bridges report events; the engine decides whether, when and what to say and tells them
    to type, send, reply, react or change presence. It never calls llama.cpp: text comes
    from a :class:`~bridges.Completer`. Time, scheduling and randomness are injected, so
    every rule runs on a fake clock in tests.

    The work is shared by collaborators, each with one responsibility: :class:`Conversations`
    (what asks for an answer, whose turn), :class:`Day` (presence: sleep, away, the kill
    switch), :class:`Starts` (opening topics), :class:`Retention` (forgetting), with
    :class:`Voice` (the model) and :class:`Speaker` (acting on a platform) under them. Their
    shared state is a :class:`PersonaState`, loaded and saved by one :class:`StateBook`.
    """

    def __init__(
        self,
        persona: PersonaManifest,
        completer: Completer,
        store: Store,
        clock: Clock,
        scheduler: Scheduler,
        rng: random.Random,
    ) -> None:
        self.name = persona.name
        self.clock = clock
        self.bridges: dict[str, Bridge] = {}
        self._current = Current(persona)
        self.store = store.for_persona(persona.name)
        self._book = StateBook(self.store)
        jobs = f"{self.name}:{uuid.uuid4().hex[:6]}"
        self._voice = Voice(self._current, completer, rng)
        self._speaker = Speaker(self._current, self.store, clock, self.may_speak, rng)
        self._conversations = Conversations(
            self._current,
            self.store,
            self._book,
            clock,
            self._voice,
            self._speaker,
            self.bridges,
            self.may_speak,
            rng,
        )
        self._day = Day(
            self._current,
            self._book,
            clock,
            scheduler,
            rng,
            self.bridges,
            self._announce,
            self._conversations.answer_pending,
            f"{jobs}:presence",
        )
        self._starts = Starts(
            self._current,
            self.store,
            self._book,
            clock,
            scheduler,
            rng,
            self.bridges,
            self._voice,
            self._speaker,
            self.may_speak,
            self._announce,
            f"{jobs}:start",
        )
        self._retention = Retention(
            self._current,
            self.store,
            self._book,
            completer,
            clock,
            scheduler,
            f"{jobs}:retention",
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def persona(self) -> PersonaManifest:
        """The persona's manifest (replaced by :meth:`reload`)."""
        return self._current.persona

    def reload(self, persona: PersonaManifest) -> None:
        """Use a re-read manifest from now on (SIGHUP); plans already made stay."""
        if persona.name != self.name:
            raise ValueError(f"reload of {self.name!r} got the manifest of {persona.name!r}")
        self._current.persona = persona
        log.info("persona_reloaded", persona=self.name)

    def attach(self, bridge: Bridge) -> None:
        """Speak through ``bridge`` (its host must be this engine)."""
        self.bridges[bridge.name] = bridge

    async def start(self) -> None:
        """Restore plans from the database, schedule what comes next, answer what was left
        waiting (a message that arrived just before a crash), and tell the bridges where
        the persona is in its day."""
        await self._day.start()
        self._starts.start()
        await self._retention.start()
        if self.online:
            self._conversations.answer_pending()
        else:
            await self._announce(self._day.where())

    async def stop(self) -> None:
        """Cancel running turns and pending jobs."""
        self._day.stop()
        self._starts.stop()
        self._retention.stop()
        await self._conversations.stop()

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> PersonaState:
        """The persona's state as saved."""
        return self._book.state

    @property
    def online(self) -> bool:
        """Whether the persona is shown online (its day, the kill switch included)."""
        return self._day.online

    def may_speak(self, channel: str) -> bool:
        """Whether the persona may speak in ``channel`` now: online and not paused there.

        Read from the database each time, so ``personad pause`` from another process
        silences a running persona at once.
        """
        state = self._book.state
        return state.online and not state.is_paused(channel)

    async def pause(self, channel: str | None = None) -> None:
        """The kill switch: silent everywhere (and shown offline), or in one channel."""
        pause(self.store, channel)
        log.info("persona_paused", persona=self.name, channel=channel)
        if channel is None:
            await self._day.tick()

    async def resume(self, channel: str | None = None) -> None:
        """Undo :meth:`pause`; the persona catches up on what still fits."""
        resume(self.store, channel)
        log.info("persona_resumed", persona=self.name, channel=channel)
        if channel is None:
            await self._day.tick()
        elif self.online:
            self._conversations.answer_pending()

    def upcoming(self) -> list[Upcoming]:
        """The persona's next scheduled events, soonest first (the console's ``/when``)."""
        items = [*self._day.upcoming(self.clock.now()), *self._starts.upcoming()]
        return sorted(
            (Upcoming(self._current.local(u.at), u.what) for u in items), key=lambda u: u.at
        )

    async def _announce(self, event: PersonaEvent, *, to: Bridge | None = None) -> None:
        """Tell every bridge (or one) what the persona did on its own (the console prints
        it); a bridge failing at it is logged, nothing more."""
        for bridge in [to] if to is not None else list(self.bridges.values()):
            try:
                await bridge.persona_event(event)
            except Exception:
                log.exception("persona_event_failed", persona=self.name, bridge=bridge.name)

    # -- events in (BridgeHost) --------------------------------------------------------

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> None:
        """Remember the message and, when it calls for an answer, plan a turn."""
        seen = event.edited and self.store.has(bridge.name, event.channel, event.message_id)
        if await self._conversations.on_message(bridge, event):
            await self._announce(self._day.where(), to=bridge)
        if seen:
            # The model server's cached state of the conversation still holds the old words.
            edited = Conversation(self.name, bridge.name, event.channel)
            await self._retention.drop_states(Removed(0, frozenset({edited})))

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        """Remember others' reactions as REACT lines (they do not ask for an answer)."""
        await self._conversations.on_reaction(bridge, event)

    async def on_presence(self, bridge: Bridge, event: PresenceEvent) -> None:
        """Others' presence is not used yet; logged for debugging."""
        log.debug("presence_seen", user=event.user.name, status=event.status)

    async def on_delete(self, bridge: Bridge, channel: str, message_id: str) -> None:
        """A deleted message leaves the history, and the model server's cached state of its
        conversation (which holds its words) is dropped."""
        removed = self.store.delete(bridge.name, channel, message_id)
        await self._retention.drop_states(removed)

    # -- for tests and tools -----------------------------------------------------------

    def session(self, bridge: str, channel: str) -> list[StoredMessage]:
        """The current conversation in a channel: events since the last long silence."""
        return self._conversations.session(bridge, channel)

    def lines(self, session: list[StoredMessage]) -> list[Line]:
        """Transcript lines for a session, cut as the training export cuts them."""
        return self._voice.lines(session)

    def answer_pending(self) -> None:
        """Take the turns still waiting for a decision, where they still fit."""
        self._conversations.answer_pending()

    async def try_start(self) -> bool:
        """Open a new conversation in a quiet channel, if the rules allow it now."""
        return await self._starts.try_start()
