"""The SQLite store: per-persona retention, messages never overwritten, old databases open."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from bridges import Conversation, Store, StoredMessage

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def msg(
    mid: str,
    text: str,
    *,
    author: str = "u-alex",
    channel: str = "general",
    ts: datetime = NOW,
    kind: str = "message",
) -> StoredMessage:
    """A message from Alex (or ``author``) in a fake bridge's channel."""
    return StoredMessage(
        bridge="fake",
        channel=channel,
        message_id=mid,
        author_id=author,
        author_name=author.removeprefix("u-").title(),
        is_bot=False,
        is_self=False,
        kind=kind,
        text=text,
        ts=ts,
    )


def texts(store: Store, persona: str, channel: str = "general") -> list[str]:
    """The texts of a channel, oldest first."""
    return [m.text for m in store.for_persona(persona).recent("fake", channel, 50)]


def test_retention_is_per_persona(tmp_path: Path) -> None:
    """Purging for the persona keeping 1 day leaves the 30-day persona's history alone."""
    store = Store(tmp_path / "s.db")
    old = NOW - timedelta(days=2)
    store.for_persona("Robin").add(msg("m1", "robin's old", ts=old))
    store.for_persona("Sam").add(msg("m1", "sam's old", ts=old))
    removed = store.for_persona("Robin").purge(NOW - timedelta(days=1))
    assert removed.rows == 1
    assert removed.conversations == {Conversation("Robin", "fake", "general")}
    assert texts(store, "Robin") == []
    assert store.for_persona("Sam").purge(NOW - timedelta(days=30)).rows == 0
    assert texts(store, "Sam") == ["sam's old"]


def test_a_replay_keeps_the_first_copy(tmp_path: Path) -> None:
    """Adding a known id again changes nothing and reports it was not new."""
    store = Store(tmp_path / "s.db")
    assert store.for_persona("Robin").add(msg("m1", "hello"))
    assert not store.for_persona("Robin").add(msg("m1", "hello", ts=NOW + timedelta(minutes=5)))
    [kept] = store.for_persona("Robin").recent("fake", "general", 5)
    assert kept.text == "hello" and kept.ts == NOW


def test_an_id_collision_is_logged_and_never_overwrites(tmp_path: Path) -> None:
    """The same id with another author or text keeps the first copy and logs a warning."""
    store = Store(tmp_path / "s.db")
    store.for_persona("Robin").add(msg("c1", "first session"))
    with capture_logs() as logs:
        assert not store.for_persona("Robin").add(msg("c1", "second session"))
        assert not store.for_persona("Robin").add(msg("c1", "someone else", author="u-bob"))
    assert texts(store, "Robin") == ["first session"]
    warnings = [e for e in logs if e["event"] == "message_id_collision"]
    assert len(warnings) == 2 and all(e["log_level"] == "warning" for e in warnings)
    assert warnings[1]["kept_author"] == "u-alex" and warnings[1]["dropped_author"] == "u-bob"


def test_edit_is_the_one_way_to_change_a_message(tmp_path: Path) -> None:
    """edit() replaces the author's text; it does not touch another author's message."""
    store = Store(tmp_path / "s.db")
    store.for_persona("Robin").add(msg("m1", "tpyo"))
    assert store.for_persona("Robin").edit(msg("m1", "typo"))
    assert not store.for_persona("Robin").edit(msg("m1", "hijack", author="u-bob"))
    assert not store.for_persona("Robin").edit(msg("m9", "never seen"))
    assert texts(store, "Robin") == ["typo"]
    assert store.for_persona("Robin").edit(msg("m1", ""))  # edited down to nothing: the line goes
    assert texts(store, "Robin") == []


def test_removals_name_the_conversations_they_touched(tmp_path: Path) -> None:
    """delete and forget_user report each (persona, bridge, channel) they removed rows from."""
    store = Store(tmp_path / "s.db")
    store.for_persona("Robin").add(msg("m1", "hi", author="u-bob"))
    store.for_persona("Robin").add(msg("m2", "yo", author="u-bob", channel="random"))
    store.for_persona("Sam").add(msg("m1", "hi", author="u-bob"))
    store.for_persona("Robin").add(msg("m3", "other"))
    removed = store.for_persona("Robin").delete("fake", "general", "m3")
    assert removed.rows == 1
    assert removed.conversations == {Conversation("Robin", "fake", "general")}
    removed = store.forget_user("u-bob")
    assert removed.rows == 3
    assert {c.key for c in removed.conversations} == {
        "Robin/fake/general",
        "Robin/fake/random",
        "Sam/fake/general",
    }


_SCHEMA_0_1_0 = """
CREATE TABLE messages (
    persona TEXT NOT NULL, bridge TEXT NOT NULL, channel TEXT NOT NULL,
    message_id TEXT NOT NULL, author_id TEXT NOT NULL, author_name TEXT NOT NULL,
    is_bot INTEGER NOT NULL, is_self INTEGER NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,
    reply_to TEXT, addressed INTEGER NOT NULL DEFAULT 0, opener INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL,
    PRIMARY KEY (persona, bridge, channel, message_id, kind, author_id)
);
CREATE INDEX messages_by_channel ON messages (persona, bridge, channel, ts);
CREATE INDEX messages_by_author ON messages (author_id);
CREATE TABLE state (
    persona TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (persona, key)
);
"""


def test_a_0_1_0_database_opens_and_its_history_is_not_pending(tmp_path: Path) -> None:
    """An existing database gains the new column once; its messages count as handled."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_0_1_0)
    db.execute(
        "INSERT INTO messages VALUES ('Robin','fake','general','m1','u-alex','Alex',0,0,"
        "'message','Robin, still there?',NULL,1,0,?)",
        (NOW.timestamp(),),
    )
    db.commit()
    db.close()
    for _ in range(2):  # the step is idempotent
        store = Store(path)
        assert texts(store, "Robin") == ["Robin, still there?"]
        assert store.for_persona("Robin").pending() == {}
        store.close()
    store = Store(path)
    store.for_persona("Robin").add(msg("m2", "new"))
    assert [m.text for m in store.for_persona("Robin").pending()[("fake", "general")]] == ["new"]
    store.close()
