"""LoRA presets (Lightning): a LoRA is loaded and fused at load time, with its scheduler settings, on both pipelines."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from qwen_image.engine import Engine
from qwen_image.generation import GenerationRequest
from qwen_image.hardware import detect
from qwen_image.loader import checkpoint_sources
from qwen_image.profiles import get_profile
from qwen_image.registry import load_registry


def make_lora(source: str, folder, name: str, seed: int) -> dict:
    """A random LoRA for the tiny 20B-family transformer, saved in diffusers' LoRA format."""
    import diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = diffusers.QwenImageTransformer2DModel.from_pretrained(source, subfolder="transformer")
    transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    )
    layers = get_peft_model_state_dict(transformer)
    diffusers.QwenImagePipeline.save_lora_weights(folder, transformer_lora_layers=layers, weight_name=name)
    return {"repo": str(folder), "weight_name": name}


@pytest.fixture(scope="module")
def lightning(tmp_path_factory):
    base = load_registry().get("tiny-qwen-image")
    gen_src, edit_src = checkpoint_sources(base)
    folder = tmp_path_factory.mktemp("lora")
    preset = load_registry().get("qwen-image-lightning")
    spec = replace(
        base,
        key="tiny-lightning",
        steps=preset.steps,
        true_cfg=1.0,
        negative_prompt="",
        allow_cfg=False,
        lora_generate=make_lora(gen_src, folder, "gen.safetensors", 1),
        lora_edit=make_lora(edit_src, folder, "edit.safetensors", 2),
        scheduler=preset.scheduler,
    )
    engine = Engine(spec, get_profile("cpu", spec.family), detect())
    engine.start()
    engine.wait_ready()
    return engine


def test_lora_is_fused_and_scheduler_set(lightning, engine20):
    fused = lightning._loaded.generate.transformer.state_dict()
    plain = engine20._loaded.generate.transformer.state_dict()
    key = "transformer_blocks.0.attn.to_q.weight"
    assert key in fused and not torch.equal(fused[key], plain[key])  # the LoRA delta is in the weights
    assert not any("lora" in k for k in fused)  # fused, not a live adapter
    assert lightning._loaded.generate.scheduler.config.base_shift == pytest.approx(1.0986123)
    result = lightning.generate(GenerationRequest(prompt="a lightning-fast fox", seed=1))
    assert result.request.steps == 8 and result.images[0].size == (96, 96)


def test_lora_preset_edits_with_its_own_lora(lightning):
    first = lightning.generate(GenerationRequest(prompt="a fox", seed=1)).images[0]
    edited = lightning.generate(GenerationRequest(prompt="make it blue", images=(first,), seed=2))
    assert edited.images and lightning._loaded._edit is not None
    edit_t = lightning._loaded._edit.transformer
    assert not any("lora" in k for k in edit_t.state_dict())
    assert lightning._loaded._edit.text_encoder is lightning._loaded.generate.text_encoder


def test_lightning_loras_are_the_releases_for_their_base_checkpoints():
    """Defect 4: a Lightning LoRA is distilled from one base checkpoint; the preset must fuse the release made for the
    checkpoint it is fused into (lightx2v names each release after its base: <base>-Lightning/<base>-Lightning-8steps).
    The old entry fused Qwen-Image-Lightning (August 2025 Qwen-Image) into Qwen-Image-2512."""
    spec = load_registry().get("qwen-image-lightning")
    for role, base in (("generate", spec.generate_checkpoint), ("edit", spec.edit_checkpoint)):
        lora = getattr(spec, f"lora_{role}")
        base_name = base.split("/")[-1]
        assert lora["repo"].split("/")[-1] == f"{base_name}-Lightning", (role, lora["repo"], base)
        assert lora["weight_name"].startswith(f"{base_name}-Lightning-{spec.steps}steps-"), (role, lora, base)
