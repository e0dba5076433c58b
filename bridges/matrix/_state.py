"""What the Matrix bridge keeps between runs: its device, that device's token, the sync position.

One JSON file per account, readable by its owner only (it holds an access token). A password
login happens once; later starts reuse the device, so the account does not gather a new device
per restart. The sync token lets the next start read what was said while the bridge was down.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from models import atomic_path

__all__ = ["AccountState", "StateFile"]

log = structlog.get_logger("personad.matrix")


class AccountState(BaseModel):
    """The saved state of one account on one homeserver."""

    model_config = ConfigDict(extra="ignore")

    homeserver: str
    user_id: str
    device_id: str | None = None
    # Only a token this bridge got from a password login; a configured token is never written.
    access_token: SecretStr | None = None
    sync_token: str | None = None
    avatar_sha256: str | None = None
    # The key the olm account (end-to-end encryption) is pickled with in its database.
    pickle_key: str | None = None
    # Encrypted rooms already told that the persona cannot read them.
    encrypted_told: list[str] = Field(default_factory=list)


class StateFile:
    """Loads and saves one :class:`AccountState`, owner-only, written atomically."""

    def __init__(self, directory: Path, homeserver: str, user_id: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user_id.lstrip("@"))
        self.path = directory / f"{safe}.json"
        self._homeserver = homeserver
        self._user_id = user_id

    def load(self) -> AccountState:
        """The saved state, or a fresh one (also when saved for another homeserver)."""
        fresh = AccountState(homeserver=self._homeserver, user_id=self._user_id)
        try:
            saved = AccountState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return fresh
        except (OSError, ValidationError) as exc:
            log.warning("matrix_state_unreadable", path=str(self.path), error=str(exc))
            return fresh
        if (saved.homeserver, saved.user_id) != (self._homeserver, self._user_id):
            log.info("matrix_state_other_account", path=str(self.path))
            return fresh
        return saved

    def save(self, state: AccountState) -> None:
        """Write ``state`` (mode 0600, in a 0700 directory)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = state.model_dump(mode="json")
        token = state.access_token
        data["access_token"] = token.get_secret_value() if token is not None else None
        text = json.dumps(data, indent=1)
        with atomic_path(self.path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
