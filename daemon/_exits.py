"""How a child process ended, in words: one wording for runners and the device probe."""

from __future__ import annotations

import signal

__all__ = ["exit_reason"]


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
