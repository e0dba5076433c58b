"""The person's measured habits as draws: latency, burst length and gaps, hours, emoji.

Pure functions of a :class:`~models.BehaviourSettings` and an injected ``random.Random``, so
the same seed gives the same persona, and the simulation runs the very code the bridges run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from models import BehaviourSettings

__all__ = [
    "draw_burst",
    "draw_emoji",
    "draw_quantile",
    "hour_of_week",
    "next_start",
    "typing_seconds",
]

_WEEK = 168


def draw_quantile(quantiles: Sequence[float], rng: random.Random) -> float:
    """A value from the distribution given by evenly spaced quantiles (p0..p100), by
    linear interpolation between them: the empirical distribution, smoothed."""
    u = rng.random() * (len(quantiles) - 1)
    i = min(int(u), len(quantiles) - 2)
    return quantiles[i] + (u - i) * (quantiles[i + 1] - quantiles[i])


def draw_burst(weights: Sequence[float], rng: random.Random) -> int:
    """How many messages in a row: 1 + the index drawn by weight."""
    return rng.choices(range(1, len(weights) + 1), weights=weights)[0]


def draw_emoji(reactions: dict[str, float], rng: random.Random) -> str:
    """A favourite emoji, by weight (a thumbs-up for a profile that lists none)."""
    if not reactions:
        return "👍"
    emoji = sorted(reactions)
    return rng.choices(emoji, weights=[reactions[e] for e in emoji])[0]


def hour_of_week(when: datetime, tz: str) -> int:
    """0..167 from Monday 00:00 in ``tz``."""
    local = when.astimezone(ZoneInfo(tz))
    return local.weekday() * 24 + local.hour


def typing_seconds(text: str, b: BehaviourSettings) -> float:
    """How long typing ``text`` takes the persona."""
    return len(text) / b.typing_speed


def next_start(
    now: datetime, weights: Sequence[float], per_day: float, tz: str, rng: random.Random
) -> datetime | None:
    """The next event of a Poisson process whose rate per hour of week follows ``weights``
    and averages ``per_day``: proactive starts at the hours the person opened talks."""
    total = sum(weights)
    if per_day <= 0 or total <= 0:
        return None
    per_hour = [w / total * per_day * 7 for w in weights]  # expected starts in each bin
    need = -math.log(1.0 - rng.random())  # unit-rate exponential, spent along the week's rate
    local = now.astimezone(ZoneInfo(tz))
    t = local
    for _ in range(_WEEK * 60):  # bounded: the rate is positive somewhere in every week
        bin_ = t.weekday() * 24 + t.hour
        end = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        hours = (end - t).total_seconds() / 3600
        mass = per_hour[bin_] * hours
        if mass >= need:
            return (t + timedelta(hours=need / per_hour[bin_])).astimezone(now.tzinfo)
        need -= mass
        t = end
    return None
