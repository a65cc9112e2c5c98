"""What every prompt enhancer shares: the task and its result, the configuration, and failing harmlessly.

An enhancer rewrites a prompt (text-to-image: a detailed prompt and, when the user left the ratio on auto, an aspect
ratio; edit: a precise instruction written while looking at the images). ``Enhancer.enhance`` never raises for a
failure of the enhancer itself (endpoint down or slow, bad answer, no ``lm_head``): the prompt comes back unchanged
with a one-line note, so the image is still made. Only ``Cancelled`` (the user pressed Stop) goes through.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from ..architectures import CONFIG_DIR
from ..backend import BackendError, Cancelled
from ..generation import GenerationRequest, ValidationError
from .answer import clean, nearest_ratio, parse, visible

log = logging.getLogger(__name__)

OnText = Callable[[str], None]


class EnhancerError(RuntimeError):
    """Why an enhancer could not rewrite (shown to the user in one line; the prompt is used as written)."""


@dataclass(frozen=True)
class LocalSettings:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    image_max_pixels: int = 262_144
    keep_loaded: bool = True


@dataclass(frozen=True)
class EndpointSettings:
    max_tokens: int = 16_384
    temperature: float = 0.7
    top_p: float = 0.95
    stream: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    total_timeout: float = 300.0
    image_max_pixels: int = 1_048_576


@dataclass(frozen=True)
class Instructions:
    system: str
    ratio: str = ""  # appended when the ratio is left to the enhancer ({ratios}: the offered ratios)
    no_ratio: str = ""  # appended when the user chose the size


@dataclass(frozen=True)
class EnhancerConfig:
    local: LocalSettings
    endpoint: EndpointSettings
    t2i: Instructions
    edit: Instructions
    t2i_suffix: dict = field(default_factory=dict, hash=False, compare=False)  # family -> text after t2i rewrites

    def system_prompt(self, task: EnhanceTask) -> str:
        ins = self.edit if task.images else self.t2i
        extra = ins.ratio.format(ratios=", ".join(task.ratios)) if task.ratios else ins.no_ratio
        return f"{ins.system.strip()}\n{extra}".strip()


@cache
def load_config(path: str | None = None) -> EnhancerConfig:
    data = tomllib.loads(Path(path or CONFIG_DIR / "enhancer.toml").read_text())
    families = data.get("family", {})
    return EnhancerConfig(
        local=LocalSettings(**data.get("local", {})),
        endpoint=EndpointSettings(**data.get("endpoint", {})),
        t2i=Instructions(**data["t2i"]),
        edit=Instructions(**data["edit"]),
        t2i_suffix={name: f["t2i_suffix"] for name, f in families.items() if f.get("t2i_suffix")},
    )


@dataclass(frozen=True)
class EnhanceTask:
    prompt: str
    images: tuple = ()  # the images being edited (PIL), in <image1> order; none: text-to-image
    ratios: tuple = ()  # the model's aspect ratios when the user left the ratio on auto; none: the user chose
    family: str = ""

    @property
    def mode(self) -> str:
        return "edit" if self.images else "t2i"


@dataclass(frozen=True)
class Enhancement:
    original: str  # what the user wrote
    prompt: str  # the rewrite; the original when enhancing failed
    source: str = ""  # which enhancer wrote it
    ratio: str | None = None  # suggested aspect ratio, one the model offers
    follow: int | None = None  # edit: the 1-based image whose shape the result keeps
    note: str = ""  # one line for the user when the prompt was left as written
    tokens: int = 0  # tokens the enhancer generated (local enhancer)

    @property
    def changed(self) -> bool:
        return not self.note and bool(self.prompt) and self.prompt != self.original

    def failed(self, reason: str) -> Enhancement:
        """The same request left as written, with ``reason`` as its one line."""
        return Enhancement(self.original, self.original, self.source, note=unchanged_note(reason))


def unchanged_note(reason: str) -> str:
    reason = " ".join(str(reason).split()).rstrip(".")
    return f"Prompt not enhanced ({reason}); it was used as written."


def edited(original: str, rewrite: str, source: str = "edited by hand") -> Enhancement:
    """A rewrite the user already has (edited or kept from an earlier enhance): used as it is."""
    text = clean(rewrite or "")
    if not text:
        return Enhancement(original, original, source, note=unchanged_note("the enhanced prompt is empty"))
    return Enhancement(original, text, source)


class Enhancer:
    """Base of the local and endpoint enhancers: subclasses implement ``_generate``."""

    name = "enhancer"

    def __init__(self, config: EnhancerConfig | None = None):
        self.config = config or load_config()

    def enhance(self, task: EnhanceTask, on_text: OnText | None = None, cancel: threading.Event | None = None):
        """The rewrite of ``task`` (an ``Enhancement``); ``on_text`` gets the rewrite so far while it is written.

        Raises ``Cancelled`` when ``cancel`` is set; any other failure returns the prompt unchanged with a note."""
        base = Enhancement(task.prompt, task.prompt, self.name)
        shown = [""]

        def report(raw: str) -> None:
            text = clean(visible(raw))
            if on_text is None or text == shown[0]:
                return
            shown[0] = text
            try:
                on_text(text)
            except Exception:  # a broken listener must not stop the rewrite
                log.exception("enhancer listener failed")

        try:
            raw, tokens = self._generate(task, report, cancel)
        except Cancelled:
            raise
        except (EnhancerError, BackendError) as exc:  # BackendError: the model the local enhancer needs did not load
            return base.failed(str(exc))
        except Exception as exc:
            log.exception("the prompt enhancer failed")
            return base.failed(f"{type(exc).__name__}: {exc}")
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        parsed = parse(raw)
        prompt = clean(parsed.prompt)
        if not prompt:
            return base.failed("the enhancer gave no usable rewrite")
        suffix = self.config.t2i_suffix.get(task.family, "") if not task.images else ""
        if suffix and suffix.lower() not in prompt.lower():
            prompt = f"{prompt.rstrip()} {suffix}"
        ratio = nearest_ratio(parsed.ratio, task.ratios) if task.ratios and parsed.ratio else None
        follow = parsed.follow if parsed.follow and 1 <= parsed.follow <= len(task.images) else None
        result = replace(base, prompt=prompt, ratio=ratio, follow=follow, tokens=tokens)
        if on_text is not None and shown[0] != prompt:
            report(prompt)
        return result

    def release(self) -> None:
        """Free what the enhancer holds in memory (nothing by default)."""

    def _generate(self, task: EnhanceTask, report: OnText, cancel: threading.Event | None) -> tuple[str, int]:
        """(full answer text, tokens generated); ``report(raw_so_far)`` while it streams. Raise EnhancerError."""
        raise NotImplementedError


# -- requests ---------------------------------------------------------------------------------------------------------
def is_auto(request: GenerationRequest) -> bool:
    """The user left the output shape to us (no ratio, size or reference to follow)."""
    return (
        request.aspect_ratio is None
        and request.width is None
        and request.height is None
        and request.match_reference is None
    )


def task_for(request: GenerationRequest, spec, images=()) -> EnhanceTask:
    """The enhancer's task for a request and the images it edits."""
    images = tuple(images or request.images or ())
    ratios = tuple(spec.ratios) if is_auto(request) else ()
    return EnhanceTask(request.prompt if isinstance(request.prompt, str) else "", images, ratios, spec.family)


def apply(request: GenerationRequest, enhancement: Enhancement) -> GenerationRequest:
    """The request with the rewrite as its prompt (the user's words kept as ``original_prompt``) and the suggested
    shape where the user left it on auto."""
    if not enhancement.changed:
        return request
    changes: dict = dict(prompt=enhancement.prompt, original_prompt=enhancement.original, enhancer=enhancement.source)
    if is_auto(request) and enhancement.follow:
        changes["match_reference"] = enhancement.follow
    elif is_auto(request) and enhancement.ratio:
        changes["aspect_ratio"] = enhancement.ratio
    return replace(request, **changes)


def resolve_enhanced(resolve: Callable, request: GenerationRequest, enhancement: Enhancement):
    """(resolved request, enhancement): the rewrite when it passes validation (e.g. the token limit), else the user's
    prompt with a note saying why. Errors of the user's own request propagate."""
    if enhancement.changed:
        try:
            return resolve(apply(request, enhancement)), enhancement
        except ValidationError as exc:
            enhancement = enhancement.failed(f"the rewrite was not usable: {exc}")
    return resolve(request), enhancement
