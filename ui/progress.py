"""Following a job from a handler (the API and the Generate/Edit tabs), how its end is announced, and following work
that streams text from a thread (the prompt enhancer)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import gradio as gr

from conversations.jobs import JobSnapshot

from . import render
from .context import TOAST_S, AppContext
from .i18n import DEFAULT, Tr, lang_of
from .media import file_name

T = TypeVar("T")


def outcome(snap: JobSnapshot, tr: Tr | None = None) -> str:
    """The status line for a finished job; its notes are also shown as a toast, a failure as a warning."""
    tr = tr or Tr(DEFAULT)
    if snap.state == "done":
        notes = " ".join(render.escape_html(tr.message(n)) for n in snap.notes)
        if notes:
            gr.Info(notes, duration=TOAST_S)
        return notes
    if snap.state == "cancelled":
        return tr("turn.stopped")
    error = tr.message(snap.error or "the job failed")
    if snap.state == "failed":
        gr.Warning(render.escape_html(error))
    return "⚠️ " + render.escape_md(error)


def gallery_results(ctx: AppContext, owner: str, snap: JobSnapshot, request: gr.Request | None = None):
    """For the Generate and Edit tabs: (gallery, info line, owner) while the job runs and once it ends; the gallery
    gets the full-resolution PNGs of a finished turn, (path, caption) pairs named after the prompt and seed."""
    tr = Tr(lang_of(request))
    last = snap
    for last in ctx.jobs.watch(owner, snap.id):
        notes = " · ".join(render.escape_md(tr.message(n)) for n in last.notes)  # e.g. why it was not enhanced
        yield gr.skip(), render.progress_text(last, tr) + (f" · {notes}" if notes else ""), owner
    turn = ctx.store.get_turn(owner, last.turn_id)
    if last.state != "done" or turn is None:
        yield gr.skip(), outcome(last, tr), owner
        return
    notes = outcome(last, tr)  # e.g. "Prompt not enhanced (...)", or a retry with lower memory settings
    files = [
        (ctx.media.download(img, file_name(turn.prompt, img.seed)), tr("info.seed", seed=img.seed))
        for img in turn.outputs
    ]
    info = render.settings_line(turn.settings, None, turn.timings, tr)
    seeds = ", ".join(str(i.seed) for i in turn.outputs)
    line = tr("info.gallery", seeds=seeds, info=info)
    yield files, f"{line} · {notes}" if notes else line, owner


def results_gallery(label, height: int, elem_id: str) -> gr.Gallery:
    """The Generate and Edit tabs' results: whole images (never cropped), two a row, downloadable PNGs."""
    return gr.Gallery(
        label=label,
        columns=2,
        height=height,
        object_fit="contain",
        format="png",
        buttons=["download", "fullscreen"],
        allow_preview=False,
        elem_id=elem_id,
    )


def stopper(ctx: AppContext):
    """A Stop handler: the caller's jobs (with a conversation id as second input: that conversation's only)."""

    def stop(owner_state, conversation_id=None, request: gr.Request = None):
        owner = ctx.owner(owner_state, request)
        tr = Tr(lang_of(request))
        conversation_id = conversation_id if isinstance(conversation_id, str) and conversation_id else None
        count = ctx.jobs.cancel(owner, conversation_id=conversation_id) + ctx.turns.stop_enhancing(owner)
        count += ctx.turns.rewrites.stop(owner, conversation_id=conversation_id) if conversation_id else 0
        return tr("toast.stopping") if count else tr("toast.nothing_running")

    return stop


def streamed(work: Callable[[Callable[[str], None], threading.Event], T], every: float = 0.2) -> Iterator[tuple]:
    """Run ``work(on_text, cancel)`` in a thread; yield (text so far, None) as it streams, then (text, result).

    The work goes on if the page goes away (a turn it starts then runs as any other); Stop reaches it through the
    turn service (``stop_enhancing``). Its exceptions are raised here."""
    latest: list = [None]
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["result"] = work(lambda text: latest.__setitem__(0, text), threading.Event())
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="enhance", daemon=True).start()
    shown = None
    while not done.wait(every):
        if latest[0] != shown:
            shown = latest[0]
            yield shown, None
    if "error" in box:
        raise box["error"]
    yield latest[0], box["result"]
