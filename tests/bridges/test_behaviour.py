"""Behaviour rules on a fake clock with a recording bridge: one scenario per rule."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bridges import Attachment, PersonaEngine, Store, User
from bridges.testing import FakeClock, RecordingBridge, ScriptedCompleter
from models import PersonaCard, PersonaManifest
from models._persona import BehaviourSettings

ALEX = User("u-alex", "Alex")
BOB = User("u-bob", "Bob")
BOT = User("u-bot", "Botty", is_bot=True)
MONDAY_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class _NoOpts(BaseModel):
    pass


@dataclass
class World:
    """An engine, its bridge, clock, completer and database."""

    engine: PersonaEngine
    bridge: RecordingBridge
    clock: FakeClock
    completer: ScriptedCompleter
    store: Store


def make_world(
    tmp_path: Path,
    script: Any = ("Robin: hey",),
    *,
    start: datetime = MONDAY_NOON,
    fmt: str = "transcript",
    clock: FakeClock | None = None,
    name: str = "Robin",
    completer: ScriptedCompleter | None = None,
    first_id: int = 1,
    bridge_class: type[RecordingBridge] = RecordingBridge,
    **behaviour: Any,
) -> World:
    """A persona ('Robin') on a recording bridge, all times on a fake clock."""
    settings: dict[str, Any] = dict(
        channels=["general"],
        debounce=4,
        reading_delay=1,
        reading_speed=1000,
        typing_speed=10,
        typing_refresh=8,
        message_pause=2,
        sleep_hours=None,
        away_per_day=0,
        starts_per_day=0,
        min_interval=0,
    )
    settings.update(behaviour)
    persona = PersonaManifest(
        name=name,
        format=fmt,
        card=PersonaCard(description="Robin likes puns."),  # type: ignore[arg-type]
        behaviour=BehaviourSettings(**settings),
    )
    clock = clock or FakeClock(start)
    store = Store(tmp_path / "state.db")
    if completer is None:
        completer = ScriptedCompleter(list(script) if not callable(script) else script)
    engine = PersonaEngine(persona, completer, store, clock, clock, random.Random(7))
    bridge = bridge_class(_NoOpts(), engine, persona=name, clock=clock, first_id=first_id)
    engine.attach(bridge)
    return World(engine, bridge, clock, completer, store)


async def attempt_start(w: World) -> bool:
    """Run one proactive-start attempt, letting fake time pass while it types."""
    task = asyncio.ensure_future(w.engine.try_start())
    await w.clock.advance(120)
    return task.result()


@pytest.fixture
def utc_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local time zone is UTC for the test (restored afterwards)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def scenario(fn: Callable[[], Awaitable[None]]) -> None:
    """Run an async scenario."""
    asyncio.run(fn())


def test_session_gap_starts_a_new_conversation(tmp_path: Path) -> None:
    """After >= session_gap of silence the prompt starts at INIT; older lines drop out."""

    async def run() -> None:
        w = make_world(tmp_path, ["bob: ok", "Bob: sure"])
        await w.engine.start()
        await w.bridge.say(ALEX, "old topic")
        await w.clock.advance(10)
        await w.clock.advance(3 * 3600)
        await w.bridge.say(BOB, "new topic")
        await w.clock.advance(10)
        first, second = (c.prompt for c in w.completer.calls)
        assert first == "Alex: INIT;\nAlex: old topic\n"
        assert second == "Bob: INIT;\nBob: new topic\n"
        notices = [a for a in w.bridge.of("notice")]
        assert len(notices) == 2

    scenario(run)


def test_burst_of_messages_gets_one_answer(tmp_path: Path) -> None:
    """Three messages a second apart are debounced into one completion."""

    async def run() -> None:
        w = make_world(tmp_path, ["Robin: three things at once!"])
        await w.engine.start()
        for text in ("one", "two", "three"):
            await w.bridge.say(ALEX, text)
            await w.clock.advance(1)
        await w.clock.advance(60)
        assert len(w.completer.calls) == 1
        assert w.completer.calls[0].prompt.endswith("Alex: one\nAlex: two\nAlex: three\n")
        assert w.bridge.sent() == ["three things at once!"]

    scenario(run)


def test_speaks_only_when_predicted_or_addressed(tmp_path: Path) -> None:
    """Transcript format: silent if the model predicts someone else, forced when mentioned."""

    async def run() -> None:
        w = make_world(tmp_path, ["Bob: lol", " sure, Alex!"])
        await w.engine.start()
        await w.bridge.say(ALEX, "anyone?")
        await w.clock.advance(30)
        assert w.bridge.sent() == []
        me = w.bridge.me
        assert me is not None
        await w.bridge.say(ALEX, "what do you think?", mentions=[me])
        await w.clock.advance(30)
        assert w.completer.calls[1].prompt.endswith("Alex: what do you think?\nRobin:")
        assert w.bridge.sent() == ["sure, Alex!"]

    scenario(run)


def test_replies_and_name_mentions_address_the_persona(tmp_path: Path) -> None:
    """A reply to the persona, or its name in the text, forces its turn."""

    async def run() -> None:
        w = make_world(tmp_path, [" a", " b"])
        await w.engine.start()
        await w.bridge.say(ALEX, "hey robin, you there?")
        await w.clock.advance(30)
        await w.bridge.say(ALEX, "and?", reply_to="m1", reply_to_author=w.bridge.me)
        await w.clock.advance(30)
        assert all(c.prompt.endswith("Robin:") for c in w.completer.calls)
        assert w.bridge.sent() == ["a", "b"]

    scenario(run)


def test_chat_format_talkativeness(tmp_path: Path) -> None:
    """In chat format, unaddressed messages are answered at the talkativeness rate only."""

    async def run() -> None:
        quiet = make_world(tmp_path / "q", ["hi!"], fmt="chat", talkativeness=0.0)
        await quiet.engine.start()
        await quiet.bridge.say(ALEX, "nice weather")
        await quiet.clock.advance(30)
        assert quiet.completer.calls == []
        await quiet.bridge.say(ALEX, "right, Robin?")
        await quiet.clock.advance(30)
        assert quiet.bridge.sent() == ["hi!"]
        call = quiet.completer.calls[0]
        assert call.kind == "chat" and "Robin likes puns." in call.messages[0]["content"]
        chatty = make_world(tmp_path / "c", ["sure is"], fmt="chat", talkativeness=1.0)
        await chatty.engine.start()
        await chatty.bridge.say(ALEX, "nice weather")
        await chatty.clock.advance(30)
        assert chatty.bridge.sent() == ["sure is"]

    (tmp_path / "q").mkdir()
    (tmp_path / "c").mkdir()
    scenario(run)


def test_human_timing(tmp_path: Path) -> None:
    """Reading delay, a refreshed typing indicator for the text's length, pauses between
    several messages."""

    async def run() -> None:
        long = "x" * 200  # 20 s at 10 characters per second
        w = make_world(tmp_path, [f"Robin: {long}\nRobin: short one"], reading_delay=3)
        await w.engine.start()
        t0 = w.clock.now()
        await w.bridge.say(ALEX, "hi Robin")
        await w.clock.advance(120)
        typing = [a[3] for a in w.bridge.of("typing")]
        sends = [(a[2], a[3]) for a in w.bridge.of("send")]
        # Debounce 4 s, then reading: 3 s plus 8 characters at 1000 per second.
        start = t0 + timedelta(seconds=4 + 3 + 8 / 1000)
        assert typing[:3] == [start, start + timedelta(seconds=8), start + timedelta(seconds=16)]
        assert sends[0] == (long, start + timedelta(seconds=20))
        # A pause, then typing "short one" (0.9 s), then the second message.
        assert sends[1][0] == "short one"
        assert sends[1][1] == sends[0][1] + timedelta(seconds=2 + 0.9)

    scenario(run)


def test_reactions_replies_and_attachments(tmp_path: Path) -> None:
    """Others' reactions and photos enter the history; the persona's REACT/REPLY act."""

    async def run() -> None:
        w = make_world(tmp_path, [" REACT: 😂;\nRobin: REPLY: good one"])
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "", attachments=[Attachment("photo", "a cat")])
        await w.engine.on_reaction(
            w.bridge, __import__("bridges").ReactionEvent("general", mid, BOB, "❤️", w.clock.now())
        )
        await w.bridge.say(ALEX, "Robin look", mentions=[])
        await w.clock.advance(60)
        prompt = w.completer.calls[0].prompt
        assert "Alex: PHOTO: a cat;\nBob: REACT: ❤️;\nAlex: Robin look\nRobin:" in prompt
        assert [a[2] for a in w.bridge.of("react")] == ["😂"]
        assert [a[2] for a in w.bridge.of("reply")] == ["good one"]

    scenario(run)


def test_never_answers_itself(tmp_path: Path) -> None:
    """The persona's own messages, echoed back by the platform, start no turn."""

    async def run() -> None:
        w = make_world(tmp_path, ["Robin: echo?"])
        await w.engine.start()
        me = w.bridge.me
        assert me is not None
        await w.bridge.say(me, "I said this")
        await w.clock.advance(60)
        assert w.completer.calls == []

    scenario(run)


