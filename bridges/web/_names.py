"""Names and identities in a web room: what a visitor may be called, and their user id."""

from __future__ import annotations

import re

from .errors import BadName

__all__ = ["check_name", "slug", "user_id"]

_ALLOWED = re.compile(r"^[\w][\w .'-]{0,31}$")


def check_name(name: str, persona: str) -> str:
    """``name`` trimmed, or :class:`BadName` saying what is wrong with it."""
    name = " ".join(name.split())
    if not name:
        raise BadName(name, "is empty; type the name friends know you by")
    if not _ALLOWED.match(name):
        raise BadName(
            name, "is not allowed; use up to 32 letters, digits, spaces, dots, dashes or '"
        )
    if name.casefold() == persona.casefold():
        raise BadName(name, "is the persona's own; pick yours")
    return name


def user_id(name: str) -> str:
    """The visitor's user id, as ``personad forget --user`` takes it."""
    return f"web:{name.casefold()}"


def slug(persona: str) -> str:
    """The persona's part of the page's path: ``Robin`` -> ``robin``."""
    return re.sub(r"[^a-z0-9]+", "-", persona.casefold()).strip("-") or "persona"
