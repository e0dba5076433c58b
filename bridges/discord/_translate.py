"""Discord messages to personad events and back: mentions, emoji, attachments."""

from __future__ import annotations

import re
from collections.abc import Mapping

import discord

from models import attachment_kind

from .._api import Attachment, MessageEvent, User

__all__ = ["attachment_of", "plain_text", "to_event", "user_of"]

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_EMOJI = re.compile(r"<a?:(\w+):\d+>")


def user_of(user: discord.abc.User, names: Mapping[str, str]) -> User:
    """A personad user; ``names`` maps ids to the names friends use."""
    name = names.get(str(user.id)) or getattr(user, "display_name", None) or user.name
    return User(str(user.id), name, is_bot=user.bot)


def plain_text(message: discord.Message, names: Mapping[str, str]) -> str:
    """Content with mentions as @Name/#channel and custom emoji as :name:."""
    users = {str(u.id): user_of(u, names).name for u in message.mentions}
    guild = message.guild

    def user(m: re.Match[str]) -> str:
        return "@" + (names.get(m[1]) or users.get(m[1]) or "someone")

    def role(m: re.Match[str]) -> str:
        found = guild.get_role(int(m[1])) if guild else None
        return "@" + (found.name if found else "role")

    def channel(m: re.Match[str]) -> str:
        found = guild.get_channel(int(m[1])) if guild else None
        return "#" + (found.name if found else "channel")

    text = _USER.sub(user, message.content)
    text = _ROLE.sub(role, text)
    text = _CHANNEL.sub(channel, text)
    return _EMOJI.sub(lambda m: f":{m[1]}:", text)


def attachment_of(item: discord.Attachment) -> Attachment:
    """PHOTO, VIDEO or FILE, with Discord's alt text as the description when present."""
    return Attachment(attachment_kind(item.filename, item.content_type), item.description)


def to_event(
    message: discord.Message, names: Mapping[str, str], *, edited: bool = False
) -> MessageEvent:
    """A personad event for a Discord message."""
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    reply_author = (
        user_of(resolved.author, names) if isinstance(resolved, discord.Message) else None
    )
    channel_name = getattr(message.channel, "name", None)
    return MessageEvent(
        channel=str(message.channel.id),
        message_id=str(message.id),
        author=user_of(message.author, names),
        text=plain_text(message, names),
        timestamp=message.created_at,
        channel_name=channel_name,
        mentions=tuple(user_of(u, names) for u in message.mentions),
        reply_to=str(ref.message_id) if ref is not None and ref.message_id else None,
        reply_to_author=reply_author,
        attachments=tuple(attachment_of(a) for a in message.attachments),
        edited=edited,
    )