def test_bot_to_bot_budget(tmp_path: Path) -> None:
    """Other bots are answered until the run of bot messages exceeds the budget."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " beep", bot_budget=3)
        await w.engine.start()
        for i in range(5):
            await w.bridge.say(BOT, f"Robin, bot line {i}")
            await w.clock.advance(60)
        # bot, Robin, bot, Robin → the third bot message makes a run of 5 > 3.
        assert len(w.bridge.sent()) == 2
        await w.bridge.say(ALEX, "Robin, a human speaks")
        await w.clock.advance(60)
        assert len(w.bridge.sent()) == 3

    scenario(run)


def test_rate_limit_per_channel(tmp_path: Path) -> None:
    """No more than max_per_minute messages per channel; min_interval between them."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            ["Robin: a\nRobin: b\nRobin: c"],
            max_per_minute=2,
            min_interval=5,
            message_pause=0,
            typing_speed=1000,
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "Robin?")
        await w.clock.advance(120)
        sends = w.bridge.of("send")
        assert [a[2] for a in sends] == ["a", "b"]
        assert sends[1][3] - sends[0][3] >= timedelta(seconds=5)

    scenario(run)


def test_only_configured_channels(tmp_path: Path) -> None:
    """Messages and reactions elsewhere are neither answered nor stored."""
    from bridges import ReactionEvent

    async def run() -> None:
        w = make_world(tmp_path, ["Robin: hi"])
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "Robin?", channel="random")
        await w.engine.on_reaction(w.bridge, ReactionEvent("random", mid, BOB, "👀", w.clock.now()))
        await w.clock.advance(60)
        assert w.completer.calls == []
        assert w.store.for_persona("Robin").recent("fake", "random", 10) == []
        assert w.store.for_persona("Robin").channels() == []

    scenario(run)


