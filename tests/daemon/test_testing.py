"""The shipped fake engine: scripted, deterministic, and an Engine the daemon serves over HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

from daemon import Engine
from daemon._types import GenerationParams, Piece
from daemon.testing import ScriptedEngine, scripted_loader
from tests.conftest import make_settings, serve, write_model


def _run(
    engine: ScriptedEngine,
    text: str = "Hi",
    cancel: threading.Event | None = None,
    **params: object,
) -> list[Piece]:
    prompt = engine.text_prompt(text)
    return list(engine.generate(prompt, GenerationParams(**params), cancel or threading.Event()))  # type: ignore[arg-type]


def _text(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces)


def test_replies_come_in_script_order_then_run_out() -> None:
    """A list of replies is consumed in order; one more generation is a clear error."""
    engine = ScriptedEngine(["one", "two"])
    assert _text(_run(engine)) == "one"
    last = _run(engine)
    assert _text(last) == "two" and last[-1].finish_reason == "stop"
    with pytest.raises(RuntimeError, match="no reply left"):
        _run(engine)


def test_a_function_of_the_prompt_answers() -> None:
    """A callable script gets the rendered prompt text, chat markers included."""
    engine = ScriptedEngine(lambda prompt: prompt.upper())
    assert _text(_run(engine, "hello there")) == "HELLO THERE"
    prompt = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    assert engine.detokenize(prompt.tokens) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert prompt.stop == ("<|end|>",)


def test_max_tokens_counts_words_or_characters() -> None:
    """max_tokens cuts the reply after that many words (or characters) with 'length'."""
    words = _run(ScriptedEngine(["the quick brown fox"]), max_tokens=2)
    assert _text(words) == "the quick"
    assert words[-1].finish_reason == "length" and words[-1].completion_tokens == 2
    chars = _run(ScriptedEngine(["the quick"], tokenizer="char"), max_tokens=3)
    assert _text(chars) == "the" and chars[-1].completion_tokens == 3
    assert ScriptedEngine(tokenizer="char").text_prompt("abc").tokens == [97, 98, 99]


def test_stop_strings_cut_the_reply_and_never_leak() -> None:
    """The reply ends before a stop string, even one spanning tokens, which no piece shows."""
    engine = ScriptedEngine(["alpha beta gamma delta"] * 2)
    pieces = _run(engine, stop=("ta gam",))
    assert _text(pieces) == "alpha be"
    assert pieces[-1].finish_reason == "stop" and pieces[-1].completion_tokens == 3
    assert all("ta" not in p.text for p in pieces)
    chat = engine.chat_prompt([{"role": "user", "content": "x"}])
    out = list(engine.generate(chat, GenerationParams(), threading.Event()))
    assert _text(out) == "alpha beta gamma delta"  # the format's stop string is not in it


def test_cancel_stops_between_tokens() -> None:
    """Setting the cancel event ends the generation at the next token with 'cancelled'."""
    cancel = threading.Event()
    engine = ScriptedEngine(["a b c d e"], on_token=lambda i: cancel.set() if i == 1 else None)
    pieces = _run(engine, cancel=cancel)
    assert pieces[-1].finish_reason == "cancelled" and pieces[-1].completion_tokens == 2


def test_gate_holds_generation_until_set_or_cancelled() -> None:
    """With a gate, a generation yields one token and waits for the gate or its cancellation."""
    gate, cancel = threading.Event(), threading.Event()
    engine = ScriptedEngine(["a b c"] * 2, gate=gate)
    pieces = engine.generate(engine.text_prompt("x"), GenerationParams(), cancel)
    assert next(pieces).text == "a"
    cancel.set()
    assert list(pieces)[-1].finish_reason == "cancelled"
    gate.set()
    assert _text(_run(engine)) == "a b c"


def test_conversations_are_recorded_cached_and_dropped() -> None:
    """Calls record conversation and adapter; a follow-up is a cache hit; drops are recorded."""
    engine = ScriptedEngine(adapters=["warm"])
    params, cancel = GenerationParams(), threading.Event()
    for text in ("one two three", "one two three four"):
        *_, last = engine.generate(engine.text_prompt(text), params, cancel, "c1", "warm")
    assert last.cache_hit and last.cached_tokens == 3
    assert [(c.conversation, c.adapter) for c in engine.calls] == [("c1", "warm")] * 2
    assert engine.drop_conversation("c1") == 1 and engine.dropped == ["c1"]
    assert engine.drop_conversation("c1") == 0


def test_scripted_engine_is_an_engine_without_llama_cpp() -> None:
    """The fake satisfies the Engine protocol, and importing it never imports llama_cpp."""
    assert isinstance(ScriptedEngine(), Engine)
    code = "import sys, daemon.testing; assert 'llama_cpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_the_official_client_talks_to_a_scripted_daemon(tmp_path: Path, demo_path: Path) -> None:
    """Served over HTTP, the fake answers the openai client in script order with usage."""
    write_model(tmp_path / "models", "tiny", demo_path, context_length=64)
    loader = scripted_loader(["Hello there, friend.", "Bye now."])
    with serve(make_settings(tmp_path), loader=loader) as running:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0)
        chat = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Say hello."}],
            extra_body={"conversation": "c-1"},
        )
        assert chat.choices[0].message.content == "Hello there, friend."
        assert chat.usage is not None and chat.usage.completion_tokens == 3
        assert chat.usage.prompt_tokens == 5  # "<|user|>\nSay hello.<|end|>\n<|assistant|>\n"
        chunks = client.completions.create(model="tiny", prompt="Go", stream=True)
        assert "".join(c.choices[0].text for c in chunks) == "Bye now."
        assert running.daemon.manager.drop_conversation("c-1") == 1
    smol, tiny = loader.engines["smollm2"], loader.engines["tiny"]
    assert smol.calls[0].conversation == "c-1" and smol.dropped == ["c-1"]
    assert tiny.n_ctx == 64 and smol.closed and tiny.closed


def test_a_conversation_forgotten_while_its_request_waits_keeps_no_state(tmp_path: Path) -> None:
    """A drop while a request of that conversation is queued is repeated when it has run, so
    the state it saves (its prompt held the forgotten words) goes too."""
    import time

    import httpx

    from ..conftest import make_settings, serve

    gate = threading.Event()
    loader = scripted_loader(["first reply", "second reply"], gate=gate)
    with serve(make_settings(tmp_path), loader=loader) as running:

        def post(conversation: str) -> None:
            body = {"prompt": "hi", "max_tokens": 5, "conversation": conversation}
            httpx.post(f"{running.url}/v1/completions", json=body, timeout=60)

        busy = threading.Thread(target=post, args=("other",))
        busy.start()
        running.wait(lambda h: any(h["running"].values()))
        queued = threading.Thread(target=post, args=("forgotten",))
        queued.start()
        running.wait(lambda h: sum(h["queued"].values()) == 1)
        httpx.delete(f"{running.url}/v1/conversations/forgotten", timeout=10)
        gate.set()
        busy.join(60)
        queued.join(60)
        engine = next(iter(loader.engines.values()))
        deadline = time.monotonic() + 10
        while engine.dropped.count("forgotten") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert engine.dropped.count("forgotten") == 2
