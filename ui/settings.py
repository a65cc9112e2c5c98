"""The settings panel: its components (defaults from the model's registry entry) and turning values into a request."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from qwen_image.generation import SEED_MAX, GenerationRequest
from qwen_image.sizes import size_for

AUTO = "auto"


@dataclass(frozen=True)
class PanelValues:
    ratio: str
    tier: str
    steps: int
    cfg: float
    negative: str
    seed: float | None
    randomize: bool
    num_images: int
    transparent: bool

    @classmethod
    def from_inputs(cls, values) -> PanelValues:
        return cls(*values)


def ratio_choices(spec, with_auto: bool = True) -> list[tuple[str, str]]:
    out = [("Auto (input image's shape, else 1:1)", AUTO)] if with_auto else []
    for ratio in spec.ratios:
        w, h = size_for(spec, ratio, spec.default_tier)
        out.append((f"{ratio} · {w}×{h}", ratio))
    return out


def size_note(spec, ratio: str, tier: str) -> str:
    if ratio == AUTO or ratio not in spec.ratios or tier not in spec.tier_names:
        return (
            f"Output about {dict(spec.tiers).get(tier, 0)}² pixels, shaped like the image being edited (1:1 otherwise)."
        )
    w, h = size_for(spec, ratio, tier)
    return f"Output size: **{w}×{h}**"


def build_panel(spec, with_auto: bool = True, show_ratio: bool = True):
    """Components of the settings panel, in the order of PanelValues."""
    ratio = gr.Dropdown(
        ratio_choices(spec, with_auto), value=AUTO if with_auto else "1:1", label="Aspect ratio", visible=show_ratio
    )
    tier = gr.Radio(list(spec.tier_names), value=spec.default_tier, label="Resolution")
    size = gr.Markdown(size_note(spec, AUTO if with_auto else "1:1", spec.default_tier), visible=show_ratio)
    fixed = spec.sigmas is not None
    steps = gr.Slider(
        1,
        100,
        value=spec.steps,
        step=1,
        label="Steps",
        interactive=not fixed,
        info="fixed by this model's schedule" if fixed else None,
    )
    cfg = gr.Slider(1.0, 10.0, value=spec.true_cfg, step=0.5, label="True CFG (1 = off)", visible=spec.allow_cfg)
    negative = gr.Textbox(
        value=spec.negative_prompt.strip(),
        label="Negative prompt",
        lines=1,
        visible=spec.true_cfg > 1,
        placeholder="what to steer away from",
        max_length=4000,
    )
    seed = gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=SEED_MAX)
    randomize = gr.Checkbox(value=True, label="Random seed each time")
    num_images = gr.Slider(1, 4, value=1, step=1, label="Images")
    transparent = gr.Checkbox(value=False, label="Transparent background", visible=spec.transparent)
    ratio.change(lambda r, t: size_note(spec, r, t), [ratio, tier], size, api_visibility="private", queue=False)
    tier.change(lambda r, t: size_note(spec, r, t), [ratio, tier], size, api_visibility="private", queue=False)
    cfg.change(lambda c: gr.update(visible=c > 1), cfg, negative, api_visibility="private", queue=False)
    return [ratio, tier, steps, cfg, negative, seed, randomize, num_images, transparent]


def to_request(
    spec, prompt, images: list, v: PanelValues, match_reference: int | None = None, size: tuple | None = None
) -> GenerationRequest:
    """A request from the panel's values; ``images`` are PIL references (the edited image first); ``size`` is an
    explicit (width, height) that replaces the ratio and tier."""
    ratio = None if v.ratio in (AUTO, None, "") else v.ratio
    if ratio is None and not images and match_reference is None:
        ratio = "1:1"
    if match_reference is not None or size is not None:
        ratio = None
    cfg = float(v.cfg) if v.cfg is not None else None
    negative = v.negative if cfg is not None and cfg > 1 else None
    seed = None if v.randomize or v.seed is None else v.seed
    return GenerationRequest(
        prompt=prompt if isinstance(prompt, str) else "",
        negative_prompt=negative,
        images=tuple(images),
        aspect_ratio=ratio,
        width=size[0] if size else None,
        height=size[1] if size else None,
        tier=v.tier,
        match_reference=match_reference,
        steps=None if spec.sigmas else v.steps,
        true_cfg=cfg,
        seed=seed,
        num_images=v.num_images,
        transparent=bool(v.transparent) and spec.transparent,
    )


def request_from_settings(prompt: str, settings: dict, images: list, new_seed: bool = True) -> GenerationRequest:
    """Re-run a stored turn: the same prompt, size and settings (a new seed unless told otherwise)."""
    cfg = settings.get("true_cfg")
    neg = settings.get("negative_prompt") or None
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=neg if cfg and cfg > 1 else None,
        images=tuple(images),
        width=settings.get("width"),
        height=settings.get("height"),
        steps=None if settings.get("sigmas") else settings.get("steps"),
        true_cfg=cfg,
        seed=None if new_seed else settings.get("seed"),
        num_images=settings.get("num_images", 1),
        transparent=bool(settings.get("transparent")),
        reference_resolution=settings.get("reference_resolution"),
    )


def panel_updates(spec, settings: dict) -> list:
    """Values that refill the panel from stored settings (Reuse settings)."""
    ratio = settings.get("aspect_ratio") if settings.get("aspect_ratio") in spec.ratios else AUTO
    tier = settings.get("tier") if settings.get("tier") in spec.tier_names else spec.default_tier
    cfg = settings.get("true_cfg", spec.true_cfg) or 1.0
    seed = settings.get("seed")
    return [
        ratio,
        tier,
        int(settings.get("steps") or spec.steps),
        float(cfg),
        gr.update(value=(settings.get("negative_prompt") or "").strip(), visible=cfg > 1),
        seed if isinstance(seed, int) else 0,
        not isinstance(seed, int),
        int(settings.get("num_images") or 1),
        bool(settings.get("transparent")) and spec.transparent,
    ]
