"""The Generate tab: a prompt and full control of the settings; results in a gallery, each kept as a conversation."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from qwen_image.sizes import size_for

from .context import QUICK, AppContext
from .progress import gallery_results, stopper
from .settings import Panel

EXAMPLES = [
    "A red fox curled up in fresh snow at dawn, soft light, photograph",
    "A minimalist poster that reads 'QWEN IMAGE' in bold letters, pastel background",
    "An isometric cozy reading room with plants and a cat, warm evening light, 3D render",
    "A watercolor map of an imaginary island with mountains, rivers and a lighthouse",
]


@dataclass(frozen=True)
class GenerateTab:
    prompt: gr.Textbox
    run: gr.Button
    stop: gr.Button
    info: gr.Markdown
    panel: Panel
    custom: gr.Checkbox
    width: gr.Number
    height: gr.Number
    gallery: gr.Gallery
    pick: gr.State  # the index of the result selected in the gallery
    to_edit: gr.Button


def layout(ctx: AppContext) -> GenerateTab:
    spec = ctx.spec
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, max_length=20000)
            run = gr.Button("Generate", variant="primary")
            stop = gr.Button("⏹ Stop", size="sm", variant="stop")
            info = gr.Markdown("")
            gr.Examples(EXAMPLES, inputs=prompt, label="Examples")
        with gr.Column(scale=1):
            panel = Panel(spec, ctx.backend.capabilities, first_ratio="")
            custom = gr.Checkbox(False, label="Custom size")
            w, h = size_for(spec, "1:1", spec.default_tier)
            with gr.Row():
                width = gr.Number(w, label="Width", precision=0)
                height = gr.Number(h, label="Height", precision=0)
    gallery = gr.Gallery(label="Results", columns=2, height=520, format="png", buttons=["download", "fullscreen"])
    to_edit = gr.Button("Send the selected result to the Edit tab", size="sm")
    return GenerateTab(prompt, run, stop, info, panel, custom, width, height, gallery, gr.State(0), to_edit)


class GenerateHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def generate(
        self,
        prompt,
        custom,
        width,
        height,
        owner_state,
        request: gr.Request = None,
        progress=gr.Progress(),
        **settings,
    ):
        """Text to image in a new conversation; ``custom``: ``width`` x ``height`` instead of ratio and resolution."""

        def start(owner):
            size = (width, height) if custom else None  # checked (and snapped) by the backend's validation
            return self.ctx.turns.start(owner, None, TurnSettings(**settings).request(self.ctx.spec, prompt, size=size))

        owner, snap = self.ctx.act(owner_state, request, start)
        yield from gallery_results(self.ctx, owner, snap, progress)


def _selected_index(evt: gr.SelectData):
    return evt.index


def wire(ctx: AppContext, tab: GenerateTab, owner: gr.State, refresh: dict) -> GenerateHandlers:
    gen = GenerateHandlers(ctx)
    tab.run.click(
        gen.generate,
        [tab.prompt, tab.custom, tab.width, tab.height, owner],
        [tab.gallery, tab.info, owner],
        inputs_kwargs=tab.panel.components,
        api_name="generate",
        **ctx.gpu,
    ).then(**refresh)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_generate")
    tab.gallery.select(_selected_index, None, tab.pick, **QUICK)
    return gen
