"""Time and scheduling, injected: the system clock with APScheduler in production, a fake
clock in tests (``bridges.testing``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import structlog

__all__ = ["APScheduler", "Clock", "Job", "ManualClock", "Scheduler", "SystemClock"]

log = structlog.get_logger("personad.scheduler")

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
        """Run ``job`` at ``when`` on the clock (at once if that has passed)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Drop the job ``job_id`` if it is pending."""
        ...


@runtime_checkable
class ManualClock(Clock, Protocol):
    """A clock a local user may move forward (the console's ``/wait``)."""

    async def advance(self, seconds: float) -> None:
        """Move time forward; every job scheduled in that span runs, in time order, with
        the clock showing the job's time."""
        ...


class _Follower(Protocol):
    async def run_due(self, until: datetime) -> None: ...

    def resync(self) -> None: ...


class SystemClock:
    """The real clock, with an offset the console's ``/wait`` moves forward.

    A scheduler that follows this clock (:class:`APScheduler`) runs the jobs a jump skips
    over, in order, as if the time had really passed.
    """

    def __init__(self, start: datetime | None = None) -> None:
        # A clock started elsewhere in time (``run.start_time``) runs on from there.
        self.offset = start - datetime.now(UTC) if start is not None else timedelta()
        self._followers: list[_Follower] = []

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def follow(self, scheduler: _Follower) -> None:
        """Let ``scheduler`` run its due jobs when the clock is moved forward."""
        self._followers.append(scheduler)

    def move_to(self, when: datetime) -> None:
        """Jump forward to ``when`` (never back)."""
        self.offset += max(timedelta(), when - self.now())

    async def advance(self, seconds: float) -> None:
        """Pretend ``seconds`` have passed: the jobs due meanwhile run first, in order."""
        goal = self.offset + timedelta(seconds=seconds)
        for follower in self._followers:
            await follower.run_due(datetime.now(UTC) + goal)
        self.offset = max(self.offset, goal)
        for follower in self._followers:
            follower.resync()


class APScheduler:
    """:class:`Scheduler` on APScheduler 3's AsyncIOScheduler (date-triggered jobs) that
    follows a :class:`SystemClock` moved ahead by ``/wait``."""

    def __init__(self, clock: SystemClock) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._plans: dict[str, tuple[datetime, Job]] = {}
        clock.follow(self)

    def start(self) -> None:
        """Start running jobs (inside the running event loop)."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop; pending jobs are dropped (their plans live in the state database)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _real(self, when: datetime) -> datetime:
        # The clock may run ahead of real time (console /wait): convert to real time.
        return datetime.now(UTC) + (when - self._clock.now())

    def at(self, when: datetime, job_id: str, job: Job) -> None:
        self._plans[job_id] = (when, job)
        self._scheduler.add_job(
            self._fire,
            "date",
            args=(job_id, job),
            run_date=self._real(when),
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    async def _fire(self, job_id: str, job: Job) -> None:
        plan = self._plans.get(job_id)
        if plan is None or plan[1] is not job:
            return  # run already by a jump of the clock, or replaced
        del self._plans[job_id]
        await job()

    def cancel(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        self._plans.pop(job_id, None)
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(job_id)

    def job_ids(self) -> list[str]:
        """Ids of pending jobs."""
        return sorted(self._plans)

    async def run_due(self, until: datetime) -> None:
        """Run every job due by ``until`` in time order, the clock moved to each one's time
        (jobs may plan new ones in the span: those run too)."""
        while True:
            due = [(when, job_id) for job_id, (when, _) in self._plans.items() if when <= until]
            if not due:
                return
            when, job_id = min(due)
            _, job = self._plans[job_id]
            self.cancel(job_id)
            self._clock.move_to(when)
            try:
                await job()
            except Exception:
                log.exception("scheduled_job_failed", job=job_id)

    def resync(self) -> None:
        """Re-plan the remaining jobs in real time after the clock jumped."""
        for job_id, (when, job) in list(self._plans.items()):
            self.at(when, job_id, job)
