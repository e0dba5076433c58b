"""One /sync response, reported to the persona: messages, edits, redactions, reactions,
presence, invites, and the gap a long downtime left (read back through /messages).

Event kinds dispatch through a table, so a new kind is one method and one line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from mautrix.api import Method, Path
from mautrix.client import ClientAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import EventID, EventType, MessageType, RoomID, TextMessageEventContent

from .._api import Bridge, BridgeHost, PresenceEvent, PresenceStatus, ReactionEvent, User
from ._crypto import Crypto
from ._options import MatrixOptions
from ._rooms import Room, Rooms
from ._session import Session
from ._translate import parse_message, timestamp_of, user_in

__all__ = ["Inbound"]

log = structlog.get_logger("personad.matrix")

JSON = dict[str, Any]
_PRESENCE: dict[str, PresenceStatus] = {
    "online": "online",
    "unavailable": "idle",
    "offline": "offline",
}


class Inbound:
    """Turns sync data into host events for one bridge."""

    def __init__(
        self,
        bridge: Bridge,
        host: BridgeHost,
        session: Session,
        opts: MatrixOptions,
        rooms: Rooms,
        me: User,
        allowed_rooms: frozenset[str],
        crypto: Crypto | None = None,
    ) -> None:
        self._bridge = bridge
        self._host = host
        self._session = session
        self._api: ClientAPI = session.api
        self._opts = opts
        self._rooms = rooms
        self._me = me
        self._allowed = allowed_rooms
        self._crypto = crypto
        self._kinds: dict[str, Callable[[Room, JSON], Awaitable[None]]] = {
            "m.room.message": self._message,
            "m.reaction": self._reaction,
            "m.room.redaction": self._redaction,
            "m.room.encrypted": self._encrypted,
        }

    def in_scope(self, room_id: str) -> bool:
        """Whether the persona reads and speaks in ``room_id`` (the ``rooms`` allow-list)."""
        return not self._allowed or room_id in self._allowed

    async def handle(self, data: Mapping[str, Any], *, since: str | None) -> None:
        """Report everything in one sync response. The first sync ever (``since`` None) only
        learns the rooms: what was said before the bridge existed is not news."""
        rooms = data.get("rooms") or {}
        for room_id, invite in (rooms.get("invite") or {}).items():
            await self._invited(room_id, invite)
        for room_id in rooms.get("leave") or {}:
            self._rooms.forget(room_id)
        for room_id, joined in (rooms.get("join") or {}).items():
            if self.in_scope(room_id):
                await self._joined(room_id, joined, since)
        if since is not None:
            for event in (data.get("presence") or {}).get("events") or []:
                await self._presence(event)

    async def _joined(self, room_id: str, joined: Mapping[str, Any], since: str | None) -> None:
        room = self._rooms.get(room_id)
        for event in (joined.get("state") or {}).get("events") or []:
            room.apply_state(event)
        timeline = joined.get("timeline") or {}
        events: list[JSON] = list(timeline.get("events") or [])
        if since is not None and timeline.get("limited") and timeline.get("prev_batch"):
            events = await self._gap(room_id, str(timeline["prev_batch"]), since) + events
        for event in events:
            if "state_key" in event:
                room.apply_state(event)
            if "event_id" in event and "sender" in event:
                self._rooms.wrote(str(event["event_id"]), str(event["sender"]))
            handler = self._kinds.get(str(event.get("type")))
            if handler is not None and since is not None:
                await handler(room, event)
        if room.encrypted and self._crypto is None:
            await self._tell_encrypted(room)

    async def _gap(self, room_id: str, prev_batch: str, since: str) -> list[JSON]:
        """Events between the last sync before the downtime and this one's timeline, oldest
        first, at most ``backfill_limit`` of them."""
        found: list[JSON] = []
        token: str | None = prev_batch
        while token and len(found) < self._opts.backfill_limit:
            page = await self._api.api.request(
                Method.GET,
                Path.v3.rooms[RoomID(room_id)].messages,
                query_params={
                    "from": token,
                    "to": since,
                    "dir": "b",
                    "limit": str(min(100, self._opts.backfill_limit - len(found))),
                },
            )
            chunk = page.get("chunk") or []
            found += chunk
            token = page.get("end") if chunk else None
        log.info("matrix_backfill", room=room_id, events=len(found))
        return list(reversed(found))

    # -- event kinds -------------------------------------------------------------------

    async def _message(self, room: Room, event: JSON) -> None:
        await self._learn_reply_author(room, event)
        parsed = parse_message(
            event, room, self._opts.names, me=self._me, author_of=self._rooms.author
        )
        if parsed is None:
            return
        if event.get("sender") != self._me.id:
            room.newest_from_others = str(event["event_id"])
        await self._host.on_message(self._bridge, parsed.event)

    async def _learn_reply_author(self, room: Room, event: JSON) -> None:
        """Fetch the author of the answered event when the bridge never saw it (it decides
        whether the persona was addressed)."""
        relates = (event.get("content") or {}).get("m.relates_to") or {}
        target = (relates.get("m.in_reply_to") or {}).get("event_id")
        if not target or self._rooms.author(str(target)) is not None:
            return
        try:
            answered = await self._api.get_event(RoomID(room.room_id), EventID(str(target)))
        except MatrixRequestError as exc:
            log.info("matrix_reply_target_unknown", room=room.room_id, error=str(exc))
            return
        self._rooms.wrote(str(target), str(answered.sender))

    async def _reaction(self, room: Room, event: JSON) -> None:
        relates = (event.get("content") or {}).get("m.relates_to") or {}
        if relates.get("rel_type") != "m.annotation" or event.get("sender") == self._me.id:
            return
        await self._host.on_reaction(
            self._bridge,
            ReactionEvent(
                channel=room.room_id,
                message_id=str(relates.get("event_id")),
                user=user_in(room, str(event["sender"]), self._opts.names, me=self._me),
                emoji=str(relates.get("key", "")),
                timestamp=timestamp_of(event),
            ),
        )

    async def _redaction(self, room: Room, event: JSON) -> None:
        # Room versions up to 10 carry the target at the top level, v11 in the content.
        target = (event.get("content") or {}).get("redacts") or event.get("redacts")
        if target:
            await self._host.on_delete(self._bridge, room.room_id, str(target))

    async def _encrypted(self, room: Room, event: JSON) -> None:
        room.encrypted = True
        if self._crypto is None:
            return
        decrypted = await self._crypto.decrypt(room.room_id, event)
        handler = self._kinds.get(str(decrypted.get("type"))) if decrypted else None
        if decrypted is not None and handler is not None and handler != self._encrypted:
            await handler(room, decrypted)

    async def _presence(self, event: Mapping[str, Any]) -> None:
        sender = str(event.get("sender", ""))
        status = _PRESENCE.get(str((event.get("content") or {}).get("presence")))
        if not sender or sender == self._me.id or status is None:
            return
        await self._host.on_presence(
            self._bridge,
            PresenceEvent(
                user=user_in(None, sender, self._opts.names, me=self._me),
                status=status,
                timestamp=self._now(),
            ),
        )

    def _now(self) -> datetime:
        clock = self._bridge.clock
        return clock.now() if clock is not None else datetime.now(UTC)

    # -- rooms -------------------------------------------------------------------------

    async def _invited(self, room_id: str, invite: Mapping[str, Any]) -> None:
        events: Sequence[Mapping[str, Any]] = (invite.get("invite_state") or {}).get("events") or []
        inviter = next(
            (
                str(e.get("sender"))
                for e in events
                if e.get("type") == "m.room.member" and e.get("state_key") == self._me.id
            ),
            "",
        )
        allowed = self._opts.invites_from
        if ("*" in allowed or inviter in allowed) and self.in_scope(room_id):
            await self._api.join_room_by_id(RoomID(room_id))
            log.info("matrix_invite_accepted", room=room_id, inviter=inviter)
            return
        why = "not in invites_from" if self.in_scope(room_id) else "room not in rooms"
        await self._api.leave_room(RoomID(room_id), reason="This persona does not take invites.")
        log.warning(
            "matrix_invite_declined",
            room=room_id,
            inviter=inviter,
            reason=why,
            fix="add the inviter to invites_from (and the room to rooms, if set)",
        )

    async def _tell_encrypted(self, room: Room) -> None:
        """Say once, in the room and the log, that the persona cannot read it."""
        state = self._session.state
        if room.room_id in state.encrypted_told:
            return
        log.warning(
            "matrix_encrypted_room",
            room=room.room_id,
            fix="the Matrix bridge cannot read encrypted rooms; make a room without encryption",
        )
        content = TextMessageEventContent(
            msgtype=MessageType.NOTICE, body=self._opts.encrypted_notice
        )
        await self._api.send_message_event(RoomID(room.room_id), EventType.ROOM_MESSAGE, content)
        state.encrypted_told.append(room.room_id)
        self._session.save()
