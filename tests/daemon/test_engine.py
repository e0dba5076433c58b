"""The llama.cpp engine keeps the Engine contract the scripted fake is tested against."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon import Engine
from daemon._types import GenerationParams
from daemon.engine import LlamaModel
from tests.conftest import EOG_TOKENS, manifest_for


def test_llama_model_is_an_engine_that_stops_when_cancelled(demo_path: Path) -> None:
    """The real model is an Engine, and a cancelled generation ends at the next token."""
    model = LlamaModel(manifest_for(demo_path, context_length=512))
    try:
        assert isinstance(model, Engine)
        cancel = threading.Event()
        params = GenerationParams(max_tokens=500, logit_bias={t: -100.0 for t in EOG_TOKENS})
        pieces = model.generate(model.text_prompt("Count:"), params, cancel)
        assert next(pieces).finish_reason is None
        cancel.set()
        last = list(pieces)[-1]
        assert last.finish_reason == "cancelled" and last.completion_tokens < 10
    finally:
        model.close()
