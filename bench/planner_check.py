"""The planner's weight predictions against bytes measured on real-size components.

Parameter counts: every component of both families built on the meta device from configs/real/ and compared with
the published totals. Weight bytes: `qwen_image.planner.weight_bytes(count_params(arch)[comp], precision, 2, ...)`
against MATERIALIZED components with random weights:
- VAEs: built fully in bf16, save_pretrained, safetensors sizes summed;
- text encoders: real widths with fewer text layers / vision blocks, bf16 save_pretrained; then loaded with
  bitsandbytes int8 / nf4 and saved again; extrapolated linearly per layer to the full depth (lm_head dropped, as
  the engine does, and kept);
- transformers: real widths with fewer blocks, bf16 save_pretrained, extrapolated per block; fp8 = diffusers'
  layerwise casting (float8_e4m3fn storage, bf16 compute) on the reduced transformer, parameter storage bytes summed
  and extrapolated. bitsandbytes int8/nf4 transformers need a GPU (diffusers' quantizer refuses without one).

    python bench/planner_check.py            # both families, 2 transformer blocks, 2 text layers
    python bench/planner_check.py --quick    # parameter counts only (meta device, seconds)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

from _common import (
    GiB,
    folder_tensors,
    group_bytes,
    machine_info,
    machine_line,
    markdown_table,
    quiet_libraries,
    write_results,
)

NAME = "planner_check"
FAMILIES = ("qwen-image-2.1", "qwen-image")
# Published parameter counts, billions (the model cards of the checkpoints in configs/models.toml).
PUBLISHED = {
    ("qwen-image-2.1", "transformer"): 7.12,
    ("qwen-image-2.1", "text_encoder"): 8.77,
    ("qwen-image-2.1", "vae"): 0.338,
    ("qwen-image", "transformer"): 20.43,
    ("qwen-image", "text_encoder"): 8.29,
    ("qwen-image", "vae"): 0.127,
}
BLOCKS = r"^transformer_blocks\.(\d+)\."


def count_rows() -> list[dict]:
    from qwen_image.planner import count_params

    rows = []
    for family in FAMILIES:
        counts = count_params(family)
        for comp, c in counts.items():
            published = PUBLISHED[(family, comp)]
            rows.append(
                {
                    "family": family,
                    "component": comp,
                    "counted_b": c.total / 1e9,
                    "published_b": published,
                    "diff_pct": 100 * (c.total / 1e9 - published) / published,
                    "linear_b": c.linear / 1e9,
                    "lm_head_b": c.lm_head / 1e9,
                }
            )
    return rows


def predicted(family: str, comp: str, precision: str, drop_lm_head: bool = False) -> float:
    from qwen_image.planner import count_params, weight_bytes

    return weight_bytes(count_params(family)[comp], precision, 2, drop_lm_head=drop_lm_head) / GiB


def row(family: str, comp: str, precision: str, measured_gib: float, how: str, drop_lm_head: bool = False) -> dict:
    pred = predicted(family, comp, precision, drop_lm_head)
    return {
        "family": family,
        "component": comp + (" (no lm_head)" if drop_lm_head else ""),
        "precision": precision,
        "predicted_gib": pred,
        "measured_gib": measured_gib,
        "error_pct": 100 * (pred - measured_gib) / measured_gib,
        "how": how,
    }


def _bf16_build(arch, overrides=None):
    import torch

    from qwen_image.architectures import build_module

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build_module(arch, device="cpu", overrides=overrides)
    finally:
        torch.set_default_dtype(previous)


def measure_vae(family: str, tmp: Path) -> list[dict]:
    from qwen_image.architectures import load_architecture

    vae = _bf16_build(load_architecture(family)["vae"])
    vae.save_pretrained(tmp / "vae")
    del vae
    gc.collect()
    measured = sum(folder_tensors(tmp / "vae").values()) / GiB
    return [row(family, "vae", "full", measured, "full VAE, bf16 safetensors")]


def measure_text_encoder(family: str, tmp: Path, layers: int) -> list[dict]:
    from text_encoder import build_and_save, full_groups, load, reduced_overrides

    src = tmp / "te-bf16"
    build_and_save(family, reduced_overrides(family, layers, 1), src)
    rows = []
    for precision in ("full", "int8", "nf4"):
        folder = src
        try:
            if precision != "full":
                model = load(src, family, precision)
                folder = tmp / f"te-{precision}"
                model.save_pretrained(folder)
                del model
                gc.collect()
        except Exception as exc:
            rows.append({"family": family, "component": "text_encoder", "precision": precision, "how": str(exc)})
            continue
        g = group_bytes(folder_tensors(folder), full_groups(family))
        how = f"{layers} text layers + 1 vision block, extrapolated; safetensors"
        rows.append(row(family, "text_encoder", precision, g["full"] / GiB, how))
        rows.append(row(family, "text_encoder", precision, g["full_no_lm_head"] / GiB, how, drop_lm_head=True))
    return rows


def measure_transformer(family: str, tmp: Path, blocks: int) -> list[dict]:
    import torch

    from qwen_image.architectures import load_architecture
    from qwen_image.planner import count_params

    arch = load_architecture(family)["transformer"]
    full = count_params(family)["transformer"].blocks
    model = _bf16_build(arch, {"num_layers": blocks})
    model.save_pretrained(tmp / "transformer")
    g = group_bytes(folder_tensors(tmp / "transformer"), {BLOCKS: full})
    how = f"{blocks} blocks, extrapolated to {full}"
    rows = [row(family, "transformer", "full", g["full"] / GiB, how + "; safetensors")]
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    storage = {n: p.numel() * p.element_size() for n, p in model.named_parameters()}
    g8 = group_bytes(storage, {BLOCKS: full})
    rows.append(row(family, "transformer", "fp8", g8["full"] / GiB, how + "; layerwise casting, parameter bytes"))
    for precision in ("int8", "nf4"):
        rows.append(
            {
                "family": family,
                "component": "transformer",
                "precision": precision,
                "predicted_gib": predicted(family, "transformer", precision),
                "how": "not measurable here: diffusers' bitsandbytes quantizer needs a CUDA GPU",
            }
        )
    del model
    gc.collect()
    return rows


def measure(args) -> list[dict]:
    rows = []
    for family in args.families.split(","):
        for what in ("vae", "text_encoder", "transformer"):
            print(f"{family} {what} ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="qic-planner-check-") as tmp:
                tmp = Path(tmp)
                if what == "vae":
                    rows += measure_vae(family, tmp)
                elif what == "text_encoder":
                    rows += measure_text_encoder(family, tmp, args.text_layers)
                else:
                    rows += measure_transformer(family, tmp, args.blocks)
    return rows


COUNT_COLUMNS = [
    ("family", "family"),
    ("component", "component"),
    ("counted_b", "counted (B)", 3),
    ("published_b", "published (B)", 3),
    ("diff_pct", "diff %"),
    ("linear_b", "Linear weights (B)", 3),
    ("lm_head_b", "lm_head (B)", 3),
]
BYTES_COLUMNS = [
    ("family", "family"),
    ("component", "component"),
    ("precision", "precision"),
    ("predicted_gib", "predicted GiB", 3),
    ("measured_gib", "measured GiB", 3),
    ("error_pct", "error %"),
    ("within", "within 3%"),
    ("how", "how measured"),
]


def report(counts: list[dict], rows: list[dict], info: dict) -> str:
    for r in rows:
        if "error_pct" in r:
            r["within"] = "yes" if abs(r["error_pct"]) <= 3 else "NO"
    lines = [
        "# Planner check: predicted vs measured weight bytes",
        "",
        machine_line(info),
        "",
        "Parameter counts (meta device, configs/real/):",
        "",
        markdown_table(counts, COUNT_COLUMNS),
    ]
    if rows:
        lines += [
            "",
            "Weight bytes (predicted: qwen_image.planner.weight_bytes with 2-byte dtype; error = "
            "(predicted - measured) / measured):",
            "",
            markdown_table(rows, BYTES_COLUMNS),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="parameter counts only")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--blocks", type=int, default=2, help="transformer blocks materialized")
    parser.add_argument("--text-layers", type=int, default=2, help="text decoder layers materialized")
    args = parser.parse_args()
    quiet_libraries()
    info = machine_info()
    counts = count_rows()
    rows = [] if args.quick else measure(args)
    md = report(counts, rows, info)
    print(md)
    settings = {"blocks": args.blocks, "text_layers": args.text_layers}
    write_results(
        NAME + ("_quick" if args.quick else ""),
        {"machine": info, "settings": settings, "counts": counts, "bytes": rows},
        md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
