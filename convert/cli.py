"""The ``convert`` and ``dataset`` subcommands, for the ``personad`` command to mount."""

from ._cli import convert_app
from .dataset._cli import dataset_app

__all__ = ["convert_app", "dataset_app"]
