"""Pure functions that turn stored conversations and job snapshots into what the page shows.

A turn is two chat messages: the user's (prompt, attachments, and the image it edits when that was chosen), and the
result: the images (as HTML, so that their alt text, the prompt, survives Gradio's chatbot), a toolbar of actions
(buttons named after the action with the turn id as value; ``ui/bridge.py`` sends their clicks to the server), a
version switcher when the turn was regenerated, and a settings line. A turn being made shows one progress: its
step, ETA, the live preview and Stop.

Messages are single-line HTML blocks: Markdown leaves them alone, and the chatbot's sanitizer keeps the elements and
attributes used here (it drops ``data-*`` and ``aria-*``; names come from visible text or ``title``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .i18n import Tr
from .media import inline_webp

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape_md(text: str) -> str:
    """User text shown in a Markdown component: HTML-escaped and with Markdown syntax neutralised."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def escape_html(text: str) -> str:
    return html.escape(str(text), quote=True)


def file_url(path: str) -> str:
    """A relative URL (works behind a proxy's sub-path) of a file in the app's outbox."""
    return "gradio_api/file=" + quote(str(path))


data_uri = inline_webp  # the live preview: no file is written


@dataclass(frozen=True)
class Links:
    """Where the page finds a stored image: a preview URL, and a download (URL, file name) for a prompt."""

    preview: Callable  # record -> URL of a small WebP
    download: Callable  # (record, prompt) -> (URL, file name)


def settings_line(settings: dict, seed: int | None, timings: dict | None, tr: Tr) -> str:
    """One line summarising a turn's settings: seed, size, steps, CFG, time."""
    parts = []
    if seed is not None:
        parts.append(tr("info.seed", seed=seed))
    if settings.get("width") and settings.get("height"):
        parts.append(f"{settings['width']}×{settings['height']}")
    if settings.get("steps"):
        parts.append(tr("info.steps", steps=settings["steps"]))
    cfg = settings.get("true_cfg")
    if cfg and cfg > 1:
        parts.append(f"CFG {cfg:g}")
    if settings.get("transparent"):
        parts.append(tr("info.transparent"))
    if timings and timings.get("total"):
        parts.append(f"{timings['total']:.1f} s")
    return " · ".join(parts)


def progress_text(snap, tr: Tr) -> str:
    """A short status for a queued or running job."""
    if snap is None:
        return tr("progress.starting")
    if snap.state == "queued":  # behind the running job and ``position`` queued ones
        return tr("progress.queued", ahead=snap.position + 1)
    p = snap.progress
    if p is None:
        return tr("progress.starting")
    if p.phase == "denoising" and p.total:
        eta = tr("progress.eta", seconds=f"{p.eta:.0f}") if p.eta is not None else ""
        return tr("progress.step", step=p.step, total=p.total) + eta
    if p.phase == "remote":  # a remote server reports no steps: elapsed time against its learned estimate
        left = tr("progress.remote_eta", seconds=f"{p.eta:.0f}") if p.eta else tr("progress.remote_late")
        return tr("progress.remote", server=p.message, seconds=f"{p.elapsed:.0f}") + left
    if p.phase == "retrying":  # a remote server failed mid-request; the pool tries another one
        return tr("progress.retrying", server=p.message)
    return (
        tr(f"progress.{p.phase}") if p.phase in ("loading", "waiting", "encoding", "decoding") else tr("progress.end")
    )


def _button(action: str, value: str, label: str, title: str | None = None, cls: str = "") -> str:
    tip = f' title="{escape_html(title)}"' if title else ""
    return (
        f'<button type="button" class="qic-act {cls}" name="{action}" value="{escape_html(value)}"{tip}>'
        f"{label}</button>"
    )


def _img(url: str, alt: str, cls: str = "") -> str:
    return f'<img src="{escape_html(url)}" alt="{escape_html(alt)}" class="{cls}">'


def _versions(turn, tr: Tr) -> str:
    if turn.versions <= 1:
        return ""
    prev = _button("version", f"{turn.id}:-1", "‹", tr("turn.previous_version"), "qic-ver")
    nxt = _button("version", f"{turn.id}:1", "›", tr("turn.next_version"), "qic-ver")
    label = escape_html(tr("turn.version_title"))
    count = f'<span class="qic-vcount" title="{label}">{turn.version}/{turn.versions}</span>'
    return f'<span class="qic-versions">{prev}{count}{nxt}</span>'


