"""Errors raised by bridges/.

BridgeError
├── BridgeLoadError(ImportError)     an enabled bridge could not be imported or built
├── UnknownBridge(LookupError)       no entry point of that name
├── BridgeOptionsError(ValueError)   the bridge's options table is invalid
├── BridgeStartError(ConnectionError) a bridge could not connect
├── NotSupported(NotImplementedError) the platform cannot do that (check capabilities)
├── ForgetIncomplete(RuntimeError)   a running daemon refused to drop a person's states
└── StoreUnusable(RuntimeError)      the state database cannot be used as it is
    ├── StoreTooNew                  written by a newer personad
    └── StoreUnreadable              not a database, or damaged
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BridgeError",
    "BridgeLoadError",
    "BridgeOptionsError",
    "BridgeStartError",
    "ForgetIncomplete",
    "NotSupported",
    "StoreTooNew",
    "StoreUnreadable",
    "StoreUnusable",
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


class ForgetIncomplete(BridgeError, RuntimeError):
    """The daemon runs but refused to drop a forgotten person's KV states; nothing was deleted."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(
            f"the daemon at {url} refused to drop the cached model states ({problem}); nothing "
            "was forgotten yet: fix server.api_key (or run.daemon_url) and run forget again"
        )


class StoreUnusable(BridgeError, RuntimeError):
    """The state database cannot be used as it is (a configuration problem: exit status 2)."""


class StoreTooNew(StoreUnusable):
    """The state database has a schema version this personad does not know."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path} was written by a newer personad (schema version {found}; this one reads "
            f"up to {supported}): upgrade personad, or move the file away to start afresh"
        )


class StoreUnreadable(StoreUnusable):
    """The state database is not a SQLite database, or is damaged."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path} cannot be read as personad's database ({problem}): restore it from a "
            f"backup (e.g. {path.name}.bak-v0 beside it) or move it away to start afresh"
        )
