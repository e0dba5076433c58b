"""The Discord bridge, tested with dpytest and, where dpytest cannot, discord.py's own objects."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend, factories

from bridges import Bridge, BridgeHost, BridgeStartError, PersonaEngine, Store, User
from bridges.discord import DiscordBridge, DiscordOptions
from bridges.persona._speaker import split_text as _split
from bridges.testing import BridgeContract, FakeClock, FakeHost, RecordingBridge, ScriptedCompleter
from daemon import load_settings
from daemon.errors import ConfigError
from models import PersonaCard, PersonaManifest
from models._persona import BehaviourSettings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def dpytest_reaction_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    """dpytest 0.7 builds reaction events without the 'type' field discord.py 2.4+ reads."""
    original = discord.state.ConnectionState.parse_message_reaction_add

    def parse(self: Any, data: dict[str, Any]) -> None:
        data.setdefault("type", 0)
        data.setdefault("burst", False)
        original(self, data)

    monkeypatch.setattr(discord.state.ConnectionState, "parse_message_reaction_add", parse)


async def _configured(
    clock: FakeClock | None = None, **options: Any
) -> tuple[DiscordBridge, FakeHost, Any]:
    """A bridge on a dpytest client: one guild, channels general/random, members alice/bob."""
    intents = discord.Intents.default()
    intents.message_content = True
    intents.members = True
    client = discord.Client(intents=intents)
    await client._async_setup_hook()
    dpytest.configure(
        client, guilds=["home"], text_channels=["general", "random"], members=["alice", "bob"]
    )
    host = FakeHost()
    bridge = DiscordBridge(
        DiscordOptions(pace_seconds=0, **options),
        host,
        persona="Robin",
        clock=clock,
        client=client,
    )
    await bridge.start()
    return bridge, host, dpytest.get_config()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one async scenario, cleaning dpytest's queues afterwards."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            await dpytest.empty_queue()

    asyncio.run(main())


def test_incoming_mentions_emoji_and_attachments() -> None:
    """User, role and channel mentions become names; custom emoji their names; files kinds."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured(names={})
        general, random_ch = cfg.channels[0], cfg.channels[1]
        alice, bob = cfg.members
        guild = cfg.guilds[0]
        role = discord.Role(
            guild=guild,
            state=backend.get_state(),
            data={
                "id": 223456789012345678,
                "name": "hikers",
                "position": 1,
                "permissions": "0",
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": True,
            },
        )
        guild._add_role(role)
        me = bridge.client.user
        await dpytest.message(
            f"hey <@{me.id}> and <@!{bob.id}>, ask <@&{role.id}> in <#{random_ch.id}> "
            "<:blobwave:123456789012345678>",
            channel=general,
            member=alice,
            attachments=["cat.png", "clip.mp4", "notes.pdf"],
        )
        event = host.messages[-1]
        # Names are what people see: display names (dpytest gives members nicknames).
        assert event.text == (
            f"hey @Robin and @{bob.display_name}, ask @hikers in #random :blobwave:"
        )
        assert any(u.id == str(me.id) for u in event.mentions)
        assert [a.kind for a in event.attachments] == ["photo", "video", "file"]
        assert event.author == User(str(alice.id), alice.display_name, is_bot=False)
        assert event.channel == str(general.id) and event.channel_name == "general"

    run(scenario)


def test_names_map_overrides_discord_names() -> None:
    """An id in the names map is shown with the name friends use."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        alice = cfg.members[0]
        bridge.opts.names[str(alice.id)] = "Ali"
        await dpytest.message(f"<@{alice.id}> here", channel=cfg.channels[0], member=alice)
        assert host.messages[-1].author.name == "Ali"
        assert host.messages[-1].text == "@Ali here"

    run(scenario)


def test_outgoing_mentions_become_real_mentions() -> None:
    """The persona's @Name is sent as <@id>; messages go to the channel."""

    async def scenario() -> None:
        bridge, _host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        await bridge.send(str(general.id), "hi @alice!")
        assert dpytest.verify().message().content(f"hi <@{alice.id}>!")

    run(scenario)


