"""Which free slot each newcomer takes: its live state where it can, and every active slot in
one run of consecutive ids.

llama.cpp, with a KV buffer per sequence, evaluates a batch in one pass only over consecutive
sequence ids: it splits the batch at every gap, and each part costs a pass over the weights.
Four conversations left in slots 1, 2, 4 and 5 decoded in two passes, ~60 ms a step instead
of ~40 (bench/concurrency.py at K = 4: 55 tok/s against llama-server's 82). So newcomers are
placed to keep the active slots consecutive. One whose live state lies outside the run moves:
its state goes through the store (saved first if it is not there yet, then restored into the
new slot), a copy of ~5-25 ms once against a pass per step for the rest of its reply. One
whose state the store cannot hold (no conversation, no store) keeps its slot, gap or not.

Adapter groups decode one at a time and are not kept consecutive among themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Newcomer", "place"]


@dataclass(frozen=True)
class Newcomer:
    """A request to place: the free slots whose live state it would keep (slot -> tokens,
    only those worth keeping; its home is the one holding most) and whether the store can
    bring that state elsewhere."""

    live: Mapping[int, int]
    movable: bool

    @property
    def home(self) -> int | None:
        """The slot holding most of its prompt (the lowest id of equals), if any."""
        return max(self.live, key=lambda i: (self.live[i], -i), default=None)

    def moved(self, slot: int) -> bool:
        """Whether ``slot`` holds less of its prompt than its home does."""
        home = self.home
        return home is not None and self.live.get(slot, 0) < self.live[home]


@dataclass(frozen=True)
class _Plan:
    slots: list[int]
    pinned_kept: int  # live tokens kept by newcomers that cannot move
    consecutive: bool
    moves: int
    kept: int
    start: int


def place(
    active: Collection[int],
    newcomers: Sequence[Newcomer],
    free: Sequence[int],
    fallback: Callable[[int], Any],
) -> list[int]:
    """A distinct slot of ``free`` for each newcomer, in order; slots are numbered from 0,
    and ``active`` and ``free`` together are all of them.

    Every run of ``len(active) + len(newcomers)`` consecutive ids holding all active slots is
    tried, and so is no constraint at all; the plan chosen keeps the most live tokens of
    newcomers that cannot move, then has the active slots consecutive, then moves fewest,
    then keeps the most live tokens. Within a plan, newcomers take their home slot (the one
    holding most of their prompt), longest first; then a slot holding part of their prompt;
    then the first slot by ``fallback``.
    """
    n = len(active) + len(newcomers)
    plans = [_plan(newcomers, list(free), active, fallback, start=-1)]
    for start in range(0, len(active) + len(free) - n + 1):
        run = range(start, start + n)
        if all(i in run for i in active):
            allowed = [i for i in free if i in run]
            plans.append(_plan(newcomers, allowed, active, fallback, start))
    best = max(
        plans, key=lambda p: (p.pinned_kept, p.consecutive, -p.moves, p.kept, p.start < 0, -p.start)
    )
    return best.slots


def _plan(
    newcomers: Sequence[Newcomer],
    allowed: list[int],
    active: Collection[int],
    fallback: Callable[[int], Any],
    start: int,
) -> _Plan:
    order = sorted(range(len(newcomers)), key=lambda j: -max(newcomers[j].live.values(), default=0))
    chosen: dict[int, int] = {}
    for j in order:  # homes first: a slot sharing only a prefix is not taken from its owner
        home = newcomers[j].home
        if home in allowed and home not in chosen.values():
            chosen[j] = home
    for j in order:  # then what part of a prompt a slot still holds
        live = newcomers[j].live
        reach = [i for i in allowed if i in live and i not in chosen.values()]
        if j not in chosen and reach:
            chosen[j] = max(reach, key=lambda i: (live[i], -i))
    rest = sorted((i for i in allowed if i not in chosen.values()), key=fallback)
    for j in order:
        if j not in chosen:
            chosen[j] = rest.pop(0)
    kept = sum(c.live.get(chosen[j], 0) for j, c in enumerate(newcomers))
    pinned_kept = sum(c.live.get(chosen[j], 0) for j, c in enumerate(newcomers) if not c.movable)
    # Away from home, even in a slot sharing a prefix (the persona card), a state moves.
    moves = sum(1 for j, c in enumerate(newcomers) if c.moved(chosen[j]))
    slots = [chosen[j] for j in range(len(newcomers))]
    taken = sorted([*active, *slots])
    consecutive = not taken or taken[-1] - taken[0] == len(taken) - 1
    return _Plan(slots, pinned_kept, consecutive, moves, kept, start)
