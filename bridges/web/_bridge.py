"""The web bridge: the persona's room on a page served by the daemon's own HTTP server."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from .._api import Bridge, BridgeHost, MessageEvent, PersonaEvent, PresenceStatus, User
from .._store import PersonaStore
from .._time import Clock
from ._history import frames_of, message_frame
from ._invites import InviteBook, invites_path
from ._names import slug, user_id
from ._options import WebOptions
from ._room import Frame, Known, Room, Session

if TYPE_CHECKING:
    from starlette.routing import Mount

    from daemon.settings import Settings

__all__ = ["WebBridge"]

_REASONS = {"asleep": "asleep", "away": "away", "paused": "paused"}


def _presence_frame(state: str, reason: str | None, until: datetime | None) -> Frame:
    label = "online" if state == "online" else _REASONS.get(reason or "", "offline")
    if state != "online" and until is not None:
        label += f" · back around {until:%H:%M}"
    return {"type": "presence", "state": state, "reason": reason, "label": label}


class WebBridge(Bridge):
    """A chat room in the browser: visitors talk to the persona over a WebSocket.

    The page, its assets and the socket are an ASGI app the composition root mounts on the
    daemon's server (:meth:`http_mount`), so there is one port and one key. Visitors reach
    the persona through :meth:`post`, exactly as the socket does.
    """

    name: ClassVar[str] = "web"
    Options: ClassVar[type[BaseModel]] = WebOptions
    can_reply: ClassVar[bool] = True
    can_react: ClassVar[bool] = True
    can_type: ClassVar[bool] = True
    can_presence: ClassVar[bool] = True
    can_attach: ClassVar[bool] = True
    max_message_length: ClassVar[int] = 2000

    def __init__(
        self,
        options: BaseModel,
        host: BridgeHost,
        *,
        persona: str = "",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(options, host, persona=persona or "persona", clock=clock)
        self.opts = WebOptions.model_validate(options.model_dump())
        self.room = Room(self.persona, self.opts)
        self.path = f"/chat/{slug(self.persona)}"
        # Ids never repeat across restarts (the persona's memory outlives a run).
        self._prefix = uuid.uuid4().hex[:10]
        self._ids = itertools.count(1)
        # Without a store behind the host (tests with a FakeHost), the room remembers.
        self._log: list[Frame] = []
        self._invites: InviteBook | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.me = User(f"web-persona:{slug(self.persona)}", self.persona, is_bot=True)
        for frame in self.history():
            mine = bool(frame["mine"])
            author_id = self.me.id if mine else user_id(frame["author"])
            self.room.remember(frame["id"], Known(author_id, frame["author"], frame["text"], mine))

    async def stop(self) -> None:
        self.room.close_all("the chat has stopped; reload the page later")
        if self._invites is not None:
            self._invites.close()
            self._invites = None

    def http_mount(self, settings: Settings) -> Mount:
        """The page, assets and socket at ``/chat/<persona>``, guarded as ``settings`` say."""
        from starlette.routing import Mount

        from ._app import build_app

        if self._invites is None:
            self._invites = InviteBook(invites_path(settings))
        return Mount(self.path, app=build_app(self, settings, self._invites))

    # -- what the page sees ------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    def _id(self, kind: str) -> str:
        return f"{kind}-{self._prefix}-{next(self._ids)}"

    def _store(self) -> PersonaStore | None:
        store = getattr(self.host, "store", None)
        return store if isinstance(store, PersonaStore) else None

    def history(self) -> list[Frame]:
        """The room's last messages as page frames, oldest first."""
        store = self._store()
        if store is None:
            return list(self._log[-self.opts.history :])
        frames = frames_of(store.recent(self.name, self.opts.room, self.opts.history * 2))
        return frames[-self.opts.history :]

    def _post_frame(self, frame: Frame, author_id: str, is_bot: bool) -> None:
        self.room.remember(frame["id"], Known(author_id, frame["author"], frame["text"], is_bot))
        self._log.append(frame)
        del self._log[: -self.opts.history or None]
        self.room.broadcast(frame)

    def hello(self, session: Session) -> Frame:
        """The first frame a page gets: who it is, the persona's presence, the history."""
        return {
            "type": "hello",
            "you": session.name,
            "persona": self.persona,
            "title": self.opts.title or self.persona,
            "presence": self.room.presence,
            "history": self.history(),
            "max_chars": self.opts.max_chars,
        }

    # -- visitors in -------------------------------------------------------------------

    async def post(self, session: Session, text: str, reply_to: str | None = None) -> str:
        """A visitor's message: shown to the room, then reported to the persona."""
        mid = self._id("v")
        author = User(session.user_id, session.name)
        quoted = self.room.known.get(reply_to) if reply_to else None
        reply_author = User(quoted.author_id, quoted.author, quoted.is_bot) if quoted else None
        now = self._now()
        kind = "reply" if quoted is not None else "message"
        frame = message_frame(
            mid,
            session.name,
            text,
            now.isoformat(),
            mine=False,
            kind=kind,
            reply_to=self.room.quote(reply_to) if quoted else None,
        )
        self._post_frame(frame, author.id, False)
        await self.host.on_message(
            self,
            MessageEvent(
                channel=self.opts.room,
                message_id=mid,
                author=author,
                text=text,
                timestamp=now,
                channel_name=self.opts.room,
                reply_to=reply_to if quoted else None,
                reply_to_author=reply_author,
            ),
        )
        return mid

    # -- the persona out ---------------------------------------------------------------

    def _persona_line(self, text: str, kind: str, reply_to: str | None = None) -> str:
        mid = self._id("p")
        frame = message_frame(
            mid,
            self.persona,
            text,
            self._now().isoformat(),
            mine=True,
            kind=kind,
            reply_to=self.room.quote(reply_to),
        )
        self._post_frame(frame, self.me.id if self.me else "", True)
        return mid

    async def send(self, channel: str, text: str) -> str:
        return self._persona_line(text, "message")

    async def reply(self, channel: str, message_id: str, text: str) -> str:
        return self._persona_line(text, "reply", message_id)

    async def attach(self, channel: str, kind: str, description: str) -> str:
        kind = kind.lower() if kind.lower() in ("photo", "video") else "file"
        return self._persona_line(description, kind)

    async def react(self, channel: str, message_id: str, emoji: str) -> None:
        for frame in self._log:
            if frame["id"] == message_id:
                frame["reactions"].append(emoji)
        self.room.broadcast(
            {"type": "reaction", "id": message_id, "emoji": emoji, "by": self.persona}
        )

    async def typing(self, channel: str) -> None:
        self.room.broadcast({"type": "typing", "who": self.persona})

    async def set_presence(self, status: PresenceStatus, text: str | None = None) -> None:
        current = self.room.presence
        if current["state"] == status:
            return  # persona_event says why; this only confirms it
        self.room.presence = _presence_frame(status, None, None)
        self.room.broadcast(self.room.presence)

    async def persona_event(self, event: PersonaEvent) -> None:
        if event.kind != "presence" or event.state is None:
            return
        self.room.presence = _presence_frame(event.state, event.reason, event.until)
        self.room.broadcast(self.room.presence)

    async def notice(self, channel: str, text: str) -> None:
        self.room.broadcast({"type": "notice", "text": text})
