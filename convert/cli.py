"""The ``convert`` and ``dataset`` subcommands, for the ``personad`` command to mount.

The command's root sets a :class:`Locations` as typer's context object: convert's commands
find the models and cache directories through it, never through the daemon's settings.
"""

from ._cli import convert_app
from ._locations import Locations
from .dataset.cli import dataset_app

__all__ = ["Locations", "convert_app", "dataset_app"]
