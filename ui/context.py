"""What every UI handler needs: engine, store, jobs, owner tokens, media; and who the caller is."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from qwen_image.generation import ValidationError
from qwen_image.images import ImageInputError, open_image

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    engine: object
    store: object
    jobs: object
    tokens: object
    media: object
    data_dir: Path
    auth: bool = False
    zerogpu_runner: object = None  # ZeroGPU: a spaces.GPU-wrapped streaming runner
    extra: dict = field(default_factory=dict)

    @property
    def spec(self):
        return self.engine.spec

    def owner(self, owner_state: str | None, request: gr.Request | None = None) -> str:
        """The caller's owner id: the logged-in user with --auth, else this session's anonymous owner."""
        username = getattr(request, "username", None) if request is not None else None
        if username:
            owner = self.tokens.user_owner(username)
        elif isinstance(owner_state, str) and owner_state.startswith("anon-"):
            owner = owner_state
        else:
            owner = self.tokens.verify(self.tokens.new_token())
        self.store.ensure_owner(owner)
        return owner

    def restore(self, token, request: gr.Request | None = None) -> tuple[str, str | None]:
        """Owner and (new) browser token from the value kept in the browser; anything invalid starts afresh."""
        username = getattr(request, "username", None) if request is not None else None
        if username:
            owner = self.tokens.user_owner(username)
            self.store.ensure_owner(owner)
            return owner, None
        owner = self.tokens.verify(token) if isinstance(token, str) else None
        if owner is None:
            token = self.tokens.new_token()
            owner = self.tokens.verify(token)
        self.store.ensure_owner(owner)
        return owner, token

    def open_uploads(self, files) -> list:
        """PIL images from uploaded file paths (Gradio hands over paths in its upload cache)."""
        images = []
        for i, f in enumerate(files or [], 1):
            path = f.get("path") if isinstance(f, dict) else getattr(f, "path", f)
            if not isinstance(path, (str, Path)):
                raise ImageInputError(f"attachment {i} is not a file")
            images.append(open_image(path, keep_alpha=self.spec.transparent, name=f"attachment {i}"))
        return images

    def stored_images(self, owner: str, image_ids: list[str]) -> list:
        from PIL import Image

        images = []
        for image_id in image_ids:
            rec = self.store.get_image(owner, image_id)
            if rec is None:
                raise ValidationError("That image is no longer available.")
            with Image.open(rec.path) as im:
                im.load()
                images.append(im.convert("RGBA") if im.mode == "RGBA" else im.convert("RGB"))
        return images


def user_error(exc: Exception) -> gr.Error:
    """A readable, HTML-escaped error for the browser; the server keeps serving."""
    if isinstance(exc, ValidationError):
        return gr.Error(html.escape(str(exc)), title="Please check your request")
    log.exception("unexpected error in a handler")
    return gr.Error(html.escape(f"Something went wrong: {exc}"), title="Error")
