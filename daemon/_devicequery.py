"""Asking llama.cpp what it was built with and which devices it sees, from a process of its own.

Only runners load llama.cpp. ``personad doctor`` runs ``python -m daemon.engine.probe`` in
the same environment instead, with a timeout: a GPU driver that aborts or hangs in the query
fails one doctor line that names the problem and the fix, rather than doctor itself. The probe
prints one JSON document, a :class:`ProbeReport`; its shape is defined here, for both sides.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from ._children import child_env, exit_reason
from ._offload import Device
from .errors import DeviceQueryFailed, clip

__all__ = [
    "PROBE_ARGV",
    "PROBE_TIMEOUT",
    "REPORT",
    "LlamaBuild",
    "ProbeReport",
    "query_devices",
]

PROBE_ARGV: tuple[str, ...] = (sys.executable, "-m", "daemon.engine.probe")
# Loading llama.cpp and its GPU backends takes seconds; a query this slow has hung.
PROBE_TIMEOUT = 30.0
# How long a killed probe may take to go: one stuck inside a driver call may never do so.
_REAP_TIMEOUT = 5.0
# Characters of the probe's last stderr line shown.
_DETAIL = 300

_SKIP = "; with models.n_gpu_layers set to a number, loading a model skips this query"
_REINSTALL = (
    "reinstall llama-cpp-python for your backend "
    '(e.g. CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
    "llama-cpp-python)"
)
_EXIT_FIX = _REINSTALL + ", and check the GPU driver" + _SKIP
_CRASH_FIX = "check the GPU driver, or " + _REINSTALL + _SKIP
_HANG_FIX = (
    "check the GPU driver (nvidia-smi, rocm-smi or vulkaninfo should answer at once)" + _SKIP
)
_GARBAGE_FIX = (
    "run `python -m daemon.engine.probe` to see what it prints; personad and "
    "llama-cpp-python must be installed in the same environment"
)


@dataclass(frozen=True)
class LlamaBuild:
    """What llama.cpp was built with (``daemon.engine.build_info``)."""

    llama_cpp_python: str
    gpu_offload: bool
    system_info: str


@dataclass(frozen=True)
class ProbeReport:
    """The probe's one JSON document: the build and the devices of ggml's registry."""

    build: LlamaBuild
    devices: tuple[Device, ...]


REPORT: TypeAdapter[ProbeReport] = TypeAdapter(ProbeReport)


def query_devices(
    argv: Sequence[str] = PROBE_ARGV, *, timeout: float = PROBE_TIMEOUT
) -> ProbeReport:
    """Run the probe ``argv`` and read its report.

    Raises :class:`DeviceQueryFailed` when the probe cannot start, is killed by a signal,
    exits with a failure status, runs past ``timeout`` seconds or prints no valid report.
    """
    out, err, code = _run(argv, timeout)
    last = _last_line(err)
    if code != 0:
        reason = exit_reason(code)[0]
        raise DeviceQueryFailed(
            f"was {reason}" if code < 0 else reason, _CRASH_FIX if code < 0 else _EXIT_FIX, last
        )
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        raise DeviceQueryFailed("printed no report", _GARBAGE_FIX, last)
    # Only the last line: a backend that writes to stdout while loading goes before it.
    try:
        return REPORT.validate_json(lines[-1])
    except ValidationError as exc:
        raise DeviceQueryFailed(
            "printed something other than its report", _GARBAGE_FIX, repr(clip(lines[-1]))
        ) from exc


def _run(argv: Sequence[str], timeout: float) -> tuple[bytes, bytes, int]:
    """The probe's stdout, stderr and exit status (negative: the signal that killed it)."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
    except OSError as exc:
        raise DeviceQueryFailed("could not start", _GARBAGE_FIX, str(exc)) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        err = b""
        # A probe stuck in the kernel may outlive a kill: doctor goes on without it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            # Returns what the probe wrote before the timeout too.
            err = proc.communicate(timeout=_REAP_TIMEOUT)[1]
        raise DeviceQueryFailed(
            f"did not finish in {timeout:g} s", _HANG_FIX, _last_line(err)
        ) from exc
    return out, err, proc.returncode


def _last_line(stream: bytes) -> str:
    lines = [line.strip() for line in stream.decode("utf-8", "replace").splitlines()]
    return clip(next((line for line in reversed(lines) if line), ""), _DETAIL)
