"""The Edit tab: 1-N reference images, an instruction, optional red marks for a local edit, a before/after slider."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from conversations.settings import MATCH, TurnSettings
from conversations.turns import TurnImage
from qwen_image.generation import ValidationError
from qwen_image.images import normalise

from . import enhance as enhance_ui
from .chat import page_and_api
from .context import PRIVATE, TOAST_S, AppContext, user_error
from .i18n import Tr, lang_of, t
from .media import file_name
from .progress import results_gallery, stopper
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
    match: gr.Number  # the API's "output shape follows reference #" (the page uses the ratio's "Like <imageN>")
    panel: Panel
    gallery: gr.Gallery
    compare: gr.ImageSlider
    enhance: enhance_ui.EnhanceControls


def shape_choices(spec) -> list:
    """The one control for the output's shape: like one of the references (numbered as the prompt names them), or a
    ratio."""
    like = [(t("edit.like_1"), MATCH)]
    like += [(f"<image{n}>", f"{MATCH}:{n}") for n in range(2, spec.max_references + 1)]
    return like + [(ratio, ratio) for ratio in spec.ratios]


def layout(ctx: AppContext) -> EditTab:
    """References and instruction on the left, the results (with the before/after slider) on the right, at the top."""
    spec = ctx.spec
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            refs = gr.Gallery(
                label=t("edit.refs"),
                type="filepath",
                interactive=True,
                columns=5,
                height=190,
                sources=["upload", "clipboard"],
                format="png",
                object_fit="contain",
                elem_id="qic-refs",
            )
            instruction = gr.Textbox(
                label=t("edit.instruction"),
                lines=2,
                max_length=20000,
                placeholder=t("edit.instruction_placeholder"),
                elem_id="qic-edit-instruction",
            )
            enhance = enhance_ui.layout(ctx, "edit")
            with gr.Row():
                run = gr.Button(t("edit.run"), variant="primary", elem_id="qic-edit-run", size="md")
                stop = gr.Button(t("common.stop"), variant="stop", scale=0, min_width=90, size="md")
            info = gr.Markdown("", elem_id="qic-edit-info")
            with gr.Accordion(t("edit.marks_title"), open=False):
                marks = gr.ImageEditor(
                    label=t("edit.marks"),
                    type="pil",
                    brush=gr.Brush(colors=[MARK_COLOR], color_mode="fixed"),
                    eraser=gr.Eraser(),
                    sources=[],
                    layers=False,
                    height=320,
                )
            match = gr.Number(1, label="match", precision=0, minimum=1, maximum=spec.max_references, visible=False)
            panel = Panel(spec, ctx.backend.capabilities, first_ratio=MATCH)
            panel.components["ratio"].choices = shape_choices(spec)
        with gr.Column(scale=1, min_width=320):
            gallery = results_gallery(t("edit.results"), 300, "qic-edit-results")
            compare = gr.ImageSlider(
                label=t("edit.compare"),
                type="pil",
                format="png",
                image_mode=None,
                interactive=False,
                max_height=360,
                elem_id="qic-compare",
            )
    return EditTab(refs, instruction, marks, run, stop, info, match, panel, gallery, compare, enhance)


def numbered(items) -> list:
    """Gallery items captioned as the prompt names them: <image1>, <image2>, ..."""
    return [(item, f"<image{n}>") for n, item in enumerate(gallery_files(items), 1)]


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
        marks=None,
        match=1,
        owner_state=None,
        request: gr.Request = None,
        *,
        enhance: bool = False,
        enhanced_prompt: str = "",
        **settings,
    ):
        """Edit the references (the first one with its marks) in a new conversation; ``enhance``: rewrite the
        instruction first, looking at the references (``enhanced_prompt``, when given, is used as written)."""
        inputs = []
        ratio = settings.get("ratio")
        if isinstance(ratio, str) and ratio.startswith(MATCH + ":"):  # "Like <imageN>"
            settings["ratio"], match = MATCH, ratio.partition(":")[2]
            match = int(match) if match.isdigit() else 1

        tr = Tr(lang_of(request))
        clean = []  # reference 1 without the marks: the "before" of the before/after slider

        def start(owner, step):
            turn = self._request(inputs, references, instruction, marks, match, settings, tr, clean)
            return self.ctx.turns.start(owner, None, turn, inputs, enhance=step)

        for files, info, own, drawn in enhance_ui.gallery_turn(
            self.ctx, owner_state, request, start, enhance, enhanced_prompt
        ):
            done = isinstance(files, list) and files
            yield files, info, own, (before_after(clean[0], files[0][0]) if done else gr.skip()), drawn

    def _request(self, inputs: list, references, instruction, marks, match, settings: dict, tr: Tr, clean=None):
        """Fill ``inputs`` with the checked references (reference 1 with its marks, and without them in ``clean``);
        the edit request."""
        inputs[:] = self.ctx.turns.uploads(gallery_files(references))
        if not inputs:
            raise ValidationError(tr("edit.need_reference"))
        if clean is not None:
            clean[:] = [inputs[0].image]
        marked = marked_image(marks)
        if marked is not None:
            inputs[0] = TurnImage(marked)
        return TurnSettings(**settings).request(
            self.ctx.spec, instruction, match_reference=match, marked=marked is not None
        )

    def enhance_only(self, references, instruction, marks=None, owner_state=None, request: gr.Request = None):
        """The rewrite of an edit instruction (the enhancer looks at the references), streamed, without editing."""
        tr = Tr(lang_of(request))
        inputs: list = []
        try:
            turn = self._request(inputs, references, instruction, marks, None, {"ratio": None}, tr)
        except Exception as exc:
            raise user_error(exc) from None
        yield from enhance_ui.enhance_only(self.ctx, owner_state, request, tr, turn, inputs)

    def add_turn_image(self, current, owner_state, turn_id, request: gr.Request = None) -> list:
        """Send a chat turn's image to the references (numbered)."""
        owner, first = self.ctx.act(owner_state, request, lambda owner: self.ctx.turns.result_image(owner, turn_id))
        turn = self.ctx.store.get_turn(owner, turn_id)
        name = file_name(turn.prompt if turn else "", first.seed)
        return self._append(current, self.ctx.media.download(first, name), Tr(lang_of(request)))

    def add_result(self, current, gallery, index, request: gr.Request = None):
        """Send the selected (or first) result of a gallery to the references."""
        tr = Tr(lang_of(request))
        results = gallery_files(gallery)
        if not results:
            raise gr.Error(tr("edit.nothing_to_send"))
        pick = results[index if isinstance(index, int) and 0 <= index < len(results) else 0]
        return self._append(current, pick, tr)

    def _append(self, current, item, tr) -> list:
        items = gallery_files(current)
        if len(items) >= self.ctx.spec.max_references:
            raise gr.Error(tr("edit.too_many", most=self.ctx.spec.max_references))
        gr.Info(html.escape(tr("toast.sent_to_edit", n=len(items) + 1)), duration=TOAST_S)
        return numbered([*items, item])

    def marks_background(self, references):
        """Load reference 1 into the marking canvas."""
        files = gallery_files(references)
        if not files:
            return gr.update(value=None)
        return gr.update(value={"background": files[0], "layers": [], "composite": None})


def wire(ctx: AppContext, tab: EditTab, owner: gr.State, refresh: dict) -> EditHandlers:
    edit = EditHandlers(ctx)
    inputs = [tab.refs, tab.instruction, tab.marks, tab.match, owner]
    outputs = [tab.gallery, tab.info, owner, tab.compare, tab.enhance.rewrite]
    kwargs = {**tab.panel.components, **tab.enhance.kwargs}
    events = {"inputs_kwargs": kwargs, "show_progress": "hidden", **ctx.gpu}
    page_and_api(tab.run, edit.edit, inputs, outputs, "edit", refresh, **events)
    enhance_ui.wire_only(
        tab.enhance, edit.enhance_only, [tab.refs, tab.instruction, tab.marks, owner], tab.info, "enhance_edit"
    )
    enhance_ui.clear_on_edit(tab.instruction, tab.enhance)
    tab.stop.click(stopper(ctx), [owner], tab.info, api_name="stop_edit")
    tab.refs.change(edit.marks_background, tab.refs, tab.marks, **PRIVATE)
    tab.refs.upload(numbered, tab.refs, tab.refs, **PRIVATE, show_progress="hidden")
    return edit
