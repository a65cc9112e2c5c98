"""The memory planner: profile choice for given VRAM/RAM, the Done-when memory targets, and exact weight bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_image.hardware import GiB, Hardware
from qwen_image.planner import Workload, choose, coefficients, count_params, planning_workload, predict, weight_bytes
from qwen_image.profiles import get_profile, gpu_profiles, profile_names
from qwen_image.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
REG = load_registry()
SPEC21 = REG.get("qwen-image-2.1")
SPEC20 = REG.get("qwen-image")


# -- (a) profile choice ---------------------------------------------------------------------------------------------
# What the planner picks for a card of this many GiB (RAM not limiting). 2.1 at 12 GiB keeps model offload (16gb:
# predicted 11.2 GiB, under the 11.5 GiB budget); the 20B model at 48 GiB does not fit resident in bf16.
EXPECTED = {
    "qwen-image-2.1": {80: "48gb", 48: "48gb", 24: "24gb", 16: "16gb", 12: "16gb", 8: "8gb"},
    "qwen-image": {80: "48gb", 48: "24gb", 24: "24gb", 16: "16gb", 12: "16gb", 8: "8gb"},
}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_choose_profile_for_card_sizes(model):
    spec = REG.get(model)
    order = [p.name for p in gpu_profiles(spec.family)]
    previous = -1
    for vram in (80, 48, 24, 16, 12, 8):
        plan = choose(spec, vram)
        assert plan.profile == EXPECTED[model][vram], (model, vram, plan.profile)
        assert plan.fits is True
        assert plan.peak_gb <= plan.budget_gb == vram - 0.5
        # less memory never picks a more resident profile
        assert order.index(plan.profile) >= previous
        previous = order.index(plan.profile)


def test_choose_keeps_text_encoder_8bit_on_16gb():
    for spec in (SPEC21, SPEC20):
        plan = choose(spec, 16)
        assert get_profile(plan.profile, spec.family).text_encoder == "int8"
        assert "text encoder 8-bit" in plan.profile_settings
    assert "offload group" in choose(SPEC20, 16).profile_settings  # the family override
    assert "transformer fp8" in choose(SPEC21, 8).profile_settings and "nf4" in choose(SPEC21, 8).profile_settings


def test_ram_limit_pushes_to_a_profile_with_less_offloaded_weight():
    roomy = choose(SPEC21, 24, ram_gb=64)
    assert roomy.profile == "24gb" and roomy.host_ram_gb > 16 * 0.85
    tight = choose(SPEC21, 24, ram_gb=16)
    assert tight.profile != "24gb"
    assert tight.fits and tight.host_ram_gb <= 16 * 0.85
    # nothing is offloaded when everything is resident: RAM does not matter
    assert choose(SPEC21, 80, ram_gb=8).profile == "48gb"


def test_ram_check_counts_the_load_peak_not_only_the_offloaded_weights():
    """Defect 8: loading holds more than the weights it keeps (a LoRA, one float32 tensor); a profile whose offloaded
    weights fit but whose load peak does not must not be chosen."""
    roomy = choose(SPEC20, 24, ram_gb=128)
    transient = coefficients()["load_transient_gb"]
    assert roomy.profile == "24gb"
    assert roomy.load_ram_gb == pytest.approx(roomy.host_ram_gb + transient, abs=0.01) and transient > 0
    # RAM for the offloaded weights, not for the load peak
    ram = (roomy.host_ram_gb + transient / 2) / coefficients()["ram_fraction"]
    assert choose(SPEC20, 24, ram_gb=ram).profile != "24gb"
    # on the CPU the load peak counts against the RAM budget too
    cpu = predict(SPEC21, get_profile("cpu", SPEC21.family), planning_workload(SPEC21), budget_gb=1e6)
    assert cpu.load_ram_gb == pytest.approx(sum(cpu.weights_gb.values()) + transient, abs=0.01)


def test_ram_too_small_for_every_profile_is_not_a_fit():
    plan = choose(SPEC21, 24, ram_gb=4)
    assert plan.fits is False
    assert plan.profile == "8gb"  # the smallest
    assert any("system RAM" in note for note in plan.notes)


def test_no_profile_fits_a_tiny_card():
    plan = choose(SPEC20, 3)
    assert plan.fits is False
    assert plan.peak_gb == min(
        predict(SPEC20, p, planning_workload(SPEC20)).peak_gb for p in gpu_profiles("qwen-image")
    )


def test_choose_setup_without_cuda_gives_cpu_profile_and_tiny():
    from qwen_image.factory import choose_setup

    hw = Hardware(cuda=False, gpu_name="", vram_total_gb=0, vram_free_gb=0, ram_total_gb=32, ram_available_gb=24)
    choice = choose_setup("auto", hardware=hw)
    assert choice.spec.key == "tiny"
    assert choice.plan.profile == "cpu"
    assert choice.hardware is hw
    assert "CPU" in choice.reason
    assert choice.plan.budget_gb == pytest.approx(24 * 0.85)
    # a named model on a machine without CUDA still gets the CPU profile
    assert choose_setup("tiny-qwen-image", hardware=hw).plan.profile == "cpu"


def test_choose_setup_with_a_fake_gpu():
    from qwen_image.factory import choose_setup

    hw = Hardware(
        cuda=True, gpu_name="RTX 4090", vram_total_gb=24, vram_free_gb=23.5, ram_total_gb=64, ram_available_gb=60
    )
    choice = choose_setup("auto", hardware=hw)
    assert choice.spec.key == "qwen-image-2.1"
    assert choice.plan.profile == "24gb"
    assert "fit 23.5 GiB" in choice.reason
    forced = choose_setup("auto", profile="12gb", hardware=hw)
    assert forced.plan.profile == "12gb" and "--profile" in forced.reason
    # --vram without --ram plans for the card alone
    hypothetical = choose_setup("qwen-image", hardware=hw, vram_gb=16)
    assert hypothetical.plan.profile == "16gb"


def test_profiles_are_consistent():
    names = profile_names()
    assert {"48gb", "24gb", "16gb", "12gb", "8gb", "minimal", "cpu"} <= set(names)
    cpu = get_profile("cpu")
    assert cpu.device == "cpu" and cpu.offload == "none" and cpu.text_encoder == "int8"
    assert "minimal" not in [p.name for p in gpu_profiles("qwen-image-2.1")]
    assert get_profile("24gb", "qwen-image").transformer == "fp8"
    assert get_profile("24gb", "qwen-image-2.1").transformer == "full"
    with pytest.raises(KeyError, match="unknown profile"):
        get_profile("4gb")


def test_vae_tiling_policy_in_predict():
    w = planning_workload(SPEC21)
    auto = get_profile("24gb")
    assert predict(SPEC21, auto, w, budget_gb=1000).vae_tiling is False
    assert predict(SPEC21, auto, w, budget_gb=1).vae_tiling is True
    assert predict(SPEC21, get_profile("8gb"), w, budget_gb=1000).vae_tiling is True  # "on"
    untiled = predict(SPEC21, auto, w, tiling=False)
    tiled = predict(SPEC21, auto, w, tiling=True)
    assert tiled.phases_gb["decode"] < untiled.phases_gb["decode"]


def test_bigger_workloads_need_more_memory():
    prof = get_profile("48gb")
    base = predict(SPEC21, prof, Workload(1024, 1024))
    assert predict(SPEC21, prof, Workload(2048, 2048)).peak_gb > base.peak_gb
    batch = predict(SPEC21, prof, Workload(1024, 1024, num_images=4))
    assert batch.phases_gb["denoise"] > base.phases_gb["denoise"]
    assert batch.phases_gb["decode"] == base.phases_gb["decode"]  # VAE slicing: one image at a time
    edit = predict(SPEC21, prof, Workload(1024, 1024, references=4))
    assert "references" in edit.phases_gb and "references" not in base.phases_gb
    assert edit.phases_gb["encode"] > base.phases_gb["encode"]
    assert edit.phases_gb["denoise"] > base.phases_gb["denoise"]


# -- (b) the Done-when targets, through the command line ------------------------------------------------------------
PLANS = {
    "2.1@16": (["--model", "qwen-image-2.1", "--vram", "16"], 15.5),
    "2.1@8": (["--model", "qwen-image-2.1", "--vram", "8"], 7.5),
    "20B@16": (["--model", "qwen-image", "--vram", "16"], 15.5),
}


def _check_plan_output(key: str, out: dict) -> None:
    limit = PLANS[key][1]
    plan = out["plan"]
    assert plan["peak_gb"] <= limit
    assert plan["peak_gb"] * GiB <= limit * 1e9  # also in decimal gigabytes
    assert plan["fits"] is True
    assert set(plan["phases_gb"]) >= {"encode", "denoise", "decode"}
    assert plan["peak_gb"] == max(plan["phases_gb"].values())
    if key.endswith("@16"):
        assert plan["profile"] == "16gb"
        assert "text encoder 8-bit" in plan["profile_settings"]
    else:
        assert plan["profile"] == "8gb"


@pytest.mark.parametrize("key", sorted(PLANS))
def test_plan_cli_targets(capsys, key):
    """`plan --json` through the CLI entry point, in this process."""
    from qwen_image.cli import main

    assert main(["plan", *PLANS[key][0], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == PLANS[key][0][1]
    _check_plan_output(key, out)


@pytest.mark.slow
def test_plan_command_in_a_fresh_process():
    """The Done-when command exactly as a user types it."""
    args = [sys.executable, "-m", "qwen_image", "plan", *PLANS["2.1@16"][0], "--json"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_plan_output("2.1@16", json.loads(proc.stdout))


def test_plan_cli_text_output(capsys):
    from qwen_image.cli import main

    assert main(["plan", "--model", "qwen-image", "--vram", "24", "--all"]) == 0
    text = capsys.readouterr().out
    assert "profile: 24gb" in text and "peak:" in text
    for name in ("48gb", "16gb", "8gb", "cpu"):
        assert name in text


# -- (c) planner bytes equal independently counted bytes -----------------------------------------------------------
def _tiny_modules(arch: str) -> dict:
    """The tiny checkpoint's components, loaded in float32 through from_pretrained."""
    import diffusers
    import torch
    import transformers

    from qwen_image.tiny import ensure_tiny

    root = ensure_tiny(arch)
    if arch == "tiny-qwen-image-2.1":
        classes = (diffusers.QwenImage21Transformer2DModel, diffusers.AutoencoderKLQwenImage21)
        te_cls = transformers.Qwen3VLForConditionalGeneration
    else:
        root = root / "generate"
        classes = (diffusers.QwenImageTransformer2DModel, diffusers.AutoencoderKLQwenImage)
        te_cls = transformers.Qwen2_5_VLForConditionalGeneration
    return {
        "transformer": classes[0].from_pretrained(root, subfolder="transformer", torch_dtype=torch.float32),
        "vae": classes[1].from_pretrained(root, subfolder="vae", torch_dtype=torch.float32),
        "text_encoder": te_cls.from_pretrained(root / "text_encoder", dtype=torch.float32),
        "te_class": te_cls,
        "root": root,
    }


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("arch", ["tiny-qwen-image-2.1", "tiny-qwen-image"])
def test_full_precision_bytes_match_the_modules(arch):
    modules = _tiny_modules(arch)
    counts = count_params(arch)
    for comp in ("transformer", "vae", "text_encoder"):
        module = modules[comp]
        assert all(p.dtype.is_floating_point and p.element_size() == 4 for p in module.parameters())
        assert weight_bytes(counts[comp], "full", 4) == _nbytes(module.parameters()), comp
    lm_head = modules["text_encoder"].lm_head.weight.numel()
    assert counts["text_encoder"].lm_head == lm_head
    total = _nbytes(modules["text_encoder"].parameters())
    assert weight_bytes(counts["text_encoder"], "full", 4, drop_lm_head=True) == total - 4 * lm_head


