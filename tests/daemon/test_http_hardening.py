"""The HTTP API refuses what it cannot serve safely: bad input, foreign pages, floods and stalls.

Most of it does not depend on what the model says, so it runs on the scripted engine; the real
model stays where its load matters (a failed preload).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import structlog
import uvicorn

from daemon import Daemon, create_app, load_settings
from daemon.errors import ConfigError
from daemon.testing import ScriptedEngine, scripted_loader
from tests.conftest import NO_EOS, Running, make_settings, serve, write_model

HELLO = [{"role": "user", "content": "Say hello."}]
KEY = "k-hardening-123"
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_path: Path) -> Iterator[Running]:
    """A scripted keyless daemon with a small body limit, the demo model and a 64-token twin.

    Its engine's gate is open; a :class:`_Blocker` shuts it, so that one generation holds the
    worker past its first token until its client leaves.
    """
    tmp = tmp_path_factory.mktemp("hardening")
    write_model(tmp / "models", "tiny-ctx", demo_path, context_length=64)
    settings = make_settings(
        tmp,
        server={
            "max_body_bytes": BODY_LIMIT,
            "allowed_hosts": ["persona.lan"],
            "allowed_origins": ["http://ui.example:3000"],
        },
        preload=["smollm2"],
    )
    gate = threading.Event()
    gate.set()
    loader = scripted_loader(lambda prompt: " n" * 2000, gate=gate)
    with serve(settings, loader=loader) as running:
        running.wait(lambda h: h["status"] == "ok" and "smollm2" in h["loaded"])
        yield running


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A scripted daemon with an API key and nothing preloaded."""
    tmp = tmp_path_factory.mktemp("keyed")
    with serve(make_settings(tmp, server={"api_key": KEY}), loader=scripted_loader()) as running:
        yield running


def _post(running: Running, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{running.url}{path}", json=body, timeout=60, **kwargs)


def _error(r: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _events(r: httpx.Response) -> list[Any]:
    lines = [x.removeprefix("data: ") for x in r.text.splitlines() if x.startswith("data: ")]
    return [x if x == "[DONE]" else json.loads(x) for x in lines]


# --- 1, 2: start-up refuses empty keys; settings errors are messages ---------------------------


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_api_key_in_environment_is_a_config_error(value: str) -> None:
    """An empty or whitespace-only key is refused with a message naming the setting."""
    with pytest.raises(ConfigError, match=r"server\.api_key.*empty") as info:
        load_settings(Path("/dev/null"), environ={"PERSONAD_SERVER__API_KEY": value})
    assert "PERSONAD_SERVER__API_KEY" in str(info.value)


def test_blank_api_key_in_file_or_credential_is_refused(tmp_path: Path) -> None:
    """The same check covers the TOML file and a systemd credential file."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text('[server]\napi_key = ""\n')
    with pytest.raises(ConfigError, match=r"server\.api_key.*empty"):
        load_settings(cfg, environ={})
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "server__api_key").write_text(" \n")
    with pytest.raises(ConfigError, match=r"server\.api_key.*empty"):
        load_settings(tmp_path / "personad.toml", environ={"CREDENTIALS_DIRECTORY": str(creds)})


def test_an_api_key_with_a_trailing_newline_still_matches() -> None:
    """A key pasted with surrounding whitespace is stripped, as the bearer token is."""
    settings = load_settings(Path("/dev/null"), environ={"PERSONAD_SERVER__API_KEY": " k-1\n"})
    key = settings.server.api_key
    assert key is not None and key.get_secret_value() == "k-1"


def test_blank_api_key_exits_2_from_the_cli(tmp_path: Path) -> None:
    """`personad serve` with an empty key exits 2 with one line, before binding anything."""
    env = {"PERSONAD_SERVER__API_KEY": " ", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "server.api_key" in proc.stderr and "Traceback" not in proc.stderr


def test_app_refuses_a_blank_key_that_skipped_validation(tmp_path: Path) -> None:
    """Settings copied without validation cannot smuggle an empty key into the app."""
    settings = make_settings(tmp_path)
    from pydantic import SecretStr

    server = settings.server.model_copy(update={"api_key": SecretStr(" ")})
    with pytest.raises(ConfigError, match="empty"):
        create_app(Daemon(settings.model_copy(update={"server": server})))


def test_key_is_compared_in_constant_time(keyed: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key check goes through hmac.compare_digest, and a wrong key is a 401."""
    import daemon._guards as guards

    calls: list[tuple[bytes, bytes]] = []
    real = guards.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guards.hmac, "compare_digest", spy)
    r = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert calls == [(b"nope", KEY.encode())]
    empty = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "Bearer"})
    assert empty.status_code == 401


