"""Chat messages rewritten in the background before their turn starts (conversations/rewrites.py, TurnService
.chat_rewritten): the text streams, the turn starts with both prompts, Stop and refusals leave nothing behind, one
message at a time per conversation, and finished rewrites are forgotten."""

from __future__ import annotations

import threading
import time

import pytest
from test_turns import OWNER, SPEC, running_service

from conversations.rewrites import FAILED, STARTED, STOPPED, Rewrites
from conversations.settings import TurnSettings
from conversations.turns import BUSY_HERE
from qwen_image.enhance import Enhancer
from qwen_image.generation import ValidationError

REWRITE = "A red fox curled in fresh snow at dawn"


class Slow(Enhancer):
    """Streams a fixed answer a word at a time; waits at ``gate`` (when set) after the first word."""

    name = "slow"

    def __init__(self):
        super().__init__()
        self.gate: threading.Event | None = None

    def _generate(self, task, report, cancel):
        answer = ""
        for i, word in enumerate(REWRITE.split()):
            answer += ("" if i == 0 else " ") + word
            report(f'{{"rewritten_prompt": "{answer}')
            if i == 0 and self.gate is not None:
                while not self.gate.wait(0.02):
                    if cancel.is_set():
                        return answer, i
        return f'{{"rewritten_prompt": "{answer}"}}', 9


@pytest.fixture
def service(tmp_path):
    yield from running_service(tmp_path, Slow())


def ended(service, rewrite, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = service.rewrites.get(OWNER, rewrite.id)
        if r.finished:
            return r
        time.sleep(0.01)
    raise AssertionError("the rewrite did not end")


def request(prompt="a red fox"):
    return TurnSettings.defaults(SPEC).request(SPEC, prompt)


def test_a_rewritten_message_streams_then_starts_its_turn_with_both_prompts(service):
    service.enhancer.gate = threading.Event()
    rewrite = service.chat_rewritten(OWNER, None, request())
    conv = rewrite.conversation_id
    assert service.store.get_conversation(OWNER, conv) is not None  # placed at once: the page shows it there
    deadline = time.monotonic() + 10
    while service.rewrites.get(OWNER, rewrite.id).text != "A" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.id for r in service.rewrites.active(OWNER, conv)] == [rewrite.id]
    assert service.rewrites.get(OWNER, rewrite.id).text == "A"  # the text so far
    with pytest.raises(ValidationError, match="still being made"):  # one message at a time in a conversation
        service.chat(OWNER, conv, request("another"))
    service.enhancer.gate.set()
    done = ended(service, rewrite)
    assert done.state == STARTED and service.rewrites.active(OWNER) == []
    *_, last = service.jobs.watch(OWNER, done.job_id)
    turn = service.store.get_turn(OWNER, last.turn_id)
    assert last.state == "done" and turn.conversation_id == conv and turn.prompt == "a red fox"
    assert turn.settings["prompt"] == REWRITE and turn.settings["original_prompt"] == "a red fox"


def test_stop_before_the_turn_leaves_no_conversation_and_keeps_the_words(service):
    service.enhancer.gate = threading.Event()
    rewrite = service.chat_rewritten(OWNER, None, request("a quiet lake"))
    assert service.rewrites.stop(OWNER, conversation_id="elsewhere") == 0
    assert service.rewrites.stop(OWNER, rewrite.id) == 1
    done = ended(service, rewrite)
    assert done.state == STOPPED and done.prompt == "a quiet lake" and done.job_id is None
    assert service.store.list_conversations(OWNER) == []


def test_a_stop_elsewhere_leaves_a_chat_rewrite_running(service):
    """Stop in the Generate tab, or in another conversation's box (stop_enhancing), does not reach a chat message's
    rewrite: only its own conversation's Stop or its bubble's does."""
    service.enhancer.gate = threading.Event()
    rewrite = service.chat_rewritten(OWNER, None, request("a quiet lake"))
    deadline = time.monotonic() + 10
    while service.rewrites.get(OWNER, rewrite.id).text != "A" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.stop_enhancing(OWNER) == 0
    service.enhancer.gate.set()
    assert ended(service, rewrite).state == STARTED


def test_a_message_refused_after_its_rewrite_keeps_its_words_and_an_existing_conversation(service):
    first = service.chat(OWNER, None, request())
    *_, _ = service.jobs.watch(OWNER, first.id)
    conv = first.conversation_id
    service.enhancer.gate = threading.Event()
    rewrite = service.chat_rewritten(OWNER, conv, request("make it blue"))
    service.jobs.max_queue = 0  # the queue is full by the time the rewrite is done
    service.enhancer.gate.set()
    done = ended(service, rewrite)
    assert done.state == FAILED and done.error and done.prompt == "make it blue"
    assert len(service.store.get_conversation(OWNER, conv).turns) == 1  # the conversation and its turn stay


def test_a_message_invalid_as_written_is_refused_before_any_rewrite(service):
    with pytest.raises(ValidationError):
        service.chat_rewritten(OWNER, None, request(""))
    running = service.chat(OWNER, None, request())
    with pytest.raises(ValidationError, match=BUSY_HERE[:30]):
        service.chat_rewritten(OWNER, running.conversation_id, request("again"))
    assert service.rewrites.active(OWNER) == []


def test_finished_rewrites_are_forgotten():
    rewrites = Rewrites(keep_s=0.0, most=2)

    def started(on_text, cancel):
        on_text("x")
        return None

    first = rewrites.begin(OWNER, "c1", "one", started)
    deadline = time.monotonic() + 5
    while not rewrites.get(OWNER, first.id).finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rewrites.get("someone-else", first.id) is None  # only its owner sees it
    rewrites.begin(OWNER, "c2", "two", started)  # beginning another forgets the ones that ended
    assert rewrites.get(OWNER, first.id) is None
