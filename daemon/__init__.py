"""The personad daemon: settings, llama.cpp engine, request queue, HTTP API, CLI and client."""

from ._api import create_app
from ._client import DEFAULT_URL, DaemonClient, DaemonClientError
from ._daemon import Daemon
from ._settings import (
    LogSettings,
    ModelsSettings,
    ServerSettings,
    Settings,
    default_config_path,
    load_settings,
)

__all__ = [
    "DEFAULT_URL",
    "Daemon",
    "DaemonClient",
    "DaemonClientError",
    "LogSettings",
    "ModelsSettings",
    "ServerSettings",
    "Settings",
    "create_app",
    "default_config_path",
    "load_settings",
]
