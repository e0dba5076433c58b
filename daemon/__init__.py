"""The personad daemon: settings, llama.cpp engine, request queue, HTTP API, CLI and client."""

from ._api import create_app
from ._daemon import Daemon
from ._engine import Engine, Loader
from ._kvfiles import drop_conversation_files
from ._server import (
    PortUnavailable,
    PreloadFailed,
    Served,
    StartupError,
    StopSignals,
    restrict_umask,
    secure_data_dir,
    serve,
)
from .client import DEFAULT_URL, DaemonClient, DaemonClientError
from .settings import (
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
    "Engine",
    "Loader",
    "LogSettings",
    "ModelsSettings",
    "PortUnavailable",
    "PreloadFailed",
    "Served",
    "ServerSettings",
    "Settings",
    "StartupError",
    "StopSignals",
    "create_app",
    "default_config_path",
    "drop_conversation_files",
    "load_settings",
    "restrict_umask",
    "secure_data_dir",
    "serve",
]
