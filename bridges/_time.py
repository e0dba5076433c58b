"""Time and scheduling, injected: the system clock with APScheduler in production, a fake
clock in tests (``bridges.testing``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["APScheduler", "Clock", "Job", "Scheduler", "SystemClock"]

Job = Callable[[], Awaitable[None]]


class Clock(Protocol):
    """Wall-clock time (aware, UTC) and a way to wait."""

    def now(self) -> datetime:
        """The current time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class Scheduler(Protocol):
    """Run a coroutine function at a given time; one job per id (a new one replaces it)."""

    def at(self, when: datetime, job_id: str, job: Job) -> None:
        """Run ``job`` at ``when`` (at once if that has passed)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Drop the job ``job_id`` if it is pending."""
        ...


class SystemClock:
    """The real clock, with an offset the console's ``/wait`` can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Pretend ``seconds`` have passed (for trying out session gaps by hand)."""
        self.offset += timedelta(seconds=seconds)


class APScheduler:
    """:class:`Scheduler` on APScheduler 3's AsyncIOScheduler (date-triggered jobs)."""

    def __init__(self, clock: Clock) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self) -> None:
        """Start running jobs (inside the running event loop)."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop; pending jobs are dropped (their plans live in the state database)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def at(self, when: datetime, job_id: str, job: Job) -> None:
        # The clock may run ahead of real time (console /wait): convert to real time.
        real = datetime.now(UTC) + (when - self._clock.now())
        self._scheduler.add_job(
            job,
            "date",
            run_date=real,
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    def cancel(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(job_id)

    def job_ids(self) -> list[str]:
        """Ids of pending jobs."""
        return [job.id for job in self._scheduler.get_jobs()]