@pytest.mark.parametrize("arch", ["tiny-qwen-image-2.1", "tiny-qwen-image"])
def test_int8_text_encoder_bytes_match_bitsandbytes(arch):
    import torch
    import transformers

    paths = {"tiny-qwen-image-2.1": "text_encoder", "tiny-qwen-image": "generate/text_encoder"}
    from qwen_image.tiny import ensure_tiny

    cls = (
        transformers.Qwen3VLForConditionalGeneration
        if arch == "tiny-qwen-image-2.1"
        else transformers.Qwen2_5_VLForConditionalGeneration
    )
    from qwen_image.loader import text_encoder_quantization

    for quantize_vision in (False, True):  # the app's choice for 8-bit (vision tower in bf16) and the other
        model = cls.from_pretrained(
            ensure_tiny(arch) / paths[arch],
            dtype=torch.bfloat16,
            quantization_config=text_encoder_quantization("int8", torch.bfloat16, quantize_vision=quantize_vision),
        )
        state = model.state_dict()
        assert any(t.dtype == torch.int8 for t in state.values())
        vision_int8 = any(t.dtype == torch.int8 for k, t in state.items() if k.startswith("model.visual."))
        assert vision_int8 is quantize_vision
        kept = [t for k, t in state.items() if "lm_head" not in k and not k.endswith("weight_format")]
        actual = _nbytes(kept)
        counts = count_params(arch)["text_encoder"]
        predicted = weight_bytes(counts, "int8", 2, drop_lm_head=True, quantize_vision=quantize_vision)
        assert abs(actual - predicted) <= 16, (quantize_vision, actual, predicted)
    default = weight_bytes(counts, "int8", 2, drop_lm_head=True)
    assert default == weight_bytes(counts, "int8", 2, drop_lm_head=True, quantize_vision=False)


