"""The ``[bridges.matrix]`` options: homeserver, accounts, rooms and whose invites to accept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["MatrixOptions"]

_USER_ID = re.compile(r"^@[^:\s]+:\S+$")
_ROOM = re.compile(r"^[!#][^:\s]+:\S+$")


def _user_id(value: str) -> str:
    if not _USER_ID.match(value):
        raise ValueError(
            f"{value!r} is not a Matrix user id; write it in full, like @robin:example.org"
        )
    return value


_T = TypeVar("_T")

UserId = Annotated[str, AfterValidator(_user_id)]


class MatrixOptions(BaseModel):
    """The ``[bridges.matrix]`` table. Access tokens and passwords belong in credentials or the
    environment (``bridges__matrix__token``, ``bridges__matrix__password``), never here."""

    model_config = ConfigDict(extra="forbid")

    homeserver: str = Field(
        description="The homeserver's client API base URL, e.g. https://matrix.example.org."
    )
    user_id: UserId | None = Field(None, description="The persona's account (one persona).")
    user_ids: dict[str, UserId] = Field(
        default_factory=dict, description="Account per persona name (several personas)."
    )
    token: SecretStr | None = Field(
        None, description="An access token (instead of a password); one persona."
    )
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Access token per persona name."
    )
    password: SecretStr | None = Field(
        None,
        description="The account's password: logged in once, the device and its token are "
        "kept in state_dir and reused.",
    )
    passwords: dict[str, SecretStr] = Field(
        default_factory=dict, description="Password per persona name."
    )
    allow_plain_token: bool = Field(
        False, description="Accept a token or password written in the config file itself."
    )
    state_dir: Path | None = Field(
        None,
        description="Where the device, its access token and the sync position are kept "
        "(0600); default: the data directory's matrix/ folder.",
    )
    device_name: str = Field("personad", description="The device's display name.")
    rooms: list[str] = Field(
        default_factory=list,
        description="Room ids (!id:server) or aliases (#name:server) the persona reads and "
        "speaks in; empty = every room it has joined.",
    )
    invites_from: list[str] = Field(
        default_factory=list,
        description='User ids whose invites are accepted; ["*"] = anyone. Others are declined.',
    )
    display_name: str | None = Field(
        None, description="The account's display name; default: the persona's name."
    )
    avatar: Path | None = Field(
        None, description="An image file for the account's avatar (uploaded when it changes)."
    )
    status_text: str | None = Field(None, description="Presence status text.")
    disclosure: str = Field(
        "🤖 an AI persona", description="Appended to the status: people should know."
    )
    names: dict[str, str] = Field(
        default_factory=dict, description="User id -> the name friends use for them."
    )
    encryption: bool = Field(
        False,
        description="Read and write end-to-end encrypted rooms (needs the matrix-e2ee extra). "
        "Off: the persona says once in an encrypted room that it cannot read it.",
    )
    encrypted_notice: str = Field(
        "I can't read encrypted messages, so I can't see what is said here. Make a room "
        "without encryption to talk with me.",
        description="Said once in an encrypted room, which the bridge cannot read.",
    )
    pace_seconds: float = Field(1.0, ge=0, description="Least time between sends per room.")
    backfill_limit: int = Field(
        100, ge=0, description="Most messages per room read back after downtime."
    )
    sync_timeout: float = Field(30, gt=0, description="Seconds a long-poll sync waits.")
    ready_timeout: float = Field(60, gt=0, description="Seconds to wait for the first sync.")
    rate_limit_retries: int = Field(
        5, ge=0, description="Retries of a request the homeserver rate-limited (M_LIMIT_EXCEEDED)."
    )

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                f"{value!r} is not a homeserver URL; write it like https://matrix.example.org"
            )
        return value.rstrip("/")

    @field_validator("rooms")
    @classmethod
    def _rooms(cls, value: list[str]) -> list[str]:
        for room in value:
            if not _ROOM.match(room):
                raise ValueError(
                    f"{room!r} is not a room id or alias; copy it from the room's settings "
                    "(Advanced: !id:server) or use its address (#name:server)"
                )
        return value

    @field_validator("invites_from", mode="before")
    @classmethod
    def _inviters(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                if item != "*":
                    _user_id(str(item))
        return value

    def account(self, persona: str) -> str | None:
        """The user id of ``persona``'s account."""
        return _pick(self.user_ids, persona) or self.user_id

    def secret(self, persona: str) -> tuple[str | None, str | None]:
        """``persona``'s access token and password, where configured."""
        token = _pick(self.tokens, persona) or self.token
        password = _pick(self.passwords, persona) or self.password
        return (
            token.get_secret_value() if token is not None else None,
            password.get_secret_value() if password is not None else None,
        )


def _pick(table: dict[str, _T], persona: str) -> _T | None:
    by_name = {k.casefold(): v for k, v in table.items()}
    return by_name.get(persona.casefold())
