"""The persona's state in SQLite: messages kept for context, plans and counters.

Everything the behaviour engine needs to carry on after a restart lives here: planned
offline periods and conversation starts included, so they still happen afterwards, and
which messages are still waiting for the persona's decision (``handled``), so a message
that arrived just before a crash is answered after it.

Everything one persona reads or writes goes through its view, :meth:`Store.for_persona`:
every query of a :class:`PersonaStore` is scoped to that persona by construction. Adding a
message never overwrites one: a replay keeps the first copy, an edit goes through
:meth:`PersonaStore.edit`. Every removal returns the conversations it touched
(:class:`Removed`), so the model server's cached states of those conversations can be
dropped too. The schema is versioned (``PRAGMA user_version``, see ``_migrations``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from models import Event

from ._migrations import migrate
from .errors import StoreUnreadable

__all__ = ["Conversation", "PersonaStore", "Removed", "Store", "StoredMessage"]

log = structlog.get_logger("personad.store")

_COLUMNS = (
    "persona, bridge, channel, message_id, author_id, author_name, is_bot, is_self, kind, "
    "text, reply_to, addressed, opener, ts"
)

# One message: its own row, or its attachment rows ("<id>#0", "<id>#1", ...); never reactions,
# which carry the id of the message they react to.
_ONE_MESSAGE = (
    "persona=? AND bridge=? AND channel=? AND kind != 'react' "
    "AND (message_id=? OR substr(message_id, 1, length(?) + 1) = ? || '#')"
)


class Conversation(NamedTuple):
    """One persona's conversation in one channel: the unit the model server caches."""

    persona: str
    bridge: str
    channel: str

    @property
    def key(self) -> str:
        """The ``conversation`` sent with completions (and used to drop its cached state)."""
        return f"{self.persona}/{self.bridge}/{self.channel}"


