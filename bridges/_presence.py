"""Pure time arithmetic for the persona's day: sleep hours, active hours, random delays."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["exp_delay", "in_hours", "local_hour", "next_boundary"]


def local_hour(now: datetime, tz: str) -> float:
    """Hour of the day (with fraction) in ``tz``."""
    local = now.astimezone(ZoneInfo(tz))
    return local.hour + local.minute / 60 + local.second / 3600


def in_hours(hour: float, span: tuple[int, int] | None) -> bool:
    """Whether ``hour`` lies in [from, to); spans may wrap midnight, e.g. (23, 7)."""
    if span is None:
        return False
    start, end = span
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def next_boundary(now: datetime, span: tuple[int, int] | None, tz: str) -> datetime | None:
    """The next time the local clock reaches one of ``span``'s two hours."""
    if span is None or span[0] == span[1]:
        return None
    local = now.astimezone(ZoneInfo(tz))
    best: datetime | None = None
    for hour in span:
        candidate = local.replace(hour=hour % 24, minute=0, second=0, microsecond=0)
        if candidate <= local:
            candidate += timedelta(days=1)
        if best is None or candidate < best:
            best = candidate
    return best


def exp_delay(per_day: float, rng: random.Random) -> float | None:
    """Seconds until the next event of a Poisson process with ``per_day`` events a day."""
    if per_day <= 0:
        return None
    return -math.log(1.0 - rng.random()) * 86400.0 / per_day