def test_allow_lists_and_direct_messages() -> None:
    """Channels outside the allow-list and DMs (unless enabled for that user) are ignored."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, other = cfg.channels[0], cfg.channels[1]
        bridge.opts.channels = [general.id]
        await dpytest.message("not here", channel=other, member=cfg.members[0])
        await dpytest.message("here", channel=general, member=cfg.members[0])
        assert [m.text for m in host.messages] == ["here"]
        dm = await cfg.members[0].create_dm()
        assert not bridge.allowed(dm)
        bridge.opts.dms = True
        assert not bridge.allowed(dm)
        bridge.opts.dm_users = [str(cfg.members[0].id)]
        assert bridge.allowed(dm)
        bridge.opts.guilds = [12345]
        assert not bridge.allowed(general)

    run(scenario)


def _reply_data(target: discord.Message, author: discord.Member, content: str) -> Any:
    data = factories.make_message_dict(
        target.channel, author, content=content, guild_id=target.guild.id
    )
    data["message_reference"] = {
        "message_id": target.id,
        "channel_id": target.channel.id,
        "guild_id": target.guild.id,
    }
    ref = factories.dict_from_message(target)
    ref["channel_id"] = target.channel.id
    ref["timestamp"] = target.created_at.isoformat()
    data["referenced_message"] = ref
    data["type"] = 19
    return data


def test_replies_carry_the_message_they_answer() -> None:
    """A Discord reply reports the answered message and its author (discord.py objects)."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        mine = await general.send("the persona said this")
        backend.get_state().parse_message_create(_reply_data(mine, alice, "replying to you"))
        await dpytest.run_all_events()
        event = host.messages[-1]
        assert event.text == "replying to you"
        assert event.reply_to == str(mine.id)
        assert event.reply_to_author is not None
        assert event.reply_to_author.id == str(bridge.client.user.id)

    run(scenario)


def test_reply_out_uses_a_message_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """reply() sends with a reference to the answered message (checked at the HTTP layer)."""

    async def scenario() -> None:
        bridge, _host, cfg = await _configured()
        general = cfg.channels[0]
        target = await dpytest.message("question?", channel=general, member=cfg.members[0])
        seen: list[Any] = []
        http = bridge.client.http

        async def spy(channel_id: int, *, params: Any) -> Any:
            # dpytest cannot store a reply, so answer as Discord would, with the new message.
            seen.append(params.payload)
            return factories.make_message_dict(
                general, bridge.client.user, content="answer", guild_id=general.guild.id
            )

        monkeypatch.setattr(http, "send_message", spy)
        await bridge.reply(str(general.id), str(target.id), "answer")
        assert seen[0]["message_reference"]["message_id"] == target.id
        assert seen[0]["content"] == "answer"
        assert seen[0]["allowed_mentions"]["replied_user"] is False

    run(scenario)


def test_reactions_in_and_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Others' reactions are reported; the persona's react() adds one."""

    async def scenario() -> None:
        bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        message = await dpytest.message("funny", channel=general, member=alice)
        await dpytest.add_reaction(alice, message, "😂")
        custom = discord.Reaction(
            message=message,
            data={"count": 1, "me": False, "emoji": {"name": "pog", "id": 123456789012345678}},
        )
        bridge.client.dispatch("reaction_add", custom, alice)
        await asyncio.sleep(0.05)
        name = alice.display_name
        assert [(r.emoji, r.user.name) for r in host.reactions] == [("😂", name), (":pog:", name)]
        added: list[tuple[int, int, str]] = []

        async def add_reaction(channel_id: int, message_id: int, emoji: str) -> None:
            added.append((channel_id, message_id, emoji))

        monkeypatch.setattr(bridge.client.http, "add_reaction", add_reaction)
        await bridge.react(str(general.id), str(message.id), "👍")
        assert added == [(general.id, message.id, "👍")]

    run(scenario)


def test_edits_and_deletions_update_history() -> None:
    """An edit is reported as an edit; a deletion reaches the host."""

    async def scenario() -> None:
        _bridge, host, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        message = await dpytest.message("tpyo", channel=general, member=alice)
        state = backend.get_state()
        data = factories.dict_from_message(message)
        # Discord stamps a real edit; link previews and pins arrive without a new stamp.
        data.update(
            content="typo",
            channel_id=general.id,
            guild_id=general.guild.id,
            edited_timestamp=discord.utils.utcnow().isoformat(),
        )
        state.parse_message_update(data)
        state.parse_message_delete(
            {"id": message.id, "channel_id": general.id, "guild_id": general.guild.id}
        )
        await dpytest.run_all_events()
        assert host.messages[-1].edited and host.messages[-1].text == "typo"
        assert host.deleted == [(str(general.id), str(message.id))]

    run(scenario)


def test_typing_and_presence() -> None:
    """typing() triggers Discord's indicator; presence shows status and the disclosure."""

    async def scenario() -> None:
        typed: list[Any] = []
        presences: list[Any] = []

        async def on_typing(channel: Any) -> None:
            typed.append(channel.id)

        async def on_presence(activity: Any, status: Any, afk: Any) -> None:
            presences.append((activity, status))

        dpytest.callbacks.set_callback(on_typing, "send_typing")
        bridge, _host, cfg = await _configured(status_text="hiking")
        dpytest.callbacks.set_callback(on_presence, "presence")
        general = cfg.channels[0]
        await bridge.typing(str(general.id))
        assert typed == [general.id]
        await bridge.set_presence("offline")
        await bridge.set_presence("online")
        assert presences[0][1] == "invisible"
        assert presences[1][1] == "online"
        assert presences[1][0].name == "hiking · 🤖 an AI persona"

    run(scenario)


