"""The seam between what asks for images (jobs, CLI, APIs) and what makes them: the ``Backend`` protocol.

A backend validates requests for its model and runs them one at a time, reporting progress and stopping when asked.
The in-process engine (``qwen_image.engine.Engine``) is one; a remote OpenAI-Images server, or a pool of them, can be
another. Callers depend on this module only: it imports no torch and does no model work.

An edit is a generation request with reference images; ``generate`` runs both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from .generation import GenerationRequest, GenerationResult, ResolvedRequest
from .registry import ModelSpec

log = logging.getLogger(__name__)

# The settings a request may carry beyond its prompt and images (GenerationRequest's other fields).
REQUEST_SETTINGS = frozenset(f.name for f in fields(GenerationRequest)) - {"prompt", "images"}


class BackendError(RuntimeError):
    """A failure to show the user (model failed to load, out of memory after retrying, server down, bad output)."""


class Cancelled(Exception):
    """The job was stopped by its owner."""


@dataclass(frozen=True)
class Progress:
    # waiting | loading | encoding | denoising | decoding | done; remote backends: remote (elapsed time against an
    # estimate, ``message`` the server) and retrying (``message``: the server that failed; another one is tried)
    phase: str
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    message: str = ""
    preview: object | None = None  # a small PIL image of the image being made (backends with live_preview only)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass(frozen=True)
class BackendStatus:
    state: str  # idle | loading | ready | error
    message: str
    model: str
    model_label: str
    profile: str
    device: str
    demo: bool

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, for the UI and the jobs layer to adapt to (hide a setting, refuse early)."""

    max_references: int  # reference images one edit may take (0: no editing)
    transparent: bool  # can return RGBA images
    step_progress: bool  # reports each denoising step (otherwise phases only, and an estimate)
    settings: frozenset = REQUEST_SETTINGS  # which GenerationRequest settings it honours
    concurrent_jobs: int = 1  # jobs it runs at once (one GPU: 1; a pool of servers: their total)
    live_preview: bool = False  # its denoising progress carries a preview image every few steps

    def accepts(self, setting: str) -> bool:
        return setting in self.settings


@runtime_checkable
class Backend(Protocol):
    """Validates and runs generation requests for one model."""

    spec: ModelSpec

    @property
    def status(self) -> BackendStatus: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def start(self) -> None:
        """Begin loading or connecting in the background; returns at once (idempotent)."""

    def wait_ready(self, timeout: float | None = None, cancel: threading.Event | None = None) -> None:
        """Block until ready; raise BackendError when it cannot become ready, Cancelled when ``cancel`` is set."""

    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Check every value for this backend's model (raises ValidationError); nothing is left unset."""

    def generate(
        self,
        request: ResolvedRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request (an edit when it has images). Raises ValidationError, Cancelled or BackendError."""

    def estimate_seconds(self, request: ResolvedRequest) -> float:
        """Expected run time of a request, for time slots and progress estimates."""


def work_units(r: ResolvedRequest) -> float:
    """Megapixel-steps of a request, CFG passes counted (what denoising time scales with)."""
    return r.steps * (r.width * r.height / 1e6) * r.num_images * (2 if r.uses_cfg else 1)


def estimated_seconds(spec: ModelSpec, r: ResolvedRequest) -> float:
    """Denoising time from the model's measured speed: steps x megapixels x images x CFG passes."""
    return work_units(r) * spec.seconds_per_megapixel_step


def safe_progress(on_progress: Callable[[Progress], None] | None) -> Callable[[Progress], None]:
    """A progress reporter that never fails the job: a missing or broken listener is ignored (and logged)."""

    def report(progress: Progress) -> None:
        if on_progress is None:
            return
        try:
            on_progress(progress)
        except Exception:
            log.exception("progress listener failed")

    return report
