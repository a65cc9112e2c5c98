"""The Generate tab: a prompt and full control of the settings; results in a gallery, each kept as a conversation."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from qwen_image.sizes import size_for

from . import enhance as enhance_ui
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
    enhance: enhance_ui.EnhanceControls


def layout(ctx: AppContext) -> GenerateTab:
    spec = ctx.spec
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, max_length=20000)
            enhance = enhance_ui.layout(ctx)
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
    return GenerateTab(prompt, run, stop, info, panel, custom, width, height, gallery, gr.State(0), to_edit, enhance)


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
        *,
        enhance: bool = False,
        enhanced_prompt: str = "",
        **settings,
    ):
        """Text to image in a new conversation; ``custom``: ``width`` x ``height`` instead of ratio and resolution;
        ``enhance``: rewrite the prompt first (``enhanced_prompt``, when given, is drawn as written)."""

        def start(owner, step):
            size = (width, height) if custom else None  # checked (and snapped) by the backend's validation
            turn = TurnSettings(**settings).request(self.ctx.spec, prompt, size=size)
            return self.ctx.turns.start(owner, None, turn, enhance=step)

        snap = None
        for owner, rewrite, snap in enhance_ui.start_turn(
            self.ctx, owner_state, request, start, enhance, enhanced_prompt
        ):
            if snap is None:
                yield gr.skip(), enhance_ui.TEXT["working"], owner, rewrite
        if snap is None:
            yield gr.skip(), enhance_ui.TEXT["stopped"], owner, gr.skip()
            return
        rewrite = enhance_ui.final_rewrite(self.ctx, owner, snap, enhanced_prompt)
        for files, info, own in gallery_results(self.ctx, owner, snap, progress):
            yield files, info, own, rewrite

    def enhance_only(self, prompt, owner_state, request: gr.Request = None):
        """The rewrite of a text-to-image prompt, streamed, without drawing; (rewrite, line with the suggested
        aspect ratio or why the prompt was left as written)."""
        turn = TurnSettings().request(self.ctx.spec, prompt)  # ratio on auto: the enhancer suggests one
        yield from enhance_ui.enhance_only(self.ctx, owner_state, request, turn)


def _selected_index(evt: gr.SelectData):
    return evt.index


def wire(ctx: AppContext, tab: GenerateTab, owner: gr.State, refresh: dict) -> GenerateHandlers:
    gen = GenerateHandlers(ctx)
    tab.run.click(
        gen.generate,
        [tab.prompt, tab.custom, tab.width, tab.height, owner],
        [tab.gallery, tab.info, owner, tab.enhance.rewrite],
        inputs_kwargs={**tab.panel.components, **tab.enhance.kwargs},
        api_name="generate",
        **ctx.gpu,
    ).then(**refresh)
    tab.enhance.only.click(gen.enhance_only, [tab.prompt, owner], [tab.enhance.rewrite, tab.info], api_name="enhance")
    enhance_ui.clear_on_edit(tab.prompt, tab.enhance)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_generate")
    tab.gallery.select(_selected_index, None, tab.pick, **QUICK)
    return gen
