"""Request and result types, and validation of a request against a model.

`GenerationRequest` is what a caller asks for (UI, API, CLI); `resolve()` checks every value and turns it into a
`ResolvedRequest` with nothing left unset (size, steps, seed...). Every problem a user can cause raises
`ValidationError` with a message meant for that user.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from . import sizes

MAX_PROMPT_TOKENS = 1000
MAX_TEXT_CHARS = 20_000
MAX_STEPS = 100
MAX_IMAGES = 4
MAX_CFG = 20.0
SEED_MAX = 2**32 - 1
_IMAGE_TAG = re.compile(r"<image(\d+)>")


class ValidationError(ValueError):
    """A request a user can fix; ``str(error)`` is the message to show them."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None = None  # None: the model's default
    images: tuple = ()  # reference images (PIL), already opened and checked by qwen_image.images
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    tier: str | None = None
    match_reference: int | None = None  # 1-based: output follows this reference's aspect ratio
    steps: int | None = None
    true_cfg: float | None = None
    seed: int | None = None  # None: random, and recorded in the result
    num_images: int = 1
    transparent: bool = False
    reference_resolution: int | None = None
    marked: bool = False  # the first reference carries the user's red marks: change only that area
    original_prompt: str | None = None  # what the user wrote, when ``prompt`` is a prompt enhancer's rewrite of it
    enhancer: str | None = None  # which enhancer wrote the rewrite


@dataclass(frozen=True)
class ResolvedRequest:
    model: str
    mode: str  # "generate" or "edit"
    prompt: str
    negative_prompt: str
    images: tuple = field(repr=False)
    width: int
    height: int
    steps: int
    true_cfg: float
    seed: int
    num_images: int
    transparent: bool
    reference_resolution: int
    sigmas: tuple | None = None
    aspect_ratio: str | None = None
    tier: str | None = None
    marked: bool = False
    original_prompt: str | None = None
    enhancer: str | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple((self.seed + i) % (SEED_MAX + 1) for i in range(self.num_images))

    @property
    def uses_cfg(self) -> bool:
        return self.true_cfg > 1.0 and bool(self.negative_prompt)

    def settings(self) -> dict:
        """Every setting as plain data (for metadata and the store); reference images are counted, not embedded.
        An enhanced request also records the user's own prompt and the enhancer (``prompt`` is what was drawn)."""
        enhanced = {"original_prompt": self.original_prompt, "enhancer": self.enhancer} if self.original_prompt else {}
        return {
            "model": self.model,
            "mode": self.mode,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "aspect_ratio": self.aspect_ratio,
            "tier": self.tier,
            "steps": self.steps,
            "true_cfg": self.true_cfg,
            "seed": self.seed,
            "num_images": self.num_images,
            "transparent": self.transparent,
            "reference_resolution": self.reference_resolution,
            "references": len(self.images),
            "sigmas": list(self.sigmas) if self.sigmas else None,
            "marked": self.marked,
            **enhanced,
        }


@dataclass(frozen=True)
class GenerationResult:
    images: tuple  # PIL images, RGBA when transparent, else RGB
    seeds: tuple
    request: ResolvedRequest
    timings: dict = field(default_factory=dict)  # seconds: encode, denoise, decode, total
    notes: tuple = ()  # what the engine changed to make it work (e.g. "retried with VAE tiling")
    embed_cache_hit: bool = False


def model_prompt(r: ResolvedRequest, spec) -> str:
    """The text the model is given: the user's prompt with the model's mark hint and transparent wrapper."""
    prompt = r.prompt
    if r.marked and spec.mark_hint:
        prompt = prompt.rstrip() + spec.mark_hint
    if r.transparent and spec.transparent_prompt:
        prompt = spec.transparent_prompt.format(prompt=prompt.rstrip("."))
    return prompt


def check_text(text: str, what: str) -> str:
    """Reject control characters (other than newline and tab) and return the text stripped."""
    if not isinstance(text, str):
        raise ValidationError(f"The {what} must be text.", what)
    if len(text) > MAX_TEXT_CHARS:
        raise ValidationError(f"The {what} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}.", what)
    for ch in text:
        if ch in "\n\t\r":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029":
            raise ValidationError(
                f"The {what} contains a control character (U+{ord(ch):04X}); remove it and try again.", what
            )
    return text.strip()


