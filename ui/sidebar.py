"""The conversation sidebar: newest first with a thumbnail and a title; open, rename, delete, search, export, import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from conversations.archive import export_conversation, import_conversation
from qwen_image.metadata import read_settings

from .context import AppContext, user_error


def _placeholder(outbox: Path) -> str:
    """A neutral square for conversations that have no image yet."""
    from PIL import Image

    path = outbox / "empty-conversation.png"
    if not path.is_file():
        Image.new("RGB", (96, 96), (226, 228, 233)).save(path)
    return str(path)


def sidebar_view(ctx: AppContext, owner: str, query: str | None = None):
    """(gallery items, conversation ids) for the owner, newest first."""
    summaries = ctx.store.list_conversations(owner, query=(query or "").strip() or None)
    placeholder = _placeholder(ctx.media.outbox)
    items, ids = [], []
    for s in summaries:
        thumb = placeholder
        if s.thumbnail is not None:
            thumb = ctx.media.thumbnail(_Thumb(s.thumbnail))
        title = (s.title or "Untitled").replace("\n", " ")
        items.append((thumb, title if len(title) <= 60 else title[:59] + "…"))
        ids.append(s.id)
    return items, ids


@dataclass(frozen=True)
class _Thumb:
    """Just enough of an image record for Media.preview."""

    path: Path

    @property
    def id(self) -> str:
        return Path(self.path).stem

    @property
    def seed(self):
        return 0


class SidebarHandlers:
    def __init__(self, ctx: AppContext, chat):
        self.ctx = ctx
        self.chat = chat

    def search(self, query, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return (*sidebar_view(self.ctx, owner, query if isinstance(query, str) else ""), owner)

    def open_selected(self, ids, owner_state, evt: gr.SelectData, request: gr.Request = None):
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not ids or not (0 <= index < len(ids)):
            raise gr.Error("No such conversation.")
        return self.chat.open_conversation(ids[index], owner_state, request)

    def rename(self, title, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        title = title if isinstance(title, str) else ""
        if not conv_id or not title.strip():
            raise gr.Error("Open a conversation and type a new title first.")
        if not self.ctx.store.rename_conversation(owner, conv_id, title):
            raise gr.Error("That title cannot be used (control characters?), or the conversation is gone.")
        return (*sidebar_view(self.ctx, owner), gr.update(value=""))

    def delete(self, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if not conv_id:
            raise gr.Error("Open the conversation you want to delete first.")
        if self.ctx.jobs.active(owner, conv_id):
            raise gr.Error("This conversation has a running job; stop it first.")
        if not self.ctx.store.delete_conversation(owner, conv_id):
            raise gr.Error("No such conversation.")
        return (*self.chat.view(owner, None, None, None), *sidebar_view(self.ctx, owner))

    def export(self, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if not conv_id or self.ctx.store.get_conversation(owner, conv_id) is None:
            raise gr.Error("Open the conversation you want to export first.")
        folder = self.ctx.media.outbox / "downloads" / conv_id
        folder.mkdir(parents=True, exist_ok=True)
        return str(export_conversation(self.ctx.store, owner, conv_id, folder / f"conversation-{conv_id[:8]}.zip"))

    def import_zip(self, file, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        path = getattr(file, "name", None) or (file if isinstance(file, str) else None)
        if not path:
            raise gr.Error("Choose a conversation .zip exported from this app.")
        try:
            conv_id = import_conversation(self.ctx.store, owner, Path(path))
        except Exception as exc:
            raise user_error(exc) from None
        return (*self.chat.view(owner, conv_id, None, None), *sidebar_view(self.ctx, owner), owner)

    def reuse_from_png(self, file, owner_state, request: gr.Request = None):
        """Settings from an uploaded PNG made by this app or carrying an A1111 ``parameters`` chunk."""
        from PIL import Image

        path = getattr(file, "name", None) or (file if isinstance(file, str) else None)
        if not path:
            raise gr.Error("Choose a PNG first.")
        try:
            with Image.open(path) as im:
                settings = read_settings(im)
        except Exception:
            raise gr.Error("That file is not a readable image.") from None
        if not settings:
            raise gr.Error("This image carries no generation settings (no parameters chunk).")
        return settings