def user_message(turn, number: int, edited_from: int | None, links: Links, tr: Tr) -> dict:
    """The user's message: the prompt, the attached images, and the chosen image it edits (a branch)."""
    parts = []
    if edited_from is not None and turn.inputs and turn.inputs[0].role == "output":
        src = turn.inputs[0]
        alt = tr("turn.branch_alt", n=edited_from)
        parts.append(
            f'<span class="qic-branch">{_img(links.preview(src), alt, "qic-thumb")}'
            f"{escape_html(tr('turn.branch', n=edited_from))}</span>"
        )
    attached = [img for img in turn.inputs if img.role == "input"]
    if attached:
        thumbs = "".join(
            _img(links.preview(img), tr("turn.attachment_alt", n=i), "qic-thumb") for i, img in enumerate(attached, 1)
        )
        parts.append(f'<span class="qic-attached">{thumbs}</span>')
    prompt = escape_html(turn.prompt).replace("\n", "<br>")
    parts.append(f'<span class="qic-prompt">{prompt}</span>')
    return {"role": "user", "content": f'<div class="qic-user" id="qic-turn-{number}">{"".join(parts)}</div>'}


def result_message(turn, number: int, links: Links, tr: Tr, live=None) -> dict:
    """The result of a turn: its images with their actions, or its progress, or why it has none."""
    tag = f'<span class="qic-num">#{number}</span>'
    if turn.status == "running":
        return {"role": "assistant", "content": pending_html(turn, number, live, tr)}
    if turn.status != "done" or not turn.outputs:
        error = tr.message(turn.error or "?")  # stored in English (the API's words); shown in the page's language
        why = tr("turn.stopped") if turn.status == "cancelled" else tr("turn.failed", error=error)
        retry = _button("regenerate", turn.id, "↻ " + tr("turn.try_again"))
        bar = f'<div class="qic-bar" role="toolbar">{_versions(turn, tr)}{retry}</div>'
        return {
            "role": "assistant",
            "content": f'<div class="qic-result qic-ended">{tag} {escape_html(why)}{bar}</div>',
        }
    many = len(turn.outputs) > 1
    images = []
    downloads = []
    for i, img in enumerate(turn.outputs, 1):
        alt = turn.prompt if not many else tr("turn.image_of", prompt=turn.prompt, i=i, n=len(turn.outputs))
        images.append(_img(links.preview(img), alt, "qic-image"))
        url, name = links.download(img, turn.prompt)
        label = "⬇ " + (tr("turn.download_n", i=i) if many else tr("turn.download"))
        downloads.append(
            f'<a class="qic-dl" href="{escape_html(url)}" download="{escape_html(name)}" '
            f'title="{escape_html(name)}">{escape_html(label)}</a>'
        )
    seeds = [img.seed for img in turn.outputs]
    info = settings_line(turn.settings, seeds[0] if not many else None, turn.timings, tr)
    if many:
        info = tr("info.seeds", seeds=", ".join(str(s) for s in seeds)) + " · " + info
    actions = (
        _versions(turn, tr)
        + _button("edit", turn.id, "✎ " + tr("turn.edit"), tr("turn.edit_title"))
        + _button("regenerate", turn.id, "↻ " + tr("turn.regenerate"), tr("turn.regenerate_title"))
        + "".join(downloads)
        + _button("reuse", turn.id, "⚙ " + tr("turn.reuse"), tr("turn.reuse_title"))
        + _button("to_edit", turn.id, "⇄ " + tr("turn.to_edit"), tr("turn.to_edit_title"))
    )
    return {
        "role": "assistant",
        "content": (
            f'<div class="qic-result"><div class="qic-images">{"".join(images)}</div>'
            f'<div class="qic-bar" role="toolbar">{actions}</div>'
            f'<div class="qic-info">{tag} {escape_html(info)}</div></div>'
        ),
    }


