"""The kill switch: a paused persona goes quiet at once, stays quiet across restarts, and
is switched from another process by `personad pause` / `personad resume`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from typer.testing import CliRunner

from bridges import Store
from bridges.cli import pause_cmd, resume_cmd
from bridges.testing import FakeClock

from .test_behaviour import ALEX, MONDAY_NOON, make_world


def test_pause_silences_at_once_and_survives_a_restart(tmp_path: Path) -> None:
    """Paused: shown offline, nothing answered, also after a restart; resumed: it catches
    up on what was addressed to it."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        w = make_world(tmp_path, lambda call: " here!", clock=clock)
        await w.engine.start()
        await w.engine.pause()
        assert w.bridge.of("presence")[-1][2] == "offline"
        await w.bridge.say(ALEX, "Robin, you there?")
        await clock.advance(120)
        assert w.bridge.sent() == [] and w.completer.calls == []
        await w.engine.stop()
        w.store.close()

        again = make_world(tmp_path, lambda call: " here!", clock=clock, first_id=100)
        await again.engine.start()
        assert not again.engine.online
        await clock.advance(120)
        assert again.bridge.sent() == []
        await again.engine.resume()
        await clock.advance(120)
        assert again.bridge.of("presence")[-1][2] == "online"
        assert again.bridge.sent() == ["here!"]

    asyncio.run(run())


def test_a_pause_from_another_process_stops_the_turn_under_way(tmp_path: Path) -> None:
    """The switch thrown through a second connection (the CLI) is seen before the answer
    goes out, though the model was already asked."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " " + "x" * 200)  # 20 s of typing
        await w.engine.start()
        await w.bridge.say(ALEX, "Robin, tell me a story")
        await w.clock.advance(10)  # typing
        assert w.bridge.of("typing")
        other = Store(tmp_path / "state.db")
        from bridges.persona import pause

        pause(other.for_persona("Robin"))
        other.close()
        await w.clock.advance(120)
        assert w.bridge.sent() == []

    asyncio.run(run())


def test_pause_one_channel(tmp_path: Path) -> None:
    """A channel pause silences that channel only."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " hi", channels=["general", "random"])
        await w.engine.start()
        await w.engine.pause("random")
        await w.bridge.say(ALEX, "Robin?", channel="random")
        await w.bridge.say(ALEX, "Robin?", channel="general")
        await w.clock.advance(120)
        assert [a[1] for a in w.bridge.of("send")] == ["general"]
        assert w.engine.online
        await w.engine.resume("random")
        await w.clock.advance(120)
        assert [a[1] for a in w.bridge.of("send")] == ["general", "random"]

    asyncio.run(run())


def test_pause_and_resume_commands(tmp_path: Path) -> None:
    """`personad pause NAME [--channel ID]` and `resume` write the persona's state."""
    config = tmp_path / "personad.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    app = typer.Typer()
    app.command("pause")(pause_cmd)
    app.command("resume")(resume_cmd)
    runner = CliRunner()

    def state() -> tuple[bool, frozenset[str]]:
        from bridges.persona import StateBook

        store = Store(tmp_path / "data" / "personad.db")
        s = StateBook(store.for_persona("Robin")).state
        store.close()
        return s.paused, s.paused_channels

    result = runner.invoke(app, ["pause", "Robin", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "Robin is paused everywhere" in result.output
    assert state() == (True, frozenset())
    runner.invoke(app, ["pause", "Robin", "--channel", "42", "--config", str(config)])
    assert state() == (True, frozenset({"42"}))
    result = runner.invoke(app, ["resume", "Robin", "--config", str(config)])
    assert "still paused" not in result.output
    assert state() == (False, frozenset({"42"}))
    runner.invoke(app, ["resume", "Robin", "--channel", "42", "--config", str(config)])
    assert state() == (False, frozenset())
