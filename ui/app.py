"""The Gradio Blocks app: the conversation sidebar, a one-line status, and the Chat, Generate and Edit tabs.

Each tab lays out and wires its own components in its own module; this file assembles them and wires the few events
that cross tabs (sending an image to the Edit tab, the page load, remembering the settings in the browser).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import chat, chat_events, edit, generate, sidebar
from .bridge import bridge
from .context import PRIVATE, QUICK, AppContext
from .i18n import Tr, lang_of, t
from .render import escape_html

CSS = Path(__file__).with_name("page.css").read_text(encoding="utf-8")
HEAD = Path(__file__).with_name("page-head.html").read_text(encoding="utf-8")


def status_line(ctx: AppContext, tr: Tr) -> str:
    """The model and its state in plain words, on one line; the demo model says what it is."""
    st = ctx.backend.status
    dot = {"ready": "🟢", "loading": "🟡", "error": "🔴"}.get(st.state, "⚪")
    name = tr("status.demo_model") if st.demo else st.model_label
    state = {
        "ready": tr("status.ready"),
        "loading": tr("status.loading_demo") if st.demo else tr("status.loading"),
        "error": tr("status.error", message=st.message),
    }.get(st.state, tr("status.idle"))
    line = f'<span class="qic-dot" aria-hidden="true">{dot}</span> <b>{escape_html(name)}</b> · {escape_html(state)}'
    if st.demo:
        line += f' <span class="qic-demo">· {escape_html(tr("status.demo_note"))}</span>'
    return f'<div class="qic-status" role="status"><h1 class="qic-sr">Qwen Image Chat</h1>{line}</div>'


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def build_app(ctx: AppContext) -> gr.Blocks:
    # full-resolution results are handed out from the outbox as they are, not copied into Gradio's cache per request
    gr.set_static_paths([ctx.media.outbox / "downloads"])
    # uploads and the files handed out (API results, the Generate/Edit galleries) sit in Gradio's cache: kept a day
    with gr.Blocks(title="Qwen Image Chat", fill_width=True, delete_cache=(3600, 86400)) as demo:
        token = gr.BrowserState(None, storage_key="qwen-image-chat-owner", secret=ctx.browser_secret)
        kept = gr.BrowserState({}, storage_key="qwen-image-chat-settings", secret=ctx.browser_secret)
        enhancing = gr.BrowserState({}, storage_key="qwen-image-chat-enhance", secret=ctx.browser_secret)
        owner = gr.State(None)
        tz = gr.Number(0, visible=False, precision=0)
        side = sidebar.layout()
        status = gr.HTML(status_line(ctx, Tr()), elem_id="qic-status", apply_default_css=False)
        timer = gr.Timer(2.0)
        with gr.Tabs(elem_id="qic-tabs") as tabs:
            with gr.Tab(t("tab.chat"), id="chat", elem_id="qic-tab-chat"):
                chat_tab = chat.layout(ctx)
            with gr.Tab(t("tab.generate"), id="generate", elem_id="qic-tab-generate"):
                gen_tab = generate.layout(ctx)
            with gr.Tab(t("tab.edit"), id="edit", elem_id="qic-tab-edit"):
                edit_tab = edit.layout(ctx)

        w = chat_events.wire(ctx, chat_tab, side, owner, tz)
        turn_no = chat_events.api(w)
        sidebar.search_event(ctx, side, owner, chat_tab.conv, tz)

        def refresh_list(own, conv, query, pages, offset, request: gr.Request = None):
            if not own:
                return gr.skip()
            return sidebar.list_html(ctx, own, Tr(lang_of(request)), conv, query, pages, offset)

        refresh = {
            "fn": refresh_list,
            "inputs": [owner, chat_tab.conv, side.search, side.pages, tz],
            "outputs": side.listing,
            "show_progress": "hidden",
            **PRIVATE,
        }
        generate.wire(ctx, gen_tab, owner, refresh)
        edit_handlers = edit.wire(ctx, edit_tab, owner, refresh)

        # images into the Edit tab from the other tabs: the tab opens and a toast says which <imageN> it became
        to_edit = bridge(("to_edit",), "qic-bridge-to-edit")

        @chat.toasts
        def send_turn(current, own, evt: gr.EventData, request: gr.Request = None):
            turn_id = (getattr(evt, "_data", None) or {}).get("value")
            return {
                edit_tab.refs: edit_handlers.add_turn_image(current, own, turn_id, request),
                tabs: gr.Tabs(selected="edit"),
            }

        to_edit.click(send_turn, [edit_tab.refs, owner], [edit_tab.refs, tabs], show_progress="hidden", **PRIVATE)

        def send_turn_api(current, own, number, conv, request: gr.Request = None):
            own_id = ctx.owner(own, request)
            c = ctx.store.get_conversation(own_id, conv) if isinstance(conv, str) else None
            turns = list(c.turns) if c else []
            n = int(number) if isinstance(number, (int, float)) else 0
            turn = turns[n - 1] if 1 <= n <= len(turns) else (turns[-1] if turns else None)
            return edit_handlers.add_turn_image(current, own, turn.id if turn else None, request)

        api_to_edit = gr.Button("send_to_edit", visible=False)
        api_to_edit.click(
            send_turn_api, [edit_tab.refs, owner, turn_no, chat_tab.conv], edit_tab.refs, api_name="send_to_edit"
        )

        @chat.toasts
        def send_result(current, gallery, pick, request: gr.Request = None):
            return {
                edit_tab.refs: edit_handlers.add_result(current, gallery, pick, request),
                tabs: gr.Tabs(selected="edit"),
            }

        gen_tab.to_edit.click(
            send_result, [edit_tab.refs, gen_tab.gallery, gen_tab.pick], [edit_tab.refs, tabs], **PRIVATE
        )

        # the page load: who this browser is, its newest conversation, its settings, its language
        panel = chat_tab.panel
        toggles = {"chat": chat_tab.enhance, "generate": gen_tab.enhance.toggle, "edit": edit_tab.enhance.toggle}

        def on_load(tok, remembered, enhance, offset, request: gr.Request):
            own, new_tok = ctx.restore(tok, request)
            tr = Tr(lang_of(request))
            recent = ctx.store.list_conversations(own, limit=1)
            page = w.chat.page(own, recent[0].id if recent else None, None, "", 1, offset, {}, request)
            out = w.chat.view(page)
            ratio = panel.components["ratio"]
            shown = out.pop(ratio)  # the view's labels for the shape, with the remembered choice
            out.update(dict(zip(panel.outputs, panel.stored(remembered), strict=True)))
            kept_ratio = out[ratio]  # a remembered value, or gr.skip()
            out[ratio] = {**shown, "value": kept_ratio} if not isinstance(kept_ratio, dict) else shown
            out.update({owner: own, status: status_line(ctx, tr), tz: offset})
            out.update({box: enhance[name] for name, box in toggles.items() if _is_bool((enhance or {}).get(name))})
            if new_tok:
                out[token] = new_tok
            return out

        load_out = [token, owner, status, tz, *w.chat.outputs]
        load_out += [c for c in [*panel.outputs, *toggles.values()] if c not in load_out]
        demo.load(
            on_load,
            [token, kept, enhancing, tz],
            load_out,
            js="(tok, kept, enhance, tz) => [tok, kept, enhance, -new Date().getTimezoneOffset()]",
            show_progress="hidden",
            **PRIVATE,
        )

        # the settings, and whether each tab enhances prompts, are remembered per browser
        def remember(*values):
            return dict(zip(panel.components, values, strict=True))

        gr.on([c.change for c in panel.outputs], remember, panel.outputs, kept, **QUICK)

        def remember_enhance(*values):
            return dict(zip(toggles, (bool(v) for v in values), strict=True))

        gr.on([c.input for c in toggles.values()], remember_enhance, list(toggles.values()), enhancing, **QUICK)

        def tick(request: gr.Request = None):
            settled = ctx.backend.status.state in ("ready", "error")
            return status_line(ctx, Tr(lang_of(request))), gr.Timer(active=not settled)

        timer.tick(tick, None, [status, timer], **QUICK)
    return demo
