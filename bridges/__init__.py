"""Chat platform bridges and the persona behaviour engine.

The public promise to third-party bridges is :class:`Bridge`, the event types,
:class:`BridgeHost`, the errors, and :mod:`bridges.testing`. The rest is for whoever runs
personas (the ``personad`` command, embedders): :class:`PersonaHost`, the engine, the store.
Commands live in :mod:`bridges.cli`.
"""

from ._api import (
    Attachment,
    Bridge,
    BridgeHost,
    MessageEvent,
    NoOptions,
    PersonaEvent,
    PresenceEvent,
    PresenceStatus,
    ReactionEvent,
    Upcoming,
    User,
)
from ._completer import Completer, CompletionCall, DaemonCompleter
from ._host import PersonaHost
from ._registry import GROUP, build_bridge, installed_bridges, load_bridge_class
from ._store import Conversation, PersonaStore, Removed, Store, StoredMessage
from ._time import APScheduler, Clock, ManualClock, Scheduler, SystemClock
from .errors import (
    BridgeError,
    BridgeLoadError,
    BridgeOptionsError,
    BridgeStartError,
    ForgetIncomplete,
    NotSupported,
    StoreTooNew,
    StoreUnreadable,
    StoreUnusable,
    UnknownBridge,
)
from .persona import PersonaEngine, PersonaState

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
    "Conversation",
    "DaemonCompleter",
    "ForgetIncomplete",
    "ManualClock",
    "MessageEvent",
    "NoOptions",
    "NotSupported",
    "PersonaEngine",
    "PersonaEvent",
    "PersonaHost",
    "PersonaState",
    "PersonaStore",
    "PresenceEvent",
    "PresenceStatus",
    "ReactionEvent",
    "Removed",
    "Scheduler",
    "Store",
    "StoreTooNew",
    "StoreUnreadable",
    "StoreUnusable",
    "StoredMessage",
    "SystemClock",
    "UnknownBridge",
    "Upcoming",
    "User",
    "build_bridge",
    "installed_bridges",
    "load_bridge_class",
]
