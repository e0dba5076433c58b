"""Per-request LoRA adapters on one shared base model."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from convert._export import export_adapter
from convert.testing import SyntheticSpec, write_synthetic_adapter
from daemon._types import GenerationParams
from daemon.engine import EngineOptions, KVSettings, LlamaModel
from models import ModelManifest
from tests.conftest import make_settings, serve, write_model

# SmolLM2-135M's shapes, so that adapters made here fit the demo model.
SMOLLM2 = SyntheticSpec(hidden=576, ff=1536, layers=30, vocab=49152, heads=9, kv_heads=3)
GREEDY = GenerationParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0)
PROMPT = "The best thing about hiking in the mountains is"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, demo_path: Path) -> dict[str, Path]:
    """Two GGUF adapters for the demo model, exported by personad convert adapter."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, seed in (("alice", 1), ("bob", 2)):
        peft = write_synthetic_adapter(root / f"{name}-peft", SMOLLM2, seed=seed, scale=0.05)
        out[name] = export_adapter(demo_path, peft, root / f"{name}.gguf").output
    return out


def _text(model: LlamaModel, adapter: str | None, conversation: str | None = None) -> str:
    pieces = model.generate(
        model.text_prompt(PROMPT),
        GREEDY,
        threading.Event(),
        conversation=conversation,
        adapter=adapter,
    )
    return "".join(p.text for p in pieces)


def test_switching_adapters_per_request(demo_path: Path, adapters: dict[str, Path]) -> None:
    """Each request gets its adapter's output, as if the model were loaded with it alone."""
    shared = LlamaModel(
        ModelManifest(name="shared", path=demo_path, context_length=512, adapters=adapters)
    )
    base = _text(shared, None)
    alice = _text(shared, "alice")
    bob = _text(shared, "bob")
    assert len({base, alice, bob}) == 3
    assert _text(shared, None) == base  # switching back restores the base weights
    for name, expected in (("alice", alice), ("bob", bob)):
        fixed = LlamaModel(
            ModelManifest(name=name, path=demo_path, context_length=512, adapter=adapters[name])
        )
        assert _text(fixed, None) == expected
        fixed.close()
    shared.close()


@pytest.mark.parametrize("parallel", [1, 4])
def test_no_adapter_means_the_manifest_s_own(
    demo_path: Path, adapters: dict[str, Path], parallel: int
) -> None:
    """With an adapter in the manifest, a request naming none gets that adapter's output,
    also after a request that switched to another adapter."""
    manifest = ModelManifest(
        name="alice",
        path=demo_path,
        context_length=512,
        adapter=adapters["alice"],
        adapters={"bob": adapters["bob"]},
    )
    m = LlamaModel(manifest, options=EngineOptions(parallel=parallel))
    try:
        before = _text(m, None)
        bob = _text(m, "bob")
        after = _text(m, None)
    finally:
        m.close()
    assert before == after != bob


@pytest.mark.parametrize("parallel", [1, 4])
def test_kv_states_are_kept_per_adapter(
    tmp_path: Path, demo_path: Path, adapters: dict[str, Path], parallel: int
) -> None:
    """A conversation's state under one adapter is never reused under another."""
    m = LlamaModel(
        ModelManifest(name="shared", path=demo_path, context_length=512, adapters=adapters),
        KVSettings(tmp_path / "kv", 64 << 20, 0, min_gain=1),
        EngineOptions(parallel=parallel),
    )
    _text(m, "alice", "chat")
    pieces = list(
        m.generate(
            m.text_prompt(PROMPT + " and"),
            GREEDY,
            threading.Event(),
            conversation="chat",
            adapter="bob",
        )
    )
    assert pieces[-1].cached_tokens == 0  # alice's state of the same text is not bob's
    _text(m, "alice", "other")  # the live context is now alice's again, for another chat
    pieces = list(
        m.generate(
            m.text_prompt(PROMPT + " and"),
            GREEDY,
            threading.Event(),
            conversation="chat",
            adapter="bob",
        )
    )
    # bob's own state for "chat" was kept: restored from the store with one slot, still live
    # in its slot with four.
    assert pieces[-1].cached_tokens > 0
    m.close()


def test_unknown_adapter_is_400(tmp_path: Path, demo_path: Path, adapters: dict[str, Path]) -> None:
    """A request naming an adapter the model lacks gets 400 listing the adapters."""
    lines = [f'{k} = "{v}"' for k, v in adapters.items()]
    write_model(tmp_path / "models", "shared", demo_path)
    manifest = tmp_path / "models" / "shared.toml"
    manifest.write_text(manifest.read_text() + "[adapters]\n" + "\n".join(lines) + "\n")
    with serve(make_settings(tmp_path)) as running:
        ok = httpx.post(
            f"{running.url}/v1/completions",
            json={"model": "shared", "prompt": PROMPT, "max_tokens": 3, "adapter": "alice"},
            timeout=120,
        )
        assert ok.status_code == 200
        bad = httpx.post(
            f"{running.url}/v1/completions",
            json={"model": "shared", "prompt": PROMPT, "max_tokens": 3, "adapter": "carol"},
            timeout=120,
        )
        assert bad.status_code == 400
        assert "its adapters: alice, bob" in bad.json()["error"]["message"]