# --- 3: empty prompts and failures while streaming ----------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": [""]}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
    ],
)
def test_empty_prompt_is_400(
    daemon: Running, path: str, body: dict[str, Any], param: str, stream: bool
) -> None:
    """An empty prompt or message list is a 400 error object, streaming or not."""
    r = _post(daemon, path, {"model": "smollm2", "stream": stream, **body})
    assert r.status_code == 400, r.text
    err = _error(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def _gpu_falls_off(index: int) -> None:
    if index == 1:
        raise RuntimeError("the GPU fell off")


def test_exception_while_streaming_ends_with_an_error_event(tmp_path: Path) -> None:
    """An unexpected failure mid-stream is an SSE error event, not a reset connection."""
    settings = make_settings(tmp_path)
    loader = scripted_loader(lambda prompt: "one two three", on_token=_gpu_falls_off)
    with serve(settings, loader=loader) as running:
        body = {"prompt": "Count:", "max_tokens": 50, "logit_bias": NO_EOS}
        r = _post(running, "/v1/completions", {**body, "stream": True})
        assert r.status_code == 200
        events = _events(r)
        assert events[-1]["error"]["type"] == "server_error"
        assert "GPU fell off" in events[-1]["error"]["message"]
        assert "[DONE]" not in events
        plain = _post(running, "/v1/completions", body)
        assert plain.status_code == 500 and _error(plain)["type"] == "server_error"


# --- 4: values the engine cannot honour ---------------------------------------------------------


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_logit_bias_is_400(daemon: Running, raw: str) -> None:
    """NaN or infinite logit_bias values are refused naming logit_bias."""
    content = f'{{"prompt": "Hi", "max_tokens": 1, "logit_bias": {{"0": {raw}}}}}'
    r = httpx.post(
        f"{daemon.url}/v1/completions",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert _error(r)["param"].startswith("logit_bias")


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"n": 2}, "n"),
        ("/v1/chat/completions", {"logprobs": True}, "logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 3}, "top_logprobs"),
        (
            "/v1/chat/completions",
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
        ),
        ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions"),
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/completions", {"n": 3}, "n"),
        ("/v1/completions", {"logprobs": 2}, "logprobs"),
        ("/v1/completions", {"echo": True}, "echo"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
    ],
)
def test_unsupported_parameter_is_400_naming_it(
    daemon: Running, path: str, extra: dict[str, Any], param: str
) -> None:
    """A value asking for behaviour the engine lacks is a 400 naming the parameter."""
    body = {"messages": HELLO} if "chat" in path else {"prompt": "Hi"}
    r = _post(daemon, path, {**body, "max_tokens": 1, **extra})
    assert r.status_code == 400, r.text
    err = _error(r)
    assert err["param"] == param and err["code"] == "unsupported_parameter"
    assert f"{param} = " in err["message"] and "not supported" in err["message"]


