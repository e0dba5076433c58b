"""How the person behaves, measured from their messages, as TOML the persona manifest includes.

``[behaviour]`` holds what the engine uses directly (sleep hours, active hours, typing speed,
conversation starts per day, time zone); ``[stats]`` keeps the distributions behind them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, tzinfo
from pathlib import Path
from statistics import quantiles
from typing import Any

from models import write_toml

from ._records import ExportMessage

__all__ = ["ProfileBuilder", "sleep_window"]

_MAX_SAMPLES = 20000  # distributions keep a bounded reservoir, not every value


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        v = values[0] if values else 0.0
        return {"p10": round(v, 2), "p50": round(v, 2), "p90": round(v, 2)}
    q = quantiles(values, n=10, method="inclusive")
    return {"p10": round(q[0], 2), "p50": round(q[4], 2), "p90": round(q[8], 2)}


def sleep_window(hours: list[int]) -> tuple[int, int] | None:
    """The longest run of hours (wrapping midnight) with under 10 % of the mean activity."""
    total = sum(hours)
    if total == 0:
        return None
    quiet = [h < 0.1 * total / 24 for h in hours]
    if all(quiet):
        return None
    best: tuple[int, int] = (0, 0)
    for start in range(24):
        if not quiet[start] or quiet[(start - 1) % 24]:
            continue
        length = 0
        while length < 24 and quiet[(start + length) % 24]:
            length += 1
        if length > best[1]:
            best = (start, length)
    if best[1] < 3:
        return None
    return (best[0], (best[0] + best[1]) % 24)


class _Reservoir:
    def __init__(self) -> None:
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < _MAX_SAMPLES:
            self.values.append(value)
        else:  # deterministic thinning keeps memory bounded and the spread representative
            self.values[self.seen % _MAX_SAMPLES] = value


class ProfileBuilder:
    """Accumulates the persona's timing and habits in bounded memory."""

    def __init__(self, persona: str, tz: tzinfo) -> None:
        self.persona = persona
        self.tz = tz
        self.hour_of_week = [0] * 168
        self.messages = 0
        self.starts = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.latency = _Reservoir()
        self.length = _Reservoir()
        self.speed = _Reservoir()
        self.bursts = _Reservoir()
        self.reactions: Counter[str] = Counter()
        self._prev: dict[str, tuple[bool, datetime]] = {}
        self._burst: dict[str, int] = {}

    def add(self, m: ExportMessage, persona: bool, *, new_session: bool) -> None:
        """Account for one kept message."""
        self.first = m.ts if self.first is None else min(self.first, m.ts)
        self.last = m.ts if self.last is None else max(self.last, m.ts)
        prev = self._prev.get(m.channel)
        for r in m.reactions:
            if self.persona.casefold() in (r.author_id.casefold(), r.author.casefold()):
                self.reactions[r.emoji] += 1
        if persona:
            local = m.ts.astimezone(self.tz)
            self.hour_of_week[local.weekday() * 24 + local.hour] += 1
            self.messages += 1
            self.length.add(float(len(m.text)))
            if new_session:
                self.starts += 1
            elif prev is not None and not prev[0]:
                self.latency.add((m.ts - prev[1]).total_seconds())
            elif prev is not None and prev[0]:
                seconds = (m.ts - prev[1]).total_seconds()
                if 1 <= seconds <= 120 and m.text:
                    self.speed.add(len(m.text) / seconds)
            self._burst[m.channel] = self._burst.get(m.channel, 0) + 1
        elif self._burst.get(m.channel):
            self.bursts.add(float(self._burst.pop(m.channel)))
        self._prev[m.channel] = (persona, m.ts)

    def data(self) -> dict[str, Any]:
        """The profile: ``behaviour`` for the persona manifest, ``stats`` behind it."""
        for channel in list(self._burst):
            self.bursts.add(float(self._burst.pop(channel)))
        by_hour = [sum(self.hour_of_week[d * 24 + h] for d in range(7)) for h in range(24)]
        sleep = sleep_window(by_hour)
        speed = _percentiles(self.speed.values)["p50"] if self.speed.values else 6.0
        behaviour: dict[str, Any] = {
            "timezone": str(self.tz),
            "starts_per_day": round(self.starts / self._days(), 3),
            "typing_speed": round(max(1.0, min(speed, 20.0)), 2),
        }
        if sleep is not None:
            behaviour["sleep_hours"] = [sleep[0], sleep[1]]
            behaviour["active_hours"] = [sleep[1], sleep[0]]
        stats = {
            "messages": self.messages,
            "conversation_starts": self.starts,
            "hour_of_week": self.hour_of_week,
            "reply_latency_seconds": _percentiles(self.latency.values),
            "burst_length": _percentiles(self.bursts.values),
            "message_length": _percentiles(self.length.values),
            "typing_chars_per_second": _percentiles(self.speed.values),
            "favourite_reactions": [e for e, _ in self.reactions.most_common(10)],
        }
        return {"behaviour": behaviour, "stats": stats}

    def _days(self) -> float:
        if self.first is None or self.last is None:
            return 1.0
        return max(1.0, (self.last - self.first).total_seconds() / 86400)

    def write(self, path: Path) -> None:
        """Write the profile as TOML, atomically and readable by its owner only."""
        data = self.data()
        heading = (
            f"personad persona profile of {self.persona}: {self.messages} messages "
            f"over {self._days():.0f} days"
        )
        write_toml(path, data, comment=heading)
