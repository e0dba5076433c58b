"""What every chat export is read into: one platform-neutral record per message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ExportMessage", "ExportReaction"]


@dataclass(frozen=True)
class ExportReaction:
    """A reaction on a message, by a known person (exports without names give none)."""

    emoji: str
    author_id: str
    author: str


@dataclass
class ExportMessage:
    """One message as an export has it, before cleaning."""

    channel: str
    id: str
    author_id: str
    author: str
    ts: datetime
    text: str
    is_bot: bool = False
    is_system: bool = False
    forwarded: bool = False
    reply_to: str | None = None
    attachments: list[tuple[str, str | None]] = field(default_factory=list)
    reactions: list[ExportReaction] = field(default_factory=list)
    mentions: dict[str, str] = field(default_factory=dict)
