"""Who may open the page: anyone on a keyless loopback daemon, else the key or an invite.

A visitor proves who they are once, with ``?key=`` (the daemon's API key) or ``?invite=``
(an invite link's token) in the page's URL; the page then sets an HttpOnly cookie and
redirects to a clean URL. The owner's cookie holds an HMAC derived from the key, never the
key itself; an invite's holds the invite's token, looked up again on every check, so a
revoked invite stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from daemon.settings import ServerSettings

from ._invites import InviteBook

__all__ = ["COOKIE", "Access", "Visitor"]

COOKIE = "personad_web"


@dataclass(frozen=True)
class Visitor:
    """Who a page belongs to: ``open`` (keyless loopback), ``owner`` (the key) or ``invite``
    (then ``name`` is the invite's name, the visitor's identity)."""

    kind: Literal["open", "owner", "invite"]
    name: str | None = None
    token: str | None = None


class Access:
    """The rules for one daemon's settings and invite book."""

    def __init__(self, server: ServerSettings, invites: InviteBook) -> None:
        key = server.api_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self.invites = invites
        # Keyless loopback only: a daemon on loopback behind a reverse proxy has a key.
        self.open = self._key is None and server.loopback

    def _owner_mark(self) -> str:
        if self._key is None:
            return "-"  # never a hex digest: no cookie matches without a key
        return hmac.new(self._key, b"personad-web-owner", hashlib.sha256).hexdigest()

    def login(self, query: Mapping[str, str]) -> str | None:
        """The cookie value for a valid ``key`` or ``invite`` in the query, else None."""
        key, invite = query.get("key"), query.get("invite")
        if key and self._key is not None and hmac.compare_digest(key.encode(), self._key):
            return "o." + self._owner_mark()
        if invite and self.invites.holder(invite) is not None:
            return "i." + invite
        return None

    def who(self, cookie: str | None, authorization: str | None = None) -> Visitor | None:
        """The visitor a request belongs to, or None (the page refuses)."""
        if authorization and self._key is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self._key
            ):
                return Visitor("owner")
        kind, _, value = (cookie or "").partition(".")
        if kind == "o" and hmac.compare_digest(value, self._owner_mark()):
            return Visitor("owner")
        if kind == "i" and value:
            name = self.invites.holder(value)
            if name is not None:
                return Visitor("invite", name, value)
        return Visitor("open") if self.open else None

    def still_valid(self, visitor: Visitor) -> bool:
        """Whether a live session may go on (an invite may have been revoked since)."""
        if visitor.kind != "invite" or visitor.token is None:
            return True
        return self.invites.holder(visitor.token) == visitor.name
