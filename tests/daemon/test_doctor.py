"""`personad doctor` asks llama.cpp for its build and devices in a probe process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest

from daemon._devicequery import query_devices
from daemon._ops import doctor_checks
from daemon.errors import DeviceQueryFailed
from tests.conftest import free_port

# A probe that says something on stderr, as llama.cpp does before a failed assertion, and aborts.
ABORTS = [
    sys.executable,
    "-c",
    "import os, sys; sys.stderr.write('ggml_cuda_init: GGML_ASSERT(ok) failed\\n'); "
    "sys.stderr.flush(); os.abort()",
]
# A probe stuck in a driver call: it never returns on its own.
HANGS = [
    sys.executable,
    "-c",
    "import sys, threading; sys.stderr.write('probing Vulkan0\\n'); sys.stderr.flush(); "
    "threading.Event().wait()",
]
BABBLES = [sys.executable, "-c", "print('CUDA devices: 1'); print('{\"build\": 7}')"]
FAILS = [sys.executable, "-c", "import no_such_module_for_personad"]

# Runs doctor the way the `personad` command does, with the probe command in argv[2] (JSON;
# "null" for the real probe), then says whether llama.cpp was ever loaded into this process.
DOCTOR = textwrap.dedent(
    """
    import atexit, functools, json, sys
    from pathlib import Path

    def loaded():
        print("llama_cpp loaded:", "llama_cpp" in sys.modules, "daemon.engine" in sys.modules)

    atexit.register(loaded)
    from daemon._devicequery import query_devices
    from daemon._ops import doctor_checks, show_checks

    argv = json.loads(sys.argv[2])
    query = query_devices if argv is None else functools.partial(query_devices, argv)
    sys.exit(show_checks(doctor_checks(Path(sys.argv[1]), query)))
    """
)


def _config(tmp_path: Path) -> Path:
    """A config isolated from the machine, with two slots per model."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {free_port()}\n'
        f'[models]\ndir = "{tmp_path / "models"}"\nparallel = 2\n'
    )
    return cfg


def _doctor(tmp_path: Path, probe: list[str] | None) -> subprocess.CompletedProcess[str]:
    """Doctor's output in a fresh process, with ``probe`` as the device query's command."""
    return subprocess.run(
        [sys.executable, "-c", DOCTOR, str(_config(tmp_path)), json.dumps(probe)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path), "COLUMNS": "400"},
    )


def test_doctor_shows_the_probes_devices_without_loading_llama_cpp(tmp_path: Path) -> None:
    """Doctor prints the devices and each model's plan from the probe, and never imports
    llama_cpp (nor the engine package) into its own process."""
    proc = _doctor(tmp_path, None)
    out = proc.stdout
    assert "OK  llama.cpp: llama-cpp-python 0.3.36, GPU offload: CPU only" in out, proc.stderr
    assert "OK  devices: CPU [cpu] (" in out
    assert (
        "OK  model smollm2: 2 slots x 2048 tokens = 90 MiB KV cache; "
        "offload 0/30 layers on GPU (no GPU device: CPU only)"
    ) in out
    assert "llama_cpp loaded: False False" in out
    assert proc.returncode == 1  # no service unit is installed here


def test_a_probe_killed_by_sigabrt_is_one_failed_line_with_the_fix(tmp_path: Path) -> None:
    """A probe that aborts gives a FIX line naming SIGABRT, its last stderr line and the fix;
    the other checks still run, the exit status is 1, and no traceback is shown."""
    proc = _doctor(tmp_path, ABORTS)
    out = proc.stdout
    assert (
        "FIX llama.cpp's device query was killed by SIGABRT: "
        "ggml_cuda_init: GGML_ASSERT(ok) failed → check the GPU driver, or reinstall "
        "llama-cpp-python for your backend"
    ) in out, out
    assert "with models.n_gpu_layers set to a number, loading a model skips this query" in out
    assert "OK  model smollm2: readable" in out and "devices:" not in out
    assert "OK  data directory" in out
    assert "Traceback" not in out + proc.stderr
    assert proc.returncode == 1


def test_a_hanging_probe_is_killed_at_the_timeout() -> None:
    """A probe that does not answer in time is killed, and the failure names the timeout and
    what the probe last said."""
    with pytest.raises(DeviceQueryFailed) as caught:
        query_devices(HANGS, timeout=1)
    assert caught.value.problem == (
        "llama.cpp's device query did not finish in 1 s: probing Vulkan0"
    )
    assert caught.value.fix.startswith("check the GPU driver (nvidia-smi")


def test_a_probe_printing_something_else_is_a_failed_line(tmp_path: Path) -> None:
    """Output that is not a valid report fails doctor's llama.cpp line with the output shown
    and how to see the probe's output."""
    query = partial(query_devices, BABBLES)
    checks = doctor_checks(_config(tmp_path), query)
    failed = next(c for c in checks if c.what.startswith("llama.cpp's device query"))
    assert not failed.ok
    assert failed.what == (
        "llama.cpp's device query printed something other than its report: '{\"build\": 7}'"
    )
    assert "python -m daemon.engine.probe" in failed.fix
    assert not any(c.what.startswith("devices:") for c in checks)


def test_a_probe_that_fails_names_its_exit_status_and_error() -> None:
    """A probe that exits with a failure (llama_cpp not importable, say) names the status and
    the error, and says to reinstall llama-cpp-python."""
    with pytest.raises(DeviceQueryFailed) as caught:
        query_devices(FAILS)
    assert caught.value.problem == (
        "llama.cpp's device query exited with status 1: ModuleNotFoundError: "
        "No module named 'no_such_module_for_personad'"
    )
    assert caught.value.fix.startswith("reinstall llama-cpp-python for your backend")


def test_a_probe_that_cannot_start_is_a_failure() -> None:
    """A probe command that does not exist is a failed query, not an OSError."""
    with pytest.raises(DeviceQueryFailed, match="could not start"):
        query_devices(["/nonexistent/personad-probe"])
