"""Turning denoised latents into images, with the VAE tiling policy and an fp32 re-decode for NaN/black output.

The pipelines are called with ``output_type="latent"`` and the engine decodes here, so that a decode that runs out
of memory or produces NaNs is retried on its own, without denoising again.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache

from .architectures import CONFIG_DIR


@cache
def tile_policy(family: str) -> dict:
    """The project's VAE tile size and stride in pixels (configs/planner.toml), or {} for diffusers' defaults."""
    data = tomllib.loads((CONFIG_DIR / "planner.toml").read_text())["family"][family]
    if "tile_sample" not in data:
        return {}
    return {
        "tile_sample_min_height": data["tile_sample"],
        "tile_sample_min_width": data["tile_sample"],
        "tile_sample_stride_height": data["tile_stride"],
        "tile_sample_stride_width": data["tile_stride"],
    }


def set_tiling(vae, enabled: bool, family: str) -> None:
    if enabled:
        vae.enable_tiling(**tile_policy(family))
    else:
        vae.disable_tiling()


def set_slicing(vae, enabled: bool) -> None:
    if enabled:
        vae.enable_slicing()
    else:
        vae.disable_slicing()


@dataclass(frozen=True)
class Decoded:
    images: list  # PIL
    redecoded_fp32: bool


def latents_to_pixels(pipe, latents, height: int, width: int):
    """Decode packed latents to a float tensor in [-1, 1], shape (batch, channels, height, width)."""
    import torch

    vae = pipe.vae
    unpacked = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor).to(vae.dtype)
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(unpacked.device, unpacked.dtype)
    std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(unpacked.device, unpacked.dtype)
    with torch.no_grad():
        pixels = vae.decode(unpacked * std + mean, return_dict=False)[0][:, :, 0]
    return pixels


def _bad(pixels) -> tuple[bool, bool]:
    import torch

    nan = bool(torch.isnan(pixels).any() or torch.isinf(pixels).any())
    black = (not nan) and bool((pixels.float() <= -1 + 2e-3).all())
    return nan, black


def decode(pipe, latents, height: int, width: int) -> Decoded:
    """Decode, and decode again in float32 when the result holds NaNs or is entirely black."""
    import torch

    pixels = latents_to_pixels(pipe, latents, height, width)
    nan, black = _bad(pixels)
    redecoded = False
    if nan or black:
        vae = pipe.vae
        dtype = vae.dtype
        vae.to(torch.float32)
        try:
            pixels = latents_to_pixels(pipe, latents.float(), height, width)
        finally:
            vae.to(dtype)
        redecoded = True
        nan, black = _bad(pixels)
        if nan:
            raise FloatingPointError("the model produced an invalid image (NaN values), even decoded in float32")
    images = pipe.image_processor.postprocess(pixels.float(), output_type="pil")
    return Decoded(images=images, redecoded_fp32=redecoded)


def finish_image(image, transparent: bool):
    """RGBA kept for transparent results (RGB when fully opaque); otherwise flattened onto white as RGB."""
    from .images import settle_alpha

    return settle_alpha(image if image.mode == "RGBA" else image.convert("RGB"), transparent)
