"""The profile's habit fields load into the behaviour, and bad ones are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridges.simulate import synthetic_export
from convert.dataset import BuildOptions, build_dataset
from models import BehaviourSettings, load_persona


def test_a_built_profile_drives_the_persona(tmp_path: Path) -> None:
    """`dataset build` measures the habits; the skeleton manifest loads them as behaviour."""
    exports = synthetic_export(tmp_path / "x", 1, days=60)
    build_dataset(exports, tmp_path / "out", BuildOptions(persona="Sam"))
    b = load_persona(tmp_path / "out" / "persona.toml").behaviour
    assert b.reply_latency is not None and len(b.reply_latency) == 51
    assert b.around is not None and len(b.around) == 168
    assert b.start_hours is not None and b.burst_lengths and b.burst_gaps
    assert b.latency_typing == "included"  # the synthetic person's latency ignores length
    assert 0 < b.reaction_rate < 0.2 and "😂" in b.reactions
    assert b.quiet_before_start == b.session_gap and b.away_per_day == 0


def test_without_a_profile_nothing_changes() -> None:
    """A persona with no profile has none of the habits: the fixed rules apply."""
    b = BehaviourSettings()
    assert (b.reply_latency, b.around, b.burst_lengths, b.start_hours) == (None,) * 4
    assert b.reaction_rate == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"reply_latency": [5, 3]},
        {"burst_gaps": [-1, 2]},
        {"around": [2.0] * 168},
        {"around": [0.5] * 24},
        {"start_hours": [0.0] * 168},
    ],
)
def test_bad_habits_are_refused(bad: dict[str, object]) -> None:
    """Unsorted quantiles, chances above 1, wrong bin counts, all-zero weights: refused."""
    with pytest.raises(ValidationError):
        BehaviourSettings.model_validate(bad)
