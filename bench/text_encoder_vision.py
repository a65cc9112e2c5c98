"""Should the 8-bit / nf4 text encoder quantize its vision tower? Reference-embedding error with and without it.

An edit reads every reference image through the text encoder's vision tower (Qwen3-VL-8B for 2.1, Qwen2.5-VL-7B for
the 20B Edit pipeline). bitsandbytes quantizes every nn.Linear it is given, so the 8-bit / nf4 encoders quantize the
vision tower too unless it is skipped (``llm_int8_skip_modules``). This measures what that costs.

Each encoder is built from its real config (configs/real/) at the REAL widths with the FULL vision depth (27 / 32
blocks) and 2 text decoder layers (the text layers' own quantization error is bench/text_encoder.py's subject),
random weights, saved with save_pretrained and loaded back once per variant through transformers'
BitsAndBytesConfig, as the app loads it: bf16, fp32 (the exact reference), int8 and nf4 with the vision tower
quantized (the old behaviour) and with it skipped (``llm_int8_skip_modules=["lm_head", "model.visual"]``).
Inputs are edit prompts with one reference picture each (synthetic, deterministic) at the size the pipelines feed the
encoder: 2.1 reads the reference at the reference resolution (here 512x512, 1024 patches; the default 1024 has 4x
as many), the 20B Edit pipeline at 384x384 (its CONDITION_IMAGE_SIZE).

Reported (relative L2 error against bf16, mean over the inputs): the vision tower's output (the merged image tokens
handed to the language model), and the encoder's last-layer output (before the final norm: what 2.1 reads; the 20B
pipelines read it after the norm, which rescales per token) at the image-token positions and at the text positions.
Vision-tower bytes are in-memory parameter + buffer bytes, for the full depth.

    python bench/text_encoder_vision.py             # both encoders (~40 min on 2 shared cores)
    python bench/text_encoder_vision.py --quick     # 4 vision blocks, 1 input (smoke check)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from _common import GiB, machine_info, machine_line, markdown_table, quiet_libraries, save_bf16, write_results

NAME = "text_encoder_vision"
ENCODERS = {"qwen-image-2.1": "Qwen3-VL-8B", "qwen-image": "Qwen2.5-VL-7B"}
SIDE = {"qwen-image-2.1": 512, "qwen-image": 384}
VARIANTS = ("fp32", "bf16", "int8", "int8-text-only", "nf4", "nf4-text-only", "nf4-dq", "nf4-text-only-dq")
HEAD = (
    "<|im_start|>system\nDescribe the input image, then how the instruction changes it.<|im_end|>\n<|im_start|>user\n"
)
TAIL = "<|im_end|>\n<|im_start|>assistant\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
INSTRUCTIONS = [
    "Make the sky purple and add stars, keep the same style",
    "Replace the red car with a blue bicycle",
    "Turn the photo into a watercolor painting",
]


def picture(side: int, seed: int):
    """A deterministic test picture: gradients, a disc and stripes (structure for the vision tower to read)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    cx, cy = rng.uniform(0.3, 0.7, 2)
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < rng.uniform(0.02, 0.06)
    stripes = (np.sin(x * rng.uniform(20, 60)) > 0.5).astype(float)
    rgb = np.stack([x, y, 0.5 * stripes + 0.3 * disc], axis=-1)
    rgb[disc] = rng.uniform(0, 1, 3)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def processor_for(family: str, tokenizer):
    from qwen_image import tiny
    from qwen_image.architectures import load_architecture

    text = load_architecture(family).text
    patch, merge = text["vision_patch"], text["vision_merge"]
    settings = {
        "class": "Qwen3VLProcessor" if patch == 16 else "Qwen2VLProcessor",
        "patch_size": patch,
        "merge_size": merge,
        "temporal_patch_size": 2,
        "min_pixels": 4 * (patch * merge) ** 2,
        "max_pixels": 2048 * 2048,
    }
    return tiny.make_processor(settings, tokenizer)


