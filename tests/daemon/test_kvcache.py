"""Per-conversation KV states: restored output equals cold evaluation, budgets hold, restarts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import structlog

from daemon._types import GenerationParams
from daemon.engine import KVSettings, LlamaModel
from models import ModelManifest

GREEDY = GenerationParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)
HISTORY = " ".join(f"Alex: message number {i} about the hike and the weather." for i in range(30))


def _model(demo_path: Path, kv: KVSettings | None, n_ctx: int = 2048) -> LlamaModel:
    return LlamaModel(ModelManifest(name="m", path=demo_path, context_length=n_ctx), kv)


def _run(model: LlamaModel, text: str, conversation: str | None) -> tuple[str, int, bool]:
    pieces = list(
        model.generate(
            model.text_prompt(text), GREEDY, threading.Event(), conversation=conversation
        )
    )
    last = pieces[-1]
    return "".join(p.text for p in pieces), last.cached_tokens, last.cache_hit


@pytest.fixture(scope="module")
def cold(demo_path: Path) -> LlamaModel:
    """A model without any cache, for reference outputs."""
    return _model(demo_path, None)


def _cold(cold: LlamaModel, text: str) -> str:
    cold._llm.n_tokens = 0  # evaluate from scratch
    return _run(cold, text, None)[0]


def test_restored_state_gives_the_cold_output(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A follow-up restored from the stored state matches a cold evaluation, token for token."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 1 << 30))
    first, _, _ = _run(m, HISTORY, "c1")
    _run(m, "Something else entirely, to replace the live context.", "c2")
    follow = HISTORY + first + " Bob: and then?"
    text, cached, hit = _run(m, follow, "c1")
    assert hit and cached >= len(m.text_prompt(HISTORY).tokens) - 1
    assert text == _cold(cold, follow)


def test_edited_history_falls_back_to_the_common_prefix(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A history edited in the middle reuses only the unchanged prefix, and stays correct."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 1 << 30))
    _run(m, HISTORY, "c1")
    _run(m, "Replace the live context with this.", "c2")
    edited = HISTORY.replace("message number 15", "a deleted message")
    text, cached, hit = _run(m, edited, "c1")
    full = len(m.text_prompt(HISTORY).tokens)
    assert hit and 0 < cached < full
    assert text == _cold(cold, edited)


def test_states_survive_a_restart_for_the_same_model_only(tmp_path: Path, demo_path: Path) -> None:
    """After close and reload the state comes from disk; another context size never loads it."""
    kv = KVSettings(tmp_path / "kv", 256 << 20, 1 << 30)
    m = _model(demo_path, kv)
    first, _, _ = _run(m, HISTORY, "c1")
    m.close()  # flushes RAM states to disk
    again = _model(demo_path, kv)
    assert again.kv_bytes()[1] > 0
    _, cached, hit = _run(again, HISTORY + first + " Bob: ok", "c1")
    assert hit and cached > 100
    again.close()
    other = _model(demo_path, kv, n_ctx=1024)
    _, _, hit = _run(other, HISTORY + first + " Bob: ok", "c1")
    assert not hit
    other.close()


def test_budgets_hold(tmp_path: Path, demo_path: Path) -> None:
    """RAM and disk use never exceed their budgets; the oldest states go first."""
    probe = _model(demo_path, KVSettings(None, 256 << 20, 0))
    _run(probe, HISTORY, "size")
    one = probe.kv_bytes()[0]
    m = _model(demo_path, KVSettings(tmp_path / "kv", int(one * 1.5), int(one * 2.5)))
    for i in range(4):
        _run(m, f"Conversation {i}. " + HISTORY, f"c{i}")
        ram, disk = m.kv_bytes()
        assert ram <= int(one * 1.5) and disk <= int(one * 2.5)
    assert m.kv is not None
    keys = lambda d: [k.split("\x1f")[1] for k in d]  # noqa: E731 - keys are scoped by adapter
    assert keys(m.kv.ram) == ["c3"] and keys(m.kv.disk) == ["c1", "c2"]


def test_unreadable_state_and_full_disk_fall_back(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A corrupt state file or an unwritable directory costs speed, never an error."""
    kv = KVSettings(tmp_path / "kv", 0, 1 << 30)  # no RAM: every state goes to disk
    m = _model(demo_path, kv)
    first, _, _ = _run(m, HISTORY, "c1")
    assert m.kv is not None
    path = next(iter(m.kv.disk.values()))[0]
    path.write_bytes(path.read_bytes()[:1000])  # damaged
    _run(m, "Replace the live context.", "c2")
    with structlog.testing.capture_logs() as logs:
        text, _, hit = _run(m, HISTORY + first, "c1")
    assert not hit and text == _cold(cold, HISTORY + first)
    assert any(e["event"] == "kv_state_unreadable" for e in logs)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    full = _model(demo_path, KVSettings(blocked / "kv", 0, 1 << 30))
    with structlog.testing.capture_logs() as logs:
        text, _, _ = _run(full, HISTORY, "c1")
    assert text and any(e["event"] == "kv_spill_failed" for e in logs)


def test_without_a_key_the_longest_stored_prefix_is_used(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A request with no conversation key still reuses a stored state sharing its prefix."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 0))
    first, _, _ = _run(m, HISTORY, "c1")
    _run(m, "Replace the live context with this.", "c2")
    text, cached, hit = _run(m, HISTORY + first + " Bob: and?", None)
    assert hit and cached > 100
    assert text == _cold(cold, HISTORY + first + " Bob: and?")
