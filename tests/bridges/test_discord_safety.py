"""The Discord bridge's safety: who gets pinged, what is forgotten, how long a send is, who may DM.

Run on dpytest; events dpytest cannot fire go through discord.py's own gateway parsers, which
build the same raw payload objects (RawMessageDeleteEvent and friends) a live connection does.
"""

from __future__ import annotations

import re
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend, factories
from structlog.testing import capture_logs

from bridges import BridgeOptionsError
from bridges._registry import build_bridge
from bridges.discord import DiscordBridge, DiscordOptions
from bridges.discord._outgoing import expand_mentions, split_message
from bridges.testing import FakeHost

from .test_discord import _configured, run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _spy_sends(monkeypatch: pytest.MonkeyPatch, bridge: DiscordBridge) -> list[dict[str, Any]]:
    """Record every send's HTTP payload, then let dpytest deliver it as Discord would."""
    payloads: list[dict[str, Any]] = []
    http = bridge.client.http
    original = http.send_message

    async def spy(channel_id: int, *, params: Any) -> Any:
        payloads.append(dict(params.payload))
        # dpytest finds the target by reading its caller's local named `channel`.
        channel = bridge.client.get_channel(channel_id)  # noqa: F841
        return await original(channel_id, params=params)

    monkeypatch.setattr(http, "send_message", spy)
    return payloads


# -- 1. nobody pinged but the people named on purpose ------------------------------------


def test_everyone_here_and_roles_notify_no_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line with @everyone, @here and a role mention pings only the user the persona named."""

    async def scenario() -> None:
        bridge, _host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        payloads = _spy_sends(monkeypatch, bridge)
        await bridge.send(str(general.id), "@everyone @here <@&223456789012345678> look, @alice")
        assert payloads[0]["content"] == (
            f"@everyone @here <@&223456789012345678> look, <@{alice.id}>"
        )
        assert payloads[0]["allowed_mentions"] == {"parse": [], "users": [alice.id]}
        await bridge.send(str(general.id), "@everyone, dinner!")
        assert payloads[1]["allowed_mentions"] == {"parse": [], "users": []}

    run(scenario)


def test_replies_ping_only_when_the_author_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply does not notify its author unless the persona wrote their @Name."""

    async def scenario() -> None:
        bridge, _host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        target = await dpytest.message("question?", channel=general, member=alice)
        seen: list[dict[str, Any]] = []

        async def spy(channel_id: int, *, params: Any) -> Any:
            # dpytest cannot store a reply, so answer as Discord would, with the new message.
            seen.append(params.payload)
            return factories.make_message_dict(
                general, bridge.client.user, content="ok", guild_id=general.guild.id
            )

        monkeypatch.setattr(bridge.client.http, "send_message", spy)
        await bridge.reply(str(general.id), str(target.id), "@here sure")
        await bridge.reply(str(general.id), str(target.id), "sure, @alice")
        assert seen[0]["allowed_mentions"] == {"parse": [], "users": [], "replied_user": False}
        assert seen[1]["allowed_mentions"] == {
            "parse": [],
            "users": [alice.id],
            "replied_user": False,
        }

    run(scenario)


def test_mass_mention_names_and_addresses_are_not_expanded() -> None:
    """A member nicknamed "everyone" is not pinged by @everyone; an e-mail address stays text."""
    out = expand_mentions("@everyone mail me@alice.org, @Alice!", {"everyone": 1, "alice": 2})
    assert out.text == "@everyone mail me@alice.org, <@2>!"
    assert out.named == frozenset({2})


def test_an_own_client_pings_no_one_by_default() -> None:
    """The bridge's own client refuses mass pings even for sends that forget allowed mentions."""
    client = DiscordBridge(DiscordOptions(), FakeHost(), persona="R").client
    assert client.allowed_mentions is not None
    assert client.allowed_mentions.to_dict() == {"parse": []}


