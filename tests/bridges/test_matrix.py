"""The Matrix bridge against a real Synapse homeserver on loopback, with a human's client."""

from __future__ import annotations

import asyncio
import os
import random
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bridges import (
    Bridge,
    BridgeHost,
    BridgeStartError,
    PersonaEngine,
    Store,
    load_bridge_class,
)
from bridges.matrix import MatrixBridge, MatrixOptions
from bridges.testing import BridgeContract, FakeClock, ScriptedCompleter
from models import PersonaCard, PersonaManifest
from models._persona import BehaviourSettings
from tests.bridges.matrix_world import (
    EncryptedHuman,
    Human,
    WaitingHost,
    World,
    api,
    create_room,
    join,
    make_bridge,
    new_bot_and_room,
    room_messages,
    unique,
)
from tests.bridges.synapse import Account, Synapse
from tests.conftest import free_port


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """One homeserver for the whole session (it takes seconds to start)."""
    with Synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture(scope="session")
def world(synapse: Synapse) -> World:
    """The persona's account and a human sharing one unencrypted room."""
    bot = synapse.register(unique("robin"))
    human = synapse.register(unique("alex"))
    room = create_room(synapse, human, [bot.user_id])
    join(synapse, bot, room)
    return World(synapse, bot, human, room)


def run(coro: Any) -> Any:
    """Run one scenario in a fresh loop (as personad's CLI does)."""
    return asyncio.run(asyncio.wait_for(coro, 120))


class TestMatrixContract(BridgeContract):
    """The shared bridge contract, against the real homeserver."""

    @pytest.fixture(autouse=True)
    def _world(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.channel = world.room
        self.tmp = tmp_path

    def make_bridge(self, host: BridgeHost) -> Bridge:
        return make_bridge(self.world, host, self.tmp / "state")

    async def deliver(self, bridge: Bridge, text: str) -> None:
        async with Human(self.world) as human:
            await human.say(self.world.room, text)

    def sent(self, bridge: Bridge) -> list[str]:
        return [
            e["content"].get("body", "")
            for e in room_messages(self.world.server, self.world.human, self.world.room)
            if e["type"] == "m.room.message" and e["sender"] == self.world.bot.user_id
        ]


def test_entry_point_loads_the_matrix_bridge() -> None:
    """`matrix` in [run] bridges finds this bridge through its entry point."""
    assert load_bridge_class("matrix") is MatrixBridge


def test_messages_replies_edits_reactions_and_redactions_reach_the_persona(
    world: World, tmp_path: Path
) -> None:
    """A human's reply to the persona addresses it; an edit updates, a redaction deletes,
    a reaction is reported."""

    async def scenario() -> None:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path)
        await bridge.start()
        try:
            async with Human(world) as human:
                first = await human.say(world.room, "the bus was late again")
                mine = await bridge.send(world.room, "oh no, how late?")
                answer = await human.say(
                    world.room,
                    "twenty minutes",
                    **{"m.relates_to": {"m.in_reply_to": {"event_id": mine}}},
                )
                await human.edit(world.room, first, "the tram was late again")
                await human.react(world.room, mine, "👍")
                await human.redact(world.room, answer)
                await host.until(lambda: host.deleted and host.reactions)
                await host.until(lambda: any(m.edited for m in host.messages))
        finally:
            await bridge.stop()
        by_id = {m.message_id: m for m in host.messages if not m.edited}
        reply = by_id[answer]
        assert reply.reply_to == mine and reply.reply_to_author == bridge.me
        assert by_id[mine].author == bridge.me
        edit = next(m for m in host.messages if m.edited)
        assert (edit.message_id, edit.text) == (first, "the tram was late again")
        assert host.reactions[0].message_id == mine and host.reactions[0].emoji == "👍"
        assert host.reactions[0].user.id == world.human.user_id
        assert host.deleted == [(world.room, answer)]

    run(scenario())


