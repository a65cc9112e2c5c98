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
from .i18n import DEFAULT, Tr, t

CUSTOM = "custom"  # Generate tab: the width and height boxes instead of a ratio


def ratio_choices(
    spec: ModelSpec, first: str | None = AUTO, sized: bool = True, custom: bool = False, auto=None
) -> list:
    """(label, value) pairs: an optional first choice (AUTO, labelled ``auto`` or as for a new image, or MATCH), then
    each ratio (``sized``: with its default-tier size), then (``custom``) an exact width and height."""
    out = {AUTO: [(auto or t("settings.ratio_auto_new"), AUTO)], MATCH: [(t("settings.ratio_match"), MATCH)]}
    choices = list(out.get(first, []))
    for ratio in spec.ratios:
        w, h = size_for(spec, ratio, spec.default_tier)
        choices.append((f"{ratio} · {w}×{h}" if sized else ratio, ratio))
    if custom:
        choices.append((t("settings.ratio_custom"), CUSTOM))
    return choices


def auto_label(editing: bool, tr: Tr) -> str:
    """The chat's "auto" shape in words true for what the next message does: a new image is square (unless the
    enhancer suggests a shape), an edit keeps the shape of the image it edits."""
    return tr("settings.ratio_auto_edit") if editing else tr("settings.ratio_auto_new")


# the resolution tiers in plain words (the values stay the registry's names, which the API takes)
TIER_WORDS = {"1K": "settings.tier_standard", "1.5K": "settings.tier_large", "2K": "settings.tier_max"}


def tier_choices(spec: ModelSpec) -> list:
    """(label, value) pairs: each tier in words with its side in pixels ("Standard · 1024 px")."""
    return [(t(TIER_WORDS[name]) + f" · {side} px" if name in TIER_WORDS else name, name) for name, side in spec.tiers]


def size_note(spec: ModelSpec, ratio: str, tier: str, tr: Tr | None = None) -> str:
    tr = tr or Tr(DEFAULT)
    if ratio == CUSTOM:
        return tr("settings.size_custom")
    if ratio not in spec.ratios or tier not in spec.tier_names:
        return tr("settings.size_auto", side=dict(spec.tiers).get(tier, 0))
    w, h = size_for(spec, ratio, tier)
    return tr("settings.size_exact", w=w, h=h)


@dataclass(frozen=True)
class Field:
    name: str  # a TurnSettings field: the handler's keyword and the API parameter name
    setting: str  # the GenerationRequest setting it feeds (hidden when the backend does not take it)
    make: Callable[[ModelSpec, TurnSettings, str], gr.components.Component]  # (spec, defaults, first ratio)


def _ratio(spec, d, first):
    return gr.Dropdown(  # the sizes are in the resolution's labels and the size note: true whatever the tier
        ratio_choices(spec, first, sized=False, custom=first == ""),
        value=d.ratio,
        label=t("settings.ratio"),
        elem_classes=["qic-ratio"],
    )


def _steps(spec, d, first):
    fixed = spec.sigmas is not None
    info = t("settings.steps_fixed") if fixed else None
    return gr.Slider(
        1,
        100,
        value=d.steps,
        step=1,
        label=t("settings.steps"),
        interactive=not fixed,
        info=info,
        elem_classes=["qic-steps"],
    )


FIELDS = (
    Field("ratio", "aspect_ratio", _ratio),
    Field(
        "tier",
        "tier",
        lambda spec, d, first: gr.Dropdown(
            tier_choices(spec), value=d.tier, label=t("settings.tier"), elem_classes=["qic-tier"]
        ),
    ),
    Field("steps", "steps", _steps),
    Field(
        "cfg",
        "true_cfg",
        lambda spec, d, first: gr.Slider(
            1.0, 10.0, value=d.cfg, step=0.5, label=t("settings.cfg"), visible=spec.allow_cfg
        ),
    ),
    Field(
        "negative",
        "negative_prompt",
        lambda spec, d, first: gr.Textbox(
            value=d.negative,
            label=t("settings.negative"),
            lines=1,
            visible=spec.true_cfg > 1,
            placeholder=t("settings.negative_placeholder"),
            max_length=4000,
        ),
    ),
    Field(
        "seed",
        "seed",
        lambda spec, d, first: gr.Number(
            value=d.seed, label=t("settings.seed"), precision=0, minimum=0, maximum=SEED_MAX
        ),
    ),
    Field("randomize", "seed", lambda spec, d, first: gr.Checkbox(value=d.randomize, label=t("settings.randomize"))),
    Field(
        "num_images",
        "num_images",
        lambda spec, d, first: gr.Slider(1, 4, value=d.num_images, step=1, label=t("settings.num_images")),
    ),
    Field(
        "transparent",
        "transparent",
        lambda spec, d, first: gr.Checkbox(
            value=d.transparent, label=t("settings.transparent"), visible=spec.transparent
        ),
    ),
)
assert tuple(f.name for f in FIELDS) == TurnSettings.names(), "every TurnSettings field has one row in FIELDS"


