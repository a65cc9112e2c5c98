"""The settings panel, declared once: one row per field (its label, component and the backend setting it needs).

Every tab builds its panel from ``FIELDS``; the values reach handlers as keyword arguments named after the fields
(``inputs_kwargs``), which are also the API's parameter names, and become a ``TurnSettings``. Defaults come from the
model's registry entry (``TurnSettings.defaults``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from conversations.settings import AUTO, MATCH, TurnSettings
from qwen_image.backend import Capabilities
from qwen_image.generation import SEED_MAX
from qwen_image.registry import ModelSpec
from qwen_image.sizes import size_for

from .context import QUICK


def ratio_choices(spec: ModelSpec, first: str | None = AUTO, sized: bool = True) -> list[tuple[str, str]]:
    """(label, value) pairs: an optional first choice (AUTO or MATCH), then each ratio with its default-tier size."""
    out = {AUTO: [("Auto (input image's shape, else 1:1)", AUTO)], MATCH: [("Follow the reference above", MATCH)]}
    choices = out.get(first, [])
    for ratio in spec.ratios:
        w, h = size_for(spec, ratio, spec.default_tier)
        choices.append((f"{ratio} · {w}×{h}" if sized else ratio, ratio))
    return choices


def size_note(spec: ModelSpec, ratio: str, tier: str) -> str:
    if ratio not in spec.ratios or tier not in spec.tier_names:
        return (
            f"Output about {dict(spec.tiers).get(tier, 0)}² pixels, shaped like the image being edited (1:1 otherwise)."
        )
    w, h = size_for(spec, ratio, tier)
    return f"Output size: **{w}×{h}**"


@dataclass(frozen=True)
class Field:
    name: str  # a TurnSettings field: the handler's keyword and the API parameter name
    setting: str  # the GenerationRequest setting it feeds (hidden when the backend does not take it)
    make: Callable[[ModelSpec, TurnSettings, str], gr.components.Component]  # (spec, defaults, first ratio)


def _ratio(spec, d, first):
    return gr.Dropdown(ratio_choices(spec, first, sized=first != MATCH), value=d.ratio, label="Aspect ratio")


def _steps(spec, d, first):
    fixed = spec.sigmas is not None
    info = "fixed by this model's schedule" if fixed else None
    return gr.Slider(1, 100, value=d.steps, step=1, label="Steps", interactive=not fixed, info=info)


FIELDS = (
    Field("ratio", "aspect_ratio", _ratio),
    Field("tier", "tier", lambda spec, d, first: gr.Radio(list(spec.tier_names), value=d.tier, label="Resolution")),
    Field("steps", "steps", _steps),
    Field(
        "cfg",
        "true_cfg",
        lambda spec, d, first: gr.Slider(
            1.0, 10.0, value=d.cfg, step=0.5, label="True CFG (1 = off)", visible=spec.allow_cfg
        ),
    ),
    Field(
        "negative",
        "negative_prompt",
        lambda spec, d, first: gr.Textbox(
            value=d.negative,
            label="Negative prompt",
            lines=1,
            visible=spec.true_cfg > 1,
            placeholder="what to steer away from",
            max_length=4000,
        ),
    ),
    Field(
        "seed",
        "seed",
        lambda spec, d, first: gr.Number(value=d.seed, label="Seed", precision=0, minimum=0, maximum=SEED_MAX),
    ),
    Field("randomize", "seed", lambda spec, d, first: gr.Checkbox(value=d.randomize, label="Random seed each time")),
    Field(
        "num_images", "num_images", lambda spec, d, first: gr.Slider(1, 4, value=d.num_images, step=1, label="Images")
    ),
    Field(
        "transparent",
        "transparent",
        lambda spec, d, first: gr.Checkbox(
            value=d.transparent, label="Transparent background", visible=spec.transparent
        ),
    ),
)
assert tuple(f.name for f in FIELDS) == TurnSettings.names(), "every TurnSettings field has one row in FIELDS"


class Panel:
    """The components of one settings panel, by field name, and the way back from stored settings."""

    def __init__(self, spec: ModelSpec, capabilities: Capabilities, first_ratio: str = AUTO):
        """``first_ratio``: AUTO (chat), MATCH (Edit tab: follow a reference) or "" (Generate: ratios only)."""
        self.spec = spec
        defaults = TurnSettings.defaults(spec, first_ratio or "1:1")
        self.components: dict[str, gr.components.Component] = {}
        self._fixed = {}  # hidden because the backend cannot take them: always their default
        for f in FIELDS:
            component = f.make(spec, defaults, first_ratio)
            if not capabilities.accepts(f.setting):
                component.visible = False
                self._fixed[f.name] = getattr(defaults, f.name)
            self.components[f.name] = component
            if f.name == "tier":  # the exact size, under the resolution
                size = gr.Markdown(size_note(spec, defaults.ratio, defaults.tier), visible=first_ratio != MATCH)
        ratio, tier, cfg = (self.components[k] for k in ("ratio", "tier", "cfg"))
        note = {"fn": lambda r, t: size_note(spec, r, t), "inputs": [ratio, tier], "outputs": size, **QUICK}
        ratio.change(**note)
        tier.change(**note)
        cfg.change(lambda c: gr.update(visible=c > 1), cfg, self.components["negative"], **QUICK)

    @property
    def outputs(self) -> list:
        return list(self.components.values())

    def updates(self, settings: TurnSettings) -> list:
        """Values for ``outputs`` (the negative prompt shown when CFG is on)."""
        values = [self._fixed.get(name, getattr(settings, name)) for name in self.components]
        cfg = settings.cfg or 1.0
        values[list(self.components).index("negative")] = gr.update(value=settings.negative, visible=cfg > 1)
        return values
