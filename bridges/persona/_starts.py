"""Proactive starts: now and then the persona opens a topic in a channel gone quiet."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import structlog

from models import Action

from .._api import Bridge, PersonaEvent, Upcoming
from .._presence import exp_delay, in_hours, local_hour
from .._store import PersonaStore
from .._time import Clock, Scheduler
from ._current import Current
from ._habits import draw_burst, next_start
from ._speaker import Speaker
from ._state import StateBook
from ._voice import Voice

__all__ = ["Starts"]

log = structlog.get_logger("personad.behaviour")


class Starts:
    """Plans start attempts at random (``starts_per_day``) and opens a conversation when
    the rules allow: active hours, a quiet channel, no unanswered opener, a daily cap."""

    def __init__(
        self,
        current: Current,
        store: PersonaStore,
        book: StateBook,
        clock: Clock,
        scheduler: Scheduler,
        rng: random.Random,
        bridges: Mapping[str, Bridge],
        voice: Voice,
        speaker: Speaker,
        may_speak: Callable[[str], bool],
        announce: Callable[[PersonaEvent], Awaitable[None]],
        job_id: str,
    ) -> None:
        self._current = current
        self._store = store
        self._book = book
        self._clock = clock
        self._scheduler = scheduler
        self._rng = rng
        self._bridges = bridges
        self._voice = voice
        self._speaker = speaker
        self._may_speak = may_speak
        self._announce = announce
        self._job_id = job_id
        self._retry: datetime | None = None

    def start(self) -> None:
        """Take up the planned attempt (kept over a restart), or plan one."""
        self._plan(restore=True)

    def stop(self) -> None:
        """Drop the planned attempt's job (the plan stays in the state)."""
        self._scheduler.cancel(self._job_id)

    def _plan(self, *, restore: bool = False) -> None:
        planned = self._book.state.next_start if restore else None
        if planned is None:
            b = self._current.b
            now = self._clock.now()
            if b.start_hours is not None:
                # At the hours the person actually opened conversations.
                planned = next_start(now, b.start_hours, b.starts_per_day, b.timezone, self._rng)
            else:
                delay = exp_delay(b.starts_per_day, self._rng)
                planned = now + timedelta(seconds=delay) if delay is not None else None
            if planned is None:
                return
            self._book.update(next_start=planned)
        self._scheduler.at(planned, self._job_id, self._job)

    async def _job(self) -> None:
        self._retry = None
        try:
            await self.try_start()
        except Exception:
            # A failed platform call costs this start, not the ones after it.
            log.exception("conversation_start_failed", persona=self._current.name)
        finally:
            if self._retry is not None:
                # A person who wants to open a talk waits for a quiet moment rather than
                # giving up: with the measured start rate, the bot does the same.
                self._book.update(next_start=self._retry)
                self._scheduler.at(self._retry, self._job_id, self._job)
            else:
                self._plan()

    def upcoming(self) -> list[Upcoming]:
        """The next planned attempt."""
        planned = self._book.state.next_start
        if planned is None:
            return []
        b = self._current.b
        if in_hours(local_hour(planned, b.timezone), b.sleep_hours):
            # The attempt runs, finds the persona asleep and plans the next: say so.
            return [Upcoming(planned, "would start a conversation, but is asleep then")]
        return [Upcoming(planned, "may start a conversation")]

    def _quiet_at(self, now: datetime) -> datetime | None:
        """When the soonest channel will have been quiet long enough (within 6 hours)."""
        quiet = timedelta(seconds=self._current.b.quiet_before_start)
        soonest = [
            last[-1].ts + quiet
            for bridge_name, channel in self._store.channels()
            if bridge_name in self._bridges
            and (last := self._store.recent(bridge_name, channel, 1))
            and not (last[-1].is_self and last[-1].opener)
        ]
        at = min((t for t in soonest if t > now), default=None)
        return at if at is not None and at - now <= timedelta(hours=6) else None

    def _candidates(self, now: datetime) -> list[tuple[str, str]]:
        quiet = timedelta(seconds=self._current.b.quiet_before_start)
        names = self._book.state.channel_names
        found = []
        for bridge_name, channel in self._store.channels():
            if bridge_name not in self._bridges:
                continue
            if not self._current.allowed(channel, names.get(channel)):
                continue
            if not self._may_speak(channel):
                continue
            last = self._store.recent(bridge_name, channel, 1)
            if not last or now - last[-1].ts < quiet:
                continue
            if last[-1].is_self and last[-1].opener:
                continue  # never two unanswered openers in a row
            found.append((bridge_name, channel))
        return sorted(found)

    async def try_start(self) -> bool:
        """Open a new conversation in a quiet channel, if the rules allow it now."""
        now = self._clock.now()
        b = self._current.b
        if not self._book.state.online:
            return False
        if b.start_hours is None and not in_hours(local_hour(now, b.timezone), b.active_hours):
            return False
        # Days are the persona's days, in its own time zone.
        day = self._current.local(now).date()
        count = self._book.state.starts_on(day)
        if count >= b.max_starts_per_day:
            return False
        candidates = self._candidates(now)
        if not candidates:
            if b.start_hours is not None:
                self._retry = self._quiet_at(now)
            return False
        bridge_name, channel = self._rng.choice(candidates)
        bridge = self._bridges[bridge_name]
        opener = await self._voice.opener(bridge_name, channel)
        if opener is None or not self._may_speak(channel):
            return False
        self._book.update(starts_day=day, starts_count=count + 1)
        await self._announce(
            PersonaEvent(
                kind="conversation_started",
                persona=self._current.name,
                at=self._current.local(self._clock.now()),
                channel=channel,
            )
        )
        await bridge.notice(channel, "a new conversation begins")
        self._speaker.remember(bridge, channel, f"init-{uuid.uuid4().hex[:8]}", "init", "")
        await self._speaker.type(bridge, channel, opener)
        mid = await bridge.send(channel, opener)
        self._speaker.remember(bridge, channel, mid, "message", opener, opener=True)
        if b.burst_lengths is not None:
            # The person opens with as many messages in a row as they answer with.
            more = await self._voice.burst(
                bridge_name,
                channel,
                [],
                [Action("send", opener)],
                draw_burst(b.burst_lengths, self._rng),
            )
            await self._speaker.perform(bridge, channel, more[1:], trigger=None, first=False)
        log.info("conversation_started", persona=self._current.name, channel=channel)
        return True
