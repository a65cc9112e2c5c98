"""The engine end to end with the tiny random-weight models of both families (CPU profile)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qwen_image.engine import Cancelled, Engine, EngineError, Progress, model_prompt
from qwen_image.generation import GenerationRequest, ValidationError
from qwen_image.profiles import get_profile
from qwen_image.registry import resolve_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["engine21", "engine20"])
def engine(request):
    """Each test using this runs once per model family."""
    return request.getfixturevalue(request.param)


def reference(w: int = 80, h: int = 48) -> Image.Image:
    """A deterministic RGB test picture."""
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    y = np.linspace(255, 0, h, dtype=np.uint8)[:, None, None]
    rgb = np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90, np.uint8)], axis=2
    )
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# -- generate and edit ----------------------------------------------------------------------------------------------
def test_status_of_a_loaded_tiny_engine(engine):
    status = engine.status
    assert status.ready and status.state == "ready"
    assert status.demo is True and status.device == "cpu" and status.profile == "cpu"
    assert status.model == engine.spec.key and "ready" in status.message


def test_generate(engine):
    result = engine.generate(GenerationRequest(prompt="a red fox in the snow", seed=3, width=96, height=64))
    (image,) = result.images
    assert image.size == (96, 64) and image.mode == "RGB"
    assert result.seeds == (3,) and result.request.seed == 3
    assert result.request.mode == "generate" and result.request.model == engine.spec.key
    assert set(result.timings) == {"encode", "denoise", "decode", "total"}
    assert all(t >= 0 for t in result.timings.values())
    assert result.notes == ()
    # random weights still give a picture, not a blank
    assert pixels(image).std() > 1


def test_generate_several_images_and_default_size(engine):
    result = engine.generate(GenerationRequest(prompt="a blue bird", seed=11, num_images=2))
    assert len(result.images) == 2 and result.seeds == (11, 12)
    size = (result.request.width, result.request.height)
    assert all(img.size == size and img.mode == "RGB" for img in result.images)
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))
    # the second image is the one a single-image job with seed+1 makes
    single = engine.generate(GenerationRequest(prompt="a blue bird", seed=12))
    np.testing.assert_allclose(pixels(single.images[0]), pixels(result.images[1]), atol=2)


def test_same_seed_same_image(engine):
    req = GenerationRequest(prompt="a castle on a hill", seed=99, steps=2)
    a, b = engine.generate(req), engine.generate(req)
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    c = engine.generate(replace(req, seed=100))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))


def test_edit(engine):
    ref = reference(80, 48)
    result = engine.generate(GenerationRequest(prompt="make it blue", images=(ref,), seed=5))
    (image,) = result.images
    assert result.request.mode == "edit"
    # no ratio given: the output follows the reference's shape
    assert image.size == (result.request.width, result.request.height)
    assert image.width > image.height
    assert image.mode == "RGB"
    two = engine.generate(
        GenerationRequest(prompt="put <image1> next to <image2>", images=(ref, reference(48, 80)), match_reference=2)
    )
    assert two.images[0].height > two.images[0].width


def test_one_step_on_the_checkpoints_schedule(engine):
    """The published schedulers stretch to ``shift_terminal`` 0.02; with one step diffusers divides 0 by 0 there (NaN
    sigmas, then "invalid image"). One step runs from sigma 1 to 0; the scheduler is the checkpoint's again after."""
    pipe = engine._loaded.pipeline("generate")
    assert pipe.scheduler.config.shift_terminal == 0.02  # as in the Qwen-Image / Qwen-Image-2.1 scheduler_config.json
    timesteps = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: timesteps.append(float(kwargs["timestep"].flatten()[0])), with_kwargs=True
    )
    try:
        (image,) = engine.generate(GenerationRequest(prompt="a fox", seed=1, steps=1, width=64, height=64)).images
    finally:
        hook.remove()
    assert timesteps and set(timesteps) == {1.0}  # sigma 1.0 (timestep / 1000) only: one step (two passes with CFG)
    assert pixels(image).std() > 0
    assert pipe.scheduler.config.shift_terminal == 0.02


