"""The Generate and Edit tabs: full control, results in a gallery, every result kept as a conversation."""

from __future__ import annotations

import gradio as gr

from qwen_image.generation import ValidationError

from . import render
from .context import AppContext, user_error
from .settings import PanelValues, to_request

MARK_COLOR = "#ff2a2a"
MARK_HINT_20B = " Change only the area marked in red, and remove the red marks."
EXAMPLES = [
    "A red fox curled up in fresh snow at dawn, soft light, photograph",
    "A minimalist poster that reads 'QWEN IMAGE' in bold letters, pastel background",
    "An isometric cozy reading room with plants and a cat, warm evening light, 3D render",
    "A watercolor map of an imaginary island with mountains, rivers and a lighthouse",
]


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


class StudioHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def generate(
        self,
        prompt,
        negative,
        ratio,
        tier,
        custom,
        width,
        height,
        steps,
        cfg,
        seed,
        randomize,
        num_images,
        transparent,
        owner_state,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        ctx = self.ctx
        owner = ctx.owner(owner_state, request)
        spec = ctx.spec
        try:
            values = PanelValues(ratio, tier, steps, cfg, negative, seed, randomize, num_images, transparent)
            size = (width, height) if custom else None  # checked (and snapped) by the engine's validation
            req = to_request(spec, prompt, [], values, size=size)
            resolved = ctx.engine.resolve(req)
            conv_id = ctx.store.create_conversation(owner)
            snap = ctx.jobs.submit(owner, conv_id, resolved, [], req.prompt.strip())
        except Exception as exc:
            raise user_error(exc) from None
        yield from self._follow(owner, conv_id, snap, progress)

    def edit(
        self,
        references,
        instruction,
        marks,
        match,
        ratio,
        tier,
        steps,
        cfg,
        negative,
        seed,
        randomize,
        num_images,
        transparent,
        owner_state,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        ctx = self.ctx
        owner = ctx.owner(owner_state, request)
        spec = ctx.spec
        try:
            files = gallery_files(references)
            images = ctx.open_uploads(files)
            if not images:
                raise ValidationError("Add at least one reference image to edit.")
            prompt = instruction if isinstance(instruction, str) else ""
            marked = self._marked(marks)
            if marked is not None:
                images[0] = marked
                if spec.family == "qwen-image":
                    prompt = prompt.rstrip() + MARK_HINT_20B
            follow = match if ratio in (None, "", "match") else None
            values = PanelValues(ratio, tier, steps, cfg, negative, seed, randomize, num_images, transparent)
            resolved = ctx.engine.resolve(to_request(spec, prompt, images, values, match_reference=follow))
            conv_id = ctx.store.create_conversation(owner)
            ids = [ctx.store.add_input_image(owner, conv_id, im).id for im in images]
            snap = ctx.jobs.submit(owner, conv_id, resolved, ids, prompt.strip())
        except Exception as exc:
            raise user_error(exc) from None
        for files, info, own in self._follow(owner, conv_id, snap, progress):
            done = isinstance(files, list) and files
            yield files, info, own, (before_after(images[0], files[0][0]) if done else gr.skip())

    def _marked(self, marks):
        """The background with the user's marks composited on it, or None when nothing was drawn."""
        if not isinstance(marks, dict) or marks.get("background") is None:
            return None
        layers = [layer for layer in (marks.get("layers") or []) if layer is not None]
        drawn = any(layer.mode == "RGBA" and layer.getchannel("A").getextrema()[1] > 0 for layer in layers)
        if not drawn:
            return None
        from qwen_image.images import normalise

        return normalise(marks["composite"], keep_alpha=False, label="marked image")

    def _follow(self, owner, conv_id, snap, progress):
        runner = self.ctx.zerogpu_runner
        stream = runner(snap.id) if runner else self.ctx.jobs.follow(owner, snap.id)
        last = snap
        for last in stream:
            p = last.progress
            if p is not None and p.phase == "denoising" and p.total:
                progress((p.step, p.total), desc=render.progress_text(last))
            yield gr.skip(), render.progress_text(last), owner
        turn = self.ctx.store.get_turn(owner, last.turn_id)
        if last.state != "done" or turn is None:
            msg = "Stopped." if last.state == "cancelled" else f"⚠️ {render.escape_md(last.error)}"
            if last.state == "failed":
                gr.Warning(render.escape_html(last.error or "the job failed"))
            yield gr.skip(), msg, owner
            return
        files = [
            (self.ctx.media.download(img, f"qwen-image-{img.seed}.png"), f"seed {img.seed}") for img in turn.outputs
        ]
        info = render.settings_line(turn.settings, None, turn.timings)
        info = f"seeds {', '.join(str(i.seed) for i in turn.outputs)} · {info} · saved in the sidebar"
        yield files, info, owner

    def stop(self, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return "Stopping…" if self.ctx.jobs.cancel(owner) else "Nothing is running."

    def add_reference(self, current, owner_state, selected, request: gr.Request = None):
        """Send the chat's selected image to the Edit tab's references."""
        owner = self.ctx.owner(owner_state, request)
        turn = self.ctx.store.get_turn(owner, selected) if selected else None
        if turn is not None and turn.status == "running":
            raise gr.Error(render.STILL_RUNNING)
        if turn is None or not turn.outputs:
            raise gr.Error("Select a turn with an image in the chat first.")
        items = gallery_files(current)
        if len(items) >= self.ctx.spec.max_references:
            raise gr.Error(f"At most {self.ctx.spec.max_references} reference images.")
        items.append(self.ctx.media.download(turn.outputs[0], f"qwen-image-{turn.outputs[0].seed}.png"))
        return items

    def gallery_to_refs(self, current, gallery, index):
        """Send the selected (or first) result of a gallery to the Edit tab's references."""
        items = gallery_files(current)
        results = gallery_files(gallery)
        if not results:
            raise gr.Error("There is no result to send yet.")
        if len(items) >= self.ctx.spec.max_references:
            raise gr.Error(f"At most {self.ctx.spec.max_references} reference images.")
        pick = index if isinstance(index, int) and 0 <= index < len(results) else 0
        return [*items, results[pick]]

    def marks_background(self, references):
        """Load reference 1 into the marking canvas."""
        files = gallery_files(references)
        if not files:
            return gr.update(value=None)
        return gr.update(value={"background": files[0], "layers": [], "composite": None})
