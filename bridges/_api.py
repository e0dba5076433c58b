"""The bridge plugin API: what a chat platform adapter implements, and the events it reports.

A bridge connects one chat platform to personad. It turns platform events into the small
event types below and hands them to its :class:`BridgeHost`; it carries out what the persona
decides (send, reply, react, type, change presence). Everything about *when* and *what* to
say lives in the behaviour engine, so a bridge stays a thin translation layer.

Example, a bridge for an imaginary platform::

    from pydantic import BaseModel
    from bridges import Bridge, BridgeHost, MessageEvent, User

    class ShoutOptions(BaseModel):
        model_config = {"extra": "forbid"}
        room: str = "lobby"

    class ShoutBridge(Bridge):
        name = "shout"
        Options = ShoutOptions
        can_react = False

        async def start(self) -> None:
            self.client = await connect(self.options.room)      # your platform's SDK
            self.client.on_message(self._incoming)

        async def _incoming(self, raw) -> None:
            await self.host.on_message(self, MessageEvent(
                channel=raw.room, message_id=raw.id, author=User(raw.user_id, raw.nick),
                text=raw.body, timestamp=raw.time))

        async def send(self, channel: str, text: str) -> str:
            return await self.client.post(channel, text.upper())

Register it in your package's ``pyproject.toml``::

    [project.entry-points."personad.bridges"]
    shout = "shout_bridge:ShoutBridge"
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from ._time import Clock
from .errors import NotSupported

__all__ = [
    "Attachment",
    "Bridge",
    "BridgeHost",
    "MessageEvent",
    "NoOptions",
    "PersonaEvent",
    "PresenceEvent",
    "PresenceStatus",
    "ReactionEvent",
    "Upcoming",
    "User",
]

PresenceStatus = Literal["online", "idle", "offline"]


@dataclass(frozen=True)
class User:
    """Someone on the platform. ``is_bot`` marks other bots (personas included)."""

    id: str
    name: str
    is_bot: bool = False


@dataclass(frozen=True)
class Attachment:
    """A file on a message: ``photo``, ``video`` or ``file``, with a description if known."""

    kind: Literal["photo", "video", "file"]
    description: str | None = None


@dataclass(frozen=True)
class MessageEvent:
    """A message posted in a channel (including the persona's own, which it never answers)."""

    channel: str
    message_id: str
    author: User
    text: str
    timestamp: datetime
    channel_name: str | None = None
    mentions: Sequence[User] = ()
    reply_to: str | None = None
    reply_to_author: User | None = None
    attachments: Sequence[Attachment] = ()
    # An edit of a message reported before: the engine updates its history, nothing more.
    edited: bool = False


@dataclass(frozen=True)
class ReactionEvent:
    """Someone reacted to a message."""

    channel: str
    message_id: str
    user: User
    emoji: str
    timestamp: datetime


@dataclass(frozen=True)
class PresenceEvent:
    """Someone's presence changed (only where the platform reports it)."""

    user: User
    status: PresenceStatus
    timestamp: datetime


@dataclass(frozen=True)
class PersonaEvent:
    """Something the persona did on its own, for bridges that show it to a local user.

    ``kind`` is ``presence`` (its day: ``state`` online or offline, with a ``reason``:
    ``asleep``, ``away``, ``paused`` when offline, ``awake``, ``back``, ``resumed`` when
    online; ``until`` when it expects to be back) or ``conversation_started`` (in
    ``channel``). ``change`` is False for a reminder of the current state (at start-up,
    or when someone writes while the persona is away). ``at`` is in the persona's time zone.
    """

    kind: Literal["presence", "conversation_started"]
    persona: str
    at: datetime
    state: PresenceStatus | None = None
    reason: str | None = None
    until: datetime | None = None
    channel: str | None = None
    change: bool = True


@dataclass(frozen=True)
class Upcoming:
    """One of the persona's next scheduled events, e.g. ``goes to sleep`` at 23:00."""

    at: datetime
    what: str


class BridgeHost(Protocol):
    """What personad offers a running bridge: the place to report events."""

    async def on_message(self, bridge: Bridge, event: MessageEvent) -> None:
        """A message arrived (or was posted by the persona itself)."""

    async def on_reaction(self, bridge: Bridge, event: ReactionEvent) -> None:
        """A reaction was added."""

    async def on_presence(self, bridge: Bridge, event: PresenceEvent) -> None:
        """Someone's presence changed."""

    async def on_delete(self, bridge: Bridge, channel: str, message_id: str) -> None:
        """A message was deleted: it leaves the persona's memory too."""

    def upcoming(self) -> list[Upcoming]:
        """The persona's next scheduled events, soonest first (the console's ``/when``)."""
        ...


class NoOptions(BaseModel):
    """Options of a bridge that takes none."""

    model_config = ConfigDict(extra="forbid")


class Bridge:
    """Base class of every bridge. Lifecycle methods are no-ops; override what you support.

    Class attributes describe the platform:

    - ``name``: the entry-point name users put in their config.
    - ``Options``: a pydantic model (``extra="forbid"``) for the bridge's config table.
    - ``can_reply``, ``can_react``, ``can_type``, ``can_presence``, ``can_attach``: what the
      platform supports. The engine never calls a method whose flag is False; the default
      implementations raise :class:`NotSupported`.
    - ``max_message_length``: longer text is split by the engine before ``send``.
    """

    name: ClassVar[str] = "bridge"
    Options: ClassVar[type[BaseModel]] = NoOptions
    can_reply: ClassVar[bool] = False
    can_react: ClassVar[bool] = False
    can_type: ClassVar[bool] = False
    can_presence: ClassVar[bool] = False
    can_attach: ClassVar[bool] = False
    max_message_length: ClassVar[int] = 2000

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.options = options
        self.host = host
        self.persona = persona
        # The persona's own account on the platform; bridges set it in start().
        self.me: User | None = None
        # The persona's clock (given by the host that builds the bridge), for timestamps on
        # platforms without their own (the console) and for pacing.
        self.clock: Clock | None = clock

    async def start(self) -> None:
        """Connect; report events to ``self.host`` from here on."""

    async def stop(self) -> None:
        """Disconnect and release resources; called once, even if ``start`` failed."""

    async def send(self, channel: str, text: str) -> str:
        """Post ``text`` in ``channel``; return the new message's id."""
        raise NotSupported(self.name, "send")

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        """Post ``text`` as a reply to ``message_id``; return the new message's id."""
        raise NotSupported(self.name, "reply")

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        """Add ``emoji`` to ``message_id``."""
        raise NotSupported(self.name, "react")

    async def typing(self, channel: str) -> None:
        """Show the typing indicator once (the engine refreshes it while typing)."""
        raise NotSupported(self.name, "typing")

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        """Show the persona as online, idle or offline, with an optional status text."""
        raise NotSupported(self.name, "set_presence")

    async def attach(self, channel: str, kind: str, description: str) -> str:
        """Post an attachment of ``kind`` described by ``description``."""
        raise NotSupported(self.name, "attach")

    async def notice(self, channel: str, text: str) -> None:
        """Show an informational note to the local user, where that makes sense (console)."""

    async def persona_event(self, event: PersonaEvent) -> None:
        """The persona went offline, came back or started a conversation on its own.

        A no-op by default: platforms show presence through :meth:`set_presence` already.
        A bridge with a local user (the console) can print it.
        """

    async def wait_closed(self) -> None:
        """Return when the bridge has ended by itself (the console's user quit); by default,
        never."""
        await asyncio.Event().wait()
