"""VAE decode: untiled vs diffusers' default tiling vs the project's tile policy, for both model families.

Both VAEs are built with their REAL architectures (configs/real/*.toml) and random weights, and decode one random
latent (the same seed for every mode). Every case runs in a fresh subprocess so that its peak memory is its own:
on the CPU the peak RSS (ru_maxrss) minus the RSS after building the model, on CUDA torch.cuda.max_memory_allocated.
Outputs are compared by PSNR against the untiled decode of the same latent (or, where the untiled decode is skipped
for memory, against diffusers' default tiling, which the table says).

    python bench/vae_tiling.py                 # 1024 and 2048, every family and mode that fits this machine
    python bench/vae_tiling.py --quick         # 512x512 only (smoke check)
    python bench/vae_tiling.py --sizes 1024 --families qwen-image --modes untiled,t576s512,t544s512
    python bench/vae_tiling.py --only qwen-image:2048:policy,qwen-image-2.1:2048:policy   # merged into the JSON
    python bench/vae_tiling.py --render        # redo the tables from the saved JSON

Modes: untiled, default (vae.enable_tiling()), policy (qwen_image.decode.set_tiling: configs/planner.toml
tile_sample/tile_stride), tTsS (a candidate: T px tiles at stride S px).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    GiB,
    available_ram_gib,
    current_rss_bytes,
    machine_info,
    machine_line,
    markdown_table,
    peak_rss_bytes,
    read_results,
    write_results,
)

NAME = "vae_tiling"
FAMILIES = ("qwen-image", "qwen-image-2.1")
MODES = ("untiled", "default", "policy")
DIFFUSERS_DEFAULT = (256, 192)
SEED = 0
CACHE = Path(tempfile.gettempdir()) / "qwen-image-chat-vae-bench"


# -- the case, in its own process --------------------------------------------------------------------------------------
def tiles_for(mode: str, family: str) -> tuple[int, int] | None:
    """(tile, stride) in pixels for a tiled mode, None for untiled."""
    if mode == "untiled":
        return None
    if mode == "default":
        return DIFFUSERS_DEFAULT
    if mode == "policy":
        from qwen_image.decode import tile_policy

        policy = tile_policy(family)
        if not policy:
            return DIFFUSERS_DEFAULT
        return policy["tile_sample_min_height"], policy["tile_sample_stride_height"]
    tile, stride = mode[1:].split("s")
    return int(tile), int(stride)


def configure(vae, mode: str, family: str) -> None:
    from qwen_image.decode import set_tiling

    if mode == "untiled":
        vae.disable_tiling()
    elif mode == "default":
        vae.enable_tiling()
    elif mode == "policy":
        set_tiling(vae, True, family)
    else:
        tile, stride = tiles_for(mode, family)
        vae.enable_tiling(
            tile_sample_min_height=tile,
            tile_sample_min_width=tile,
            tile_sample_stride_height=stride,
            tile_sample_stride_width=stride,
        )


def count_tiles(size: int, factor: int, tiles: tuple[int, int] | None) -> int:
    """Tiles diffusers' tiled_decode runs for a square latent (1 when it decodes untiled)."""
    if tiles is None:
        return 1
    tile, stride = tiles
    latent = size // factor
    if latent <= tile // factor:
        return 1
    return math.ceil(latent / (stride // factor)) ** 2


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_case(key: str) -> dict:
    """Decode one latent; returns measurements and saves the output under CACHE."""
    import gc

    import numpy as np
    import torch

    from qwen_image.architectures import build_module, load_architecture

    family, size, mode = key.split(":")
    size = int(size)
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(SEED)
    vae = build_module(load_architecture(family)["vae"], device="cpu").to(device=device, dtype=dtype)
    factor = vae.spatial_compression_ratio
    gc.collect()
    configure(vae, mode, family)
    gen = torch.Generator("cpu").manual_seed(SEED)
    latent = torch.randn(1, vae.config.z_dim, 1, size // factor, size // factor, generator=gen)
    latent = latent.to(device=device, dtype=dtype)
    rss_after_build = current_rss_bytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with torch.no_grad():
        out = vae.decode(latent, return_dict=False)[0][:, :, 0]
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    result = {
        "key": key,
        "family": family,
        "size": size,
        "mode": mode,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "tiles": tiles_for(mode, family),
        "n_tiles": count_tiles(size, factor, tiles_for(mode, family)),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "out_std": round(float(out.float().std()), 4),
    }
    if cuda:
        result["peak_gib"] = round((torch.cuda.max_memory_allocated() - base_alloc) / GiB, 3)
        result["peak_total_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 3)
    else:
        result["rss_after_build_gib"] = round(rss_after_build / GiB, 3)
        result["peak_total_gib"] = round(peak_rss_bytes() / GiB, 3)
        result["peak_gib"] = round((peak_rss_bytes() - rss_after_build) / GiB, 3)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(CACHE / f"{family}_{size}_{mode}.npy", out.float().cpu().numpy())
    return result


# -- the driver --------------------------------------------------------------------------------------------------------
def family_coefficients(family: str) -> dict:
    from qwen_image.planner import coefficients

    return coefficients()["family"][family]


def predicted_gib(family: str, size: int, mode: str, cuda: bool) -> float:
    """Rough peak of a case from the planner's coefficients (fp32 on the CPU), to skip what cannot fit."""
    co = family_coefficients(family)
    scale = 1 if cuda else 2  # the coefficients are stated for bf16
    per_px = co["vae_decode_bytes_per_pixel"] * scale
    tiles = tiles_for(mode, family)
    side = size if tiles is None else min(size, tiles[0])
    model = {"qwen-image": 0.127e9, "qwen-image-2.1": 0.338e9}[family] * (2 if cuda else 4)
    output = 4 * size * size * 4 * 2  # the output and the blended copy, float32
    base = 0 if cuda else 1.0 * GiB  # torch and diffusers imported
    return (side * side * per_px + model + output + base) / GiB


def psnr(a, b) -> tuple[float, float]:
    """PSNR in dB over the [-1, 1] range, and the largest absolute difference."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    peak = float(np.max(np.abs(a - b)))
    return (math.inf if mse == 0 else 10 * math.log10(4.0 / mse)), peak


def compare(result: dict) -> None:
    """Fill in the PSNR against the untiled output (or diffusers' default tiling when untiled was skipped)."""
    import numpy as np

    family, size, mode = result["family"], result["size"], result["mode"]
    if mode == "untiled":
        return
    mine = CACHE / f"{family}_{size}_{mode}.npy"
    for ref in ("untiled", "default"):
        path = CACHE / f"{family}_{size}_{ref}.npy"
        if ref != mode and path.is_file() and mine.is_file():
            value, peak = psnr(np.load(mine), np.load(path))
            result["psnr_db"] = round(value, 2) if math.isfinite(value) else "inf"
            result["max_abs_diff"] = round(peak, 4)
            result["psnr_ref"] = ref
            return


def spawn(key: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", key]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"key": key, "error": " | ".join(tail) or f"exit code {proc.returncode}"}


def case_list(args) -> list[str]:
    if args.only:
        return [k.strip() for k in args.only.split(",") if k.strip()]
    sizes = [512] if args.quick else [int(s) for s in args.sizes.split(",")]
    families = args.families.split(",")
    modes = args.modes.split(",")
    # untiled first: it is the reference of the others; the biggest size last
    return [f"{f}:{s}:{m}" for s in sorted(sizes) for f in families for m in modes]


def run_all(keys: list[str], limit_gib: float, cuda: bool) -> list[dict]:
    results = []
    for key in keys:
        family, size, mode = key.split(":")
        need = predicted_gib(family, int(size), mode, cuda)
        room = limit_gib if cuda else min(limit_gib, available_ram_gib() - 1.0)
        if need > room:
            msg = f"skipped: predicted {need:.1f} GiB exceeds this machine"
            print(f"{key}: {msg} (limit {room:.1f} GiB)", flush=True)
            results.append({"key": key, "family": family, "size": int(size), "mode": mode, "skipped": msg})
            continue
        print(f"{key}: running (predicted {need:.1f} GiB) ...", flush=True)
        res = spawn(key)
        res.update(family=family, size=int(size), mode=mode, predicted_gib=round(need, 2))
        if "error" not in res:
            compare(res)
        print(f"{key}: {json.dumps(res)}", flush=True)
        results.append(res)
    return results


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    by_key = {r["key"]: r for r in old}
    by_key.update({r["key"]: r for r in new})
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(by_key.values(), key=lambda r: (r["family"], r["size"], order.get(r["mode"], 9), r["mode"]))


def add_ratios(cases: list[dict]) -> None:
    """Time and memory of each tiled case relative to the untiled one of the same family and size; where that was
    skipped for memory, relative to the largest measured untiled decode scaled by the pixel count (extrapolated)."""
    untiled = {(r["family"], r["size"]): r for r in cases if r["mode"] == "untiled" and "wall_s" in r}
    for r in cases:
        for k in ("time_ratio", "wall_ratio", "mem_ratio", "untiled_ref"):
            r.pop(k, None)
        if r["mode"] == "untiled" or "wall_s" not in r:
            continue
        ref, scale = untiled.get((r["family"], r["size"])), 1.0
        if ref is None:
            smaller = [u for (f, s), u in untiled.items() if f == r["family"] and s < r["size"]]
            if not smaller:
                continue
            ref = max(smaller, key=lambda u: u["size"])
            scale = (r["size"] / ref["size"]) ** 2
            r["untiled_ref"] = f"untiled {ref['size']} x {scale:g} (extrapolated)"
        clock = "wall_s" if r.get("device") == "cuda" else "cpu_s"
        r["time_ratio"] = round(r[clock] / (ref[clock] * scale), 3)
        r["wall_ratio"] = round(r["wall_s"] / (ref["wall_s"] * scale), 3)
        r["mem_ratio"] = round(r["peak_gib"] / (ref["peak_gib"] * scale), 3)


def auto_policy() -> list[dict]:
    """The engine's "auto" tiling: the planner's decision per CUDA profile (card size minus the chooser's margin)."""
    from qwen_image.planner import Workload, coefficients, predict
    from qwen_image.profiles import gpu_profiles
    from qwen_image.registry import load_registry

    rows = []
    margin = coefficients()["budget_margin_gb"]
    for family in FAMILIES:
        spec = load_registry().by_family(family)
        for profile in gpu_profiles(family):
            row = {"family": family, "profile": profile.name, "policy": profile.vae_tiling}
            for size in (1024, 2048):
                plan = predict(spec, profile, Workload(width=size, height=size), budget_gb=profile.card_gb - margin)
                row[f"tile_{size}"] = "tiled" if plan.vae_tiling else "untiled"
                row[f"decode_{size}_gib"] = plan.phases_gb["decode"]
            rows.append(row)
    return rows


def suggested_coefficients(cases: list[dict]) -> dict:
    """vae_decode_bytes_per_pixel (untiled, per output pixel) and vae_tiled_decode_gb, stated for bf16."""
    out = {}
    for family in FAMILIES:
        fam = [r for r in cases if r["family"] == family and "peak_gib" in r]
        half = 0.5 if all(r.get("dtype") == "float32" for r in fam) else 1.0
        untiled = [r for r in fam if r["mode"] == "untiled"]
        policy = [r for r in fam if r["mode"] == "policy"]
        entry = {
            "current": {
                k: family_coefficients(family)[k] for k in ("vae_decode_bytes_per_pixel", "vae_tiled_decode_gb")
            }
        }
        if untiled:
            big = max(untiled, key=lambda r: r["size"])
            entry["vae_decode_bytes_per_pixel"] = round(big["peak_gib"] * GiB / big["size"] ** 2 * half)
            entry["from"] = big["key"]
        if policy:
            big = max(policy, key=lambda r: r["size"])
            entry["vae_tiled_decode_gb"] = round(big["peak_gib"] * half, 2)
            entry["tiled_from"] = big["key"]
        out[family] = entry
    return out


COLUMNS = [
    ("family", "VAE"),
    ("size", "size"),
    ("mode", "mode"),
    ("tile_s", "tile/stride px"),
    ("n_tiles", "tiles"),
    ("wall_s", "wall s"),
    ("cpu_s", "CPU s"),
    ("time_ratio", "time vs untiled"),
    ("peak_gib", "peak GiB"),
    ("peak_total_gib", "total GiB"),
    ("mem_ratio", "mem vs untiled"),
    ("psnr_db", "PSNR dB"),
    ("psnr_ref", "PSNR vs"),
    ("note", "note"),
]


def table_rows(cases: list[dict]) -> list[dict]:
    rows = []
    for r in cases:
        row = dict(r)
        row["tile_s"] = "-" if not r.get("tiles") else f"{r['tiles'][0]}/{r['tiles'][1]}"
        row["note"] = r.get("skipped") or r.get("error") or r.get("untiled_ref") or ""
        same = r["mode"] not in MODES and list(r.get("tiles") or []) == list(tiles_for("policy", r["family"]))
        if same:
            row["note"] = "; ".join(x for x in ("the policy's tiles", row["note"]) if x)
        rows.append(row)
    return rows


def report(cases: list[dict], info: dict) -> str:
    peak_key = "max_memory_allocated" if info.get("cuda_device") else "peak RSS minus RSS after building the model"
    lines = [
        "# VAE decode: untiled vs tiled",
        "",
        machine_line(info),
        "",
        f"Real VAE architectures, random weights, one random latent (seed {SEED}); each case in a fresh process. "
        f"Peak = {peak_key}; total = the process peak. Time vs untiled uses CPU seconds on the CPU (robust to other "
        "load on a shared machine) and wall seconds on CUDA. PSNR over the [-1, 1] range against the untiled "
        "decode; 'default' in 'PSNR vs' means untiled was skipped and diffusers' default tiling is the reference.",
        "",
        markdown_table(table_rows(cases), COLUMNS),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512x512 cases only (smoke check)")
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--modes", default=",".join(MODES), help="untiled, default, policy or tTsS (e.g. t576s512)")
    parser.add_argument("--only", help="comma-separated FAMILY:SIZE:MODE cases (merged into the JSON)")
    parser.add_argument("--max-gib", type=float, default=14.0, help="skip cases predicted to need more")
    parser.add_argument("--fresh", action="store_true", help="drop earlier results instead of merging")
    parser.add_argument("--render", action="store_true", help="run nothing; redo the tables from the saved JSON")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)), flush=True)
        return 0

    import torch

    cuda = torch.cuda.is_available()
    info = machine_info()
    new = [] if args.render else run_all(case_list(args), args.max_gib, cuda)
    old = [] if args.fresh else (read_results(NAME) or {}).get("cases", [])
    cases = merge(old, new)
    for r in cases:  # PSNR against the newest references
        if "wall_s" in r:
            compare(r)
    add_ratios(cases)
    from qwen_image.decode import tile_policy

    data = {
        "machine": info,
        "policy": {f: tile_policy(f) or "diffusers defaults" for f in FAMILIES},
        "cases": cases,
        "auto_policy": auto_policy(),
        "suggested_coefficients": suggested_coefficients(cases),
    }
    md = report(cases, info)
    auto_cols = [
        ("family", "family"),
        ("profile", "profile"),
        ("policy", "vae_tiling"),
        ("tile_1024", "1024"),
        ("decode_1024_gib", "decode GiB 1024"),
        ("tile_2048", "2048"),
        ("decode_2048_gib", "decode GiB 2048"),
    ]
    md += "\n\nEngine 'auto' policy (planner decision per CUDA profile, budget = card minus margin):\n\n"
    md += markdown_table(data["auto_policy"], auto_cols)
    md += "\n\nSuggested planner coefficients (bf16):\n\n```\n" + json.dumps(data["suggested_coefficients"], indent=1)
    md += "\n```\n"
    print(md)
    write_results(NAME, data, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
