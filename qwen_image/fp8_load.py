"""Loading a transformer straight into fp8 storage, one tensor at a time, with a LoRA fused on the way.

``from_pretrained`` in bf16 leaves the weights in the checkpoint's memory-mapped file pages and the fp8 cast makes
fp8 copies, so without a LoRA loading holds no more anonymous memory than the fp8 model. Fusing a LoRA with peft
before the cast writes a bf16 copy of every fused weight: for the 20B model with a Lightning LoRA, 44.7 GiB of
anonymous memory at the load peak for 19.0 GiB of fp8 kept (bench/lora_fuse_ram.py, real widths, extrapolated from 2
and 4 blocks to 60). Here the model is built on the meta device, layerwise casting is enabled first (so every castable
weight is an fp8 parameter), and the checkpoint's tensors are read one by one from their safetensors shards: each is
fused with its LoRA delta (computed in float32) if it has one, then stored in its parameter's dtype. The peak is the
fp8 model, the LoRA and one tensor in float32: 20.2 GiB in the same measurement.
"""

from __future__ import annotations

import json
from pathlib import Path


def _component_files(folder: str, subfolder: str) -> list[Path]:
    """The safetensors files of ``folder/subfolder`` (a checkpoint on disk)."""
    root = Path(folder) / subfolder
    index = root / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / n for n in names]
    single = root / "diffusion_pytorch_model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"no safetensors weights in {root}")
    return [single]


def lora_deltas(pipeline_cls, lora: dict) -> dict:
    """module name -> (lora_A, lora_B) of a LoRA, keys converted the way ``load_lora_weights`` converts them."""
    state = pipeline_cls.lora_state_dict(lora["repo"], weight_name=lora.get("weight_name"))
    if isinstance(state, tuple):
        state = state[0]
    pairs: dict[str, list] = {}
    for key, tensor in state.items():
        name = key.removeprefix("transformer.")
        for part, slot in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if name.endswith(part):
                pairs.setdefault(name[: -len(part)], [None, None])[slot] = tensor
                break
        else:
            raise ValueError(f"LoRA {lora.get('weight_name') or lora['repo']}: unsupported tensor {key!r}")
    missing = [m for m, (a, b) in pairs.items() if a is None or b is None]
    if missing:
        raise ValueError(f"LoRA {lora.get('weight_name') or lora['repo']}: incomplete pairs for {missing[:3]}")
    return {m: (a, b) for m, (a, b) in pairs.items()}


def load_fp8_transformer(model_cls, source: str, compute_dtype, lora: dict | None = None, pipeline_cls=None):
    """``model_cls`` from ``source/transformer`` (a checkpoint folder: ``loader.local_snapshot`` resolves a Hub id) in
    fp8 layerwise casting, the LoRA (if any) fused at its scale."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    config = model_cls.load_config(source, subfolder="transformer")
    with init_empty_weights():
        model = model_cls.from_config(config)
    model.to(compute_dtype)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    deltas = lora_deltas(pipeline_cls, lora) if lora else {}
    scale = float((lora or {}).get("scale", 1.0))
    used = set()
    for path in _component_files(source, "transformer"):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                value = f.get_tensor(name)
                module_name, _, param = name.rpartition(".")
                if param == "weight" and module_name in deltas:
                    a, b = deltas[module_name]
                    if (b.shape[0], a.shape[1]) != tuple(value.shape):
                        raise ValueError(
                            f"LoRA {lora.get('weight_name') or lora['repo']} does not fit {source}: {module_name} is "
                            f"{tuple(value.shape)}, the LoRA makes {(b.shape[0], a.shape[1])}"
                        )
                    fused = b.float() @ a.float()  # one float32 buffer: scaled and the weight added in place
                    value = fused.mul_(scale).add_(value)
                    used.add(module_name)
                set_module_tensor_to_device(model, name, "cpu", value=value)
                del value
    unused = sorted(set(deltas) - used)
    if unused:
        raise ValueError(
            f"LoRA {lora.get('weight_name') or lora['repo']} does not fit {source}: no weights for {len(unused)} of "
            f"its {len(deltas)} modules (e.g. {unused[0]})"
        )
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise ValueError(f"{source}: {len(meta)} transformer weights missing from the checkpoint (e.g. {meta[0]})")
    model._qic_streamed = True  # cast (and fused) here: the loader must not cast or fuse again
    return model.eval()
