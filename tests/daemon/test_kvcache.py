"""Per-conversation KV states: what a restore guarantees, budgets, restarts, bad files, drops."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
import pytest
import structlog

from daemon._types import GenerationParams
from daemon.engine import EngineOptions, KVSettings, LlamaModel
from models import ModelManifest

GREEDY = GenerationParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)
HISTORY = " ".join(f"Alex: message number {i} about the hike and the weather." for i in range(30))


def _model(demo_path: Path, kv: KVSettings | None, n_ctx: int = 2048) -> LlamaModel:
    # One slot: these tests read the single-sequence path's logits and live context; the
    # batching path's restores are tested in test_batching.
    manifest = ModelManifest(name="m", path=demo_path, context_length=n_ctx)
    return LlamaModel(manifest, kv, EngineOptions(parallel=1))


def _run(model: LlamaModel, text: str, conversation: str | None) -> tuple[str, int, bool]:
    pieces = list(
        model.generate(
            model.text_prompt(text), GREEDY, threading.Event(), conversation=conversation
        )
    )
    last = pieces[-1]
    return "".join(p.text for p in pieces), last.cached_tokens, last.cache_hit


def _logits(
    model: LlamaModel, text: str, conversation: str | None
) -> tuple[list[npt.NDArray[Any]], int, bool]:
    """The logits each greedy step chose from (recorded by a logits processor), cached, hit."""
    steps: list[npt.NDArray[Any]] = []

    def record(_ids: Any, scores: npt.NDArray[Any]) -> npt.NDArray[Any]:
        steps.append(scores.copy())
        return scores

    def processor(_bias: dict[int, float]) -> llama_cpp.LogitsProcessorList:
        return llama_cpp.LogitsProcessorList([record])

    model._logits_processor = processor  # type: ignore[method-assign,assignment]
    try:
        _, cached, hit = _run(model, text, conversation)
    finally:
        del model._logits_processor
    return steps, cached, hit


# What a restore guarantees against a cold evaluation: the cold run evaluates the generated
# tokens in one batch where the first run decoded them one by one, so logits differ slightly
# (for the demo model the top two move by up to ~0.75). Greedy choices therefore agree except
# where the cold run's top two are nearly tied.
NEAR_TIE = 2.0


def _agree_until_a_near_tie(got: list[npt.NDArray[Any]], cold: list[npt.NDArray[Any]]) -> None:
    assert got and len(got) == len(cold)
    for step, (x, y) in enumerate(zip(got, cold, strict=True)):
        if int(np.argmax(x)) != int(np.argmax(y)):
            top = np.sort(y)[-2:]
            assert top[1] - top[0] < NEAR_TIE, f"step {step} differs without a near tie"
            return


@pytest.fixture(scope="module")
def cold(demo_path: Path) -> LlamaModel:
    """A model without any cache, for reference outputs."""
    return _model(demo_path, None)


def _cold(cold: LlamaModel, text: str) -> str:
    cold._llm.n_tokens = 0  # evaluate from scratch
    return _run(cold, text, None)[0]


def test_a_restored_state_continues_exactly_like_the_live_context(
    tmp_path: Path, demo_path: Path
) -> None:
    """Restored from disk after a restart, the tokens and every logit equal the live context's."""
    follow = HISTORY + " Bob: and then?"
    live = _model(demo_path, None)
    _run(live, HISTORY, None)
    expected, _, _ = _logits(live, follow, None)  # the same process, context kept
    kv = KVSettings(tmp_path / "kv", 0, 1 << 30)
    m = _model(demo_path, kv)
    _run(m, HISTORY, "c1")
    m.close()
    again = _model(demo_path, kv)
    got, _, hit = _logits(again, follow, "c1")
    assert hit
    prompt = again.text_prompt(follow).tokens
    assert (
        list(again._llm.input_ids[: len(prompt)]) == prompt
    )  # the restored tokens are the prompt's
    assert len(got) == len(expected)
    assert all(np.array_equal(x, y) for x, y in zip(got, expected, strict=True))


