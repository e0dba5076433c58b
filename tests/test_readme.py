"""The README's Quickstart and CI agree, and CI fails when no test runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quickstart_has_exactly_two_commands() -> None:
    """One command runs the main job on the demo model, one runs the tests."""
    main_job, tests = _quickstart_commands()
    assert main_job.endswith("personad run") and "[demo]" in main_job
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the Quickstart's test command, with errexit on."""
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert script.rstrip().splitlines()[-1] == _quickstart_commands()[1]


def test_pytest_exits_nonzero_when_no_test_runs(tmp_path: Path) -> None:
    """pytest's exit 5 (no tests collected) is non-zero, so errexit fails the CI run."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 5
