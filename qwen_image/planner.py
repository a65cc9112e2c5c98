"""The VRAM planner: predicted peak memory per component for model x profile x workload.

Weight bytes come from parameter counts taken on the meta device from the real-size configs in configs/real/ (exact,
no weights needed) and the storage format of each precision. Activations follow a small model whose coefficients
are data in configs/planner.toml. A run goes through phases (encode the prompt, encode references, denoise, decode);
the peak is the largest phase, counting the weights resident on the GPU in that phase under the profile's offload.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from functools import cache

from .architectures import CONFIG_DIR, build_module, load_architecture
from .hardware import GiB
from .loader import NF4_DOUBLE_QUANT, QUANTIZE_VISION_TOWER, VISION_TOWER
from .profiles import Profile, get_profile, gpu_profiles


@cache
def coefficients() -> dict:
    return tomllib.loads((CONFIG_DIR / "planner.toml").read_text())


@dataclass(frozen=True)
class ComponentCounts:
    total: int  # all parameters
    linear: int  # weights of nn.Linear layers bitsandbytes would quantize (lm_head excluded)
    linear_rows: int  # their output features (one fp32 scale per row in LLM.int8)
    castable: int  # weights that fp8 layerwise casting stores in 8 bits (Linear and Conv weights)
    lm_head: int
    blocks: int  # repeated blocks (transformer) or decoder layers (text encoder)
    block_params: int
    hidden: int
    layers: int
    intermediate: int
    vision_linear: int = 0  # the part of ``linear`` in the text encoder's vision tower
    vision_rows: int = 0


@cache
def count_params(arch_name: str) -> dict[str, ComponentCounts]:
    """Parameter counts of every component, on the meta device."""
    arch = load_architecture(arch_name)
    comps = ("text_encoder", "transformer", "vae")
    return {comp: component_counts(build_module(arch[comp], device="meta"), comp) for comp in comps}


def component_counts(module, comp: str) -> ComponentCounts:
    """The counts the weight model needs, from a built module (any device, meta included)."""
    import torch

    total = sum(p.numel() for p in module.parameters())
    linear = rows = castable = lm_head = vision_linear = vision_rows = 0
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            if name.endswith("lm_head"):
                lm_head = m.weight.numel()
                continue
            linear += m.weight.numel()
            rows += m.out_features
            castable += m.weight.numel()
            if name.startswith(VISION_TOWER + "."):
                vision_linear += m.weight.numel()
                vision_rows += m.out_features
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            castable += m.weight.numel()
    blocks, block_params, hidden, layers, inter = 0, 0, 0, 0, 0
    if comp == "transformer":
        blocks = len(module.transformer_blocks)
        block_params = sum(p.numel() for p in module.transformer_blocks[0].parameters())
        hidden = module.config.num_attention_heads * module.config.attention_head_dim
    elif comp == "text_encoder":
        tc = module.config.text_config
        layers, hidden, inter = tc.num_hidden_layers, tc.hidden_size, tc.intermediate_size
        blocks = layers
        block_params = sum(p.numel() for p in module.model.language_model.layers[0].parameters())
    return ComponentCounts(
        total, linear, rows, castable, lm_head, blocks, block_params, hidden, layers, inter, vision_linear, vision_rows
    )


def weight_bytes(
    counts: ComponentCounts,
    precision: str,
    dtype_bytes: int,
    drop_lm_head: bool = False,
    quantize_vision: bool | None = None,
) -> int:
    """Bytes of a component's weights stored at ``precision`` ("full", "int8", "nf4", "fp8"); a text encoder's
    vision tower is quantized as the loader's QUANTIZE_VISION_TOWER says unless ``quantize_vision`` is given."""
    total = counts.total - (counts.lm_head if drop_lm_head else 0)
    if precision == "full":
        return total * dtype_bytes
    if quantize_vision is None:
        quantize_vision = QUANTIZE_VISION_TOWER.get(precision, True)
    linear, rows = counts.linear, counts.linear_rows
    if not quantize_vision:
        linear, rows = linear - counts.vision_linear, rows - counts.vision_rows
    if precision == "int8":  # LLM.int8: int8 weights + one fp32 scale per output row; the rest stays 16-bit
        return linear + 4 * rows + (total - linear) * dtype_bytes
    if precision == "nf4":  # 4-bit weights + per 64-weight block one absmax: 8-bit, itself scaled per 256 blocks
        return linear // 2 + nf4_scale_bytes(linear) + (total - linear) * dtype_bytes
    if precision == "fp8":  # layerwise casting: Linear/Conv weights in float8, norms and biases in dtype
        return counts.castable + (total - counts.castable) * dtype_bytes
    raise ValueError(f"unknown precision {precision!r}")