def test_proactive_start(tmp_path: Path) -> None:
    """A quiet channel gets an opener (INIT first); never two unanswered; at most N a day."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " anyone around?",
            starts_per_day=0,
            quiet_before_start=3600,
            max_starts_per_day=2,
            active_hours=(9, 23),
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "bye all")
        await w.clock.advance(30)
        sent_before = len(w.bridge.sent())
        await w.clock.advance(2 * 3600)
        assert await attempt_start(w)
        assert w.bridge.sent()[sent_before:] == ["anyone around?"]
        assert w.completer.calls[-1].priority == "background"
        lines = w.engine.lines(w.engine.session("fake", "general"))
        assert lines[0].command == "INIT" and lines[0].speaker == "Robin"
        await w.clock.advance(2 * 3600)
        assert not await attempt_start(w)  # the opener is still unanswered
        await w.bridge.say(ALEX, "me!")
        await w.clock.advance(3 * 3600)
        assert await attempt_start(w)
        await w.bridge.say(ALEX, "again")
        await w.clock.advance(3 * 3600)
        assert not await attempt_start(w)  # two today already

    scenario(run)


def test_proactive_start_is_a_scheduled_job(tmp_path: Path) -> None:
    """With a start rate the engine plans the next attempt as a job and keeps the plan."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " hello?",
            starts_per_day=4,
            quiet_before_start=60,
            active_hours=(0, 24),
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hi")
        await w.clock.advance(10 * 60)
        planned = w.engine.state.next_start
        assert planned is not None
        await w.clock.advance_to(planned + timedelta(seconds=30))
        assert "hello?" in w.bridge.sent()

    scenario(run)


