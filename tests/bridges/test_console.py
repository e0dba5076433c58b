"""The console bridge passes the bridge contract and shows what the persona does."""

from __future__ import annotations

import asyncio
import io
import queue
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridges import Bridge, BridgeHost, PersonaEngine, Store, User
from bridges.console import ConsoleBridge, ConsoleOptions
from bridges.testing import BridgeContract, FakeClock, FakeHost, ScriptedCompleter
from models import PersonaCard, PersonaManifest
from models._persona import BehaviourSettings


class _Feed:
    """Typed lines for the bridge's input, as from a terminal."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()

    def type(self, text: str) -> None:
        self._lines.put(text)

    def close(self) -> None:
        self._lines.put(None)

    def __iter__(self) -> Iterator[str]:
        while (line := self._lines.get()) is not None:
            yield line + "\n"


class TestConsoleContract(BridgeContract):
    """The built-in console bridge against the contract every bridge must pass."""

    def make_bridge(self, host: BridgeHost) -> Bridge:
        self.feed = _Feed()
        return ConsoleBridge(
            ConsoleOptions(), host, persona="Robin", stdin=self.feed, stdout=io.StringIO()
        )

    def teardown_method(self) -> None:
        self.feed.close()

    async def deliver(self, bridge: Bridge, text: str) -> None:
        self.feed.type(text)

    def sent(self, bridge: Bridge) -> list[str]:
        return list(bridge.posted)  # type: ignore[attr-defined]


def test_console_shows_typing_replies_reactions_presence() -> None:
    """Each persona action is printed for the person at the terminal."""

    async def run() -> str:
        out = io.StringIO()
        feed = _Feed()
        host = FakeHost()
        bridge = ConsoleBridge(
            ConsoleOptions(you="Jo"), host, persona="Robin", stdin=feed, stdout=out
        )
        await bridge.start()
        feed.type("is it lunch yet?")
        await asyncio.wait_for(host.received.wait(), 10)
        event = host.messages[0]
        assert event.author == User("console-user", "Jo") and event.channel == "console"
        await bridge.typing("console")
        await bridge.typing("console")  # refreshes do not repeat the line
        await bridge.reply("console", event.message_id, "almost!")
        await bridge.react("console", event.message_id, "🍕")
        await bridge.set_presence("offline")
        await bridge.notice("console", "a new conversation begins")
        feed.type("/quit")
        await asyncio.wait_for(bridge.wait_closed(), 10)
        await bridge.stop()
        feed.close()
        return out.getvalue()

    text = asyncio.run(run())
    assert text.count("Robin is typing…") == 1
    assert "Robin (replying to “is it lunch yet?”): almost!" in text
    assert "Robin reacted 🍕 to “is it lunch yet?”" in text
    assert "— a new conversation begins —" in text


def test_wait_command_moves_the_clock() -> None:
    """/wait 3h advances the engine's clock (to try session gaps by hand)."""
    from bridges import SystemClock

    async def run() -> Any:
        out = io.StringIO()
        feed = _Feed()
        clock = SystemClock()
        bridge = ConsoleBridge(
            ConsoleOptions(), FakeHost(), persona="Robin", clock=clock, stdin=feed, stdout=out
        )
        await bridge.start()
        for line in ("/wait 3h", "/wait soon", "/quit"):
            feed.type(line)
        await asyncio.wait_for(bridge.wait_closed(), 10)
        feed.close()
        return clock.offset.total_seconds(), out.getvalue()

    offset, text = asyncio.run(run())
    assert offset == 3 * 3600
    assert "(3h pass)" in text and "usage: /wait" in text


def test_a_restarted_console_keeps_history_and_is_answered(tmp_path: Path) -> None:
    """The same line typed in a second session is a new message: stored beside the first
    and answered, never overwriting it."""
    persona = PersonaManifest(
        name="Robin",
        card=PersonaCard(description="Robin likes puns."),  # type: ignore[arg-type]
        behaviour=BehaviourSettings(
            channels=["console"], sleep_hours=None, away_per_day=0, starts_per_day=0
        ),
    )

    async def session(answer: str, clock: FakeClock) -> None:
        store = Store(tmp_path / "state.db")
        engine = PersonaEngine(
            persona, ScriptedCompleter(lambda call: answer), store, clock, clock, random.Random(1)
        )
        feed = _Feed()
        bridge = ConsoleBridge(
            ConsoleOptions(),
            engine,
            persona="Robin",
            clock=clock,
            stdin=feed,
            stdout=io.StringIO(),
        )
        engine.attach(bridge)
        await bridge.start()
        await engine.start()
        seen = len(store.for_persona("Robin").recent("console", "console", 50))
        feed.type("hello Robin")
        for _ in range(1000):  # the input thread hands the line over
            if len(store.for_persona("Robin").recent("console", "console", 50)) > seen:
                break
            await asyncio.sleep(0.01)
        await clock.advance(120)
        feed.type("/quit")
        await asyncio.wait_for(bridge.wait_closed(), 10)
        feed.close()
        await bridge.stop()
        await engine.stop()
        store.close()

    asyncio.run(session(" hi!", FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))))
    asyncio.run(session(" hi again!", FakeClock(datetime(2026, 3, 3, 12, 0, tzinfo=UTC))))
    store = Store(tmp_path / "state.db")
    history = [
        (m.author_name, m.text) for m in store.for_persona("Robin").recent("console", "console", 50)
    ]
    store.close()
    assert history == [
        ("Alex", "hello Robin"),
        ("Robin", "hi!"),
        ("Alex", "hello Robin"),
        ("Robin", "hi again!"),
    ]
