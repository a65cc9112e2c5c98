"""The prompt enhancer in the page: an "Enhance" toggle, the rewrite (editable, re-runnable), and streaming it.

Any tab (Generate and Edit here; the chat wires the same pieces) starts its turn through ``start_turn``: with the
toggle on it first streams the rewrite into the rewrite box, then starts the turn with it (or, when the box already
holds a rewrite of the current prompt, draws that text as it is). ``enhance_only`` shows a rewrite without drawing.
Its strings are in ``strings.toml`` (section ``enhance``), in English and Chinese.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr

from conversations.turns import Enhance
from qwen_image.backend import Cancelled

from . import render
from .chat import page_and_api
from .context import QUICK, AppContext, user_error
from .i18n import Tr, lang_of, t
from .progress import gallery_results, streamed


@dataclass(frozen=True)
class EnhanceControls:
    toggle: gr.Checkbox
    rewrite: gr.Textbox
    only: gr.Button

    @property
    def kwargs(self) -> dict:
        """Handler keyword arguments (also the API's parameter names)."""
        return {"enhance": self.toggle, "enhanced_prompt": self.rewrite}


def layout(ctx: AppContext, tab: str) -> EnhanceControls:
    """The toggle, the rewrite box and the "Enhance only" button (hidden when the server has no enhancer)."""
    available = ctx.turns.enhancer is not None
    with gr.Row(visible=available, equal_height=True):
        toggle = gr.Checkbox(
            False, label=t("enhance.toggle"), info=t("enhance.toggle_info"), scale=3, elem_id=f"qic-{tab}-enhance"
        )
        only = gr.Button(t("enhance.only"), size="sm", scale=1, elem_classes=["qic-only"])
    rewrite = gr.Textbox(
        "",
        label=t("enhance.box"),
        lines=3,
        max_length=20000,
        placeholder=t("enhance.box_placeholder"),
        visible=available,
    )
    return EnhanceControls(toggle, rewrite, only)


def wire_only(controls: EnhanceControls, fn: Callable, inputs: list, info: gr.components.Component, api_name: str):
    """ "Enhance only" (``fn`` streams (rewrite, status line)): the page's button, where a mistake is a toast, and the
    named API endpoint ``api_name``."""
    page_and_api(controls.only, fn, inputs, [controls.rewrite, info], api_name, show_progress="hidden")


def clear_on_edit(prompt: gr.components.Component, controls: EnhanceControls) -> None:
    """A rewrite belongs to the prompt it was made from: editing the prompt clears it."""
    prompt.input(lambda: "", None, controls.rewrite, **QUICK)


def start_turn(ctx: AppContext, owner_state, request, start: Callable, enhance, rewrite) -> Iterator[tuple]:
    """Start a turn with ``start(owner, step)`` (step: an ``Enhance`` or None), enhancing first when asked.

    Yields (owner, rewrite-box value or gr.skip(), snapshot or None): None while the rewrite streams, then the job's
    snapshot. A failed rewrite shows its one line as a warning; a stopped one ends with ``snapshot`` None and the
    owner's status "Stopped."."""
    owner = ctx.owner(owner_state, request)  # once: an API call without state gets a new owner each time
    if not enhance or (rewrite or "").strip():  # a rewrite in the box (kept or edited by hand) is drawn as written
        try:
            snap = start(owner, Enhance(rewrite=rewrite) if enhance else None)
        except Exception as exc:
            raise user_error(exc) from None
        yield owner, gr.skip(), snap
        return
    try:
        for text, snap in streamed(lambda on_text, cancel: start(owner, Enhance(on_text=on_text, cancel=cancel))):
            yield owner, (text if text is not None else gr.skip()), snap
    except Cancelled:
        yield owner, gr.skip(), None
    except Exception as exc:
        raise user_error(exc) from None


def gallery_turn(ctx: AppContext, owner_state, request, start: Callable, enhance, rewrite) -> Iterator[tuple]:
    """A turn of the Generate or Edit tab (``start`` as for ``start_turn``): (gallery, info line, owner, rewrite box)
    while the rewrite streams, while the job runs and once it ends (``gallery_results``); the box ends with the prompt
    drawn. A stopped rewrite ends with "Stopped." and nothing started."""
    tr = Tr(lang_of(request))
    snap = None
    for owner, text, snap in start_turn(ctx, owner_state, request, start, enhance, rewrite):
        if snap is None:
            yield gr.skip(), tr("enhance.working"), owner, text
    if snap is None:
        yield gr.skip(), tr("turn.stopped"), owner, gr.skip()
        return
    drawn = final_rewrite(ctx, owner, snap, rewrite)
    for files, info, own in gallery_results(ctx, owner, snap, request):
        yield files, info, own, drawn


def final_rewrite(ctx: AppContext, owner: str, snap, current: str = "") -> str:
    """The rewrite the turn draws (for the rewrite box; ``current`` when it was not enhanced). Why a prompt was not
    enhanced is one of the job's notes: on the status line while it runs, and said once when it ends."""
    turn = ctx.store.get_turn(owner, snap.turn_id)
    if turn is None or not turn.settings.get("original_prompt"):
        return current if isinstance(current, str) else ""
    return turn.settings.get("prompt", "")


def enhance_only(ctx: AppContext, owner_state, request, tr: Tr, turn_request, inputs=()) -> Iterator[tuple[str, str]]:
    """(rewrite so far, status line) while the enhancer writes, ending with the rewrite (the prompt as written when
    enhancing failed) and its one line."""
    if ctx.turns.enhancer is None:
        raise gr.Error(tr("enhance.none"))
    owner = ctx.owner(owner_state, request)
    yield gr.skip(), tr("enhance.working")
    try:
        for text, result in streamed(
            lambda on_text, cancel: ctx.turns.enhance(
                turn_request, inputs, Enhance(on_text=on_text, cancel=cancel), owner
            )
        ):
            if result is None:
                yield (text if text is not None else gr.skip()), tr("enhance.working")
    except Cancelled:
        yield gr.skip(), tr("turn.stopped")
        return
    except Exception as exc:
        raise user_error(exc) from None
    lines = [tr.message(result.note)] if result.note else []
    if result.ratio:
        lines.append(tr("enhance.ratio", ratio=result.ratio))
    if result.follow:
        lines.append(tr("enhance.follow", n=result.follow))
    yield result.prompt, render.escape_md(" ".join(lines))
