"""Bridges are found through entry points; the documented example installs and passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridges import (
    BridgeLoadError,
    BridgeOptionsError,
    UnknownBridge,
    build_bridge,
    installed_bridges,
    load_bridge_class,
)
from bridges.console import ConsoleBridge
from bridges.testing import FakeHost

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Iterator[str]:
    """A distribution on sys.path whose bridge fails to import; removed afterwards."""
    dist = tmp_path / "broken_bridge-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-bridge\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[personad.bridges]\nbroken = broken_bridge_mod:BrokenBridge\nnotabridge = json:dumps\n"
    )
    (tmp_path / "broken_bridge_mod.py").write_text("raise ImportError('needs libfoo 2')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "broken"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_bridge_mod", None)


def test_builtin_console_is_an_entry_point() -> None:
    """The console bridge is registered like any third-party bridge."""
    eps = installed_bridges()
    assert eps["console"].value == "bridges.console:ConsoleBridge"
    assert load_bridge_class("console") is ConsoleBridge


def test_failing_bridge_is_named_with_its_cause(broken_plugin: str) -> None:
    """An import failure names the bridge, its target and the cause."""
    with pytest.raises(BridgeLoadError, match=r"'broken'.*broken_bridge_mod.*needs libfoo 2"):
        load_bridge_class(broken_plugin)
    with pytest.raises(BridgeLoadError, match="not a Bridge subclass"):
        load_bridge_class("notabridge")


def test_only_enabled_bridges_are_imported(broken_plugin: str) -> None:
    """Building the console bridge never imports other installed bridges."""
    build_bridge("console", {}, FakeHost(), persona="Robin")
    assert "broken_bridge_mod" not in sys.modules


def test_unknown_bridge_and_bad_options() -> None:
    """An unknown name lists the installed ones; a bad option names the field."""
    with pytest.raises(UnknownBridge, match=r"installed: .*console"):
        load_bridge_class("telegraph")
    with pytest.raises(BridgeOptionsError, match="colour"):
        build_bridge("console", {"colour": "red"}, FakeHost(), persona="Robin")


def _docs_files() -> dict[str, str]:
    text = (ROOT / "docs" / "bridges.md").read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.S))


def test_documented_example_installs_loads_and_passes_the_contract(tmp_path: Path) -> None:
    """The example in docs/bridges.md is pip-installed, listed, loaded and contract-tested."""
    files = _docs_files()
    assert set(files) == {"pyproject.toml", "jsonl_bridge.py", "test_jsonl_bridge.py"}
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name, content in files.items():
        (pkg / name).write_text(content)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(pkg),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    listed = subprocess.run(
        [sys.executable, "-m", "daemon", "bridges", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "jsonl_bridge:JsonlBridge (personad-jsonl-bridge)" in listed.stdout
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bridges import load_bridge_class as l; print(l('jsonl').__name__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "JsonlBridge", loaded.stderr
    contract = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(pkg / "test_jsonl_bridge.py"),
        ],
        env=env,
        cwd=pkg,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert contract.returncode == 0, contract.stdout + contract.stderr
    assert "7 passed" in contract.stdout
