"""Speed features, measured with the tiny models and with a mid-size Qwen-Image-2.1 (real hidden widths, 2 transformer
blocks, 2 text-encoder layers and 1 vision block of Qwen3-VL-8B's widths, the real VAE), on the CPU here and on CUDA
when present:

- prompt-embedding cache (the engine's embed_cache): the same prompt with a new seed; the engine's
  timings['encode'] and embed_cache_hit, without and with the cache;
- 2.1's prefix KV cache on vs off (pipeline use_kv_cache) on an edit with one reference image;
- Turbo (8 steps, fixed sigmas) vs the default 40 steps (tiny: both run; mid-size: projected from s/step);
- regional torch.compile of the repeated transformer blocks (compile_repeated_blocks(fullgraph=True));
- attention backends (transformer.set_attention_backend).
A feature that fails on this setup reports its error text instead of a number.

    python bench/speed_features.py            # tiny + mid-size
    python bench/speed_features.py --quick    # tiny models only
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import types
from dataclasses import replace

from _common import GiB, available_ram_gib, machine_info, machine_line, markdown_table, write_results

NAME = "speed_features"
PROMPT = "A red fox sitting in a snowy forest at sunrise, soft golden light, detailed fur, cinematic photograph"
EDIT_PROMPT = "Make the sky purple and add stars, keep the same style"


def device_and_dtype():
    import torch

    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


# -- models ------------------------------------------------------------------------------------------------------------
def tiny_engine(model_key: str, spec_change: dict | None = None):
    """The app's engine on a tiny model (built on first use, loaded through from_pretrained)."""
    from qwen_image.engine import Engine
    from qwen_image.factory import choose_setup
    from qwen_image.profiles import get_profile

    choice = choose_setup(model_key, profile=None)
    spec = replace(choice.spec, **spec_change) if spec_change else choice.spec
    profile = get_profile(choice.plan.profile, spec.family)
    engine = Engine(spec, profile, choice.hardware, vram_budget_gb=choice.plan.budget_gb)
    engine.start()
    engine.wait_ready()
    return engine


def tiny_pipeline(model_key: str):
    """The tiny model's generate pipeline, loaded and placed by the app's loader."""
    from qwen_image.factory import choose_setup
    from qwen_image.loader import load_model
    from qwen_image.profiles import get_profile

    choice = choose_setup(model_key)
    loaded = load_model(choice.spec, get_profile(choice.plan.profile, choice.spec.family))
    return loaded.pipeline("generate"), choice.spec


def mid_pipeline():
    """Qwen-Image-2.1 at the real widths with 2 blocks / 2 text layers, random weights, assembled in memory."""
    import diffusers
    import torch
    from gpu_profiles import processor_settings
    from text_encoder import reduced_overrides

    from qwen_image import tiny
    from qwen_image.architectures import build_module, load_architecture
    from qwen_image.loader import drop_lm_head
    from qwen_image.registry import load_registry

    device, dtype = device_and_dtype()
    spec = load_registry().get("qwen-image-2.1")
    arch = load_architecture(spec.real_config)
    tokenizer = tiny.build_tokenizer()
    processor = tiny.make_processor(processor_settings(arch), tokenizer)
    vocab = arch["text_encoder"].kwargs["text_config"]["vocab_size"]
    overrides = tiny.token_overrides(tokenizer, vocab)  # special-token ids of the local tokenizer
    reduced = reduced_overrides(spec.family, 2, 1)  # 2 text layers, 1 vision block
    overrides["text_config"].update(reduced["text_config"])
    overrides["vision_config"] = reduced["vision_config"]
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # no float32 copy of the 151,936-row lm_head
    try:
        te = build_module(arch["text_encoder"], device="cpu", overrides=overrides)
    finally:
        torch.set_default_dtype(previous)
    drop_lm_head(te)
    te = te.to(device=device, dtype=dtype)
    transformer = build_module(arch["transformer"], device="cpu", overrides={"num_layers": 2}).to(device, dtype)
    vae = build_module(arch["vae"], device="cpu").to(device, dtype)
    parts = {"tokenizer": tokenizer, "processor": processor}
    scheduler = tiny.make_scheduler()
    pipe = diffusers.QwenImage21Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=te, processor=processor, transformer=transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe, spec, parts


