"""Settings carried inside saved PNGs: an A1111-style ``parameters`` text chunk plus a JSON chunk with everything.

Both are read back, so an image made here (or by an A1111-compatible tool) can refill the settings.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .atomic import atomic_write

APP = "qwen-image-chat"
JSON_KEY = "qwen_image_chat"
FORMAT_VERSION = 1


def image_settings(settings: dict, seed: int, index: int = 0) -> dict:
    """The settings of one image of a job (its own seed)."""
    out = dict(settings)
    out["seed"] = seed
    out["image_index"] = index
    out["app"] = APP
    out["format"] = FORMAT_VERSION
    return out


def parameters_text(s: dict) -> str:
    """A1111 convention: prompt, optional negative prompt line, then comma-separated key: value pairs."""
    lines = [s.get("prompt", "")]
    if s.get("negative_prompt", "").strip():
        lines.append(f"Negative prompt: {s['negative_prompt']}")
    pairs = [
        ("Steps", s.get("steps")),
        ("Sampler", "FlowMatch Euler"),
        ("CFG scale", s.get("true_cfg")),
        ("Seed", s.get("seed")),
        ("Size", f"{s.get('width')}x{s.get('height')}"),
        ("Model", s.get("model")),
        ("Mode", s.get("mode")),
        ("Transparent", "true" if s.get("transparent") else None),
        ("References", s.get("references") or None),
        ("Reference resolution", s.get("reference_resolution") if s.get("references") else None),
        ("Version", f"{APP} {FORMAT_VERSION}"),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v is not None))
    return "\n".join(lines)


def png_info(settings: dict):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("parameters", parameters_text(settings))
    info.add_itxt(JSON_KEY, json.dumps(settings, ensure_ascii=False, sort_keys=True))
    return info


def save_png(image, path: str | os.PathLike, settings: dict) -> Path:
    """Write ``image`` with its settings atomically (temporary file in the same folder, fsync, then os.replace)."""
    path = Path(path)
    with atomic_write(path, ".png") as f:
        image.save(f, format="PNG", pnginfo=png_info(settings))
    return path


_PAIR = re.compile(r'\s*([\w ][\w \-/]*):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)')

_A1111_KEYS = {
    "Steps": ("steps", int),
    "CFG scale": ("true_cfg", float),
    "Seed": ("seed", int),
    "Model": ("model", str),
    "Mode": ("mode", str),
    "Reference resolution": ("reference_resolution", int),
    "References": ("references", int),
}


def parse_parameters(text: str) -> dict:
    """Settings from an A1111-style parameters string (unknown keys are kept under "extra")."""
    lines = text.strip().splitlines()
    if not lines:
        return {}
    last = lines[-1]
    # A1111 always writes "Steps: N" on the settings line; a one-line prompt like "Style: watercolor" stays a prompt
    has_pairs = bool(re.search(r"(^|, )Steps: \d", last)) and (len(lines) > 1 or last.startswith("Steps:"))
    body, pairs_line = (lines[:-1], last) if has_pairs else (lines, "")
    prompt_lines, negative_lines, target = [], [], None
    for line in body:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if target is negative_lines else prompt_lines).append(line)
    out: dict = {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip()}
    extra = {}
    for key, value in _PAIR.findall(pairs_line):
        key, value = key.strip(), value.strip().strip('"')
        if key == "Size" and "x" in value:
            w, _, h = value.partition("x")
            if w.isdigit() and h.isdigit():
                out["width"], out["height"] = int(w), int(h)
        elif key in _A1111_KEYS:
            name, conv = _A1111_KEYS[key]
            try:
                out[name] = conv(value)
            except ValueError:
                extra[key] = value
        elif key == "Transparent":
            out["transparent"] = value.lower() == "true"
        else:
            extra[key] = value
    if extra:
        out["extra"] = extra
    return out


def read_settings(image) -> dict | None:
    """Settings stored in a PNG by this app (JSON chunk) or by an A1111-compatible tool; None when there are none."""
    info = getattr(image, "info", {}) or {}
    raw = info.get(JSON_KEY)
    if raw:
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                return data
        except (TypeError, ValueError):
            pass
    text = info.get("parameters")
    if isinstance(text, str) and text.strip():
        parsed = parse_parameters(text)
        return parsed if parsed.get("prompt") else None
    return None
