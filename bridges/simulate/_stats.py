"""Realism statistics of a timeline, and the two-sample Kolmogorov-Smirnov distance.

The same functions measure the person (the held-out export) and the bot (the simulated
timeline), so the comparison is of like with like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["TimelineEvent", "ks", "ks_critical", "measure", "statistics_of"]


@dataclass(frozen=True)
class TimelineEvent:
    """One line of ``events.jsonl``."""

    ts: datetime
    channel: str
    author: str
    persona: bool
    kind: str  # "message" or "react"
    text: str

    def as_json(self) -> dict[str, object]:
        """The JSON object written for it."""
        return {
            "ts": self.ts.isoformat(),
            "channel": self.channel,
            "author": self.author,
            "persona": self.persona,
            "kind": self.kind,
            "text": self.text,
        }


def ks(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample KS distance: the largest gap between the two empirical CDFs."""
    if not a or not b:
        return 1.0
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(xs) and j < len(ys):
        v = min(xs[i], ys[j])
        while i < len(xs) and xs[i] == v:
            i += 1
        while j < len(ys) and ys[j] == v:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d


def ks_critical(n: int, m: int, c: float = 1.358) -> float:
    """The distance above which the samples differ at the 5 % level (large-sample formula)."""
    if n == 0 or m == 0:
        return 1.0
    return c * math.sqrt((n + m) / (n * m))


def statistics_of(
    events: Sequence[TimelineEvent], gap: timedelta, tz: str
) -> dict[str, list[float]]:
    """The samples of each statistic: reply latency (s), burst length, hour of week, and
    per-channel starts (as their day numbers) and reactions (as 1 per persona reaction,
    0 per message by someone else)."""
    zone = ZoneInfo(tz)
    latency: list[float] = []
    bursts: list[float] = []
    hours: list[float] = []
    starts: list[float] = []
    reactions: list[float] = []
    last: dict[str, TimelineEvent] = {}
    run: dict[str, int] = {}
    for e in sorted(events, key=lambda e: e.ts):
        if e.kind == "react":
            if e.persona:
                reactions.append(1.0)
            continue
        if not e.persona:
            reactions.append(0.0)
        prev = last.get(e.channel)
        new_session = prev is None or e.ts - prev.ts >= gap
        if (new_session or not e.persona) and run.get(e.channel):
            bursts.append(float(run.pop(e.channel)))
        if e.persona:
            local = e.ts.astimezone(zone)
            hours.append(float(local.weekday() * 24 + local.hour))
            if new_session:
                starts.append(e.ts.timestamp() / 86400)
            elif prev is not None and not prev.persona:
                latency.append((e.ts - prev.ts).total_seconds())
            run[e.channel] = run.get(e.channel, 0) + 1
        last[e.channel] = e
    bursts.extend(float(n) for n in run.values() if n)
    return {
        "reply_latency": latency,
        "burst_length": bursts,
        "hour_of_week": hours,
        "starts": starts,
        "reactions": reactions,
    }


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 2)

    return {
        "n": len(s),
        "p10": q(0.1),
        "p50": q(0.5),
        "p90": q(0.9),
        "mean": round(sum(s) / len(s), 3),
    }


def measure(
    person: dict[str, list[float]],
    bot: dict[str, list[float]],
    whole: dict[str, list[float]],
    days: tuple[float, float, float],
) -> dict[str, object]:
    """``realism.json``: each statistic's summaries, KS distance and 5 % critical value.

    ``days`` are the spans (in days) of the held-out part, the simulation and the whole
    export, for the rates.
    """
    out: dict[str, object] = {}
    for name in ("reply_latency", "burst_length", "hour_of_week"):
        a, b = person[name], bot[name]
        out[name] = {
            "person": _summary(a),
            "bot": _summary(b),
            "ks": round(ks(a, b), 4),
            "critical_5pct": round(ks_critical(len(a), len(b)), 4),
            "samples": {"person": len(a), "bot": len(b)},
        }
    held, sim, all_days = days
    person_rate = len(person["starts"]) / max(held, 1e-9)
    bot_rate = len(bot["starts"]) / max(sim, 1e-9)
    whole_rate = len(whole["starts"]) / max(all_days, 1e-9)
    out["starts_per_day"] = {
        "person": round(person_rate, 3),
        "person_whole_export": round(whole_rate, 3),
        "bot": round(bot_rate, 3),
        "relative_error": round(abs(bot_rate - person_rate) / person_rate, 4)
        if person_rate
        else None,
        "relative_error_whole_export": round(abs(bot_rate - whole_rate) / whole_rate, 4)
        if whole_rate
        else None,
        "samples": {"person": len(person["starts"]), "bot": len(bot["starts"])},
    }
    pr, br = person["reactions"], bot["reactions"]
    out["reaction_rate"] = {
        "person": round(sum(pr) / max(1, len(pr) - sum(pr)), 4),
        "bot": round(sum(br) / max(1, len(br) - sum(br)), 4),
        "samples": {"person": int(sum(pr)), "bot": int(sum(br))},
    }
    return out
