"""schemathesis against live daemons: no 5xx but those declared, every response as declared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemon.testing import scripted_loader
from tests.conftest import Running, make_settings, serve, write_model

# Checks that hold for any request: a schema-valid body may still be refused with a declared
# 400 (an adapter the model lacks, n = 2, a prompt that does not fit), so positive-data
# acceptance is not one of them.
CHECKS = ",".join(
    [
        "no_500_or_502",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def _register_checks() -> None:
    """Run in schemathesis (SCHEMATHESIS_HOOKS names this module): 503 and 504 are answers
    the schema declares (queue full, runner crashed, queue timeout); 500 and 502 never are
    what a request deserves, even where declared for a model that cannot load."""
    import schemathesis

    @schemathesis.check
    def no_500_or_502(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code in (500, 502):
            raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
        return None


if "schemathesis" in sys.modules and os.environ.get("SCHEMATHESIS_HOOKS") == __name__:
    _register_checks()


def _fuzz(running: Running, tmp: Path, examples: int, *only: str, phases: str = "") -> str:
    """Run schemathesis against ``running`` (bounded); its output, failing the test on a
    finding."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{running.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        "7",
        "--request-timeout",
        "60",
        "--report-dir",
        str(tmp),
        "--suppress-health-check",
        "all",
        "--generation-database",
        ":memory:",
    ]
    if phases:
        command += ["--phases", phases]
    for path in only:
        command += ["--include-path", path]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __name__, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    (tmp / "schemathesis.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-2000:]
    return done.stdout


def test_the_api_survives_fuzzing_on_the_scripted_engine(tmp_path: Path, demo_path: Path) -> None:
    """About 900 generated requests to every operation, the scripted engine answering."""
    write_model(tmp_path / "models", "tiny-ctx", demo_path, context_length=64)
    settings = make_settings(tmp_path, queue_timeout=30)
    with serve(settings, loader=scripted_loader()) as running:
        out = _fuzz(running, tmp_path, 150)
    assert "passed" in out.lower()


def test_the_api_survives_fuzzing_on_the_real_model(tmp_path: Path, demo_path: Path) -> None:
    """About a hundred generated completions to the demo model in its runner, its context
    capped so that no reply is long."""
    write_model(tmp_path / "models", "smollm2", demo_path, context_length=96)
    settings = make_settings(tmp_path, include_demo=False, preload=["smollm2"], queue_timeout=60)
    with serve(settings, wait_preload=True) as running:
        _fuzz(
            running,
            tmp_path,
            50,
            "/v1/chat/completions",
            "/v1/completions",
            phases="fuzzing",
        )
        assert running.health()["runners"]["smollm2"]["restarts"] == 0