def test_long_text_is_split_at_sentences() -> None:
    """Over 2,000 characters, text is cut at sentence ends."""
    sentence = "This is a sentence of moderate length. "
    parts = _split(sentence * 80, DiscordBridge.max_message_length)
    assert all(len(p) <= 2000 for p in parts) and len(parts) == 2
    assert all(p.endswith(".") for p in parts)


def test_reconnect_backfill_misses_nothing_and_answers_nothing_twice(tmp_path: Path) -> None:
    """After a reconnect, history since the last seen message is replayed; the engine answers
    new messages once and ignores the ones it already had."""

    async def scenario() -> None:
        bridge, _, cfg = await _configured()
        general, alice = cfg.channels[0], cfg.members[0]
        clock = FakeClock()
        completer = ScriptedCompleter(lambda call: " got it")
        persona = PersonaManifest(
            name="Robin",
            card=PersonaCard(description="x"),
            format="transcript",
            behaviour=BehaviourSettings(
                channels=["*"],
                sleep_hours=None,
                away_per_day=0,
                starts_per_day=0,
                debounce=0,
                reading_delay=0,
                min_interval=0,
            ),
        )
        engine = PersonaEngine(
            persona, completer, Store(tmp_path / "s.db"), clock, clock, random.Random(1)
        )
        bridge.host = engine
        engine.attach(bridge)
        await engine.start()
        seen = await dpytest.message("before the drop", channel=general, member=alice)
        # While disconnected, two messages were posted; the gateway never delivered them.
        state = backend.get_state()
        missed = []
        for text in ("during the drop, Robin?", "still there?"):
            data = factories.make_message_dict(
                general, alice, content=text, guild_id=general.guild.id
            )
            missed.append(state.create_message(channel=general, data=data))

        async def history(channel: Any, after: int) -> AsyncIterator[discord.Message]:
            for m in [seen, *missed]:  # Discord returns everything after `after`...
                if m.id > after:
                    yield m

        bridge.history = history  # type: ignore[method-assign]
        replayed = await bridge.backfill()
        assert replayed == 2
        await clock.advance(60)
        asked = [c.prompt for c in completer.calls]
        assert len(asked) == 1 and "still there?" in asked[0]
        # A second reconnect replays nothing new and answers nothing twice.
        bridge._last_seen[general.id] = seen.id
        await bridge.backfill()
        await clock.advance(60)
        assert len(completer.calls) == 1
        await engine.stop()

    run(scenario)


class _Room:
    """Two recording bridges that see each other's messages, as two bots in one channel."""

    def __init__(self) -> None:
        self.bridges: list[RecordingBridge] = []

    def join(self, bridge: RecordingBridge) -> None:
        self.bridges.append(bridge)
        original = bridge.send

        async def send(channel: str, text: str) -> str:
            mid = await original(channel, text)
            for other in self.bridges:
                if other is not bridge and bridge.me is not None:
                    await other.say(bridge.me, text, channel=channel)
            return mid

        bridge.send = send  # type: ignore[method-assign]


def test_two_personas_talk_within_the_bot_budget(tmp_path: Path) -> None:
    """Two personas answer each other, and stop when the bot-to-bot budget is spent."""

    async def scenario() -> None:
        clock = FakeClock()
        room = _Room()
        store = Store(tmp_path / "s.db")
        engines = []
        for i, name in enumerate(("Robin", "Sam")):
            other = "Sam" if name == "Robin" else "Robin"
            persona = PersonaManifest(
                name=name,
                card=PersonaCard(description="x"),
                behaviour=BehaviourSettings(
                    channels=["*"],
                    sleep_hours=None,
                    away_per_day=0,
                    starts_per_day=0,
                    bot_budget=4,
                    talkativeness=1.0,
                    min_interval=0,
                ),
            )
            completer = ScriptedCompleter(lambda call, other=other: f"hey {other}")
            engine = PersonaEngine(persona, completer, store, clock, clock, random.Random(i))
            bridge = RecordingBridge(DiscordOptions(), engine, persona=name, clock=clock)
            bridge.me = User(f"bot-{name}", name, is_bot=True)
            engine.attach(bridge)
            room.join(bridge)
            await engine.start()
            engines.append((engine, bridge))
        await engines[0][1].say(User("h1", "Alex"), "hi Robin and Sam")
        await clock.advance(3600)
        said = [len(b.sent()) for _, b in engines]
        # Human, then bots alternate until the run of bot messages passes the budget.
        assert 2 <= sum(said) <= 5
        assert all(n >= 1 for n in said)
        for engine, _ in engines:
            await engine.stop()

    asyncio.run(scenario())


