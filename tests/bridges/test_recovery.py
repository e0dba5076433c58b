"""After a crash (kill -9), a message that was waiting for the persona is answered once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bridges.testing import FakeClock

from .test_behaviour import ALEX, MONDAY_NOON, World, make_world


async def crash(w: World) -> None:
    """The process dies: its tasks end, nothing more is written."""
    await w.engine.stop()
    w.store.close()


async def restart(
    tmp_path: Path, clock: FakeClock, script: Any, first_id: int, **behaviour: Any
) -> World:
    """A new process on the same database (the platform's ids continue)."""
    w = make_world(tmp_path, script, clock=clock, first_id=first_id, **behaviour)
    await w.engine.start()
    return w


def test_a_message_pending_at_a_crash_is_answered_once(tmp_path: Path) -> None:
    """Crash during the debounce: the restarted persona answers; a second restart does not."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        first = make_world(tmp_path, lambda call: " yes!", clock=clock)
        await first.engine.start()
        await first.bridge.say(ALEX, "Robin, are you there?")
        await clock.advance(1)
        await crash(first)
        assert first.bridge.sent() == []

        second = await restart(tmp_path, clock, lambda call: " yes!", first_id=100)
        await clock.advance(60)
        assert second.bridge.sent() == ["yes!"]
        assert len(second.completer.calls) == 1
        await crash(second)

        third = await restart(tmp_path, clock, lambda call: " yes again?", first_id=200)
        await clock.advance(60)
        assert third.completer.calls == [] and third.bridge.sent() == []

    asyncio.run(run())


def test_a_crash_while_typing_still_gets_the_answer_out(tmp_path: Path) -> None:
    """Crash after the model answered but before the message was sent: sent after restart."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        long = " " + "x" * 200  # 20 s of typing
        first = make_world(tmp_path, lambda call: long, clock=clock)
        await first.engine.start()
        await first.bridge.say(ALEX, "Robin, tell me everything")
        await clock.advance(15)  # debounce 4 s, reading 1 s, then typing
        assert first.bridge.of("typing") and first.bridge.sent() == []
        await crash(first)

        second = await restart(tmp_path, clock, lambda call: long, first_id=100)
        await clock.advance(120)
        assert second.bridge.sent() == [long.strip()]

    asyncio.run(run())


def test_only_what_would_still_be_answered(tmp_path: Path) -> None:
    """After a restart: a turn decided before it (silence) is not taken again, a
    conversation still going is joined, and a faded one is let pass."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        gap: dict[str, Any] = {"session_gap": 3600}
        first = make_world(tmp_path, lambda call: "Bob: ok", clock=clock, **gap)
        await first.engine.start()
        await first.bridge.say(ALEX, "lunch?")
        await clock.advance(60)  # decided: Bob speaks next, Robin stays silent
        assert len(first.completer.calls) == 1
        await crash(first)

        second = await restart(tmp_path, clock, lambda call: " hm", 100, **gap)
        await clock.advance(60)
        assert second.completer.calls == []
        await second.bridge.say(ALEX, "pizza?")
        await clock.advance(1)
        await crash(second)

        # Still going 10 minutes later: the pending "pizza?" gets its turn.
        await clock.advance(600)
        third = await restart(tmp_path, clock, lambda call: "Robin: pizza!", 200, **gap)
        await clock.advance(60)
        assert third.bridge.sent() == ["pizza!"]
        assert third.completer.calls[0].prompt.endswith("Alex: pizza?\n")
        await third.bridge.say(ALEX, "anyone?")
        await clock.advance(1)
        await crash(third)

        # Unaddressed, 2 hours ago, with a 1-hour session gap: the moment has passed.
        await clock.advance(2 * 3600)
        fourth = await restart(tmp_path, clock, lambda call: " late", 300, **gap)
        await clock.advance(60)
        assert fourth.completer.calls == []

    asyncio.run(run())