def _int(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValidationError(f"{what} must be a whole number between {lo} and {hi}.", what)
    if isinstance(value, float) and not value.is_integer():
        raise ValidationError(f"{what} must be a whole number between {lo} and {hi}.", what)
    value = int(value)
    if not (lo <= value <= hi):
        got = value if abs(value) < 10**15 else "a number far outside that range"  # str() of 10**5000 raises
        raise ValidationError(f"{what} must be between {lo} and {hi} (got {got}).", what)
    return value


def _float(value, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValidationError(f"{what} must be a number between {lo:g} and {hi:g}.", what)
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range
        value = float("inf") if value > 0 else float("-inf")
    if not (lo <= value <= hi):
        raise ValidationError(f"{what} must be between {lo:g} and {hi:g} (got {value:g}).", what)
    return value


def _check_tokens(text: str, what: str, count_tokens: Callable[[str], int] | None) -> None:
    if count_tokens is None or not text:
        return
    n = count_tokens(text)
    if n > MAX_PROMPT_TOKENS:
        raise ValidationError(
            f"The {what} is {n} tokens long; the limit is {MAX_PROMPT_TOKENS}. Shorten it by about "
            f"{n - MAX_PROMPT_TOKENS} tokens (nothing is cut off silently).",
            what,
        )


def _resolve_size(req: GenerationRequest, spec, images: tuple) -> tuple[int, int, str | None, str | None]:
    tier = req.tier if req.tier is not None else spec.default_tier
    if tier not in spec.tier_names:
        raise ValidationError(
            f"Resolution {tier!r} is not offered; choose one of {', '.join(spec.tier_names)}.", "tier"
        )
    if req.width is not None or req.height is not None:
        if req.width is None or req.height is None:
            raise ValidationError("Give both width and height, or neither.", "size")
        w = _int(req.width, "Width", 1, 1 << 16)
        h = _int(req.height, "Height", 1, 1 << 16)
        try:
            w, h = sizes.check_size(spec, w, h)
        except ValueError as e:
            raise ValidationError(f"{str(e)[0].upper()}{str(e)[1:]}.", "size") from None
        return w, h, None, None
    if req.match_reference is not None:
        idx = _int(req.match_reference, "The reference to match", 1, max(1, len(images)))
        if not images:
            raise ValidationError("There is no reference image whose size could be matched.", "match_reference")
        ref = images[idx - 1]
        return (*sizes.size_like(spec, ref.width, ref.height, tier), None, tier)
    if req.aspect_ratio is None and images:
        ref = images[0]
        return (*sizes.size_like(spec, ref.width, ref.height, tier), None, tier)
    ratio = req.aspect_ratio or "1:1"
    if ratio not in spec.ratios:
        raise ValidationError(
            f"Aspect ratio {ratio!r} is not offered; choose one of {', '.join(spec.ratios)}.", "aspect_ratio"
        )
    return (*sizes.size_for(spec, ratio, tier), ratio, tier)


def resolve(
    req: GenerationRequest,
    spec,
    count_tokens: Callable[[str], int] | None = None,
    random_seed: Callable[[], int] | None = None,
) -> ResolvedRequest:
    """Validate ``req`` for the model ``spec``; raise ValidationError or return a fully specified request."""
    if not isinstance(req, GenerationRequest):
        raise ValidationError("Not a generation request.")
    prompt = check_text(req.prompt, "prompt")
    if not prompt:
        raise ValidationError("Write a prompt first.", "prompt")
    _check_tokens(prompt, "prompt", count_tokens)
    original = None if req.original_prompt is None else check_text(req.original_prompt, "original prompt")
    enhancer = None if req.enhancer is None else check_text(req.enhancer, "enhancer name")[:200]
    if not original or original == prompt:
        original, enhancer = None, None

    if req.images is not None and not isinstance(req.images, (tuple, list)):
        raise ValidationError("Reference images must be given as a list of images.", "images")
    images = tuple(req.images or ())
    if len(images) > spec.max_references:
        raise ValidationError(
            f"{len(images)} reference images attached; this model takes at most {spec.max_references}.", "images"
        )
    for i, img in enumerate(images, 1):
        if not (hasattr(img, "width") and hasattr(img, "height")):
            raise ValidationError(f"Reference image {i} is not an image.", "images")
        if img.width < 1 or img.height < 1:
            raise ValidationError(f"Reference image {i} is empty.", "images")
    # int() of thousands of digits raises ValueError; any number of 10+ digits is missing anyway
    named = {int(n) if len(n) < 10 else 10**9 for n in _IMAGE_TAG.findall(prompt)}
    missing = sorted(n for n in named if n < 1 or n > len(images))
    if missing:
        raise ValidationError(
            f"The prompt names <image{missing[0]}> but {len(images)} reference image(s) are attached.", "prompt"
        )

    if spec.sigmas:
        if req.steps is not None and req.steps != len(spec.sigmas):
            raise ValidationError(
                f"{spec.label} uses a fixed {len(spec.sigmas)}-step schedule; leave steps unset.", "steps"
            )
        steps = len(spec.sigmas)
    else:
        steps = spec.steps if req.steps is None else _int(req.steps, "Steps", 1, MAX_STEPS)

    true_cfg = spec.true_cfg if req.true_cfg is None else _float(req.true_cfg, "True CFG", 1.0, MAX_CFG)
    user_negative = "" if req.negative_prompt is None else check_text(req.negative_prompt, "negative prompt")
    _check_tokens(user_negative, "negative prompt", count_tokens)
    if true_cfg > 1.0 and not spec.allow_cfg:
        raise ValidationError(f"{spec.label} is distilled to run without CFG; set true CFG to 1.", "true_cfg")
    # The 20B models' documented negative prompt is a single space; an empty one means "the model's default".
    negative = user_negative or spec.negative_prompt
    if true_cfg > 1.0 and not negative:
        raise ValidationError(
            "True CFG above 1 needs a negative prompt (guidance steers away from it); write one or set CFG to 1.",
            "negative_prompt",
        )
    if true_cfg <= 1.0 and user_negative:
        raise ValidationError(
            "A negative prompt only takes effect with true CFG above 1; raise CFG or clear the negative prompt.",
            "negative_prompt",
        )

    num_images = _int(req.num_images, "Number of images", 1, MAX_IMAGES)
    if req.seed is None:
        seed = random_seed() if random_seed else secrets.randbelow(SEED_MAX + 1)
    else:
        seed = _int(req.seed, "Seed", 0, SEED_MAX)

    if not isinstance(req.transparent, bool):
        raise ValidationError("Transparent background must be true or false.", "transparent")
    if req.transparent and not spec.transparent:
        raise ValidationError(f"{spec.label} cannot make transparent images; use Qwen-Image-2.1.", "transparent")

    if not isinstance(req.marked, bool):
        raise ValidationError("Marked must be true or false.", "marked")
    if req.marked and not images:
        raise ValidationError("Marks need a reference image to be drawn on.", "marked")

    ref_res = spec.reference_resolution if req.reference_resolution is None else req.reference_resolution
    ref_res = _int(ref_res, "Reference resolution", spec.min_side, spec.max_reference_resolution)
    ref_res = sizes.snap(ref_res, 32)

    width, height, ratio, tier = _resolve_size(req, spec, images)
    return ResolvedRequest(
        model=spec.key,
        mode="edit" if images else "generate",
        prompt=prompt,
        negative_prompt=negative if true_cfg > 1.0 else "",
        images=images,
        width=width,
        height=height,
        steps=steps,
        true_cfg=true_cfg,
        seed=seed,
        num_images=num_images,
        transparent=req.transparent,
        reference_resolution=ref_res,
        sigmas=spec.sigmas,
        aspect_ratio=ratio,
        tier=tier,
        marked=req.marked,
        original_prompt=original,
        enhancer=enhancer or ("enhancer" if original else None),
    )
