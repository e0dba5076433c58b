"""The web bridge without a browser: the shared contract, rooms, names, limits and invites."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridges import Bridge, BridgeHost
from bridges.testing import BridgeContract, FakeClock, FakeHost
from bridges.web import BadName, InviteBook, UnknownInvite, Visitor, WebBridge, WebOptions
from bridges.web._room import Room


def _bridge(host: BridgeHost, **options: object) -> WebBridge:
    return WebBridge(WebOptions.model_validate(options), host, persona="Robin", clock=FakeClock())


class TestWebBridgeContract(BridgeContract):
    channel = "web"

    def make_bridge(self, host: BridgeHost) -> Bridge:
        return _bridge(host)

    async def deliver(self, bridge: Bridge, text: str) -> None:
        assert isinstance(bridge, WebBridge)
        session = bridge.room.join(Visitor("open"), "Alex", "tab-1")
        await bridge.post(session, text)

    def sent(self, bridge: Bridge) -> list[str]:
        assert isinstance(bridge, WebBridge)
        return [f["text"] for f in bridge.history() if f["mine"]]


def _drain(queue: asyncio.Queue[dict[str, object] | None]) -> list[dict[str, object]]:
    out = []
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            out.append(item)
    return out


def test_every_page_sees_the_room() -> None:
    """Two pages in a room both get a visitor's message, the persona's burst as separate
    bubbles, its reply quoting the message, its reaction and its typing."""

    async def main() -> None:
        host = FakeHost()
        bridge = _bridge(host)
        await bridge.start()
        alex = bridge.room.join(Visitor("open"), "Alex", "tab-a")
        sam = bridge.room.join(Visitor("open"), "Sam", "tab-b")
        mid = await bridge.post(alex, "hi robin")
        await bridge.typing("web")
        await bridge.send("web", "hey!")
        await bridge.send("web", "how are you")
        await bridge.reply("web", mid, "good to see you")
        await bridge.react("web", mid, "👋")
        for session in (alex, sam):
            frames = _drain(session.outbox)
            kinds = [f["type"] for f in frames]
            assert kinds == ["message", "typing", "message", "message", "message", "reaction"]
            texts = [f["text"] for f in frames if f["type"] == "message"]
            assert texts == ["hi robin", "hey!", "how are you", "good to see you"]
            assert frames[4]["reply_to"] == {"id": mid, "author": "Alex", "text": "hi robin"}
        event = host.messages[-1]
        assert (event.author.id, event.author.name, event.channel) == ("web:alex", "Alex", "web")
        await bridge.stop()

    asyncio.run(main())


def test_a_reply_to_the_persona_addresses_it() -> None:
    """A visitor replying to the persona's bubble reports the persona as the replied author."""

    async def main() -> None:
        host = FakeHost()
        bridge = _bridge(host)
        await bridge.start()
        alex = bridge.room.join(Visitor("open"), "Alex", "tab-a")
        pid = await bridge.send("web", "anyone around?")
        await bridge.post(alex, "me!", reply_to=pid)
        event = host.messages[-1]
        assert event.reply_to == pid
        assert event.reply_to_author == bridge.me

    asyncio.run(main())


def test_names_are_unique_and_never_the_personas() -> None:
    """A display name taken by another visitor, the persona's name or an empty one is refused
    with the reason; the same visitor's second tab may use its name."""
    room = Room("Robin", WebOptions())
    room.join(Visitor("open"), "Alex", "tab-a")
    room.join(Visitor("open"), "alex", "tab-a")
    with pytest.raises(BadName, match="taken"):
        room.join(Visitor("open"), "ALEX", "tab-b")
    with pytest.raises(BadName, match="persona's own"):
        room.join(Visitor("open"), "robin", "tab-c")
    with pytest.raises(BadName, match="empty"):
        room.join(Visitor("open"), "  ", "tab-c")
    with pytest.raises(BadName, match="not allowed"):
        room.join(Visitor("open"), "<script>", "tab-c")
    # An invite's name is the visitor's identity, whatever they type.
    assert room.join(Visitor("invite", "Jo", "t"), "Alex", "tab-d").name == "Jo"


def test_rate_limit_refills_over_time() -> None:
    """A visitor gets rate_per_minute messages at once, then one more per 60/rate seconds."""
    now = [0.0]
    room = Room("Robin", WebOptions(rate_per_minute=3), monotonic=lambda: now[0])
    session = room.join(Visitor("open"), "Alex", "t")
    assert [room.allow(session) for _ in range(4)] == [True, True, True, False]
    now[0] += 20
    assert room.allow(session) and not room.allow(session)


def test_a_full_room_refuses() -> None:
    """Past max_visitors, a page is told the room is full."""
    room = Room("Robin", WebOptions(max_visitors=1))
    room.join(Visitor("open"), "Alex", "a")
    with pytest.raises(BadName, match="full"):
        room.join(Visitor("open"), "Sam", "b")


def test_presence_says_why_and_until_when() -> None:
    """An offline persona shows its reason and when it expects to be back."""
    from datetime import UTC, datetime

    from bridges import PersonaEvent

    async def main() -> None:
        bridge = _bridge(FakeHost())
        await bridge.start()
        page = bridge.room.join(Visitor("open"), "Alex", "t")
        until = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
        at = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
        await bridge.persona_event(
            PersonaEvent("presence", "Robin", at, "offline", "asleep", until)
        )
        frame = _drain(page.outbox)[-1]
        assert frame["label"] == "asleep · back around 07:00"
        assert bridge.hello(page)["presence"] == frame

    asyncio.run(main())


def test_invites_are_stored_hashed_and_revocable(tmp_path: Path) -> None:
    """An invite's token finds its name until revoked; the file never holds the token."""
    book = InviteBook(tmp_path / "invites.db")
    token = book.create("Jo", "Robin")
    assert book.holder(token) == "Jo"
    assert token.encode() not in (tmp_path / "invites.db").read_bytes()
    again = book.create("jo", "Robin")
    assert book.holder(token) is None and book.holder(again) == "Jo"
    book.revoke("Jo")
    assert book.holder(again) is None
    with pytest.raises(UnknownInvite, match="no invite named 'Jo'"):
        book.revoke("Jo")
    with pytest.raises(BadName, match="persona's own"):
        book.create("Robin", "Robin")
    book.close()
