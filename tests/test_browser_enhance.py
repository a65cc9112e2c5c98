"""The prompt enhancer in a real browser (issue 14, in the chat): the "Enhance" toggle is remembered per browser (the
Generate and Edit tabs' too); an enhanced message streams its rewrite into the conversation, then its image is made;
the turn keeps the rewrite in a collapsed "Enhanced prompt" block whose "Edit and redraw" makes a new version from
the edited text; "Enhance only" puts a rewrite in the message box; Stop during a rewrite gives the words back; a failed
rewrite is one line and the image is still made (also once only in the Generate tab).

The local enhancer runs in the app the browser tests share (tests/conftest.py: the tiny model, whose rewrites are
deterministic gibberish, so the tests compare with what was stored); the endpoint cases run a second app whose
enhancer is a chat-completions server in this module, streaming slowly or failing as a test asks.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from appserver import AppProcess
from test_browser import ARTIFACTS, DESK, box, conversation, open_page, send, toast, wait_results

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REWRITE = "A red fox curled asleep in fresh snow at dawn, soft golden light"
FIRST = "a sleepy fox, enhanced"  # the first prompt of this module's conversation (the app is shared: unique)


@pytest.fixture(scope="module")
def page(chromium, browser_app):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(chromium, browser_app)
    yield page
    page.context.close()


def enhanced_block(page, n: int = 1):
    """The n-th "Enhanced prompt" block of the conversation (Gradio's collapsible thought)."""
    return page.locator("#qic-chat .thought-group", has_text="Enhanced prompt").nth(n - 1)


def test_the_toggle_is_remembered_and_a_message_is_enhanced_then_drawn(page, browser_app):
    toggle = page.locator("#qic-enhance input[type=checkbox]")
    assert toggle.is_visible() and not toggle.is_checked()  # off by default
    kept = "() => localStorage.getItem('qwen-image-chat-enhance')"
    before = page.evaluate(kept)
    toggle.check()
    page.wait_for_function(f"(before) => ({kept})() !== before", arg=before)
    page.locator("button[role=tab]", has_text="Generate").click()
    before = page.evaluate(kept)
    page.locator("#qic-gen-enhance input").check()  # the Generate tab's own toggle
    page.wait_for_function(f"(before) => ({kept})() !== before", arg=before)
    page.reload(wait_until="domcontentloaded")
    page.locator("#qic-chip .qic-chip").wait_for()
    page.wait_for_function("() => document.querySelector('#qic-enhance input').checked")
    page.locator("button[role=tab]", has_text="Generate").click()
    assert page.locator("#qic-gen-enhance input").is_checked()
    page.locator("button[role=tab]", has_text="Edit").click()
    assert not page.locator("#qic-edit-enhance input").is_checked()
    page.locator("button[role=tab]", has_text="Chat").click()

    send(page, FIRST)
    # the rewrite streams into the conversation first: an open block and the pending bubble (with Stop)
    page.locator("#qic-chat .thought-group", has_text="Enhancing the prompt").wait_for()
    page.locator("#qic-chat .qic-pending button.qic-stop").wait_for()
    wait_results(page, 1)
    turn = conversation(browser_app, FIRST).turns[0]
    assert turn.settings["original_prompt"] == FIRST and turn.settings["prompt"] != FIRST
    block = enhanced_block(page)
    text = page.locator("#qic-chat .qic-rewrite-text").first
    assert block.is_visible() and not text.is_visible()  # collapsed: one click away
    block.locator(".title").click()
    text.wait_for()
    page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")  # fully open
    page.locator("#qic-chat .qic-user").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "chat-enhanced.png"))
    assert " ".join(text.inner_text().split()) == " ".join(turn.settings["prompt"].split())
    assert page.locator("#qic-chat .qic-user .qic-prompt").first.inner_text() == FIRST  # the user's words


def test_edit_the_enhanced_prompt_and_redraw_makes_a_new_version(page, browser_app):
    enhanced_block(page).locator("button.qic-act[name=rerun]").click()
    page.locator("#qic-redo .qic-chip", has_text="new version of #1").wait_for()
    stored = conversation(browser_app, FIRST).turns[0].settings["prompt"]
    page.wait_for_function("(t) => document.querySelector('#qic-msg textarea').value === t", arg=stored)
    box(page).fill("a fox drawn exactly as written")
    box(page).press("Enter")
    page.locator("#qic-chat .qic-result").last.locator(".qic-vcount", has_text="2/2").wait_for()
    wait_results(page, 1)
    assert page.locator("#qic-redo .qic-chip").count() == 0  # sent: the chip has gone
    turn = conversation(browser_app, FIRST).turns[0]
    assert (turn.version, turn.versions) == (2, 2)
    assert turn.settings["prompt"] == "a fox drawn exactly as written"
    assert turn.settings["original_prompt"] == FIRST  # the user's words stay with every version


