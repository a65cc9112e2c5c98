"""Following a job from a handler: its snapshots, Gradio's progress bar, and how its end is announced."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from conversations.jobs import JobSnapshot

from . import render
from .context import AppContext


def follow(ctx: AppContext, owner: str, snap: JobSnapshot, progress: gr.Progress) -> Iterator[JobSnapshot]:
    """The job's snapshots until it ends (the last one is final); denoising steps also move the progress bar."""
    for now in ctx.jobs.watch(owner, snap.id):
        p = now.progress
        if p is not None and p.phase == "denoising" and p.total:
            progress((p.step, p.total), desc=render.progress_text(now))
        yield now


def outcome(snap: JobSnapshot) -> str:
    """The status line for a finished job; its notes are also shown as a toast, a failure as a warning."""
    if snap.state == "done":
        notes = " ".join(render.escape_md(n) for n in snap.notes)
        if notes:
            gr.Info(notes)
        return notes
    if snap.state == "cancelled":
        return "Stopped."
    if snap.state == "failed":
        gr.Warning(render.escape_html(snap.error or "the job failed"))
    return f"⚠️ {render.escape_md(snap.error)}"


def gallery_results(ctx: AppContext, owner: str, snap: JobSnapshot, progress: gr.Progress):
    """For the Generate and Edit tabs: (gallery, info line, owner) while the job runs and once it ends; the gallery
    gets the full-resolution PNGs of a finished turn, (path, caption) pairs."""
    last = snap
    for last in follow(ctx, owner, snap, progress):
        yield gr.skip(), render.progress_text(last), owner
    turn = ctx.store.get_turn(owner, last.turn_id)
    if last.state != "done" or turn is None:
        yield gr.skip(), outcome(last), owner
        return
    notes = outcome(last)  # e.g. "Prompt not enhanced (...)", or a retry with lower memory settings
    files = [(ctx.media.download(img, f"qwen-image-{img.seed}.png"), f"seed {img.seed}") for img in turn.outputs]
    info = render.settings_line(turn.settings, None, turn.timings)
    line = f"seeds {', '.join(str(i.seed) for i in turn.outputs)} · {info} · saved in the sidebar"
    yield files, f"{line} · {notes}" if notes else line, owner


def stopper(ctx: AppContext):
    """A Stop handler: the caller's jobs (with a conversation id as second input: that conversation's only)."""

    def stop(owner_state, conversation_id=None, request: gr.Request = None):
        owner = ctx.owner(owner_state, request)
        conversation_id = conversation_id if isinstance(conversation_id, str) and conversation_id else None
        stopped = ctx.jobs.cancel(owner, conversation_id=conversation_id) + ctx.turns.stop_enhancing(owner)
        return "Stopping…" if stopped else "Nothing is running."

    return stop
