"""Every persona message becomes a training target exactly once, on every export format."""

from __future__ import annotations

import csv
import json
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from convert.dataset import BuildOptions, build_dataset
from models import load_persona

# (seconds since start, author, text): openers after long gaps, double-texts and bursts.
Chat = list[tuple[float, str, str]]


def _chat(seed: int) -> Chat:
    """A generated chat between Sam (the persona) and two friends over a few days."""
    rng = random.Random(seed)
    out: Chat = []
    t = 0.0
    for n in range(40):
        t += rng.choice([3 * 3600, 9 * 3600, 30 * 3600])  # each session after a long gap
        for turn in range(rng.randint(1, 6)):
            who = rng.choice(["Sam", "Alice", "Bob"]) if turn else rng.choice(["Sam", "Alice"])
            for k in range(rng.choice([1, 1, 2, 3]) if who == "Sam" else 1):
                t += rng.uniform(5, 300)
                out.append((t, who, f"{who.lower()} line {n}.{turn}.{k}"))
    return out


START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
IDS = {"Sam": "2", "Alice": "1", "Bob": "3"}


def _when(t: float) -> datetime:
    return START + timedelta(seconds=round(t))


def _dce_json(chat: Chat, path: Path) -> Path:
    messages = [
        {
            "id": str(i),
            "type": "Default",
            "timestamp": _when(t).isoformat(),
            "content": text,
            "author": {"id": IDS[who], "name": who, "isBot": False},
            "attachments": [],
            "reactions": [],
            "mentions": [],
        }
        for i, (t, who, text) in enumerate(chat)
    ]
    doc = {"guild": {"id": "1", "name": "g"}, "channel": {"id": "9", "name": "general"}}
    path = path / "general.json"
    path.write_text(json.dumps({**doc, "messages": messages}), encoding="utf-8")
    return path


def _dce_csv(chat: Chat, path: Path) -> Path:
    path = path / "general.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        fh.write("AuthorID,Author,Date,Content,Attachments,Reactions\n")  # unquoted, as DCE
        for t, who, text in chat:
            w.writerow([IDS[who], who, _when(t).isoformat(timespec="milliseconds"), text, "", ""])
    return path


def _dumper(chat: Chat, path: Path) -> Path:
    path = path / "dump.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE Message(username VARCHAR(100), content VARCHAR(2000), sent DATETIME,"
        " channelname VARCHAR(200), messageid BIGINT, userid BIGINT, channelid BIGINT)"
    )
    db.executemany(
        "INSERT INTO Message VALUES (?,?,?,?,?,?,?)",
        [
            (who, text, _when(t).strftime("%Y-%m-%d %H:%M:%S"), "general", i, IDS[who], 10)
            for i, (t, who, text) in enumerate(chat)
        ],
    )
    db.commit()
    db.close()
    return path


def _telegram(chat: Chat, path: Path) -> Path:
    messages = [
        {
            "id": i + 1,
            "type": "message",
            "date": _when(t).replace(tzinfo=None).isoformat(),
            "date_unixtime": str(int(_when(t).timestamp())),
            "from": who,
            "from_id": f"user{IDS[who]}",
            "text": text,
            "text_entities": [],
        }
        for i, (t, who, text) in enumerate(chat)
    ]
    path = path / "result.json"
    path.write_text(
        json.dumps({"name": "general", "type": "private_group", "id": 4, "messages": messages}),
        encoding="utf-8",
    )
    return path


def _whatsapp(chat: Chat, path: Path) -> Path:
    path = path / "WhatsApp Chat with general.txt"
    lines = [f"{_when(t).strftime('%d/%m/%y, %H:%M')} - {who}: {text}\n" for t, who, text in chat]
    path.write_text("".join(lines), encoding="utf-8")
    return path


FORMATS: dict[str, Callable[[Chat, Path], Path]] = {
    "discordchatexporter-json": _dce_json,
    "discordchatexporter-csv": _dce_csv,
    "discorddumper-sqlite": _dumper,
    "telegram": _telegram,
    "whatsapp": _whatsapp,
}


def _targets(out: Path) -> list[Any]:
    rows = (out / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(r) for r in rows]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("seed", [1, 2])
def test_every_persona_message_is_one_target(tmp_path: Path, fmt: str, seed: int) -> None:
    """Targets equal the persona's messages one to one: openers, double-texts and bursts."""
    chat = _chat(seed)
    export = FORMATS[fmt](chat, tmp_path)
    out = tmp_path / "out"
    summary = build_dataset([export], out, BuildOptions(persona="Sam", session_gap=7200))
    mine = [text for _, who, text in chat if who == "Sam"]
    targets = _targets(out)
    assert [r["completion"] for r in targets] == [f"Sam: {text}\n" for text in mine]
    assert summary.targets == len(mine)
    chat_rows = (out / "chat.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(chat_rows) == len(mine)
    openers = [r for r in targets if r["prompt"] == "Sam: INIT;\n"]
    # A session opened by Sam is learned from the INIT line alone, as the runtime prompts it.
    assert openers, "the generated chat has conversations Sam opened"
    first = [c for i, c in enumerate(chat) if i == 0 or c[0] - chat[i - 1][0] >= 7200]
    assert len(openers) == sum(1 for _, who, _ in first if who == "Sam")


def test_build_writes_a_manifest_skeleton(tmp_path: Path) -> None:
    """Beside the profile sits a persona manifest that loads as it is."""
    export = _dce_json(_chat(3), tmp_path)
    out = tmp_path / "out"
    summary = build_dataset([export], out, BuildOptions(persona="2"))
    assert summary.files["manifest"] == out / "persona.toml"
    persona = load_persona(out / "persona.toml")
    assert persona.name == "Sam" and persona.format == "transcript"
    assert persona.profile == out / "profile.toml"
    assert persona.behaviour.channels == ["general"]
    assert (out / "persona.toml").stat().st_mode & 0o777 == 0o600


def test_outputs_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Everyone's messages end up in the outputs: the directory is 0700, every file 0600."""
    import os

    export = _dce_json(_chat(4), tmp_path)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        summary = build_dataset([export], out, BuildOptions(persona="2"))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o700
    for path in summary.files.values():
        assert path.stat().st_mode & 0o777 == 0o600, path
