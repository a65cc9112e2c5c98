"""The prompt enhancer in the chat: how a message starts (rewritten first, or drawn from a rewrite the box holds), a
turn's enhanced prompt back into the box ("Edit and redraw"), and "Enhance only".

The box may hold a rewrite (``redo``, a dict kept in the page's state and shown as a chip): after "Enhance only"
{"kind": "only", "original": the user's words, "ratio"/"follow": the shape the enhancer suggested}, after a turn's
"Edit and redraw" {"kind": "rerun", "original", "turn": its id, "n": its number}. Sending then draws the box's text as
written, the user's words kept with it: a new message, or a new version of that turn.
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from conversations.settings import AUTO, MATCH, TurnSettings
from conversations.turns import Enhance
from qwen_image.backend import Cancelled

from . import render
from .context import WARN_S, AppContext, user_error
from .progress import streamed


def start_message(ctx: AppContext, page, text: str, files: list, enhance, redo, settings: dict) -> str:
    """Start a chat message (checked by the caller: text, number of files); the id of its conversation.

    With ``redo`` the box's text is a rewrite, drawn as written; with ``enhance`` the prompt is rewritten first, in
    the background (``TurnService.chat_rewritten``; ZeroGPU: here, before the job that follows this event)."""
    turns, owner = ctx.turns, page.owner
    redo = redo if isinstance(redo, dict) and isinstance(redo.get("original"), str) else None
    rerun = turns.store.get_turn(owner, redo.get("turn")) if redo and redo.get("kind") == "rerun" else None
    if rerun is not None and rerun.conversation_id == page.conv:  # a new version of that turn
        if files:
            raise gr.Error(page.tr("enhance.rerun_no_files"))
        return turns.regenerate(owner, page.conv, rerun.id, enhance=Enhance(rewrite=text)).conversation_id
    if redo is not None:  # the user's words are the prompt; the box's text is their rewrite
        request = _suggested(TurnSettings(**settings), redo).request(
            ctx.spec, redo["original"], match_reference=redo.get("follow")
        )
        return turns.chat(
            owner, page.conv, request, turns.uploads(files), page.branch, Enhance(rewrite=text)
        ).conversation_id
    request = TurnSettings(**settings).request(ctx.spec, text)
    enhance = bool(enhance) and turns.enhancer is not None
    if enhance and not ctx.jobs.runs_in_watcher:
        return turns.chat_rewritten(owner, page.conv, request, turns.uploads(files), page.branch).conversation_id
    step = Enhance() if enhance else None
    return turns.chat(owner, page.conv, request, turns.uploads(files), page.branch, step).conversation_id


def rerun(ctx: AppContext, page, turn_id) -> tuple[str, str, dict]:
    """ "Edit and redraw" on a turn's enhanced prompt: (its conversation, the rewrite for the box, the ``redo``)."""
    turn = ctx.store.get_turn(page.owner, turn_id) if isinstance(turn_id, str) else None
    if turn is None or not turn.settings.get("original_prompt"):
        raise gr.Error(page.tr("error.no_turn"))
    conv = ctx.store.get_conversation(page.owner, turn.conversation_id)
    number = next((n for n, t in enumerate(conv.turns, 1) if t.id in turn.version_ids), None) if conv else None
    redo = {"kind": "rerun", "original": turn.prompt, "turn": turn.id, "n": number}
    return turn.conversation_id, turn.settings.get("prompt", ""), redo


def enhance_only(ctx: AppContext, tab, page, message, redo, settings: dict):
    """ "Enhance only": the rewrite of the user's words (or of those the box's rewrite came from) streams into the
    message box, for the user to read, edit and send; a chip says so. Nothing is drawn; a failure is one line."""
    turns, tr = ctx.turns, page.tr
    text = (message or {}).get("text", "") if isinstance(message, dict) else str(message or "")
    files = (message or {}).get("files", []) if isinstance(message, dict) else []
    original = redo["original"] if isinstance(redo, dict) and isinstance(redo.get("original"), str) else text
    if not original.strip():
        raise gr.Error(tr("error.empty_prompt"))
    if turns.enhancer is None:
        raise gr.Error(tr("enhance.none"))
    try:  # the images the message would edit, as the enhancer sees them
        _, inputs = turns.chat_inputs(page.owner, page.conv, turns.uploads(files), page.branch)
    except Exception as exc:
        raise user_error(exc) from None
    request = TurnSettings(**settings).request(ctx.spec, original)

    def box(value: str) -> dict:
        return {tab.msg: gr.update(value={"text": value, "files": files})}

    def rewrite(on_text, cancel):
        return turns.enhance(request, inputs, Enhance(on_text=on_text, cancel=cancel), page.owner)

    result = None
    try:
        for so_far, result in streamed(rewrite):
            if result is None and so_far:
                yield box(so_far)
    except Cancelled:
        yield box(text)
        return
    except Exception as exc:
        yield box(text)
        raise user_error(exc) from None
    if not result.changed:  # one line says why; the box keeps what it had
        gr.Warning(render.escape_html(tr.message(result.note) or tr("enhance.unchanged")), duration=WARN_S)
        yield box(text)
        return
    redo = {"kind": "only", "original": original, "ratio": result.ratio, "follow": result.follow}
    yield {**box(result.prompt), tab.redo: redo, tab.redo_chip: render.redo_html(redo, tr)}


def _suggested(settings: TurnSettings, redo: dict) -> TurnSettings:
    """The shape the enhancer suggested with "Enhance only", where the user left the shape on auto."""
    if settings.ratio != AUTO:
        return settings
    if redo.get("follow"):
        return replace(settings, ratio=MATCH)
    return replace(settings, ratio=redo["ratio"]) if isinstance(redo.get("ratio"), str) else settings
