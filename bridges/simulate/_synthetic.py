"""A synthetic person with known habits, written as a DiscordChatExporter JSON export.

Ground truth for the realism test and benchmark: Sam chats with friends in a few channels.
Sam answers a run of friends' messages with a chance that follows Sam's week, after a
lognormal latency counted from the latest friend's line, sends a geometric number of
messages in a row with lognormal gaps, opens conversations at Sam's favourite hours, and
reacts now and then with favourite emoji. Friends answer Sam, or let a talk die.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["Habits", "synthetic_export"]

_FRIENDS = [("11", "Alex"), ("12", "Bo"), ("13", "Cleo")]
_SAM = ("2", "Sam")
_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday


@dataclass
class Habits:
    """The person's true habits (times in seconds, hours in UTC)."""

    latency_median: float = 45.0
    latency_sigma: float = 1.1
    burst_p: float = 0.55  # chance each further message follows (geometric length)
    burst_max: int = 8
    gap_median: float = 7.0
    gap_sigma: float = 0.6
    talks_per_day: float = 9.0  # conversations per channel-day, friends' and Sam's
    sam_opens: float = 0.3  # share of conversations Sam opens
    reaction_rate: float = 0.06
    emoji: dict[str, float] = field(default_factory=lambda: {"😂": 5, "❤️": 3, "👍": 2})
    session_gap: float = 7200

    def around(self, how: int) -> float:
        """Chance Sam answers a run that begins at hour of week ``how``."""
        day, hour = divmod(how, 24)
        if hour < 7:
            return 0.02
        base = 0.85 if 18 <= hour < 23 else 0.6
        return base * (0.8 if day >= 5 else 1.0)

    def talk_weight(self, how: int) -> float:
        """How likely a conversation begins at hour of week ``how``."""
        day, hour = divmod(how, 24)
        if hour < 7:
            return 0.05
        return (3.0 if 19 <= hour < 23 else 1.5 if 12 <= hour < 14 else 1.0) * (
            1.3 if day >= 5 else 1.0
        )


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def _how(t: datetime) -> int:
    return t.weekday() * 24 + t.hour


class _Channel:
    def __init__(self, name: str, habits: Habits, rng: random.Random) -> None:
        self.name, self.h, self.rng = name, habits, rng
        self.messages: list[dict[str, Any]] = []

    def post(self, t: datetime, who: tuple[str, str], text: str) -> None:
        reactions = []
        if who != _SAM and self.rng.random() < self.h.reaction_rate:
            emoji = self.rng.choices(list(self.h.emoji), weights=list(self.h.emoji.values()))[0]
            reactions = [{"emoji": {"name": emoji}, "count": 1, "users": [_user(_SAM)]}]
        self.messages.append(
            {
                "id": f"{self.name}-{len(self.messages)}",
                "type": "Default",
                "timestamp": t.isoformat(),
                "content": text,
                "author": _user(who),
                "attachments": [],
                "reactions": reactions,
                "mentions": [],
            }
        )

    def sam_burst(self, t: datetime) -> datetime:
        n = 1
        while n < self.h.burst_max and self.rng.random() < self.h.burst_p:
            n += 1
        for i in range(n):
            if i:
                t += timedelta(seconds=_lognormal(self.rng, self.h.gap_median, self.h.gap_sigma))
            self.post(t, _SAM, f"sam says {len(self.messages)}")
        return t

    def talk(self, t: datetime, sam_opens: bool) -> datetime:
        """One conversation from ``t``; returns when its last line was said."""
        rng, h = self.rng, self.h
        limit = timedelta(seconds=h.session_gap * 0.9)
        if sam_opens:
            t = self.sam_burst(t)
            friends_turn = True
        else:
            self.post(t, rng.choice(_FRIENDS), f"friend opens {len(self.messages)}")
            friends_turn = False
        for _ in range(rng.randint(2, 14)):
            if friends_turn:  # friends answer Sam, or the talk dies
                if rng.random() > 0.85:
                    break
                t += timedelta(seconds=min(_lognormal(rng, 60, 1.0), limit.total_seconds()))
                self.post(t, rng.choice(_FRIENDS), f"friend {len(self.messages)}")
                friends_turn = False
                continue
            # A run of friends' lines is waiting for Sam, decided once at its start.
            answers = rng.random() < h.around(_how(t))
            wait = timedelta(seconds=_lognormal(rng, h.latency_median, h.latency_sigma))
            while True:  # another friend may add a line first: Sam's wait restarts
                if rng.random() < 0.25:
                    more = timedelta(seconds=_lognormal(rng, 40, 1.0))
                    if not answers or more < wait:
                        t += min(more, limit)
                        self.post(t, rng.choice(_FRIENDS), f"friend adds {len(self.messages)}")
                        continue
                break
            if not answers or wait >= limit:
                break
            t = self.sam_burst(t + wait)
            friends_turn = True
        return t


def _user(who: tuple[str, str]) -> dict[str, Any]:
    return {"id": who[0], "name": who[1], "nickname": who[1], "isBot": False}


def synthetic_export(
    directory: Path,
    seed: int,
    *,
    days: int = 120,
    habits: Habits | None = None,
    channels: tuple[str, ...] = ("general", "games"),
) -> list[Path]:
    """Write one export file per channel into ``directory``; the persona is ``Sam``."""
    h = habits or Habits()
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    weights = [h.talk_weight(i) for i in range(168)]
    mean = sum(weights) / 168
    for name in channels:
        channel = _Channel(name, h, rng)
        t = _START
        end = _START + timedelta(days=days)
        while t < end:
            # Thinning: a talk may begin each minute with the week's rate, after a silence.
            rate = h.talks_per_day / len(channels) / 1440 * weights[_how(t)] / mean
            t += timedelta(minutes=1)
            if rng.random() >= rate:
                continue
            t = channel.talk(t, rng.random() < h.sam_opens) + timedelta(seconds=h.session_gap)
        path = directory / f"{name}.json"
        doc = {
            "guild": {"id": "1", "name": "friends"},
            "channel": {"id": name, "name": name},
            "messages": channel.messages,
        }
        path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths
