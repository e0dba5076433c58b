"""The production scheduler (APScheduler 3) runs jobs at their time, honours cancels, and
follows the clock when the console's /wait moves it forward."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from bridges import APScheduler, SystemClock
from bridges._time import Job


def test_apscheduler_runs_and_cancels_jobs() -> None:
    """A job runs at its time; a cancelled one is gone; an advanced clock is respected."""

    async def run() -> None:
        clock = SystemClock()
        scheduler = APScheduler(clock)
        scheduler.start()
        try:
            fired: list[str] = []
            done = asyncio.Event()

            async def job() -> None:
                fired.append("a")
                done.set()

            async def never() -> None:
                fired.append("b")

            scheduler.at(clock.now() + timedelta(seconds=3600), "later", never)
            scheduler.cancel("later")
            assert "later" not in scheduler.job_ids()
            # The console's /wait moves the persona's clock 3 h ahead; a job planned for
            # "20 ms from the persona's now" runs 20 ms from the real now.
            await clock.advance(3 * 3600)
            scheduler.at(clock.now() + timedelta(milliseconds=20), "soon", job)
            await asyncio.wait_for(done.wait(), 10)
            assert fired == ["a"]
        finally:
            scheduler.shutdown()

    asyncio.run(run())


def test_a_jump_of_the_clock_runs_the_jobs_it_skips_in_order() -> None:
    """/wait 9h runs the jobs due in those hours in time order, each seeing its own time;
    a job planned inside the span runs too, a later one waits for its (shifted) time."""

    async def run() -> None:
        clock = SystemClock()
        scheduler = APScheduler(clock)
        scheduler.start()
        try:
            t0 = clock.now()
            seen: list[tuple[str, timedelta]] = []

            def job(name: str) -> Job:
                async def run_job() -> None:
                    seen.append((name, clock.now() - t0))
                    if name == "b":  # plans another one inside the span
                        scheduler.at(clock.now() + timedelta(hours=1), "c", job("c"))

                return run_job

            scheduler.at(t0 + timedelta(hours=5), "b", job("b"))
            scheduler.at(t0 + timedelta(hours=2), "a", job("a"))
            scheduler.at(t0 + timedelta(hours=12), "d", job("d"))
            await clock.advance(9 * 3600)
            names = [name for name, _ in seen]
            assert names == ["a", "b", "c"]
            for (_, offset), hours in zip(seen, (2, 5, 6), strict=True):
                assert abs(offset - timedelta(hours=hours)) < timedelta(seconds=5)
            assert scheduler.job_ids() == ["d"]
            real = scheduler._scheduler.get_job("d").next_run_time
            assert abs(real - (datetime.now(real.tzinfo) + timedelta(hours=3))) < timedelta(
                seconds=5
            )
        finally:
            scheduler.shutdown()

    asyncio.run(run())
