"""The person's habits from the profile drive the engine, on the fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridges.persona._habits import hour_of_week, next_start
from tests.bridges.test_behaviour import ALEX, BOB, MONDAY_NOON, make_world, scenario

ALWAYS = [1.0] * 168


def _times(w: object) -> list[float]:
    actions = w.bridge.of("send")  # type: ignore[attr-defined]
    return [(a[3] - MONDAY_NOON).total_seconds() for a in actions]


def test_latency_burst_and_gaps_follow_the_profile(tmp_path: Path) -> None:
    """The answer comes the drawn latency after the latest line, then a burst with its gaps."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: "…",
            fmt="chat",
            reply_latency=[30.0, 30.0],
            latency_typing="included",
            around=ALWAYS,
            burst_lengths=[0, 0, 1],
            burst_gaps=[5.0, 5.0],
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hey")
        await w.clock.advance(20)
        await w.bridge.say(BOB, "hello?")  # a friend adds a line: the wait restarts
        await w.clock.advance(300)
        assert _times(w) == [50.0, 55.0, 60.0]
        assert len(w.bridge.sent()) == 3

    scenario(run)


def test_typing_on_top_of_the_latency(tmp_path: Path) -> None:
    """With latency_typing = on_top the typing time is added after the drawn latency."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: "0123456789",  # 10 chars at 10 chars/s: one second of typing
            fmt="chat",
            reply_latency=[30.0, 30.0],
            latency_typing="on_top",
            around=ALWAYS,
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hey")
        await w.clock.advance(300)
        assert _times(w) == [31.0]

    scenario(run)


def test_around_decides_once_per_run(tmp_path: Path) -> None:
    """At an hour the person is never around, a run of lines gets no answer at all."""

    async def run() -> None:
        never = [1.0] * 168
        never[hour_of_week(MONDAY_NOON, "UTC")] = 0.0
        w = make_world(tmp_path, lambda call: "…", fmt="chat", around=never)
        await w.engine.start()
        for text in ("a", "b", "c"):
            await w.bridge.say(ALEX, text)
            await w.clock.advance(60)
        assert w.bridge.sent() == [] and w.completer.calls == []

    scenario(run)


def test_reactions_follow_rate_and_favourites(tmp_path: Path) -> None:
    """At a reaction rate of 1 every friend's message gets a favourite emoji."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: "…",
            fmt="chat",
            talkativeness=0.0,
            reaction_rate=1.0,
            reactions={"🎉": 1.0},
        )
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "we won")
        await w.clock.advance(60)
        assert [(a[2], a[4]) for a in w.bridge.of("react")] == [("🎉", mid)]

    scenario(run)


def test_starts_follow_the_hours_the_person_opened_talks() -> None:
    """Proactive starts land only in the hours of week the person opened conversations."""
    weights = [0.0] * 168
    weights[2 * 24 + 20] = 1.0  # Wednesday 20:00
    rng = random.Random(1)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    seen = []
    for _ in range(200):
        at = next_start(now, weights, 1.0, "Europe/Berlin", rng)
        assert at is not None
        seen.append(hour_of_week(at, "Europe/Berlin"))
        now = at + timedelta(minutes=1)
    assert set(seen) == {2 * 24 + 20}


def test_profile_starts_open_a_quiet_channel_at_its_hour(tmp_path: Path) -> None:
    """The engine plans its start attempt in the person's start hour and opens a talk."""

    async def run() -> None:
        weights = [0.0] * 168
        weights[hour_of_week(MONDAY_NOON + timedelta(hours=3), "UTC")] = 1.0
        w = make_world(
            tmp_path,
            lambda call: "…",
            fmt="chat",
            start_hours=weights,
            starts_per_day=3.0,
            quiet_before_start=600,
            max_starts_per_day=10,
        )
        await w.bridge.say(ALEX, "old news")
        await w.engine.start()
        await w.clock.advance(86400)
        starts = [e.at for e in w.bridge.events() if e.kind == "conversation_started"]
        assert starts and all(t.hour == 15 for t in starts)

    scenario(run)
