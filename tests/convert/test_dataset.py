"""The training export writes exactly the text the runtime prompts the model with."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridges.testing import ScriptedCompleter
from convert._dataset import transcript_examples
from models import Event
from tests.bridges.test_behaviour import ALEX, BOB, make_world


def test_runtime_prompt_equals_training_prompt(tmp_path: Path) -> None:
    """For the same history, the engine's prompt is the export's prompt for Robin's line."""

    async def run() -> tuple[str, list[Event]]:
        w = make_world(tmp_path, ["Bob: x", "Bob: y", "Robin: sure, pizza!"], context_lines=4)
        await w.engine.start()
        await w.bridge.say(ALEX, "this is an old conversation")
        await w.clock.advance(60)
        await w.clock.advance(3 * 3600)
        await w.bridge.say(ALEX, "lunch?")
        await w.clock.advance(60)
        await w.bridge.say(BOB, "", attachments=[__import__("bridges").Attachment("photo", "menu")])
        await w.bridge.say(ALEX, "what do you say")
        await w.bridge.say(BOB, "pizza place?", reply_to="m1")
        await w.bridge.say(ALEX, "hm")
        await w.clock.advance(60)
        assert isinstance(w.completer, ScriptedCompleter)
        history = [m.event() for m in w.store.recent("Robin", "fake", "general", 100)]
        return w.completer.calls[-1].prompt, history

    runtime_prompt, history = asyncio.run(run())
    # The history now holds what Robin said next, as a chat export would record it.
    assert history[-1] == Event("Robin", "message", "sure, pizza!", history[-1].ts)
    examples = list(transcript_examples(history, "Robin", session_gap=7200, context_lines=4))
    assert examples[-1]["prompt"] == runtime_prompt
    assert examples[-1]["completion"] == "Robin: sure, pizza!\n"
    assert runtime_prompt == (
        "Bob: INIT;\nBob: PHOTO: menu;\nAlex: what do you say\nBob: REPLY: pizza place?\nAlex: hm\n"
    )