def test_restored_state_matches_the_cold_output_up_to_near_ties(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A follow-up restored from the stored state makes a cold run's greedy choices until a tie."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 1 << 30))
    first, _, _ = _run(m, HISTORY, "c1")
    _run(m, "Something else entirely, to replace the live context.", "c2")
    follow = HISTORY + first + " Bob: and then?"
    got, cached, hit = _logits(m, follow, "c1")
    assert hit and cached >= len(m.text_prompt(HISTORY).tokens) - 1
    cold._llm.n_tokens = 0
    _agree_until_a_near_tie(got, _logits(cold, follow, None)[0])


def test_edited_history_falls_back_to_the_common_prefix(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A history edited in the middle reuses only the unchanged prefix, and stays correct."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 1 << 30))
    _run(m, HISTORY, "c1")
    _run(m, "Replace the live context with this.", "c2")
    edited = HISTORY.replace("message number 15", "a deleted message")
    got, cached, hit = _logits(m, edited, "c1")
    full = len(m.text_prompt(HISTORY).tokens)
    assert hit and 0 < cached < full
    cold._llm.n_tokens = 0
    _agree_until_a_near_tie(got, _logits(cold, edited, None)[0])


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
    assert any(e["event"] == "kv_state_discarded" for e in logs)
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
    follow = HISTORY + first + " Bob: and?"
    got, cached, hit = _logits(m, follow, None)
    assert hit and cached > 100
    cold._llm.n_tokens = 0
    _agree_until_a_near_tie(got, _logits(cold, follow, None)[0])


def _states(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.kv"))


def _identity_dir(tmp_path: Path, demo_path: Path, kv: KVSettings) -> Path:
    """The directory the demo model at 2048 tokens keeps its states in."""
    probe = _model(demo_path, kv)
    assert probe.kv is not None and probe.kv.directory is not None
    probe.close()
    return probe.kv.directory


def _bad_files(directory: Path, good: bytes) -> dict[str, tuple[bytes, str]]:
    """Broken copies of a good state file, by name, with the reason each must be discarded for."""
    magic, rest = good[:6], good[6:]
    n = int.from_bytes(rest[:4], "little")
    header = rest[4 : 4 + n]
    body = rest[4 + n :]

    def with_header(new: bytes, tail: bytes = body) -> bytes:
        return magic + len(new).to_bytes(4, "little") + new + tail

    other = header.replace(directory.name.encode(), b"0" * len(directory.name))
    return {
        "empty": (b"", "truncated"),
        "magic-only": (magic, "truncated"),
        "not-ours": (b"GGUF" + good[4:], "malformed"),
        "bad-json": (with_header(b"{not json"), "malformed"),
        "json-list": (with_header(b"[1, 2]"), "malformed"),
        "no-key": (with_header(b'{"identity": "x", "tokens": 1, "bytes": 1}'), "malformed"),
        "huge-header": (magic + (1 << 31).to_bytes(4, "little") + header, "malformed"),
        "header-cut": (with_header(header)[: 10 + n // 2], "truncated"),
        "data-cut": (good[: len(good) - 100], "truncated"),
        "other-model": (with_header(other), "other_model"),
    }


def test_malformed_state_files_are_discarded_at_start(tmp_path: Path, demo_path: Path) -> None:
    """Bad JSON, truncated or foreign state files are removed with a warning and counted."""
    kv = KVSettings(tmp_path / "kv", 0, 1 << 30)
    m = _model(demo_path, kv)
    first, _, _ = _run(m, HISTORY, "c1")
    m.close()
    (good,) = _states(tmp_path / "kv")
    bad = _bad_files(good.parent, good.read_bytes())
    for name, (data, _) in bad.items():
        (good.parent / f"{name}.kv").write_bytes(data)
    with structlog.testing.capture_logs() as logs:
        again = _model(demo_path, kv)
    assert _states(tmp_path / "kv") == [good]
    expected: dict[str, int] = {}
    for _, reason in bad.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert again.kv_discarded() == expected
    warned = {e["file"].rsplit("/", 1)[1] for e in logs if e["event"] == "kv_state_discarded"}
    assert warned == {f"{name}.kv" for name in bad}
    _, cached, hit = _run(again, HISTORY + first, "c1")  # the good state still serves
    assert hit and cached > 100


def test_a_state_damaged_after_start_is_discarded_on_use(
    tmp_path: Path, demo_path: Path, cold: LlamaModel
) -> None:
    """A state file broken while the model runs costs one cold evaluation, never an error."""

    def cut(b: bytes) -> bytes:
        return b[:1000]

    def huge_header(b: bytes) -> bytes:
        return b[:6] + b"\xff\xff\xff\x7f" + b[10:]

    for i, (damage, reason) in enumerate(((cut, "truncated"), (huge_header, "malformed"))):
        kv = KVSettings(tmp_path / str(i), 0, 1 << 30)  # no RAM: every state goes to disk
        m = _model(demo_path, kv)
        first, _, _ = _run(m, HISTORY, "c1")
        (path,) = _states(tmp_path / str(i))
        path.write_bytes(damage(path.read_bytes()))
        _run(m, "Replace the live context.", "c2")
        with structlog.testing.capture_logs() as logs:
            text, _, hit = _run(m, HISTORY + first, "c1")
        assert not hit and text == _cold(cold, HISTORY + first)
        assert m.kv_discarded() == {reason: 1}
        assert [e["reason"] for e in logs if e["event"] == "kv_state_discarded"] == [reason]


def test_partial_files_are_removed_at_start(tmp_path: Path, demo_path: Path) -> None:
    """Files a crash left mid-write are deleted when the model loads, and counted."""
    kv = KVSettings(tmp_path / "kv", 0, 1 << 30)
    directory = _identity_dir(tmp_path, demo_path, kv)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (directory / f".abc{i}.kv.1234abcd.partial").write_bytes(b"x" * 1000)
    m = _model(demo_path, kv)
    assert list(directory.glob("*.partial")) == []
    assert m.kv_discarded() == {"partial": 3} and m.kv_bytes()[1] == 0


def test_the_file_being_written_counts_against_the_disk_budget(
    tmp_path: Path, demo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room is made before a state is written, so files plus the .partial fit the budget."""
    import daemon._kvfiles

    probe = _model(demo_path, KVSettings(None, 256 << 20, 0))
    _run(probe, HISTORY, "size")
    one = probe.kv_bytes()[0]
    budget = int(one * 2.5)
    peaks: list[int] = []
    real = daemon._kvfiles.write_state

    def watched(path: Path, *args: Any) -> None:
        real(path, *args)
        on_disk = sum(p.stat().st_size for p in path.parent.iterdir())
        peaks.append(on_disk)  # the new file now exists beside all the old ones

    monkeypatch.setattr("daemon.engine._kvcache.write_state", watched)
    m = _model(demo_path, KVSettings(tmp_path / "kv", 0, budget))
    for i in range(4):
        _run(m, f"Conversation {i}. " + HISTORY, f"c{i}")
    assert len(peaks) == 4 and max(peaks) <= budget


def test_dropping_a_conversation_removes_its_states(tmp_path: Path, demo_path: Path) -> None:
    """A dropped conversation leaves no state in RAM or on disk; others stay."""
    kv = KVSettings(tmp_path / "kv", int(1.5 * (256 << 20)), 1 << 30)
    m = _model(demo_path, kv)
    first, _, _ = _run(m, HISTORY, "alice-dm")
    _run(m, "Another conversation entirely. " + HISTORY, "group")
    m.close()  # both on disk now
    m = _model(demo_path, kv)
    _run(m, HISTORY + first, "alice-dm")  # alice's back in RAM, and still on disk
    assert m.kv is not None
    assert m.drop_conversation("alice-dm") == 1
    keys = [k.split("\x1f")[1] for k in (*m.kv.ram, *m.kv.disk)]
    assert keys == ["group"] and len(_states(tmp_path / "kv")) == 1
    m.close()
    again = _model(demo_path, kv)
    assert again.kv is not None and [k.split("\x1f")[1] for k in again.kv.disk] == ["group"]


def test_a_conversation_dropped_mid_generation_is_not_saved(
    tmp_path: Path, demo_path: Path
) -> None:
    """Forgetting a conversation while its reply is generated keeps that reply's state out."""
    m = _model(demo_path, KVSettings(tmp_path / "kv", 256 << 20, 1 << 30))
    pieces = m.generate(m.text_prompt(HISTORY), GREEDY, threading.Event(), conversation="c1")
    next(pieces)
    assert m.drop_conversation("c1") == 0
    list(pieces)
    assert m.kv is not None and not m.kv.ram and not m.kv.disk


def test_files_are_dropped_without_llama_cpp(tmp_path: Path, demo_path: Path) -> None:
    """daemon.drop_conversation_files deletes a conversation's files in a process without llama."""
    kv = KVSettings(tmp_path / "kv", 256 << 20, 1 << 30)
    m = _model(demo_path, kv)
    _run(m, HISTORY, "alice-dm")
    _run(m, "Something else. " + HISTORY, "group")
    m.close()
    other = _model(demo_path, kv, n_ctx=1024)  # another model's directory
    _run(other, HISTORY, "alice-dm")
    other.close()
    assert len(_states(tmp_path / "kv")) == 3
    code = (
        "import sys, pathlib, daemon\n"
        f"n = daemon.drop_conversation_files(pathlib.Path({str(tmp_path / 'kv')!r}), 'alice-dm')\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
        "print(n)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split()[-1] == "2"  # after the log lines
    (left,) = _states(tmp_path / "kv")
    again = _model(demo_path, kv)
    assert again.kv is not None and [k.split("\x1f")[1] for k in again.kv.disk] == ["group"]
    assert left.parent == again.kv.directory
