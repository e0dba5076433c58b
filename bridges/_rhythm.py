"""The persona's day: when it sleeps or is away, how it comes back, when it opens a topic.

Plans are kept in the state database, so a restart in the middle of an absence or before a
planned conversation start changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from models import Line, chat_messages, parse_output, render_transcript

from ._api import Bridge
from ._presence import exp_delay, in_hours, local_hour, next_boundary
from ._store import StoredMessage

if TYPE_CHECKING:
    from ._behaviour import PersonaEngine

__all__ = ["DailyRhythm", "same_speaker"]

log = structlog.get_logger("personad.behaviour")


class DailyRhythm:
    """Presence (sleep hours, random absences, catching up) and proactive starts."""

    def __init__(self, engine: PersonaEngine) -> None:
        self.e = engine

    async def start(self) -> None:
        """Restore plans and schedule what comes next."""
        await self._presence_tick()
        self._plan_start(restore=True)
        await self._retention()

    # -- presence: sleep hours and random away periods ----------------------------------

    @property
    def online(self) -> bool:
        """Whether the persona is shown online and may speak."""
        return bool(self.e.store.get(self.e.name, "online", True))

    def _away(self, now: datetime) -> tuple[datetime, datetime] | None:
        plan = self.e.store.get(self.e.name, "away")
        if plan is None:
            delay = exp_delay(self.e.b.away_per_day, self.e.rng)
            if delay is None:
                return None
            low, high = self.e.b.away_minutes
            start = now + timedelta(seconds=delay)
            end = start + timedelta(minutes=self.e.rng.uniform(low, high))
            plan = [start.timestamp(), end.timestamp()]
            self.e.store.put(self.e.name, "away", plan)
            log.info(
                "away_planned", persona=self.e.name, start=start.isoformat(), end=end.isoformat()
            )
        start_ts, end_ts = plan
        return (
            datetime.fromtimestamp(start_ts, now.tzinfo),
            datetime.fromtimestamp(end_ts, now.tzinfo),
        )

    async def _presence_tick(self) -> None:
        now = self.e.clock.now()
        away = self._away(now)
        if away is not None and now >= away[1]:
            self.e.store.put(self.e.name, "away", None)  # that absence is over: plan the next
            away = self._away(now)
        asleep = in_hours(local_hour(now, self.e.b.timezone), self.e.b.sleep_hours)
        in_away = away is not None and away[0] <= now < away[1]
        want = not asleep and not in_away
        was = self.online
        if want != was or not self.e.store.get(self.e.name, "presence_shown", False):
            await self._show(want)
        if want and not was:
            since = self.e.store.get(self.e.name, "offline_since")
            self.e.store.put(self.e.name, "online", True)
            if since is not None:
                await self._catch_up(datetime.fromtimestamp(since, now.tzinfo))
        elif not want and was:
            self.e.store.put(self.e.name, "online", False)
            self.e.store.put(self.e.name, "offline_since", now.timestamp())
        candidates = [
            t
            for t in (next_boundary(now, self.e.b.sleep_hours, self.e.b.timezone), *(away or ()))
            if t is not None and t > now
        ]
        if candidates:
            self.e.scheduler.at(min(candidates), f"{self.e._jobs}:presence", self._presence_tick)

    async def _show(self, online: bool) -> None:
        self.e.store.put(self.e.name, "presence_shown", True)
        log.info("presence_changed", persona=self.e.name, online=online)
        for bridge in self.e.bridges.values():
            if bridge.can_presence:
                await bridge.set_presence("online" if online else "offline")

    async def _catch_up(self, since: datetime) -> None:
        """Back online: one reply where it was addressed or the talk goes on; else nothing."""
        now = self.e.clock.now()
        backlog: dict[tuple[str, str], list[StoredMessage]] = {}
        for m in self.e.store.since(self.e.name, since):
            if not m.is_self:
                backlog.setdefault((m.bridge, m.channel), []).append(m)
        names = self.e.store.get(self.e.name, "channel_names", {})
        for (bridge_name, channel), messages in backlog.items():
            bridge = self.e.bridges.get(bridge_name)
            if bridge is None or not self.e.allowed(channel, names.get(channel)):
                continue
            addressed = any(m.addressed for m in messages)
            going = now - messages[-1].ts < self.e._gap
            log.info(
                "catching_up",
                persona=self.e.name,
                channel=channel,
                backlog=len(messages),
                addressed=addressed,
                going=going,
            )
            if addressed or going:
                self.e._spawn(self.e.respond(bridge, channel, forced=addressed))

    # -- proactive starts ---------------------------------------------------------------

    def _plan_start(self, *, restore: bool = False) -> None:
        planned = self.e.store.get(self.e.name, "next_start") if restore else None
        if planned is None:
            delay = exp_delay(self.e.b.starts_per_day, self.e.rng)
            if delay is None:
                return
            planned = (self.e.clock.now() + timedelta(seconds=delay)).timestamp()
            self.e.store.put(self.e.name, "next_start", planned)
        when = datetime.fromtimestamp(planned, self.e.clock.now().tzinfo)
        self.e.scheduler.at(when, f"{self.e._jobs}:start", self._start_job)

    async def _start_job(self) -> None:
        try:
            await self.try_start()
        finally:
            self._plan_start()

    async def try_start(self) -> bool:
        """Open a new conversation in a quiet channel, if the rules allow it now."""
        now = self.e.clock.now()
        if not self.online or not in_hours(
            local_hour(now, self.e.b.timezone), self.e.b.active_hours
        ):
            return False
        day = now.astimezone().date().isoformat()
        count = self.e.store.get(self.e.name, "starts", {}).get(day, 0)
        if count >= self.e.b.max_starts_per_day:
            return False
        names = self.e.store.get(self.e.name, "channel_names", {})
        quiet = timedelta(seconds=self.e.b.quiet_before_start)
        candidates = []
        for bridge_name, channel in self.e.store.channels(self.e.name):
            if bridge_name not in self.e.bridges or not self.e.allowed(channel, names.get(channel)):
                continue
            last = self.e.store.recent(self.e.name, bridge_name, channel, 1)
            if not last or now - last[-1].ts < quiet:
                continue
            if last[-1].is_self and last[-1].opener:
                continue  # never two unanswered openers in a row
            candidates.append((bridge_name, channel))
        if not candidates:
            return False
        bridge_name, channel = self.e.rng.choice(sorted(candidates))
        bridge = self.e.bridges[bridge_name]
        opener = await self._opener(bridge, channel)
        if opener is None:
            return False
        self.e.store.put(self.e.name, "starts", {day: count + 1})
        await bridge.notice(channel, "a new conversation begins")
        self.e._remember_own(bridge, channel, f"init-{uuid.uuid4().hex[:8]}", "init", "")
        await self.e._type(bridge, channel, opener)
        mid = await bridge.send(channel, opener)
        self.e._remember_own(bridge, channel, mid, "message", opener, opener=True)
        log.info("conversation_started", persona=self.e.name, channel=channel)
        return True

    async def _opener(self, bridge: Bridge, channel: str) -> str | None:
        conversation = f"{self.e.name}/{bridge.name}/{channel}"
        if self.e.persona.format == "chat":
            messages = chat_messages(
                self.e.name,
                self.e.persona.card.description,
                [],
                examples=self.e.persona.card.examples,
            )
            messages[-1]["content"] = (
                f"The chat has been quiet for a while. Write {self.e.name}'s message that starts "
                "a new conversation."
            )
            text = await self.e._ask("chat", conversation, messages=messages, priority="background")
            actions = parse_output(text or "", self.e.name, fmt="chat")
        else:
            prompt = render_transcript([Line(self.e.name, command="INIT")]) + f"{self.e.name}:"
            text = await self.e._ask("text", conversation, prompt=prompt, priority="background")
            opener = text or ""
            if not same_speaker(opener, self.e.name):
                opener = f"{self.e.name}: {opener.lstrip()}"
            actions = parse_output(opener, self.e.name)
        said = [a.text for a in actions if a.kind in ("send", "reply") and a.text]
        return said[0] if said else None

    # -- retention ----------------------------------------------------------------------

    async def _retention(self) -> None:
        removed = self.e.store.purge(self.e.clock.now() - timedelta(days=self.e.b.history_days))
        if removed:
            log.info("history_purged", persona=self.e.name, rows=removed)
        self.e.scheduler.at(
            self.e.clock.now() + timedelta(hours=6), f"{self.e._jobs}:retention", self._retention
        )


def same_speaker(text: str, name: str) -> bool:
    """Whether ``text`` already starts with ``name:`` (a model repeating the prompt's label)."""
    return text.lstrip().casefold().startswith(f"{name.casefold()}:")
