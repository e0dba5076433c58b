"""Readers for chat exports, detected by content and registered by name.

Each reader streams :class:`ExportMessage` s in time order per channel, so a
million-message export never sits in memory.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from models import attachment_kind

from ..errors import ExportFormatError
from ._records import ExportMessage, ExportReaction

__all__ = ["READERS", "Reader", "detect", "read_export"]


def _kind(name: str) -> str:
    # Exports also name kinds in words ("image omitted", "video_file", "sticker").
    low = name.lower()
    if any(word in low for word in ("photo", "image", "sticker")):
        return "photo"
    if "video" in low or "gif" in low:
        return "video"
    return attachment_kind(name)


@dataclass(frozen=True)
class Reader:
    """A format: how to recognise it from the first bytes, and how to read it."""

    name: str
    detect: Callable[[Path, bytes], bool]
    read: Callable[[Path, tzinfo], Iterator[ExportMessage]]


# -- DiscordChatExporter JSON ----------------------------------------------------------------


def _dce_json(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    import ijson

    with path.open("rb") as fh:
        channel = next(ijson.items(fh, "channel"), None)
    if not isinstance(channel, dict) or "name" not in channel:
        raise ExportFormatError(
            path,
            "the top-level channel object",
            "a DiscordChatExporter JSON export with channel{name}",
        )
    name = str(channel["name"])
    with path.open("rb") as fh:
        for n, m in enumerate(ijson.items(fh, "messages.item", use_float=True), start=1):
            try:
                author = m["author"]
                yield ExportMessage(
                    channel=name,
                    id=str(m["id"]),
                    author_id=str(author["id"]),
                    author=str(author.get("nickname") or author["name"]),
                    ts=datetime.fromisoformat(m["timestamp"]),
                    text=_dce_mentions(str(m.get("content") or ""), m.get("mentions", [])),
                    is_bot=bool(author.get("isBot")),
                    is_system=m.get("type", "Default") not in ("Default", "Reply"),
                    reply_to=str(m["reference"]["messageId"]) if m.get("reference") else None,
                    attachments=[
                        (_kind(a.get("fileName", "")), None) for a in m.get("attachments", [])
                    ],
                    reactions=[
                        ExportReaction(
                            r["emoji"].get("name") or r["emoji"].get("code", "?"),
                            str(u["id"]),
                            str(u.get("nickname") or u["name"]),
                        )
                        for r in m.get("reactions", [])
                        for u in r.get("users", [])
                    ],
                    mentions={
                        str(u["id"]): str(u.get("nickname") or u["name"])
                        for u in m.get("mentions", [])
                    },
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ExportFormatError(
                    path,
                    f"message {n}",
                    f"id, author{{id,name}}, timestamp and content ({exc!r} is missing or bad)",
                ) from exc


def _dce_mentions(content: str, mentions: list[dict[str, Any]]) -> str:
    # The export writes mentions with the account name; people know them by nickname.
    for u in mentions:
        if u.get("nickname") and u.get("name"):
            content = re.sub(rf"@{re.escape(u['name'])}(?!\w)", f"@{u['nickname']}", content)
    return content


# -- DiscordChatExporter CSV ------------------------------------------------------------------

_DCE_CSV = ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"]


def _dce_csv(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, [])
        if header[:6] != _DCE_CSV:
            raise ExportFormatError(path, "line 1", "the header " + ",".join(_DCE_CSV))
        for n, row in enumerate(rows, start=2):
            if len(row) < 6:
                raise ExportFormatError(path, f"line {n}", "six columns")
            try:
                ts = datetime.fromisoformat(row[2])
            except ValueError as exc:
                raise ExportFormatError(path, f"line {n}", "an ISO date in Date") from exc
            urls = [u for u in row[4].split(",") if u.strip()]
            attachments: list[tuple[str, str | None]] = [(_kind(u), None) for u in urls]
            yield ExportMessage(
                channel=path.stem,
                id=f"{path.stem}:{n}",
                author_id=row[0],
                author=row[1],
                ts=ts,
                text=row[3],
                attachments=attachments,
            )


# -- DiscordDumper SQLite -----------------------------------------------------------------------


def _dumper(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = dict(db.execute("SELECT DISTINCT CAST(userid AS TEXT), username FROM Message"))
        previous = None
        for n, (user, content, sent, channel, mid, uid, _cid) in enumerate(
            db.execute(
                "SELECT username, content, sent, channelname, messageid, userid, channelid "
                "FROM Message ORDER BY channelid, sent, messageid"
            ),
            start=1,
        ):
            if mid == previous:
                continue  # DiscordDumper re-runs duplicate rows: it has no primary key
            previous = mid
            try:
                ts = datetime.fromisoformat(str(sent)).replace(tzinfo=UTC)
            except ValueError as exc:
                raise ExportFormatError(path, f"row {n}", "sent as a date") from exc
            text = str(content or "")
            yield ExportMessage(
                channel=str(channel),
                id=str(mid),
                author_id=str(uid),
                author=str(user),
                ts=ts,
                text=text,
                mentions={i: names[i] for i in re.findall(r"<@!?(\d+)>", text) if i in names},
            )
    except sqlite3.DatabaseError as exc:
        raise ExportFormatError(
            path,
            "the Message table",
            "Message(username, content, sent, channelname, messageid, userid, channelid)",
        ) from exc
    finally:
        db.close()


# -- Telegram Desktop result.json -------------------------------------------------------------


def _telegram_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v if isinstance(v, str) else str(v.get("text", "")) for v in value)
    return ""


def _telegram(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    import ijson

    chat_name = path.stem
    builder: Any = None
    n = 0
    with path.open("rb") as fh:
        for prefix, event, value in ijson.parse(fh, use_float=True):
            if prefix in ("name", "chats.list.item.name") and event == "string":
                chat_name = value
            elif prefix in ("messages.item", "chats.list.item.messages.item"):
                if event == "start_map":
                    builder = ijson.ObjectBuilder()
                if builder is not None:
                    builder.event(event, value)
                if event == "end_map" and builder is not None:
                    n += 1
                    yield _telegram_message(path, chat_name, builder.value, n, tz)
                    builder = None
            elif builder is not None and prefix.startswith(
                ("messages.item.", "chats.list.item.messages.item.")
            ):
                builder.event(event, value)


def _telegram_message(
    path: Path, chat: str, m: dict[str, Any], n: int, tz: tzinfo
) -> ExportMessage:
    try:
        if "date_unixtime" in m:
            ts = datetime.fromtimestamp(int(m["date_unixtime"]), UTC)
        else:
            ts = datetime.fromisoformat(m["date"]).replace(tzinfo=tz)
        attachments: list[tuple[str, str | None]] = []
        if "photo" in m:
            attachments.append(("photo", None))
        elif m.get("media_type") in ("video_file", "video_message", "animation"):
            attachments.append(("video", None))
        elif m.get("media_type") == "sticker":
            attachments.append(("photo", m.get("sticker_emoji")))
        elif "file" in m:
            attachments.append(("file", None))
        reactions = [
            ExportReaction(
                str(r.get("emoji", "?")), str(who.get("from_id", "")), str(who.get("from", ""))
            )
            for r in m.get("reactions", [])
            for who in r.get("recent", [])
        ]
        return ExportMessage(
            channel=chat,
            id=str(m["id"]),
            author_id=str(m.get("from_id") or m.get("actor_id") or ""),
            author=str(m.get("from") or m.get("actor") or ""),
            ts=ts,
            text=_telegram_text(m.get("text")),
            is_system=m.get("type") != "message",
            is_bot="via_bot" in m,
            forwarded="forwarded_from" in m,
            reply_to=str(m["reply_to_message_id"]) if "reply_to_message_id" in m else None,
            attachments=attachments,
            reactions=reactions,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportFormatError(
            path, f"message {n}", f"id, date or date_unixtime, from ({exc!r})"
        ) from exc


# -- WhatsApp .txt -------------------------------------------------------------------------------

_WA_ANDROID = re.compile(
    r"^(\d{1,2})[/.](\d{1,2})[/.](\d{2,4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?\s?([AaPp][Mm])? - "
    r"(.*)$"
)
_WA_IOS = re.compile(
    r"^\u200e?\[(\d{1,2})[/.](\d{1,2})[/.](\d{2,4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?\s?"
    r"([AaPp][Mm])?\] (.*)$"
)
_WA_MEDIA = re.compile(
    r"^\u200e?(?:<Media omitted>|<attached: (?P<file>[^>]+)>|"
    r"(?P<kind>image|video|audio|sticker|GIF|document) omitted)$"
)


def _wa_header(line: str) -> re.Match[str] | None:
    return _WA_ANDROID.match(line) or _WA_IOS.match(line)


def _wa_order(path: Path) -> str:
    """Day-month or month-day: decided by the first date that settles it."""
    with path.open(encoding="utf-8-sig") as fh:
        for line in fh:
            m = _wa_header(line.rstrip("\n"))
            if m:
                if int(m[1]) > 12:
                    return "dmy"
                if int(m[2]) > 12:
                    return "mdy"
    return "dmy"


def _whatsapp(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    order = _wa_order(path)
    current: ExportMessage | None = None
    n = 0
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n").replace("\u202f", " ")
            m = _wa_header(line)
            if m is None:
                if current is None:
                    raise ExportFormatError(
                        path,
                        f"line {lineno}",
                        "a WhatsApp line starting with a date, e.g. '31/12/23, 21:05 - Name: text'",
                    )
                current.text += "\n" + line  # a multi-line message continues
                continue
            if current is not None:
                yield current
            a, b, year, hour, minute, second, ampm, rest = m.groups()
            day, month = (int(a), int(b)) if order == "dmy" else (int(b), int(a))
            y = int(year) + (2000 if len(year) == 2 else 0)
            h = int(hour) % 12 + (12 if ampm and ampm.lower() == "pm" else 0) if ampm else int(hour)
            ts = datetime(y, month, day, h, int(minute), int(second or 0), tzinfo=tz)
            author, sep, text = rest.partition(": ")
            n += 1
            current = ExportMessage(
                channel=path.stem,
                id=f"{path.stem}:{n}",
                author_id=author.strip(),
                author=author.strip(),
                ts=ts,
                text=text if sep else rest,
                is_system=not sep,
            )
            media = _WA_MEDIA.match(current.text.strip())
            if media:
                kind = media["kind"] or (media["file"] or "")
                current.attachments.append((_kind(kind) if kind else "file", None))
                current.text = ""
    if current is not None:
        yield current


# -- registry and detection --------------------------------------------------------------------


def _json_head(head: bytes, *keys: str) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"{") and any(k.encode() in text for k in keys)


def _is_sqlite(path: Path, head: bytes) -> bool:
    return head.startswith(b"SQLite format 3\x00")


READERS: dict[str, Reader] = {
    "discordchatexporter-json": Reader(
        "discordchatexporter-json",
        lambda p, h: _json_head(h, '"guild"') and b'"channel"' in h,
        _dce_json,
    ),
    "discordchatexporter-csv": Reader(
        "discordchatexporter-csv",
        lambda p, h: h.lstrip(b"\xef\xbb\xbf").startswith(b"AuthorID,Author,Date"),
        _dce_csv,
    ),
    "discorddumper-sqlite": Reader("discorddumper-sqlite", _is_sqlite, _dumper),
    "telegram-json": Reader(
        "telegram-json",
        lambda p, h: (
            _json_head(h, '"messages"', '"chats"', '"personal_information"', '"about"')
            and b'"guild"' not in h
        ),
        _telegram,
    ),
    "whatsapp-txt": Reader(
        "whatsapp-txt",
        lambda p, h: bool(
            _wa_header(h.decode("utf-8", "replace").lstrip("\ufeff").split("\n", 1)[0])
        ),
        _whatsapp,
    ),
}


def detect(path: Path) -> Reader:
    """The reader for ``path``, recognised from its first bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError as exc:
        raise ExportFormatError(path, "the file", "an existing export file") from exc
    for reader in READERS.values():
        if reader.detect(path, head):
            return reader
    raise ExportFormatError(
        path,
        "its first bytes",
        "one of: DiscordChatExporter JSON or CSV, DiscordDumper SQLite, Telegram Desktop "
        "result.json, WhatsApp .txt",
    )


def read_export(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Stream the messages of one export file; malformed JSON names the position."""
    reader = detect(path)
    try:
        yield from reader.read(path, tz)
    except ExportFormatError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportFormatError(path, "its content", f"valid {reader.name} ({exc})") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("ijson"):
            raise ExportFormatError(path, "its JSON", f"valid {reader.name} ({exc})") from exc
        raise