PUBLISHED = {
    ("qwen-image-2.1", "transformer"): 7.115e9,
    ("qwen-image-2.1", "text_encoder"): 8.767e9,
    ("qwen-image-2.1", "vae"): 0.338e9,
    ("qwen-image", "transformer"): 20.43e9,
    ("qwen-image", "text_encoder"): 8.292e9,
    ("qwen-image", "vae"): 0.127e9,
}


@pytest.mark.parametrize(("arch", "comp"), sorted(PUBLISHED))
def test_real_parameter_counts_match_published_figures(arch, comp):
    total = count_params(arch)[comp].total
    assert total == pytest.approx(PUBLISHED[(arch, comp)], rel=0.005)


def test_real_counts_details():
    te21, te20 = count_params("qwen-image-2.1")["text_encoder"], count_params("qwen-image")["text_encoder"]
    assert te21.lm_head == 151936 * 4096 and te20.lm_head == 152064 * 3584
    assert (te21.layers, te21.hidden) == (36, 4096) and (te20.layers, te20.hidden) == (28, 3584)
    tr21, tr20 = count_params("qwen-image-2.1")["transformer"], count_params("qwen-image")["transformer"]
    assert (tr21.blocks, tr21.hidden) == (32, 4096) and (tr20.blocks, tr20.hidden) == (60, 3072)
    # bf16 weights as in the brief's table: 14.2 / 40.9 / 17.5 / 16.6 GB
    assert weight_bytes(tr21, "full", 2) / 1e9 == pytest.approx(14.2, abs=0.1)
    assert weight_bytes(tr20, "full", 2) / 1e9 == pytest.approx(40.9, abs=0.1)
    assert weight_bytes(te21, "full", 2) / 1e9 == pytest.approx(17.5, abs=0.1)
    assert weight_bytes(te20, "full", 2) / 1e9 == pytest.approx(16.6, abs=0.1)
    # int8 keeps embeddings (and lm_head, unless dropped) in 16 bits: about 10.0 / 9.4 GB with the vision tower
    # quantized, and the vision tower in bf16 (the app's 8-bit choice) adds its int8 savings back: ~0.6 / 0.7 GB
    assert weight_bytes(te21, "int8", 2, quantize_vision=True) / 1e9 == pytest.approx(10.0, abs=0.15)
    assert weight_bytes(te20, "int8", 2, quantize_vision=True) / 1e9 == pytest.approx(9.4, abs=0.15)
    for te, extra in ((te21, 0.57), (te20, 0.67)):
        kept = weight_bytes(te, "int8", 2, quantize_vision=False) - weight_bytes(te, "int8", 2, quantize_vision=True)
        assert kept / 1e9 == pytest.approx(extra, abs=0.03)
    for counts in (tr21, tr20, te21):
        assert weight_bytes(counts, "nf4", 2) < weight_bytes(counts, "int8", 2) < weight_bytes(counts, "full", 2)
    with pytest.raises(ValueError, match="unknown precision"):
        weight_bytes(tr21, "int4", 2)


