"""Bridges are plugins in the ``personad.bridges`` entry-point group, built-ins included."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from ._api import Bridge, BridgeHost
from ._time import Clock
from .errors import BridgeLoadError, BridgeOptionsError, UnknownBridge

__all__ = ["GROUP", "build_bridge", "installed_bridges", "load_bridge_class"]

GROUP = "personad.bridges"


def installed_bridges() -> dict[str, EntryPoint]:
    """Every registered bridge by name, without importing any of them."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_bridge_class(name: str) -> type[Bridge]:
    """Import one bridge; a failure names the bridge and its cause."""
    found = installed_bridges()
    ep = found.get(name)
    if ep is None:
        raise UnknownBridge(name, sorted(found))
    try:
        cls = ep.load()
    except Exception as exc:  # any import-time failure of a plugin is reported the same way
        raise BridgeLoadError(name, ep.value, exc) from exc
    if not (isinstance(cls, type) and issubclass(cls, Bridge)):
        raise BridgeLoadError(name, ep.value, TypeError(f"{cls!r} is not a Bridge subclass"))
    return cls


def build_bridge(
    name: str,
    options: dict[str, Any],
    host: BridgeHost,
    *,
    persona: str,
    clock: Clock | None = None,
) -> Bridge:
    """Load ``name``, validate its options table, and construct it for ``persona`` on
    ``clock``."""
    cls = load_bridge_class(name)
    try:
        parsed = cls.Options.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(table)"
        raise BridgeOptionsError(name, f"{where}: {err['msg']}") from exc
    try:
        return cls(parsed, host, persona=persona, clock=clock)
    except Exception as exc:  # a constructor that fails is a load failure of that plugin
        raise BridgeLoadError(name, f"{cls.__module__}.{cls.__qualname__}", exc) from exc
