"""The endpoint enhancer against a real chat-completions server on localhost: success (streamed and whole), and
the failures (timeout, HTTP 500, malformed JSON, nobody listening) each leave the prompt as written with one line;
a turn whose enhancer fails still makes its image."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from test_turns import OWNER, SPEC, StandIn

from conversations.jobs import JobManager
from conversations.store import Store
from conversations.turns import Enhance, TurnService
from qwen_image.backend import Cancelled
from qwen_image.enhance import Enhancer, load_config, task_for
from qwen_image.enhance.endpoint import Endpoint, EndpointEnhancer
from qwen_image.generation import GenerationRequest

ANSWER = (
    '<think>a wide scene</think>{"rewritten_prompt": "A red fox curled in fresh snow at dawn", "wh_ratio": "17:10"}'
)


class Handler(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append((self.path, dict(self.headers), body))
        mode = self.path.split("/")[1]
        if mode == "stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(0, len(ANSWER), 9):
                event = {"choices": [{"delta": {"content": ANSWER[i : i + 9]}}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        elif mode == "whole":
            self._send(200, json.dumps({"choices": [{"message": {"content": ANSWER}}]}).encode())
        elif mode == "slow":
            time.sleep(2.0)
            self._send(200, b"{}")
        elif mode == "error":
            self._send(500, b'{"error": "boom"}')
        elif mode == "malformed":
            self._send(200, b'{"choices": [{"message": ')

    def do_GET(self):  # /models
        self._send(200, json.dumps({"data": [{"id": "served-pe"}]}).encode())


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # the client gave up on the slow answer: expected
        pass


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def enhancer(url: str, **endpoint) -> EndpointEnhancer:
    config = load_config()
    quick = replace(config.endpoint, read_timeout=0.5, connect_timeout=0.5, total_timeout=5.0)
    return EndpointEnhancer(Endpoint(url, **endpoint), replace(config, endpoint=quick))


TASK = task_for(GenerationRequest(prompt="a red fox"), SPEC)


@pytest.mark.parametrize("mode", ["stream", "whole"])
def test_a_rewrite_and_its_ratio_come_back(server, mode):
    parts: list[str] = []
    Handler.seen.clear()
    result = enhancer(f"{server}/{mode}/v1", model="pe-t2i", key="secret").enhance(TASK, on_text=parts.append)
    assert result.prompt == "A red fox curled in fresh snow at dawn" and not result.note
    assert result.ratio == "16:9"  # 17:10 is not offered: the nearest shape that is
    assert parts[-1] == result.prompt and (mode == "whole" or len(parts) > 2)  # streamed piece by piece
    path, headers, body = Handler.seen[-1]
    assert path == f"/{mode}/v1/chat/completions" and headers["Authorization"] == "Bearer secret"
    assert body["model"] == "pe-t2i" and body["messages"][1]["content"] == "a red fox"
    assert "wh_ratio" in body["messages"][0]["content"] and "16:9" in body["messages"][0]["content"]


def test_edit_sends_the_images_and_the_served_model(server):
    Handler.seen.clear()
    task = task_for(GenerationRequest(prompt="make it blue"), SPEC, [Image.new("RGB", (40, 30), "red")])
    assert enhancer(f"{server}/stream/v1").enhance(task).changed
    _, _, body = Handler.seen[-1]
    assert body["model"] == "served-pe"  # none given: the server's first model
    image, text = body["messages"][1]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,") and text["text"] == "make it blue"
    assert "<image1>" in body["messages"][0]["content"]


@pytest.mark.parametrize(
    "mode, reason",
    [("slow", "in time"), ("error", "HTTP 500"), ("malformed", "malformed JSON"), (None, "could not reach")],
)
def test_failures_leave_the_prompt_as_written_with_one_line(server, mode, reason):
    url = f"{server}/{mode}/v1" if mode else "http://127.0.0.1:9/v1"
    result = enhancer(url, model="m").enhance(TASK)
    assert result.prompt == "a red fox" and not result.changed
    assert reason in result.note and result.note.startswith("Prompt not enhanced") and "\n" not in result.note


def test_a_turn_whose_enhancer_fails_still_makes_its_image(server, tmp_path):
    store = Store(tmp_path)
    store.ensure_owner(OWNER)
    backend = StandIn()
    jobs = JobManager(backend, store)
    turns = TurnService(backend, store, jobs, enhancer=enhancer(f"{server}/error/v1", model="m"))
    try:
        snap = turns.start(OWNER, None, GenerationRequest(prompt="a red fox"), enhance=Enhance())
        assert len(snap.notes) == 1 and "HTTP 500" in snap.notes[0]
        *_, last = jobs.watch(OWNER, snap.id)
        turn = store.get_turn(OWNER, snap.turn_id)
        assert last.state == "done" and turn.outputs and "HTTP 500" in last.notes[0]
        assert turn.settings["prompt"] == "a red fox" and "original_prompt" not in turn.settings
    finally:
        jobs.shutdown()
        store.close()


class Waiting(Enhancer):
    """Writes nothing until stopped."""

    name = "waiting"

    def _generate(self, task, report, cancel):
        report('{"rewritten_prompt": "A red')
        cancel.wait(10)
        return "", 0


def test_stop_ends_a_rewrite_and_nothing_is_stored(tmp_path):
    store = Store(tmp_path)
    store.ensure_owner(OWNER)
    jobs = JobManager(StandIn(), store)
    turns = TurnService(jobs.backend, store, jobs, enhancer=Waiting())
    seen, outcome = [], []

    def start():
        try:
            turns.start(OWNER, None, GenerationRequest(prompt="a red fox"), enhance=Enhance(on_text=seen.append))
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["A red"] and turns.stop_enhancing(OWNER) == 1
    thread.join(10)
    try:
        assert outcome == ["cancelled"] and store.list_conversations(OWNER) == []
        assert turns.stop_enhancing(OWNER) == 0
    finally:
        jobs.shutdown()
        store.close()
