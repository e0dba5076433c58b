"""Errors of the web bridge.

WebError(BridgeError)
├── BadName(ValueError)        a display or invite name that cannot be used (says why)
└── UnknownInvite(LookupError) ``personad web revoke`` named no invite
"""

from __future__ import annotations

from ..errors import BridgeError

__all__ = ["BadName", "UnknownInvite", "WebError"]


class WebError(BridgeError):
    """Base class of the web bridge's errors."""


class BadName(WebError, ValueError):
    """A name that cannot be used in the room; the message says why and what would do."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"the name {name!r} {problem}")


class UnknownInvite(WebError, LookupError):
    """No invite of that name exists."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) or "none yet"
        super().__init__(f"no invite named {name!r}; invites: {listed}")
