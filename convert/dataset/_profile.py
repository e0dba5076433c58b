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


def _quantiles(values: list[float], n: int = 50) -> list[float]:
    """p0, p2, ..., p100: the empirical distribution the runtime draws from."""
    ordered = sorted(values)
    last = len(ordered) - 1
    out = []
    for i in range(n + 1):
        x = i * last / n
        lo = int(x)
        hi = min(lo + 1, last)
        out.append(round(ordered[lo] + (x - lo) * (ordered[hi] - ordered[lo]), 2))
    return out


def _typing_on_top(samples: list[tuple[float, float]]) -> str:
    """Whether typing time comes on top of the latency, decided from the data.

    If the person started typing only after the wait, longer answers would come later by
    their typing time. Compare the longer half of the answers with the shorter half: typing
    is on top when their median latencies differ by at least half the typing time (at
    6 chars/s) of their median lengths' difference, and that difference is large enough
    (10 characters) to be seen; otherwise the measured latency already includes typing.
    """
    if len(samples) < 20:
        return "included"
    ordered = sorted(samples)
    half = len(ordered) // 2
    short, long = ordered[:half], ordered[half:]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    chars = median([x[0] for x in long]) - median([x[0] for x in short])
    later = median([x[1] for x in long]) - median([x[1] for x in short])
    return "on_top" if chars >= 10 and later >= 0.5 * chars / 6.0 else "included"


def _smoothed(chances: list[list[int]], k: float = 3.0) -> list[float]:
    """Answered / runs per hour of week, shrunk toward the hour of day (and that toward the
    whole week) where an hour has few runs."""
    answered = sum(a for a, _ in chances)
    runs = sum(r for _, r in chances)
    week = answered / runs if runs else 0.0
    day = []
    for h in range(24):
        a = sum(chances[d * 24 + h][0] for d in range(7))
        r = sum(chances[d * 24 + h][1] for d in range(7))
        day.append((a + k * week) / (r + k))
    return [round((a + k * day[i % 24]) / (r + k), 4) for i, (a, r) in enumerate(chances)]


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

    def __init__(self, persona: str, tz: tzinfo, session_gap: float = 7200) -> None:
        self.persona = persona
        self.session_gap = session_gap
        self.start_hours = [0] * 168
        self.chances = [[0, 0] for _ in range(168)]  # [answered, runs] by hour of week
        self.gaps = _Reservoir()
        self.others = 0
        self.reacted = 0
        self.per_day: Counter[object] = Counter()
        self._typing: list[tuple[float, float]] = []  # (length, latency), for the decision
        self._run: dict[str, int] = {}  # channel -> hour of week its others' run began
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
                self.reacted += 1
        local = m.ts.astimezone(self.tz)
        how = local.weekday() * 24 + local.hour
        if new_session:
            if self._burst.get(m.channel):  # a burst also ends at a session gap
                self.bursts.add(float(self._burst.pop(m.channel)))
            if m.channel in self._run:  # a run of others' messages nobody answered
                self.chances[self._run.pop(m.channel)][1] += 1
        if persona:
            self.hour_of_week[how] += 1
            self.messages += 1
            self.length.add(float(len(m.text)))
            if new_session:
                self.starts += 1
                self.start_hours[how] += 1
                self.per_day[local.date()] += 1
            elif prev is not None and not prev[0]:
                latency = (m.ts - prev[1]).total_seconds()
                self.latency.add(latency)
                if len(self._typing) < 20000:
                    self._typing.append((float(len(m.text)), latency))
            elif prev is not None and prev[0]:
                seconds = (m.ts - prev[1]).total_seconds()
                self.gaps.add(seconds)
                if 1 <= seconds <= 120 and m.text:
                    self.speed.add(len(m.text) / seconds)
            if m.channel in self._run:  # the run of others' messages got its answer
                answered = self.chances[self._run.pop(m.channel)]
                answered[0] += 1
                answered[1] += 1
            self._burst[m.channel] = self._burst.get(m.channel, 0) + 1
        else:
            self.others += 1
            if self._burst.get(m.channel):
                self.bursts.add(float(self._burst.pop(m.channel)))
            self._run.setdefault(m.channel, how)
        self._prev[m.channel] = (persona, m.ts)

    def data(self) -> dict[str, Any]:
        """The profile: ``behaviour`` for the persona manifest, ``stats`` behind it."""
        for channel in list(self._burst):
            self.bursts.add(float(self._burst.pop(channel)))
        for channel in list(self._run):
            self.chances[self._run.pop(channel)][1] += 1
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
        behaviour.update(self._habits())
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

    def _habits(self) -> dict[str, Any]:
        """What drives the runtime: the person's distributions, not fixed rules."""
        out: dict[str, Any] = {
            # Being around is the person's own week (below); random absences would be extra.
            "away_per_day": 0.0,
            "quiet_before_start": self.session_gap,
            "max_starts_per_day": max(2, max(self.per_day.values(), default=0)),
        }
        if len(self.latency.values) >= 2:
            out["reply_latency"] = _quantiles(self.latency.values)
            out["latency_typing"] = _typing_on_top(self._typing)
        if self.bursts.values:
            longest = min(int(max(self.bursts.values)), 50)
            counts = Counter(min(int(v), longest) for v in self.bursts.values)
            out["burst_lengths"] = [counts.get(n, 0) for n in range(1, longest + 1)]
        if len(self.gaps.values) >= 2:
            out["burst_gaps"] = _quantiles(self.gaps.values)
        if sum(self.start_hours):
            out["start_hours"] = list(self.start_hours)
        if any(answered for answered, _ in self.chances):
            out["around"] = _smoothed(self.chances)
        if self.others:
            out["reaction_rate"] = round(min(1.0, self.reacted / self.others), 4)
        if self.reactions:
            out["reactions"] = dict(self.reactions.most_common(10))
        return out

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
