"""Memory profiles on a CUDA GPU: real-size Qwen-Image-2.1 and Qwen-Image 20B with random weights.

Nothing is downloaded. Each component is built from its real config (configs/real/) with random weights directly on
the GPU in bf16 (qwen_image.architectures.build_module under torch's default dtype bf16) and the pipeline object is
ASSEMBLED IN MEMORY (no checkpoint folder), with the project's locally built tokenizer (qwen_image.tiny) and, for
2.1, a Qwen3-VL processor at the real patch size. The text encoder alone is saved once with save_pretrained so that
the 8-bit / nf4 profiles load it through transformers' BitsAndBytesConfig exactly as the app's loader does. The
transformer is rebuilt for every profile (fresh module, no hooks left over), cast to fp8 with the app's
qwen_image.loader.prepare_transformer where the profile says so, and placed with the app's LoadedModel /
qwen_image.loader.place_pipeline; every run goes through qwen_image.engine.Engine.generate, so its timings
(encode / denoise / decode) and OOM retry are the app's.

Each profile of configs/profiles.toml runs under a VRAM cap emulating its card
(torch.cuda.set_per_process_memory_fraction((card_gb - CUDA context) / total)); "48gb" is the resident bf16
reference and runs uncapped. Reported: peak VRAM (max_memory_allocated and max_memory_reserved + the CUDA context),
seconds per denoising step (median of steps 2..n), end-to-end seconds, the planner's prediction, and in the resident
run the fraction of bf16 peak FLOP/s (linear FLOPs counted by hooks on every nn.Linear during the warm-up, attention
4 * S_q * S_k * hidden per block).

    python bench/gpu_profiles.py                      # both models, every profile (~6-8 min on an H100)
    python bench/gpu_profiles.py --out "$OUT"         # results where the device runner collects them
    python bench/gpu_profiles.py --smoke              # tiny architectures, CUDA or CPU, seconds
    python bench/gpu_profiles.py --models qwen-image-2.1 --profiles 48gb,16gb

Without a CUDA GPU (and without --smoke) it prints "no CUDA GPU: skipped", writes a JSON saying so, and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import RESULTS, GiB, available_ram_gib, current_rss_bytes, machine_info, machine_line, markdown_table

NAME = "gpu_profiles"
MODELS = {"qwen-image-2.1": "tiny", "qwen-image": "tiny-qwen-image"}  # real registry key -> tiny one for --smoke
PROFILES = ("48gb", "24gb", "16gb", "12gb", "8gb")
REFERENCE = "48gb"
PROMPT = "A red fox sitting in a snowy forest at sunrise, soft golden light, detailed fur, cinematic photograph"
WARMUP_PROMPT = "A small wooden boat on a calm lake with mountains behind it, watercolor"
# Dense bf16 tensor-core peak FLOP/s by device name (first match wins); others are measured with a bf16 matmul.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX 4090", 165e12),
    ("RTX 4080", 97e12),
    ("A6000", 155e12),
    ("RTX 3090", 71e12),
    ("L4", 121e12),
    ("A10", 125e12),
)
TARGETS = (
    ("qwen-image-2.1", "16gb", "projected time <= 1.3x resident", 1.3),
    ("qwen-image-2.1", "12gb", "projected time <= 1.8x resident", 1.8),
    ("qwen-image-2.1", "8gb", "runs", None),
    ("qwen-image", "16gb", "runs", None),
)


# -- context -----------------------------------------------------------------------------------------------------------
class Context:
    """Device, CUDA context size, output folder, deadline and the results so far."""

    def __init__(self, args, cuda: bool):
        import torch

        self.args = args
        self.cuda = cuda
        self.device = "cuda" if cuda else "cpu"
        self.t0 = time.monotonic()
        self.out = Path(args.out) if args.out else RESULTS
        self.rows: list[dict] = []
        self.peak: dict | None = None
        self.info = machine_info()
        self.total_gib = torch.cuda.get_device_properties(0).total_memory / GiB if cuda else 0.0
        self.context_gib = cuda_context_gib() if cuda else 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def over_budget(self) -> bool:
        return self.elapsed() > self.args.budget_s

    def has_run(self, model: str) -> bool:
        return any(r.get("model") == model for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        write(self, self.peak)  # after every profile: a run cut short still leaves its results


def cuda_context_gib() -> float:
    """GPU memory in use outside PyTorch's allocator (CUDA context, cuBLAS workspace)."""
    import torch

    torch.zeros(1, device="cuda")
    torch.ones(64, 64, device="cuda", dtype=torch.bfloat16) @ torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return max(0.0, (total - free - torch.cuda.memory_reserved()) / GiB)


