"""The daemon's side of a runner: an :class:`~daemon.Engine` whose model lives in a process.

:class:`RunnerEngine` proxies every call of the engine interface to its runner process; its
:class:`~daemon._runner._supervisor.Supervisor` keeps that process alive (probes, restarts
with backoff, failure). Requests in flight when the runner dies end with
:class:`~daemon.errors.RunnerCrashed` (503); requests that arrive during the restart wait for
it; when the last restart fails too, every request gets :class:`~daemon.errors.ModelFailed`
until the model is unloaded and loaded again.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from models import ModelManifest

from .._types import GenerationParams, Piece, Prompt
from ..errors import InvalidRequest, RequestError, RunnerCrashed
from ..settings import ModelsSettings
from ._book import RunnerBook
from ._handle import KVTally, RunnerHandle
from ._process import Gone
from ._settings import RunnerSettings
from ._supervisor import Supervisor
from .protocol import Call, Cancel, End, Fail, Generate, Load, PieceMsg, Result

__all__ = ["RunnerEngine", "RunnerLoader"]

log = structlog.get_logger("personad.runner")

# How often a waiting generation looks at its cancel event.
_CANCEL_POLL = 0.05
# Longest a call from the event loop (drop_conversation) may wait for the runner.
_LOOP_CALL_TIMEOUT = 2.0
# Token ids whose validity is remembered (logit_bias keys; the model's vocabulary is fixed).
_TOKENS_REMEMBERED = 4096


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
        self._settings = settings
        self._handle = RunnerHandle(self.name)
        self._tally = KVTally()
        self._token_ok: dict[int, bool] = {}
        self._supervisor = Supervisor(self._handle, load, settings, book, self._tally, clock)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the runner and load the model; :class:`ModelUnavailable` if the first load
        fails (a model asked for at start-up then stops the start-up)."""
        self._supervisor.start()

    def close(self) -> None:
        """Stop the runner (the model's memory goes with its process)."""
        self._supervisor.stop()

    @property
    def pid(self) -> int | None:
        """The runner's process id now (None while it restarts)."""
        proc = self._handle.proc
        return proc.pid if proc is not None and not proc.exited.is_set() else None

    # -- the engine interface ----------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context size in tokens."""
        proc = self._handle.proc
        return proc.ready.n_ctx if proc is not None else 0

    @property
    def parallel(self) -> int:
        """Generations the runner's engine decodes at once (the manager runs that many)."""
        proc = self._handle.proc
        return proc.ready.parallel if proc is not None else 1

    @property
    def adapter_names(self) -> Sequence[str]:
        """Adapters a request may name."""
        proc = self._handle.proc
        return tuple(proc.ready.adapter_names) if proc is not None else ()

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        while True:
            proc = self._handle.current()
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
        """Whether ``token`` is in the vocabulary, asked of the runner once per token (the
        first 4,096 kept): a round trip for each logit_bias key put 1-2 ms each before every
        request's first token."""
        known = self._token_ok.get(token)
        if known is None:
            known = bool(self._call("token_id_ok", token))
            if len(self._token_ok) < _TOKENS_REMEMBERED:
                self._token_ok[token] = known
        return known

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
            proc = self._handle.current()
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
                    self._tally.report(msg.kv_ram, msg.kv_disk, msg.discarded)
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
        return self._tally.bytes

    def kv_discarded(self) -> Mapping[str, int]:
        """KV files discarded since load, across runner restarts."""
        return self._tally.discarded()

    def drop_conversation(self, conversation: str) -> int:
        """Drop the conversation's states in the runner (0 if it is restarting: its RAM
        states died with it, and the daemon deletes the files itself)."""
        if not self._handle.is_ready():
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