def nf4_scale_bytes(weights: int) -> int:
    """Bytes of the block scales of ``weights`` nf4 weights (blocks of 64): fp32 each, or with double quantization
    (the loader's NF4_DOUBLE_QUANT) uint8 each plus one fp32 per 256 of them."""
    blocks = math.ceil(weights / 64)
    return blocks + 4 * math.ceil(blocks / 256) if NF4_DOUBLE_QUANT else 4 * blocks


def lm_head_bytes(counts: ComponentCounts, profile: Profile) -> int:
    """The text encoder's vocabulary projection as the local prompt enhancer loads it (qwen_image.enhance.lm_head):
    LLM.int8 (int8 weights + one float32 scale per vocabulary row) beside an 8-/4-bit text encoder, else the dtype."""
    from .enhance.lm_head import wants_int8

    if wants_int8(profile.text_encoder):
        return counts.lm_head + 4 * (counts.lm_head // counts.hidden)
    return counts.lm_head * profile.dtype_bytes


@dataclass(frozen=True)
class Workload:
    width: int = 1024
    height: int = 1024
    references: int = 0
    reference_resolution: int = 1024
    prompt_tokens: int = 512
    num_images: int = 1
    cfg: bool = False
    kv_cache: bool = True
    enhancer: bool = False  # the local prompt enhancer is on: the text encoder's lm_head is loaded (lm_head_resident)


@dataclass(frozen=True)
class Plan:
    model: str
    profile: str
    profile_label: str
    profile_settings: str
    workload: dict
    weights_gb: dict  # component -> bytes in its stored precision (GiB)
    activations_gb: dict  # phase -> activation GiB
    phases_gb: dict  # phase -> predicted GPU bytes in that phase (weights resident + activations + context)
    peak_gb: float
    peak_phase: str
    vae_tiling: bool
    host_ram_gb: float  # weights kept in system RAM by offloading
    load_ram_gb: float  # system RAM at the load peak: weights kept in RAM plus what loading holds on top
    fits: bool | None = None
    budget_gb: float | None = None
    notes: tuple = field(default=())

    def as_dict(self) -> dict:
        return asdict(self)


def _tokens(spec, arch, w: Workload) -> dict:
    fam = coefficients()["family"][spec.family]
    text = arch.text
    per_ref_vision = 0
    if w.references:
        cond_px = text.get("condition_pixels") or w.reference_resolution**2
        per_ref_vision = cond_px // (text["vision_patch"] * text["vision_merge"]) ** 2
    te_tokens = text["edit_template_tokens" if w.references else "template_tokens"] + w.prompt_tokens
    te_tokens += w.references * per_ref_vision
    target = (w.width * w.height) // fam["latent_pixels_per_token"]
    refs = w.references * (w.reference_resolution**2 // fam["latent_pixels_per_token"])
    text_tokens = w.prompt_tokens + w.references * per_ref_vision
    vision_patches = w.references * (
        (text.get("condition_pixels") or w.reference_resolution**2) // text["vision_patch"] ** 2
    )
    return {"te": te_tokens, "target": target, "refs": refs, "text": text_tokens, "vision_patches": vision_patches}


def _activations(spec, profile: Profile, w: Workload, counts, tiling: bool) -> dict:
    """Activation bytes of each phase."""
    co = coefficients()
    fam = co["family"][spec.family]
    arch = load_architecture(spec.real_config)
    b = profile.dtype_bytes
    tok = _tokens(spec, arch, w)
    te, tr = counts["text_encoder"], counts["transformer"]
    passes = 2 if w.cfg else 1
    # text encoder: every layer's hidden state is kept (output_hidden_states) plus one layer's MLP intermediates
    enc = (te.layers + 1) * tok["te"] * te.hidden * b + 3 * tok["te"] * te.intermediate * b
    enc += tok["vision_patches"] * 8 * 1280 * b  # vision tower, one layer alive at a time
    # transformer: one block's tensors for the whole sequence, for each image of the batch
    seq = tok["target"] + tok["refs"] + tok["text"]
    den = w.num_images * seq * tr.hidden * b * fam["act_factor"]
    if spec.kv_cache and w.kv_cache:  # prefix K/V of text and references for every block, per CFG branch
        den += passes * w.num_images * tr.blocks * 2 * (tok["text"] + tok["refs"]) * tr.hidden * b
    ref_px = w.reference_resolution**2
    per_px = fam["vae_decode_bytes_per_pixel"] * b / 2
    tiled = fam["vae_tiled_decode_gb"] * GiB * b / 2
    refs = 0 if not w.references else (tiled if tiling else ref_px * per_px)
    batch = 1 if profile.vae_slicing else w.num_images
    dec = tiled if tiling else w.width * w.height * per_px * batch
    slack = co["allocator_slack"]
    return {"encode": enc * slack, "references": refs * slack, "denoise": den * slack, "decode": dec * slack}


PHASE_USES = {"encode": "text_encoder", "references": "vae", "denoise": "transformer", "decode": "vae"}


def resident_components(offload: str, phase: str) -> frozenset:
    """Whole components on the GPU during a phase, as the engine's offloading places them (qwen_image.offload).

    none: everything. model: the component the phase runs (the text encoder leaves before references are encoded,
    the VAE before denoising and after the engine's decode). group: the same, except that the transformer only
    streams its blocks (counted apart). sequential: nothing whole (one submodule at a time, counted apart).
    """
    if offload == "none":
        return frozenset(PHASE_USES.values())
    if offload == "model":
        return frozenset({PHASE_USES[phase]})
    if offload == "group":
        return frozenset({PHASE_USES[phase]}) - {"transformer"}
    return frozenset()


def lm_head_resident(offload: str, phase: str) -> bool:
    """Whether the local prompt enhancer's lm_head (``Workload.enhancer``) is on the device during a phase: beside the
    text encoder. With the text encoder resident throughout (offload none) it stays loaded between rewrites; an
    offloading profile loads it for each rewrite, which runs with the text encoder on the device as its encoding does
    (``resident_components``; sequential offload streams the text encoder then), and releases it after
    (qwen_image.enhance.local)."""
    return offload == "none" or PHASE_USES[phase] == "text_encoder"


def _resident(profile: Profile, weights: dict, counts, phase: str, tr_precision_bytes: float) -> float:
    """Weight bytes on the GPU during a phase."""
    whole = sum(weights[c] for c in resident_components(profile.offload, phase))
    c = counts["transformer"]
    if profile.offload == "group" and phase == "denoise":
        # non-block weights + the running group and the one prefetched on the copy stream
        groups = 2 * profile.group_blocks * c.block_params * tr_precision_bytes
        return whole + (c.total - c.blocks * c.block_params) * tr_precision_bytes + groups
    if profile.offload == "sequential":  # one submodule at a time
        return {
            "encode": counts["text_encoder"].block_params * 2,
            "references": weights["vae"],
            "denoise": c.block_params * tr_precision_bytes,
            "decode": weights["vae"],
        }[phase]
    return whole


def predict(
    spec, profile: Profile, workload: Workload, tiling: bool | None = None, budget_gb: float | None = None
) -> Plan:
    """Predicted memory of running ``workload`` with ``spec`` under ``profile``.

    ``tiling`` None applies the profile's policy: "auto" tiles only when the untiled decode would exceed the budget.
    """
    co = coefficients()
    fam = co["family"][spec.family]
    counts = count_params(spec.real_config)
    b = profile.dtype_bytes
    weights = {
        "text_encoder": weight_bytes(counts["text_encoder"], profile.text_encoder, b, fam["drop_lm_head"]),
        "transformer": weight_bytes(counts["transformer"], profile.transformer, b),
        "vae": weight_bytes(counts["vae"], "full", b),
    }
    if workload.enhancer:  # on the device beside the text encoder (lm_head_resident)
        weights["lm_head"] = lm_head_bytes(counts["text_encoder"], profile)
    tr_bytes_per_param = weights["transformer"] / counts["transformer"].total
    context = co["cuda_context_gb"] * GiB if profile.device == "cuda" else 0.0

    def phases(tile: bool) -> dict:
        act = _activations(spec, profile, workload, counts, tile)
        out = {}
        for phase in ("encode", "references", "denoise", "decode"):
            if phase == "references" and not workload.references:
                continue
            resident = _resident(profile, weights, counts, phase, tr_bytes_per_param)
            if lm_head_resident(profile.offload, phase):
                resident += weights.get("lm_head", 0)
            out[phase] = resident + act[phase] + context
        return out, act

    if tiling is None:
        if profile.vae_tiling == "on":
            tiling = True
        elif profile.vae_tiling == "off" or budget_gb is None:
            tiling = False
        else:
            untiled, _ = phases(False)
            tiling = max(untiled.get("decode", 0), untiled.get("references", 0)) > budget_gb * GiB
    by_phase, act = phases(tiling)
    peak_phase = max(by_phase, key=by_phase.get)
    peak = by_phase[peak_phase]
    stored = {k: v for k, v in weights.items() if k != "lm_head"}  # the enhancer's lm_head: on the device only
    host = 0.0 if profile.offload == "none" else sum(stored.values())
    load = load_ram(profile, stored)
    notes = []
    if spec.family == "qwen-image" and not spec.one_pipeline:
        notes.append("the edit transformer is loaded in place of the generate transformer when needed")
    if workload.enhancer:
        notes.append(
            "the local prompt enhancer's lm_head stays on the device once loaded"
            if profile.offload == "none"
            else "the local prompt enhancer's lm_head is on the device only while it rewrites (with the text encoder)"
        )
    return Plan(
        model=spec.key,
        profile=profile.name,
        profile_label=profile.label,
        profile_settings=profile.summary(),
        workload=asdict(workload),
        weights_gb={k: round(v / GiB, 3) for k, v in weights.items()},
        activations_gb={k: round(v / GiB, 3) for k, v in act.items()},
        phases_gb={k: round(v / GiB, 3) for k, v in by_phase.items()},
        peak_gb=round(peak / GiB, 3),
        peak_phase=peak_phase,
        vae_tiling=tiling,
        host_ram_gb=round(host / GiB, 3),
        load_ram_gb=round(load / GiB, 3),
        # on the CPU the budget is system RAM, which the load peak must fit too
        fits=None if budget_gb is None else max(peak, load if profile.device == "cpu" else 0) <= budget_gb * GiB,
        budget_gb=budget_gb,
        notes=tuple(notes),
    )


def load_ram(profile: Profile, weights: dict) -> float:
    """Bytes of system RAM at the load peak: the weights kept in RAM (all of them on a CPU device, the offloaded ones
    with a GPU) plus what loading holds on top of them (``load_transient_gb``).

    The loader keeps that top small: text encoders are built without the vocabulary projection they would otherwise
    materialise first (qwen_image.headless), fp8 transformers are streamed tensor by tensor with a LoRA fused on the
    way (qwen_image.fp8_load), and bf16 weights read by ``from_pretrained`` stay in the checkpoint's mmap'd pages until
    moved. Measured anonymous memory: bench/lora_fuse_ram.py and tests/test_hub_layout.py.
    """
    kept = sum(weights.values()) if profile.device == "cpu" or profile.offload != "none" else 0.0
    return kept + coefficients()["load_transient_gb"] * GiB


def planning_workload(spec, width: int | None = None, height: int | None = None, enhancer: bool = False) -> Workload:
    """The workload a profile is chosen for: the default size, a long prompt and one reference image (and the local
    prompt enhancer's lm_head when it is on)."""
    from .sizes import size_for

    co = coefficients()
    if width is None or height is None:
        width, height = size_for(spec, "1:1", spec.default_tier)
    return Workload(
        width=width,
        height=height,
        references=min(co["plan_references"], spec.max_references),
        reference_resolution=spec.reference_resolution,
        prompt_tokens=co["default_prompt_tokens"],
        cfg=spec.true_cfg > 1.0,
        kv_cache=spec.kv_cache,
        enhancer=enhancer,
    )


def choose(spec, vram_gb: float, ram_gb: float | None = None, workload: Workload | None = None) -> Plan:
    """The most resident CUDA profile whose predicted peak fits ``vram_gb`` (minus a margin) and whose load peak in
    system RAM (offloaded weights and loading's transient; ``ram_gb``: available to this process, a container's limit
    included) fits. When none does (fits=False): of the profiles that fit the card, the one needing the least RAM;
    else the smallest."""
    co = coefficients()
    workload = workload or planning_workload(spec)
    budget = max(0.1, vram_gb - co["budget_margin_gb"])
    plans = []
    for profile in gpu_profiles(spec.family):
        plan = predict(spec, profile, workload, budget_gb=budget)
        plans.append(plan)
        ram_ok = ram_gb is None or plan.load_ram_gb <= ram_gb * co["ram_fraction"]
        if plan.fits and ram_ok:
            return plan
    on_card = [p for p in plans if p.fits]
    if on_card:  # profiles fit the card but none's offloaded weights fit in system RAM: the one needing the least
        least = min(on_card, key=lambda p: (p.load_ram_gb, p.peak_gb))
        note = f"loading needs {least.load_ram_gb:.1f} GiB of system RAM, more than is usable"
        return replace(least, fits=False, notes=(*least.notes, note))
    return min(plans, key=lambda p: p.peak_gb)


def cpu_plan(spec, ram_gb: float, workload: Workload | None = None) -> Plan:
    profile = get_profile("cpu", spec.family)
    return predict(
        spec, profile, workload or planning_workload(spec), budget_gb=ram_gb * coefficients()["ram_fraction"]
    )
