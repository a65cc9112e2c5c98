"""The Gradio Blocks app: the page's shared pieces, and the Chat (with its sidebar), Generate and Edit tabs.

Each tab lays out and wires its own components in its own module; this file assembles them and wires the few events
that cross tabs (sending an image to the Edit tab, the page load).
"""

from __future__ import annotations

import gradio as gr

from . import chat, edit, generate, render, sidebar
from .context import PRIVATE, QUICK, AppContext

CSS = """
#qic-chat .message img { max-height: 420px; object-fit: contain; }
#qic-sidebar .caption-label { font-size: 0.8em; }
#qic-banner.demo { border-left: 4px solid #e8a33d; padding-left: 10px; }
@media (max-width: 768px) {  /* phones: the conversation first, then the list of conversations, then settings */
  #qic-chat { order: -1; }
  #qic-convs { height: 240px !important; }
}
"""


def banner_text(ctx: AppContext) -> str:
    st = ctx.backend.status
    icon = {"ready": "🟢", "loading": "🟡", "error": "🔴", "idle": "⚪"}.get(st.state, "⚪")
    line = f"{icon} **{render.escape_md(st.model_label)}** — {render.escape_md(st.message)}"
    if st.demo:
        line = (
            "⚠️ **Demo model.** No GPU (or no model weights) here, so this is the tiny built-in model with random "
            "weights: it works end to end, but its images are noise. On a CUDA GPU, `python app.py` runs "
            "Qwen-Image-2.1 (weights download on first start); `python app.py --model qwen-image` runs the 20B "
            "pair.\n\n" + line
        )
    return line


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="Qwen Image Chat") as demo:
        token = gr.BrowserState(None, storage_key="qwen-image-chat-owner", secret=ctx.browser_secret)
        owner = gr.State(None)
        banner = gr.Markdown(banner_text(ctx), elem_id="qic-banner", elem_classes=["demo"] if ctx.spec.tiny else [])
        timer = gr.Timer(2.0)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"), gr.Row(equal_height=False):
                side_tab = sidebar.layout()
                chat_tab = chat.layout(ctx)
            with gr.Tab("Generate", id="generate"):
                gen_tab = generate.layout(ctx)
            with gr.Tab("Edit", id="edit"):
                edit_tab = edit.layout(ctx)

        # GPU events return their own results; the sidebar is refreshed by a chained private event
        refresh = sidebar.refresh_event(ctx, side_tab, owner)
        chat_handlers = chat.wire(ctx, chat_tab, owner, refresh)
        sidebar.wire(ctx, side_tab, owner, chat_handlers, chat_tab.view, chat_tab.conv)
        generate.wire(ctx, gen_tab, owner, refresh)
        edit_handlers = edit.wire(ctx, edit_tab, owner, refresh)

        # images into the Edit tab from the other tabs
        chat_tab.to_edit.click(
            edit_handlers.add_turn_image,
            [edit_tab.refs, owner, chat_tab.selected],
            edit_tab.refs,
            api_name="send_to_edit",
        )
        gen_tab.to_edit.click(
            edit_handlers.add_result, [edit_tab.refs, gen_tab.gallery, gen_tab.pick], edit_tab.refs, **PRIVATE
        )

        def on_load(tok, request: gr.Request):
            own, new_tok = ctx.restore(tok, request)
            recent = ctx.store.list_conversations(own, limit=1)
            view = chat_handlers.view(own, recent[0].id if recent else None)
            return (new_tok if new_tok else gr.skip()), own, *view, *sidebar.sidebar_view(ctx, own)

        chat_out = [*chat_tab.view, chat_tab.msg, owner, chat_tab.status]
        demo.load(on_load, [token], [token, owner, *chat_tab.view, *side_tab.view], **PRIVATE).then(
            chat_handlers.resume, [owner, chat_tab.conv], chat_out, **PRIVATE
        )

        def tick():
            settled = ctx.backend.status.state in ("ready", "error")
            return banner_text(ctx), gr.Timer(active=not settled)

        timer.tick(tick, None, [banner, timer], **QUICK, show_progress="hidden")
    return demo