def test_outgoing_reply_reaction_typing_and_read_receipt(world: World, tmp_path: Path) -> None:
    """The persona's reply carries m.in_reply_to, its reaction an m.annotation; typing and a
    read receipt for what it answered reach the human's client."""

    bot, room = new_bot_and_room(world)

    async def scenario() -> dict[str, Any]:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path, account=bot)
        await bridge.start()
        try:
            async with Human(world) as human:
                asked = await human.say(room, "are you coming tonight?")
                await host.until(lambda: asked in [m.message_id for m in host.messages])
                now = (await human.sync(None))["next_batch"]
                await bridge.typing(room)
                typing = await human.next_ephemeral(
                    now, room, "m.typing", lambda c: bot.user_id in c["user_ids"]
                )
                receipt = await human.next_ephemeral(
                    now,
                    room,
                    "m.receipt",
                    lambda c: bot.user_id in c.get(asked, {}).get("m.read", {}),
                )
                answered = await bridge.reply(room, asked, "yes, around eight")
                await bridge.react(room, asked, "🎉")
        finally:
            await bridge.stop()
        return {"asked": asked, "answered": answered, "receipt": receipt, "typing": typing}

    out = run(scenario())
    events = {e["event_id"]: e for e in room_messages(world.server, world.human, room)}
    reply = events[out["answered"]]["content"]
    assert reply["m.relates_to"]["m.in_reply_to"]["event_id"] == out["asked"]
    assert reply["m.mentions"]["user_ids"] == [world.human.user_id]
    reaction = next(
        e
        for e in events.values()
        if e["type"] == "m.reaction"
        and e["sender"] == bot.user_id
        and e["content"]["m.relates_to"]["event_id"] == out["asked"]
    )
    assert reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": out["asked"],
        "key": "🎉",
    }
    assert bot.user_id in out["typing"]["content"]["user_ids"]
    read = out["receipt"]["content"][out["asked"]]["m.read"]
    assert bot.user_id in read


def test_pills_and_display_names_count_as_mentions(world: World, tmp_path: Path) -> None:
    """A pill or the account's display name addresses the persona; its @Name becomes a pill
    that pings exactly that person."""

    async def scenario() -> tuple[Any, Any, str]:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path, display_name="Robin the Bot")
        await bridge.start()
        try:
            async with Human(world) as human:
                pill = await human.send(
                    world.room,
                    {
                        "msgtype": "m.text",
                        "body": "hey you, lunch?",
                        "format": "org.matrix.custom.html",
                        "formatted_body": f'<a href="https://matrix.to/#/{world.bot.user_id}">'
                        "Robin the Bot</a>: lunch?",
                        "m.mentions": {"user_ids": [world.bot.user_id]},
                    },
                )
                named = await human.say(world.room, "robin the bot, are you there")
                await host.until(lambda: {pill, named} <= {m.message_id for m in host.messages})
            human_name = bridge._rooms.get(world.room).members[world.human.user_id]
            sent = await bridge.send(world.room, f"@{human_name} yes, one o'clock")
        finally:
            await bridge.stop()
        by_id = {m.message_id: m for m in host.messages}
        return by_id[pill], by_id[named], sent

    pill, named, sent = run(scenario())
    assert [u.id for u in pill.mentions] == [world.bot.user_id]
    assert world.bot.user_id in [u.id for u in named.mentions]
    content = {e["event_id"]: e for e in room_messages(world.server, world.human, world.room)}[
        sent
    ]["content"]
    assert content["m.mentions"] == {"user_ids": [world.human.user_id]}
    assert f"https://matrix.to/#/{world.human.user_id}" in content["formatted_body"]


def test_attachments_arrive_by_description(world: World, tmp_path: Path) -> None:
    """An image with a caption reaches the persona as a described photo."""

    async def scenario() -> Any:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path)
        await bridge.start()
        try:
            async with Human(world) as human:
                mid = await human.send(
                    world.room,
                    {
                        "msgtype": "m.image",
                        "body": "my cat on the sofa",
                        "filename": "cat.jpg",
                        "url": "mxc://personad.test/nothing",
                        "info": {"mimetype": "image/jpeg"},
                    },
                )
                return await host.until(
                    lambda: next((m for m in host.messages if m.message_id == mid), None)
                )
        finally:
            await bridge.stop()

    message = run(scenario())
    assert message.text == "my cat on the sofa"
    assert [(a.kind, a.description) for a in message.attachments] == [
        ("photo", "my cat on the sofa")
    ]


def test_presence_both_ways_with_the_disclosure(world: World, tmp_path: Path) -> None:
    """idle shows as unavailable with the bot disclosure; the human's presence is reported."""

    async def scenario() -> Any:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path, status_text="reading")
        await bridge.start()
        try:
            await bridge.set_presence("idle")
            async with Human(world) as human:
                from mautrix.types import PresenceState

                await human.client.set_presence(PresenceState.UNAVAILABLE)
                await human.client.set_presence(PresenceState.ONLINE)
                await host.until(
                    lambda: any(
                        p.user.id == world.human.user_id and p.status == "online"
                        for p in host.presences
                    )
                )
        finally:
            await bridge.stop()
        return host.presences

    presences = run(scenario())
    shown = api(world.server, world.human.access_token, f"/presence/{world.bot.user_id}/status")
    assert shown["presence"] == "unavailable"
    assert shown["status_msg"] == "reading · 🤖 an AI persona"
    assert presences[-1].user.name == world.human.user_id[1:].split(":")[0]