# -- 2. edits and deletions of messages discord.py never cached --------------------------


def test_uncached_and_bulk_deletions_reach_the_host_once() -> None:
    """Deletions are reported once each: cached, uncached (before a restart) and in bulk."""

    async def scenario() -> None:
        _bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        guild_id = general.guild.id
        cached = await dpytest.message("cached", channel=general, member=alice)
        other = await dpytest.message("also cached", channel=general, member=alice)
        state = backend.get_state()
        state.parse_message_delete(
            {"id": cached.id, "channel_id": general.id, "guild_id": guild_id}
        )
        # A message from before the restart: discord.py never saw it.
        state.parse_message_delete({"id": 111, "channel_id": general.id, "guild_id": guild_id})
        state.parse_message_delete_bulk(
            {"ids": [str(other.id), "222", "333"], "channel_id": general.id, "guild_id": guild_id}
        )
        await dpytest.run_all_events()
        ch = str(general.id)
        assert sorted(host.deleted) == sorted(
            [(ch, str(cached.id)), (ch, "111"), (ch, str(other.id)), (ch, "222"), (ch, "333")]
        )

    run(scenario)


def test_deletions_outside_the_allow_list_are_ignored() -> None:
    """A deletion in a channel the persona does not read is not reported."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, other = cfg.channels[0], cfg.channels[1]
        bridge.opts.channels = [general.id]
        state = backend.get_state()
        state.parse_message_delete({"id": 5, "channel_id": other.id, "guild_id": other.guild.id})
        state.parse_message_delete_bulk(
            {"ids": ["6"], "channel_id": other.id, "guild_id": other.guild.id}
        )
        await dpytest.run_all_events()
        assert host.deleted == []

    run(scenario)


def _stamp(data: dict[str, Any], edited: bool) -> dict[str, Any]:
    data["edited_timestamp"] = discord.utils.utcnow().isoformat() if edited else None
    return data


def _update(message: discord.Message, content: str, edited: bool) -> dict[str, Any]:
    """The MESSAGE_UPDATE Discord sends for a message discord.py has cached."""
    data = factories.dict_from_message(message)
    data.update(content=content, channel_id=message.channel.id, guild_id=message.guild.id)
    return _stamp(data, edited)


def test_edits_of_uncached_messages_are_reported_once() -> None:
    """An edit of a message discord.py never cached is reported; a link preview is not an edit."""

    async def scenario() -> None:
        _bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        state = backend.get_state()
        uncached = factories.make_message_dict(
            general, alice, id_num=444, content="fixed the tpyo", guild_id=general.guild.id
        )
        state.parse_message_update(_stamp(uncached, edited=True))
        await dpytest.run_all_events()
        assert [(m.message_id, m.text, m.edited) for m in host.messages] == [
            ("444", "fixed the tpyo", True)
        ]
        cached = await dpytest.message("see https://example.org", channel=general, member=alice)
        # Discord adds the link preview with an update that carries no edit stamp.
        state.parse_message_update(_update(cached, "see https://example.org", edited=False))
        state.parse_message_update(_update(cached, "see this", edited=True))
        await dpytest.run_all_events()
        edits = [(m.message_id, m.text) for m in host.messages if m.edited]
        assert edits == [("444", "fixed the tpyo"), (str(cached.id), "see this")]

    run(scenario)


def test_a_backfilled_copy_marked_edited_is_reported_as_an_edit() -> None:
    """A message edited while the bridge was away comes back from history as an edit."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        seen = await dpytest.message("before the drop", channel=general, member=alice)
        state = backend.get_state()
        data = factories.make_message_dict(
            general, alice, content="fixed while away", guild_id=general.guild.id
        )
        edited = state.create_message(channel=general, data=_stamp(data, edited=True))
        plain = state.create_message(
            channel=general,
            data=factories.make_message_dict(
                general, alice, content="new while away", guild_id=general.guild.id
            ),
        )

        async def history(channel: Any, after: int) -> Any:
            for m in (seen, edited, plain):
                if m.id > after:
                    yield m

        bridge.history = history  # type: ignore[method-assign]
        bridge._connected_before = True
        assert await bridge.backfill() == 2
        reported = [(m.text, m.edited) for m in host.messages[1:]]
        assert reported == [("fixed while away", True), ("new while away", False)]

    run(scenario)


