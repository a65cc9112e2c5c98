"""Extra memory of the prompt enhancer: the local one (the text encoder's lm_head, loaded back on first use) against
a second model of the official enhancer's size (Qwen-Image-2.1-PE-T2I / PE-I2I are Qwen3.5-9B fine-tunes).

Everything is counted on the meta device from configs (no weights): the text encoders from configs/real/ through the
planner (``qwen_image.planner.lm_head_bytes``: what ``qwen_image.enhance.lm_head`` loads, bf16 beside a bf16 text
encoder, LLM.int8 with one float32 scale per row beside an 8-/4-bit one); the second model from transformers'
``Qwen3_5Config()`` defaults (documented there as the Qwen3.5-9B style configuration), bf16 and LLM.int8 (Linear
weights in 8 bits, lm_head and the rest in bf16, as bitsandbytes loads it). A vLLM server reserves more than its
weights (the official studio gives each enhancer server 35-45% of the GPU for weights plus KV cache).

    PYTHONPATH=. python bench/enhancer_memory.py
"""

from __future__ import annotations

from _common import GiB, machine_info, machine_line, markdown_table, write_results

NAME = "enhancer_memory"
COLUMNS = [
    ("what", "extra memory for prompt enhancement"),
    ("params_b", "parameters (B)", 3),
    ("bf16_gib", "bf16 GiB", 2),
    ("int8_gib", "8-bit GiB", 2),
]


def second_model() -> dict:
    import torch
    import transformers

    with torch.device("meta"):
        model = transformers.Qwen3_5ForConditionalGeneration(transformers.Qwen3_5Config())
    total = sum(p.numel() for p in model.parameters())
    linear = rows = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            linear += module.weight.numel()
            rows += module.out_features
    return {
        "what": "a second model: Qwen3.5-9B-class enhancer (transformers' Qwen3_5Config defaults)",
        "params_b": total / 1e9,
        "bf16_gib": total * 2 / GiB,
        "int8_gib": (linear + 4 * rows + (total - linear) * 2) / GiB,
    }


def local_rows() -> list[dict]:
    from qwen_image.planner import count_params, lm_head_bytes
    from qwen_image.profiles import get_profile
    from qwen_image.registry import load_registry

    reg = load_registry()
    rows = []
    for key, encoder in (("qwen-image-2.1", "Qwen3-VL-8B"), ("qwen-image", "Qwen2.5-VL-7B")):
        spec = reg.get(key)
        counts = count_params(spec.real_config)["text_encoder"]
        rows.append(
            {
                "what": f"local on {spec.label}: lm_head of its {encoder} text encoder "
                f"({counts.lm_head // counts.hidden} x {counts.hidden})",
                "params_b": counts.lm_head / 1e9,
                "bf16_gib": lm_head_bytes(counts, get_profile("48gb", spec.family)) / GiB,
                "int8_gib": lm_head_bytes(counts, get_profile("24gb", spec.family)) / GiB,
            }
        )
    return rows


def main() -> int:
    info = machine_info()
    rows = [*local_rows(), second_model()]
    second = rows[-1]
    for row in rows[:-1]:
        row["share_of_second_bf16"] = row["bf16_gib"] / second["bf16_gib"]
    table = markdown_table(rows, COLUMNS)
    shares = ", ".join(f"{r['share_of_second_bf16']:.1%}" for r in rows[:-1])
    md = "\n\n".join(
        [
            f"# {NAME}",
            machine_line(info),
            table,
            f"The local enhancer adds {shares} of the second model's bf16 weights (2.1, 20B pair); it holds no KV "
            "cache beyond one rewrite's tokens.",
        ]
    )
    print(md)
    write_results(NAME, {"machine": info, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
