"""The personad command: models list/show, serve's safety checks, and the terminal chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect

from tests.conftest import Running, write_model

PY = sys.executable


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "personad.toml"
    cfg.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n{extra}')
    return cfg


def test_models_list_reports_bad_files_and_lists_the_rest(tmp_path: Path, demo_path: Path) -> None:
    """Good models are listed with metadata; each bad one shows its error; exit status 1."""
    models = tmp_path / "models"
    write_model(models, "persona", demo_path, context_length=1024)
    write_model(models, "gone", tmp_path / "gone.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[:5_000_000])
    write_model(models, "cut", cut)
    proc = _run("models", "list", "--json", "--config", str(_config(tmp_path)))
    assert proc.returncode == 1, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["persona"]["architecture"] == "llama"
    assert rows["persona"]["parameters"] == 134_515_008
    assert rows["persona"]["quantization"] == "Q4_1"
    assert rows["persona"]["context_length"] == 1024  # what is served...
    assert rows["persona"]["trained_context_length"] == 8192  # ...of what the model knows
    assert rows["persona"]["size_bytes"] == demo_path.stat().st_size
    assert rows["smollm2"]["error"] is None
    assert "file not found" in rows["gone"]["error"]
    assert "truncated" in rows["cut"]["error"]


def test_models_list_table(tmp_path: Path) -> None:
    """The table shows the demo model's name, architecture, size and quantization."""
    proc = _run("models", "list", "--config", str(_config(tmp_path)), env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "smollm2" in x)
    for cell in ("SmolLM2-135M-Instruct.Q4_1.gguf", "llama", "134.5M", "Q4_1", "2048", "93.8 MB"):
        assert cell in line


def test_models_list_shows_the_served_context(tmp_path: Path, demo_path: Path) -> None:
    """The CONTEXT listed is the context the engine really gives each model."""
    from daemon.engine import LlamaModel
    from models import Catalog

    write_model(tmp_path / "models", "small", demo_path, context_length=1024)
    write_model(tmp_path / "models", "unset", demo_path)
    proc = _run("models", "list", "--json", "--config", str(_config(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    listed = {r["name"]: r["context_length"] for r in json.loads(proc.stdout)}
    catalog = Catalog.load(tmp_path / "models")
    for name in ("small", "unset", "smollm2"):
        model = LlamaModel(catalog.get(name))
        try:
            assert listed[name] == model.n_ctx, name
        finally:
            model.close()
    assert listed["unset"] < 8192  # capped, not the trained context


def test_models_list_does_not_load_llama_cpp(tmp_path: Path) -> None:
    """Listing reads GGUF headers with the gguf package only."""
    code = (
        "import sys\n"
        "from daemon._cli import app\n"
        "try:\n"
        f"    app(['models', 'list', '--config', {str(_config(tmp_path))!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
        "assert 'llm' not in sys.modules, 'llm was imported'\n"
    )
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_models_show_prints_everything(tmp_path: Path) -> None:
    """show NAME prints the manifest, the GGUF summary and the metadata."""
    proc = _run("models", "show", "smollm2", "--json", "--config", str(_config(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["manifest"]["name"] == "smollm2"
    assert data["metadata"]["llama.block_count"] == 30
    assert "<|im_start|>" in data["chat_template"]
    text = _run("models", "show", "smollm2", "--config", str(_config(tmp_path))).stdout
    assert "general.architecture = llama" in text


def test_models_show_unknown(tmp_path: Path) -> None:
    """An unknown name fails and lists the known ones."""
    proc = _run("models", "show", "nope", "--config", str(_config(tmp_path)))
    assert proc.returncode == 1 and "smollm2" in proc.stderr


def test_serve_refuses_public_bind_without_key(tmp_path: Path) -> None:
    """Binding beyond loopback without an API key exits 2 and says how to fix it."""
    proc = _run("serve", "--host", "0.0.0.0", "--config", str(_config(tmp_path)))
    assert proc.returncode == 2
    assert "refusing to bind 0.0.0.0 without an API key" in proc.stderr.replace("\n", " ")


def test_chat_streams_in_the_terminal(shared_daemon: Running) -> None:
    """personad chat talks to a running daemon and keeps the conversation going."""
    child = pexpect.spawn(
        PY,
        ["-m", "daemon", "chat", "--url", shared_daemon.url],
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        child.expect(">>> ")
        child.sendline("Say hello.")
        child.expect(">>> ")
        assert len(child.before.strip().splitlines()) >= 2  # the echo and a reply
        child.sendline("/reset")
        child.expect("history cleared")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_reports_an_unreachable_daemon() -> None:
    """Without a daemon, chat says how to start one instead of a traceback."""
    child = pexpect.spawn(
        PY, ["-m", "daemon", "chat", "--url", "http://127.0.0.1:9"], encoding="utf-8", timeout=60
    )
    child.expect(">>> ")
    child.sendline("hi")
    child.expect("personad serve")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_embedded_chat_is_the_quickstart(tmp_path: Path) -> None:
    """chat --embedded starts its own daemon on the demo model and answers."""
    child = pexpect.spawn(
        PY,
        ["-m", "daemon", "chat", "--embedded", "--config", str(_config(tmp_path))],
        encoding="utf-8",
        timeout=120,
    )
    try:
        child.expect(">>> ")
        child.sendline("What is the capital of France?")
        child.expect(">>> ")
        assert child.before.strip()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
