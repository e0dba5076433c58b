"""``python -m daemon.engine.probe``: llama.cpp's build and devices as one line of JSON.

``personad doctor`` runs this in a short-lived process (``daemon._devicequery``) so that the
CLI never loads llama.cpp, and a GPU driver that aborts or hangs the query takes only this
process with it. The document is a ``daemon._devicequery.ProbeReport``.
"""

from __future__ import annotations

import os
import sys

from .._devicequery import REPORT, LlamaBuild, ProbeReport
from ._devices import build_info, probe_devices

__all__ = ["main", "report"]


def report() -> ProbeReport:
    """What this process's llama.cpp was built with and the devices it sees."""
    return ProbeReport(LlamaBuild(**build_info()), tuple(probe_devices()))


def main() -> int:
    """Print the report on stdout, alone: whatever the query writes goes to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    document = REPORT.dump_json(report())
    with out:
        out.write(document + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
