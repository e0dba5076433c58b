"""WhatsApp ``.txt`` exports, Android and iOS, day-first or month-first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

from ..errors import ExportFormatError
from ._fields import media_kind
from ._records import ExportMessage

__all__ = ["read_whatsapp", "whatsapp_header"]

_ANDROID = re.compile(
    r"^(\d{1,2})[/.](\d{1,2})[/.](\d{2,4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?\s?([AaPp][Mm])? - "
    r"(.*)$"
)
_IOS = re.compile(
    r"^\u200e?\[(\d{1,2})[/.](\d{1,2})[/.](\d{2,4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?\s?"
    r"([AaPp][Mm])?\] (.*)$"
)
_MEDIA = re.compile(
    r"^\u200e?(?:<Media omitted>|<attached: (?P<file>[^>]+)>|"
    r"(?P<kind>image|video|audio|sticker|GIF|document) omitted)$"
)


def whatsapp_header(line: str) -> re.Match[str] | None:
    """The date, time and rest of a line that starts a message."""
    return _ANDROID.match(line) or _IOS.match(line)


def _order(path: Path) -> str:
    """Day-month or month-day: decided by the first date that settles it."""
    with path.open(encoding="utf-8-sig") as fh:
        for line in fh:
            m = whatsapp_header(line.rstrip("\n"))
            if m:
                if int(m[1]) > 12:
                    return "dmy"
                if int(m[2]) > 12:
                    return "mdy"
    return "dmy"


def _when(m: re.Match[str], order: str, tz: tzinfo) -> datetime:
    a, b, year, hour, minute, second, ampm = m.groups()[:7]
    day, month = (int(a), int(b)) if order == "dmy" else (int(b), int(a))
    y = int(year) + (2000 if len(year) == 2 else 0)
    h = int(hour) % 12 + (12 if ampm.lower() == "pm" else 0) if ampm else int(hour)
    return datetime(y, month, day, h, int(minute), int(second or 0), tzinfo=tz)


def _message(path: Path, m: re.Match[str], n: int, ts: datetime) -> ExportMessage:
    rest = m.groups()[7]
    author, sep, text = rest.partition(": ")
    message = ExportMessage(
        channel=path.stem,
        id=f"{path.stem}:{n}",
        author_id=author.strip(),
        author=author.strip(),
        ts=ts,
        text=text if sep else rest,
        is_system=not sep,
    )
    media = _MEDIA.match(message.text.strip())
    if media:
        kind = media["kind"] or (media["file"] or "")
        message.attachments.append((media_kind(kind) if kind else "file", None))
        message.text = ""
    return message


def read_whatsapp(path: Path, tz: tzinfo) -> Iterator[ExportMessage]:
    """Messages of a WhatsApp chat export; a line without a date continues the message."""
    order = _order(path)
    current: ExportMessage | None = None
    n = 0
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n").replace("\u202f", " ")
            m = whatsapp_header(line)
            if m is None:
                if current is None:
                    raise ExportFormatError(
                        path,
                        f"line {lineno}",
                        "a WhatsApp line starting with a date, e.g. '31/12/23, 21:05 - Name: text'",
                    )
                current.text += "\n" + line  # a multi-line message continues
                continue
            try:
                ts = _when(m, order, tz)
            except ValueError as exc:
                raise ExportFormatError(
                    path, f"line {lineno}", f"a real date and time ({exc})"
                ) from exc
            if current is not None:
                yield current
            n += 1
            current = _message(path, m, n, ts)
    if current is not None:
        yield current
