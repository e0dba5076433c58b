"""The production scheduler (APScheduler 3) runs jobs at their time and honours cancels."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bridges import APScheduler, SystemClock


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
            # "3 h from the real now" is due at once.
            clock.advance(3 * 3600)
            scheduler.at(clock.now() + timedelta(milliseconds=20), "soon", job)
            await asyncio.wait_for(done.wait(), 10)
            assert fired == ["a"]
        finally:
            scheduler.shutdown()

    asyncio.run(run())
