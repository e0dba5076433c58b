"""End-to-end encryption, optional: mautrix's OlmMachine on python-olm, keys kept in SQLite.

Element encrypts direct messages by default, so without this a persona is mute in most DMs.
It needs the ``matrix-e2ee`` extra (python-olm: its Linux wheels carry libolm; elsewhere it
builds against libolm, on Debian ``apt install libolm-dev``). The olm account is pickled with
a key kept in the account's state file, so a restart keeps the device's identity keys and the
room keys it was sent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any, cast

import structlog
from mautrix.client import Client
from mautrix.types import RoomID

from ._session import Session

__all__ = ["Crypto", "CryptoUnavailable"]

log = structlog.get_logger("personad.matrix")

JSON = dict[str, Any]
# How long a message whose room key has not arrived yet waits for it.
_KEY_WAIT_S = 5.0


class CryptoUnavailable(ImportError):
    """python-olm (or another E2EE dependency) is not installed."""

    def __init__(self, cause: ImportError) -> None:
        self.cause = cause
        super().__init__(
            f"encryption = true needs the matrix-e2ee extra ({cause.name or cause}): "
            "pip install 'personad[matrix-e2ee]' (if python-olm has to be built, on Debian "
            "apt install libolm-dev first)"
        )


class Crypto:
    """The account's olm machine: fed every sync, decrypts room events."""

    def __init__(self, client: Client, machine: Any, database: Any) -> None:
        self._client = client
        self._machine = machine
        self._db = database

    @classmethod
    async def open(cls, session: Session, path: Path) -> Crypto:
        """Load (or make) the device's olm account from ``path`` and upload its keys."""
        try:
            from mautrix.client.encryption_manager import DecryptionDispatcher
            from mautrix.crypto import OlmMachine
            from mautrix.crypto.store.asyncpg import PgCryptoStore
            from mautrix.util.async_db import Database
        except ImportError as exc:
            raise CryptoUnavailable(exc) from exc
        client = session.api
        if not isinstance(client, Client) or client.state_store is None:
            raise TypeError("encryption needs a mautrix Client with a state store")
        state = session.state
        if state.pickle_key is None:
            state.pickle_key = secrets.token_urlsafe(32)
            session.save()
        _owner_only(path)
        db = Database.create(f"sqlite:{path}", upgrade_table=PgCryptoStore.upgrade_table)
        await db.start()
        store = PgCryptoStore(str(client.mxid), state.pickle_key, db)
        await store.put_device_id(client.device_id)
        machine = OlmMachine(client, store, client.state_store)  # type: ignore[arg-type]
        await machine.load()
        await machine.share_keys()
        client.crypto = machine
        # Room events are decrypted by the bridge's own handling, in order, not by a dispatcher.
        client.remove_dispatcher(DecryptionDispatcher)
        log.info("matrix_encryption_ready", device=client.device_id)
        return cls(client, machine, db)

    async def take_sync(self, data: JSON) -> None:
        """Let the machine see a sync first: to-device room keys, device lists, key counts."""
        await asyncio.gather(*self._client.handle_sync(cast(Any, data)))

    async def decrypt(self, room_id: str, event: JSON) -> JSON | None:
        """The decrypted form of an ``m.room.encrypted`` event, or None when it cannot be."""
        from mautrix.errors import DecryptionError
        from mautrix.types import EncryptedEvent

        parsed = EncryptedEvent.deserialize(cast(Any, {**event, "room_id": room_id}))
        for attempt in range(2):
            try:
                decrypted = await self._machine.decrypt_megolm_event(parsed)
            except DecryptionError as exc:
                session_id = getattr(parsed.content, "session_id", None)
                if attempt == 0 and session_id is not None:
                    await self._machine.wait_for_session(RoomID(room_id), session_id, _KEY_WAIT_S)
                    continue
                log.warning(
                    "matrix_undecryptable",
                    room=room_id,
                    event=event.get("event_id"),
                    error=str(exc),
                )
                return None
            out: JSON = decrypted.serialize()
            out.setdefault("event_id", event.get("event_id"))
            out.setdefault("sender", event.get("sender"))
            out.setdefault("origin_server_ts", event.get("origin_server_ts"))
            return out
        return None

    async def close(self) -> None:
        """Close the key database."""
        await self._db.stop()


def _owner_only(path: Path) -> None:
    """Make the key database readable by its owner only, before anything is written to it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
