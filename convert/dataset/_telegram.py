"""Telegram Desktop ``result.json``: one chat, or the full export with every chat."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from ._fields import Record, Stamps
from ._records import ExportMessage, ExportReaction

__all__ = ["read_telegram"]

_MESSAGE = ("messages.item", "chats.list.item.messages.item")


def _text(value: Any) -> str:
    # A string, or a list of strings and {type, text} entities.
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = (v if isinstance(v, dict) else {"text": v} for v in value)
        return "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
    return ""


def read_telegram(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Messages of every chat in the export, streamed."""
    import ijson

    stamps = Stamps(path, tz)
    chat_name = path.stem
    chats = 0
    builder: Any = None
    n = 0
    with path.open("rb") as fh:
        for prefix, event, value in ijson.parse(fh, use_float=True):
            if prefix == "chats.list.item" and event == "start_map":
                chats += 1
                chat_name = f"{path.stem} chat {chats}"  # until its name: some chats have none
            elif prefix in ("name", "chats.list.item.name") and event in ("string", "number"):
                chat_name = str(value)
            elif prefix in _MESSAGE:
                if event == "start_map":
                    builder = ijson.ObjectBuilder()
                if builder is not None:
                    builder.event(event, value)
                if event == "end_map" and builder is not None:
                    n += 1
                    yield _message(Record(path, f"message {n}", builder.value), chat_name, stamps)
                    builder = None
            elif builder is not None and prefix.startswith(tuple(p + "." for p in _MESSAGE)):
                builder.event(event, value)


def _when(m: Record, stamps: Stamps) -> datetime:
    if "date_unixtime" not in m:
        return stamps.parse(m.get("date"), m.where, "date")
    try:
        return datetime.fromtimestamp(int(m.text("date_unixtime")), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise m.bad("date_unixtime as whole seconds since 1970") from exc


def _attachments(m: Record) -> list[tuple[str, str | None]]:
    if "photo" in m:
        return [("photo", None)]
    media = m.get("media_type")
    if media in ("video_file", "video_message", "animation"):
        return [("video", None)]
    if media == "sticker":
        return [("photo", m.text("sticker_emoji", "") or None)]
    if "file" in m:
        return [("file", None)]
    return []


def _message(m: Record, chat: str, stamps: Stamps) -> ExportMessage:
    reactions = [
        ExportReaction(r.text("emoji", "?"), who.text("from_id", ""), who.text("from", ""))
        for r in m.records("reactions")
        for who in r.records("recent")
    ]
    author_id = m.text("from_id", "") or m.text("actor_id", "")
    return ExportMessage(
        channel=chat,
        id=m.text("id"),
        author_id=author_id,
        author=m.text("from", "") or m.text("actor", "") or author_id,  # deleted accounts
        ts=_when(m, stamps),
        text=_text(m.get("text")),
        is_system=m.get("type") != "message",
        is_bot="via_bot" in m,
        forwarded="forwarded_from" in m,
        reply_to=m.text("reply_to_message_id", "") or None,
        attachments=_attachments(m),
        reactions=reactions,
    )
