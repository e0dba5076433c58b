"""Discord exports: DiscordChatExporter JSON and CSV, DiscordDumper SQLite."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, tzinfo
from pathlib import Path

from ..errors import ExportFormatError
from ._fields import Record, Stamps, media_kind
from ._records import ExportMessage, ExportReaction

__all__ = ["DCE_CSV_HEADER", "read_dce_csv", "read_dce_json", "read_dumper"]

# -- DiscordChatExporter JSON ----------------------------------------------------------------


def read_dce_json(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Messages of a DiscordChatExporter JSON export, streamed."""
    import ijson

    with path.open("rb") as fh:
        channel = next(ijson.items(fh, "channel"), None)
    if not isinstance(channel, dict) or not isinstance(channel.get("name"), str | int):
        raise ExportFormatError(
            path,
            "the top-level channel object",
            "a DiscordChatExporter JSON export with channel{name}",
        )
    name = str(channel["name"])
    stamps = Stamps(path, tz)
    with path.open("rb") as fh:
        for n, item in enumerate(ijson.items(fh, "messages.item", use_float=True), start=1):
            yield _dce_message(Record(path, f"message {n}", item), name, stamps)


def _person(r: Record) -> tuple[str, str]:
    """Id and the name people know them by (the nickname, else the account name)."""
    return r.text("id"), r.text("nickname", "") or r.text("name")


def _dce_message(m: Record, channel: str, stamps: Stamps) -> ExportMessage:
    author = m.record("author")
    if author is None:
        raise m.bad("author{id, name}")
    author_id, author_name = _person(author)
    mentions = [
        (u.text("name", ""), u.text("nickname", ""), _person(u)) for u in m.records("mentions")
    ]
    reference = m.record("reference")
    reactions: list[ExportReaction] = []
    for r in m.records("reactions"):
        emoji = r.record("emoji")
        shown = (emoji.text("name", "") or emoji.text("code", "?")) if emoji else "?"
        reactions += [ExportReaction(shown, *_person(u)) for u in r.records("users")]
    return ExportMessage(
        channel=channel,
        id=m.text("id"),
        author_id=author_id,
        author=author_name,
        ts=stamps.parse(m.get("timestamp"), m.where, "timestamp"),
        text=_dce_mentions(m.text("content", ""), [(a, b) for a, b, _ in mentions]),
        is_bot=bool(author.get("isBot")),
        is_system=m.get("type") not in (None, "Default", "Reply"),
        reply_to=reference.text("messageId") if reference and reference.data else None,
        attachments=[(media_kind(a.text("fileName", "")), None) for a in m.records("attachments")],
        reactions=reactions,
        mentions=dict(person for _, _, person in mentions),
    )


def _dce_mentions(content: str, mentions: list[tuple[str, str]]) -> str:
    # The export writes mentions with the account name; people know them by nickname.
    for name, nickname in mentions:
        if name and nickname:
            content = re.sub(rf"@{re.escape(name)}(?!\w)", f"@{nickname}", content)
    return content


# -- DiscordChatExporter CSV ------------------------------------------------------------------

DCE_CSV_HEADER = ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"]


def read_dce_csv(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Messages of a DiscordChatExporter CSV export."""
    stamps = Stamps(path, tz)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        try:
            header = next(rows, [])
            if header[:6] != DCE_CSV_HEADER:
                raise ExportFormatError(path, "line 1", "the header " + ",".join(DCE_CSV_HEADER))
            for n, row in enumerate(rows, start=2):
                yield _dce_row(path, row, n, stamps)
        except csv.Error as exc:
            raise ExportFormatError(path, f"line {rows.line_num}", f"CSV ({exc})") from exc


def _dce_row(path: Path, row: list[str], n: int, stamps: Stamps) -> ExportMessage:
    if len(row) < 6:
        raise ExportFormatError(path, f"line {n}", "six columns")
    urls = [u for u in row[4].split(",") if u.strip()]
    return ExportMessage(
        channel=path.stem,
        id=f"{path.stem}:{n}",
        author_id=row[0],
        author=row[1],
        ts=stamps.parse(row[2], f"line {n}", "Date"),
        text=row[3],
        attachments=[(media_kind(u), None) for u in urls],
    )


# -- DiscordDumper SQLite -----------------------------------------------------------------------

_ROWS = (
    "SELECT username, content, sent, channelname, messageid, userid, channelid "
    "FROM Message ORDER BY channelid, sent, messageid"
)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def read_dumper(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Messages of a DiscordDumper SQLite database, opened read-only."""
    # A URI built from a quoted absolute path: '#', '?' and '%' in the name stay part of it,
    # and mode=ro never creates a file.
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ExportFormatError(path, "the file", f"a readable SQLite database ({exc})") from exc
    stamps = Stamps(path, UTC)  # DiscordDumper writes UTC without an offset
    try:
        names = {
            str(uid): _text(name)
            for uid, name in db.execute(
                "SELECT DISTINCT CAST(userid AS TEXT), username FROM Message"
            )
            if name is not None
        }
        previous = None
        for n, (user, content, sent, channel, mid, uid, _cid) in enumerate(
            db.execute(_ROWS), start=1
        ):
            if mid == previous:
                continue  # DiscordDumper re-runs duplicate rows: it has no primary key
            previous = mid
            text = _text(content)
            yield ExportMessage(
                channel=_text(channel),
                id=_text(mid),
                author_id=_text(uid),
                author=_text(user) or _text(uid),  # a missing name: the id, never nobody
                ts=stamps.parse(_text(sent), f"row {n}", "sent"),
                text=text,
                mentions={i: names[i] for i in re.findall(r"<@!?(\d+)>", text) if i in names},
            )
    except sqlite3.DatabaseError as exc:
        raise ExportFormatError(
            path,
            "the Message table",
            f"Message(username, content, sent, channelname, messageid, userid, channelid) ({exc})",
        ) from exc
    finally:
        db.close()
