"""Make the README's pictures of the web bridge (docs/img/chat.png, docs/img/dashboard.png).

Run from the repository root: ``PYTHONPATH=. .venv/bin/python docs/screenshots.py``. It
serves the current code (a scripted model, Robin's real engine, the real page) on loopback
and photographs it in Debian's headless Chromium.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from daemon.testing import scripted_loader
from tests.bridges.test_web_browser import ARGS, CHROMIUM
from tests.bridges.web_site import web_site
from tests.conftest import make_settings

OUT = Path(__file__).with_name("img")
REPLIES = iter(["hey Alex!\nhow was the hike?", "haha, send pics", "see you tomorrow then"])


def reply(prompt: str) -> str:
    return next(REPLIES, "lol")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), {"port": 0})
        with web_site(settings, Path(tmp), scripted_loader(reply)) as site, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 760, "height": 520})
            page.goto(site.url)
            page.fill("#name", "Alex")
            page.press("#name", "Enter")
            for text, wait in (
                ("hi Robin! just got back from the hike", 2),
                ("it was muddy but the view was worth it", 3),
            ):
                page.fill("#text", text)
                page.press("#text", "Enter")
                expect(page.locator("li.msg.mine")).to_have_count(wait, timeout=30_000)
            page.screenshot(path=str(OUT / "chat.png"))
            body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}
            httpx.post(f"{site.base}/v1/chat/completions", json=body, timeout=30)
            page.set_viewport_size({"width": 1100, "height": 640})
            page.goto(f"{site.base}/dashboard")
            expect(page.locator("article.persona")).to_be_visible()
            page.screenshot(path=str(OUT / "dashboard.png"))
            browser.close()
    print(f"wrote {OUT / 'chat.png'} and {OUT / 'dashboard.png'}")


if __name__ == "__main__":
    main()
