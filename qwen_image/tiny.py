"""Offline tiny models: both families with random weights, built locally in seconds.

Everything a published checkpoint folder holds is produced here (tokenizer, processor, scheduler, model configs and
safetensors weights) and written with `save_pretrained`, so the engine loads a tiny model through exactly the same
`from_pretrained` code as a real one. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .architectures import build_module, load_architecture

TINY_VERSION = 5  # bump when the tiny models change; old cache folders are rebuilt

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Jinja chat template in Qwen's format (content as a string or a list of text/image parts).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# A small corpus for the byte-level BPE: the words image prompts and edit instructions are made of.
_CORPUS = """
a an the of and with in on at to from by for under over behind beside near inside outside
photo photograph painting illustration drawing render poster logo icon portrait landscape close-up
red orange yellow green blue purple pink white black gray brown golden silver transparent background
cat dog fox bird horse fish dragon robot person woman man child girl boy face hair eyes hands
sky sun moon stars cloud clouds rain snow sea ocean river lake mountain forest tree trees flower flowers
city street house building castle bridge road car train boat ship window door room table chair lamp book
make it change the color to add remove replace turn into keep same style more less bigger smaller brighter
darker sunset sunrise night day morning evening light shadow reflection glow neon watercolor oil sketch
cinematic realistic detailed sharp soft warm cold vintage modern minimal abstract text title says reads
"""


def _cache_root() -> Path:
    env = os.environ.get("QWEN_IMAGE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "qwen-image-chat"


def build_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens, trained locally on a small corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.strip().splitlines() if line]
    bpe.train_from_iterator(lines * 4, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def token_overrides(tokenizer, vocab_size: int) -> dict:
    """Special-token ids of the locally built tokenizer, for the text encoder config."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if len(tokenizer) > vocab_size:
        raise ValueError(f"tiny tokenizer has {len(tokenizer)} tokens, more than the config's {vocab_size}")
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "text_config": {
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
    }


def make_processor(p: dict, tokenizer):
    """A Qwen2-VL / Qwen3-VL processor from image-processor settings (patch, merge, pixel bounds)."""
    import transformers

    image_kwargs = dict(
        patch_size=p["patch_size"],
        merge_size=p["merge_size"],
        temporal_patch_size=p["temporal_patch_size"],
        min_pixels=p["min_pixels"],
        max_pixels=p["max_pixels"],
    )
    video_cls = "Qwen3VLVideoProcessor" if p["class"] == "Qwen3VLProcessor" else "Qwen2VLVideoProcessor"
    video = getattr(transformers, video_cls)(
        patch_size=p["patch_size"], merge_size=p["merge_size"], temporal_patch_size=p["temporal_patch_size"]
    )
    return getattr(transformers, p["class"])(
        image_processor=transformers.Qwen2VLImageProcessor(**image_kwargs),
        tokenizer=tokenizer,
        video_processor=video,
        chat_template=CHAT_TEMPLATE,
    )


def make_scheduler():
    """The flow-matching scheduler with the settings the Qwen-Image checkpoints ship (dynamic, exponential shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )


def build_components(arch_name: str, seed: int = 0) -> dict:
    """Random-weight components of a tiny architecture (float32, CPU)."""
    import torch

    arch = load_architecture(arch_name)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    transformer = build_module(arch["transformer"], device="cpu")
    torch.manual_seed(seed + 1)
    vae = build_module(arch["vae"], device="cpu")
    torch.manual_seed(seed + 2)
    vocab_size = arch["text_encoder"].kwargs["text_config"]["vocab_size"]
    text_encoder = build_module(arch["text_encoder"], device="cpu", overrides=token_overrides(tokenizer, vocab_size))
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": make_processor(arch.processor, tokenizer),
        "scheduler": make_scheduler(),
    }


def _save_tiny(arch_name: str, target: Path) -> None:
    import diffusers
    import torch

    comps = build_components(arch_name)
    shared = {k: comps[k] for k in ("scheduler", "vae", "text_encoder", "transformer")}
    if arch_name == "tiny-qwen-image-2.1":
        diffusers.QwenImage21Pipeline(**shared, processor=comps["processor"]).save_pretrained(target)
        return
    # 20B family: a generate checkpoint and an edit checkpoint with its own transformer weights, like the Hub repos.
    diffusers.QwenImagePipeline(**shared, tokenizer=comps["tokenizer"]).save_pretrained(target / "generate")
    torch.manual_seed(7)
    shared["transformer"] = build_module(load_architecture(arch_name)["transformer"], device="cpu")
    edit = diffusers.QwenImageEditPlusPipeline(**shared, tokenizer=comps["tokenizer"], processor=comps["processor"])
    edit.save_pretrained(target / "edit")


def ensure_tiny(arch_name: str, cache_dir: Path | None = None) -> Path:
    """Build the tiny checkpoint folder once (atomically) and return its path."""
    root = Path(cache_dir) if cache_dir else _cache_root() / "tiny"
    target = root / f"{arch_name}-v{TINY_VERSION}"
    if (target / "READY").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch_name}-", dir=root))
    try:
        _save_tiny(arch_name, tmp)
        (tmp / "READY").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "READY").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
