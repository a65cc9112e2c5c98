"""Pure functions that turn stored conversations and job snapshots into what the UI shows."""

from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape_md(text: str) -> str:
    """User text shown in a Markdown component: HTML-escaped and with Markdown syntax neutralised."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def escape_html(text: str) -> str:
    return html.escape(str(text), quote=True)


def settings_line(settings: dict, seed: int | None, timings: dict | None = None) -> str:
    """One line summarising a turn's settings: seed, size, steps, CFG, time."""
    parts = []
    if seed is not None:
        parts.append(f"seed {seed}")
    if settings.get("width") and settings.get("height"):
        parts.append(f"{settings['width']}×{settings['height']}")
    if settings.get("steps"):
        parts.append(f"{settings['steps']} steps")
    cfg = settings.get("true_cfg")
    if cfg and cfg > 1:
        parts.append(f"CFG {cfg:g}")
    if settings.get("transparent"):
        parts.append("transparent")
    if settings.get("references"):
        parts.append(f"{settings['references']} ref")
    if timings and timings.get("total"):
        parts.append(f"{timings['total']:.1f} s")
    return " · ".join(parts)


def progress_text(snap) -> str:
    """A short status for a queued or running job."""
    if snap is None:
        return ""
    if snap.state == "queued":
        return f"⏳ Waiting for the GPU — {snap.position} job(s) ahead" if snap.position else "⏳ Starting…"
    p = snap.progress
    if p is None:
        return "⏳ Starting…"
    if p.phase == "loading":
        return "⏳ Loading the model (first request after start)…"
    if p.phase == "waiting":
        return f"⏳ {escape_md(p.message[:1].upper() + p.message[1:])}…" if p.message else "⏳ Waiting for the GPU…"
    if p.phase == "remote":  # a remote server reports no steps: elapsed time against its learned estimate
        left = f"about {p.eta:.0f} s left" if p.eta else "taking longer than estimated"
        return f"⏳ Generating on {escape_md(p.message)} · {p.elapsed:.0f} s, {left}"
    if p.phase == "encoding":
        return "⏳ Reading the prompt…"
    if p.phase == "denoising":
        eta = f" · about {p.eta:.0f} s left" if p.eta is not None else ""
        return f"⏳ Step {p.step}/{p.total}{eta}"
    if p.phase == "decoding":
        return "⏳ Decoding the image…"
    return "⏳ Finishing…"


def turn_messages(turn, preview, position: int, link=None) -> list[dict]:
    """Chat messages of one turn: the user's prompt (+ attachments), then the result or its status.

    ``link(record, name)``, when given, is the URL of an output's full-resolution PNG, linked from the summary line.
    """
    msgs = [{"role": "user", "content": escape_md(turn.prompt)}]
    for img in turn.inputs:
        if img.role == "input":
            msgs.append({"role": "user", "content": {"path": preview(img), "alt_text": "attached image"}})
    if turn.status == "done":
        for img in turn.outputs:
            msgs.append({"role": "assistant", "content": {"path": preview(img), "alt_text": f"turn {position} result"}})
        seeds = [img.seed for img in turn.outputs]
        line = settings_line(turn.settings, seeds[0] if len(seeds) == 1 else None, turn.timings)
        if len(seeds) > 1:
            line = f"seeds {', '.join(str(s) for s in seeds)} · {line}"
        if link is not None:
            many = len(turn.outputs) > 1
            links = [
                f"[⬇ {i if many else 'PNG'}]({link(img, f'qwen-image-{position}-{img.seed}.png')})"
                for i, img in enumerate(turn.outputs, 1)
            ]
            line += " · " + " ".join(links)
        msgs.append({"role": "assistant", "content": f"**#{position}** · {line}"})
    elif turn.status == "running":
        msgs.append({"role": "assistant", "content": "⏳ Working on it…"})
    elif turn.status == "cancelled":
        msgs.append({"role": "assistant", "content": f"**#{position}** · ⏹ Stopped."})
    else:
        msgs.append(
            {"role": "assistant", "content": f"**#{position}** · ⚠️ Failed: {escape_md(turn.error or 'unknown error')}"}
        )
    return msgs


def conversation_messages(conversation, preview, live=None, link=None) -> tuple[list[dict], list[str]]:
    """All messages of a conversation and, for each message, the id of the turn it belongs to.

    ``live`` is the snapshot of a job still running in this conversation: its placeholder shows the progress.
    """
    messages, owners = [], []
    if conversation is None:
        return messages, owners
    for i, turn in enumerate(conversation.turns, 1):
        msgs = turn_messages(turn, preview, i, link)
        if live is not None and turn.id == live.turn_id and turn.status == "running":
            msgs[-1] = {"role": "assistant", "content": progress_text(live)}
        messages.extend(msgs)
        owners.extend([turn.id] * len(msgs))
    return messages, owners


def selected_line(conversation, turn_id: str | None, branch_image_id: str | None) -> str:
    """What the turn actions apply to, and which image the next message will edit."""
    if conversation is None or not conversation.turns:
        return "Start with a prompt: the first message generates an image, the next ones edit it."
    turns = list(conversation.turns)
    chosen = next((t for t in turns if t.id == turn_id), None) or turns[-1]
    pos = turns.index(chosen) + 1
    text = f"Selected: **#{pos}**"
    if chosen.outputs:
        text += f" (seed {chosen.outputs[0].seed})"
    if branch_image_id:
        src = next((i for i, t in enumerate(turns, 1) if any(o.id == branch_image_id for o in t.outputs)), None)
        text += f" · next message edits the image of **#{src}**" if src else " · next message edits the chosen image"
    else:
        latest = conversation.latest_output()
        if latest is not None:
            src = next(i for i, t in enumerate(turns, 1) if t.id == latest.turn_id)
            text += f" · next message edits the image of **#{src}**"
    return text