# -- 3. nothing over 2,000 characters after mentions are expanded ------------------------

_PIECE = re.compile(r"(?:<@\d+>[ ,]?)+")


def test_a_line_full_of_mentions_is_split_after_expansion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """@Name grows into <@id>: the bridge splits the expanded text, never inside a mention."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        text = ("@alice " * 285).strip()  # 1,994 characters: the engine would not split it
        assert len(text) <= DiscordBridge.max_message_length
        await dpytest.empty_queue()
        payloads = _spy_sends(monkeypatch, bridge)
        first = await bridge.send(str(general.id), text)
        pieces = [p["content"] for p in payloads]
        assert len(pieces) > 1
        assert all(len(p) <= 2000 and _PIECE.fullmatch(p) for p in pieces)
        assert sum(p.count(f"<@{alice.id}>") for p in pieces) == 285
        assert all(p["allowed_mentions"]["users"] == [alice.id] for p in payloads)
        # The engine remembers the whole line under the first piece's id; the other pieces'
        # echoes from the gateway are not reported as new messages.
        await dpytest.run_all_events()
        own = [m for m in host.messages if m.author.id == str(bridge.client.user.id)]
        assert [m.message_id for m in own] == [first]

    run(scenario)


def test_split_never_cuts_inside_a_mention_without_spaces() -> None:
    """Text without any space is cut between tokens, not inside one."""
    text = ",".join(["<@123456789012345678>"] * 200)
    pieces = split_message(text, 2000)
    assert all(len(p) <= 2000 and _PIECE.fullmatch(p) for p in pieces)
    assert "".join(pieces) == text


# -- 4. direct messages only from the users the owner allowed ----------------------------


def test_dms_from_unlisted_users_never_reach_the_engine() -> None:
    """With DMs on, a DM from a listed user is reported; one from anyone else is dropped."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured(dms=True)
        alice, bob = cfg.members
        bridge.opts.dm_users = [str(alice.id)]
        await dpytest.message("hi from alice", channel=await alice.create_dm(), member=alice)
        await dpytest.message("hi from bob", channel=await bob.create_dm(), member=bob)
        assert [m.text for m in host.messages] == ["hi from alice"]

    run(scenario)


def test_dms_on_without_users_lets_no_one_in() -> None:
    """dms = true with an empty dm_users admits no one, and the start-up log says how to fix it."""

    async def scenario() -> None:
        with capture_logs() as logs:
            bridge, host, cfg = await _configured(dms=True)
        alice = cfg.members[0]
        dm = await alice.create_dm()
        await dpytest.message("hello?", channel=dm, member=alice)
        assert host.messages == []
        assert any(e["event"] == "discord_dms_from_nobody" for e in logs)
        bridge.opts.dm_users = ["*"]
        await dpytest.message("hello?", channel=dm, member=alice)
        assert [m.text for m in host.messages] == ["hello?"]

    run(scenario)


def test_dm_users_must_be_ids() -> None:
    """dm_users takes ids (numbers or strings) or "*"; a name is refused with the fix."""
    opts = DiscordOptions(dm_users=[123456789012345678, "223456789012345678", "*"])
    assert opts.dm_users == ["123456789012345678", "223456789012345678", "*"]
    with pytest.raises(BridgeOptionsError, match=r"dm_users.*not 'bob'.*Copy User ID"):
        build_bridge("discord", {"dm_users": ["bob"]}, FakeHost(), persona="Robin")