def progress_meter(p) -> tuple[float, float] | None:
    """(value, max) of a job's meter: its denoising steps, or a remote job's elapsed time against its estimate (never
    past 99% before it ends); None once a remote job runs past its estimate (an indeterminate bar)."""
    if p is None:
        return 0, 1
    if p.phase == "denoising" and p.total:
        return p.step, p.total
    if p.phase == "remote":
        return (round(min(0.99, p.elapsed / max(p.elapsed + p.eta, 1e-6)), 3), 1) if p.eta else None
    return 0, 1


def pending_html(turn, number: int, live, tr: Tr) -> str:
    """The one progress indicator of a turn being made: the preview (or a placeholder), step and ETA, Stop."""
    p = live.progress if live is not None else None
    w, h = turn.settings.get("width") or 1, turn.settings.get("height") or 1
    if p is not None and getattr(p, "preview", None) is not None:
        picture = _img(data_uri(p.preview), tr("progress.preview_alt"), "qic-live")
    else:
        picture = f'<span class="qic-live qic-blank" style="aspect-ratio: {w} / {h}"></span>'
    text = progress_text(live, tr)
    shown = progress_meter(p)
    value = f'value="{shown[0]:g}" max="{shown[1]:g}"' if shown is not None else 'max="1"'  # no value: indeterminate
    meter = f'<progress {value} title="{escape_html(text)}"></progress>'
    stop = _button("stop", turn.id, "■ " + tr("turn.stop"), tr("turn.stop_title"), "qic-stop")
    notes = " ".join(tr.message(n) for n in getattr(live, "notes", None) or ())  # e.g. why it was not enhanced
    note = f'<div class="qic-note">{escape_html(notes)}</div>' if notes else ""
    return (
        f'<div class="qic-result qic-pending" role="status">{picture}'
        f'<div class="qic-progress"><span class="qic-num">#{number}</span>{meter}'
        f'<span class="qic-ptext">{escape_html(text)}</span>{stop}</div>{note}{_versions(turn, tr)}</div>'
    )


def _text_html(text: str) -> str:
    return escape_html(text).replace("\n", "<br>")


def enhanced_message(turn, tr: Tr) -> dict | None:
    """The prompt the enhancer wrote for a turn (what was drawn), as a collapsed "Enhanced prompt" block, with a
    button to edit it and make a new version of the turn from the edited text; None for a turn drawn as written."""
    rewrite = turn.settings.get("prompt") if turn.settings.get("original_prompt") else None
    if not rewrite:
        return None
    edit = ""
    if turn.status != "running":
        edit = _button("rerun", turn.id, "✎ " + tr("enhance.edit"), tr("enhance.edit_title"))
    body = f'<div class="qic-rewrite"><div class="qic-rewrite-text">{_text_html(rewrite)}</div>'
    body += f'<div class="qic-bar" role="toolbar">{edit}</div></div>' if edit else "</div>"
    return {"role": "assistant", "content": body, "metadata": {"title": "✨ " + tr("enhance.box"), "status": "done"}}


def rewrite_messages(rewrite, number: int, tr: Tr) -> list[dict]:
    """A message whose prompt is being rewritten (``conversations.rewrites.Rewrite``): the user's words, the rewrite
    streaming into an open block, and the pending bubble (a placeholder, what is happening, Stop)."""
    parts = []
    if rewrite.attachments:
        attached = escape_html(tr("enhance.attached", n=rewrite.attachments))
        parts.append(f'<span class="qic-attached">📎 {attached}</span>')
    parts.append(f'<span class="qic-prompt">{_text_html(rewrite.prompt)}</span>')
    user = {"role": "user", "content": f'<div class="qic-user" id="qic-turn-{number}">{"".join(parts)}</div>'}
    text = f'<div class="qic-rewrite"><div class="qic-rewrite-text">{_text_html(rewrite.text) or "…"}</div></div>'
    title = "✨ " + tr("enhance.writing")
    streaming = {"role": "assistant", "content": text, "metadata": {"title": title, "status": "pending"}}
    stop = _button("stop", rewrite.id, "■ " + tr("turn.stop"), tr("enhance.stop_title"), "qic-stop")
    pending = (
        '<div class="qic-result qic-pending" role="status"><span class="qic-live qic-blank"></span>'
        f'<div class="qic-progress"><span class="qic-num">#{number}</span><progress max="1"></progress>'
        f'<span class="qic-ptext">{escape_html(tr("enhance.working"))}</span>{stop}</div></div>'
    )
    return [user, streaming, {"role": "assistant", "content": pending}]