def free_device() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def set_cap(ctx: Context, card_gb: float | None) -> float | None:
    """Limit PyTorch's allocator to the card minus the CUDA context; None lifts the limit."""
    import torch

    if not ctx.cuda:
        return None
    if card_gb is None or card_gb - ctx.context_gib >= ctx.total_gib:
        torch.cuda.set_per_process_memory_fraction(1.0)
        return None
    cap = card_gb - ctx.context_gib
    torch.cuda.set_per_process_memory_fraction(cap / ctx.total_gib)
    return cap


# -- peak FLOP/s -------------------------------------------------------------------------------------------------------
def measured_matmul_flops(device: str, n: int, iters: int) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def peak_flops(ctx: Context) -> dict:
    name = ctx.info.get("cuda_device") or "cpu"
    table = next((v for k, v in PEAK_BF16 if k in name), None)
    n, iters = (8192, 30) if ctx.cuda else (512, 4)
    measured = measured_matmul_flops(ctx.device, n, iters)
    return {"device": name, "table": table, "measured_matmul": measured, "matmul_n": n}


# -- building the model in memory --------------------------------------------------------------------------------------
def build_bf16(component, device: str, overrides: dict | None = None):
    """A random-weight module created directly in bf16 on ``device`` (no float32 copy)."""
    import torch

    from qwen_image.architectures import build_module

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build_module(component, device=device, overrides=overrides)
    finally:
        torch.set_default_dtype(previous)


def processor_settings(arch) -> dict:
    """The tiny processor settings, at the real vision patch size."""
    patch = arch.text["vision_patch"]
    merge = arch.text["vision_merge"]
    cls = "Qwen3VLProcessor" if patch == 16 else "Qwen2VLProcessor"
    unit = (patch * merge) ** 2
    return {
        "class": cls,
        "patch_size": patch,
        "merge_size": merge,
        "temporal_patch_size": 2,
        "min_pixels": 4 * unit,
        "max_pixels": 1024 * 1024,
    }


def build_parts(spec, ctx: Context) -> dict:
    """Scheduler, tokenizer/processor, VAE and the bf16 text encoder of a model (random weights)."""
    import torch

    from qwen_image import tiny
    from qwen_image.architectures import load_architecture

    arch = load_architecture(spec.real_config)
    tokenizer = tiny.build_tokenizer()
    processor = None
    if spec.one_pipeline:  # 2.1 reads prompts through its processor; the 20B generate pipeline needs the tokenizer
        settings = arch.processor or processor_settings(arch)
        processor = tiny.make_processor(settings, tokenizer)
    vocab = arch["text_encoder"].kwargs["text_config"]["vocab_size"]
    torch.manual_seed(0)
    te = build_bf16(arch["text_encoder"], ctx.device, tiny.token_overrides(tokenizer, vocab))
    vae = build_bf16(arch["vae"], ctx.device)
    scheduler = tiny.make_scheduler()
    return {"tokenizer": tokenizer, "processor": processor, "vae": vae, "te_full": te, "scheduler": scheduler}


def assemble(spec, parts: dict, text_encoder, transformer):
    import diffusers

    cls = getattr(diffusers, spec.generate_pipeline)
    common = dict(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=text_encoder, transformer=transformer)
    if spec.one_pipeline:
        return cls(processor=parts["processor"], **common)
    return cls(tokenizer=parts["tokenizer"], **common)


