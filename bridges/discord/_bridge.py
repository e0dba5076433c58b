"""The Discord bridge: one discord.py client per persona, kept thin.

Everything about timing and turn-taking is the behaviour engine's; this module translates
events, enforces the allow-lists, paces sends per channel, and backfills what was posted while
the connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, ClassVar

import discord
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .._api import Bridge, BridgeHost, PresenceStatus, ReactionEvent, User
from .._time import SystemClock
from ..errors import BridgeStartError
from ._translate import outgoing_mentions, to_event, user_of

__all__ = ["DiscordBridge", "DiscordOptions"]

log = structlog.get_logger("personad.discord")

_STATUS = {
    "online": discord.Status.online,
    "idle": discord.Status.idle,
    "offline": discord.Status.invisible,
}


class DiscordOptions(BaseModel):
    """The ``[bridges.discord]`` table. Tokens belong in credentials or the environment."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = Field(None, description="Bot token (one persona).")
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Bot token per persona name (several personas)."
    )
    allow_plain_token: bool = Field(
        False, description="Accept a token written in the config file itself."
    )
    guilds: list[int] = Field(default_factory=list, description="Guild ids; empty = all.")
    channels: list[int] = Field(default_factory=list, description="Channel ids; empty = all.")
    dms: bool = Field(False, description="Answer direct messages.")
    presences: bool = Field(False, description="Ask for the presences intent.")
    status_text: str | None = Field(None, description="Custom status text.")
    disclosure: str = Field(
        "🤖 an AI persona", description="Appended to the status: people should know."
    )
    names: dict[str, str] = Field(
        default_factory=dict, description="User id -> the name friends use for them."
    )
    pace_seconds: float = Field(1.5, ge=0, description="Least time between sends per channel.")
    backfill_limit: int = Field(100, ge=0, description="Messages fetched per channel after a gap.")
    ready_timeout: float = Field(60, gt=0, description="Seconds to wait for the gateway.")