def test_invites_from_others_are_declined(world: World, tmp_path: Path) -> None:
    """An allowed user's invite is accepted; a stranger's is declined."""
    server = world.server
    stranger = server.register(unique("stranger"))
    theirs = create_room(server, stranger, [world.bot.user_id])
    ours = create_room(server, world.human, [world.bot.user_id])

    async def scenario() -> None:
        bridge = make_bridge(world, WaitingHost(), tmp_path)
        await bridge.start()
        await bridge.stop()

    run(scenario())

    def membership(room: str, owner: str) -> str:
        path = f"/rooms/{room}/state/m.room.member/{world.bot.user_id}"
        return str(api(server, owner, path)["membership"])

    assert membership(ours, world.human.access_token) == "join"
    assert membership(theirs, stranger.access_token) == "leave"


def test_missed_messages_are_read_back_after_downtime(world: World, tmp_path: Path) -> None:
    """Messages posted while the bridge was stopped, more than one sync page of them, are
    reported after the next start, in order; a password login happens once and its device
    is kept."""
    server = world.server
    bot, room = new_bot_and_room(world)
    missed = [f"missed {i}" for i in range(30)]

    async def scenario() -> WaitingHost:
        first = make_bridge(world, WaitingHost(), tmp_path, account=bot, password=True)
        await first.start()
        await first.stop()
        async with Human(world) as human:
            for text in missed:
                await human.say(room, text)
        host = WaitingHost()
        second = make_bridge(world, host, tmp_path, account=bot, password=True)
        await second.start()
        try:
            await host.until(lambda: len(host.texts(room)) >= len(missed))
        finally:
            await second.stop()
        return host

    host = run(scenario())
    assert host.texts(room) == missed
    devices = api(server, bot.access_token, "/devices")["devices"]
    # The device registration made, and one the bridge logged in once.
    assert len(devices) == 2
    saved = next(tmp_path.glob("*.json"))
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600


def test_rate_limits_are_waited_out(world: World, tmp_path: Path) -> None:
    """Sends the homeserver answers M_LIMIT_EXCEEDED are retried after retry_after_ms."""
    server = world.server
    admin = server.register(unique("admin"), admin=True)
    bot, room = new_bot_and_room(world)
    path = f"/_synapse/admin/v1/users/{bot.user_id}/override_ratelimit"

    httpx.post(
        server.url + path,
        headers={"Authorization": f"Bearer {admin.access_token}"},
        json={"messages_per_second": 4, "burst_count": 1},
        timeout=10,
    ).raise_for_status()

    async def scenario() -> list[float]:
        bridge = make_bridge(world, WaitingHost(), tmp_path, account=bot)
        await bridge.start()
        try:
            for i in range(3):
                await bridge.send(room, f"quick {i}")
        finally:
            await bridge.stop()
        return bridge.session.limiter.waits

    waits = run(scenario())
    sent = [
        e["content"]["body"]
        for e in room_messages(server, world.human, room)
        if e["sender"] == bot.user_id and e["type"] == "m.room.message"
    ]
    assert sent == [f"quick {i}" for i in range(3)]
    assert waits and all(0 < w <= 0.5 for w in waits)


def test_encrypted_rooms_get_a_notice_once(world: World, tmp_path: Path) -> None:
    """In an encrypted room the persona says, once, that it cannot read it."""
    server = world.server
    bot, room = new_bot_and_room(world, encrypted=True)

    async def scenario() -> None:
        for _ in range(2):
            bridge = make_bridge(world, WaitingHost(), tmp_path, account=bot)
            await bridge.start()
            await bridge.stop()

    run(scenario())
    notices = [
        e["content"]["body"]
        for e in room_messages(server, world.human, room)
        if e["sender"] == bot.user_id and e["type"] == "m.room.message"
    ]
    assert notices == [MatrixOptions.model_fields["encrypted_notice"].default]


