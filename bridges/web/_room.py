"""The live side of a web room: who is connected, what they see, and their limits.

Every page is a :class:`Session` with its own outbox of JSON frames; the room puts each
frame in every outbox. A page that stops reading loses its session rather than holding the
room's memory. Frames (server to page):

- ``hello``: ``you``, ``persona``, ``presence``, ``history`` (a list of ``message`` frames)
- ``message``: ``id``, ``author``, ``mine`` (the persona's), ``kind`` (``message``,
  ``reply``, ``photo``, ``video``, ``file``), ``text``, ``ts``, ``reply_to``
  (``{id, author, text}`` or null), ``reactions``
- ``reaction`` (``id``, ``emoji``, ``by``), ``typing`` (``who``), ``presence`` (``state``,
  ``reason``, ``label``), ``notice`` (``text``), ``error`` (``text``), ``closed`` (``reason``)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ._access import Visitor
from ._names import check_name, user_id
from ._options import WebOptions
from .errors import BadName

__all__ = ["Known", "Room", "Session"]

log = structlog.get_logger("personad.web")

Frame = dict[str, Any]
# Frames a page may fall behind by before it is dropped (it reloads and gets the history).
_OUTBOX = 256
_KNOWN = 2000


@dataclass(frozen=True)
class Known:
    """A message the room has seen, for quoting replies to it."""

    author_id: str
    author: str
    text: str
    is_bot: bool


@dataclass(eq=False)
class Session:
    """One open page: its visitor, display name and outbox."""

    visitor: Visitor
    name: str
    tab_owner: str
    outbox: asyncio.Queue[Frame | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_OUTBOX)
    )
    allowance: float = 0.0
    checked: float = 0.0

    @property
    def user_id(self) -> str:
        """The visitor's user id (what ``personad forget --user`` takes)."""
        return user_id(self.name)


class Room:
    """The sessions of one persona's room, with rate limits on what visitors send."""

    def __init__(
        self,
        persona: str,
        options: WebOptions,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.persona = persona
        self.options = options
        self._monotonic = monotonic
        self.sessions: list[Session] = []
        self.presence: Frame = {
            "type": "presence",
            "state": "online",
            "reason": None,
            "label": "online",
        }
        self.known: OrderedDict[str, Known] = OrderedDict()

    def join(self, visitor: Visitor, requested: str, tab_owner: str) -> Session:
        """A page's session under ``requested`` (an invite's name wins); :class:`BadName`
        when the name is not allowed, or taken by someone else in the room."""
        if len(self.sessions) >= self.options.max_visitors:
            raise BadName(requested, "cannot join: the room is full; try again later")
        name = visitor.name if visitor.name else check_name(requested, self.persona)
        for other in self.sessions:
            same = other.name.casefold() == name.casefold()
            if same and other.tab_owner != tab_owner and visitor.kind != "invite":
                raise BadName(name, "is taken by someone in the room; pick another")
        session = Session(
            visitor,
            name,
            tab_owner,
            allowance=self.options.rate_per_minute,
            checked=self._monotonic(),
        )
        self.sessions.append(session)
        log.info(
            "web_visitor_joined", persona=self.persona, visitor=user_id(name), kind=visitor.kind
        )
        return session

    def leave(self, session: Session) -> None:
        """The page closed."""
        if session in self.sessions:
            self.sessions.remove(session)
            log.info("web_visitor_left", persona=self.persona, visitor=session.user_id)

    def allow(self, session: Session) -> bool:
        """Take one message from the visitor's allowance (a token bucket per minute)."""
        now = self._monotonic()
        rate = self.options.rate_per_minute
        session.allowance = min(rate, session.allowance + (now - session.checked) * rate / 60)
        session.checked = now
        if session.allowance < 1:
            return False
        session.allowance -= 1
        return True

    def remember(self, message_id: str, known: Known) -> None:
        """Keep a message for quoting (bounded)."""
        self.known[message_id] = known
        while len(self.known) > _KNOWN:
            self.known.popitem(last=False)

    def quote(self, message_id: str | None) -> Frame | None:
        """What a reply shows of the message it answers."""
        if message_id is None:
            return None
        known = self.known.get(message_id)
        if known is None:
            return {"id": message_id, "author": "", "text": "(an older message)"}
        return {"id": message_id, "author": known.author, "text": known.text[:200]}

    def broadcast(self, frame: Frame) -> None:
        """Put ``frame`` in every page's outbox; a page too far behind is closed."""
        for session in list(self.sessions):
            self.deliver(session, frame)

    def deliver(self, session: Session, frame: Frame) -> None:
        """Put ``frame`` in one page's outbox."""
        try:
            session.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("web_visitor_too_slow", persona=self.persona, visitor=session.user_id)
            self.close(session, "your page fell behind; reload it")

    def close(self, session: Session, reason: str) -> None:
        """End a session: the page gets ``closed`` with the reason."""
        self.leave(session)
        while not session.outbox.empty():
            session.outbox.get_nowait()
        session.outbox.put_nowait({"type": "closed", "reason": reason})
        session.outbox.put_nowait(None)

    def close_all(self, reason: str) -> None:
        """End every session (the bridge stops)."""
        for session in list(self.sessions):
            self.close(session, reason)
