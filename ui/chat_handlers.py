"""Chat tab logic: send, regenerate, branch, undo, stop, select; jobs are followed, not owned, by these handlers.

Every handler takes the session's owner from state (or the logged-in user) and only touches that owner's data.
The GPU handlers are generators: they submit a server-side job and yield its progress; if the page goes away the
job still finishes and is saved, and an explicit Stop cancels it.
"""

from __future__ import annotations

import logging

import gradio as gr

from qwen_image.generation import ValidationError

from . import render
from .context import AppContext, user_error
from .settings import PanelValues, request_from_settings, to_request

log = logging.getLogger(__name__)


class ChatHandlers:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    # -- view ------------------------------------------------------------------------------------------------------
    def view(self, owner: str, conv_id: str | None, selected: str | None, branch: str | None, live=None) -> tuple:
        """(chatbot, turn_map, conv_id, selected, branch, selected_md, download) for a conversation."""
        conv = self.ctx.store.get_conversation(owner, conv_id) if conv_id else None
        if conv is None:
            conv_id, selected, branch = None, None, None
        messages, turn_map = render.conversation_messages(
            conv, self.ctx.media.preview, live, self.ctx.media.download_url
        )
        turn_ids = [t.id for t in conv.turns] if conv else []
        if selected not in turn_ids:
            selected = turn_ids[-1] if turn_ids else None
        if branch and self.ctx.store.get_image(owner, branch) is None:
            branch = None
        download = self._download(owner, conv, selected)
        return messages, turn_map, conv_id, selected, branch, render.selected_line(conv, selected, branch), download

    def _download(self, owner, conv, turn_id):
        if conv is None:
            return None
        turn = next((t for t in conv.turns if t.id == turn_id), None)
        if turn is None or not turn.outputs:
            return None
        pos = list(conv.turns).index(turn) + 1
        return self.ctx.media.download(turn.outputs[0], f"qwen-image-{pos}-{turn.outputs[0].seed}.png")

    # -- sending ----------------------------------------------------------------------------------------------------
    def send(
        self,
        message,
        owner_state,
        conv_id,
        branch,
        ratio,
        tier,
        steps,
        cfg,
        negative,
        seed,
        randomize,
        num_images,
        transparent,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        ctx = self.ctx
        owner = ctx.owner(owner_state, request)
        text = (message or {}).get("text", "") if isinstance(message, dict) else str(message or "")
        files = (message or {}).get("files", []) if isinstance(message, dict) else []
        try:
            values = PanelValues(ratio, tier, steps, cfg, negative, seed, randomize, num_images, transparent)
            attachments = ctx.open_uploads(files)
            conv = ctx.store.get_conversation(owner, conv_id) if conv_id else None
            base_id = branch or (self._latest_output(conv) if conv else None)
            base = ctx.stored_images(owner, [base_id]) if base_id else []
            # validation first: nothing is stored for an invalid request
            resolved = ctx.engine.resolve(to_request(ctx.spec, text, base + attachments, values))
            if conv is None:
                conv_id = ctx.store.create_conversation(owner)
            upload_ids = [ctx.store.add_input_image(owner, conv_id, im).id for im in attachments]
            snap = ctx.jobs.submit(owner, conv_id, resolved, ([base_id] if base_id else []) + upload_ids, text.strip())
        except Exception as exc:
            raise user_error(exc) from None
        yield from self._follow(owner, conv_id, snap, clear_box=True, progress=progress)

    def regenerate(self, owner_state, conv_id, selected, request: gr.Request = None, progress=gr.Progress()):
        """Run the selected turn again with a new seed (a new turn at the end of the conversation)."""
        ctx = self.ctx
        owner = ctx.owner(owner_state, request)
        try:
            turn = ctx.store.get_turn(owner, selected) if selected else None
            conv = ctx.store.get_conversation(owner, conv_id) if conv_id else None
            if turn is None and conv is not None and conv.turns:
                turn = conv.turns[-1]
            if turn is None or turn.conversation_id != conv_id:
                raise ValidationError("There is nothing to regenerate yet.")
            ids = [img.id for img in turn.inputs]
            request_ = request_from_settings(turn.prompt, turn.settings, ctx.stored_images(owner, ids))
            snap = ctx.jobs.submit(owner, conv_id, ctx.engine.resolve(request_), ids, turn.prompt)
        except Exception as exc:
            raise user_error(exc) from None
        yield from self._follow(owner, conv_id, snap, clear_box=False, progress=progress)

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
            yield self._skip_all()
            return
        active = self.ctx.jobs.active(owner, conv_id)
        if not active:  # it may have ended between the page's first render and now: show the final state
            yield (*self.view(owner, conv_id, None, None), gr.skip(), owner, "")
            return
        yield from self._follow(owner, conv_id, active[-1], clear_box=False, progress=progress)

    def _skip_all(self):
        return tuple(gr.skip() for _ in range(10))

    def _follow(self, owner, conv_id, snap, clear_box: bool, progress):
        """Yield the conversation while its job runs; the final view once it ends."""
        box = gr.update(value=None) if clear_box else gr.skip()
        runner = self.ctx.zerogpu_runner
        stream = runner(snap.id) if runner else self.ctx.jobs.follow(owner, snap.id)
        last = snap
        for last in stream:
            p = last.progress
            if p is not None and p.phase == "denoising" and p.total:
                progress((p.step, p.total), desc=render.progress_text(last))
            view = self.view(owner, conv_id, None, None, live=last)
            yield (*view, box, owner, render.progress_text(last))
            box = gr.skip()
        status = {"done": "", "cancelled": "Stopped."}.get(last.state, f"⚠️ {render.escape_md(last.error)}")
        if last.state == "done" and last.notes:
            status = " ".join(render.escape_md(n) for n in last.notes)
            gr.Info(status)
        elif last.state == "failed":
            gr.Warning(render.escape_html(last.error or "the job failed"))
        view = self.view(owner, conv_id, None, None)
        yield (*view, gr.skip(), owner, status)

    @staticmethod
    def _latest_output(conv) -> str | None:
        for turn in reversed(conv.turns):
            if turn.outputs:
                return turn.outputs[0].id
        return None

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
        owner = self.ctx.owner(owner_state, request)
        turn = self.ctx.store.get_turn(owner, selected) if selected else None
        if turn is not None and turn.status == "running":
            raise gr.Error(render.STILL_RUNNING)
        if turn is None or not turn.outputs:
            raise gr.Error("Select a turn that has an image first.")
        return self.view(owner, conv_id, selected, turn.outputs[0].id)

    def clear_branch(self, owner_state, conv_id, selected, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return self.view(owner, conv_id, selected, None)

    def undo(self, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if conv_id and self.ctx.jobs.active(owner, conv_id):
            raise gr.Error("Wait for the running job to finish (or stop it) before undoing.")
        if not conv_id or not self.ctx.store.delete_last_turn(owner, conv_id):
            raise gr.Error("There is nothing to undo.")
        return self.view(owner, conv_id, None, None)

    def stop(self, owner_state, conv_id, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        n = self.ctx.jobs.cancel(owner, conversation_id=conv_id) if conv_id else self.ctx.jobs.cancel(owner)
        return "Stopping…" if n else "Nothing is running."

    def new_chat(self, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        return (*self.view(owner, None, None, None), owner)

    def open_conversation(self, conv_id, owner_state, request: gr.Request = None):
        owner = self.ctx.owner(owner_state, request)
        if not isinstance(conv_id, str) or self.ctx.store.get_conversation(owner, conv_id) is None:
            raise gr.Error("No such conversation.")
        return (*self.view(owner, conv_id, None, None), owner)
