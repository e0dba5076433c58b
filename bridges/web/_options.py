"""The web bridge's ``[bridges.web]`` table."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WebOptions"]


class WebOptions(BaseModel):
    """Options of the web bridge (all optional)."""

    model_config = ConfigDict(extra="forbid")

    room: str = Field(
        "web",
        min_length=1,
        max_length=64,
        description="The channel the persona sees; list it in the persona's `channels`.",
    )
    title: str = Field("", max_length=100, description="Page title; default: the persona's name.")
    history: int = Field(200, ge=0, le=2000, description="Messages shown when a page opens.")
    max_chars: int = Field(2000, ge=1, le=20000, description="Longest message a visitor may send.")
    rate_per_minute: int = Field(
        20, ge=1, description="Messages one visitor may send per minute (a burst of as many)."
    )
    max_visitors: int = Field(50, ge=1, description="Open pages per room at once.")
    invite_check_seconds: float = Field(
        2.0, gt=0, description="How often live sessions re-check their invite (revocation)."
    )
