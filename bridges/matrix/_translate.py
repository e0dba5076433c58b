"""Matrix events to personad events and back: bodies, replies, edits, pills, attachments."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from models import attachment_kind

from .._api import Attachment, MessageEvent, User
from ._rooms import Room

__all__ = [
    "Incoming",
    "outgoing",
    "parse_message",
    "timestamp_of",
    "user_in",
]

JSON = dict[str, Any]

_PILL = re.compile(r"""href=["']https://matrix\.to/#/(@[^"'?/]+)""")
_MEDIA = {"m.image", "m.video", "m.file", "m.audio"}
_MATRIX_TO = "https://matrix.to/#/"


@dataclass(frozen=True)
class Incoming:
    """A parsed ``m.room.message``: the event it reports, or the edit of an older one."""

    event: MessageEvent
    replaces: str | None = None


def timestamp_of(event: Mapping[str, Any]) -> datetime:
    """The event's server time, timezone-aware."""
    return datetime.fromtimestamp(int(event.get("origin_server_ts", 0)) / 1000, UTC)


def user_in(room: Room | None, user_id: str, names: Mapping[str, str], *, me: User | None) -> User:
    """A personad user: the persona, a configured name, the room's display name, the localpart."""
    if me is not None and user_id == me.id:
        return me
    shown = room.members.get(user_id) if room is not None else None
    name = names.get(user_id) or shown or user_id.lstrip("@").split(":", 1)[0]
    return User(user_id, name)


def _strip_reply_fallback(body: str) -> str:
    """Drop the quoted ``> <@user> ...`` lines older clients put before a reply's text."""
    if not body.startswith("> "):
        return body
    lines = body.split("\n")
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    return "\n".join(lines).lstrip("\n")


def _mentioned_ids(content: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    declared = content.get("m.mentions")
    if isinstance(declared, Mapping):
        ids += [str(u) for u in declared.get("user_ids") or []]
    formatted = content.get("formatted_body")
    if isinstance(formatted, str):
        ids += [html.unescape(m) for m in _PILL.findall(formatted)]
    return list(dict.fromkeys(ids))


def _attachments(content: Mapping[str, Any]) -> tuple[tuple[Attachment, ...], str]:
    """A media message's attachment and its caption (the text that goes with it)."""
    msgtype = content.get("msgtype")
    if msgtype not in _MEDIA:
        return (), str(content.get("body") or "")
    body = str(content.get("body") or "")
    filename = str(content.get("filename") or body)
    info = content.get("info") if isinstance(content.get("info"), Mapping) else {}
    mime = info.get("mimetype") if isinstance(info, Mapping) else None
    kind: Literal["photo", "video", "file"] = (
        "photo"
        if msgtype == "m.image"
        else "video"
        if msgtype == "m.video"
        else attachment_kind(filename, mime if isinstance(mime, str) else None)
    )
    # With a separate filename, the body is a caption (Matrix v1.10 media captions).
    caption = body if content.get("filename") and body != filename else ""
    return (Attachment(kind, caption or None),), caption


def parse_message(
    event: Mapping[str, Any],
    room: Room,
    names: Mapping[str, str],
    *,
    me: User | None,
    author_of: Callable[[str], str | None],
) -> Incoming | None:
    """The personad view of an ``m.room.message`` event; None for one with nothing to say."""
    content = event.get("content")
    if not isinstance(content, Mapping) or "msgtype" not in content:
        return None  # redacted, or not a message
    relates = content.get("m.relates_to")
    relates = relates if isinstance(relates, Mapping) else {}
    replaces = relates.get("event_id") if relates.get("rel_type") == "m.replace" else None
    if replaces is not None:
        new = content.get("m.new_content")
        if not isinstance(new, Mapping):
            return None
        content = new
    attachments, caption = _attachments(content)
    text = caption if attachments else _strip_reply_fallback(str(content.get("body") or ""))
    if content.get("msgtype") == "m.emote":
        sender_name = user_in(room, str(event["sender"]), names, me=me).name
        text = f"* {sender_name} {text}"
    mentioned = [user_in(room, u, names, me=me) for u in _mentioned_ids(content)]
    if me is not None and me not in mentioned and _names_me(text, room, me):
        mentioned.append(me)
    in_reply = relates.get("m.in_reply_to")
    reply_to = str(in_reply["event_id"]) if isinstance(in_reply, Mapping) else None
    reply_author_id = author_of(reply_to) if reply_to else None
    return Incoming(
        MessageEvent(
            channel=room.room_id,
            message_id=str(replaces or event["event_id"]),
            author=user_in(room, str(event["sender"]), names, me=me),
            text=text,
            timestamp=timestamp_of(event),
            channel_name=room.label,
            mentions=tuple(mentioned),
            reply_to=reply_to,
            reply_to_author=(
                user_in(room, reply_author_id, names, me=me) if reply_author_id else None
            ),
            attachments=attachments,
            edited=replaces is not None,
        ),
        replaces=str(replaces) if replaces else None,
    )


def _names_me(text: str, room: Room, me: User) -> bool:
    """Whether ``text`` calls the persona by its account's display name (Element's plain
    mention when no pill was made)."""
    shown = room.members.get(me.id)
    names = {n for n in (shown, me.id) if n}
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE) for n in names)


def outgoing(text: str, people: Mapping[str, str], *, reply_to: str | None = None) -> JSON:
    """An ``m.text`` content for ``text``: ``@Name`` of a room member becomes a pill that
    pings that person (and only that person: ``m.mentions`` lists exactly them)."""
    by_name = {name.casefold(): uid for name, uid in people.items() if name}
    mentioned: list[str] = []
    pieces: list[str] = []
    pattern = _mention_pattern(list(people))
    last = 0
    for match in pattern.finditer(text) if pattern else ():
        uid = by_name[match[1].casefold()]
        pieces.append(html.escape(text[last : match.start()]))
        pieces.append(f'<a href="{_MATRIX_TO}{html.escape(uid)}">{html.escape(match[1])}</a>')
        mentioned.append(uid)
        last = match.end()
    content: JSON = {"msgtype": "m.text", "body": text}
    if mentioned:
        pieces.append(html.escape(text[last:]))
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = "".join(pieces).replace("\n", "<br>")
    content["m.mentions"] = {"user_ids": list(dict.fromkeys(mentioned))}
    if reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def _mention_pattern(names: list[str]) -> re.Pattern[str] | None:
    usable = sorted((n for n in names if n), key=len, reverse=True)
    if not usable:
        return None
    alternatives = "|".join(re.escape(n) for n in usable)
    return re.compile(rf"@({alternatives})(?!\w)", re.IGNORECASE)