class TextEncoders:
    """The bf16 encoder built in memory, and quantized ones loaded from its save_pretrained folder when needed."""

    def __init__(self, spec, parts: dict, folder: Path):
        self.spec = spec
        self.parts = parts
        self.folder = folder
        self.cache: dict = {}

    def get(self, precision: str, still_needed: set):
        """The encoder at ``precision``; ``still_needed``: precisions later profiles use (others are freed)."""
        import torch

        from qwen_image.loader import quantization_config
        from qwen_image.profiles import Profile

        for name in [k for k in self.cache if k != precision and k not in still_needed]:
            del self.cache[name]
        if precision == "full":
            return self.parts["te_full"]
        if not (self.folder / "config.json").is_file():
            self.parts["te_full"].save_pretrained(self.folder)
        if "full" not in still_needed:
            self.parts.pop("te_full", None)  # the bf16 copy is no longer needed
            free_device()
        if precision not in self.cache:
            probe = Profile("probe", "", 0, "cuda", "bfloat16", precision, "full", "none")
            config = quantization_config(probe).quant_mapping["text_encoder"]  # the app's BitsAndBytesConfig
            model = self._class().from_pretrained(self.folder, dtype=torch.bfloat16, quantization_config=config)
            self.cache[precision] = model.eval()
        return self.cache[precision]

    def _class(self):
        import transformers

        from qwen_image.architectures import load_architecture

        return getattr(transformers, load_architecture(self.spec.real_config)["text_encoder"].class_name)


# -- the engine around an in-memory pipeline ---------------------------------------------------------------------------
def make_engine(spec, profile, pipe, tokenizer, budget_gb: float | None, ctx: Context):
    """An Engine serving ``pipe``, placed by the app's LoadedModel (place_pipeline) as the profile says."""
    from qwen_image.engine import Engine
    from qwen_image.hardware import Hardware
    from qwen_image.loader import LoadedModel, LoadOptions

    loaded = LoadedModel(
        spec=spec,
        profile=profile,
        options=LoadOptions(),
        generate=pipe,
        sources={"generate": "(in memory)", "edit": "(in memory)"},
        tokenizer=tokenizer,
        device=profile.device,
    )
    loaded.pipeline("generate")  # places the pipeline as the profile says
    vram = budget_gb if budget_gb is not None else ctx.total_gib
    ram = available_ram_gib()
    hardware = Hardware(ctx.cuda, ctx.info.get("cuda_device") or "", vram, vram, ctx.info["ram_gib"], ram)
    return Engine.from_loaded(loaded, hardware, vram_budget_gb=budget_gb if ctx.cuda else None)


def generate(engine, prompt: str, size: int, steps: int) -> tuple:
    """Run one request; returns the result and the wall time at the end of every denoising step."""
    from qwen_image.generation import GenerationRequest

    marks: list[float] = []

    def on_progress(p):
        if p.phase == "denoising":
            marks.append(time.perf_counter())

    request = GenerationRequest(prompt=prompt, width=size, height=size, steps=steps, seed=0)
    result = engine.generate(request, on_progress=on_progress)
    return result, marks


def seconds_per_step(marks: list[float], denoise_s: float, steps: int) -> float:
    gaps = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]
    return statistics.median(gaps) if len(gaps) >= 2 else denoise_s / max(1, steps)


