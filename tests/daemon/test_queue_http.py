"""Queue semantics seen over HTTP: overflow 503, deadline 504, disconnects, supersede.

None of this depends on what a model says, so the daemon serves the scripted engine: a long
request yields one token and then holds the worker until its client leaves (the engine's gate
stays shut), which is all a test needs to make others queue.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from daemon.testing import ScriptedEngine, scripted_loader
from tests.conftest import NO_EOS, Running, make_settings, serve

LONG = 1500  # tokens: far longer than any test waits, so only cancellation ends it early


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A scripted daemon whose queue holds two requests and whose gate is never opened."""
    tmp = tmp_path_factory.mktemp("queue")
    loader = scripted_loader(lambda prompt: " n" * LONG, gate=threading.Event())
    settings = make_settings(tmp, preload=["smollm2"], queue_size=2)
    with serve(settings, loader=loader) as running:
        running.wait(lambda h: h["status"] == "ok" and "smollm2" in h["loaded"])
        yield running


def _engine(running: Running) -> ScriptedEngine:
    engine = running.daemon.manager.slots()[0].model
    assert isinstance(engine, ScriptedEngine)
    return engine


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "prompt": "Count:",
        "max_tokens": LONG,
        "logit_bias": NO_EOS,
        **extra,
    }


class Blocker:
    """A long streaming generation that holds the worker until closed."""

    def __init__(self, running: Running, **extra: Any) -> None:
        self.http = httpx.Client(base_url=running.url, timeout=60)
        self.response = self.http.send(
            self.http.build_request("POST", "/v1/completions", json=_body(stream=True, **extra)),
            stream=True,
        )
        self.lines = self.response.iter_lines()
        # The first data line proves the job is running.
        assert next(line for line in self.lines if line.startswith("data: "))

    def close(self) -> None:
        self.response.close()
        self.http.close()


def _raw_post(running: Running, body: dict[str, Any]) -> socket.socket:
    """Send a request on a bare socket and return it unread; closing it is a disconnect."""
    host, port = running.url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def _idle(running: Running) -> None:
    running.wait(lambda h: not h["running"]["smollm2"] and h["queued"]["smollm2"] == 0)


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_full_queue_is_503_with_retry_after(daemon: Running) -> None:
    """Past queue_size waiting requests, the next gets 503 and a Retry-After header."""
    blocker = Blocker(daemon)
    waiting = [
        _in_thread(
            lambda: httpx.post(f"{daemon.url}/v1/completions", json=_body(max_tokens=1), timeout=60)
        )
        for _ in range(2)
    ]
    try:
        daemon.wait(lambda h: h["queued"]["smollm2"] == 2)
        r = httpx.post(f"{daemon.url}/v1/completions", json=_body(max_tokens=1), timeout=60)
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
    finally:
        blocker.close()
    for t, result in waiting:
        t.join()
        assert result["value"].status_code == 200
    _idle(daemon)


def test_queue_deadline_is_504(daemon: Running) -> None:
    """A request still queued at its deadline gets 504 and leaves the queue."""
    blocker = Blocker(daemon)
    try:
        r = httpx.post(
            f"{daemon.url}/v1/completions", json=_body(max_tokens=1, queue_timeout=0.3), timeout=60
        )
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "queue_timeout"
        assert daemon.health()["queued"]["smollm2"] == 0
    finally:
        blocker.close()
    _idle(daemon)


def test_disconnect_cancels_a_running_request(daemon: Running) -> None:
    """Closing the stream stops the generation long before max_tokens."""
    before = daemon.metric("personad_generated_tokens_total", model="smollm2")
    blocker = Blocker(daemon)
    blocker.close()
    _idle(daemon)
    generated = daemon.metric("personad_generated_tokens_total", model="smollm2") - before
    assert 0 < generated < LONG / 2
    assert daemon.metric("personad_requests_total", model="smollm2", outcome="cancelled") >= 1