def mid_engine(pipe, spec, tokenizer):
    """The app's engine serving the in-memory mid-size pipeline (CPU profile placement)."""
    import torch
    from gpu_profiles import make_engine

    from qwen_image.profiles import get_profile

    cuda = torch.cuda.is_available()
    profile = get_profile("48gb" if cuda else "cpu", spec.family)
    ctx = types.SimpleNamespace(cuda=cuda, total_gib=0.0, info={"cuda_device": None, "ram_gib": available_ram_gib()})
    return make_engine(spec, profile, pipe, tokenizer, None, ctx)


# -- measurements ------------------------------------------------------------------------------------------------------
def embed_cache_case(engine, size: int, steps: int, variant: str) -> list[dict]:
    """Same prompt, new seeds: the first run encodes, the next ones hit the cache."""
    from qwen_image.generation import GenerationRequest

    runs = []
    engine.embed_cache.clear()
    for seed in (1, 2, 3):
        r = engine.generate(GenerationRequest(prompt=PROMPT, width=size, height=size, steps=steps, seed=seed))
        runs.append((r.timings, r.embed_cache_hit))
    miss = runs[0][0]["encode"]
    hits = [t["encode"] for t, hit in runs[1:] if hit]
    row = {
        "variant": variant,
        "feature": "prompt-embedding cache",
        "model": engine.spec.key,
        "off": miss,
        "on": statistics.median(hits) if hits else None,
        "unit": "s encode",
        "detail": f"hits {[hit for _, hit in runs]}; total {runs[0][0]['total']:.2f} s -> {runs[-1][0]['total']:.2f} s",
        "decode_s": runs[0][0]["decode"],
    }
    if row["on"]:
        row["speedup"] = row["off"] / row["on"]
    return [row]


def reference_image(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def timed_call(pipe, steps: int, **kwargs) -> dict:
    """One pipeline call with latent output; total seconds and the median of step-to-step times."""
    import torch

    marks = []

    def on_step(p, i, t, kw):
        sync()
        marks.append(time.perf_counter())
        return {}

    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        pipe(
            num_inference_steps=steps,
            output_type="latent",
            callback_on_step_end=on_step,
            generator=torch.Generator("cpu").manual_seed(0),
            **kwargs,
        )
    sync()
    total = time.perf_counter() - t0
    gaps = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]
    return {"total": total, "s_per_step": statistics.median(gaps) if gaps else total / steps}


def best_of(pipe, steps: int, repeats: int, **kwargs) -> dict:
    """The fastest of ``repeats`` calls (this machine is shared: the minimum is the least disturbed)."""
    runs = [timed_call(pipe, steps, **kwargs) for _ in range(repeats)]
    return {"total": min(r["total"] for r in runs), "s_per_step": min(r["s_per_step"] for r in runs)}


def kv_cache_case(pipe, spec, size: int, steps: int, variant: str, repeats: int = 1) -> list[dict]:
    image = reference_image(size)
    common = dict(prompt=EDIT_PROMPT, image=[image], height=size, width=size, output_resolution=size)
    timed_call(pipe, 1, use_kv_cache=True, **common)  # warm-up
    off = best_of(pipe, steps, repeats, use_kv_cache=False, **common)
    on = best_of(pipe, steps, repeats, use_kv_cache=True, **common)
    return [
        {
            "variant": variant,
            "feature": "prefix KV cache (edit, 1 reference)",
            "model": spec.key,
            "off": off["s_per_step"],
            "on": on["s_per_step"],
            "speedup": off["s_per_step"] / on["s_per_step"],
            "unit": "s/step",
            "detail": f"{size}x{size} output and reference, {steps} steps; call {off['total']:.2f} s -> "
            f"{on['total']:.2f} s",
        }
    ]