def test_no_starts_outside_active_hours_or_offline(tmp_path: Path) -> None:
    """Outside active hours nothing is started."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " hi",
            start=MONDAY_NOON.replace(hour=5),
            quiet_before_start=60,
            active_hours=(9, 23),
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hello")
        await w.clock.advance(3600)
        assert not await attempt_start(w)

    scenario(run)


def test_sleep_hours_offline_and_catch_up(tmp_path: Path) -> None:
    """Asleep: offline and silent, messages kept; awake: one reply when addressed."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " morning!",
            sleep_hours=(1, 8),
            start=MONDAY_NOON.replace(hour=0, minute=30),
        )
        await w.engine.start()
        await w.clock.advance(3600)  # 01:30
        assert w.bridge.of("presence")[-1][2] == "offline"
        await w.bridge.say(ALEX, "Robin, you awake?")
        await w.clock.advance(3600)
        assert w.bridge.sent() == [] and w.completer.calls == []
        await w.clock.advance_to(MONDAY_NOON.replace(hour=8, minute=1))
        assert w.bridge.of("presence")[-1][2] == "online"
        assert w.bridge.sent() == ["morning!"]

    scenario(run)


def test_catch_up_skips_a_moment_that_passed(tmp_path: Path) -> None:
    """Back online, an old unaddressed backlog gets no answer."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " hm",
            sleep_hours=(1, 8),
            session_gap=3600,
            start=MONDAY_NOON.replace(hour=0, minute=30),
        )
        await w.engine.start()
        await w.clock.advance(3600)
        await w.bridge.say(ALEX, "late night thoughts")
        await w.clock.advance_to(MONDAY_NOON.replace(hour=8, minute=5))
        assert w.bridge.sent() == []

    scenario(run)


def test_catch_up_joins_a_conversation_still_going(tmp_path: Path) -> None:
    """Back online, a backlog from moments ago gets one reply even when not addressed."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: "Robin: what did I miss",
            sleep_hours=(1, 8),
            start=MONDAY_NOON.replace(hour=0, minute=30),
        )
        await w.engine.start()
        await w.clock.advance(3600)
        await w.clock.advance_to(MONDAY_NOON.replace(hour=7, minute=50))
        await w.bridge.say(ALEX, "coffee anyone")
        await w.bridge.say(BOB, "yes please")
        await w.clock.advance_to(MONDAY_NOON.replace(hour=8, minute=5))
        assert w.bridge.sent() == ["what did I miss"]

    scenario(run)


def test_random_away_period(tmp_path: Path) -> None:
    """A planned away period shows offline and silences the persona until it ends."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " back", away_per_day=24, away_minutes=(30, 30))
        await w.engine.start()
        away = w.engine.state.away
        assert away is not None
        start, end = away.start, away.end
        assert end - start == timedelta(minutes=30)
        await w.clock.advance_to(start + timedelta(minutes=1))
        assert w.bridge.of("presence")[-1][2] == "offline"
        await w.bridge.say(ALEX, "Robin?")
        await w.clock.advance(60)
        assert w.bridge.sent() == []
        await w.clock.advance_to(end + timedelta(seconds=30))
        assert w.bridge.of("presence")[-1][2] == "online"
        assert w.bridge.sent() == ["back"]

    scenario(run)


def test_restart_in_the_middle_of_an_offline_period(tmp_path: Path) -> None:
    """A new engine on the same database stays offline and returns at the planned time."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        first = make_world(
            tmp_path,
            lambda call: " back",
            away_per_day=24,
            away_minutes=(60, 60),
            starts_per_day=1,
            clock=clock,
        )
        await first.engine.start()
        away = first.engine.state.away
        planned_start = first.engine.state.next_start
        assert away is not None
        start, end = away.start, away.end
        await clock.advance_to(start + timedelta(minutes=10))
        assert not first.engine.online
        await first.engine.stop()
        first.store.close()

        # A new process: same database, new engine, new bridge.
        second = make_world(
            tmp_path,
            lambda call: " back again",
            away_per_day=24,
            away_minutes=(60, 60),
            starts_per_day=1,
            clock=clock,
        )
        await second.engine.start()
        assert second.engine.state.away == away
        assert second.engine.state.next_start == planned_start
        assert not second.engine.online
        await second.bridge.say(ALEX, "Robin, still there?")
        await clock.advance(60)
        assert second.bridge.sent() == []
        await clock.advance_to(end + timedelta(seconds=30))
        assert second.engine.online
        assert second.bridge.sent() == ["back again"]

    scenario(run)


