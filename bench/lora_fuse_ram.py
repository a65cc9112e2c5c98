"""System RAM while loading the 20B transformer in fp8, with and without a Lightning LoRA (issue 10, defect 8).

Builds the Qwen-Image 20B transformer at its real widths with 2 and 4 blocks (random bf16 weights, the published
config otherwise, sharded; tests/hub_fixture.py) and a Lightning-format LoRA of the real rank for it. Each load path
runs in a fresh process whose anonymous memory (RssAnon: tensors and heap, not the checkpoint's mmap'd file pages,
which ru_maxrss would count) is sampled from outside every few ms (tests/anon_rss.py):

- ``bf16-then-cast``: the loader's old path without a LoRA: ``from_pretrained`` in bf16, then fp8 layerwise casting;
- ``fuse-then-cast``: the old Lightning path: ``from_pretrained`` in bf16, LoRA loaded and fused with peft, then cast;
- ``streamed``: qwen_image.fp8_load (the loader's path for fp8 profiles now): built on the meta device in fp8, tensors
  read one at a time from the shards, each fused with its LoRA delta on the way;
- ``streamed-no-lora``: the same without a LoRA.

Peaks are over the process's RssAnon after its imports. The per-block slope between 2 and 4 blocks plus the rest is
extrapolated to the real 60 blocks and compared with the fp8 weights the planner counts for the 20B transformer.

    python bench/lora_fuse_ram.py        # ~4 minutes on 2 cores; writes bench/results/lora_fuse_ram.{json,md}
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from _common import ROOT, GiB, machine_info, machine_line, markdown_table, write_results

sys.path.insert(0, str(ROOT / "tests"))  # the Hub fixture's model builders and the RssAnon sampler live with the tests

PATHS = ("bf16-then-cast", "fuse-then-cast", "streamed", "streamed-no-lora")
BLOCKS = (2, 4)
REAL_BLOCKS = 60

CHILD = r"""
import json, sys  # noqa: E401
from pathlib import Path
import torch, diffusers, peft  # noqa: E401,F401  (peft: the fuse path imports it)
from qwen_image.fp8_load import load_fp8_transformer
cls, pipe_cls = diffusers.QwenImageTransformer2DModel, diffusers.QwenImagePipeline  # lazy imports, before the base

def anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

src, lora_file, path = sys.argv[1], sys.argv[2], sys.argv[3]
print("BASE", anon(), flush=True)
lora = {"repo": str(Path(lora_file).parent), "weight_name": Path(lora_file).name}
if path.startswith("streamed"):
    model = load_fp8_transformer(cls, src, torch.bfloat16, lora if path == "streamed" else None, pipe_cls)
else:
    model = cls.from_pretrained(src, subfolder="transformer", dtype=torch.bfloat16)
    if path == "fuse-then-cast":
        model.load_lora_adapter(pipe_cls.lora_state_dict(lora["repo"], weight_name=lora["weight_name"]),
                                prefix="transformer", adapter_name="preset")
        model.fuse_lora(lora_scale=1.0)
        model.unload_lora()
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
resident = sum(p.numel() * p.element_size() for p in model.parameters())
print("RESULT", json.dumps({"resident": resident, "end_anon": anon()}), flush=True)
"""


def build(root: Path, blocks: int) -> tuple[str, Path]:
    import hub_fixture
    from safetensors.torch import save_file

    src = root / f"qwen-image-{blocks}"
    config = hub_fixture.transformer_20b_config(edit=False, real_widths=True, layers=blocks)
    hub_fixture.save_diffusers_model(src / "transformer", config, seed=1, shards=2)
    lora = root / f"lora-{blocks}" / "Qwen-Image-2512-Lightning-8steps-V1.0-bf16.safetensors"
    lora.parent.mkdir(parents=True)
    save_file(hub_fixture.lora_state_dict(config, seed=2), lora)
    return str(src), lora


def measure(src: str, lora: Path, path: str) -> dict:
    from anon_rss import run_measured

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    m = run_measured([sys.executable, "-c", CHILD, src, str(lora), path], env=env, timeout=900)
    if m.code != 0:
        raise RuntimeError(f"{path}: exit {m.code}\n{m.output[-3000:]}")
    base = int(next(line.split()[1] for line in m.output.splitlines() if line.startswith("BASE ")))
    result = json.loads(next(line[7:] for line in m.output.splitlines() if line.startswith("RESULT ")))
    return {"peak_anon_over_imports": m.peak_anon - base, "peak_rss_over_imports": m.peak_rss - base, **result}


def extrapolate(a: dict, b: dict, key: str) -> tuple[float, float]:
    """(per block, at the real depth) of ``key`` from the 2- and 4-block measurements."""
    per_block = (b[key] - a[key]) / (BLOCKS[1] - BLOCKS[0])
    rest = a[key] - BLOCKS[0] * per_block
    return per_block, rest + REAL_BLOCKS * per_block


def planned_fp8_gib() -> float:
    from qwen_image.planner import count_params, weight_bytes

    return weight_bytes(count_params("qwen-image")["transformer"], "fp8", 2) / GiB


def main() -> int:
    info = machine_info()
    measured: dict = {}
    with tempfile.TemporaryDirectory(prefix="lora-ram-") as tmp:
        for blocks in BLOCKS:
            src, lora = build(Path(tmp), blocks)
            for path in PATHS:
                r = measure(src, lora, path)
                measured.setdefault(path, {})[f"{blocks}_blocks"] = r
                print(
                    f"{path:17s} {blocks} blocks: anon peak {r['peak_anon_over_imports'] / GiB:.2f} GiB, "
                    f"RSS peak {r['peak_rss_over_imports'] / GiB:.2f} GiB, resident {r['resident'] / GiB:.2f} GiB",
                    flush=True,
                )
    rows = []
    for path in PATHS:
        a, b = (measured[path][f"{n}_blocks"] for n in BLOCKS)
        anon_block, anon_full = extrapolate(a, b, "peak_anon_over_imports")
        rss_block, rss_full = extrapolate(a, b, "peak_rss_over_imports")
        _, res_full = extrapolate(a, b, "resident")
        rows.append(
            {
                "path": path,
                "anon_per_block_gib": anon_block / GiB,
                "anon_60_gib": anon_full / GiB,
                "rss_60_gib": rss_full / GiB,
                "resident_60_gib": res_full / GiB,
                "peak_over_resident": anon_full / res_full,
            }
        )
    planned = planned_fp8_gib()
    table = markdown_table(
        rows,
        [
            ("path", "load path"),
            ("anon_per_block_gib", "anon peak / block (GiB)", 3),
            ("anon_60_gib", "anon peak, 60 blocks (GiB)", 1),
            ("rss_60_gib", "RSS peak incl. file pages, 60 blocks (GiB)", 1),
            ("resident_60_gib", "fp8 weights kept, 60 blocks (GiB)", 1),
            ("peak_over_resident", "peak / kept", 2),
        ],
    )
    md = (
        "# Load-time RAM of the 20B transformer in fp8 (Lightning LoRA fused)\n\n"
        f"{machine_line(info)}\n\nReal-width blocks, 2 and 4 measured, extrapolated to 60; peaks over each fresh "
        f"process's RssAnon after imports. The planner counts {planned:.1f} GiB of fp8 transformer weights.\n\n"
        f"{table}\n"
    )
    print(md)
    write_results("lora_fuse_ram", {"machine": info, "planned_fp8_gib": planned, "rows": rows, "raw": measured}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