def test_missing_credentials_and_wrong_password_are_explained(world: World, tmp_path: Path) -> None:
    """No secret, a refused password or an unreachable homeserver stops the start with a
    one-line fix."""
    opts = MatrixOptions(homeserver=world.server.url, user_id=world.bot.user_id)
    with pytest.raises(BridgeStartError, match="bridges__matrix__password"):
        run(MatrixBridge(opts, WaitingHost(), persona="Robin").start())
    wrong = MatrixOptions(
        homeserver=world.server.url,
        user_id=world.bot.user_id,
        password="not it",
        state_dir=tmp_path,
    )
    with pytest.raises(BridgeStartError, match="refused the password"):
        run(MatrixBridge(wrong, WaitingHost(), persona="Robin").start())
    nowhere = wrong.model_copy(update={"homeserver": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(BridgeStartError, match="cannot reach the homeserver"):
        run(MatrixBridge(nowhere, WaitingHost(), persona="Robin").start())


def test_options_reject_what_is_not_a_matrix_id() -> None:
    """A user id without its server, or a room that is neither id nor alias, is refused."""
    with pytest.raises(ValueError, match=r"@robin:example\.org"):
        MatrixOptions(homeserver="https://m.example.org", user_id="robin")
    with pytest.raises(ValueError, match="room id or alias"):
        MatrixOptions(homeserver="https://m.example.org", rooms=["general"])
    with pytest.raises(ValueError, match="homeserver URL"):
        MatrixOptions(homeserver="matrix.example.org")


def _robin() -> PersonaManifest:
    return PersonaManifest(
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


def test_the_persona_catches_up_on_what_was_said_while_it_was_down(
    world: World, tmp_path: Path
) -> None:
    """With the real engine: a question asked while the bridge was stopped is read back on the
    next start and answered once, in the room."""
    server = world.server
    bot, room = new_bot_and_room(world)
    state = tmp_path / "state"

    async def scenario() -> list[str]:
        clock = FakeClock()
        completer = ScriptedCompleter(lambda call: "sorry, I was out")
        store = Store(tmp_path / "s.db")
        first = make_bridge(world, WaitingHost(), state, account=bot)
        await first.start()
        await first.stop()
        async with Human(world) as human:
            await human.say(room, "Robin, are you there?")
        engine = PersonaEngine(_robin(), completer, store, clock, clock, random.Random(1))
        bridge = make_bridge(world, engine, state, account=bot)
        engine.attach(bridge)
        await bridge.start()
        await engine.start()
        try:
            answers: list[str] = []
            async with Human(world) as human:
                since = (await human.client.sync(timeout=0))["next_batch"]
                # The persona's clock moves on each time the room changes (typing, a message),
                # or after a second of real time while the homeserver works.
                for _ in range(100):
                    await clock.advance(5)
                    data = await human.client.sync(since=since, timeout=1000)
                    since = data["next_batch"]
                    timeline = data["rooms"].get("join", {}).get(room, {}).get("timeline", {})
                    answers += [
                        e["content"]["body"]
                        for e in timeline.get("events", [])
                        if e["sender"] == bot.user_id and e["type"] == "m.room.message"
                    ]
                    if answers:
                        break
                await clock.advance(60)
        finally:
            await engine.stop()
            await bridge.stop()
            store.close()
        return answers

    assert run(scenario()) == ["sorry, I was out"]
    assert _said_by(server, world.human, room, bot.user_id) == ["sorry, I was out"]


def _said_by(server: Synapse, reader: Account, room: str, sender: str) -> list[str]:
    return [
        e["content"]["body"]
        for e in room_messages(server, reader, room)
        if e["sender"] == sender and e["type"] == "m.room.message"
    ]


def test_display_name_and_avatar_come_from_the_persona(world: World, tmp_path: Path) -> None:
    """The account shows the persona's name and avatar; an unchanged avatar is not uploaded
    again on the next start."""
    bot, _ = new_bot_and_room(world)
    avatar = tmp_path / "robin.png"
    avatar.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

    async def start_once() -> str | None:
        bridge = make_bridge(world, WaitingHost(), tmp_path / "state", account=bot, avatar=avatar)
        await bridge.start()
        await bridge.stop()
        return bridge.session.state.avatar_sha256

    first = run(start_once())
    profile = api(world.server, bot.access_token, f"/profile/{bot.user_id}")
    assert profile["displayname"] == "Robin"
    assert str(profile["avatar_url"]).startswith("mxc://")
    assert run(start_once()) == first
    again = api(world.server, bot.access_token, f"/profile/{bot.user_id}")
    assert again["avatar_url"] == profile["avatar_url"]


def test_the_documented_config_is_valid() -> None:
    """The README's Matrix example (docs/matrix.md until it moves) validates as options."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    text = readme if "\n## Matrix\n" in readme else (root / "docs/matrix.md").read_text()
    section = text.split("\n## Matrix\n", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    table = tomllib.loads(block[1])["bridges"]["matrix"]
    options = MatrixOptions.model_validate(table)
    assert options.invites_from and options.user_id


def test_only_listed_rooms_are_read(world: World, tmp_path: Path) -> None:
    """With rooms set (here by alias), messages elsewhere never reach the persona."""
    server = world.server
    bot, listed = new_bot_and_room(world)
    other = create_room(server, world.human, [bot.user_id])
    join(server, bot, other)
    alias = f"#{unique('lobby')}:{bot.user_id.split(':', 1)[1]}"
    api(
        server,
        world.human.access_token,
        f"/directory/room/{quote(alias, safe='')}",
        "PUT",
        json={"room_id": listed},
    )

    async def scenario() -> WaitingHost:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path, account=bot, rooms=[alias])
        await bridge.start()
        try:
            async with Human(world) as human:
                await human.say(other, "not for you")
                await human.say(listed, "for you")
                await host.until(lambda: host.texts())
        finally:
            await bridge.stop()
        return host

    host = run(scenario())
    assert [(m.channel, m.text) for m in host.messages] == [(listed, "for you")]


def test_a_revoked_device_ends_the_bridge_and_logs_in_again_next_time(
    world: World, tmp_path: Path
) -> None:
    """When the device is logged out, the bridge ends (wait_closed returns); the next start
    logs in again with the password, on the same device id."""
    bot, _ = new_bot_and_room(world)

    async def scenario() -> tuple[str, str]:
        bridge = make_bridge(world, WaitingHost(), tmp_path, account=bot, password=True)
        await bridge.start()
        device = str(bridge.session.api.device_id)
        token = bridge.session.api.api.token
        async with httpx.AsyncClient() as http:
            out = await http.post(
                f"{world.server.url}/_matrix/client/v3/logout",
                headers={"Authorization": f"Bearer {token}"},
            )
            out.raise_for_status()
        await asyncio.wait_for(bridge.wait_closed(), 30)
        await bridge.stop()
        again = make_bridge(world, WaitingHost(), tmp_path, account=bot, password=True)
        await again.start()
        await again.stop()
        return device, str(again.session.api.device_id)

    before, after = run(scenario())
    assert before == after


# mautrix reads the sender_key field of Megolm events, which Matrix 1.3 deprecated, and warns.
@pytest.mark.filterwarnings("ignore:The sender_key field:DeprecationWarning")
def test_an_encrypted_dm_is_read_and_answered_encrypted(world: World, tmp_path: Path) -> None:
    """With encryption on, a message from an encrypting client reaches the persona decrypted,
    and its reply, encrypted, is read by that client, also after a restart of the bridge."""
    bot, room = new_bot_and_room(world, encrypted=True)

    async def one_exchange(human: EncryptedHuman, text: str, answer: str) -> tuple[str, str]:
        host = WaitingHost()
        bridge = make_bridge(world, host, tmp_path, account=bot, password=True, encryption=True)
        await bridge.start()
        try:
            sent = await human.say(room, text)
            event = await host.until(
                lambda: next((m for m in host.messages if m.message_id == sent), None), 30
            )
            await bridge.reply(room, sent, answer)
            got = await asyncio.wait_for(human.next_from(bot.user_id, room), 30)
        finally:
            await bridge.stop()
        return event.text, str(got.content.body)

    async def scenario() -> list[tuple[str, str]]:
        # The persona joins (accepting the invite) on its first start.
        first = make_bridge(
            world, WaitingHost(), tmp_path, account=bot, password=True, encryption=True
        )
        await first.start()
        await first.stop()
        async with EncryptedHuman(world) as human:
            return [
                await one_exchange(human, "Robin, a secret?", "a secret back"),
                await one_exchange(human, "and after a restart?", "still here"),
            ]

    assert run(scenario()) == [
        ("Robin, a secret?", "a secret back"),
        ("and after a restart?", "still here"),
    ]
    raw = room_messages(world.server, world.human, room)
    assert all(e["type"] != "m.room.message" for e in raw if e["sender"] == bot.user_id)
    assert stat.S_IMODE(os.stat(next(tmp_path.glob("*.crypto.db"))).st_mode) == 0o600
