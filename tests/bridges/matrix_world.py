"""The people and rooms of the Matrix tests: a bot account, a human with a second client
session (mautrix's ClientAPI, as the human's own app), and a host that can be awaited."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mautrix.client import Client, ClientAPI, InternalEventType
from mautrix.client.state_store import MemorySyncStore
from mautrix.crypto import OlmMachine
from mautrix.crypto.store import MemoryCryptoStore
from mautrix.types import (
    DeviceID,
    EventID,
    EventType,
    MessageType,
    RoomID,
    TextMessageEventContent,
    UserID,
)
from mautrix.types import MessageEvent as MessageEvent_

from bridges import Bridge, MessageEvent, PresenceEvent, ReactionEvent
from bridges.matrix import MatrixBridge, MatrixOptions
from bridges.testing import FakeHost
from tests.bridges.synapse import Account, Synapse

__all__ = [
    "EncryptedHuman",
    "Human",
    "WaitingHost",
    "World",
    "make_bridge",
    "new_bot_and_room",
    "room_messages",
]


@dataclass
class World:
    """A homeserver, the persona's account, a human, and one unencrypted room they share."""

    server: Synapse
    bot: Account
    human: Account
    room: str


def api(server: Synapse, token: str, path: str, method: str = "GET", **kw: Any) -> Any:
    """One client API call (setup and checks, outside the bridge's loop)."""
    reply = httpx.request(
        method,
        f"{server.url}/_matrix/client/v3{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kw,
    )
    reply.raise_for_status()
    return reply.json()


def create_room(
    server: Synapse, owner: Account, invite: list[str], *, encrypted: bool = False
) -> str:
    """A private room made by ``owner`` (unencrypted unless asked), with invites sent."""
    initial = (
        [
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ]
        if encrypted
        else []
    )
    body = {"preset": "private_chat", "invite": invite, "initial_state": initial}
    return str(api(server, owner.access_token, "/createRoom", "POST", json=body)["room_id"])


def join(server: Synapse, who: Account, room: str) -> None:
    """``who`` joins ``room``."""
    api(server, who.access_token, f"/rooms/{room}/join", "POST", json={})


def new_bot_and_room(world: World, *, encrypted: bool = False) -> tuple[Account, str]:
    """A persona account of its own, in a room of its own with the human (joined, unless
    the room is encrypted: then only invited)."""
    bot = world.server.register(unique("robin"))
    room = create_room(world.server, world.human, [bot.user_id], encrypted=encrypted)
    if not encrypted:
        join(world.server, bot, room)
    return bot, room


def room_messages(
    server: Synapse, reader: Account, room: str, limit: int = 100
) -> list[dict[str, Any]]:
    """The room's newest events, oldest first, as ``reader`` sees them."""
    data = api(
        server, reader.access_token, f"/rooms/{room}/messages", params={"dir": "b", "limit": limit}
    )
    return list(reversed(data["chunk"]))


def make_bridge(
    world: World,
    host: Any,
    state_dir: Path,
    *,
    persona: str = "Robin",
    account: Account | None = None,
    password: bool = False,
    **options: Any,
) -> MatrixBridge:
    """A bridge for ``account`` (the world's bot), with its token or its password."""
    who = account or world.bot
    secret = {"password": who.password} if password else {"token": who.access_token}
    opts = MatrixOptions(
        homeserver=world.server.url,
        user_id=who.user_id,
        state_dir=state_dir,
        invites_from=[world.human.user_id],
        pace_seconds=0,
        sync_timeout=5,
        **secret,
        **options,
    )
    return MatrixBridge(opts, host, persona=persona)


