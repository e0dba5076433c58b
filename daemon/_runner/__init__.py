"""Runner processes: each loaded model in a process of its own, supervised by the daemon.

The daemon side (this package) never imports llama.cpp; the runner side is
``daemon.engine.worker``. They speak the protocol of :mod:`daemon._runner.protocol`.
"""

from ._book import RunnerBook, RunnerState, RunnerStatus
from ._engine import RunnerEngine, RunnerLoader
from ._settings import RunnerSettings

__all__ = [
    "RunnerBook",
    "RunnerEngine",
    "RunnerLoader",
    "RunnerSettings",
    "RunnerState",
    "RunnerStatus",
]
