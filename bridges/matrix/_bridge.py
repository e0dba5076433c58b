"""The Matrix bridge: one account per persona, a /sync loop in, client API calls out.

Everything about timing and turn-taking is the behaviour engine's; this module logs in (once,
keeping the device), follows /sync from the saved position (so what was said during downtime
is read back), and carries out sends, replies, reactions, typing, presence and read receipts.
Requests the homeserver rate-limits are retried after the time it asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import platformdirs
import structlog
from mautrix.errors import MatrixError, MatrixRequestError, MUnknownToken
from mautrix.types import (
    EventID,
    EventType,
    FilterID,
    PresenceState,
    ReactionEventContent,
    RelatesTo,
    RelationType,
    RoomAlias,
    RoomID,
    SyncToken,
)
from pydantic import BaseModel

from .._api import Bridge, BridgeHost, PresenceStatus, User
from .._time import Clock, SystemClock
from ..errors import BridgeStartError
from ._crypto import Crypto, CryptoUnavailable
from ._inbound import Inbound
from ._options import MatrixOptions
from ._rooms import Rooms
from ._session import Session, open_session, set_profile
from ._state import StateFile
from ._translate import outgoing

__all__ = ["MatrixBridge"]

log = structlog.get_logger("personad.matrix")

_PRESENCE = {
    "online": PresenceState.ONLINE,
    "idle": PresenceState.UNAVAILABLE,
    "offline": PresenceState.OFFLINE,
}
# How long one typing notification lasts; the engine refreshes it while the persona types.
_TYPING_MS = 10_000
_TIMELINE_LIMIT = 20
_RETRY_FIRST_S = 2.0
_RETRY_MAX_S = 300.0


class MatrixBridge(Bridge):
    """A persona's Matrix account."""

    name: ClassVar[str] = "matrix"
    Options: ClassVar[type[BaseModel]] = MatrixOptions
    can_reply: ClassVar[bool] = True
    can_react: ClassVar[bool] = True
    can_type: ClassVar[bool] = True
    can_presence: ClassVar[bool] = True
    # Matrix allows 64 KiB events; shorter messages read like a person's.
    max_message_length: ClassVar[int] = 4000

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona, clock=clock)
        self.opts = MatrixOptions.model_validate(options.model_dump())
        self._clock: Clock = clock or SystemClock()
        self._session: Session | None = None
        self._crypto: Crypto | None = None
        self._inbound: Inbound | None = None
        self._rooms = Rooms()
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._presence = PresenceState.ONLINE
        self._sent_at: dict[str, datetime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._typing: set[str] = set()

    @property
    def session(self) -> Session:
        """The logged-in account (after ``start``)."""
        if self._session is None:
            raise RuntimeError("the Matrix bridge is not started")
        return self._session

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        user_id = self.opts.account(self.persona) or ""
        state_dir = self.opts.state_dir or Path(platformdirs.user_data_dir("personad")) / "matrix"
        files = StateFile(state_dir, self.opts.homeserver, user_id)
        self._session = await open_session(self.opts, self.persona, files, self._clock)
        try:
            await self._connect(files)
        except BaseException:
            await self.stop()  # nothing left open, whoever calls start
            raise
        self._task = asyncio.create_task(self._sync_forever())
        api = self.session.api
        log.info("matrix_ready", persona=self.persona, user=str(api.mxid), device=api.device_id)

    async def _connect(self, files: StateFile) -> None:
        """Encryption, profile, rooms and the first sync, after the login."""
        api = self.session.api
        if self.opts.encryption:
            try:
                self._crypto = await Crypto.open(self.session, files.path.with_suffix(".crypto.db"))
            except CryptoUnavailable as exc:
                raise BridgeStartError(self.name, self.persona, str(exc)) from exc
        shown = self.opts.display_name or self.persona
        self.me = User(str(api.mxid), self.persona or shown or str(api.mxid), is_bot=True)
        try:
            await set_profile(self.session, self.opts, shown)
            allowed = frozenset(await self._resolve_rooms())
            self._inbound = Inbound(
                self,
                self.host,
                self.session,
                self.opts,
                self._rooms,
                self.me,
                allowed,
                self._crypto,
            )
            await asyncio.wait_for(self._sync_once(0), self.opts.ready_timeout)
        except (MatrixError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise BridgeStartError(
                self.name,
                self.persona,
                f"connected to {self.opts.homeserver} but could not read its rooms: {exc!r}",
            ) from exc

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        crypto, self._crypto = self._crypto, None
        if crypto is not None:
            await crypto.close()
        if self._session is not None:
            await self._session.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Returns when the homeserver revoked the bridge's token (the loop cannot go on)."""
        await self._closed.wait()

    async def _resolve_rooms(self) -> list[str]:
        ids: list[str] = []
        for room in self.opts.rooms:
            if room.startswith("#"):
                try:
                    found = await self.session.api.resolve_room_alias(RoomAlias(room))
                except MatrixRequestError as exc:
                    raise BridgeStartError(
                        self.name, self.persona, f"room {room} is unknown ({exc}); fix rooms"
                    ) from exc
                ids.append(str(found.room_id))
            else:
                ids.append(room)
        return ids

    # -- sync --------------------------------------------------------------------------

    def _filter(self) -> str:
        # A longer gap than this many events is read back through /messages (Inbound._gap).
        limit = max(1, min(self.opts.backfill_limit, _TIMELINE_LIMIT))
        return json.dumps({"room": {"timeline": {"limit": limit}}})

    async def _sync_once(self, wait_s: float) -> None:
        session = self.session
        since = session.state.sync_token
        data = await session.api.sync(
            since=SyncToken(since) if since else None,
            timeout=int(wait_s * 1000),
            filter_id=FilterID(self._filter()),  # an inline filter: Synapse takes JSON here
            set_presence=self._presence,
        )
        if self._crypto is not None:
            await self._crypto.take_sync(data)
        if self._inbound is not None:
            await self._inbound.handle(data, since=since)
        # Saved after handling: a crash in between reads the batch again, and the engine
        # keeps the first copy of a message reported twice.
        session.state.sync_token = str(data["next_batch"])
        session.save()

    async def _sync_forever(self) -> None:
        wait = _RETRY_FIRST_S
        while True:
            try:
                await self._sync_once(self.opts.sync_timeout)
                wait = _RETRY_FIRST_S
            except asyncio.CancelledError:
                raise
            except MUnknownToken:
                log.error(
                    "matrix_token_revoked",
                    persona=self.persona,
                    fix="the device was logged out; restart to log in again",
                )
                self.session.state.access_token = None
                self.session.save()
                self._closed.set()
                return
            except Exception as exc:  # a network or server error: keep going, more slowly
                log.warning("matrix_sync_failed", persona=self.persona, error=repr(exc), wait=wait)
                await self._clock.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX_S)

    # -- actions out -------------------------------------------------------------------

    async def _before_acting(self, channel: str) -> None:
        """The persona has read the room by the time it acts in it: send the read receipt."""
        room = self._rooms.get(channel)
        newest = room.newest_from_others
        if newest is not None and newest != room.read_up_to:
            room.read_up_to = newest
            await self.session.api.send_receipt(RoomID(channel), EventID(newest))

    async def _paced(self, channel: str) -> None:
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            last = self._sent_at.get(channel)
            if last is not None:
                wait = self.opts.pace_seconds - (self._clock.now() - last).total_seconds()
                if wait > 0:
                    await self._clock.sleep(wait)
            self._sent_at[channel] = self._clock.now()

    def _people(self, channel: str) -> dict[str, str]:
        """Names the persona may write as @Name, to the user ids they ping."""
        members = self._rooms.get(channel).members
        people = {name: uid for uid, name in members.items() if self.me and uid != self.me.id}
        for uid, name in self.opts.names.items():
            if uid in members:
                people[name] = uid
        return people

    async def _post(self, channel: str, content: dict[str, Any]) -> str:
        await self._before_acting(channel)
        await self._paced(channel)
        api = self.session.api
        event_id = await api.send_message_event(
            RoomID(channel),
            EventType.ROOM_MESSAGE,
            content,  # type: ignore[arg-type]
        )
        if self.me is not None:
            self._rooms.wrote(str(event_id), self.me.id)
        if channel in self._typing:
            self._typing.discard(channel)
            await api.set_typing(RoomID(channel), 0)
        return str(event_id)

    async def send(self, channel: str, text: str) -> str:
        return await self._post(channel, outgoing(text, self._people(channel)))

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        content = outgoing(text, self._people(channel), reply_to=message_id)
        author = self._rooms.author(message_id)
        if author is not None and self.me is not None and author != self.me.id:
            # As Element does: the person answered is told, and no one else.
            ids = content["m.mentions"]["user_ids"]
            content["m.mentions"]["user_ids"] = [*ids, author] if author not in ids else ids
        return await self._post(channel, content)

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        await self._before_acting(channel)
        content = ReactionEventContent(
            relates_to=RelatesTo(
                rel_type=RelationType.ANNOTATION, event_id=EventID(message_id), key=emoji
            )
        )
        await self.session.api.send_message_event(RoomID(channel), EventType.REACTION, content)

    async def typing(self, channel: str) -> None:
        await self._before_acting(channel)
        self._typing.add(channel)
        await self.session.api.set_typing(RoomID(channel), _TYPING_MS)

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        words = " · ".join(t for t in (text or self.opts.status_text, self.opts.disclosure) if t)
        self._presence = _PRESENCE[status]
        await self.session.api.set_presence(self._presence, status=words or None)
