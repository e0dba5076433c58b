"""The persona's text on its way out: real mentions for the people it named, and nothing wider.

Mentions are expanded before the length check because Discord counts ``<@id>``, not ``@Name``;
every send says exactly who may be notified, so a model line with ``@everyone``, ``@here`` or a
role mention stays plain text instead of pinging a whole server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import discord

__all__ = ["Outgoing", "expand_mentions", "mentions_for", "split_message"]

_USER = re.compile(r"<@!?(\d+)>")
# Any Discord markup a cut must not break: user, role and channel mentions, custom emoji.
_TOKEN = re.compile(r"<(?:@[!&]?|#)\d+>|<a?:\w+:\d+>")
# Discord's own mass mentions; a member nicknamed "everyone" must not turn them into a ping.
_MASS = frozenset({"everyone", "here"})
_CUTS = (". ", "! ", "? ", "\n")


@dataclass(frozen=True)
class Outgoing:
    """Text with ``@Name`` expanded, and the ids of the users the persona named on purpose."""

    text: str
    named: frozenset[int]

    def users_in(self, part: str) -> frozenset[int]:
        """The named users whose mention is in ``part`` (one piece of a split message)."""
        return frozenset(int(m[1]) for m in _USER.finditer(part)) & self.named


def expand_mentions(text: str, members: Mapping[str, int]) -> Outgoing:
    """The persona's ``@Name`` becomes ``<@id>`` for names known in the channel."""
    by_name = {name.casefold(): uid for name, uid in members.items() if name}
    names = sorted((n for n in members if n and n.casefold() not in _MASS), key=len, reverse=True)
    if not names:
        return Outgoing(text, frozenset())
    pattern = re.compile(
        r"(?<![\w<])@(" + "|".join(map(re.escape, names)) + r")(?!\w)", re.IGNORECASE
    )
    named: set[int] = set()

    def mention(m: re.Match[str]) -> str:
        uid = by_name.get(m[1].casefold())
        if uid is None:
            return m[0]
        named.add(uid)
        return f"<@{uid}>"

    expanded = pattern.sub(mention, text)
    return Outgoing(expanded, frozenset(named))


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at sentence ends, else spaces, never
    inside a mention or custom emoji."""
    parts: list[str] = []
    text = text.strip()
    while len(text) > limit:
        cut = _cut(text, limit)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def _cut(text: str, limit: int) -> int:
    sentence = max(text.rfind(mark, 0, limit) for mark in _CUTS)
    if sentence > 0:
        return sentence + 1
    space = text.rfind(" ", 1, limit + 1)
    if space > 0:
        return space
    for token in _TOKEN.finditer(text, 0, limit + 64):
        if token.start() < limit < token.end() and token.start() > 0:
            return token.start()
    return limit


def mentions_for(users: Iterable[int]) -> discord.AllowedMentions:
    """Allowed mentions naming exactly ``users``: no everyone/here, no roles, no reply ping."""
    return discord.AllowedMentions(
        everyone=False,
        roles=False,
        users=[discord.Object(uid) for uid in sorted(users)],
        replied_user=False,
    )
