"""The training export writes exactly the text the runtime prompts the model with."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridges import Attachment
from convert.dataset import BuildOptions, build_dataset
from models import load_persona
from tests.bridges.test_behaviour import ALEX, BOB, make_world


def _export(history: list[Any], path: Path) -> Path:
    """The engine's stored history written as a DiscordChatExporter JSON export."""
    messages = []
    for m in history:
        base = {
            "id": m.message_id,
            "type": "Reply" if m.kind == "reply" else "Default",
            "timestamp": m.ts.isoformat(),
            "content": m.text,
            "author": {"id": m.author_id, "name": m.author_name, "isBot": False},
            "attachments": [],
            "reactions": [],
            "mentions": [],
        }
        if m.kind == "reply":
            base["reference"] = {"messageId": m.reply_to}
        if m.kind == "photo":
            base["content"] = ""
            base["attachments"] = [{"fileName": "x.png"}]
        messages.append(base)
    path.write_text(
        json.dumps(
            {
                "guild": {"id": "1", "name": "g"},
                "channel": {"id": "general", "name": "general"},
                "messages": messages,
            }
        )
    )
    return path


def test_runtime_prompt_equals_training_prompt(tmp_path: Path) -> None:
    """For the same history, the engine's prompt is the export's prompt for Robin's line."""

    async def run() -> tuple[str, list[Any]]:
        w = make_world(tmp_path, ["Bob: x", "Bob: y", "Robin: sure, pizza!"], context_lines=4)
        await w.engine.start()
        await w.bridge.say(ALEX, "this is an old conversation")
        await w.clock.advance(60)
        await w.clock.advance(3 * 3600)
        await w.bridge.say(ALEX, "lunch?")
        await w.clock.advance(60)
        await w.bridge.say(BOB, "", attachments=[Attachment("photo", None)])
        await w.bridge.say(ALEX, "what do you say")
        await w.bridge.say(BOB, "pizza place?", reply_to="m1")
        await w.bridge.say(ALEX, "hm")
        await w.clock.advance(60)
        history = w.store.for_persona("Robin").recent("fake", "general", 100)
        return w.completer.calls[-1].prompt, history

    runtime_prompt, history = asyncio.run(run())
    assert history[-1].author_name == "Robin" and history[-1].text == "sure, pizza!"
    export = _export(history, tmp_path / "export.json")
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="Robin", context_lines=4))
    examples = [json.loads(x) for x in (out / "transcript.jsonl").read_text().splitlines()]
    assert examples[-1]["prompt"] == runtime_prompt
    assert examples[-1]["completion"] == "Robin: sure, pizza!\n"
    assert runtime_prompt == (
        "Bob: INIT;\nBob: PHOTO;\nAlex: what do you say\nBob: REPLY: pizza place?\nAlex: hm\n"
    )


def test_profile_recovers_a_known_schedule(tmp_path: Path) -> None:
    """A person who sleeps 01:00-09:00 Berlin time, types 6 chars/s and opens twice a day
    is profiled as such, and a persona manifest including the profile behaves so."""
    messages = []
    start = datetime(2024, 1, 1, tzinfo=UTC)
    mid = 0
    for day in range(28):
        for hour in [*range(9, 24), 0]:
            local = start + timedelta(days=day, hours=hour - 1)  # Berlin = UTC+1 in winter
            for minute in (5, 35):
                t = local + timedelta(minutes=minute)
                mid += 1
                messages.append(
                    {
                        "id": str(mid),
                        "timestamp": t.isoformat(),
                        "content": "hello friends",
                        "author": {"id": "1", "name": "Alex"},
                    }
                )
                mid += 1
                messages.append(
                    {
                        "id": str(mid),
                        "timestamp": (t + timedelta(seconds=30)).isoformat(),
                        "content": "x" * 60,
                        "author": {"id": "2", "name": "Sam"},
                    }
                )
                mid += 1
                messages.append(
                    {
                        "id": str(mid),
                        "timestamp": (t + timedelta(seconds=35)).isoformat(),
                        "content": "y" * 30,
                        "author": {"id": "2", "name": "Sam"},
                    }
                )
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            {
                "guild": {"id": "1", "name": "g"},
                "channel": {"id": "c", "name": "general"},
                "messages": messages,
            }
        )
    )
    out = tmp_path / "out"
    build_dataset(
        [export], out, BuildOptions(persona="Sam", timezone="Europe/Berlin", session_gap=1200)
    )
    import tomllib

    profile = tomllib.loads((out / "profile.toml").read_text())
    b = profile["behaviour"]
    assert b["sleep_hours"] == [1, 9] and b["active_hours"] == [9, 1]
    assert b["typing_speed"] == 6.0
    assert profile["stats"]["burst_length"]["p50"] == 2
    assert profile["stats"]["reply_latency_seconds"]["p50"] == 30
    # Alex opens every conversation here, so Sam starts none.
    assert b["starts_per_day"] == 0
    assert sum(profile["stats"]["hour_of_week"]) == 28 * 16 * 2 * 2
    manifest = tmp_path / "sam.toml"
    manifest.write_text(
        f'name = "Sam"\nprofile = "{out / "profile.toml"}"\n'
        '[card]\ndescription = "Sam."\n[behaviour]\ntyping_speed = 9\n'
    )
    persona = load_persona(manifest)
    assert persona.behaviour.sleep_hours == (1, 9)
    assert persona.behaviour.timezone == "Europe/Berlin"
    assert persona.behaviour.typing_speed == 9  # the manifest's own value wins
