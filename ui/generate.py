"""The Generate tab: a prompt and full control of the settings; results in a gallery, each kept as a conversation."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from qwen_image.sizes import size_for

from .chat import toasts_each
from .context import PRIVATE, QUICK, AppContext
from .i18n import t
from .progress import gallery_results, stopper
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


def layout(ctx: AppContext) -> GenerateTab:
    """The prompt and the results first (uncropped, at the top of the view), the settings beside them."""
    spec = ctx.spec
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            prompt = gr.Textbox(label=t("generate.prompt"), lines=2, max_length=20000, elem_id="qic-gen-prompt")
            with gr.Row():
                run = gr.Button(t("generate.run"), variant="primary", elem_id="qic-gen-run", size="md")
                stop = gr.Button(t("common.stop"), variant="stop", scale=0, min_width=90, size="md")
            gallery = gr.Gallery(
                label=t("generate.results"),
                columns=2,
                height=460,
                object_fit="contain",
                format="png",
                buttons=["download", "fullscreen"],
                allow_preview=False,
                elem_id="qic-gen-results",
            )
            info = gr.Markdown("", elem_id="qic-gen-info")
            to_edit = gr.Button(t("generate.to_edit"), size="sm")
        with gr.Column(scale=2, min_width=280):
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
    return GenerateTab(prompt, run, stop, info, panel, custom, width, height, gallery, gr.State(0), to_edit)


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
        **settings,
    ):
        """Text to image in a new conversation; ``custom`` (or the ratio "custom"): ``width`` x ``height`` instead of
        ratio and resolution."""
        custom = bool(custom) or settings.get("ratio") == CUSTOM
        if settings.get("ratio") == CUSTOM:
            settings["ratio"] = None

        def start(owner):
            size = (width, height) if custom else None  # checked (and snapped) by the backend's validation
            return self.ctx.turns.start(owner, None, TurnSettings(**settings).request(self.ctx.spec, prompt, size=size))

        owner, snap = self.ctx.act(owner_state, request, start)
        yield from gallery_results(self.ctx, owner, snap, request)


def _selected_index(evt: gr.SelectData):
    return evt.index


def wire(ctx: AppContext, tab: GenerateTab, owner: gr.State, refresh: dict) -> GenerateHandlers:
    gen = GenerateHandlers(ctx)
    inputs = [tab.prompt, tab.custom, tab.width, tab.height, owner]
    outputs = [tab.gallery, tab.info, owner]
    events = {"inputs_kwargs": tab.panel.components, "show_progress": "hidden", **ctx.gpu}
    tab.run.click(toasts_each(gen.generate), inputs, outputs, api_name="page_generate", **events, **PRIVATE).then(
        **refresh
    )
    api = gr.Button("generate", visible=False)
    api.click(gen.generate, inputs, outputs, api_name="generate", **events).then(**refresh)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_generate")
    tab.gallery.select(_selected_index, None, tab.pick, **QUICK)
    return gen
