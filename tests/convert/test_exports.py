"""Every export format, hand-written and realistic, produces exactly the expected JSONL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convert.dataset import BuildOptions, build_dataset, detect
from convert.errors import ExportFormatError


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _transcript(out: Path) -> list[tuple[str, str]]:
    return [(r["prompt"], r["completion"]) for r in _jsonl(out / "transcript.jsonl")]


def _user(uid: str, name: str, nick: str | None = None, bot: bool = False) -> dict[str, Any]:
    return {
        "id": uid,
        "name": name,
        "discriminator": "0000",
        "nickname": nick or name,
        "isBot": bot,
    }


ALICE = _user("1", "alice", "Alice")
SAM = _user("2", "sam", "Sam")
BOT = _user("9", "remindbot", "RemindBot", bot=True)


def _dce_message(
    mid: str, ts: str, author: dict[str, Any], content: str, **extra: Any
) -> dict[str, Any]:
    return {
        "id": mid,
        "type": extra.pop("type", "Default"),
        "timestamp": ts,
        "timestampEdited": extra.pop("edited", None),
        "isPinned": False,
        "content": content,
        "author": author,
        "attachments": extra.pop("attachments", []),
        "embeds": [],
        "stickers": [],
        "reactions": extra.pop("reactions", []),
        "mentions": extra.pop("mentions", []),
        **extra,
    }


def dce_json(path: Path) -> Path:
    """A DiscordChatExporter JSON export of #general with a night between conversations."""
    messages = [
        _dce_message("101", "2024-01-05T20:00:00.000+01:00", ALICE, "anyone up for pizza?"),
        _dce_message(
            "102",
            "2024-01-05T20:01:10.000+01:00",
            SAM,
            "me! 🍕",
            type="Reply",
            reference={"messageId": "101", "channelId": "7", "guildId": "5"},
            reactions=[
                {
                    "emoji": {"id": None, "name": "😂", "code": "joy", "isAnimated": False},
                    "count": 1,
                    "users": [ALICE],
                }
            ],
        ),
        _dce_message("103", "2024-01-05T20:01:30.000+01:00", BOT, "Daily reminder: drink water"),
        _dce_message(
            "104",
            "2024-01-05T20:02:00.000+01:00",
            ALICE,
            "",
            attachments=[
                {
                    "id": "1",
                    "url": "https://cdn/cat.jpg",
                    "fileName": "cat.jpg",
                    "fileSizeBytes": 1000,
                }
            ],
        ),
        _dce_message("105", "2024-01-05T20:03:00.000+01:00", SAM, "https://pizza.example/menu"),
        _dce_message(
            "106",
            "2024-01-06T09:00:00.000+01:00",
            ALICE,
            "morning @sam",
            mentions=[SAM],
            edited="2024-01-06T09:00:30.000+01:00",
        ),
        _dce_message(
            "107",
            "2024-01-06T09:00:40.000+01:00",
            ALICE,
            "Pinned a message.",
            type="ChannelPinnedMessage",
        ),
        _dce_message(
            "108",
            "2024-01-06T09:01:00.000+01:00",
            SAM,
            "morning! mail me at sam@example.org or +44 20 7946 0958",
        ),
        _dce_message("109", "2024-01-06T09:01:30.000+01:00", SAM, "coffee first"),
    ]
    data = {
        "guild": {"id": "5", "name": "Friends", "iconUrl": ""},
        "channel": {
            "id": "7",
            "type": "GuildTextChat",
            "categoryId": None,
            "category": "Text",
            "name": "general",
            "topic": None,
        },
        "dateRange": {"after": None, "before": None},
        "exportedAt": "2024-02-01T00:00:00Z",
        "messages": messages,
        "messageCount": len(messages),
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def test_discordchatexporter_json(tmp_path: Path) -> None:
    """Replies, reactions, attachments, bots, system lines, links, redaction, session gaps."""
    export = dce_json(tmp_path / "general.json")
    out = tmp_path / "out"
    summary = build_dataset([export], out, BuildOptions(persona="Sam", redact=True))
    assert _transcript(out) == [
        ("Alice: INIT;\nAlice: anyone up for pizza?\n", "Sam: REPLY: me! 🍕\n"),
        ("Alice: INIT;\nAlice: morning @Sam\n", "Sam: morning! mail me at [email] or [phone]\n"),
        (
            "Alice: INIT;\nAlice: morning @Sam\nSam: morning! mail me at [email] or [phone]\n",
            "Sam: coffee first\n",
        ),
    ]
    chat = _jsonl(out / "chat.jsonl")
    assert chat[0]["messages"][-1] == {"role": "assistant", "content": "REPLY: me! 🍕"}
    assert chat[0]["messages"][0]["role"] == "system"
    assert "Alice: anyone up for pizza?" in chat[0]["messages"][1]["content"]
    assert _jsonl(out / "alpaca.jsonl")[2] == {
        "instruction": "You are Sam in a group chat with friends. Write Sam's next message.",
        "input": "Alice: INIT;\nAlice: morning @Sam\nSam: morning! mail me at [email] or [phone]",
        "output": "coffee first",
    }
    general = summary.as_dict()["channels"]["general"]
    assert general == {
        "kept": 6,
        "examples": 3,
        "dropped": {"bot": 1, "link only": 1, "system message": 1},
    }


def test_discordchatexporter_csv(tmp_path: Path) -> None:
    """The CSV export (no reply links, no reaction authors) with attachments and a names map."""
    export = tmp_path / "random.csv"
    export.write_text(
        "AuthorID,Author,Date,Content,Attachments,Reactions\n"
        '"1","alice","2024-03-01T10:00:00.000+00:00","look at this","https://cdn/a.mp4",""\n'
        '"2","sam","2024-03-01T10:00:30.000+00:00","haha, amazing","","😂 (2)"\n'
        '"2","sam","2024-03-01T10:00:50.000+00:00","where was that?","",""\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="2", names={"1": "Ali", "2": "Sam"}))
    assert _transcript(out) == [
        ("Ali: INIT;\nAli: look at this\nAli: VIDEO;\n", "Sam: haha, amazing\n"),
        (
            "Ali: INIT;\nAli: look at this\nAli: VIDEO;\nSam: haha, amazing\n",
            "Sam: where was that?\n",
        ),
    ]


def test_discorddumper_sqlite(tmp_path: Path) -> None:
    """Raw <@id> mentions, duplicated rows from re-runs, and an excluded counting channel."""
    export = tmp_path / "dump.db"
    db = sqlite3.connect(export)
    db.execute(
        "CREATE TABLE Message(username VARCHAR(100), content VARCHAR(2000), sent DATETIME,"
        " channelname VARCHAR(200), messageid BIGINT, userid BIGINT, channelid BIGINT)"
    )
    rows = [
        ("alice", "hey <@222>", "2024-04-01 18:00:00", "general", 1, 111, 10),
        ("sam", "hi <@111>!", "2024-04-01 18:00:20", "general", 2, 222, 10),
        ("sam", "hi <@111>!", "2024-04-01 18:00:20", "general", 2, 222, 10),  # re-run copy
        ("alice", "1", "2024-04-01 18:01:00", "counting", 3, 111, 11),
        ("sam", "2", "2024-04-01 18:01:10", "counting", 4, 222, 11),
    ]
    db.executemany("INSERT INTO Message VALUES (?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    out = tmp_path / "out"
    summary = build_dataset(
        [export],
        out,
        BuildOptions(persona="sam", exclude_channels=["counting"], names={"111": "Ali"}),
    )
    assert _transcript(out) == [("Ali: INIT;\nAli: hey @sam\n", "sam: hi @Ali!\n")]
    assert summary.as_dict()["channels"]["counting"]["dropped"] == {"channel excluded": 2}


def _tg(mid: int, unix: int, who: str, uid: str, text: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "date": "2024-05-01T12:00:00",
        "date_unixtime": str(unix),
        "from": who,
        "from_id": uid,
        "text": text,
        "text_entities": [],
        **extra,
    }


TG_MESSAGES = [
    {
        "id": 1,
        "type": "service",
        "date": "2024-05-01T11:59:00",
        "date_unixtime": "1714564740",
        "actor": "Alice",
        "actor_id": "user1",
        "action": "create_group",
        "text": "",
    },
    _tg(
        2,
        1714564800,
        "Alice",
        "user1",
        ["see ", {"type": "link", "text": "https://t.me/x"}, " this"],
    ),
    _tg(
        3,
        1714564830,
        "Sam",
        "user2",
        "nice",
        reply_to_message_id=2,
        reactions=[
            {
                "type": "emoji",
                "count": 1,
                "emoji": "❤",
                "recent": [{"from": "Alice", "from_id": "user1", "date": "x"}],
            }
        ],
    ),
    _tg(4, 1714564860, "Alice", "user1", "", photo="photos/photo_1.jpg", width=1, height=1),
    _tg(5, 1714564870, "Alice", "user1", "a joke", forwarded_from="Some Channel"),
    _tg(6, 1714564900, "Sam", "user2", "lol"),
]


def test_telegram_single_chat(tmp_path: Path) -> None:
    """Text entity lists, service messages, replies, reactions, photos, forwards."""
    export = tmp_path / "result.json"
    export.write_text(
        json.dumps({"name": "Friends", "type": "private_group", "id": 42, "messages": TG_MESSAGES}),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    summary = build_dataset([export], out, BuildOptions(persona="user2"))
    assert _transcript(out) == [
        ("Alice: INIT;\nAlice: see this\n", "Sam: REPLY: nice\n"),
        (
            "Alice: INIT;\nAlice: see this\nSam: REPLY: nice\nAlice: REACT: ❤;\nAlice: PHOTO;\n",
            "Sam: lol\n",
        ),
    ]
    assert summary.as_dict()["channels"]["Friends"]["dropped"] == {
        "system message": 1,
        "forwarded": 1,
    }


def test_telegram_full_export(tmp_path: Path) -> None:
    """The full export (chats.list) keeps each chat separate."""
    export = tmp_path / "result.json"
    other = [_tg(1, 1714600000, "Bob", "user3", "yo"), _tg(2, 1714600010, "Sam", "user2", "yo!")]
    export.write_text(
        json.dumps(
            {
                "about": "Here is the data you requested.",
                "personal_information": {"user_id": 2, "first_name": "Sam"},
                "chats": {
                    "about": "",
                    "list": [
                        {
                            "name": "Friends",
                            "type": "private_group",
                            "id": 42,
                            "messages": TG_MESSAGES,
                        },
                        {"name": "Bob", "type": "personal_chat", "id": 3, "messages": other},
                    ],
                },
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    summary = build_dataset([export], out, BuildOptions(persona="Sam"))
    assert _transcript(out)[-1] == ("Bob: INIT;\nBob: yo\n", "Sam: yo!\n")
    assert set(summary.channels) == {"Friends", "Bob"}


def test_whatsapp_android_multiline_and_media(tmp_path: Path) -> None:
    """Android lines, a multi-line message, omitted media, system lines, local time zone."""
    export = tmp_path / "WhatsApp Chat with Friends.txt"
    export.write_text(
        "13/06/24, 21:04 - Messages and calls are end-to-end encrypted. No one outside of "
        "this chat can read them.\n"
        "13/06/24, 21:05 - Alice: dinner tomorrow?\n"
        "we could try the new place\n"
        "13/06/24, 21:06 - Sam: <Media omitted>\n"
        "13/06/24, 21:06 - Sam: that's the menu\n"
        "14/06/24, 08:30 - Alice: so?\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="Sam", timezone="Europe/Berlin"))
    assert _transcript(out) == [
        # Android says only "<Media omitted>": the kind is unknown, so FILE.
        ("Alice: INIT;\nAlice: dinner tomorrow? we could try the new place\n", "Sam: FILE;\n"),
        (
            "Alice: INIT;\nAlice: dinner tomorrow? we could try the new place\nSam: FILE;\n",
            "Sam: that's the menu\n",
        ),
    ]


def test_whatsapp_ios(tmp_path: Path) -> None:
    """iOS lines with seconds, brackets and U+200E before media; month-first dates."""
    export = tmp_path / "_chat.txt"
    export.write_text(
        "[6/13/24, 9:05:01 PM] Alice: hi there\n"
        "\u200e[6/13/24, 9:05:40 PM] Sam: \u200eimage omitted\n"
        "[6/13/24, 9:06:00 PM] Sam: cute right\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="Sam"))
    assert _transcript(out) == [
        ("Alice: INIT;\nAlice: hi there\n", "Sam: PHOTO;\n"),
        ("Alice: INIT;\nAlice: hi there\nSam: PHOTO;\n", "Sam: cute right\n"),
    ]


def test_pseudonymize_others(tmp_path: Path) -> None:
    """Other people get consistent stand-in names; the persona keeps its own."""
    export = dce_json(tmp_path / "general.json")
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="Sam", pseudonymize_others=True))
    prompts = [p for p, _ in _transcript(out)]
    assert prompts[0] == "Friend 1: INIT;\nFriend 1: anyone up for pizza?\n"
    assert "Alice" not in "".join(prompts)


def test_unknown_and_malformed_exports_are_named(tmp_path: Path) -> None:
    """An unknown file names what was expected; a cut JSON names the file and the format."""
    odd = tmp_path / "notes.md"
    odd.write_text("# my notes\n")
    with pytest.raises(ExportFormatError, match=r"notes\.md.*DiscordChatExporter JSON or CSV"):
        detect(odd)
    cut = tmp_path / "cut.json"
    cut.write_text(dce_json(tmp_path / "g.json").read_text()[:1500])
    with pytest.raises(ExportFormatError, match=r"cut\.json.*discordchatexporter-json"):
        build_dataset([cut], tmp_path / "out", BuildOptions(persona="Sam"))
    bad = tmp_path / "chat.txt"
    bad.write_text("13/06/24, 21:05 - Alice: hi\n")
    bad.write_text("hello\n13/06/24, 21:05 - Alice: hi\n")
    with pytest.raises(ExportFormatError):
        build_dataset([bad], tmp_path / "out", BuildOptions(persona="Sam"))
    assert not (tmp_path / "out" / "transcript.jsonl").exists()


def test_unknown_persona_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    """A persona nobody in the export is called fails without leaving files."""
    export = dce_json(tmp_path / "general.json")
    with pytest.raises(ValueError, match="nobody called 'Samantha'"):
        build_dataset([export], tmp_path / "out", BuildOptions(persona="Samantha"))
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_prints_a_summary(tmp_path: Path) -> None:
    """`personad dataset build --json` prints used and dropped counts per channel."""
    export = dce_json(tmp_path / "general.json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "dataset",
            "build",
            str(export),
            "--persona",
            "Sam",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["examples"] == 3 and summary["messages"] == 9
    assert (tmp_path / "out" / "profile.toml").exists()


def test_include_channels(tmp_path: Path) -> None:
    """--include-channel keeps only the named channels; the rest is counted as dropped."""
    general = dce_json(tmp_path / "general.json")
    other = tmp_path / "random.csv"
    other.write_text(
        "AuthorID,Author,Date,Content,Attachments,Reactions\n"
        '"1","alice","2024-03-01T10:00:00+00:00","hi","",""\n'
        '"2","sam","2024-03-01T10:00:05+00:00","hey","",""\n'
    )
    out = tmp_path / "out"
    summary = build_dataset(
        [general, other], out, BuildOptions(persona="sam", include_channels=["random"])
    )
    assert _transcript(out) == [("alice: INIT;\nalice: hi\n", "sam: hey\n")]
    assert summary.as_dict()["channels"]["general"]["dropped"] == {"channel not included": 9}
