"""What every UI handler needs (the backend, the conversation services, media files), and who the caller is."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import gradio as gr

from conversations.faults import StorageError
from conversations.jobs import JobManager
from conversations.owners import Owners
from conversations.store import Store
from conversations.turns import TurnService
from qwen_image.backend import Backend
from qwen_image.generation import ValidationError
from qwen_image.registry import ModelSpec

from .media import Media
from .sessions import SessionMemo, session_of

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class AppContext:
    backend: Backend
    store: Store
    jobs: JobManager
    turns: TurnService
    owners: Owners
    media: Media
    data_dir: Path
    browser_secret: str | None = None  # signs gr.BrowserState, so that browser ids survive restarts
    sessions: SessionMemo = field(default_factory=SessionMemo)  # what a session Gradio let go gets back

    @property
    def spec(self) -> ModelSpec:
        return self.backend.spec

    @property
    def gpu(self) -> dict:
        """Event options of the events that run a job: one queue, as many at once as the backend runs jobs."""
        return {"concurrency_id": "gpu", "concurrency_limit": self.backend.capabilities.concurrent_jobs}

    def owner(self, owner_state, request: gr.Request | None = None) -> str:
        """The caller's owner id: the logged-in user with --auth, else this session's anonymous owner (remembered
        beyond Gradio's own session state, see ``ui/sessions.py``), else a new one."""
        session = session_of(request)
        if not owner_state:
            owner_state = self.sessions.recall(session).owner
        owner = self.owners.current(owner_state, _username(request))
        self.sessions.remember(session, owner=owner)
        return owner

    def act(self, owner_state, request: gr.Request | None, action: Callable[[str], T]) -> tuple[str, T]:
        """(owner, ``action(owner)``) for the caller; whatever the action refuses becomes a message for the user."""
        owner = self.owner(owner_state, request)
        try:
            return owner, action(owner)
        except Exception as exc:
            raise user_error(exc) from None

    def restore(self, token, request: gr.Request | None = None) -> tuple[str, str | None]:
        """Owner and (new) browser token from the value kept in the browser; anything invalid starts afresh."""
        owner, token = self.owners.restore(token, _username(request))
        self.sessions.remember(session_of(request), owner=owner)
        return owner, token


def _username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def user_error(exc: Exception) -> gr.Error:
    """A readable, HTML-escaped error for the browser (a gr.Error is one already); the server keeps serving."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, StorageError):  # not the request's fault: what happened to the data folder, what to do
        return gr.Error(html.escape(str(exc)), title="Could not save")
    if isinstance(exc, ValidationError):
        return gr.Error(html.escape(str(exc)), title="Please check your request")
    log.exception("unexpected error in a handler")
    return gr.Error(html.escape(f"Something went wrong: {exc}"), title="Error")


PRIVATE = {"api_visibility": "private"}  # page-only events, not API endpoints
QUICK = {**PRIVATE, "queue": False, "show_progress": "hidden"}  # page-only events that do no real work
TOAST_S = 5  # seconds an information toast stays (top right, over the conversation): long enough to read, no longer
WARN_S = 8  # the same for a warning (a user's mistake, a failure)
