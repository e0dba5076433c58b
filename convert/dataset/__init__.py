"""Training data and a persona profile from real chat exports."""

from ._build import BuildOptions, BuildSummary, build_dataset
from ._profile import sleep_window
from ._readers import READERS, detect, read_export
from ._records import ExportMessage, ExportReaction

__all__ = [
    "READERS",
    "BuildOptions",
    "BuildSummary",
    "ExportMessage",
    "ExportReaction",
    "build_dataset",
    "detect",
    "read_export",
    "sleep_window",
]
