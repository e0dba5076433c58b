"""The web bridge: talk to a persona in a browser, on a page the daemon serves.

Enable it like any bridge (``[run] bridges = ["web"]`` or ``personad run --bridge web``); the
composition root mounts :meth:`WebBridge.http_mount` on the daemon's HTTP server. Invites are
managed with ``personad web`` (:mod:`bridges.web.cli`).
"""

from ._access import Access, Visitor
from ._bridge import WebBridge
from ._invites import Invite, InviteBook, invites_path
from ._names import slug
from ._options import WebOptions
from .errors import BadName, UnknownInvite, WebError

__all__ = [
    "Access",
    "BadName",
    "Invite",
    "InviteBook",
    "UnknownInvite",
    "Visitor",
    "WebBridge",
    "WebError",
    "WebOptions",
    "invites_path",
    "slug",
]
