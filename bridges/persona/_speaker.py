"""How the persona acts on a platform: reading, typing at a human pace, rate limits."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from models import Action

from .._api import Bridge
from .._store import PersonaStore, StoredMessage
from .._time import Clock
from ._current import Current
from ._habits import draw_quantile, typing_seconds

__all__ = ["Speaker", "split_text"]

log = structlog.get_logger("personad.behaviour")


class Speaker:
    """Carries out the persona's actions on a bridge and remembers what it said."""

    def __init__(
        self,
        current: Current,
        store: PersonaStore,
        clock: Clock,
        may_speak: Callable[[str], bool],
        rng: random.Random,
    ) -> None:
        self._rng = rng
        self._current = current
        self._store = store
        self._clock = clock
        self._may_speak = may_speak
        self._sent: dict[tuple[str, str], deque[datetime]] = {}

    async def perform(
        self,
        bridge: Bridge,
        channel: str,
        actions: Sequence[Action],
        trigger: StoredMessage | None,
        *,
        read: bool = True,
        first: bool = True,
    ) -> None:
        """Read the trigger, then act out ``actions``; stops when the persona must be silent.

        ``read=False`` when the wait was the person's own latency, which includes reading;
        ``first=False`` when ``actions`` continue messages just sent (a pause before each).
        """
        b = self._current.b
        if trigger is not None and read:
            await self._clock.sleep(b.reading_delay + len(trigger.text) / b.reading_speed)
        for i, action in enumerate(actions):
            if not self._may_speak(channel):
                break
            if i or not first:
                await self._clock.sleep(self._pause(action))
            if action.kind == "react":
                if bridge.can_react and trigger is not None:
                    await bridge.react(channel, trigger.message_id, action.text)
                    self.remember(bridge, channel, trigger.message_id, "react", action.text)
                continue
            if action.kind == "attach":
                if bridge.can_attach:
                    await bridge.attach(channel, action.attachment or "FILE", action.text)
                else:
                    log.info("attachment_skipped", persona=self._current.name)
                continue
            await self.type(bridge, channel, action.text)
            if not self._may_speak(channel):
                break  # paused or gone while typing
            if not self._rate_ok(bridge.name, channel):
                log.info("rate_limited", persona=self._current.name, channel=channel)
                break
            reply = action.kind == "reply" and bridge.can_reply and trigger is not None
            for part in split_text(action.text, bridge.max_message_length):
                if reply and trigger is not None:
                    mid = await bridge.reply(channel, trigger.message_id, part)
                else:
                    mid = await bridge.send(channel, part)
                self.remember(bridge, channel, mid, "reply" if reply else "message", part)

    def _pause(self, action: Action) -> float:
        """The wait before a following message: the person's gap inside a burst (less the
        typing, when their gaps include it), else ``message_pause``."""
        b = self._current.b
        if b.burst_gaps is None:
            return b.message_pause
        gap = draw_quantile(b.burst_gaps, self._rng)
        if b.latency_typing == "included" and action.kind in ("send", "reply"):
            gap -= typing_seconds(action.text, b)
        return max(0.0, gap)

    def remember(
        self,
        bridge: Bridge,
        channel: str,
        message_id: str,
        kind: str,
        text: str,
        *,
        opener: bool = False,
    ) -> None:
        """Store one of the persona's own lines (and count it for the rate limit)."""
        me = bridge.me
        name = self._current.name
        now = self._clock.now()
        self._store.add(
            StoredMessage(
                bridge=bridge.name,
                channel=channel,
                message_id=message_id,
                author_id=me.id if me else f"persona:{name}",
                author_name=name,
                is_bot=True,
                is_self=True,
                kind=kind,
                text=text,
                ts=now,
                opener=opener,
            )
        )
        if kind in ("message", "reply"):
            self._sent_in(bridge.name, channel).append(now)

    def _sent_in(self, bridge: str, channel: str) -> deque[datetime]:
        return self._sent.setdefault((bridge, channel), deque(maxlen=64))

    def _rate_ok(self, bridge: str, channel: str) -> bool:
        now = self._clock.now()
        recent = [t for t in self._sent_in(bridge, channel) if now - t < timedelta(minutes=1)]
        return len(recent) < self._current.b.max_per_minute

    async def type(self, bridge: Bridge, channel: str, text: str) -> None:
        """Wait the least interval since the last message, then 'type' ``text``."""
        b = self._current.b
        sent = self._sent_in(bridge.name, channel)
        if sent:
            wait = b.min_interval - (self._clock.now() - sent[-1]).total_seconds()
            if wait > 0:
                await self._clock.sleep(wait)
        remaining = len(text) / b.typing_speed
        while remaining > 0:
            if bridge.can_type:
                # Platforms expire the indicator after a few seconds: refresh it.
                await bridge.typing(channel)
            step = min(b.typing_refresh, remaining)
            await self._clock.sleep(step)
            remaining -= step


def split_text(text: str, limit: int) -> list[str]:
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