def test_transparent_21(engine21):
    result = engine21.generate(GenerationRequest(prompt="a glass apple", seed=1, transparent=True))
    (image,) = result.images
    # RGBA when the alpha channel holds any transparency, RGB when it is fully opaque
    assert image.mode in ("RGBA", "RGB")
    if image.mode == "RGBA":
        assert image.getchannel("A").getextrema()[0] < 255
    assert image.mode == "RGBA"  # the tiny model's random alpha is not opaque for this seed
    opaque = engine21.generate(GenerationRequest(prompt="a glass apple", seed=1))
    assert opaque.images[0].mode == "RGB"
    assert model_prompt(result.request, engine21.spec) == (
        "This is an RGBA image with transparency. a glass apple. The image has alpha channel and the background is "
        "transparent."
    )
    assert model_prompt(opaque.request, engine21.spec) == "a glass apple"


def test_marks_hint_comes_from_the_model_spec(engine20):
    red = Image.new("RGB", (64, 64), "red")
    r = engine20.resolve(GenerationRequest(prompt="a blue door.", images=(red,), marked=True, seed=1))
    assert r.settings()["marked"] is True
    assert (
        model_prompt(r, engine20.spec) == "a blue door. Change only the area marked in red, and remove the red marks."
    )
    unmarked = engine20.resolve(GenerationRequest(prompt="a blue door", images=(red,), seed=1))
    assert model_prompt(unmarked, engine20.spec) == "a blue door"


def test_finish_image_modes():
    from qwen_image.decode import finish_image

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    assert finish_image(rgba, True).mode == "RGBA"
    flat = finish_image(rgba, False)
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 127, 127)  # on white
    opaque = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    assert finish_image(opaque, True).mode == "RGB"
    assert finish_image(Image.new("RGB", (8, 8)), True).mode == "RGB"


def test_20b_edit_shares_text_encoder_and_vae(engine20):
    engine20.generate(GenerationRequest(prompt="a red fox", seed=1))
    engine20.generate(GenerationRequest(prompt="make the fox blue", images=(reference(),), seed=1))
    loaded = engine20._loaded
    assert loaded._edit is not None
    assert loaded.generate.text_encoder is loaded._edit.text_encoder
    assert loaded.generate.vae is loaded._edit.vae
    assert loaded.generate.tokenizer is loaded._edit.tokenizer
    assert type(loaded._edit).__name__ == "QwenImageEditPlusPipeline"
    assert loaded.generate.transformer is not loaded._edit.transformer  # the Edit checkpoint's own weights
    # and back to generating
    again = engine20.generate(GenerationRequest(prompt="a red fox", seed=1))
    assert again.images[0].size == (96, 96)


