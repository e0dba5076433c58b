"""The runner: one model's engine in a process of its own, served over the runner protocol.

Started by the daemon (``daemon._runner``) as ``python -m daemon.engine.worker FD``, where FD
is its end of a socket pair. This is the only process that loads llama.cpp: when llama.cpp
aborts (a failed assertion, a GPU out of memory), only this process dies, and the daemon
restarts it. Its stdout and stderr (llama.cpp's own messages) are read by the daemon and
written to the structured log.

Each generation and call runs on a thread of its own, so that a batching engine decodes
several at once; an engine that is not (``parallel`` of 1) gets them one at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from models import ModelManifest

from .._engine import Engine
from .._runner.protocol import (
    Alive,
    Call,
    Cancel,
    Channel,
    Close,
    End,
    Fail,
    Generate,
    Load,
    LoadFailed,
    Message,
    PieceMsg,
    Probe,
    Ready,
    Result,
)
from .._types import GenerationParams, Piece, Prompt
from ..errors import RequestError
from ..settings import ModelsSettings

__all__ = ["build_engine", "main"]

Factory = Callable[[ModelManifest, ModelsSettings, Path], Engine]

# What the probe generates from: one token, greedy, nothing kept.
_PROBE_PARAMS = GenerationParams(max_tokens=1, temperature=0.0, seed=0)


def build_engine(manifest: ModelManifest, models: ModelsSettings, data_dir: Path) -> Engine:
    """The default factory: llama.cpp with the KV store in ``data_dir/kv`` and the [models]
    engine options."""
    from . import _llama

    kv = _llama.KVSettings(data_dir / "kv", models.kv_cache_ram_bytes, models.kv_cache_disk_bytes)
    options: Any = None
    if hasattr(_llama, "EngineOptions"):
        wanted = (
            "flash_attn",
            "n_threads",
            "n_threads_batch",
            "parallel",
            "n_gpu_layers",
            "prefill_chunk",
        )
        known = _llama.EngineOptions.__dataclass_fields__
        given = {k: getattr(models, k) for k in wanted if k in known and hasattr(models, k)}
        options = _llama.EngineOptions(**given)
        return _llama.LlamaModel(manifest, kv, options)
    return _llama.LlamaModel(manifest, kv)


def _resolve(path: str) -> Factory:
    module, _, name = path.partition(":")
    factory: Factory = getattr(importlib.import_module(module), name)
    return factory


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _fail(rid: int, exc: BaseException) -> Fail:
    if isinstance(exc, RequestError):
        return Fail(rid, str(exc), exc.status, exc.error_type, exc.code, exc.param)
    return Fail(rid, _one_line(exc))


def _prompt(prompt: Prompt) -> dict[str, Any]:
    return {"tokens": list(prompt.tokens), "stop": list(prompt.stop)}


class Worker:
    """Serves one engine over a channel until told to close or the daemon goes away."""

    def __init__(self, engine: Engine, channel: Channel) -> None:
        self.engine = engine
        self.channel = channel
        self._cancels: dict[int, threading.Event] = {}
        # An engine that decodes one sequence at a time gets one generation at a time.
        self._serial = int(getattr(engine, "parallel", 1) or 1) <= 1
        self._gate = threading.Lock()
        # Bumped at every piece: a probe arriving while a generation holds a serial engine is
        # answered by that generation's next piece (it proves the engine generates).
        self._progress = threading.Condition()
        self._pieces = 0

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def _kv(self) -> dict[str, Any]:
        ram, disk = self.engine.kv_bytes()
        return {"kv_ram": ram, "kv_disk": disk, "discarded": dict(self.engine.kv_discarded())}

    def _call(self, msg: Call) -> None:
        methods: dict[str, Callable[..., Any]] = {
            "chat_prompt": lambda messages: _prompt(self.engine.chat_prompt(messages)),
            "text_prompt": lambda text: _prompt(self.engine.text_prompt(text)),
            "token_id_ok": self.engine.token_id_ok,
            "drop_conversation": self.engine.drop_conversation,
        }
        method = methods.get(msg.method)
        try:
            if method is None:
                raise ValueError(f"the runner has no method {msg.method!r}")
            value = method(*msg.args)
        except Exception as exc:  # handed back to the daemon, which raises it there
            self.channel.send(_fail(msg.id, exc))
        else:
            self.channel.send(Result(msg.id, value))

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        if self._serial:
            with self._gate:
                yield
        else:
            yield

    def _pieces_of(self, msg: Generate, cancel: threading.Event) -> Iterator[Piece]:
        params = dict(msg.params)
        params["stop"] = tuple(params.get("stop") or ())
        params["logit_bias"] = {int(k): v for k, v in (params.get("logit_bias") or {}).items()}
        prompt = Prompt(tokens=msg.tokens, stop=tuple(msg.stop))
        return self.engine.generate(
            prompt, GenerationParams(**params), cancel, msg.conversation, msg.adapter
        )

    def _generate(self, msg: Generate) -> None:
        cancel = self._cancels.setdefault(msg.id, threading.Event())
        try:
            with self._turn():
                for piece in self._pieces_of(msg, cancel):
                    self.channel.send(
                        PieceMsg(
                            msg.id,
                            piece.text,
                            piece.finish_reason,
                            piece.completion_tokens,
                            piece.cached_tokens,
                            piece.cache_hit,
                        )
                    )
                    with self._progress:
                        self._pieces += 1
                        self._progress.notify_all()
            self.channel.send(End(msg.id, **self._kv()))
        except Exception as exc:  # the request fails, the runner goes on
            self.channel.send(_fail(msg.id, exc))
        finally:
            self._cancels.pop(msg.id, None)

    def _probe(self, msg: Probe) -> None:
        """Answer at the first token of either a probe generation of our own or any request
        running now (which proves the engine generates as well, and may hold it)."""
        answered = threading.Event()
        failure: list[BaseException] = []
        with self._progress:
            seen = self._pieces

        def own() -> None:
            try:
                with self._turn():
                    if not answered.is_set():
                        self._probe_once()
            except Exception as exc:  # a probe that fails is reported as such
                failure.append(exc)
            with self._progress:
                answered.set()
                self._progress.notify_all()

        self._spawn(own)
        with self._progress:
            self._progress.wait_for(lambda: answered.is_set() or self._pieces != seen)
        answered.set()
        if failure:
            self.channel.send(_fail(msg.id, failure[0]))
        else:
            self.channel.send(Alive(msg.id, **self._kv()))

    def _probe_once(self) -> None:
        engine = self.engine
        probe = getattr(engine, "probe", None)
        if callable(probe):  # an engine may know a cheaper proof than a generation
            probe()
            return
        prompt = engine.text_prompt("Hi")
        for _ in engine.generate(prompt, _PROBE_PARAMS, threading.Event()):
            pass

    def _start_generation(self, msg: Generate) -> None:
        # Registered before the next message is read, so that its Cancel finds it.
        self._cancels.setdefault(msg.id, threading.Event())
        self._spawn(self._generate, msg)

    def serve(self) -> None:
        """Answer messages until :class:`Close` or the end of the stream."""
        handlers: dict[type[Message], Callable[[Any], None]] = {
            Call: lambda m: self._spawn(self._call, m),
            Generate: self._start_generation,
            Probe: lambda m: self._spawn(self._probe, m),
            Cancel: lambda m: self._cancels.get(m.id, threading.Event()).set(),
        }
        while True:
            msg = self.channel.recv()
            if msg is None or isinstance(msg, Close):
                break
            handler = handlers.get(type(msg))
            if handler is not None:
                handler(msg)
        for event in list(self._cancels.values()):
            event.set()
        self.engine.close()


def main(argv: list[str] | None = None) -> int:
    """Load the engine the daemon asks for and serve it; the exit code says how it ended."""
    args = sys.argv[1:] if argv is None else argv
    channel = Channel(socket.socket(fileno=int(args[0])))
    load = channel.recv()
    if not isinstance(load, Load):
        return 2
    try:
        manifest = ModelManifest.model_validate(load.manifest)
        models = ModelsSettings.model_validate(load.models)
        engine = _resolve(load.factory)(manifest, models, Path(load.data_dir))
    except Exception as exc:  # reported to the daemon, which fails the load with it
        channel.send(LoadFailed(_one_line(exc), type(exc).__name__))
        return 1
    names = list(engine.adapter_names)
    parallel = int(getattr(engine, "parallel", 1) or 1)
    channel.send(Ready(os.getpid(), int(engine.n_ctx), names, parallel))
    Worker(engine, channel).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
