"""One rule splits conversations: a silence of at least the gap, wherever it is applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from models import Event, SessionTracker, split_by_gap, split_sessions, starts_session

T0 = datetime(2024, 1, 5, 20, 0, tzinfo=UTC)
GAP = timedelta(hours=2)


def test_a_silence_of_exactly_the_gap_starts_a_session() -> None:
    """The boundary is inclusive: the gap itself is long enough."""
    assert starts_session(None, T0, GAP)
    assert starts_session(T0, T0 + GAP, GAP)
    assert not starts_session(T0, T0 + GAP - timedelta(seconds=1), GAP)


@given(st.lists(st.integers(0, 20_000), max_size=40))
def test_batch_and_stream_cut_at_the_same_places(offsets: list[int]) -> None:
    """split_sessions, split_by_gap and SessionTracker agree on any history."""
    events = [
        Event("a", "message", str(i), T0 + timedelta(seconds=s))
        for i, s in enumerate(sorted(offsets))
    ]
    batch = split_sessions(events, GAP)
    assert batch == split_by_gap(events, GAP, ts=lambda e: e.ts)
    tracker: SessionTracker[str] = SessionTracker(GAP)
    starts = [e for e in events if tracker.observe("general", e.ts)]
    assert starts == [s[0] for s in batch]


def test_tracker_keeps_channels_apart() -> None:
    """A message in one channel does not continue another channel's conversation."""
    tracker: SessionTracker[str] = SessionTracker(GAP)
    assert tracker.observe("a", T0)
    assert tracker.observe("b", T0 + timedelta(hours=1))
    assert not tracker.observe("a", T0 + timedelta(hours=1, minutes=59))
    assert tracker.observe("b", T0 + timedelta(hours=3))
