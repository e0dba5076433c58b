"""Loaded models: one worker thread and one queue each, LRU eviction and keep-alive unloading.

Keep-alive follows Ollama: ``0`` unloads as soon as a model is idle, a negative value keeps it
forever, a positive one unloads it after that many idle seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from models import Catalog, CatalogError, ModelManifest, UnknownModel

from ._engine import Engine, Loader
from ._kvfiles import drop_conversation_files
from ._metrics import Metrics
from ._queue import PRIORITIES, Job, RequestQueue
from .errors import ModelNotFound, ModelUnavailable, ShuttingDown

__all__ = ["ModelManager", "ModelSlot"]

log = structlog.get_logger("personad.models")


@dataclass(eq=False)
class ModelSlot:
    """A resident model with its queue, worker thread and usage bookkeeping."""

    name: str
    manifest: ModelManifest
    model: Engine
    queue: RequestQueue
    executor: ThreadPoolExecutor
    last_used: float
    active: int = 0
    worker: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def busy(self) -> bool:
        """Whether a request holds or waits for this model."""
        return self.active > 0 or bool(self.queue.running_jobs) or self.queue.depth() > 0


def _drive(job: Job, loop: asyncio.AbstractEventLoop) -> None:
    """Run ``job.work`` on the worker thread, handing each item to the event loop."""
    put = job.output.put_nowait
    try:
        if job.work is None:
            raise RuntimeError("a job was queued without work")
        for item in job.work(job.cancel_event):
            loop.call_soon_threadsafe(put, item)
    except BaseException as exc:  # handed to the waiting request, which re-raises it
        loop.call_soon_threadsafe(put, exc)
    finally:
        loop.call_soon_threadsafe(put, None)


def _slots_of(model: Engine) -> int:
    """Requests ``model`` decodes at once: its ``parallel`` attribute, 1 if it has none."""
    slots = getattr(model, "parallel", 1)
    return slots if isinstance(slots, int) and slots > 1 else 1


class ModelManager:
    """Loads models on demand under ``max_loaded_models`` and runs their workers."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_loaded: int,
        keep_alive: float,
        queue_size: int,
        metrics: Metrics,
        loader: Loader,
        clock: Callable[[], float] = time.monotonic,
        kv_dir: Path | None = None,
    ) -> None:
        self.catalog = catalog
        self.max_loaded = max_loaded
        self.keep_alive = keep_alive
        self.queue_size = queue_size
        self.metrics = metrics
        self._loader = loader
        self.clock = clock
        self._slots: OrderedDict[str, ModelSlot] = OrderedDict()
        self._loading: dict[str, asyncio.Task[ModelSlot]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.closing = False
        # Where the loader keeps KV state files (data_dir/kv), for models not loaded now.
        self._drop_counts: Counter[str] = Counter()
        self.kv_dir = kv_dir
        # KV files discarded by models since unloaded: their counts outlive them.
        self._discarded_before: Counter[tuple[str, str]] = Counter()
        metrics.watch(
            self.queue_depths, lambda: list(self._slots), self.kv_bytes, self.kv_discarded
        )

    @property
    def loaded(self) -> list[str]:
        """Names of resident models, least recently used first."""
        return list(self._slots)

    @property
    def busy(self) -> bool:
        """Whether any model has a request running or waiting."""
        return any(slot.busy for slot in self._slots.values())

    def slots(self) -> list[ModelSlot]:
        """The resident models."""
        return list(self._slots.values())

    @property
    def loading(self) -> list[str]:
        """Names of models being loaded now."""
        return list(self._loading)

    def kv_bytes(self) -> dict[str, tuple[int, int]]:
        """Stored KV state bytes (RAM, disk) per resident model."""
        return {name: slot.model.kv_bytes() for name, slot in self._slots.items()}

    @staticmethod
    def _discards(slot: ModelSlot) -> dict[str, int]:
        return dict(slot.model.kv_discarded())

    def kv_discarded(self) -> dict[tuple[str, str], int]:
        """Unusable KV state files thrown away, per (model, reason), since the daemon started."""
        total = Counter(self._discarded_before)
        for name, slot in list(self._slots.items()):
            for reason, n in self._discards(slot).items():
                total[(name, reason)] += n
        return dict(total)

    def drop_conversation(self, conversation: str) -> int:
        """Drop the KV states holding ``conversation``'s tokens, in every model; how many.

        Loaded models drop it from RAM and disk under every adapter (a generation of it that
        is running now does not save it again); files of models not loaded are deleted from
        ``kv_dir``. Call it when people's words are forgotten, purged or deleted: the state is
        rebuilt from the remaining history on the next reply.
        """
        self._drop_counts[conversation] += 1
        dropped = 0
        for slot in list(self._slots.values()):
            dropped += slot.model.drop_conversation(conversation)
        if self.kv_dir is not None:
            dropped += drop_conversation_files(self.kv_dir, conversation)
        log.info("conversation_kv_dropped", states=dropped)
        return dropped

    def drops_of(self, conversation: str) -> int:
        """How often ``conversation`` was dropped so far (a request compares it at its start
        and end: a drop while it waited in the queue must not be undone by its saved state)."""
        return self._drop_counts[conversation]

    def queue_depths(self) -> dict[tuple[str, str], int]:
        """Queued requests per (model, priority)."""
        return {
            (name, p): slot.queue.depth(p) for name, slot in self._slots.items() for p in PRIORITIES
        }

    def manifest(self, name: str) -> ModelManifest:
        """The manifest of ``name``; :class:`ModelNotFound` lists the known names otherwise."""
        try:
            return self.catalog.get(name)
        except UnknownModel as exc:
            raise ModelNotFound(name, exc.known) from exc
        except CatalogError as exc:
            raise ModelUnavailable(name, str(exc)) from exc

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_for_change(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    async def acquire(self, name: str) -> ModelSlot:
        """Return the slot of ``name``, loading it (and evicting an idle one) when needed.

        The caller must :meth:`release` the slot once its request is over.
        """
        manifest = self.manifest(name)
        while True:
            if self.closing:
                raise ShuttingDown()
            slot = self._slots.get(name)
            if slot is not None:
                slot.active += 1
                self._slots.move_to_end(name)
                return slot
            task = self._loading.get(name)
            if task is not None:
                await asyncio.shield(task)
                continue
            if len(self._slots) + len(self._loading) >= self.max_loaded:
                victim = next((s for s in self._slots.values() if not s.busy), None)
                if victim is not None:
                    await self.unload(victim.name, reason="evicted")
                else:
                    await self._wait_for_change()
                continue
            task = asyncio.create_task(self._load(manifest))
            self._loading[name] = task
            try:
                await asyncio.shield(task)
            finally:
                self._loading.pop(name, None)
                self._notify()

    async def _load(self, manifest: ModelManifest) -> ModelSlot:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{manifest.name}")
        loop = asyncio.get_running_loop()
        started = self.clock()
        log.info("model_loading", model=manifest.name, path=str(manifest.path))
        try:
            model: Engine = await loop.run_in_executor(executor, self._loader, manifest)
        except Exception as exc:
            executor.shutdown(wait=False)
            log.error("model_load_failed", model=manifest.name, error=str(exc))
            if isinstance(exc, ModelUnavailable):
                raise
            raise ModelUnavailable(manifest.name, str(exc)) from exc
        slots = _slots_of(model)
        if slots > 1:  # one thread per request that runs at once; the engine batches them
            executor.shutdown(wait=False)
            executor = ThreadPoolExecutor(
                max_workers=slots, thread_name_prefix=f"model-{manifest.name}"
            )
        slot = ModelSlot(
            name=manifest.name,
            manifest=manifest,
            model=model,
            queue=RequestQueue(manifest.name, self.queue_size, self.clock, slots),
            executor=executor,
            last_used=self.clock(),
        )
        slot.worker = asyncio.create_task(self._work(slot), name=f"worker-{manifest.name}")
        self._slots[manifest.name] = slot
        log.info("model_loaded", model=manifest.name, seconds=round(self.clock() - started, 3))
        return slot

    async def _work(self, slot: ModelSlot) -> None:
        """Take jobs in queue order while the model has a free slot, and run each."""
        free = asyncio.Semaphore(slot.queue.slots)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await free.acquire()
                try:
                    job = await slot.queue.get()
                except BaseException:
                    free.release()
                    raise
                task = asyncio.create_task(self._run_job(slot, job))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: free.release())
        finally:
            for task in list(running):
                task.cancel()
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run_job(self, slot: ModelSlot, job: Job) -> None:
        loop = asyncio.get_running_loop()
        started = self.clock()
        self.metrics.queue_wait.labels(slot.name, job.priority).observe(started - job.enqueued_at)
        try:
            await asyncio.shield(loop.run_in_executor(slot.executor, _drive, job, loop))
        except asyncio.CancelledError:
            job.cancel()
            raise
        finally:
            took = self.clock() - started
            self.metrics.generation_seconds.labels(slot.name).observe(took)
            slot.queue.done(job, took)
            slot.queue.drop_expired()

    def release(self, slot: ModelSlot) -> None:
        """Mark one request on ``slot`` as over; with keep_alive 0 an idle model unloads now."""
        slot.active -= 1
        slot.last_used = self.clock()
        self._notify()
        if self.keep_alive == 0 and not slot.busy:
            self._spawn(self.unload(slot.name, reason="keep_alive"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def unload(self, name: str, *, reason: str) -> None:
        """Stop the worker of ``name`` and free its memory."""
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        for reason, n in self._discards(slot).items():  # before a scrape can miss them
            self._discarded_before[(name, reason)] += n
        slot.queue.cancel_all(ModelUnavailable(name, "the model was unloaded"))
        for job in list(slot.queue.running_jobs):
            job.cancel()
        if slot.worker is not None:
            slot.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.worker
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(slot.executor, slot.model.close)
        slot.executor.shutdown(wait=False)
        log.info("model_unloaded", model=name, reason=reason)
        self._notify()

    async def reap_idle(self) -> list[str]:
        """Unload models idle for longer than keep_alive; return their names."""
        if self.keep_alive < 0:
            return []
        now = self.clock()
        idle = [
            s.name
            for s in self._slots.values()
            if not s.busy and now - s.last_used >= self.keep_alive
        ]
        for name in idle:
            await self.unload(name, reason="keep_alive")
        return idle

    async def run_reaper(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Check for idle models forever (a background task of the daemon)."""
        interval = min(max(self.keep_alive / 4, 0.5), 30.0) if self.keep_alive > 0 else 30.0
        while True:
            await sleep(interval)
            await self.reap_idle()

    async def aclose(self) -> None:
        """Unload everything."""
        self.closing = True
        for task in list(self._loading.values()):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        for name in list(self._slots):
            await self.unload(name, reason="shutdown")
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
