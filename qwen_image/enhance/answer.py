"""Reading an enhancer's answer: the thinking block, the JSON answer contract, and what to show while it streams.

The official enhancers answer with ``{"rewritten_prompt": ..., "wh_ratio": ..., "ratio_follow": ...}`` after an
optional ``<think>`` block; the 20B Spaces' convention is ``{"Rewritten": ...}``; a general chat model may answer in
plain text (in a code fence or quotes). All of these become a ``Parsed`` answer; pure functions, no model.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass

PROMPT_KEYS = ("rewritten_prompt", "rewrited_prompt", "Rewritten", "rewritten", "prompt")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_IMAGE_REF = re.compile(r"<?image\s*(\d+)>?", re.IGNORECASE)
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x×/]\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Parsed:
    prompt: str  # the rewrite ("" when there is none)
    ratio: str = ""  # "16:9" as the model wrote it ("" when none)
    follow: int | None = None  # edit: the 1-based image whose canvas the result keeps
    structured: bool = False  # the answer was the JSON contract (not plain text)


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer). An unterminated ``<think>`` block (the token budget ran out) leaves no answer."""
    if "</think>" in text:
        think, _, answer = text.partition("</think>")
        return think.partition("<think>")[2] if "<think>" in think else think, answer
    if "<think>" in text:
        return text.partition("<think>")[2], ""
    return "", text


def _objects(text: str) -> list[str]:
    """Balanced top-level ``{...}`` spans, braces inside JSON strings skipped."""
    spans, depth, start, in_str, escaped = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _follow(value) -> int | None:
    match = _IMAGE_REF.search(str(value or ""))
    return int(match.group(1)) if match and len(match.group(1)) < 4 else None


def parse(text: str) -> Parsed:
    """The rewrite in a full answer (thinking removed); an empty ``prompt`` when there is none."""
    _, answer = split_thinking(text or "")
    answer = answer.strip()
    for span in reversed(_objects(answer)):  # the answer object comes last
        try:
            obj = json.loads(span)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        prompt = next((obj[k] for k in PROMPT_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
        if prompt is None:
            continue
        return Parsed(prompt.strip(), str(obj.get("wh_ratio") or "").strip(), _follow(obj.get("ratio_follow")), True)
    if answer.startswith("{"):  # an answer object that never closed (cut off): nothing usable
        return Parsed("")
    plain = _FENCE.sub("", answer).strip()
    if len(plain) >= 2 and plain[0] == plain[-1] and plain[0] in "\"'":
        plain = plain[1:-1].strip()
    return Parsed(plain)


_PARTIAL = re.compile(r'"(?:' + "|".join(PROMPT_KEYS) + r')"\s*:\s*"((?:[^"\\]|\\.)*)')


def visible(text: str) -> str:
    """What to show of an answer that is still streaming: the rewrite so far (no thinking, no JSON syntax)."""
    _, answer = split_thinking(text or "")
    if "<think>" in (text or "") and "</think>" not in text:
        return ""
    answer = answer.lstrip()
    if not answer.startswith(("{", "```")):
        return answer
    match = _PARTIAL.search(answer)
    if not match:
        return ""
    raw = match.group(1)
    raw = raw[:-1] if raw.endswith("\\") and not raw.endswith("\\\\") else raw
    try:
        return json.loads(f'"{raw}"')
    except ValueError:
        return raw.replace('\\"', '"').replace("\\n", "\n")


def clean(text: str, limit: int = 20_000) -> str:
    """A rewrite fit to be a prompt: control characters become spaces, runs of blank space shrink, at most ``limit``
    characters (a model's output is not trusted to be tidy)."""
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cs", "Cf") or ch in "\u2028\u2029\ufffd":
            out.append(" ")
        else:
            out.append(ch)
    tidy = re.sub(r"[ \t]+", " ", "".join(out))
    tidy = re.sub(r"\n{3,}", "\n\n", tidy)
    return tidy.strip()[:limit].strip()


def _value(ratio: str) -> float | None:
    match = _RATIO.match(ratio or "")
    if not match:
        return None
    w, h = float(match.group(1)), float(match.group(2))
    return w / h if w > 0 and h > 0 else None


def nearest_ratio(ratio: str, offered) -> str | None:
    """The offered aspect ratio closest in shape to ``ratio`` ("21:9" -> "16:9"); None when it is not a ratio."""
    value = _value(ratio)
    choices = [(r, _value(r)) for r in offered]
    choices = [(r, v) for r, v in choices if v]
    if value is None or not choices:
        return None
    return min(choices, key=lambda rv: abs(math.log(rv[1] / value)))[0]
