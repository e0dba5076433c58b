"""The OpenAI-compatible API, driven by the official openai client against a real daemon."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import NO_EOS, Running, make_settings, serve, write_model

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(shared_daemon: Running) -> openai.OpenAI:
    """The official client pointed at the shared daemon."""
    return openai.OpenAI(base_url=f"{shared_daemon.url}/v1", api_key="unused", max_retries=0)


def test_chat_completion(client: openai.OpenAI) -> None:
    """A chat completion uses the GGUF chat template and reports usage."""
    r = client.chat.completions.create(
        model="smollm2", messages=HELLO, temperature=0, max_tokens=30
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and "Hello" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_matches_non_stream(client: openai.OpenAI) -> None:
    """Greedy streaming yields the same text as greedy non-streaming, in several chunks."""
    full = client.chat.completions.create(
        model="smollm2", messages=HELLO, temperature=0, max_tokens=30
    )
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=HELLO,
            temperature=0,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == full.choices[0].finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_raw_completion_and_stream(client: openai.OpenAI) -> None:
    """Raw completions take the prompt as is, streamed or not."""
    r = client.completions.create(
        model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=3
    )
    assert r.choices[0].text.startswith(" Paris")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3  # type: ignore[union-attr]
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="smollm2",
            prompt="The capital of France is",
            temperature=0,
            max_tokens=3,
            stream=True,
        )
    )
    assert streamed == r.choices[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences(client: openai.OpenAI, stream: bool) -> None:
    """Text stops before the first stop sequence, which is not returned."""
    kwargs = dict(
        model="smollm2",
        prompt="The capital of France is",
        temperature=0,
        max_tokens=20,
        stop=[".", "zzz"],
    )
    if stream:
        chunks = list(client.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        r = client.completions.create(**kwargs)  # type: ignore[call-overload]
        text, finish = r.choices[0].text, r.choices[0].finish_reason
    assert text == " Paris"
    assert finish == "stop"


def test_stop_sequence_spanning_tokens(client: openai.OpenAI) -> None:
    """A stop string split across tokens is held back while streaming and never leaks."""
    base = (
        client.completions.create(
            model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=12
        )
        .choices[0]
        .text
    )
    stop = base[3:9]  # a stop string that starts mid-token
    chunks = list(
        client.completions.create(
            model="smollm2",
            prompt="The capital of France is",
            temperature=0,
            max_tokens=12,
            stop=[stop],
            stream=True,
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == base[:3]


def test_seed_and_sampling_parameters(client: openai.OpenAI) -> None:
    """Same seed, same text; the llama.cpp sampling knobs are accepted as extra fields."""

    def sample(seed: int) -> str:
        r = client.completions.create(
            model="smollm2",
            prompt="Once upon a time",
            temperature=1.0,
            top_p=0.9,
            max_tokens=16,
            seed=seed,
            extra_body={"top_k": 50, "min_p": 0.01, "repeat_penalty": 1.2},
        )
        return r.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_logit_bias_bans_end_of_generation(client: openai.OpenAI) -> None:
    """logit_bias -100 on the EOG tokens forces the generation to run to max_tokens."""
    r = client.chat.completions.create(
        model="smollm2",
        messages=HELLO,
        temperature=0,
        max_tokens=40,
        logit_bias={int(k): v for k, v in NO_EOS.items()},
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 40


def test_logit_bias_outside_the_vocabulary_is_400(client: openai.OpenAI) -> None:
    """A logit_bias key past the vocabulary gets 400 naming it, the second time too (when
    the answer is remembered rather than asked of the runner); a key inside it is accepted."""
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="smollm2", messages=HELLO, max_tokens=2, logit_bias={10**6: -100}
            )
        body = info.value.body
        assert isinstance(body, dict) and body["param"] == "logit_bias"
        assert "1000000" in body["message"] and "vocabulary" in body["message"]
    ok = client.chat.completions.create(
        model="smollm2", messages=HELLO, max_tokens=2, logit_bias={100: 1}
    )
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_prompt_longer_than_context_is_400(client: openai.OpenAI) -> None:
    """A prompt past the context gets 400 naming both lengths; the daemon keeps serving."""
    long = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-ctx", messages=long)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert "64 tokens" in body["message"] and "the prompt is 2" in body["message"]
    ok = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_model_that_fails_to_load_is_500_with_reason(tmp_path: Path) -> None:
    """A manifest pointing at a broken file gives a 500 that says why; others still work."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 100)
    write_model(tmp_path / "models", "junk", junk)
    with serve(make_settings(tmp_path)) as running:
        c = openai.OpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model="junk", messages=HELLO)
        assert "could not be loaded" in str(info.value) and "junk.gguf" in str(info.value)
        assert c.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2)


def test_conversation_kv_state_metrics(shared_daemon: Running, client: openai.OpenAI) -> None:
    """A follow-up in the same conversation reuses its KV state (live in its slot, or restored:
    a hit); bytes in RAM are reported."""
    history = " ".join(f"line {i} of a long chat about hiking." for i in range(40))

    def reused() -> float:
        return sum(
            shared_daemon.metric("personad_kv_cache_lookups_total", model="smollm2", result=r)
            for r in ("hit", "live")
        )

    before = reused()
    first = client.completions.create(
        model="smollm2",
        prompt=history,
        max_tokens=5,
        temperature=0,
        extra_body={"conversation": "kv-1"},
    )
    client.completions.create(
        model="smollm2", prompt="unrelated words", max_tokens=2, extra_body={"conversation": "kv-2"}
    )
    client.completions.create(
        model="smollm2",
        prompt=history + first.choices[0].text + " ok",
        max_tokens=2,
        extra_body={"conversation": "kv-1"},
    )
    m = shared_daemon.metric
    assert reused() == before + 1
    assert m("personad_kv_cache_tokens_total", model="smollm2", kind="restored") > 100
    assert m("personad_kv_cache_bytes", model="smollm2", where="ram") > 0
