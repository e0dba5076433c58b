"""Training data and a persona profile from real chat exports."""

from ._build import BuildOptions, BuildSummary, Cleaner, build_dataset, merged_exports, zone
from ._profile import ProfileBuilder, sleep_window
from ._readers import READERS, detect, read_export
from ._records import ExportMessage, ExportReaction

__all__ = [
    "READERS",
    "BuildOptions",
    "BuildSummary",
    "Cleaner",
    "ExportMessage",
    "ExportReaction",
    "ProfileBuilder",
    "build_dataset",
    "detect",
    "merged_exports",
    "read_export",
    "sleep_window",
    "zone",
]
