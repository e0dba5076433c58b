"""The web bridge in a real browser: Debian's Chromium driven by playwright, on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridges.web import InviteBook, invites_path
from daemon.testing import scripted_loader
from tests.bridges.web_site import web_site
from tests.conftest import make_settings

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Nothing but loopback: every other host name resolves to nothing.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's package (.ci/provision installs it)."""
    if not CHROMIUM.exists():
        # The test command provisions it; a missing browser must not pass as a skip.
        pytest.fail("Debian's chromium is not installed here: run .ci/provision")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies, no storage) whose requests stay on loopback."""
    context = browser.new_context()

    def loopback_only(route: Any) -> None:
        host = route.request.url.split("/")[2].split(":")[0]
        route.continue_() if host == "127.0.0.1" else route.abort()

    context.route("**/*", loopback_only)
    yield context.new_page()
    context.close()


async def _paused(engine: Any) -> bool:
    return bool(engine.state.paused)


def _reply(prompt: str) -> str:
    if "pwned" in prompt:
        return '<img src=x onerror="window.pwned=3">'
    return "hey Alex!\nhow was the hike?"


def _settings(tmp_path: Path, **server: Any) -> Any:
    settings = make_settings(tmp_path, {"port": 0, **server})
    return settings.model_copy(update={"bridges": {"web": {"invite_check_seconds": 0.2}}})


def _join(page: Any, url: str, name: str = "Alex") -> None:
    page.goto(url)
    page.fill("#name", name)
    page.press("#name", "Enter")
    expect(page.locator("#text")).to_be_focused()


def _say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_message_typing_then_a_burst_of_bubbles_and_history_after_reload(
    tmp_path: Path, page: Any
) -> None:
    """Enter sends; the typing indicator shows, then the reply arrives as separate bubbles;
    focus stays in the input; a reload shows the same history from the store."""
    with web_site(_settings(tmp_path), tmp_path, scripted_loader(_reply)) as site:
        _join(page, site.url)
        _say(page, "hi Robin! how was your day?")
        expect(page.locator("li.msg.you")).to_have_text("Alexhi Robin! how was your day?reply")
        expect(page.locator("#typing")).to_have_text("Robin is typing…", timeout=20_000)
        mine = page.locator("li.msg.mine .text")
        expect(mine).to_have_text(["hey Alex!", "how was the hike?"], timeout=20_000)
        expect(page.locator("#typing")).to_be_hidden()
        expect(page.locator("#text")).to_be_focused()
        assert page.get_attribute("#messages", "aria-live") == "polite"
        page.reload()
        expect(page.locator("li.msg .text")).to_have_text(
            ["hi Robin! how was your day?", "hey Alex!", "how was the hike?"]
        )


def test_markup_from_a_visitor_or_the_model_stays_text(tmp_path: Path, page: Any) -> None:
    """A visitor's <script> and the model's <img onerror> show as text and never run."""
    with web_site(_settings(tmp_path), tmp_path, scripted_loader(_reply)) as site:
        _join(page, site.url)
        attack = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
        _say(page, attack)
        expect(page.locator("li.msg.you .text")).to_have_text(attack)
        expect(page.locator("li.msg.mine .text")).to_have_text(
            '<img src=x onerror="window.pwned=3">', timeout=20_000
        )
        assert page.evaluate("window.pwned") is None
        assert page.locator("#messages img, #messages script").count() == 0


def test_presence_follows_the_personas_clock(tmp_path: Path, page: Any) -> None:
    """When the test moves Robin's clock past 23:00 the page shows it asleep until 07:00."""
    with web_site(_settings(tmp_path), tmp_path, scripted_loader(_reply)) as site:
        _join(page, site.url)
        expect(page.locator("#presence")).to_have_text("Robin is online")
        site.call(site.clock.advance(4 * 3600 + 60))
        expect(page.locator("#presence")).to_have_text(
            "Robin is asleep · back around 07:00", timeout=10_000
        )
        page.reload()
        expect(page.locator("#presence")).to_have_text("Robin is asleep · back around 07:00")


def test_off_loopback_the_page_needs_the_key_or_an_invite(tmp_path: Path, page: Any) -> None:
    """Bound beyond loopback, the page refuses without the key; the key or an invite opens
    it; revoking the invite ends the live page."""
    settings = _settings(tmp_path, host="0.0.0.0", api_key="s3cret-key")
    with web_site(settings, tmp_path, scripted_loader(_reply)) as site:
        url = site.url.replace("0.0.0.0", "127.0.0.1")
        response = page.goto(url)
        assert response.status == 401
        expect(page.locator("h1")).to_have_text("This chat needs an invite")
        book = InviteBook(invites_path(settings))
        token = book.create("Jo", "Robin")
        page.goto(f"{url}?invite={token}")
        assert "invite=" not in page.url  # the secret left the address bar
        expect(page.locator("#text")).to_be_focused()
        _say(page, "hello from Jo")
        expect(page.locator("li.msg.you .author")).to_have_text("Jo")
        book.revoke("Jo")
        book.close()
        expect(page.locator("#closed")).to_have_text("your invite was revoked", timeout=10_000)
        page.goto(url)
        assert page.locator("h1").inner_text() == "This chat needs an invite"
        page.goto(f"{url}?key=s3cret-key")
        assert "key=" not in page.url
        expect(page.locator("#send-form")).to_be_visible()


def test_a_foreign_origin_cannot_open_the_socket(tmp_path: Path) -> None:
    """A WebSocket upgrade from another site's page is refused before it is accepted."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with web_site(_settings(tmp_path), tmp_path, scripted_loader(_reply)) as site:
        ws_url = site.url.replace("http://", "ws://") + "ws"
        with pytest.raises(InvalidStatus), connect(ws_url, origin="http://evil.example"):
            pass
        with connect(ws_url, origin=site.base) as ws:
            ws.send('{"type": "hello", "name": "Alex"}')
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"


def test_dashboard_shows_the_queue_and_the_next_event(tmp_path: Path, page: Any) -> None:
    """With one generation running and one queued, /dashboard shows the queue, the request in
    flight and Robin's next event; its Pause button pauses Robin."""
    gate = threading.Event()
    settings = _settings(tmp_path)
    with web_site(settings, tmp_path, scripted_loader(_reply, gate=gate)) as site:
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}
        calls = [
            threading.Thread(
                target=httpx.post,
                args=(f"{site.base}/v1/chat/completions",),
                kwargs={"json": body, "timeout": 60},
            )
            for _ in range(2)
        ]
        for call in calls:
            call.start()
        try:
            page.goto(f"{site.base}/dashboard")
            expect(page.locator("#queue")).to_have_text("1", timeout=10_000)
            expect(page.locator("#in-flight")).to_have_text("1")
            card = page.locator("article.persona", has_text="Robin")
            expect(card.locator("li", has_text="Mon 23:00 goes to sleep")).to_be_visible()
            card.get_by_role("button", name="Pause").click()
            expect(card.locator(".state")).to_have_text("offline (paused)", timeout=10_000)
            assert site.call(_paused(site.engine))
        finally:
            gate.set()
            for call in calls:
                call.join(30)