def turbo_case_tiny(size: int) -> list[dict]:
    """Tiny 2.1 through the engine: 40 default steps vs the Turbo grid (8 fixed sigmas)."""
    from qwen_image.generation import GenerationRequest
    from qwen_image.registry import load_registry

    turbo = load_registry().get("qwen-image-2.1-turbo")
    default_engine = tiny_engine("tiny")
    base = default_engine.generate(GenerationRequest(prompt=PROMPT, width=size, height=size, steps=40, seed=1))
    turbo_engine = tiny_engine("tiny", {"sigmas": turbo.sigmas, "steps": len(turbo.sigmas), "allow_cfg": False})
    fast = turbo_engine.generate(GenerationRequest(prompt=PROMPT, width=size, height=size, seed=1))
    return [
        {
            "variant": "tiny",
            "feature": f"Turbo ({len(turbo.sigmas)} steps) vs 40 steps",
            "model": "tiny",
            "off": base.timings["total"],
            "on": fast.timings["total"],
            "speedup": base.timings["total"] / fast.timings["total"],
            "unit": "s e2e",
            "detail": f"denoise {base.timings['denoise']:.2f} s -> {fast.timings['denoise']:.2f} s "
            f"({fast.request.steps} steps, sigmas {'set' if fast.request.sigmas else 'unset'})",
        }
    ]


def turbo_case_projected(s_per_step: float, fixed_s: float, variant: str, model: str) -> list[dict]:
    full, turbo = fixed_s + 40 * s_per_step, fixed_s + 8 * s_per_step
    return [
        {
            "variant": variant,
            "feature": "Turbo (8 steps) vs 40 steps, projected",
            "model": model,
            "off": full,
            "on": turbo,
            "speedup": full / turbo,
            "unit": "s e2e (projected)",
            "detail": f"{s_per_step:.3f} s/step measured + {fixed_s:.2f} s encode/decode",
        }
    ]


def compile_case(pipe, spec, size: int, steps: int, variant: str, repeats: int = 1) -> list[dict]:
    """Regional compile of the repeated blocks: first call (compiles) and a steady call, vs eager."""
    common = dict(prompt=PROMPT, height=size, width=size)
    row = {"variant": variant, "feature": "compile_repeated_blocks(fullgraph=True)", "model": spec.key}
    try:
        timed_call(pipe, 1, **common)
        eager = best_of(pipe, steps, repeats, **common)
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
        t0 = time.perf_counter()
        timed_call(pipe, 1, **common)
        first = time.perf_counter() - t0
        compiled = best_of(pipe, steps, repeats, **common)
        row.update(
            off=eager["s_per_step"],
            on=compiled["s_per_step"],
            speedup=eager["s_per_step"] / compiled["s_per_step"],
            unit="s/step",
            detail=f"first compiled call {first:.1f} s",
        )
    except Exception as exc:
        row.update(unit="-", detail=error_text(exc))
    finally:
        _uncompile(pipe.transformer)
    return [row]


def _uncompile(transformer) -> None:
    """Drop compiled wrappers so later cases run eager (torch.compile on modules is per-module state)."""
    import torch

    for module in transformer.modules():
        if hasattr(module, "_compiled_call_impl"):
            module._compiled_call_impl = None
    torch._dynamo.reset()