def test_retention_and_forget(tmp_path: Path) -> None:
    """Messages older than history_days are purged; forget_user removes one person."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: "Bob: x", history_days=1)
        await w.engine.start()
        await w.bridge.say(ALEX, "old")
        await w.clock.advance(2 * 86400)
        await w.bridge.say(ALEX, "new")
        await w.bridge.say(BOB, "bob's")
        await w.clock.advance(7 * 3600)  # the retention job runs every 6 hours
        texts = [m.text for m in w.store.for_persona("Robin").recent("fake", "general", 10)]
        assert texts == ["new", "bob's"]
        assert w.store.forget_user("u-bob").rows == 1
        assert [m.text for m in w.store.for_persona("Robin").recent("fake", "general", 10)] == [
            "new"
        ]

    scenario(run)


def test_edits_and_deletions_update_the_history(tmp_path: Path) -> None:
    """An edited message replaces its text without a new turn; a deleted one is forgotten."""
    from bridges import MessageEvent

    async def run() -> None:
        w = make_world(tmp_path, lambda call: "Bob: ok")
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "tpyo")
        await w.clock.advance(30)
        calls = len(w.completer.calls)
        await w.engine.on_message(
            w.bridge, MessageEvent("general", mid, ALEX, "typo", w.clock.now(), edited=True)
        )
        await w.clock.advance(30)
        assert len(w.completer.calls) == calls
        assert [m.text for m in w.store.for_persona("Robin").recent("fake", "general", 5)] == [
            "typo"
        ]
        await w.engine.on_delete(w.bridge, "general", mid)
        assert w.store.for_persona("Robin").recent("fake", "general", 5) == []

    scenario(run)


def test_a_backfilled_edit_is_new_if_unseen_and_an_edit_if_seen(tmp_path: Path) -> None:
    """An edited copy of a known message edits it (no turn); of an unknown one, it is new."""
    from bridges import MessageEvent

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " sure")
        await w.engine.start()
        await w.engine.on_message(
            w.bridge,
            MessageEvent("general", "d1", ALEX, "Robin, lunch?", w.clock.now(), edited=True),
        )
        await w.clock.advance(60)
        assert w.bridge.sent() == ["sure"]
        await w.engine.on_message(
            w.bridge,
            MessageEvent("general", "d1", ALEX, "Robin, lunch at 1?", w.clock.now(), edited=True),
        )
        await w.clock.advance(60)
        assert w.bridge.sent() == ["sure"]
        texts = [m.text for m in w.store.for_persona("Robin").recent("fake", "general", 5)]
        assert texts == ["Robin, lunch at 1?", "sure"]

    scenario(run)


def test_an_old_or_stale_unseen_edit_is_not_answered(tmp_path: Path) -> None:
    """An edit of a message never seen is taken back only within retention, and answered only
    when it belongs to the conversation going on now."""
    from bridges import MessageEvent

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " sure", history_days=1)
        await w.engine.start()
        now = w.clock.now()
        old = MessageEvent("general", "o1", ALEX, "Robin, year-old?", now - timedelta(days=2))
        await w.engine.on_message(w.bridge, replace(old, edited=True))
        earlier = now - timedelta(hours=5)
        stale = MessageEvent("general", "s1", ALEX, "Robin, this morning?", earlier, edited=True)
        await w.engine.on_message(w.bridge, stale)
        await w.clock.advance(120)
        assert w.bridge.sent() == []
        view = w.store.for_persona("Robin")
        assert [m.text for m in view.recent("fake", "general", 5)] == ["Robin, this morning?"]
        assert view.pending() == {}  # history, not a message waiting for an answer

    scenario(run)


def test_an_edit_drops_the_conversations_cached_state(tmp_path: Path) -> None:
    """The model server's state still holds an edited message's old words: it is dropped."""
    from bridges import MessageEvent

    async def run() -> None:
        w = make_world(tmp_path, lambda call: " sure")
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "my number is 555-0100")
        await w.clock.advance(60)
        fixed = MessageEvent("general", mid, ALEX, "my number is (removed)", w.clock.now())
        await w.engine.on_message(w.bridge, replace(fixed, edited=True))
        assert w.completer.dropped == ["Robin/fake/general"]

    scenario(run)


class _FlakyDrops(ScriptedCompleter):
    """A completer whose model server is unreachable for the first ``failures`` drops."""

    def __init__(self, failures: int) -> None:
        super().__init__(lambda call: " ok")
        self.failures = failures

    async def drop_conversation(self, conversation: str) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the model server is down")
        return await super().drop_conversation(conversation)


def test_a_failed_state_drop_is_retried_at_the_next_purge(tmp_path: Path) -> None:
    """A deleted message's conversation state that could not be dropped is dropped later,
    also after a restart (the pending drop is kept in the persona's state)."""

    async def run() -> None:
        flaky = _FlakyDrops(failures=1)  # the model server is down for one call
        w = make_world(tmp_path, completer=flaky)
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "secret")
        await w.clock.advance(60)
        await w.engine.on_delete(w.bridge, "general", mid)
        assert flaky.dropped == [] and w.engine.state.pending_drops == {"Robin/fake/general"}
        await w.clock.advance(7 * 3600)  # the next purge
        assert flaky.dropped == ["Robin/fake/general"]
        assert w.engine.state.pending_drops == frozenset()

    scenario(run)


