"""Messages from below the UI (validation, the conversation store, the job queue, the image servers, the prompt
enhancer) in the page's language.

The engine, ``conversations`` and ``serving`` speak English: their messages are also the API's and the CLI's. The
page turns them into its own language with ``Translator``, driven by data (``strings.toml``, sections ``messages`` and
``terms``): each English entry is a template of a whole message, ``{fields}`` standing for its variable parts
(matched as text), and the entry of the same key in the other language says it there, with the same fields.

- The most specific template wins (the one with the most text of its own).
- A field's value is translated too when it is itself a known message or term ("attachment 1", "prompt", the reason
  inside "Nothing was saved: ..."), also one whose full stop was dropped, or a list of known terms.
- A message no template matches is translated sentence by sentence ("Image server a failed (...). Nothing was made;
  try again later.").
- Whatever is still unknown is shown as it is: a message is never lost.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

MAX_CHARS = 4000  # a longer message is shown as it is (the store keeps errors up to this length)
MAX_DEPTH = 4  # messages inside messages, at most this deep
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CLOSING = ("。", "！", "？", "）", "」", "”")  # a sentence that ends with one of these needs no space after it


@dataclass(frozen=True)
class Template:
    english: str
    pattern: re.Pattern
    target: str
    weight: int  # characters of text of its own: the more, the more specific
    anchor: str  # its longest piece of text: a message without it cannot match


def fields(text: str) -> list[str]:
    """The names of a template's ``{fields}``, in order (repeats included)."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def compile_template(english: str, target: str) -> Template:
    """A template from an English message with ``{fields}`` and its translation (the same fields)."""
    parts, own, seen = [], [], set()
    for text, name, _, _ in string.Formatter().parse(english):
        parts.append(re.escape(text))
        own.append(text)
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"{english!r}: a field must be a plain name, not {name!r}")
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
    if not "".join(own).strip():
        raise ValueError(f"{english!r} has no text of its own")
    if set(fields(target)) != seen:
        raise ValueError(f"{english!r} and {target!r} do not have the same fields")
    weight = sum(len(t) for t in own)
    return Template(english, re.compile("".join(parts), re.DOTALL), target, weight, max(own, key=len))


class Translator:
    """English messages into one other language (``pairs``: English template, its translation)."""

    def __init__(self, pairs: Iterable[tuple[str, str]], list_sep: tuple[str, str] = (", ", ", ")):
        self.templates = sorted((compile_template(en, other) for en, other in pairs), key=lambda t: -t.weight)
        self.list_sep = list_sep  # how a list of terms is joined in English, and in the other language

    def __call__(self, message):
        """``message`` in the other language, as far as it is known (anything else as it is)."""
        if not isinstance(message, str) or not message.strip() or len(message) > MAX_CHARS:
            return message
        whole = self.match(message)
        if whole is not None:
            return whole
        sentences = _SENTENCE_END.split(message)
        if len(sentences) == 1:
            return message
        out = ""
        for sentence in sentences:
            said = self.match(sentence)
            piece = sentence if said is None else said
            out += piece if not out or out.endswith(_CLOSING) else " " + piece
        return out

    def match(self, text: str, depth: int = 0) -> str | None:
        """The translation of ``text`` when a template matches all of it, else None."""
        for t in self.templates:
            if t.anchor not in text:
                continue
            found = t.pattern.fullmatch(text)
            if found is not None:
                values = {name: self.value(v, depth + 1) for name, v in found.groupdict().items()}
                return t.target.format_map(values)
        return None

    def value(self, text: str, depth: int) -> str:
        """A field's value: translated when it is a known message or term (or a list of them), else as it is."""
        if depth > MAX_DEPTH:
            return text
        said = self.match(text, depth)
        if said is not None:
            return said
        if not text.endswith((".", "。")):  # a message that lost its full stop ("Prompt not enhanced (...: <message>)")
            said = self.match(text + ".", depth)
            if said is not None:
                return said.rstrip("。.")
        en, other = self.list_sep
        items = text.split(en)
        if len(items) > 1:
            said_items = [self.match(item, depth) for item in items]
            if all(s is not None for s in said_items):
                return other.join(said_items)
        return text
