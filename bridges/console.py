"""The console bridge: chat with the persona in the terminal.

Lines typed are messages from "you" in the channel ``console``. The persona's messages,
replies, reactions, typing and presence changes are printed as they happen. ``/wait 3h``
pretends time has passed (to try session gaps), ``/quit`` or Ctrl-D ends the session.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import ClassVar, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ._api import Bridge, BridgeHost, MessageEvent, PresenceStatus, User

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
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona)
        self.opts = ConsoleOptions.model_validate(options.model_dump())
        self._in: Iterable[str] = stdin if stdin is not None else sys.stdin
        self._out = stdout or sys.stdout
        self._ids = itertools.count(1)
        self._texts: dict[str, str] = {}
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._typing_shown = False
        self.you = User("console-user", self.opts.you)
        self.posted: list[str] = []

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def start(self) -> None:
        self.me = User("console-persona", self.persona or "persona", is_bot=True)
        self._print(f"chatting with {self.me.name}; /wait 3h lets time pass, /quit ends")
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
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text.startswith("/wait"):
                self._wait(text.removeprefix("/wait").strip())
                continue
            mid = f"c{next(self._ids)}"
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
        self._closed.set()

    def _wait(self, arg: str) -> None:
        m = _DURATION.match(arg or "")
        advance = getattr(self.clock, "advance", None)
        if m is None or advance is None:
            self._print("(usage: /wait 90m, /wait 3h)")
            return
        advance(float(m[1]) * _UNITS[m[2]])
        self._print(f"({arg} pass)")

    async def wait_closed(self) -> None:
        """Return when the user quits (or input ends)."""
        await self._closed.wait()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._closed.set()

    def _posted(self, text: str) -> str:
        self._typing_shown = False
        mid = f"p{next(self._ids)}"
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
        self._print(f"({self.persona} is now {status}{': ' + text if text else ''})")

    async def notice(self, channel: str, text: str) -> None:
        self._print(f"— {text} —")