def test_cpu_profile_text_encoder_is_8bit(engine):
    import bitsandbytes as bnb
    import torch

    assert engine.profile.name == "cpu" and engine.profile.text_encoder == "int8"
    engine.generate(GenerationRequest(prompt="a tree", seed=1))
    pipe = engine._loaded.generate
    te = pipe.text_encoder
    assert isinstance(te.lm_head, torch.nn.Identity)  # dropped: the pipelines read hidden states only
    linears = [(name, m) for name, m in te.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 10
    # the language model in 8 bits; the vision tower stays in 16/32 bits (qwen_image.loader.QUANTIZE_VISION_TOWER)
    plain = {name for name, m in linears if not isinstance(m, bnb.nn.Linear8bitLt)}
    assert plain == {name for name, _ in linears if name.startswith("model.visual.")} and plain
    assert all(m.weight.dtype == torch.int8 for name, m in linears if name not in plain)
    # everything ran on the CPU
    assert pipe.device.type == "cpu"
    for module in (pipe.transformer, pipe.vae, te):
        assert {p.device.type for p in module.parameters()} == {"cpu"}
    devices = set()
    hook = pipe.transformer.register_forward_hook(lambda module, args, out: devices.add(out[0].device.type))
    try:
        engine.generate(GenerationRequest(prompt="a tree", seed=2, steps=1))
    finally:
        hook.remove()
    assert devices == {"cpu"}


def test_fp8_transformer_on_the_cpu(engine):
    """fp8 layerwise casting (the 24gb/16gb/12gb/8gb profiles' transformer) also works on the CPU profile."""
    import torch

    profile = replace(engine.profile, transformer="fp8")
    fp8 = Engine(engine.spec, profile, engine.hardware, engine.options)
    fp8.start()
    fp8.wait_ready()
    first = fp8.generate(GenerationRequest(prompt="a fox", seed=1, steps=2))
    edited = fp8.generate(GenerationRequest(prompt="make it blue", images=first.images, seed=1, steps=2))
    assert edited.images[0].mode == "RGB"
    loaded = fp8._loaded
    transformers = [loaded.generate.transformer] + ([loaded._edit.transformer] if loaded._edit else [])
    for transformer in transformers:
        linears = [m for m in transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)


# -- VAE tiling policy ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tiling", "budget", "expected"),
    [("on", None, True), ("auto", 1e6, False), ("auto", 1e-6, True), ("off", 1e-6, False)],
)
def test_vae_tiling_follows_the_profile(engine21, tiling, budget, expected):
    profile = replace(get_profile("cpu", "qwen-image-2.1"), vae_tiling=tiling)
    engine = Engine(engine21.spec, profile, engine21.hardware, engine21.options, vram_budget_gb=budget)
    engine.start()
    engine.wait_ready()
    result = engine.generate(GenerationRequest(prompt="a lighthouse", seed=2))
    assert result.images[0].size == (64, 64)
    assert engine._loaded.generate.vae.use_tiling is expected


# -- checkpoints from a folder --------------------------------------------------------------------------------------
def test_folder_checkpoint_round_trip(engine21, tmp_path):
    """A saved checkpoint folder, loaded as a --model PATH --family model, generates the same pixels."""
    from qwen_image.tiny import ensure_tiny

    folder = tmp_path / "my-qwen-image-2.1"
    shutil.copytree(ensure_tiny("tiny-qwen-image-2.1"), folder)
    (folder / "READY").unlink()
    spec = resolve_model(str(folder), family="qwen-image-2.1")
    assert not spec.tiny and spec.generate_checkpoint == str(folder)
    engine = Engine(spec, get_profile("cpu", spec.family), engine21.hardware, vram_budget_gb=1e6)
    engine.start()
    engine.wait_ready()
    assert engine.status.ready and not engine.status.demo
    req = GenerationRequest(prompt="a red fox in the snow", seed=1234, steps=2, width=256, height=256)
    ours = engine.generate(req)
    original = engine21.generate(req)
    assert ours.images[0].size == original.images[0].size == (256, 256)
    assert np.array_equal(pixels(ours.images[0]), pixels(original.images[0]))


# -- progress and cancel --------------------------------------------------------------------------------------------
def test_progress_events(engine):
    events: list[Progress] = []
    engine.generate(GenerationRequest(prompt="a river at night", seed=4, steps=5), on_progress=events.append)
    events = [e for e in events if e.phase not in ("loading", "waiting")]
    denoising = [e for e in events if e.phase == "denoising"]
    assert [e.step for e in denoising] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 for e in denoising)
    assert all(e.eta is not None and e.eta >= 0 for e in denoising)
    assert denoising[-1].fraction == 1.0
    assert all(a.elapsed <= b.elapsed for a, b in zip(events, events[1:], strict=False))
    phases = [e.phase for i, e in enumerate(events) if i == 0 or events[i - 1].phase != e.phase]
    assert phases == ["encoding", "denoising", "decoding", "done"]


def test_denoising_progress_carries_a_live_preview(engine):
    """A cheap latent-to-RGB preview every few steps (the last one included), shaped like the image being made."""
    from qwen_image.preview import preview_steps

    assert engine.capabilities.live_preview
    events: list[Progress] = []
    req = GenerationRequest(prompt="a wide river", seed=4, steps=5, aspect_ratio="16:9")
    result = engine.generate(req, on_progress=events.append)
    shown = [e for e in events if e.phase == "denoising" and e.preview is not None]
    assert {e.step for e in shown} == set(preview_steps(5)) and shown[-1].step == 5
    w, h = result.images[0].size
    pw, ph = shown[-1].preview.size
    assert pw > ph and abs(pw / ph - w / h) < 0.25 and max(pw, ph) <= 256
    assert len(set(shown[-1].preview.getdata())) > 4  # a picture, not a flat colour
    edit = GenerationRequest(prompt="make it blue", seed=1, steps=2, images=(result.images[0],))
    events.clear()
    engine.generate(edit, on_progress=events.append)
    assert any(e.preview is not None for e in events if e.phase == "denoising")  # edits too


