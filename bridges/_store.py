"""The persona's state in SQLite: messages kept for context, plans and counters.

Everything the behaviour engine needs to carry on after a restart lives here: planned
offline periods and conversation starts included, so they still happen afterwards.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models import Event

__all__ = ["Store", "StoredMessage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    persona TEXT NOT NULL,
    bridge TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT NOT NULL,
    is_bot INTEGER NOT NULL,
    is_self INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    reply_to TEXT,
    addressed INTEGER NOT NULL DEFAULT 0,
    opener INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL,
    PRIMARY KEY (persona, bridge, channel, message_id, kind, author_id)
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (persona, bridge, channel, ts);
CREATE INDEX IF NOT EXISTS messages_by_author ON messages (author_id);
CREATE TABLE IF NOT EXISTS state (
    persona TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (persona, key)
);
"""


@dataclass(frozen=True)
class StoredMessage:
    """One remembered event: a message, a reaction or an attachment line."""

    bridge: str
    channel: str
    message_id: str
    author_id: str
    author_name: str
    is_bot: bool
    is_self: bool
    kind: str  # message | reply | react | photo | video | file | init
    text: str
    ts: datetime
    reply_to: str | None = None
    addressed: bool = False
    opener: bool = False

    def event(self) -> Event:
        """The platform-neutral history entry the transcript is made of."""
        return Event(self.author_name, self.kind, self.text, self.ts)


class Store:
    """SQLite state shared by the personas of one ``personad run``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def add(self, persona: str, m: StoredMessage) -> None:
        """Remember ``m`` (a repeated id replaces the earlier copy, e.g. after an edit)."""
        self._db.execute(
            "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                persona,
                m.bridge,
                m.channel,
                m.message_id,
                m.author_id,
                m.author_name,
                int(m.is_bot),
                int(m.is_self),
                m.kind,
                m.text,
                m.reply_to,
                int(m.addressed),
                int(m.opener),
                m.ts.timestamp(),
            ),
        )

    def _rows(self, sql: str, args: Sequence[Any]) -> Iterator[StoredMessage]:
        for row in self._db.execute(sql, args):
            yield StoredMessage(
                bridge=row[1],
                channel=row[2],
                message_id=row[3],
                author_id=row[4],
                author_name=row[5],
                is_bot=bool(row[6]),
                is_self=bool(row[7]),
                kind=row[8],
                text=row[9],
                reply_to=row[10],
                addressed=bool(row[11]),
                opener=bool(row[12]),
                ts=datetime.fromtimestamp(row[13], UTC),
            )

    def recent(self, persona: str, bridge: str, channel: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` events of a channel, oldest first."""
        rows = list(
            self._rows(
                "SELECT * FROM messages WHERE persona=? AND bridge=? AND channel=? "
                "ORDER BY ts DESC, rowid DESC LIMIT ?",
                (persona, bridge, channel, limit),
            )
        )
        return rows[::-1]

    def since(self, persona: str, when: datetime) -> list[StoredMessage]:
        """Every event after ``when``, oldest first (the backlog after an absence)."""
        return list(
            self._rows(
                "SELECT * FROM messages WHERE persona=? AND ts>? ORDER BY ts, rowid",
                (persona, when.timestamp()),
            )
        )

    def channels(self, persona: str) -> list[tuple[str, str]]:
        """(bridge, channel) pairs the persona has seen."""
        rows = self._db.execute(
            "SELECT DISTINCT bridge, channel FROM messages WHERE persona=?", (persona,)
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def delete(self, persona: str, bridge: str, channel: str, message_id: str) -> int:
        """Forget one message (deleted on its platform) and its attachment lines."""
        cur = self._db.execute(
            "DELETE FROM messages WHERE persona=? AND bridge=? AND channel=? "
            "AND (message_id=? OR message_id LIKE ?) AND kind != 'react'",
            (persona, bridge, channel, message_id, f"{message_id}#%"),
        )
        return cur.rowcount

    def has(self, persona: str, bridge: str, channel: str, message_id: str) -> bool:
        """Whether a message is already remembered (a replay after a reconnect)."""
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE persona=? AND bridge=? AND channel=? AND message_id=?",
            (persona, bridge, channel, message_id),
        ).fetchone()
        return row is not None

    def purge(self, before: datetime) -> int:
        """Forget everything older than ``before`` (retention); return how many rows."""
        cur = self._db.execute("DELETE FROM messages WHERE ts<?", (before.timestamp(),))
        return cur.rowcount

    def forget_user(self, user_id: str) -> int:
        """Delete everything one person wrote or did; return how many rows."""
        cur = self._db.execute("DELETE FROM messages WHERE author_id=?", (user_id,))
        return cur.rowcount

    def get(self, persona: str, key: str, default: Any = None) -> Any:
        """A JSON value from the persona's state."""
        row = self._db.execute(
            "SELECT value FROM state WHERE persona=? AND key=?", (persona, key)
        ).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, persona: str, key: str, value: Any) -> None:
        """Store a JSON value in the persona's state."""
        self._db.execute(
            "INSERT OR REPLACE INTO state VALUES (?,?,?)", (persona, key, json.dumps(value))
        )
