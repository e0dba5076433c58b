"""Retention: the persona forgets what is older than its ``history_days``."""

from __future__ import annotations

from datetime import timedelta

import structlog

from .._completer import Completer
from .._store import PersonaStore, Removed
from .._time import Clock, Scheduler
from ._current import Current
from ._state import StateBook

__all__ = ["Retention"]

log = structlog.get_logger("personad.behaviour")

_EVERY = timedelta(hours=6)


class Retention:
    """Purges old history every few hours, and drops the model server's cached states of
    the conversations a removal touched (they hold the removed words)."""

    def __init__(
        self,
        current: Current,
        store: PersonaStore,
        book: StateBook,
        completer: Completer,
        clock: Clock,
        scheduler: Scheduler,
        job_id: str,
    ) -> None:
        self._current = current
        self._store = store
        self._book = book
        self._completer = completer
        self._clock = clock
        self._scheduler = scheduler
        self._job_id = job_id

    async def start(self) -> None:
        """Purge now, then every few hours."""
        await self.purge()

    def stop(self) -> None:
        """Drop the next purge's job."""
        self._scheduler.cancel(self._job_id)

    async def purge(self) -> None:
        """Forget history older than ``history_days``."""
        try:
            cutoff = self._clock.now() - timedelta(days=self._current.b.history_days)
            removed = self._store.purge(cutoff)
            if removed.rows:
                log.info("history_purged", persona=self._current.name, rows=removed.rows)
            if removed.conversations or self._book.state.pending_drops:
                await self.drop_states(removed)
        except Exception:
            log.exception("retention_failed", persona=self._current.name)
        finally:
            self._scheduler.at(self._clock.now() + _EVERY, self._job_id, self.purge)

    async def drop_states(self, removed: Removed) -> None:
        """Drop the cached model states of the conversations a removal touched, and retry
        the ones that failed before; a failure is remembered for the next purge."""
        keys = {c.key for c in removed.conversations} | self._book.state.pending_drops
        failed: set[str] = set()
        for key in sorted(keys):
            try:
                dropped = await self._completer.drop_conversation(key)
            except Exception as exc:
                # Privacy clean-up must not break event handling: logged, and retried.
                log.warning("state_drop_failed", conversation=key, error=str(exc))
                failed.add(key)
                continue
            log.info("conversation_state_dropped", conversation=key, states=dropped)
        if failed != self._book.state.pending_drops:
            self._book.update(pending_drops=frozenset(failed))
