"""The OpenAI-compatible API's routes, errors and metrics, on the scripted engine.

What these tests check does not depend on what a model says (the text tests are in test_api.py,
on the real model), so they need no model load and run in seconds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from daemon.testing import ScriptedEngine, scripted_loader
from tests.conftest import NO_EOS, Running, make_settings, serve, write_model

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_path: Path) -> Iterator[Running]:
    """A scripted daemon with the demo model preloaded and a tiny-context twin; its replies
    are long and its gate is open."""
    tmp = tmp_path_factory.mktemp("api")
    write_model(tmp / "models", "tiny-ctx", demo_path, context_length=64)
    gate = threading.Event()
    gate.set()
    loader = scripted_loader(lambda prompt: " n" * 1000, gate=gate)
    settings = make_settings(tmp, preload=["smollm2"], max_loaded_models=2)
    with serve(settings, loader=loader) as running:
        running.wait(lambda h: h["status"] == "ok" and "smollm2" in h["loaded"])
        yield running


@pytest.fixture(scope="module")
def client(daemon: Running) -> openai.OpenAI:
    """The official client pointed at the scripted daemon."""
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0)


def _engine(running: Running) -> ScriptedEngine:
    engine = running.daemon.manager.slots()[0].model
    assert isinstance(engine, ScriptedEngine)
    return engine


def test_models_endpoint(client: openai.OpenAI) -> None:
    """GET /v1/models lists the catalogue."""
    ids = {m.id for m in client.models.list()}
    assert {"smollm2", "tiny-ctx"} <= ids


def test_unknown_model_is_404_listing_names(client: openai.OpenAI) -> None:
    """An unknown model gets OpenAI's 404 error object naming the known models."""
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=HELLO)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "smollm2" in body["message"] and "tiny-ctx" in body["message"]


def test_bad_parameters_are_400(client: openai.OpenAI) -> None:
    """Out-of-range parameters are a 400 naming the parameter."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=HELLO, temperature=7)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "temperature"


def test_invalid_json_body_is_400(daemon: Running) -> None:
    """A body that is not JSON gets an OpenAI error object, not a crash."""
    r = httpx.post(
        f"{daemon.url}/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_health_answers_fast_during_generation(daemon: Running, client: openai.OpenAI) -> None:
    """/health answers within 50 ms (median of 20) while a long generation runs."""
    done, gate = threading.Event(), _engine(daemon).gate
    assert gate is not None
    gate.clear()  # the generation holds the worker past its first token

    def long_generation() -> None:
        client.completions.create(
            model="smollm2",
            prompt="Count:",
            max_tokens=400,
            logit_bias={int(k): v for k, v in NO_EOS.items()},
        )
        done.set()

    worker = threading.Thread(target=long_generation)
    worker.start()
    daemon.wait(lambda h: h["running"].get("smollm2", False))
    timings = []
    with httpx.Client(base_url=daemon.url) as http:
        for _ in range(20):
            t0 = time.perf_counter()
            assert http.get("/health").status_code == 200
            timings.append(time.perf_counter() - t0)
    still_running = not done.is_set()
    gate.set()
    worker.join()
    assert still_running, "the generation ended before the health checks did"
    assert statistics.median(timings) < 0.050, timings


def test_metrics_exposes_queue_tokens_and_models(daemon: Running, client: openai.OpenAI) -> None:
    """/metrics has queue depth and waits per priority, token counters and loaded models."""
    before = daemon.metric("personad_generated_tokens_total", model="smollm2")
    client.completions.create(
        model="smollm2",
        prompt="Hi",
        max_tokens=5,
        extra_body={"priority": "background"},
        logit_bias={int(k): v for k, v in NO_EOS.items()},
    )
    m = daemon.metric
    assert m("personad_generated_tokens_total", model="smollm2") == before + 5
    assert m("personad_prompt_tokens_total", model="smollm2") > 0
    assert m("personad_queue_wait_seconds_count", model="smollm2", priority="background") >= 1
    assert m("personad_generation_seconds_count", model="smollm2") >= 1
    assert m("personad_model_loaded", model="smollm2") == 1
    text = httpx.get(f"{daemon.url}/metrics").text
    assert 'personad_queue_depth{model="smollm2",priority="interactive"}' in text


def test_api_key_required_except_health(tmp_path: Path, demo_path: Path) -> None:
    """With an API key, every route but /health needs the bearer token."""
    settings = make_settings(tmp_path, server={"api_key": "k-12345678"})
    with serve(settings, loader=scripted_loader()) as running:
        assert httpx.get(f"{running.url}/health").status_code == 200
        assert httpx.get(f"{running.url}/metrics").status_code == 401
        bad = openai.OpenAI(base_url=f"{running.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=f"{running.url}/v1", api_key="k-12345678", max_retries=0)
        assert any(m.id == "smollm2" for m in good.models.list())
