"""The opt-in speed switches (qwen_image.speed) with the tiny models on the CPU: --compile over every kind of
transformer the profiles make (dynamo traces with the "eager" backend: the same graph capture, no code generation),
and --attention-backend reaching every attention call it can.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from residency import ACCELERATOR
from test_offload import GPU

from qwen_image.engine import Engine
from qwen_image.generation import GenerationRequest
from qwen_image.hardware import Hardware
from qwen_image.loader import LoadOptions
from qwen_image.profiles import get_profile, profile_names
from qwen_image.registry import resolve_model
from qwen_image.speed import ATTENTION_HELP, COMPILE_HELP, MASK_EXACT_BACKENDS, compile_fullgraph, covers

CPU = Hardware(False, "", 0.0, 0.0, 16.0, 16.0)


def run(spec, profile, hardware, **options):
    engine = Engine(spec, profile, hardware, LoadOptions(**options))
    engine.start()
    engine.wait_ready()
    try:
        return engine, engine.generate(GenerationRequest(prompt="a red fox", seed=1, steps=2))
    finally:
        engine.unload()


@pytest.mark.parametrize(
    ("model", "transformer"),
    [pytest.param("tiny", "fp8", marks=pytest.mark.slow), ("tiny", "full")],
)
def test_compile_on_the_cpu_profile(model, transformer):
    """Defect 2: compile_repeated_blocks(fullgraph=True) over fp8 layerwise casting raised in dynamo on the first
    call (`torch.nn.Parameter()` constructor); full precision compiles as full graphs."""
    spec = resolve_model(model)
    profile = replace(get_profile("cpu", spec.family), transformer=transformer)
    engine, result = run(spec, profile, CPU, compile_blocks=True, compile_backend="eager")
    assert result.images[0].size == (64, 64)
    assert compile_fullgraph(profile) is (transformer == "full")


@pytest.mark.slow
def test_compile_under_block_streaming():
    """Defect 2 under group offload (fp8 + diffusers' compiler-disabled group-offload hooks), on the "cpu:0"
    accelerator."""
    spec = resolve_model("tiny")
    profile = get_profile("12gb", spec.family)
    assert not compile_fullgraph(profile)
    engine, result = run(spec, profile, GPU, compile_blocks=True, compile_backend="eager", device=ACCELERATOR)
    assert result.images[0].size == (64, 64)


def test_compile_decision_per_profile_is_what_help_says(capsys):
    full = {
        family: {name for name in profile_names() if compile_fullgraph(get_profile(name, family))}
        for family in ("qwen-image-2.1", "qwen-image")
    }
    assert full == {"qwen-image-2.1": {"48gb", "24gb", "cpu"}, "qwen-image": {"48gb", "cpu"}}
    assert "(48gb; 24gb for 2.1)" in COMPILE_HELP
    from qwen_image.cli import main
    from ui.launch import parse_args

    for show_help in (lambda: parse_args(["--help"]), lambda: main(["generate", "--help"])):
        with pytest.raises(SystemExit):
            show_help()
        text = " ".join(capsys.readouterr().out.split())
        assert " ".join(COMPILE_HELP.split()) in text and " ".join(ATTENTION_HELP.split()) in text


def test_cli_passes_the_speed_options(monkeypatch, tmp_path):
    from qwen_image import cli

    seen = {}

    def fake_build_engine(choice, options=None):
        seen["options"] = options
        raise SystemExit(0)

    monkeypatch.setattr("qwen_image.factory.build_engine", fake_build_engine)
    args = ["generate", "--model", "tiny", "--prompt", "a fox", "--out", str(tmp_path / "f.png")]
    with pytest.raises(SystemExit):
        cli.main([*args, "--compile", "--attention-backend", "_native_math"])
    assert seen["options"].compile_blocks is True and seen["options"].attention_backend == "_native_math"


@pytest.fixture
def attention_calls(monkeypatch):
    """Counts of diffusers attention calls per backend (every dispatch_attention_fn call lands in the registry)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    counts = Counter()
    for name, fn in list(_AttentionBackendRegistry._backends.items()):

        def counting(*args, _fn=fn, _name=str(getattr(name, "value", name)), **kwargs):
            counts[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setitem(_AttentionBackendRegistry._backends, name, counting)
    return counts


@pytest.mark.parametrize(
    ("model", "kv_cache"),
    [("tiny", True), ("tiny", False), ("tiny-qwen-image", False)],
)
def test_mask_exact_backend_reaches_every_call(attention_calls, model, kv_cache):
    """A backend that computes boolean masks exactly runs every transformer attention call, 2.1's masked prefill
    (the first step; every step without the KV cache) included."""
    spec = replace(resolve_model(model), kv_cache=kv_cache)
    assert "_native_math" in MASK_EXACT_BACKENDS
    run(spec, get_profile("cpu", spec.family), CPU, attention_backend="_native_math")
    assert attention_calls["_native_math"] > 0
    assert attention_calls["native"] == 0, dict(attention_calls)


def test_maskless_backend_runs_21(attention_calls):
    """Defect 9: diffusers 0.42's set_attention_backend also made the backend process-wide active, and 2.1's
    prefill hands it boolean masks: with a mask-less kernel (flash, sage; here PyTorch's flash kernel, which the CPU
    has too) the first step of every 2.1 job raised. Now the prefill keeps SDPA and the cached steps use the kernel."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    spec = resolve_model("tiny")
    profile = replace(get_profile("cpu", spec.family), dtype="bfloat16")  # the flash kernel takes 16-bit inputs
    engine, result = run(spec, profile, CPU, attention_backend="_native_flash")
    assert result.images[0].size == (64, 64)
    assert attention_calls["_native_flash"] > 0  # the KV-cached steps
    assert attention_calls["native"] > 0  # the masked prefill
    assert _AttentionBackendRegistry._active_backend == before  # nothing process-wide changed


def test_attention_backend_is_not_left_process_wide(attention_calls):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    spec = resolve_model("tiny-qwen-image")
    run(spec, get_profile("cpu", spec.family), CPU, attention_backend="_native_math")
    assert _AttentionBackendRegistry._active_backend == before


def test_what_the_attention_backend_covers():
    assert "every" in covers("_native_math")
    assert "prefill" in covers("flash") and "KV-cached" in covers("flash")
    assert "default" in covers(None)
