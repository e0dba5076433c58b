"""Errors of ``personad simulate``.

::

    SimulationError (ValueError)   bad input: an option, an export; names the fix
"""

from __future__ import annotations

__all__ = ["SimulationError"]


class SimulationError(ValueError):
    """An option or an input that cannot be simulated; the message names the fix."""

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.option = option
        self.problem = problem
        self.fix = fix
        super().__init__(f"{option}: {problem}; {fix}")
