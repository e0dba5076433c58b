"""The Discord bridge: one discord.py client per persona, kept thin.

Everything about timing and turn-taking is the behaviour engine's; this module translates
events, enforces the allow-lists, paces sends per channel, and backfills what was posted while
the connection was down. Edits and deletions come from discord.py's raw events, which fire for
every message, not only those still in its cache (nothing from before a restart or a backfill is).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, ClassVar

import discord
import structlog
from pydantic import BaseModel

from .._api import Bridge, BridgeHost, PresenceStatus, ReactionEvent, User
from .._time import Clock, SystemClock
from ..errors import BridgeStartError
from ._options import DiscordOptions
from ._outgoing import expand_mentions, mentions_for, split_message
from ._translate import to_event, user_of

__all__ = ["DiscordBridge"]

log = structlog.get_logger("personad.discord")

_STATUS = {
    "online": discord.Status.online,
    "idle": discord.Status.idle,
    "offline": discord.Status.invisible,
}


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
        clock: Clock | None = None,
        client: discord.Client | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona, clock=clock)
        self.opts = DiscordOptions.model_validate(options.model_dump())
        self._external = client is not None
        # Defence in depth: any send that forgets its own allowed mentions pings no one.
        self.client = client or discord.Client(
            intents=self.intents(), allowed_mentions=discord.AllowedMentions.none()
        )
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._connected_before = False
        self._last_seen: dict[int, int] = {}
        self._sent_at: dict[int, datetime] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        # Nonces and ids of the second and later pieces of a split message: the engine already
        # remembers the whole text under the first piece's id, so their echoes are not news.
        self._continued: dict[str, None] = {}
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
        if self.opts.dms and not self.opts.dm_users:
            log.warning(
                "discord_dms_from_nobody",
                persona=self.persona,
                fix="list the user ids allowed to DM the persona in dm_users",
            )
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
        c.event(self._wrap("on_raw_message_edit", self._on_edit))
        c.event(self._wrap("on_raw_message_delete", self._on_delete))
        c.event(self._wrap("on_raw_bulk_message_delete", self._on_bulk_delete))
        c.event(self._wrap("on_reaction_add", self._on_reaction))

    @staticmethod
    def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def handler(*args: Any) -> None:
            await fn(*args)

        handler.__name__ = name
        return handler

    def allowed(self, channel: Any, author: Any = None) -> bool:
        """Guild and channel allow-lists; a direct message only with a user in ``dm_users``.

        ``author`` stands in for the other side of a DM channel discord.py knows only by id.
        """
        if isinstance(channel, discord.DMChannel | discord.GroupChannel):
            return self._dm_allowed(channel, author)
        guild_id = getattr(channel, "guild_id", None)
        if guild_id is None:
            guild = getattr(channel, "guild", None)
            guild_id = guild.id if guild is not None else None
        return self._listed(channel.id, guild_id)

    def _listed(self, channel_id: int, guild_id: int | None) -> bool:
        if self.opts.guilds and guild_id not in self.opts.guilds:
            return False
        return not self.opts.channels or channel_id in self.opts.channels

    def _dm_allowed(self, channel: Any, author: Any) -> bool:
        if not self.opts.dms:
            return False
        if "*" in self.opts.dm_users:
            return True
        me = self.client.user
        people = [u for u in getattr(channel, "recipients", []) or [] if u != me]
        if not people and author is not None and author != me:
            people = [author]
        return bool(people) and all(str(u.id) in self.opts.dm_users for u in people)

    def _raw_allowed(self, channel_id: int, guild_id: int | None) -> bool:
        channel = self.client.get_channel(channel_id)
        if channel is not None:
            return self.allowed(channel)
        if guild_id is None:
            # A DM channel discord.py has not cached: forgetting a message is always safe, and
            # only DMs from dm_users were ever stored.
            return self.opts.dms
        return self._listed(channel_id, guild_id)

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
        if not self.allowed(message.channel, message.author):
            return
        self._last_seen[message.channel.id] = max(
            message.id, self._last_seen.get(message.channel.id, 0)
        )
        if self._is_continuation(message):
            return
        # A backfilled copy the platform marks as edited is reported as an edit: the engine
        # updates its stored copy, or takes it as new if it never saw the original.
        edited = message.edited_at is not None
        await self.host.on_message(self, to_event(message, self.opts.names, edited=edited))

    def _is_continuation(self, message: discord.Message) -> bool:
        if message.author != self.client.user:
            return False
        keys = {str(message.id), str(message.nonce) if message.nonce is not None else ""}
        return any(k in self._continued for k in keys if k)

    def _remember_continuation(self, *keys: str) -> None:
        for key in keys:
            self._continued[key] = None
        while len(self._continued) > 512:
            del self._continued[next(iter(self._continued))]

    async def _on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if not _content_changed(payload) or not self.allowed(message.channel, message.author):
            return
        await self.host.on_message(self, to_event(message, self.opts.names, edited=True))

    async def _on_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if self._raw_allowed(payload.channel_id, payload.guild_id):
            await self.host.on_delete(self, str(payload.channel_id), str(payload.message_id))

    async def _on_bulk_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if self._raw_allowed(payload.channel_id, payload.guild_id):
            for message_id in sorted(payload.message_ids):
                await self.host.on_delete(self, str(payload.channel_id), str(message_id))

    async def _on_reaction(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        message = reaction.message
        if not self.allowed(message.channel, user):
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
        return await self._post(target, text, None)

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        target = await self._channel(channel)
        return await self._post(target, text, target.get_partial_message(int(message_id)))

    async def _post(self, target: Any, text: str, answered: Any) -> str:
        """Send ``text`` (as a reply to ``answered`` if given); the first piece's id.

        The engine splits at ``max_message_length`` before mentions grow into ``<@id>``, so
        a piece can still be too long here: it is split again and sent as several messages.
        """
        out = expand_mentions(text, self._members(target))
        parts = split_message(out.text, self.max_message_length) or [out.text]
        first = ""
        for i, part in enumerate(parts):
            await self._paced(target.id)
            mentions = mentions_for(out.users_in(part))
            if i == 0 and answered is not None:
                sent = await answered.reply(part, allowed_mentions=mentions, mention_author=False)
            elif i == 0:
                sent = await target.send(part, allowed_mentions=mentions)
            else:
                nonce = secrets.token_hex(8)
                self._remember_continuation(nonce)
                sent = await target.send(part, allowed_mentions=mentions, nonce=nonce)
                self._remember_continuation(str(sent.id))
            first = first or str(sent.id)
        if len(parts) > 1:
            log.info("discord_split_after_mentions", persona=self.persona, parts=len(parts))
        return first

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


def _content_changed(payload: discord.RawMessageUpdateEvent) -> bool:
    """Whether an update is a person's edit, not a link preview, pin or poll count."""
    if payload.data.get("edited_timestamp") is None:
        return False
    before = payload.cached_message
    return before is None or (
        before.content != payload.message.content
        or [a.id for a in before.attachments] != [a.id for a in payload.message.attachments]
    )


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