def test_retention_is_per_persona(tmp_path: Path) -> None:
    """Two personas keeping 1 and 30 days: a 2-day-old message goes for the first only."""

    async def run() -> None:
        clock = FakeClock(MONDAY_NOON)
        robin = make_world(tmp_path, lambda call: "Bob: x", clock=clock, history_days=1)
        sam = make_world(tmp_path, lambda call: "Bob: x", clock=clock, name="Sam", history_days=30)
        await robin.engine.start()
        await sam.engine.start()
        await robin.bridge.say(ALEX, "first")
        await sam.bridge.say(ALEX, "second")
        await clock.advance(2 * 86400)
        assert robin.store.for_persona("Robin").recent("fake", "general", 10) == []
        assert [m.text for m in sam.store.for_persona("Sam").recent("fake", "general", 10)] == [
            "second"
        ]
        assert robin.completer.dropped == ["Robin/fake/general"]
        assert sam.completer.dropped == []

    scenario(run)


def test_deleting_a_message_drops_its_conversation_state(tmp_path: Path) -> None:
    """A deletion drops the model state of the very conversation key completions used."""

    async def run() -> None:
        w = make_world(tmp_path, lambda call: "Bob: ok")
        await w.engine.start()
        mid = await w.bridge.say(ALEX, "my secret")
        await w.clock.advance(30)
        await w.engine.on_delete(w.bridge, "general", "nonexistent")
        assert w.completer.dropped == []
        await w.engine.on_delete(w.bridge, "general", mid)
        assert w.completer.dropped == [w.completer.calls[0].conversation] == ["Robin/fake/general"]

    scenario(run)