@pytest.mark.parametrize("arch", ["qwen-image-2.1", "qwen-image"])
def test_fp8_bytes_close_to_layerwise_casting(arch):
    """fp8 layerwise casting as diffusers applies it, on the meta device at real size (within 1%)."""
    import torch

    from qwen_image.architectures import build_module, load_architecture

    module = build_module(load_architecture(arch)["transformer"], device="meta", dtype=None).to(torch.bfloat16)
    module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    actual = _nbytes(module.parameters())
    predicted = weight_bytes(count_params(arch)["transformer"], "fp8", 2)
    assert predicted == pytest.approx(actual, rel=0.01)


def test_group_profiles_stream_one_block_per_group():
    """diffusers streams one block per group on a CUDA stream (it overrides num_blocks_per_group), so the planner's
    'running + prefetched group' counts two blocks only if the profile says one block per group."""
    for family in ("qwen-image-2.1", "qwen-image"):
        for name in profile_names():
            profile = get_profile(name, family)
            if profile.offload == "group":
                assert profile.group_blocks == 1, (family, name)


@pytest.mark.parametrize("profile", ["12gb", "8gb"])
def test_21_edit_with_a_1024_reference_fits_12_and_8_gb(profile):
    """Issue 10's Done-when: every phase of a 2.1 edit with one 1024-px reference fits the card, counting what the
    engine really keeps on the GPU in that phase (the text encoder is gone before the references are encoded)."""
    from qwen_image.planner import PHASE_USES, resident_components

    prof = get_profile(profile, "qwen-image-2.1")
    workload = Workload(1024, 1024, references=1, reference_resolution=1024)
    budget = prof.card_gb - 0.5
    plan = predict(SPEC21, prof, workload, budget_gb=budget)
    assert set(plan.phases_gb) == set(PHASE_USES) and plan.fits
    assert max(plan.phases_gb.values()) <= budget
    assert "text_encoder" not in resident_components(prof.offload, "references")
    w = plan.weights_gb
    context = 0.45
    refs = plan.phases_gb["references"]
    assert refs == pytest.approx(w["vae"] + plan.activations_gb["references"] + context, abs=0.01)


def test_nf4_bytes_match_bitsandbytes():
    """The planner's nf4 bytes (double quantization: 8-bit block scales, one fp32 per 256 of them) against what
    bitsandbytes stores for a weight of the real width."""
    import bitsandbytes.functional as bnbf
    import torch

    from qwen_image.loader import NF4_DOUBLE_QUANT
    from qwen_image.planner import nf4_scale_bytes

    weight = torch.randn(4096, 1152, dtype=torch.bfloat16)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=NF4_DOUBLE_QUANT)
    stored = [packed, state.absmax] + ([state.state2.absmax] if NF4_DOUBLE_QUANT else [])
    assert _nbytes(stored) == weight.numel() // 2 + nf4_scale_bytes(weight.numel())
