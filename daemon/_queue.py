"""A bounded priority queue of requests in front of one model.

``interactive`` requests go before ``background`` ones; within a priority the order is first
in, first out. The queue also knows the running request, so a newer request for the same
conversation can supersede an older one wherever it is.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import QueueFull, QueueTimeout, RequestError, Superseded

__all__ = ["PRIORITIES", "Job", "Priority", "RequestQueue"]

Priority = Literal["interactive", "background"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "background")
_RANK: dict[Priority, int] = {"interactive": 0, "background": 1}

JobState = Literal["queued", "running", "finished", "cancelled"]


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class Job:
    """One request's place in the queue and its cancellation signal for the worker thread."""

    priority: Priority
    enqueued_at: float
    deadline: float
    conversation: str | None = None
    state: JobState = "queued"
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # The blocking generator the worker thread runs; it must stop soon after cancel_event.
    work: Callable[[threading.Event], Iterator[Any]] | None = None
    # Set when the worker takes the job; carries the error when it is dropped while queued.
    started: asyncio.Future[None] = field(default_factory=_future)
    # What the worker produced: items, then an exception or None at the end.
    output: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    reason: RequestError | None = None

    def cancel(self, reason: RequestError | None = None) -> None:
        """Stop this job: a queued one never runs, a running one stops after the current token."""
        if self.state in ("finished", "cancelled"):
            return
        self.reason = reason
        was_queued = self.state == "queued"
        self.state = "cancelled"
        self.cancel_event.set()
        if was_queued and not self.started.done():
            if reason is not None:
                self.started.set_exception(reason)
                # Whoever still waits gets the reason; a waiter that already left (504, gone)
                # must not turn it into "Future exception was never retrieved".
                self.started.exception()
            else:
                self.started.cancel()


class RequestQueue:
    """Bounded, two priorities, FIFO within each; ``clock`` is injected (monotonic seconds)."""

    def __init__(
        self, model: str, max_size: int, clock: Callable[[], float], slots: int = 1
    ) -> None:
        self.model = model
        self.slots = slots
        self.max_size = max_size
        self._clock = clock
        self._heap: list[tuple[int, int, Job]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        # Jobs the worker runs now: one, or up to the model's slots with batching.
        self.running_jobs: list[Job] = []
        # Mean seconds a job holds the worker, for Retry-After.
        self._service_time = 5.0

    @property
    def running(self) -> Job | None:
        """The oldest running job, if any."""
        return self.running_jobs[0] if self.running_jobs else None

    def depth(self, priority: Priority | None = None) -> int:
        """Queued (not running) live jobs, of one priority or all."""
        return sum(
            1
            for _, _, job in self._heap
            if job.state == "queued" and (priority is None or job.priority == priority)
        )

    def retry_after(self) -> float:
        """Seconds a rejected client should wait: the queue's expected drain time, at least 1.

        With several slots the queue drains that many jobs at a time.
        """
        rounds = math.ceil((self.depth() + 1) / self.slots)
        return float(max(1, math.ceil(self._service_time * rounds)))

    def put(self, job: Job) -> None:
        """Enqueue ``job`` or raise :class:`QueueFull`."""
        if self.depth() >= self.max_size:
            raise QueueFull(self.model, self.max_size, self.retry_after())
        heapq.heappush(self._heap, (_RANK[job.priority], next(self._seq), job))
        self._wakeup.set()

    def supersede(self, conversation: str, newer: Job) -> list[Job]:
        """Cancel every other queued or running job of ``conversation``; return them."""
        victims = [
            job
            for _, _, job in self._heap
            if job is not newer and job.conversation == conversation and job.state == "queued"
        ]
        victims += [
            job
            for job in self.running_jobs
            if job is not newer and job.conversation == conversation
        ]
        for job in victims:
            job.cancel(Superseded(conversation))
        return victims

    async def get(self) -> Job:
        """Wait for the next live job, mark it running and return it.

        A job found past its deadline here fails with :class:`QueueTimeout` instead of running
        (its client may not have noticed yet).
        """
        while True:
            while self._heap:
                _, _, job = heapq.heappop(self._heap)
                if job.state != "queued":
                    continue
                now = self._clock()
                if now > job.deadline:
                    job.cancel(QueueTimeout(self.model, now - job.enqueued_at, job.priority))
                    continue
                job.state = "running"
                self.running_jobs.append(job)
                if not job.started.done():
                    job.started.set_result(None)
                return job
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, job: Job, seconds: float) -> None:
        """Record that the running ``job`` has released the worker after ``seconds``."""
        if job.state == "running":
            job.state = "finished"
        if job in self.running_jobs:
            self.running_jobs.remove(job)
        self._service_time = 0.8 * self._service_time + 0.2 * seconds

    def drop_expired(self) -> None:
        """Remove cancelled entries so the heap does not grow with abandoned jobs."""
        self._heap = [entry for entry in self._heap if entry[2].state == "queued"]
        heapq.heapify(self._heap)

    def cancel_all(self, reason: RequestError) -> None:
        """Fail every queued job (used when the model is unloaded or the daemon stops)."""
        for _, _, job in self._heap:
            job.cancel(reason)
        self._heap.clear()