def test_latent_preview_layouts():
    import torch

    from qwen_image.preview import latent_preview, preview_steps, token_grid

    assert latent_preview(torch.randn(1, 4 * 8, 64), 128, 64).size == (256, 128)  # tokens x channels
    assert latent_preview(torch.randn(1, 16, 4, 8), 128, 64).size == (256, 128)  # channels x rows x cols
    assert latent_preview(torch.randn(1, 16, 1, 4, 8), 128, 64).size == (256, 128)  # with a frame axis
    assert latent_preview(torch.randn(1, 7, 64), 128, 64) is None and latent_preview(None, 64, 64) is None
    assert token_grid(12, 64, 48) == (3, 4)
    assert preview_steps(40) == frozenset(range(5, 41, 5)) and preview_steps(3) == {1, 2, 3}


def test_broken_progress_listener_does_not_kill_the_job(engine21):
    def listener(progress):
        raise RuntimeError("listener bug")

    result = engine21.generate(GenerationRequest(prompt="a boat", seed=1, steps=2), on_progress=listener)
    assert len(result.images) == 1


def test_cancel_within_one_step(engine):
    cancel = threading.Event()
    after_cancel = []

    def on_progress(p: Progress):
        if cancel.is_set() and p.phase == "denoising":
            after_cancel.append(p.step)
        if p.phase == "denoising" and p.step == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.generate(
            GenerationRequest(prompt="a long job", seed=1, steps=10), on_progress=on_progress, cancel=cancel
        )
    assert len(after_cancel) <= 1
    # the engine is free again and serves the next request
    result = engine.generate(GenerationRequest(prompt="the next job", seed=2, steps=2))
    assert len(result.images) == 1


def test_cancel_before_start(engine21):
    cancel = threading.Event()
    cancel.set()
    events = []
    with pytest.raises(Cancelled):
        engine21.generate(GenerationRequest(prompt="never runs", seed=1), on_progress=events.append, cancel=cancel)
    assert not [e for e in events if e.phase == "denoising"]


# -- prompt-embedding cache -----------------------------------------------------------------------------------------
@pytest.fixture
def encoder_calls(engine):
    calls = []
    hook = engine._loaded.generate.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    yield calls
    hook.remove()


def test_embedding_cache(engine, encoder_calls):
    prompt = f"an owl reading a book ({engine.spec.key})"
    first = engine.generate(GenerationRequest(prompt=prompt, seed=1, steps=2))
    n = len(encoder_calls)
    assert n >= 1 and not first.embed_cache_hit
    again = engine.generate(GenerationRequest(prompt=prompt, seed=2, steps=2))
    assert len(encoder_calls) == n and again.embed_cache_hit
    other = engine.generate(GenerationRequest(prompt=prompt + " at dawn", seed=2, steps=2))
    assert len(encoder_calls) > n and not other.embed_cache_hit


def test_embedding_cache_for_edits(engine, encoder_calls):
    ref = reference(64, 64)
    prompt = f"make the sky purple ({engine.spec.key})"
    first = engine.generate(GenerationRequest(prompt=prompt, images=(ref,), seed=1, steps=2))
    n = len(encoder_calls)
    assert n >= 1 and not first.embed_cache_hit
    # a different image object with the same pixels
    same = engine.generate(GenerationRequest(prompt=prompt, images=(ref.copy(),), seed=7, steps=2))
    assert len(encoder_calls) == n and same.embed_cache_hit
    changed = ref.copy()
    changed.putpixel((0, 0), (0, 0, 0))
    other = engine.generate(GenerationRequest(prompt=prompt, images=(changed,), seed=7, steps=2))
    assert len(encoder_calls) > n and not other.embed_cache_hit


