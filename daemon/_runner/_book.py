"""What every runner is doing, for /health, /metrics and the watchdog (thread-safe)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["RunnerBook", "RunnerState", "RunnerStatus"]

RunnerState = Literal["starting", "ready", "restarting", "failed", "stopped"]


@dataclass(frozen=True)
class RunnerStatus:
    """One model's runner, as last seen."""

    model: str
    state: RunnerState = "starting"
    pid: int | None = None
    restarts: int = 0
    # Crashes by kind (SIGKILL, SIGABRT, exit_1, probe_timeout, load_failed...).
    crashes: dict[str, int] = field(default_factory=dict)
    # The last crash, in words (with llama.cpp's last line when it said something).
    reason: str | None = None
    # Set while a probe is outstanding: the monotonic time it is due by.
    probe_due: float | None = None
    # Set from a failed probe until the stuck process is killed.
    stuck_since: float | None = None

    @property
    def degraded(self) -> bool:
        """Whether the model does not answer as it should now."""
        return self.state in ("restarting", "failed") or self.stuck_since is not None


class RunnerBook:
    """The status of each model's runner; counters outlive the runner (they never go down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, RunnerStatus] = {}

    def update(self, model: str, **changes: object) -> None:
        """Set fields of ``model``'s status."""
        with self._lock:
            old = self._status.get(model) or RunnerStatus(model)
            self._status[model] = replace(old, **changes)  # type: ignore[arg-type]

    def crashed(self, model: str, kind: str, reason: str) -> None:
        """Count a crash of ``model``'s runner."""
        with self._lock:
            old = self._status.get(model) or RunnerStatus(model)
            crashes = Counter(old.crashes)
            crashes[kind] += 1
            self._status[model] = replace(
                old,
                state="restarting",
                pid=None,
                crashes=dict(crashes),
                reason=reason,
                probe_due=None,
                stuck_since=None,
            )

    def restarted(self, model: str, pid: int) -> None:
        """``model``'s runner is back."""
        with self._lock:
            old = self._status.get(model) or RunnerStatus(model)
            self._status[model] = replace(
                old, state="ready", pid=pid, restarts=old.restarts + 1, stuck_since=None
            )

    def snapshot(self) -> dict[str, RunnerStatus]:
        """Every runner ever started, by model."""
        with self._lock:
            return dict(self._status)

    def alive(self, now: float) -> bool:
        """Whether the supervisors are doing their work: no probe is overdue and no stuck
        runner waits to be killed (what feeds systemd's watchdog)."""
        with self._lock:
            return not any(
                s.stuck_since is not None or (s.probe_due is not None and now > s.probe_due)
                for s in self._status.values()
            )
