"""The linters run as part of the test suite, so the one test command checks everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_check() -> None:
    """ruff finds nothing to complain about."""
    proc = _run("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    """The code is formatted with ruff format."""
    proc = _run("ruff", "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    """mypy --strict passes on daemon/, bridges/, models/ and convert/."""
    proc = _run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _lint_imports(config: Path, path: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config)],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(path)},
    )


def test_import_contracts() -> None:
    """Dependencies point one way: import-linter keeps every contract in pyproject.toml."""
    proc = _lint_imports(ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_reversed_arrow_breaks_the_contracts(tmp_path: Path) -> None:
    """models importing bridges (an arrow against the layering) makes import-linter fail."""
    for package in ("daemon", "bridges", "models", "convert"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "models" / "_reversed.py").write_text("import bridges\n")
    proc = _lint_imports(tmp_path / "pyproject.toml", tmp_path)
    assert proc.returncode != 0
    assert "models imports none of ours BROKEN" in proc.stdout
    assert "models._reversed -> bridges" in proc.stdout
