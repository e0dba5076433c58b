"""Chat platform bridges and the persona behaviour engine.

The public promise to third-party bridges is :class:`Bridge`, the event types,
:class:`BridgeHost`, the errors, and :mod:`bridges.testing`.
"""

from ._api import (
    Attachment,
    Bridge,
    BridgeHost,
    MessageEvent,
    NoOptions,
    PresenceEvent,
    PresenceStatus,
    ReactionEvent,
    User,
)
from ._behaviour import PersonaEngine
from ._completer import Completer, CompletionCall, DaemonCompleter
from ._registry import GROUP, build_bridge, installed_bridges, load_bridge_class
from ._store import Store, StoredMessage
from ._time import APScheduler, Clock, Scheduler, SystemClock
from .errors import (
    BridgeError,
    BridgeLoadError,
    BridgeOptionsError,
    BridgeStartError,
    NotSupported,
    UnknownBridge,
)

__all__ = [
    "GROUP",
    "APScheduler",
    "Attachment",
    "Bridge",
    "BridgeError",
    "BridgeHost",
    "BridgeLoadError",
    "BridgeOptionsError",
    "BridgeStartError",
    "Clock",
    "Completer",
    "CompletionCall",
    "DaemonCompleter",
    "MessageEvent",
    "NoOptions",
    "NotSupported",
    "PersonaEngine",
    "PresenceEvent",
    "PresenceStatus",
    "ReactionEvent",
    "Scheduler",
    "Store",
    "StoredMessage",
    "SystemClock",
    "UnknownBridge",
    "User",
    "build_bridge",
    "installed_bridges",
    "load_bridge_class",
]