class FlopCounter:
    """Linear FLOPs (hooks on every nn.Linear) and token counts of every transformer forward."""

    def __init__(self, transformer):
        import torch

        self.forwards: list[dict] = []
        self.handles = [transformer.register_forward_pre_hook(self._forward, with_kwargs=True)]
        for module in transformer.modules():
            if isinstance(module, torch.nn.Linear):
                self.handles.append(module.register_forward_hook(self._linear))

    def _forward(self, module, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        ehs = kwargs.get("encoder_hidden_states")
        self.forwards.append(
            {"linear": 0, "img": int(hs.shape[1]) if hs is not None else 0, "txt": 0 if ehs is None else ehs.shape[1]}
        )

    def _linear(self, module, args, output):
        if self.forwards:
            x = args[0]
            self.forwards[-1]["linear"] += 2 * module.in_features * module.out_features * (x.numel() // x.shape[-1])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def per_step(self, passes: int, hidden: int, blocks: int) -> dict:
        """FLOPs of one steady-state denoising step: the last ``passes`` forwards."""
        last = self.forwards[-passes:]
        txt_first = max((f["txt"] for f in self.forwards), default=0)
        linear = sum(f["linear"] for f in last)
        attn = sum(4 * (f["img"] + f["txt"]) * (f["img"] + txt_first) * hidden * blocks for f in last)
        return {"linear": linear, "attention": attn, "total": linear + attn, "forwards_counted": len(self.forwards)}


# -- one profile -------------------------------------------------------------------------------------------------------
def effective_profile(name: str, family: str, ctx: Context):
    """The profile; on a CPU smoke run the same precisions, placed on the CPU (no offload there)."""
    from qwen_image.profiles import get_profile

    profile = get_profile(name, family)
    if ctx.cuda:
        return profile
    return replace(profile, device="cpu", offload="none")


def predicted_peak(spec, profile, size: int, prompt_tokens: int, cap: float | None) -> dict:
    from qwen_image.planner import Workload, predict

    workload = Workload(
        width=size, height=size, prompt_tokens=prompt_tokens, cfg=spec.true_cfg > 1.0, kv_cache=spec.kv_cache
    )
    plan = predict(spec, profile, workload, budget_gb=cap)
    return {"predicted_gib": plan.peak_gb, "predicted_phase": plan.peak_phase, "planned_tiling": plan.vae_tiling}


def run_profile(spec, name: str, parts: dict, encoders: TextEncoders, still_needed: set, ctx: Context) -> dict:
    import torch

    from qwen_image.architectures import load_architecture
    from qwen_image.loader import LoadOptions, prepare_transformer
    from qwen_image.planner import count_params

    args = ctx.args
    profile = effective_profile(name, spec.family, ctx)
    row = {"model": spec.key, "profile": name, "settings": profile.summary(), "card_gb": profile.card_gb}
    if profile.transformer in ("int8", "nf4"):
        row["error"] = "skipped: a bitsandbytes transformer loads through from_pretrained (not built in memory here)"
        return row
    set_cap(ctx, None)
    free_device()
    te = encoders.get(profile.text_encoder, still_needed)
    torch.manual_seed(1)
    transformer = build_bf16(load_architecture(spec.real_config)["transformer"], ctx.device)
    prepare_transformer(transformer, profile, LoadOptions())  # the app's fp8 layerwise casting
    pipe = assemble(spec, parts, te, transformer)
    if profile.offload != "none":
        pipe.to("cpu")  # the app loads on the CPU; the profile's placement moves what it needs
    free_device()
    cap = set_cap(ctx, None if name == REFERENCE else profile.card_gb)
    row["cap_gib"] = cap
    tokens = len(parts["tokenizer"](PROMPT)["input_ids"])
    row.update(predicted_peak(spec, profile, args.size, tokens, cap))
    engine = None
    try:
        t0 = time.perf_counter()
        engine = make_engine(spec, profile, pipe, parts["tokenizer"], cap, ctx)
        row["place_s"] = time.perf_counter() - t0
        counter = FlopCounter(transformer) if name == REFERENCE else None
        if counter is not None or not ctx.has_run(spec.key):
            generate(engine, WARMUP_PROMPT, args.size, 2)  # kernels, allocator, cuDNN autotuning
        if counter is not None:
            counter.remove()
        engine.embed_cache.clear()
        if ctx.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result, marks = generate(engine, PROMPT, args.size, args.steps)
        row.update(collect(result, marks, ctx, spec))
        if counter is not None and counter.forwards:
            counts = count_params(spec.real_config)["transformer"]
            passes = 2 if result.request.uses_cfg else 1
            row["flops_per_step"] = counter.per_step(passes, counts.hidden, counts.blocks)
    except Exception as exc:  # an OOM or a placement failure is a result of this profile
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    finally:
        teardown(pipe, engine)
        del transformer, pipe, engine
        set_cap(ctx, None)
        free_device()
    return row


def collect(result, marks: list[float], ctx: Context, spec) -> dict:
    import torch

    t = result.timings
    steps = result.request.steps
    out = {
        "encode_s": t["encode"],
        "denoise_s": t["denoise"],
        "decode_s": t["decode"],
        "e2e_s": t["total"],
        "steps": steps,
        "s_per_step": seconds_per_step(marks, t["denoise"], steps),
        "cfg": result.request.uses_cfg,
        "notes": list(result.notes),
        "host_rss_gib": current_rss_bytes() / GiB,
    }
    out["projected_e2e_s"] = t["total"] + (spec.steps - steps) * out["s_per_step"]
    out["default_steps"] = spec.steps
    if ctx.cuda:
        out["peak_alloc_gib"] = torch.cuda.max_memory_allocated() / GiB
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GiB
        out["peak_card_gib"] = out["peak_reserved_gib"] + ctx.context_gib
    return out


def teardown(pipe, engine) -> None:
    """Remove offload hooks and move the shared components (text encoder, VAE) back to the CPU for the next
    profile; the transformer is dropped."""
    try:
        pipe.remove_all_hooks()
    except Exception:
        pass
    for name in ("text_encoder", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            try:
                module.to("cpu")
            except Exception:  # a quantized module that cannot move stays where it is
                pass
    if engine is not None:
        engine.unload()


# -- one model ---------------------------------------------------------------------------------------------------------
def needs_after(spec, names: list[str], i: int, ctx: Context) -> set:
    return {effective_profile(n, spec.family, ctx).text_encoder for n in names[i:]}


def run_model(key: str, names: list[str], ctx: Context) -> None:
    from qwen_image.registry import load_registry

    spec = load_registry().get(MODELS[key] if ctx.args.smoke else key)
    if ctx.over_budget():
        for name in names:
            ctx.add({"model": spec.key, "profile": name, "error": "skipped: time budget spent"})
        return
    print(f"== {spec.label}: building random-weight components ({ctx.elapsed():.0f} s)", flush=True)
    parts = build_parts(spec, ctx)
    folder = Path(tempfile.mkdtemp(prefix="qic-gpu-bench-te-"))
    encoders = TextEncoders(spec, parts, folder)
    try:
        for i, name in enumerate(names):
            if ctx.over_budget():
                ctx.add({"model": spec.key, "profile": name, "error": "skipped: time budget spent"})
                continue
            t0 = time.perf_counter()
            print(f"-- {spec.key} / {name} ({ctx.elapsed():.0f} s)", flush=True)
            row = run_profile(spec, name, parts, encoders, needs_after(spec, names, i + 1, ctx), ctx)
            row["profile_s"] = time.perf_counter() - t0
            ctx.add(row)
            print("   " + json.dumps({k: v for k, v in row.items() if k != "flops_per_step"}, default=str), flush=True)
    finally:
        encoders.cache.clear()
        parts.clear()
        free_device()
        shutil.rmtree(folder, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------------------------------
def derive(ctx: Context, peak: dict) -> list[dict]:
    """Ratios against the resident run, FLOP/s fraction, and the targets."""
    targets = []
    for r in ctx.rows:
        ref = next(
            (x for x in ctx.rows if x["model"] == r["model"] and x["profile"] == REFERENCE and "e2e_s" in x), None
        )
        if ref and "projected_e2e_s" in r:
            r["time_vs_resident"] = r["projected_e2e_s"] / ref["projected_e2e_s"]
            r["step_vs_resident"] = r["s_per_step"] / ref["s_per_step"]
        fl = r.get("flops_per_step")
        if fl and r.get("s_per_step"):
            r["achieved_tflops"] = fl["total"] / r["s_per_step"] / 1e12
            if peak.get("table"):
                r["pct_of_peak"] = 100 * fl["total"] / r["s_per_step"] / peak["table"]
            r["pct_of_matmul"] = 100 * fl["total"] / r["s_per_step"] / peak["measured_matmul"]
    for family, name, what, limit in TARGETS:
        key = family if not ctx.args.smoke else MODELS[family]
        r = next((x for x in ctx.rows if x["model"] == key and x["profile"] == name), None)
        if r is None:
            status = "not run"
        elif "error" in r:
            status = "MISSED (" + r["error"][:80] + ")"
        elif limit is None:
            status = "met"
        else:
            status = "met" if r.get("time_vs_resident", 99) <= limit else "MISSED"
            status += f" ({r.get('time_vs_resident', float('nan')):.2f}x)"
        targets.append({"target": f"{key} {name}: {what}", "status": status})
    ref = next((x for x in ctx.rows if x.get("profile") == REFERENCE and "pct_of_peak" in x), None)
    name = peak.get("device", "")
    if ref is None or not any(k in name for k in ("H100", "H200", "H800")):
        status = "not measurable here (needs an H100/H200 resident run)"
    else:
        status = ("met" if ref["pct_of_peak"] >= 50 else "MISSED") + f" ({ref['pct_of_peak']:.0f}%)"
    targets.append({"target": "resident bf16 step >= 50% of bf16 peak (H100/H200)", "status": status})
    return targets


COLUMNS = [
    ("model", "model"),
    ("profile", "profile"),
    ("cap_gib", "VRAM cap GiB"),
    ("predicted_gib", "predicted GiB"),
    ("peak_alloc_gib", "peak alloc GiB"),
    ("peak_card_gib", "peak reserved + context GiB"),
    ("s_per_step", "s/step", 3),
    ("encode_s", "encode s"),
    ("decode_s", "decode s"),
    ("e2e_s", "e2e s"),
    ("projected_e2e_s", "e2e s at default steps"),
    ("time_vs_resident", "vs resident"),
    ("pct_of_peak", "% bf16 peak", 1),
    ("pct_of_matmul", "% measured matmul", 1),
    ("note", "notes / error"),
]


def report(ctx: Context, peak: dict | None, targets: list[dict]) -> str:
    rows = []
    for r in ctx.rows:
        row = dict(r)
        row["note"] = r.get("error") or "; ".join(r.get("notes", []))
        rows.append(row)
    steps = ctx.args.steps
    lines = [
        "# Memory profiles on the GPU" + (" (SMOKE: tiny architectures)" if ctx.args.smoke else ""),
        "",
        machine_line(ctx.info),
        "",
        f"{ctx.args.size}x{ctx.args.size}, {steps} steps (e2e at default steps = measured e2e + (default - {steps}) x "
        "s/step), random weights, pipelines assembled in memory, runs through qwen_image.engine.Engine. "
        f"CUDA context {ctx.context_gib:.2f} GiB. The profiles run under a VRAM cap of card - context "
        f"(torch.cuda.set_per_process_memory_fraction); {REFERENCE} is the uncapped resident bf16 reference.",
        "",
        markdown_table(rows, COLUMNS),
    ]
    if peak:
        table = f"{peak['table'] / 1e12:.0f} TFLOP/s (table)" if peak.get("table") else "no table entry"
        lines += [
            "",
            f"bf16 peak: {table}; measured {peak['measured_matmul'] / 1e12:.3g} TFLOP/s ({peak['matmul_n']}^3 matmul).",
        ]
    if targets:
        lines += ["", markdown_table(targets, [("target", "target"), ("status", "status")])]
    return "\n".join(lines)


def write(ctx: Context, peak: dict | None = None, targets: list | None = None, skipped: str | None = None) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    name = NAME + ("_smoke" if ctx.args.smoke else "")
    data = {
        "machine": ctx.info,
        "settings": {k: getattr(ctx.args, k) for k in ("size", "steps", "models", "profiles", "smoke", "budget_s")},
        "cuda_context_gib": ctx.context_gib,
        "peak_flops": peak,
        "rows": ctx.rows,
        "targets": targets,
        "elapsed_s": ctx.elapsed(),
    }
    if skipped:
        data["skipped"] = skipped
    (ctx.out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (ctx.out / f"{name}.md").write_text(report(ctx, peak, targets or []) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny architectures, same code path (CUDA or CPU)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024; 128 with --smoke)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--budget-s", type=float, default=450, help="no new profile starts after this many seconds")
    parser.add_argument("--out", default=None, help="folder for the JSON and markdown (default bench/results)")
    args = parser.parse_args()
    args.size = args.size or (128 if args.smoke else 1024)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("no CUDA GPU: skipped")
        ctx = Context(args, cuda=False)
        write(ctx, skipped="no CUDA GPU")
        return 0
    quiet()
    ctx = Context(args, cuda)
    peak = ctx.peak = peak_flops(ctx)
    print(f"peak: {json.dumps(peak)}; CUDA context {ctx.context_gib:.2f} GiB", flush=True)
    names = [p for p in args.profiles.split(",") if p]
    for key in args.models.split(","):
        run_model(key, names, ctx)
    targets = derive(ctx, peak)
    write(ctx, peak, targets)
    print(report(ctx, peak, targets))
    return 0


def quiet() -> None:
    import logging
    import warnings

    import transformers

    from qwen_image.loader import quiet_progress_bars

    quiet_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


if __name__ == "__main__":
    sys.exit(main())
