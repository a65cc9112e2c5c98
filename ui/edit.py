"""The Edit tab: 1-N reference images, an instruction, optional red marks for a local edit, a before/after slider."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import MATCH, TurnSettings
from conversations.turns import TurnImage
from qwen_image.generation import ValidationError
from qwen_image.images import normalise

from . import enhance as enhance_ui
from .context import PRIVATE, AppContext
from .progress import gallery_results, stopper
from .settings import Panel

MARK_COLOR = "#ff2a2a"


@dataclass(frozen=True)
class EditTab:
    refs: gr.Gallery
    instruction: gr.Textbox
    marks: gr.ImageEditor
    run: gr.Button
    stop: gr.Button
    info: gr.Markdown
    match: gr.Number
    panel: Panel
    gallery: gr.Gallery
    compare: gr.ImageSlider
    enhance: enhance_ui.EnhanceControls


def layout(ctx: AppContext) -> EditTab:
    spec = ctx.spec
    with gr.Row():
        with gr.Column(scale=2):
            refs = gr.Gallery(
                label=f"Reference images (1-{spec.max_references}; name them <image1>…)",
                type="filepath",
                interactive=True,
                columns=5,
                height=200,
                sources=["upload", "clipboard"],
                format="png",
            )
            instruction = gr.Textbox(
                label="Instruction",
                lines=2,
                max_length=20000,
                placeholder="e.g. put the hat from <image2> on the cat in <image1>",
            )
            enhance = enhance_ui.layout(ctx)
            marks = gr.ImageEditor(
                label="Local edit: paint or circle what to change on reference 1",
                type="pil",
                brush=gr.Brush(colors=[MARK_COLOR], color_mode="fixed"),
                eraser=gr.Eraser(),
                sources=[],
                layers=False,
                height=360,
            )
            run = gr.Button("Edit", variant="primary")
            stop = gr.Button("⏹ Stop", size="sm", variant="stop")
            info = gr.Markdown("")
        with gr.Column(scale=1):
            match = gr.Number(
                1, label="Output shape follows reference #", precision=0, minimum=1, maximum=spec.max_references
            )
            panel = Panel(spec, ctx.backend.capabilities, first_ratio=MATCH)
    with gr.Row():
        gallery = gr.Gallery(label="Results", columns=2, height=520, format="png", buttons=["download", "fullscreen"])
        compare = gr.ImageSlider(
            label="Before / after (reference 1 and the first result)",
            type="pil",
            format="png",
            image_mode=None,
            interactive=False,
            max_height=520,
        )
    return EditTab(refs, instruction, marks, run, stop, info, match, panel, gallery, compare, enhance)


def gallery_files(value) -> list:
    """The files of a gallery value (its items are (file, caption) pairs or bare files)."""
    return [item[0] if isinstance(item, (list, tuple)) else item for item in (value or [])]


def before_after(reference, result_path: str) -> tuple:
    """The edited reference and the result, the reference scaled to the result's size, for a compare slider."""
    from PIL import Image

    with Image.open(result_path) as im:
        after = im.convert("RGBA") if im.mode == "RGBA" else im.convert("RGB")
    before = reference.convert(after.mode).resize(after.size, Image.Resampling.LANCZOS)
    return before, after


def marked_image(marks):
    """The background with the user's marks composited on it, or None when nothing was drawn."""
    if not isinstance(marks, dict) or marks.get("background") is None:
        return None
    layers = [layer for layer in (marks.get("layers") or []) if layer is not None]
    drawn = any(layer.mode == "RGBA" and layer.getchannel("A").getextrema()[1] > 0 for layer in layers)
    if not drawn:
        return None
    return normalise(marks["composite"], keep_alpha=False, label="marked image")


class EditHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def edit(
        self,
        references,
        instruction,
        marks,
        match,
        owner_state,
        request: gr.Request = None,
        progress=gr.Progress(),
        *,
        enhance: bool = False,
        enhanced_prompt: str = "",
        **settings,
    ):
        """Edit the references (the first one with its marks) in a new conversation; ``enhance``: rewrite the
        instruction first, looking at the references (``enhanced_prompt``, when given, is used as written)."""
        inputs = []

        def start(owner, step):
            turn = self._request(inputs, references, instruction, marks, match, settings)
            return self.ctx.turns.start(owner, None, turn, inputs, enhance=step)

        snap = None
        for owner, rewrite, snap in enhance_ui.start_turn(
            self.ctx, owner_state, request, start, enhance, enhanced_prompt
        ):
            if snap is None:
                yield gr.skip(), enhance_ui.TEXT["working"], owner, gr.skip(), rewrite
        if snap is None:
            yield gr.skip(), enhance_ui.TEXT["stopped"], owner, gr.skip(), gr.skip()
            return
        rewrite = enhance_ui.final_rewrite(self.ctx, owner, snap, enhanced_prompt)
        reference = inputs[0].image
        for files, info, own in gallery_results(self.ctx, owner, snap, progress):
            done = isinstance(files, list) and files
            yield files, info, own, (before_after(reference, files[0][0]) if done else gr.skip()), rewrite

    def _request(self, inputs: list, references, instruction, marks, match, settings: dict):
        """Fill ``inputs`` with the checked references (reference 1 with its marks); the edit request."""
        inputs[:] = self.ctx.turns.uploads(gallery_files(references))
        if not inputs:
            raise ValidationError("Add at least one reference image to edit.")
        marked = marked_image(marks)
        if marked is not None:
            inputs[0] = TurnImage(marked)
        turn = TurnSettings(**settings).request(
            self.ctx.spec, instruction, match_reference=match, marked=marked is not None
        )
        return turn

    def enhance_only(self, references, instruction, marks, owner_state, request: gr.Request = None):
        """The rewrite of an edit instruction (the enhancer looks at the references), streamed, without editing."""
        inputs: list = []
        try:
            turn = self._request(inputs, references, instruction, marks, None, {"ratio": None})
        except Exception as exc:
            raise enhance_ui.user_error(exc) from None
        yield from enhance_ui.enhance_only(self.ctx, owner_state, request, turn, inputs)

    def add_turn_image(self, current, owner_state, selected, request: gr.Request = None):
        """Send the chat's selected image to the references."""
        _, first = self.ctx.act(owner_state, request, lambda owner: self.ctx.turns.result_image(owner, selected))
        return self._append(current, self.ctx.media.download(first, f"qwen-image-{first.seed}.png"))

    def add_result(self, current, gallery, index):
        """Send the selected (or first) result of a gallery to the references."""
        results = gallery_files(gallery)
        if not results:
            raise gr.Error("There is no result to send yet.")
        return self._append(current, results[index if isinstance(index, int) and 0 <= index < len(results) else 0])

    def _append(self, current, item) -> list:
        items = gallery_files(current)
        if len(items) >= self.ctx.spec.max_references:
            raise gr.Error(f"At most {self.ctx.spec.max_references} reference images.")
        return [*items, item]

    def marks_background(self, references):
        """Load reference 1 into the marking canvas."""
        files = gallery_files(references)
        if not files:
            return gr.update(value=None)
        return gr.update(value={"background": files[0], "layers": [], "composite": None})


def wire(ctx: AppContext, tab: EditTab, owner: gr.State, refresh: dict) -> EditHandlers:
    edit = EditHandlers(ctx)
    tab.run.click(
        edit.edit,
        [tab.refs, tab.instruction, tab.marks, tab.match, owner],
        [tab.gallery, tab.info, owner, tab.compare, tab.enhance.rewrite],
        inputs_kwargs={**tab.panel.components, **tab.enhance.kwargs},
        api_name="edit",
        **ctx.gpu,
    ).then(**refresh)
    tab.enhance.only.click(
        edit.enhance_only,
        [tab.refs, tab.instruction, tab.marks, owner],
        [tab.enhance.rewrite, tab.info],
        api_name="enhance_edit",
    )
    enhance_ui.clear_on_edit(tab.instruction, tab.enhance)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_edit")
    tab.refs.change(edit.marks_background, tab.refs, tab.marks, **PRIVATE)
    return edit
