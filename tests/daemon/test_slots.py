"""Slot placement: newcomers keep their live state where they can, active slots stay consecutive."""

from __future__ import annotations

from daemon.engine._slots import Newcomer, place

SLOTS = list(range(8))


def _free(active: list[int]) -> list[int]:
    return [i for i in SLOTS if i not in active]


def _by_id(i: int) -> int:
    return i


def test_a_lone_newcomer_keeps_its_live_slot_wherever_it_is() -> None:
    """With nothing active, a newcomer takes the slot holding its state, even a far one."""
    assert place([], [Newcomer({5: 900}, movable=True)], SLOTS, _by_id) == [5]


def test_a_newcomer_without_state_takes_the_fallback_slot() -> None:
    """Without a live state, the first free slot by the fallback order wins."""
    stalest_first = {3: 0, 6: 1}
    chosen = place([], [Newcomer({}, movable=True)], SLOTS, lambda i: stalest_first.get(i, 9))
    assert chosen == [3]


def test_a_far_movable_newcomer_moves_next_to_the_active_slots() -> None:
    """Active slots 1 and 2 and a newcomer whose state is in slot 5: it moves beside them."""
    chosen = place([1, 2], [Newcomer({5: 900}, movable=True)], _free([1, 2]), _by_id)
    assert chosen[0] in (0, 3)


def test_a_pinned_newcomer_keeps_its_slot_despite_the_gap() -> None:
    """A state the store cannot hold is worth more than a consecutive run."""
    chosen = place([1, 2], [Newcomer({5: 900}, movable=False)], _free([1, 2]), _by_id)
    assert chosen == [5]


def test_a_burst_over_a_gap_moves_one_and_keeps_the_rest() -> None:
    """Four conversations live in slots 1, 2, 4 and 5 arrive together: one moves, three stay."""
    comers = [Newcomer({i: 1000 + i}, movable=True) for i in (1, 2, 4, 5)]
    chosen = place([], comers, SLOTS, _by_id)
    assert len(set(chosen)) == 4
    assert max(chosen) - min(chosen) == 3
    assert sum(c == i for c, i in zip(chosen, (1, 2, 4, 5), strict=True)) == 3


def test_latecomers_join_the_first_one_s_run() -> None:
    """The first of a burst took slot 4; the other three keep the run around it."""
    comers = [Newcomer({i: 1000}, movable=True) for i in (1, 2, 5)]
    chosen = place([4], comers, _free([4]), _by_id)
    taken = sorted([4, *chosen])
    assert taken == list(range(taken[0], taken[0] + 4))


def test_two_newcomers_sharing_a_live_slot_get_distinct_slots() -> None:
    """When two prompts match the same slot, the longer match keeps it."""
    chosen = place([], [Newcomer({2: 40}, True), Newcomer({2: 80}, True)], SLOTS, _by_id)
    assert chosen[1] == 2 and chosen[0] != 2


def test_already_scattered_active_slots_leave_newcomers_in_place() -> None:
    """No run can hold active slots 0 and 7 with one newcomer: nothing moves."""
    chosen = place([0, 7], [Newcomer({4: 500}, movable=True)], _free([0, 7]), _by_id)
    assert chosen == [4]


def test_two_pinned_newcomers_wanting_one_slot_share_nothing() -> None:
    """Two newcomers that cannot move both match slot 2: the longer match keeps it."""
    comers = [Newcomer({2: 30}, movable=False), Newcomer({2: 60}, movable=False)]
    chosen = place([], comers, SLOTS, _by_id)
    assert chosen[1] == 2 and chosen[0] != 2


def test_a_slot_sharing_only_a_prefix_is_not_home() -> None:
    """A newcomer matching its own slot and, by the persona card alone, another one goes home."""
    assert place([], [Newcomer({2: 300, 5: 1400}, movable=True)], SLOTS, _by_id) == [5]


def test_a_shared_prefix_does_not_take_another_newcomers_home() -> None:
    """A newcomer whose home is out of the run does not take, for the persona card it shares,
    the slot another newcomer calls home: one moves, not two."""
    far = Newcomer({7: 1400, 3: 300}, movable=True)
    owner = Newcomer({3: 1200}, movable=True)
    chosen = place([2], [far, owner], _free([2]), _by_id)
    assert chosen[1] == 3 and chosen[0] in (1, 4)
