"""The daemon's Python child processes (runners, the device probe): their environment, and
how they ended, in words."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["child_env", "exit_reason"]


def child_env() -> dict[str, str]:
    """This process's environment for a ``python -m daemon...`` child, which imports what this
    process can (the package from a source checkout, a test's factory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def exit_reason(code: int | None) -> tuple[str, str]:
    """(``"killed by SIGABRT"`` or ``"exited with status 3"``, a short kind for metrics) for
    a ``Popen.returncode``; a negative code is the signal that ended the process."""
    if code is None:
        return "still running", "unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}", name
    return f"exited with status {code}", f"exit_{code}"
