"""The 8-bit (and nf4) text encoder against bf16, at the REAL widths of Qwen3-VL-8B (2.1) and Qwen2.5-VL-7B (20B).

The CPU cannot hold the full encoders several times over, so each is built from its real config (configs/real/) with
fewer text decoder layers and vision blocks (every width, the vocabulary and the embeddings are real), with random
weights, saved with save_pretrained, then loaded back once in bf16 and once per quantized format through
transformers.BitsAndBytesConfig, exactly as the app loads a checkpoint. Weight bytes are SERIALIZED sizes (each
loaded model saved with save_pretrained; the safetensors tensors summed) split into per-layer bytes, extrapolated
linearly to the full layer counts.

Embedding error: ||e_q - e_bf16|| / ||e_bf16|| over the prompt tokens of ~10 prompts, on the last decoder layer's
output BEFORE the final norm (what Qwen-Image-2.1's pipeline reads, through a hook on the norm) and on
hidden_states[-1] as transformers 5 returns it (after the norm: what the 20B pipelines read). With random weights the
error is a property of the quantization scheme, not of the trained checkpoint (whose outlier features LLM.int8 keeps
in 16 bits).

    python bench/text_encoder.py              # both encoders, 4 text layers, 1 vision block, int8 and nf4
    python bench/text_encoder.py --quick      # 1 text layer, 3 prompts (smoke check)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    GiB,
    folder_tensors,
    group_bytes,
    machine_info,
    machine_line,
    markdown_table,
    quiet_libraries,
    read_results,
    save_bf16,
    write_results,
)

NAME = "text_encoder"
ENCODERS = {"qwen-image-2.1": "Qwen3-VL-8B", "qwen-image": "Qwen2.5-VL-7B"}
PRECISIONS = ("fp32", "bf16", "int8", "nf4")  # fp32: the reference that shows bf16's own rounding
TEXT_LAYERS = r"(?:^|\.)layers\.(\d+)\."
# The pipelines' prompt templates (text-to-image); the system part is dropped from the embeddings.
TEMPLATES = {
    "qwen-image-2.1": (
        "<|im_start|>system\nComprehend and analyze the provided prompt.<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    "qwen-image": (
        "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
        "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
}
PROMPTS = [
    "A red fox sitting in a snowy forest at sunrise, soft golden light, detailed fur, cinematic photograph",
    "A minimal poster with the title 'Summer Sale' in bold white letters on a bright orange background",
    "Watercolor painting of a small wooden boat on a calm lake with mountains and clouds behind it",
    "Make the sky purple and add stars, keep the same style",
    "Portrait of a woman with curly hair and round glasses, warm window light, close-up, realistic",
    "A neon city street at night in the rain, reflections on the road, a red car, people with umbrellas",
    "Logo icon of a blue bird made of simple geometric shapes, transparent background",
    "Oil painting of a castle on a hill above a river, vintage style, dramatic clouds at sunset",
    "A cat and a dog sleeping together on a green chair near a window with flowers, soft morning light",
    "Isometric illustration of a modern house with a garden, trees and a small pool, bright colors",
]


def reduced_overrides(family: str, layers: int, vision_blocks: int) -> dict:
    vision = {"depth": vision_blocks}
    if family == "qwen-image-2.1":
        vision["deepstack_visual_indexes"] = list(range(min(vision_blocks, 1)))
    else:
        vision["fullatt_block_indexes"] = [vision_blocks - 1]
    return {"text_config": {"num_hidden_layers": layers}, "vision_config": vision}


def full_groups(family: str) -> dict[str, int]:
    """Repeated units of the full-size encoder: prefix -> count."""
    from qwen_image.architectures import load_architecture

    kw = load_architecture(family)["text_encoder"].kwargs
    groups = {  # saved names differ by model ("model.layers." for Qwen2.5-VL, "model.language_model.layers.")
        TEXT_LAYERS: kw["text_config"]["num_hidden_layers"],
        r"(?:^|\.)blocks\.(\d+)\.": kw["vision_config"]["depth"],
    }
    if "deepstack_visual_indexes" in kw["vision_config"]:
        groups[r"deepstack_merger_list\.(\d+)\."] = len(kw["vision_config"]["deepstack_visual_indexes"])
    return groups


def build_and_save(family: str, overrides: dict, folder: Path) -> None:
    """A random-weight bf16 encoder of the real widths, written with save_pretrained."""
    from qwen_image.architectures import build_module, load_architecture

    arch = load_architecture(family)["text_encoder"]
    save_bf16(lambda: build_module(arch, device="cpu", overrides=overrides), folder)


def quant_config(precision: str):
    import torch
    import transformers

    if precision == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    if precision == "nf4":
        return transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    return None


def load(folder: Path, family: str, precision: str):
    import torch
    import transformers

    from qwen_image.architectures import load_architecture

    cls = getattr(transformers, load_architecture(family)["text_encoder"].class_name)
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    return cls.from_pretrained(folder, dtype=dtype, quantization_config=quant_config(precision)).eval()


def tokenize(family: str, tokenizer, prompts: list[str]) -> list[tuple]:
    """(input_ids, attention_mask, number of template tokens to drop) per prompt."""
    head, tail = TEMPLATES[family]
    drop = len(tokenizer(head)["input_ids"])
    out = []
    for p in prompts:
        enc = tokenizer(head + p + tail, return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"], drop))
    return out


def encode(model, inputs: list[tuple]) -> tuple[list[dict], float]:
    """Per prompt: every layer's output, the last layer's output before the final norm, and hidden_states[-1];
    plus the mean seconds per prompt (after one warm-up call)."""
    import torch

    norm = model.model.language_model.norm
    captured = {}
    handle = norm.register_forward_pre_hook(lambda module, args: captured.__setitem__("pre", args[0]))
    outs, seconds = [], []
    try:
        with torch.no_grad():
            ids, mask, _ = inputs[0]
            model(input_ids=ids, attention_mask=mask, output_hidden_states=True)  # warm-up
            for ids, mask, drop in inputs:
                t0 = time.perf_counter()
                res = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                seconds.append(time.perf_counter() - t0)
                layers = [h[0, drop:].float() for h in res.hidden_states[1:-1]]
                outs.append(
                    {
                        "pre_norm": captured["pre"][0, drop:].float(),
                        "hidden_states_last": res.hidden_states[-1][0, drop:].float(),
                        "layers": layers,
                    }
                )
    finally:
        handle.remove()
    return outs, sum(seconds) / len(seconds)


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


def errors(quant: list[dict], ref: list[dict], suffix: str = "") -> dict:
    pre = [rel_err(q["pre_norm"], r["pre_norm"]) for q, r in zip(quant, ref, strict=True)]
    post = [rel_err(q["hidden_states_last"], r["hidden_states_last"]) for q, r in zip(quant, ref, strict=True)]
    per_layer = []
    for i in range(len(ref[0]["layers"])):
        per_layer.append(
            round(sum(rel_err(q["layers"][i], r["layers"][i]) for q, r in zip(quant, ref, strict=True)) / len(ref), 5)
        )
    per_layer.append(round(sum(pre) / len(pre), 5))
    out = {
        "err_pre_norm_mean": sum(pre) / len(pre),
        "err_pre_norm_max": max(pre),
        "err_post_norm_mean": sum(post) / len(post),
        "err_post_norm_max": max(post),
        "err_by_layer": per_layer,
    }
    return {k + suffix: v for k, v in out.items()}


def sizes(folder: Path, family: str) -> dict:
    g = group_bytes(folder_tensors(folder), full_groups(family))
    layer = g["units"][TEXT_LAYERS]["bytes_each"]
    return {
        "measured_gib": g["measured"] / GiB,
        "per_layer_mib": layer / 1024**2,
        "lm_head_gib": g["lm_head"] / GiB,
        "full_gib": g["full"] / GiB,
        "full_no_lm_head_gib": g["full_no_lm_head"] / GiB,
        "groups": g,
    }


def measure_precision(family: str, precision: str, src: Path, tmp: Path, inputs: list[tuple]) -> tuple[dict, list]:
    from qwen_image.loader import drop_lm_head

    model = load(src, family, precision)
    row = {}
    if precision != "fp32":  # the fp32 copy is only a numerical reference
        folder = src if precision == "bf16" else tmp / precision
        if precision != "bf16":
            model.save_pretrained(folder)
        row = sizes(folder, family)
    drop_lm_head(model)  # as the engine does: the pipelines read hidden states only
    outs, per_prompt = encode(model, inputs)
    row["s_per_prompt"] = per_prompt
    row["linear_class"] = type(model.model.language_model.layers[0].mlp.down_proj).__name__
    del model
    gc.collect()
    return row, outs


def measure_family(family: str, args, tokenizer) -> list[dict]:
    overrides = reduced_overrides(family, args.layers, args.vision_blocks)
    prompts = PROMPTS[: args.prompts]
    inputs = tokenize(family, tokenizer, prompts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qic-te-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "bf16"
        build_and_save(family, overrides, src)
        refs = {}
        for precision in args.precisions.split(","):
            print(f"{family} {precision} ...", flush=True)
            try:
                row, outs = measure_precision(family, precision, src, tmp, inputs)
            except Exception as exc:  # nf4 may not work on every CPU setup: report why
                rows.append({"family": family, "precision": precision, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if "bf16" in refs:
                row.update(errors(outs, refs["bf16"]))
            if "fp32" in refs:
                row.update(errors(outs, refs["fp32"], "_vs_fp32"))
            if precision in ("fp32", "bf16"):
                refs[precision] = outs
            row.update(family=family, encoder=ENCODERS[family], precision=precision)
            row["tokens_mean"] = sum(int(i[0].shape[1]) for i in inputs) / len(inputs)
            rows.append(row)
    base = next((r for r in rows if r["precision"] == "bf16" and "full_gib" in r), None)
    for r in rows:
        if base and "full_gib" in r:
            r["ratio"] = r["full_gib"] / base["full_gib"]
            r["ratio_no_lm_head"] = r["full_no_lm_head_gib"] / base["full_no_lm_head_gib"]
    return rows


COLUMNS = [
    ("encoder", "encoder"),
    ("precision", "precision"),
    ("linear_class", "Linear class"),
    ("per_layer_mib", "MiB per text layer"),
    ("measured_gib", "reduced model GiB"),
    ("full_gib", "full GiB (extrap.)"),
    ("full_no_lm_head_gib", "full GiB, no lm_head"),
    ("ratio", "ratio vs bf16"),
    ("ratio_no_lm_head", "ratio, no lm_head"),
    ("err_pre_norm_mean", "rel. err pre-norm (mean)"),
    ("err_pre_norm_max", "(max)"),
    ("err_post_norm_mean", "rel. err hidden_states[-1] (mean)"),
    ("err_pre_norm_mean_vs_fp32", "rel. err pre-norm vs fp32 (mean)"),
    ("s_per_prompt", "s / prompt"),
    ("note", "note"),
]


def linear_errors(widths=(3584, 4096), tokens: int = 64) -> list[dict]:
    """One Linear layer (random N(0, 0.02) weights, bf16): bf16 and bitsandbytes int8 / nf4 against float32."""
    import bitsandbytes as bnb
    import torch

    out = []
    for width in widths:
        torch.manual_seed(0)
        weight = (torch.randn(width, width) * 0.02).to(torch.bfloat16)
        x = torch.randn(tokens, width).to(torch.bfloat16)
        exact = x.float() @ weight.float().T
        layers = {"bf16": lambda v, w=weight: v @ w.T}
        q8 = bnb.nn.Linear8bitLt(width, width, bias=False, has_fp16_weights=False, threshold=6.0)
        q8.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
        layers["int8"] = q8.to("cpu")
        q4 = bnb.nn.Linear4bit(width, width, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
        q4.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
        layers["nf4"] = q4.to("cpu")
        row = {"width": width}
        with torch.no_grad():
            for name, layer in layers.items():
                try:
                    row[name] = rel_err(layer(x).float(), exact)
                except Exception as exc:  # a quantized layer that does not run here
                    row[name] = f"{type(exc).__name__}"
        out.append(row)
    return out


def report(rows: list[dict], info: dict, args, linear: list[dict] | None = None) -> str:
    shown = []
    for r in rows:
        row = dict(r)
        row["note"] = r.get("error", "")
        for k in ("err_pre_norm_mean", "err_pre_norm_max", "err_post_norm_mean", "err_pre_norm_mean_vs_fp32"):
            if k in r:
                row[k] = f"{100 * r[k]:.2f}%"
        for k in ("ratio", "ratio_no_lm_head"):
            if k in r:
                row[k] = f"{r[k]:.3f}x"
        shown.append(row)
    by_layer = [
        f"- {r['encoder']} {r['precision']} vs {ref}: " + ", ".join(f"{100 * e:.2f}%" for e in r[key])
        for r in rows
        for key, ref in (("err_by_layer", "bf16"), ("err_by_layer_vs_fp32", "fp32"))
        if key in r
    ]
    lines = [
        "# Text encoder: 8-bit / nf4 vs bf16 at the real widths",
        "",
        machine_line(info),
        "",
        f"Reduced depth: {args.layers} text decoder layer(s) and {args.vision_blocks} vision block(s) of the real "
        "widths (embeddings and lm_head real); random weights. Bytes = serialized safetensors (save_pretrained of "
        "each loaded model), extrapolated linearly per text layer / vision block to the full depth. Prompts tokenized "
        "with the project's tiny BPE tokenizer (qwen_image.tiny.build_tokenizer; 608 ids, all valid rows of the real "
        f"vocabulary) in the pipelines' templates; {args.prompts} prompts, template tokens dropped. Relative errors "
        "come from random weights: a property of the quantization scheme; the fp32 run is the exact reference that "
        "shows bf16's own rounding. Times are per prompt at the reduced depth on this machine, lm_head dropped as in "
        "the engine.",
        "",
        markdown_table(shown, COLUMNS),
        "",
        "Relative error after each text layer (the last entry: the final layer before the norm):",
        "",
        *by_layer,
    ]
    if linear:
        lines += [
            "",
            "One Linear layer (width x width, random N(0, 0.02) weights, 64 tokens), relative error against float32:",
            "",
            markdown_table(
                [{k: (f"{100 * v:.2f}%" if isinstance(v, float) else v) for k, v in r.items()} for r in linear],
                [("width", "width"), ("bf16", "bf16"), ("int8", "int8"), ("nf4", "nf4")],
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 text layer, 3 prompts, int8 only")
    parser.add_argument("--families", default=",".join(ENCODERS), help="'' re-renders the saved rows")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-blocks", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    args = parser.parse_args()
    if args.quick:
        args.layers, args.prompts, args.precisions = 1, 3, "bf16,int8"
    quiet_libraries()
    from qwen_image.tiny import build_tokenizer

    name = NAME + ("_quick" if args.quick else "")
    info = machine_info()
    tokenizer = build_tokenizer()
    families = [f for f in args.families.split(",") if f]
    rows = []
    for family in families:
        rows += measure_family(family, args, tokenizer)
    if not families:  # only the per-Linear check; keep the saved measurements
        saved = read_results(name) or {}
        rows, info = saved.get("rows", []), saved.get("machine", info)
        for k, v in saved.get("settings", {}).items():
            setattr(args, k, v)
    linear = linear_errors()
    md = report(rows, info, args, linear)
    print(md)
    settings = {k: getattr(args, k) for k in ("layers", "vision_blocks", "prompts", "precisions")}
    write_results(name, {"machine": info, "settings": settings, "rows": rows, "linear": linear}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
