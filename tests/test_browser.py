"""A real browser (Debian's Chromium driven by Playwright) chats with the app: generate, then edit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urljoin

import pytest
from appserver import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
ARTIFACTS = Path(os.environ.get("QIC_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (scripts/test.sh installs it; or set CHROMIUM to its path)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def send(page, text: str) -> None:
    box = page.locator("#qic-chat textarea").first
    box.click()
    box.fill(text)
    box.press("Enter")


def chat_images(page):
    return page.locator("#qic-chat [data-testid='bot'] img, #qic-chat .bot img")


def test_chat_generate_then_edit_in_browser(browser, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_app(tmp_path / "data") as app:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app.url, wait_until="domcontentloaded")
        page.get_by_text("Demo model").first.wait_for(timeout=60_000)
        page.get_by_text("ready in").first.wait_for(timeout=120_000)

        send(page, "a red fox sitting in the snow")
        page.get_by_text("#1").first.wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('#qic-chat img').length >= 1", timeout=60_000)
        send(page, "make the fox blue")
        page.get_by_text("#2").first.wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('#qic-chat img').length >= 2", timeout=60_000)
        shot = ARTIFACTS / "chat-two-turns.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # the full-resolution PNG, with its settings, is linked from the turn's bubble
        href = page.locator("#qic-chat a", has_text="PNG").last.get_attribute("href")
        png = page.request.get(urljoin(page.url, href))
        assert png.ok and png.body().startswith(b"\x89PNG") and b"parameters" in png.body()

        # the chat's own icons: retry runs the last turn again as #3, undo removes it
        page.locator("#qic-chat button[aria-label='Retry']").last.click()
        page.get_by_text("#3").first.wait_for(timeout=120_000)
        page.locator("#qic-chat button[aria-label='Undo']").last.click()
        page.get_by_text("#3").first.wait_for(state="detached", timeout=60_000)

        # a reload shows the same conversation again (it lives on the server)
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("#2").first.wait_for(timeout=60_000)
        assert page.get_by_text("#3").count() == 0

        # on a phone the conversation comes first, above the list of conversations
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)
        chat_box, side_box = (page.locator(sel).bounding_box() for sel in ("#qic-chat", "#qic-sidebar"))
        assert chat_box["y"] + chat_box["height"] <= side_box["y"] + 1
        page.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
        page.close()


def test_reload_during_a_job_and_restart_keep_everything(browser, tmp_path):
    """The job belongs to the server: a reload mid-job shows its result; a restarted server shows the history."""
    from appserver import AppProcess

    data = tmp_path / "data"
    app = AppProcess(data, env={"QIC_STEP_DELAY": "1.5"}).start()  # 4 steps: ~6 s of denoising
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(app.url, wait_until="domcontentloaded")
        page.get_by_text("ready in").first.wait_for(timeout=120_000)
        send(page, "a lighthouse in a storm")
        page.get_by_text("Step").first.wait_for(timeout=60_000)  # the job is denoising
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("Step").first.wait_for(timeout=30_000)  # the running job's progress shows again
        page.get_by_text("· seed").first.wait_for(timeout=120_000)  # and its result arrives after the reload
        page.wait_for_function("() => document.querySelectorAll('#qic-chat img').length >= 1", timeout=60_000)
    finally:
        app.stop()
    app = AppProcess(data, port=app.port).start()  # same folder and port: the page reconnects
    try:
        page.goto(app.url, wait_until="domcontentloaded")
        page.get_by_text("a lighthouse in a storm").first.wait_for(timeout=60_000)
        page.get_by_text("#1").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "after-restart.png"), full_page=True)
    finally:
        context.close()
        app.stop()
