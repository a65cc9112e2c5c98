"""The turn service with a stand-in backend (no model): what each way of starting a turn stores and queues."""

from __future__ import annotations

import pytest
from PIL import Image

from conversations.jobs import JobManager
from conversations.settings import TurnSettings
from conversations.store import Store
from conversations.turns import TurnImage, TurnService
from qwen_image.backend import Backend, BackendStatus, Capabilities, estimated_seconds
from qwen_image.generation import GenerationResult, ValidationError, resolve
from qwen_image.registry import load_registry

OWNER = "anon-" + "c" * 24
SPEC = load_registry().get("tiny")


class StandIn:
    """Resolves with the real validation (no tokenizer) and 'generates' a flat image per seed; records the requests."""

    spec = SPEC
    capabilities = Capabilities(max_references=SPEC.max_references, transparent=True, step_progress=False)

    def __init__(self):
        self.ran = []

    status = BackendStatus("ready", "ready", SPEC.key, SPEC.label, "", "none", demo=True)

    def start(self):
        pass

    def wait_ready(self, timeout=None, cancel=None):
        pass

    def resolve(self, request):
        return resolve(request, self.spec)

    def generate(self, request, on_progress=None, cancel=None):
        self.ran.append(request)
        images = tuple(Image.new("RGB", (request.width, request.height), "blue") for _ in request.seeds)
        return GenerationResult(images=images, seeds=request.seeds, request=request)

    def estimate_seconds(self, request):
        return estimated_seconds(self.spec, request)


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path)
    store.ensure_owner(OWNER)
    backend = StandIn()
    jobs = JobManager(backend, store)
    yield TurnService(backend, store, jobs)
    jobs.shutdown()
    store.close()


def finish(service, snap):
    *_, last = service.jobs.watch(OWNER, snap.id)
    assert last.state == "done", last.error
    return service.store.get_turn(OWNER, snap.turn_id)


def png(color, size=(64, 48)):
    return Image.new("RGB", size, color)


def test_the_stand_in_is_a_backend():
    assert isinstance(StandIn(), Backend)


def test_chat_generates_then_edits_the_latest_image_then_the_branch(service):
    req = TurnSettings.defaults(SPEC).request(SPEC, "a red fox")
    first = finish(service, service.chat(OWNER, None, req))
    assert first.kind == "generate" and first.inputs == ()
    conv = first.conversation_id
    second = finish(service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "make it blue")))
    assert second.kind == "edit" and [i.id for i in second.inputs] == [first.outputs[0].id]
    # attachments follow the edited image, in order: <image1> is the latest result, then the uploads
    uploads = [TurnImage(png("red")), TurnImage(png("green"))]
    third = finish(service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "<image3> on <image1>"), uploads))
    assert [i.id for i in third.inputs][0] == second.outputs[0].id and len(third.inputs) == 3
    assert [i.role for i in third.inputs] == ["output", "input", "input"]
    # a branch: the next message edits the chosen image instead of the latest
    branched = service.chat(OWNER, conv, TurnSettings().request(SPEC, "add a hat"), branch=first.outputs[0].id)
    assert [i.id for i in finish(service, branched).inputs] == [first.outputs[0].id]
    assert service.backend.ran[-1].mode == "edit" and len(service.backend.ran[-1].images) == 1


def test_an_invalid_request_stores_nothing(service):
    with pytest.raises(ValidationError, match="Write a prompt"):
        service.chat(OWNER, None, TurnSettings().request(SPEC, "  "), [TurnImage(png("red"))])
    with pytest.raises(ValidationError, match="at most 10"):
        service.start(OWNER, None, TurnSettings().request(SPEC, "too many"), [TurnImage(png("red"))] * 11)
    assert service.store.list_conversations(OWNER) == []
    assert not any(service.store.image_root.rglob("*.png"))


def test_start_stores_new_uploads_and_reuses_stored_images(service):
    made = finish(service, service.start(OWNER, None, TurnSettings().request(SPEC, "a lighthouse")))
    stored = service.stored(OWNER, [made.outputs[0].id])
    snap = service.start(
        OWNER, None, TurnSettings().request(SPEC, "<image2> beside <image1>"), [*stored, TurnImage(png("red"))]
    )
    turn = finish(service, snap)
    assert turn.conversation_id != made.conversation_id  # a new conversation, with its own copy of the image
    assert len(turn.inputs) == 2 and turn.inputs[1].role == "input"
    assert service.store.get_conversation(OWNER, turn.conversation_id).turns[0].prompt == "<image2> beside <image1>"


def test_a_turn_that_cannot_be_queued_leaves_no_conversation_behind(service):
    service.jobs.max_queue = 0
    with pytest.raises(ValidationError, match="busy"):
        service.start(OWNER, None, TurnSettings().request(SPEC, "a cat"), [TurnImage(png("red"))])
    assert service.store.list_conversations(OWNER) == []


def test_regenerate_runs_the_turn_again_with_its_inputs_and_a_new_seed(service):
    first = finish(service, service.chat(OWNER, None, TurnSettings(ratio="16:9").request(SPEC, "a wide lake")))
    conv = first.conversation_id
    edit = finish(service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "at night")))
    again = finish(service, service.regenerate(OWNER, conv))  # the latest turn
    assert again.prompt == "at night" and [i.id for i in again.inputs] == [i.id for i in edit.inputs]
    assert (again.settings["width"], again.settings["height"]) == (edit.settings["width"], edit.settings["height"])
    assert again.outputs[0].seed != edit.outputs[0].seed
    older = finish(service, service.regenerate(OWNER, conv, first.id))
    assert older.kind == "generate" and older.position == 3
    with pytest.raises(ValidationError, match="nothing to regenerate"):
        service.regenerate(OWNER, None)
    other = service.store.create_conversation(OWNER)
    with pytest.raises(ValidationError, match="nothing to regenerate"):
        service.regenerate(OWNER, other, first.id)  # a turn of another conversation
