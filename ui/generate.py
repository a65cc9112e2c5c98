"""The Generate tab: a prompt and full control of the settings; results in a gallery, each kept as a conversation."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from qwen_image.sizes import size_for

from . import enhance as enhance_ui
from .chat import page_and_api
from .context import QUICK, AppContext
from .i18n import Tr, lang_of, t
from .progress import results_gallery, stopper
from .settings import CUSTOM, Panel


@dataclass(frozen=True)
class GenerateTab:
    prompt: gr.Textbox
    run: gr.Button
    stop: gr.Button
    info: gr.Markdown
    panel: Panel
    custom: gr.Checkbox  # the API's switch to width x height (the page uses the ratio's "Custom size" choice)
    width: gr.Number
    height: gr.Number
    gallery: gr.Gallery
    pick: gr.State  # the index of the result selected in the gallery
    to_edit: gr.Button
    enhance: enhance_ui.EnhanceControls


def layout(ctx: AppContext) -> GenerateTab:
    """The prompt and the results first (uncropped, at the top of the view), the prompt enhancer and the settings beside
    them."""
    spec = ctx.spec
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            prompt = gr.Textbox(label=t("generate.prompt"), lines=2, max_length=20000, elem_id="qic-gen-prompt")
            with gr.Row():
                run = gr.Button(t("generate.run"), variant="primary", elem_id="qic-gen-run", size="md")
                stop = gr.Button(t("common.stop"), variant="stop", scale=0, min_width=90, size="md")
            gallery = results_gallery(t("generate.results"), 460, "qic-gen-results")
            info = gr.Markdown("", elem_id="qic-gen-info")
            to_edit = gr.Button(t("generate.to_edit"), size="sm")
        with gr.Column(scale=2, min_width=280):
            enhance = enhance_ui.layout(ctx, "gen")  # beside the prompt: the results stay at the top of the view
            custom = gr.Checkbox(False, label="custom", visible=False)
            w, h = size_for(spec, "1:1", spec.default_tier)
            boxes = []

            def extra():
                with gr.Row(visible=False) as row:
                    boxes.extend(
                        [
                            gr.Number(w, label=t("generate.width"), precision=0),
                            gr.Number(h, label=t("generate.height"), precision=0),
                        ]
                    )
                boxes.append(row)

            panel = Panel(spec, ctx.backend.capabilities, first_ratio="", extra=extra)
            width, height, size_row = boxes
            panel.components["ratio"].change(
                lambda r: gr.update(visible=r == CUSTOM), panel.components["ratio"], size_row, **QUICK
            )
            panel.components["ratio"].change(
                lambda r: gr.update(open=True) if r == CUSTOM else gr.skip(),
                panel.components["ratio"],
                panel.advanced,
                **QUICK,
            )
    return GenerateTab(prompt, run, stop, info, panel, custom, width, height, gallery, gr.State(0), to_edit, enhance)


class GenerateHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def generate(
        self,
        prompt,
        custom=False,
        width=None,
        height=None,
        owner_state=None,
        request: gr.Request = None,
        *,
        enhance: bool = False,
        enhanced_prompt: str = "",
        **settings,
    ):
        """Text to image in a new conversation; ``custom`` (or the ratio "custom"): ``width`` x ``height`` instead of
        ratio and resolution; ``enhance``: rewrite the prompt first (``enhanced_prompt``, when given, is drawn as
        written)."""
        custom = bool(custom) or settings.get("ratio") == CUSTOM
        if settings.get("ratio") == CUSTOM:
            settings["ratio"] = None

        def start(owner, step):
            size = (width, height) if custom else None  # checked (and snapped) by the backend's validation
            turn = TurnSettings(**settings).request(self.ctx.spec, prompt, size=size)
            return self.ctx.turns.start(owner, None, turn, enhance=step)

        yield from enhance_ui.gallery_turn(self.ctx, owner_state, request, start, enhance, enhanced_prompt)

    def enhance_only(self, prompt, owner_state=None, request: gr.Request = None):
        """The rewrite of a text-to-image prompt, streamed, without drawing; (rewrite, line with the suggested
        aspect ratio or why the prompt was left as written)."""
        turn = TurnSettings().request(self.ctx.spec, prompt)  # ratio on auto: the enhancer suggests one
        yield from enhance_ui.enhance_only(self.ctx, owner_state, request, Tr(lang_of(request)), turn)


def _selected_index(evt: gr.SelectData):
    return evt.index


def wire(ctx: AppContext, tab: GenerateTab, owner: gr.State, refresh: dict) -> GenerateHandlers:
    gen = GenerateHandlers(ctx)
    inputs = [tab.prompt, tab.custom, tab.width, tab.height, owner]
    outputs = [tab.gallery, tab.info, owner, tab.enhance.rewrite]
    kwargs = {**tab.panel.components, **tab.enhance.kwargs}
    events = {"inputs_kwargs": kwargs, "show_progress": "hidden", **ctx.gpu}
    page_and_api(tab.run, gen.generate, inputs, outputs, "generate", refresh, **events)
    enhance_ui.wire_only(tab.enhance, gen.enhance_only, [tab.prompt, owner], tab.info, "enhance")
    enhance_ui.clear_on_edit(tab.prompt, tab.enhance)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_generate")
    tab.gallery.select(_selected_index, None, tab.pick, **QUICK)
    return gen
