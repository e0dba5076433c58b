"""systemd integration: the unit file, and the sd_notify protocol (a dozen lines of it)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

__all__ = [
    "SYSTEM_CACHE_DIR",
    "SYSTEM_DATA_DIR",
    "SYSTEM_MODELS_DIR",
    "Notifier",
    "UnitSpec",
    "render_unit",
    "unit_path",
]

log = structlog.get_logger("personad.systemd")

Scope = Literal["user", "system"]

# Where a system install keeps things; the unit's StateDirectory=, CacheDirectory= and
# ConfigurationDirectory= create the first two and /etc/personad for the personad account.
SYSTEM_DATA_DIR = Path("/var/lib/personad")
SYSTEM_CACHE_DIR = Path("/var/cache/personad")
SYSTEM_MODELS_DIR = Path("/etc/personad/models")


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; does nothing outside systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """What systemd passes: NOTIFY_SOCKET, and WATCHDOG_USEC when meant for this pid."""
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        return cls(environ.get("NOTIFY_SOCKET"), int(usec) if usec and mine else None)

    @property
    def enabled(self) -> bool:
        """Whether a socket was given."""
        return self._sock is not None

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="serving")``."""
        if self._sock is None or self.address is None:
            return
        # An address starting with @ is in the abstract namespace.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(payload, target)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc))

    async def watchdog(
        self, status: Callable[[], str], alive: Callable[[], bool] | None = None
    ) -> None:
        """Ping WATCHDOG=1 from the event loop at half the interval (with a fresh STATUS),
        but only while ``alive()`` says the supervisor does its work.

        Being a coroutine is the point: if the loop is blocked, the pings stop and systemd
        restarts the service. ``alive`` (the daemon's ``supervisor_alive``) stops them too
        while a stuck model runner waits to be killed; they resume, within a second, once
        it is. A runner that cannot be killed thus restarts the service after WatchdogSec.
        """
        interval = (self.watchdog_usec or 0) / 2e6
        while True:
            ok = alive is None or alive()
            fields: dict[str, str | int] = {"STATUS": status()}
            if interval and ok:
                fields["WATCHDOG"] = 1
            self.notify(**fields)
            pause = interval or 5.0
            await asyncio.sleep(pause if ok else min(pause, 1.0))

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass(frozen=True)
class UnitSpec:
    """What the unit needs to know about this installation."""

    exe: Path
    config: Path | None
    data_dir: Path
    cache_dir: Path
    models_dir: Path
    drain_timeout: float
    credentials: tuple[tuple[str, Path], ...] = ()
    watchdog_seconds: int = 60


def unit_path(scope: Scope, home: Path) -> Path:
    """Where ``service install`` writes the unit."""
    if scope == "system":
        return Path("/etc/systemd/system/personad.service")
    return home / ".config/systemd/user/personad.service"


def render_unit(spec: UnitSpec, scope: Scope) -> str:
    """A unit for ``personad run``: notify type, watchdog, restart, hardening, credentials."""
    exec_start = f"{spec.exe} run" + (f" --config {spec.config}" if spec.config else "")
    lines = [
        "[Unit]",
        "Description=personad: persona bot (daemon and chat bridges)",
        "Documentation=https://pypi.org/project/personad/",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={spec.watchdog_seconds}",
        # Loading a model from a slow disk can take minutes.
        "TimeoutStartSec=600",
        # Longer than the drain timeout, so running generations can finish.
        f"TimeoutStopSec={int(spec.drain_timeout) + 30}",
        "Environment=PYTHONUNBUFFERED=1",
        # Conversations, logs and KV states are for the service's account only.
        "UMask=0077",
    ]
    if scope == "system":
        lines += [
            # A dedicated account; the README creates it in the video and render groups so
            # that llama.cpp can open the GPU.
            "User=personad",
            "Group=personad",
            "StateDirectory=personad",
            "StateDirectoryMode=0700",
            "CacheDirectory=personad",
            "CacheDirectoryMode=0700",
            "ConfigurationDirectory=personad",
            "Environment=PERSONAD_CONFIG=/etc/personad/personad.toml",
            f"Environment=PERSONAD_DATA_DIR={SYSTEM_DATA_DIR}",
            f"Environment=PERSONAD_CACHE_DIR={SYSTEM_CACHE_DIR}",
        ]
    lines += [f"LoadCredential={name}:{path}" for name, path in spec.credentials]
    lines += [
        "",
        "# Hardening that still lets llama.cpp reach a GPU: no PrivateDevices and no",
        "# DevicePolicy, since CUDA, ROCm and Vulkan need /dev/nvidia*, /dev/kfd and /dev/dri.",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ]
    if scope == "system":
        lines += [
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            # "-": a missing directory is not an error (models may live elsewhere).
            f"ReadWritePaths=-{spec.data_dir} -{spec.cache_dir}",
            f"ReadOnlyPaths=-{spec.models_dir}",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "RestrictRealtime=yes",
        ]
    wanted = "multi-user.target" if scope == "system" else "default.target"
    lines += ["", "[Install]", f"WantedBy={wanted}", ""]
    return "\n".join(lines)
