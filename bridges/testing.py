"""Test helpers for bridges and for the behaviour engine, shipped for third-party bridges too.

- :class:`FakeClock`: a clock and scheduler whose time moves only when told.
- :class:`RecordingBridge`: a bridge that records what the persona does and lets a test
  speak as other users.
- :class:`ScriptedCompleter`: model answers from a script, recording the prompts and the
  conversations whose cached state the engine dropped.
- :class:`FakeHost`: a host that records the events a bridge reports.
- :class:`BridgeContract`: tests every bridge must pass; subclass it in your test suite::

      from bridges.testing import BridgeContract

      class TestShoutBridge(BridgeContract):
          def make_bridge(self, host):
              return ShoutBridge(ShoutBridge.Options(), host, persona="Robin")

          async def deliver(self, bridge, text):      # a user posts on the platform
              await bridge.fake_server.post("lobby", "alice", text)

          def sent(self, bridge):                      # what the bridge posted
              return bridge.fake_server.messages("lobby")
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ._api import (
    Attachment,
    Bridge,
    BridgeHost,
    MessageEvent,
    PersonaEvent,
    PresenceEvent,
    PresenceStatus,
    ReactionEvent,
    Upcoming,
    User,
)
from ._completer import CompletionCall
from ._time import Job
from .errors import NotSupported

__all__ = [
    "BridgeContract",
    "FakeClock",
    "FakeHost",
    "RecordingBridge",
    "ScriptedCompleter",
]


class FakeClock:
    """Clock, :class:`~bridges.Scheduler` and :class:`~bridges.ManualClock` for tests:
    time moves only on ``await advance(seconds)``, which runs the jobs due on the way."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday noon
        self._queue: list[tuple[datetime, int, Any]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, tuple[datetime, Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (self._now + timedelta(seconds=seconds), next(self._seq), fut))
        await fut

    def at(self, when: datetime, job_id: str, job: Job) -> None:
        self._jobs[job_id] = (when, job)

    def cancel(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def pending_jobs(self) -> dict[str, datetime]:
        """Scheduled job ids and their times."""
        return {k: when for k, (when, _) in self._jobs.items()}

    async def settle(self) -> None:
        """Let every runnable task run until all wait on the clock."""
        for _ in range(50):
            await asyncio.sleep(0)
        for task in list(self._tasks):
            if task.done():
                self._tasks.discard(task)
                if not task.cancelled() and task.exception() is not None:
                    self.errors.append(task.exception())  # type: ignore[arg-type]
        if self.errors:
            raise self.errors.pop(0)

    def _next(self) -> tuple[datetime, str | None]:
        while self._queue and self._queue[0][2].done():
            heapq.heappop(self._queue)  # a sleeper that was cancelled
        due_sleep = self._queue[0][0] if self._queue else None
        job = min(self._jobs.items(), key=lambda kv: kv[1][0], default=None)
        if job is not None and (due_sleep is None or job[1][0] <= due_sleep):
            return job[1][0], job[0]
        if due_sleep is None:
            return datetime.max.replace(tzinfo=UTC), None
        return due_sleep, None

    async def advance(self, seconds: float = 0) -> None:
        """Move time forward, waking sleepers and running jobs in time order on the way."""
        target = self._now + timedelta(seconds=seconds)
        await self.settle()
        while True:
            when, job_id = self._next()
            if when > target:
                break
            self._now = max(self._now, when)
            if job_id is not None:
                _, job = self._jobs.pop(job_id)
                task = asyncio.ensure_future(job())
                self._tasks.add(task)
            else:
                _, _, fut = heapq.heappop(self._queue)
                fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when``."""
        await self.advance((when - self._now).total_seconds())


class ScriptedCompleter:
    """Answers completions from a script (a list, or a function of the call)."""

    def __init__(self, script: Iterable[str | None] | Callable[[CompletionCall], str | None]):
        self._fn = script if callable(script) else None
        self._items = None if callable(script) else list(script)
        self.calls: list[CompletionCall] = []
        # Conversation keys the engine asked to forget, in order.
        self.dropped: list[str] = []

    async def __call__(self, call: CompletionCall) -> str | None:
        self.calls.append(call)
        if self._fn is not None:
            return self._fn(call)
        if not self._items:
            return None
        return self._items.pop(0)

    async def drop_conversation(self, conversation: str) -> int:
        self.dropped.append(conversation)
        return 1


class RecordingBridge(Bridge):
    """A bridge whose platform is a list: it records actions with the clock's time.

    Message ids are ``m1``, ``m2``, ...; a bridge standing for the same platform after a
    restart continues them with ``first_id``.
    """

    name = "fake"
    can_reply = can_react = can_type = can_presence = can_attach = True
    max_message_length = 200

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "Robin",
        clock: FakeClock | None = None,
        first_id: int = 1,
    ) -> None:
        self._clock = clock or FakeClock()
        super().__init__(options, host, persona=persona, clock=self._clock)
        self.me = User("persona-1", persona, is_bot=True)
        self.actions: list[tuple[Any, ...]] = []
        self._ids = itertools.count(first_id)

    def _id(self) -> str:
        return f"m{next(self._ids)}"

    def sent(self) -> list[str]:
        """Texts the persona sent or replied."""
        return [a[2] for a in self.actions if a[0] in ("send", "reply")]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        """Actions of one kind."""
        return [a for a in self.actions if a[0] == kind]

    async def say(
        self,
        user: User,
        text: str,
        *,
        channel: str = "general",
        mentions: Sequence[User] = (),
        reply_to: str | None = None,
        reply_to_author: User | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> str:
        """Post as ``user`` (the platform reports it to the host)."""
        mid = self._id()
        await self.host.on_message(
            self,
            MessageEvent(
                channel=channel,
                message_id=mid,
                author=user,
                text=text,
                timestamp=self._clock.now(),
                channel_name=channel,
                mentions=mentions,
                reply_to=reply_to,
                reply_to_author=reply_to_author,
                attachments=attachments,
            ),
        )
        return mid

    async def send(self, channel: str, text: str) -> str:
        self.actions.append(("send", channel, text, self._clock.now()))
        return self._id()

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        self.actions.append(("reply", channel, text, self._clock.now(), message_id))
        return self._id()

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        self.actions.append(("react", channel, emoji, self._clock.now(), message_id))

    async def typing(self, channel: str) -> None:
        self.actions.append(("typing", channel, "", self._clock.now()))

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        self.actions.append(("presence", "", status, self._clock.now()))

    async def attach(self, channel: str, kind: str, description: str) -> str:
        self.actions.append(("attach", channel, f"{kind}:{description}", self._clock.now()))
        return self._id()

    async def notice(self, channel: str, text: str) -> None:
        self.actions.append(("notice", channel, text, self._clock.now()))

    async def persona_event(self, event: PersonaEvent) -> None:
        self.actions.append(("event", event.channel or "", event, self._clock.now()))

    def events(self) -> list[PersonaEvent]:
        """What the persona reported doing on its own, oldest first."""
        return [a[2] for a in self.actions if a[0] == "event"]


class FakeHost:
    """A :class:`BridgeHost` that records what a bridge reports."""

    def __init__(self) -> None:
        self.messages: list[MessageEvent] = []
        self.reactions: list[ReactionEvent] = []
        self.presences: list[PresenceEvent] = []
        self.deleted: list[tuple[str, str]] = []
        # What upcoming() returns (the console's /when).
        self.schedule: list[Upcoming] = []
        self.received = asyncio.Event()

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> None:
        self.messages.append(event)
        self.received.set()

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        self.reactions.append(event)

    async def on_presence(self, bridge: Bridge, event: PresenceEvent) -> None:
        self.presences.append(event)

    async def on_delete(self, bridge: Bridge, channel: str, message_id: str) -> None:
        self.deleted.append((channel, message_id))

    def upcoming(self) -> list[Upcoming]:
        return list(self.schedule)


_CAPABILITIES = {
    "can_reply": ("reply", ("c", "m", "t")),
    "can_react": ("react", ("c", "m", "👍")),
    "can_type": ("typing", ("c",)),
    "can_presence": ("set_presence", ("idle",)),
    "can_attach": ("attach", ("c", "PHOTO", "a cat")),
}


class BridgeContract(ABC):
    """Tests any bridge must pass. Subclass, implement the three hooks, let pytest collect."""

    channel = "general"

    @abstractmethod
    def make_bridge(self, host: BridgeHost) -> Bridge:
        """Build the bridge under test, reporting to ``host``."""

    @abstractmethod
    async def deliver(self, bridge: Bridge, text: str) -> None:
        """Make a user post ``text`` on the bridge's (fake) platform."""

    @abstractmethod
    def sent(self, bridge: Bridge) -> list[str]:
        """Texts the bridge has posted on its platform, oldest first."""

    def _run(self, scenario: Callable[[Bridge, FakeHost], Any]) -> None:
        async def main() -> None:
            host = FakeHost()
            bridge = self.make_bridge(host)
            await bridge.start()
            try:
                await scenario(bridge, host)
            finally:
                await bridge.stop()

        asyncio.run(main())

    def test_declares_name_and_options(self) -> None:
        """The bridge has a name and a strict pydantic Options model."""
        bridge = self.make_bridge(FakeHost())
        assert isinstance(bridge.name, str) and bridge.name and bridge.name != "bridge"
        assert issubclass(bridge.Options, BaseModel)
        assert bridge.Options.model_config.get("extra") == "forbid"

    def test_capability_flags_match_methods(self) -> None:
        """A flag is True exactly when the bridge overrides the matching method."""
        bridge = self.make_bridge(FakeHost())
        for flag, (method, _) in _CAPABILITIES.items():
            overridden = getattr(type(bridge), method) is not getattr(Bridge, method)
            assert getattr(bridge, flag) == overridden, flag

    def test_start_reports_incoming_messages(self) -> None:
        """After start, a user's message reaches the host with an aware timestamp."""

        async def scenario(bridge: Bridge, host: FakeHost) -> None:
            await self.deliver(bridge, "hello there")
            await asyncio.wait_for(host.received.wait(), 10)
            event = host.messages[-1]
            assert event.text == "hello there"
            assert event.timestamp.tzinfo is not None
            assert event.author.id and event.message_id

        self._run(scenario)

    def test_knows_its_own_account(self) -> None:
        """After start, ``bridge.me`` is set, so the persona never answers itself."""

        async def scenario(bridge: Bridge, host: FakeHost) -> None:
            assert bridge.me is not None and bridge.me.id

        self._run(scenario)

    def test_send_posts_and_returns_an_id(self) -> None:
        """send() posts the text and returns the new message's id."""

        async def scenario(bridge: Bridge, host: FakeHost) -> None:
            mid = await bridge.send(self.channel, "hi from the persona")
            assert isinstance(mid, str) and mid
            assert "hi from the persona" in self.sent(bridge)

        self._run(scenario)

    def test_supported_operations_work(self) -> None:
        """Every operation a flag promises can be called without error."""

        async def scenario(bridge: Bridge, host: FakeHost) -> None:
            mid = await bridge.send(self.channel, "target")
            for flag, (method, args) in _CAPABILITIES.items():
                if getattr(bridge, flag):
                    call = [self.channel if a == "c" else mid if a == "m" else a for a in args]
                    if method == "set_presence":
                        call = list(args)
                    await getattr(bridge, method)(*call)

        self._run(scenario)

    def test_unsupported_operations_raise(self) -> None:
        """An operation a flag denies raises NotSupported rather than doing something else."""

        async def scenario(bridge: Bridge, host: FakeHost) -> None:
            for flag, (method, args) in _CAPABILITIES.items():
                if not getattr(bridge, flag):
                    try:
                        await getattr(bridge, method)(*args)
                    except NotSupported:
                        continue
                    raise AssertionError(f"{method} should raise NotSupported")

        self._run(scenario)