def attention_case(pipe, spec, size: int, steps: int, variant: str, backends: list[str], repeats: int = 1) -> list:
    common = dict(prompt=PROMPT, height=size, width=size)
    rows, base = [], None
    for backend in backends:
        row = {"variant": variant, "feature": f"attention backend {backend}", "model": spec.key}
        try:
            pipe.transformer.set_attention_backend(backend)
            timed_call(pipe, 1, **common)
            res = best_of(pipe, steps, repeats, **common)
            base = base or res["s_per_step"]
            row.update(on=res["s_per_step"], unit="s/step", speedup=base / res["s_per_step"])
            row["detail"] = "speedup vs the first backend listed"
        except Exception as exc:
            row.update(unit="-", detail=error_text(exc))
        rows.append(row)
    try:
        pipe.transformer.reset_attention_backend()
    except Exception:
        pipe.transformer.set_attention_backend("native")
    return rows


# -- runs --------------------------------------------------------------------------------------------------------------
def run_tiny(args) -> list[dict]:
    rows = []
    for key in ("tiny", "tiny-qwen-image"):
        print(f"tiny: embed cache on {key}", flush=True)
        engine = tiny_engine(key)
        rows += embed_cache_case(engine, 128 if key == "tiny" else 96, 4, "tiny")
        engine.unload()
    print("tiny: KV cache, compile, attention", flush=True)
    pipe, spec = tiny_pipeline("tiny")
    rows += kv_cache_case(pipe, spec, 128, 8, "tiny", repeats=3)
    rows += turbo_case_tiny(128)
    rows += attention_case(pipe, spec, 128, 8, "tiny", ["native", "_native_math"], repeats=3)
    if not args.no_compile:
        rows += compile_case(pipe, spec, 128, 8, "tiny", repeats=3)
    return rows


def run_mid(args) -> list[dict]:
    import torch

    rows = []
    print("mid-size: building", flush=True)
    t0 = time.perf_counter()
    pipe, spec, parts = mid_pipeline()
    print(f"mid-size: built in {time.perf_counter() - t0:.0f} s", flush=True)
    engine = mid_engine(pipe, spec, parts["tokenizer"])
    print("mid-size: embed cache", flush=True)
    rows += embed_cache_case(engine, 256, 1, "mid")
    cache_row = rows[-1]
    print("mid-size: KV cache", flush=True)
    rows += kv_cache_case(pipe, spec, 256, args.mid_steps, "mid")
    print("mid-size: attention backends", flush=True)
    attention = attention_case(pipe, spec, 256, 2, "mid", ["native", "_native_math"])
    rows += attention
    if attention[0].get("on"):  # text-to-image s/step with the default backend
        fixed = cache_row["off"] + cache_row["decode_s"]
        rows += turbo_case_projected(attention[0]["on"], fixed, "mid", spec.key)
    if args.compile_mid and not args.no_compile:
        rows += compile_case(pipe, spec, 256, 2, "mid")
    engine.unload()
    del pipe, engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


COLUMNS = [
    ("variant", "model size"),
    ("feature", "feature"),
    ("model", "model"),
    ("off", "without", 3),
    ("on", "with", 3),
    ("unit", "unit"),
    ("speedup", "speedup", 2),
    ("detail", "detail / error"),
]


def report(rows: list[dict], info: dict) -> str:
    return "\n".join(
        [
            "# Speed features",
            "",
            machine_line(info),
            "",
            "tiny = the offline demo models (2 blocks, 16-32 wide); mid = Qwen-Image-2.1 at the real widths with 2 "
            "transformer blocks, 2 text layers and 1 vision block (random weights; float32 on the CPU, bf16 on "
            "CUDA). Encode times of the mid-size text encoder cover 2 of Qwen3-VL-8B's 36 layers (plus embeddings).",
            "",
            markdown_table(rows, COLUMNS),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models only")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-mid", action="store_true", help="also compile the mid-size blocks (minutes)")
    parser.add_argument("--mid-steps", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gpu_profiles import quiet

    quiet()
    info = machine_info()
    rows = run_tiny(args)
    if not args.quick:
        rows += run_mid(args)
    md = report(rows, info)
    print(md)
    write_results(NAME + ("_quick" if args.quick else ""), {"machine": info, "rows": rows}, md)
    print(f"peak RSS {__import__('_common').peak_rss_bytes() / GiB:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
