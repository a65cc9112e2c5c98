"""The Chat tab's events: the page's (quick, private, mistakes as toasts) and the API's named endpoints (they follow
their job to the end and raise on mistakes)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from conversations.settings import TurnSettings
from conversations.turns import Enhance, edit_target

from . import render
from .bridge import bridge, composer_helper
from .chat import ChatHandlers, ChatTab, Page, toasts, toasts_each
from .context import PRIVATE, TOAST_S, AppContext, user_error
from .i18n import Tr, lang_of
from .progress import outcome, stopper
from .sidebar import SidebarHandlers, SidebarTab, list_html

QUIET = {"show_progress": "hidden"}  # one progress only: inside the pending bubble


@dataclass(frozen=True)
class Wiring:
    ctx: AppContext
    tab: ChatTab
    side: SidebarTab
    owner: gr.State
    tz: gr.Number
    chat: ChatHandlers

    @property
    def common(self) -> list:
        tab, side = self.tab, self.side
        return [self.owner, tab.conv, tab.branch, side.search, side.pages, self.tz, tab.watching]

    @property
    def outputs(self) -> list:
        return [*self.chat.outputs, self.owner]

    def page(self, values, request) -> Page:
        return self.chat.page(*values, request=request)


def wire(ctx: AppContext, tab: ChatTab, side: SidebarTab, owner: gr.State, tz: gr.Number) -> Wiring:
    chat = ChatHandlers(ctx, tab, side.listing)
    w = Wiring(ctx, tab, side, owner, tz, chat)
    common, outputs = w.common, w.outputs
    composer_helper()

    def with_owner(page: Page, out: dict) -> dict:
        return {**out, owner: page.owner} if out else out

    # -- sending ----------------------------------------------------------------------------------------------------
    @toasts
    def send(message, o, c, b, q, p, z, wt, one_shot, request: gr.Request = None, **settings):
        page = w.page((o, c, b, q, p, z, wt), request)
        return with_owner(page, chat.send(message, page, bool(one_shot), **settings))

    send_outputs = [*outputs, tab.panel.components["randomize"], tab.one_shot, *chat.redo_outputs]
    send_kwargs = {**tab.panel.components, "enhance": tab.enhance, "redo": tab.redo}
    sent = tab.msg.submit(
        send, [tab.msg, *common, tab.one_shot], send_outputs, inputs_kwargs=send_kwargs, **QUIET, **PRIVATE
    )
    if ctx.jobs.runs_in_watcher:  # ZeroGPU: a job runs in the GPU slot of the event that follows it
        sent.then(_drive(ctx), [owner, tab.watching], None, **ctx.gpu, **QUIET, **PRIVATE)

    @toasts
    def stop_here(o, c, b, q, p, z, wt, request: gr.Request = None):
        return chat.stop_here(w.page((o, c, b, q, p, z, wt), request))

    tab.msg.stop(stop_here, common, chat.outputs, **QUIET, **PRIVATE)

    @toasts_each
    def enhance_only(message, o, c, b, q, p, z, wt, request: gr.Request = None, redo=None, **settings):
        yield from chat.enhance_only(message, w.page((o, c, b, q, p, z, wt), request), redo, **settings)

    tab.enhance_only.click(
        enhance_only,
        [tab.msg, *common],
        [tab.msg, *chat.redo_outputs],
        inputs_kwargs={**tab.panel.components, "redo": tab.redo},
        **QUIET,
        **PRIVATE,
    )

    # -- the bubbles' and the chip's buttons ---------------------------------------------------------------------------
    turn_bridge = bridge(("edit", "unchip", "regenerate", "version", "stop", "rerun", "unredo"), "qic-bridge-turn")

    @toasts
    def act(o, c, b, q, p, z, wt, evt: gr.EventData, request: gr.Request = None):
        page = w.page((o, c, b, q, p, z, wt), request)
        return with_owner(page, chat.act(page, getattr(evt, "_data", None) or {}))

    acted = turn_bridge.click(act, common, [*outputs, *chat.redo_outputs], **QUIET, **PRIVATE)
    if ctx.jobs.runs_in_watcher:
        acted.then(_drive(ctx), [owner, tab.watching], None, **ctx.gpu, **QUIET, **PRIVATE)

    reuse_bridge = bridge(("reuse",), "qic-bridge-reuse")

    @toasts
    def reuse(o, evt: gr.EventData, request: gr.Request = None):
        tr = Tr(lang_of(request))
        settings, prompt = chat.reuse_turn(ctx.owner(o, request), (evt._data or {}).get("value"), tr)
        return chat.reused(settings, prompt, tr)

    reuse_out = [*tab.panel.outputs, tab.msg, tab.one_shot, *chat.redo_outputs]
    reuse_bridge.click(reuse, [owner], reuse_out, **QUIET, **PRIVATE)

    @toasts
    def reuse_png(file, request: gr.Request = None):
        tr = Tr(lang_of(request))
        settings, prompt = chat.reuse_png(file, tr)
        return chat.reused(settings, prompt, tr)

    tab.reuse_png.upload(reuse_png, [tab.reuse_png], reuse_out, **QUIET, **PRIVATE)

    # -- the job timer, undo, examples ---------------------------------------------------------------------------------
    def tick(o, c, b, q, p, z, wt, request: gr.Request = None):
        if not o:
            return gr.skip()
        return chat.tick(w.page((o, c, b, q, p, z, wt), request))

    tab.timer.tick(tick, common, chat.outputs, **QUIET, **PRIVATE)

    @toasts
    def undo(o, c, b, q, p, z, wt, request: gr.Request = None):
        return chat.undo(w.page((o, c, b, q, p, z, wt), request))

    tab.chatbot.undo(undo, common, chat.outputs, api_name="page_undo", **QUIET, **PRIVATE)

    @toasts
    def clear(o, c, b, q, p, z, wt, request: gr.Request = None):
        page = w.page((o, c, b, q, p, z, wt), request)
        return with_owner(page, chat.new_chat(page))

    tab.chatbot.clear(clear, common, outputs, **QUIET, **PRIVATE)

    def example(o, c, b, q, p, z, wt, evt: gr.SelectData, request: gr.Request = None):
        return chat.example(w.page((o, c, b, q, p, z, wt), request), evt)

    tab.chatbot.example_select(example, common, [tab.msg, *chat.redo_outputs], **QUIET, **PRIVATE)

    # -- the sidebar -------------------------------------------------------------------------------------------------
    handlers = SidebarHandlers(ctx)
    side_out = [*outputs, side.export_file, side.pages]

    @toasts
    def new_chat(o, c, b, q, p, z, wt, request: gr.Request = None):
        page = w.page((o, c, b, q, p, z, wt), request)
        return with_owner(page, chat.new_chat(page))

    side.new.click(new_chat, common, outputs, api_name="page_new_chat", **QUIET, **PRIVATE)

    @toasts
    def listing(o, c, b, q, p, z, wt, evt: gr.EventData, request: gr.Request = None):
        page = w.page((o, c, b, q, p, z, wt), request)
        data = getattr(evt, "_data", None) or {}
        action, value = data.get("act"), data.get("value")
        if action == "open":
            return with_owner(page, chat.open(page, value))
        if action == "more":
            page.pages = page.pages + 1
            return {side.listing: list_html(ctx, page.owner, page.tr, page.conv, page.query, page.pages, page.tz),
                    side.pages: page.pages}  # fmt: skip
        if action == "rename":
            if not ctx.store.rename_conversation(page.owner, value, data.get("title") or ""):
                raise gr.Error(page.tr("side.bad_title"))
            return chat.view(page)
        if action == "delete":
            if ctx.turns.busy(page.owner, value):
                raise gr.Error(page.tr("side.delete_running"))
            if not ctx.store.delete_conversation(page.owner, value):
                raise gr.Error(page.tr("side.no_such"))
            gr.Info(page.tr("toast.deleted"), duration=TOAST_S)
            return chat.view(page, None if value == page.conv else page.conv)
        if action == "export":
            path = handlers.export(page.owner, value, page.tr)
            gr.Info(page.tr("toast.exported"), duration=TOAST_S)
            return {side.export_file: gr.update(value=path, visible=True)}
        raise gr.Error(page.tr("error.unknown_action"))

    side.listing.click(listing, common, side_out, **QUIET, **PRIVATE)

    @toasts
    def import_zip(file, o, c, b, q, p, z, wt, request: gr.Request = None):
        page = w.page((o, c, b, q, p, z, wt), request)
        try:
            conv_id = handlers.import_zip(page.owner, file, page.tr)
        except Exception as exc:
            raise user_error(exc) from None
        gr.Info(page.tr("toast.imported"), duration=TOAST_S)
        return with_owner(page, chat.view(page, conv_id, None))

    side.import_zip.upload(import_zip, [side.import_zip, *common], outputs, **QUIET, **PRIVATE)
    return w


def _drive(ctx: AppContext):
    """ZeroGPU: run the job the page just started, inside this event's GPU slot."""

    def drive(owner, watching, request: gr.Request = None):
        jobs = (watching or {}).get("jobs", []) if isinstance(watching, dict) else []
        for job_id in jobs:
            _run_in_page(ctx, ctx.owner(owner, request), job_id)

    return drive


