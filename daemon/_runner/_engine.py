"""The daemon's side of a runner: an :class:`~daemon.Engine` whose model lives in a process.

:class:`RunnerEngine` proxies every call of the engine interface to its runner process and
supervises it on a thread of its own: it probes it every ``probe_interval`` seconds (a real
one-token generation, outside the queue), kills it when the probe misses its deadline, and
restarts it after a crash with backoff. Requests in flight when the runner dies end with
:class:`~daemon.errors.RunnerCrashed` (503); requests that arrive during the restart wait for
it; when the last restart fails too, every request gets :class:`~daemon.errors.ModelFailed`
until the model is unloaded and loaded again.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from models import ModelManifest

from .._types import GenerationParams, Piece, Prompt
from ..errors import (
    InvalidRequest,
    ModelFailed,
    ModelUnavailable,
    RequestError,
    RunnerCrashed,
)
from ..settings import ModelsSettings
from ._book import RunnerBook
from ._process import Gone, LoadError, RunnerProcess
from ._settings import RunnerSettings
from .protocol import (
    Alive,
    Call,
    Cancel,
    Close,
    End,
    Fail,
    Generate,
    Load,
    Message,
    PieceMsg,
    Probe,
    Result,
)

__all__ = ["RunnerEngine", "RunnerLoader"]

log = structlog.get_logger("personad.runner")

# How often a waiting generation looks at its cancel event.
_CANCEL_POLL = 0.05
# Longest a call from the event loop (drop_conversation) may wait for the runner.
_LOOP_CALL_TIMEOUT = 2.0

State = Literal["ready", "restarting", "failed", "closed"]


def _remote_error(msg: Fail) -> Exception:
    """The exception a :class:`Fail` stands for, as the engine in the runner raised it."""
    if msg.status == 400:
        invalid = InvalidRequest(msg.message, msg.param)
        invalid.code = msg.code
        return invalid
    if msg.status is not None:
        err = RequestError(msg.message)
        err.status = msg.status
        err.error_type = msg.error_type or "server_error"
        err.code, err.param = msg.code, msg.param
        return err
    return RuntimeError(msg.message)


class RunnerEngine:
    """A model loaded in a runner process; satisfies :class:`daemon.Engine`."""

    def __init__(
        self,
        manifest: ModelManifest,
        load: Load,
        settings: RunnerSettings,
        book: RunnerBook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self._load = load
        self._settings = settings
        self._book = book
        self._clock = clock
        self._cond = threading.Condition()
        self._state: State = "restarting"
        self._proc: RunnerProcess | None = None
        self._closing = threading.Event()
        self._failures = 0
        self._reason = ""
        self._kv: tuple[int, int] = (0, 0)
        self._discarded: dict[str, int] = {}
        self._discarded_before: Counter[str] = Counter()
        self._supervisor: threading.Thread | None = None
        self._started_at = clock()

    # -- lifecycle ---------------------------------------------------------------------------

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
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"supervise-{self.name}", daemon=True
        )
        self._supervisor.start()

    def _adopt(self, proc: RunnerProcess) -> None:
        with self._cond:
            self._proc = proc
            self._state = "ready"
            self._started_at = self._clock()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the runner (the model's memory goes with its process)."""
        self._closing.set()
        with self._cond:
            self._state = "closed"
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            proc.stop(Close(), timeout=self._settings.kill_deadline)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=self._settings.kill_deadline)
        self._book.update(self.name, state="stopped", pid=None, probe_due=None, stuck_since=None)
        log.info("runner_stopped", model=self.name)

    @property
    def pid(self) -> int | None:
        """The runner's process id now (None while it restarts)."""
        proc = self._proc
        return proc.pid if proc is not None and not proc.exited.is_set() else None

    # -- supervision -------------------------------------------------------------------------

    def _supervise(self) -> None:
        settings = self._settings
        while not self._closing.is_set():
            proc = self._proc
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
            self._kv = (msg.kv_ram, msg.kv_disk)
            self._discarded = msg.discarded
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
        with self._cond:
            self._state = "restarting"
        log.error("runner_crashed", model=self.name, reason=reason, kind=kind)
        self._book.crashed(self.name, kind, reason)
        self._discarded_before.update(self._discarded)
        self._discarded, self._kv = {}, (0, 0)
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
        with self._cond:
            self._state = "failed"
            self._reason = reason
            self._cond.notify_all()
        self._book.update(self.name, state="failed", pid=None)
        log.error("model_failed", model=self.name, restarts=self._failures, reason=reason)

    def _current(self) -> RunnerProcess:
        """The live runner, waiting for a restart in progress."""
        with self._cond:
            while True:
                if self._state == "failed":
                    raise ModelFailed(self.name, self._failures, self._reason)
                if self._state == "closed":
                    raise ModelUnavailable(self.name, "the model was unloaded")
                proc = self._proc
                if self._state == "ready" and proc is not None and not proc.exited.is_set():
                    return proc
                self._cond.wait(0.5)

    # -- the engine interface ----------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context size in tokens."""
        proc = self._proc
        return proc.ready.n_ctx if proc is not None else 0

    @property
    def parallel(self) -> int:
        """Generations the runner's engine decodes at once (the manager runs that many)."""
        proc = self._proc
        return proc.ready.parallel if proc is not None else 1

    @property
    def adapter_names(self) -> Sequence[str]:
        """Adapters a request may name."""
        proc = self._proc
        return tuple(proc.ready.adapter_names) if proc is not None else ()

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        while True:
            proc = self._current()
            rid, answers = proc.open()
            try:
                if not proc.send(Call(rid, method, list(args))):
                    proc.exited.wait(self._settings.kill_deadline)
                    continue  # it died before seeing the call: wait for the restart
                msg = answers.get(timeout=timeout)
            finally:
                proc.forget(rid)
            if isinstance(msg, Result):
                return msg.value
            if isinstance(msg, Fail):
                raise _remote_error(msg)
            if isinstance(msg, Gone):
                raise RunnerCrashed(self.name, msg.reason)
            raise RuntimeError(f"the runner answered a call with {type(msg).__name__}")

    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render and tokenize chat messages (in the runner)."""
        value = self._call("chat_prompt", messages)
        return Prompt(tokens=value["tokens"], stop=tuple(value["stop"]))

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize a raw prompt (in the runner)."""
        value = self._call("text_prompt", text)
        return Prompt(tokens=value["tokens"], stop=tuple(value["stop"]))

    def token_id_ok(self, token: int) -> bool:
        """Whether ``token`` is in the vocabulary."""
        return bool(self._call("token_id_ok", token))

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event,
        conversation: str | None = None,
        adapter: str | None = None,
    ) -> Iterator[Piece]:
        """Stream the reply from the runner; cancelling crosses the process boundary."""
        wire = dataclasses.asdict(params)
        while True:
            proc = self._current()
            rid, answers = proc.open()
            message = Generate(
                rid, list(prompt.tokens), list(prompt.stop), wire, conversation, adapter
            )
            if proc.send(message):
                break
            proc.forget(rid)
            proc.exited.wait(self._settings.kill_deadline)  # died before it: wait for restart
        ended = cancelled = False
        try:
            while True:
                try:
                    msg = answers.get(timeout=_CANCEL_POLL)
                except queue.Empty:
                    if cancel.is_set() and not cancelled:
                        cancelled = proc.send(Cancel(rid)) or True
                    continue
                if isinstance(msg, PieceMsg):
                    yield Piece(
                        msg.text,
                        msg.finish_reason,
                        msg.completion_tokens,
                        msg.cached_tokens,
                        msg.cache_hit,
                    )
                elif isinstance(msg, End):
                    ended = True
                    self._kv = (msg.kv_ram, msg.kv_disk)
                    self._discarded = msg.discarded
                    return
                elif isinstance(msg, Fail):
                    ended = True
                    raise _remote_error(msg)
                elif isinstance(msg, Gone):
                    ended = True
                    raise RunnerCrashed(self.name, msg.reason)
        finally:
            if not ended:  # the reader left early: the runner stops generating too
                proc.send(Cancel(rid))
            proc.forget(rid)

    def kv_bytes(self) -> tuple[int, int]:
        """Stored KV bytes (RAM, disk), as the runner last reported them."""
        return self._kv

    def kv_discarded(self) -> Mapping[str, int]:
        """KV files discarded since load, across runner restarts."""
        total = Counter(self._discarded_before)
        total.update(self._discarded)
        return dict(total)

    def drop_conversation(self, conversation: str) -> int:
        """Drop the conversation's states in the runner (0 if it is restarting: its RAM
        states died with it, and the daemon deletes the files itself)."""
        with self._cond:
            ready = self._state == "ready"
        if not ready:
            return 0
        try:
            return int(self._call("drop_conversation", conversation, timeout=_LOOP_CALL_TIMEOUT))
        except (queue.Empty, RequestError):
            log.warning("runner_drop_skipped", model=self.name)
            return 0


class RunnerLoader:
    """The daemon's default loader: each model in a runner process of its own."""

    def __init__(
        self,
        models: ModelsSettings,
        data_dir: Path,
        settings: RunnerSettings,
        book: RunnerBook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models.model_dump(mode="json")
        self.data_dir = str(data_dir)
        self.settings = settings
        self.book = book
        self.clock = clock

    def __call__(self, manifest: ModelManifest) -> RunnerEngine:
        """Start ``manifest``'s runner; blocks until the model is loaded in it."""
        load = Load(
            factory=self.settings.factory,
            manifest=manifest.model_dump(mode="json", exclude_unset=True),
            models=self.models,
            data_dir=self.data_dir,
        )
        engine = RunnerEngine(manifest, load, self.settings, self.book, self.clock)
        engine.start()
        return engine
