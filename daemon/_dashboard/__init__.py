"""``/dashboard``: what the daemon and its personas are doing, as a page that refreshes itself.

The daemon's half (models, queue, requests in flight, KV cache hit rate and size, recent
errors) comes from the :class:`~daemon.Daemon`. The personas' half comes from a
:class:`PersonaBoard` that the composition root (``personad run``) fills in: the daemon
never imports bridges, it only reads snapshots. Owner only: keyless loopback, or the API key
(bearer header, or ``?key=`` once, which sets a cookie); an invite link is not enough.
"""

from ._board import ConversationSummary, ErrorNote, PersonaBoard, PersonaSnapshot, RecentErrors
from ._routes import Dashboard

__all__ = [
    "ConversationSummary",
    "Dashboard",
    "ErrorNote",
    "PersonaBoard",
    "PersonaSnapshot",
    "RecentErrors",
]