def conversation_messages(
    conversation, links: Links, tr: Tr, live: dict | None = None, rewrites: Sequence = ()
) -> list[dict]:
    """All messages of a conversation (``live``: job snapshots by turn id, for the turns being made; ``rewrites``: its
    messages whose prompt is being rewritten, after its turns)."""
    messages: list[dict] = []
    if conversation is None:
        return messages
    turns = list(conversation.turns)
    made_by = {o.id: n for n, t in enumerate(turns, 1) for o in t.outputs}
    latest_before = None  # the image an edit gets when nothing else is chosen
    for number, turn in enumerate(turns, 1):
        first = turn.inputs[0] if turn.inputs else None
        edited = made_by.get(first.id) if first is not None and first.role == "output" else None
        branch = edited if edited is not None and (latest_before is None or first.id != latest_before.id) else None
        messages.append(user_message(turn, number, branch, links, tr))
        enhanced = enhanced_message(turn, tr)  # what the model drew instead of the user's words, collapsible
        if enhanced is not None:
            messages.append(enhanced)
        messages.append(result_message(turn, number, links, tr, (live or {}).get(turn.id)))
        if turn.outputs:
            latest_before = turn.outputs[0]
    for number, rewrite in enumerate(rewrites, len(turns) + 1):
        messages.extend(rewrite_messages(rewrite, number, tr))
    return messages


def chip_html(target, links: Links, tr: Tr) -> str:
    """What the next message will edit, above the message box: a removable chip for a chosen image, the latest image
    otherwise; CSS swaps in the "attachments replace it" line while files are attached."""
    attach = f'<span class="qic-chip-attach">📎 {escape_html(tr("composer.attachments_replace"))}</span>'
    if target.source == "none":
        return f'<div class="qic-chip qic-chip-new"><span>✨ {escape_html(tr("composer.new_image"))}</span></div>'
    thumb = _img(links.preview(target.base), tr("composer.chip_alt", n=target.turn_number or "?"), "qic-thumb")
    if target.source == "branch":
        text = tr("composer.editing_chosen", n=target.turn_number or "?")
        remove = _button("unchip", "1", "×", tr("composer.remove_chip"), "qic-unchip")
        plus = f'<span class="qic-chip-plus">{escape_html(tr("composer.plus_attachments"))}</span>'
        return f'<div class="qic-chip qic-chip-branch">{thumb}<span>{escape_html(text)}</span>{plus}{remove}</div>'
    text = tr("composer.editing_latest", n=target.turn_number or "?")
    base = f'<span class="qic-chip-base">{thumb}{escape_html(text)}</span>'
    return f'<div class="qic-chip qic-chip-latest">{base}{attach}</div>'


def redo_html(redo, tr: Tr) -> str:
    """A chip above the message box while it holds an enhanced prompt: from "Enhance only" (sending draws it as
    written, the user's words kept with it) or from a turn's "Edit" (sending makes a new version of that turn)."""
    if not isinstance(redo, dict) or not isinstance(redo.get("original"), str):
        return ""
    original = redo["original"]
    short = original if len(original) <= 40 else original[:39].rstrip() + "…"
    if redo.get("kind") == "rerun":
        text, cls = tr("enhance.chip_rerun", n=redo.get("n") or "?"), "qic-chip-rerun"
    else:
        text, cls = tr("enhance.chip_only", prompt=short), "qic-chip-only"
        if redo.get("ratio"):
            text += " · " + redo["ratio"]
    remove = _button("unredo", "1", "×", tr("enhance.chip_remove"), "qic-unchip")
    return (
        f'<div class="qic-chip {cls}" title="{escape_html(original)}"><span>✨ {escape_html(text)}</span>{remove}</div>'
    )


def placeholder(target, tr: Tr) -> str:
    """The message box's placeholder: what typing there will do."""
    if target.source == "none":
        return tr("composer.placeholder_new")
    return tr("composer.placeholder_edit", n=target.turn_number or "?")
