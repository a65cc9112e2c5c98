"""The CUDA profiles' offloading, run for real on the CPU: accelerate's and diffusers' hooks with "cpu:0" as the
accelerator (LoadOptions.device), tiny models, the engine's own jobs. What is on the accelerator in each phase must be
what the planner counts (qwen_image.planner.resident_components).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from residency import ACCELERATOR, Residency

from qwen_image.engine import Engine
from qwen_image.generation import GenerationRequest
from qwen_image.hardware import Hardware
from qwen_image.loader import LoadOptions
from qwen_image.offload import offload_hook
from qwen_image.planner import resident_components
from qwen_image.profiles import get_profile
from qwen_image.registry import resolve_model

GPU = Hardware(True, "test accelerator (cpu:0)", 24.0, 24.0, 64.0, 64.0)


def engine_on_cpu_accelerator(model: str, profile_name: str, **options) -> Engine:
    spec = resolve_model(model)
    profile = get_profile(profile_name, spec.family)
    engine = Engine(spec, profile, GPU, LoadOptions(device=ACCELERATOR, **options))
    engine.start()
    engine.wait_ready()
    return engine


def picture() -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    return Image.fromarray(np.stack(np.broadcast_arrays(x[None, :], x[:, None], 90 + 0 * x[None, :]), -1), "RGB")


def request(prompt: str, seed: int = 1, images=(), **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, seed=seed, steps=2, images=tuple(images), **fields)


def expected(offload: str, phase: str, watched) -> frozenset:
    return resident_components(offload, phase) & frozenset(watched)


@pytest.fixture(scope="module", params=["16gb", "12gb"], name="run21")
def _run21(request):
    """Qwen-Image-2.1 (tiny) under model offload (16gb) and group offload (12gb): generate, edit, generate."""
    with Residency() as residency:
        engine = engine_on_cpu_accelerator("tiny", request.param)
        residency.watch(engine._loaded.generate)
        first = engine.generate(request_for("a red fox"))
        residency.after_first = residency.on()
        engine.generate(request_for("make the fox blue", images=first.images))
        engine.generate(request_for("a red fox", seed=2))
        residency.after_last = residency.on()
    residency.profile = engine.profile
    yield residency
    engine.unload()


def request_for(prompt: str, seed: int = 1, images=()) -> GenerationRequest:
    return request(prompt, seed, images, reference_resolution=64)


def test_21_every_phase_holds_what_the_planner_counts(run21):
    """Defects 3 and 5: the text encoder stayed on the accelerator while the references were VAE-encoded (model and
    group offload), and the VAE stayed after the engine's decode (model offload) into the next job's encode."""
    offload = run21.profile.offload
    assert set(run21.seen) == {"encode", "references", "denoise", "decode"}
    for phase, seen in run21.seen.items():
        for on in seen:
            assert on == expected(offload, phase, run21.components), (offload, phase, sorted(on))


def test_21_text_encoder_leaves_before_references_are_encoded(run21):
    """Defect 3, stated alone: an 8-12 GB card cannot hold the 8-bit text encoder and the VAE encoder's activations."""
    assert all("text_encoder" not in on for on in run21.seen["references"])


def test_21_vae_leaves_after_the_engines_decode(run21):
    """Defect 5: under model offload the VAE stayed on the accelerator after the engine's own decode, into the next
    job. Nothing whole is left there between jobs (group offload too)."""
    assert run21.after_first == frozenset()
    assert run21.after_last == frozenset()


def test_21_oom_retry_encodes_references_without_the_text_encoder():
    """Defect 3's retry: the prompt embedding is cached, so the retry never runs the text encoder, which therefore
    never moved off (group offload) and the retry ran out of memory again."""
    with Residency() as residency:
        engine = engine_on_cpu_accelerator("tiny", "12gb")
        pipe = engine._loaded.generate
        residency.watch(pipe)
        calls = []

        def out_of_memory_once(module, args):
            calls.append(1)
            if len(calls) == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.00 GiB (simulated)")

        handle = pipe.vae.encoder.register_forward_pre_hook(out_of_memory_once)
        try:
            result = engine.generate(request_for("make the fox blue", images=(picture(),)))
        finally:
            handle.remove()
    assert any("Ran out of GPU memory" in note for note in result.notes)
    assert engine.embed_cache.hits >= 1  # the retry reused the embedding: the text encoder did not run again
    first, retry = residency.seen["references"][0], residency.seen["references"][-1]
    assert "text_encoder" not in first
    assert "text_encoder" not in retry
    engine.unload()


def test_20b_role_switch_keeps_the_shared_text_encoder_hook():
    """Defect 1: switching between the 20B generate and edit pipelines removed every hook of the other pipeline,
    including the offload hook of the text encoder they share; under group offload it was never attached again, so
    the text encoder stayed on the CPU while the inputs went to the GPU."""
    with Residency() as residency:
        engine = engine_on_cpu_accelerator("tiny-qwen-image", "12gb")
        loaded = engine._loaded
        residency.watch(loaded.generate)
        te = loaded.generate.text_encoder
        prompts = iter(["a red fox", "make the fox blue", "a fox in the snow", "make it green"])
        first = engine.generate(request_for(next(prompts)))
        for images in [first.images, (), first.images]:
            residency.reset()
            result = engine.generate(request_for(next(prompts), images=images))
            assert result.request.mode == ("edit" if images else "generate")
            hook = offload_hook(te)
            assert hook is not None, f"the shared text encoder lost its offload hook ({result.request.mode})"
            assert hook.execution_device == torch.device(ACCELERATOR)
            assert residency.seen["encode"], "the text encoder did not run"
            assert all("text_encoder" in on for on in residency.seen["encode"]), "encoded off the accelerator"
            assert all(
                on == expected("group", phase, residency.components)
                for phase in ("references", "decode")
                for on in residency.seen.get(phase, [])
            )
        assert loaded._edit.text_encoder is te
    engine.unload()


def test_model_offload_role_switch_with_one_transformer_in_memory():
    """The 20B pair under model offload, keeping one transformer at a time: the shared modules keep working hooks."""
    with Residency() as residency:
        engine = engine_on_cpu_accelerator("tiny-qwen-image", "24gb", keep_both_transformers=False)
        loaded = engine._loaded
        residency.watch(loaded.generate)
        first = engine.generate(request_for("a red fox"))
        engine.generate(request_for("make the fox blue", images=first.images))
        assert loaded.generate.transformer is None
        again = engine.generate(request_for("a red fox"))
        assert again.images[0].size == first.images[0].size
        assert offload_hook(loaded.generate.text_encoder) is not None
        assert residency.on() == frozenset()
    engine.unload()
