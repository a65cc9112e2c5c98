"""The conversation list in a collapsible sidebar: new chat, search as you type, the list grouped by date with the
open conversation highlighted and a spinner on the ones being made, a menu per item (rename, export, delete), more
on demand, and importing a .zip.

The list is one HTML component drawn on the server (every user text escaped); its buttons send their action and the
conversation id to the server through the component's own ``trigger``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from conversations.archive import export_conversation, import_conversation
from conversations.listing import grouped, page_size

from .context import PRIVATE, AppContext
from .i18n import Tr, lang_of, t
from .render import escape_html, file_url

LIST_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('button.qic-act');
  if (!b || !element.contains(b)) return;
  e.preventDefault();
  const data = {act: b.name, value: b.value};
  if (b.name === 'rename') {
    const title = window.prompt(b.title, b.getAttribute('data-current') || '');
    if (title === null || !title.trim()) return;
    data.title = title;
  }
  if (b.name === 'delete' && !window.confirm(b.title)) return;
  const menu = b.closest('details');
  if (menu) menu.open = false;
  trigger('click', data);
});
"""


@dataclass(frozen=True)
class SidebarTab:
    new: gr.Button
    search: gr.Textbox
    listing: gr.HTML
    export_file: gr.File
    import_zip: gr.UploadButton
    pages: gr.State  # how many pages of the list are shown


def layout() -> SidebarTab:
    with gr.Sidebar(label="Conversations", elem_id="qic-sidebar", width=290, open=True):
        new = gr.Button(t("side.new"), variant="primary", elem_id="qic-new", size="md")
        search = gr.Textbox(
            placeholder=t("side.search"),
            label=t("side.search_label"),
            show_label=False,
            max_length=200,
            elem_id="qic-search",
            container=False,
        )
        listing = gr.HTML("", elem_id="qic-convs", js_on_load=LIST_JS, apply_default_css=False)
        export_file = gr.File(label=t("side.export_file"), interactive=False, visible=False, elem_id="qic-export")
        import_zip = gr.UploadButton(t("side.import"), file_types=[".zip"], size="sm", elem_id="qic-import")
    return SidebarTab(new, search, listing, export_file, import_zip, gr.State(1))


def _placeholder(outbox: Path) -> str:
    """A neutral square for conversations that have no image yet."""
    from PIL import Image

    path = outbox / "empty-conversation.png"
    if not path.is_file():
        Image.new("RGB", (96, 96), (226, 228, 233)).save(path)
    return str(path)


def list_html(ctx: AppContext, owner: str, tr: Tr, open_id=None, query="", pages=1, utc_offset=0) -> str:
    """The owner's conversations grouped by date, newest first, the open one highlighted."""
    query = (query or "").strip() if isinstance(query, str) else ""
    size = page_size(pages)
    summaries = ctx.store.list_conversations(owner, query=query or None, limit=size + 1)
    more, summaries = len(summaries) > size, summaries[:size]
    running = {s.conversation_id for s in ctx.jobs.active(owner)}
    if not summaries:
        key = "side.no_results" if query else "side.empty"
        return f'<p class="qic-none" role="status">{escape_html(tr(key, query=query))}</p>'
    placeholder = _placeholder(ctx.media.outbox)
    offset = utc_offset if isinstance(utc_offset, (int, float)) else 0
    parts = []
    for group, items in grouped(summaries, time.time(), int(offset)):
        parts.append(f'<h3 class="qic-group">{escape_html(tr("side.group_" + group))}</h3><ul class="qic-list">')
        for s in items:
            thumb = ctx.media.thumbnail(s.thumbnail) if s.thumbnail is not None else placeholder
            title = escape_html(s.title)
            here = s.id == open_id
            spin = (
                f'<span class="qic-spin" role="img" aria-label="{escape_html(tr("side.running"))}"></span>'
                if s.id in running
                else ""
            )
            current = ' aria-current="page"' if here else ""
            item = f'<li class="qic-conv{" qic-here" if here else ""}">'
            item += (
                f'<button type="button" class="qic-act qic-open" name="open" value="{s.id}" title="{title}"{current}>'
                f'<img src="{escape_html(file_url(thumb))}" alt="" class="qic-cthumb">'
                f'<span class="qic-ctitle">{title}</span>{spin}</button>'
            )
            menu, tip = escape_html(tr("side.menu_for", title=s.title)), escape_html(tr("side.menu"))
            item += f'<details class="qic-menu"><summary title="{tip}" aria-label="{menu}">⋯</summary>'
            item += '<div class="qic-menu-items">'
            item += _menu_button(
                "rename", s.id, tr("side.rename"), tr("side.rename_prompt"), f' data-current="{title}"'
            )
            item += _menu_button("export", s.id, tr("side.export"))
            item += _menu_button(
                "delete", s.id, tr("side.delete"), tr("side.delete_confirm", title=s.title), "", "qic-danger"
            )
            parts.append(item + "</div></details></li>")
        parts.append("</ul>")
    if more:
        parts.append(
            f'<button type="button" class="qic-act qic-more" name="more" value="{pages + 1}">'
            f"{escape_html(tr('side.more'))}</button>"
        )
    return "".join(parts)


def _menu_button(action: str, conv_id: str, label: str, title: str = "", attrs: str = "", cls: str = "") -> str:
    tip = f' title="{escape_html(title)}"' if title else ""
    return (
        f'<button type="button" class="qic-act {cls}" name="{action}" value="{conv_id}"{tip}{attrs}>'
        f"{escape_html(label)}</button>"
    )


class SidebarHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def export(self, owner: str, conv_id: str, tr: Tr) -> str:
        if not conv_id or self.ctx.store.get_conversation(owner, conv_id) is None:
            raise gr.Error(tr("side.no_such"))
        folder = self.ctx.media.outbox / "downloads" / conv_id
        folder.mkdir(parents=True, exist_ok=True)
        return str(export_conversation(self.ctx.store, owner, conv_id, folder / f"conversation-{conv_id[:8]}.zip"))

    def import_zip(self, owner: str, file, tr: Tr) -> str:
        path = getattr(file, "name", None) or (file if isinstance(file, str) else None)
        if not path:
            raise gr.Error(tr("side.choose_zip"))
        return import_conversation(self.ctx.store, owner, Path(path))


def search_event(ctx: AppContext, tab: SidebarTab, owner: gr.State, conv: gr.State, tz: gr.Number) -> None:
    """The list follows the search box as the user types."""

    def search(query, own, conv_id, offset, request: gr.Request = None):
        if not own:
            return gr.skip(), 1
        return list_html(ctx, own, Tr(lang_of(request)), conv_id, query, 1, offset), 1

    tab.search.change(
        search,
        [tab.search, owner, conv, tz],
        [tab.listing, tab.pages],
        trigger_mode="always_last",
        show_progress="hidden",
        **PRIVATE,
    )
