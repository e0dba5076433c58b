"""Invite links: one per visitor, stored hashed, revocable from another process.

The token is a random 192-bit secret, so a plain SHA-256 of it is enough to store (nothing
to brute-force); a lookup finds the invite's name, which is the visitor's identity. Revoking
deletes the row: live sessions find out at their next check and are closed.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon.settings import Settings

from ._names import check_name
from .errors import UnknownInvite

__all__ = ["Invite", "InviteBook", "invites_path"]


@dataclass(frozen=True)
class Invite:
    """One visitor's invite: the name it gives and when it was made."""

    name: str
    created: datetime


def invites_path(settings: Settings) -> Path:
    """Where a daemon's invites are kept."""
    return settings.data_dir / "web-invites.db"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class InviteBook:
    """The invites of one data directory (``web-invites.db``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS invites ("
            "name TEXT PRIMARY KEY COLLATE NOCASE, token_hash TEXT UNIQUE NOT NULL, "
            "created REAL NOT NULL)"
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def create(self, name: str, persona: str = "") -> str:
        """A new invite for ``name`` (replacing an older one of that name); its secret token."""
        name = check_name(name, persona)
        token = secrets.token_urlsafe(24)
        self._db.execute(
            "INSERT INTO invites (name, token_hash, created) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET token_hash=excluded.token_hash, "
            "created=excluded.created",
            (name, _hash(token), datetime.now(UTC).timestamp()),
        )
        return token

    def revoke(self, name: str) -> None:
        """Delete ``name``'s invite; :class:`UnknownInvite` if there is none."""
        if self._db.execute("DELETE FROM invites WHERE name=?", (name,)).rowcount == 0:
            raise UnknownInvite(name, [i.name for i in self.list()])

    def list(self) -> list[Invite]:
        """Every invite, by name."""
        rows = self._db.execute("SELECT name, created FROM invites ORDER BY name")
        return [Invite(str(n), datetime.fromtimestamp(c, UTC)) for n, c in rows]

    def holder(self, token: str) -> str | None:
        """The name a token was given to, or None (unknown or revoked)."""
        row = self._db.execute(
            "SELECT name FROM invites WHERE token_hash=?", (_hash(token),)
        ).fetchone()
        return str(row[0]) if row else None
