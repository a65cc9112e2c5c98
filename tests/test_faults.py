"""GPU faults injected into the tiny pipeline: out of memory, NaN output, crashes; the server keeps serving."""

from __future__ import annotations

import pytest
import torch

from conversations.jobs import JobManager
from conversations.store import Store
from qwen_image.engine import EngineError
from qwen_image.generation import GenerationRequest


def fail_times(monkeypatch, obj, name, times, exc_factory, counter):
    """Make obj.name raise exc_factory() the first ``times`` calls, then behave normally."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        counter["calls"] = counter.get("calls", 0) + 1
        if counter["calls"] <= times:
            raise exc_factory()
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)


def oom():
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")


def test_oom_in_denoising_is_retried_with_lower_memory_settings(engine21, monkeypatch):
    pipe = engine21._loaded.generate
    count = {}
    fail_times(monkeypatch, pipe.transformer, "forward", 1, oom, count)
    result = engine21.generate(GenerationRequest(prompt="an injected fault", seed=3))
    assert len(result.images) == 1
    assert any("Ran out of GPU memory; retried with" in n and "KV cache off" in n for n in result.notes)
    monkeypatch.undo()
    assert engine21.generate(GenerationRequest(prompt="the next one", seed=4)).notes == ()


def test_oom_in_decoding_retries_the_decode_tiled(engine21, monkeypatch):
    vae = engine21._loaded.generate.vae
    count = {}
    fail_times(monkeypatch, vae, "decode", 1, oom, count)
    result = engine21.generate(GenerationRequest(prompt="decode fault", seed=5))
    assert any("decoded again with VAE tiling" in n for n in result.notes)
    assert vae.use_tiling
    monkeypatch.undo()


def test_persistent_oom_gives_a_clear_error_and_the_engine_keeps_serving(engine21, monkeypatch):
    pipe = engine21._loaded.generate
    fail_times(monkeypatch, pipe.transformer, "forward", 10**6, oom, {})
    with pytest.raises(EngineError, match="Out of GPU memory even with"):
        engine21.generate(GenerationRequest(prompt="never fits"))
    monkeypatch.undo()
    assert engine21.generate(GenerationRequest(prompt="fits again")).images


def test_nan_output_is_decoded_again_in_float32(engine21, monkeypatch):
    vae = engine21._loaded.generate.vae
    original = vae.decode
    calls = {"n": 0}

    def nan_once(z, *args, **kwargs):
        calls["n"] += 1
        out = original(z, *args, **kwargs)
        if calls["n"] == 1:
            return (torch.full_like(out[0], float("nan")),)
        return out

    monkeypatch.setattr(vae, "decode", nan_once)
    result = engine21.generate(GenerationRequest(prompt="nan fault", seed=6))
    assert any("decoded again in float32" in n for n in result.notes)
    assert calls["n"] == 2
    assert vae.dtype == torch.float32  # restored to the profile's dtype (float32 on the CPU)


def test_a_crash_marks_the_turn_failed_and_the_queue_moves_on(engine21, monkeypatch, tmp_path):
    store = Store(tmp_path)
    jobs = JobManager(engine21, store)
    try:
        owner = "anon-" + "a" * 24
        store.ensure_owner(owner)
        conv = store.create_conversation(owner)
        pipe = engine21._loaded.generate
        fail_times(monkeypatch, pipe.transformer, "forward", 1, lambda: RuntimeError("injected driver fault"), {})
        first = jobs.submit(owner, conv, engine21.resolve(GenerationRequest(prompt="crashes")), [])
        second = jobs.submit(owner, conv, engine21.resolve(GenerationRequest(prompt="works")), [])
        ends = [list(jobs.follow(owner, s.id, timeout=120))[-1] for s in (first, second)]
        assert [e.state for e in ends] == ["failed", "done"]
        assert "injected driver fault" in ends[0].error
        turns = store.get_conversation(owner, conv).turns
        assert [(t.status, len(t.outputs)) for t in turns] == [("failed", 0), ("done", 1)]
        assert "injected driver fault" in turns[0].error
    finally:
        jobs.shutdown()
        store.close()