def test_bad_token_fails_start_up_clearly() -> None:
    """A rejected token ends start() with a message saying what to do, instead of hanging."""

    class RejectingClient(discord.Client):
        async def login(self, token: str) -> None:
            raise discord.LoginFailure("Improper token has been passed.")

    async def scenario() -> None:
        bridge = DiscordBridge(DiscordOptions(token="not-a-token"), FakeHost(), persona="Robin")
        bridge.client = RejectingClient(intents=bridge.intents())
        bridge._register()
        with pytest.raises(BridgeStartError, match=r"rejected the bot token.*Reset Token"):
            await bridge.start()
        missing = DiscordBridge(DiscordOptions(), FakeHost(), persona="Robin")
        with pytest.raises(BridgeStartError, match="bridges__discord__token"):
            await missing.start()

    asyncio.run(scenario())


def test_tokens_come_from_credentials_or_environment(tmp_path: Path) -> None:
    """Credential files and PERSONAD_ variables give tokens; plain TOML needs insisting."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "bridges__discord__tokens__robin").write_text("tok-robin-123\n")
    s = load_settings(
        environ={
            "CREDENTIALS_DIRECTORY": str(creds),
            "PERSONAD_BRIDGES__DISCORD__TOKEN": "tok-env-456",
        }
    )
    opts = DiscordOptions.model_validate(s.bridges["discord"])
    assert opts.tokens["robin"].get_secret_value() == "tok-robin-123"
    assert opts.token is not None and opts.token.get_secret_value() == "tok-env-456"
    assert {"tok-robin-123", "tok-env-456"} <= set(s.secret_values())
    bridge = DiscordBridge(opts, FakeHost(), persona="Robin")
    assert bridge._token() == "tok-robin-123"
    cfg = tmp_path / "personad.toml"
    cfg.write_text('[bridges.discord]\ntoken = "tok-plain"\n')
    with pytest.raises(ConfigError, match="credential file"):
        load_settings(cfg, environ={})
    cfg.write_text('[bridges.discord]\ntoken = "tok-plain"\nallow_plain_token = true\n')
    assert load_settings(cfg, environ={}).bridges["discord"]["token"] == "tok-plain"


def test_intents() -> None:
    """Message content and members are requested; presences only when configured."""
    plain = DiscordBridge(DiscordOptions(), FakeHost(), persona="R").intents()
    assert plain.message_content and plain.members and not plain.presences
    assert (
        DiscordBridge(DiscordOptions(presences=True), FakeHost(), persona="R").intents().presences
    )


class TestDiscordContract(BridgeContract):
    """The Discord bridge passes the contract every bridge must pass (on dpytest)."""

    channel = "0"

    def make_bridge(self, host: BridgeHost) -> Bridge:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        client = discord.Client(intents=intents)
        self._client = client
        bridge = DiscordBridge(DiscordOptions(pace_seconds=0), host, persona="Robin", client=client)
        original = bridge.start

        async def start() -> None:
            await client._async_setup_hook()
            dpytest.configure(client, guilds=["home"], text_channels=["general"], members=["alice"])
            self.channel = str(dpytest.get_config().channels[0].id)
            await original()

        bridge.start = start  # type: ignore[method-assign]
        return bridge

    async def deliver(self, bridge: Bridge, text: str) -> None:
        cfg = dpytest.get_config()
        await dpytest.message(text, channel=cfg.channels[0], member=cfg.members[0])

    def sent(self, bridge: Bridge) -> list[str]:
        out = []
        while not dpytest.sent_queue.empty():
            out.append(dpytest.sent_queue.get_nowait().content)
        return out


def test_sends_are_paced_per_channel() -> None:
    """Two sends in one channel are at least pace_seconds apart on the persona's clock."""

    async def scenario() -> None:
        clock = FakeClock()
        bridge, _host, cfg = await _configured(clock)
        bridge.opts.pace_seconds = 3
        general = str(cfg.channels[0].id)
        await dpytest.empty_queue()
        await bridge.send(general, "one")
        second = asyncio.ensure_future(bridge.send(general, "two"))
        await clock.advance(2.9)
        assert not second.done()
        await clock.advance(0.2)
        await second
        assert [m.content for m in (dpytest.get_message(), dpytest.get_message())] == ["one", "two"]

    run(scenario)