class DiscordBridge(Bridge):
    """A persona's Discord account."""

    name: ClassVar[str] = "discord"
    Options: ClassVar[type[BaseModel]] = DiscordOptions
    can_reply: ClassVar[bool] = True
    can_react: ClassVar[bool] = True
    can_type: ClassVar[bool] = True
    can_presence: ClassVar[bool] = True
    max_message_length: ClassVar[int] = 2000

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "",
        client: discord.Client | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona)
        self.opts = DiscordOptions.model_validate(options.model_dump())
        self._external = client is not None
        self.client = client or discord.Client(intents=self.intents())
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._connected_before = False
        self._last_seen: dict[int, int] = {}
        self._sent_at: dict[int, datetime] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._register()

    def intents(self) -> discord.Intents:
        """Message content and members; presences only when configured."""
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        intents.presences = self.opts.presences
        return intents

    def _token(self) -> str:
        by_name = {k.casefold(): v for k, v in self.opts.tokens.items()}
        secret = by_name.get(self.persona.casefold()) or self.opts.token
        if secret is None:
            raise BridgeStartError(
                self.name,
                self.persona,
                "no bot token: put it in a credential file named bridges__discord__token "
                "(systemd LoadCredential=) or PERSONAD_BRIDGES__DISCORD__TOKEN; for several "
                "personas use bridges__discord__tokens__<persona>",
            )
        return secret.get_secret_value()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._external:
            await self._on_ready()
            return
        token = self._token()
        self._task = asyncio.create_task(self.client.start(token, reconnect=True))
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {self._task, ready},
            timeout=self.opts.ready_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        ready.cancel()
        if self._task in done:
            exc = self._task.exception()
            raise BridgeStartError(self.name, self.persona, _explain(exc)) from exc
        if not done:
            await self.stop()
            raise BridgeStartError(
                self.name,
                self.persona,
                f"no connection to Discord within {self.opts.ready_timeout:.0f} s",
            )

    async def stop(self) -> None:
        if not self.client.is_closed() and not self._external:
            await self.client.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task

    # -- events in ---------------------------------------------------------------------

    def _register(self) -> None:
        c = self.client
        c.event(self._wrap("on_ready", self._on_ready))
        c.event(self._wrap("on_resumed", self._on_ready))
        c.event(self._wrap("on_message", self._on_message))
        c.event(self._wrap("on_message_edit", self._on_edit))
        c.event(self._wrap("on_message_delete", self._on_delete))
        c.event(self._wrap("on_reaction_add", self._on_reaction))

    @staticmethod
    def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def handler(*args: Any) -> None:
            await fn(*args)

        handler.__name__ = name
        return handler

    def allowed(self, channel: Any) -> bool:
        """Guild and channel allow-lists; direct messages only when enabled."""
        if isinstance(channel, discord.DMChannel | discord.GroupChannel):
            return self.opts.dms
        guild = getattr(channel, "guild", None)
        if self.opts.guilds and (guild is None or guild.id not in self.opts.guilds):
            return False
        return not self.opts.channels or channel.id in self.opts.channels

    async def _on_ready(self) -> None:
        user = self.client.user
        if user is not None:
            self.me = User(str(user.id), self.persona or user.name, is_bot=True)
            # In the transcript the persona is called by its own name, whatever the account.
            self.opts.names.setdefault(str(user.id), self.me.name)
        if self._connected_before:
            await self.backfill()
        self._connected_before = True
        self._ready.set()
        log.info("discord_ready", persona=self.persona, user=str(user) if user else None)

    async def _on_message(self, message: discord.Message) -> None:
        if not self.allowed(message.channel):
            return
        self._last_seen[message.channel.id] = max(
            message.id, self._last_seen.get(message.channel.id, 0)
        )
        await self.host.on_message(self, to_event(message, self.opts.names))

    async def _on_edit(self, before: discord.Message, after: discord.Message) -> None:
        if self.allowed(after.channel):
            await self.host.on_message(self, to_event(after, self.opts.names, edited=True))

    async def _on_delete(self, message: discord.Message) -> None:
        if self.allowed(message.channel):
            await self.host.on_delete(self, str(message.channel.id), str(message.id))

    async def _on_reaction(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        message = reaction.message
        if not self.allowed(message.channel):
            return
        emoji = reaction.emoji if isinstance(reaction.emoji, str) else f":{reaction.emoji.name}:"
        await self.host.on_reaction(
            self,
            ReactionEvent(
                channel=str(message.channel.id),
                message_id=str(message.id),
                user=user_of(user, self.opts.names),
                emoji=emoji,
                timestamp=discord.utils.utcnow(),
            ),
        )

    def history(self, channel: Any, after: int) -> AsyncIterator[discord.Message]:
        """Messages after ``after`` in ``channel``, oldest first (a seam for tests)."""
        return channel.history(  # type: ignore[no-any-return]
            after=discord.Object(after), oldest_first=True, limit=self.opts.backfill_limit
        )

    async def backfill(self) -> int:
        """Report messages posted while disconnected; the engine drops any it has seen."""
        replayed = 0
        for channel_id, last in list(self._last_seen.items()):
            channel = self.client.get_channel(channel_id)
            if channel is None:
                continue
            async for message in self.history(channel, last):
                await self._on_message(message)
                replayed += 1
        log.info("discord_backfill", persona=self.persona, messages=replayed)
        return replayed

    # -- actions out -------------------------------------------------------------------

    async def _channel(self, channel: str) -> Any:
        found = self.client.get_channel(int(channel))
        if found is None:
            found = await self.client.fetch_channel(int(channel))
        return found

    async def _paced(self, channel_id: int) -> None:
        # discord.py waits out HTTP 429s itself; this keeps the persona from ever bursting.
        lock = self._locks.setdefault(channel_id, asyncio.Lock())
        clock = self.clock or SystemClock()
        async with lock:
            last = self._sent_at.get(channel_id)
            if last is not None:
                wait = self.opts.pace_seconds - (clock.now() - last).total_seconds()
                if wait > 0:
                    await clock.sleep(wait)
            self._sent_at[channel_id] = clock.now()

    def _members(self, channel: Any) -> dict[str, int]:
        members: dict[str, int] = {}
        for member in getattr(channel, "members", []) or []:
            # The persona may write a nickname or an account name: both reach the person.
            members[member.name] = member.id
            members[member.display_name] = member.id
        for uid, name in self.opts.names.items():
            if uid.isdigit():
                members[name] = int(uid)
        return members

    async def send(self, channel: str, text: str) -> str:
        target = await self._channel(channel)
        await self._paced(target.id)
        message = await target.send(outgoing_mentions(text, self._members(target)))
        return str(message.id)

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        target = await self._channel(channel)
        await self._paced(target.id)
        partial = target.get_partial_message(int(message_id))
        message = await partial.reply(
            outgoing_mentions(text, self._members(target)), mention_author=False
        )
        return str(message.id)

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        target = await self._channel(channel)
        await target.get_partial_message(int(message_id)).add_reaction(emoji)

    async def typing(self, channel: str) -> None:
        target = await self._channel(channel)
        await target.typing()

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        words = " · ".join(t for t in (text or self.opts.status_text, self.opts.disclosure) if t)
        activity = discord.CustomActivity(name=words) if words else None
        await self.client.change_presence(status=_STATUS[status], activity=activity)


def _explain(exc: BaseException | None) -> str:
    if isinstance(exc, discord.LoginFailure):
        return (
            "Discord rejected the bot token; copy it again from the Developer Portal "
            "(Bot > Reset Token) into the credential file"
        )
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return (
            "the bot lacks privileged intents; enable Message Content and Server Members "
            "(and Presence if configured) under Bot > Privileged Gateway Intents"
        )
    return f"could not connect: {exc!r}"
