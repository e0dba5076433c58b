"""Errors raised by bridges/.

BridgeError
├── BridgeLoadError(ImportError)     an enabled bridge could not be imported or built
├── UnknownBridge(LookupError)       no entry point of that name
├── BridgeOptionsError(ValueError)   the bridge's options table is invalid
├── NotSupported(NotImplementedError) the platform cannot do that (check capabilities)
└── StoreTooNew(RuntimeError)        the state database was written by a newer personad
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BridgeError",
    "BridgeLoadError",
    "BridgeOptionsError",
    "BridgeStartError",
    "NotSupported",
    "StoreTooNew",
    "UnknownBridge",
]


class BridgeError(Exception):
    """Base class of bridge errors."""


class BridgeLoadError(BridgeError, ImportError):
    """An enabled bridge failed to load."""

    def __init__(self, name: str, target: str, cause: BaseException) -> None:
        self.bridge = name
        self.target = target
        super().__init__(f"bridge {name!r} ({target}) failed to load: {cause!r}")


class UnknownBridge(BridgeError, LookupError):
    """No installed bridge has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.bridge = name
        super().__init__(
            f"no bridge called {name!r} is installed; installed: {', '.join(known) or 'none'}"
        )


class BridgeOptionsError(BridgeError, ValueError):
    """A bridge's options do not validate."""

    def __init__(self, name: str, problem: str) -> None:
        self.bridge = name
        super().__init__(f"options of bridge {name!r}: {problem}")


class BridgeStartError(BridgeError, ConnectionError):
    """A bridge could not connect to its platform."""

    def __init__(self, name: str, persona: str, problem: str) -> None:
        self.bridge = name
        self.persona = persona
        super().__init__(f"bridge {name!r} for persona {persona!r}: {problem}")


class NotSupported(BridgeError, NotImplementedError):
    """The platform cannot do this; the capability flags say so beforehand."""

    def __init__(self, bridge: str, operation: str) -> None:
        super().__init__(f"bridge {bridge!r} does not support {operation}")


class StoreTooNew(BridgeError, RuntimeError):
    """The state database has a schema version this personad does not know."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path} was written by a newer personad (schema version {found}; this one reads "
            f"up to {supported}): upgrade personad, or move the file away to start afresh"
        )
