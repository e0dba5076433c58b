"""A real Synapse homeserver for the Matrix bridge's tests, on loopback with SQLite.

Synapse lives in a venv of its own (``.ci/provision-synapse`` makes it; its pins never touch
ours). :class:`Synapse` writes a generated config, starts the homeserver as a subprocess, waits
for its client API and registers users with the shared secret. Start it once per test session:
it takes several seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

__all__ = ["Account", "Synapse", "synapse_python"]

ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "personad.test"

# Raised so a test session never meets Synapse's limiter, except where a test asks for it.
_RELAXED = {"per_second": 1000, "burst_count": 1000}
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _RELAXED,
    "rc_registration": _RELAXED,
    "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
    "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
    "rc_joins_per_room": _RELAXED,
    "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
    "rc_presence": {"per_user": _RELAXED},
    "rc_admin_redaction": _RELAXED,
    "rc_third_party_invite": _RELAXED,
    "rc_room_creation": _RELAXED,
    "rc_reports": _RELAXED,
    "rc_delayed_event_mgmt": _RELAXED,
}


def synapse_python() -> Path:
    """The Synapse venv's interpreter, provisioned on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("PERSONAD_SYNAPSE_VENV") or cache / "personad-test/synapse-venv")
    if not (venv / ".personad-ready").is_file():
        subprocess.run([str(ROOT / ".ci/provision-synapse")], check=True, timeout=600)
    return venv / "bin/python"


@dataclass(frozen=True)
class Account:
    """A registered user: full id, password, and the access token registration gave it."""

    user_id: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    """One homeserver process; ``start()`` and ``stop()``, or use it as a context manager."""

    def __init__(self, directory: Path, overrides: Mapping[str, Any] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(16)
        self.overrides = dict(overrides or {})
        self._process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        """The generated homeserver config: loopback only, no federation, no stats."""
        d = self.directory
        config: dict[str, Any] = {
            "server_name": SERVER_NAME,
            "public_baseurl": self.url + "/",
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log.yaml"),
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "registration_shared_secret": self.secret,
            "report_stats": False,
            # Fast password hashing: registrations and logins in tests need no strength.
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "presence": {"enabled": True},
            # Each test's bridge starts with a first sync of its own: never a cached answer
            # from an earlier test's identical request.
            "caches": {"sync_response_cache_duration": 0},
            "enable_metrics": False,
            "federation_domain_whitelist": [],
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            **RATE_LIMITS,
        }
        config.update(self.overrides)
        return config

    def _write(self) -> Path:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "log.yaml").write_text(
            "version: 1\n"
            "formatters:\n  f:\n    format: '%(asctime)s %(name)s %(levelname)s %(message)s'\n"
            "handlers:\n  file:\n    class: logging.FileHandler\n    formatter: f\n"
            f"    filename: {d / 'homeserver.log'}\n"
            "root:\n  level: WARNING\n  handlers: [file]\n"
            "disable_existing_loggers: false\n"
        )
        path = d / "homeserver.yaml"
        # JSON is YAML: no YAML writer needed on our side.
        path.write_text(json.dumps(self.config(), indent=1))
        return path

    def start(self, timeout: float = 90) -> Synapse:
        """Generate keys, start the homeserver and wait until its client API answers."""
        python = str(synapse_python())
        config = self._write()
        app = "synapse.app.homeserver"
        subprocess.run(
            [python, "-m", app, "-c", str(config), "--generate-keys"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with (self.directory / "stdout.log").open("wb") as out:
            self._process = subprocess.Popen(
                [python, "-m", app, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.directory / "stdout.log").read_text(errors="replace")
                raise RuntimeError(f"Synapse exited with {self._process.returncode}:\n{log}")
            try:
                if httpx.get(self.url + "/_matrix/client/versions", timeout=2).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # waiting on a real subprocess: there is no clock to inject here
        self.stop()
        raise RuntimeError(f"Synapse did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the homeserver (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Synapse:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def register(self, localpart: str, *, admin: bool = False) -> Account:
        """A new user through the shared-secret admin API."""
        endpoint = self.url + "/_synapse/admin/v1/register"
        nonce = httpx.get(endpoint, timeout=10).json()["nonce"]
        password = secrets.token_hex(12)
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            # HMAC over the four fields separated by NULs, without a trailing one.
            "mac": _mac(self.secret, nonce, localpart, password, admin),
        }
        reply = httpx.post(endpoint, json=body, timeout=30)
        reply.raise_for_status()
        data = reply.json()
        return Account(data["user_id"], password, data["access_token"], data["device_id"])


def _mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    message = b"\x00".join(
        p.encode() for p in (nonce, user, password, "admin" if admin else "notadmin")
    )
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()
