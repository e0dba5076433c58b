"""Logging in once and keeping the device: the Matrix account a persona speaks through.

A configured access token is used as it is. A password is used for one login; the device id and
token it yields are saved, and later starts reuse them (a login per start would leave a new
device on the account each time). A saved token the homeserver no longer knows is replaced by a
new login on the same device.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass

import aiohttp
import structlog
from mautrix.api import HTTPAPI
from mautrix.client import Client
from mautrix.client.state_store import MemoryStateStore, MemorySyncStore
from mautrix.errors import MatrixConnectionError, MatrixRequestError, MForbidden, MUnknownToken
from mautrix.types import ContentURI, DeviceID, RoomID, UserID
from pydantic import SecretStr

from .._time import Clock
from ..errors import BridgeStartError
from ._options import MatrixOptions
from ._ratelimit import RateLimitRetry
from ._state import AccountState, StateFile

__all__ = ["EncryptionStateStore", "Session", "open_session", "set_profile"]

log = structlog.get_logger("personad.matrix")

_NAME = "matrix"


class EncryptionStateStore(MemoryStateStore):
    """The client's view of room state, plus the one query the crypto machine adds."""

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        """Rooms both the persona and ``user_id`` have joined (for key rotation)."""
        return [
            room
            for room, members in self.members.items()
            if user_id in members and members[user_id].membership.value == "join"
        ]


@dataclass
class Session:
    """A logged-in account: the API, its saved state, and the rate limiter's record."""

    # A full mautrix Client (its own sync loop unused): with encryption on, it encrypts sends
    # in encrypted rooms and feeds the crypto machine.
    api: Client
    state: AccountState
    state_file: StateFile
    limiter: RateLimitRetry

    def save(self) -> None:
        """Persist the state (device, token, sync position)."""
        self.state_file.save(self.state)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.api.api.session.close()


async def open_session(
    opts: MatrixOptions, persona: str, state_file: StateFile, clock: Clock
) -> Session:
    """Log in (or reuse the saved device) and check who the homeserver says we are."""
    user_id = opts.account(persona)
    if user_id is None:
        raise BridgeStartError(
            _NAME,
            persona,
            "no account: set user_id (or user_ids.<persona>) in [bridges.matrix]",
        )
    token, password = opts.secret(persona)
    if token is None and password is None:
        raise BridgeStartError(
            _NAME,
            persona,
            "no access token or password: put one in a credential file named "
            "bridges__matrix__token or bridges__matrix__password (systemd LoadCredential=) or "
            "PERSONAD_BRIDGES__MATRIX__TOKEN / PERSONAD_BRIDGES__MATRIX__PASSWORD; for several "
            "personas use bridges__matrix__tokens__<persona> or "
            "bridges__matrix__passwords__<persona>",
        )
    limiter = RateLimitRetry(clock, opts.rate_limit_retries)
    http = HTTPAPI(
        opts.homeserver, token or "", client_session=aiohttp.ClientSession(middlewares=(limiter,))
    )
    api = Client(
        UserID(user_id),
        api=http,
        state_store=EncryptionStateStore(),
        sync_store=MemorySyncStore(),
    )
    session = Session(api, state_file.load(), state_file, limiter)
    try:
        await _authenticate(session, opts, persona, token, password)
    except BaseException:
        await session.close()
        raise
    return session


async def _authenticate(
    session: Session, opts: MatrixOptions, persona: str, token: str | None, password: str | None
) -> None:
    api, state = session.api, session.state
    try:
        if token is None and state.access_token is not None:
            api.api.token = state.access_token.get_secret_value()
            try:
                await _whoami(api, persona)
                return
            except MUnknownToken:
                log.info("matrix_saved_token_expired", persona=persona, device=state.device_id)
        if token is None and password is not None:
            await _login(session, opts, password)
        await _whoami(api, persona)
    except BridgeStartError:
        raise
    except MUnknownToken as exc:
        raise BridgeStartError(
            _NAME,
            persona,
            "the homeserver does not know the access token; make a new one (Element: "
            "Settings > Help & About > Access Token) or use a password",
        ) from exc
    except MForbidden as exc:
        raise BridgeStartError(
            _NAME,
            persona,
            f"the homeserver refused the password for {api.mxid}: {exc.message}; check the "
            "credential file",
        ) from exc
    except (aiohttp.ClientError, MatrixConnectionError) as exc:
        raise BridgeStartError(
            _NAME,
            persona,
            f"cannot reach the homeserver at {opts.homeserver} ({exc}); check the homeserver "
            "setting and that the server is up",
        ) from exc
    except MatrixRequestError as exc:
        raise BridgeStartError(_NAME, persona, f"the homeserver said: {exc}") from exc


async def _login(session: Session, opts: MatrixOptions, password: str) -> None:
    api, state = session.api, session.state
    reply = await api.login(
        identifier=api.mxid,
        password=password,
        device_name=opts.device_name,
        device_id=state.device_id,
        store_access_token=True,
    )
    state.device_id = str(reply.device_id)
    state.access_token = SecretStr(reply.access_token)
    session.save()
    log.info("matrix_logged_in", user=str(api.mxid), device=state.device_id)


async def _whoami(api: Client, persona: str) -> None:
    who = await api.whoami()
    if who.user_id != api.mxid:
        raise BridgeStartError(
            _NAME,
            persona,
            f"the access token belongs to {who.user_id}, not {api.mxid}; fix user_id or the token",
        )
    if who.device_id:
        api.device_id = DeviceID(who.device_id)


async def set_profile(session: Session, opts: MatrixOptions, display_name: str) -> None:
    """Show the persona's name (and avatar, uploaded again only when the file changed)."""
    api = session.api
    if display_name and await api.get_displayname(api.mxid) != display_name:
        await api.set_displayname(display_name)
    if opts.avatar is None:
        return
    try:
        data = opts.avatar.read_bytes()
    except OSError as exc:
        log.warning("matrix_avatar_unreadable", path=str(opts.avatar), error=exc.strerror)
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest == session.state.avatar_sha256:
        return
    mime = mimetypes.guess_type(opts.avatar.name)[0] or "application/octet-stream"
    uri: ContentURI = await api.upload_media(data, mime_type=mime, filename=opts.avatar.name)
    await api.set_avatar_url(uri)
    session.state.avatar_sha256 = digest
    session.save()
