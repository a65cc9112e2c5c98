"""The turn service with a stand-in backend (no model): what each way of starting a turn stores and queues."""

from __future__ import annotations

import threading

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
        self.hold = None  # a threading.Event: each job waits for it (a job that is still running)

    status = BackendStatus("ready", "ready", SPEC.key, SPEC.label, "", "none", demo=True)

    def start(self):
        pass

    def wait_ready(self, timeout=None, cancel=None):
        pass

    def resolve(self, request):
        return resolve(request, self.spec)

    def generate(self, request, on_progress=None, cancel=None):
        if self.hold is not None:
            self.hold.wait(30)
        self.ran.append(request)
        images = tuple(Image.new("RGB", (request.width, request.height), "blue") for _ in request.seeds)
        return GenerationResult(images=images, seeds=request.seeds, request=request)

    def estimate_seconds(self, request):
        return estimated_seconds(self.spec, request)


def running_service(folder, enhancer=None):
    """A TurnService over a stand-in backend and a store in ``folder`` (a generator: closed after the test)."""
    store = Store(folder)
    store.ensure_owner(OWNER)
    backend = StandIn()
    jobs = JobManager(backend, store)
    yield TurnService(backend, store, jobs, enhancer=enhancer)
    jobs.shutdown()
    store.close()


@pytest.fixture
def service(tmp_path):
    yield from running_service(tmp_path)


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
    # attachments replace the implicit latest image: <image1> is the first upload
    uploads = [TurnImage(png("red")), TurnImage(png("green"))]
    third = finish(service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "<image2> on <image1>"), uploads))
    assert [i.role for i in third.inputs] == ["input", "input"]
    # a branch: the next message edits the chosen image instead of the latest, followed by any attachments
    branched = service.chat(OWNER, conv, TurnSettings().request(SPEC, "add a hat"), branch=first.outputs[0].id)
    assert [i.id for i in finish(service, branched).inputs] == [first.outputs[0].id]
    assert service.backend.ran[-1].mode == "edit" and len(service.backend.ran[-1].images) == 1
    both = service.chat(OWNER, conv, TurnSettings().request(SPEC, "mix"), [TurnImage(png("red"))], first.outputs[0].id)
    assert [i.role for i in finish(service, both).inputs] == ["output", "input"]


def test_the_model_maximum_of_attachments_fits_and_one_more_is_refused(service):
    first = finish(service, service.chat(OWNER, None, TurnSettings().request(SPEC, "a red fox")))
    conv, most = first.conversation_id, SPEC.max_references
    full = finish(
        service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "all"), [TurnImage(png("red"))] * most)
    )
    assert len(full.inputs) == most and all(i.role == "input" for i in full.inputs)
    with pytest.raises(ValidationError, match=f"at most {most}"):
        service.chat(
            OWNER, conv, TurnSettings().request(SPEC, "x"), [TurnImage(png("red"))] * most, first.outputs[0].id
        )


def test_edit_target_says_what_the_next_message_edits(service):
    assert service.target(OWNER, None, None, 0).source == "none"
    first = finish(service, service.chat(OWNER, None, TurnSettings().request(SPEC, "a red fox")))
    conv = first.conversation_id
    second = finish(service, service.chat(OWNER, conv, TurnSettings().request(SPEC, "blue")))
    latest = service.target(OWNER, conv, None, 0)
    assert (latest.source, latest.base.id, latest.turn_number, latest.count) == ("latest", second.outputs[0].id, 2, 1)
    attached = service.target(OWNER, conv, None, 3)
    assert (attached.source, attached.base, attached.count) == ("attachments", None, 3)
    chip = service.target(OWNER, conv, first.outputs[0].id, 2)
    assert (chip.source, chip.turn_number, chip.count) == ("branch", 1, 3)


def test_a_second_message_while_the_conversation_is_busy_is_refused(service):
    service.backend.hold = threading.Event()
    first = service.chat(OWNER, None, TurnSettings().request(SPEC, "a red fox"))
    with pytest.raises(ValidationError, match="still being made"):
        service.chat(OWNER, first.conversation_id, TurnSettings().request(SPEC, "again"))
    other = service.chat(OWNER, None, TurnSettings().request(SPEC, "elsewhere"))  # another conversation: queued
    assert other.state == "queued" and other.conversation_id != first.conversation_id
    service.backend.hold.set()
    assert finish(service, other).status == "done"


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
    # a new version in place, shown, and what a follow-up edits
    shown = service.store.get_conversation(OWNER, conv).turns
    assert [t.id for t in shown] == [first.id, again.id] and (again.version, again.versions) == (2, 2)
    assert service.target(OWNER, conv, None, 0).base.id == again.outputs[0].id
    back = service.show_version(OWNER, again.id, -1)
    assert back.id == edit.id and service.store.get_conversation(OWNER, conv).turns[1].id == edit.id
    assert service.target(OWNER, conv, None, 0).base.id == edit.outputs[0].id
    assert service.show_version(OWNER, edit.id, -5).id == edit.id  # clamped at the first version
    older = finish(service, service.regenerate(OWNER, conv, first.id))
    assert older.kind == "generate" and older.version_of == first.id and older.versions == 2
    assert len(service.store.get_conversation(OWNER, conv).turns) == 2
    with pytest.raises(ValidationError, match="nothing to regenerate"):
        service.regenerate(OWNER, None)
    other = service.store.create_conversation(OWNER)
    with pytest.raises(ValidationError, match="nothing to regenerate"):
        service.regenerate(OWNER, other, first.id)  # a turn of another conversation
