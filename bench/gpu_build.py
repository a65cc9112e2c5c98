"""Real-size Qwen-Image components with random weights, built in memory for the GPU measurements (no files).

Every component is created from its real config (configs/real/) directly on the target device in bf16 (random init
runs on the GPU: seconds, where writing and reading back a 16 GB text encoder takes minutes). The quantized text
encoders are derived from the bf16 one in memory with bitsandbytes' own layers and quantizers, configured by the
app's BitsAndBytesConfig (qwen_image.loader.text_encoder_quantization: which modules stay in bf16, the LLM.int8
outlier threshold, the nf4 settings), so their layers and bytes are what the app's from_pretrained loading makes.
"""

from __future__ import annotations

import copy
import re


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
    unit = (patch * merge) ** 2
    return {
        "class": "Qwen3VLProcessor" if patch == 16 else "Qwen2VLProcessor",
        "patch_size": patch,
        "merge_size": merge,
        "temporal_patch_size": 2,
        "min_pixels": 4 * unit,
        "max_pixels": 1024 * 1024,
    }


def build_parts(spec, device: str) -> dict:
    """Scheduler, tokenizer/processor, VAE and the bf16 text encoder (lm_head dropped, as the app does)."""
    import torch

    from qwen_image import tiny
    from qwen_image.architectures import load_architecture
    from qwen_image.loader import drop_lm_head

    arch = load_architecture(spec.real_config)
    tokenizer = tiny.build_tokenizer()
    # 2.1 reads prompts and references through its processor; the 20B edit pipeline needs one too
    processor = tiny.make_processor(arch.processor or processor_settings(arch), tokenizer)
    vocab = arch["text_encoder"].kwargs["text_config"]["vocab_size"]
    torch.manual_seed(0)
    te = build_bf16(arch["text_encoder"], device, tiny.token_overrides(tokenizer, vocab))
    drop_lm_head(te)
    vae = build_bf16(arch["vae"], device)
    return {
        "tokenizer": tokenizer,
        "processor": processor,
        "vae": vae,
        "te_full": te,
        "scheduler": tiny.make_scheduler(),
    }


def build_transformer(spec, device: str):
    import torch

    from qwen_image.architectures import load_architecture

    torch.manual_seed(1)
    return build_bf16(load_architecture(spec.real_config)["transformer"], device)


def assemble(spec, parts: dict, text_encoder, transformer, role: str = "generate"):
    import diffusers

    name = spec.generate_pipeline if role == "generate" else "QwenImageEditPlusPipeline"
    cls = getattr(diffusers, name)
    common = dict(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=text_encoder, transformer=transformer)
    if spec.one_pipeline:
        return cls(processor=parts["processor"], **common)
    if role == "edit":
        return cls(tokenizer=parts["tokenizer"], processor=parts["processor"], **common)
    return cls(tokenizer=parts["tokenizer"], **common)


def _skipped(name: str, patterns: list[str]) -> bool:
    """transformers' rule for llm_int8_skip_modules: a prefix up to a module boundary, or a suffix."""
    return any(re.match(rf"(?:{p})(?:(?<=\.)|(?=\.|$))", name) or name.endswith(p) for p in patterns)


def quantize_text_encoder(model, precision: str, dtype):
    """A copy of ``model`` (on its device) with its Linear layers in bitsandbytes int8 / nf4, as the app's config
    says."""
    import bitsandbytes as bnb
    import torch

    from qwen_image.loader import text_encoder_quantization

    config = text_encoder_quantization(precision, dtype)
    skip = list(config.llm_int8_skip_modules or [])
    model = copy.deepcopy(model)
    for name, linear in list(model.named_modules()):
        if type(linear) is not torch.nn.Linear or _skipped(name, skip):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        weight, bias = linear.weight.data, linear.bias
        if precision == "int8":
            layer = bnb.nn.Linear8bitLt(
                linear.in_features,
                linear.out_features,
                bias=bias is not None,
                has_fp16_weights=config.llm_int8_has_fp16_weight,
                threshold=config.llm_int8_threshold,
                device="meta",
            )
            cb, scb, _ = bnb.functional.int8_vectorwise_quant(weight.to(torch.float16))
            layer.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        else:
            layer = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=bias is not None,
                compute_dtype=config.bnb_4bit_compute_dtype,
                compress_statistics=config.bnb_4bit_use_double_quant,
                quant_type=config.bnb_4bit_quant_type,
                quant_storage=config.bnb_4bit_quant_storage,
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                weight,
                requires_grad=False,
                compress_statistics=config.bnb_4bit_use_double_quant,
                quant_type=config.bnb_4bit_quant_type,
                quant_storage=config.bnb_4bit_quant_storage,
                module=layer,
            ).to(weight.device)
        if bias is not None:
            layer.bias = torch.nn.Parameter(bias.data, requires_grad=False)
        setattr(parent, attr, layer)
        del linear
    return model.eval()


class TextEncoders:
    """The text encoder at every precision the profiles need, derived once from the bf16 one and parked on the CPU
    between profiles (a copy left on the GPU would count against the next profile's VRAM cap)."""

    def __init__(self, parts: dict, precisions: set, dtype):
        import torch

        full = parts.pop("te_full")
        self.models = {}
        for precision in sorted(precisions - {"full"}):
            self.models[precision] = quantize_text_encoder(full, precision, dtype).to("cpu")
        if "full" in precisions:
            self.models["full"] = full.to("cpu")
        del full
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def get(self, precision: str):
        return self.models[precision]

    def park(self, model) -> None:
        model.to("cpu")
