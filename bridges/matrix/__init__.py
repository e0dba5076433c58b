"""The Matrix bridge (mautrix-python), registered as the ``matrix`` entry point."""

from ._bridge import MatrixBridge
from ._options import MatrixOptions

__all__ = ["MatrixBridge", "MatrixOptions"]
