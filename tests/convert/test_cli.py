"""The convert commands: JSON summaries, --register, progress on a terminal, extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

from convert import _hf
from convert._hf import convert_hf
from convert.errors import MissingExtra
from convert.testing import SyntheticSpec, write_synthetic_adapter, write_synthetic_base

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
SPEC = SyntheticSpec()


def _personad(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args, *extra], capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A synthetic base and adapter, and a config whose models dir is in tmp_path."""
    write_synthetic_base(tmp_path / "base.gguf", SPEC)
    write_synthetic_adapter(tmp_path / "adapter", SPEC)
    config = tmp_path / "personad.toml"
    config.write_text(f'[models]\ndir = "{tmp_path / "models"}"\ninclude_demo = false\n')
    return {
        "dir": tmp_path,
        "base": tmp_path / "base.gguf",
        "adapter": tmp_path / "adapter",
        "config": config,
    }


def test_merge_json_and_register(setup: dict[str, Path]) -> None:
    """merge --json prints a summary; --register makes `models list` show the result."""
    out = setup["dir"] / "persona.gguf"
    proc = _personad(
        "convert",
        "merge",
        "--base",
        str(setup["base"]),
        "--adapter",
        str(setup["adapter"]),
        "--out",
        str(out),
        "--quant",
        "Q8_0",
        "--json",
        "--register",
        "persona",
        config=setup["config"],
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    assert summary["merged"] == 2 * 7 and summary["quant"] == "Q8_0"
    assert Path(summary["registered"]).name == "persona.toml"
    listed = _personad("models", "list", "--json", config=setup["config"])
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["persona"]
    assert rows[0]["quantization"] == "Q8_0" and rows[0]["error"] is None


def test_adapter_register_binds_base_and_adapter(setup: dict[str, Path]) -> None:
    """adapter --register writes a manifest naming the base and the GGUF adapter."""
    out = setup["dir"] / "persona-lora.gguf"
    proc = _personad(
        "convert",
        "adapter",
        "--base",
        str(setup["base"]),
        "--adapter",
        str(setup["adapter"]),
        "--out",
        str(out),
        "--json",
        "--register",
        "p",
        config=setup["config"],
    )
    assert proc.returncode == 0, proc.stderr
    manifest = (setup["dir"] / "models" / "p.toml").read_text()
    assert str(setup["base"]) in manifest and str(out) in manifest
    assert json.loads(proc.stdout)["modules"] == 14


def test_quantize_command(setup: dict[str, Path]) -> None:
    """quantize IN OUT --type writes the file and reports its size."""
    out = setup["dir"] / "q.gguf"
    proc = _personad(
        "convert", "quantize", str(setup["base"]), str(out), "--type", "Q4_K_M", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["size_bytes"] == out.stat().st_size


def test_bad_input_exits_2_with_message(setup: dict[str, Path]) -> None:
    """A bad input is one line on stderr and exit 2, not a traceback."""
    proc = _personad(
        "convert",
        "merge",
        "--base",
        str(setup["dir"] / "missing.gguf"),
        "--adapter",
        str(setup["adapter"]),
        "--out",
        str(setup["dir"] / "o.gguf"),
    )
    assert proc.returncode == 2
    assert "missing.gguf: file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = _personad(
        "convert", "quantize", str(setup["base"]), str(setup["dir"] / "o.gguf"), "--type", "Q3_X"
    )
    assert proc.returncode == 2 and "choose one of" in proc.stderr


def test_progress_on_a_terminal(setup: dict[str, Path]) -> None:
    """On a terminal, merge shows rich progress bars with tensors and bytes."""
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "daemon",
            "convert",
            "merge",
            "--base",
            str(setup["base"]),
            "--adapter",
            str(setup["adapter"]),
            "--out",
            str(setup["dir"] / "o.gguf"),
        ],
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    child.expect(pexpect.EOF)
    child.close()
    text = child.before
    assert child.exitstatus == 0, text
    assert "merging" in text and "tensors" in text and "21/21" in text


def test_hf_needs_its_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch/transformers the message names the convert-hf extra."""
    (tmp_path / "config.json").write_text("{}")
    real = _hf.importlib.util.find_spec
    monkeypatch.setattr(
        _hf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real(name, *a),
    )
    with pytest.raises(MissingExtra, match=r"pip install 'personad\[convert-hf\]'"):
        convert_hf(tmp_path, tmp_path / "o.gguf", cache_root=tmp_path / "cache")


def test_hf_command_converts_and_registers(
    tiny_model: Path, converter_cache: Path, tmp_path: Path
) -> None:
    """convert hf runs llama.cpp's converter and registers a servable model."""
    config = tmp_path / "personad.toml"
    config.write_text(
        f'cache_dir = "{converter_cache}"\n[models]\ndir = "{tmp_path}/m"\ninclude_demo = false\n'
    )
    out = tmp_path / "tiny-q8.gguf"
    proc = _personad(
        "convert",
        "hf",
        str(tiny_model),
        "--out",
        str(out),
        "--outtype",
        "q8_0",
        "--json",
        "--register",
        "tiny",
        config=config,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(_personad("models", "list", "--json", config=config).stdout)
    assert rows[0]["name"] == "tiny" and rows[0]["quantization"] == "Q8_0"
    assert sorted(p.name for p in converter_cache.iterdir() if p.name.startswith("llama.cpp-"))


def test_hf_rejects_a_directory_without_config(tmp_path: Path) -> None:
    """A directory that is not a Hugging Face model is named."""
    with pytest.raises(Exception, match=r"no config\.json"):
        convert_hf(tmp_path, tmp_path / "o.gguf", cache_root=tmp_path)
