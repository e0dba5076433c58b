"""The demo persona's day through the console on a fake clock: each scheduled event shows
up as a status line when /wait moves time, and in the structured log."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from bridges import CompletionCall, PersonaEngine, Store
from bridges.console import ConsoleBridge, ConsoleOptions
from bridges.testing import FakeClock, ScriptedCompleter
from models import demo_persona

from .test_console import _Feed

MONDAY_7PM = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)


def _robin(call: CompletionCall) -> str:
    return "anyone up for a hike?" if call.priority == "background" else "sounds good!"


@dataclass
class Console:
    """Robin (the demo persona) in the console, on a fake clock."""

    engine: PersonaEngine
    bridge: ConsoleBridge
    clock: FakeClock
    feed: _Feed
    out: io.StringIO
    store: Store

    async def type(self, line: str, *, then: float = 60) -> str:
        """Type a line, let ``then`` seconds pass, and return what was printed meanwhile."""
        seen, done = len(self.out.getvalue()), self.bridge.lines_done
        self.feed.type(line)
        for _ in range(1000):  # the input thread hands the line over
            if self.bridge.lines_done > done:
                break
            await asyncio.sleep(0.01)
        await self.clock.advance(then)
        return self.out.getvalue()[seen:]

    async def close(self) -> None:
        self.feed.type("/quit")
        await asyncio.wait_for(self.bridge.wait_closed(), 10)
        self.feed.close()
        await self.bridge.stop()
        await self.engine.stop()
        self.store.close()


async def robin(
    tmp_path: Path,
    start: datetime = MONDAY_7PM,
    seed: int = 1,
    answer: Callable[[CompletionCall], str] = _robin,
) -> Console:
    """Start the demo persona on the console at ``start``."""
    clock = FakeClock(start)
    store = Store(tmp_path / "personad.db")
    engine = PersonaEngine(
        demo_persona(), ScriptedCompleter(answer), store, clock, clock, random.Random(seed)
    )
    feed, out = _Feed(), io.StringIO()
    bridge = ConsoleBridge(
        ConsoleOptions(),
        engine,
        persona="Robin",
        clock=clock,
        stdin=feed,  # type: ignore[arg-type]
        stdout=out,
    )
    engine.attach(bridge)
    await bridge.start()
    await engine.start()
    return Console(engine, bridge, clock, feed, out, store)


def test_the_demo_walkthrough_shows_robins_day(tmp_path: Path) -> None:
    """/wait shows going away and back, going to sleep, waking up and catching up, and a
    conversation Robin starts, each as a status line at its time."""

    async def run() -> None:
        c = await robin(tmp_path)
        assert "Robin: sounds good!" in await c.type("hi Robin!")
        evening = await c.type("/wait 4h", then=0)
        assert "-- 20:43 Robin went offline (away)" in evening
        assert "-- 21:25 Robin is back" in evening
        assert "-- 23:00 Robin went offline (asleep)" in evening
        night = await c.type("Robin, you still up?")
        assert "-- Robin is asleep until 07:00; /wait 8h" in night
        assert "Robin:" not in night
        morning = await c.type("/wait 8h", then=0)
        assert morning.index("-- 07:00 Robin is back") < morning.index("Robin: sounds good!")
        day = await c.type("/wait 9h", then=0)
        assert "-- 08:39 Robin went offline (away)" in day
        assert "-- 12:59 Robin started a conversation" in day
        assert day.index("-- 12:59 Robin started") < day.index("Robin: anyone up for a hike?")
        await c.close()

    asyncio.run(run())


def test_status_lines_go_to_the_log_as_events(tmp_path: Path) -> None:
    """Each presence change is a `presence` event with state and reason; a start is
    `conversation_started`."""

    async def run() -> list[MutableMapping[str, Any]]:
        with capture_logs() as logs:
            c = await robin(tmp_path)
            await c.type("hi Robin!")
            await c.type("/wait 20h", then=0)
            await c.close()
        return logs

    logs = asyncio.run(run())
    presence = [(e["state"], e["reason"]) for e in logs if e["event"] == "presence"]
    assert presence[:3] == [("offline", "away"), ("online", "back"), ("offline", "asleep")]
    assert ("online", "awake") in presence
    assert any(e["event"] == "conversation_started" for e in logs)


def test_starting_at_night_says_where_robin_is(tmp_path: Path) -> None:
    """A user who starts at 02:30 is told Robin is asleep until 07:00 and how long to wait."""

    async def run() -> str:
        c = await robin(tmp_path, start=MONDAY_7PM.replace(hour=2, minute=30))
        await c.clock.advance(1)
        text = c.out.getvalue()
        await c.close()
        return text

    assert "-- Robin is asleep until 07:00; /wait 5h" in asyncio.run(run())


def test_when_lists_the_next_events(tmp_path: Path) -> None:
    """/when shows the next absence, sleep, wake-up and start attempt, soonest first."""

    async def run() -> str:
        c = await robin(tmp_path)
        text = await c.type("/when", then=0)
        await c.close()
        return text

    lines = [line for line in asyncio.run(run()).splitlines() if line.startswith("-- ")]
    assert lines == [
        "-- Mon 20:43 Robin goes away for 41 min",
        "-- Mon 21:25 Robin is back from being away",
        "-- Mon 23:00 Robin goes to sleep",
        "-- Tue 03:39 Robin would start a conversation, but is asleep then",
        "-- Tue 07:00 Robin wakes up",
    ]


def test_when_says_a_start_planned_during_sleep_will_not_happen(tmp_path: Path) -> None:
    """An attempt planned in sleep hours is listed as skipped, not as a possible start."""
    from datetime import timedelta

    from bridges.persona import StateBook

    async def run() -> None:
        c = await robin(tmp_path)
        book = StateBook(c.store.for_persona("Robin"))
        night = MONDAY_7PM.replace(hour=3) + timedelta(days=1)
        book.update(next_start=night)
        listed = {u.at: u.what for u in c.engine.upcoming()}
        assert listed[night] == "would start a conversation, but is asleep then"
        book.update(next_start=night.replace(hour=12))
        assert "may start a conversation" in {u.what for u in c.engine.upcoming()}
        await c.close()

    asyncio.run(run())
