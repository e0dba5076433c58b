"""What the bridge knows of each room: members' names, encryption, who wrote which event."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Room", "Rooms"]

JSON = dict[str, Any]
_AUTHORS_KEPT = 4096


@dataclass
class Room:
    """One joined room."""

    room_id: str
    name: str | None = None
    alias: str | None = None
    members: dict[str, str] = field(default_factory=dict)
    encrypted: bool = False
    # The newest event from someone else the persona was told about, and the one it marked read.
    newest_from_others: str | None = None
    read_up_to: str | None = None

    def apply_state(self, event: Mapping[str, Any]) -> None:
        """Take in a state event (names, membership, encryption)."""
        kind = event.get("type")
        content = event.get("content") or {}
        if kind == "m.room.member":
            user = str(event.get("state_key", ""))
            if content.get("membership") == "join":
                self.members[user] = str(content.get("displayname") or _localpart(user))
            else:
                self.members.pop(user, None)
        elif kind == "m.room.name":
            self.name = content.get("name") or None
        elif kind == "m.room.canonical_alias":
            self.alias = content.get("alias") or None
        elif kind == "m.room.encryption":
            self.encrypted = True

    @property
    def label(self) -> str | None:
        """A human name for the room, where it has one."""
        return self.name or self.alias


class Rooms:
    """Every room the bridge has seen, and the authors of recent events (for replies)."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._authors: OrderedDict[str, str] = OrderedDict()

    def get(self, room_id: str) -> Room:
        """The room, made on first sight."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
        return room

    def forget(self, room_id: str) -> None:
        """The bridge left the room."""
        self._rooms.pop(room_id, None)

    def wrote(self, event_id: str, sender: str) -> None:
        """Remember who sent ``event_id``."""
        self._authors[event_id] = sender
        self._authors.move_to_end(event_id)
        while len(self._authors) > _AUTHORS_KEPT:
            self._authors.popitem(last=False)

    def author(self, event_id: str) -> str | None:
        """Who sent ``event_id``, if the bridge saw it."""
        return self._authors.get(event_id)


def _localpart(user_id: str) -> str:
    return user_id.lstrip("@").split(":", 1)[0]