def _run_in_page(ctx: AppContext, owner: str, job_id: str) -> None:
    snap = ctx.jobs.get(owner, job_id)
    if snap is not None and not snap.finished:
        for _ in ctx.jobs.watch(owner, snap.id):
            pass


# -- the API --------------------------------------------------------------------------------------------------------


def api(w: Wiring) -> gr.Number:
    """Named endpoints for gradio_client: each acts on the session's open conversation and returns (conversation,
    info line, full-resolution PNG of the newest result) after its job ends; a mistake raises an error."""
    ctx, tab, chat, owner = w.ctx, w.tab, w.chat, w.owner
    with gr.Row(visible=False):
        turn_no = gr.Number(0, label="turn", precision=0)
        step = gr.Number(1, label="step", precision=0)
        text = gr.Textbox(label="text")
        info = gr.Textbox(label="info")
        png = gr.File(label="png")
        found = gr.JSON(label="conversations")
        buttons = {
            name: gr.Button(name)
            for name in (
                "chat", "regenerate", "use_as_input", "edit_latest", "show_version", "undo", "new_chat",
                "open_conversation", "stop", "search_conversations", "rename_conversation", "delete_conversation",
                "export_conversation",
            )
        }  # fmt: skip
    state = [owner, tab.conv, tab.branch]
    results = [tab.chatbot, info, png, tab.conv, tab.branch, owner]

    def page(o, c, b, request) -> Page:
        return chat.page(o, c, b, "", 1, 0, {}, request)

    def turn_id(pg: Page, number) -> str | None:
        conv = ctx.store.get_conversation(pg.owner, pg.conv) if pg.conv else None
        turns = list(conv.turns) if conv else []
        if not turns:
            return None
        n = int(number) if isinstance(number, (int, float)) else 0
        return turns[n - 1].id if 1 <= n <= len(turns) else turns[-1].id

    def result(pg: Page, conv_id, branch) -> tuple:
        conv = ctx.store.get_conversation(pg.owner, conv_id) if conv_id else None
        messages = render.conversation_messages(conv, chat.links(), pg.tr)
        chosen = ctx.store.get_image(pg.owner, branch) if branch else None
        target = edit_target(conv, chosen, 0)
        line, newest = "", None
        if conv is not None and conv.turns:
            last = conv.turns[-1]
            seed = last.outputs[0].seed if last.outputs else None
            line = f"#{len(conv.turns)} · " + render.settings_line(last.settings, seed, last.timings, pg.tr)
            if last.status != "done":
                line = f"#{len(conv.turns)} · {last.status}: {last.error or ''}"
            newest = last.outputs[0] if last.outputs else None
        if target.source in ("branch", "latest"):
            line += " · " + pg.tr("api.next_edits", n=target.turn_number)
        path = ctx.media.download(newest, _name(conv, newest)) if newest is not None else None
        ctx.sessions.remember(pg.session, conv=conv.id if conv else None, branch=branch if conv else None)
        return messages, line, path, conv.id if conv else None, branch if conv else None, pg.owner

    def _name(conv, image) -> str:
        from .media import file_name

        turn = next(t for t in conv.turns if any(o.id == image.id for o in t.outputs))
        return file_name(turn.prompt, image.seed)

    def run_job(pg: Page, start):
        """Start a turn, show it (the session's open conversation is its conversation from now on), then its end."""
        try:
            snap = start()
        except Exception as exc:
            raise user_error(exc) from None
        yield result(pg, snap.conversation_id, None)
        *_, last = [snap, *ctx.jobs.watch(pg.owner, snap.id)]
        outcome(last, pg.tr)
        messages, line, *rest = result(pg, snap.conversation_id, None)
        if last.state == "done" and last.notes:  # e.g. a remote server failed and another one made it
            line += " · " + " ".join(last.notes)
        yield messages, line, *rest

    def api_chat(message, o, c, b, request: gr.Request = None, enhance: bool = False, **settings):
        """Send a message: generates, or edits the chosen image / the attachments / the latest image; ``enhance``:
        the prompt enhancer rewrites the prompt first (both are kept with the turn)."""
        pg = page(o, c, b, request)
        msg = message if isinstance(message, dict) else {"text": str(message or ""), "files": []}
        files = msg.get("files") or []
        turn = TurnSettings(**settings).request(ctx.spec, msg.get("text", ""))
        step = Enhance() if enhance is True and ctx.turns.enhancer is not None else None
        yield from run_job(
            pg, lambda: ctx.turns.chat(pg.owner, pg.conv, turn, ctx.turns.uploads(files), pg.branch, step)
        )

    chat_kwargs = {**tab.panel.components, "enhance": tab.enhance}
    buttons["chat"].click(api_chat, [tab.msg, *state], results, inputs_kwargs=chat_kwargs, api_name="chat", **ctx.gpu)

    def api_regenerate(number, o, c, b, request: gr.Request = None):
        """A new version of turn #number (0: the latest), shown in its place."""
        pg = page(o, c, b, request)
        yield from run_job(pg, lambda: ctx.turns.regenerate(pg.owner, pg.conv, turn_id(pg, number)))

    buttons["regenerate"].click(api_regenerate, [turn_no, *state], results, api_name="regenerate", **ctx.gpu)

    def acting(fn):
        def run(number, o, c, b, request: gr.Request = None):
            pg = page(o, c, b, request)
            try:
                conv_id, branch = fn(pg, number)
            except Exception as exc:
                raise user_error(exc) from None
            return result(pg, conv_id, branch)

        return run

    def use(pg, number):
        return pg.conv, ctx.turns.result_image(pg.owner, turn_id(pg, number)).id

    buttons["use_as_input"].click(acting(use), [turn_no, *state], results, api_name="use_as_input")
    buttons["edit_latest"].click(
        acting(lambda pg, n: (pg.conv, None)), [turn_no, *state], results, api_name="edit_latest"
    )

    def version(number, how, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        try:
            ctx.turns.show_version(pg.owner, turn_id(pg, number), int(how or 1))
        except Exception as exc:
            raise user_error(exc) from None
        return result(pg, pg.conv, pg.branch)

    buttons["show_version"].click(version, [turn_no, step, *state], results, api_name="show_version")

    def undo(pg, number):
        if pg.conv and ctx.jobs.active(pg.owner, pg.conv):
            raise gr.Error(pg.tr("error.undo_running"))
        if not pg.conv or not ctx.store.delete_last_turn(pg.owner, pg.conv):
            raise gr.Error(pg.tr("error.nothing_to_undo"))
        return pg.conv, None

    buttons["undo"].click(acting(undo), [turn_no, *state], results, api_name="undo")
    buttons["new_chat"].click(acting(lambda pg, n: (None, None)), [turn_no, *state], results, api_name="new_chat")

    def open_conv(conv_id, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        if not isinstance(conv_id, str) or ctx.store.get_conversation(pg.owner, conv_id) is None:
            raise gr.Error(pg.tr("side.no_such"))
        return result(pg, conv_id, None)

    buttons["open_conversation"].click(open_conv, [text, *state], results, api_name="open_conversation")
    buttons["stop"].click(stopper(ctx), [owner, tab.conv], info, api_name="stop")

    def search(query, o, request: gr.Request = None):
        own = ctx.owner(o, request)
        q = query.strip() if isinstance(query, str) else ""
        return [
            {"id": s.id, "title": s.title, "updated_at": s.updated_at, "turns": s.turn_count}
            for s in ctx.store.list_conversations(own, query=q or None)
        ], own

    buttons["search_conversations"].click(search, [text, owner], [found, owner], api_name="search_conversations")

    def rename(title, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        if not pg.conv or not ctx.store.rename_conversation(pg.owner, pg.conv, title if isinstance(title, str) else ""):
            raise gr.Error(pg.tr("side.bad_title"))
        return result(pg, pg.conv, pg.branch)

    buttons["rename_conversation"].click(rename, [text, *state], results, api_name="rename_conversation")

    def delete(number, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        if pg.conv and ctx.jobs.active(pg.owner, pg.conv):
            raise gr.Error(pg.tr("side.delete_running"))
        if not pg.conv or not ctx.store.delete_conversation(pg.owner, pg.conv):
            raise gr.Error(pg.tr("side.no_such"))
        return result(pg, None, None)

    buttons["delete_conversation"].click(delete, [turn_no, *state], results, api_name="delete_conversation")

    def export(o, c, request: gr.Request = None):
        pg = page(o, c, None, request)
        return SidebarHandlers(ctx).export(pg.owner, pg.conv, pg.tr)

    buttons["export_conversation"].click(export, [owner, tab.conv], png, api_name="export_conversation")

    def import_api(file, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        try:
            conv_id = SidebarHandlers(ctx).import_zip(pg.owner, file, pg.tr)
        except Exception as exc:
            raise user_error(exc) from None
        return result(pg, conv_id, None)

    buttons["import"] = gr.Button("import", visible=False)
    upload = gr.File(visible=False, label="zip", file_types=[".zip"])
    buttons["import"].click(import_api, [upload, *state], results, api_name="import_conversation")

    def reuse(number, o, c, b, request: gr.Request = None):
        pg = page(o, c, b, request)
        settings, prompt = chat.reuse_turn(pg.owner, turn_id(pg, number), pg.tr)
        return *tab.panel.updates(settings), {"text": prompt, "files": []}

    reuse_btn = gr.Button("reuse", visible=False)
    reuse_btn.click(reuse, [turn_no, *state], [*tab.panel.outputs, tab.msg], api_name="reuse_settings")

    def reuse_png(file, request: gr.Request = None):
        settings, prompt = chat.reuse_png(file, Tr(lang_of(request)))
        return *tab.panel.updates(settings), {"text": prompt, "files": []}

    png_in = gr.File(visible=False, label="png", file_types=[".png"])
    png_btn = gr.Button("reuse_png", visible=False)
    png_btn.click(reuse_png, [png_in], [*tab.panel.outputs, tab.msg], api_name="reuse_settings_from_png")
    return turn_no