class WaitingHost(FakeHost):
    """A FakeHost whose reports can be awaited: ``await host.until(lambda: ...)``."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Condition()

    async def _poke(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> None:
        await super().on_message(bridge, event)
        await self._poke()

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        await super().on_reaction(bridge, event)
        await self._poke()

    async def on_presence(self, bridge: Bridge, event: PresenceEvent) -> None:
        await super().on_presence(bridge, event)
        await self._poke()

    async def on_delete(self, bridge: Bridge, channel: str, message_id: str) -> None:
        await super().on_delete(bridge, channel, message_id)
        await self._poke()

    async def until(self, predicate: Callable[[], Any], within: float = 15) -> Any:
        """Wait until ``predicate()`` is truthy; return its value."""

        async def wait() -> Any:
            async with self._changed:
                while not (found := predicate()):
                    await self._changed.wait()
                return found

        return await asyncio.wait_for(wait(), within)

    def texts(self, channel: str | None = None) -> list[str]:
        """Texts reported, oldest first."""
        return [m.text for m in self.messages if channel is None or m.channel == channel]


class Human:
    """The human's own client session (mautrix's ClientAPI), inside the test's loop."""

    def __init__(self, world: World, account: Account | None = None) -> None:
        who = account or world.human
        self.user_id = who.user_id
        self.client = ClientAPI(
            UserID(who.user_id), base_url=world.server.url, token=who.access_token
        )

    async def __aenter__(self) -> Human:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.api.session.close()

    async def sync(self, since: str | None, wait_ms: int = 0) -> dict[str, Any]:
        """One sync from ``since`` (None: now); returns when something arrived or ``wait_ms``
        passed."""
        return dict(await self.client.sync(since=since, timeout=wait_ms))  # type: ignore[arg-type]

    async def next_ephemeral(
        self, since: str, room: str, kind: str, match: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The next ephemeral event of ``kind`` (m.typing, m.receipt) in ``room`` that
        ``match`` accepts."""
        for _ in range(20):
            data = await self.sync(since, 5_000)
            since = data["next_batch"]
            joined = data.get("rooms", {}).get("join", {}).get(room, {})
            for event in joined.get("ephemeral", {}).get("events", []):
                if event["type"] == kind and match(event["content"]):
                    return dict(event)
        raise AssertionError(f"no {kind} in {room}")

    async def send(self, room: str, content: dict[str, Any]) -> str:
        """Post any message content; the event id."""
        sent = await self.client.send_message_event(RoomID(room), EventType.ROOM_MESSAGE, content)  # type: ignore[arg-type]
        return str(sent)

    async def say(self, room: str, text: str, **extra: Any) -> str:
        """Post plain text."""
        return await self.send(room, {"msgtype": "m.text", "body": text, **extra})

    async def react(self, room: str, event_id: str, key: str) -> str:
        """React to ``event_id``."""
        return str(await self.client.react(RoomID(room), EventID(event_id), key))

    async def redact(self, room: str, event_id: str) -> str:
        """Delete ``event_id``."""
        return str(await self.client.redact(RoomID(room), EventID(event_id)))

    async def edit(self, room: str, event_id: str, text: str) -> str:
        """Replace the text of ``event_id``."""
        new = {"msgtype": "m.text", "body": text}
        return await self.send(
            room,
            {
                "msgtype": "m.text",
                "body": f"* {text}",
                "m.new_content": new,
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
            },
        )


def unique(prefix: str) -> str:
    """A localpart no other test uses."""
    return f"{prefix}{secrets.token_hex(3)}"


class EncryptedHuman:
    """The human on an encrypting client (Element's default): mautrix's Client with its own
    olm machine and sync loop, keys in memory."""

    def __init__(self, world: World, account: Account | None = None) -> None:
        from bridges.matrix._session import EncryptionStateStore  # the same store the bridge uses

        who = account or world.human
        self.account = who
        self.client = Client(
            UserID(who.user_id),
            device_id=DeviceID(who.device_id),
            base_url=world.server.url,
            token=who.access_token,
            state_store=EncryptionStateStore(),
            sync_store=MemorySyncStore(),
        )
        self.received: asyncio.Queue[MessageEvent_] = asyncio.Queue()

    async def __aenter__(self) -> EncryptedHuman:
        store = MemoryCryptoStore(self.account.user_id, "pickle")
        await store.put_device_id(DeviceID(self.account.device_id))
        machine = OlmMachine(self.client, store, self.client.state_store)  # type: ignore[arg-type]
        await machine.load()
        await machine.share_keys()
        self.client.crypto = machine
        self.client.add_event_handler(EventType.ROOM_MESSAGE, self._on_message)
        first = asyncio.Event()

        async def synced(_: object) -> None:
            first.set()

        self.client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, synced)
        self.client.start(None)
        await first.wait()
        return self

    async def _on_message(self, event: MessageEvent_) -> None:
        if event.sender != self.account.user_id:
            await self.received.put(event)

    async def next_from(self, sender: str, room: str) -> MessageEvent_:
        """The next decrypted message ``sender`` posts in ``room``."""
        while True:
            event = await self.received.get()
            if event.sender == sender and event.room_id == room:
                return event

    async def __aexit__(self, *exc: object) -> None:
        self.client.stop()
        await self.client.api.session.close()

    async def say(self, room: str, text: str) -> str:
        """Post text, encrypted in an encrypted room."""
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
        return str(
            await self.client.send_message_event(RoomID(room), EventType.ROOM_MESSAGE, content)
        )
