"""Checked reading of untrusted export records, and timestamps made comparable.

Exports are written by other programs, edited by hand and cut short. Every field a reader
takes goes through here: a field of the wrong type becomes an :class:`ExportFormatError` naming
the file, the record and what was expected, never a ``TypeError`` from deep inside a reader.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from models import attachment_kind

from ..errors import ExportFormatError, MixedTimestamps

__all__ = ["Record", "Stamps", "media_kind"]


def media_kind(name: str) -> str:
    """The attachment kind of a file name or of the words an export uses for one."""
    low = name.lower()  # "image omitted", "video_file", "sticker"
    if any(word in low for word in ("photo", "image", "sticker")):
        return "photo"
    if "video" in low or "gif" in low:
        return "video"
    return attachment_kind(name)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "something")


class Record:
    """One JSON object of an export, with where it is for error messages."""

    __slots__ = ("data", "path", "where")

    def __init__(self, path: Path, where: str, data: object) -> None:
        self.path = path
        self.where = where
        if not isinstance(data, dict):
            raise self.bad(f"an object, not {_kind(data)}")
        self.data: dict[str, Any] = data

    def bad(self, expected: str) -> ExportFormatError:
        """The error for a field that is not what the format says."""
        return ExportFormatError(self.path, self.where, expected)

    def get(self, key: str) -> Any:
        """A field whose type the caller does not depend on (or None)."""
        return self.data.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None) -> str:
        """A string (ids may be numbers); missing or null gives ``default`` when there is one."""
        value = self.data.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        found = "missing" if key not in self.data else _kind(value)
        raise self.bad(f"{key} as a string ({found})")

    def record(self, key: str) -> Record | None:
        """A nested object, or None when it is missing or null."""
        value = self.data.get(key)
        return None if value is None else Record(self.path, f"{self.where} {key}", value)

    def records(self, key: str) -> list[Record]:
        """A list of objects; missing or null is an empty list."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.bad(f"{key} as a list of objects, not {_kind(value)}")
        return [Record(self.path, f"{self.where} {key}[{i}]", v) for i, v in enumerate(value)]


class Stamps:
    """One export's timestamps, all made aware so that exports can be merged and compared.

    An export whose timestamps have no UTC offset is read in ``tz`` (``--timezone``). One that
    mixes both cannot be ordered and is refused, naming the first timestamp that differs.
    """

    def __init__(self, path: Path, tz: tzinfo) -> None:
        self.path = path
        self.tz = tz
        self._aware: bool | None = None

    def __call__(self, ts: datetime, where: str) -> datetime:
        """``ts`` with its own offset, or read in the zone; refused if unlike the earlier ones."""
        aware = ts.utcoffset() is not None
        if self._aware is None:
            self._aware = aware
        elif aware != self._aware:
            raise MixedTimestamps(self.path, where, has_offset=aware)
        return ts if aware else ts.replace(tzinfo=self.tz)

    def parse(self, value: object, where: str, field: str) -> datetime:
        """An ISO-8601 timestamp string, made aware."""
        if not isinstance(value, str):
            raise ExportFormatError(self.path, where, f"{field} as an ISO-8601 date")
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ExportFormatError(
                self.path, where, f"{field} as an ISO-8601 date, not {value[:40]!r}"
            ) from exc
        return self(ts, where)
