"""The request queue: priorities, FIFO, bound, deadlines, cancellation and supersede."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from daemon._queue import Job, Priority, RequestQueue
from daemon._service import CompletionJob
from daemon.errors import QueueFull, QueueTimeout, Superseded


class FakeClock:
    """Monotonic seconds that only move when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _job(
    clock: FakeClock,
    priority: Priority = "interactive",
    conv: str | None = None,
    timeout: float = 60,
) -> Job:
    return Job(
        priority=priority, enqueued_at=clock(), deadline=clock() + timeout, conversation=conv
    )


def test_interactive_before_background_fifo_within() -> None:
    """Interactive jobs run first; within a priority, in arrival order."""

    async def scenario() -> list[int]:
        clock = FakeClock()
        q = RequestQueue("m", 10, clock)
        jobs = [
            _job(clock, p)
            for p in ("background", "interactive", "background", "interactive", "interactive")
        ]
        for j in jobs:
            q.put(j)
        order = []
        for _ in jobs:
            got = await q.get()
            order.append(jobs.index(got))
            q.done(got, 0.1)
        return order

    assert asyncio.run(scenario()) == [1, 3, 4, 0, 2]


def test_full_queue_raises_with_retry_after() -> None:
    """Past the bound, put() refuses with a Retry-After estimate of at least one second."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 2, clock)
        q.put(_job(clock))
        q.put(_job(clock, "background"))
        with pytest.raises(QueueFull) as info:
            q.put(_job(clock))
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        assert info.value.status == 503

    asyncio.run(scenario())


def test_running_job_does_not_count_against_the_bound() -> None:
    """The bound is on waiting jobs; the running one has left the queue."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 1, clock)
        q.put(_job(clock))
        await q.get()
        q.put(_job(clock))
        assert q.depth() == 1

    asyncio.run(scenario())


def test_expired_job_is_failed_not_run() -> None:
    """A job past its deadline when its turn comes fails with QueueTimeout (504)."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 5, clock)
        old = _job(clock, timeout=5)
        fresh = _job(clock, timeout=60)
        q.put(old)
        q.put(fresh)
        clock.now += 10
        assert await q.get() is fresh
        with pytest.raises(QueueTimeout) as info:
            await old.started
        assert info.value.status == 504

    asyncio.run(scenario())


def test_cancelled_queued_job_leaves_the_queue() -> None:
    """A queued job that is cancelled (client gone) is never handed to the worker."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 5, clock)
        a, b = _job(clock), _job(clock)
        q.put(a)
        q.put(b)
        a.cancel()
        assert q.depth() == 1
        assert await q.get() is b
        assert a.cancel_event.is_set()

    asyncio.run(scenario())


def test_supersede_cancels_queued_and_running_of_the_same_conversation() -> None:
    """A newer request for a conversation cancels older ones, queued or running, only those."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 10, clock)
        running = _job(clock, conv="c1")
        q.put(running)
        assert await q.get() is running
        queued_same = _job(clock, conv="c1")
        other = _job(clock, conv="c2")
        q.put(queued_same)
        q.put(other)
        newer = _job(clock, conv="c1")
        victims = q.supersede("c1", newer)
        q.put(newer)
        assert set(victims) == {running, queued_same}
        assert running.cancel_event.is_set() and isinstance(running.reason, Superseded)
        with pytest.raises(Superseded):
            await queued_same.started
        assert not other.cancel_event.is_set()
        q.done(running, 0.1)
        assert await q.get() is other
        q.done(other, 0.1)
        assert await q.get() is newer

    asyncio.run(scenario())


def test_get_waits_for_a_job() -> None:
    """get() blocks until something is put."""

    async def scenario() -> None:
        clock = FakeClock()
        q = RequestQueue("m", 5, clock)
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        j = _job(clock)
        q.put(j)
        assert await waiter is j
        assert j.started.done()

    asyncio.run(scenario())


def _unretrieved(scenario: Any) -> list[dict[str, Any]]:
    """Run ``scenario(clock)`` and return what the loop reported about lost exceptions."""
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        await scenario(FakeClock())
        gc.collect()

    asyncio.run(main())
    return reported


def test_504_while_waiting_leaves_no_unretrieved_exception() -> None:
    """A request that gives up waiting (504) leaves no "exception was never retrieved"."""

    async def scenario(clock: FakeClock) -> None:
        job = _job(clock, timeout=5)
        handle = CompletionJob(model="m", job=job, prompt_tokens=1)
        with pytest.raises(QueueTimeout):
            await handle.wait_started(clock.now + 10)
        del job, handle

    assert _unretrieved(scenario) == []


def test_expired_in_queue_leaves_no_unretrieved_exception() -> None:
    """A job failed by the queue at its deadline, whose client left, reports nothing lost."""

    async def scenario(clock: FakeClock) -> None:
        q = RequestQueue("m", 5, clock)
        old, fresh = _job(clock, timeout=5), _job(clock, timeout=60)
        q.put(old)
        q.put(fresh)
        clock.now += 10
        assert await q.get() is fresh
        q.done(fresh, 0.1)
        q.drop_expired()
        del old

    assert _unretrieved(scenario) == []


@pytest.mark.parametrize(
    ("priority", "advice"),
    [("background", "priority 'interactive'"), ("interactive", "other interactive requests")],
)
def test_timeout_advice_depends_on_priority(priority: Priority, advice: str) -> None:
    """Only a background request is told that priority 'interactive' would help."""

    async def scenario() -> str:
        clock = FakeClock()
        q = RequestQueue("m", 5, clock)
        job = _job(clock, priority, timeout=5)
        q.put(job)
        q.put(_job(clock, priority, timeout=60))
        clock.now += 10
        await q.get()
        with pytest.raises(QueueTimeout) as info:
            await job.started
        return str(info.value)

    message = asyncio.run(scenario())
    assert advice in message
    if priority == "interactive":
        assert "priority" not in message
