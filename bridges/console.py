"""The console bridge: chat with the persona in the terminal.

Lines typed are messages from "you" in the channel ``console``. The persona's messages,
replies, reactions and typing are printed as they happen, and what it does on its own as
status lines (``-- 23:00 Robin went offline (asleep)``). ``/wait 3h`` lets time pass: what
the persona had planned in those hours happens, in order. ``/when`` lists what it plans
next, ``/quit`` or Ctrl-D ends the session.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import sys
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ._api import Bridge, BridgeHost, MessageEvent, PersonaEvent, PresenceStatus, User
from ._time import Clock, ManualClock

__all__ = ["ConsoleBridge", "ConsoleOptions"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConsoleOptions(BaseModel):
    """Options of the console bridge."""

    model_config = ConfigDict(extra="forbid")

    you: str = Field("Alex", description="Your name, as the persona sees it.")
    channel: str = Field("console", description="The channel name the persona sees.")


class ConsoleBridge(Bridge):
    """Terminal chat; input and output streams are injectable for tests."""

    name: ClassVar[str] = "console"
    Options: ClassVar[type[BaseModel]] = ConsoleOptions
    can_reply: ClassVar[bool] = True
    can_react: ClassVar[bool] = True
    can_type: ClassVar[bool] = True
    can_presence: ClassVar[bool] = True

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "",
        clock: Clock | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona, clock=clock)
        self.opts = ConsoleOptions.model_validate(options.model_dump())
        self._in: Iterable[str] = stdin if stdin is not None else sys.stdin
        self._out = stdout or sys.stdout
        # Ids must never repeat across restarts (the persona's memory outlives a session):
        # a per-start random prefix and a counter.
        self._session = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._texts: dict[str, str] = {}
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._typing_shown = False
        self.you = User("console-user", self.opts.you)
        self.presence: PresenceStatus = "online"
        # Lines taken from the input so far (tests wait on it).
        self.lines_done = 0
        self.posted: list[str] = []

    def _id(self, kind: str) -> str:
        return f"{kind}-{self._session}-{next(self._ids)}"

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def start(self) -> None:
        self.me = User("console-persona", self.persona or "persona", is_bot=True)
        self._print(
            f"chatting with {self.me.name}; /wait 3h lets time pass, /when shows "
            f"{self.me.name}'s plans, /quit ends"
        )
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            # A daemon thread: a blocked readline must not keep the process alive at exit.
            try:
                for line in self._in:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                loop.call_soon_threadsafe(lines.put_nowait, None)
            except RuntimeError:
                pass  # the event loop has closed: nobody is listening any more

        threading.Thread(target=read, daemon=True, name="console-input").start()
        self._reader = asyncio.create_task(self._consume(lines))

    async def _consume(self, lines: asyncio.Queue[str | None]) -> None:
        while (line := await lines.get()) is not None:
            text = line.strip()
            if text in ("/quit", "/exit"):
                break
            await self._take(text)
            self.lines_done += 1
        self._closed.set()

    async def _take(self, text: str) -> None:
        if not text:
            return
        if text.startswith("/wait"):
            await self._wait(text.removeprefix("/wait").strip())
        elif text == "/when":
            self._when()
        else:
            mid = self._id("c")
            self._texts[mid] = text
            await self.host.on_message(
                self,
                MessageEvent(
                    channel=self.opts.channel,
                    message_id=mid,
                    author=self.you,
                    text=text,
                    timestamp=self._now(),
                    channel_name=self.opts.channel,
                ),
            )

    async def _wait(self, arg: str) -> None:
        m = _DURATION.match(arg or "")
        if m is None or not isinstance(self.clock, ManualClock):
            self._print("(usage: /wait 90m, /wait 3h)")
            return
        self._print(f"({arg} pass)")
        await self.clock.advance(float(m[1]) * _UNITS[m[2]])

    def _when(self) -> None:
        upcoming = getattr(self.host, "upcoming", None)
        plans = upcoming() if upcoming is not None else []
        if not plans:
            self._print(f"-- {self.persona} has nothing planned")
        for item in plans:
            self._print(f"-- {item.at:%a %H:%M} {self.persona} {item.what}")

    async def wait_closed(self) -> None:
        """Return when the user quits (or input ends)."""
        await self._closed.wait()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._closed.set()

    def _posted(self, text: str) -> str:
        self._typing_shown = False
        mid = self._id("p")
        self._texts[mid] = text
        self.posted.append(text)
        return mid

    async def send(self, channel: str, text: str) -> str:
        self._print(f"{self.persona}: {text}")
        return self._posted(text)

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        quoted = self._texts.get(message_id, "")
        short = quoted if len(quoted) <= 40 else quoted[:39] + "…"
        self._print(f"{self.persona} (replying to “{short}”): {text}")
        return self._posted(text)

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        self._print(f"{self.persona} reacted {emoji} to “{self._texts.get(message_id, '')}”")

    async def typing(self, channel: str) -> None:
        if not self._typing_shown:
            self._print(f"{self.persona} is typing…")
            self._typing_shown = True

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        # Shown with its reason by persona_event instead.
        self.presence = status

    async def persona_event(self, event: PersonaEvent) -> None:
        self._print(_status_line(event, self._now()))

    async def notice(self, channel: str, text: str) -> None:
        self._print(f"— {text} —")


_OFFLINE = {"asleep": "is asleep", "away": "is away", "paused": "is paused"}


def _wait_hint(delta: timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"/wait {math.ceil(minutes / 60)}h" if minutes > 90 else f"/wait {minutes}m"


def _status_line(event: PersonaEvent, now: datetime) -> str:
    """The console's line for something the persona did on its own."""
    who = event.persona
    if event.kind == "conversation_started":
        return f"-- {event.at:%H:%M} {who} started a conversation"
    if event.state == "online":
        return f"-- {event.at:%H:%M} {who} is back" if event.change else f"-- {who} is here"
    if event.change:
        return f"-- {event.at:%H:%M} {who} went offline ({event.reason or 'away'})"
    where = _OFFLINE.get(event.reason or "", "is offline")
    if event.until is None:
        return f"-- {who} {where}" + (
            f"; personad resume {who}" if event.reason == "paused" else ""
        )
    return f"-- {who} {where} until {event.until:%H:%M}; {_wait_hint(event.until - now)}"
