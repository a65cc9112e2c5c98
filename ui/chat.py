"""The Chat tab: the conversation, the message box, the turn actions and the settings column.

Every handler takes the session's owner from state (or the logged-in user) and only touches that owner's data. The
GPU handlers start a turn through the turn service and follow its job; if the page goes away the job still finishes
and is saved, and an explicit Stop cancels it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from qwen_image.metadata import read_settings

from . import render
from .context import PRIVATE, AppContext
from .progress import follow, outcome, stopper
from .settings import Panel


@dataclass(frozen=True)
class ChatTab:
    chatbot: gr.Chatbot
    msg: gr.MultimodalTextbox
    status: gr.Markdown
    stop: gr.Button
    selected_md: gr.Markdown
    regenerate: gr.Button
    use: gr.Button
    clear_branch: gr.Button
    reuse: gr.Button
    undo: gr.Button
    to_edit: gr.Button
    download: gr.File
    turn_no: gr.Number
    select_api: gr.Button
    conv_box: gr.Textbox
    open_api: gr.Button
    panel: Panel
    reuse_png: gr.UploadButton
    conv: gr.State  # the open conversation's id
    turn_map: gr.State  # for each chat message, the id of its turn
    selected: gr.State  # the selected turn's id
    branch: gr.State  # the image id the next message edits, when chosen ("Edit this image next")

    @property
    def view(self) -> list:
        """The outputs of ``conversation_view``."""
        return [self.chatbot, self.turn_map, self.conv, self.selected, self.branch, self.selected_md, self.download]


def layout(ctx: AppContext) -> ChatTab:
    """The conversation column and the settings column (inside the Chat tab's row, after the sidebar)."""
    with gr.Column(scale=4, elem_id="qic-chat"):
        chatbot = gr.Chatbot(
            label="Conversation",
            height=560,
            group_consecutive_messages=False,
            placeholder="Describe an image. Then say how to change it.",
            feedback_options=None,
            buttons=["copy"],
        )
        msg = gr.MultimodalTextbox(
            placeholder="Describe an image, or how to change the latest one (attach up to 10 images)",
            file_count="multiple",
            file_types=["image"],
            show_label=False,
            sources=["upload"],
            max_plain_text_length=20000,
            submit_btn=True,
            stop_btn=False,
        )
        with gr.Row():
            status = gr.Markdown("")
            stop = gr.Button("⏹ Stop", size="sm", variant="stop", scale=0)
        selected_md = gr.Markdown(render.selected_line(None, None, None))
        with gr.Row():
            regenerate = gr.Button("↻ Regenerate", size="sm")
            use = gr.Button("↳ Edit this image next", size="sm")
            clear_branch = gr.Button("Edit the latest instead", size="sm")
            reuse = gr.Button("Reuse settings", size="sm")
            undo = gr.Button("↶ Undo last turn", size="sm")
            to_edit = gr.Button("Send to Edit tab", size="sm")
        download = gr.File(label="Full-resolution PNG (with settings)", interactive=False)
        with gr.Row(visible=False):  # API-only controls
            turn_no = gr.Number(label="turn", precision=0)
            select_api = gr.Button("select")
            conv_box = gr.Textbox(label="conversation id")
            open_api = gr.Button("open")
    with gr.Column(scale=1, min_width=260), gr.Accordion("Settings", open=True):
        panel = Panel(ctx.spec, ctx.backend.capabilities)
        reuse_png = gr.UploadButton("Reuse settings from a PNG", file_types=[".png"], size="sm")
    return ChatTab(
        chatbot, msg, status, stop, selected_md, regenerate, use, clear_branch, reuse, undo, to_edit, download,
        turn_no, select_api, conv_box, open_api, panel, reuse_png,
        gr.State(None), gr.State([]), gr.State(None), gr.State(None),
    )  # fmt: skip


def conversation_view(ctx: AppContext, owner: str, conv_id, selected, branch, live=None) -> tuple:
    """Values for ``ChatTab.view``: the conversation's messages (``live``: the snapshot of its running job)."""
    conv = ctx.store.get_conversation(owner, conv_id) if isinstance(conv_id, str) else None
    if conv is None:
        conv_id, selected, branch = None, None, None
    messages, turn_map = render.conversation_messages(conv, ctx.media.preview, live, ctx.media.download_url)
    turns = list(conv.turns) if conv else []
    chosen = next((t for t in turns if t.id == selected), turns[-1] if turns else None)
    if branch and ctx.store.get_image(owner, branch) is None:
        branch = None
    download = None
    if chosen is not None and chosen.outputs:
        first = chosen.outputs[0]
        download = ctx.media.download(first, f"qwen-image-{turns.index(chosen) + 1}-{first.seed}.png")
    selected = chosen.id if chosen else None
    return messages, turn_map, conv_id, selected, branch, render.selected_line(conv, selected, branch), download


class ChatHandlers:
    def __init__(self, ctx: AppContext, panel: Panel):
        self.ctx = ctx
        self.panel = panel

    def view(self, owner: str, conv_id, selected=None, branch=None, live=None) -> tuple:
        return conversation_view(self.ctx, owner, conv_id, selected, branch, live)

    # -- turns ------------------------------------------------------------------------------------------------------
    def send(
        self, message, owner_state, conv_id, branch, request: gr.Request = None, progress=gr.Progress(), **settings
    ):
        """A message: generates an image, or edits the latest one (or the chosen one, or the attachments)."""
        text = (message or {}).get("text", "") if isinstance(message, dict) else str(message or "")
        files = (message or {}).get("files", []) if isinstance(message, dict) else []

        def start(owner):
            turn = TurnSettings(**settings).request(self.ctx.spec, text)
            return self.ctx.turns.chat(owner, conv_id, turn, self.ctx.turns.uploads(files), branch)

        owner, snap = self.ctx.act(owner_state, request, start)
        yield from self._show(owner, snap, clear_box=True, progress=progress)

    def regenerate(self, owner_state, conv_id, selected, request: gr.Request = None, progress=gr.Progress()):
        """Run the selected turn again with a new seed (a new turn at the end of the conversation)."""
        owner, snap = self.ctx.act(
            owner_state, request, lambda owner: self.ctx.turns.regenerate(owner, conv_id, selected)
        )
        yield from self._show(owner, snap, clear_box=False, progress=progress)

    def retry(
        self, owner_state, conv_id, turn_map, evt: gr.RetryData, request: gr.Request = None, progress=gr.Progress()
    ):
        """The chat's own retry icon: run that message's turn again with a new seed."""
        index = evt.index if isinstance(evt.index, int) else None
        turn_id = turn_map[index] if index is not None and 0 <= index < len(turn_map or []) else None
        yield from self.regenerate(owner_state, conv_id, turn_id, request, progress)

    def resume(self, owner, conv_id, request: gr.Request = None, progress=gr.Progress()):
        """After a page load: follow this conversation's running job, if any, until it ends."""
        if not owner or not conv_id:
            yield tuple(gr.skip() for _ in range(10))
            return
        active = self.ctx.jobs.active(owner, conv_id)
        if not active:  # it may have ended between the page's first render and now: show the final state
            yield (*self.view(owner, conv_id), gr.skip(), owner, "")
            return
        yield from self._show(owner, active[-1], clear_box=False, progress=progress)

    def _show(self, owner, snap, clear_box: bool, progress):
        """The conversation while its job runs (the message box cleared once), then its final view and status."""
        box = gr.update(value=None) if clear_box else gr.skip()
        last = snap
        for last in follow(self.ctx, owner, snap, progress):
            yield (*self.view(owner, snap.conversation_id, live=last), box, owner, render.progress_text(last))
            box = gr.skip()
        status = outcome(last)
        yield (*self.view(owner, snap.conversation_id), gr.skip(), owner, status)

    # -- turn actions -----------------------------------------------------------------------------------------------
    def select_message(self, owner_state, conv_id, turn_map, branch, evt: gr.SelectData, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
        turn_id = turn_map[index] if isinstance(index, int) and 0 <= index < len(turn_map or []) else None
        return self.view(owner, conv_id, turn_id, branch)

    def select_turn(self, number, owner_state, conv_id, branch, request: gr.Request = None):
        """Select turn #number (1-based; 0 or empty: the latest) — the API's way to pick a turn."""
        owner = self.ctx.owner(owner_state, request)
        conv = self.ctx.store.get_conversation(owner, conv_id) if conv_id else None
        turns = list(conv.turns) if conv else []
        turn_id = None
        if turns and isinstance(number, (int, float)) and 1 <= int(number) <= len(turns):
            turn_id = turns[int(number) - 1].id
        return self.view(owner, conv_id, turn_id, branch)

    def use_as_input(self, owner_state, conv_id, selected, request: gr.Request = None):
        """Branch: the next message edits the selected turn's image instead of the latest one."""
        owner, image = self.ctx.act(owner_state, request, lambda owner: self.ctx.turns.result_image(owner, selected))
        return self.view(owner, conv_id, selected, image.id)

    def clear_branch(self, owner_state, conv_id, selected, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return self.view(owner, conv_id, selected, None)

    def undo(self, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if conv_id and self.ctx.jobs.active(owner, conv_id):
            raise gr.Error("Wait for the running job to finish (or stop it) before undoing.")
        if not conv_id or not self.ctx.store.delete_last_turn(owner, conv_id):
            raise gr.Error("There is nothing to undo.")
        return self.view(owner, conv_id)

    def new_chat(self, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return (*self.view(owner, None), owner)

    def open_conversation(self, conv_id, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if not isinstance(conv_id, str) or self.ctx.store.get_conversation(owner, conv_id) is None:
            raise gr.Error("No such conversation.")
        return (*self.view(owner, conv_id), owner)

    # -- reusing settings -------------------------------------------------------------------------------------------
    def reuse_turn(self, owner_state, conv_id, selected, request: gr.Request = None):
        """The selected turn's settings (and seed) back into the panel, its prompt into the message box."""
        owner = self.ctx.owner(owner_state, request)
        turn = self.ctx.store.get_turn(owner, selected) if selected else None
        if turn is None or turn.conversation_id != conv_id:
            raise gr.Error("Select a turn first.")
        stored = {**turn.settings, "seed": turn.outputs[0].seed if turn.outputs else None}
        return *self.panel.updates(TurnSettings.from_stored(self.ctx.spec, stored)), {"text": turn.prompt, "files": []}

    def reuse_png(self, file):
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
        prompt = {"text": settings.get("prompt", ""), "files": []}
        return *self.panel.updates(TurnSettings.from_stored(self.ctx.spec, settings)), prompt


def wire(ctx: AppContext, tab: ChatTab, owner: gr.State, refresh: dict) -> ChatHandlers:
    """The Chat tab's events; ``refresh`` updates the sidebar after a turn changes the conversations."""
    chat = ChatHandlers(ctx, tab.panel)
    view, conv, selected = tab.view, tab.conv, tab.selected
    out = [*view, tab.msg, owner, tab.status]
    panel = tab.panel.components
    tab.msg.submit(
        chat.send, [tab.msg, owner, conv, tab.branch], out, inputs_kwargs=panel, api_name="chat", **ctx.gpu
    ).then(**refresh)
    tab.regenerate.click(chat.regenerate, [owner, conv, selected], out, api_name="regenerate", **ctx.gpu).then(
        **refresh
    )
    # the chat's own retry/undo icons (private: the API has /regenerate and /undo)
    tab.chatbot.retry(chat.retry, [owner, conv, tab.turn_map], out, api_name="retry_icon", **ctx.gpu, **PRIVATE).then(
        **refresh
    )
    tab.chatbot.undo(chat.undo, [owner, conv], view, api_name="undo_icon", **PRIVATE).then(**refresh)
    tab.stop.click(stopper(ctx), [owner, conv], tab.status, api_name="stop")
    tab.chatbot.select(chat.select_message, [owner, conv, tab.turn_map, tab.branch], view, **PRIVATE)
    tab.select_api.click(chat.select_turn, [tab.turn_no, owner, conv, tab.branch], view, api_name="select_turn")
    tab.use.click(chat.use_as_input, [owner, conv, selected], view, api_name="use_as_input")
    tab.clear_branch.click(chat.clear_branch, [owner, conv, selected], view, api_name="edit_latest")
    tab.undo.click(chat.undo, [owner, conv], view, api_name="undo").then(**refresh)
    tab.open_api.click(chat.open_conversation, [tab.conv_box, owner], [*view, owner], api_name="open_conversation")
    reuse_out = [*tab.panel.outputs, tab.msg]
    tab.reuse.click(chat.reuse_turn, [owner, conv, selected], reuse_out, api_name="reuse_settings")
    tab.reuse_png.upload(chat.reuse_png, [tab.reuse_png], reuse_out, api_name="reuse_settings_from_png")
    return chat
