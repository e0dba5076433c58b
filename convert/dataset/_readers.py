"""Readers for chat exports, detected by content and registered by name.

Each reader streams :class:`ExportMessage` s in time order per channel, so a
million-message export never sits in memory. Whatever an export holds, reading it gives
messages or an :class:`~convert.errors.InputError`, never another exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from ..errors import ExportFormatError, InputError
from ._discord import DCE_CSV_HEADER, read_dce_csv, read_dce_json, read_dumper
from ._records import ExportMessage
from ._telegram import read_telegram
from ._whatsapp import read_whatsapp, whatsapp_header

__all__ = ["READERS", "Reader", "detect", "read_export"]


@dataclass(frozen=True)
class Reader:
    """A format: how to recognise it from the first bytes, and how to read it."""

    name: str
    detect: Callable[[Path, bytes], bool]
    read: Callable[[Path, tzinfo], Iterator[ExportMessage]]


def _json_head(head: bytes, *keys: str) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"{") and any(k.encode() in text for k in keys)


def _is_sqlite(path: Path, head: bytes) -> bool:
    return head.startswith(b"SQLite format 3\x00")


READERS: dict[str, Reader] = {
    "discordchatexporter-json": Reader(
        "discordchatexporter-json",
        lambda p, h: _json_head(h, '"guild"') and b'"channel"' in h,
        read_dce_json,
    ),
    "discordchatexporter-csv": Reader(
        "discordchatexporter-csv",
        lambda p, h: h.lstrip(b"\xef\xbb\xbf").startswith(",".join(DCE_CSV_HEADER[:3]).encode()),
        read_dce_csv,
    ),
    "discorddumper-sqlite": Reader("discorddumper-sqlite", _is_sqlite, read_dumper),
    "telegram-json": Reader(
        "telegram-json",
        lambda p, h: (
            _json_head(h, '"messages"', '"chats"', '"personal_information"', '"about"')
            and b'"guild"' not in h
        ),
        read_telegram,
    ),
    "whatsapp-txt": Reader(
        "whatsapp-txt",
        lambda p, h: bool(
            whatsapp_header(h.decode("utf-8", "replace").lstrip("\ufeff").split("\n", 1)[0])
        ),
        read_whatsapp,
    ),
}


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(4096)
    except IsADirectoryError as exc:
        raise InputError(
            path,
            "is a directory, not an export file",
            f"pass the export files in it, e.g. {path / '*.json'}",
        ) from exc
    except FileNotFoundError as exc:
        raise InputError(path, "no such file", "check the path of the export") from exc
    except OSError as exc:
        raise InputError(
            path, f"cannot be read ({exc.strerror or exc})", "check the file's permissions"
        ) from exc


def detect(path: Path) -> Reader:
    """The reader for ``path``, recognised from its first bytes."""
    head = _head(path)
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
    """Stream the messages of one export file; malformed content names the position."""
    reader = detect(path)
    try:
        yield from reader.read(path, tz)
    except InputError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportFormatError(path, "its content", f"valid {reader.name} ({exc})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("ijson"):
            # ijson's message goes on to draw the bytes around the fault over several lines.
            why = str(exc).strip().split("\n", 1)[0]
            raise ExportFormatError(path, "its JSON", f"valid {reader.name} ({why})") from exc
        raise