def test_enhance_only_puts_a_rewrite_in_the_box_to_send_as_written(page, browser_app):
    page.locator("#qic-enhance input").uncheck()
    box(page).fill("make it night")
    page.locator("#qic-enhance-only").click()
    page.locator("#qic-redo .qic-chip", has_text="Enhanced from “make it night”").wait_for()
    rewrite = box(page).input_value()
    assert rewrite.strip() and rewrite != "make it night"
    assert page.locator("#qic-chat .qic-result").count() == 1  # nothing drawn yet
    box(page).press("Enter")
    wait_results(page, 2)
    turn = conversation(browser_app, FIRST).turns[1]
    assert turn.prompt == "make it night" and turn.settings["original_prompt"] == "make it night"
    assert " ".join(turn.settings["prompt"].split()) == " ".join(rewrite.split())
    assert enhanced_block(page, 2).is_visible()


# -- an endpoint enhancer: streaming, and failing -------------------------------------------------------------------


class Endpoint(BaseHTTPRequestHandler):
    """A chat-completions server: streams REWRITE slowly (mode "stream") or answers HTTP 500 (mode "fail")."""

    mode = "stream"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if Endpoint.mode == "fail":
            self.send_response(500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        answer = json.dumps({"rewritten_prompt": REWRITE, "wh_ratio": "1:1"})
        for i in range(0, len(answer), 6):
            event = {"choices": [{"delta": {"content": answer[i : i + 6]}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.2)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def endpoint_app(tmp_path_factory):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    data = tmp_path_factory.mktemp("browser-endpoint") / "data"
    app = AppProcess(data, ["--enhancer-url", url, "--enhancer-model", "pe", "--enhancer-timeout", "30"]).start()
    yield app
    app.stop()
    httpd.shutdown()
    httpd.server_close()


def test_an_endpoint_rewrite_streams_and_a_failed_one_is_one_line(chromium, endpoint_app):
    page = open_page(chromium, endpoint_app, DESK)
    try:
        page.locator("#qic-enhance input").check()
        Endpoint.mode = "stream"
        send(page, "a fox, enhanced by an endpoint")
        streaming = page.locator("#qic-chat .thought-group", has_text="Enhancing the prompt")
        streaming.locator(".qic-rewrite-text", has_text="A red fox").wait_for()  # part of it, while it is written
        wait_results(page, 1)
        assert conversation(endpoint_app, "a fox, enhanced by an endpoint").turns[0].settings["prompt"] == REWRITE

        # Stop while it is written: no turn, and the words are back in the box
        send(page, "a lake at noon")
        streaming.locator(".qic-rewrite-text", has_text="A red").wait_for()
        page.locator("#qic-chat .qic-pending button.qic-stop").click()
        page.wait_for_function("() => document.querySelector('#qic-msg textarea').value === 'a lake at noon'")
        assert page.locator("#qic-chat .qic-pending").count() == 0 and page.locator("#qic-chat .qic-user").count() == 1
        box(page).fill("")

        Endpoint.mode = "fail"
        send(page, "make it blue")
        wait_results(page, 2)  # the image is still made, from the words as written
        toast(page, "Prompt not enhanced")
        turn = conversation(endpoint_app, "a fox, enhanced by an endpoint").turns[1]
        assert turn.settings["prompt"] == "make it blue" and "original_prompt" not in turn.settings
        assert page.locator("#qic-chat .thought-group", has_text="Enhanced prompt").count() == 1  # turn 1's only
        notes = page.locator("[data-testid='toast-body']", has_text="Prompt not enhanced")
        assert notes.count() == 1 and "HTTP 500" in notes.inner_text()

        # the Generate tab says it once too (it used to warn when the job started and again when it ended)
        for close in page.locator("[data-testid='toast-close']").all():
            close.click()
        page.locator("[data-testid='toast-body']").first.wait_for(state="detached")
        page.locator("button[role=tab]", has_text="Generate").click()
        page.locator("#qic-gen-enhance input").check()
        page.locator("#qic-gen-prompt textarea").fill("a green hill")
        page.locator("#qic-gen-run").click()
        page.locator("#qic-gen-info", has_text="saved in the conversation list").wait_for()
        assert "Prompt not enhanced" in page.locator("#qic-gen-info").inner_text()
        assert page.locator("[data-testid='toast-body']", has_text="Prompt not enhanced").count() == 1
    finally:
        page.context.close()
