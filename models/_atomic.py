"""Write-then-rename, so that a reader never sees half a file and a crash leaves nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "scratch_path"]


def _temp_beside(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def scratch_path(near: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``near`` that is always removed afterwards."""
    tmp = _temp_beside(near)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception, KeyboardInterrupt included, the temporary file is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with scratch_path(target) as tmp:
        yield tmp
        os.replace(tmp, target)
