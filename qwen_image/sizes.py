"""Output sizes: aspect ratio x resolution tier from a model's table, snapping and bounds. Pure functions."""

from __future__ import annotations

import math

MAX_ASPECT = 8.0


def snap(value: float, multiple: int) -> int:
    """Nearest multiple of ``multiple``, at least one multiple."""
    return max(multiple, int(round(value / multiple)) * multiple)


def _snap_within(value: float, multiple: int, lo: int, hi: int) -> int:
    lo_m = -(-lo // multiple) * multiple
    hi_m = hi // multiple * multiple
    return min(hi_m, max(lo_m, int(round(value / multiple)) * multiple))


def fit(spec, width: float, height: float) -> tuple[int, int]:
    """The size closest to ``width`` x ``height`` that the model accepts: multiples of its step, each side within
    [min_side, max_side], at most max_pixels, and no more elongated than 1:8 (the area shrinks, never grows, to fit).
    """
    m = spec.multiple_of
    ratio = min(MAX_ASPECT, max(1 / MAX_ASPECT, width / height))
    w = math.sqrt(width * height * ratio)
    h = w / ratio
    shrink = min(1.0, spec.max_side / max(w, h), math.sqrt(spec.max_pixels / (w * h)))
    w, h = w * shrink, h * shrink
    grow = max(1.0, spec.min_side / min(w, h))
    w, h = w * grow, h * grow
    w = _snap_within(w, m, spec.min_side, spec.max_side)
    h = _snap_within(h, m, spec.min_side, spec.max_side)
    while w * h > spec.max_pixels:
        if w >= h:
            w -= m
        else:
            h -= m
    while w / h > MAX_ASPECT:
        w -= m
    while h / w > MAX_ASPECT:
        h -= m
    return w, h


def size_for(spec, ratio: str, tier: str) -> tuple[int, int]:
    """The exact size a model uses for an aspect ratio at a resolution tier.

    The native tier uses the model's table; other tiers keep the table entry's ratio at about side^2 pixels; either
    way the result is fitted to the model's bounds (a table entry off its multiple is snapped).
    """
    table = dict(spec.sizes)
    if ratio not in table:
        raise ValueError(f"aspect ratio {ratio} is not offered by this model; choose one of {', '.join(table)}")
    tiers = dict(spec.tiers)
    if tier not in tiers:
        raise ValueError(f"resolution {tier} is not offered by this model; choose one of {', '.join(tiers)}")
    w, h = table[ratio]
    if tier == spec.native_tier:
        return fit(spec, w, h)
    side = tiers[tier]
    return fit(spec, side * math.sqrt(w / h), side / math.sqrt(w / h))


SAME_SHAPE = 0.01  # relative difference of aspect ratios taken as the same shape


def size_like(spec, width: int, height: int, tier: str) -> tuple[int, int]:
    """An output size with the aspect ratio of a given image (e.g. the reference being edited).

    An image of one of the model's own shapes at this tier gets exactly that size back, so that editing a generated
    image keeps its size, however many edits follow.
    """
    ratio = min(MAX_ASPECT, max(1 / MAX_ASPECT, width / height))
    own = [size_for(spec, r, tier) for r in spec.ratios]
    closest = min(own, key=lambda s: abs(math.log(s[0] / s[1] / ratio)))
    if abs(math.log(closest[0] / closest[1] / ratio)) <= SAME_SHAPE:
        return closest
    side = dict(spec.tiers)[tier]
    return fit(spec, side * math.sqrt(ratio), side / math.sqrt(ratio))


def check_size(spec, width: int, height: int) -> tuple[int, int]:
    """Snap an explicit size to the model's multiple; raise ValueError with a readable reason when out of bounds."""
    w, h = snap(width, spec.multiple_of), snap(height, spec.multiple_of)
    lo, hi = spec.min_side, spec.max_side
    if not (lo <= w <= hi and lo <= h <= hi):
        raise ValueError(f"size {width}x{height} is out of range: each side must be between {lo} and {hi} pixels")
    if w * h > spec.max_pixels:
        mp = spec.max_pixels / 1e6
        raise ValueError(f"size {width}x{height} is too large: at most {mp:.1f} megapixels for this model")
    if max(w / h, h / w) > MAX_ASPECT:
        raise ValueError(f"size {width}x{height} is too elongated: at most 1:{MAX_ASPECT:g}")
    return w, h
