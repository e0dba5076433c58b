"""What a runner's engine and its supervisor share: the live process, its state, KV tallies."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Literal

from ..errors import ModelFailed, ModelUnavailable
from ._process import RunnerProcess

__all__ = ["KVTally", "RunnerHandle"]

State = Literal["ready", "restarting", "failed", "closed"]


class RunnerHandle:
    """The model's current runner process and state; requests wait here through a restart."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._state: State = "restarting"
        self._proc: RunnerProcess | None = None
        self._restarts = 0
        self._reason = ""

    @property
    def proc(self) -> RunnerProcess | None:
        """The last adopted process, alive or not (None before the first load)."""
        return self._proc

    def adopt(self, proc: RunnerProcess) -> None:
        """``proc`` has its model loaded: requests go to it from now on."""
        with self._cond:
            self._proc = proc
            self._state = "ready"
            self._cond.notify_all()

    def restarting(self) -> None:
        """The runner died; requests arriving now wait for the next :meth:`adopt`."""
        with self._cond:
            self._state = "restarting"

    def fail(self, restarts: int, reason: str) -> None:
        """The last restart failed too: every request gets :class:`ModelFailed`."""
        with self._cond:
            self._state = "failed"
            self._restarts = restarts
            self._reason = reason
            self._cond.notify_all()

    def close(self) -> RunnerProcess | None:
        """No more requests (:class:`ModelUnavailable`); returns the process to stop."""
        with self._cond:
            self._state = "closed"
            self._cond.notify_all()
            return self._proc

    def is_ready(self) -> bool:
        """Whether a runner is up and taking requests (not restarting, failed or closed)."""
        with self._cond:
            return self._state == "ready"

    def current(self) -> RunnerProcess:
        """The live runner, waiting for a restart in progress."""
        with self._cond:
            while True:
                if self._state == "failed":
                    raise ModelFailed(self.name, self._restarts, self._reason)
                if self._state == "closed":
                    raise ModelUnavailable(self.name, "the model was unloaded")
                proc = self._proc
                if self._state == "ready" and proc is not None and not proc.exited.is_set():
                    return proc
                self._cond.wait(0.5)


class KVTally:
    """KV bytes and discarded state files as the runner last reported them.

    A restarted runner counts its discarded files from zero again, so the counts of the
    runners before it are kept aside and added in.
    """

    def __init__(self) -> None:
        self.bytes: tuple[int, int] = (0, 0)
        self._discarded: Mapping[str, int] = {}
        self._discarded_before: Counter[str] = Counter()

    def report(self, kv_ram: int, kv_disk: int, discarded: Mapping[str, int]) -> None:
        """What the runner said last (in a probe's answer or at the end of a generation)."""
        self.bytes = (kv_ram, kv_disk)
        self._discarded = discarded

    def runner_died(self) -> None:
        """The runner's RAM states died with it; its discarded counts are kept."""
        self._discarded_before.update(self._discarded)
        self._discarded, self.bytes = {}, (0, 0)

    def discarded(self) -> dict[str, int]:
        """Discarded KV files since the model was loaded, across runner restarts."""
        total = Counter(self._discarded_before)
        total.update(self._discarded)
        return dict(total)
