"""The persona's day: asleep at night, away now and then, back again.

Plans are kept in the persona's state, so a restart in the middle of an absence changes
nothing. Coming back, the persona catches up on what was said (``on_back``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from .._api import Bridge, PersonaEvent, Upcoming
from .._presence import exp_delay, in_hours, local_hour, next_boundary
from .._time import Clock, Scheduler
from ._current import Current
from ._state import Away, StateBook

__all__ = ["Day"]

log = structlog.get_logger("personad.behaviour")

# After a failed platform call (presence), the presence job tries again this soon.
_RETRY = timedelta(minutes=5)
_BACK = {"asleep": "awake", "away": "back", "paused": "resumed"}


class Day:
    """Presence: sleep hours, random away periods and the kill switch decide it."""

    def __init__(
        self,
        current: Current,
        book: StateBook,
        clock: Clock,
        scheduler: Scheduler,
        rng: random.Random,
        bridges: Mapping[str, Bridge],
        announce: Callable[[PersonaEvent], Awaitable[None]],
        on_back: Callable[[], None],
        job_id: str,
    ) -> None:
        self._current = current
        self._book = book
        self._clock = clock
        self._scheduler = scheduler
        self._rng = rng
        self._bridges = bridges
        self._announce = announce
        self._on_back = on_back
        self._job_id = job_id

    @property
    def online(self) -> bool:
        """Whether the persona is shown online (its day; the kill switch included)."""
        return self._book.state.online

    async def start(self) -> None:
        """Take up the day where the state says it is, and plan the next change."""
        await self.tick(announce=False)

    def stop(self) -> None:
        """Drop the planned presence change."""
        self._scheduler.cancel(self._job_id)

    def _away(self, now: datetime) -> Away | None:
        away = self._book.state.away
        if away is not None and now >= away.end:
            away = None  # that absence is over: plan the next
        if away is None:
            b = self._current.b
            delay = exp_delay(b.away_per_day, self._rng)
            if delay is None:
                if self._book.state.away is not None:
                    self._book.update(away=None)
                return None
            start = now + timedelta(seconds=delay)
            minutes = self._rng.uniform(*b.away_minutes)
            away = Away(start=start, end=start + timedelta(minutes=minutes))
            self._book.update(away=away.model_dump())
            log.info(
                "away_planned",
                persona=self._current.name,
                start=away.start.isoformat(),
                end=away.end.isoformat(),
            )
        return away

    def _asleep(self, when: datetime) -> bool:
        b = self._current.b
        return in_hours(local_hour(when, b.timezone), b.sleep_hours)

    def _reason(self, now: datetime, away: Away | None) -> str | None:
        """Why the persona is offline now, or None when it is there."""
        if self._book.state.paused:
            return "paused"
        if self._asleep(now):
            return "asleep"
        if away is not None and away.start <= now < away.end:
            return "away"
        return None

    async def tick(self, *, announce: bool = True) -> None:
        """Go online or offline as the plan says; plan the next change."""
        now = self._clock.now()
        away: Away | None = None
        retry = False
        try:
            away = self._away(now)
            retry = not await self._update(now, away, announce=announce)
        except Exception:
            # The persona's day goes on: whatever failed is tried again at the next tick.
            log.exception("presence_tick_failed", persona=self._current.name)
            retry = True
        finally:
            b = self._current.b
            candidates = [
                t
                for t in (
                    next_boundary(now, b.sleep_hours, b.timezone),
                    *((away.start, away.end) if away else ()),
                    now + _RETRY if retry else None,
                )
                if t is not None and t > now
            ]
            if candidates:
                self._scheduler.at(min(candidates), self._job_id, self.tick)

    async def _update(self, now: datetime, away: Away | None, *, announce: bool) -> bool:
        """Go online or offline; False if a platform did not take the presence."""
        reason = self._reason(now, away)
        state = self._book.state
        want, was = reason is None, state.online
        shown = True
        if want != was or not state.presence_shown:
            shown = await self._show(want)
        if want and not was:
            self._book.update(online=True, offline_reason=None)
            back = _BACK.get(state.offline_reason or "", "back")
            log.info("presence", persona=self._current.name, state="online", reason=back)
            if announce:
                await self._announce(self._event("online", back))
            self._on_back()  # catch up where it was addressed or the talk goes on
        elif not want and was:
            self._book.update(online=False, offline_reason=reason)
            log.info("presence", persona=self._current.name, state="offline", reason=reason)
            if announce:
                await self._announce(self._event("offline", reason))
        return shown

    def _event(self, state: str, reason: str | None, *, change: bool = True) -> PersonaEvent:
        now = self._clock.now()
        until = self.back_at(now) if state == "offline" else None
        return PersonaEvent(
            kind="presence",
            persona=self._current.name,
            at=self._current.local(now),
            state="online" if state == "online" else "offline",
            reason=reason,
            until=self._current.local(until) if until else None,
            change=change,
        )

    def where(self) -> PersonaEvent:
        """Where the persona is in its day now (a reminder, not a change)."""
        state = self._book.state
        if state.online:
            return self._event("online", None, change=False)
        return self._event("offline", state.offline_reason, change=False)

    async def _show(self, online: bool) -> bool:
        """Show the presence on every bridge; False (and shown again later) if one failed."""
        shown = True
        for bridge in self._bridges.values():
            if not bridge.can_presence:
                continue
            try:
                await bridge.set_presence("online" if online else "offline")
            except Exception:
                log.exception("presence_failed", persona=self._current.name, bridge=bridge.name)
                shown = False
        self._book.update(presence_shown=shown)
        return shown

    def _wake_after(self, when: datetime) -> datetime:
        hours = self._current.b.sleep_hours
        if hours is None:
            return when
        local = self._current.local(when)
        wake = local.replace(hour=hours[1] % 24, minute=0, second=0, microsecond=0)
        return wake if wake > local else wake + timedelta(days=1)

    def back_at(self, now: datetime) -> datetime | None:
        """When the persona expects to be back (None while paused: until resumed)."""
        state = self._book.state
        if state.paused:
            return None
        t = now
        for _ in range(8):  # sleep and an absence may follow each other
            if self._asleep(t):
                t = self._wake_after(t)
            elif state.away is not None and state.away.start <= t < state.away.end:
                t = state.away.end
            else:
                return t
        return t

    def upcoming(self, now: datetime) -> list[Upcoming]:
        """The next sleep, wake-up and absence."""
        b = self._current.b
        out: list[Upcoming] = []
        if b.sleep_hours is not None and b.sleep_hours[0] != b.sleep_hours[1]:
            tz = ZoneInfo(b.timezone)
            for hour, what in zip(b.sleep_hours, ("goes to sleep", "wakes up"), strict=True):
                local = now.astimezone(tz)
                at = local.replace(hour=hour % 24, minute=0, second=0, microsecond=0)
                out.append(Upcoming(at if at > local else at + timedelta(days=1), what))
        away = self._book.state.away
        if away is not None and away.end > now:
            if away.start > now:
                minutes = round((away.end - away.start).total_seconds() / 60)
                out.append(Upcoming(away.start, f"goes away for {minutes} min"))
            out.append(Upcoming(away.end, "is back from being away"))
        return out
