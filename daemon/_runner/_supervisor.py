"""Keeping one model's runner alive: start, liveness probes, restart with backoff, failure.

The supervisor runs on a thread of its own. Every ``probe_interval`` seconds it sends a
probe (a real one-token generation, outside the queue); a probe that misses its deadline
gets the runner killed. A dead runner is restarted after the next backoff delay; when the
last restart fails too, the model is failed (:meth:`RunnerHandle.fail`) until it is loaded
again. What it learns goes to the shared :class:`RunnerHandle` and :class:`KVTally` and to
the :class:`RunnerBook` (for /health, /metrics and systemd's watchdog).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from ..errors import ModelUnavailable
from ._book import RunnerBook
from ._handle import KVTally, RunnerHandle
from ._process import Gone, LoadError, RunnerProcess
from ._settings import RunnerSettings
from .protocol import Alive, Close, Fail, Load, Message, Probe

__all__ = ["Supervisor"]

log = structlog.get_logger("personad.runner")


class Supervisor:
    """Starts, watches and restarts the runner behind one :class:`RunnerHandle`."""

    def __init__(
        self,
        handle: RunnerHandle,
        load: Load,
        settings: RunnerSettings,
        book: RunnerBook,
        tally: KVTally,
        clock: Callable[[], float],
    ) -> None:
        self.name = handle.name
        self._handle = handle
        self._load = load
        self._settings = settings
        self._book = book
        self._tally = tally
        self._clock = clock
        self._closing = threading.Event()
        self._failures = 0
        self._started_at = clock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the runner and load the model; :class:`ModelUnavailable` if the first load
        fails (a model asked for at start-up then stops the start-up)."""
        self._book.update(self.name, state="starting", pid=None, stuck_since=None)
        try:
            proc = RunnerProcess.spawn(self.name, self._load, self._settings.load_timeout)
        except LoadError as exc:
            self._book.update(self.name, state="stopped", reason=exc.reason)
            raise ModelUnavailable(self.name, exc.reason) from exc
        self._adopt(proc)
        self._book.update(self.name, state="ready", pid=proc.pid)
        self._thread = threading.Thread(
            target=self._supervise, name=f"supervise-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the runner (the model's memory goes with its process)."""
        self._closing.set()
        proc = self._handle.close()
        if proc is not None:
            proc.stop(Close(), timeout=self._settings.kill_deadline)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._settings.kill_deadline)
        self._book.update(self.name, state="stopped", pid=None, probe_due=None, stuck_since=None)
        log.info("runner_stopped", model=self.name)

    def _adopt(self, proc: RunnerProcess) -> None:
        self._started_at = self._clock()
        self._handle.adopt(proc)

    def _supervise(self) -> None:
        settings = self._settings
        while not self._closing.is_set():
            proc = self._handle.proc
            if proc is None:
                return
            if not proc.exited.wait(settings.probe_interval) and not self._closing.is_set():
                self._probe(proc)
            if self._closing.is_set():
                return
            if proc.exited.is_set():
                gone = proc.gone or Gone("exited", "unknown")
                if not self._recover(gone.reason, gone.kind):
                    return

    def _probe(self, proc: RunnerProcess) -> None:
        deadline = self._settings.probe_deadline
        rid, answers = proc.open()
        self._book.update(self.name, probe_due=self._clock() + deadline)
        try:
            proc.send(Probe(rid))
            try:
                msg: Message | Gone | None = answers.get(timeout=deadline)
            except queue.Empty:
                msg = None
        finally:
            proc.forget(rid)
        if isinstance(msg, Alive):
            self._tally.report(msg.kv_ram, msg.kv_disk, msg.discarded)
            self._book.update(self.name, probe_due=None)
            return
        if isinstance(msg, Gone):
            self._book.update(self.name, probe_due=None)
            return
        why = f"failed: {msg.message}" if isinstance(msg, Fail) else "gave no token"
        reason = f"the liveness probe {why} within {deadline:g} s"
        self._book.update(self.name, stuck_since=self._clock())
        log.error("runner_unresponsive", model=self.name, pid=proc.pid, reason=reason)
        if proc.kill(reason, "probe_timeout", self._settings.kill_deadline):
            self._book.update(self.name, probe_due=None, stuck_since=None)
        else:  # the watchdog stops being fed: systemd restarts the whole service
            log.critical("runner_unkillable", model=self.name, pid=proc.pid)

    def _recover(self, reason: str, kind: str) -> bool:
        """Restart after a crash, with backoff; False when the model is failed (or closing)."""
        settings = self._settings
        if self._clock() - self._started_at >= settings.stable_after:
            self._failures = 0
        self._handle.restarting()
        log.error("runner_crashed", model=self.name, reason=reason, kind=kind)
        self._book.crashed(self.name, kind, reason)
        self._tally.runner_died()
        while True:
            if self._failures >= len(settings.backoff):
                self._fail(reason)
                return False
            delay = settings.backoff[self._failures]
            self._failures += 1
            if self._closing.wait(delay):
                return False
            try:
                proc = RunnerProcess.spawn(self.name, self._load, settings.load_timeout)
            except LoadError as exc:
                reason = exc.reason
                log.error("runner_restart_failed", model=self.name, reason=reason)
                self._book.crashed(self.name, exc.kind, reason)
                continue
            if self._closing.is_set():
                proc.stop(Close(), timeout=settings.kill_deadline)
                return False
            self._adopt(proc)
            self._book.restarted(self.name, proc.pid)
            log.info("runner_restarted", model=self.name, pid=proc.pid, attempt=self._failures)
            return True

    def _fail(self, reason: str) -> None:
        self._handle.fail(self._failures, reason)
        self._book.update(self.name, state="failed", pid=None)
        log.error("model_failed", model=self.name, restarts=self._failures, reason=reason)
