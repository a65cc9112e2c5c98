"""System RAM while loading the 20B transformer in fp8 with a Lightning LoRA fused (issue 10, defect 8).

Builds the Qwen-Image 20B transformer at its real widths with 2 and 4 blocks (random bf16 weights, the published
config otherwise; tests/hub_fixture.py) and a Lightning-format LoRA of the real rank for it, then measures the peak RSS
of a fresh process (over its imports) for two load paths:

- fuse-then-cast (the old path): ``from_pretrained`` in bf16, LoRA loaded and fused with peft, then fp8 layerwise
  casting;
- streamed (qwen_image.fp8_load): built on the meta device in fp8, tensors read one at a time, LoRA fused per tensor.

The per-block slope between 2 and 4 blocks, plus the rest, is extrapolated to the real 60 blocks.

    python bench/lora_fuse_ram.py        # ~3 minutes on 2 cores; writes bench/results/lora_fuse_ram.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
GiB = 1024**3

CHILD = r"""
import json, resource, sys  # noqa: E401
from pathlib import Path
import torch, diffusers
from qwen_image.fp8_load import load_fp8_transformer
src, lora_file, path = sys.argv[1], sys.argv[2], sys.argv[3]
import psutil
import peft  # noqa: F401  (the fuse path imports it)
_ = diffusers.QwenImageTransformer2DModel, diffusers.QwenImagePipeline  # diffusers imports these lazily: before `base`
base = psutil.Process().memory_info().rss // 1024  # resident after imports (KiB), not the imports' own peak
lora = {"repo": str(Path(lora_file).parent), "weight_name": Path(lora_file).name}
if path == "streamed":
    cls, pipe = diffusers.QwenImageTransformer2DModel, diffusers.QwenImagePipeline
    model = load_fp8_transformer(cls, src, torch.bfloat16, lora, pipe)
else:
    model = diffusers.QwenImageTransformer2DModel.from_pretrained(src, subfolder="transformer", dtype=torch.bfloat16)
    state = diffusers.QwenImagePipeline.lora_state_dict(lora["repo"], weight_name=lora["weight_name"])
    model.load_lora_adapter(state, prefix="transformer", adapter_name="preset")
    model.fuse_lora(lora_scale=1.0)
    model.unload_lora()
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
resident = sum(p.numel() * p.element_size() for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_over_imports": (peak - base) * 1024, "resident": resident}))
"""


def build(root: Path, layers: int) -> tuple[str, Path]:
    import hub_fixture
    from safetensors.torch import save_file

    src = root / f"qwen-image-{layers}"
    config = hub_fixture.transformer_20b_config(edit=False, real_widths=True, layers=layers)
    hub_fixture.save_diffusers_model(src / "transformer", config, seed=1, shards=2)
    lora = root / f"lora-{layers}" / "Qwen-Image-2512-Lightning-8steps-V1.0-bf16.safetensors"
    lora.parent.mkdir(parents=True)
    save_file(hub_fixture.lora_state_dict(config, seed=2), lora)
    return str(src), lora


def measure(src: str, lora: Path, path: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, src, str(lora), path], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory(prefix="lora-ram-") as tmp:
        for layers in (2, 4):
            src, lora = build(Path(tmp), layers)
            for path in ("fuse-then-cast", "streamed"):
                results[(path, layers)] = measure(src, lora, path)
                r = results[(path, layers)]
                print(f"{path:15s} {layers} blocks: peak {r['peak_over_imports'] / GiB:.2f} GiB over imports, "
                      f"resident {r['resident'] / GiB:.2f} GiB")  # fmt: skip
    table = {}
    for path in ("fuse-then-cast", "streamed"):
        a, b = results[(path, 2)], results[(path, 4)]
        per_block = (b["peak_over_imports"] - a["peak_over_imports"]) / 2
        rest = a["peak_over_imports"] - 2 * per_block
        res_block = (b["resident"] - a["resident"]) / 2
        res_rest = a["resident"] - 2 * res_block
        table[path] = {
            "peak_per_block_gib": round(per_block / GiB, 3),
            "peak_60_blocks_gib": round((rest + 60 * per_block) / GiB, 1),
            "resident_60_blocks_gib": round((res_rest + 60 * res_block) / GiB, 1),
            "measured": {f"{k[1]}_blocks": v for k, v in results.items() if k[0] == path},
        }
        print(f"{path:15s} real 60 blocks: peak {table[path]['peak_60_blocks_gib']} GiB over imports, "
              f"resident fp8 {table[path]['resident_60_blocks_gib']} GiB")  # fmt: skip
    out = ROOT / "bench" / "results" / "lora_fuse_ram.json"
    out.write_text(json.dumps(table, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