class FlakyBridge(RecordingBridge):
    """A recording bridge whose platform calls fail when a test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presence_calls = 0
        self.fail_presence: set[int] = set()  # which set_presence calls fail (1-based)
        self.fail_send = 0  # how many sends fail next

    async def set_presence(self, status: Any, text: str | None = None) -> None:
        self.presence_calls += 1
        if self.presence_calls in self.fail_presence:
            raise ConnectionError("gateway hiccup")
        await super().set_presence(status, text)

    async def send(self, channel: str, text: str) -> str:
        if self.fail_send:
            self.fail_send -= 1
            raise ConnectionError("gateway hiccup")
        return await super().send(channel, text)


def test_a_failed_presence_call_is_retried_and_the_day_goes_on(tmp_path: Path) -> None:
    """set_presence failing at start and at bedtime is retried; the next wake-up still runs."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " hi",
            sleep_hours=(1, 8),
            start=MONDAY_NOON.replace(hour=0, minute=30),
            bridge_class=FlakyBridge,
        )
        assert isinstance(w.bridge, FlakyBridge)
        w.bridge.fail_presence = {1, 3}
        await w.engine.start()
        await w.clock.advance_to(MONDAY_NOON.replace(hour=8, minute=30))
        shown = [(a[2], a[3].strftime("%H:%M")) for a in w.bridge.of("presence")]
        assert shown == [("online", "00:35"), ("offline", "01:05"), ("online", "08:00")]
        assert any(job.endswith(":presence") for job in w.clock.pending_jobs())

    scenario(run)


def test_a_failed_start_keeps_the_next_one_planned(tmp_path: Path) -> None:
    """A send failing inside the proactive-start job is logged; the next start is planned."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " hello?",
            starts_per_day=24,
            quiet_before_start=60,
            active_hours=(0, 24),
            bridge_class=FlakyBridge,
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hi")
        await w.clock.advance(10 * 60)
        assert isinstance(w.bridge, FlakyBridge)
        w.bridge.fail_send = 1
        planned = w.engine.state.next_start
        assert planned is not None
        await w.clock.advance_to(planned + timedelta(seconds=60))
        assert "hello?" not in w.bridge.sent()
        replanned = w.engine.state.next_start
        assert replanned is not None and replanned > planned
        await w.clock.advance_to(replanned + timedelta(seconds=60))
        assert "hello?" in w.bridge.sent()

    scenario(run)


def test_starts_per_day_count_the_personas_days(tmp_path: Path, utc_host: None) -> None:
    """max_starts_per_day resets at midnight in the persona's time zone, not the host's."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            lambda call: " anyone around?",
            start=MONDAY_NOON.replace(hour=14),  # 23:00 in Tokyo
            timezone="Asia/Tokyo",
            quiet_before_start=600,
            max_starts_per_day=1,
            active_hours=(0, 24),
        )
        await w.engine.start()
        await w.bridge.say(ALEX, "hi")
        await w.clock.advance(20 * 60)
        assert await attempt_start(w)  # 23:22 Tokyo
        await w.bridge.say(ALEX, "me!")
        await w.clock.advance(20 * 60)
        assert not await attempt_start(w)  # 23:44 Tokyo: one today already
        await w.clock.advance_to(MONDAY_NOON.replace(hour=15, minute=30))
        assert await attempt_start(w)  # 00:30 Tokyo, Tuesday; still Monday on the host

    scenario(run)


SAMMY = User("u-sammy", "Sammy")


def test_transcript_never_speaks_someone_elses_line(tmp_path: Path) -> None:
    """transcript: a line opening with another speaker's name ends the persona's turn."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            [
                "Robin: me first\nRobin: Sammy: Oh no, not another book!\nRobin: never sent",
                "Robin: ok\nSammy: I say this\nRobin: not this",
                "Robin: Ziggy: a name nobody used yet",
            ],
        )
        await w.engine.start()
        for text in ("books?", "really?", "and?"):
            await w.bridge.say(SAMMY, text)
            await w.clock.advance(120)
        assert w.bridge.sent() == ["me first", "ok"]

    scenario(run)


def test_chat_format_cuts_someone_elses_line(tmp_path: Path) -> None:
    """chat: a line the model writes for another speaker, labelled or nested, is cut."""

    async def run() -> None:
        w = make_world(
            tmp_path,
            [
                "sure thing\nSammy: Oh no, not another book!\nmore",
                "Robin: Sammy: Oh no, not another book!",
                "Sammy: I would say this",
                "hm\nRobin: Alex: no",
            ],
            fmt="chat",
            talkativeness=1.0,
        )
        await w.engine.start()
        for who, text in ((SAMMY, "books?"), (SAMMY, "hello?"), (SAMMY, "so?"), (ALEX, "hi")):
            await w.bridge.say(who, text)
            await w.clock.advance(120)
        assert w.bridge.sent() == ["sure thing", "hm"]

    scenario(run)