def build_and_save(family: str, tokenizer, vision_blocks: int | None, folder: Path) -> None:
    from qwen_image import tiny
    from qwen_image.architectures import build_module, load_architecture

    arch = load_architecture(family)["text_encoder"]
    vision = dict(arch.kwargs["vision_config"])
    overrides = tiny.token_overrides(tokenizer, arch.kwargs["text_config"]["vocab_size"])
    overrides["text_config"] = {**overrides["text_config"], "num_hidden_layers": 2}
    if vision_blocks is not None:
        overrides["vision_config"] = {"depth": vision_blocks}
        if "deepstack_visual_indexes" in vision:
            overrides["vision_config"]["deepstack_visual_indexes"] = [0, vision_blocks // 2, vision_blocks - 1]
        else:
            overrides["vision_config"]["fullatt_block_indexes"] = [vision_blocks - 1]
    save_bf16(lambda: build_module(arch, device="cpu", overrides=overrides), folder)


def quant_config(variant: str):
    """The app's BitsAndBytesConfig for the variant (qwen_image.loader.text_encoder_quantization)."""
    from qwen_image.loader import text_encoder_quantization

    precision, _, scope = variant.removesuffix("-dq").partition("-")
    if precision not in ("int8", "nf4") or variant.endswith("-dq"):
        return None
    import torch

    return text_encoder_quantization(precision, torch.bfloat16, quantize_vision=scope != "text-only")


def nf4_round_trip(model, vision: bool) -> None:
    """Every Linear weight (the vision tower's only if ``vision``) replaced by its nf4 round trip: what bitsandbytes'
    nf4 layer multiplies with (it dequantizes to the compute dtype). bitsandbytes' CPU nf4 kernel refuses the vision
    widths (not multiples of its block), so this is how the nf4 vision tower is measured here; the text-only variant
    is run both ways as the check of this simulation."""
    import bitsandbytes.functional as bf
    import torch

    from qwen_image.loader import VISION_TOWER

    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear or name.endswith("lm_head"):
            continue
        if name.startswith(VISION_TOWER) and not vision:
            continue
        w = module.weight.data
        q, state = bf.quantize_4bit(w, blocksize=64, quant_type="nf4")
        module.weight.data = bf.dequantize_4bit(q, state, blocksize=64, quant_type="nf4").to(w.dtype)


def load(folder: Path, family: str, variant: str):
    import torch
    import transformers

    from qwen_image.architectures import load_architecture

    cls = getattr(transformers, load_architecture(family)["text_encoder"].class_name)
    dtype = torch.float32 if variant == "fp32" else torch.bfloat16
    model = cls.from_pretrained(folder, dtype=dtype, quantization_config=quant_config(variant)).eval()
    if variant.endswith("-dq"):
        nf4_round_trip(model, vision="text-only" not in variant)
    return model


def module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def vision_bytes_full_depth(visual, full_depth: int) -> float:
    """The vision tower's bytes at its full depth: the blocks scaled, everything else (embeddings, mergers) as is."""
    blocks = module_bytes(visual.blocks)
    return module_bytes(visual) - blocks + blocks * full_depth / len(visual.blocks)


def run(model, inputs: list[dict]) -> tuple[list[dict], float]:
    """Per input: the vision tower's output and the last decoder layer's output (before the final norm)."""
    import torch

    captured = {}
    visual = model.model.visual
    norm = model.model.language_model.norm

    def on_visual(module, args, out):
        first = out[0] if isinstance(out, (tuple, list)) else getattr(out, "pooler_output", None)
        if first is None:
            first = out.last_hidden_state
        captured["visual"] = first

    handles = [
        visual.register_forward_hook(on_visual),
        norm.register_forward_pre_hook(lambda module, args: captured.__setitem__("pre", args[0])),
    ]
    outs, seconds = [], []
    try:
        with torch.no_grad():
            for item in inputs:
                t0 = time.perf_counter()
                model(**item["batch"])
                seconds.append(time.perf_counter() - t0)
                hidden = captured["pre"][0].float()
                outs.append(
                    {
                        "visual": captured["visual"].float(),
                        "image": hidden[item["image_mask"]],
                        "text": hidden[item["text_mask"]],
                    }
                )
    finally:
        for h in handles:
            h.remove()
    return outs, sum(seconds) / len(seconds)


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


def make_inputs(family: str, processor, count: int) -> list[dict]:
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    drop = len(processor.tokenizer(HEAD)["input_ids"])
    inputs = []
    for i, instruction in enumerate(INSTRUCTIONS[:count]):
        batch = processor(
            text=[HEAD + "Picture 1: " + IMAGE + instruction + TAIL],
            images=[picture(SIDE[family], i)],
            return_tensors="pt",
        )
        ids = batch["input_ids"][0]
        image_mask = ids == image_id
        text_mask = ~image_mask
        text_mask[:drop] = False  # the system template is dropped by the pipelines
        inputs.append({"batch": dict(batch), "image_mask": image_mask, "text_mask": text_mask})
    return inputs


def measure_family(family: str, args, tokenizer) -> list[dict]:
    from qwen_image.architectures import load_architecture

    processor = processor_for(family, tokenizer)
    inputs = make_inputs(family, processor, args.inputs)
    full_depth = load_architecture(family)["text_encoder"].kwargs["vision_config"]["depth"]
    depth = args.vision_blocks or full_depth
    rows, refs = [], {}
    with tempfile.TemporaryDirectory(prefix="qic-te-vision-") as tmp:
        src = Path(tmp) / "bf16"
        build_and_save(family, tokenizer, args.vision_blocks, src)
        for variant in args.variants.split(","):
            print(f"{family} {variant} ...", flush=True)
            row = {"family": family, "encoder": ENCODERS[family], "variant": variant, "vision_blocks": depth}
            try:
                model = load(src, family, variant)
                visual = model.model.visual
                row["vision_class"] = type(visual.blocks[0].attn.qkv).__name__ + (
                    " (nf4 round trip)" if variant == "nf4-dq" else ""
                )
                row["vision_gib_full_depth"] = vision_bytes_full_depth(visual, full_depth) / GiB
                outs, row["s_per_input"] = run(model, inputs)
                del model
                gc.collect()
            except Exception as exc:  # a variant that does not run here is a result too
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                rows.append(row)
                continue
            for ref_name in ("bf16", "fp32"):
                if ref_name in refs and ref_name != variant:
                    ref = refs[ref_name]
                    suffix = "" if ref_name == "bf16" else "_vs_fp32"
                    for key in ("visual", "image", "text"):
                        errs = [rel_err(o[key], r[key]) for o, r in zip(outs, ref, strict=True)]
                        row[f"err_{key}{suffix}"] = sum(errs) / len(errs)
            if variant in ("fp32", "bf16"):
                refs[variant] = outs
            row["image_tokens"] = int(inputs[0]["image_mask"].sum())
            rows.append(row)
    return rows


COLUMNS = [
    ("encoder", "encoder"),
    ("variant", "variant"),
    ("vision_class", "vision Linear class"),
    ("vision_gib_full_depth", "vision tower GiB (full depth)"),
    ("err_visual", "err vision output"),
    ("err_image", "err last layer, image tokens"),
    ("err_text", "err last layer, text tokens"),
    ("err_image_vs_fp32", "err image tokens vs fp32"),
    ("s_per_input", "s / input (CPU)"),
    ("note", "note"),
]


def report(rows: list[dict], info: dict, args) -> str:
    shown = []
    for r in rows:
        row = dict(r, note=r.get("error", ""))
        for k in ("err_visual", "err_image", "err_text", "err_image_vs_fp32"):
            if k in r:
                row[k] = f"{100 * r[k]:.2f}%"
        shown.append(row)
    depth = "full vision depth" if not args.vision_blocks else f"{args.vision_blocks} vision blocks"
    return "\n".join(
        [
            "# Text encoder vision tower: quantized or kept in bf16",
            "",
            machine_line(info),
            "",
            f"Real widths, {depth}, 2 text decoder layers, random weights; {args.inputs} edit prompt(s) with one "
            "synthetic reference each (2.1: 512x512, 20B: 384x384). Relative L2 error against the bf16 encoder "
            "(fp32 column: against float32). `-text-only` = vision tower skipped by bitsandbytes "
            "(`llm_int8_skip_modules`), kept in bf16. `-dq`: nf4 simulated by the round trip of every weight "
            "(bitsandbytes' CPU nf4 kernel refuses the vision widths); the text-only pair checks the simulation. The "
            "vision tower GiB of an `-dq` row are bf16 in memory here; as nf4 they take the `nf4` row's figure.",
            "",
            markdown_table(shown, COLUMNS),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 vision blocks, 1 input")
    parser.add_argument("--families", default=",".join(ENCODERS))
    parser.add_argument("--vision-blocks", type=int, default=None, help="reduced vision depth (default: full)")
    parser.add_argument("--inputs", type=int, default=len(INSTRUCTIONS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if args.quick:
        args.vision_blocks, args.inputs = 4, 1
    quiet_libraries()
    from qwen_image.tiny import build_tokenizer

    info = machine_info()
    tokenizer = build_tokenizer()
    rows = []
    for family in [f for f in args.families.split(",") if f]:
        rows += measure_family(family, args, tokenizer)
    md = report(rows, info, args)
    print(md)
    settings = {k: getattr(args, k) for k in ("vision_blocks", "inputs", "variants")}
    write_results(NAME + ("_quick" if args.quick else ""), {"machine": info, "settings": settings, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
