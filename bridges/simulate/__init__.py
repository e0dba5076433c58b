"""``personad simulate``: the persona's behaviour on a fake clock, measured against the person."""

from ._run import Placeholder, SimulationOptions, SimulationResult, simulate, write_outputs
from ._stats import TimelineEvent, ks, ks_critical
from ._synthetic import Habits, synthetic_export
from .errors import SimulationError

__all__ = [
    "Habits",
    "Placeholder",
    "SimulationError",
    "SimulationOptions",
    "SimulationResult",
    "TimelineEvent",
    "ks",
    "ks_critical",
    "simulate",
    "synthetic_export",
    "write_outputs",
]
