"""A cheap look at the image while it is being made: the latents projected to RGB, no VAE decode.

The pipelines hand the step callback their latents as a sequence of tokens, one per 16x16 pixel patch, each a vector
of latent channels (packed 2x2 patches of 16 channels for Qwen-Image, 64 channels for Qwen-Image-2.1). A fixed
projection of those channels to three colours (the same for every step, so colours do not flicker), stretched per
image, shows the composition forming. It costs a small matrix product per preview.
"""

from __future__ import annotations

import math

PATCH = 16  # pixels per latent token side for both families (VAE factor x transformer patch)
MAX_SIDE = 256  # pixels: the preview is small


def _projection(channels: int):
    """A fixed channels x 3 matrix (seeded by the channel count): the same colours at every step and every run."""
    import torch

    gen = torch.Generator().manual_seed(channels)
    return torch.randn(channels, 3, generator=gen) / math.sqrt(channels)


def token_grid(tokens: int, width: int, height: int) -> tuple[int, int] | None:
    """(rows, cols) of the latent tokens for an image of ``width`` x ``height``; None when they do not match."""
    rows, cols = max(1, height // PATCH), max(1, width // PATCH)
    if rows * cols == tokens:
        return rows, cols
    for r in (round(height / PATCH), math.ceil(height / PATCH)):  # sizes that are not multiples of 16
        c = tokens // max(1, r)
        if r * c == tokens:
            return r, c
    return None


def latent_preview(latents, width: int, height: int):
    """A small RGB PIL image of the first image in ``latents`` (tokens x channels, or channels x rows x cols, with
    a batch dimension first); None when the layout is not one of those."""
    import torch
    from PIL import Image

    if not isinstance(latents, torch.Tensor) or latents.ndim < 3:
        return None
    x = latents[0].detach().float().cpu()
    if x.ndim == 4:  # channels x frames x rows x cols: the first frame
        x = x[:, 0]
    if x.ndim == 3:  # channels x rows x cols
        channels, rows, cols = x.shape
        x = x.reshape(channels, rows * cols).T
    elif x.ndim == 2:  # tokens x channels
        grid = token_grid(x.shape[0], width, height)
        if grid is None:
            return None
        rows, cols = grid
    else:
        return None
    rgb = x @ _projection(x.shape[1])
    lo, hi = rgb.quantile(0.02, dim=0), rgb.quantile(0.98, dim=0)
    rgb = ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    pixels = (rgb.reshape(rows, cols, 3) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = MAX_SIDE / max(rows, cols)
    return image.resize((max(1, round(cols * scale)), max(1, round(rows * scale))), Image.Resampling.BILINEAR)


def preview_steps(total: int, count: int = 8) -> frozenset[int]:
    """The (1-based) steps after which a preview is made: about ``count`` of them, the last one included."""
    if total <= 0:
        return frozenset()
    every = max(1, total // count)
    return frozenset(range(every, total + 1, every)) | {total}
