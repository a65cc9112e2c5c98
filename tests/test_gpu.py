"""CUDA-only loading paths with the tiny models: bitsandbytes transformers, fp8 casting and the offload modes.

Every test here is marked ``cuda`` and skips cleanly on a machine without a CUDA GPU.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwen_image.hardware import cuda_available

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")]


def _engine(model: str, profile, **options):
    from qwen_image.engine import Engine
    from qwen_image.hardware import detect
    from qwen_image.loader import LoadOptions
    from qwen_image.profiles import get_profile
    from qwen_image.registry import resolve_model

    spec = resolve_model(model)
    if isinstance(profile, str):
        profile = get_profile(profile, spec.family)
    engine = Engine(spec, profile, detect(), LoadOptions(**options))
    engine.start()
    engine.wait_ready(timeout=300)
    return engine


def _generate(engine, **fields):
    import numpy as np

    from qwen_image.generation import GenerationRequest

    result = engine.generate(GenerationRequest(**{"prompt": "a red fox", "seed": 1, "steps": 2, **fields}))
    for image in result.images:
        assert image.size == (result.request.width, result.request.height)
        assert np.asarray(image).std() > 0  # not a blank or NaN-turned-black image
    return result


@pytest.fixture
def cleanup():
    engines = []
    yield engines.append
    import torch

    for engine in engines:
        engine.unload()
    torch.cuda.empty_cache()


@pytest.mark.parametrize(("precision", "layer"), [("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_bitsandbytes_transformer(cleanup, precision, layer):
    import bitsandbytes as bnb
    import torch

    from qwen_image.profiles import get_profile

    profile = replace(get_profile("16gb", "qwen-image-2.1"), transformer=precision)
    engine = _engine("tiny", profile)
    cleanup(engine)
    torch.cuda.reset_peak_memory_stats()
    _generate(engine)
    assert torch.cuda.max_memory_allocated() > 0
    transformer = engine._loaded.generate.transformer
    cls = getattr(bnb.nn, layer)
    quantized = [m for m in transformer.transformer_blocks.modules() if isinstance(m, cls)]
    assert quantized, f"no {layer} in the transformer blocks"
    # the text encoder is 8-bit in this profile too
    te = engine._loaded.generate.text_encoder
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in te.modules())


def test_group_offload_streams_blocks_from_the_cpu(cleanup):
    import torch

    engine = _engine("tiny", "12gb")
    cleanup(engine)
    assert engine.profile.offload == "group"
    pipe = engine._loaded.generate
    blocks = pipe.transformer.transformer_blocks
    assert {p.device.type for p in blocks.parameters()} == {"cpu"}
    torch.cuda.reset_peak_memory_stats()
    _generate(engine)
    assert torch.cuda.max_memory_allocated() > 0
    # between calls the blocks are back on the CPU; the VAE stays resident
    assert {p.device.type for p in blocks.parameters()} == {"cpu"}
    assert {p.device.type for p in pipe.vae.parameters()} == {"cuda"}
    _generate(engine, seed=2)  # the second call reuses the installed hooks


def test_fp8_layerwise_casting(cleanup):
    import torch

    engine = _engine("tiny", "16gb")
    cleanup(engine)
    assert engine.profile.transformer == "fp8"
    _generate(engine)
    linears = [
        m for m in engine._loaded.generate.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert linears
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in linears)


def test_model_offload(cleanup):
    import torch

    engine = _engine("tiny", "24gb")
    cleanup(engine)
    assert engine.profile.offload == "model"
    pipe = engine._loaded.generate
    torch.cuda.reset_peak_memory_stats()
    _generate(engine)
    assert torch.cuda.max_memory_allocated() > 0
    # after a job the transformer has left the GPU again
    assert {p.device.type for p in pipe.transformer.parameters()} == {"cpu"}
    _generate(engine, prompt="make it blue", images=(_generate(engine).images[0],))


@pytest.mark.parametrize("keep_both", [True, False])
def test_20b_role_switch_under_model_offload(cleanup, keep_both):
    engine = _engine("tiny-qwen-image", "24gb", keep_both_transformers=keep_both)
    cleanup(engine)
    assert engine.profile.offload == "model" and engine.profile.transformer == "fp8"
    first = _generate(engine)
    edited = _generate(engine, prompt="make the fox blue", images=(first.images[0],))
    assert edited.request.mode == "edit"
    loaded = engine._loaded
    assert loaded.generate.text_encoder is loaded._edit.text_encoder
    assert loaded.generate.vae is loaded._edit.vae
    if not keep_both:
        assert loaded.generate.transformer is None  # freed while editing
    again = _generate(engine)
    assert again.images[0].size == first.images[0].size
    assert loaded.generate.transformer is not None
    if not keep_both:
        assert loaded._edit.transformer is None
    # the same seed and settings after two switches give the same picture
    import numpy as np

    np.testing.assert_allclose(np.asarray(again.images[0]), np.asarray(first.images[0]), atol=2)