def test_disconnect_cancels_a_queued_request(daemon: Running) -> None:
    """A client that leaves while queued (streaming or not) is removed from the queue."""
    blocker = Blocker(daemon)
    try:
        for stream in (True, False):
            queued = _raw_post(daemon, _body(max_tokens=1, stream=stream))
            daemon.wait(lambda h: h["queued"]["smollm2"] == 1)
            queued.close()
            daemon.wait(lambda h: h["queued"]["smollm2"] == 0)
        daemon.wait(lambda h: h["queued"]["smollm2"] == 0)
        assert daemon.health()["running"]["smollm2"]  # the blocker is untouched
    finally:
        blocker.close()
    _idle(daemon)


def test_non_streaming_disconnect_cancels_too(daemon: Running) -> None:
    """A non-streaming client that times out and leaves frees the worker."""
    before = daemon.metric("personad_generated_tokens_total", model="smollm2")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{daemon.url}/v1/completions", json=_body(), timeout=1.0)
    _idle(daemon)
    assert daemon.metric("personad_generated_tokens_total", model="smollm2") - before < LONG / 2


def test_supersede_cancels_older_request_of_the_conversation(daemon: Running) -> None:
    """A newer request with supersede ends the running one of its conversation with an error."""
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="x", max_retries=0)
    old = client.completions.create(
        model="smollm2",
        prompt="Count:",
        max_tokens=LONG,
        stream=True,
        logit_bias={int(k): v for k, v in NO_EOS.items()},
        extra_body={"conversation": "chan-1"},
    )
    first = next(iter(old))
    assert first.choices
    new = client.completions.create(
        model="smollm2",
        prompt="Hello",
        max_tokens=1,  # past its first token, a generation waits for the gate
        temperature=0,
        logit_bias={int(k): v for k, v in NO_EOS.items()},  # runs to max_tokens, always
        extra_body={"conversation": "chan-1", "supersede": True},
    )
    assert new.choices[0].finish_reason == "length"
    with pytest.raises(openai.APIError, match="superseded"):
        for _ in old:
            pass
    _idle(daemon)


def test_supersede_cancels_a_queued_request(daemon: Running) -> None:
    """A queued request of the same conversation gets 409 when superseded."""
    blocker = Blocker(daemon)
    try:
        t, result = _in_thread(
            lambda: httpx.post(
                f"{daemon.url}/v1/completions",
                json=_body(max_tokens=1, conversation="chan-2"),
                timeout=60,
            )
        )
        daemon.wait(lambda h: h["queued"]["smollm2"] == 1)
        t2, result2 = _in_thread(
            lambda: httpx.post(
                f"{daemon.url}/v1/completions",
                json=_body(max_tokens=1, conversation="chan-2", supersede=True),
                timeout=60,
            )
        )
        t.join()
        assert result["value"].status_code == 409
        assert result["value"].json()["error"]["code"] == "superseded"
    finally:
        blocker.close()
    t2.join()
    assert result2["value"].status_code == 200
    _idle(daemon)


def test_background_waits_for_interactive(daemon: Running) -> None:
    """With the worker busy, a later interactive request runs before an earlier background one."""
    blocker = Blocker(daemon)

    def call(priority: str) -> None:
        httpx.post(
            f"{daemon.url}/v1/completions",
            json=_body(prompt=priority, max_tokens=1, priority=priority),
            timeout=60,
        )

    try:
        bg, _ = _in_thread(lambda: call("background"))
        daemon.wait(lambda h: h["queued"]["smollm2"] == 1)
        fg, _ = _in_thread(lambda: call("interactive"))
        daemon.wait(lambda h: h["queued"]["smollm2"] == 2)
    finally:
        blocker.close()
    bg.join()
    fg.join()
    order = [call.prompt for call in _engine(daemon).calls[-2:]]
    assert order == ["interactive", "background"]
    _idle(daemon)


def test_health_reports_queue(daemon: Running) -> None:
    """/health shows per-model running state and queue depth."""
    h = daemon.health()
    assert h["status"] == "ok" and h["queued"] == {"smollm2": 0}
