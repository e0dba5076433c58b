"""The daemon object: catalogue, model manager, completion service and metrics together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

import structlog

from models import Catalog, ModelManifest

from ._engine import Engine, Loader
from ._manager import ModelManager
from ._metrics import Metrics
from ._runner import RunnerBook, RunnerLoader, RunnerSettings
from ._service import CompletionService
from .settings import Settings

__all__ = ["Daemon"]

log = structlog.get_logger("personad.daemon")


def _default_loader(manifest: ModelManifest, settings: Settings | None = None) -> Engine:
    """The model inside this process (``runner.enabled = false``, for debugging)."""
    # Imported lazily: `models list` and friends never load llama.cpp.
    from .engine import LlamaModel
    from .engine.worker import build_engine

    if settings is None:
        return LlamaModel(manifest)
    return build_engine(manifest, settings.models, settings.data_dir)


class Daemon:
    """Everything the HTTP API serves. ``start()`` before use, ``aclose()`` after."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Loader | None = None,
        runner: RunnerSettings | None = None,
    ) -> None:
        self.settings = settings
        cfg = settings.models
        self.catalog = catalog or Catalog.load(cfg.dir, include_demo=cfg.include_demo)
        self.metrics = Metrics()
        self.runner_settings = runner or settings.runner
        self.runners = RunnerBook()
        self.metrics.watch_runners(self.runners.snapshot)
        if loader is None:
            if self.runner_settings.enabled:
                loader = RunnerLoader(cfg, settings.data_dir, self.runner_settings, self.runners)
            else:
                loader = functools.partial(_default_loader, settings=settings)
        self.manager = ModelManager(
            self.catalog,
            max_loaded=cfg.max_loaded_models,
            keep_alive=cfg.keep_alive,
            queue_size=cfg.queue_size,
            metrics=self.metrics,
            loader=loader,
            clock=clock,
            kv_dir=settings.data_dir / "kv",
        )
        self.service = CompletionService(
            self.manager,
            self.metrics,
            default_model=cfg.default,
            queue_timeout=cfg.queue_timeout,
        )
        self._reaper: asyncio.Task[None] | None = None
        self._preload: asyncio.Task[None] | None = None
        # Model name -> one-line reason, for each model asked for at start-up that could not
        # be loaded (an unknown name included); /health is 503 while it is not empty.
        self.preload_failures: dict[str, str] = {}

    async def start(self) -> None:
        """Start the idle reaper and begin loading ``models.preload`` (visible in /health)."""
        self._reaper = asyncio.create_task(self.manager.run_reaper(), name="reaper")
        if self.settings.models.preload:
            self._preload = asyncio.create_task(self._load_all(self.settings.models.preload))

    async def _load_all(self, names: list[str]) -> None:
        for name in names:
            try:
                slot = await self.manager.acquire(name)
            except Exception as exc:  # a bad preload is reported, the daemon still serves
                reason = " ".join(str(exc).split()) or type(exc).__name__
                self.preload_failures[name] = reason
                log.error("preload_failed", model=name, error=reason)
            else:
                self.preload_failures.pop(name, None)
                self.manager.release(slot)

    @property
    def preloading(self) -> bool:
        """Whether the models asked for at start-up are still being loaded."""
        return self._preload is not None and not self._preload.done()

    def preload_problems(self) -> dict[str, str]:
        """The preload failures not since cured by a successful load of the same model."""
        for name in [n for n in self.preload_failures if n in self.manager.loaded]:
            del self.preload_failures[name]
        return dict(self.preload_failures)

    def supervisor_alive(self) -> bool:
        """Whether every runner answers its probes or is being restarted: what may feed
        systemd's watchdog (a runner stuck past its kill deadline stops it)."""
        # Runners wait in real time, whatever clock the queue is given.
        return self.runners.alive(time.monotonic())

    def degraded(self) -> dict[str, str]:
        """Models whose runner is restarting, stuck or failed, with the reason."""
        out = {}
        for name, status in self.runners.snapshot().items():
            if status.degraded:
                what: str = status.state
                if status.stuck_since is not None:
                    what = "unresponsive"
                out[name] = f"{what}: {status.reason or 'the liveness probe is overdue'}"
        return out

    async def reload_failed(self) -> list[str]:
        """Unload every model whose runner failed, so that the next request loads it again
        (what SIGHUP does); the names."""
        failed = [n for n, s in self.runners.snapshot().items() if s.state == "failed"]
        for name in failed:
            if name in self.manager.loaded:
                await self.manager.unload(name, reason="reload")
        return failed

    async def wait_preloaded(self) -> None:
        """Wait until the preload has finished (successfully or not)."""
        if self._preload is not None:
            await self._preload

    async def aclose(self) -> None:
        """Stop taking requests and unload every model."""
        self.service.accepting = False
        for task in (self._reaper, self._preload):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.manager.aclose()
