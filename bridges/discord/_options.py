"""The ``[bridges.discord]`` options: tokens, allow-lists, who may send direct messages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["DiscordOptions"]


class DiscordOptions(BaseModel):
    """The ``[bridges.discord]`` table. Tokens belong in credentials or the environment."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = Field(None, description="Bot token (one persona).")
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Bot token per persona name (several personas)."
    )
    allow_plain_token: bool = Field(
        False, description="Accept a token written in the config file itself."
    )
    guilds: list[int] = Field(default_factory=list, description="Guild ids; empty = all.")
    channels: list[int] = Field(default_factory=list, description="Channel ids; empty = all.")
    dms: bool = Field(
        False, description="Read and answer direct messages from the users in dm_users."
    )
    dm_users: list[str] = Field(
        default_factory=list,
        description=(
            "User ids whose direct messages the persona reads and answers when dms is on. "
            "A DM from anyone else is dropped unread and never stored. Empty (the default): "
            'no one. ["*"]: anyone on Discord, who can then talk to the persona and fill its '
            "memory."
        ),
    )
    presences: bool = Field(False, description="Ask for the presences intent.")
    status_text: str | None = Field(None, description="Custom status text.")
    disclosure: str = Field(
        "🤖 an AI persona", description="Appended to the status: people should know."
    )
    names: dict[str, str] = Field(
        default_factory=dict, description="User id -> the name friends use for them."
    )
    pace_seconds: float = Field(1.5, ge=0, description="Least time between sends per channel.")
    backfill_limit: int = Field(100, ge=0, description="Messages fetched per channel after a gap.")
    ready_timeout: float = Field(60, gt=0, description="Seconds to wait for the gateway.")

    @field_validator("dm_users", mode="before")
    @classmethod
    def _user_ids(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        ids = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        for item in ids:
            if not (isinstance(item, str) and (item == "*" or item.isdigit())):
                raise ValueError(
                    f'dm_users takes Discord user ids or "*", not {item!r}: copy an id with '
                    "Developer Mode on (right-click the user > Copy User ID)"
                )
        return ids