COMPACT = ("ratio", "tier")  # the fields beside the message box; the others go under "Advanced"


class Panel:
    """The components of one settings panel, by field name, and the way back from stored settings.

    The shape of the output (ratio, resolution) comes first, in a row; the other fields under a closed "Advanced".
    """

    def __init__(
        self, spec: ModelSpec, capabilities: Capabilities, first_ratio: str = AUTO, extra=None, compact: bool = False
    ):
        """``first_ratio``: AUTO (chat), MATCH (Edit tab: follow a reference) or "" (Generate: ratios only, and a
        custom size). ``extra``: a function called inside the Advanced accordion to add the tab's own controls.
        ``compact`` (beside the message box, inside the caller's row): the shape as small chips without labels."""
        self.spec = spec
        defaults = TurnSettings.defaults(spec, first_ratio or "1:1")
        self.components: dict[str, gr.components.Component] = {}
        built: dict[str, gr.components.Component] = {}
        self._fixed = {}  # hidden because the backend cannot take them: always their default

        def make(f: Field):
            component = f.make(spec, defaults, first_ratio)
            if not capabilities.accepts(f.setting):
                component.visible = False
                self._fixed[f.name] = getattr(defaults, f.name)
            if compact and f.name in COMPACT:
                component.show_label, component.container, component.min_width = False, False, 110
                component.scale = 0
            built[f.name] = component

        by_name = {f.name: f for f in FIELDS}
        if compact:
            for name in COMPACT:
                make(by_name[name])
        else:
            with gr.Row(elem_classes=["qic-shape"], equal_height=True):
                for name in COMPACT:
                    make(by_name[name])
        note = size_note(spec, defaults.ratio, defaults.tier)
        self.size = gr.Markdown(note, elem_classes=["qic-size"], visible=not compact)  # compact: the ratio says it
        with gr.Accordion(t("settings.advanced"), open=False, elem_classes=["qic-advanced"]) as self.advanced:
            for f in FIELDS:
                if f.name not in COMPACT:
                    make(f)
            if extra is not None:
                extra()
        self.components = {f.name: built[f.name] for f in FIELDS}  # in FIELDS order: the handlers' keywords
        ratio, tier, cfg = (self.components[k] for k in ("ratio", "tier", "cfg"))

        def note(r, tr_, request: gr.Request = None):
            from .i18n import lang_of

            return size_note(spec, r, tr_, Tr(lang_of(request)))

        ratio.change(note, [ratio, tier], self.size, **QUICK)
        tier.change(note, [ratio, tier], self.size, **QUICK)
        cfg.change(lambda c: gr.update(visible=c > 1), cfg, self.components["negative"], **QUICK)

    @property
    def outputs(self) -> list:
        return list(self.components.values())

    def updates(self, settings: TurnSettings) -> list:
        """Values for ``outputs`` (the negative prompt shown when CFG is on)."""
        values = [self._fixed.get(name, getattr(settings, name)) for name in self.components]
        if "negative" not in self._fixed:
            cfg = self._fixed.get("cfg", settings.cfg) or 1.0
            values[list(self.components).index("negative")] = gr.update(value=settings.negative, visible=cfg > 1)
        return values

    def stored(self, values: dict) -> list:
        """Values for ``outputs`` from what a browser kept (``persist``); anything odd falls back to the defaults."""
        if not isinstance(values, dict):
            return [gr.skip()] * len(self.components)
        out = []
        for name, component in self.components.items():
            value = values.get(name)
            ok = value is not None and name not in self._fixed and _fits(component, value)
            out.append(value if ok else gr.skip())
        return out


def _fits(component, value) -> bool:
    """Whether a remembered value is one the component takes (choices, ranges, types)."""
    if isinstance(component, gr.Dropdown):
        return value in [c[1] if isinstance(c, tuple) else c for c in (component.choices or [])]
    if isinstance(component, gr.Slider):
        return isinstance(value, (int, float)) and component.minimum <= value <= component.maximum
    if isinstance(component, gr.Checkbox):
        return isinstance(value, bool)
    if isinstance(component, gr.Number):
        return isinstance(value, (int, float)) and 0 <= value <= SEED_MAX
    if isinstance(component, gr.Textbox):
        return isinstance(value, str) and len(value) <= 4000
    return False
