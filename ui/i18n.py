"""Every UI string in English and Simplified Chinese, kept as data in ``ui/strings.toml``.

Static text (labels, placeholders, buttons) goes through ``gr.I18n``: the browser picks the language from its own
settings. Text the server writes (conversation bubbles, the composer, the sidebar, toasts) is translated here with the
language the browser asks for in its ``Accept-Language`` header, so both agree. Messages that come from below the UI
(validation, storage, the job queue, the image servers, the prompt enhancer) are English there, for the API and the
CLI; ``message`` shows them in the page's language (``ui/errors.py``, sections ``messages`` and ``terms``).
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

import gradio as gr

from .errors import Translator

STRINGS = Path(__file__).with_name("strings.toml")
DEFAULT = "en"
CHINESE = "zh-CN"
# the locales gr.I18n offers: the browser's language as Gradio reads it (navigator.language) must find ours
BROWSER_LOCALES = {"en": DEFAULT, "zh-CN": CHINESE, "zh": CHINESE, "zh-Hans": CHINESE, "zh-SG": CHINESE}
MESSAGES = ("messages.", "terms.")  # the sections that translate messages from below the UI (never shown as such)


def _flatten(table: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


@cache
def catalog() -> dict[str, dict[str, str]]:
    """{language: {key: text}} from strings.toml (every language has every key: tests/test_i18n.py checks)."""
    with STRINGS.open("rb") as f:
        data = tomllib.load(f)
    return {lang: _flatten(table) for lang, table in data.items()}


def i18n() -> gr.I18n:
    """The translations for ``launch(i18n=...)``."""
    cat = catalog()
    shown = {lang: {k: v for k, v in table.items() if not k.startswith(MESSAGES)} for lang, table in cat.items()}
    return gr.I18n(**{locale: shown[lang] for locale, lang in BROWSER_LOCALES.items()})


_I18N = None


def t(key: str):
    """A translated static string for a component property (label, placeholder, button text)."""
    global _I18N
    if key not in catalog()[DEFAULT]:
        raise KeyError(f"no UI string {key!r} in {STRINGS.name}")
    _I18N = _I18N or i18n()
    return _I18N(key)


def language(accept_language: str | None) -> str:
    """Our language for an ``Accept-Language`` header: Chinese when the browser's first choice is Chinese."""
    first = (accept_language or "").split(",")[0].split(";")[0].strip()
    if first.lower().startswith("zh") and not first.lower().startswith(("zh-tw", "zh-hk", "zh-mo", "zh-hant")):
        return CHINESE
    return DEFAULT


def lang_of(request) -> str:
    """The language of the browser that made a Gradio request (English without one)."""
    headers = getattr(request, "headers", None) if request is not None else None
    try:
        return language(headers.get("accept-language") if headers is not None else None)
    except Exception:
        return DEFAULT


def tr(lang: str, key: str, **values) -> str:
    """The text for ``key`` in ``lang`` (English where missing), with ``{name}`` fields filled in."""
    cat = catalog()
    text = cat.get(lang, {}).get(key) or cat[DEFAULT][key]
    return text.format(**values) if values else text


@cache
def translator(lang: str) -> Translator | None:
    """English messages into ``lang`` (None for English)."""
    if lang == DEFAULT:
        return None
    cat = catalog()
    english, other = cat[DEFAULT], cat.get(lang, {})
    pairs = [(text, other.get(key, text)) for key, text in english.items() if key.startswith(MESSAGES)]
    return Translator(pairs, (english["common.list_sep"], other.get("common.list_sep", english["common.list_sep"])))


def message(lang: str, text):
    """A message from below the UI (English) in ``lang``: as far as strings.toml knows it; anything else as it is."""
    said = translator(lang)
    return text if said is None else said(text)


class Tr:
    """``tr`` bound to one language: ``Tr(lang)("key", n=3)``."""

    def __init__(self, lang: str = DEFAULT):
        self.lang = lang

    def __call__(self, key: str, **values) -> str:
        return tr(self.lang, key, **values)

    def message(self, text):
        """A message from below the UI (validation, storage, a job's failure or notes) in this language."""
        return message(self.lang, text)