@dataclass(frozen=True)
class Removed:
    """What a deletion took out of the store: rows, and the conversations they were in."""

    rows: int = 0
    conversations: frozenset[Conversation] = frozenset()


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
    """The SQLite file shared by the personas of one ``personad run``.

    Opening it migrates an older database in place (after a backup copy) and refuses one
    written by a newer personad (:class:`~bridges.errors.StoreTooNew`).
    """

    def __init__(self, path: Path) -> None:
        # People's conversations are the owner's alone, whichever command creates the file
        # (and whatever the umask): directory 0700, database 0600 (SQLite gives its -wal and
        # -shm files the database's mode).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            migrate(self._db, path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreUnreadable(path, str(exc)) from exc
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def for_persona(self, persona: str) -> PersonaStore:
        """The view of one persona: its messages, its state, nothing of the others."""
        return PersonaStore(self._db, persona)

    def personas(self) -> list[str]:
        """Every persona with messages or state in the database."""
        rows = self._db.execute(
            "SELECT persona FROM messages UNION SELECT persona FROM persona_state ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def conversations_of(self, user_id: str) -> frozenset[Conversation]:
        """Every conversation one person wrote or reacted in, for every persona."""
        rows = self._db.execute(
            "SELECT DISTINCT persona, bridge, channel FROM messages WHERE author_id=?", (user_id,)
        ).fetchall()
        return frozenset(Conversation(*(str(x) for x in r)) for r in rows)

    def forget_user(self, user_id: str) -> Removed:
        """Delete everything one person wrote or did, for every persona."""
        return _remove(self._db, "author_id=?", (user_id,))


def _remove(db: sqlite3.Connection, where: str, args: Sequence[Any]) -> Removed:
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute(
            f"SELECT DISTINCT persona, bridge, channel FROM messages WHERE {where}", args
        ).fetchall()
        rows = db.execute(f"DELETE FROM messages WHERE {where}", args).rowcount
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return Removed(rows, frozenset(Conversation(*(str(x) for x in r)) for r in found))


class PersonaStore:
    """One persona's messages and state; every query is scoped to ``persona``."""

    def __init__(self, db: sqlite3.Connection, persona: str) -> None:
        self._db = db
        self.persona = persona

    # -- adding and editing ------------------------------------------------------------

    def add(self, m: StoredMessage, *, handled: bool | None = None) -> bool:
        """Remember ``m`` unless it is known; return whether it was new.

        A replay (same id, author and text) keeps the first copy. The same id with another
        author or text is a collision: the first copy stays and a warning is logged. Use
        :meth:`edit` for an edited message.
        """
        if m.kind != "react":
            found = self._db.execute(
                "SELECT author_id, text, is_self FROM messages "
                "WHERE persona=? AND bridge=? AND channel=? AND message_id=? AND kind != 'react'",
                (self.persona, m.bridge, m.channel, m.message_id),
            ).fetchone()
            if found is not None:
                self._known(m, *found)
                return False
        # Reactions and the persona's own lines ask for no answer: they are born handled.
        if handled is None:
            handled = m.is_self or m.kind == "react"
        cur = self._db.execute(
            f"INSERT INTO messages ({_COLUMNS}, handled) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            (
                self.persona,
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
                int(handled),
            ),
        )
        return cur.rowcount == 1

    def _known(self, m: StoredMessage, author: str, text: str, is_self: int) -> None:
        # The platform may render the persona's own text differently (mentions).
        if author == m.author_id and (text == m.text or (is_self and m.is_self)):
            log.debug("message_replayed", persona=self.persona, message_id=m.message_id)
            return
        log.warning(
            "message_id_collision",
            persona=self.persona,
            bridge=m.bridge,
            channel=m.channel,
            message_id=m.message_id,
            kept_author=author,
            dropped_author=m.author_id,
        )

    def edit(self, m: StoredMessage) -> bool:
        """Replace the text of a message its author edited; return whether one was found.

        An edit that leaves no text removes the line (its attachment lines stay).
        """
        where = (
            "persona=? AND bridge=? AND channel=? AND message_id=? AND author_id=? "
            "AND kind != 'react'"
        )
        key = (self.persona, m.bridge, m.channel, m.message_id, m.author_id)
        if not m.text.strip():
            return self._db.execute(f"DELETE FROM messages WHERE {where}", key).rowcount > 0
        cur = self._db.execute(
            f"UPDATE messages SET text=?, author_name=?, kind=?, reply_to=?, addressed=? "
            f"WHERE {where}",
            (m.text, m.author_name, m.kind, m.reply_to, int(m.addressed), *key),
        )
        return cur.rowcount > 0

    # -- reading -----------------------------------------------------------------------

    def _rows(self, where: str, args: Sequence[Any], order: str) -> Iterator[StoredMessage]:
        sql = f"SELECT {_COLUMNS} FROM messages WHERE persona=? AND {where} ORDER BY {order}"
        for row in self._db.execute(sql, (self.persona, *args)):
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

    def recent(self, bridge: str, channel: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` events of a channel, oldest first."""
        rows = self._rows(
            "bridge=? AND channel=?", (bridge, channel), f"ts DESC, rowid DESC LIMIT {int(limit)}"
        )
        return list(rows)[::-1]

    def since(self, when: datetime) -> list[StoredMessage]:
        """Every event after ``when``, oldest first (the backlog after an absence)."""
        return list(self._rows("ts>?", (when.timestamp(),), "ts, rowid"))

    def channels(self) -> list[tuple[str, str]]:
        """(bridge, channel) pairs the persona has seen."""
        rows = self._db.execute(
            "SELECT DISTINCT bridge, channel FROM messages WHERE persona=?", (self.persona,)
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def has(self, bridge: str, channel: str, message_id: str) -> bool:
        """Whether a message (or one of its attachment lines) is already remembered."""
        row = self._db.execute(
            f"SELECT 1 FROM messages WHERE {_ONE_MESSAGE} LIMIT 1",
            (self.persona, bridge, channel, message_id, message_id, message_id),
        ).fetchone()
        return row is not None

    # -- waiting for the persona -------------------------------------------------------

    def pending(self) -> dict[tuple[str, str], list[StoredMessage]]:
        """Messages of others the persona has not decided on yet, per (bridge, channel)."""
        out: dict[tuple[str, str], list[StoredMessage]] = {}
        for m in self._rows("handled=0", (), "ts, rowid"):
            out.setdefault((m.bridge, m.channel), []).append(m)
        return out

    def mark_handled(self, bridge: str, channel: str, upto: datetime) -> None:
        """The persona has decided on the channel's messages up to ``upto``."""
        self._db.execute(
            "UPDATE messages SET handled=1 "
            "WHERE persona=? AND bridge=? AND channel=? AND handled=0 AND ts<=?",
            (self.persona, bridge, channel, upto.timestamp()),
        )

    # -- removing ----------------------------------------------------------------------

    def delete(self, bridge: str, channel: str, message_id: str) -> Removed:
        """Forget one message (deleted on its platform) and its attachment lines."""
        args = (self.persona, bridge, channel, message_id, message_id, message_id)
        return _remove(self._db, _ONE_MESSAGE, args)

    def purge(self, before: datetime) -> Removed:
        """Forget the persona's events older than ``before`` (its retention)."""
        return _remove(self._db, "persona=? AND ts<?", (self.persona, before.timestamp()))

    # -- the persona's state document ----------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The persona's state document (``{}`` before anything was saved)."""
        row = self._db.execute(
            "SELECT state FROM persona_state WHERE persona=?", (self.persona,)
        ).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def update_state(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read, change and write the state document in one transaction (another process,
        ``personad pause``, may write it too); return the new document."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            new = change(self.load_state())
            self._db.execute(
                "INSERT INTO persona_state (persona, state) VALUES (?, ?) "
                "ON CONFLICT (persona) DO UPDATE SET state=excluded.state",
                (self.persona, json.dumps(new)),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return new