def test_neutral_values_of_unsupported_parameters_are_accepted(daemon: Running) -> None:
    """What common clients send by default (n 1, logprobs false, no tools) still works."""
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(
        model="smollm2",
        messages=HELLO,  # type: ignore[arg-type]
        max_tokens=1,
        n=1,
        logprobs=False,
        tools=[],
        tool_choice="none",
        response_format={"type": "text"},
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    c = client.completions.create(
        model="smollm2", prompt="Hi", max_tokens=1, n=1, best_of=1, echo=False
    )
    assert c.choices[0].finish_reason in ("stop", "length")


# --- 5: HTTP details ---------------------------------------------------------------------------


def test_405_names_the_allowed_methods(daemon: Running) -> None:
    """A wrong method gets 405 with an Allow header and the error object."""
    r = httpx.get(f"{daemon.url}/v1/chat/completions")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    _error(r)


def test_401_carries_a_bearer_challenge(keyed: Running) -> None:
    """A missing key gets 401 with WWW-Authenticate: Bearer."""
    r = httpx.get(f"{keyed.url}/v1/models")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_openapi_needs_the_key_and_declares_metrics_as_text(keyed: Running) -> None:
    """/openapi.json is behind the key; it declares /metrics as text/plain."""
    assert httpx.get(f"{keyed.url}/openapi.json").status_code == 401
    r = httpx.get(f"{keyed.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    content = r.json()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert "/v1/conversations/{conversation}" in r.json()["paths"]


# --- 6: 504 messages ---------------------------------------------------------------------------


class _Blocker:
    """A long streaming generation that holds the worker until closed."""

    def __init__(self, running: Running) -> None:
        engine = running.daemon.manager.slots()[0].model
        assert isinstance(engine, ScriptedEngine) and engine.gate is not None
        self.gate = engine.gate
        self.gate.clear()
        self.http = httpx.Client(base_url=running.url, timeout=60)
        body = {"prompt": "Count:", "max_tokens": 1500, "logit_bias": NO_EOS, "stream": True}
        self.response = self.http.send(
            self.http.build_request("POST", "/v1/completions", json=body), stream=True
        )
        # Kept: closing the line iterator would close the stream.
        self.lines = self.response.iter_lines()
        assert next(x for x in self.lines if x.startswith("data: "))

    def close(self) -> None:
        self.response.close()
        self.http.close()
        self.gate.set()


def test_504_advice_matches_the_priority(daemon: Running) -> None:
    """Only a background request is told to use priority 'interactive'."""
    blocker = _Blocker(daemon)
    try:
        messages = {}
        for priority in ("interactive", "background"):
            r = _post(
                daemon,
                "/v1/completions",
                {"prompt": "Hi", "max_tokens": 1, "queue_timeout": 0.2, "priority": priority},
            )
            assert r.status_code == 504, r.text
            messages[priority] = _error(r)["message"]
    finally:
        blocker.close()
    assert "priority 'interactive'" in messages["background"]
    assert "priority" not in messages["interactive"]
    assert "busy" in messages["interactive"]
    daemon.wait(lambda h: not h["running"]["smollm2"])


# --- 7: sizes and stalls -----------------------------------------------------------------------


def test_body_over_the_limit_is_413(daemon: Running) -> None:
    """A body declared larger than server.max_body_bytes gets 413 before it is read."""
    r = _post(daemon, "/v1/completions", {"prompt": "x" * BODY_LIMIT})
    assert r.status_code == 413
    err = _error(r)
    assert err["code"] == "payload_too_large" and "server.max_body_bytes" in err["message"]


def test_chunked_body_over_the_limit_is_413(daemon: Running) -> None:
    """A chunked body (no Content-Length) is counted as it arrives and cut off at the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(BODY_LIMIT // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    r = httpx.post(
        f"{daemon.url}/v1/completions",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and _error(r)["code"] == "payload_too_large"


def test_prompt_too_many_bytes_for_the_context_is_400_before_tokenizing(daemon: Running) -> None:
    """A prompt whose bytes alone cannot fit the context is refused by its byte count."""
    r = _post(daemon, "/v1/completions", {"model": "tiny-ctx", "prompt": "z" * 20_000})
    assert r.status_code == 400
    err = _error(r)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    assert "20000 bytes" in err["message"] and "64 tokens" in err["message"]
    chat = _post(
        daemon,
        "/v1/chat/completions",
        {"model": "tiny-ctx", "messages": [{"role": "user", "content": "é" * 10_000}]},
    )
    assert chat.status_code == 400 and "20000 bytes" in _error(chat)["message"]


@pytest.fixture
def small_buffers_daemon(tmp_path: Path) -> Iterator[Running]:
    """A scripted daemon whose sockets have small send buffers and a 0.5 s send timeout.

    Its engine makes a token every 2 ms, about a small model's pace on a CPU, so a long reply
    is still being generated when the send times out.
    """
    settings = make_settings(tmp_path, server={"send_timeout": 0.5}, preload=["smollm2"])
    loader = scripted_loader(lambda prompt: " n" * 2000, on_token=lambda i: time.sleep(0.002))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited on accept
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    daemon = Daemon(settings, loader=loader)
    server = uvicorn.Server(
        uvicorn.Config(create_app(daemon), log_config=None, access_log=False, port=port)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    running = Running(url=f"http://127.0.0.1:{port}", daemon=daemon)
    try:
        running.wait(lambda h: h["status"] == "ok" and "smollm2" in h["loaded"])
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        listener.close()


def test_client_that_stops_reading_releases_the_model(small_buffers_daemon: Running) -> None:
    """A streaming client that never reads is cut off after send_timeout; the slot is freed."""
    running = small_buffers_daemon
    before = running.metric("personad_requests_total", model="smollm2", outcome="cancelled")
    body = json.dumps(
        {"prompt": "Count:", "max_tokens": 1900, "logit_bias": NO_EOS, "stream": True}
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(running.url.rsplit(":", 1)[1])))
    try:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        # Never read: the server's buffers fill, its send times out and the job is cancelled.
        running.wait(
            lambda h: (
                not h["running"]["smollm2"]
                and running.metric("personad_requests_total", model="smollm2", outcome="cancelled")
                == before + 1
            ),
            timeout=60,
        )
        slot = running.daemon.manager.slots()[0]
        end = time.monotonic() + 30
        while slot.active and time.monotonic() < end:
            time.sleep(0.02)
        assert slot.active == 0
    finally:
        sock.close()


# --- 8: cross-site requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_body_not_declared_json_is_415(daemon: Running, ctype: str | None) -> None:
    """A POST body a cross-site form could send is refused with 415."""
    headers = {"Content-Type": ctype} if ctype else {}
    r = httpx.post(
        f"{daemon.url}/v1/completions",
        content=b'{"prompt": "Hi", "max_tokens": 1}',
        headers=headers,
    )
    assert r.status_code == 415
    assert _error(r)["code"] == "unsupported_media_type"


def test_json_with_a_charset_is_accepted(daemon: Running) -> None:
    """application/json with parameters is still JSON."""
    r = httpx.post(
        f"{daemon.url}/v1/completions",
        content=b'{"prompt": "Hi", "max_tokens": 1}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=60,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:8765", 400),
        ("127.0.0.1.nip.io", 400),
        ("localhost", 200),
        ("127.0.0.1:1", 200),
        ("[::1]:8765", 200),
        ("persona.lan:8765", 200),
    ],
)
def test_only_loopback_or_configured_host_names(daemon: Running, host: str, status: int) -> None:
    """A foreign Host (DNS rebinding) is refused; loopback and server.allowed_hosts pass."""
    r = httpx.get(f"{daemon.url}/v1/models", headers={"Host": host})
    assert r.status_code == status
    if status == 400:
        assert _error(r)["code"] == "host_not_allowed"


def test_foreign_origin_is_403(daemon: Running) -> None:
    """A page of another origin is refused, even for a read; ours and configured ones pass."""
    evil = httpx.get(f"{daemon.url}/v1/models", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and _error(evil)["code"] == "origin_not_allowed"
    post = _post(
        daemon,
        "/v1/chat/completions",
        {"messages": HELLO, "max_tokens": 1},
        headers={"Origin": "null"},
    )
    assert post.status_code == 403
    own = httpx.get(f"{daemon.url}/v1/models", headers={"Origin": daemon.url})
    assert own.status_code == 200
    ui = httpx.get(f"{daemon.url}/v1/models", headers={"Origin": "http://ui.example:3000"})
    assert ui.status_code == 200
    assert ui.headers["access-control-allow-origin"] == "http://ui.example:3000"


def test_configured_origin_passes_the_cors_preflight(daemon: Running) -> None:
    """A configured origin's preflight is answered; a foreign one's is refused."""
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = httpx.options(
        f"{daemon.url}/v1/chat/completions", headers={"Origin": "http://ui.example:3000", **ask}
    )
    assert ok.status_code == 200
    bad = httpx.options(
        f"{daemon.url}/v1/chat/completions", headers={"Origin": "http://evil.example", **ask}
    )
    assert bad.status_code in (400, 403)
    assert "access-control-allow-origin" not in bad.headers


def test_keyed_daemon_answers_any_host_name(keyed: Running) -> None:
    """With a key and no allowed_hosts, any name is fine: the key keeps pages out."""
    r = httpx.get(
        f"{keyed.url}/v1/models",
        headers={"Host": "my-server.lan", "Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200


# --- 9: logs stay short ------------------------------------------------------------------------


def test_logs_do_not_carry_huge_client_values(daemon: Running) -> None:
    """A 60 KB model name or a long adapter name never reaches a log line in full."""
    with structlog.testing.capture_logs() as logs:
        for body in (
            {"model": "m" * 60_000, "prompt": "Hi"},
            {"model": "q" * 200, "prompt": "Hi"},
            {"model": "smollm2", "adapter": "a" * 200, "prompt": "Hi", "max_tokens": 1},
        ):
            r = _post(daemon, "/v1/completions", body)
            assert r.status_code in (400, 404)
            assert len(r.text) < 2000
    failures = [e for e in logs if e["event"] == "request_failed"]
    assert len(failures) == 3
    assert all(len(str(v)) < 500 for e in logs for v in e.values())


# --- 10: /health and failed preloads -----------------------------------------------------------


def test_health_is_503_while_a_preloaded_model_failed(tmp_path: Path) -> None:
    """/health names each model asked for at start-up that failed, with 503."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 100)
    write_model(tmp_path / "models", "junk", junk)
    settings = make_settings(tmp_path, preload=["junk", "nobody", "smollm2"])
    with serve(settings) as running:
        running.wait(lambda h: "smollm2" in h["loaded"] and h["status"] != "loading")
        r = httpx.get(f"{running.url}/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "error"
        assert set(body["failed"]) == {"junk", "nobody"}
        assert "junk.gguf" in body["failed"]["junk"] and "nobody" in body["failed"]["nobody"]
        assert "junk" in body["reason"] and "\n" not in body["reason"]
        assert running.daemon.preload_failures == body["failed"]


def test_health_is_ok_once_every_preload_is_loaded(daemon: Running) -> None:
    """With everything asked for loaded, /health is 200 ok and lists no failure."""
    r = httpx.get(f"{daemon.url}/health")
    assert r.status_code == 200 and "failed" not in r.json()


# --- 11: forgetting a conversation's KV states -------------------------------------------------


def test_delete_conversation_drops_its_kv_states(daemon: Running) -> None:
    """DELETE /v1/conversations/{id} drops the states of that conversation and says how many."""
    r = _post(
        daemon,
        "/v1/completions",
        {"prompt": "My secret is 1234.", "max_tokens": 2, "conversation": "priv-1"},
    )
    assert r.status_code == 200
    first = httpx.delete(f"{daemon.url}/v1/conversations/priv-1", timeout=60)
    assert first.status_code == 200
    assert first.json()["conversation"] == "priv-1" and first.json()["dropped"] >= 1
    again = httpx.delete(f"{daemon.url}/v1/conversations/priv-1", timeout=60)
    assert again.json()["dropped"] == 0


def test_delete_conversation_needs_the_key(keyed: Running) -> None:
    """The KV privacy route is guarded by the API key like the others."""
    r = httpx.delete(f"{keyed.url}/v1/conversations/priv-1")
    assert r.status_code == 401
