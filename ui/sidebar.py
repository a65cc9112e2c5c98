"""The conversation sidebar: newest first with a thumbnail and a title; open, rename, delete, search, export, import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from conversations.archive import export_conversation, import_conversation

from .chat import ChatHandlers
from .context import PRIVATE, QUICK, AppContext, user_error


@dataclass(frozen=True)
class SidebarTab:
    new: gr.Button
    search: gr.Textbox
    gallery: gr.Gallery
    rename_box: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    confirm: gr.Button
    export: gr.Button
    export_file: gr.File
    import_zip: gr.UploadButton
    ids: gr.State  # the conversation id of each gallery item

    @property
    def view(self) -> list:
        """The outputs of ``sidebar_view``."""
        return [self.gallery, self.ids]


def layout() -> SidebarTab:
    with gr.Column(scale=1, min_width=220, elem_id="qic-sidebar"):
        new = gr.Button("+ New chat", variant="primary")
        search = gr.Textbox(placeholder="Search prompts…", show_label=False, max_length=200)
        gallery = gr.Gallery(
            label="Conversations",
            elem_id="qic-convs",
            columns=2,
            height=420,
            allow_preview=False,
            show_label=True,
            object_fit="cover",
        )
        with gr.Accordion("Manage", open=False):
            rename_box = gr.Textbox(label="New title", max_length=200)
            rename = gr.Button("Rename", size="sm")
            delete = gr.Button("Delete conversation", size="sm", variant="stop")
            confirm = gr.Button("Really delete it and its images", size="sm", variant="stop", visible=False)
            export = gr.Button("Export as .zip", size="sm")
            export_file = gr.File(label="Export", interactive=False)
            import_zip = gr.UploadButton("Import .zip", file_types=[".zip"], size="sm")
    return SidebarTab(
        new, search, gallery, rename_box, rename, delete, confirm, export, export_file, import_zip, gr.State([])
    )


def _placeholder(outbox: Path) -> str:
    """A neutral square for conversations that have no image yet."""
    from PIL import Image

    path = outbox / "empty-conversation.png"
    if not path.is_file():
        Image.new("RGB", (96, 96), (226, 228, 233)).save(path)
    return str(path)


def sidebar_view(ctx: AppContext, owner: str, query: str | None = None) -> tuple[list, list]:
    """(gallery items, conversation ids) for the owner, newest first."""
    summaries = ctx.store.list_conversations(owner, query=(query or "").strip() or None)
    placeholder = _placeholder(ctx.media.outbox)
    items, ids = [], []
    for s in summaries:
        thumb = ctx.media.thumbnail(s.thumbnail) if s.thumbnail is not None else placeholder
        title = (s.title or "Untitled").replace("\n", " ")
        items.append((thumb, title if len(title) <= 60 else title[:59] + "…"))
        ids.append(s.id)
    return items, ids


def refresh_event(ctx: AppContext, tab: SidebarTab, owner: gr.State) -> dict:
    """A private event (for ``.then(**refresh)``) that redraws the sidebar after a turn."""

    def refresh(own):
        return sidebar_view(ctx, own) if own else (gr.skip(), gr.skip())

    return {"fn": refresh, "inputs": [owner], "outputs": tab.view, **PRIVATE}


class SidebarHandlers:
    def __init__(self, ctx: AppContext, chat: ChatHandlers):
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
        return (*self.chat.view(owner, None), *sidebar_view(self.ctx, owner))

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
        return (*self.chat.view(owner, conv_id), *sidebar_view(self.ctx, owner), owner)


def wire(ctx: AppContext, tab: SidebarTab, owner: gr.State, chat: ChatHandlers, chat_view: list, conv: gr.State):
    """The sidebar's events; opening, deleting or importing shows the result in the chat (``chat_view``)."""
    side = SidebarHandlers(ctx, chat)
    tab.new.click(chat.new_chat, [owner], [*chat_view, owner], api_name="new_chat")
    tab.gallery.select(side.open_selected, [tab.ids, owner], [*chat_view, owner], **PRIVATE)
    tab.search.submit(side.search, [tab.search, owner], [*tab.view, owner], api_name="search_conversations")
    tab.rename.click(
        side.rename, [tab.rename_box, owner, conv], [*tab.view, tab.rename_box], api_name="rename_conversation"
    )
    tab.delete.click(lambda: gr.update(visible=True), None, tab.confirm, **QUICK)
    tab.confirm.click(side.delete, [owner, conv], [*chat_view, *tab.view], api_name="delete_conversation").then(
        lambda: gr.update(visible=False), None, tab.confirm, **QUICK
    )
    tab.export.click(side.export, [owner, conv], tab.export_file, api_name="export_conversation")
    tab.import_zip.upload(
        side.import_zip, [tab.import_zip, owner], [*chat_view, *tab.view, owner], api_name="import_conversation"
    )
