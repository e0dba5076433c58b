"""Settings of the runner processes: the ``[runner]`` section of the one settings root."""

from ..settings import RunnerSettings

__all__ = ["RunnerSettings"]