# -- one job at a time ----------------------------------------------------------------------------------------------
def test_one_job_at_a_time(engine21):
    import time

    pipe = engine21._loaded.generate
    lock = threading.Lock()
    state = {"in_job": 0, "max_in_job": 0, "in_forward": 0, "max_in_forward": 0}

    def enter(key):
        with lock:
            state[key] += 1
            state["max_" + key] = max(state["max_" + key], state[key])

    def leave(key):
        with lock:
            state[key] -= 1

    def pre(module, args):
        enter("in_forward")
        time.sleep(0.02)  # widen the window an overlap would need

    hooks = [
        pipe.transformer.register_forward_pre_hook(pre),
        pipe.transformer.register_forward_hook(lambda *args: leave("in_forward")),
    ]

    def on_progress(p):
        if p.phase == "encoding":
            enter("in_job")
        elif p.phase == "done":
            leave("in_job")

    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker(seed):
        try:
            barrier.wait()
            req = GenerationRequest(prompt=f"a busy street {seed}", seed=seed, steps=4)
            results.append(engine21.generate(req, on_progress=on_progress))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for h in hooks:
            h.remove()
    assert errors == []
    assert len(results) == 2 and {r.seeds for r in results} == {(1,), (2,)}
    assert state["max_in_job"] == 1 and state["in_job"] == 0
    assert state["max_in_forward"] == 1


# -- failures -------------------------------------------------------------------------------------------------------
def _failing_engine(folder: Path, hardware) -> Engine:
    spec = resolve_model(str(folder), family="qwen-image-2.1")
    engine = Engine(spec, get_profile("cpu", spec.family), hardware)
    engine.start()
    with pytest.raises(EngineError):
        engine.wait_ready(timeout=60)
    return engine


def test_missing_model_folder_is_an_error_not_a_crash(engine21, tmp_path):
    engine = _failing_engine(tmp_path / "no-such-model", engine21.hardware)
    status = engine.status
    assert status.state == "error" and not status.ready
    assert "failed to load" in status.message
    with pytest.raises(EngineError, match="failed to load"):
        engine.generate(GenerationRequest(prompt="a fox", seed=1))


def test_broken_model_folder_is_an_error_not_a_crash(engine21, tmp_path):
    """The tokenizer loads but the weights do not: prompts validate, generating reports the failure."""
    from qwen_image.tiny import ensure_tiny

    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copytree(ensure_tiny("tiny-qwen-image-2.1") / "processor", folder / "processor")
    engine = _failing_engine(folder, engine21.hardware)
    assert engine.status.state == "error" and engine.status.message
    with pytest.raises(ValidationError):
        engine.resolve(GenerationRequest(prompt=""))
    with pytest.raises(EngineError):
        engine.generate(GenerationRequest(prompt="a fox", seed=1))


def test_engines_loading_at_the_same_time(engine21):
    """Two engines in one process may load at once (from_pretrained is serialized inside the loader)."""
    engines = [
        Engine(spec, get_profile("cpu", spec.family), engine21.hardware)
        for spec in (resolve_model("tiny"), resolve_model("tiny-qwen-image"), resolve_model("tiny"))
    ]
    for engine in engines:
        engine.start()
    for engine in engines:
        engine.wait_ready(timeout=120)
        assert engine.status.ready, engine.status.message
        assert len(engine.generate(GenerationRequest(prompt="a fox", seed=1, steps=1)).images) == 1


def test_request_for_another_model_is_refused(engine21, engine20):
    resolved = engine20.resolve(GenerationRequest(prompt="a fox", seed=1))
    with pytest.raises(ValidationError, match="tiny-qwen-image"):
        engine21.generate(resolved)


def test_validation_errors_come_before_any_work(engine20):
    events = []
    with pytest.raises(ValidationError, match="transparent"):
        engine20.generate(GenerationRequest(prompt="a fox", transparent=True), on_progress=events.append)
    assert events == []


def test_no_model_work_at_import():
    code = "import qwen_image, qwen_image.engine, qwen_image.cli; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
