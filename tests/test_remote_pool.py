"""Remote backends without a network: the request mapping, and the pool against fake servers (httpx MockTransport).

Routing to the least busy server, per-server limits, failover with one retry and a note for the user, recovery after
a health check, refusals that are the request's fault, settings a server cannot take, cancel, and the 20B family's
separate generation and edit servers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time

import httpx
import pytest
from PIL import Image

from qwen_image.backend import BackendError, Cancelled
from qwen_image.generation import GenerationRequest, ValidationError, resolve
from qwen_image.registry import load_registry
from serving import mapping
from serving.pool import RemotePool, Unavailable

REG = load_registry()
SPEC21 = REG.get("qwen-image-2.1")
SPEC20 = REG.get("qwen-image")


def png_b64(size=(64, 64), mode="RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 255)[: len(mode)]).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Fake:
    """One fake OpenAI-Images server: answers /models, makes solid images, records what it was asked."""

    def __init__(self, owned_by="vllm", model="Qwen/Qwen-Image-2.1", delay=0.0):
        self.owned_by, self.model, self.delay = owned_by, model, delay
        self.up = True
        self.fail_with: int | None = None  # an HTTP status to answer generations with
        self.models_error: str | None = None  # /models answers 503 with this (the model cannot run)
        self.calls: list[dict] = []
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path.endswith("/models") and self.models_error:
            return httpx.Response(503, json={"error": {"message": self.models_error}})
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.model, "owned_by": self.owned_by}]})
        if request.headers.get("content-type", "").startswith("application/json"):
            fields = json.loads(request.content)
        else:
            fields = {"multipart": True, "images": request.content.count(b'name="image"')}
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.calls.append(fields)
        try:
            await asyncio.sleep(self.delay)
            if not self.up:
                raise httpx.RemoteProtocolError("server went away", request=request)
            if self.fail_with:
                return httpx.Response(self.fail_with, json={"detail": f"failure {self.fail_with}"})
            n = fields.get("n", 1) if isinstance(fields.get("n"), int) else 1
            return httpx.Response(200, json={"created": 0, "data": [{"b64_json": png_b64()} for _ in range(n)]})
        finally:
            with self.lock:
                self.active -= 1


def transport(fakes: dict[str, Fake]) -> httpx.MockTransport:
    async def handler(request):
        return await fakes[request.url.host].handle(request)

    return httpx.MockTransport(handler)


@pytest.fixture
def make_pool():
    pools = []

    def make(fakes: dict[str, Fake], **kw):
        urls = [f"http://{host}:8000/v1" for host in fakes]
        pool = RemotePool.connect(urls, transport=transport(fakes), **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def req(spec, **kw):
    return resolve(GenerationRequest(**{"prompt": "a red fox", "width": 64 * 4, "height": 64 * 4, **kw}), spec)


# -- mapping ---------------------------------------------------------------------------------------------------------
def test_calls_map_every_setting_to_the_documented_fields():
    r = resolve(
        GenerationRequest(prompt="a door", negative_prompt="blurry", true_cfg=4.0, steps=30, seed=7, num_images=2),
        SPEC20,
    )
    calls = mapping.calls_for(r, SPEC20, mapping.VLLM, "Qwen/Qwen-Image-2512")
    assert [c.fields["seed"] for c in calls] == [7, 8] and all(c.fields["n"] == 1 for c in calls)  # honest seeds
    f = calls[0].fields
    assert f["size"] == f"{r.width}x{r.height}" and f["num_inference_steps"] == 30 and f["true_cfg_scale"] == 4.0
    assert f["negative_prompt"] == "blurry" and f["response_format"] == "b64_json"
    assert f["model"] == "Qwen/Qwen-Image-2512"
    assert calls[0].path == "/images/generations" and not calls[0].multipart

    no_cfg = mapping.calls_for(resolve(GenerationRequest(prompt="x"), SPEC21), SPEC21, mapping.SGLANG, None)[0]
    assert "negative_prompt" not in no_cfg.fields and "model" not in no_cfg.fields and no_cfg.fields["seed"] >= 0

    # ours: one call for the batch (seeds seed, seed+1 like our engine), our extension fields, the raw prompt
    ours = mapping.calls_for(r, SPEC20, mapping.OURS, "qwen-image")
    assert len(ours) == 1 and ours[0].fields["n"] == 2 and ours[0].fields["reference_resolution"] == 1024


def test_edits_send_the_references_as_files_and_marks_as_the_models_own_words():
    img = Image.new("RGB", (96, 64), "red")
    r = resolve(GenerationRequest(prompt="a blue door", images=(img, img), marked=True), SPEC20)
    [call] = mapping.calls_for(r, SPEC20, mapping.VLLM, None)
    assert call.path == "/images/edits" and call.multipart and [f[0] for f in call.files] == ["image", "image"]
    assert call.fields["prompt"].endswith(SPEC20.mark_hint)  # marks are pixels plus the model's sentence
    assert call.form()["n"] == "1"
    [ours] = mapping.calls_for(r, SPEC20, mapping.OURS, None)
    assert ours.fields["prompt"] == "a blue door" and ours.form()["marked"] == "true"


def test_model_ids_name_registry_models():
    assert mapping.spec_for_model_id("Qwen/Qwen-Image-2.1").key == "qwen-image-2.1"
    assert mapping.spec_for_model_id("Qwen/Qwen-Image-2.1-Turbo").key == "qwen-image-2.1-turbo"
    assert mapping.spec_for_model_id("/models/Qwen-Image-Edit-2511").key == "qwen-image"
    assert mapping.spec_for_model_id("Qwen/Qwen-Image").family == "qwen-image"
    assert mapping.spec_for_model_id("tiny").key == "tiny"
    assert mapping.spec_for_model_id("black-forest-labs/FLUX.1-dev") is None
    assert mapping.roles_for(SPEC20, "Qwen/Qwen-Image-Edit-2511") == {"edit"}
    assert mapping.roles_for(SPEC20, "Qwen/Qwen-Image-2512") == {"generate"}
    assert mapping.roles_for(SPEC21, "Qwen/Qwen-Image-2.1") == {"generate", "edit"}


def test_answers_are_checked_and_errors_read_in_every_shape():
    assert len(mapping.images_from({"data": [{"b64_json": png_b64()}]}, 1)) == 1
    for bad in ({"data": []}, {"data": [{"url": "http://x/y.png"}]}, {"data": [{"b64_json": "bm90IGFuIGltYWdl"}]}):
        with pytest.raises(ValueError):
            mapping.images_from(bad, 1)
    with pytest.raises(ValueError, match="2 images instead of 1"):
        mapping.images_from({"data": [{"b64_json": png_b64()}] * 2}, 1)
    assert mapping.error_text({"error": {"message": "bad size"}}, "") == "bad size"
    assert mapping.error_text({"detail": "Model mismatch"}, "") == "Model mismatch"
    assert mapping.error_text({"detail": [{"msg": "field required"}]}, "") == "field required"
    assert mapping.error_text(None, "HTTP 500") == "HTTP 500"


# -- the pool --------------------------------------------------------------------------------------------------------
def test_connect_learns_the_model_and_hides_what_the_servers_cannot_take(make_pool):
    pool = make_pool({"a": Fake(), "b": Fake(owned_by="sglang")}, limit=2)
    assert pool.spec.key == "qwen-image-2.1" and pool.status.ready
    caps = pool.capabilities
    assert caps.concurrent_jobs == 4 and not caps.step_progress and caps.max_references == SPEC21.max_references
    assert not caps.transparent and not caps.accepts("transparent") and caps.accepts("seed")
    with pytest.raises(ValidationError, match="cannot make transparent images"):
        pool.resolve(GenerationRequest(prompt="a logo", transparent=True))
    same = SPEC21.reference_resolution  # not a change: fine
    pool.resolve(GenerationRequest(prompt="a logo", reference_resolution=same))
    with pytest.raises(ValidationError, match="reference resolution"):
        pool.resolve(GenerationRequest(prompt="a logo", reference_resolution=512))
    assert "2 of 2 image servers up" in pool.status.message


def test_requests_go_to_the_least_busy_server_within_its_limit(make_pool):
    fakes = {"a": Fake(delay=0.4), "b": Fake(delay=0.4)}
    pool = make_pool(fakes, limit=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.generate(req(SPEC21)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and all(len(r.images) == 1 and not r.notes for r in results)
    assert len(fakes["a"].calls) == len(fakes["b"].calls) == 2  # spread evenly
    assert fakes["a"].most_active <= 2 and fakes["b"].most_active <= 2


def test_a_server_failing_mid_request_is_marked_down_and_the_request_retried_once(make_pool):
    fakes = {"a": Fake(delay=0.3), "b": Fake()}
    pool = make_pool(fakes)
    progress = []
    killer = threading.Timer(0.1, lambda: setattr(fakes["a"], "up", False))
    killer.start()
    result = pool.generate(req(SPEC21), on_progress=progress.append)
    assert len(result.images) == 1 and len(fakes["b"].calls) == 1
    [note] = result.notes
    assert "a:8000 failed" in note and "made on b:8000 instead" in note
    assert any(p.phase == "retrying" and p.message == "a:8000" for p in progress)
    assert "a:8000 (down" in pool.status.message

    # both down: a clear error naming the one tried (a is still marked down), nothing made
    fakes["b"].up = False
    pool.servers[1].mark("up")
    with pytest.raises(BackendError, match="b:8000 failed") as err:
        pool.generate(req(SPEC21))
    assert str(err.value).startswith("Image server b:8000 failed (")
    assert str(err.value).endswith("). No other image server is available.")
    # and a new request is refused before anything is stored
    with pytest.raises(Unavailable, match="No image server can take this request"):
        pool.resolve(GenerationRequest(prompt="again"))


def test_a_server_that_comes_back_is_used_again(make_pool):
    fakes = {"a": Fake(), "b": Fake()}
    fakes["a"].up = False
    pool = make_pool(fakes, check_interval=0.1)
    assert [s.state for s in pool.servers] == ["down", "up"]
    pool.start()
    fakes["a"].up = True
    deadline = time.monotonic() + 5
    while not pool.servers[0].up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.servers[0].up
    pool.generate(req(SPEC21))
    pool.generate(req(SPEC21))
    assert len(fakes["a"].calls) == 1 and len(fakes["b"].calls) == 1


def test_refusals_are_the_users_to_fix_and_not_failed_over(make_pool):
    fakes = {"a": Fake(), "b": Fake()}
    fakes["a"].fail_with = fakes["b"].fail_with = 400
    pool = make_pool(fakes)
    with pytest.raises(ValidationError, match="refused the request: failure 400"):
        pool.generate(req(SPEC21))
    assert len(fakes["a"].calls) + len(fakes["b"].calls) == 1 and all(s.up for s in pool.servers)

    fakes["a"].fail_with = fakes["b"].fail_with = 401  # a wrong key makes the server unusable: marked, and said so
    with pytest.raises(BackendError, match="refused the API key"):
        pool.generate(req(SPEC21))


def test_stop_cancels_a_remote_request_and_frees_its_slot(make_pool):
    fakes = {"a": Fake(delay=5.0)}
    pool = make_pool(fakes)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        pool.generate(req(SPEC21), on_progress=lambda p: None, cancel=cancel)
    assert time.monotonic() - t0 < 2 and pool.servers[0].in_flight == 0


def test_progress_is_elapsed_time_against_an_estimate(make_pool):
    pool = make_pool({"a": Fake(delay=0.7)})
    events = []
    pool.generate(req(SPEC21), on_progress=events.append)
    remote = [p for p in events if p.phase == "remote"]
    assert remote and all(p.step == 0 and p.total == 0 and p.eta is not None for p in remote)  # no made-up steps
    assert remote[-1].elapsed > remote[0].elapsed and remote[0].message == "a:8000"
    assert pool.servers[0].seconds_per_unit is not None  # it learnt this server's speed


def test_the_20b_family_uses_separate_generation_and_edit_servers(make_pool):
    fakes = {"gen": Fake(model="Qwen/Qwen-Image-2512"), "edit": Fake(model="Qwen/Qwen-Image-Edit-2511")}
    pool = make_pool(fakes)
    assert pool.spec.family == "qwen-image"
    pool.generate(req(SPEC20))
    img = Image.new("RGB", (64, 64))
    pool.generate(resolve(GenerationRequest(prompt="make it blue", images=(img,)), SPEC20))
    assert len(fakes["gen"].calls) == 1 and fakes["edit"].calls[0]["images"] == 1

    only_gen = make_pool({"g2": Fake(model="Qwen/Qwen-Image-2512")})
    with pytest.raises(Unavailable, match="None of the image servers edits images"):
        only_gen.resolve(GenerationRequest(prompt="make it blue", images=(img,)))


def test_a_server_running_another_model_is_not_used(make_pool):
    pool = make_pool({"a": Fake(), "b": Fake(model="Qwen/Qwen-Image-2512")}, model="qwen-image-2.1")
    assert [s.state for s in pool.servers] == ["up", "wrong-model"]
    assert "runs Qwen-Image (20B)" in pool.status.message


def test_the_page_hides_what_the_servers_cannot_take_and_never_sends_it(make_pool):
    import gradio as gr

    from conversations.settings import TurnSettings
    from ui.settings import Panel

    pool = make_pool({"a": Fake()})
    with gr.Blocks():
        panel = Panel(pool.spec, pool.capabilities)
    assert not panel.components["transparent"].visible and panel.components["seed"].visible
    # "Reuse settings" of a transparent PNG cannot switch on a setting the user cannot see (or switch off)
    values = dict(zip(panel.components, panel.updates(TurnSettings(transparent=True, seed=3)), strict=True))
    assert values["transparent"] is False and values["seed"] == 3


def test_a_server_whose_model_cannot_run_is_not_used(make_pool):
    fakes = {"a": Fake(), "b": Fake()}
    fakes["a"].models_error = "The model cannot run: out of memory while loading"
    pool = make_pool(fakes)
    assert [s.state for s in pool.servers] == ["down", "up"]
    assert "HTTP 503: The model cannot run: out of memory while loading" in pool.status.message
    pool.generate(req(SPEC21))
    assert len(fakes["b"].calls) == 1 and not fakes["a"].calls
