"""Where the ``personad`` command keeps models and caches, as convert's commands need to know.

The settings root belongs to the daemon; convert must not import it. The command's root hands
an implementation to every subcommand as typer's context object instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import typer

__all__ = ["Locations", "locations"]


@runtime_checkable
class Locations(Protocol):
    """Directories read from the user's configuration (``--config`` or the default)."""

    def models_dir(self, config: Path | None) -> Path:
        """Where model manifests live (``--register`` writes there)."""
        ...

    def cache_dir(self, config: Path | None) -> Path:
        """Where downloaded or built helpers are cached."""
        ...


def locations(ctx: typer.Context) -> Locations:
    """The :class:`Locations` the command's root put into ``ctx``."""
    found = ctx.find_root().obj
    if not isinstance(found, Locations):
        raise RuntimeError("convert's commands run under the personad command, which sets them")
    return found
